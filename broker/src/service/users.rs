//! User changes across broker groups (shared/API.md "Security"). The node that
//! takes a change makes the record — a new token and its hash, a revision — and
//! applies it to every broker group through [`INTERNAL_USERS_PATH`] on each
//! group's leader, so every group stores the same record (a token is generated
//! once). A group that cannot be reached catches up from the others by
//! anti-entropy ([`pull_missing_users`], run by each leader after its
//! registration round).

use serde::{Deserialize, Serialize};

use crate::auth::users::{UserRecord, MAX_RECORDS_PER_CHANGE};
use crate::error::BrokerError;
use crate::replication::proposal::PutUsers;
use crate::service::control::GroupRoute;
use crate::service::node::Node;

/// Internal endpoint: `GET` answers this group's whole table (for anti-entropy),
/// `POST` merges records into it (at the group's leader).
pub const INTERNAL_USERS_PATH: &str = "/internal/users";

/// Body of `POST` [`INTERNAL_USERS_PATH`] and answer of its `GET`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserRecords {
    pub records: Vec<UserRecord>,
}

/// Applies `records` to every known broker group; answers the groups that took
/// them and those that could not be reached.
///
/// # Errors
/// `Unavailable` when no group took them (nothing changed anywhere, or only where
/// a later retry changes it again to the same).
pub async fn apply_everywhere(
    node: &Node,
    records: Vec<UserRecord>,
) -> Result<(Vec<String>, Vec<String>), BrokerError> {
    let mut applied = Vec::new();
    let mut pending = Vec::new();
    let mut last_error = String::new();
    for route in node.group_routes() {
        match apply_in_group(node, &route, &records).await {
            Ok(()) => applied.push(route.group),
            Err(e) => {
                tracing::warn!(group = %route.group, error = %e, "a user change did not reach a group");
                last_error = format!("group `{}`: {e}", route.group);
                pending.push(route.group);
            }
        }
    }
    if applied.is_empty() {
        return Err(BrokerError::unavailable(format!(
            "no broker group took the change ({last_error}); retry"
        )));
    }
    Ok((applied, pending))
}

/// Applies `records` in one group: proposed here when this node leads it, else
/// sent to its leader (following one NOT_LEADER answer).
async fn apply_in_group(
    node: &Node,
    route: &GroupRoute,
    records: &[UserRecord],
) -> Result<(), String> {
    if route.is_local() && node.is_leader() {
        return merge_here(node, records.to_vec())
            .await
            .map_err(|e| e.to_string());
    }
    let own = node.config.node_info().url;
    let mut urls: Vec<String> = route.urls().into_iter().filter(|url| *url != own).collect();
    let body = UserRecords {
        records: records.to_vec(),
    };
    let mut followed = false;
    let mut last = "no node known".to_string();
    let mut i = 0;
    while i < urls.len() {
        let url = urls[i].clone();
        i += 1;
        let answer = node
            .peer_request(reqwest::Method::POST, &url, INTERNAL_USERS_PATH)
            .timeout(node.config.http.write_timeout.0 + std::time::Duration::from_secs(1))
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status().as_u16() == 421 && !followed => {
                followed = true;
                let error: Option<crate::api::ErrorBody> = response.json().await.ok();
                if let Some(leader) = error.and_then(|e| e.leader) {
                    if leader != url && leader != own {
                        urls.insert(i, leader);
                    }
                }
                last = format!("{url}: not the leader");
            }
            Ok(response) => {
                let status = response.status();
                last = format!(
                    "{url}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}

/// Proposes a merge in this node's group (this node leads it), in chunks of
/// [`MAX_RECORDS_PER_CHANGE`].
///
/// # Errors
/// As [`Node::write`]; `LimitReached` when the user table is full.
pub async fn merge_here(node: &Node, records: Vec<UserRecord>) -> Result<(), BrokerError> {
    for chunk in records.chunks(MAX_RECORDS_PER_CHANGE) {
        let outcome = node.write(PutUsers(chunk.to_vec())).await?;
        if outcome.refused_full > 0 {
            return Err(BrokerError::LimitReached(format!(
                "the user table is full ({} users): delete users first",
                crate::auth::users::MAX_USERS
            )));
        }
    }
    Ok(())
}

/// Anti-entropy, run by a group's leader after each registration round: for
/// every other group whose user table differs from this one's, fetch it and
/// merge what it holds newer (the other group's leader does the same the other
/// way), so the tables converge.
pub async fn pull_missing_users(node: &Node) {
    let own_digest = node.shared.state().users.digest();
    for (group, leader_url, summary) in node.routes.users_summaries() {
        if summary.digest.is_empty() || summary.digest == own_digest {
            continue;
        }
        let answer = node
            .peer_request(reqwest::Method::GET, &leader_url, INTERNAL_USERS_PATH)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        let theirs: UserRecords = match answer {
            Ok(response) if response.status().is_success() => match response.json().await {
                Ok(records) => records,
                Err(e) => {
                    tracing::debug!(%group, error = %e, "undecodable user table");
                    continue;
                }
            },
            Ok(response) => {
                tracing::debug!(%group, status = %response.status(), "user table fetch refused");
                continue;
            }
            Err(e) => {
                tracing::debug!(%group, error = %e, "user table fetch failed");
                continue;
            }
        };
        let missing: Vec<UserRecord> = {
            let state = node.shared.state();
            let mut theirs_table = crate::auth::users::UserTable::default();
            for chunk in theirs.records.chunks(MAX_RECORDS_PER_CHANGE) {
                theirs_table.merge(chunk);
            }
            theirs_table.newer_than(&state.users).cloned().collect()
        };
        if missing.is_empty() {
            continue;
        }
        tracing::info!(%group, records = missing.len(), "taking user changes this group missed");
        if let Err(e) = merge_here(node, missing).await {
            tracing::warn!(%group, error = %e, "merging missed user changes failed");
        }
    }
}
