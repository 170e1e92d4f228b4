//! A consumer group's committed offsets in this node's group: committing one
//! (never past the queue's end; backwards only when forced), and the offset a
//! queue had at a time, from which a reset or a new consumer starts.

use crate::error::{BrokerError, QueueKind};
use crate::replication::command::OffsetCommit;
use crate::service::node::Node;
use crate::storage::{QueueId, QueueOffset};

/// `queue_id` of `topic` in this node's group, if the topic has it (as a read or
/// a write queue: offsets outlive a shrink of either count).
///
/// # Errors
/// `TopicNotFound`; `QueueNotFound` past the larger of the two counts.
pub fn queue(node: &Node, topic: &str, queue_id: u32) -> Result<QueueId, BrokerError> {
    let config = node.topic(topic)?;
    let queues = config.read_queue_nums.max(config.write_queue_nums);
    if queue_id >= queues {
        return Err(BrokerError::queue_not_found(
            topic,
            queue_id,
            QueueKind::Any,
            queues,
        ));
    }
    Ok(QueueId(queue_id))
}

/// The offset of the first message of the queue stored at or after
/// `timestamp_ms` (the queue's end when there is none).
///
/// # Errors
/// As [`queue`].
pub fn by_time(
    node: &Node,
    topic: &str,
    queue_id: u32,
    timestamp_ms: u64,
) -> Result<QueueOffset, BrokerError> {
    let queue = queue(node, topic, queue_id)?;
    Ok(node
        .shared
        .store
        .offset_by_timestamp(topic, queue, timestamp_ms))
}

/// The commit of `offset` for consumer `group` on the queue, checked against the
/// queue's end (on any node: nothing is written).
///
/// A replica's end may trail the group's (a consumer can pull from a replica
/// ahead of it): a leader applies what was committed before refusing, and a
/// follower leaves the check to the leader it forwards the commit to.
///
/// # Errors
/// As [`queue`]; `Conflict` past the queue's max offset — a well-formed request
/// the queue's state refuses: once the queue holds that many messages, the same
/// commit succeeds. The leader's catch-up errors (`NotLeader`, …).
pub async fn plan_commit(
    node: &Node,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
    force: bool,
) -> Result<OffsetCommit, BrokerError> {
    let queue = queue(node, topic, queue_id)?;
    let max = || {
        node.shared
            .store
            .queue_offsets(topic, queue)
            .map_or(0, |(_, max)| max.0)
    };
    if offset > max() && node.is_leader() {
        node.catch_up().await?;
        let max = max();
        if offset > max {
            return Err(BrokerError::Conflict(format!(
                "offset {offset} is beyond the queue's max offset {max}"
            )));
        }
    }
    Ok(OffsetCommit {
        group: group.to_string(),
        topic: topic.to_string(),
        queue_id: queue,
        offset: QueueOffset(offset),
        force,
    })
}

/// Stores `commit` (this node leads its group) and answers the group's offset
/// as stored: the committed one, or a later one already there unless forced.
///
/// # Errors
/// The write's errors (`NotLeader`, `WriteTimeout`, …).
pub async fn commit(node: &Node, commit: OffsetCommit) -> Result<QueueOffset, BrokerError> {
    node.write(commit).await
}
