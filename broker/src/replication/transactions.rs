//! Transactional messages: the replicated table of transactions (RocketMQ's half
//! messages and op messages, kept here as group state).
//!
//! A transactional send stores its batch in the half topic ([`HALF_TOPIC`], one
//! queue) with the real topic and queue in properties, and the transaction's id
//! (the id of its first message) and producer group too. Storing a half message
//! opens or extends its transaction — at apply and when the CommitLog is folded
//! after a restart alike ([`TransactionTable::add_half`]), so the table needs no
//! record of its own for that.
//!
//! Everything else is a control record written by the entry that decides it:
//! a resolution ([`TransactionUpdate::Resolved`], with the committed messages in
//! the same append, so a commit is visible exactly once), and the offers of
//! checks ([`TransactionUpdate::Offered`], so the count of checks survives a
//! leader change and the last one rolls back wherever it happens).
//!
//! Retention keeps the half messages of every open transaction, also under disk
//! pressure (`super::retention_hold`): a commit reads them.
//!
//! Bounds: at most [`MAX_OPEN`] open transactions (a send past it is refused);
//! the [`MAX_RESOLVED`] newest resolutions are remembered, so a repeated commit
//! or rollback answers as the first did (older ones answer 404).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::storage::MessageId;

pub use broker_proto::topic::HALF_TOPIC;

/// The half topic's only queue.
pub const HALF_QUEUE: crate::storage::QueueId = crate::storage::QueueId(0);
/// Most open transactions a group holds.
pub const MAX_OPEN: usize = 65_536;
/// Resolutions remembered for repeated commits and rollbacks.
pub const MAX_RESOLVED: usize = 65_536;

/// Properties of a half message.
pub const PROPERTY_TRANSACTION_ID: &str = "TRAN_ID";
pub const PROPERTY_PRODUCER_GROUP: &str = "PGROUP";

/// A transaction not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTransaction {
    pub producer_group: String,
    pub topic: String,
    /// Half-topic queue offsets of its messages, in order.
    pub offsets: Vec<u64>,
    /// Store time of its first message.
    pub opened_ms: u64,
    /// Checks offered so far.
    pub checks: u32,
    /// When the next check is offered (0: at `opened_ms` + the check delay).
    pub next_check_ms: u64,
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub committed: bool,
    /// Rolled back by the broker after its last check.
    pub by_timeout: bool,
    pub topic: String,
    pub messages: u64,
    pub at_ms: u64,
}

/// What apply decided about a resolution request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolveOutcome {
    /// Resolved by this request.
    Resolved(Resolution),
    /// Resolved earlier the same way: a repeat, answered as the first.
    AlreadyResolved(Resolution),
    /// Resolved earlier the other way.
    Conflict(Resolution),
    /// Unknown (never opened, or resolved so long ago it is forgotten).
    NotFound,
}

/// A change to the table, as a control record carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionUpdate {
    Resolved {
        id: MessageId,
        resolution: Resolution,
    },
    /// Checks offered at `at_ms`; the next ones at `next_ms`.
    Offered { ids: Vec<MessageId>, next_ms: u64 },
}

/// The group's transactions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TransactionTable {
    open: BTreeMap<MessageId, OpenTransaction>,
    resolved: BTreeMap<MessageId, Resolution>,
    /// (time, id) of every remembered resolution: eviction order. Derived.
    #[serde(skip)]
    by_age: BTreeSet<(u64, MessageId)>,
    /// (first half-queue offset, id) of every open transaction: the oldest half
    /// message retention must keep. Derived.
    #[serde(skip)]
    by_first_half: BTreeSet<(u64, MessageId)>,
}

impl TransactionTable {
    /// Rebuilds the derived eviction index (after decoding).
    pub fn rebuild_index(&mut self) {
        self.by_age = self.resolved.iter().map(|(id, r)| (r.at_ms, *id)).collect();
        self.by_first_half = self
            .open
            .iter()
            .filter_map(|(id, open)| Some((*open.offsets.first()?, *id)))
            .collect();
    }

    /// The half-queue offset of the oldest half message an open transaction
    /// holds: retention keeps it (and everything after) until it is resolved.
    pub fn oldest_half(&self) -> Option<u64> {
        self.by_first_half.first().map(|(offset, _)| *offset)
    }

    /// The half-queue offsets of open transactions' first half messages, from
    /// `from` on, oldest first.
    pub fn first_halves_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        self.by_first_half
            .range((from, MessageId([0; 16]))..)
            .map(|(offset, _)| *offset)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Whether a send opening `new` more transactions fits.
    pub fn has_room_for(&self, new: usize) -> bool {
        self.open.len() + new <= MAX_OPEN
    }

    pub fn open_transaction(&self, id: &MessageId) -> Option<&OpenTransaction> {
        self.open.get(id)
    }

    pub fn resolution(&self, id: &MessageId) -> Option<&Resolution> {
        self.resolved.get(id)
    }

    /// The open transactions, by id.
    pub fn open(&self) -> impl Iterator<Item = (&MessageId, &OpenTransaction)> {
        self.open.iter()
    }

    /// A half message stored at `offset` of the half queue: it opens its
    /// transaction, or joins it.
    pub fn add_half(
        &mut self,
        id: MessageId,
        producer_group: &str,
        topic: &str,
        offset: u64,
        store_ms: u64,
    ) {
        if self.resolved.contains_key(&id) {
            return;
        }
        let open = self.open.entry(id).or_insert_with(|| OpenTransaction {
            producer_group: producer_group.to_string(),
            topic: topic.to_string(),
            offsets: Vec::new(),
            opened_ms: store_ms,
            checks: 0,
            next_check_ms: 0,
        });
        if open.offsets.is_empty() {
            self.by_first_half.insert((offset, id));
        }
        open.offsets.push(offset);
    }

