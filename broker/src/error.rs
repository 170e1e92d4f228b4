//! The API's one error type: every failure a client sees, with the HTTP status and
//! `code` word of shared/API.md. The HTTP layer renders it as
//! `{"code", "message", "leader"}`.

use crate::api::ErrorBody;

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

    /// A broker group no node knows of; the message lists the known ones.
    pub fn broker_group_not_found<'a>(
        group: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self::new(
            ErrorCode::BrokerGroupNotFound,
            format!(
                "unknown broker group `{group}` (known: {})",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )
    }

    /// `queue` is not one of `topic`'s `what` queues (`what`: "read", "write", or
    /// "" for either).
    pub fn queue_not_found(topic: &str, queue: u32, what: &str, count: u32) -> Self {
        let kind = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        Self::new(
            ErrorCode::QueueNotFound,
            format!("queue {queue} is not a {kind}queue of `{topic}` (it has {count})"),
        )
    }

    pub fn topic_not_found(topic: &str) -> Self {
        Self::new(
            ErrorCode::TopicNotFound,
            format!("topic `{topic}` does not exist"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn not_leader(leader: Option<String>) -> Self {
        Self {
            code: ErrorCode::NotLeader,
            message: match &leader {
                Some(url) => format!("this node is not the leader; send writes to {url}"),
                None => {
                    "this node is not the leader and no leader is known yet; retry shortly".into()
                }
            },
            leader,
            retry_after_secs: None,
        }
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
