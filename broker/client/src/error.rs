//! [`ClientError`]: every way a call of the client can fail, classified for the
//! caller's retry decision.
//!
//! Two questions matter after a failed write, and they are different:
//! * **retryable** — could the same request succeed if sent again (to this node or
//!   another)? A refused request (`BAD_REQUEST`, `TOPIC_NOT_FOUND`) will be refused
//!   again; a node that is down, electing or not the leader may do better next time.
//! * **outcome unknown** — might the failed request have taken effect anyway? A
//!   timeout or a connection reset after the request was written leaves the write
//!   possibly applied, and so does the broker's own `UNAVAILABLE` ("did not commit
//!   within the write timeout": the entry may still commit). Retrying such a write
//!   without `producer_id` + `sequence` may store it twice.

use std::fmt;

use crate::api::ErrorBody;

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The API's `code` words the client reacts to (shared/API.md).
pub mod codes {
    /// The node cannot accept the write; `leader` says where to go.
    pub const NOT_LEADER: &str = "NOT_LEADER";
    /// No quorum, shutting down, or timed out waiting for commit.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Malformed request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// Unknown topic.
    pub const TOPIC_NOT_FOUND: &str = "TOPIC_NOT_FOUND";
    /// A query found nothing.
    pub const MESSAGE_NOT_FOUND: &str = "MESSAGE_NOT_FOUND";
    /// A queue id past the topic's queues (in the group that serves it).
    pub const QUEUE_NOT_FOUND: &str = "QUEUE_NOT_FOUND";
    /// A broker group no node knows of.
    pub const BROKER_GROUP_NOT_FOUND: &str = "BROKER_GROUP_NOT_FOUND";
    /// An unknown user.
    pub const USER_NOT_FOUND: &str = "USER_NOT_FOUND";
    /// The broker failed in a way it did not expect.
    pub const INTERNAL: &str = "INTERNAL";
    /// A receipt handle whose lease ran out (or was replaced by a change).
    pub const EXPIRED: &str = "EXPIRED";
    /// The request contradicts the current state (e.g. committing a transaction
    /// that was rolled back).
    pub const CONFLICT: &str = "CONFLICT";
    /// A transaction id no transaction has (or one resolved too long ago).
    pub const TRANSACTION_NOT_FOUND: &str = "TRANSACTION_NOT_FOUND";
}

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with a non-2xx status and the API's error body.
    #[error("HTTP {status} {}: {}{}", body.code, body.message, LeaderHint(body.leader.as_deref()))]
    Api { status: u16, body: ErrorBody },
    /// The request did not complete: connecting failed, it timed out, or the
    /// connection broke while sending or reading the answer. The error names the URL.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The broker answered but the body was not what the API promises (a 2xx body
    /// of the wrong shape, or a non-2xx body that is not the error shape).
    #[error("cannot decode the HTTP {status} answer of {url}: {reason}")]
    Decode {
        status: u16,
        url: String,
        reason: String,
    },
    /// A node URL (a seed or a leader hint) that is not an `http://` base URL.
    #[error("invalid node URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The call was refused before anything was sent (e.g. an empty batch).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A [`super::Producer`] gave up after retrying: `last` is the last attempt's
    /// error; `outcome_unknown` says whether *any* attempt may have been applied (a
    /// timeout before a final `NOT_LEADER` still leaves the batch possibly stored).
    #[error("gave up after {attempts} attempts{}: {last}", if *outcome_unknown { " (an attempt may have been applied)" } else { "" })]
    RetriesExhausted {
        attempts: u32,
        outcome_unknown: bool,
        last: Box<ClientError>,
    },
    /// A [`super::BatchingProducer`] sent this message in a request of `messages`
    /// messages, and that request failed with `cause` (shared by all of them: a
    /// batch is stored whole or not at all). Classified as `cause` is.
    #[error("the request carrying this message and {} others failed: {cause}", messages.saturating_sub(1))]
    Batch {
        messages: usize,
        cause: std::sync::Arc<ClientError>,
    },
    /// A [`super::BatchingProducer`]'s sending task ended without answering (the
    /// runtime shut down, or the task panicked): the message may have been stored.
    #[error("the producer's sending task ended before the message was answered")]
    Abandoned,
}

/// Displays ` (leader: URL)` when the error names a leader.
struct LeaderHint<'a>(Option<&'a str>);

impl fmt::Display for LeaderHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(url) => write!(f, " (leader: {url})"),
            None => Ok(()),
        }
    }
}

