//! The replicated metadata of a broker group: topics, consumer offsets, the
//! idempotent-producer table and the Raft membership.
//!
//! It is a fold over the CommitLog: every change is a record there (a control record,
//! or a message carrying a producer stamp), so the state at any CommitLog offset can
//! be rebuilt by replaying records from an earlier saved state. Live apply and replay
//! call the same transitions, so they cannot disagree. All limits here (dedup window,
//! producer count, producer lifetime) are constants, not configuration: every replica
//! must make the same decisions.
//!
//! # The idempotency guarantee
//! A retry of a `(producer_id, sequence)` is stored once, and answered with the first
//! result, if it comes within [`PRODUCER_TTL_MS`] (1 h) of the producer's last stored
//! message and is among its last [`DEDUP_WINDOW`] (256) sequences. Nothing another
//! client does can shorten that: the table holds at most [`MAX_PRODUCERS`] producers
//! seen within the hour, and when it is full a *new* producer id is refused
//! (`UNAVAILABLE`, "the producer table is full") until one expires; a producer in
//! the table is never dropped to make room. Sends without `producer_id` are not
//! affected. Time is the store timestamp the leader fixed in each entry (the newest
//! seen so far), never a replica's clock, so every replica expires the same
//! producers at the same entry.
//!
//! Why one hour: a producer retries within its request timeout and retry budget
//! (seconds), and a client cut off by a partition or a restart typically comes
//! back within minutes; RocketMQ keeps a producer's state for hours (its
//! transactional check window). An hour covers that, while 10,000 producers
//! (each a process instance, not a request) per broker group per hour is far
//! beyond a normal deployment. Memory: at most `MAX_PRODUCERS * DEDUP_WINDOW`
//! results (2.56 million, ~150 MiB at worst, also in snapshots).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::claims::{ClaimTable, ClaimsChange, ClaimsRefusal};
use super::command::{ControlRecord, OffsetCommit, SendResult};
use super::leases::LeaseTable;
use super::timers::TimerState;
use super::transactions::{
    TransactionTable, HALF_TOPIC, PROPERTY_PRODUCER_GROUP, PROPERTY_TRANSACTION_ID,
};
use super::type_config::{log_id_of, LogId, StoredMembership};
use crate::auth::users::UserTable;
use crate::storage::record::{RecordKind, RecordView};
use crate::storage::{CommitLogOffset, MessageId, QueueId, QueueOffset};
use crate::topic::TopicConfig;

pub use broker_proto::limits::{DEDUP_WINDOW, MAX_PRODUCERS, PRODUCER_TTL_MS};

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
    /// Users, permissions and quotas (replicated in every group; see
    /// `auth::users`).
    pub users: UserTable,
    /// Receive cursors and messages in flight of lease-based consumption.
    pub leases: LeaseTable,
    /// How far timer messages were delivered.
    pub timers: TimerState,
    /// Transactions: open ones (their half messages) and recent resolutions.
    pub transactions: TransactionTable,
    /// Which member each queue was granted to, per consumer group; `None` until
    /// the group enables claims (see `replication::claims`). Not in the derived
    /// encoding: [`GroupState::encode`] appends it, in format 6, only when set.
    #[serde(skip)]
    pub claims: Option<ClaimTable>,
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
///
/// Its persisted shape is the producer map alone; the expiry index (and with it
/// the table's clock, the newest store time seen) is derived on load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProducerTable {
    producers: BTreeMap<String, ProducerState>,
    /// (last seen store time, producer id): expiry order. Derived; rebuilt on load.
    #[serde(skip)]
    by_last_seen: BTreeSet<(u64, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProducerState {
    last_seen_ms: u64,
    window: BTreeMap<u64, SendResult>,
}

/// New producers could not be admitted: the table holds [`MAX_PRODUCERS`] live ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the producer table is full: {MAX_PRODUCERS} producers sent within the last hour, and each is kept for 1 h after its last message so its retries stay deduplicated; new producer ids are refused until one expires (the next in {frees_in_s} s). Reuse a producer id (one per client process); sends without producer_id are not affected"
)]
pub struct ProducerTableFull {
    /// Seconds until the oldest live producer expires.
    pub frees_in_s: u64,
}

