//! Consumer-group membership and queue assignment (clustering mode).
//!
//! Every consumer group has one coordinator: the leader of the broker group picked
//! by hashing the consumer group's name over the live broker groups (any node
//! forwards a heartbeat there). Members are soft state, rebuilt from heartbeats: a
//! member that misses heartbeats for `member_expiry` is dropped.
//!
//! Assignment is RocketMQ's average allocation (`AllocateMessageQueueAveragely`)
//! over the sorted members and the sorted (broker group, queue) list of each topic.
//! On top of it, a queue changes hands only once its previous owner has let go:
//! members report the queues they still hold (with their committed offset), and a
//! queue another live member holds is not granted. The new owner gets the previous
//! owner's last reported offset as a hint, so it resumes where the other stopped
//! even if it reads offsets from a replica that lags. A coordinator that has just
//! taken over (new leader term) grants only what a member already holds until
//! every live member had time to report (one `member_expiry`), so two members never
//! hold a queue at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::{Assignment, HeartbeatRequest, HeartbeatResponse};

/// A queue of a topic in one broker group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueRef {
    pub topic: String,
    pub group: String,
    pub queue_id: u32,
}

struct Member {
    topics: BTreeSet<String>,
    /// Queues the member still holds, with the offset it last committed.
    held: BTreeMap<QueueRef, Option<u64>>,
    last_seen: Instant,
}

#[derive(Default)]
struct GroupMembers {
    members: BTreeMap<String, Member>,
    /// The last offset reported for each queue by whoever held it.
    handoff: HashMap<QueueRef, u64>,
}

struct Inner {
    /// The leader term the tables were built in: a new term starts them afresh.
    term: u64,
    since: Instant,
    groups: HashMap<String, GroupMembers>,
}

/// The member tables of every consumer group this node coordinates.
pub struct Coordinator {
    inner: Mutex<Inner>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                term: 0,
                since: Instant::now(),
                groups: HashMap::new(),
            }),
        }
    }
}

/// RocketMQ's `AllocateMessageQueueAveragely`: the slice of `queues` (sorted) that
/// the member at `index` of `members` (sorted) consumes.
pub fn allocate_averagely<T: Clone>(queues: &[T], members: usize, index: usize) -> Vec<T> {
    if members == 0 || index >= members || queues.is_empty() {
        return Vec::new();
    }
    let m = queues.len();
    let rem = m % members;
    let size = if m <= members {
        1
    } else if rem > 0 && index < rem {
        m / members + 1
    } else {
        m / members
    };
    let start = if rem > 0 && index < rem {
        index * size
    } else {
        index * size + rem
    };
    let range = size.min(m.saturating_sub(start));
    queues.iter().skip(start).take(range).cloned().collect()
}

impl Coordinator {
    /// Forgets the offsets holders reported for a consumer group's queues of
    /// `topic`. After a reset they would send the next holder past the reset
    /// offset (a hint is the highest offset ever reported, and a reset may move
    /// the group back).
    pub fn forget_hints(&self, consumer_group: &str, topic: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(table) = inner.groups.get_mut(consumer_group) {
            table.handoff.retain(|queue, _| queue.topic != topic);
        }
    }

