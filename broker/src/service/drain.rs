//! Draining a node before a planned stop (a restart, an upgrade, a host's
//! maintenance), so that its clients and its group notice nothing but a
//! reconnect:
//!
//! 1. **Readiness off**: `/ready` answers 503 `draining`, so load balancers and
//!    Kubernetes stop sending new clients here.
//! 2. **Held requests answered**: long-polled pulls, receives and transaction
//!    checks answer now with what they have (usually nothing) instead of at
//!    their deadline, and new ones are not held; event streams end (their
//!    clients reconnect elsewhere with `Last-Event-ID`). A client's next request
//!    goes to another node.
//! 3. **Leadership moved away**: a leader hands its group to the most
//!    up-to-date voter and waits (up to [`TRANSFER_WAIT`]) until that one leads,
//!    so the group elects nobody and loses no write: the stop costs a transfer
//!    (one round trip), not an election timeout.
//!
//! The node keeps serving everything else (forwarded writes, replication) until
//! it stops. `SIGTERM` drains before stopping (so `scripts/cluster.sh stop`,
//! systemd's stop and Kubernetes' termination all drain), and
//! `POST /v1/node/drain` drains without stopping. Draining is one-way: a drained
//! node that keeps running stays out of readiness until it restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::type_config::async_runtime::Instant as _;
use tracing::{info, warn};

use super::node::Node;
use crate::api::DrainResponse;
use crate::replication::type_config::NodeId;

/// Longest a drain waits for another voter to take over.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// Whether this node is draining.
#[derive(Debug, Default)]
pub struct DrainFlag(AtomicBool);

impl DrainFlag {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the flag; whether it was set by this call.
    fn begin(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}

/// Drains `node` (see the module documentation); safe to repeat.
pub async fn drain(node: &Node) -> DrainResponse {
    let started = node.drain.begin();
    if started {
        info!("draining: readiness off, held requests answered, leadership moved away");
    }
    // Held polls wake, see the flag and answer; checks wait on their own signal.
    node.shared.waiters.wake_all();
    node.check_offers.wake_all();
    let was_leader = node.is_leader();
    let leader_id = if was_leader {
        move_leadership(node).await
    } else {
        node.raft_metrics().current_leader
    };
    DrainResponse {
        node_id: node.id(),
        group: node.group().to_string(),
        was_leader,
        leader_id,
        started,
    }
}

/// Hands leadership to the live voter that has replicated the most and waits
/// until another node leads; answers the leader then.
async fn move_leadership(node: &Node) -> Option<NodeId> {
    let metrics = node.raft_metrics();
    let me = node.id();
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|replication| replication.get(id).cloned().flatten())
            .map(|log_id| log_id.index)
    };
    // Live: it acknowledged a heartbeat within the longest election timeout (a
    // stopped voter cannot take over; handing it the group would cost the
    // whole wait and then an election).
    let lease = node.config.raft.election_timeout_max.0;
    let live = |id: &NodeId| {
        metrics
            .heartbeat
            .as_ref()
            .and_then(|heartbeats| heartbeats.get(id).cloned().flatten())
            .is_some_and(|acked| acked.into_inner().elapsed() <= lease)
    };
    let successor = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != me && live(id))
        .max_by_key(|id| (matched(id), std::cmp::Reverse(*id)));
    let Some(to) = successor else {
        info!("draining: no live voter to hand the group to");
        return Some(me);
    };
    if let Err(e) = node.raft.trigger().transfer_leader(to).await {
        warn!(error = %e, "draining: cannot hand over leadership");
        return Some(me);
    }
    let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
    loop {
        let leader = node.raft_metrics().current_leader;
        if leader.is_some_and(|leader| leader != me) {
            info!(to = ?leader, "draining: leadership handed over");
            return leader;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                to,
                "draining: node {to} did not take over within {TRANSFER_WAIT:?}"
            );
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
