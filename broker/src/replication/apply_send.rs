//! Applying sends: one entry holds one send or a batch of concurrent sends; each is
//! decided on its own against the group state (topic, permission, placement,
//! idempotent producers) as if it were an entry of its own, and every accepted
//! message of the entry is stored in one CommitLog append.
//!
//! Deciding makes a [`SendPlan`] per send: its rejection, or the topic it creates
//! and the [`Fate`] of each of its messages, with the index of the record each new
//! message becomes in the entry's append. The append then lays the records out in
//! that order, and every answer is read from the plan.

use std::collections::{HashMap, HashSet};
use std::io;

use tracing::warn;

use super::command::{CommandResponse, ControlRecord, Rejection, SendCommand, SendResult};
use super::error::StateMachineError;
use super::group_state::{DedupCheck, GroupState};
use super::state_machine::BrokerStateMachine;
use super::timers::TIMER_QUEUE;
use super::transactions::{
    HALF_QUEUE, HALF_TOPIC, PROPERTY_PRODUCER_GROUP, PROPERTY_TRANSACTION_ID,
};
use crate::storage::{
    Appended, MessageDraft, MessageId, QueueId, RaftLogRef, RecordInput, StoreError,
};
use crate::topic::{TopicConfig, SCHEDULE_TOPIC, TIMER_TOPIC};
use broker_proto::delay::MAX_DELAY_LEVELS;
use broker_proto::properties::PROPERTY_REAL_TOPIC;

/// What one message of an accepted send becomes.
#[derive(Copy, Clone, Debug)]
enum Fate {
    /// An idempotent producer's retry of a message an earlier entry stored: it
    /// answers that message's result and is not stored again.
    Earlier(SendResult),
    /// New: stored as record `record` of this entry's append.
    New { record: usize },
    /// A retry, in this entry, of the new message stored as record `record`: it
    /// answers that message's result.
    SameAs { record: usize },
}

/// One send of an entry, as decided.
struct SendPlan<'a> {
    send: &'a SendCommand,
    /// Why it is refused, or what it stores.
    decision: Result<Accepted, Rejection>,
}

/// An accepted send: the topic it creates, and its messages' fates in order.
struct Accepted {
    /// Auto-creation, stored as a control record just before the send's first
    /// message.
    creates: Option<Creation>,
    fates: Vec<Fate>,
}

/// A topic a send creates: its config, and the control record that stores it
/// (encoded when the send is decided, so the append can borrow it).
struct Creation {
    config: TopicConfig,
    record: Vec<u8>,
}

impl Creation {
    fn new(config: TopicConfig) -> Self {
        let record = ControlRecord::UpsertTopic(config.clone()).encode();
        Self { config, record }
    }
}

impl Accepted {
    /// Records this send adds to the append.
    fn records(&self) -> usize {
        usize::from(self.creates.is_some())
            + self
                .fates
                .iter()
                .filter(|fate| matches!(fate, Fate::New { .. }))
                .count()
    }
}

/// What the sends decided before the current one in the same entry add to the
/// state: a send is decided as if those were applied already.
#[derive(Default)]
struct EntrySoFar<'a> {
    /// Topics created by earlier sends of the entry.
    created: HashMap<String, TopicConfig>,
    /// Producer stamps of new messages so far, with their record.
    stamps: HashMap<(&'a str, u64), usize>,
    /// Producer ids earlier sends add to the dedup table.
    new_producers: HashSet<&'a str>,
    /// The record the next new record gets.
    next_record: usize,
}

