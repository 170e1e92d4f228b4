//! The route table: every broker group this node knows, with its topics, leader and
//! replicas, as last registered by that group's leader.
//!
//! A registration replaces the previous one of its group unless it comes from an
//! older term (a deposed leader that has not noticed yet). Entries older than the
//! route expiry are not served and are dropped: a group whose nodes all stopped
//! disappears from every node's routes within the expiry.
//!
//! Node URLs learned from registrations (and the configured seeds) are the nodes
//! this node's group registers with when it leads. Seeds are kept for good;
//! learned nodes expire when no registration has named them for
//! [`LEARNED_NODE_EXPIRY_FACTOR`] × the route expiry, so a node that left (or a
//! URL a misbehaving peer named) stops being contacted.
//!
//! Registrations come in over `/internal/`, so only a node holding the cluster
//! secret can make one; they are validated anyway ([`Registration::validate`]):
//! names, queue counts within the topic limits, http(s) base URLs, a term below
//! 2^48, bounded lists. Every URL here is therefore a member of some group or a
//! configured seed, which is what lets `Node::peer_request` send the secret to
//! the nodes this table knows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::GroupView;
use crate::topic::{validate_name, TopicConfig};

/// Most node URLs a route table remembers; beyond it, registrations still update
/// routes but teach no more nodes (a bound on what a misbehaving peer can make us
/// contact).
const MAX_KNOWN_NODES: usize = 4096;
/// Most node URLs one registration may name (replicas and known nodes each).
pub const MAX_REGISTRATION_NODES: usize = 1024;
/// Most members a registered group may list.
pub const MAX_GROUP_MEMBERS: usize = 64;
/// Most topics one registration may carry.
pub const MAX_REGISTRATION_TOPICS: usize = 65_536;
/// Highest term a registration may claim: openraft's terms grow by one per
/// election, so anything near `u64::MAX` is a forgery meant to pin the route.
pub const MAX_TERM: u64 = 1 << 48;
/// A learned node unnamed for this many route expiries is forgotten.
pub const LEARNED_NODE_EXPIRY_FACTOR: u32 = 3;

/// A summary of a group's user table, for anti-entropy between groups (see
/// `auth::users`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersSummary {
    pub digest: String,
    pub max_revision: u64,
}

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
    /// The group's user table, summarized (absent from older nodes).
    #[serde(default)]
    pub users: UsersSummary,
}

impl Registration {
    /// Checks everything a registration names before any of it is used.
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("group", &self.group)?;
        if self.term > MAX_TERM {
            return Err(format!("term {} is beyond any real term", self.term));
        }
        validate_base_url(&self.leader_url)?;
        if self.replicas.len() > MAX_GROUP_MEMBERS {
            return Err(format!("more than {MAX_GROUP_MEMBERS} replicas"));
        }
        if !self
            .replicas
            .iter()
            .any(|r| r.trim_end_matches('/') == self.leader_url.trim_end_matches('/'))
        {
            return Err("the leader is not among the replicas".into());
        }
        if self.known_nodes.len() > MAX_REGISTRATION_NODES {
            return Err(format!("more than {MAX_REGISTRATION_NODES} known nodes"));
        }
        for url in self.replicas.iter().chain(&self.known_nodes) {
            validate_base_url(url)?;
        }
        if self.topics.len() > MAX_REGISTRATION_TOPICS {
            return Err(format!("more than {MAX_REGISTRATION_TOPICS} topics"));
        }
        for topic in &self.topics {
            validate_name("topic", &topic.name)?;
            topic.validate()?;
        }
        if self.view.group != self.group || self.view.nodes.len() > MAX_GROUP_MEMBERS {
            return Err("the group view does not match the registration".into());
        }
        Ok(())
    }
}