impl ClientError {
    /// The HTTP status of an answered request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            Self::InvalidUrl { .. } | Self::InvalidArgument(_) | Self::Abandoned => None,
            Self::RetriesExhausted { last, .. } => last.status(),
            Self::Batch { cause, .. } => cause.status(),
        }
    }

    /// The API's `code` word (`NOT_LEADER`, `UNAVAILABLE`, …) of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(body.code.as_str()),
            Self::RetriesExhausted { last, .. } => last.code(),
            Self::Batch { cause, .. } => cause.code(),
            _ => None,
        }
    }

    /// The leader a `NOT_LEADER` answer pointed at.
    pub fn leader(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => body.leader.as_deref(),
            Self::RetriesExhausted { last, .. } => last.leader(),
            Self::Batch { cause, .. } => cause.leader(),
            _ => None,
        }
    }

    /// `NOT_LEADER` (HTTP 421).
    pub fn is_not_leader(&self) -> bool {
        self.code() == Some(codes::NOT_LEADER)
    }

    /// `UNAVAILABLE` (HTTP 503): no quorum, shutting down, or a commit timeout.
    pub fn is_unavailable(&self) -> bool {
        self.code() == Some(codes::UNAVAILABLE)
    }

    /// `EXPIRED` (HTTP 409): a change-invisible named a lease that ran out; the
    /// message may be delivered again.
    pub fn is_expired(&self) -> bool {
        self.code() == Some(codes::EXPIRED)
    }

    /// `CONFLICT` (HTTP 409): e.g. a commit of a transaction that was rolled
    /// back (by its producer or by the broker after its last check).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(codes::CONFLICT)
    }

    /// A resource the request names does not exist: `TOPIC_NOT_FOUND`,
    /// `MESSAGE_NOT_FOUND`, `QUEUE_NOT_FOUND`, `BROKER_GROUP_NOT_FOUND`,
    /// `USER_NOT_FOUND` or `TRANSACTION_NOT_FOUND` (HTTP 404 with an API code;
    /// not `NOT_FOUND`, an unknown route).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code(),
            Some(
                codes::TOPIC_NOT_FOUND
                    | codes::MESSAGE_NOT_FOUND
                    | codes::QUEUE_NOT_FOUND
                    | codes::BROKER_GROUP_NOT_FOUND
                    | codes::USER_NOT_FOUND
                    | codes::TRANSACTION_NOT_FOUND
            )
        )
    }

    /// Connecting failed: the request was never sent, so it certainly had no effect.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_connect(),
            Self::RetriesExhausted { last, .. } => last.is_connect(),
            Self::Batch { cause, .. } => cause.is_connect(),
            _ => false,
        }
    }

    /// The request (or connecting) timed out.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_timeout(),
            Self::RetriesExhausted { last, .. } => last.is_timeout(),
            Self::Batch { cause, .. } => cause.is_timeout(),
            _ => false,
        }
    }

    /// Whether sending the same request again may succeed: `NOT_LEADER`,
    /// `UNAVAILABLE`, `INTERNAL`, and transport failures other than a request
    /// the client could not even build. Refusals (4xx) and local errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, body } => {
                matches!(
                    body.code.as_str(),
                    codes::NOT_LEADER | codes::UNAVAILABLE | codes::INTERNAL
                ) || *status >= 500
            }
            Self::Transport(e) => !e.is_builder() && !e.is_redirect(),
            Self::Decode { status, .. } => *status >= 500,
            Self::InvalidUrl { .. } | Self::InvalidArgument(_) | Self::Abandoned => false,
            Self::RetriesExhausted { last, .. } => last.is_retryable(),
            Self::Batch { cause, .. } => cause.is_retryable(),
        }
    }

    /// Whether the failed request may nevertheless have taken effect, so that
    /// resending a write without `producer_id` + `sequence` may duplicate it.
    ///
    /// * `UNAVAILABLE`, `INTERNAL` and other 5xx answers: unknown (a commit timeout
    ///   leaves the proposed entry in the log; a forward that broke may have landed).
    /// * A transport failure other than connecting: unknown (the request may have
    ///   been written before the timeout or reset).
    /// * A 2xx answer that could not be decoded: it *did* take effect; the results
    ///   are what is unknown.
    /// * `NOT_LEADER`, 4xx refusals, connect failures, local errors: not applied.
    /// * Retries exhausted: unknown if any attempt's outcome was.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status >= 500,
            Self::Transport(e) => !e.is_connect() && !e.is_builder(),
            Self::Decode { .. } => true,
            Self::InvalidUrl { .. } | Self::InvalidArgument(_) => false,
            Self::RetriesExhausted {
                outcome_unknown,
                last,
                ..
            } => *outcome_unknown || last.is_outcome_unknown(),
            Self::Batch { cause, .. } => cause.is_outcome_unknown(),
            Self::Abandoned => true,
        }
    }

    /// A short, low-cardinality label for counting errors by kind: the API code
    /// (`UNAVAILABLE`, `NOT_LEADER`, …) or `connect`, `timeout`, `transport`,
    /// `decode`, `invalid_url`, `invalid_argument`, `abandoned`; for exhausted
    /// retries, the last attempt's; for a failed batch, the batch's.
    pub fn kind(&self) -> String {
        match self {
            Self::Api { body, .. } => body.code.clone(),
            Self::Transport(e) if e.is_connect() => "connect".into(),
            Self::Transport(e) if e.is_timeout() => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::Decode { .. } => "decode".into(),
            Self::InvalidUrl { .. } => "invalid_url".into(),
            Self::InvalidArgument(_) => "invalid_argument".into(),
            Self::RetriesExhausted { last, .. } => last.kind(),
            Self::Batch { cause, .. } => cause.kind(),
            Self::Abandoned => "abandoned".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, leader: Option<&str>) -> ClientError {
        ClientError::Api {
            status,
            body: ErrorBody {
                code: code.into(),
                message: "m".into(),
                leader: leader.map(str::to_string),
            },
        }
    }

    #[test]
    fn api_errors_are_classified_by_code() {
        let not_leader = api(421, codes::NOT_LEADER, Some("http://b:1"));
        assert!(not_leader.is_not_leader());
        assert!(not_leader.is_retryable());
        assert!(!not_leader.is_outcome_unknown());
        assert_eq!(not_leader.leader(), Some("http://b:1"));
        assert_eq!(not_leader.kind(), "NOT_LEADER");
        assert!(not_leader.to_string().contains("leader: http://b:1"));

        let unavailable = api(503, codes::UNAVAILABLE, None);
        assert!(unavailable.is_unavailable());
        assert!(unavailable.is_retryable());
        assert!(unavailable.is_outcome_unknown());

        for (status, code) in [
            (400, codes::BAD_REQUEST),
            (404, codes::TOPIC_NOT_FOUND),
            (404, codes::MESSAGE_NOT_FOUND),
            (403, "NO_PERMISSION"),
        ] {
            let refused = api(status, code, None);
            assert!(!refused.is_retryable(), "{code}");
            assert!(!refused.is_outcome_unknown(), "{code}");
            assert_eq!(refused.status(), Some(status));
        }
        assert!(api(404, codes::TOPIC_NOT_FOUND, None).is_not_found());
        // A resource the request names that does not exist (a queue past the
        // topic's after a shrink, a removed broker group, a deleted user): the
        // consumer's give-back gives up on these instead of retrying for good.
        for code in [
            codes::QUEUE_NOT_FOUND,
            codes::BROKER_GROUP_NOT_FOUND,
            codes::USER_NOT_FOUND,
            codes::TRANSACTION_NOT_FOUND,
        ] {
            let missing = api(404, code, None);
            assert!(missing.is_not_found(), "{code}");
            assert!(!missing.is_retryable(), "{code}");
        }
        // A lease that ran out is final: the message comes again anyway.
        let expired = api(409, codes::EXPIRED, None);
        assert!(expired.is_expired() && !expired.is_retryable());
        assert!(!expired.is_outcome_unknown() && !expired.is_not_found());
        // A resolution the other way is final too.
        let conflict = api(409, codes::CONFLICT, None);
        assert!(conflict.is_conflict() && !conflict.is_retryable());
        assert!(!conflict.is_outcome_unknown() && !expired.is_conflict());
        // An unknown route is the caller's mistake, not a missing resource.
        assert!(!api(404, "NOT_FOUND", None).is_not_found());
    }

    #[test]
    fn decode_and_local_errors() {
        let garbled_ok = ClientError::Decode {
            status: 200,
            url: "http://a/".into(),
            reason: "x".into(),
        };
        assert!(!garbled_ok.is_retryable());
        assert!(garbled_ok.is_outcome_unknown());
        let proxy = ClientError::Decode {
            status: 502,
            url: "http://a/".into(),
            reason: "x".into(),
        };
        assert!(proxy.is_retryable());
        let local = ClientError::InvalidArgument("empty".into());
        assert!(!local.is_retryable() && !local.is_outcome_unknown());
        assert_eq!(local.kind(), "invalid_argument");
    }

    #[test]
    fn exhausted_retries_remember_an_earlier_unknown_outcome() {
        let exhausted = |outcome_unknown| ClientError::RetriesExhausted {
            attempts: 3,
            outcome_unknown,
            last: Box::new(api(421, codes::NOT_LEADER, None)),
        };
        let after_timeout = exhausted(true);
        assert!(after_timeout.is_outcome_unknown());
        assert!(after_timeout.is_not_leader() && after_timeout.is_retryable());
        assert_eq!(after_timeout.kind(), "NOT_LEADER");
        assert!(after_timeout.to_string().contains("may have been applied"));
        assert!(!exhausted(false).is_outcome_unknown());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_with_a_known_outcome() {
        // Bind then drop a listener: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let error = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .expect_err("nothing listens there");
        let error = ClientError::from(error);
        assert!(error.is_connect(), "{error:?}");
        assert!(error.is_retryable());
        assert!(!error.is_outcome_unknown());
        assert_eq!(error.kind(), "connect");
    }
}
