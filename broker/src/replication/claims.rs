//! Queue claims: which member of a consumer group the coordinator granted each
//! queue to, replicated so that a new coordinator (the next leader of the broker
//! group) knows every grant of the last one.
//!
//! The coordinator keeps its members in memory (`service::consumer::coordinator`),
//! rebuilt from heartbeats. Without this table a new leader knows nothing of the
//! queues members hold, so it granted nothing new for one `member_expiry` after it
//! took over (10 s by default). With it, a new leader grants at once every queue
//! nobody claims; a queue claimed by a member that has not yet reported to it waits
//! for that member's report or its expiry.
//!
//! A grant is recorded (committed) before the member is told, so the table is a
//! superset of what members may hold: releases are recorded lazily, and a stale
//! claim only makes the next coordinator wait for that queue.
//!
//! # Feature gate
//! The table is `None` until [`ClaimsChange::Enable`] is applied. The coordinator
//! records nothing before that, and a group state without it is written in the
//! previous format (see `GroupState::encode`), so a node of the previous build can
//! still read everything until the group enables claims — a downgrade stays
//! possible. A fresh group enables them at bootstrap; the leader proposes
//! `Enable` only when every voter speaks internal protocol 2 or later (see
//! `peer_protocol`).
//!
//! # Bounds
//! At most [`MAX_CLAIMS`] claims over all consumer groups: an update that would
//! pass it is refused whole, and the coordinator then grants nothing new.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Claims kept over every consumer group: the coordinator's own entry cap
/// (`MAX_COORDINATOR_ENTRIES`), so a coordinator that may keep a grant in memory
/// may also record it.
pub const MAX_CLAIMS: usize = broker_proto::api::MAX_COORDINATOR_ENTRIES;

/// A queue of a topic in one broker group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimedQueue {
    pub topic: String,
    /// The broker group serving the queue.
    pub group: String,
    pub queue_id: u32,
}

/// A change of the claims table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimsChange {
    /// Start keeping claims (from an empty table). Repeating it changes nothing.
    Enable,
    /// Grants and releases of one consumer group, applied whole or not at all.
    Update(ClaimsUpdate),
}

/// Grants and releases of one consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsUpdate {
    pub consumer_group: String,
    /// Queues granted to a member (whoever held them before).
    pub grant: Vec<(ClaimedQueue, String)>,
    /// Queues a member let go of (or that expired with it): dropped only if that
    /// member still holds the claim, so a release recorded after a newer grant to
    /// another member changes nothing.
    pub release: Vec<(ClaimedQueue, String)>,
}

/// Why an update was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClaimsRefusal {
    #[error("queue claims are not enabled in this broker group")]
    NotEnabled,
    #[error(
        "the claims table holds {kept} of at most {MAX_CLAIMS} claims; {needed} more do not fit"
    )]
    Full { kept: usize, needed: usize },
}

/// The replicated claims: consumer group → queue → member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimTable {
    groups: BTreeMap<String, BTreeMap<ClaimedQueue, String>>,
    /// Claims over every group (derived, kept in step).
    #[serde(skip)]
    count: usize,
}

impl ClaimTable {
    /// Recomputes what is derived after decoding.
    pub fn rebuild(&mut self) {
        self.count = self.groups.values().map(BTreeMap::len).sum();
    }

    /// Claims over every group.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The claims of one consumer group.
    pub fn of(&self, consumer_group: &str) -> Option<&BTreeMap<ClaimedQueue, String>> {
        self.groups.get(consumer_group)
    }

