//! A running broker node: its Raft, the state it shares with its state machine, and
//! the operations the HTTP layer calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{LinearizableReadError, RaftError};
use openraft::type_config::async_runtime::{Instant as _, WatchReceiver};
use openraft::{RaftMetrics, ReadPolicy, ServerState};

use crate::api::{GroupView, NodeView};

use crate::auth::cluster_secret::{ClusterSecret, SECRET_HEADER};
use crate::auth::quota::SendQuotas;
use crate::auth::Authenticator;
use crate::config::NodeConfig;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::replication::proposal::{propose, Proposal};
use crate::replication::state_machine::GroupShared;
use crate::replication::type_config::{NodeId, NodeInfo, Raft, TypeConfig};
use crate::service::consumer::coordinator::Coordinator;
use crate::service::control::joins::JoinTable;
use crate::service::control::{GroupRoute, Registration, RouteTable};
use crate::service::health::NodeHealth;
use crate::service::producer::{SendLimits, SendPreparer};
use crate::service::send_batcher::SendBatcher;

/// Where a leader serves its read index to its followers (behind the cluster
/// secret): GET, answered with a bincode `Result<u64, String>`.
pub const READ_INDEX_PATH: &str = "/internal/raft/read-index";

/// How this node stands in its group.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    Leader,
    /// Leader state without a recent quorum acknowledgement (partitioned away).
    StaleLeader,
    Follower,
}

/// A node's running parts.
pub struct Node {
    pub config: NodeConfig,
    pub raft: Raft,
    pub shared: Arc<GroupShared>,
    pub sender: SendPreparer,
    /// Proposes sends at the leader, batching concurrent ones into one entry.
    pub sends: SendBatcher,
    pub metrics: Arc<Metrics>,
    /// For forwarding requests to other nodes and route registration (trusts
    /// `tls.ca_file`).
    pub http: reqwest::Client,
    /// The cluster secret (`None` only with `--insecure` and no secret set).
    pub secret: Option<ClusterSecret>,
    /// Resolves clients' bearer tokens.
    pub auth: Authenticator,
    /// Per-user send quotas, used while this node leads.
    pub quotas: SendQuotas,
    /// Every other broker group this node knows, from registrations.
    pub routes: RouteTable,
    /// Consumer groups this node coordinates while it leads.
    pub coordinator: Coordinator,
    /// Nodes being added to this group while this node leads.
    pub joins: JoinTable,
    /// The queues receives are planning while this node leads.
    pub leases: crate::service::consumer::receive::LeaseDesk,
    /// Transaction checks offered to producer groups while this node leads.
    pub check_offers: crate::service::transactions::CheckOffers,
    /// Set once the node drains before a planned stop (`service::drain`).
    pub drain: crate::service::drain::DrainFlag,
    /// Topic quotas (`[limits]`), enforced while this node leads.
    pub topic_limits: crate::service::topic_limits::TopicLimits,
    /// The configured initial members: URLs of peers before membership is known.
    configured_members: BTreeMap<NodeId, NodeInfo>,
    /// A reader of the Raft log store, for its sizes and fsync figures in
    /// `/metrics` (set by `server::start`; `None` in harnesses that build a node
    /// otherwise).
    pub raft_log: Option<raft_log_store::LogReader<TypeConfig>>,
    /// Whether storage failed (fail-stop), and the cached disk usage for the
    /// low-water mark (see [`crate::service::health`]).
    pub health: Arc<NodeHealth>,
}

impl Node {
    /// # Errors
    /// The configured peers are malformed (validated earlier, so only a bug).
    pub fn new(
        config: NodeConfig,
        raft: Raft,
        shared: Arc<GroupShared>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = crate::peer_client::builder(&config)?.build()?;
        let configured_members = config.members()?;
        let secret = config.cluster_secret.as_ref().map(ClusterSecret::new);
        let auth = Authenticator::new(&config);
        let routes = RouteTable::new(
            &config.group,
            &config.node_info().url,
            config
                .seeds
                .iter()
                .cloned()
                .chain(configured_members.values().map(|info| info.url.clone())),
            config.control.route_expiry.0,
        );
        let health = Arc::new(NodeHealth::new(&config));
        Ok(Self {
            health,
            sender: SendPreparer::new(&config.group, config.node_id, config.delay_levels())
                .with_max_delay(config.consumer.max_delay.0),
            sends: SendBatcher::start(raft.clone(), config.http.write_timeout),
            configured_members,
            routes,
            coordinator: Coordinator::default(),
            joins: JoinTable::default(),
            leases: Default::default(),
            check_offers: Default::default(),
            drain: Default::default(),
            topic_limits: crate::service::topic_limits::TopicLimits::new(config.limits.clone()),
            config,
            raft,
            shared,
            metrics,
            http,
            secret,
            auth,
            quotas: SendQuotas::default(),
            raft_log: None,
        })
    }

    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn group(&self) -> &str {
        &self.config.group
    }

