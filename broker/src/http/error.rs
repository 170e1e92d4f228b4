//! [`ApiError`]: every failure a client sees, with the HTTP status and `code` word
//! of shared/API.md, rendered as `{"code", "message", "leader"}`; how the
//! service's [`BrokerError`] and axum's own rejections (bad path, bad query, body
//! too large) become one.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::error::BrokerError;

pub use broker_proto::error_code::ErrorCode;

/// A failure as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.word())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For NOT_LEADER: where to go (`None` when unknown).
    pub leader: Option<String>,
    /// For RATE_LIMITED: seconds until a retry can pass (the `Retry-After` header).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
            retry_after_secs: None,
        }
    }

    /// 401 UNAUTHORIZED.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 403 NO_PERMISSION.
    pub fn no_permission(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NoPermission, message)
    }

    /// 429 RATE_LIMITED, retry after `retry_after_secs`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn topic_not_found(topic: &str) -> Self {
        BrokerError::topic_not_found(topic).into()
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn not_leader(leader: Option<String>) -> Self {
        BrokerError::NotLeader { leader }.into()
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.word().to_string(),
            message: self.message.clone(),
            leader: self.leader.clone(),
        }
    }
}

/// The API's code for each of the service's failures.
impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        let message = error.to_string();
        let code = match &error {
            BrokerError::Invalid(_) | BrokerError::LimitReached(_) => ErrorCode::BadRequest,
            BrokerError::TopicNotFound { .. } | BrokerError::GroupTopicMissing { .. } => {
                ErrorCode::TopicNotFound
            }
            BrokerError::QueueNotFound { .. } => ErrorCode::QueueNotFound,
            BrokerError::BrokerGroupNotFound { .. } => ErrorCode::BrokerGroupNotFound,
            BrokerError::MessageNotFound(_) => ErrorCode::MessageNotFound,
            BrokerError::TransactionNotFound(_) => ErrorCode::TransactionNotFound,
            BrokerError::Conflict(_) => ErrorCode::Conflict,
            BrokerError::LeaseExpired(_) => ErrorCode::Expired,
            BrokerError::Unauthenticated(_) => ErrorCode::Unauthorized,
            BrokerError::NoPermission(_) => ErrorCode::NoPermission,
            BrokerError::RateLimited {
                retry_after_secs, ..
            } => {
                return ApiError::rate_limited(message, *retry_after_secs);
            }
            BrokerError::NotLeader { leader } => {
                return ApiError {
                    leader: leader.clone(),
                    ..ApiError::new(ErrorCode::NotLeader, message)
                };
            }
            BrokerError::WriteTimeout { .. }
            | BrokerError::LeadershipLost(_)
            | BrokerError::StorageFailed { .. }
            | BrokerError::DiskFull { .. }
            | BrokerError::ShuttingDown
            | BrokerError::Unavailable(_) => ErrorCode::Unavailable,
            BrokerError::Internal(_) => ErrorCode::Internal,
        };
        ApiError::new(code, message)
    }
}

/// A rejection from apply, as the service would report it.
impl From<crate::replication::command::Rejection> for ApiError {
    fn from(rejection: crate::replication::command::Rejection) -> Self {
        BrokerError::from(rejection).into()
    }
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QueueKind;
    use crate::units::HumanDuration;

    /// Each of the service's failures gets the status and code shared/API.md
    /// gives it, with its message, and the extras clients act on (the leader to
    /// go to, the seconds until a quota refills).
    #[test]
    fn each_broker_error_gets_its_code() {
        let cases = [
            (BrokerError::invalid("x"), ErrorCode::BadRequest, 400),
            (
                BrokerError::LimitReached("x".into()),
                ErrorCode::BadRequest,
                400,
            ),
            (
                BrokerError::topic_not_found("t"),
                ErrorCode::TopicNotFound,
                404,
            ),
            (
                BrokerError::GroupTopicMissing {
                    kind: "retry",
                    topic: "%RETRY%g".into(),
                    group: "g".into(),
                },
                ErrorCode::TopicNotFound,
                404,
            ),
            (
                BrokerError::queue_not_found("t", 5, QueueKind::Read, 4),
                ErrorCode::QueueNotFound,
                404,
            ),
            (
                BrokerError::broker_group_not_found("g", ["a"]),
                ErrorCode::BrokerGroupNotFound,
                404,
            ),
            (
                BrokerError::MessageNotFound("x".into()),
                ErrorCode::MessageNotFound,
                404,
            ),
            (BrokerError::Conflict("x".into()), ErrorCode::Conflict, 409),
            (
                BrokerError::TransactionNotFound("x".into()),
                ErrorCode::TransactionNotFound,
                404,
            ),
            (
                BrokerError::LeaseExpired("x".into()),
                ErrorCode::Expired,
                409,
            ),
            (
                BrokerError::Unauthenticated("x".into()),
                ErrorCode::Unauthorized,
                401,
            ),
            (
                BrokerError::NoPermission("x".into()),
                ErrorCode::NoPermission,
                403,
            ),
            (
                BrokerError::NotLeader { leader: None },
                ErrorCode::NotLeader,
                421,
            ),
            (
                BrokerError::WriteTimeout {
                    timeout: HumanDuration(std::time::Duration::from_secs(10)),
                },
                ErrorCode::Unavailable,
                503,
            ),
            (
                BrokerError::LeadershipLost("x".into()),
                ErrorCode::Unavailable,
                503,
            ),
            (
                BrokerError::StorageFailed {
                    reason: "x".into(),
                    next: "restarting",
                },
                ErrorCode::Unavailable,
                503,
            ),
            (
                BrokerError::DiskFull {
                    used_percent: 96,
                    limit_percent: 95,
                },
                ErrorCode::Unavailable,
                503,
            ),
            (BrokerError::ShuttingDown, ErrorCode::Unavailable, 503),
            (BrokerError::unavailable("x"), ErrorCode::Unavailable, 503),
            (BrokerError::Internal("x".into()), ErrorCode::Internal, 500),
        ];
        for (error, code, status) in cases {
            let message = error.to_string();
            let api = ApiError::from(error);
            assert_eq!((api.code, api.code.status()), (code, status), "{message}");
            assert_eq!(api.message, message);
            assert_eq!((api.leader, api.retry_after_secs), (None, None));
        }
        let api = ApiError::from(BrokerError::NotLeader {
            leader: Some("http://n2:8080".into()),
        });
        assert_eq!(api.leader.as_deref(), Some("http://n2:8080"));
        let api = ApiError::from(BrokerError::RateLimited {
            reason: "over".into(),
            retry_after_secs: 3,
        });
        assert_eq!(
            (api.code, api.retry_after_secs, api.message.as_str()),
            (ErrorCode::RateLimited, Some(3), "over")
        );
    }
}
