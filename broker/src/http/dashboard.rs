//! The dashboard: one HTML page, two scripts (the page, and the charts' pure
//! functions, which `scripts/testing/dashboard-charts.test.js` also runs under
//! Node) and a style sheet, compiled into the binary (`include_str!`; no build
//! toolchain). The page only calls the public API from the browser (JSON, and
//! each node's Prometheus text through `GET /v1/cluster/nodes/{id}/metrics`), so
//! it shows exactly what a client would see and needs no endpoint of its own.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::extract::ApiPath;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const CHARTS_JS: &str = include_str!("dashboard/charts.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// `GET /`
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// `GET /dashboard/{file}`: `app.js`, `charts.js` or `style.css`.
pub async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    let (content_type, text) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "charts.js" => ("text/javascript; charset=utf-8", CHARTS_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => {
            return ApiError::new(ErrorCode::NotFound, format!("no dashboard file `{file}`"))
                .into_response()
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}