    /// A copy of Raft's metrics (never hold the watch borrow: it can deadlock).
    pub fn raft_metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The URL of a node, from the membership or the configured peers.
    pub fn node_url(&self, metrics: &RaftMetrics<TypeConfig>, id: NodeId) -> Option<String> {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .or_else(|| self.configured_members.get(&id))
            .map(|node| node.url.clone())
    }

    /// The current leader's id and URL, if known. A failed node knows none: its
    /// Raft stopped, and what it last saw (often itself, at an old term) is stale.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        if self.health.is_failed() {
            return None;
        }
        let metrics = self.raft_metrics();
        let id = metrics.current_leader?;
        Some((id, self.node_url(&metrics, id)))
    }

    pub fn leader_url(&self) -> Option<String> {
        self.leader().and_then(|(_, url)| url)
    }

    /// Whether this node leads its group, and whether a quorum still follows it.
    ///
    /// openraft keeps an isolated leader in the leader state until it hears of a
    /// higher term; writes to it would wait out their timeout. A leader whose last
    /// quorum acknowledgement is older than the longest election timeout has most
    /// likely been replaced: it is reported stale, refuses writes at once and is not
    /// ready, so clients go elsewhere.
    ///
    /// A node whose storage failed is never a leader: its Raft stopped in whatever
    /// state it was (see [`crate::service::health`]).
    pub fn leadership(&self) -> Leadership {
        if self.health.is_failed() {
            return Leadership::Follower;
        }
        let metrics = self.raft_metrics();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.id()) {
            return Leadership::Follower;
        }
        // Alone in the group, this node is its own quorum.
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        if voters == [self.id()] {
            return Leadership::Leader;
        }
        let lease = self.config.raft.election_timeout_max.0;
        match metrics.last_quorum_acked {
            Some(acked) if acked.into_inner().elapsed() > lease => Leadership::StaleLeader,
            _ => Leadership::Leader,
        }
    }

    /// Whether this node leads its group with a quorum behind it.
    pub fn is_leader(&self) -> bool {
        self.leadership() == Leadership::Leader
    }

    /// Limits on sends, from the configuration.
    pub fn send_limits(&self) -> SendLimits {
        SendLimits {
            max_batch_messages: self.config.http.max_batch_messages,
            max_message_size_bytes: self.config.storage.max_message_size.0,
        }
    }

    /// The topic's configuration in this node's group.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`] when this group does not serve `topic`.
    pub fn topic(&self, topic: &str) -> Result<crate::topic::TopicConfig, BrokerError> {
        self.shared
            .state()
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::topic_not_found(topic))
    }

    /// Proposes a command and waits until it is committed and applied here; the
    /// answer is the one its [`Proposal`] declares.
    ///
    /// # Errors
    /// As [`propose`]; [`BrokerError::StorageFailed`] when storage failed (not the
    /// disk low-water mark: offsets and topic changes are small, and deleting a
    /// topic is how an operator frees space).
    pub async fn write<P: Proposal>(&self, proposal: P) -> Result<P::Answer, BrokerError> {
        if let Some(failure) = self.health.failure() {
            return Err(failure.to_error());
        }
        propose(&self.raft, self.config.http.write_timeout, proposal).await
    }

    /// Waits until this node, as leader, has applied everything the group committed
    /// before the call (a read index: one heartbeat round to its quorum).
    ///
    /// Leader-side reads of the store — the message a give-back copies, the end a
    /// commit is checked against — need it when they miss: a leader applies
    /// asynchronously, and right after an election it may not yet have applied
    /// entries its predecessor committed and a follower already serves. Without
    /// it such a read answers "not there" for an acknowledged message.
    ///
    /// # Errors
    /// `NotLeader`; `WriteTimeout` (no quorum answered in time); `Unavailable`.
    pub async fn catch_up(&self) -> Result<(), BrokerError> {
        let timeout = self.config.http.write_timeout;
        let read = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(timeout.0, read).await {
            Err(_) => Err(BrokerError::WriteTimeout { timeout }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(BrokerError::NotLeader {
                    leader: forward.leader_node.map(|node| node.url),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)))) => {
                Err(BrokerError::unavailable(format!("no quorum: {e}")))
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                Err(BrokerError::unavailable(format!("raft stopped: {fatal}")))
            }
        }
    }

    /// The leader's read index: the last log index committed when this node,
    /// as leader, confirmed with a quorum that it still leads (one heartbeat
    /// round). A node that applied it has seen every write acknowledged before
    /// the call. Served to followers by `/internal/raft/read-index`.
    ///
    /// # Errors
    /// As [`Node::catch_up`].
    pub async fn read_index(&self) -> Result<u64, BrokerError> {
        let timeout = self.config.http.write_timeout;
        let read = self.raft.get_read_linearizer(ReadPolicy::ReadIndex);
        match tokio::time::timeout(timeout.0, read).await {
            Err(_) => Err(BrokerError::WriteTimeout { timeout }),
            Ok(Ok(linearizer)) => Ok(linearizer.read_log_id().index()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(BrokerError::NotLeader {
                    leader: forward.leader_node.map(|node| node.url),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)))) => {
                Err(BrokerError::unavailable(format!("no quorum: {e}")))
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                Err(BrokerError::unavailable(format!("raft stopped: {fatal}")))
            }
        }
    }

    /// Waits until this node has applied every entry its group committed
    /// before the call, so that a read of its own state that follows answers at
    /// least every write acknowledged before the call began — on any node: a
    /// leader takes a read index itself ([`Node::catch_up`]), a follower asks its
    /// leader for one and waits for its own apply to reach it (openraft's
    /// follower read). The read itself stays local.
    ///
    /// # Errors
    /// `Unavailable` when no leader is known or it does not answer (a node cut
    /// off from its group: `stale=true` reads its own copy), `WriteTimeout` when
    /// this node does not apply that far in time, `NotLeader` from a leader
    /// deposed meanwhile.
    pub async fn linearize(&self) -> Result<(), BrokerError> {
        if self.is_leader() {
            return self.catch_up().await;
        }
        let timeout = self.config.http.write_timeout;
        let Some(leader) = self.leader_url() else {
            return Err(BrokerError::unavailable(
                "no leader known to confirm this node is up to date (stale=true reads its own copy)",
            ));
        };
        let index = self.leader_read_index(&leader, timeout.0).await?;
        let applied = self
            .raft
            .wait(Some(timeout.0))
            .applied_index_at_least(Some(index), "linearizable read")
            .await;
        applied
            .map(drop)
            .map_err(|_| BrokerError::WriteTimeout { timeout })
    }

    /// Asks `leader` for its read index (`/internal/raft/read-index`).
    async fn leader_read_index(&self, leader: &str, timeout: Duration) -> Result<u64, BrokerError> {
        let unreachable = |reason: String| {
            BrokerError::unavailable(format!(
                "the leader {leader} did not give a read index ({reason}; stale=true reads this node's own copy)"
            ))
        };
        let response = self
            .peer_request(reqwest::Method::GET, leader, READ_INDEX_PATH)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (answer, _): (Result<u64, String>, _) =
            bincode::serde::decode_from_slice(&body, bincode::config::standard())
                .map_err(|e| unreachable(format!("undecodable answer: {e}")))?;
        answer.map_err(unreachable)
    }

    /// This group as this node sees it, for `/v1/cluster` and registrations.
    pub fn group_view(&self) -> GroupView {
        group_view(self)
    }

    /// URLs of every member of this group (voters and learners).
    pub fn member_urls(&self) -> Vec<String> {
        self.raft_metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, info)| info.url.clone())
            .collect()
    }

    /// Whether this node was removed from its group: the membership it knows has
    /// members, and it is not one of them. (A node not yet initialized knows an
    /// empty membership and is not "removed": it waits to be added.)
    pub fn is_removed(&self) -> bool {
        let metrics = self.raft_metrics();
        let membership = metrics.membership_config.membership();
        membership.nodes().next().is_some() && membership.get_node(&self.id()).is_none()
    }

    /// This node's own group as a route, from its own Raft state.
    pub fn local_route(&self) -> GroupRoute {
        let topics = self.shared.state().topics.clone();
        GroupRoute {
            group: self.group().to_string(),
            leader: self.leader_url(),
            replicas: self.member_urls(),
            topics,
            view: self.group_view(),
            age: None,
        }
    }

    /// Every live broker group (this node's own included), by name.
    pub fn group_routes(&self) -> Vec<GroupRoute> {
        let mut routes = vec![self.local_route()];
        routes.extend(self.routes.remote_groups());
        routes.sort_by(|a, b| a.group.cmp(&b.group));
        routes
    }

    /// Whether the cluster secret may be sent to `url`: a member of this group, a
    /// configured peer or seed, or a node named by a registration that carried
    /// the secret (see `control::routes`). Nothing else ever sees it.
    pub fn may_receive_secret(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        // Cheapest first: forwarding to the leader asks on every request.
        self.configured_members.values().any(|info| info.url == url)
            || self.routes.is_known(url)
            || self.member_urls().iter().any(|member| member == url)
    }

    /// A request to another node, carrying the cluster secret when the node may
    /// receive it (see [`Self::may_receive_secret`]); without it, the other node
    /// answers 401 on `/internal/` and treats a forwarded request as a client's.
    pub fn peer_request(
        &self,
        method: reqwest::Method,
        base_url: &str,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{base_url}{path_and_query}"))
            .header(crate::peer_protocol::HEADER, crate::peer_protocol::VERSION);
        match &self.secret {
            Some(secret) if self.may_receive_secret(base_url) => {
                request.header(SECRET_HEADER, secret.header_value())
            }
            Some(_) => {
                tracing::warn!(
                    url = base_url,
                    "not sending the cluster secret to a node this node does not know as a peer"
                );
                request
            }
            None => request,
        }
    }

    /// The registration this node pushes while it leads its group.
    pub fn registration(&self) -> Registration {
        let metrics = self.raft_metrics();
        let mut known_nodes = self.routes.known_nodes();
        known_nodes.push(self.config.node_info().url);
        // One guard, dropped before anything else reads the state: a second
        // guard on this thread deadlocks behind a waiting apply (see
        // `replication::state_lock`).
        let (topics, users) = {
            let state = self.shared.state();
            (
                state.topics.values().cloned().collect(),
                crate::service::control::routes::UsersSummary {
                    digest: state.users.digest(),
                    max_revision: state.users.max_revision(),
                },
            )
        };
        Registration {
            group: self.group().to_string(),
            term: metrics.current_term,
            leader_id: self.id(),
            leader_url: self.config.node_info().url,
            replicas: self.member_urls(),
            topics,
            view: self.group_view(),
            known_nodes,
            users,
        }
    }
}

