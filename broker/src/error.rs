//! [`BrokerError`]: what an operation of the broker fails with, in the broker's
//! own terms. The variants carry what explains them (the topic, the queue and how
//! many the topic has, the leader to go to, the seconds until a quota refills);
//! only `http/` turns them into the API's status and `code` word
//! (`http::error::ApiError`), so the service and replication layers never name an
//! HTTP status.

use crate::units::HumanDuration;

/// Which of a topic's queue counts a queue id was checked against.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// `read_queue_nums`: pulls.
    Read,
    /// `write_queue_nums`: sends naming a queue.
    Write,
    /// Either: queries by time, offset commits, give-backs (the larger count).
    Any,
}

impl QueueKind {
    /// "read queue", "write queue" or "queue".
    fn noun(self) -> &'static str {
        match self {
            QueueKind::Read => "read queue",
            QueueKind::Write => "write queue",
            QueueKind::Any => "queue",
        }
    }
}

/// A failed operation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BrokerError {
    /// The request cannot be carried out as asked (a bad name, batch, level, …).
    #[error("{0}")]
    Invalid(String),
    /// A configured limit refuses it (topic quota, user table, a request larger than
    /// a user's quota allows in a second).
    #[error("{0}")]
    LimitReached(String),
    #[error("topic `{topic}` does not exist")]
    TopicNotFound { topic: String },
    #[error("queue {queue} is not a {} of `{topic}` (it has {count})", kind.noun())]
    QueueNotFound {
        topic: String,
        queue: u32,
        kind: QueueKind,
        count: u32,
    },
    #[error("unknown broker group `{group}` (known: {})", known.join(", "))]
    BrokerGroupNotFound { group: String, known: Vec<String> },
    /// A consumer group's retry or dead-letter topic is missing and topics may not
    /// be created by use.
    #[error("the {kind} topic `{topic}` of consumer group `{group}` does not exist, and auto_create_topics is off: an admin creates it with PUT /v1/topics/{}", crate::topic::percent_encoded(topic))]
    GroupTopicMissing {
        /// "retry" or "dead-letter".
        kind: &'static str,
        topic: String,
        group: String,
    },
    #[error("{0}")]
    MessageNotFound(String),
    /// No transaction has this id (never opened, or resolved so long ago it is
    /// forgotten).
    #[error("no transaction {0}")]
    TransactionNotFound(String),
    /// The state refuses it now; the same request may succeed later.
    #[error("{0}")]
    Conflict(String),
    /// A receipt handle whose lease ended (ran out, or replaced by a later
    /// delivery or change): the message may be delivered again.
    #[error("{0}")]
    LeaseExpired(String),
    /// No credentials, or ones nobody issued.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller or the topic's permission does not allow it.
    #[error("{0}")]
    NoPermission(String),
    #[error("{reason}")]
    RateLimited {
        reason: String,
        retry_after_secs: u64,
    },
    /// This node does not lead its group; `leader` is the leader's URL if known.
    #[error("{}", match leader {
        Some(url) => format!("this node is not the leader; send writes to {url}"),
        None => "this node is not the leader and no leader is known yet; retry shortly".to_string(),
    })]
    NotLeader { leader: Option<String> },
    /// A write was proposed but did not commit in time.
    #[error("the write did not commit within {timeout} (no quorum?); retrying is safe with producer_id and sequence")]
    WriteTimeout { timeout: HumanDuration },
    /// Leadership changed before a proposed write committed: it was not applied.
    #[error("leadership changed before the write committed ({0}); it was not applied and retrying is safe")]
    LeadershipLost(String),
    /// The node's storage failed; it refuses writes until its process restarts.
    #[error("storage failed: {reason}; {next}")]
    StorageFailed { reason: String, next: &'static str },
    /// The data directory's disk is above the low-water mark.
    #[error("disk nearly full: {used_percent}% used, writes refused above {limit_percent}% (storage.disk_full_ratio) so retention and Raft keep room to work; retry on the group's new leader")]
    DiskFull {
        used_percent: u32,
        limit_percent: u32,
    },
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Another cause that retrying later may cure (no quorum, a peer not answering).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an impossible state on this node.
    #[error("{0}")]
    Internal(String),
}

impl BrokerError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid(reason.into())
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable(reason.into())
    }

    pub fn topic_not_found(topic: &str) -> Self {
        Self::TopicNotFound {
            topic: topic.to_string(),
        }
    }

    /// `queue` is not one of `topic`'s `kind` queues, of which it has `count`.
    pub fn queue_not_found(topic: &str, queue: u32, kind: QueueKind, count: u32) -> Self {
        Self::QueueNotFound {
            topic: topic.to_string(),
            queue,
            kind,
            count,
        }
    }

    /// A broker group no node knows of, with the known ones.
    pub fn broker_group_not_found<'a>(
        group: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self::BrokerGroupNotFound {
            group: group.to_string(),
            known: known.into_iter().map(str::to_string).collect(),
        }
    }

    /// Whether the operation failed only because this node does not lead its group
    /// (nothing was applied; the leader can be asked instead).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Self::NotLeader { .. })
    }

    /// Whether what the request names (topic, queue, message) is not in this
    /// node's store — which may only trail the group's.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Self::TopicNotFound { .. } | Self::QueueNotFound { .. } | Self::MessageNotFound(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_explains_them() {
        assert_eq!(
            BrokerError::queue_not_found("t", 9, QueueKind::Read, 4).to_string(),
            "queue 9 is not a read queue of `t` (it has 4)"
        );
        assert_eq!(
            BrokerError::queue_not_found("t", 9, QueueKind::Any, 4).to_string(),
            "queue 9 is not a queue of `t` (it has 4)"
        );
        assert!(BrokerError::GroupTopicMissing {
            kind: "retry",
            topic: "%RETRY%g".into(),
            group: "g".into(),
        }
        .to_string()
        .ends_with("PUT /v1/topics/%25RETRY%25g"));
        assert_eq!(
            BrokerError::broker_group_not_found("x", ["a", "b"]).to_string(),
            "unknown broker group `x` (known: a, b)"
        );
        assert_eq!(
            BrokerError::NotLeader {
                leader: Some("http://n2".into())
            }
            .to_string(),
            "this node is not the leader; send writes to http://n2"
        );
    }
}
