//! Applying transactions (the design is in [`super::transactions`]): a commit
//! stores the half messages in their topic and the resolution in one append, so
//! they become visible exactly once; a rollback stores the resolution alone; an
//! offer of checks counts them.

use std::collections::BTreeMap;
use std::io;

use tracing::warn;

use super::command::{CommandResponse, ControlRecord, ResolveTransaction};
use super::error::StateMachineError;
use super::group_state::GroupState;
use super::state_machine::BrokerStateMachine;
use super::transactions::{
    OpenTransaction, Resolution, ResolveOutcome, TransactionUpdate, HALF_QUEUE, HALF_TOPIC,
    PROPERTY_PRODUCER_GROUP, PROPERTY_TRANSACTION_ID,
};
use crate::storage::{
    MessageDraft, MessageId, QueueId, QueueOffset, RaftLogRef, RecordInput, StoredMessage,
    TagFilter,
};
use broker_proto::properties::{PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC};

impl BrokerStateMachine {
    /// Commits or rolls back a transaction: once; a repeat answers as the first
    /// did, the opposite is a conflict, an unknown id is not found.
    pub(super) fn apply_resolve(
        &self,
        raft: RaftLogRef,
        resolve: &ResolveTransaction,
    ) -> io::Result<CommandResponse> {
        let (open, drafts) = {
            let state = self.shared.state();
            if let Some(outcome) = state.transactions.decide(&resolve.id, resolve.commit) {
                drop(state);
                self.write_control(raft, &ControlRecord::Noop)?;
                return Ok(CommandResponse::Transaction(outcome));
            }
            let Some(open) = state.transactions.open_transaction(&resolve.id).cloned() else {
                unreachable!("decide answers for every transaction that is not open");
            };
            let drafts = if resolve.commit {
                self.committed(&state, &open, resolve.at_ms)?
            } else {
                Vec::new()
            };
            (open, drafts)
        };
        let resolution = Resolution {
            committed: resolve.commit,
            by_timeout: resolve.by_timeout,
            topic: open.topic.clone(),
            messages: open.offsets.len() as u64,
            at_ms: resolve.at_ms,
        };
        let update = ControlRecord::Transactions(TransactionUpdate::Resolved {
            id: resolve.id,
            resolution: resolution.clone(),
        });
        let payload = update.encode();
        let mut records = Vec::with_capacity(drafts.len() + 1);
        records.push(RecordInput::Control {
            payload: &payload,
            store_timestamp_ms: resolve.at_ms,
        });
        records.extend(drafts.iter().map(RecordInput::Message));
        self.shared
            .store
            .append_entry(raft, &records)
            .map_err(StateMachineError::Store)?;
        self.shared.state_mut().apply_control(&update);
        self.hold_for_pending();
        for draft in &drafts {
            self.shared.waiters.wake(&draft.topic, draft.queue_id);
        }
        Ok(CommandResponse::Transaction(ResolveOutcome::Resolved(
            resolution,
        )))
    }

    /// Counts a check of each open transaction of `ids` as offered.
    pub(super) fn apply_offer(
        &self,
        raft: RaftLogRef,
        ids: &[MessageId],
        next_ms: u64,
    ) -> io::Result<CommandResponse> {
        let update = ControlRecord::Transactions(TransactionUpdate::Offered {
            ids: ids.to_vec(),
            next_ms,
        });
        self.write_control(raft, &update)?;
        self.shared.state_mut().apply_control(&update);
        Ok(CommandResponse::Applied)
    }

    /// The messages a commit stores: the transaction's half messages as their
    /// topic's, stamped `at_ms`. A topic deleted (or shrunk) meanwhile drops
    /// them, the same way on every replica.
    fn committed(
        &self,
        state: &GroupState,
        open: &OpenTransaction,
        at_ms: u64,
    ) -> io::Result<Vec<MessageDraft>> {
        let mut drafts = Vec::with_capacity(open.offsets.len());
        for &offset in &open.offsets {
            let Some(half) = self.half_message(offset)? else {
                warn!(offset, "a half message of an open transaction is gone");
                continue;
            };
            let Some(draft) = visible(half, at_ms) else {
                continue;
            };
            let fits = state
                .topics
                .get(&draft.topic)
                .is_some_and(|config| draft.queue_id.0 < config.write_queue_nums);
            if fits {
                drafts.push(draft);
            }
        }
        Ok(drafts)
    }