impl ProducerTable {
    /// The time decisions are made at: the entry's store time, or the newest seen
    /// (a new leader's clock may be behind the old one's).
    fn now(&self, at_ms: u64) -> u64 {
        self.by_last_seen
            .last()
            .map_or(at_ms, |(newest, _)| at_ms.max(*newest))
    }

    /// The newest last-seen time at which a producer has expired by `now`.
    fn expired_up_to(now: u64) -> Option<u64> {
        now.checked_sub(PRODUCER_TTL_MS)
    }

    /// The state of a producer whose window is still kept at `now`.
    fn live(&self, producer_id: &str, now: u64) -> Option<&ProducerState> {
        self.producers
            .get(producer_id)
            .filter(|state| Self::expired_up_to(now).is_none_or(|cut| state.last_seen_ms > cut))
    }

    /// Producers whose windows are still kept at `now`.
    fn live_count(&self, now: u64) -> usize {
        let expired = Self::expired_up_to(now).map_or(0, |cut| {
            self.by_last_seen.range(..(cut + 1, String::new())).count()
        });
        self.producers.len() - expired
    }

    /// Looks a (producer, sequence) up, for a message stored at `at_ms`.
    pub fn check(&self, producer_id: &str, sequence: u64, at_ms: u64) -> DedupCheck {
        let Some(state) = self.live(producer_id, self.now(at_ms)) else {
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

    /// Admits the producers of one send stored at `at_ms`: those not live in the
    /// table nor already in `admitted` (the new producers of earlier sends of the
    /// same entry) are added to `admitted`, if the table has room for them all.
    ///
    /// # Errors
    /// The table would hold more than [`MAX_PRODUCERS`] live producers; `admitted`
    /// is unchanged.
    pub fn admit<'a>(
        &self,
        admitted: &mut HashSet<&'a str>,
        producer_ids: impl IntoIterator<Item = &'a str>,
        at_ms: u64,
    ) -> Result<(), ProducerTableFull> {
        let now = self.now(at_ms);
        let fresh: BTreeSet<&'a str> = producer_ids
            .into_iter()
            .filter(|id| !admitted.contains(id) && self.live(id, now).is_none())
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        if self.live_count(now) + admitted.len() + fresh.len() > MAX_PRODUCERS {
            let oldest_live = match Self::expired_up_to(now) {
                Some(cut) => self.by_last_seen.range((cut + 1, String::new())..).next(),
                None => self.by_last_seen.first(),
            };
            let frees_at = oldest_live.map_or(now, |(seen, _)| seen + PRODUCER_TTL_MS);
            return Err(ProducerTableFull {
                frees_in_s: frees_at.saturating_sub(now).div_ceil(1000),
            });
        }
        admitted.extend(fresh);
        Ok(())
    }

    /// Remembers where a producer's message was stored, first forgetting the
    /// producers expired by then.
    pub fn record(&mut self, producer_id: &str, sequence: u64, result: SendResult) {
        let seen = result.store_timestamp_ms;
        self.expire(self.now(seen));
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
        // Apply admits no producer past the cap, so this never runs for entries
        // decided by this version; it keeps replaying a log written by an earlier
        // one (which evicted the least recently seen) bounded the same way.
        while self.producers.len() > MAX_PRODUCERS {
            let Some((_, evicted)) = self.by_last_seen.pop_first() else {
                break;
            };
            tracing::warn!(producer_id = %evicted, "producer table over its cap: forgetting the least recently seen producer");
            self.producers.remove(&evicted);
        }
    }

    /// Forgets producers whose last message is [`PRODUCER_TTL_MS`] old at `now`.
    fn expire(&mut self, now: u64) {
        let Some(cut) = Self::expired_up_to(now) else {
            return;
        };
        while let Some((seen, _)) = self.by_last_seen.first() {
            if *seen > cut {
                break;
            }
            if let Some((_, id)) = self.by_last_seen.pop_first() {
                self.producers.remove(&id);
            }
        }
    }

    /// Rebuilds the expiry order after deserializing.
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
/// was never released; it is refused rather than guessed at. Version 2 had no
/// user table; it is read as version 4 with no users and no leases. Version 3 had
/// no lease table; it is read as version 4 with no leases. Version 4 had no timer
/// progress and no transactions; it is read as version 5 with none. Version 6 is
/// version 5 followed by the claims table, written only once claims are enabled
/// (so that until then a node of the previous build reads the state).
const STATE_FORMAT_V2: u8 = 2;
const STATE_FORMAT_V3: u8 = 3;
const STATE_FORMAT_V4: u8 = 4;
const STATE_FORMAT_V5: u8 = 5;
const STATE_FORMAT_V6: u8 = 6;

/// [`GroupState`] as version 4 wrote it.
#[derive(Deserialize)]
struct GroupStateV4 {
    topics: BTreeMap<String, TopicConfig>,
    consumer_offsets: BTreeMap<OffsetKey, QueueOffset>,
    schedule_offsets: BTreeMap<QueueId, QueueOffset>,
    producers: ProducerTable,
    membership: StoredMembership,
    users: UserTable,
    leases: LeaseTable,
    last_applied: Option<LogId>,
    commit_log_end: CommitLogOffset,
}

impl From<GroupStateV4> for GroupState {
    fn from(v4: GroupStateV4) -> Self {
        Self {
            topics: v4.topics,
            consumer_offsets: v4.consumer_offsets,
            schedule_offsets: v4.schedule_offsets,
            producers: v4.producers,
            membership: v4.membership,
            users: v4.users,
            leases: v4.leases,
            timers: TimerState::default(),
            transactions: TransactionTable::default(),
            claims: None,
            last_applied: v4.last_applied,
            commit_log_end: v4.commit_log_end,
        }
    }
}

/// [`GroupState`] as version 3 wrote it.
#[derive(Deserialize)]
struct GroupStateV3 {
    topics: BTreeMap<String, TopicConfig>,
    consumer_offsets: BTreeMap<OffsetKey, QueueOffset>,
    schedule_offsets: BTreeMap<QueueId, QueueOffset>,
    producers: ProducerTable,
    membership: StoredMembership,
    users: UserTable,
    last_applied: Option<LogId>,
    commit_log_end: CommitLogOffset,
}

impl From<GroupStateV3> for GroupState {
    fn from(v3: GroupStateV3) -> Self {
        Self {
            topics: v3.topics,
            consumer_offsets: v3.consumer_offsets,
            schedule_offsets: v3.schedule_offsets,
            producers: v3.producers,
            membership: v3.membership,
            users: v3.users,
            leases: LeaseTable::default(),
            timers: TimerState::default(),
            transactions: TransactionTable::default(),
            claims: None,
            last_applied: v3.last_applied,
            commit_log_end: v3.commit_log_end,
        }
    }
}

/// [`GroupState`] as version 2 wrote it (bincode is not self-describing: the old
/// field list is needed to read it).
#[derive(Deserialize)]
struct GroupStateV2 {
    topics: BTreeMap<String, TopicConfig>,
    consumer_offsets: BTreeMap<OffsetKey, QueueOffset>,
    schedule_offsets: BTreeMap<QueueId, QueueOffset>,
    producers: ProducerTable,
    membership: StoredMembership,
    last_applied: Option<LogId>,
    commit_log_end: CommitLogOffset,
}

impl From<GroupStateV2> for GroupState {
    fn from(v2: GroupStateV2) -> Self {
        Self {
            topics: v2.topics,
            consumer_offsets: v2.consumer_offsets,
            schedule_offsets: v2.schedule_offsets,
            producers: v2.producers,
            membership: v2.membership,
            users: UserTable::default(),
            leases: LeaseTable::default(),
            timers: TimerState::default(),
            transactions: TransactionTable::default(),
            claims: None,
            last_applied: v2.last_applied,
            commit_log_end: v2.commit_log_end,
        }
    }
}

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
                self.leases.drop_topic(topic);
            }
            ControlRecord::CommitOffset(commit) => {
                self.commit_offset(commit);
            }
            ControlRecord::ScheduleProgress { queue_id, next } => {
                self.schedule_offsets.insert(*queue_id, *next);
            }
            ControlRecord::PutUsers(records) => {
                self.users.merge(records);
            }
            ControlRecord::Leases(update) => self.leases.fold(update),
            ControlRecord::Timers(timers) => self.timers = timers.clone(),
            ControlRecord::Transactions(update) => self.transactions.fold(update),
            ControlRecord::Claims(change) => self.apply_claims(change),
        }
    }

    /// Applies a claims change apply accepted (see [`GroupState::check_claims`]).
    pub fn apply_claims(&mut self, change: &ClaimsChange) {
        match change {
            ClaimsChange::Enable => {
                self.claims.get_or_insert_with(ClaimTable::default);
            }
            ClaimsChange::Update(update) => {
                if let Some(claims) = &mut self.claims {
                    claims.apply(update);
                }
            }
        }
    }

    /// Whether apply accepts a claims change.
    ///
    /// # Errors
    /// Claims are not enabled, or the table would pass its cap.
    pub fn check_claims(&self, change: &ClaimsChange) -> Result<(), ClaimsRefusal> {
        match (change, &self.claims) {
            (ClaimsChange::Enable, _) => Ok(()),
            (ClaimsChange::Update(_), None) => Err(ClaimsRefusal::NotEnabled),
            (ClaimsChange::Update(update), Some(claims)) => claims.check(update),
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
                if view.topic == HALF_TOPIC {
                    self.fold_half(view);
                }
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

    /// A half message opens or joins its transaction (as apply does when it
    /// stores one).
    fn fold_half(&mut self, view: &RecordView<'_>) {
        let (mut id, mut group, mut topic) = (None, None, None);
        for (key, value) in view.properties() {
            match key {
                PROPERTY_TRANSACTION_ID => id = MessageId::parse(value),
                PROPERTY_PRODUCER_GROUP => group = Some(value),
                broker_proto::properties::PROPERTY_REAL_TOPIC => topic = Some(value),
                _ => {}
            }
        }
        if let (Some(id), Some(group), Some(topic)) = (id, group, topic) {
            self.transactions.add_half(
                id,
                group,
                topic,
                view.meta.queue_offset.0,
                view.meta.store_timestamp_ms,
            );
        }
    }

    /// Encodes the state: a version byte, then bincode (standard config).
    /// Format 5 while claims are off, format 6 (5 then the claims table) once on.
    pub fn encode(&self) -> Vec<u8> {
        let version = if self.claims.is_some() {
            STATE_FORMAT_V6
        } else {
            STATE_FORMAT_V5
        };
        let mut out = vec![version];
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("encoding into a Vec cannot fail");
        if let Some(claims) = &self.claims {
            bincode::serde::encode_into_std_write(claims, &mut out, bincode::config::standard())
                .expect("encoding into a Vec cannot fail");
        }
        out
    }

    /// Decodes a state written by [`GroupState::encode`].
    ///
    /// # Errors
    /// An unknown version or undecodable bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut state: Self = match bytes.split_first() {
            Some((&STATE_FORMAT_V6, rest)) => {
                let (mut state, used): (Self, usize) =
                    bincode::serde::decode_from_slice(rest, bincode::config::standard())
                        .map_err(|e| format!("undecodable group state: {e}"))?;
                let (mut claims, _): (ClaimTable, usize) =
                    bincode::serde::decode_from_slice(&rest[used..], bincode::config::standard())
                        .map_err(|e| format!("undecodable claims table: {e}"))?;
                claims.rebuild();
                state.claims = Some(claims);
                state
            }
            Some((&STATE_FORMAT_V5, rest)) => {
                bincode::serde::decode_from_slice(rest, bincode::config::standard())
                    .map_err(|e| format!("undecodable group state: {e}"))?
                    .0
            }
            Some((&STATE_FORMAT_V4, rest)) => bincode::serde::decode_from_slice::<GroupStateV4, _>(
                rest,
                bincode::config::standard(),
            )
            .map_err(|e| format!("undecodable group state (version 4): {e}"))?
            .0
            .into(),
            Some((&STATE_FORMAT_V3, rest)) => bincode::serde::decode_from_slice::<GroupStateV3, _>(
                rest,
                bincode::config::standard(),
            )
            .map_err(|e| format!("undecodable group state (version 3): {e}"))?
            .0
            .into(),
            Some((&STATE_FORMAT_V2, rest)) => bincode::serde::decode_from_slice::<GroupStateV2, _>(
                rest,
                bincode::config::standard(),
            )
            .map_err(|e| format!("undecodable group state (version 2): {e}"))?
            .0
            .into(),
            Some((version, _)) => return Err(format!("unknown group state version {version}")),
            None => return Err("empty group state".into()),
        };
        state.producers.rebuild_index();
        state.users.refresh_version();
        state.leases.rebuild_index();
        state.transactions.rebuild_index();
        Ok(state)
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
        assert_eq!(table.check("p", 1, 10), DedupCheck::New);
        table.record("p", 1, result(7, 10));
        assert_eq!(
            table.check("p", 1, 10),
            DedupCheck::Duplicate(result(7, 10))
        );
        assert_eq!(table.check("p", 2, 10), DedupCheck::New);
        assert_eq!(table.check("q", 1, 10), DedupCheck::New);
    }

    #[test]
    fn the_window_is_bounded() {
        let mut table = ProducerTable::default();
        for seq in 0..(DEDUP_WINDOW as u64 + 10) {
            table.record("p", seq, result(seq, seq));
        }
        assert_eq!(
            table.check("p", 3, 500),
            DedupCheck::TooOld {
                oldest_remembered: 10
            }
        );
        assert!(matches!(
            table.check("p", 10, 500),
            DedupCheck::Duplicate(_)
        ));
    }

    /// A window is kept for [`PRODUCER_TTL_MS`] of store time after the
    /// producer's last message, and no longer; the clock is the newest store time
    /// seen, so an entry stamped earlier (a new leader's slower clock) does not
    /// bring an expired window back.
    #[test]
    fn windows_expire_by_store_time() {
        let t0 = 1_700_000_000_000;
        let mut table = ProducerTable::default();
        table.record("p", 1, result(1, t0));
        let last = t0 + PRODUCER_TTL_MS - 1;
        assert!(matches!(
            table.check("p", 1, last),
            DedupCheck::Duplicate(_)
        ));
        assert_eq!(table.check("p", 1, t0 + PRODUCER_TTL_MS), DedupCheck::New);
        table.record("q", 1, result(2, t0 + PRODUCER_TTL_MS));
        assert_eq!(table.len(), 1, "p was forgotten when time passed its hour");
        assert_eq!(table.check("p", 1, t0), DedupCheck::New, "no way back");
        // A producer that keeps sending keeps its window.
        table.record("q", 2, result(3, t0 + 2 * PRODUCER_TTL_MS - 1));
        table.record("r", 1, result(4, t0 + 2 * PRODUCER_TTL_MS + 5));
        assert!(matches!(
            table.check("q", 1, t0 + 2 * PRODUCER_TTL_MS + 5),
            DedupCheck::Duplicate(_)
        ));
    }

    /// A full table refuses new producers — counting those admitted earlier in
    /// the same entry — admits known ones, and makes room only as producers
    /// expire: nobody's window is dropped for a newcomer.
    #[test]
    fn a_full_table_refuses_new_producers_and_keeps_the_old() {
        let t0 = 1_700_000_000_000;
        let mut table = ProducerTable::default();
        for i in 0..MAX_PRODUCERS as u64 {
            table.record(&format!("p{i}"), 0, result(0, t0 + i));
        }
        let now = t0 + MAX_PRODUCERS as u64;
        let mut admitted = HashSet::new();
        let full = table
            .admit(&mut admitted, ["newcomer"], now)
            .expect_err("full");
        assert!(
            full.to_string().contains("producer table is full"),
            "{full}"
        );
        assert_eq!(full.frees_in_s, (t0 + PRODUCER_TTL_MS - now).div_ceil(1000));
        assert!(admitted.is_empty());
        table
            .admit(&mut admitted, ["p0", "p9999"], now)
            .expect("known producers are admitted");
        assert!(matches!(
            table.check("p0", 0, now),
            DedupCheck::Duplicate(_)
        ));

        // Once p0 expires there is room for exactly one.
        let later = t0 + PRODUCER_TTL_MS;
        table
            .admit(&mut admitted, ["a"], later)
            .expect("p0 expired: room for one");
        assert!(
            table.admit(&mut admitted, ["b"], later).is_err(),
            "a took the room, within the same entry"
        );
        table.record("a", 0, result(1, later));
        assert_eq!(table.len(), MAX_PRODUCERS);
        assert_eq!(table.check("p0", 0, later), DedupCheck::New);
        assert!(matches!(
            table.check("p1", 0, later),
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

    /// A state written by version 3 (no lease table) is read as version 4 with
    /// no leases and everything else kept.
    #[test]
    fn a_version_3_state_is_read_with_no_leases() {
        #[derive(Serialize)]
        struct V3<'a> {
            topics: &'a BTreeMap<String, TopicConfig>,
            consumer_offsets: &'a BTreeMap<OffsetKey, QueueOffset>,
            schedule_offsets: &'a BTreeMap<QueueId, QueueOffset>,
            producers: &'a ProducerTable,
            membership: &'a StoredMembership,
            users: &'a UserTable,
            last_applied: Option<LogId>,
            commit_log_end: CommitLogOffset,
        }
        let mut state = GroupState::default();
        state
            .topics
            .insert("t".into(), TopicConfig::with_defaults("t"));
        state.producers.record("p", 1, result(1, 5));
        state.commit_log_end = CommitLogOffset(77);
        let mut bytes = vec![STATE_FORMAT_V3];
        let v3 = V3 {
            topics: &state.topics,
            consumer_offsets: &state.consumer_offsets,
            schedule_offsets: &state.schedule_offsets,
            producers: &state.producers,
            membership: &state.membership,
            users: &state.users,
            last_applied: state.last_applied,
            commit_log_end: state.commit_log_end,
        };
        bincode::serde::encode_into_std_write(&v3, &mut bytes, bincode::config::standard())
            .expect("encodes");
        let decoded = GroupState::decode(&bytes).expect("a version 3 state decodes");
        assert_eq!(decoded.topics, state.topics);
        assert_eq!(decoded.commit_log_end, CommitLogOffset(77));
        assert_eq!(decoded.leases.in_flight(), 0);
        assert!(matches!(
            decoded.producers.check("p", 1, 5),
            DedupCheck::Duplicate(_)
        ));
        // And the current version writes 5.
        assert_eq!(state.encode()[0], STATE_FORMAT_V5);
    }

    /// A state written by version 4 (no timer progress) is read as version 5
    /// with no timer delivered and everything else kept.
    #[test]
    fn a_version_4_state_is_read_with_no_timer_progress() {
        #[derive(Serialize)]
        struct V4<'a> {
            topics: &'a BTreeMap<String, TopicConfig>,
            consumer_offsets: &'a BTreeMap<OffsetKey, QueueOffset>,
            schedule_offsets: &'a BTreeMap<QueueId, QueueOffset>,
            producers: &'a ProducerTable,
            membership: &'a StoredMembership,
            users: &'a UserTable,
            leases: &'a LeaseTable,
            last_applied: Option<LogId>,
            commit_log_end: CommitLogOffset,
        }
        let mut state = GroupState::default();
        state
            .topics
            .insert("t".into(), TopicConfig::with_defaults("t"));
        state.commit_log_end = CommitLogOffset(91);
        let mut bytes = vec![STATE_FORMAT_V4];
        let v4 = V4 {
            topics: &state.topics,
            consumer_offsets: &state.consumer_offsets,
            schedule_offsets: &state.schedule_offsets,
            producers: &state.producers,
            membership: &state.membership,
            users: &state.users,
            leases: &state.leases,
            last_applied: state.last_applied,
            commit_log_end: state.commit_log_end,
        };
        bincode::serde::encode_into_std_write(&v4, &mut bytes, bincode::config::standard())
            .expect("encodes");
        let decoded = GroupState::decode(&bytes).expect("a version 4 state decodes");
        assert_eq!(decoded.topics, state.topics);
        assert_eq!(decoded.commit_log_end, CommitLogOffset(91));
        assert_eq!(decoded.timers, TimerState::default());
        // A version 5 state keeps its timer progress.
        state.timers.delivered = crate::replication::timers::TimerKey {
            due_ms: 5,
            offset: 7,
        };
        let round = GroupState::decode(&state.encode()).expect("decodes");
        assert_eq!(round.timers, state.timers);
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
            decoded.producers.check("p", 1, 5),
            DedupCheck::Duplicate(result(1, 5))
        );
        assert_eq!(decoded.producers.by_last_seen.len(), 1);
    }
}
