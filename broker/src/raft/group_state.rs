//! The replicated metadata of a broker group: topics, consumer offsets, the
//! idempotent-producer table and the Raft membership.
//!
//! It is a fold over the CommitLog: every change is a record there (a control record,
//! or a message carrying a producer stamp), so the state at any CommitLog offset can
//! be rebuilt by replaying records from an earlier saved state. Live apply and replay
//! call the same transitions, so they cannot disagree. All limits here (dedup window,
//! producer count) are constants, not configuration: every replica must make the
//! same decisions.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{ControlRecord, OffsetCommit, SendResult};
use super::type_config::{log_id_of, LogId, StoredMembership};
use crate::storage::record::{RecordKind, RecordView};
use crate::storage::{CommitLogOffset, QueueId, QueueOffset};
use crate::topic::TopicConfig;

/// Sequences remembered per producer: a retry of any of a producer's last this-many
/// messages is recognised and answered with the first result.
pub const DEDUP_WINDOW: usize = 256;
/// Producers remembered; beyond this the one seen longest ago is forgotten.
pub const MAX_PRODUCERS: usize = 10_000;

/// Key of a committed consumer offset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub queue_id: QueueId,
}

/// The replicated metadata, as of `commit_log_end`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupState {
    pub topics: BTreeMap<String, TopicConfig>,
    pub consumer_offsets: BTreeMap<OffsetKey, QueueOffset>,
    /// Per schedule-topic queue, the offset up to which its delayed messages were
    /// delivered (RocketMQ's `delayOffset.json`, replicated here).
    pub schedule_offsets: BTreeMap<QueueId, QueueOffset>,
    pub producers: ProducerTable,
    pub membership: StoredMembership,
    /// The last log id folded in.
    pub last_applied: Option<LogId>,
    /// Every CommitLog record below this offset is folded in.
    pub commit_log_end: CommitLogOffset,
}

/// What the dedup table says about a (producer, sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupCheck {
    New,
    Duplicate(SendResult),
    /// Older than the window: it may or may not have been stored.
    TooOld {
        oldest_remembered: u64,
    },
}

