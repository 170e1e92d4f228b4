//! Delivery of delayed messages: while this node leads its group, every
//! `consumer.delivery_interval` it reads each schedule-topic queue from its
//! delivered offset and proposes the messages that are due, in order, as one
//! [`DeliverCommand`] per queue and round (RocketMQ's `ScheduleMessageService`,
//! with the delivered offsets replicated instead of kept in a local file).
//!
//! Never early: a message is proposed only once the leader's clock passed its due
//! time, and apply refuses a delivery stored before it. Never twice: apply accepts
//! a delivery only from the queue's current delivered offset, and advances it in
//! the same entry that stores the messages — a new leader, or a retried proposal,
//! starts from the replicated offset.

use std::sync::Weak;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::delay;
use crate::replication::command::{DeliverCommand, DueMessage};
use crate::replication::proposal::Delivered;
use crate::service::node::Node;
use crate::storage::{now_ms, QueueId, QueueOffset, TagFilter};
use crate::topic::SCHEDULE_TOPIC;

/// Most messages one delivery moves.
const MAX_BATCH_MESSAGES: usize = 128;
/// Most message bytes one delivery moves (at least one message).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Runs until the node is dropped (it holds the node only while delivering).
pub async fn run(node: Weak<Node>) {
    let Some(interval) = node
        .upgrade()
        .map(|n| n.config.consumer.delivery_interval.0)
    else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        // Due messages are stored again in their real topic: not above the disk
        // low-water mark (they stay scheduled, and go out once there is room or
        // another node leads).
        if !node.is_leader() || node.health.disk_over_mark() {
            continue;
        }
        let queues = node.shared.store.topic_queue_offsets(SCHEDULE_TOPIC);
        for (queue_id, _, _) in queues {
            // Drain what is due in this queue; a full batch means there may be more.
            loop {
                match deliver_due(&node, queue_id).await {
                    Ok(Round::Full) => continue,
                    Ok(Round::Partial | Round::Idle) => break,
                    Err(e) => {
                        debug!(error = %e, queue = queue_id.0, "delayed delivery failed; next round");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }
}

/// What one delivery attempt did.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Nothing due.
    Idle,
    /// Delivered everything due.
    Partial,
    /// Delivered a full batch: more may be due.
    Full,
}

/// Delivers the due head of one schedule queue.
async fn deliver_due(node: &Node, queue_id: QueueId) -> Result<Round, String> {
    let store = &node.shared.store;
    let from = node.shared.state().schedule_offset(queue_id);
    let Some((min, max)) = store.queue_offsets(SCHEDULE_TOPIC, queue_id) else {
        return Ok(Round::Idle);
    };
    if from >= max {
        return Ok(Round::Idle);
    }
    let now = now_ms();
    // Retention may have deleted messages that waited longer than the files are
    // kept: they are gone, and the delivered offset moves past them.
    let start = from.max(min);
    let page = store
        .pull(
            SCHEDULE_TOPIC,
            queue_id,
            start,
            MAX_BATCH_MESSAGES,
            &TagFilter::All,
        )
        .map_err(|e| e.to_string())?;
    let mut next = start;
    let mut messages = Vec::new();
    let mut bytes = 0usize;
    let mut full = page.messages.len() == MAX_BATCH_MESSAGES;
    for message in page.messages {
        let offset = message.queue_offset;
        let Some(due_ms) = delay::due_ms(&message) else {
            warn!(
                offset = offset.0,
                queue = queue_id.0,
                "scheduled message without a due time: dropped"
            );
            next = QueueOffset(offset.0 + 1);
            continue;
        };
        if due_ms > now {
            full = false;
            break;
        }
        if !messages.is_empty() && bytes + message.body.len() > MAX_BATCH_BYTES {
            full = true;
            break;
        }
        bytes += message.body.len();
        match delay::delivery(message, now) {
            Some(draft) => messages.push(DueMessage {
                due_ms,
                message: draft,
            }),
            None => warn!(
                offset = offset.0,
                queue = queue_id.0,
                "scheduled message without its real topic: dropped"
            ),
        }
        next = QueueOffset(offset.0 + 1);
    }
    if next == from {
        return Ok(Round::Idle);
    }
    let count = messages.len();
    let command = DeliverCommand {
        queue_id,
        from,
        next,
        messages,
    };
    match node.write(command).await {
        Ok(Ok(Delivered { delivered, skipped })) => {
            if skipped > 0 {
                info!(
                    skipped,
                    queue = queue_id.0,
                    "delayed messages dropped: their topic or queue is gone"
                );
            }
            debug!(delivered, queue = queue_id.0, "delayed messages delivered");
            Ok(if full { Round::Full } else { Round::Partial })
        }
        // Another delivery moved the offset first (a retry of ours, or an earlier
        // leader's): read again next round.
        Ok(Err(rejection)) => {
            debug!(?rejection, count, "delivery refused");
            Ok(Round::Idle)
        }
        Err(e) => Err(e.to_string()),
    }
}
