//! The control plane: topics, routes, cluster status, health, readiness, metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ServerState;
use serde_json::json;

use super::data_plane::{rejection_error, topic_config};
use super::error::parse_json;
use super::extract::{ApiPath, WriteRequest};
use super::forward;
use crate::api::{
    ClusterResponse, GroupView, NodeView, RouteGroupView, RouteResponse, TopicRequest, TopicView,
    TopicsResponse,
};
use crate::error::{ApiError, ErrorCode};
use crate::node::{Leadership, Node};
use crate::raft::command::{Command, CommandResponse};
use crate::topic::{validate_user_topic, TopicConfig};

fn topic_view(node: &Node, config: &TopicConfig) -> TopicView {
    TopicView {
        topic: config.name.clone(),
        read_queue_nums: config.read_queue_nums,
        write_queue_nums: config.write_queue_nums,
        perm: config.perm,
        groups: vec![node.group().to_string()],
    }
}

/// `PUT /v1/topics/{topic}`: create or update.
pub async fn put_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    let prepared = (|| {
        validate_user_topic(&topic).map_err(ApiError::bad_request)?;
        let body: TopicRequest = if request.body.iter().all(u8::is_ascii_whitespace) {
            TopicRequest::default()
        } else {
            parse_json(&request.body)?
        };
        if let Some(groups) = &body.groups {
            if !groups.iter().any(|g| g == node.group()) {
                return Err(ApiError::bad_request(format!(
                    "groups {groups:?} do not include this node's group `{}`",
                    node.group()
                )));
            }
        }
        let current = node.shared.state().topics.get(&topic).cloned();
        let base = current.unwrap_or_else(|| TopicConfig::with_defaults(&topic));
        let config = TopicConfig {
            name: topic.clone(),
            read_queue_nums: body.read_queue_nums.unwrap_or(base.read_queue_nums),
            write_queue_nums: body.write_queue_nums.unwrap_or(base.write_queue_nums),
            perm: body.perm.unwrap_or(base.perm),
        };
        config.validate().map_err(ApiError::bad_request)?;
        Ok(config)
    })();
    let config = match prepared {
        Ok(config) => config,
        Err(e) => return e.into_response(),
    };
    if !node.is_leader() {
        return forward::to_leader(&node, request, None).await;
    }
    match node.propose(Command::UpsertTopic(config)).await {
        Ok(CommandResponse::Topic(config)) => Json(topic_view(&node, &config)).into_response(),
        Ok(CommandResponse::Rejected(rejection)) => rejection_error(rejection).into_response(),
        Ok(other) => ApiError::internal(format!("unexpected answer to a topic update: {other}"))
            .into_response(),
        Err(e) if e.code == ErrorCode::NotLeader => {
            forward::to_leader(&node, request, e.leader).await
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/topics`
pub async fn list_topics(State(node): State<Arc<Node>>) -> Json<TopicsResponse> {
    let topics = node
        .shared
        .state()
        .topics
        .values()
        .map(|config| topic_view(&node, config))
        .collect();
    Json(TopicsResponse { topics })
}

/// `GET /v1/topics/{topic}`
pub async fn get_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<TopicView>, ApiError> {
    let config = topic_config(&node, &topic)?;
    Ok(Json(topic_view(&node, &config)))
}

/// `DELETE /v1/topics/{topic}`
pub async fn delete_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    if let Err(e) = topic_config(&node, &topic) {
        return e.into_response();
    }
    if !node.is_leader() {
        return forward::to_leader(&node, request, None).await;
    }
    match node
        .propose(Command::DeleteTopic {
            topic: topic.clone(),
        })
        .await
    {
        Ok(CommandResponse::TopicDeleted { existed: true }) => {
            Json(json!({"topic": topic, "deleted": true})).into_response()
        }
        Ok(CommandResponse::TopicDeleted { existed: false }) => {
            ApiError::topic_not_found(&topic).into_response()
        }
        Ok(other) => ApiError::internal(format!("unexpected answer to a topic deletion: {other}"))
            .into_response(),
        Err(e) if e.code == ErrorCode::NotLeader => {
            forward::to_leader(&node, request, e.leader).await
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/routes/{topic}`
pub async fn route(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<RouteResponse>, ApiError> {
    let config = topic_config(&node, &topic)?;
    let metrics = node.raft_metrics();
    let replicas = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(_, info)| info.url.clone())
        .collect();
    Ok(Json(RouteResponse {
        topic,
        groups: vec![RouteGroupView {
            group: node.group().to_string(),
            leader: node.leader_url(),
            replicas,
            read_queue_nums: config.read_queue_nums,
            write_queue_nums: config.write_queue_nums,
            perm: config.perm,
        }],
    }))
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
pub fn group_view(node: &Node) -> GroupView {
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
                term: (is_self || metrics.current_leader == Some(*id))
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

/// `GET /v1/cluster`
pub async fn cluster(State(node): State<Arc<Node>>) -> Json<ClusterResponse> {
    Json(ClusterResponse {
        node_id: node.id(),
        group: node.group().to_string(),
        groups: vec![group_view(&node)],
    })
}

/// `GET /health`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "UP"}))
}

/// `GET /ready`: a member of a group with a known leader.
pub async fn ready(State(node): State<Arc<Node>>) -> Response {
    let metrics = node.raft_metrics();
    let member = metrics
        .membership_config
        .membership()
        .get_node(&node.id())
        .is_some();
    if node.leadership() == Leadership::StaleLeader {
        return ApiError::unavailable(
            "this node leads its group but has lost contact with a quorum",
        )
        .into_response();
    }
    match (member, metrics.current_leader) {
        (true, Some(leader)) => (
            StatusCode::OK,
            Json(json!({"status": "READY", "group": node.group(), "leader_id": leader, "leader": node.node_url(&metrics, leader)})),
        )
            .into_response(),
        (false, _) => ApiError::unavailable("this node is not a member of its group yet").into_response(),
        (true, None) => ApiError::unavailable("no leader is known yet").into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let raft = node.raft_metrics();
    let (commit_log, consume_queues, index) = node.shared.store.disk_bytes();
    let gauges = [
        (
            "broker_raft_term",
            "Current Raft term.",
            raft.current_term as f64,
        ),
        (
            "broker_raft_is_leader",
            "1 if this node leads its group.",
            f64::from(u8::from(raft.state == ServerState::Leader)),
        ),
        (
            "broker_raft_last_log_index",
            "Last Raft log index.",
            raft.last_log_index.unwrap_or(0) as f64,
        ),
        (
            "broker_raft_committed_index",
            "Last committed Raft log index.",
            raft.local_committed.map_or(0.0, |l| l.index as f64),
        ),
        (
            "broker_raft_applied_index",
            "Last applied Raft log index.",
            raft.last_applied.map_or(0.0, |l| l.index as f64),
        ),
        (
            "broker_raft_snapshot_index",
            "Last Raft log index covered by the current snapshot.",
            raft.snapshot.map_or(0.0, |l| l.index as f64),
        ),
        (
            "broker_raft_purged_index",
            "Last Raft log index purged from the log.",
            raft.purged.map_or(0.0, |l| l.index as f64),
        ),
        (
            "broker_commit_log_disk_bytes",
            "CommitLog bytes on disk.",
            commit_log as f64,
        ),
        (
            "broker_consume_queue_disk_bytes",
            "ConsumeQueue bytes on disk.",
            consume_queues as f64,
        ),
        (
            "broker_index_disk_bytes",
            "Index bytes on disk.",
            index as f64,
        ),
        (
            "broker_commit_log_max_offset",
            "CommitLog end offset.",
            node.shared.store.max_commit_log_offset().0 as f64,
        ),
        (
            "broker_held_polls",
            "Long polls held.",
            node.shared.waiters.held(node.config.http.max_held_polls) as f64,
        ),
    ];
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        node.metrics.render(&gauges),
    )
        .into_response()
}
