//! The data plane: send, pull (with tag filtering; the long-poll loop is
//! [`crate::service::pull`]), queue offsets, offset by time, queries, and consumer
//! group offsets.
//!
//! Writes go through Raft on the leader (a follower forwards them); reads are served
//! by any replica from what it has applied — applied entries are committed and
//! never roll back.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::{self, encode, BrokerGroupParam, GroupParam};
use super::pull_body::{PullBody, PullFormat};
use crate::api::{
    CommitOffsetRequest, CommitOffsetResponse, GroupOffsetView, GroupOffsetsResponse,
    MessagesResponse, OffsetResponse, QueueView, QueuesResponse, SendRequest, MAX_FILTER_TAGS,
};
use crate::auth::{Action, Resource};
use crate::metrics::Metrics;
use crate::service::node::Node;
use crate::service::offsets;
use crate::service::pull::Pull;
use crate::service::routing::{self, Choice, Target};
use crate::service::send;
use crate::storage::{MessageId, PullStatus, QueueId, QueueOffset, TagFilter};
use crate::topic::validate_name;

/// Longest a pull may be held (API: `max_wait_ms` ≤ 30000).
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most messages one pull or query returns.
pub const MAX_PULL_MESSAGES: usize = 1024;
/// Messages a pull returns when the request does not say.
pub const DEFAULT_PULL_MESSAGES: usize = 32;

/// `POST /v1/topics/{topic}/messages`
pub async fn send(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(param): ApiQuery<GroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    Metrics::add(&node.metrics.send_requests_total, 1);
    match routing::resolve(&node, &topic, param.group.as_deref(), Choice::Rotate) {
        Ok(Target::Local) => {}
        Ok(Target::Forward(route)) => {
            return forward::to_group(&node, request, &route, "group").await
        }
        Err(e) => return e.into_response(),
    }
    // Only a follower can have been removed (a removed leader steps down), so the
    // leader's send path does not pay for this second metrics copy.
    if !node.is_leader() && node.is_removed() {
        return ApiError::unavailable(format!(
            "node {} was removed from group `{}`; send to another node",
            node.id(),
            node.group()
        ))
        .into_response();
    }
    let (body, born_host) = (request.body.clone(), request.born_host.clone());
    forward::at_leader(&node, request, || async {
        let parsed: SendRequest = parse_json(&body)?;
        #[cfg(feature = "fault-injection")]
        let parsed = crate::faults::strip_dedup(parsed);
        let command = send::prepare(&node, &topic, parsed, &born_host)?;
        #[cfg(feature = "fault-injection")]
        let command = match crate::faults::ack_before_commit(&node, command) {
            Ok(premature_answer) => return Ok(premature_answer),
            Err(command) => command,
        };
        Ok(Json(send::commit(&node, &caller, command).await?).into_response())
    })
    .await
}

#[derive(Deserialize)]
pub struct PullQuery {
    offset: u64,
    max_messages: Option<usize>,
    max_wait_ms: Option<u64>,
    tags: Option<String>,
}

pub use crate::service::pull::message_view;

fn status_word(status: PullStatus) -> &'static str {
    match status {
        PullStatus::Found => "FOUND",
        PullStatus::NoNewMsg => "NO_NEW_MSG",
        PullStatus::NoMatchedMsg => "NO_MATCHED_MSG",
        PullStatus::OffsetTooSmall => "OFFSET_TOO_SMALL",
        PullStatus::OffsetOverflow => "OFFSET_OVERFLOW",
    }
}

