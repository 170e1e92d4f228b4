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

use std::collections::HashMap;
use std::io;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::watch;
use tracing::{info, warn};

use super::command::{
    Command, CommandResponse, ControlRecord, DeliverCommand, Rejection, SendCommand, SendResult,
};
use super::group_state::{DedupCheck, GroupState};
use super::snapshot::{CommitLogSnapshot, SnapshotFiles};
use super::type_config::{log_ref, Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::consumer::delay::{self, MAX_DELAY_LEVELS};
use crate::consumer::long_poll::PollWaiters;
use crate::storage::{
    CommitLogOffset, MessageDraft, MessageStore, QueueId, RaftLogRef, RecordInput, StoreError,
};
use crate::topic::{TopicConfig, SCHEDULE_TOPIC};

/// Snapshot bytes are copied into the CommitLog in pieces of this size.
const INSTALL_CHUNK_BYTES: usize = 4 << 20;

/// What the HTTP layer shares with the state machine.
pub struct GroupShared {
    pub store: Arc<MessageStore>,
    state: RwLock<GroupState>,
    /// Bumped after every applied entry.
    applied: watch::Sender<u64>,
    /// Held pulls, woken per queue when a batch lands in it.
    pub waiters: PollWaiters,
    pub snapshots: SnapshotFiles,
}

impl GroupShared {
    /// The replicated metadata, for reading. Hold it briefly: apply waits for it.
    pub fn state(&self) -> RwLockReadGuard<'_, GroupState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, GroupState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever an entry is applied.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

/// The state machine handed to openraft.
pub struct BrokerStateMachine {
    shared: Arc<GroupShared>,
}

/// Builds a snapshot from a state captured when the builder was made.
pub struct BrokerSnapshotBuilder {
    shared: Arc<GroupShared>,
    captured: GroupState,
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
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
                let state = GroupState::decode(&snapshot.state).map_err(io_error)?;
                if state.last_applied != meta.last_log_id {
                    return Err(io_error(format!(
                        "snapshot state applied {:?} differs from its meta {:?}",
                        state.last_applied, meta.last_log_id
                    )));
                }
                state
            }
            None => GroupState::default(),
        };
        let (min, end) = (store.min_commit_log_offset(), store.max_commit_log_offset());
        if state.commit_log_end > end {
            return Err(io_error(format!(
                "the saved snapshot covers the commit log up to {} but it ends at {end}",
                state.commit_log_end
            )));
        }
        if state.commit_log_end < min && end > min {
            return Err(io_error(format!(
                "the saved snapshot ends at {} but the commit log now starts at {min}: records to replay are gone",
                state.commit_log_end
            )));
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
            .map_err(io_error)?;
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
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(GroupShared {
            store,
            state: RwLock::new(state),
            applied,
            waiters: PollWaiters::new(max_held_polls),
            snapshots,
        });
        Ok(Self { shared })
    }

    /// The state shared with the HTTP layer.
    pub fn shared(&self) -> Arc<GroupShared> {
        Arc::clone(&self.shared)
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

    fn apply_command(&self, raft: RaftLogRef, command: &Command) -> io::Result<CommandResponse> {
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
                self.write_control(raft, &record)?;
                self.shared.state_mut().apply_control(&record);
                Ok(CommandResponse::TopicDeleted { existed })
            }
            Command::CommitOffset(commit) => {
                self.write_control(raft, &ControlRecord::CommitOffset(commit.clone()))?;
                let offset = self.shared.state_mut().commit_offset(commit);
                Ok(CommandResponse::OffsetCommitted { offset })
            }
            Command::Deliver(deliver) => self.apply_deliver(raft, deliver),
        }
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
            .map_err(io_error)?;
        for message in &deliverable {
            self.shared.waiters.wake(&message.topic, message.queue_id);
        }
        self.shared.state_mut().apply_control(&progress);
        Ok(CommandResponse::Delivered {
            delivered: deliverable.len(),
            skipped: deliver.messages.len() - deliverable.len(),
        })
    }

    /// Stores a batch: checks the topic, answers retries of an idempotent producer
    /// with their first result, and appends the new messages as one entry.
    /// Applies the sends of one entry (one send, or a batch the leader formed from
    /// concurrent requests) as one atomic CommitLog append. Each send is decided on
    /// its own — rejected, or stored with its duplicates answered by their first
    /// store — exactly as if it had been an entry of its own, in entry order.
    fn apply_sends(
        &self,
        raft: RaftLogRef,
        sends: &[SendCommand],
    ) -> io::Result<Vec<CommandResponse>> {
        let total: usize = sends.iter().map(|s| s.messages.len()).sum();
        // Flat over the entry's messages: the send at index `s` owns
        // `starts[s]..starts[s] + sends[s].messages.len()`.
        let starts: Vec<usize> = sends
            .iter()
            .scan(0, |next, send| {
                let start = *next;
                *next += send.messages.len();
                Some(start)
            })
            .collect();
        // Per message: Some(result) once known (a duplicate of an earlier entry now,
        // a new message after the append).
        let mut outcome: Vec<Option<SendResult>> = vec![None; total];
        // Per message: the earlier message of this entry it repeats.
        let mut duplicate_of: Vec<Option<usize>> = vec![None; total];
        // Per send: its rejection, or the topic it creates (auto-creation).
        let mut decisions: Vec<Result<Option<TopicConfig>, Rejection>> =
            Vec::with_capacity(sends.len());
        {
            // Decide everything from the state first; the state machine is its only
            // writer.
            let state = self.shared.state();
            let mut created: HashMap<String, TopicConfig> = HashMap::new();
            let mut first_in_entry: HashMap<(&str, u64), usize> = HashMap::new();
            for (send, &start) in sends.iter().zip(&starts) {
                let slots = start..start + send.messages.len();
                let decision = self.decide_send(
                    &state,
                    &created,
                    &mut first_in_entry,
                    send,
                    start,
                    &mut outcome[slots.clone()],
                    &mut duplicate_of[slots],
                );
                if let Ok(Some(config)) = &decision {
                    created.insert(config.name.clone(), config.clone());
                }
                decisions.push(decision);
            }
        }

        let create_records: Vec<Option<Vec<u8>>> = decisions
            .iter()
            .map(|d| match d {
                Ok(Some(config)) => Some(ControlRecord::UpsertTopic(config.clone()).encode()),
                _ => None,
            })
            .collect();
        let mut records: Vec<RecordInput<'_>> = Vec::with_capacity(total + 1);
        // Per message: its record's index in the append (new messages only).
        let mut record_of: Vec<Option<usize>> = vec![None; total];
        // The leader's time, fixed in the command: deterministic on every replica.
        let mut noop_store_ms = 0;
        for (s, send) in sends.iter().enumerate() {
            if decisions[s].is_err() {
                continue;
            }
            let store_ms = send.messages.first().map_or(0, |m| m.store_timestamp_ms);
            if noop_store_ms == 0 {
                noop_store_ms = store_ms;
            }
            if let Some(payload) = &create_records[s] {
                records.push(RecordInput::Control {
                    payload,
                    store_timestamp_ms: store_ms,
                });
            }
            for (j, message) in send.messages.iter().enumerate() {
                let g = starts[s] + j;
                if outcome[g].is_none() && duplicate_of[g].is_none() {
                    record_of[g] = Some(records.len());
                    records.push(RecordInput::Message(message));
                }
            }
        }
        let noop = ControlRecord::Noop.encode();
        if records.is_empty() {
            records.push(RecordInput::Control {
                payload: &noop,
                store_timestamp_ms: noop_store_ms,
            });
        }
        let appended = match self.shared.store.append_entry(raft, &records) {
            Ok(appended) => appended,
            // `decide_send` checked every message as the store does, so this is not
            // expected; refusing the whole entry keeps the replicas equal anyway.
            Err(e @ (StoreError::InvalidMessage(_) | StoreError::MessageTooLarge { .. })) => {
                warn!(error = %e, "the store refused an entry apply had checked");
                self.write_control(raft, &ControlRecord::Noop)?;
                let rejection = Rejection::Invalid(e.to_string());
                return Ok(sends
                    .iter()
                    .map(|_| CommandResponse::Rejected(rejection.clone()))
                    .collect());
            }
            Err(e) => return Err(io_error(e)),
        };
        let flat: Vec<&MessageDraft> = sends.iter().flat_map(|s| &s.messages).collect();
        let mut woken: Vec<(&str, QueueId)> = Vec::new();
        for (g, record) in record_of.iter().enumerate() {
            let Some(record) = record else {
                continue;
            };
            let message = flat[g];
            let at = &appended[*record];
            outcome[g] = Some(SendResult {
                msg_id: message.msg_id,
                queue_id: at.queue_id,
                queue_offset: at.queue_offset,
                commit_log_offset: at.commit_log_offset.0,
                store_timestamp_ms: at.store_timestamp_ms,
            });
            // Nobody long-polls the schedule topic.
            let queue = (message.topic.as_str(), message.queue_id);
            if message.topic != SCHEDULE_TOPIC && !woken.contains(&queue) {
                woken.push(queue);
            }
        }
        for (topic, queue_id) in woken {
            self.shared.waiters.wake(topic, queue_id);
        }
        for g in 0..total {
            if let Some(first) = duplicate_of[g] {
                outcome[g] = outcome[first];
            }
        }
        {
            let mut state = self.shared.state_mut();
            for decision in &decisions {
                if let Ok(Some(config)) = decision {
                    state.topics.insert(config.name.clone(), config.clone());
                }
            }
            for (g, record) in record_of.iter().enumerate() {
                let (Some(_), Some(result)) = (record, outcome[g]) else {
                    continue;
                };
                if let Some(stamp) = &flat[g].producer {
                    state
                        .producers
                        .record(&stamp.producer_id, stamp.sequence, result);
                }
            }
        }
        let mut responses = Vec::with_capacity(sends.len());
        for ((send, &start), decision) in sends.iter().zip(&starts).zip(decisions) {
            responses.push(match decision {
                Err(rejection) => CommandResponse::Rejected(rejection),
                Ok(_) => CommandResponse::Sent(
                    outcome[start..start + send.messages.len()]
                        .iter()
                        .map(|r| r.ok_or_else(|| io_error("a message of the batch got no result")))
                        .collect::<io::Result<Vec<_>>>()?,
                ),
            });
        }
        Ok(responses)
    }

    /// Decides one send of an entry against the group state, the topics created by
    /// the sends before it in the entry, and their messages (`first_in_entry`, by
    /// producer stamp; this send's new stamps are added if it is accepted). Fills
    /// `earlier` with the results of messages stored by earlier entries and
    /// `duplicate_of` with the flat index of a message of this entry it repeats.
    /// Returns the topic to create, or why the send is refused.
    #[allow(clippy::too_many_arguments)]
    fn decide_send<'a>(
        &self,
        state: &GroupState,
        created: &HashMap<String, TopicConfig>,
        first_in_entry: &mut HashMap<(&'a str, u64), usize>,
        send: &'a SendCommand,
        start: usize,
        earlier: &mut [Option<SendResult>],
        duplicate_of: &mut [Option<usize>],
    ) -> Result<Option<TopicConfig>, Rejection> {
        let existing = state
            .topics
            .get(&send.topic)
            .or_else(|| created.get(&send.topic));
        let (config, create) = match (existing, &send.create_if_missing) {
            (Some(config), _) => (config, None),
            (None, Some(config)) => (config, Some(config.clone())),
            (None, None) => return Err(Rejection::TopicNotFound(send.topic.clone())),
        };
        if !config.writable() {
            return Err(Rejection::NoPermission(format!(
                "topic {} is not writable",
                send.topic
            )));
        }
        // A message goes to the topic, or to the schedule topic on its way there.
        let misplaced = |m: &MessageDraft| {
            if m.topic == SCHEDULE_TOPIC {
                m.queue_id.0 as usize >= MAX_DELAY_LEVELS
                    || delay::real_topic(m) != Some(send.topic.as_str())
            } else {
                m.topic != send.topic || m.queue_id.0 >= config.write_queue_nums
            }
        };
        if let Some(bad) = send.messages.iter().find(|m| misplaced(m)) {
            return Err(Rejection::Invalid(format!(
                "queue {} of {} is not a write queue of topic {} ({} write queues)",
                bad.queue_id, bad.topic, send.topic, config.write_queue_nums
            )));
        }
        for message in &send.messages {
            self.shared
                .store
                .check_message(message)
                .map_err(|e| Rejection::Invalid(e.to_string()))?;
        }
        let mut new_stamps: HashMap<(&'a str, u64), usize> = HashMap::new();
        for (j, message) in send.messages.iter().enumerate() {
            let Some(stamp) = &message.producer else {
                continue;
            };
            match state.producers.check(&stamp.producer_id, stamp.sequence) {
                DedupCheck::Duplicate(result) => earlier[j] = Some(result),
                DedupCheck::TooOld { oldest_remembered } => {
                    return Err(Rejection::Invalid(format!(
                        "sequence {} of producer {} is older than the {} remembered (oldest {oldest_remembered}); it may have been stored",
                        stamp.sequence,
                        stamp.producer_id,
                        super::group_state::DEDUP_WINDOW
                    )));
                }
                DedupCheck::New => {
                    let key = (stamp.producer_id.as_str(), stamp.sequence);
                    match first_in_entry.get(&key).or_else(|| new_stamps.get(&key)) {
                        Some(first) => duplicate_of[j] = Some(*first),
                        None => {
                            new_stamps.insert(key, start + j);
                        }
                    }
                }
            }
        }
        first_in_entry.extend(new_stamps);
        Ok(create)
    }

    fn reject(&self, raft: RaftLogRef, rejection: Rejection) -> io::Result<CommandResponse> {
        self.write_control(raft, &ControlRecord::Noop)?;
        Ok(CommandResponse::Rejected(rejection))
    }

    fn write_control(&self, raft: RaftLogRef, record: &ControlRecord) -> io::Result<()> {
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
            .map_err(io_error)
    }

    /// Copies staged snapshot bytes into the CommitLog and adopts the snapshot's state.
    fn install(&self, meta: &SnapshotMeta, snapshot: &CommitLogSnapshot) -> io::Result<()> {
        let store = &self.shared.store;
        let Some(staged) = &snapshot.staged else {
            // Re-installing our own snapshot (openraft may at start-up): its bytes are
            // ours already.
            if store.max_commit_log_offset() >= snapshot.commit_log_end {
                return Ok(());
            }
            return Err(io_error(format!(
                "local snapshot covers the commit log up to {} but it ends at {}",
                snapshot.commit_log_end,
                store.max_commit_log_offset()
            )));
        };
        let state = GroupState::decode(&snapshot.state).map_err(io_error)?;
        if state.last_applied != meta.last_log_id || state.commit_log_end != snapshot.commit_log_end
        {
            return Err(io_error("snapshot state does not match its meta"));
        }
        let mut end = store.max_commit_log_offset();
        if staged.reset && end < staged.start {
            warn!(
                own_end = end.0,
                leader_start = staged.start.0,
                "commit log ends below the leader's minimum: resetting it"
            );
            store.reset_to(staged.start).map_err(io_error)?;
            end = staged.start;
        }
        if end < staged.start {
            return Err(io_error(format!(
                "staged snapshot bytes start at {} beyond this commit log's end {end}",
                staged.start
            )));
        }
        // Bytes below our end are already here (committed data is identical on every
        // replica): copy only the rest.
        let mut file = std::fs::File::open(&staged.path)?;
        let skip = end.0 - staged.start.0;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(skip))?;
        let file_size = store.config().commit_log_file_size_bytes;
        let mut buffer = vec![0u8; INSTALL_CHUNK_BYTES];
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        loop {
            while !eof && pending.len() < INSTALL_CHUNK_BYTES {
                let n = std::io::Read::read(&mut file, &mut buffer)?;
                eof = n == 0;
                pending.extend_from_slice(&buffer[..n]);
            }
            if pending.is_empty() {
                break;
            }
            // `append_commit_log_raw` takes whole records within one file.
            let to_file_end = (file_size - end.0 % file_size) as usize;
            let cut = whole_records(&pending[..pending.len().min(to_file_end)], end, file_size);
            if cut == 0 {
                if eof {
                    return Err(io_error("staged snapshot bytes end inside a record"));
                }
                // A record longer than the buffer holds so far: read on.
                let n = std::io::Read::read(&mut file, &mut buffer)?;
                eof = n == 0;
                pending.extend_from_slice(&buffer[..n]);
                continue;
            }
            end = store
                .append_commit_log_raw(end, &pending[..cut])
                .map_err(io_error)?;
            pending.drain(..cut);
        }
        if end != snapshot.commit_log_end {
            return Err(io_error(format!(
                "after installing, the commit log ends at {end}, not at the snapshot's {}",
                snapshot.commit_log_end
            )));
        }
        store.flush().map_err(io_error)?;
        self.shared
            .snapshots
            .save(meta, snapshot.commit_log_end, &snapshot.state)?;
        store.set_retention_floor(snapshot.commit_log_end);
        *self.shared.state_mut() = state;
        self.shared.snapshots.finish_receive();
        self.shared.applied.send_modify(|n| *n = n.wrapping_add(1));
        self.shared.waiters.wake_all();
        info!(commit_log_end = end.0, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }
}

