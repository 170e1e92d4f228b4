//! Pull with long polling (RocketMQ's `PullMessageProcessor` with
//! `PullRequestHoldService`): read a queue from what this replica applied, and
//! when nothing new is there, hold the pull until a message arrives in the queue
//! (the state machine's applied-queues notification,
//! [`crate::replication::poll_waiters`]) or its deadline passes.
//!
//! Any replica serves pulls: applied entries are committed and never roll back.
//! Held pulls are capped (`http.max_held_polls`); past the cap a pull answers at
//! once, as if its deadline had passed.

use std::time::Duration;

use base64::Engine;

use crate::api::MessageView;
use crate::error::{BrokerError, QueueKind};
use crate::service::node::Node;
use crate::storage::record::RecordView;
use crate::storage::{PullResult, PullStatus, QueueId, QueueOffset, StoredMessage, TagFilter};

/// A pull, its limits checked by the caller (the protocol's bounds).
#[derive(Debug)]
pub struct Pull {
    pub topic: String,
    pub queue: QueueId,
    pub offset: QueueOffset,
    pub max_messages: usize,
    /// How long to hold the pull when the queue has nothing new; zero answers at
    /// once.
    pub max_wait: Duration,
    pub filter: TagFilter,
}

/// Reads `pull.queue` of `pull.topic` in this node's group, holding the pull while
/// it finds nothing new (up to `pull.max_wait`), and copies each message out of
/// the store as a [`StoredMessage`].
///
/// # Errors
/// As [`pull_mapped`].
pub async fn pull(node: &Node, pull: Pull) -> Result<PullResult, BrokerError> {
    pull_mapped(node, pull, StoredMessage::from_view).await
}

/// [`pull`], handing each message to `map` where it lies in the mapped store
/// file (an answer can be written from there without a copy of the message).
/// `map` sees only the messages of the answer: a look that finds any ends the
/// pull. Counts the pull and what it returns in the node's metrics.
///
/// # Errors
/// `TopicNotFound` (also when the topic is deleted while the pull is held),
/// `NoPermission` for a topic that is not readable, `QueueNotFound` for a queue
/// that is not one of its read queues, `Internal` when the store cannot be read.
pub async fn pull_mapped<T>(
    node: &Node,
    pull: Pull,
    mut map: impl FnMut(&RecordView<'_>) -> T,
) -> Result<PullResult<T>, BrokerError> {
    let Pull {
        topic,
        queue,
        offset,
        max_messages,
        max_wait,
        filter,
    } = pull;
    crate::metrics::Metrics::add(&node.metrics.pull_requests_total, 1);
    let config = node.topic(&topic)?;
    if !config.readable() {
        return Err(BrokerError::NoPermission(format!(
            "topic `{topic}` is not readable (perm {})",
            config.perm
        )));
    }
    if queue.0 >= config.read_queue_nums {
        return Err(BrokerError::queue_not_found(
            &topic,
            queue.0,
            QueueKind::Read,
            config.read_queue_nums,
        ));
    }
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut _held = None;
    loop {
        // Register before looking, so a message arriving in between wakes us.
        let notify = (!max_wait.is_zero()).then(|| node.shared.waiters.notifier(&topic, queue));
        let notified = notify.as_ref().map(|n| n.notified());
        tokio::pin!(notified);
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            notified.enable();
        }
        let mut bytes = 0u64;
        let pulled = node
            .shared
            .store
            .pull_with(&topic, queue, offset, max_messages, &filter, |view| {
                bytes += view.body.len() as u64;
                map(&view)
            })
            .map_err(|e| BrokerError::Internal(format!("reading queue {topic}/{queue}: {e}")))?;
        // A draining node answers at once: the client's next pull goes elsewhere.
        let waiting = pulled.status == PullStatus::NoNewMsg
            && tokio::time::Instant::now() < deadline
            && !node.drain.is_draining();
        if waiting && _held.is_none() {
            _held = node.shared.waiters.try_hold();
        }
        if !waiting || _held.is_none() {
            node.metrics
                .record_out(&topic, pulled.messages.len() as u64, bytes);
            return Ok(pulled);
        }
        debug_assert!(
            pulled.messages.is_empty(),
            "a look that found messages ends the pull"
        );
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        // A deletion wakes the polls of its topic: they answer now, not at their
        // deadline (an empty queue would otherwise just wait again).
        if !node.shared.state().topics.contains_key(&topic) {
            return Err(BrokerError::topic_not_found(&topic));
        }
    }
}

/// Converts a stored message to its API form.
pub fn message_view(message: StoredMessage) -> MessageView {
    let (body, body_base64) = if message.binary_body {
        (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&message.body)),
        )
    } else {
        match String::from_utf8(message.body) {
            Ok(text) => (Some(text), None),
            Err(e) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            ),
        }
    };
    MessageView {
        msg_id: message.msg_id.to_string(),
        topic: message.topic,
        queue_id: message.queue_id.0,
        queue_offset: message.queue_offset.0,
        commit_log_offset: message.commit_log_offset.0,
        body,
        body_base64,
        tags: (!message.tags.is_empty()).then_some(message.tags),
        keys: message.keys,
        properties: message.properties,
        born_timestamp: message.born_timestamp_ms,
        store_timestamp: message.store_timestamp_ms,
        reconsume_times: message.reconsume_times,
        producer_id: message.producer.as_ref().map(|p| p.producer_id.clone()),
        sequence: message.producer.map(|p| p.sequence),
    }
}