    pub(super) fn half_message(&self, offset: u64) -> io::Result<Option<StoredMessage>> {
        let page = self
            .shared
            .store
            .pull(
                HALF_TOPIC,
                HALF_QUEUE,
                QueueOffset(offset),
                1,
                &TagFilter::All,
            )
            .map_err(StateMachineError::Store)?;
        Ok(page
            .messages
            .into_iter()
            .find(|m| m.queue_offset.0 == offset))
    }
}

/// The message a half message becomes when its transaction commits: its topic
/// and queue, the transaction's properties removed, stored at `at_ms`; `None`
/// for a record that does not name its topic and queue.
pub fn visible(mut half: StoredMessage, at_ms: u64) -> Option<MessageDraft> {
    let mut properties: BTreeMap<String, String> = std::mem::take(&mut half.properties);
    let topic = properties.remove(PROPERTY_REAL_TOPIC)?;
    let queue: u32 = properties.remove(PROPERTY_REAL_QUEUE_ID)?.parse().ok()?;
    properties.remove(PROPERTY_TRANSACTION_ID);
    properties.remove(PROPERTY_PRODUCER_GROUP);
    Some(half.into_draft(topic, QueueId(queue), properties, at_ms))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::replication::command::{Command, SendCommand};
    use crate::replication::snapshot::SnapshotFiles;
    use crate::replication::type_config::log_id_of;
    use crate::storage::{MessageStore, StoreConfig};
    use crate::topic::TopicConfig;
    use broker_proto::properties::PROPERTY_REAL_QUEUE_ID;

    /// A state machine whose store deletes every CommitLog file but the newest at
    /// each retention run (files of 64 KiB, kept no time at all), unless held.
    fn open(dir: &std::path::Path) -> BrokerStateMachine {
        let mut config = StoreConfig::for_test(dir.join("store"));
        config.file_reserved_ms = 0;
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

    /// Message `n` of 1 KiB for topic `t`; a half message of transaction `tx`
    /// when given.
    fn draft(n: u16, tx: Option<MessageId>) -> MessageDraft {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        let mut draft = MessageDraft {
            topic: "t".into(),
            queue_id: QueueId(0),
            msg_id: MessageId(id),
            body: vec![b'x'; 1024],
            binary_body: false,
            tags: String::new(),
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 1_000,
            born_host: "127.0.0.1:1".into(),
            reconsume_times: 0,
            producer: None,
        };
        if let Some(tx) = tx {
            let properties = &mut draft.properties;
            properties.insert(PROPERTY_REAL_TOPIC.into(), "t".into());
            properties.insert(PROPERTY_REAL_QUEUE_ID.into(), "0".into());
            properties.insert(PROPERTY_TRANSACTION_ID.into(), tx.to_string());
            properties.insert(PROPERTY_PRODUCER_GROUP.into(), "pg".into());
            draft.topic = HALF_TOPIC.into();
            draft.queue_id = HALF_QUEUE;
        }
        draft
    }

    /// A send to topic `t` (its half messages go to the half topic).
    fn send(sm: &BrokerStateMachine, index: u64, messages: Vec<MessageDraft>) {
        let command = Command::Send(SendCommand {
            topic: "t".into(),
            messages,
            create_if_missing: None,
        });
        assert!(matches!(
            apply(sm, index, &command),
            CommandResponse::Sent(_)
        ));
    }

    fn commit(sm: &BrokerStateMachine, index: u64, id: MessageId) -> CommandResponse {
        let resolve = ResolveTransaction {
            id,
            commit: true,
            by_timeout: false,
            at_ms: 2_000,
        };
        apply(sm, index, &Command::ResolveTransaction(resolve))
    }

    /// The transaction's messages visible in `t` (their ids start ff ff).
    fn visible(sm: &BrokerStateMachine) -> usize {
        // From the queue's first offset still stored (retention moves it).
        let first = sm
            .shared
            .store
            .queue_offsets("t", QueueId(0))
            .map_or(QueueOffset(0), |(min, _)| min);
        let page = sm
            .shared
            .store
            .pull("t", QueueId(0), first, 1_000, &TagFilter::All)
            .expect("pull");
        page.messages
            .iter()
            .filter(|m| m.msg_id.0[..2] == [0xff, 0xff])
            .count()
    }

    /// Transaction `tx`'s half message (message `n`), then `fill` plain
    /// messages after it (several CommitLog files); answers the next index.
    fn half_then_files(
        sm: &BrokerStateMachine,
        index: u64,
        n: u16,
        tx: MessageId,
        fill: u16,
    ) -> u64 {
        let mut half = draft(n, Some(tx));
        half.msg_id = tx;
        send(sm, index, vec![half]);
        for i in 1..=fill {
            send(sm, index + u64::from(i), vec![draft(n + i, None)]);
        }
        index + u64::from(fill) + 1
    }

    #[test]
    fn retention_keeps_the_half_messages_of_an_open_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        apply(
            &sm,
            1,
            &Command::UpsertTopic(TopicConfig::with_defaults("t")),
        );
        let tx = MessageId([0xff; 16]);
        // Enough plain messages to fill several CommitLog files after it.
        half_then_files(&sm, 2, 0, tx, 300);
        let report = sm
            .shared
            .store
            .run_retention(u64::MAX / 2)
            .expect("retention");
        assert!(
            report.commit_log_files_deleted.is_empty(),
            "the open transaction's file went: {report:?}"
        );
        let CommandResponse::Transaction(ResolveOutcome::Resolved(resolution)) =
            commit(&sm, 400, tx)
        else {
            panic!("the commit resolves");
        };
        assert_eq!(resolution.messages, 1);
        assert_eq!(visible(&sm), 1, "the committed message is stored");

        // Resolved: nothing holds the old files any more.
        let report = sm
            .shared
            .store
            .run_retention(u64::MAX / 2)
            .expect("retention");
        assert!(
            !report.commit_log_files_deleted.is_empty(),
            "the hold is lifted after the commit"
        );
    }

    #[test]
    fn a_lost_old_half_message_does_not_lift_the_hold_for_newer_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = open(dir.path());
        apply(
            &sm,
            1,
            &Command::UpsertTopic(TopicConfig::with_defaults("t")),
        );
        // Transaction A, then enough messages to fill files, then transaction B.
        let old_tx = MessageId([0xee; 16]);
        let next = half_then_files(&sm, 2, 0, old_tx, 300);
        let tx = MessageId([0xff; 16]);
        let next = half_then_files(&sm, next, 301, tx, 0);
        // A's half message is lost as a build without the hold would lose it;
        // then the hold is computed afresh, as a node started on this build
        // does (its cache empty).
        sm.shared.store.set_hold_floor(None);
        let report = sm
            .shared
            .store
            .run_retention(u64::MAX / 2)
            .expect("retention");
        assert!(!report.commit_log_files_deleted.is_empty());
        sm.shared.half_hold.clear();
        sm.hold_for_pending();
        // More files after B: B's must stay.
        for n in 302..=600u16 {
            send(&sm, next + u64::from(n), vec![draft(n, None)]);
        }
        let report = sm
            .shared
            .store
            .run_retention(u64::MAX / 2)
            .expect("retention");
        assert!(
            report.commit_log_files_deleted.is_empty(),
            "B's half message went with A's: {report:?}"
        );
        assert!(matches!(
            commit(&sm, 2_000, tx),
            CommandResponse::Transaction(ResolveOutcome::Resolved(_))
        ));
        assert_eq!(visible(&sm), 1, "B's message is stored");
    }

    #[test]
    fn the_hold_is_restored_when_the_state_machine_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tx = MessageId([0xff; 16]);
        {
            let sm = open(dir.path());
            apply(
                &sm,
                1,
                &Command::UpsertTopic(TopicConfig::with_defaults("t")),
            );
            half_then_files(&sm, 2, 0, tx, 300);
        }
        let sm = open(dir.path());
        let report = sm
            .shared
            .store
            .run_retention(u64::MAX / 2)
            .expect("retention");
        assert!(
            report.commit_log_files_deleted.is_empty(),
            "after a restart the open transaction's file went: {report:?}"
        );
        assert!(matches!(
            commit(&sm, 400, tx),
            CommandResponse::Transaction(ResolveOutcome::Resolved(_))
        ));
        assert_eq!(visible(&sm), 1);
    }
}