fn role_word(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "unknown",
    }
}

/// This group as this node sees it. A failed node names no leader and no role
/// of its own: both stopped with its Raft (see [`crate::service::health`]).
fn group_view(node: &Node) -> GroupView {
    let mut metrics = node.raft_metrics();
    let failed = node.health.is_failed();
    if failed {
        metrics.current_leader = None;
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let leader_last = metrics.last_log_index;
    let nodes = membership
        .nodes()
        .map(|(id, info)| {
            let is_self = *id == node.id();
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|m| m.map(|log_id| log_id.index));
            let role = if is_self && failed {
                "unknown"
            } else if is_self {
                role_word(metrics.state)
            } else if metrics.current_leader == Some(*id) {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            NodeView {
                id: *id,
                url: info.url.clone(),
                role: role.to_string(),
                // A node that acknowledges this leader's replication is in its term.
                term: (is_self
                    || metrics.current_leader == Some(*id)
                    || matches!(matched, Some(Some(_))))
                .then_some(metrics.current_term),
                last_log_index: if is_self {
                    metrics.last_log_index
                } else {
                    matched.flatten()
                },
                applied_index: if is_self {
                    metrics.last_applied.map(|l| l.index)
                } else {
                    None
                },
                reachable: if is_self {
                    Some(true)
                } else {
                    matched.map(|m| m.is_some())
                },
                lag: match (leader_last, matched) {
                    (Some(last), Some(m)) if metrics.state == ServerState::Leader => {
                        Some(last.saturating_sub(m.unwrap_or(0)))
                    }
                    _ => None,
                },
            }
        })
        .collect();
    GroupView {
        group: node.group().to_string(),
        leader_id: metrics.current_leader,
        leader: metrics
            .current_leader
            .and_then(|id| node.node_url(&metrics, id)),
        term: metrics.current_term,
        nodes,
        registration_age_ms: Some(0),
    }
}
