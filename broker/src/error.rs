//! The API's one error type: every failure a client sees, with the HTTP status and
//! `code` word of shared/API.md. The HTTP layer renders it as
//! `{"code", "message", "leader"}`.

use crate::api::ErrorBody;

/// The `code` words of shared/API.md.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    TopicNotFound,
    MessageNotFound,
    NotLeader,
    NoPermission,
    Unavailable,
    Internal,
    /// No such endpoint (not a resource the API names: those have their own codes).
    NotFound,
    MethodNotAllowed,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics label them by [`Self::word`]).
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::TopicNotFound,
        Self::MessageNotFound,
        Self::NotLeader,
        Self::NoPermission,
        Self::Unavailable,
        Self::Internal,
        Self::NotFound,
        Self::MethodNotAllowed,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::TopicNotFound => "TOPIC_NOT_FOUND",
            Self::MessageNotFound => "MESSAGE_NOT_FOUND",
            Self::NotLeader => "NOT_LEADER",
            Self::NoPermission => "NO_PERMISSION",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
        }
    }

    /// The code a word names (the inverse of [`Self::word`]).
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.word() == word)
    }

    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NoPermission => 403,
            Self::TopicNotFound | Self::MessageNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NotLeader => 421,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

/// A failure as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.word())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For NOT_LEADER: where to go (`None` when unknown).
    pub leader: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
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