    /// What resolving `id` (`commit`, or roll back) would do, without doing it.
    pub fn decide(&self, id: &MessageId, commit: bool) -> Option<ResolveOutcome> {
        if let Some(resolution) = self.resolved.get(id) {
            return Some(if resolution.committed == commit {
                ResolveOutcome::AlreadyResolved(resolution.clone())
            } else {
                ResolveOutcome::Conflict(resolution.clone())
            });
        }
        if self.open.contains_key(id) {
            return None;
        }
        Some(ResolveOutcome::NotFound)
    }

    /// Folds a change in (apply, and replay after a restart).
    pub fn fold(&mut self, update: &TransactionUpdate) {
        match update {
            TransactionUpdate::Resolved { id, resolution } => {
                if let Some(open) = self.open.remove(id) {
                    if let Some(&first) = open.offsets.first() {
                        self.by_first_half.remove(&(first, *id));
                    }
                }
                if let Some(old) = self.resolved.insert(*id, resolution.clone()) {
                    self.by_age.remove(&(old.at_ms, *id));
                }
                self.by_age.insert((resolution.at_ms, *id));
                while self.resolved.len() > MAX_RESOLVED {
                    let Some(oldest) = self.by_age.pop_first() else {
                        break;
                    };
                    self.resolved.remove(&oldest.1);
                }
            }
            TransactionUpdate::Offered { ids, next_ms } => {
                for id in ids {
                    if let Some(open) = self.open.get_mut(id) {
                        open.checks = open.checks.saturating_add(1);
                        open.next_check_ms = *next_ms;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    fn resolution(committed: bool, at_ms: u64) -> Resolution {
        Resolution {
            committed,
            by_timeout: false,
            topic: "t".into(),
            messages: 2,
            at_ms,
        }
    }

    #[test]
    fn a_transaction_opens_resolves_once_and_answers_repeats() {
        let mut table = TransactionTable::default();
        table.add_half(id(1), "pg", "t", 0, 100);
        table.add_half(id(1), "pg", "t", 1, 100);
        assert_eq!(
            table.open_transaction(&id(1)).expect("open").offsets,
            vec![0, 1]
        );
        assert_eq!(table.decide(&id(1), true), None, "open: to be decided");
        assert_eq!(table.decide(&id(2), true), Some(ResolveOutcome::NotFound));
        table.fold(&TransactionUpdate::Resolved {
            id: id(1),
            resolution: resolution(true, 200),
        });
        assert_eq!(table.open_count(), 0);
        assert_eq!(
            table.decide(&id(1), true),
            Some(ResolveOutcome::AlreadyResolved(resolution(true, 200)))
        );
        assert_eq!(
            table.decide(&id(1), false),
            Some(ResolveOutcome::Conflict(resolution(true, 200)))
        );
        // A half message of a resolved transaction (never, but replay must not
        // reopen it).
        table.add_half(id(1), "pg", "t", 2, 300);
        assert_eq!(table.open_count(), 0);
    }

    #[test]
    fn the_oldest_open_half_message_is_known_also_after_decoding() {
        let mut table = TransactionTable::default();
        assert_eq!(table.oldest_half(), None);
        table.add_half(id(1), "pg", "t", 4, 100);
        table.add_half(id(2), "pg", "t", 5, 100);
        table.add_half(id(1), "pg", "t", 6, 100);
        assert_eq!(table.oldest_half(), Some(4));
        table.fold(&TransactionUpdate::Resolved {
            id: id(1),
            resolution: resolution(true, 200),
        });
        assert_eq!(table.oldest_half(), Some(5), "the next open one's first");
        let mut decoded: TransactionTable = bincode::serde::decode_from_slice(
            &bincode::serde::encode_to_vec(&table, bincode::config::standard()).expect("encodes"),
            bincode::config::standard(),
        )
        .expect("decodes")
        .0;
        assert_eq!(decoded.oldest_half(), None, "derived: not encoded");
        decoded.rebuild_index();
        assert_eq!(decoded.oldest_half(), Some(5));
        decoded.fold(&TransactionUpdate::Resolved {
            id: id(2),
            resolution: resolution(false, 300),
        });
        assert_eq!(decoded.oldest_half(), None);
    }

    #[test]
    fn offers_count_and_old_resolutions_are_forgotten() {
        let mut table = TransactionTable::default();
        table.add_half(id(1), "pg", "t", 0, 100);
        table.fold(&TransactionUpdate::Offered {
            ids: vec![id(1), id(9)],
            next_ms: 5_000,
        });
        let open = table.open_transaction(&id(1)).expect("open");
        assert_eq!((open.checks, open.next_check_ms), (1, 5_000));
        for n in 0..(MAX_RESOLVED as u64 + 1) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            table.fold(&TransactionUpdate::Resolved {
                id: MessageId(bytes),
                resolution: resolution(false, n),
            });
        }
        assert_eq!(table.resolved.len(), MAX_RESOLVED);
        assert_eq!(
            table.decide(&MessageId([0; 16]), false),
            Some(ResolveOutcome::NotFound),
            "the oldest is forgotten"
        );
        let mut decoded: TransactionTable = bincode::serde::decode_from_slice(
            &bincode::serde::encode_to_vec(&table, bincode::config::standard()).expect("encodes"),
            bincode::config::standard(),
        )
        .expect("decodes")
        .0;
        decoded.rebuild_index();
        assert_eq!(decoded.by_age.len(), MAX_RESOLVED);
    }
}
