//! Tombstones of dropped topics: for each deleted topic, the CommitLog offset below
//! which its records belong to the deleted incarnation.
//!
//! A topic's records stay in the CommitLog until retention deletes their files, but
//! after `DELETE` nothing may answer them: no pull (the ConsumeQueues are gone), no
//! query by key or id, no rebuild of a ConsumeQueue after a crash. A tombstone says
//! "records of `topic` below `offset` are gone"; it is set when the topic is dropped
//! (and again by the drop record when a recovery or a snapshot install dispatches
//! it), kept in the checkpoint, and forgotten once retention has deleted everything
//! below it. A topic created again under the same name writes above its tombstone, so
//! its new records are unaffected.

use std::collections::HashMap;
use std::sync::RwLock;

use super::types::CommitLogOffset;

/// The tombstones of one store.
#[derive(Debug, Default)]
pub struct Tombstones {
    below: RwLock<HashMap<String, CommitLogOffset>>,
}

impl Tombstones {
    /// Tombstones as a checkpoint kept them.
    pub fn new(entries: impl IntoIterator<Item = (String, CommitLogOffset)>) -> Self {
        let tombstones = Self::default();
        for (topic, offset) in entries {
            tombstones.drop_before(&topic, offset);
        }
        tombstones
    }

    /// Hides every record of `topic` below `offset` (a tombstone only moves up).
    pub fn drop_before(&self, topic: &str, offset: CommitLogOffset) {
        let mut below = self.below.write().unwrap_or_else(|p| p.into_inner());
        let entry = below.entry(topic.to_string()).or_default();
        *entry = (*entry).max(offset);
    }

    /// Whether the record of `topic` at `offset` belongs to a dropped incarnation.
    pub fn hides(&self, topic: &str, offset: CommitLogOffset) -> bool {
        let below = self.below.read().unwrap_or_else(|p| p.into_inner());
        below
            .get(topic)
            .is_some_and(|tombstone| offset < *tombstone)
    }

    /// Forgets tombstones at or below `commit_log_min`: nothing they hide is left.
    pub fn prune(&self, commit_log_min: CommitLogOffset) {
        let mut below = self.below.write().unwrap_or_else(|p| p.into_inner());
        below.retain(|_, tombstone| *tombstone > commit_log_min);
    }

    /// Every tombstone, sorted by topic (for the checkpoint).
    pub fn entries(&self) -> Vec<(String, CommitLogOffset)> {
        let below = self.below.read().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<_> = below.iter().map(|(t, o)| (t.clone(), *o)).collect();
        entries.sort();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_only_older_records_and_only_moves_up() {
        let tombstones = Tombstones::new([("t".to_string(), CommitLogOffset(100))]);
        assert!(tombstones.hides("t", CommitLogOffset(99)));
        assert!(
            !tombstones.hides("t", CommitLogOffset(100)),
            "the new incarnation"
        );
        assert!(!tombstones.hides("other", CommitLogOffset(0)));
        tombstones.drop_before("t", CommitLogOffset(50));
        assert!(
            tombstones.hides("t", CommitLogOffset(99)),
            "never moves down"
        );
        tombstones.prune(CommitLogOffset(99));
        assert_eq!(
            tombstones.entries(),
            vec![("t".to_string(), CommitLogOffset(100))]
        );
        tombstones.prune(CommitLogOffset(100));
        assert!(tombstones.entries().is_empty(), "retention passed it");
    }
}
