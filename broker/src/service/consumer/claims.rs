//! Heartbeats at the coordinator with recorded grants (see
//! `replication::claims`): a new leader first applies what its predecessors
//! committed, then answers from the replicated claims, and commits every new grant
//! before telling the member.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use super::coordinator::{Claims, CoordinatorError, Serving};
use crate::api::{HeartbeatRequest, HeartbeatResponse};
use crate::error::BrokerError;
use crate::replication::claims::ClaimsChange;
use crate::service::node::Node;

/// The protocol version that brought claims: every voter must speak it before
/// the group enables them.
const CLAIMS_PROTOCOL: u32 = 2;

/// Serves a heartbeat at this leader.
///
/// # Errors
/// A coordinator cap (`Unavailable`); no quorum to read or record claims
/// (`Unavailable`, `WriteTimeout`, `NotLeader`): the member keeps what it holds
/// and asks again.
pub async fn heartbeat(
    node: &Node,
    consumer_group: &str,
    request: &HeartbeatRequest,
    serving: &Serving,
) -> Result<HeartbeatResponse, BrokerError> {
    let term = node.raft_metrics().current_term;
    if node.coordinator.synced_term() < term {
        // Claims committed by earlier leaders may not be applied here yet.
        node.catch_up().await?;
        node.coordinator.mark_synced(term);
    }
    let beat = {
        let state = node.shared.state();
        let claims = match &state.claims {
            Some(table) => Claims::On(table.of(consumer_group)),
            None => Claims::Off,
        };
        node.coordinator
            .heartbeat(
                consumer_group,
                term,
                node.config.control.member_expiry.0,
                request,
                serving,
                claims,
            )
            .map_err(|e: CoordinatorError| BrokerError::unavailable(e.to_string()))?
    };
    if let Some(update) = beat.record {
        node.write(ClaimsChange::Update(update))
            .await?
            .map_err(|refusal| {
                BrokerError::unavailable(format!("the grant could not be recorded: {refusal}"))
            })?;
    }
    Ok(beat.response)
}

/// Enables claims in this leader's group now (`finalize-upgrade`); answers
/// whether this call did (`false`: they were on).
///
/// # Errors
/// `Conflict` naming a voter not known to speak the protocol that brought
/// claims; `NotLeader`, `Unavailable`, `WriteTimeout` as any write.
pub async fn enable(node: &Node) -> Result<bool, BrokerError> {
    if node.shared.state().claims.is_some() {
        return Ok(false);
    }
    if let Some((id, version)) = voter_behind(node) {
        let speaks = version.map_or_else(
            || "has not answered this leader yet".to_string(),
            |v| format!("speaks internal protocol {v}"),
        );
        return Err(BrokerError::Conflict(format!(
            "voter {id} {speaks}; every voter must run a build of protocol {CLAIMS_PROTOCOL} or later first"
        )));
    }
    node.write(ClaimsChange::Enable)
        .await?
        .map_err(|refusal| BrokerError::Internal(format!("enabling claims: {refusal}")))?;
    info!("queue claims enabled");
    Ok(true)
}

/// The first voter besides this node not known to speak [`CLAIMS_PROTOCOL`].
fn voter_behind(node: &Node) -> Option<(u64, Option<u32>)> {
    let voters: Vec<u64> = node
        .raft_metrics()
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != node.id())
        .collect();
    node.shared
        .peer_versions
        .first_below(voters, CLAIMS_PROTOCOL)
}

/// At a fresh group's bootstrap: enables claims once this node leads and every
/// voter speaks a protocol that knows them. A group upgraded from a build before
/// claims keeps them off (so it can still be downgraded).
pub fn enable_at_bootstrap(node: &Arc<Node>) {
    tokio::spawn(enable_when_ready(Arc::downgrade(node)));
}

/// How long the bootstrap node tries to enable claims.
const ENABLE_FOR: Duration = Duration::from_secs(120);

async fn enable_when_ready(node: Weak<Node>) {
    let started = tokio::time::Instant::now();
    let mut waiting_for = None;
    while started.elapsed() < ENABLE_FOR {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(node) = node.upgrade() else { return };
        if node.shared.state().claims.is_some() {
            return;
        }
        if !node.is_leader() {
            continue;
        }
        if let Some(behind) = voter_behind(&node) {
            waiting_for = Some(behind);
            continue;
        }
        if let Err(e) = enable(&node).await {
            warn!(error = %e, "enabling queue claims");
        }
    }
    let ready = format!(
        "every voter to speak internal protocol {CLAIMS_PROTOCOL} (waiting for {waiting_for:?})"
    );
    warn!(
        "queue claims not enabled after {} s: no leadership here or no {ready}; a new coordinator waits one member_expiry before granting",
        ENABLE_FOR.as_secs()
    );
}
