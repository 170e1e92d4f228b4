//! Transactional messages (shared/API.md "Transactional messages"): a send with
//! `transaction` stores its batch as half messages, invisible to consumers, and
//! answers a transaction id; committing makes the batch visible exactly once,
//! rolling back discards it; a transaction left open is offered to its producer
//! group's checks until it is resolved, and rolled back after the last.

use serde::{Deserialize, Serialize};

use crate::api::MessageView;

/// Most checks one `transaction-checks` answer holds.
pub const MAX_CHECKS: usize = 64;
/// Longest a `transaction-checks` request is held when nothing is to be checked.
pub const MAX_CHECK_WAIT_MS: u64 = 30_000;
/// Length of a transaction id: 32 hex digits (the id of its first message).
pub const TRANSACTION_ID_LEN: usize = 32;

/// How a transaction ended.
pub const STATUS_COMMITTED: &str = "COMMITTED";
pub const STATUS_ROLLED_BACK: &str = "ROLLED_BACK";

/// `"transaction"` of a send: the batch is a transaction of this producer group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransactionInput {
    /// The producer group whose members answer the transaction's checks.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub producer_group: String,
}

/// Answer to a commit or rollback (the same for a repeated one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionResolution {
    pub transaction_id: String,
    /// [`STATUS_COMMITTED`] or [`STATUS_ROLLED_BACK`].
    pub status: String,
    /// Whether the broker rolled it back after its last check went unanswered.
    #[serde(default)]
    pub by_timeout: bool,
    pub topic: String,
    /// Messages the transaction holds (made visible, or discarded).
    pub messages: u64,
    /// The broker group that stored it.
    pub broker_group: String,
}

/// `GET /v1/producer-groups/{pg}/transaction-checks?max_wait_ms=N`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionChecksResponse {
    pub checks: Vec<TransactionCheck>,
}

/// An open transaction its producer should resolve (commit or roll back).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionCheck {
    pub transaction_id: String,
    pub topic: String,
    /// Its half messages, as a pull shows messages (topic: the real topic).
    pub messages: Vec<MessageView>,
    /// How many times it was offered, this one included.
    pub check_count: u32,
    /// The broker group that stores it.
    pub broker_group: String,
}

/// Whether `id` has a transaction id's shape (32 hex digits).
pub fn is_transaction_id(id: &str) -> bool {
    id.len() == TRANSACTION_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}
