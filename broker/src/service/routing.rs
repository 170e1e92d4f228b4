//! Which broker group a request is for: this node's ([`Target::Local`]) or
//! another, through one of its nodes ([`Target::Forward`]).
//!
//! A topic may be served by several groups, each with its own queues 0..n. A
//! request names its group (the query parameter `group`, `broker_group` on
//! consumer-group paths). Without it, this node's group answers when it serves the
//! topic; otherwise the only group that does — and a send picks the serving groups
//! in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::BrokerError;
use crate::service::control::GroupRoute;
use crate::service::node::Node;

/// Where a request goes.
pub enum Target {
    /// This node's group.
    Local,
    /// Another group, through one of its nodes.
    Forward(Box<GroupRoute>),
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
pub fn named(node: &Node, group: &str) -> Result<Target, BrokerError> {
    if group == node.group() {
        return Ok(Target::Local);
    }
    let routes = node.group_routes();
    routes
        .iter()
        .find(|route| route.group == group)
        .cloned()
        .map(|route| Target::Forward(Box::new(route)))
        .ok_or_else(|| {
            BrokerError::broker_group_not_found(group, routes.iter().map(|r| r.group.as_str()))
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
) -> Result<Target, BrokerError> {
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
        1 => Ok(Target::Forward(Box::new(serving.remove(0)))),
        n if choice == Choice::Rotate => {
            let i = ROTATION.fetch_add(1, Ordering::Relaxed) % n;
            Ok(Target::Forward(Box::new(serving.swap_remove(i))))
        }
        _ => Err(BrokerError::invalid(format!(
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
) -> Result<Vec<GroupRoute>, BrokerError> {
    if let Some(group) = requested {
        return Ok(match named(node, group)? {
            Target::Local => vec![node.local_route()],
            Target::Forward(route) => vec![*route],
        });
    }
    Ok(node
        .group_routes()
        .into_iter()
        .filter(|route| route.topics.contains_key(topic))
        .collect())
}

/// The group that stored what `id` names (a message id, or a transaction id:
/// its first message's), by the group hash the id carries; `None` when no
/// known group has that hash.
pub fn by_id(node: &Node, id: &crate::storage::MessageId) -> Option<Target> {
    use crate::service::producer::{group_hash, group_hash_of};
    let hash = group_hash_of(id);
    if hash == group_hash(node.group()) {
        return Some(Target::Local);
    }
    node.routes
        .remote_groups()
        .into_iter()
        .find(|route| group_hash(&route.group) == hash)
        .map(|route| Target::Forward(Box::new(route)))
}
