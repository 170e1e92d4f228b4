//! The broker group's Raft state machine: applies committed entries to the message
//! store, deterministically, so every replica's CommitLog holds the same bytes at the
//! same offsets.
//!
//! Invariants:
//! * Every applied entry writes at least one CommitLog record stamped with its log
//!   id (messages, or a control record), so the applied state is the CommitLog's
//!   tail and survives restarts without a separate file.
//! * The group state is changed only after the record that carries the change is in
//!   the CommitLog; it is never ahead of it.
//! * Business failures (unknown topic, no permission) become a response and a no-op
//!   record; only storage failures are returned as errors (they stop the node).

use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::watch;
use tracing::info;

use super::command::{
    Command, CommandResponse, ControlRecord, DeliverCommand, Rejection, SendCommand,
};
use super::error::StateMachineError;
use super::group_state::GroupState;
use super::leases::{LeaseCommand, LeaseOp, LeaseOutcome, LeaseUpdate};
use super::poll_waiters::PollWaiters;
use super::retention_hold::HalfHoldCache;
use super::snapshot::{CommitLogSnapshot, SnapshotFiles};
use super::state_lock::{StateLock, StateRead, StateWrite};
use super::timers::TimerIndex;
use super::type_config::{log_ref, Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::peer_protocol::PeerVersions;
use crate::storage::{
    CommitLogOffset, MessageDraft, MessageStore, QueueId, RaftLogRef, RecordInput, StoreError,
};

/// What the HTTP layer shares with the state machine.
pub struct GroupShared {
    pub store: Arc<MessageStore>,
    /// One guard per thread at a time (see `state_lock`).
    state: StateLock,
    /// Bumped after every applied entry.
    pub(super) applied: watch::Sender<u64>,
    /// Held pulls, woken per queue when a batch lands in it.
    pub waiters: PollWaiters,
    pub snapshots: SnapshotFiles,
    /// This replica's index of pending timer messages (see `timers`).
    pub timers: TimerIndex,
    /// The oldest open transaction's record (see `retention_hold`).
    pub(super) half_hold: HalfHoldCache,
    /// The internal protocol version each peer answered with (see
    /// `peer_protocol`).
    pub peer_versions: PeerVersions,
}

impl GroupShared {
    /// The replicated metadata, for reading. Hold it briefly (apply waits for it),
    /// and take it once: a second guard on the same thread panics (see
    /// `state_lock`).
    pub fn state(&self) -> StateRead<'_> {
        self.state.read()
    }

    pub(super) fn state_mut(&self) -> StateWrite<'_> {
        self.state.write()
    }

    /// A receiver that changes whenever an entry is applied.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

/// The state machine handed to openraft.
pub struct BrokerStateMachine {
    pub(super) shared: Arc<GroupShared>,
    /// Test-only (fault switch `lagging-apply`): wait this long before applying
    /// each run of committed entries. `None` in every release run.
    apply_lag: Option<std::time::Duration>,
}

/// Builds a snapshot from a state captured when the builder was made.
pub struct BrokerSnapshotBuilder {
    shared: Arc<GroupShared>,
    captured: GroupState,
}

impl BrokerStateMachine {
    /// Loads the saved snapshot state (if any) and replays the CommitLog records after
    /// it, so the group state matches the CommitLog's tail.
    ///
    /// # Errors
    /// The snapshot file is damaged, or it claims CommitLog bytes the store does not
    /// have, or a record cannot be replayed.
    pub fn open(
        store: Arc<MessageStore>,
        snapshots: SnapshotFiles,
        max_held_polls: usize,
    ) -> io::Result<Self> {
        let mut state = match snapshots.load()? {
            Some((meta, snapshot)) => {
                let state = GroupState::decode(&snapshot.state)
                    .map_err(StateMachineError::BadGroupState)?;
                if state.last_applied != meta.last_log_id {
                    return Err(StateMachineError::StateNotMeta {
                        state: state.last_applied,
                        meta: meta.last_log_id,
                    }
                    .into());
                }
                state
            }
            None => GroupState::default(),
        };
        let (min, end) = (store.min_commit_log_offset(), store.max_commit_log_offset());
        if state.commit_log_end > end {
            return Err(StateMachineError::SnapshotPastLogEnd {
                covers: state.commit_log_end,
                end,
            }
            .into());
        }
        if state.commit_log_end < min && end > min {
            return Err(StateMachineError::ReplayGone {
                snapshot_end: state.commit_log_end,
                log_start: min,
            }
            .into());
        }
        let from = state.commit_log_end.max(min);
        let mut replayed = 0u64;
        store
            .scan(from, end, |view| {
                state
                    .fold_record(&view)
                    .map_err(|reason| StoreError::Corrupt {
                        file: store.config().commit_log_dir(),
                        offset: view.meta.physical_offset.0,
                        reason,
                    })?;
                replayed += 1;
                Ok(ControlFlow::Continue(()))
            })
            .map_err(StateMachineError::Store)?;
        if state.commit_log_end < end {
            // Only blank file tails after the last record.
            state.commit_log_end = end;
        }
        info!(
            replayed,
            applied = ?state.last_applied,
            commit_log_end = end.0,
            "state machine recovered"
        );
        let timers = TimerIndex::open(&store.config().root().join("timerlog"))
            .map_err(|e| StateMachineError::TimerIndex(e.to_string()))?;
        let pending = timers
            .rebuild(&store, state.timers.delivered)
            .map_err(|e| StateMachineError::TimerIndex(e.to_string()))?;
        info!(pending, "timer index rebuilt");
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(GroupShared {
            store,
            state: StateLock::new(state),
            applied,
            waiters: PollWaiters::new(max_held_polls),
            snapshots,
            timers,
            half_hold: HalfHoldCache::default(),
            peer_versions: PeerVersions::default(),
        });
        let machine = Self {
            shared,
            apply_lag: None,
        };
        machine.hold_for_pending();
        Ok(machine)
    }