/// `GET /v1/topics/{topic}/queues/{queue_id}/messages`
pub async fn pull(
    State(node): State<Arc<Node>>,
    ApiPath((topic, queue_id)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<PullQuery>,
    ApiQuery(param): ApiQuery<GroupParam>,
    request: WriteRequest,
) -> Response {
    match routing::resolve(&node, &topic, param.group.as_deref(), Choice::Unique) {
        Ok(Target::Local) => {
            let format = PullFormat::of(&request.headers);
            pull_here(&node, topic, queue_id, query, format)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, "group").await,
        Err(e) => e.into_response(),
    }
}

async fn pull_here(
    node: &Node,
    topic: String,
    queue_id: u32,
    query: PullQuery,
    format: PullFormat,
) -> Result<Response, ApiError> {
    let max_messages = query.max_messages.unwrap_or(DEFAULT_PULL_MESSAGES);
    if !(1..=MAX_PULL_MESSAGES).contains(&max_messages) {
        return Err(ApiError::bad_request(format!(
            "max_messages must be in 1..={MAX_PULL_MESSAGES}"
        )));
    }
    let max_wait_ms = query.max_wait_ms.unwrap_or(0);
    if max_wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "max_wait_ms must be at most {MAX_WAIT_MS}"
        )));
    }
    let tags = query.tags.as_deref().unwrap_or("*");
    if tags.split("||").count() > MAX_FILTER_TAGS {
        return Err(ApiError::bad_request(format!(
            "tags names at most {MAX_FILTER_TAGS} tags (a protocol limit)"
        )));
    }
    let pull = Pull {
        topic,
        queue: QueueId(queue_id),
        offset: QueueOffset(query.offset),
        max_messages,
        max_wait: Duration::from_millis(max_wait_ms),
        filter: TagFilter::parse(tags).map_err(ApiError::bad_request)?,
    };
    // Each message is encoded where it lies in the store; the closure fills the body.
    let budget = node.shared.store.config().pull_max_bytes;
    let mut body = PullBody::new(
        format,
        max_messages,
        usize::try_from(budget).unwrap_or(usize::MAX),
    );
    let pulled = crate::service::pull::pull_mapped(node, pull, |view| body.push(view)).await?;
    Ok(body.finish(
        status_word(pulled.status),
        pulled.next_offset.0,
        pulled.min_offset.0,
        pulled.max_offset.0,
    ))
}

/// `GET /v1/topics/{topic}/queues`
pub async fn queues(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(param): ApiQuery<GroupParam>,
    caller: Caller,
) -> Result<Json<QueuesResponse>, ApiError> {
    let serving = routing::serving(&node, &topic, param.group.as_deref())?;
    if serving.is_empty() {
        return Err(ApiError::topic_not_found(&topic));
    }
    let mut queues = Vec::new();
    for route in serving {
        if route.is_local() {
            queues.extend(local_queues(&node, &topic)?);
        } else {
            let path = format!(
                "/v1/topics/{}/queues?group={}",
                encode(&topic),
                encode(&route.group)
            );
            let answer: QueuesResponse = groups::fetch(&node, &caller, &route, &path).await?;
            queues.extend(answer.queues);
        }
    }
    Ok(Json(QueuesResponse { topic, queues }))
}

/// The queues of `topic` in this node's group.
fn local_queues(node: &Node, topic: &str) -> Result<Vec<QueueView>, ApiError> {
    let config = node.topic(topic)?;
    let count = config.read_queue_nums.max(config.write_queue_nums);
    let queues = (0..count)
        .map(|queue_id| {
            let (min, max) = node
                .shared
                .store
                .queue_offsets(topic, QueueId(queue_id))
                .unwrap_or((QueueOffset(0), QueueOffset(0)));
            QueueView {
                group: node.group().to_string(),
                queue_id,
                min_offset: min.0,
                max_offset: max.0,
            }
        })
        .collect();
    Ok(queues)
}

#[derive(Deserialize)]
pub struct TimestampQuery {
    timestamp: u64,
}

/// `GET /v1/topics/{topic}/queues/{queue_id}/offset?timestamp=MS`
pub async fn offset_by_time(
    State(node): State<Arc<Node>>,
    ApiPath((topic, queue_id)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<TimestampQuery>,
    ApiQuery(param): ApiQuery<GroupParam>,
    request: WriteRequest,
) -> Response {
    match routing::resolve(&node, &topic, param.group.as_deref(), Choice::Unique) {
        Ok(Target::Local) => offset_by_time_here(&node, &topic, queue_id, &query)
            .map_or_else(IntoResponse::into_response, IntoResponse::into_response),
        Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, "group").await,
        Err(e) => e.into_response(),
    }
}

fn offset_by_time_here(
    node: &Node,
    topic: &str,
    queue_id: u32,
    query: &TimestampQuery,
) -> Result<Json<OffsetResponse>, ApiError> {
    let offset = offsets::by_time(node, topic, queue_id, query.timestamp)?;
    Ok(Json(OffsetResponse { offset: offset.0 }))
}

