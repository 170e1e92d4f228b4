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
//! even if it reads offsets from a replica that lags.
//!
//! # A new coordinator
//! A coordinator that has just taken over (new leader term) has not heard from any
//! member. With claims enabled in its broker group (`replication::claims`) every
//! grant was committed before the member was told, so the replicated claims name
//! every queue a member may hold: the new coordinator grants at once any queue
//! nobody claims, and a queue claimed by a member that has not reported to it yet
//! only once that member reports or one `member_expiry` has passed (the member
//! drops its queues by then). Without claims it grants only what a member already
//! holds until every live member had time to report (one `member_expiry`). Either
//! way two members never hold a queue at once.
//!
//! # Bounds
//! A heartbeat costs work in proportion to what it names, never to all route data:
//! the caller looks up only the topics it subscribes to or holds ([`Serving`]), and
//! a held queue that no broker group serves is ignored (it could only be a claim
//! on nothing). The tables are capped (see `crate::api`): at most
//! [`MAX_GROUP_MEMBERS`] members per group, [`MAX_CONSUMER_GROUPS`] groups (groups
//! without live members are forgotten first) and [`MAX_COORDINATOR_ENTRIES`]
//! entries in all — one per group, member, subscribed topic, held queue and
//! hand-off hint. A heartbeat that would pass a cap is refused whole
//! ([`CoordinatorError`]) and changes nothing; the member's previous report stays
//! until it expires. At most [`MAX_OWNED_QUEUES`] queues are assigned to one member;
//! the rest wait for more members.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::replication::claims::{ClaimedQueue, ClaimsUpdate};

use crate::api::{
    Assignment, HeartbeatRequest, HeartbeatResponse, MAX_CONSUMER_GROUPS, MAX_COORDINATOR_ENTRIES,
    MAX_GROUP_MEMBERS, MAX_OWNED_QUEUES,
};

/// A queue of a topic in one broker group: the claims table's key, so a grant
/// is recorded as the coordinator keeps it.
pub use crate::replication::claims::ClaimedQueue as QueueRef;

/// The replicated claims of the consumer group a heartbeat is for.
#[derive(Clone, Copy, Debug)]
pub enum Claims<'a> {
    /// The broker group does not keep claims (not enabled yet): a new coordinator
    /// waits one `member_expiry` before granting anything new.
    Off,
    /// Queue → member, every grant of this and earlier terms (and releases not
    /// yet recorded).
    On(Option<&'a BTreeMap<ClaimedQueue, String>>),
}

/// A heartbeat's answer, and the claims to record before it may be given.
#[derive(Debug)]
pub struct Beat {
    pub response: HeartbeatResponse,
    /// Grants this answer makes and releases seen (claims on only): commit them,
    /// then answer; if they cannot be committed, answer an error instead.
    pub record: Option<ClaimsUpdate>,
}

/// The most releases one heartbeat records (more wait for the next): bounds the
/// entry a heartbeat proposes.
const MAX_RELEASES_PER_BEAT: usize = MAX_OWNED_QUEUES;

/// For each topic a heartbeat names (subscribed or held): the broker groups
/// serving it readably, sorted by name, with their read queue counts.
pub type Serving = BTreeMap<String, Vec<(String, u32)>>;

/// Why a heartbeat was refused. Nothing of it was kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error(
        "consumer group `{group}` has {MAX_GROUP_MEMBERS} members, the most one group may have; `{client_id}` can join once a member leaves or expires"
    )]
    GroupFull { group: String, client_id: String },
    #[error(
        "this coordinator keeps {MAX_CONSUMER_GROUPS} consumer groups with live members, the most it may; group `{group}` can start once one of them has none"
    )]
    TooManyGroups { group: String },
    #[error(
        "this coordinator keeps {kept} of at most {MAX_COORDINATOR_ENTRIES} entries (groups, members, topics, held queues, hints) and this heartbeat needs {needed} more; retry once members expire"
    )]
    Full { kept: usize, needed: usize },
}

struct Member {
    topics: BTreeSet<String>,
    /// Queues the member still holds, with the offset it last committed.
    held: BTreeMap<QueueRef, Option<u64>>,
    last_seen: Instant,
}