    /// Waits `lag` before applying each run of committed entries (the fault
    /// switch `lagging-apply`; see `faults`).
    pub fn set_apply_lag(&mut self, lag: Option<std::time::Duration>) {
        self.apply_lag = lag;
    }

    /// The state shared with the HTTP layer.
    pub fn shared(&self) -> Arc<GroupShared> {
        Arc::clone(&self.shared)
    }

    /// Whether applying `entry` may wait for the disk: its first message to a queue
    /// creates ConsumeQueue files, or it drops a topic (a checkpoint and deletions).
    /// Everything else appends to the page cache.
    fn may_block(&self, entry: &Entry) -> bool {
        let store = &self.shared.store;
        let creates = |send: &SendCommand| {
            any_new_queue(
                store,
                send.messages.iter().map(|m| (m.topic.as_str(), m.queue_id)),
            )
        };
        match &entry.payload {
            EntryPayload::Blank | EntryPayload::Membership(_) => false,
            EntryPayload::Normal(command) => match command {
                Command::Send(send) => creates(send),
                Command::SendBatch(sends) => sends.iter().any(creates),
                Command::Deliver(deliver) => any_new_queue(
                    store,
                    deliver
                        .messages
                        .iter()
                        .map(|m| (m.message.topic.as_str(), m.message.queue_id)),
                ),
                Command::DeliverTimers(deliver) => any_new_queue(
                    store,
                    deliver
                        .messages
                        .iter()
                        .map(|m| (m.message.topic.as_str(), m.message.queue_id)),
                ),
                Command::DeleteTopic { .. } => true,
                // A commit stores into its topic's queues (perhaps a first time).
                Command::ResolveTransaction(resolve) => resolve.commit,
                Command::OfferChecks { .. } | Command::Claims(_) => false,
                // Dead letters go to the group's DLQ topic (one queue).
                Command::Lease(lease) => any_new_queue(
                    store,
                    lease.ops.iter().filter_map(|op| match op {
                        LeaseOp::DeadLetter { copy, .. } => {
                            Some((copy.topic.as_str(), copy.queue_id))
                        }
                        _ => None,
                    }),
                ),
                Command::UpsertTopic(_) | Command::CommitOffset(_) | Command::PutUsers(_) => false,
            },
        }
    }