    /// Whether `update` would be applied (it is refused whole when it would pass
    /// [`MAX_CLAIMS`]).
    ///
    /// # Errors
    /// [`ClaimsRefusal::Full`].
    pub fn check(&self, update: &ClaimsUpdate) -> Result<(), ClaimsRefusal> {
        let current = self.groups.get(&update.consumer_group);
        // The update's queues as they would be afterwards (None: released).
        let mut after: BTreeMap<&ClaimedQueue, Option<&str>> = BTreeMap::new();
        for (queue, member) in &update.release {
            let holder = after
                .get(queue)
                .copied()
                .unwrap_or_else(|| current.and_then(|c| c.get(queue)).map(String::as_str));
            if holder == Some(member.as_str()) {
                after.insert(queue, None);
            }
        }
        for (queue, member) in &update.grant {
            after.insert(queue, Some(member));
        }
        let (mut added, mut removed) = (0usize, 0usize);
        for (queue, holder) in &after {
            let before = current.is_some_and(|c| c.contains_key(*queue));
            match (before, holder.is_some()) {
                (false, true) => added += 1,
                (true, false) => removed += 1,
                _ => {}
            }
        }
        let kept = self.count;
        if kept + added > MAX_CLAIMS + removed {
            return Err(ClaimsRefusal::Full {
                kept,
                needed: added - removed.min(added),
            });
        }
        Ok(())
    }

    /// Applies an update (releases first, then grants). Call [`ClaimTable::check`]
    /// first: apply assumes it passed.
    pub fn apply(&mut self, update: &ClaimsUpdate) {
        let group = self
            .groups
            .entry(update.consumer_group.clone())
            .or_default();
        for (queue, member) in &update.release {
            if group.get(queue) == Some(member) {
                group.remove(queue);
                self.count -= 1;
            }
        }
        for (queue, member) in &update.grant {
            if group.insert(queue.clone(), member.clone()).is_none() {
                self.count += 1;
            }
        }
        if group.is_empty() {
            self.groups.remove(&update.consumer_group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u32) -> ClaimedQueue {
        ClaimedQueue {
            topic: "t".into(),
            group: "broker-a".into(),
            queue_id: id,
        }
    }

    fn update(grant: &[(u32, &str)], release: &[(u32, &str)]) -> ClaimsUpdate {
        ClaimsUpdate {
            consumer_group: "g".into(),
            grant: grant.iter().map(|(i, m)| (q(*i), m.to_string())).collect(),
            release: release
                .iter()
                .map(|(i, m)| (q(*i), m.to_string()))
                .collect(),
        }
    }

    #[test]
    fn grants_replace_and_releases_need_the_holder() {
        let mut table = ClaimTable::default();
        table.apply(&update(&[(0, "a"), (1, "a")], &[]));
        assert_eq!(table.len(), 2);
        // A release by a member that no longer holds the claim changes nothing.
        table.apply(&update(&[(1, "b")], &[]));
        table.apply(&update(&[], &[(1, "a")]));
        assert_eq!(
            table
                .of("g")
                .expect("g has claims")
                .get(&q(1))
                .expect("present"),
            "b"
        );
        table.apply(&update(&[], &[(0, "a"), (1, "b")]));
        assert!(table.is_empty());
        assert!(table.of("g").is_none(), "an empty group is dropped");
    }

    #[test]
    fn the_count_survives_encoding() {
        let mut table = ClaimTable::default();
        table.apply(&update(&[(0, "a"), (1, "b"), (2, "c")], &[]));
        let bytes = bincode::serde::encode_to_vec(&table, bincode::config::standard())
            .expect("bincode round trip");
        let (mut back, _): (ClaimTable, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                .expect("present");
        back.rebuild();
        assert_eq!(back, table);
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn an_update_past_the_cap_is_refused() {
        let mut table = ClaimTable::default();
        let fill = ClaimsUpdate {
            consumer_group: "g".into(),
            grant: (0..MAX_CLAIMS as u32).map(|i| (q(i), "a".into())).collect(),
            release: Vec::new(),
        };
        table.check(&fill).expect("exactly the cap fits");
        table.apply(&fill);
        assert!(matches!(
            table.check(&update(&[(MAX_CLAIMS as u32, "b")], &[])),
            Err(ClaimsRefusal::Full { .. })
        ));
        // Moving a claim, or one released for one granted, still fits.
        table.check(&update(&[(0, "b")], &[])).expect("a move");
        table
            .check(&update(&[(MAX_CLAIMS as u32, "b")], &[(1, "a")]))
            .expect("one out, one in");
    }
}