impl BrokerStateMachine {
    /// Applies the sends of one entry (one send, or a batch the leader formed from
    /// concurrent requests) as one atomic CommitLog append. Each send is decided on
    /// its own — rejected, or stored with its duplicates answered by their first
    /// store — exactly as if it had been an entry of its own, in entry order.
    pub(super) fn apply_sends(
        &self,
        raft: RaftLogRef,
        sends: &[SendCommand],
    ) -> io::Result<Vec<CommandResponse>> {
        // Decide everything from the state first; the state machine is its only
        // writer.
        let (plans, delivered): (Vec<SendPlan<'_>>, _) = {
            let state = self.shared.state();
            let mut so_far = EntrySoFar::default();
            let plans = sends
                .iter()
                .map(|send| {
                    let decision = self.decide_send(&state, &mut so_far, send);
                    if let Ok(accepted) = &decision {
                        so_far.next_record += accepted.records();
                        if let Some(creation) = &accepted.creates {
                            let config = &creation.config;
                            so_far.created.insert(config.name.clone(), config.clone());
                        }
                    }
                    SendPlan { send, decision }
                })
                .collect();
            (plans, state.timers.delivered)
        };

        // Timers a run already passed are stored due at the delivered time (rare:
        // only sends in flight while a run was read and applied).
        let late: Vec<((usize, usize), MessageDraft)> = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| plan.decision.is_ok())
            .flat_map(|(p, plan)| {
                plan.send
                    .messages
                    .iter()
                    .enumerate()
                    .filter_map(move |(m, message)| {
                        Self::late_timer(delivered, message).map(|late| ((p, m), late))
                    })
            })
            .collect();
        let mut records: Vec<RecordInput<'_>> = Vec::new();
        // The leader's time, fixed in the command: deterministic on every replica.
        let mut noop_store_ms = 0;
        for (p, plan) in plans.iter().enumerate() {
            let Ok(accepted) = &plan.decision else {
                continue;
            };
            let store_ms = plan
                .send
                .messages
                .first()
                .map_or(0, |m| m.store_timestamp_ms);
            if noop_store_ms == 0 {
                noop_store_ms = store_ms;
            }
            if let Some(creation) = &accepted.creates {
                records.push(RecordInput::Control {
                    payload: &creation.record,
                    store_timestamp_ms: store_ms,
                });
            }
            for (m, (message, fate)) in plan.send.messages.iter().zip(&accepted.fates).enumerate() {
                if let Fate::New { record } = fate {
                    // The plan numbered the records in this very order.
                    assert_eq!(*record, records.len(), "a send plan's record order");
                    records.push(RecordInput::Message(stored_as(&late, (p, m), message)));
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
            Err(e) => return Err(StateMachineError::Store(e).into()),
        };
        self.index_timers(&records, &appended)?;
        // The plan numbered its records as it laid them out (asserted there), so
        // a record that is not a stored message is a bug in this module.
        let stored = |record: usize| -> SendResult {
            match (records.get(record), appended.get(record)) {
                (Some(RecordInput::Message(message)), Some(at)) => result_of(message, at),
                _ => panic!(
                    "record {record} of the append is not a stored message ({} records, {} appended)",
                    records.len(),
                    appended.len()
                ),
            }
        };

        let mut woken: Vec<(&str, QueueId)> = Vec::new();
        let mut responses = Vec::with_capacity(plans.len());
        let mut state = self.shared.state_mut();
        // Half messages stored: retention must keep them (retention_hold).
        let mut opened_halves = false;
        for plan in &plans {
            let accepted = match &plan.decision {
                Ok(accepted) => accepted,
                Err(rejection) => {
                    responses.push(CommandResponse::Rejected(rejection.clone()));
                    continue;
                }
            };
            if let Some(creation) = &accepted.creates {
                let config = &creation.config;
                state.topics.insert(config.name.clone(), config.clone());
            }
            let mut results = Vec::with_capacity(accepted.fates.len());
            for (message, fate) in plan.send.messages.iter().zip(&accepted.fates) {
                let result = match *fate {
                    Fate::Earlier(result) => result,
                    Fate::SameAs { record } => stored(record),
                    Fate::New { record } => {
                        let result = stored(record);
                        if let Some((id, producer_group)) = half_of(message) {
                            opened_halves = true;
                            state.transactions.add_half(
                                id,
                                producer_group,
                                &plan.send.topic,
                                result.queue_offset.0,
                                result.store_timestamp_ms,
                            );
                        }
                        if let Some(stamp) = &message.producer {
                            state
                                .producers
                                .record(&stamp.producer_id, stamp.sequence, result);
                        }
                        // Nobody long-polls the schedule and timer topics.
                        let queue = (message.topic.as_str(), message.queue_id);
                        let internal = message.topic == SCHEDULE_TOPIC
                            || message.topic == TIMER_TOPIC
                            || message.topic == HALF_TOPIC;
                        if !internal && !woken.contains(&queue) {
                            woken.push(queue);
                        }
                        result
                    }
                };
                results.push(result);
            }
            responses.push(CommandResponse::Sent(results));
        }
        drop(state);
        if opened_halves {
            self.hold_for_pending();
        }
        for (topic, queue_id) in woken {
            self.shared.waiters.wake(topic, queue_id);
        }
        Ok(responses)
    }

    /// Decides one send of an entry against the group state and what the sends
    /// before it in the entry add (`so_far`: topics they create, the producer
    /// stamps of their new messages, the producers they add to the dedup table).
    /// An accepted send's new messages are numbered from `so_far.next_record` (after
    /// the topic it creates, if any); its new stamps and producers join `so_far`. A
    /// send whose new producers do not fit the dedup table is refused whole.
    fn decide_send<'a>(
        &self,
        state: &GroupState,
        so_far: &mut EntrySoFar<'a>,
        send: &'a SendCommand,
    ) -> Result<Accepted, Rejection> {
        let existing = state
            .topics
            .get(&send.topic)
            .or_else(|| so_far.created.get(&send.topic));
        let (config, creates) = match (existing, &send.create_if_missing) {
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
        // A message goes to the topic, or to the schedule or timer topic on its way
        // there.
        let misplaced = |m: &MessageDraft| {
            if m.topic == SCHEDULE_TOPIC {
                m.queue_id.0 as usize >= MAX_DELAY_LEVELS
                    || m.properties.get(PROPERTY_REAL_TOPIC) != Some(&send.topic)
            } else if m.topic == TIMER_TOPIC {
                m.queue_id != TIMER_QUEUE
                    || m.properties.get(PROPERTY_REAL_TOPIC) != Some(&send.topic)
            } else if m.topic == HALF_TOPIC {
                m.queue_id != HALF_QUEUE
                    || m.properties.get(PROPERTY_REAL_TOPIC) != Some(&send.topic)
                    || half_of(m).is_none()
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
        // Transactions it opens (a send's half messages are one transaction).
        let opens = send
            .messages
            .iter()
            .filter_map(half_of)
            .filter(|(id, _)| state.transactions.open_transaction(id).is_none())
            .map(|(id, _)| id)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if !state.transactions.has_room_for(opens) {
            return Err(Rejection::TooManyTransactions(format!(
                "{} transactions are open in this group, the most it holds: resolve some first",
                state.transactions.open_count()
            )));
        }
        let mut next_record = so_far.next_record + usize::from(creates.is_some());
        let mut new_stamps: HashMap<(&'a str, u64), usize> = HashMap::new();
        let mut fates = Vec::with_capacity(send.messages.len());
        for message in &send.messages {
            let fate = match &message.producer {
                None => None,
                Some(stamp) => match state.producers.check(
                    &stamp.producer_id,
                    stamp.sequence,
                    message.store_timestamp_ms,
                ) {
                    DedupCheck::Duplicate(result) => Some(Fate::Earlier(result)),
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
                        match so_far.stamps.get(&key).or_else(|| new_stamps.get(&key)) {
                            Some(&record) => Some(Fate::SameAs { record }),
                            // The first of its stamp: new, numbered below.
                            None => {
                                new_stamps.insert(key, next_record);
                                None
                            }
                        }
                    }
                },
            };
            fates.push(fate.unwrap_or_else(|| {
                let record = next_record;
                next_record += 1;
                Fate::New { record }
            }));
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
                &mut so_far.new_producers,
                send.messages
                    .iter()
                    .filter_map(|m| m.producer.as_ref())
                    .map(|p| p.producer_id.as_str()),
                at_ms,
            )
            .map_err(|full| Rejection::ProducerTableFull(full.to_string()))?;
        so_far.stamps.extend(new_stamps);
        Ok(Accepted {
            creates: creates.map(Creation::new),
            fates,
        })
    }
}

/// The transaction (id, producer group) a half message belongs to; `None` for
/// any other message.
fn half_of(message: &MessageDraft) -> Option<(MessageId, &str)> {
    if message.topic != HALF_TOPIC {
        return None;
    }
    let id = MessageId::parse(message.properties.get(PROPERTY_TRANSACTION_ID)?)?;
    let group = message.properties.get(PROPERTY_PRODUCER_GROUP)?;
    Some((id, group.as_str()))
}

/// The draft message `at` (send, message) of an entry is stored as: itself, or
/// its late-timer copy.
fn stored_as<'a>(
    late: &'a [((usize, usize), MessageDraft)],
    at: (usize, usize),
    message: &'a MessageDraft,
) -> &'a MessageDraft {
    if late.is_empty() {
        return message;
    }
    late.iter()
        .find(|(of, _)| *of == at)
        .map_or(message, |(_, late)| late)
}

/// The answer for a message stored at `at`.
fn result_of(message: &MessageDraft, at: &Appended) -> SendResult {
    SendResult {
        msg_id: message.msg_id,
        queue_id: at.queue_id,
        queue_offset: at.queue_offset,
        commit_log_offset: at.commit_log_offset.0,
        store_timestamp_ms: at.store_timestamp_ms,
    }
}
