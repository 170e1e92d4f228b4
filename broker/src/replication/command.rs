//! What the group replicates: commands proposed by the leader, their responses, and
//! the control records the state machine writes to the CommitLog.
//!
//! Everything that affects stored bytes is fixed in the command before it is
//! proposed (queue ids, message ids, timestamps); queue and CommitLog offsets are
//! assigned in apply. Every applied entry leaves at least one record in the
//! CommitLog — messages, or a control record — stamped with its log id, so the
//! CommitLog's tail *is* the applied state.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::claims::{ClaimsChange, ClaimsRefusal};
use super::leases::{LeaseCommand, LeaseOutcome, LeaseUpdate};
use super::timers::{TimerKey, TimerState};
use super::transactions::{ResolveOutcome, TransactionUpdate};
use super::type_config::StoredMembership;
use crate::auth::users::{MergeOutcome, UserRecord};
use crate::storage::{MessageDraft, MessageId, QueueId, QueueOffset};
use crate::topic::TopicConfig;

/// A replicated command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a batch of messages atomically.
    Send(SendCommand),
    /// Create or update a topic.
    UpsertTopic(TopicConfig),
    /// Delete a topic: its configuration, consumer offsets and ConsumeQueues. Its
    /// stored messages answer no pull or query from then on (their bytes stay in the
    /// CommitLog until retention), and a topic created again under the name starts
    /// empty at queue offset 0 (see `MessageStore::drop_topic`).
    DeleteTopic { topic: String },
    /// Commit a consumer group's offset for a queue.
    CommitOffset(OffsetCommit),
    /// Move due messages from a schedule-topic queue to their real topics.
    Deliver(DeliverCommand),
    /// Sends of concurrent requests, batched by the leader into one entry (one
    /// CommitLog append): each is decided, stored and answered as if it were its own
    /// [`Command::Send`], in order.
    SendBatch(Vec<SendCommand>),
    /// Merge user records into the group's user table (last writer wins per user;
    /// see `auth::users`). Creates, updates, deletes, token rotations and
    /// anti-entropy pulls are all this.
    PutUsers(Vec<UserRecord>),
    /// Lease-based consumption: deliveries, redeliveries, acks, lease changes and
    /// dead letters of one consumer group and topic (see `replication::leases`).
    Lease(LeaseCommand),
    /// Move due timer messages to their topics (see `replication::timers`).
    DeliverTimers(DeliverTimersCommand),
    /// Commit or roll back a transaction (see `replication::transactions`).
    ResolveTransaction(ResolveTransaction),
    /// Count a check of these open transactions as offered.
    OfferChecks {
        ids: Vec<MessageId>,
        /// When the next check of each is offered.
        next_ms: u64,
    },
    /// Enable the claims table, or record a coordinator's grants and releases
    /// (see `replication::claims`). Proposed only once every voter speaks
    /// internal protocol 2: a node of the previous build cannot decode it.
    Claims(ClaimsChange),
}

/// Commit (its half messages stored in their topic, stamped `at_ms`, the
/// leader's time) or roll back a transaction — once: a repeat answers as the
/// first did, the opposite is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveTransaction {
    pub id: MessageId,
    pub commit: bool,
    /// The broker rolls it back after its last check.
    pub by_timeout: bool,
    pub at_ms: u64,
}

/// Timer messages that are due, read by the leader from its timer index: every
/// timer with a key after `from` up to `to`, in key order, and no other.
///
/// Apply accepts it only while the delivered key is still `from`, and only if no
/// timer the index did not hold when it was read (queue offset `through` on) falls
/// inside the run; it then stores the messages and makes `to` the delivered key,
/// in one entry. Every timer is delivered exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverTimersCommand {
    pub from: TimerKey,
    pub to: TimerKey,
    /// The timer-topic queue offset the leader's index held every timer below.
    pub through: u64,
    /// The messages to store, each with the time it was due (apply refuses one
    /// stored before it).
    pub messages: Vec<DueMessage>,
}

