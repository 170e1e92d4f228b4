//! Receive, ack and change-invisible (shared/API.md "Receive and ack"): the
//! requests decoded and checked here, the work at the leader of each broker
//! group ([`crate::service::consumer::receive`], [`crate::service::consumer::ack`]).
//!
//! Any node answers. A receive without `?broker_group=` takes messages from
//! every broker group serving the topic: each group's part runs at its leader
//! (this node, or forwarded naming the group), without waiting first; when none
//! had anything, the receive waits at one group at a time (taken in turn,
//! [`MULTI_GROUP_WAIT`] each) until its `max_wait_ms` is over — a single group,
//! the usual case, waits there for all of it. Acks go to the groups their
//! handles name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::auth::Caller;
use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::BrokerGroupParam;
use crate::api::MAX_FILTER_TAGS;
use crate::auth::{Action, Resource};
use crate::receive::{
    AckRequest, AckResponse, AckResult, ChangeInvisibleRequest, ChangeInvisibleResponse,
    ReceiptHandle, ReceiveRequest, ReceiveResponse, ACK_INVALID, DEFAULT_INVISIBLE_MS,
    DEFAULT_RECEIVE_MESSAGES, MAX_INVISIBLE_MS, MAX_RECEIPT_HANDLE_LEN, MAX_RECEIVE_MESSAGES,
    MAX_RECEIVE_WAIT_MS, MIN_INVISIBLE_MS,
};
use crate::service::consumer::{ack, receive as receiving};
use crate::service::node::Node;
use crate::service::routing::{self, Target};
use crate::storage::TagFilter;
use crate::topic::{dlq_topic, validate_name};

/// How long a receive over several broker groups waits at one of them before
/// looking at the others again.
const MULTI_GROUP_WAIT: Duration = Duration::from_secs(1);

/// The pause after the group a multi-group receive waits at failed.
const FAILED_GROUP_PAUSE: Duration = Duration::from_millis(200);

static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// The query parameter that names the broker group a forwarded part is for.
const PARAM: &str = "broker_group";

/// `POST /v1/groups/{group}/topics/{topic}/receive`
pub async fn receive(
    State(node): State<Arc<Node>>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    let checked = (|| -> Result<(ReceiveRequest, receiving::Receive), ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        // Its dead-letter topic's name must be a valid name too (as give-back
        // checks the retry topic's): else its dead letters could never be stored.
        validate_name("group", &dlq_topic(&group)).map_err(|_| {
            ApiError::bad_request(format!(
                "group `{group}` is too long for its dead-letter topic `{}`",
                dlq_topic(&group)
            ))
        })?;
        validate_name("topic", &topic).map_err(ApiError::bad_request)?;
        caller.require(Action::Sub, Resource::Topic(&topic))?;
        let body: ReceiveRequest = parse_json(&request.body)?;
        let receive = checked_receive(&group, &topic, &body)?;
        Ok((body, receive))
    })();
    let (body, receive) = match checked {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    let groups = match param.broker_group.as_deref() {
        Some(name) => routing::named(&node, name).map(|target| vec![target]),
        None => serving(&node, &topic),
    };
    let mut groups = match groups {
        Ok(groups) => groups,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if groups.len() == 1 {
        let target = groups.remove(0);
        return in_group(&node, request, target, receive).await;
    }
    across_groups(&node, request, groups, body, receive).await
}

/// The receive with its bounds checked.
fn checked_receive(
    group: &str,
    topic: &str,
    body: &ReceiveRequest,
) -> Result<receiving::Receive, ApiError> {
    let max_messages = body.max_messages.unwrap_or(DEFAULT_RECEIVE_MESSAGES);
    if !(1..=MAX_RECEIVE_MESSAGES).contains(&max_messages) {
        return Err(ApiError::bad_request(format!(
            "max_messages must be in 1..={MAX_RECEIVE_MESSAGES}"
        )));
    }
    let invisible_ms = body.invisible_ms.unwrap_or(DEFAULT_INVISIBLE_MS);
    if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&invisible_ms) {
        return Err(ApiError::bad_request(format!(
            "invisible_ms must be in {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS}"
        )));
    }
    let max_wait_ms = body.max_wait_ms.unwrap_or(0);
    if max_wait_ms > MAX_RECEIVE_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "max_wait_ms must be at most {MAX_RECEIVE_WAIT_MS}"
        )));
    }
    let tags = body.tags.as_deref().unwrap_or("*");
    if tags.split("||").count() > MAX_FILTER_TAGS {
        return Err(ApiError::bad_request(format!(
            "tags names at most {MAX_FILTER_TAGS} tags (a protocol limit)"
        )));
    }
    Ok(receiving::Receive {
        group: group.to_string(),
        topic: topic.to_string(),
        max_messages,
        invisible: Duration::from_millis(invisible_ms),
        max_wait: Duration::from_millis(max_wait_ms),
        filter: TagFilter::parse(tags).map_err(ApiError::bad_request)?,
        fifo: body.fifo,
    })
}

