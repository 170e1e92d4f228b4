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

    fn half_message(&self, offset: u64) -> io::Result<Option<StoredMessage>> {
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
