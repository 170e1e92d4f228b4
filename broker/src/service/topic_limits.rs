//! Quotas on topics: how many a group holds and how many queues each may have
//! (`[limits]`). A topic costs a directory per queue on every replica, a line in
//! every route registration and, before this, could be created by anyone who could
//! send: 150 in 0.3 s.
//!
//! The leader enforces them before it proposes a creation — a `PUT` of a new topic,
//! a first send that auto-creates one, a first give-back that creates a group's
//! retry or dead-letter topic. Creations are serialized by one lock held until the
//! creating command is applied, so concurrent requests cannot overshoot the count
//! they each checked. Apply does not check again: the limit is per-node
//! configuration, and a replicated decision must not depend on it. The count can so
//! be overshot only by a creation whose permit was released before it was applied:
//! a request that timed out waiting for its commit (or whose client went away)
//! while the proposal still commits, or a leader change mid-creation — one topic
//! per such event, each rare.

use tokio::sync::{Mutex, MutexGuard};

use crate::config::LimitsSection;
use crate::error::BrokerError;
use crate::replication::state_machine::GroupShared;
use crate::topic::TopicConfig;

/// How late a creation refused by the topic quota is answered.
pub const REFUSAL_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// The topic quotas of one node, and the lock that serializes creations.
pub struct TopicLimits {
    limits: LimitsSection,
    creating: Mutex<()>,
}

/// Held by a request that creates a topic, until its command is applied.
pub type CreationPermit<'a> = MutexGuard<'a, ()>;

impl TopicLimits {
    pub fn new(limits: LimitsSection) -> Self {
        Self {
            limits,
            creating: Mutex::new(()),
        }
    }

    /// Refuses queue counts above `limits.max_queues_per_topic`.
    ///
    /// # Errors
    /// `LimitReached` naming the limit.
    pub fn check_queues(&self, config: &TopicConfig) -> Result<(), BrokerError> {
        let max = self.limits.max_queues_per_topic;
        let asked = config.read_queue_nums.max(config.write_queue_nums);
        if asked > max {
            return Err(BrokerError::LimitReached(format!(
                "topic {} asks for {asked} queues; limits.max_queues_per_topic is {max}",
                config.name
            )));
        }
        Ok(())
    }

    /// Admits the creation of `topic` if it does not exist yet: answers the permit
    /// to hold until the creating command is applied, or `None` if the topic exists
    /// (nothing is created, nothing to hold).
    ///
    /// # Errors
    /// `LimitReached` when the group already holds `limits.max_topics` topics.
    pub async fn admit(
        &self,
        shared: &GroupShared,
        topic: &str,
    ) -> Result<Option<CreationPermit<'_>>, BrokerError> {
        if shared.state().topics.contains_key(topic) {
            return Ok(None);
        }
        let permit = self.creating.lock().await;
        // Counted under the lock: every earlier creation is applied by now.
        let (exists, held) = {
            let state = shared.state();
            (state.topics.contains_key(topic), state.topics.len())
        };
        if exists {
            return Ok(None);
        }
        let max = self.limits.max_topics;
        if held >= max {
            drop(permit);
            // A client looping on a refused creation gets its answer late: it then
            // costs the node a few requests a second instead of thousands, and
            // waiting costs nothing (no lock is held).
            tokio::time::sleep(REFUSAL_DELAY).await;
            return Err(BrokerError::LimitReached(format!(
                "topic quota reached: this group holds {held} topics and limits.max_topics is {max}; delete a topic or raise the limit"
            )));
        }
        Ok(Some(permit))
    }
}