/// An `http://` or `https://` base URL (host and port, no path), at most 2 KiB.
fn validate_base_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("a URL longer than 2 KiB".into());
    }
    crate::config::validate_url("url", url).map_err(|e| e.reason)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
    if parsed.host().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("`{url}` must be a base URL like http://host:port"));
    }
    Ok(())
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
    /// Known nodes: seeds (`None`, kept for good) and learned ones (when a
    /// registration last named them).
    nodes: BTreeMap<String, Option<Instant>>,
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
            .map(|url| (url, None))
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
    ///
    /// # Errors
    /// An invalid registration (nothing of it is taken).
    pub fn register(&self, mut registration: Registration) -> Result<bool, String> {
        registration.validate()?;
        // Sorted by name, so one topic is found without scanning them all.
        registration
            .topics
            .sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let now = Instant::now();
        let mut inner = self.lock();
        let learned = registration
            .known_nodes
            .iter()
            .chain(&registration.replicas)
            .chain(std::iter::once(&registration.leader_url))
            .cloned();
        self.learn(&mut inner, learned, now);
        if registration.group == self.own_group {
            return Ok(false);
        }
        if let Some(current) = inner.groups.get(&registration.group) {
            let live = now.duration_since(current.received) < self.expiry;
            if live && current.registration.term > registration.term {
                return Ok(false);
            }
        }
        inner.groups.insert(
            registration.group.clone(),
            Entry {
                registration,
                received: now,
            },
        );
        Ok(true)
    }

    fn learn(&self, inner: &mut Inner, urls: impl IntoIterator<Item = String>, now: Instant) {
        for url in urls {
            let url = url.trim_end_matches('/').to_string();
            if url == self.own_url {
                continue;
            }
            let known = inner.nodes.len();
            match inner.nodes.get_mut(&url) {
                // A seed stays a seed.
                Some(None) => {}
                Some(Some(seen)) => *seen = now,
                None if known < MAX_KNOWN_NODES => {
                    inner.nodes.insert(url, Some(now));
                }
                None => {}
            }
        }
    }

    /// Learns node URLs from a registration's answer (a node that holds the
    /// cluster secret answered it).
    pub fn learn_nodes(&self, urls: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut inner = self.lock();
        self.learn(
            &mut inner,
            urls.into_iter().take(MAX_REGISTRATION_NODES),
            now,
        );
    }

    /// Every node URL known besides this node's (expired learned ones dropped).
    pub fn known_nodes(&self) -> Vec<String> {
        let now = Instant::now();
        let forget_after = self.expiry * LEARNED_NODE_EXPIRY_FACTOR;
        let mut inner = self.lock();
        inner.nodes.retain(|_, seen| match seen {
            None => true,
            Some(seen) => now.duration_since(*seen) < forget_after,
        });
        inner.nodes.keys().cloned().collect()
    }

    /// Whether `url` is a seed, a live learned node or a member of a registered
    /// group.
    pub fn is_known(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        let now = Instant::now();
        let forget_after = self.expiry * LEARNED_NODE_EXPIRY_FACTOR;
        let inner = self.lock();
        let known = match inner.nodes.get(url) {
            Some(None) => true,
            Some(Some(seen)) => now.duration_since(*seen) < forget_after,
            None => false,
        };
        known
            || inner.groups.values().any(|entry| {
                now.duration_since(entry.received) < self.expiry
                    && entry
                        .registration
                        .replicas
                        .iter()
                        .any(|replica| replica.trim_end_matches('/') == url)
            })
    }

    /// The users summary of every live registration, with its leader's URL.
    pub fn users_summaries(&self) -> Vec<(String, String, UsersSummary)> {
        let now = Instant::now();
        self.lock()
            .groups
            .values()
            .filter(|entry| now.duration_since(entry.received) < self.expiry)
            .map(|entry| {
                let r = &entry.registration;
                (r.group.clone(), r.leader_url.clone(), r.users.clone())
            })
            .collect()
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
            .map(|entry| entry.route(now))
            .collect()
    }

    /// The names of the live groups of other nodes. Cheap: no route is copied.
    pub fn remote_group_names(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .groups
            .iter()
            .filter(|(_, entry)| now.duration_since(entry.received) < self.expiry)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// One live group's route.
    pub fn remote_group(&self, group: &str) -> Option<GroupRoute> {
        let now = Instant::now();
        self.lock()
            .groups
            .get(group)
            .filter(|entry| now.duration_since(entry.received) < self.expiry)
            .map(|entry| entry.route(now))
    }

    /// `topic`'s configuration in each live group of other nodes that serves it,
    /// by group name. Costs a lookup per group, whatever the groups' other topics.
    pub fn remote_topic(&self, topic: &str) -> Vec<(String, TopicConfig)> {
        let now = Instant::now();
        self.lock()
            .groups
            .iter()
            .filter(|(_, entry)| now.duration_since(entry.received) < self.expiry)
            .filter_map(|(name, entry)| {
                let topics = &entry.registration.topics;
                let found = topics
                    .binary_search_by(|t| t.name.as_str().cmp(topic))
                    .ok()?;
                Some((name.clone(), topics[found].clone()))
            })
            .collect()
    }
}

