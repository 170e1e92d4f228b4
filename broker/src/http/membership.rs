//! Membership and leadership of a group: add a node (learner, catch-up, voter: an
//! asynchronous join, see [`crate::service::control::joins`]), follow a join, remove a node,
//! hand leadership to a named node. Each runs on the group's leader; other nodes
//! forward to it (another group's nodes through that group's routes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, WriteRequest};
use super::forward;
use crate::api::{
    AddNodeRequest, FinalizeUpgradeResponse, JoinState, JoinView, TransferLeaderRequest,
};
use crate::config::validate_url;
use crate::replication::type_config::{NodeId, TypeConfig};
use crate::service::control::joins::JoinError;
use crate::service::node::Node;
use crate::service::routing::{self, Target};

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
    match routing::named(node, group) {
        Err(e) => e.into_response(),
        Ok(Target::Forward(route)) => forward::to_group(node, request, &route, "group").await,
        Ok(Target::Local) => forward::at_leader(node, request, local).await,
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
/// starts adding the node — as a learner, then, once it has caught up, as a voter
/// (see [`crate::service::control::joins`]) — and answers 202 with the join at once; a
/// repeated add of the same node and address answers the running join. A node
/// that is a voter already answers 200 with the join `DONE`.
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
                return Ok(Json(known_member_join(&node, body.node_id, &url, true)).into_response());
            }
            _ => {}
        }
        match node.joins.start(&node, body.node_id, &url) {
            Ok(view) => Ok((StatusCode::ACCEPTED, Json(view)).into_response()),
            Err(e @ JoinError::OtherAddress { .. }) => Err(ApiError::bad_request(e.to_string())),
            Err(e @ JoinError::Busy) => Err(ApiError::unavailable(e.to_string())),
        }
    })
    .await
}

/// `GET /v1/cluster/groups/{group}/nodes/{node_id}`: the node's join, as the
/// group's leader knows it; without one, what the membership says (a voter is
/// `DONE`; a learner no join runs for is `FAILED`: add it again to finish). A node
/// neither joining nor a member is 404 NOT_FOUND.
pub async fn join_status(
    State(node): State<Arc<Node>>,
    ApiPath((group, node_id)): ApiPath<(String, NodeId)>,
    request: WriteRequest,
) -> Response {
    let task_node = Arc::clone(&node);
    on_leader_of(&node, &group, request, || async move {
        let node = task_node;
        if let Some(view) = node.joins.get(node_id) {
            return Ok(Json(view).into_response());
        }
        let metrics = node.raft_metrics();
        let membership = metrics.membership_config.membership();
        let Some(info) = membership.get_node(&node_id) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "node {node_id} is not a member of group `{}` and no join of it is known",
                    node.group()
                ),
            ));
        };
        let voter = membership.voter_ids().any(|id| id == node_id);
        Ok(Json(known_member_join(&node, node_id, &info.url, voter)).into_response())
    })
    .await
}

/// The join of a member this leader has no record of.
fn known_member_join(node: &Node, node_id: NodeId, url: &str, voter: bool) -> JoinView {
    let (state, message) = if voter {
        (JoinState::Done, format!("node {node_id} is a voter"))
    } else {
        (
            JoinState::Failed,
            format!(
                "node {node_id} is a learner, but no join of it runs on this leader (leadership moved?): add it again to make it a voter, or remove it"
            ),
        )
    };
    JoinView {
        group: node.group().to_string(),
        node_id,
        address: url.to_string(),
        state,
        message: Some(message),
        started_ms: None,
        finished_ms: None,
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
    let body: TransferLeaderRequest = match parse_json(&request.body) {
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

/// `POST /v1/cluster/groups/{group}/finalize-upgrade` (body empty or `{}`), at
/// the group's leader: enables what this build adds once every voter speaks its
/// internal protocol; 409 CONFLICT naming a voter that does not (yet).
pub async fn finalize_upgrade(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    if let Err(e) = request.expect_no_fields("finalizing an upgrade") {
        return e.into_response();
    }
    let task_node = Arc::clone(&node);
    on_leader_of(&node, &group, request, || async move {
        let node = task_node;
        let enabled_now = crate::service::consumer::claims::enable(&node).await?;
        Ok(Json(FinalizeUpgradeResponse {
            group: node.group().to_string(),
            protocol: crate::peer_protocol::VERSION,
            queue_claims: true,
            enabled_now,
        })
        .into_response())
    })
    .await
}

/// `POST /v1/node/drain` (body empty or `{}`): drains this node — the one that
/// answers, never forwarded — and answers what it did (`service::drain`).
pub async fn drain(State(node): State<Arc<Node>>, request: WriteRequest) -> Response {
    if let Err(e) = request.expect_no_fields("a drain") {
        return e.into_response();
    }
    Json(crate::service::drain::drain(&node).await).into_response()
}