impl Member {
    /// Entries it counts for in [`MAX_COORDINATOR_ENTRIES`].
    fn cost(&self) -> usize {
        1 + self.topics.len() + self.held.len()
    }
}

#[derive(Default)]
struct GroupMembers {
    members: BTreeMap<String, Member>,
    /// The last offset reported for each queue by whoever held it.
    handoff: HashMap<QueueRef, u64>,
    /// Per topic, the members subscribing to it (an index of `members`, so a
    /// heartbeat does not scan every member for every topic it names).
    subscribers: HashMap<String, BTreeSet<String>>,
}

impl GroupMembers {
    /// Entries the group counts for besides its members.
    fn cost(&self) -> usize {
        1 + self.handoff.len()
    }

    /// Drops members that missed heartbeats; answers the entries freed.
    fn expire(&mut self, now: Instant, expiry: Duration) -> usize {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) >= expiry)
            .map(|(id, _)| id.clone())
            .collect();
        expired.iter().map(|id| self.remove(id)).sum()
    }

    /// Removes a member; answers the entries freed.
    fn remove(&mut self, id: &str) -> usize {
        let Some(member) = self.members.remove(id) else {
            return 0;
        };
        for topic in &member.topics {
            if let Some(ids) = self.subscribers.get_mut(topic) {
                ids.remove(id);
                if ids.is_empty() {
                    self.subscribers.remove(topic);
                }
            }
        }
        member.cost()
    }

    /// Adds or replaces a member.
    fn insert(&mut self, id: &str, member: Member) {
        self.remove(id);
        for topic in &member.topics {
            self.subscribers
                .entry(topic.clone())
                .or_default()
                .insert(id.to_string());
        }
        self.members.insert(id.to_string(), member);
    }
}

struct Inner {
    /// The leader term the tables were built in: a new term starts them afresh.
    term: u64,
    since: Instant,
    groups: HashMap<String, GroupMembers>,
    /// Entries kept over every group (see [`MAX_COORDINATOR_ENTRIES`]).
    entries: usize,
}

impl Inner {
    /// Drops expired members everywhere, and groups left without members (but
    /// not `keep`, the group being served).
    fn sweep(&mut self, now: Instant, expiry: Duration, keep: &str) {
        let mut freed = 0;
        self.groups.retain(|name, table| {
            freed += table.expire(now, expiry);
            let stays = name == keep || !table.members.is_empty();
            if !stays {
                freed += table.cost();
            }
            stays
        });
        self.entries -= freed;
    }
}

/// The member tables of every consumer group this node coordinates.
pub struct Coordinator {
    inner: Mutex<Inner>,
    /// See [`Coordinator::synced_term`].
    synced: AtomicU64,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                term: 0,
                since: Instant::now(),
                groups: HashMap::new(),
                entries: 0,
            }),
            synced: AtomicU64::new(0),
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

/// Every queue of `topic`, sorted (groups come sorted, queue ids ascending).
fn queues_of(serving: &Serving, topic: &str) -> Vec<QueueRef> {
    serving
        .get(topic)
        .into_iter()
        .flatten()
        .flat_map(|(group, count)| {
            (0..*count).map(move |queue_id| QueueRef {
                topic: topic.to_string(),
                group: group.clone(),
                queue_id,
            })
        })
        .collect()
}

/// Whether a broker group serves the queue.
fn exists(serving: &Serving, queue: &QueueRef) -> bool {
    serving.get(&queue.topic).is_some_and(|groups| {
        groups
            .iter()
            .any(|(group, count)| *group == queue.group && queue.queue_id < *count)
    })
}

impl Coordinator {
    /// Forgets the offsets holders reported for a consumer group's queues of
    /// `topic`. After a reset they would send the next holder past the reset
    /// offset (a hint is the highest offset ever reported, and a reset may move
    /// the group back).
    pub fn forget_hints(&self, consumer_group: &str, topic: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if let Some(table) = inner.groups.get_mut(consumer_group) {
            let before = table.handoff.len();
            table.handoff.retain(|queue, _| queue.topic != topic);
            inner.entries -= before - table.handoff.len();
        }
    }