/// Delayed messages that are due, read by the leader from one schedule-topic queue.
///
/// Applied only if the queue's delivered offset is still `from` (compare and set),
/// so a repeated proposal — a retry, or a new leader reading a stale offset —
/// changes nothing: every scheduled message is delivered exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverCommand {
    /// The schedule-topic queue (delay level - 1).
    pub queue_id: QueueId,
    /// Its delivered offset this delivery starts from.
    pub from: QueueOffset,
    /// Its delivered offset afterwards (past messages skipped as undeliverable too).
    pub next: QueueOffset,
    /// The messages to store, each with the time it was due: apply refuses a batch
    /// holding a message stored before it is due.
    pub messages: Vec<DueMessage>,
}

/// One delayed message, ready for its real topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueMessage {
    pub due_ms: u64,
    pub message: MessageDraft,
}

/// A batch of messages, fixed by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCommand {
    pub topic: String,
    pub messages: Vec<MessageDraft>,
    /// Create the topic with this configuration if it does not exist when applied
    /// (auto-creation); `None` means a missing topic rejects the batch.
    pub create_if_missing: Option<TopicConfig>,
}

/// A consumer offset commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub group: String,
    pub topic: String,
    pub queue_id: QueueId,
    pub offset: QueueOffset,
    /// Move backwards too (a reset); otherwise a lower offset is ignored.
    pub force: bool,
}

/// Where one message was stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    pub msg_id: MessageId,
    pub queue_id: QueueId,
    pub queue_offset: QueueOffset,
    pub commit_log_offset: u64,
    pub store_timestamp_ms: u64,
}

/// Why a command was refused when applied (a business outcome, never a storage
/// error: those are fatal to the node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    TopicNotFound(String),
    NoPermission(String),
    Invalid(String),
    /// The send's new producer ids do not fit in the dedup table (see
    /// `group_state::ProducerTable::admit`).
    ProducerTableFull(String),
    /// The send would open more transactions than the group holds.
    TooManyTransactions(String),
}

/// A rejection from apply as the broker's error.
impl From<Rejection> for crate::error::BrokerError {
    fn from(rejection: Rejection) -> Self {
        use crate::error::BrokerError;
        match rejection {
            Rejection::TopicNotFound(topic) => BrokerError::TopicNotFound { topic },
            Rejection::NoPermission(reason) => BrokerError::NoPermission(reason),
            Rejection::Invalid(reason) => BrokerError::Invalid(reason),
            Rejection::ProducerTableFull(reason) | Rejection::TooManyTransactions(reason) => {
                BrokerError::Unavailable(reason)
            }
        }
    }
}

/// The outcome of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// One result per message, in request order (duplicates answered with the
    /// result of their first store).
    Sent(Vec<SendResult>),
    Topic(TopicConfig),
    TopicDeleted {
        existed: bool,
    },
    /// The offset stored after the commit (higher than requested if a lower commit
    /// was ignored).
    OffsetCommitted {
        offset: QueueOffset,
    },
    Rejected(Rejection),
    /// Scheduled messages moved to their topics (`skipped` named a topic or queue
    /// that no longer exists).
    Delivered {
        delivered: usize,
        skipped: usize,
    },
    /// Blank and membership entries.
    Applied,
    /// One answer per send of a [`Command::SendBatch`], in order: `Sent` or
    /// `Rejected`.
    SentBatch(Vec<CommandResponse>),
    /// What a [`Command::PutUsers`] changed.
    UsersMerged(MergeOutcome),
    /// One outcome per op of a [`Command::Lease`], in order.
    Leased(Vec<LeaseOutcome>),
    /// What a [`Command::ResolveTransaction`] did.
    Transaction(ResolveOutcome),
    /// Whether a [`Command::Claims`] was applied.
    Claims(Result<(), ClaimsRefusal>),
}

/// The payload of a control record: the state changes that are not messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlRecord {
    /// A blank entry (a new leader's first), a rejected command, or a batch whose
    /// messages were all duplicates: nothing changes but the applied log id.
    Noop,
    Membership(StoredMembership),
    UpsertTopic(TopicConfig),
    DeleteTopic(String),
    CommitOffset(OffsetCommit),
    /// A schedule-topic queue delivered up to `next` (written with the messages it
    /// delivered, in the same entry).
    ScheduleProgress {
        queue_id: QueueId,
        next: QueueOffset,
    },
    /// User records merged into the user table.
    PutUsers(Vec<UserRecord>),
    /// Lease changes apply accepted (written with the dead letters they store,
    /// in the same entry).
    Leases(LeaseUpdate),
    /// Timer delivery's progress (written with the messages it delivered, in the
    /// same entry).
    Timers(TimerState),
    /// A transaction resolved (written with the messages a commit makes visible,
    /// in the same entry), or checks offered.
    Transactions(TransactionUpdate),
    /// A claims change apply accepted.
    Claims(ClaimsChange),
}