    /// Applies one entry: writes its records, then updates the group state.
    fn apply_entry(&self, entry: &Entry) -> io::Result<CommandResponse> {
        let log_id = entry.log_id;
        let raft = log_ref(&log_id);
        let response = match &entry.payload {
            EntryPayload::Blank => {
                self.write_control(raft, &ControlRecord::Noop)?;
                CommandResponse::Applied
            }
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(log_id), membership.clone());
                let record = ControlRecord::Membership(stored);
                self.write_control(raft, &record)?;
                self.shared.state_mut().apply_control(&record);
                CommandResponse::Applied
            }
            EntryPayload::Normal(command) => self.apply_command(raft, command)?,
        };
        let end = self.shared.store.max_commit_log_offset();
        {
            let mut state = self.shared.state_mut();
            state.last_applied = Some(log_id);
            state.commit_log_end = end;
        }
        self.shared.applied.send_modify(|n| *n = n.wrapping_add(1));
        Ok(response)
    }

    pub(super) fn apply_command(
        &self,
        raft: RaftLogRef,
        command: &Command,
    ) -> io::Result<CommandResponse> {
        match command {
            Command::Send(send) => {
                let mut responses = self.apply_sends(raft, std::slice::from_ref(send))?;
                Ok(responses.pop().expect("one response per send"))
            }
            Command::SendBatch(sends) => self
                .apply_sends(raft, sends)
                .map(CommandResponse::SentBatch),
            Command::UpsertTopic(config) => {
                if let Err(reason) = config.validate() {
                    self.write_control(raft, &ControlRecord::Noop)?;
                    return Ok(CommandResponse::Rejected(Rejection::Invalid(reason)));
                }
                let record = ControlRecord::UpsertTopic(config.clone());
                self.write_control(raft, &record)?;
                self.shared.state_mut().apply_control(&record);
                Ok(CommandResponse::Topic(config.clone()))
            }
            Command::DeleteTopic { topic } => {
                let existed = self.shared.state().topics.contains_key(topic);
                let record = ControlRecord::DeleteTopic(topic.clone());
                if existed {
                    // The topic's queues, files and older records go; a topic of this
                    // name created later starts empty at offset 0 (see `drop_topic`).
                    self.shared
                        .store
                        .drop_topic(topic)
                        .map_err(StateMachineError::Store)?;
                    let payload = record.encode();
                    self.shared
                        .store
                        .append_entry(
                            raft,
                            &[RecordInput::DropTopic {
                                topic,
                                payload: &payload,
                            }],
                        )
                        .map_err(StateMachineError::Store)?;
                } else {
                    self.write_control(raft, &record)?;
                }
                // Its consumer offsets go with the topic (apply_control), and polls
                // held on its queues answer now instead of at their deadline.
                self.shared.state_mut().apply_control(&record);
                self.shared.waiters.forget_topic(topic);
                Ok(CommandResponse::TopicDeleted { existed })
            }
            Command::CommitOffset(commit) => {
                self.write_control(raft, &ControlRecord::CommitOffset(commit.clone()))?;
                let offset = self.shared.state_mut().commit_offset(commit);
                Ok(CommandResponse::OffsetCommitted { offset })
            }
            Command::Deliver(deliver) => self.apply_deliver(raft, deliver),
            Command::PutUsers(records) => {
                let record = ControlRecord::PutUsers(records.clone());
                self.write_control(raft, &record)?;
                let outcome = self.shared.state_mut().users.merge(records);
                Ok(CommandResponse::UsersMerged(outcome))
            }
            Command::Lease(lease) => self.apply_lease(raft, lease),
            Command::DeliverTimers(deliver) => self.apply_deliver_timers(raft, deliver),
            Command::ResolveTransaction(resolve) => self.apply_resolve(raft, resolve),
            Command::OfferChecks { ids, next_ms } => self.apply_offer(raft, ids, *next_ms),
            Command::Claims(change) => {
                let checked = self.shared.state().check_claims(change);
                if checked.is_err() {
                    self.write_control(raft, &ControlRecord::Noop)?;
                    return Ok(CommandResponse::Claims(checked));
                }
                let record = ControlRecord::Claims(change.clone());
                self.write_control(raft, &record)?;
                self.shared.state_mut().apply_control(&record);
                Ok(CommandResponse::Claims(Ok(())))
            }
        }
    }

    /// Decides a lease command against the lease table (each op compares and
    /// sets: see `leases`), stores the accepted changes as one control record
    /// with the dead letters they store, in one append, then folds them.
    fn apply_lease(&self, raft: RaftLogRef, command: &LeaseCommand) -> io::Result<CommandResponse> {
        let (outcomes, changes) = {
            let state = self.shared.state();
            if !state.topics.contains_key(&command.topic) {
                let n = command.ops.len();
                drop(state);
                self.write_control(raft, &ControlRecord::Noop)?;
                // The topic is gone, and its leases with it.
                return Ok(CommandResponse::Leased(vec![LeaseOutcome::Invalid; n]));
            }
            // A dead letter needs its topic and queue, as a send would.
            state.leases.decide(command, |copy| {
                state
                    .topics
                    .get(&copy.topic)
                    .is_some_and(|config| copy.queue_id.0 < config.write_queue_nums)
            })
        };
        let dead_letters: Vec<&MessageDraft> = command
            .ops
            .iter()
            .zip(&outcomes)
            .filter_map(|(op, outcome)| match (op, outcome) {
                (LeaseOp::DeadLetter { copy, .. }, LeaseOutcome::Done) => Some(&**copy),
                _ => None,
            })
            .collect();
        let update = ControlRecord::Leases(LeaseUpdate {
            group: command.group.clone(),
            topic: command.topic.clone(),
            changes,
        });
        let payload = update.encode();
        let mut records = Vec::with_capacity(dead_letters.len() + 1);
        records.push(RecordInput::Control {
            payload: &payload,
            // As `write_control`: the previous record's store time.
            store_timestamp_ms: 0,
        });
        records.extend(dead_letters.iter().map(|m| RecordInput::Message(m)));
        self.shared
            .store
            .append_entry(raft, &records)
            .map_err(StateMachineError::Store)?;
        self.shared.state_mut().apply_control(&update);
        // Receives held on these queues look again: a message given back (a
        // nack) or, in fifo order, the end of a queue's leased run lets them
        // deliver.
        let mut woken = Vec::new();
        for (op, outcome) in command.ops.iter().zip(&outcomes) {
            let wakes = matches!(
                op,
                LeaseOp::Ack { .. } | LeaseOp::Change { .. } | LeaseOp::DeadLetter { .. }
            );
            if wakes && *outcome == LeaseOutcome::Done && !woken.contains(&op.queue_id()) {
                woken.push(op.queue_id());
                self.shared.waiters.wake(&command.topic, op.queue_id());
            }
        }
        for message in &dead_letters {
            self.shared.waiters.wake(&message.topic, message.queue_id);
        }
        Ok(CommandResponse::Leased(outcomes))
    }

    /// Moves due scheduled messages to their topics and advances the schedule
    /// queue's delivered offset, in one entry — only if that offset is still the
    /// one the leader read, so no message is delivered twice.
    fn apply_deliver(
        &self,
        raft: RaftLogRef,
        deliver: &DeliverCommand,
    ) -> io::Result<CommandResponse> {
        let store_ms = deliver
            .messages
            .first()
            .map_or(0, |m| m.message.store_timestamp_ms);
        let deliverable: Vec<&MessageDraft> = {
            let state = self.shared.state();
            let current = state.schedule_offset(deliver.queue_id);
            if current != deliver.from || deliver.next < deliver.from {
                drop(state);
                return self.reject(
                    raft,
                    Rejection::Invalid(format!(
                        "stale delivery of schedule queue {} from {} (delivered up to {current})",
                        deliver.queue_id, deliver.from
                    )),
                );
            }
            if let Some(early) = deliver
                .messages
                .iter()
                .find(|m| m.message.store_timestamp_ms < m.due_ms)
            {
                let reason = format!(
                    "message {} is due at {}, not at {}",
                    early.message.msg_id, early.due_ms, early.message.store_timestamp_ms
                );
                drop(state);
                return self.reject(raft, Rejection::Invalid(reason));
            }
            // A topic deleted (or shrunk) while its messages waited: they are dropped,
            // the same way on every replica.
            deliver
                .messages
                .iter()
                .map(|m| &m.message)
                .filter(|m| {
                    state
                        .topics
                        .get(&m.topic)
                        .is_some_and(|config| m.queue_id.0 < config.write_queue_nums)
                })
                .collect()
        };
        let progress = ControlRecord::ScheduleProgress {
            queue_id: deliver.queue_id,
            next: deliver.next,
        };
        let payload = progress.encode();
        let mut records = Vec::with_capacity(deliverable.len() + 1);
        records.push(RecordInput::Control {
            payload: &payload,
            store_timestamp_ms: store_ms,
        });
        records.extend(deliverable.iter().map(|m| RecordInput::Message(m)));
        self.shared
            .store
            .append_entry(raft, &records)
            .map_err(StateMachineError::Store)?;
        for message in &deliverable {
            self.shared.waiters.wake(&message.topic, message.queue_id);
        }
        self.shared.state_mut().apply_control(&progress);
        Ok(CommandResponse::Delivered {
            delivered: deliverable.len(),
            skipped: deliver.messages.len() - deliverable.len(),
        })
    }

    pub(super) fn reject(
        &self,
        raft: RaftLogRef,
        rejection: Rejection,
    ) -> io::Result<CommandResponse> {
        self.write_control(raft, &ControlRecord::Noop)?;
        Ok(CommandResponse::Rejected(rejection))
    }

    pub(super) fn write_control(&self, raft: RaftLogRef, record: &ControlRecord) -> io::Result<()> {
        let payload = record.encode();
        self.shared
            .store
            .append_entry(
                raft,
                &[RecordInput::Control {
                    payload: &payload,
                    // Never a local clock: every replica must write the same bytes.
                    // Zero makes the store reuse the previous record's store time.
                    store_timestamp_ms: 0,
                }],
            )
            .map(|_| ())
            .map_err(|e| StateMachineError::Store(e).into())
    }
}