    /// Records a heartbeat and answers the members and this member's queues,
    /// with the claims to commit before the answer is given. `serving` covers
    /// every topic the request subscribes to or holds; `claims` are the consumer
    /// group's replicated claims, read after this leader applied everything
    /// committed before its term (see [`Coordinator::synced_term`]).
    ///
    /// # Errors
    /// A cap of the tables would be passed; nothing was changed.
    pub fn heartbeat(
        &self,
        consumer_group: &str,
        term: u64,
        member_expiry: Duration,
        request: &HeartbeatRequest,
        serving: &Serving,
        claims: Claims<'_>,
    ) -> Result<Beat, CoordinatorError> {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if inner.term != term {
            inner.term = term;
            inner.since = now;
            inner.groups.clear();
            inner.entries = 0;
        }
        let settling = now.duration_since(inner.since) < member_expiry;
        if let Some(table) = inner.groups.get_mut(consumer_group) {
            inner.entries -= table.expire(now, member_expiry);
        }
        let known_group = inner.groups.contains_key(consumer_group);
        if !known_group && inner.groups.len() >= MAX_CONSUMER_GROUPS {
            inner.sweep(now, member_expiry, consumer_group);
            if inner.groups.len() >= MAX_CONSUMER_GROUPS {
                return Err(CoordinatorError::TooManyGroups {
                    group: consumer_group.to_string(),
                });
            }
        }
        let empty = GroupMembers::default();
        let table = inner.groups.get(consumer_group).unwrap_or(&empty);
        let previous = table.members.get(&request.client_id);
        if previous.is_none() && table.members.len() >= MAX_GROUP_MEMBERS {
            return Err(CoordinatorError::GroupFull {
                group: consumer_group.to_string(),
                client_id: request.client_id.clone(),
            });
        }

        let topics: BTreeSet<String> = request.topics.iter().cloned().collect();
        // What the member reports holding, of the queues that exist.
        let mut held: BTreeMap<QueueRef, Option<u64>> = BTreeMap::new();
        for q in &request.owned {
            let queue = QueueRef {
                topic: q.topic.clone(),
                group: q.group.clone(),
                queue_id: q.queue_id,
            };
            if exists(serving, &queue) {
                let offset = held.entry(queue).or_insert(q.offset);
                *offset = (*offset).max(q.offset);
            }
        }
        // Queues of these topics other members hold.
        let mut held_by_others: HashSet<QueueRef> = table
            .members
            .iter()
            .filter(|(id, _)| **id != request.client_id)
            .flat_map(|(_, m)| m.held.keys())
            .filter(|queue| topics.contains(&queue.topic))
            .cloned()
            .collect();
        // With claims, a new coordinator need not wait: only a queue claimed by a
        // member that has not reported yet waits for it (or its expiry). A member
        // that reported speaks for itself through `held`.
        let recorded = match claims {
            Claims::Off => None,
            Claims::On(recorded) => Some(recorded.unwrap_or(&EMPTY_CLAIMS)),
        };
        if let Some(recorded) = recorded {
            if settling {
                held_by_others.extend(
                    recorded
                        .iter()
                        .filter(|(queue, member)| {
                            **member != request.client_id
                                && !table.members.contains_key(*member)
                                && topics.contains(&queue.topic)
                        })
                        .map(|(queue, _)| queue.clone()),
                );
            }
        }
        // Without claims, nothing new until every live member had time to report.
        let wait_for_reports = settling && recorded.is_none();
        let mut assignments = Vec::new();
        'topics: for topic in &topics {
            let queues = queues_of(serving, topic);
            // This member's place among the topic's sorted subscribers, itself
            // included whether or not it subscribed before.
            let (others, index) = match table.subscribers.get(topic) {
                Some(ids) => (
                    ids.len() - usize::from(ids.contains(&request.client_id)),
                    ids.range::<String, _>(..&request.client_id).count(),
                ),
                None => (0, 0),
            };
            for queue in allocate_averagely(&queues, others + 1, index) {
                if assignments.len() == MAX_OWNED_QUEUES {
                    break 'topics;
                }
                let mine = held.contains_key(&queue);
                if mine || (!held_by_others.contains(&queue) && !wait_for_reports) {
                    assignments.push(Assignment {
                        offset: table.handoff.get(&queue).copied(),
                        topic: queue.topic,
                        group: queue.group,
                        queue_id: queue.queue_id,
                    });
                }
            }
        }
        let record = recorded.map(|recorded| {
            claims_to_record(
                consumer_group,
                &request.client_id,
                recorded,
                &assignments,
                &held,
                |member| table.members.contains_key(member),
                settling,
            )
        });
        // A grant holds the queue for this member from now on, not from its next
        // heartbeat: another member asking in between must not get it too. The
        // member's next report replaces the set (a lost answer releases it then).
        let mut holds = held.clone();
        for a in &assignments {
            let queue = QueueRef {
                topic: a.topic.clone(),
                group: a.group.clone(),
                queue_id: a.queue_id,
            };
            holds.entry(queue).or_insert(None);
        }
        let member = Member {
            topics,
            held: holds,
            last_seen: now,
        };
        let new_hints = held
            .iter()
            .filter(|(queue, offset)| offset.is_some() && !table.handoff.contains_key(*queue))
            .count();
        let freed = previous.map_or(0, Member::cost);
        let needed = member.cost() + new_hints + if known_group { 0 } else { empty.cost() };
        if inner.entries - freed + needed > MAX_COORDINATOR_ENTRIES {
            inner.sweep(now, member_expiry, consumer_group);
            if inner.entries - freed + needed > MAX_COORDINATOR_ENTRIES {
                return Err(CoordinatorError::Full {
                    kept: inner.entries,
                    needed: needed.saturating_sub(freed),
                });
            }
        }