/// Version byte in front of every control record payload.
const CONTROL_FORMAT_V1: u8 = 1;

impl ControlRecord {
    /// Encodes the payload: a version byte, then bincode (standard config).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONTROL_FORMAT_V1];
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// Decodes a payload written by [`ControlRecord::encode`].
    ///
    /// # Errors
    /// An unknown version or undecodable bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        match payload.split_first() {
            Some((&CONTROL_FORMAT_V1, rest)) => {
                bincode::serde::decode_from_slice(rest, bincode::config::standard())
                    .map(|(record, _)| record)
                    .map_err(|e| format!("undecodable control record: {e}"))
            }
            Some((version, _)) => Err(format!("unknown control record version {version}")),
            None => Err("empty control record".into()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(send) => {
                write!(f, "send {} messages to {}", send.messages.len(), send.topic)
            }
            Self::UpsertTopic(topic) => write!(f, "upsert topic {}", topic.name),
            Self::DeleteTopic { topic } => write!(f, "delete topic {topic}"),
            Self::CommitOffset(c) => write!(
                f,
                "commit offset {} of {}/{}/{}",
                c.offset, c.group, c.topic, c.queue_id
            ),
            Self::Deliver(d) => write!(
                f,
                "deliver {} scheduled messages of queue {} from {}",
                d.messages.len(),
                d.queue_id,
                d.from
            ),
            Self::SendBatch(sends) => write!(
                f,
                "send a batch of {} sends ({} messages)",
                sends.len(),
                sends.iter().map(|s| s.messages.len()).sum::<usize>()
            ),
            Self::PutUsers(records) => write!(f, "put {} user records", records.len()),
            Self::Lease(lease) => write!(
                f,
                "{} lease ops of {} on {}",
                lease.ops.len(),
                lease.group,
                lease.topic
            ),
            Self::ResolveTransaction(r) => write!(
                f,
                "{} transaction {}",
                if r.commit { "commit" } else { "roll back" },
                r.id
            ),
            Self::OfferChecks { ids, .. } => write!(f, "offer {} transaction checks", ids.len()),
            Self::Claims(ClaimsChange::Enable) => f.write_str("enable queue claims"),
            Self::Claims(ClaimsChange::Update(u)) => write!(
                f,
                "{} queue grants and {} releases of {}",
                u.grant.len(),
                u.release.len(),
                u.consumer_group
            ),
            Self::DeliverTimers(d) => write!(
                f,
                "deliver {} timer messages after {:?} up to {:?}",
                d.messages.len(),
                d.from,
                d.to
            ),
        }
    }
}

impl fmt::Display for CommandResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sent(results) => write!(f, "sent {}", results.len()),
            Self::Topic(topic) => write!(f, "topic {}", topic.name),
            Self::TopicDeleted { existed } => write!(f, "topic deleted (existed: {existed})"),
            Self::OffsetCommitted { offset } => write!(f, "offset {offset}"),
            Self::Rejected(r) => write!(f, "rejected: {r:?}"),
            Self::Delivered { delivered, skipped } => {
                write!(f, "delivered {delivered}, skipped {skipped}")
            }
            Self::Applied => f.write_str("applied"),
            Self::SentBatch(answers) => write!(f, "sent a batch of {}", answers.len()),
            Self::UsersMerged(outcome) => write!(
                f,
                "users merged: {} applied, {} refused (table full)",
                outcome.applied, outcome.refused_full
            ),
            Self::Leased(outcomes) => write!(f, "{} lease outcomes", outcomes.len()),
            Self::Transaction(outcome) => write!(f, "transaction: {outcome:?}"),
            Self::Claims(Ok(())) => f.write_str("claims applied"),
            Self::Claims(Err(refusal)) => write!(f, "claims refused: {refusal}"),
        }
    }
}