impl RaftStateMachine<TypeConfig> for BrokerStateMachine {
    type SnapshotData = CommitLogSnapshot;
    type SnapshotBuilder = BrokerSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.shared.state();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        if let Some(lag) = self.apply_lag {
            tokio::time::sleep(lag).await;
        }
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            // Appends are writes to the page cache (the CommitLog is flushed in the
            // background), short enough to run on this task. Entries that create
            // ConsumeQueue files or drop a topic wait for fsyncs — a send to 256 new
            // queues took seconds on a shared disk, long enough for the runtime's
            // other tasks (heartbeats among them) to starve and the leader to lose
            // its quorum: those run as blocking sections, the rest stay inline.
            let response = if self.may_block(&entry) && can_block_in_place() {
                tokio::task::block_in_place(|| self.apply_entry(&entry))?
            } else {
                self.apply_entry(&entry)?
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        BrokerSnapshotBuilder {
            shared: Arc::clone(&self.shared),
            captured: self.shared.state().clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let this = Self {
            shared: Arc::clone(&self.shared),
            apply_lag: None,
        };
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, &snapshot))
            .await
            .map_err(StateMachineError::Task)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<
        Option<openraft::type_config::alias::SnapshotOf<TypeConfig, Self::SnapshotData>>,
        io::Error,
    > {
        Ok(self
            .shared
            .snapshots
            .load()?
            .map(|(meta, snapshot)| openraft::Snapshot { meta, snapshot }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for BrokerSnapshotBuilder {
    type SnapshotData = CommitLogSnapshot;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::type_config::alias::SnapshotOf<TypeConfig, Self::SnapshotData>, io::Error>
    {
        let captured = self.captured.clone();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            // Everything the snapshot covers must be durable before the Raft log may be
            // purged behind it.
            let flushed = shared.store.flush().map_err(StateMachineError::Store)?;
            assert!(
                flushed >= captured.commit_log_end,
                "flushed {flushed} below the captured end {}",
                captured.commit_log_end
            );
            let state = captured.encode();
            let meta = SnapshotMeta {
                last_log_id: captured.last_applied,
                last_membership: captured.membership.clone(),
            };
            shared
                .snapshots
                .save(&meta, captured.commit_log_end, &state)?;
            shared.store.set_retention_floor(captured.commit_log_end);
            Ok(openraft::Snapshot {
                meta,
                snapshot: CommitLogSnapshot {
                    commit_log_end: captured.commit_log_end,
                    state: Arc::new(state),
                    staged: None,
                },
            })
        })
        .await
        .map_err(StateMachineError::Task)?
    }
}

/// Whether any of these queues has no ConsumeQueue yet (its first message creates
/// files). One lookup per run of messages to the same queue (a batch mostly goes to
/// a few queues), not one per message.
fn any_new_queue<'a>(
    store: &MessageStore,
    queues: impl Iterator<Item = (&'a str, QueueId)>,
) -> bool {
    let mut last: Option<(&str, QueueId)> = None;
    for queue in queues {
        if last != Some(queue) {
            if store.queue_offsets(queue.0, queue.1).is_none() {
                return true;
            }
            last = Some(queue);
        }
    }
    false
}

/// `block_in_place` needs a multi-threaded runtime (the node's); tests that drive a
/// state machine on a current-thread runtime apply inline.
fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The end of the CommitLog a state machine has applied: used by tests and status.
pub fn applied_commit_log_end(shared: &GroupShared) -> CommitLogOffset {
    shared.state().commit_log_end
}

/// The last applied log id.
pub fn last_applied(shared: &GroupShared) -> Option<LogId> {
    shared.state().last_applied
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::replication::claims::{
        ClaimTable, ClaimedQueue, ClaimsChange, ClaimsRefusal, ClaimsUpdate,
    };
    use crate::replication::command::SendResult;
    use crate::replication::group_state::{DedupCheck, GroupState};
    use crate::replication::type_config::log_id_of;
    use crate::storage::{MessageId, ProducerStamp, QueueOffset, StoreConfig};
    use crate::topic::TopicConfig;

    fn open(dir: &std::path::Path) -> BrokerStateMachine {
        let mut config = StoreConfig::for_test(dir.join("store"));
        config.file_reserved_ms = u64::MAX;
        config.disk_high_water_ratio = 1.0;
        let (store, _) = MessageStore::open(config).expect("open store");
        let snapshots = SnapshotFiles::open(&dir.join("snapshot")).expect("snapshots");
        BrokerStateMachine::open(Arc::new(store), snapshots, 16).expect("open state machine")
    }

    fn apply(sm: &BrokerStateMachine, index: u64, command: &Command) -> CommandResponse {
        let raft = RaftLogRef { term: 1, index };
        let response = sm.apply_command(raft, command).expect("apply");
        sm.shared.state_mut().last_applied = Some(log_id_of(raft));
        response
    }

    fn message(topic: &str, n: u8, producer: Option<(&str, u64)>, body_len: usize) -> MessageDraft {
        MessageDraft {
            topic: topic.into(),
            queue_id: QueueId(0),
            msg_id: MessageId([n; 16]),
            body: vec![b'x'; body_len],
            binary_body: false,
            tags: String::new(),
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 2_000 + u64::from(n),
            born_host: "127.0.0.1:1".into(),
            reconsume_times: 0,
            producer: producer.map(|(id, sequence)| ProducerStamp {
                producer_id: id.into(),
                sequence,
            }),
        }
    }

    fn send(topic: &str, messages: Vec<MessageDraft>, create: bool) -> SendCommand {
        SendCommand {
            topic: topic.into(),
            messages,
            create_if_missing: create.then(|| TopicConfig::with_defaults(topic)),
        }
    }

    fn sent(response: &CommandResponse) -> &[SendResult] {
        match response {
            CommandResponse::Sent(results) => results,
            other => panic!("expected Sent, got {other}"),
        }
    }

    /// The sends of a batch are each decided as if they were entries of their own
    /// (rejections, duplicates across sends, a topic created by an earlier send),
    /// but stored as one entry — and recovery folds such an entry back into the
    /// same state.
    #[test]
    fn a_batch_answers_each_send_alone_and_stores_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        let topic = TopicConfig::with_defaults("t");
        apply(&sm, 1, &Command::UpsertTopic(topic));
        let batch = Command::SendBatch(vec![
            send(
                "t",
                vec![
                    message("t", 1, Some(("p", 1)), 10),
                    message("t", 2, Some(("p", 2)), 10),
                ],
                false,
            ),
            send("missing", vec![message("missing", 3, None, 10)], false),
            // Repeats p/2 of the first send, then a new p/3.
            send(
                "t",
                vec![
                    message("t", 2, Some(("p", 2)), 10),
                    message("t", 4, Some(("p", 3)), 10),
                ],
                false,
            ),
            // Too large for the store (16 KiB records in tests): refused alone.
            send("t", vec![message("t", 5, Some(("p", 4)), 20_000)], false),
            send("auto", vec![message("auto", 6, None, 10)], true),
            // Created by the send before it in this very entry.
            send("auto", vec![message("auto", 7, None, 10)], false),
        ]);
        let CommandResponse::SentBatch(answers) = apply(&sm, 2, &batch) else {
            panic!("expected SentBatch");
        };
        assert_eq!(answers.len(), 6);
        let first = sent(&answers[0]);
        assert_eq!(
            first.iter().map(|r| r.queue_offset).collect::<Vec<_>>(),
            [QueueOffset(0), QueueOffset(1)]
        );
        assert_eq!(
            answers[1],
            CommandResponse::Rejected(Rejection::TopicNotFound("missing".into()))
        );
        let third = sent(&answers[2]);
        assert_eq!(
            third[0], first[1],
            "a duplicate answers with its first store"
        );
        assert_eq!(third[1].queue_offset, QueueOffset(2));
        assert!(
            matches!(&answers[3], CommandResponse::Rejected(Rejection::Invalid(reason)) if reason.contains("exceeds the maximum")),
            "{}",
            answers[3]
        );
        assert_eq!(sent(&answers[4])[0].queue_offset, QueueOffset(0));
        assert_eq!(sent(&answers[5])[0].queue_offset, QueueOffset(1));

        // One entry: every record after the topic's is stamped with index 2, and
        // they are the topic creation plus the five new messages.
        let store = &sm.shared.store;
        let mut stamps = Vec::new();
        store
            .scan(CommitLogOffset(0), store.max_commit_log_offset(), |view| {
                stamps.push((view.meta.raft.index, view.meta.entry_record_count));
                Ok(ControlFlow::Continue(()))
            })
            .expect("scan");
        assert_eq!(
            stamps,
            [(1, 1), (2, 6), (2, 6), (2, 6), (2, 6), (2, 6), (2, 6)]
        );

        // The live state and the state recovered from the CommitLog agree: p/4 was
        // refused, so it is new; p/3 is remembered; `auto` exists.
        let check = |sm: &BrokerStateMachine| {
            let state = sm.shared.state();
            assert!(
                matches!(state.producers.check("p", 3, third[1].store_timestamp_ms), DedupCheck::Duplicate(r) if r == third[1])
            );
            assert!(matches!(
                state.producers.check("p", 4, third[1].store_timestamp_ms),
                DedupCheck::New
            ));
            assert!(state.topics.contains_key("auto"));
        };
        check(&sm);
        drop(sm);
        check(&open(dir.path()));
    }

    /// Lease ops are decided at apply (a stale one changes nothing), a dead letter
    /// is stored in the same entry, and recovery folds the CommitLog back into
    /// the same lease table.
    #[test]
    fn leases_are_applied_once_and_recovered_from_the_commit_log() {
        use crate::replication::leases::{Lease, LeaseCommand, LeaseKey, LeaseOp, LeaseOutcome};
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        apply(
            &sm,
            1,
            &Command::UpsertTopic(TopicConfig::with_defaults("t")),
        );
        apply(
            &sm,
            2,
            &Command::UpsertTopic(TopicConfig::for_consumer_group_topic("%DLQ%g")),
        );
        apply(
            &sm,
            3,
            &Command::Send(send(
                "t",
                vec![message("t", 1, None, 10), message("t", 2, None, 10)],
                false,
            )),
        );
        let lease = |ops| {
            Command::Lease(LeaseCommand {
                group: "g".into(),
                topic: "t".into(),
                now_ms: 5_000,
                ops,
            })
        };
        let deliver = LeaseOp::Deliver {
            queue_id: QueueId(0),
            from: QueueOffset(0),
            to: QueueOffset(2),
            offsets: vec![0, 1],
            until_ms: 4_000,
        };
        let answer = apply(&sm, 4, &lease(vec![deliver.clone()]));
        assert_eq!(answer, CommandResponse::Leased(vec![LeaseOutcome::Done]));
        let again = apply(&sm, 5, &lease(vec![deliver]));
        assert_eq!(again, CommandResponse::Leased(vec![LeaseOutcome::Stale]));
        let mut copy = message("%DLQ%g", 9, None, 10);
        copy.topic = "%DLQ%g".into();
        let ended = Lease {
            attempt: 1,
            until_ms: 4_000,
        };
        let answer = apply(
            &sm,
            6,
            &lease(vec![LeaseOp::DeadLetter {
                queue_id: QueueId(0),
                offset: 1,
                expect: ended,
                copy: Box::new(copy),
            }]),
        );
        assert_eq!(answer, CommandResponse::Leased(vec![LeaseOutcome::Done]));
        assert_eq!(
            sm.shared.store.queue_offsets("%DLQ%g", QueueId(0)),
            Some((QueueOffset(0), QueueOffset(1))),
            "the dead letter is stored"
        );
        let key = LeaseKey {
            group: "g".into(),
            topic: "t".into(),
            queue_id: QueueId(0),
        };
        let check = |sm: &BrokerStateMachine| {
            let state = sm.shared.state();
            let queue = state.leases.queue(&key).expect("the queue's leases");
            assert_eq!(queue.cursor, QueueOffset(2));
            assert_eq!(queue.in_order().collect::<Vec<_>>(), [(0, ended)]);
            assert_eq!(queue.next_expiry(), Some(4_000), "the index is rebuilt");
        };
        check(&sm);
        drop(sm);
        check(&open(dir.path()));
    }

    /// A single send is answered as before batching: its own rejection, its
    /// duplicates within itself.
    #[test]
    fn a_single_send_is_decided_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        let rejected = apply(
            &sm,
            1,
            &Command::Send(send("t", vec![message("t", 1, None, 10)], false)),
        );
        assert_eq!(
            rejected,
            CommandResponse::Rejected(Rejection::TopicNotFound("t".into()))
        );
        let answer = apply(
            &sm,
            2,
            &Command::Send(send(
                "t",
                vec![
                    message("t", 1, Some(("p", 7)), 10),
                    message("t", 1, Some(("p", 7)), 10),
                ],
                true,
            )),
        );
        let results = sent(&answer);
        assert_eq!(results[0], results[1]);
        assert_eq!(
            sm.shared.store.queue_offsets("t", QueueId(0)),
            Some((QueueOffset(0), QueueOffset(1)))
        );
    }

