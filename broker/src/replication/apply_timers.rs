//! Applying timer messages: indexing the ones a send stores, and moving due ones
//! to their topics exactly once ([`DeliverTimersCommand`]; the design is in
//! [`super::timers`]).

use std::io;

use tracing::warn;

use super::command::{CommandResponse, ControlRecord, DeliverTimersCommand, Rejection};
use super::error::StateMachineError;
use super::state_machine::BrokerStateMachine;
use super::timers::{TimerEntry, TimerKey, TimerState, TIMER_QUEUE};
use crate::service::consumer::delay;
use crate::storage::{
    Appended, CommitLogOffset, MessageDraft, QueueOffset, RaftLogRef, RecordInput, TagFilter,
};
use crate::topic::TIMER_TOPIC;

/// Most timers stored between the leader reading its index and its run applying
/// that apply reads to check the run passes none of them; past it the run is
/// refused (the leader reads again).
const MAX_TIMERS_SINCE_READ: u64 = 4096;

impl BrokerStateMachine {
    /// Indexes the timer messages of an append (`records[i]` stored at
    /// `appended[i]`).
    pub(super) fn index_timers(
        &self,
        records: &[RecordInput<'_>],
        appended: &[Appended],
    ) -> io::Result<()> {
        let mut added = false;
        for (record, at) in records.iter().zip(appended) {
            let RecordInput::Message(message) = record else {
                continue;
            };
            if message.topic != TIMER_TOPIC {
                continue;
            }
            let Some(due_ms) = delay::draft_due_ms(message) else {
                continue;
            };
            self.shared
                .timers
                .add(TimerEntry {
                    key: TimerKey {
                        due_ms,
                        offset: at.queue_offset.0,
                    },
                    commit_log_offset: at.commit_log_offset.0,
                })
                .map_err(|e| StateMachineError::TimerIndex(e.to_string()))?;
            added = true;
        }
        if added {
            self.hold_for_timers();
        }
        Ok(())
    }

    /// Whether a send's timer message is due before the delivered key: a run
    /// already passed its time, so stored as a timer it would never be delivered.
    pub(super) fn timer_passed(
        state_delivered: TimerKey,
        message: &MessageDraft,
    ) -> Option<String> {
        if message.topic != TIMER_TOPIC {
            return None;
        }
        // Its key would be (due, an offset above every stored one): at most the
        // delivered key exactly when its due time is below the delivered one's.
        let due = delay::draft_due_ms(message)?;
        (due < state_delivered.due_ms).then(|| {
            format!(
                "timer message {} is due at {due}, before timers delivered up to {}",
                message.msg_id, state_delivered.due_ms
            )
        })
    }

    /// Moves a run of due timers to their topics and advances the delivered key,
    /// in one entry — only from the key the leader read, and only if no timer
    /// stored since it read its index falls inside the run.
    pub(super) fn apply_deliver_timers(
        &self,
        raft: RaftLogRef,
        deliver: &DeliverTimersCommand,
    ) -> io::Result<CommandResponse> {
        let store_ms = deliver
            .messages
            .first()
            .map_or(0, |m| m.message.store_timestamp_ms);
        let deliverable: Vec<&MessageDraft> = {
            let state = self.shared.state();
            let current = state.timers.delivered;
            if current != deliver.from || deliver.to < deliver.from {
                drop(state);
                return self.reject(
                    raft,
                    Rejection::Invalid(format!(
                        "stale timer run from {:?} (delivered up to {current:?})",
                        deliver.from
                    )),
                );
            }
            if let Some(early) = deliver
                .messages
                .iter()
                .find(|m| m.message.store_timestamp_ms < m.due_ms)
            {
                let reason = format!(
                    "timer message {} is due at {}, not at {}",
                    early.message.msg_id, early.due_ms, early.message.store_timestamp_ms
                );
                drop(state);
                return self.reject(raft, Rejection::Invalid(reason));
            }
            if let Some(reason) = self.passed_over(deliver)? {
                drop(state);
                return self.reject(raft, Rejection::Invalid(reason));
            }
            // A topic deleted (or shrunk) while its timers waited: they are dropped,
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
        let progress = ControlRecord::Timers(TimerState {
            delivered: deliver.to,
        });
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
        // The index is derived: a segment file that cannot be deleted costs disk,
        // not correctness (a restart rebuilds the index).
        if let Err(e) = self
            .shared
            .timers
            .delivered(deliver.to, deliver.messages.len() as u64)
        {
            warn!(error = %e, "timer index: deleting a delivered segment failed");
        }
        self.hold_for_timers();
        Ok(CommandResponse::Delivered {
            delivered: deliverable.len(),
            skipped: deliver.messages.len() - deliverable.len(),
        })
    }

    /// Why the run would pass over a timer stored after the leader read its index
    /// (queue offset `through` on) whose key is inside the run; `None` if none is.
    fn passed_over(&self, deliver: &DeliverTimersCommand) -> io::Result<Option<String>> {
        let store = &self.shared.store;
        let end = store
            .queue_offsets(TIMER_TOPIC, TIMER_QUEUE)
            .map_or(0, |(_, max)| max.0);
        if end <= deliver.through {
            return Ok(None);
        }
        if end - deliver.through > MAX_TIMERS_SINCE_READ {
            return Ok(Some(format!(
                "{} timers were stored since the run was read",
                end - deliver.through
            )));
        }
        let mut offset = deliver.through;
        while offset < end {
            let page = store
                .pull(
                    TIMER_TOPIC,
                    TIMER_QUEUE,
                    QueueOffset(offset),
                    (end - offset) as usize,
                    &TagFilter::All,
                )
                .map_err(StateMachineError::Store)?;
            if page.messages.is_empty() {
                break;
            }
            for message in &page.messages {
                let Some(due_ms) = delay::due_ms(message) else {
                    continue;
                };
                let key = TimerKey {
                    due_ms,
                    offset: message.queue_offset.0,
                };
                if key <= deliver.to {
                    return Ok(Some(format!(
                        "timer {key:?}, stored since the run was read, is inside it (up to {:?})",
                        deliver.to
                    )));
                }
            }
            offset = page.next_offset.0.max(offset + 1);
        }
        Ok(None)
    }

    /// Retention keeps every CommitLog record a pending timer may need.
    pub(super) fn hold_for_timers(&self) {
        self.shared
            .store
            .set_hold_floor(self.shared.timers.retention_floor().map(CommitLogOffset));
    }
}
