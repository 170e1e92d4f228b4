//! Forwarding writes that reach a follower to the leader.
//!
//! The forwarded request carries [`FORWARDED_HEADER`] with the client's address: it
//! keeps the message's born host and stops a request from bouncing between nodes
//! that disagree about the leader (a forwarded request is never forwarded again).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::extract::{WriteRequest, FORWARDED_HEADER};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::node::{Leadership, Node};

/// Forwards `request` to the leader, or answers NOT_LEADER when forwarding is off,
/// the leader is unknown or is this node, or the request was already forwarded.
pub async fn to_leader(
    node: &Node,
    request: WriteRequest,
    known_leader: Option<String>,
) -> Response {
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
    let mut forward = node
        .http
        .request(
            request.method.clone(),
            format!("{leader}{}", request.path_and_query),
        )
        .timeout(node.config.http.write_timeout.0 + std::time::Duration::from_secs(5))
        .header(FORWARDED_HEADER, request.born_host.as_str())
        .body(request.body);
    if let Some(content_type) = request.headers.get(axum::http::header::CONTENT_TYPE) {
        forward = forward.header(axum::http::header::CONTENT_TYPE, content_type);
    }
    match forward.send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            match response.bytes().await {
                Ok(body) => (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response(),
                Err(e) => ApiError::unavailable(format!("reading the leader's answer failed: {e}; the write may have been applied"))
                    .into_response(),
            }
        }
        Err(e) if e.is_connect() => ApiError::not_leader(Some(leader)).into_response(),
        Err(e) => ApiError::unavailable(format!(
            "forwarding to the leader {leader} failed: {e}; the write may have been applied, retry with producer_id and sequence"
        ))
        .into_response(),
    }
}