    /// Records a heartbeat and answers the members and this member's queues.
    /// `queues_of` lists a topic's queues over every broker group serving it.
    pub fn heartbeat(
        &self,
        consumer_group: &str,
        term: u64,
        member_expiry: Duration,
        request: &HeartbeatRequest,
        queues_of: &dyn Fn(&str) -> Vec<QueueRef>,
    ) -> HeartbeatResponse {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.term != term {
            inner.term = term;
            inner.since = now;
            inner.groups.clear();
        }
        let settling = now.duration_since(inner.since) < member_expiry;
        let table = inner.groups.entry(consumer_group.to_string()).or_default();
        table
            .members
            .retain(|_, m| now.duration_since(m.last_seen) < member_expiry);
        let held: BTreeMap<QueueRef, Option<u64>> = request
            .owned
            .iter()
            .map(|q| {
                (
                    QueueRef {
                        topic: q.topic.clone(),
                        group: q.group.clone(),
                        queue_id: q.queue_id,
                    },
                    q.offset,
                )
            })
            .collect();
        for (queue, offset) in &held {
            if let Some(offset) = offset {
                let entry = table.handoff.entry(queue.clone()).or_insert(*offset);
                *entry = (*entry).max(*offset);
            }
        }
        table.members.insert(
            request.client_id.clone(),
            Member {
                topics: request.topics.iter().cloned().collect(),
                held: held.clone(),
                last_seen: now,
            },
        );
        let mut assignments = Vec::new();
        for topic in &request.topics {
            let mut queues = queues_of(topic);
            queues.sort();
            let subscribers: Vec<&String> = table
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(topic))
                .map(|(id, _)| id)
                .collect();
            let Some(index) = subscribers.iter().position(|id| **id == request.client_id) else {
                continue;
            };
            for queue in allocate_averagely(&queues, subscribers.len(), index) {
                let mine = held.contains_key(&queue);
                let held_by_other = table
                    .members
                    .iter()
                    .any(|(id, m)| *id != request.client_id && m.held.contains_key(&queue));
                if mine || (!held_by_other && !settling) {
                    assignments.push(Assignment {
                        offset: table.handoff.get(&queue).copied(),
                        topic: queue.topic,
                        group: queue.group,
                        queue_id: queue.queue_id,
                    });
                }
            }
        }
        // A grant holds the queue for this member from now on, not from its next
        // heartbeat: another member asking in between must not get it too. The
        // member's next report replaces the set (a lost answer releases it then).
        if let Some(member) = table.members.get_mut(&request.client_id) {
            for a in &assignments {
                let queue = QueueRef {
                    topic: a.topic.clone(),
                    group: a.group.clone(),
                    queue_id: a.queue_id,
                };
                member.held.entry(queue).or_insert(None);
            }
        }
        HeartbeatResponse {
            members: table.members.keys().cloned().collect(),
            assignments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OwnedQueue;

    #[test]
    fn average_allocation_matches_rocketmq() {
        let queues: Vec<u32> = (0..8).collect();
        let slices: Vec<Vec<u32>> = (0..3).map(|i| allocate_averagely(&queues, 3, i)).collect();
        assert_eq!(slices, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        assert_eq!(allocate_averagely(&queues[..2], 3, 2), Vec::<u32>::new());
        assert_eq!(allocate_averagely(&queues[..2], 3, 1), vec![1]);
        let all: Vec<u32> = (0..5)
            .flat_map(|i| allocate_averagely(&queues, 5, i))
            .collect();
        assert_eq!(all, queues);
    }

    fn queues(_: &str) -> Vec<QueueRef> {
        (0..4)
            .map(|queue_id| QueueRef {
                topic: "t".into(),
                group: "broker-a".into(),
                queue_id,
            })
            .collect()
    }

    fn beat(id: &str, owned: &[(u32, u64)]) -> HeartbeatRequest {
        HeartbeatRequest {
            client_id: id.into(),
            topics: vec!["t".into()],
            owned: owned
                .iter()
                .map(|(q, offset)| OwnedQueue {
                    topic: "t".into(),
                    group: "broker-a".into(),
                    queue_id: *q,
                    offset: Some(*offset),
                })
                .collect(),
        }
    }

    fn ids(response: &HeartbeatResponse) -> Vec<u32> {
        response.assignments.iter().map(|a| a.queue_id).collect()
    }

    #[test]
    fn a_queue_moves_only_after_its_owner_lets_go() {
        let c = Coordinator::default();
        let expiry_real = Duration::from_secs(60);
        // Past the settling period of term 1.
        {
            let mut inner = c.inner.lock().expect("lock");
            inner.term = 1;
            inner.since = Instant::now() - Duration::from_secs(120);
        }
        let a = c.heartbeat("g", 1, expiry_real, &beat("a", &[]), &queues);
        assert_eq!(ids(&a), vec![0, 1, 2, 3]);
        // b joins while a holds everything: b gets nothing yet.
        let b = c.heartbeat("g", 1, expiry_real, &beat("b", &[]), &queues);
        assert_eq!(ids(&b), Vec::<u32>::new());
        // a is told to keep 0 and 1; it lets go of 2 and 3 at offsets 7 and 9.
        let a = c.heartbeat(
            "g",
            1,
            expiry_real,
            &beat("a", &[(0, 1), (1, 2), (2, 7), (3, 9)]),
            &queues,
        );
        assert_eq!(ids(&a), vec![0, 1]);
        let a = c.heartbeat("g", 1, expiry_real, &beat("a", &[(0, 1), (1, 2)]), &queues);
        assert_eq!(ids(&a), vec![0, 1]);
        let b = c.heartbeat("g", 1, expiry_real, &beat("b", &[]), &queues);
        assert_eq!(ids(&b), vec![2, 3]);
        let hints: Vec<Option<u64>> = b.assignments.iter().map(|x| x.offset).collect();
        assert_eq!(
            hints,
            vec![Some(7), Some(9)],
            "the new owner resumes at the handed-off offsets"
        );
        assert_eq!(b.members, vec!["a", "b"]);
    }

    #[test]
    fn a_new_coordinator_grants_nothing_new_while_members_report() {
        let c = Coordinator::default();
        let expiry = Duration::from_secs(60);
        // Term 3 just began: b holds queue 3 from before; a asks first.
        let a = c.heartbeat("g", 3, expiry, &beat("a", &[]), &queues);
        assert!(a.assignments.is_empty(), "{:?}", ids(&a));
        let b = c.heartbeat("g", 3, expiry, &beat("b", &[(3, 5)]), &queues);
        assert_eq!(ids(&b), vec![3], "a member keeps what it holds");
    }
}
