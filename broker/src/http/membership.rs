//! Membership and leadership of a group: add a node (learner, catch-up, voter),
//! remove one, hand leadership to a named node. Each runs on the group's leader;
//! other nodes forward to it (another group's nodes through that group's routes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::Deserialize;

use super::error::parse_json;
use super::extract::{ApiPath, WriteRequest};
use super::forward;
use super::groups::{self, Target};
use crate::config::validate_url;
use crate::error::{ApiError, ErrorCode};
use crate::node::Node;
use crate::raft::type_config::{NodeId, NodeInfo, TypeConfig};

/// Body of `POST /v1/cluster/groups/{group}/nodes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNodeRequest {
    node_id: NodeId,
    address: String,
}

/// Body of `POST /v1/cluster/groups/{group}/transfer-leader`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    to: NodeId,
}

/// How long a leadership transfer may take before the answer says it did not
/// happen: a vote round plus the new leader's first heartbeat.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// Runs `local` when `group` is this node's and it leads; forwards otherwise.
async fn on_leader_of<F, Fut>(
    node: &Arc<Node>,
    group: &str,
    request: WriteRequest,
    local: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    match groups::named(node, group) {
        Err(e) => e.into_response(),
        Ok(Target::Remote(route)) => forward::to_group(node, request, &route, "group").await,
        Ok(Target::Local) if !node.is_leader() => forward::to_leader(node, request, None).await,
        Ok(Target::Local) => match local().await {
            Ok(response) => response,
            Err(e) if e.code == ErrorCode::NotLeader => {
                forward::to_leader(node, request, e.leader).await
            }
            Err(e) => e.into_response(),
        },
    }
}

fn raft_error<E: std::fmt::Display>(
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    what: E,
) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ApiError::not_leader(forward.leader_node.map(|node| node.url))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::bad_request(format!("{what}: {e}"))
        }
        RaftError::APIError(e) => ApiError::unavailable(format!("{what}: {e}; retry")),
        RaftError::Fatal(e) => ApiError::unavailable(format!("raft stopped: {e}")),
    }
}

/// `POST /v1/cluster/groups/{group}/nodes` `{"node_id": 4, "address": "http://…"}`:
/// adds the node as a learner, waits until it has every entry the leader had (up
/// to `control.join_timeout`), then makes it a voter. Answers the group's view.
pub async fn add_node(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    let body: AddNodeRequest = match parse_json(&request.body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if body.node_id == 0 {
        return ApiError::bad_request("node_id must be positive").into_response();
    }
    if let Err(e) = validate_url("address", &body.address) {
        return ApiError::bad_request(e.to_string()).into_response();
    }
    let url = body.address.trim_end_matches('/').to_string();
    let task_node = Arc::clone(&node);
    on_leader_of(&node, &group, request, || async move {
        let node = task_node;
        let metrics = node.raft_metrics();
        let membership = metrics.membership_config.membership();
        if let Some((id, _)) = membership
            .nodes()
            .find(|(id, info)| info.url == url && **id != body.node_id)
        {
            return Err(ApiError::bad_request(format!(
                "{url} is already node {id} of this group; remove it first"
            )));
        }
        match membership.get_node(&body.node_id) {
            Some(info) if info.url != url => {
                return Err(ApiError::bad_request(format!(
                    "node {} is already a member at {}; ids are never reused: give the new node a new id",
                    body.node_id, info.url
                )))
            }
            Some(_) if membership.voter_ids().any(|id| id == body.node_id) => {
                return Ok(Json(node.group_view()).into_response());
            }
            _ => {}
        }
        node.raft
            .add_learner(body.node_id, NodeInfo { url: url.clone() }, false)
            .await
            .map_err(|e| raft_error(e, "adding the learner"))?;
        wait_for_catch_up(&node, body.node_id).await?;
        let voters = BTreeSet::from([body.node_id]);
        node.raft
            .change_membership(ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(|e| raft_error(e, "promoting the learner"))?;
        Ok(Json(node.group_view()).into_response())
    })
    .await
}

/// Waits until the learner `id` has every entry the leader had when the wait
/// began (up to `control.join_timeout`).
///
/// openraft's own "blocking" `add_learner` returns once the learner is within
/// `replication_lag_threshold` (5000) entries — which an empty node that is not
/// even running satisfies on a young log. A voter that has nothing weakens the
/// quorum until it catches up, so the promotion waits for the real thing.
async fn wait_for_catch_up(node: &Node, id: NodeId) -> Result<(), ApiError> {
    let target = node.raft_metrics().last_log_index.unwrap_or(0);
    let timeout = node.config.control.join_timeout;
    let deadline = tokio::time::Instant::now() + timeout.0;
    loop {
        let metrics = node.raft_metrics();
        if metrics.current_leader != Some(node.id()) {
            return Err(ApiError::not_leader(
                metrics
                    .current_leader
                    .and_then(|l| node.node_url(&metrics, l)),
            ));
        }
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|log_id| log_id.index);
        if matched.is_some_and(|m| m >= target) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(format!(
                "node {id} was added as a learner but did not catch up to index {target} within {timeout} (it has {matched:?}); it keeps catching up: repeat the request to make it a voter"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `DELETE /v1/cluster/groups/{group}/nodes/{node_id}`: removes a voter or learner.
pub async fn remove_node(
    State(node): State<Arc<Node>>,
    ApiPath((group, node_id)): ApiPath<(String, NodeId)>,
    request: WriteRequest,
) -> Response {
    let task_node = Arc::clone(&node);
    on_leader_of(&node, &group, request, || async move {
        let node = task_node;
        let metrics = node.raft_metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(ApiError::bad_request(format!(
                "node {node_id} is not a member of group `{}`",
                node.group()
            )));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let ids = BTreeSet::from([node_id]);
        let change = if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(ApiError::bad_request(format!(
                    "node {node_id} is the group's last voter"
                )));
            }
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        node.raft
            .change_membership(change, false)
            .await
            .map_err(|e| raft_error(e, "removing the node"))?;
        Ok(Json(node.group_view()).into_response())
    })
    .await
}

/// `POST /v1/cluster/groups/{group}/transfer-leader` `{"to": 2}`: hands leadership
/// to a voter and answers once it leads (or UNAVAILABLE if it did not in time).
pub async fn transfer_leader(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    let body: TransferRequest = match parse_json(&request.body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let task_node = Arc::clone(&node);
    on_leader_of(&node, &group, request, || async move {
        let node = task_node;
        let to = body.to;
        let metrics = node.raft_metrics();
        if !metrics.membership_config.membership().voter_ids().any(|id| id == to) {
            return Err(ApiError::bad_request(format!(
                "node {to} is not a voter of group `{}`",
                node.group()
            )));
        }
        if to != node.id() {
            node.raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| ApiError::unavailable(format!("raft stopped: {e}")))?;
        }
        let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
        loop {
            if node.raft_metrics().current_leader == Some(to) {
                return Ok(Json(node.group_view()).into_response());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::unavailable(format!(
                    "node {to} did not take over within {TRANSFER_WAIT:?}; the group keeps its leader"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
