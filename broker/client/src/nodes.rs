//! [`NodeSet`]: the nodes a client knows, which one it believes leads, and where the
//! next read goes.
//!
//! The set only grows: seeds first, then any leader a `NOT_LEADER` answer or a
//! readiness probe names. Bounded in practice by the cluster's size (nodes are only
//! learned from the cluster's own answers).

use std::time::{Duration, Instant};

use super::endpoint::NodeUrl;

/// Known nodes and the preferred (leader) node.
#[derive(Debug)]
pub struct NodeSet {
    nodes: Vec<NodeUrl>,
    /// Index in `nodes` of the node believed to lead, and when that was learned.
    leader: Option<(usize, Instant)>,
    /// Round-robin cursor for reads.
    next_read: usize,
    /// When a caller last set out to ask the cluster for its leader.
    last_probe: Option<Instant>,
}

/// While no leader is known, probe at most this often (not once per request: during
/// an election every request would otherwise add a probe).
pub const UNKNOWN_LEADER_PROBE_INTERVAL: Duration = Duration::from_millis(200);

impl NodeSet {
    /// A set of the given seeds, duplicates removed, order kept. `seeds` must not be
    /// empty (the client checks).
    pub fn new(seeds: Vec<NodeUrl>) -> Self {
        let mut nodes: Vec<NodeUrl> = Vec::with_capacity(seeds.len());
        for seed in seeds {
            if !nodes.contains(&seed) {
                nodes.push(seed);
            }
        }
        Self {
            nodes,
            leader: None,
            next_read: 0,
            last_probe: None,
        }
    }

    /// Every known node.
    pub fn nodes(&self) -> &[NodeUrl] {
        &self.nodes
    }

    /// The node believed to lead and when it was learned.
    pub fn leader(&self) -> Option<(&NodeUrl, Instant)> {
        self.leader.map(|(i, at)| (&self.nodes[i], at))
    }

    /// Remembers `url` as the leader, adding it to the set if new.
    pub fn set_leader(&mut self, url: &NodeUrl) {
        let index = self.index_or_insert(url);
        self.leader = Some((index, Instant::now()));
    }

    /// Forgets the leader if it is `url` (it refused a connection or stepped down).
    pub fn forget_leader(&mut self, url: &NodeUrl) {
        if self.leader().is_some_and(|(leader, _)| leader == url) {
            self.leader = None;
        }
    }

    /// Whether the caller should ask the cluster for its leader now: none is known
    /// (and nobody probed in the last [`UNKNOWN_LEADER_PROBE_INTERVAL`]), or the known
    /// one is older than `refresh`. A `true` claims the probe: concurrent callers get
    /// `false` until the interval passes again, so a burst of writes sends one probe.
    pub fn claim_leader_probe(&mut self, now: Instant, refresh: Option<Duration>) -> bool {
        let since = |at: Instant| now.saturating_duration_since(at);
        let due = match (self.leader, self.last_probe) {
            (None, None) => true,
            (None, Some(probed)) => since(probed) >= UNKNOWN_LEADER_PROBE_INTERVAL,
            (Some((_, learned)), probed) => refresh.is_some_and(|interval| {
                since(probed.map_or(learned, |p| p.max(learned))) >= interval
            }),
        };
        if due {
            self.last_probe = Some(now);
        }
        due
    }

    /// The order in which a write tries nodes: the leader first, then the others in
    /// seed order.
    pub fn write_order(&self) -> Vec<NodeUrl> {
        self.order_from(self.leader.map_or(0, |(i, _)| i))
    }

    /// The order in which a sticky read tries nodes: as a write.
    pub fn sticky_read_order(&self) -> Vec<NodeUrl> {
        self.write_order()
    }

    /// The order in which a round-robin read tries nodes: starting one further on
    /// than the previous read.
    pub fn round_robin_order(&mut self) -> Vec<NodeUrl> {
        let start = self.next_read % self.nodes.len().max(1);
        self.next_read = self.next_read.wrapping_add(1);
        self.order_from(start)
    }

    fn order_from(&self, start: usize) -> Vec<NodeUrl> {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.nodes[(start + k) % n].clone())
            .collect()
    }

    fn index_or_insert(&mut self, url: &NodeUrl) -> usize {
        match self.nodes.iter().position(|n| n == url) {
            Some(index) => index,
            None => {
                self.nodes.push(url.clone());
                self.nodes.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> NodeUrl {
        NodeUrl::parse(&format!("http://127.0.0.1:{port}")).expect("valid")
    }

    fn ports(order: &[NodeUrl]) -> Vec<String> {
        order.iter().map(|u| u.as_str()[17..].to_string()).collect()
    }

    #[test]
    fn writes_start_at_the_leader_and_reads_rotate() {
        let mut set = NodeSet::new(vec![url(1), url(2), url(3), url(1)]);
        assert_eq!(set.nodes().len(), 3, "duplicates removed");
        assert_eq!(ports(&set.write_order()), ["1", "2", "3"]);
        set.set_leader(&url(2));
        assert_eq!(ports(&set.write_order()), ["2", "3", "1"]);
        assert_eq!(ports(&set.sticky_read_order()), ["2", "3", "1"]);
        assert_eq!(ports(&set.round_robin_order()), ["1", "2", "3"]);
        assert_eq!(ports(&set.round_robin_order()), ["2", "3", "1"]);
        set.forget_leader(&url(3));
        assert!(set.leader().is_some(), "3 was not the leader");
        set.forget_leader(&url(2));
        assert!(set.leader().is_none());
        set.set_leader(&url(4));
        assert_eq!(ports(&set.write_order()), ["4", "1", "2", "3"]);
    }

    #[test]
    fn leader_probes_are_claimed_once_per_interval() {
        let mut set = NodeSet::new(vec![url(1)]);
        let t0 = Instant::now();
        let refresh = Some(Duration::from_secs(10));
        assert!(set.claim_leader_probe(t0, refresh), "nothing known: probe");
        assert!(!set.claim_leader_probe(t0, refresh), "already claimed");
        let later = t0 + UNKNOWN_LEADER_PROBE_INTERVAL;
        assert!(
            set.claim_leader_probe(later, refresh),
            "still unknown: again"
        );
        set.set_leader(&url(1));
        let learned = Instant::now();
        assert!(!set.claim_leader_probe(learned, refresh), "fresh leader");
        assert!(!set.claim_leader_probe(learned + Duration::from_secs(5), refresh));
        assert!(set.claim_leader_probe(learned + Duration::from_secs(11), refresh));
        assert!(!set.claim_leader_probe(learned + Duration::from_secs(12), refresh));
        assert!(!set.claim_leader_probe(learned + Duration::from_secs(60), None));
    }
}
