//! A running broker node: its Raft, the state it shares with its state machine, and
//! the operations the HTTP layer calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::{Instant as _, WatchReceiver};
use openraft::{RaftMetrics, ServerState};

use crate::api::{GroupView, NodeView};
use crate::config::NodeConfig;
use crate::consumer::coordinator::Coordinator;
use crate::control::{GroupRoute, Registration, RouteTable};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::producer::{SendLimits, SendPreparer};
use crate::raft::command::{Command, CommandResponse};
use crate::raft::state_machine::GroupShared;
use crate::raft::type_config::{NodeId, NodeInfo, Raft, TypeConfig};
use crate::send_batcher::SendBatcher;
use crate::units::HumanDuration;

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
    /// For forwarding writes to the leader.
    pub http: reqwest::Client,
    /// Every other broker group this node knows, from registrations.
    pub routes: RouteTable,
    /// Consumer groups this node coordinates while it leads.
    pub coordinator: Coordinator,
    /// The configured initial members: URLs of peers before membership is known.
    configured_members: BTreeMap<NodeId, NodeInfo>,
    /// A reader of the Raft log store, for its sizes and fsync figures in
    /// `/metrics` (set by `server::start`; `None` in harnesses that build a node
    /// otherwise).
    pub raft_log: Option<raft_log_store::LogReader<TypeConfig>>,
}

impl Node {
    /// # Errors
    /// The configured peers are malformed (validated earlier, so only a bug).
    pub fn new(config: NodeConfig, raft: Raft, shared: Arc<GroupShared>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let configured_members = config.members()?;
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
        Ok(Self {
            sender: SendPreparer::new(&config.group, config.node_id, config.delay_levels()),
            sends: SendBatcher::start(raft.clone(), config.http.write_timeout),
            configured_members,
            routes,
            coordinator: Coordinator::default(),
            config,
            raft,
            shared,
            metrics: Arc::default(),
            http,
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

    /// The current leader's id and URL, if known.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
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
    pub fn leadership(&self) -> Leadership {
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

    /// Proposes a command and waits until it is committed and applied here.
    ///
    /// # Errors
    /// As [`propose`].
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, ApiError> {
        propose(&self.raft, self.config.http.write_timeout, command).await
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
        GroupRoute {
            group: self.group().to_string(),
            leader: self.leader_url(),
            replicas: self.member_urls(),
            topics: self.shared.state().topics.clone(),
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

    /// The registration this node pushes while it leads its group.
    pub fn registration(&self) -> Registration {
        let metrics = self.raft_metrics();
        let mut known_nodes = self.routes.known_nodes();
        known_nodes.push(self.config.node_info().url);
        Registration {
            group: self.group().to_string(),
            term: metrics.current_term,
            leader_id: self.id(),
            leader_url: self.config.node_info().url,
            replicas: self.member_urls(),
            topics: self.shared.state().topics.values().cloned().collect(),
            view: self.group_view(),
            known_nodes,
        }
    }
}

/// Proposes a command to `raft` and waits until it is committed and applied here.
///
/// # Errors
/// NOT_LEADER if this node is not (or stopped being) the leader; UNAVAILABLE if
/// the write did not commit within `write_timeout` (no quorum) or Raft stopped.
pub async fn propose(
    raft: &Raft,
    write_timeout: HumanDuration,
    command: Command,
) -> Result<CommandResponse, ApiError> {
    match tokio::time::timeout(write_timeout.0, raft.client_write(command)).await {
        Err(_) => Err(ApiError::unavailable(format!(
            "the write did not commit within {write_timeout} (no quorum?); retrying is safe with producer_id and sequence"
        ))),
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(ApiError::not_leader(forward.leader_node.map(|node| node.url)))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(e)))) => Err(ApiError::unavailable(format!(
            "leadership changed before the write committed ({e}); it was not applied and retrying is safe"
        ))),
        Ok(Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))))
        | Ok(Err(RaftError::APIError(e @ ClientWriteError::PreconditionFailed(_)))) => {
            Err(ApiError::internal(format!("unexpected write error: {e}")))
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(ApiError::unavailable(format!("raft stopped: {fatal}"))),
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

/// This group as this node sees it.
fn group_view(node: &Node) -> GroupView {
    let metrics = node.raft_metrics();
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
            let role = if is_self {
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
