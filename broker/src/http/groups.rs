//! Which broker group a request is for.
//!
//! A topic may be served by several groups, each with its own queues 0..n. A
//! request names its group with the query parameter `group` (`broker_group` on
//! consumer-group paths, whose `{group}` is the consumer group). Without it, this
//! node's group answers when it serves the topic; otherwise the only group that
//! does — and a send picks the serving groups in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Caller;
use super::extract::FORWARDED_HEADER;
use crate::error::{ApiError, ErrorCode};
use crate::service::control::GroupRoute;
use crate::service::node::Node;

/// The `group` query parameter of topic paths.
#[derive(Deserialize, Default)]
pub struct GroupParam {
    pub group: Option<String>,
}

/// The `broker_group` query parameter of consumer-group paths.
#[derive(Deserialize, Default)]
pub struct BrokerGroupParam {
    pub broker_group: Option<String>,
}

/// Where a request goes.
pub enum Target {
    /// This node's group.
    Local,
    /// Another group, through one of its nodes.
    Remote(Box<GroupRoute>),
}

/// What to do when several groups serve the topic and the request names none.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Reads: a queue id means nothing without its group, so name it.
    Unique,
    /// Sends: take the serving groups in turn.
    Rotate,
}

static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// The group named `group`, or BROKER_GROUP_NOT_FOUND listing the known ones.
pub fn named(node: &Node, group: &str) -> Result<Target, ApiError> {
    if group == node.group() {
        return Ok(Target::Local);
    }
    let routes = node.group_routes();
    routes
        .iter()
        .find(|route| route.group == group)
        .cloned()
        .map(|route| Target::Remote(Box::new(route)))
        .ok_or_else(|| {
            ApiError::broker_group_not_found(group, routes.iter().map(|r| r.group.as_str()))
        })
}

/// The group a request for `topic` goes to.
///
/// # Errors
/// An unknown named group; several serving groups for a read that names none.
pub fn resolve(
    node: &Node,
    topic: &str,
    requested: Option<&str>,
    choice: Choice,
) -> Result<Target, ApiError> {
    if let Some(group) = requested {
        return named(node, group);
    }
    if node.shared.state().topics.contains_key(topic) {
        return Ok(Target::Local);
    }
    let mut serving: Vec<GroupRoute> = node
        .routes
        .remote_groups()
        .into_iter()
        .filter(|route| route.topics.contains_key(topic))
        .collect();
    match serving.len() {
        // Nobody serves it: this group answers TOPIC_NOT_FOUND (or auto-creates).
        0 => Ok(Target::Local),
        1 => Ok(Target::Remote(Box::new(serving.remove(0)))),
        n if choice == Choice::Rotate => {
            let i = ROTATION.fetch_add(1, Ordering::Relaxed) % n;
            Ok(Target::Remote(Box::new(serving.swap_remove(i))))
        }
        _ => Err(ApiError::bad_request(format!(
            "topic `{topic}` is served by groups {}: name one with ?group=",
            serving
                .iter()
                .map(|r| r.group.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The live groups serving `topic` (by name), or the one named by
/// `requested`.
pub fn serving(
    node: &Node,
    topic: &str,
    requested: Option<&str>,
) -> Result<Vec<GroupRoute>, ApiError> {
    if let Some(group) = requested {
        return Ok(match named(node, group)? {
            Target::Local => vec![node.local_route()],
            Target::Remote(route) => vec![*route],
        });
    }
    Ok(node
        .group_routes()
        .into_iter()
        .filter(|route| route.topics.contains_key(topic))
        .collect())
}

/// GETs `path_and_query` (which names the group) from a node of `route` on the
/// caller's behalf (its token goes along and is checked there) and decodes the
/// answer; an API error answer is passed through.
pub async fn fetch<T: DeserializeOwned>(
    node: &Node,
    caller: &Caller,
    route: &GroupRoute,
    path_and_query: &str,
) -> Result<T, ApiError> {
    let mut last = None;
    for url in route.urls() {
        let mut request = node
            .peer_request(reqwest::Method::GET, &url, path_and_query)
            .header(FORWARDED_HEADER, node.config.node_info().url);
        if let Some(authorization) = &caller.authorization {
            request = request.header(axum::http::header::AUTHORIZATION, authorization);
        }
        let answer = request
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                return response.json::<T>().await.map_err(|e| {
                    ApiError::unavailable(format!("group `{}` answered badly: {e}", route.group))
                });
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: crate::api::ErrorBody = response.json().await.map_err(|e| {
                    ApiError::unavailable(format!("group `{}` answered badly: {e}", route.group))
                })?;
                let code = ErrorCode::from_word(&body.code).unwrap_or(if status < 500 {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::Unavailable
                });
                return Err(ApiError::new(
                    code,
                    format!("group `{}`: {}", route.group, body.message),
                ));
            }
            Err(e) => last = Some(format!("{url}: {e}")),
        }
    }
    Err(ApiError::unavailable(format!(
        "no node of group `{}` answered ({})",
        route.group,
        last.unwrap_or_else(|| "no node known".into())
    )))
}

/// Percent-encodes a path segment or query value (names may hold `%`, keys any
/// character).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
