//! Extractors that reject with the API's error shape instead of axum's plain text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::connections::Connection;
use super::error::{ApiError, ErrorCode};
use crate::auth::cluster_secret::SECRET_HEADER;
use crate::service::node::Node;

/// Path parameters; a bad one is BAD_REQUEST.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(ApiError::from)
    }
}

/// Query parameters; a bad one is BAD_REQUEST.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_query_utf8(parts.uri.query().unwrap_or_default())?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(ApiError::from)
    }
}

/// Checks that every name and value of a query decodes to UTF-8.
///
/// axum's `Query` (serde_urlencoded) decodes invalid UTF-8 lossily: `tags=%FF`
/// became the tag `\u{FFFD}` and the pull answered 200 matching nothing. A query
/// the client did not mean is refused instead.
///
/// # Errors
/// BAD_REQUEST naming the first offending `name=value` pair.
pub fn check_query_utf8(query: &str) -> Result<(), ApiError> {
    for pair in query.split('&') {
        if std::str::from_utf8(&percent_decode(pair.as_bytes())).is_err() {
            let shown: String = pair.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "bad query: `{shown}` does not decode to UTF-8"
            )));
        }
    }
    Ok(())
}

/// `%XX` escapes decoded; anything else (a malformed escape included) kept as it is,
/// as `application/x-www-form-urlencoded` parsing does.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(hi), Some(lo)) = (hex(input[i + 1]), hex(input[i + 2])) {
                // Two hex digits: at most 255.
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// A request kept whole — method, path, headers and raw body — so it can be parsed
/// here or forwarded to another node unchanged.
#[derive(Clone)]
pub struct WriteRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address (the original client's, when forwarded).
    pub born_host: String,
    /// Another node forwarded it here (it carried [`FORWARDED_HEADER`] and the
    /// cluster secret).
    forwarded: bool,
}

/// Header a forwarding node sets: the loop guard, and the original client address.
/// Trusted only beside the cluster secret: from a client it is ignored.
pub const FORWARDED_HEADER: &str = "x-broker-forwarded-for";

impl FromRequest<Arc<Node>> for WriteRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, node: &Arc<Node>) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let from_peer = match &node.secret {
            Some(secret) => parts
                .headers
                .get(SECRET_HEADER)
                .is_some_and(|given| secret.matches(given.as_bytes())),
            // `--insecure` without a secret: nothing to tell peers from clients.
            None => true,
        };
        let forwarded_for = parts
            .headers
            .get(FORWARDED_HEADER)
            .filter(|_| from_peer)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let forwarded = forwarded_for.is_some();
        if forwarded {
            if let Some(connection) = parts.extensions.get::<Arc<Connection>>() {
                connection.promote_to_peer();
            }
        }
        let born_host = forwarded_for
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let path_and_query = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let method = parts.method.clone();
        let headers = parts.headers.clone();
        // A client that sends its body slowly (or not at all) must not hold the
        // request, and a connection, for ever.
        let timeout = node.config.http.body_read_timeout;
        let body = tokio::time::timeout(
            timeout.0,
            Bytes::from_request(Request::from_parts(parts, body), node),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {timeout} (http.body_read_timeout)"
                ),
            )
        })??;
        Ok(Self {
            method,
            path_and_query,
            headers,
            body,
            born_host,
            forwarded,
        })
    }
}

impl WriteRequest {
    /// Whether another node already forwarded this request here.
    /// Refuses a body other than nothing (or whitespace) or `{}`, for an
    /// operation that takes no fields; `what` names it in the message.
    ///
    /// # Errors
    /// BAD_REQUEST naming the fields given, or why the body is not JSON.
    pub fn expect_no_fields(&self, what: &str) -> Result<(), ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&self.body) {
            Ok(fields) if fields.is_empty() => Ok(()),
            Ok(fields) => {
                let names: Vec<&String> = fields.keys().collect();
                Err(ApiError::bad_request(format!(
                    "{what} takes no fields (the body may be empty or {{}}), got {names:?}"
                )))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "the body must be empty or {{}}: {e}"
            ))),
        }
    }

    pub fn was_forwarded(&self) -> bool {
        self.forwarded
    }
}

/// Refuses a request that carries a body (or names a content type) other than
/// JSON: 415 in the error shape. Every body the API takes is JSON; this also
/// stops a web page from making a browser POST a form or `text/plain` here
/// without a CORS preflight. (The API sends no CORS headers, so no other origin
/// may read an answer or send a preflighted request.)
pub async fn require_json_body(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    if matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    // hyper sizes the body from Content-Length (exact) or chunked framing
    // (unknown); only an exact zero is no body.
    let has_body = axum::body::HttpBody::size_hint(request.body()).exact() != Some(0);
    let headers = request.headers();
    let content_type = headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
    let is_json = |value: &str| {
        value
            .split(';')
            .next()
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
    };
    let refused = match content_type {
        Some(value) => !is_json(value),
        None => has_body,
    };
    if refused {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "request bodies must be JSON with `Content-Type: application/json` (got {})",
                content_type.map_or_else(|| "none".to_string(), |v| format!("`{v}`"))
            ),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_must_decode_to_utf8() {
        for good in ["", "a=1&b=%C3%A9", "tags=Tag+A", "x=%", "x=%G1", "x=100%25"] {
            assert!(check_query_utf8(good).is_ok(), "{good}");
        }
        for bad in [
            "tags=%FF",
            "a=1&%FE=x",
            "k=Tag%C3",
            "k=%C0%AF",
            "k=%ED%A0%80",
        ] {
            let e = check_query_utf8(bad).expect_err(bad);
            assert!(e.message.contains("UTF-8"), "{e:?}");
        }
    }
}