/// Every broker group serving `topic`, this node's first when it is one.
fn serving(node: &Node, topic: &str) -> Result<Vec<Target>, crate::error::BrokerError> {
    let routes = routing::serving(node, topic, None)?;
    if routes.is_empty() {
        return Err(crate::error::BrokerError::topic_not_found(topic));
    }
    Ok(routes
        .into_iter()
        .map(|route| {
            if route.group == node.group() {
                Target::Local
            } else {
                Target::Forward(Box::new(route))
            }
        })
        .collect())
}

/// The receive in one broker group: at its leader, here or forwarded.
async fn in_group(
    node: &Arc<Node>,
    mut request: WriteRequest,
    target: Target,
    receive: receiving::Receive,
) -> Response {
    match target {
        Target::Forward(route) => forward::to_group(node, request, &route, PARAM).await,
        Target::Local => {
            // The leader receives in this group only, whatever its routes say.
            request.path_and_query =
                forward::with_param(&request.path_and_query, PARAM, node.group());
            forward::at_leader(node, request, || async {
                let messages = receiving::receive(node, receive).await?;
                Ok(Json(ReceiveResponse { messages }).into_response())
            })
            .await
        }
    }
}

/// A receive over several broker groups (see the module's comment).
async fn across_groups(
    node: &Arc<Node>,
    request: WriteRequest,
    groups: Vec<Target>,
    body: ReceiveRequest,
    receive: receiving::Receive,
) -> Response {
    let deadline = tokio::time::Instant::now() + receive.max_wait;
    let n = groups.len();
    let mut turn = ROTATION.fetch_add(1, Ordering::Relaxed);
    let mut messages = Vec::new();
    loop {
        // Each group, not waiting, until the receive is full.
        let mut last_error = None;
        let mut failed = 0;
        for i in 0..n {
            let want = receive.max_messages - messages.len();
            if want == 0 {
                break;
            }
            let part = part(&body, &receive, want, Duration::ZERO);
            match ask_group::<ReceiveResponse>(node, &request, &groups[(turn + i) % n], part).await
            {
                Ok(answer) => messages.extend(answer.messages),
                Err(error) => {
                    failed += 1;
                    last_error = Some(error);
                }
            }
        }
        if !messages.is_empty() {
            return Json(ReceiveResponse { messages }).into_response();
        }
        if failed == n {
            if let Some(error) = last_error {
                return error;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Json(ReceiveResponse { messages }).into_response();
        }
        // Wait at one group, then look at all again.
        let part = part(
            &body,
            &receive,
            receive.max_messages,
            left.min(MULTI_GROUP_WAIT),
        );
        match ask_group::<ReceiveResponse>(node, &request, &groups[turn % n], part).await {
            Ok(answer) => messages.extend(answer.messages),
            // That group cannot wait now (unreachable, no leader): do not ask
            // the others again at once.
            Err(_) => tokio::time::sleep(left.min(FAILED_GROUP_PAUSE)).await,
        }
        if !messages.is_empty() {
            return Json(ReceiveResponse { messages }).into_response();
        }
        turn += 1;
    }
}

/// One group's part of a receive: up to `max_messages`, waiting up to `wait`.
fn part(
    body: &ReceiveRequest,
    receive: &receiving::Receive,
    max_messages: usize,
    wait: Duration,
) -> Part {
    let body = ReceiveRequest {
        max_messages: Some(max_messages),
        max_wait_ms: Some(wait.as_millis() as u64),
        ..body.clone()
    };
    Part::Receive(
        body,
        receiving::Receive {
            max_messages,
            max_wait: wait,
            ..receive.clone()
        },
    )
}

/// One broker group's part of a receive or an ack, run at its leader.
enum Part {
    Receive(ReceiveRequest, receiving::Receive),
    Ack { group: String, handles: Vec<String> },
}

impl Part {
    fn body(&self) -> Vec<u8> {
        match self {
            Self::Receive(body, _) => serde_json::to_vec(body),
            Self::Ack { handles, .. } => serde_json::to_vec(&AckRequest {
                receipt_handles: handles.clone(),
            }),
        }
        .expect("a request body encodes")
    }
}

/// Sends `part` to the broker group `target` (naming it) and decodes the answer;
/// an error answer comes back as the response to relay.
async fn ask_group<T: DeserializeOwned>(
    node: &Arc<Node>,
    request: &WriteRequest,
    target: &Target,
    part: Part,
) -> Result<T, Response> {
    let mut forwarded = request.clone();
    forwarded.body = Bytes::from(part.body());
    let response = match target {
        Target::Forward(route) => forward::to_group(node, forwarded, route, PARAM).await,
        Target::Local => {
            forwarded.path_and_query =
                forward::with_param(&forwarded.path_and_query, PARAM, node.group());
            run_here(node, forwarded, part).await
        }
    };
    decode(response).await
}

/// Runs a part for this node's group at its leader (here, or forwarded there
/// as `request`).
async fn run_here(node: &Arc<Node>, request: WriteRequest, part: Part) -> Response {
    forward::at_leader(node, request, || async move {
        match part {
            Part::Receive(_, receive) => {
                let messages = receiving::receive(node, receive).await?;
                Ok(Json(ReceiveResponse { messages }).into_response())
            }
            Part::Ack { group, handles } => {
                Ok(Json(ack_here(node, &group, &handles).await?).into_response())
            }
        }
    })
    .await
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Response> {
    let status = response.status();
    let bytes = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return Err(
                ApiError::unavailable(format!("reading a group's answer: {e}")).into_response(),
            )
        }
    };
    if status == StatusCode::OK {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::unavailable(format!("a group answered badly: {e}")).into_response()
        })
    } else {
        Err((
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response())
    }
}

