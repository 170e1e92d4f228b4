//! The route table: every broker group this node knows, with its topics, leader and
//! replicas, as last registered by that group's leader.
//!
//! A registration replaces the previous one of its group unless it comes from an
//! older term (a deposed leader that has not noticed yet). Entries older than the
//! route expiry are not served and are dropped: a group whose nodes all stopped
//! disappears from every node's routes within the expiry.
//!
//! Node URLs learned from registrations (and the configured seeds) are kept: they
//! are the nodes this node's group registers with when it leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::GroupView;
use crate::topic::TopicConfig;

/// Most node URLs a route table remembers; beyond it, registrations still update
/// routes but teach no more nodes (a bound on what a misbehaving peer can make us
/// contact).
const MAX_KNOWN_NODES: usize = 4096;

/// What a group's leader pushes to every node it knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registration {
    pub group: String,
    /// The leader's term: a registration from an older term than the stored one is
    /// ignored.
    pub term: u64,
    pub leader_id: u64,
    pub leader_url: String,
    /// URLs of every member of the group (voters and learners).
    pub replicas: Vec<String>,
    pub topics: Vec<TopicConfig>,
    /// The group as its leader sees it, for `/v1/cluster`.
    pub view: GroupView,
    /// Node URLs the sender knows, so nodes learn of each other.
    pub known_nodes: Vec<String>,
}

/// The answer to a registration: the nodes the receiver knows, so the registering
/// leader learns of nodes it has no seed for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RegistrationAck {
    pub accepted: bool,
    pub known_nodes: Vec<String>,
}

/// One broker group as this node sees it: its own from Raft, others from their
/// registrations.
#[derive(Clone, Debug)]
pub struct GroupRoute {
    pub group: String,
    pub leader: Option<String>,
    pub replicas: Vec<String>,
    pub topics: BTreeMap<String, TopicConfig>,
    pub view: GroupView,
    /// Time since the registration arrived; `None` for this node's own group.
    pub age: Option<Duration>,
}

impl GroupRoute {
    /// Whether this is the group of the node that built the route.
    pub fn is_local(&self) -> bool {
        self.age.is_none()
    }

    /// URLs to send a request for this group to: the leader first, then the other
    /// replicas.
    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self.leader.iter().cloned().collect();
        urls.extend(
            self.replicas
                .iter()
                .filter(|url| Some(*url) != self.leader.as_ref())
                .cloned(),
        );
        urls
    }
}

struct Entry {
    registration: Registration,
    received: Instant,
}

struct Inner {
    groups: BTreeMap<String, Entry>,
    nodes: BTreeSet<String>,
}

/// Registrations of other groups, and the nodes this node knows.
pub struct RouteTable {
    own_group: String,
    own_url: String,
    expiry: Duration,
    inner: Mutex<Inner>,
}

impl RouteTable {
    pub fn new(
        own_group: &str,
        own_url: &str,
        seeds: impl IntoIterator<Item = String>,
        expiry: Duration,
    ) -> Self {
        let nodes = seeds
            .into_iter()
            .map(|url| url.trim_end_matches('/').to_string())
            .filter(|url| url != own_url)
            .collect();
        Self {
            own_group: own_group.to_string(),
            own_url: own_url.to_string(),
            expiry,
            inner: Mutex::new(Inner {
                groups: BTreeMap::new(),
                nodes,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The table holds no invariant a panicking holder could break half-way.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a registration unless it is from this node's own group (known better
    /// from Raft) or from an older term than the live one stored. Learns the nodes
    /// it names either way. Answers whether the routes were taken.
    pub fn register(&self, registration: Registration) -> bool {
        let mut inner = self.lock();
        let learned = registration
            .known_nodes
            .iter()
            .chain(&registration.replicas)
            .chain(std::iter::once(&registration.leader_url))
            .map(|url| url.trim_end_matches('/').to_string())
            .filter(|url| *url != self.own_url)
            .collect::<Vec<_>>();
        for url in learned {
            if inner.nodes.len() >= MAX_KNOWN_NODES {
                break;
            }
            inner.nodes.insert(url);
        }
        if registration.group == self.own_group {
            return false;
        }
        let now = Instant::now();
        if let Some(current) = inner.groups.get(&registration.group) {
            let live = now.duration_since(current.received) < self.expiry;
            if live && current.registration.term > registration.term {
                return false;
            }
        }
        inner.groups.insert(
            registration.group.clone(),
            Entry {
                registration,
                received: now,
            },
        );
        true
    }

    /// Learns node URLs (from a registration's answer).
    pub fn learn_nodes(&self, urls: impl IntoIterator<Item = String>) {
        let mut inner = self.lock();
        for url in urls {
            let url = url.trim_end_matches('/').to_string();
            if url != self.own_url && inner.nodes.len() < MAX_KNOWN_NODES {
                inner.nodes.insert(url);
            }
        }
    }

    /// Every node URL known besides this node's.
    pub fn known_nodes(&self) -> Vec<String> {
        self.lock().nodes.iter().cloned().collect()
    }

    /// The live registrations of other groups, by group name; drops expired ones.
    pub fn remote_groups(&self) -> Vec<GroupRoute> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner
            .groups
            .retain(|_, entry| now.duration_since(entry.received) < self.expiry);
        inner
            .groups
            .values()
            .map(|entry| {
                let r = &entry.registration;
                let age = now.duration_since(entry.received);
                let mut view = r.view.clone();
                view.registration_age_ms = Some(age.as_millis() as u64);
                GroupRoute {
                    group: r.group.clone(),
                    leader: Some(r.leader_url.clone()),
                    replicas: r.replicas.clone(),
                    topics: r
                        .topics
                        .iter()
                        .map(|t| (t.name.clone(), t.clone()))
                        .collect(),
                    view,
                    age: Some(age),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(group: &str, term: u64, leader: &str) -> Registration {
        Registration {
            group: group.into(),
            term,
            leader_id: 1,
            leader_url: leader.into(),
            replicas: vec![leader.into()],
            topics: vec![TopicConfig::with_defaults("t")],
            view: GroupView {
                group: group.into(),
                leader_id: Some(1),
                leader: Some(leader.into()),
                term,
                nodes: Vec::new(),
                registration_age_ms: None,
            },
            known_nodes: vec!["http://n9".into()],
        }
    }

    #[test]
    fn older_terms_do_not_replace_a_live_registration() {
        let table = RouteTable::new("a", "http://self", [], Duration::from_secs(60));
        assert!(table.register(registration("b", 5, "http://new")));
        assert!(!table.register(registration("b", 4, "http://old")));
        let groups = table.remote_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].leader.as_deref(), Some("http://new"));
        assert!(table.register(registration("b", 5, "http://new")));
    }

    #[test]
    fn own_group_is_not_taken_but_its_nodes_are_learned() {
        let table = RouteTable::new(
            "a",
            "http://self",
            ["http://self/".into()],
            Duration::from_secs(60),
        );
        assert!(!table.register(registration("a", 1, "http://peer")));
        assert!(table.remote_groups().is_empty());
        assert_eq!(table.known_nodes(), vec!["http://n9", "http://peer"]);
    }

    #[test]
    fn registrations_expire() {
        let table = RouteTable::new("a", "http://self", [], Duration::from_millis(30));
        assert!(table.register(registration("b", 1, "http://x")));
        assert_eq!(table.remote_groups().len(), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(table.remote_groups().is_empty());
        // After expiry any term is taken again (the group may have been rebuilt).
        assert!(table.register(registration("b", 0, "http://y")));
    }
}
