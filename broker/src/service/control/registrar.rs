//! Route registration: while this node leads its group (with a quorum behind it),
//! it pushes the group's registration to every node it knows every
//! `control.register_interval` — the seeds, its own group's members, and every
//! node learned from registrations and their answers. Like a RocketMQ broker
//! registering with every NameServer, minus the NameServer.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::debug;

use super::routes::RegistrationAck;
use crate::service::node::Node;

/// Path of the internal registration endpoint.
pub const REGISTER_PATH: &str = "/internal/routes/register";

/// Longest one registration push may take: a slow or dead node must not delay
/// the next round for the others.
const PUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until the node's runtime stops; the caller aborts it on shutdown.
pub async fn run(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(node.config.control.register_interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !node.is_leader() {
            continue;
        }
        push_once(&node).await;
        crate::service::users::pull_missing_users(&node).await;
    }
}

/// Pushes this group's registration to every known node once, concurrently.
pub async fn push_once(node: &Arc<Node>) {
    let registration = node.registration();
    let mut targets = node.routes.known_nodes();
    targets.extend(registration.replicas.iter().cloned());
    targets.sort();
    targets.dedup();
    let own = node.config.node_info().url;
    let mut pushes = JoinSet::new();
    for url in targets.into_iter().filter(|url| *url != own) {
        let request = node
            .peer_request(reqwest::Method::POST, &url, REGISTER_PATH)
            .timeout(PUSH_TIMEOUT)
            .json(&registration);
        pushes.spawn(async move {
            let answer = async {
                request
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<RegistrationAck>()
                    .await
            }
            .await;
            (url, answer)
        });
    }
    while let Some(joined) = pushes.join_next().await {
        match joined {
            Ok((_, Ok(ack))) => node.routes.learn_nodes(ack.known_nodes),
            // A node that is down is the normal case during faults: debug only.
            Ok((url, Err(e))) => debug!(%url, error = %e, "route registration failed"),
            Err(e) => debug!(error = %e, "route registration task failed"),
        }
    }
}
