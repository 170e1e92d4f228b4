//! Applying timer messages: indexing the ones a send stores, and moving due ones
//! to their topics exactly once ([`DeliverTimersCommand`]; the design is in
//! [`super::timers`]).

use std::io;

use tracing::warn;

use super::command::{CommandResponse, ControlRecord, DeliverTimersCommand, Rejection};
use super::error::StateMachineError;
use super::state_machine::BrokerStateMachine;
use super::timers::{
    reschedule_timer, stored_due_ms, timer_due_ms, TimerEntry, TimerKey, TimerState, TIMER_QUEUE,
};
use crate::storage::{Appended, MessageDraft, QueueOffset, RaftLogRef, RecordInput, TagFilter};
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
            let Some(due_ms) = timer_due_ms(message) else {
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
            self.hold_for_pending();
        }
        Ok(())
    }

    /// A timer message of a send due before the delivered key's time, as it is
    /// stored: due at that time instead. A run already passed its time; with its
    /// own due time its key (an offset above every stored one) would sort below
    /// the delivered key, where no run looks. `None` for any other message.
    pub(super) fn late_timer(delivered: TimerKey, message: &MessageDraft) -> Option<MessageDraft> {
        if message.topic != TIMER_TOPIC {
            return None;
        }
        let due = timer_due_ms(message)?;
        if due >= delivered.due_ms {
            return None;
        }
        let mut late = message.clone();
        reschedule_timer(&mut late, delivered.due_ms);
        Some(late)
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
        self.hold_for_pending();
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
                let Some(due_ms) = stored_due_ms(message) else {
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::replication::command::{Command, DueMessage, SendCommand};
    use crate::replication::snapshot::SnapshotFiles;
    use crate::replication::type_config::log_id_of;
    use crate::storage::{MessageId, MessageStore, QueueId, StoreConfig};
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

    /// A message for topic `t`, stored at `store_ms`.
    fn draft(n: u8, store_ms: u64) -> MessageDraft {
        MessageDraft {
            topic: "t".into(),
            queue_id: QueueId(0),
            msg_id: MessageId([n; 16]),
            body: vec![b'x'; 8],
            binary_body: false,
            tags: String::new(),
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: store_ms,
            born_host: "127.0.0.1:1".into(),
            reconsume_times: 0,
            producer: None,
        }
    }

    /// Sends timer `n` due at `due_ms`.
    fn send_timer(sm: &BrokerStateMachine, index: u64, n: u8, due_ms: u64) {
        let mut message = draft(n, 1_000);
        super::super::timers::schedule_timer(&mut message, due_ms);
        let command = Command::Send(SendCommand {
            topic: "t".into(),
            messages: vec![message],
            create_if_missing: None,
        });
        assert!(matches!(
            apply(sm, index, &command),
            CommandResponse::Sent(_)
        ));
    }

    /// The run from `from` to `to` moving timers `ns` (due at `due_ms` each),
    /// stored at `store_ms`.
    fn run(from: TimerKey, to: TimerKey, through: u64, ns: &[(u8, u64)], store_ms: u64) -> Command {
        Command::DeliverTimers(DeliverTimersCommand {
            from,
            to,
            through,
            messages: ns
                .iter()
                .map(|&(n, due_ms)| DueMessage {
                    due_ms,
                    message: draft(n, store_ms),
                })
                .collect(),
        })
    }

    fn key(due_ms: u64, offset: u64) -> TimerKey {
        TimerKey { due_ms, offset }
    }

    fn topic_len(sm: &BrokerStateMachine) -> u64 {
        sm.shared
            .store
            .queue_offsets("t", QueueId(0))
            .map_or(0, |(_, max)| max.0)
    }

    #[test]
    fn runs_move_each_timer_once_and_refuse_stale_early_or_overlapping_plans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        apply(
            &sm,
            1,
            &Command::UpsertTopic(TopicConfig::with_defaults("t")),
        );
        send_timer(&sm, 2, 0, 10_000);
        send_timer(&sm, 3, 1, 20_000);
        send_timer(&sm, 4, 2, 30_000);
        assert_eq!(sm.shared.timers.pending(), 3);
        assert_eq!(topic_len(&sm), 0, "timers wait in the timer topic");

        let first = run(
            TimerKey::default(),
            key(10_000, 0),
            3,
            &[(0, 10_000)],
            10_000,
        );
        assert!(matches!(
            apply(&sm, 5, &first),
            CommandResponse::Delivered { delivered: 1, .. }
        ));
        assert_eq!(sm.shared.state().timers.delivered, key(10_000, 0));
        assert_eq!(sm.shared.timers.pending(), 2);
        assert_eq!(topic_len(&sm), 1);
        // The same run again (a retry, a stale leader): refused, nothing stored.
        assert!(matches!(
            apply(&sm, 6, &first),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(topic_len(&sm), 1);
        // Early: stored before it is due.
        let early = run(key(10_000, 0), key(20_000, 1), 3, &[(1, 20_000)], 19_999);
        assert!(matches!(
            apply(&sm, 7, &early),
            CommandResponse::Rejected(_)
        ));
        // A timer stored after the leader read its index (queue offset 3, through
        // 3), due inside the run, would be passed over: refused.
        send_timer(&sm, 8, 3, 15_000);
        let overlapping = run(key(10_000, 0), key(20_000, 1), 3, &[(1, 20_000)], 20_000);
        assert!(matches!(
            apply(&sm, 9, &overlapping),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(topic_len(&sm), 1);
        // Read again, it takes both in key order.
        let second = run(
            key(10_000, 0),
            key(20_000, 1),
            4,
            &[(3, 15_000), (1, 20_000)],
            20_000,
        );
        assert!(matches!(
            apply(&sm, 10, &second),
            CommandResponse::Delivered { delivered: 2, .. }
        ));
        assert_eq!(topic_len(&sm), 3);
        assert_eq!(sm.shared.timers.pending(), 1);

        // A restart folds the delivered key back and rebuilds the index: only the
        // last timer is pending.
        drop(sm);
        let sm = open(dir.path());
        assert_eq!(sm.shared.state().timers.delivered, key(20_000, 1));
        assert_eq!(sm.shared.timers.pending(), 1);
        let due = sm
            .shared
            .timers
            .due(key(20_000, 1), 40_000, 10)
            .expect("due");
        assert_eq!(
            due.entries.iter().map(|e| e.key).collect::<Vec<_>>(),
            vec![key(30_000, 2)]
        );
    }

    #[test]
    fn a_timer_a_run_passed_is_stored_due_at_the_delivered_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        apply(
            &sm,
            1,
            &Command::UpsertTopic(TopicConfig::with_defaults("t")),
        );
        send_timer(&sm, 2, 0, 10_000);
        let first = run(
            TimerKey::default(),
            key(10_000, 0),
            1,
            &[(0, 10_000)],
            10_000,
        );
        assert!(matches!(
            apply(&sm, 3, &first),
            CommandResponse::Delivered { .. }
        ));
        // In flight while the run was read and applied: due at 5,000, stored after
        // timers were delivered up to 10,000.
        send_timer(&sm, 4, 1, 5_000);
        let due = sm
            .shared
            .timers
            .due(key(10_000, 0), 10_000, 10)
            .expect("due");
        assert_eq!(
            due.entries.iter().map(|e| e.key).collect::<Vec<_>>(),
            vec![key(10_000, 1)],
            "the next run from the delivered key takes it"
        );
        // Its record says so, so a rebuilt index finds it too.
        drop(sm);
        let sm = open(dir.path());
        let due = sm
            .shared
            .timers
            .due(key(10_000, 0), 10_000, 10)
            .expect("due");
        assert_eq!(due.entries.len(), 1);
    }
}