    /// Apply answers every command with the kind its proposal declares
    /// (`Proposal::answer` panics on any other), accepted and refused alike.
    #[test]
    fn every_command_gets_the_answer_it_declares() {
        use crate::replication::command::OffsetCommit;
        use crate::replication::proposal::{
            DeleteTopic, Delivered, Proposal, PutUsers, SendBatch, UpsertTopic,
        };
        fn answer<P: Proposal>(sm: &BrokerStateMachine, index: u64, proposal: P) -> P::Answer {
            P::answer(apply(sm, index, &proposal.into_command()))
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());

        let mut invalid = TopicConfig::with_defaults("bad");
        invalid.write_queue_nums = 0;
        let refused = answer(&sm, 1, UpsertTopic(invalid));
        assert!(matches!(refused, Err(Rejection::Invalid(_))), "{refused:?}");
        let created = answer(&sm, 2, UpsertTopic(TopicConfig::with_defaults("t")));
        assert_eq!(created.expect("a valid topic").name, "t");

        let stored = answer(&sm, 3, send("t", vec![message("t", 1, None, 10)], false));
        assert_eq!(stored.expect("sent to an existing topic").len(), 1);
        let missing = answer(&sm, 4, send("no", vec![message("no", 2, None, 10)], false));
        assert!(
            matches!(missing, Err(Rejection::TopicNotFound(_))),
            "{missing:?}"
        );
        let batch = answer(
            &sm,
            5,
            SendBatch(vec![
                send("t", vec![message("t", 3, None, 10)], false),
                send("no", vec![message("no", 4, None, 10)], false),
            ]),
        );
        assert_eq!(batch.len(), 2);
        assert!(batch[0].is_ok() && batch[1].is_err(), "{batch:?}");

        let commit = OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            queue_id: QueueId(0),
            offset: QueueOffset(2),
            force: false,
        };
        assert_eq!(answer(&sm, 6, commit), QueueOffset(2));