impl Entry {
    fn route(&self, now: Instant) -> GroupRoute {
        let r = &self.registration;
        let age = now.duration_since(self.received);
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
            known_nodes: vec!["http://n9:1".into()],
            users: UsersSummary::default(),
        }
    }

    fn register(table: &RouteTable, registration: Registration) -> bool {
        table.register(registration).expect("valid registration")
    }

    #[test]
    fn older_terms_do_not_replace_a_live_registration() {
        let table = RouteTable::new("a", "http://self:1", [], Duration::from_secs(60));
        assert!(register(&table, registration("b", 5, "http://new:1")));
        assert!(!register(&table, registration("b", 4, "http://old:1")));
        let groups = table.remote_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].leader.as_deref(), Some("http://new:1"));
        assert!(register(&table, registration("b", 5, "http://new:1")));
    }

    #[test]
    fn own_group_is_not_taken_but_its_nodes_are_learned() {
        let table = RouteTable::new(
            "a",
            "http://self:1",
            ["http://self:1/".into()],
            Duration::from_secs(60),
        );
        assert!(!register(&table, registration("a", 1, "http://peer:1")));
        assert!(table.remote_groups().is_empty());
        assert_eq!(table.known_nodes(), vec!["http://n9:1", "http://peer:1"]);
        assert!(table.is_known("http://peer:1/"));
        assert!(!table.is_known("http://elsewhere:1"));
    }

    #[test]
    fn one_topic_and_one_group_are_found_without_copying_the_rest() {
        let table = RouteTable::new("a", "http://self:1", [], Duration::from_secs(60));
        let mut b = registration("b", 1, "http://b:1");
        b.topics = ["z", "m", "t", "c"]
            .iter()
            .map(|name| TopicConfig::with_defaults(name))
            .collect();
        assert!(register(&table, b));
        assert!(register(&table, registration("c", 1, "http://c:1")));
        let serving: Vec<String> = table
            .remote_topic("t")
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(serving, vec!["b", "c"]);
        assert_eq!(table.remote_topic("m").len(), 1, "found in the sorted list");
        assert!(table.remote_topic("nope").is_empty());
        assert_eq!(table.remote_group_names(), vec!["b", "c"]);
        let c = table.remote_group("c").expect("live");
        assert_eq!(c.leader.as_deref(), Some("http://c:1"));
        assert!(table.remote_group("a").is_none());
    }

    #[test]
    fn registrations_expire() {
        let table = RouteTable::new("a", "http://self:1", [], Duration::from_millis(30));
        assert!(register(&table, registration("b", 1, "http://x:1")));
        assert_eq!(table.remote_groups().len(), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(table.remote_groups().is_empty());
        // After expiry any term is taken again (the group may have been rebuilt).
        assert!(register(&table, registration("b", 0, "http://y:1")));
    }

    /// The unchecked registrations of the finding: a forged term near 2^63, an
    /// outside "leader" that is not among the replicas, URLs that are not base
    /// URLs, names and queue counts outside the rules. None is taken, and none of
    /// its URLs is learned.
    #[test]
    fn invalid_registrations_are_refused_whole() {
        let table = RouteTable::new("a", "http://self:1", [], Duration::from_secs(60));
        let mut forged = registration("b", 1 << 63, "http://evil:1");
        forged.known_nodes = vec!["http://evil-known:1".into()];
        let mut bad_cases = vec![forged];
        let mut outside_leader = registration("b", 3, "http://evil:1");
        outside_leader.replicas = vec!["http://real:1".into()];
        bad_cases.push(outside_leader);
        let mut path = registration("b", 3, "http://x:1");
        path.known_nodes = vec!["http://x:1/internal/raft".into()];
        bad_cases.push(path);
        let mut scheme = registration("b", 3, "http://x:1");
        scheme.known_nodes = vec!["file:///etc/passwd".into()];
        bad_cases.push(scheme);
        bad_cases.push(registration("bad group", 3, "http://x:1"));
        let mut queues = registration("b", 3, "http://x:1");
        queues.topics[0].read_queue_nums = 100_000;
        bad_cases.push(queues);
        let mut many = registration("b", 3, "http://x:1");
        many.known_nodes = (0..=MAX_REGISTRATION_NODES)
            .map(|i| format!("http://n{i}:1"))
            .collect();
        bad_cases.push(many);
        for bad in bad_cases {
            let group = bad.group.clone();
            assert!(table.register(bad).is_err(), "{group}");
        }
        assert!(table.remote_groups().is_empty());
        assert!(table.known_nodes().is_empty(), "{:?}", table.known_nodes());
    }

    #[test]
    fn learned_nodes_expire_and_seeds_stay() {
        let table = RouteTable::new(
            "a",
            "http://self:1",
            ["http://seed:1".into()],
            Duration::from_millis(20),
        );
        assert!(register(&table, registration("b", 1, "http://x:1")));
        assert_eq!(
            table.known_nodes(),
            ["http://n9:1", "http://seed:1", "http://x:1"]
        );
        std::thread::sleep(
            Duration::from_millis(20) * LEARNED_NODE_EXPIRY_FACTOR + Duration::from_millis(20),
        );
        assert_eq!(table.known_nodes(), ["http://seed:1"]);
    }
}