        inner.entries = inner.entries - freed + needed;
        let table = inner.groups.entry(consumer_group.to_string()).or_default();
        for (queue, offset) in &held {
            if let Some(offset) = offset {
                let entry = table.handoff.entry(queue.clone()).or_insert(*offset);
                *entry = (*entry).max(*offset);
            }
        }
        table.insert(&request.client_id, member);
        Ok(Beat {
            response: HeartbeatResponse {
                members: table.members.keys().cloned().collect(),
                assignments,
            },
            record: record.filter(|u| !u.grant.is_empty() || !u.release.is_empty()),
        })
    }

    /// The term whose predecessors' claims this coordinator has read: a new
    /// leader must apply everything committed before its term (a read index)
    /// before it reads claims, then call [`Coordinator::mark_synced`].
    pub fn synced_term(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self, term: u64) {
        self.synced.fetch_max(term, Ordering::AcqRel);
    }
}

static EMPTY_CLAIMS: BTreeMap<ClaimedQueue, String> = BTreeMap::new();

/// What to record for one heartbeat: the queues granted to `member` that the
/// claims do not give it yet; its claims on queues it neither holds nor gets
/// (it let go); and, once the term settled (`settling` false: one
/// `member_expiry` since it began), claims of members that are gone.
fn claims_to_record(
    consumer_group: &str,
    member: &str,
    recorded: &BTreeMap<ClaimedQueue, String>,
    assignments: &[Assignment],
    held: &BTreeMap<QueueRef, Option<u64>>,
    is_live: impl Fn(&str) -> bool,
    settling: bool,
) -> ClaimsUpdate {
    let mut update = ClaimsUpdate {
        consumer_group: consumer_group.to_string(),
        ..ClaimsUpdate::default()
    };
    let mut kept: HashSet<ClaimedQueue> = HashSet::new();
    for a in assignments {
        let queue = ClaimedQueue {
            topic: a.topic.clone(),
            group: a.group.clone(),
            queue_id: a.queue_id,
        };
        if recorded.get(&queue).map(String::as_str) != Some(member) {
            update.grant.push((queue.clone(), member.to_string()));
        }
        kept.insert(queue);
    }
    kept.extend(held.keys().cloned());
    for (queue, holder) in recorded {
        if update.release.len() == MAX_RELEASES_PER_BEAT {
            break;
        }
        let let_go = holder == member && !kept.contains(queue);
        let gone = !settling && holder != member && !is_live(holder);
        if let_go || gone {
            update.release.push((queue.clone(), holder.clone()));
        }
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OwnedQueue;
    use crate::replication::claims::ClaimedQueue;

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

    /// Topic `t` with 4 queues in broker-a.
    fn serving() -> Serving {
        Serving::from([("t".to_string(), vec![("broker-a".to_string(), 4)])])
    }

    /// A heartbeat within the caps.
    fn hb(
        c: &Coordinator,
        term: u64,
        expiry: Duration,
        request: &HeartbeatRequest,
    ) -> HeartbeatResponse {
        c.heartbeat("g", term, expiry, request, &serving(), Claims::Off)
            .expect("within the caps")
            .response
    }

    /// The entries counted from scratch (the running count must match it).
    fn recount(c: &Coordinator) -> usize {
        let inner = c.inner.lock().expect("lock");
        inner
            .groups
            .values()
            .map(|t| t.cost() + t.members.values().map(Member::cost).sum::<usize>())
            .sum()
    }

    fn entries(c: &Coordinator) -> usize {
        c.inner.lock().expect("lock").entries
    }

    /// Past the settling period of `term`.
    fn settled(c: &Coordinator, term: u64) {
        let mut inner = c.inner.lock().expect("lock");
        inner.term = term;
        inner.since = Instant::now() - Duration::from_secs(120);
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
        settled(&c, 1);
        let a = hb(&c, 1, expiry_real, &beat("a", &[]));
        assert_eq!(ids(&a), vec![0, 1, 2, 3]);
        // b joins while a holds everything: b gets nothing yet.
        let b = hb(&c, 1, expiry_real, &beat("b", &[]));
        assert_eq!(ids(&b), Vec::<u32>::new());
        // a is told to keep 0 and 1; it lets go of 2 and 3 at offsets 7 and 9.
        let a = hb(
            &c,
            1,
            expiry_real,
            &beat("a", &[(0, 1), (1, 2), (2, 7), (3, 9)]),
        );
        assert_eq!(ids(&a), vec![0, 1]);
        let a = hb(&c, 1, expiry_real, &beat("a", &[(0, 1), (1, 2)]));
        assert_eq!(ids(&a), vec![0, 1]);
        let b = hb(&c, 1, expiry_real, &beat("b", &[]));
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
        let a = hb(&c, 3, expiry, &beat("a", &[]));
        assert!(a.assignments.is_empty(), "{:?}", ids(&a));
        let b = hb(&c, 3, expiry, &beat("b", &[(3, 5)]));
        assert_eq!(ids(&b), vec![3], "a member keeps what it holds");
    }

    /// A hostile member reporting queues that exist nowhere (the finding: 50k
    /// per heartbeat) leaves nothing behind: no claim, no hint, no entry.
    #[test]
    fn held_queues_nobody_serves_are_ignored() {
        let c = Coordinator::default();
        settled(&c, 1);
        let mut request = beat("a", &[(0, 5)]);
        for queue_id in 100..4000 {
            request.owned.push(OwnedQueue {
                topic: "t".into(),
                group: "broker-a".into(),
                queue_id,
                offset: Some(9),
            });
            request.owned.push(OwnedQueue {
                topic: format!("ghost-{queue_id}"),
                group: "nowhere".into(),
                queue_id: 0,
                offset: Some(9),
            });
        }
        let a = hb(&c, 1, Duration::from_secs(60), &request);
        assert_eq!(ids(&a), vec![0, 1, 2, 3]);
        // group + member + topic + 4 held + 1 hint (queue 0)
        assert_eq!(entries(&c), 1 + 1 + 1 + 4 + 1);
        assert_eq!(entries(&c), recount(&c));
    }

    /// The running count follows joins, reports, hints, forgotten hints and
    /// expiry; a member that stops beating frees its entries.
    #[test]
    fn the_entry_count_follows_every_change() {
        let c = Coordinator::default();
        settled(&c, 1);
        let expiry = Duration::from_millis(200);
        hb(&c, 1, expiry, &beat("a", &[(0, 1), (1, 2)]));
        hb(&c, 1, expiry, &beat("b", &[]));
        hb(&c, 1, expiry, &beat("a", &[(0, 3)]));
        assert_eq!(entries(&c), recount(&c));
        c.forget_hints("g", "t");
        assert_eq!(entries(&c), recount(&c));
        std::thread::sleep(expiry + Duration::from_millis(50));
        let b = hb(&c, 1, expiry, &beat("b", &[]));
        assert_eq!(b.members, vec!["b"], "a expired");
        assert_eq!(entries(&c), recount(&c));
        // group, b, b's topic and the four queues b now holds
        assert_eq!(entries(&c), 1 + 1 + 1 + 4);
    }

    /// Past [`MAX_COORDINATOR_ENTRIES`], a heartbeat is refused and changes
    /// nothing; members already in keep beating.
    #[test]
    fn the_coordinator_refuses_heartbeats_past_its_entry_budget() {
        let c = Coordinator::default();
        settled(&c, 1);
        let expiry = Duration::from_secs(60);
        let topics: Vec<String> = (0..crate::api::MAX_HEARTBEAT_TOPICS)
            .map(|i| format!("topic-{i}"))
            .collect();
        let wide = |id: &str| HeartbeatRequest {
            client_id: id.into(),
            topics: topics.clone(),
            owned: Vec::new(),
        };
        let mut refused = None;
        for i in 0..MAX_GROUP_MEMBERS {
            match c.heartbeat(
                "g",
                1,
                expiry,
                &wide(&format!("m-{i}")),
                &serving(),
                Claims::Off,
            ) {
                Ok(_) => {}
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (at, error) = refused.expect("the budget runs out before the member cap");
        assert!(matches!(error, CoordinatorError::Full { .. }), "{error}");
        assert!(error
            .to_string()
            .contains(&MAX_COORDINATOR_ENTRIES.to_string()));
        assert!(entries(&c) <= MAX_COORDINATOR_ENTRIES);
        assert_eq!(entries(&c), recount(&c));
        let before = entries(&c);
        assert!(c
            .heartbeat(
                "g",
                1,
                expiry,
                &wide(&format!("m-{at}")),
                &serving(),
                Claims::Off
            )
            .is_err());
        assert_eq!(entries(&c), before, "a refused heartbeat changes nothing");
        hb(&c, 1, expiry, &wide("m-0"));
        assert_eq!(entries(&c), before, "a member already in keeps beating");
    }

    /// A lone member of a topic with more queues than one member may hold gets
    /// [`MAX_OWNED_QUEUES`] of them.
    #[test]
    fn one_member_is_assigned_at_most_the_owned_cap() {
        let c = Coordinator::default();
        settled(&c, 1);
        let wide = Serving::from([(
            "t".to_string(),
            (0..5).map(|g| (format!("broker-{g}"), 1024)).collect(),
        )]);
        let a = c
            .heartbeat(
                "g",
                1,
                Duration::from_secs(60),
                &beat("a", &[]),
                &wide,
                Claims::Off,
            )
            .expect("within the caps")
            .response;
        assert_eq!(a.assignments.len(), MAX_OWNED_QUEUES);
    }

    /// Claims as apply would keep them: each beat's record applied in turn.
    struct Recorded(crate::replication::claims::ClaimTable);

    impl Recorded {
        fn beat(
            &mut self,
            c: &Coordinator,
            term: u64,
            expiry: Duration,
            request: &HeartbeatRequest,
        ) -> HeartbeatResponse {
            let beat = c
                .heartbeat(
                    "g",
                    term,
                    expiry,
                    request,
                    &serving(),
                    Claims::On(self.0.of("g")),
                )
                .expect("within the caps");
            if let Some(update) = &beat.record {
                self.0.check(update).expect("fits");
                self.0.apply(update);
            }
            // Every queue granted is claimed by its member before the answer.
            for a in &beat.response.assignments {
                let queue = ClaimedQueue {
                    topic: a.topic.clone(),
                    group: a.group.clone(),
                    queue_id: a.queue_id,
                };
                assert_eq!(
                    self.0.of("g").and_then(|c| c.get(&queue)),
                    Some(&request.client_id),
                    "queue {} answered before it was recorded",
                    a.queue_id
                );
            }
            beat.response
        }

        fn holders(&self) -> Vec<(u32, String)> {
            self.0
                .of("g")
                .into_iter()
                .flatten()
                .map(|(q, m)| (q.queue_id, m.clone()))
                .collect()
        }
    }

    /// The acceptance case: a new coordinator (term 2) that inherits the claims of
    /// three members grants a fourth member its share as soon as the holders
    /// report letting go — not one `member_expiry` later — and no queue is ever
    /// held by two members.
    #[test]
    fn a_new_coordinator_with_claims_grants_at_once_and_never_twice() {
        let expiry = Duration::from_secs(60);
        let eight = Serving::from([("t".to_string(), vec![("broker-a".to_string(), 8)])]);
        let mut recorded = Recorded(Default::default());
        // Members as the client runs them: each reports what it holds and then
        // holds what it was answered.
        let mut holding: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let round = |c: &Coordinator,
                     term: u64,
                     recorded: &mut Recorded,
                     holding: &mut BTreeMap<String, Vec<u32>>,
                     members: &[&str]| {
            for id in members {
                let held: Vec<(u32, u64)> = holding
                    .get(*id)
                    .into_iter()
                    .flatten()
                    .map(|q| (*q, 1))
                    .collect();
                let beat = c
                    .heartbeat("g", term, expiry, &beat(id, &held), &eight, {
                        Claims::On(recorded.0.of("g"))
                    })
                    .expect("within the caps");
                if let Some(update) = &beat.record {
                    recorded.0.apply(update);
                }
                holding.insert(id.to_string(), ids(&beat.response));
                let mut all: Vec<u32> = holding.values().flatten().copied().collect();
                let len = all.len();
                all.sort_unstable();
                all.dedup();
                assert_eq!(all.len(), len, "a queue held twice: {holding:?}");
            }
        };
        // Term 1: a, b, c come to share the 8 queues 3/3/2.
        let old = Coordinator::default();
        settled(&old, 1);
        for _ in 0..4 {
            round(&old, 1, &mut recorded, &mut holding, &["a", "b", "c"]);
        }
        let shares: Vec<usize> = holding.values().map(Vec::len).collect();
        assert_eq!(shares, vec![3, 3, 2], "{holding:?}");
        assert_eq!(recorded.holders().len(), 8);

        // Term 2, a new coordinator: d joins first, before anyone reports; every
        // queue is claimed by a member that has not reported yet.
        let new = Coordinator::default();
        round(&new, 2, &mut recorded, &mut holding, &["d"]);
        assert!(holding["d"].is_empty(), "{holding:?}");
        // Within three heartbeat rounds (each holder lets go once told, the next
        // owner asks again) everyone has its share.
        let mut rounds = 0;
        while holding.values().map(Vec::len).collect::<Vec<_>>() != vec![2, 2, 2, 2] {
            rounds += 1;
            assert!(rounds <= 3, "after 3 rounds: {holding:?}");
            round(&new, 2, &mut recorded, &mut holding, &["a", "b", "c", "d"]);
        }
        // One more round: the claims follow the holdings exactly.
        round(&new, 2, &mut recorded, &mut holding, &["a", "b", "c", "d"]);
        let mut claimed = recorded.holders();
        claimed.sort();
        let mut held: Vec<(u32, String)> = holding
            .iter()
            .flat_map(|(m, qs)| qs.iter().map(move |q| (*q, m.clone())))
            .collect();
        held.sort();
        assert_eq!(claimed, held);
    }

    /// A queue claimed by a member that never reports to the new coordinator
    /// waits one member_expiry, and the claims of a member gone past it are
    /// released.
    #[test]
    fn an_unreported_claim_waits_for_its_expiry() {
        let mut recorded = Recorded(Default::default());
        let old = Coordinator::default();
        settled(&old, 1);
        let expiry = Duration::from_millis(300);
        // z holds all four queues of t.
        let z = recorded.beat(&old, 1, Duration::from_secs(60), &beat("z", &[]));
        assert_eq!(ids(&z), vec![0, 1, 2, 3]);
        // Term 2: y joins; z never reports again.
        let new = Coordinator::default();
        let y = recorded.beat(&new, 2, expiry, &beat("y", &[]));
        assert_eq!(ids(&y), Vec::<u32>::new(), "z's claims wait");
        std::thread::sleep(expiry + Duration::from_millis(50));
        let y = recorded.beat(&new, 2, expiry, &beat("y", &[]));
        assert_eq!(ids(&y), vec![0, 1, 2, 3], "z expired");
        assert!(
            recorded.holders().iter().all(|(_, m)| m == "y"),
            "z's claims were released: {:?}",
            recorded.holders()
        );
    }
}