/// `POST /v1/groups/{group}/ack`
pub async fn ack(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    let parsed = (|| -> Result<AckRequest, ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        let body: AckRequest = parse_json(&request.body)?;
        if body.receipt_handles.is_empty() {
            return Err(ApiError::bad_request("receipt_handles names no handle"));
        }
        for handle in &body.receipt_handles {
            check_handle_length(handle)?;
        }
        for handle in body
            .receipt_handles
            .iter()
            .filter_map(|h| ReceiptHandle::parse(h))
        {
            caller.require(Action::Sub, Resource::Topic(&handle.topic))?;
        }
        Ok(body)
    })();
    let body = match parsed {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if let Some(name) = param.broker_group.as_deref() {
        // A part for one group (from another node, or a client that names it).
        return match routing::named(&node, name) {
            Err(e) => ApiError::from(e).into_response(),
            Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, PARAM).await,
            Ok(Target::Local) => {
                let part = Part::Ack {
                    group,
                    handles: body.receipt_handles,
                };
                run_here(&node, request, part).await
            }
        };
    }
    // Handles by the broker group they name; the others are INVALID.
    let mut results: Vec<AckResult> = body
        .receipt_handles
        .iter()
        .map(|handle| AckResult {
            receipt_handle: handle.clone(),
            status: ACK_INVALID.to_string(),
        })
        .collect();
    let mut by_group: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, text) in body.receipt_handles.iter().enumerate() {
        if let Some(handle) = ReceiptHandle::parse(text).filter(|h| h.group == group) {
            by_group.entry(handle.broker_group).or_default().push(i);
        }
    }
    for (broker_group, indexes) in by_group {
        let Ok(target) = routing::named(&node, &broker_group) else {
            continue;
        };
        let part = Part::Ack {
            group: group.clone(),
            handles: indexes
                .iter()
                .map(|&i| body.receipt_handles[i].clone())
                .collect(),
        };
        match ask_group::<AckResponse>(&node, &request, &target, part).await {
            Ok(answer) => {
                for (i, result) in indexes.into_iter().zip(answer.results) {
                    results[i].status = result.status;
                }
            }
            // Acks are safe to repeat while their leases run: the caller retries.
            Err(error) => return error,
        }
    }
    Json(AckResponse { results }).into_response()
}

