//! Forwarding requests to another node: writes that reach a follower go to the
//! leader, and requests for a topic served by another broker group go to a node of
//! that group.
//!
//! The forwarded request carries [`FORWARDED_HEADER`] with the client's address: it
//! keeps the message's born host and stops a request from bouncing between nodes
//! that disagree about the leader or the routes (a forwarded request is never
//! forwarded again). It carries the cluster secret, without which the receiver
//! ignores that header, and the caller's own `Authorization`, which the receiver
//! checks again: a forwarded request has its caller's rights, no more.

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::extract::{WriteRequest, FORWARDED_HEADER};
use crate::api::ErrorBody;
use crate::metrics::Metrics;
use crate::service::control::GroupRoute;
use crate::service::node::{Leadership, Node};

/// Runs the write `here` when this node leads its group, and forwards `request`
/// to the leader when it does not — before running it, or when it answers
/// NOT_LEADER (leadership moved while it ran; the future is dropped by then, with
/// whatever it held). Every write handler of the group's own state goes through
/// this.
pub async fn at_leader<F, Fut>(node: &Node, request: WriteRequest, here: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    if !node.is_leader() {
        return to_leader(node, request, None).await;
    }
    match here().await {
        Ok(response) => response,
        Err(e) if e.code == ErrorCode::NotLeader => to_leader(node, request, e.leader).await,
        Err(e) => e.into_response(),
    }
}

/// Forwards `request` to the leader, or answers NOT_LEADER when forwarding is off,
/// the leader is unknown or is this node, or the request was already forwarded;
/// UNAVAILABLE with the reason when this node's storage failed.
pub async fn to_leader(
    node: &Node,
    request: WriteRequest,
    known_leader: Option<String>,
) -> Response {
    // A failed node's view of the leader stopped with its Raft: say why it cannot
    // take the request rather than send it somewhere stale or answer a null leader.
    if let Some(failure) = node.health.failure() {
        return ApiError::from(failure.to_error()).into_response();
    }
    if node.leadership() == Leadership::StaleLeader {
        return ApiError::unavailable(
            "this node leads its group but has lost contact with a quorum; retry on another node",
        )
        .into_response();
    }
    let leader = known_leader.or_else(|| node.leader_url());
    let own_url = node.config.node_info().url;
    let leader = match leader {
        Some(url)
            if node.config.http.forward_writes && !request.was_forwarded() && url != own_url =>
        {
            url
        }
        other => return ApiError::not_leader(other.filter(|url| *url != own_url)).into_response(),
    };
    Metrics::add(&node.metrics.forwarded_requests_total, 1);
    match send(node, &request, &leader, &request.path_and_query).await {
        Ok(response) => relay(response).await,
        Err(e) if e.is_connect() => ApiError::not_leader(Some(leader)).into_response(),
        Err(e) => ApiError::unavailable(format!(
            "forwarding to the leader {leader} failed: {e}; the write may have been applied, retry with producer_id and sequence"
        ))
        .into_response(),
    }
}

/// Forwards `request` to the broker group `route`, naming the group in the query
/// parameter `param` so the receiver handles it as its own. Tries the group's leader
/// first, follows one NOT_LEADER answer, and moves on to the other replicas when a
/// node cannot be reached.
pub async fn to_group(
    node: &Node,
    request: WriteRequest,
    route: &GroupRoute,
    param: &str,
) -> Response {
    if request.was_forwarded() {
        return routes_disagree(node, route);
    }
    let path = with_param(&request.path_and_query, param, &route.group);
    let mut urls = route.urls();
    if urls.is_empty() {
        return ApiError::unavailable(format!("group `{}` has no known node", route.group))
            .into_response();
    }
    Metrics::add(&node.metrics.forwarded_requests_total, 1);
    let mut followed_leader = false;
    let mut last_error = String::new();
    let mut i = 0;
    while i < urls.len() {
        let url = urls[i].clone();
        i += 1;
        match send(node, &request, &url, &path).await {
            Ok(response) if response.status().as_u16() == 421 && !followed_leader => {
                followed_leader = true;
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                match serde_json::from_slice::<ErrorBody>(&body)
                    .ok()
                    .and_then(|e| e.leader)
                {
                    Some(leader) if leader != url => urls.insert(i, leader),
                    _ => return relay_bytes(status.as_u16(), "application/json", body),
                }
            }
            Ok(response) => return relay(response).await,
            // Nothing was sent: the next replica is as good.
            Err(e) if e.is_connect() => last_error = format!("{url}: {e}"),
            Err(e) => {
                return ApiError::unavailable(format!(
                    "forwarding to group `{}` at {url} failed: {e}; a write may have been applied, retry with producer_id and sequence",
                    route.group
                ))
                .into_response()
            }
        }
    }
    ApiError::unavailable(format!(
        "no node of group `{}` could be reached ({last_error})",
        route.group
    ))
    .into_response()
}

/// The answer to a request another node forwarded here for `route.group`: the
/// forwarding node thought this node serves it, so the routes of the two disagree
/// (a group was just moved or expired). Retrying resolves it.
fn routes_disagree(node: &Node, route: &GroupRoute) -> Response {
    ApiError::unavailable(format!(
        "this node is in group `{}`, not `{}`; routes are changing, retry",
        node.group(),
        route.group
    ))
    .into_response()
}