/// Idempotent producers: per producer id, the results of its recent sequences.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProducerTable {
    producers: BTreeMap<String, ProducerState>,
    /// (last seen store time, producer id): eviction order. Derived; rebuilt on load.
    #[serde(skip)]
    by_last_seen: BTreeSet<(u64, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProducerState {
    last_seen_ms: u64,
    window: BTreeMap<u64, SendResult>,
}

impl ProducerTable {
    /// Looks a (producer, sequence) up.
    pub fn check(&self, producer_id: &str, sequence: u64) -> DedupCheck {
        let Some(state) = self.producers.get(producer_id) else {
            return DedupCheck::New;
        };
        if let Some(result) = state.window.get(&sequence) {
            return DedupCheck::Duplicate(*result);
        }
        match state.window.first_key_value() {
            Some((&oldest, _)) if state.window.len() >= DEDUP_WINDOW && sequence < oldest => {
                DedupCheck::TooOld {
                    oldest_remembered: oldest,
                }
            }
            _ => DedupCheck::New,
        }
    }

    /// Remembers where a producer's message was stored.
    pub fn record(&mut self, producer_id: &str, sequence: u64, result: SendResult) {
        let seen = result.store_timestamp_ms;
        let state = match self.producers.get_mut(producer_id) {
            Some(state) => {
                self.by_last_seen
                    .remove(&(state.last_seen_ms, producer_id.to_string()));
                state
            }
            None => self.producers.entry(producer_id.to_string()).or_default(),
        };
        state.last_seen_ms = state.last_seen_ms.max(seen);
        state.window.insert(sequence, result);
        while state.window.len() > DEDUP_WINDOW {
            state.window.pop_first();
        }
        self.by_last_seen
            .insert((state.last_seen_ms, producer_id.to_string()));
        while self.producers.len() > MAX_PRODUCERS {
            let Some((_, evicted)) = self.by_last_seen.pop_first() else {
                break;
            };
            self.producers.remove(&evicted);
        }
    }

    /// Rebuilds the eviction order after deserializing.
    fn rebuild_index(&mut self) {
        self.by_last_seen = self
            .producers
            .iter()
            .map(|(id, state)| (state.last_seen_ms, id.clone()))
            .collect();
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// Version byte of an encoded [`GroupState`]. Version 1 (before schedule offsets)
/// was never released; it is refused rather than guessed at.
const STATE_FORMAT_V2: u8 = 2;

impl GroupState {
    /// Commits a consumer offset; returns the offset stored afterwards. A lower
    /// offset is ignored unless forced, so committed offsets never move backwards
    /// except by an explicit reset.
    pub fn commit_offset(&mut self, commit: &OffsetCommit) -> QueueOffset {
        let key = OffsetKey {
            group: commit.group.clone(),
            topic: commit.topic.clone(),
            queue_id: commit.queue_id,
        };
        let stored = self.consumer_offsets.entry(key).or_insert(commit.offset);
        if commit.force || commit.offset > *stored {
            *stored = commit.offset;
        }
        *stored
    }

    /// The offset up to which a schedule-topic queue was delivered.
    pub fn schedule_offset(&self, queue_id: QueueId) -> QueueOffset {
        self.schedule_offsets
            .get(&queue_id)
            .copied()
            .unwrap_or_default()
    }

    /// Applies a control record's change.
    pub fn apply_control(&mut self, record: &ControlRecord) {
        match record {
            ControlRecord::Noop => {}
            ControlRecord::Membership(membership) => self.membership = membership.clone(),
            ControlRecord::UpsertTopic(config) => {
                self.topics.insert(config.name.clone(), config.clone());
            }
            ControlRecord::DeleteTopic(topic) => {
                self.topics.remove(topic);
                self.consumer_offsets.retain(|key, _| key.topic != *topic);
            }
            ControlRecord::CommitOffset(commit) => {
                self.commit_offset(commit);
            }
            ControlRecord::ScheduleProgress { queue_id, next } => {
                self.schedule_offsets.insert(*queue_id, *next);
            }
        }
    }

    /// Folds one CommitLog record into the state (replay after a restart or a
    /// snapshot).
    ///
    /// # Errors
    /// A control record that cannot be decoded: the CommitLog passed its CRC, so this
    /// is a format bug or a newer format, and replaying past it would diverge.
    pub fn fold_record(&mut self, view: &RecordView<'_>) -> Result<(), String> {
        match view.meta.kind {
            RecordKind::Control => {
                let record = ControlRecord::decode(view.body)
                    .map_err(|e| format!("control record at {}: {e}", view.meta.physical_offset))?;
                self.apply_control(&record);
            }
            RecordKind::Message => {
                if let Some((producer_id, sequence)) = view.producer() {
                    self.producers.record(
                        producer_id,
                        sequence,
                        SendResult {
                            msg_id: view.meta.msg_id,
                            queue_id: view.meta.queue_id,
                            queue_offset: view.meta.queue_offset,
                            commit_log_offset: view.meta.physical_offset.0,
                            store_timestamp_ms: view.meta.store_timestamp_ms,
                        },
                    );
                }
            }
        }
        self.last_applied = Some(log_id_of(view.meta.raft));
        self.commit_log_end = view.end_offset();
        Ok(())
    }

    /// Encodes the state: a version byte, then bincode (standard config).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT_V2];
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// Decodes a state written by [`GroupState::encode`].
    ///
    /// # Errors
    /// An unknown version or undecodable bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&STATE_FORMAT_V2, rest)) => {
                let (mut state, _): (Self, usize) =
                    bincode::serde::decode_from_slice(rest, bincode::config::standard())
                        .map_err(|e| format!("undecodable group state: {e}"))?;
                state.producers.rebuild_index();
                Ok(state)
            }
            Some((version, _)) => Err(format!("unknown group state version {version}")),
            None => Err("empty group state".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MessageId;

    fn result(offset: u64, ts: u64) -> SendResult {
        SendResult {
            msg_id: MessageId([offset as u8; 16]),
            queue_id: QueueId(0),
            queue_offset: QueueOffset(offset),
            commit_log_offset: offset * 100,
            store_timestamp_ms: ts,
        }
    }

    #[test]
    fn duplicates_are_answered_with_the_first_result() {
        let mut table = ProducerTable::default();
        assert_eq!(table.check("p", 1), DedupCheck::New);
        table.record("p", 1, result(7, 10));
        assert_eq!(table.check("p", 1), DedupCheck::Duplicate(result(7, 10)));
        assert_eq!(table.check("p", 2), DedupCheck::New);
        assert_eq!(table.check("q", 1), DedupCheck::New);
    }

    #[test]
    fn the_window_and_the_producer_count_are_bounded() {
        let mut table = ProducerTable::default();
        for seq in 0..(DEDUP_WINDOW as u64 + 10) {
            table.record("p", seq, result(seq, seq));
        }
        assert_eq!(
            table.check("p", 3),
            DedupCheck::TooOld {
                oldest_remembered: 10
            }
        );
        assert!(matches!(table.check("p", 10), DedupCheck::Duplicate(_)));
        for i in 0..(MAX_PRODUCERS + 5) {
            table.record(&format!("x{i}"), 0, result(0, 1000 + i as u64));
        }
        assert_eq!(table.len(), MAX_PRODUCERS);
        // The producers seen longest ago ("p", then x0..) were forgotten.
        assert_eq!(table.check("p", 10), DedupCheck::New);
        assert_eq!(table.check("x0", 0), DedupCheck::New);
        assert!(matches!(
            table.check(&format!("x{}", MAX_PRODUCERS + 4), 0),
            DedupCheck::Duplicate(_)
        ));
    }

    #[test]
    fn offsets_never_move_backwards_unless_forced() {
        let mut state = GroupState::default();
        let mut commit = OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            queue_id: QueueId(1),
            offset: QueueOffset(10),
            force: false,
        };
        assert_eq!(state.commit_offset(&commit), QueueOffset(10));
        commit.offset = QueueOffset(5);
        assert_eq!(state.commit_offset(&commit), QueueOffset(10));
        commit.force = true;
        assert_eq!(state.commit_offset(&commit), QueueOffset(5));
    }

    #[test]
    fn state_round_trips_with_its_eviction_index() {
        let mut state = GroupState::default();
        state
            .topics
            .insert("t".into(), TopicConfig::with_defaults("t"));
        state.producers.record("p", 1, result(1, 5));
        let decoded = GroupState::decode(&state.encode()).expect("decodes");
        assert_eq!(decoded.topics, state.topics);
        assert_eq!(
            decoded.producers.check("p", 1),
            DedupCheck::Duplicate(result(1, 5))
        );
        assert_eq!(decoded.producers.by_last_seen.len(), 1);
    }
}