        let deliver = |from| DeliverCommand {
            queue_id: QueueId(0),
            from: QueueOffset(from),
            next: QueueOffset(from),
            messages: Vec::new(),
        };
        let nothing_due = answer(&sm, 7, deliver(0));
        let expected = Delivered {
            delivered: 0,
            skipped: 0,
        };
        assert_eq!(nothing_due, Ok(expected));
        let stale = answer(&sm, 8, deliver(5));
        assert!(matches!(stale, Err(Rejection::Invalid(_))), "{stale:?}");

        assert_eq!(answer(&sm, 9, PutUsers(Vec::new())).applied, 0);
        assert!(answer(&sm, 10, DeleteTopic("t".into())));
        assert!(!answer(&sm, 11, DeleteTopic("t".into())));
        assert_eq!(
            answer(&sm, 12, ClaimsChange::Update(claim_update(&[(0, "a")]))),
            Err(ClaimsRefusal::NotEnabled)
        );
        assert_eq!(answer(&sm, 13, ClaimsChange::Enable), Ok(()));
    }

    fn claim_update(grants: &[(u32, &str)]) -> ClaimsUpdate {
        ClaimsUpdate {
            consumer_group: "g".into(),
            grant: grants
                .iter()
                .map(|(queue_id, member)| {
                    let queue = ClaimedQueue {
                        topic: "t".into(),
                        group: "broker-a".into(),
                        queue_id: *queue_id,
                    };
                    (queue, member.to_string())
                })
                .collect(),
            release: Vec::new(),
        }
    }

    /// Claims are refused until enabled, then recorded in the CommitLog: a
    /// restarted node replays them, and the state's encoding keeps the previous
    /// format until they are enabled.
    #[test]
    fn claims_are_gated_recorded_and_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        let update = |grants| Command::Claims(ClaimsChange::Update(claim_update(grants)));
        assert!(matches!(
            apply(&sm, 1, &update(&[(0, "a")])),
            CommandResponse::Claims(Err(ClaimsRefusal::NotEnabled))
        ));
        assert!(sm.shared.state().claims.is_none());
        assert_eq!(sm.shared.state().encode()[0], 5, "the previous format");

        apply(&sm, 2, &Command::Claims(ClaimsChange::Enable));
        apply(&sm, 3, &update(&[(0, "a"), (1, "b")]));
        apply(&sm, 4, &update(&[(1, "c")]));
        let encoded = sm.shared.state().encode();
        assert_eq!(encoded[0], 6);
        let decoded = GroupState::decode(&encoded).expect("decodes");
        // Queue 0 by a, queue 1 moved from b to c.
        let holders = |claims: &ClaimTable| -> Vec<String> {
            claims
                .of("g")
                .into_iter()
                .flatten()
                .map(|(_, m)| m.clone())
                .collect()
        };
        let claims = decoded.claims.expect("claims survive encoding");
        assert_eq!(holders(&claims), ["a", "c"]);
        assert_eq!(claims.len(), 2);
        drop(sm);

        let sm = open(dir.path());
        let state = sm.shared.state();
        let claims = state.claims.as_ref().expect("replayed from the CommitLog");
        assert_eq!(holders(claims), ["a", "c"]);
        assert_eq!(claims.len(), 2);
    }
}
