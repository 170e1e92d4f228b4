//! Topics of this node's group: creating or changing one (checked against the
//! queue and topic quotas, replicated, answered with the applied configuration)
//! and deleting one with its queues, offsets and files.

use crate::error::BrokerError;
use crate::replication::proposal::{DeleteTopic, UpsertTopic};
use crate::service::node::Node;
use crate::topic::TopicConfig;

/// What a request changes of a topic; `None` keeps the current value (or the
/// default for a new topic).
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicChange {
    pub read_queue_nums: Option<u32>,
    pub write_queue_nums: Option<u32>,
    pub perm: Option<u8>,
}

/// The configuration `topic` has after `change`, checked (on any node: nothing is
/// written).
///
/// # Errors
/// `Invalid` for counts or a permission out of range; `LimitReached` for more
/// queues than `limits.max_queues_per_topic`.
pub fn plan_upsert(
    node: &Node,
    topic: &str,
    change: TopicChange,
) -> Result<TopicConfig, BrokerError> {
    let current = node.shared.state().topics.get(topic).cloned();
    let base = current.unwrap_or_else(|| TopicConfig::with_defaults(topic));
    let config = TopicConfig {
        name: topic.to_string(),
        read_queue_nums: change.read_queue_nums.unwrap_or(base.read_queue_nums),
        write_queue_nums: change.write_queue_nums.unwrap_or(base.write_queue_nums),
        perm: change.perm.unwrap_or(base.perm),
    };
    config.validate().map_err(BrokerError::Invalid)?;
    node.topic_limits.check_queues(&config)?;
    Ok(config)
}

/// Stores `config` (this node leads its group) and answers it as applied.
///
/// # Errors
/// `LimitReached` when creating it would pass `limits.max_topics`; apply's
/// rejection; the write's errors (`NotLeader`, `WriteTimeout`, …).
pub async fn upsert(node: &Node, config: TopicConfig) -> Result<TopicConfig, BrokerError> {
    // Held until the creation is applied (`None` for an update), and released
    // before a NOT_LEADER answer is forwarded: other creations go on meanwhile.
    let _creation = node.topic_limits.admit(&node.shared, &config.name).await?;
    Ok(node.write(UpsertTopic(config)).await??)
}

/// Deletes `topic` with its queues, offsets and files (this node leads its group).
///
/// # Errors
/// `TopicNotFound` when it does not exist (also when another deletion won); the
/// write's errors.
pub async fn delete(node: &Node, topic: &str) -> Result<(), BrokerError> {
    node.topic(topic)?;
    if !node.write(DeleteTopic(topic.to_string())).await? {
        return Err(BrokerError::topic_not_found(topic));
    }
    Ok(())
}