/// `path_and_query` with the query parameter `name` set to `value` (replacing it).
pub fn with_param(path_and_query: &str, name: &str, value: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(&format!("http://x{path_and_query}")) else {
        return path_and_query.to_string();
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

async fn send(
    node: &Node,
    request: &WriteRequest,
    base_url: &str,
    path_and_query: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    forwarded(node, request, base_url, path_and_query)
        // A forwarded long poll may be held up to its max_wait_ms (≤ 30 s).
        .timeout(
            node.config
                .http
                .write_timeout
                .0
                .max(std::time::Duration::from_secs(30))
                + std::time::Duration::from_secs(5),
        )
        .send()
        .await
}

/// `request` as it goes to `base_url`, with the headers every forward carries;
/// without a timeout (the caller sets one).
fn forwarded(
    node: &Node,
    request: &WriteRequest,
    base_url: &str,
    path_and_query: &str,
) -> reqwest::RequestBuilder {
    let mut forward = node
        .peer_request(request.method.clone(), base_url, path_and_query)
        .header(FORWARDED_HEADER, request.born_host.as_str())
        .body(request.body.clone());
    // `Accept` too: the answer's form is negotiated end to end (a pull's binary
    // form, a stream's events), and the relay keeps its `Content-Type`.
    for name in [
        axum::http::header::CONTENT_TYPE,
        axum::http::header::AUTHORIZATION,
        axum::http::header::ACCEPT,
    ] {
        if let Some(value) = request.headers.get(&name) {
            forward = forward.header(name, value);
        }
    }
    // The same request id in both nodes' logs.
    if let Some(id) = request.headers.get(super::request_id::REQUEST_ID_HEADER) {
        forward = forward.header(super::request_id::REQUEST_ID_HEADER, id);
    }
    forward
}

/// Forwards a streaming pull (server-sent events) to a node of the broker group
/// `route`, naming the group in the query parameter `param`, and relays the
/// answer's body as it arrives: [`to_group`] reads a whole answer before relaying
/// it, and a stream does not end. Any replica serves a stream, so the first node
/// of the group that answers does; an error it answers (before any event) is
/// relayed like any other. The request goes with the headers of every forward,
/// and `Last-Event-ID`.
pub async fn stream_to_group(
    node: &Node,
    request: WriteRequest,
    route: &GroupRoute,
    param: &str,
) -> Response {
    /// How long the other node may take to answer the stream's head: it checks
    /// the request with a pull that is not held.
    const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    if request.was_forwarded() {
        return routes_disagree(node, route);
    }
    let path = with_param(&request.path_and_query, param, &route.group);
    Metrics::add(&node.metrics.forwarded_requests_total, 1);
    let mut last_error = String::from("no known node");
    for url in route.urls() {
        let mut forward = forwarded(node, &request, &url, &path);
        if let Some(value) = request.headers.get(super::stream::LAST_EVENT_ID) {
            forward = forward.header(super::stream::LAST_EVENT_ID, value);
        }
        match tokio::time::timeout(HEAD_TIMEOUT, forward.send()).await {
            Ok(Ok(response)) if response.status().is_success() => return relay_stream(response),
            Ok(Ok(response)) => return relay(response).await,
            // A read: the next replica is as good.
            Ok(Err(e)) => last_error = format!("{url}: {e}"),
            Err(_) => last_error = format!("{url}: no answer within {HEAD_TIMEOUT:?}"),
        }
    }
    ApiError::unavailable(format!(
        "no node of group `{}` could be reached ({last_error})",
        route.group
    ))
    .into_response()
}

/// Relays a stream's answer chunk by chunk. The other node sends at least a
/// keep-alive comment every [`super::stream::KEEP_ALIVE_INTERVAL`]: twice that
/// without a byte means it is gone (a peer cut off without a FIN), and the relay
/// ends so the client resumes elsewhere.
fn relay_stream(response: reqwest::Response) -> Response {
    let idle_timeout = super::stream::KEEP_ALIVE_INTERVAL * 2;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = axum::http::HeaderMap::new();
    for name in [
        axum::http::header::CONTENT_TYPE,
        axum::http::header::CACHE_CONTROL,
    ] {
        if let Some(value) = response.headers().get(name.as_str()) {
            if let Ok(value) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
    let body = futures::stream::unfold(Some(response), move |response| async move {
        let mut response = response?;
        match tokio::time::timeout(idle_timeout, response.chunk()).await {
            Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(response))),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some((Err(e.to_string()), None)),
            Err(_) => Some((
                Err(format!("no byte from the serving node in {idle_timeout:?}")),
                None,
            )),
        }
    });
    (status, headers, axum::body::Body::from_stream(body)).into_response()
}

async fn relay(response: reqwest::Response) -> Response {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    match response.bytes().await {
        Ok(body) => relay_bytes(status, &content_type, body),
        Err(e) => ApiError::unavailable(format!(
            "reading the forwarded answer failed: {e}; a write may have been applied"
        ))
        .into_response(),
    }
}

fn relay_bytes(status: u16, content_type: &str, body: bytes::Bytes) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    // The other node's error code, for this node's rejection counter.
    let code = (!status.is_success())
        .then(|| serde_json::from_slice::<crate::api::ErrorBody>(&body).ok())
        .flatten()
        .and_then(|error| crate::http::error::ErrorCode::from_word(&error.code));
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response();
    if let Some(code) = code {
        response.extensions_mut().insert(code);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::with_param;

    #[test]
    fn sets_or_replaces_a_query_parameter() {
        assert_eq!(with_param("/v1/t", "group", "b"), "/v1/t?group=b");
        assert_eq!(
            with_param("/v1/t?offset=3&group=a", "group", "b"),
            "/v1/t?offset=3&group=b"
        );
        assert_eq!(
            with_param("/v1/t?key=a%20b", "group", "b"),
            "/v1/t?key=a+b&group=b"
        );
    }
}
