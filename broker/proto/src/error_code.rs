//! The `code` words of shared/API.md "Errors" and the HTTP status of each: what a
//! client matches on, the same in every answer of every node.

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
    /// The caller's quota is used up (shared/API.md "Security"); the answer
    /// carries `Retry-After`.
    RateLimited,
    /// A request body that is not `application/json`.
    UnsupportedMediaType,
    /// A request URI over hyper's limit (64 KiB).
    UriTooLong,
    /// A request head over `http.max_header_size`.
    HeadersTooLarge,
    /// The request body did not arrive within `http.body_read_timeout`.
    RequestTimeout,
    /// The state a request expects is not the one there (a user that exists
    /// already; a transaction resolved the other way).
    Conflict,
    /// An unknown user name.
    UserNotFound,
    /// A broker group no node knows of, named by `?group=`, `?broker_group=` or a
    /// topic's `groups`: a resource that does not exist, like an unknown topic.
    BrokerGroupNotFound,
    /// A queue id past a topic's queues.
    QueueNotFound,
    /// A receipt handle whose lease ran out (the message may be delivered again).
    Expired,
    /// An unknown transaction id.
    TransactionNotFound,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics label them by [`Self::word`]).
    pub const ALL: [Self; 21] = [
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
        Self::RateLimited,
        Self::UnsupportedMediaType,
        Self::UriTooLong,
        Self::HeadersTooLarge,
        Self::RequestTimeout,
        Self::Conflict,
        Self::UserNotFound,
        Self::BrokerGroupNotFound,
        Self::QueueNotFound,
        Self::Expired,
        Self::TransactionNotFound,
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
            Self::RateLimited => "RATE_LIMITED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::UriTooLong => "URI_TOO_LONG",
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::Conflict => "CONFLICT",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::BrokerGroupNotFound => "BROKER_GROUP_NOT_FOUND",
            Self::QueueNotFound => "QUEUE_NOT_FOUND",
            Self::Expired => "EXPIRED",
            Self::TransactionNotFound => "TRANSACTION_NOT_FOUND",
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
            Self::TopicNotFound
            | Self::MessageNotFound
            | Self::NotFound
            | Self::UserNotFound
            | Self::BrokerGroupNotFound
            | Self::QueueNotFound
            | Self::TransactionNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict | Self::Expired => 409,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::NotLeader => 421,
            Self::RateLimited => 429,
            Self::HeadersTooLarge => 431,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}
