//! Consumer-group endpoints beyond offset commits: heartbeats (members register with
//! the group's coordinator and learn their queues, see
//! [`crate::service::consumer::coordinator`]), giving a message back (retry and dead letter,
//! see [`crate::service::consumer::retry`]) and resetting offsets to a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::warn;

use super::auth::Caller;
use super::data_plane::local_group_offsets;
use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::{self, BrokerGroupParam};
use super::internal;
use crate::api::{GroupOffsetsResponse, HeartbeatRequest, ResetOffsetsRequest, RetryRequest};
use crate::auth::{Action, Resource};
use crate::replication::command::OffsetCommit;
use crate::service::consumer::coordinator::Serving;
use crate::service::consumer::{claims, give_back};
use crate::service::node::Node;
use crate::service::producer::group_hash;
use crate::service::routing::{self, Choice, Target};
use crate::storage::QueueId;
use crate::topic::{retry_topic, validate_name, TopicConfig};

/// `POST /v1/groups/{group}/heartbeat` `{"client_id": "c-1", "topics": ["t"],
/// "owned": [...]}`: registers the member with the coordinator — the leader of the
/// broker group picked by hashing the consumer group over the live broker groups
/// (`?broker_group=` names it when forwarded) — and answers the members and this
/// member's queues.
pub async fn heartbeat(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    mut request: WriteRequest,
) -> Response {
    let body = (|| -> Result<HeartbeatRequest, ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        let body: HeartbeatRequest = parse_json(&request.body)?;
        validate_name("client_id", &body.client_id).map_err(ApiError::bad_request)?;
        // The list caps (topics, owned) were checked while parsing: see crate::api.
        for topic in body
            .topics
            .iter()
            .chain(body.owned.iter().map(|q| &q.topic))
        {
            validate_name("topic", topic).map_err(ApiError::bad_request)?;
            caller.require(Action::Sub, Resource::Topic(topic))?;
        }
        for queue in &body.owned {
            validate_name("group", &queue.group).map_err(|e| {
                ApiError::bad_request(format!("owned: broker group of a held queue: {e}"))
            })?;
        }
        Ok(body)
    })();
    let body = match body {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let target = match param.broker_group.as_deref() {
        Some(name) => routing::named(&node, name),
        None => Ok(coordinator(&node, &group)),
    };
    match target {
        Err(e) => e.into_response(),
        Ok(Target::Forward(route)) => {
            forward::to_group(&node, request, &route, "broker_group").await
        }
        Ok(Target::Local) => {
            // The leader must coordinate for this group whatever its own routes say.
            request.path_and_query =
                forward::with_param(&request.path_and_query, "broker_group", node.group());
            forward::at_leader(&node, request, || async {
                let serving = serving(&node, &body);
                let answer = claims::heartbeat(&node, &group, &body, &serving).await?;
                Ok(Json(answer).into_response())
            })
            .await
        }
    }
}

/// Who serves each topic the heartbeat names (subscribed or held), readably:
/// one lookup per topic in this group's state and in each other group's routes,
/// so a heartbeat costs what it names, not what the cluster holds.
fn serving(node: &Node, body: &HeartbeatRequest) -> Serving {
    let names: BTreeSet<&str> = body
        .topics
        .iter()
        .chain(body.owned.iter().map(|q| &q.topic))
        .map(String::as_str)
        .collect();
    let local: Vec<Option<TopicConfig>> = {
        let state = node.shared.state();
        names
            .iter()
            .map(|name| state.topics.get(*name).cloned())
            .collect()
    };
    names
        .into_iter()
        .zip(local)
        .map(|(name, local)| {
            let mut groups: Vec<(String, TopicConfig)> = node.routes.remote_topic(name);
            groups.extend(local.map(|config| (node.group().to_string(), config)));
            let mut groups: Vec<(String, u32)> = groups
                .into_iter()
                .filter(|(_, config)| config.readable())
                .map(|(group, config)| (group, config.read_queue_nums))
                .collect();
            groups.sort();
            (name.to_string(), groups)
        })
        .collect()
}

/// The broker group whose leader coordinates a consumer group: picked by hashing
/// the consumer group's name over the live broker groups (sorted by name). Only
/// the picked group's route is built.
fn coordinator(node: &Node, group: &str) -> Target {
    let mut names = node.routes.remote_group_names();
    names.push(node.group().to_string());
    names.sort();
    let pick = &names[group_hash(group) as usize % names.len()];
    match node.routes.remote_group(pick) {
        Some(route) if pick != node.group() => Target::Forward(Box::new(route)),
        // This group (or one whose registration expired just now: ours will do).
        _ => Target::Local,
    }
}

/// Tells the group's coordinator to forget the offsets holders reported for the
/// topic's queues: they would send the next holder past a reset. Best effort: a
/// coordinator that cannot be told keeps them until its term ends.
async fn forget_hand_off_hints(node: &Node, group: &str, topic: &str) {
    let leader = match coordinator(node, group) {
        Target::Local => node.leader_url(),
        Target::Forward(route) => route.leader.clone(),
    };
    let Some(url) = leader else {
        warn!(group, topic, "no coordinator to tell about the reset");
        return;
    };
    if url == node.config.node_info().url {
        node.coordinator.forget_hints(group, topic);
        return;
    }
    let path = internal::FORGET_HINTS_PATH.replace("{group}", &groups::encode(group));
    let request = node
        .peer_request(reqwest::Method::POST, &url, &path)
        .timeout(std::time::Duration::from_secs(2))
        .json(&internal::ForgetHints {
            topic: topic.to_string(),
        });
    match request.send().await.and_then(|r| r.error_for_status()) {
        Ok(_) => {}
        Err(e) => warn!(group, topic, error = %e, "telling the coordinator about the reset failed"),
    }
}

