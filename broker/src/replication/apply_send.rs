//! Applying sends: one entry holds one send or a batch of concurrent sends; each is
//! decided on its own against the group state (topic, permission, placement,
//! idempotent producers) as if it were an entry of its own, and every accepted
//! message of the entry is stored in one CommitLog append.

use std::collections::{HashMap, HashSet};
use std::io;

use tracing::warn;

use super::command::{CommandResponse, ControlRecord, Rejection, SendCommand, SendResult};
use super::group_state::{DedupCheck, GroupState};
use super::state_machine::{io_error, BrokerStateMachine};
use crate::storage::{MessageDraft, QueueId, RaftLogRef, RecordInput, StoreError};
use crate::topic::{TopicConfig, SCHEDULE_TOPIC};
use broker_proto::delay::MAX_DELAY_LEVELS;
use broker_proto::properties::PROPERTY_REAL_TOPIC;

impl BrokerStateMachine {
    /// Stores a batch: checks the topic, answers retries of an idempotent producer
    /// with their first result, and appends the new messages as one entry.
    /// Applies the sends of one entry (one send, or a batch the leader formed from
    /// concurrent requests) as one atomic CommitLog append. Each send is decided on
    /// its own — rejected, or stored with its duplicates answered by their first
    /// store — exactly as if it had been an entry of its own, in entry order.
    pub(super) fn apply_sends(
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
            let mut new_producers: HashSet<&str> = HashSet::new();
            for (send, &start) in sends.iter().zip(&starts) {
                let slots = start..start + send.messages.len();
                let decision = self.decide_send(
                    &state,
                    &created,
                    &mut first_in_entry,
                    &mut new_producers,
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
    /// `new_producers` are the producer ids earlier sends of the entry add to the
    /// dedup table (this send's are added if it is accepted): a send whose new
    /// producers do not fit is refused whole.
    /// Returns the topic to create, or why the send is refused.
    #[allow(clippy::too_many_arguments)]
    fn decide_send<'a>(
        &self,
        state: &GroupState,
        created: &HashMap<String, TopicConfig>,
        first_in_entry: &mut HashMap<(&'a str, u64), usize>,
        new_producers: &mut HashSet<&'a str>,
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
                    || m.properties.get(PROPERTY_REAL_TOPIC) != Some(&send.topic)
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
            match state.producers.check(
                &stamp.producer_id,
                stamp.sequence,
                message.store_timestamp_ms,
            ) {
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
        // The leader's time, fixed in the entry: every replica admits the same.
        let at_ms = send
            .messages
            .iter()
            .map(|m| m.store_timestamp_ms)
            .max()
            .unwrap_or_default();
        state
            .producers
            .admit(
                new_producers,
                send.messages
                    .iter()
                    .filter_map(|m| m.producer.as_ref())
                    .map(|p| p.producer_id.as_str()),
                at_ms,
            )
            .map_err(|full| Rejection::ProducerTableFull(full.to_string()))?;
        first_in_entry.extend(new_stamps);
        Ok(create)
    }
}