/// Acks handles of this node's group, which it leads.
async fn ack_here(node: &Node, group: &str, texts: &[String]) -> Result<AckResponse, ApiError> {
    let parsed: Vec<Option<ReceiptHandle>> = texts
        .iter()
        .map(|text| ReceiptHandle::parse(text))
        .collect();
    let valid: Vec<ReceiptHandle> = parsed.iter().flatten().cloned().collect();
    let mut outcomes = ack::ack(node, group, &valid).await?.into_iter();
    let results = texts
        .iter()
        .zip(&parsed)
        .map(|(text, handle)| AckResult {
            receipt_handle: text.clone(),
            status: match handle {
                Some(_) => outcomes
                    .next()
                    .map_or(ACK_INVALID, ack::status_word)
                    .to_string(),
                None => ACK_INVALID.to_string(),
            },
        })
        .collect();
    Ok(AckResponse { results })
}

/// `POST /v1/groups/{group}/change-invisible`
pub async fn change_invisible(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    let checked = (|| -> Result<(ReceiptHandle, Duration), ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        let body: ChangeInvisibleRequest = parse_json(&request.body)?;
        check_handle_length(&body.receipt_handle)?;
        if body.invisible_ms != 0
            && !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&body.invisible_ms)
        {
            return Err(ApiError::bad_request(format!(
                "invisible_ms must be 0 (give the message back now) or in {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS}"
            )));
        }
        let handle = ReceiptHandle::parse(&body.receipt_handle).ok_or_else(|| {
            // Handles are opaque: one that is not the broker's names no lease,
            // like an unknown message id (404, as for a handle naming nothing).
            ApiError::new(
                ErrorCode::MessageNotFound,
                format!("receipt_handle names no message leased to consumer group `{group}`"),
            )
        })?;
        caller.require(Action::Sub, Resource::Topic(&handle.topic))?;
        Ok((handle, Duration::from_millis(body.invisible_ms)))
    })();
    let (handle, invisible) = match checked {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    match routing::named(&node, &handle.broker_group) {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, PARAM).await,
        Ok(Target::Local) => {
            forward::at_leader(&node, request, || async {
                let lease = ack::change_invisible(&node, &group, &handle, invisible).await?;
                let renewed = ReceiptHandle {
                    invisible_until: lease.until_ms,
                    ..handle.clone()
                };
                Ok(Json(ChangeInvisibleResponse {
                    receipt_handle: renewed.to_string(),
                    invisible_until: lease.until_ms,
                })
                .into_response())
            })
            .await
        }
    }
}

/// A receipt handle is 1..=[`MAX_RECEIPT_HANDLE_LEN`] characters (the broker
/// writes none longer; the document says so, counting characters as JSON
/// Schema does).
fn check_handle_length(handle: &str) -> Result<(), ApiError> {
    let chars = handle.chars().count();
    if !(1..=MAX_RECEIPT_HANDLE_LEN).contains(&chars) {
        return Err(ApiError::bad_request(format!(
            "a receipt handle is 1..={MAX_RECEIPT_HANDLE_LEN} characters, got {chars}"
        )));
    }
    Ok(())
}