/// `POST /v1/groups/{group}/retry` `{"topic": "t", "queue_id": 0, "queue_offset": 42}`:
/// gives a message back. The broker group that owns the queue (`?broker_group=`
/// when several serve the topic) stores a copy in `%RETRY%{group}` after the
/// growing delay, or in `%DLQ%{group}` once it was reconsumed
/// `consumer.max_reconsume_times` times. At least once: a give-back repeated after
/// a lost answer stores a second copy. With `auto_create_topics = false` the
/// retry and dead-letter topics must exist (an admin creates them with
/// `PUT /v1/topics/%RETRY%{group}` and `…/%DLQ%{group}`): TOPIC_NOT_FOUND
/// otherwise, naming the topic.
pub async fn give_back(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    let body = (|| -> Result<RetryRequest, ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        // The retry topic's name must be a valid name too.
        validate_name("group", &retry_topic(&group)).map_err(|_| {
            ApiError::bad_request(format!(
                "group `{group}` is too long for its retry topic `{}`",
                retry_topic(&group)
            ))
        })?;
        let body: RetryRequest = parse_json(&request.body)?;
        validate_name("topic", &body.topic).map_err(ApiError::bad_request)?;
        caller.require(Action::Sub, Resource::Topic(&body.topic))?;
        Ok(body)
    })();
    let body = match body {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match routing::resolve(
        &node,
        &body.topic,
        param.broker_group.as_deref(),
        Choice::Unique,
    ) {
        Ok(Target::Local) => {}
        Ok(Target::Forward(route)) => {
            return forward::to_group(&node, request, &route, "broker_group").await
        }
        Err(e) => return e.into_response(),
    }
    forward::at_leader(&node, request, || async {
        let answer = give_back::give_back(&node, &group, &body).await?;
        Ok(Json(answer).into_response())
    })
    .await
}

/// `POST /v1/groups/{group}/offsets/reset` `{"topic": "t", "timestamp": MS}`: moves
/// the group's offset of every queue of the topic, in every broker group serving
/// it (or the one `?broker_group=` names), to the first message stored at or after
/// the time — backwards or forwards. Members running meanwhile commit over it: stop
/// them first, as with RocketMQ's offline reset.
pub async fn reset_offsets(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    request: WriteRequest,
) -> Result<Json<GroupOffsetsResponse>, ApiError> {
    validate_name("group", &group).map_err(ApiError::bad_request)?;
    let body: ResetOffsetsRequest = parse_json(&request.body)?;
    validate_name("topic", &body.topic).map_err(ApiError::bad_request)?;
    let serving = routing::serving(&node, &body.topic, param.broker_group.as_deref())?;
    if serving.is_empty() {
        return Err(ApiError::topic_not_found(&body.topic));
    }
    let mut offsets = Vec::new();
    for route in serving {
        let response = if route.is_local() {
            reset_here(&node, &group, &body, request.clone()).await
        } else {
            forward::to_group(&node, request.clone(), &route, "broker_group").await
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .map_err(|e| ApiError::internal(format!("reading an answer: {e}")))?;
        if !status.is_success() {
            let error: crate::api::ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::unavailable(format!("group `{}` answered {status}", route.group))
            })?;
            let code = ErrorCode::from_word(&error.code).unwrap_or(ErrorCode::Unavailable);
            return Err(ApiError::new(
                code,
                format!("group `{}`: {}", route.group, error.message),
            ));
        }
        let answer: GroupOffsetsResponse = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::unavailable(format!("group `{}` answered badly: {e}", route.group))
        })?;
        offsets.extend(answer.offsets);
    }
    forget_hand_off_hints(&node, &group, &body.topic).await;
    Ok(Json(GroupOffsetsResponse { group, offsets }))
}

/// Resets the offsets kept by this node's broker group (through its leader).
async fn reset_here(
    node: &Node,
    group: &str,
    body: &ResetOffsetsRequest,
    mut request: WriteRequest,
) -> Response {
    let config = match node.topic(&body.topic) {
        Ok(config) => config,
        Err(e) => return e.into_response(),
    };
    // For this broker group only: the leader must not fan out again.
    request.path_and_query =
        forward::with_param(&request.path_and_query, "broker_group", node.group());
    forward::at_leader(node, request, || async {
        let queues = config.read_queue_nums.max(config.write_queue_nums);
        for queue_id in 0..queues {
            let offset = node.shared.store.offset_by_timestamp(
                &body.topic,
                QueueId(queue_id),
                body.timestamp,
            );
            let commit = OffsetCommit {
                group: group.to_string(),
                topic: body.topic.clone(),
                queue_id: QueueId(queue_id),
                offset,
                force: true,
            };
            // Forced commits of offsets by time: a reset the new leader redoes
            // after a NOT_LEADER halfway commits the same offsets again.
            node.write(commit).await?;
        }
        Ok(Json(GroupOffsetsResponse {
            group: group.to_string(),
            offsets: local_group_offsets(node, group, Some(&body.topic)),
        })
        .into_response())
    })
    .await
}