/// `GET /v1/messages/{msg_id}`
///
/// A message id carries the hash of the group that stored it: the query goes to
/// that group.
pub async fn message_by_id(
    State(node): State<Arc<Node>>,
    ApiPath(msg_id): ApiPath<String>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    let id = match MessageId::parse(&msg_id) {
        Some(id) => id,
        None => {
            return ApiError::bad_request(format!("`{msg_id}` is not a message id (32 hex digits)"))
                .into_response()
        }
    };
    match routing::by_id(&node, &id) {
        Some(Target::Local) => {}
        Some(Target::Forward(route)) => {
            return forward::to_group(&node, request, &route, "group").await
        }
        None => {
            return ApiError::new(
                ErrorCode::MessageNotFound,
                format!("no message with id {msg_id}: the group that stored it is not known here"),
            )
            .into_response()
        }
    }
    let Some(message) = node.shared.store.message_by_id(&id) else {
        return ApiError::new(
            ErrorCode::MessageNotFound,
            format!("no message with id {msg_id}"),
        )
        .into_response();
    };
    // Its topic is known only now.
    if let Err(e) = caller.require(Action::Sub, Resource::Topic(&message.topic)) {
        return e.into_response();
    }
    Json(message_view(message)).into_response()
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: String,
    begin: Option<u64>,
    end: Option<u64>,
    max: Option<usize>,
}

/// `GET /v1/topics/{topic}/messages?key=K&begin=MS&end=MS&max=N`
///
/// Asks every group serving the topic (or the one `?group=` names) and merges.
pub async fn messages_by_key(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(query): ApiQuery<KeyQuery>,
    ApiQuery(param): ApiQuery<GroupParam>,
    caller: Caller,
) -> Result<Json<MessagesResponse>, ApiError> {
    let serving = routing::serving(&node, &topic, param.group.as_deref())?;
    if serving.is_empty() {
        return Err(ApiError::topic_not_found(&topic));
    }
    let max = query.max.unwrap_or(DEFAULT_PULL_MESSAGES);
    if !(1..=MAX_PULL_MESSAGES).contains(&max) {
        return Err(ApiError::bad_request(format!(
            "max must be in 1..={MAX_PULL_MESSAGES}"
        )));
    }
    // An empty range (begin after end) finds nothing, like any range without
    // the key in it.
    let (begin, end) = (query.begin.unwrap_or(0), query.end.unwrap_or(u64::MAX));
    let mut messages = Vec::new();
    for route in serving {
        if route.is_local() {
            node.topic(&topic)?;
            messages.extend(
                node.shared
                    .store
                    .messages_by_key(&topic, &query.key, begin, end, max)
                    .into_iter()
                    .map(message_view),
            );
            continue;
        }
        let path = format!(
            "/v1/topics/{}/messages?key={}&begin={begin}&end={end}&max={max}&group={}",
            encode(&topic),
            encode(&query.key),
            encode(&route.group)
        );
        match groups::fetch::<MessagesResponse>(&node, &caller, &route, &path).await {
            Ok(answer) => messages.extend(answer.messages),
            Err(e) if e.code == ErrorCode::MessageNotFound => {}
            Err(e) => return Err(e),
        }
    }
    messages.sort_by_key(|m| (m.store_timestamp, m.commit_log_offset));
    messages.truncate(max);
    if messages.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MessageNotFound,
            format!(
                "no message of `{topic}` with key `{}` in that time range",
                query.key
            ),
        ));
    }
    Ok(Json(MessagesResponse { messages }))
}

/// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}`
///
/// Offsets live in the broker group that owns the queue: `?broker_group=` names it
/// when several groups serve the topic.
pub async fn commit_offset(
    State(node): State<Arc<Node>>,
    ApiPath((group, topic, queue_id)): ApiPath<(String, String, u32)>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    match routing::resolve(&node, &topic, param.broker_group.as_deref(), Choice::Unique) {
        Ok(Target::Local) => {}
        Ok(Target::Forward(route)) => {
            return forward::to_group(&node, request, &route, "broker_group").await
        }
        Err(e) => return e.into_response(),
    }
    let prepared = async {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        offsets::queue(&node, &topic, queue_id)?;
        let body: CommitOffsetRequest = parse_json(&request.body)?;
        if body.force {
            // Moving a group's offset backwards is a reset.
            caller.require(Action::Admin, Resource::Group(&group))?;
        }
        Ok::<_, ApiError>(
            offsets::plan_commit(&node, &group, &topic, queue_id, body.offset, body.force).await?,
        )
    }
    .await;
    let commit = match prepared {
        Ok(commit) => commit,
        Err(e) => return e.into_response(),
    };
    forward::at_leader(&node, request, || async {
        let offset = offsets::commit(&node, commit).await?;
        Ok(Json(CommitOffsetResponse {
            group,
            topic,
            queue_id,
            offset: offset.0,
        })
        .into_response())
    })
    .await
}

#[derive(Deserialize)]
pub struct GroupOffsetsQuery {
    topic: Option<String>,
    /// Answer from this node's (and each group's nearest node's) own copy.
    #[serde(default)]
    stale: bool,
}

/// `GET /v1/groups/{group}/offsets?topic=T`
///
/// Every broker group's offsets of the consumer group (or the one `?broker_group=`
/// names): at least every commit acknowledged before the request began (each
/// group's answering node first applies its leader's read index,
/// `Node::linearize`), or with `stale=true` whatever each answering node has
/// applied, also when it is cut off from its leader.
pub async fn group_offsets(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(query): ApiQuery<GroupOffsetsQuery>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
) -> Result<Json<GroupOffsetsResponse>, ApiError> {
    validate_name("group", &group).map_err(ApiError::bad_request)?;
    if let Some(topic) = &query.topic {
        validate_name("topic", topic).map_err(ApiError::bad_request)?;
        caller.require(Action::Sub, Resource::Topic(topic))?;
    }
    let routes = match param.broker_group.as_deref() {
        Some(name) => match routing::named(&node, name)? {
            Target::Local => vec![node.local_route()],
            Target::Forward(route) => vec![*route],
        },
        None => node.group_routes(),
    };
    let mut offsets = Vec::new();
    for route in routes {
        if route.is_local() {
            if !query.stale {
                node.linearize().await?;
            }
            offsets.extend(local_group_offsets(&node, &group, query.topic.as_deref()));
            continue;
        }
        let mut path = format!(
            "/v1/groups/{}/offsets?broker_group={}",
            encode(&group),
            encode(&route.group)
        );
        if let Some(topic) = &query.topic {
            path.push_str(&format!("&topic={}", encode(topic)));
        }
        if query.stale {
            path.push_str("&stale=true");
        }
        let answer: GroupOffsetsResponse = groups::fetch(&node, &caller, &route, &path).await?;
        offsets.extend(answer.offsets);
    }
    // Only the topics the caller may consume.
    offsets.retain(|offset| caller.allows(Action::Sub, Resource::Topic(&offset.topic)));
    Ok(Json(GroupOffsetsResponse { group, offsets }))
}

/// The consumer group's committed offsets kept by this node's broker group.
///
/// An offset below the queue's minimum (its messages deleted by retention) is
/// reported as the minimum: that is where the group resumes.
pub fn local_group_offsets(node: &Node, group: &str, topic: Option<&str>) -> Vec<GroupOffsetView> {
    let committed: Vec<(String, QueueId, QueueOffset)> = node
        .shared
        .state()
        .consumer_offsets
        .iter()
        .filter(|(key, _)| key.group == group && topic.is_none_or(|t| t == key.topic))
        .map(|(key, offset)| (key.topic.clone(), key.queue_id, *offset))
        .collect();
    committed
        .into_iter()
        .map(|(topic, queue_id, offset)| {
            let (min, max) = node
                .shared
                .store
                .queue_offsets(&topic, queue_id)
                .map_or((0, 0), |(min, max)| (min.0, max.0));
            let offset = offset.0.max(min);
            GroupOffsetView {
                group: node.group().to_string(),
                topic,
                queue_id: queue_id.0,
                offset,
                max_offset: max,
                lag: max.saturating_sub(offset),
            }
        })
        .collect()
}
