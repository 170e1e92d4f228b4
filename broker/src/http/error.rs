//! Rendering [`ApiError`] as the API's JSON error shape, and mapping axum's own
//! rejections (bad path, bad query, body too large) into it.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{ApiError, ErrorCode};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        // For the rejection counter (`broker_rejected_requests_total{code}`).
        response.extensions_mut().insert(self.code);
        response
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(format!("bad path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query: {}", rejection.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::bad_request("request body too large")
        } else {
            ApiError::bad_request(format!("unreadable body: {}", rejection.body_text()))
        }
    }
}

/// Parses a JSON body, mapping every failure to BAD_REQUEST with serde's reason.
///
/// # Errors
/// BAD_REQUEST for an empty body or malformed JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    // Through `Strict`: a JSON array is not accepted where an object is expected.
    serde_json::from_slice::<crate::api::Strict<T>>(body)
        .map(|strict| strict.0)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}