fn whole_records(bytes: &[u8], at: CommitLogOffset, file_size: u64) -> usize {
    use crate::storage::record::{decode, Decoded};
    let mut pos = 0usize;
    while pos < bytes.len() {
        let global = at.0 + pos as u64;
        let file_end = ((global / file_size + 1) * file_size - global) as usize;
        match decode(&bytes[pos..bytes.len().min(pos + file_end)]) {
            Ok(Decoded::Record(view)) => pos += view.size as usize,
            Ok(Decoded::Blank { len }) => pos += len as usize,
            _ => break,
        }
    }
    pos
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
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            // Appends are writes to the page cache (the CommitLog is flushed in the
            // background), short enough to run on this task.
            let response = self.apply_entry(&entry)?;
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
        };
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, &snapshot))
            .await
            .map_err(io_error)?
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
            let flushed = shared.store.flush().map_err(io_error)?;
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
        .map_err(io_error)?
    }
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
    use crate::raft::type_config::log_id_of;
    use crate::storage::{MessageId, ProducerStamp, QueueOffset, StoreConfig};

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
                matches!(state.producers.check("p", 3), DedupCheck::Duplicate(r) if r == third[1])
            );
            assert!(matches!(state.producers.check("p", 4), DedupCheck::New));
            assert!(state.topics.contains_key("auto"));
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
}
