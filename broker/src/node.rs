//! A running broker node: its Raft, the state it shares with its state machine, and
//! the operations the HTTP layer calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::{Instant as _, WatchReceiver};
use openraft::{RaftMetrics, ServerState};

use crate::config::NodeConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::producer::{SendLimits, SendPreparer};
use crate::raft::command::{Command, CommandResponse};
use crate::raft::state_machine::GroupShared;
use crate::raft::type_config::{NodeId, NodeInfo, Raft, TypeConfig};

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
    pub metrics: Metrics,
    /// For forwarding writes to the leader.
    pub http: reqwest::Client,
    /// The configured initial members: URLs of peers before membership is known.
    configured_members: BTreeMap<NodeId, NodeInfo>,
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
        Ok(Self {
            sender: SendPreparer::new(&config.group, config.node_id),
            configured_members: config.members()?,
            config,
            raft,
            shared,
            metrics: Metrics::default(),
            http,
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
    /// NOT_LEADER if this node is not (or stopped being) the leader; UNAVAILABLE if
    /// the write did not commit within the write timeout (no quorum) or Raft stopped.
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, ApiError> {
        let timeout = self.config.http.write_timeout.0;
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Err(ApiError::unavailable(format!(
                "the write did not commit within {} (no quorum?); retrying is safe with producer_id and sequence",
                self.config.http.write_timeout
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
}
