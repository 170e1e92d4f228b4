//! Adding a node to a group as an operation that outlives its request.
//!
//! `POST /v1/cluster/groups/{group}/nodes` starts a *join* on the group's leader
//! and answers 202 at once; `GET /v1/cluster/groups/{group}/nodes/{node_id}`
//! reports it ([`JoinView`]). A join adds the node as a learner, waits until it has
//! every entry the leader had when the wait began (up to `control.join_timeout`),
//! then makes it a voter. A join that times out removes its learner again, so a
//! node that never came up is not left behind in the membership.
//!
//! Invariants:
//! * At most one join per node id: repeating the add of a node at the same address
//!   answers the running join; another address is refused while it runs.
//! * At most [`MAX_RUNNING_JOINS`] run at once, and [`MAX_JOIN_RECORDS`] are
//!   remembered (the oldest finished ones are forgotten first).
//! * The membership changes joins make are serialized by one lock: openraft takes
//!   one change at a time and refuses a second that arrives meanwhile.
//! * The table is the leader's memory. After a leader change the new leader knows
//!   no joins; a learner left half-way is reported from the membership, and
//!   repeating the add there resumes it.
//! * A join's task holds only a weak reference to its node and is aborted when
//!   the table is dropped, so a stopping node does not wait for joins.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics};
use tokio::task::AbortHandle;

use crate::api::{JoinState, JoinView};
use crate::replication::type_config::{NodeId, NodeInfo, TypeConfig};
use crate::service::node::Node;
use crate::storage::now_ms;

/// Joins running at once on one leader.
pub const MAX_RUNNING_JOINS: usize = 8;
/// Joins remembered (running and finished) on one leader.
pub const MAX_JOIN_RECORDS: usize = 64;
/// How often a join looks at the learner's progress.
const POLL: Duration = Duration::from_millis(20);

/// Why a join was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(
        "node {node_id} is being added at {address}; wait for that join to end (GET this path with /{node_id}) before adding it elsewhere"
    )]
    OtherAddress { node_id: NodeId, address: String },
    #[error(
        "{MAX_RUNNING_JOINS} joins are running on this leader, the most at once; retry when one has ended"
    )]
    Busy,
}

struct Record {
    view: JoinView,
    /// Which start of this node's join the record is (a repeated add after a
    /// failure starts another).
    run: u64,
    task: Option<AbortHandle>,
}

/// The joins this node runs while it leads.
#[derive(Default)]
pub struct JoinTable {
    records: Mutex<BTreeMap<NodeId, Record>>,
    runs: AtomicU64,
    /// Serializes the membership changes of joins.
    changes: tokio::sync::Mutex<()>,
}

impl Drop for JoinTable {
    fn drop(&mut self) {
        let records = self.records.get_mut().unwrap_or_else(|p| p.into_inner());
        for record in records.values() {
            if let Some(task) = &record.task {
                task.abort();
            }
        }
    }
}

impl JoinTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Record>> {
        // Every update is a single assignment: a panicking holder leaves it whole.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The join of `node_id` this leader remembers.
    pub fn get(&self, node_id: NodeId) -> Option<JoinView> {
        self.lock().get(&node_id).map(|r| r.view.clone())
    }

    /// Starts the join of `node_id` at `url` on `node` (the leader), or answers
    /// the one running for the same address.
    ///
    /// # Errors
    /// A join of the node at another address runs, or too many joins run.
    pub fn start(
        &self,
        node: &Arc<Node>,
        node_id: NodeId,
        url: &str,
    ) -> Result<JoinView, JoinError> {
        let mut records = self.lock();
        if let Some(record) = records.get(&node_id) {
            if !record.view.state.is_final() {
                if record.view.address == url {
                    return Ok(record.view.clone());
                }
                return Err(JoinError::OtherAddress {
                    node_id,
                    address: record.view.address.clone(),
                });
            }
        }
        if records
            .values()
            .filter(|r| !r.view.state.is_final())
            .count()
            >= MAX_RUNNING_JOINS
        {
            return Err(JoinError::Busy);
        }
        records.remove(&node_id);
        while records.len() >= MAX_JOIN_RECORDS {
            // MAX_RUNNING_JOINS < MAX_JOIN_RECORDS: a finished one exists.
            let oldest = records
                .iter()
                .filter(|(_, r)| r.view.state.is_final())
                .min_by_key(|(_, r)| r.view.finished_ms)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => records.remove(&id),
                None => break,
            };
        }
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let view = JoinView {
            group: node.group().to_string(),
            node_id,
            address: url.to_string(),
            state: JoinState::AddingLearner,
            message: None,
            started_ms: Some(now_ms()),
            finished_ms: None,
        };
        let task = tokio::spawn(run_join(
            Arc::downgrade(node),
            node_id,
            url.to_string(),
            run,
        ));
        records.insert(
            node_id,
            Record {
                view: view.clone(),
                run,
                task: Some(task.abort_handle()),
            },
        );
        Ok(view)
    }

    /// Moves run `run` of `node_id`'s join to `state` (a later run owns the
    /// record otherwise, and this one changes nothing).
    fn set(&self, node_id: NodeId, run: u64, state: JoinState, message: Option<String>) {
        let mut records = self.lock();
        let Some(record) = records.get_mut(&node_id).filter(|r| r.run == run) else {
            return;
        };
        record.view.state = state;
        record.view.message = message;
        if state.is_final() {
            record.view.finished_ms = Some(now_ms());
            record.task = None;
        }
    }
}

/// The task of one join: runs it and records how it ended.
async fn run_join(node: Weak<Node>, node_id: NodeId, url: String, run: u64) {
    let outcome = join(&node, node_id, &url, run).await;
    let Some(node) = node.upgrade() else {
        return;
    };
    let (state, message) = match outcome {
        Ok(message) => (JoinState::Done, message),
        Err(message) => (JoinState::Failed, message),
    };
    if state == JoinState::Failed {
        tracing::warn!(node_id, %message, "join failed");
    }
    node.joins.set(node_id, run, state, Some(message));
}

/// The node, while it runs.
fn alive(node: &Weak<Node>) -> Result<Arc<Node>, String> {
    node.upgrade()
        .ok_or_else(|| "the leader stopped during the join".to_string())
}

/// Adds the learner, waits for it, promotes it. `Ok` says how it ended well,
/// `Err` why it did not and what is left behind.
async fn join(weak: &Weak<Node>, node_id: NodeId, url: &str, run: u64) -> Result<String, String> {
    let holds_learner_at = {
        let node = alive(weak)?;
        let _change = node.joins.changes.lock().await;
        let metrics = node.raft_metrics();
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|id| id == node_id) {
            return Ok(format!("node {node_id} is a voter already"));
        }
        // The log index of a membership that holds the learner: the wait below
        // judges "removed" only from a membership at least that new.
        let holds_learner_at = if membership.get_node(&node_id).is_none() {
            let learner = NodeInfo {
                url: url.to_string(),
            };
            let added = bounded(&node, "adding the learner", "nothing was changed", || {
                node.raft.add_learner(node_id, learner.clone(), false)
            })
            .await?;
            added.log_id.index
        } else {
            membership_index(&metrics)
        };
        node.joins.set(node_id, run, JoinState::CatchingUp, None);
        holds_learner_at
    };
    match wait_for_catch_up(weak, node_id, holds_learner_at).await {
        Ok(()) => {}
        Err(Behind::Gone(why)) => return Err(why),
        Err(Behind::TimedOut(why)) => {
            let node = alive(weak)?;
            node.joins
                .set(node_id, run, JoinState::RemovingLearner, Some(why.clone()));
            let _change = node.joins.changes.lock().await;
            let removal = bounded(&node, "removing", "", || {
                node.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            })
            .await;
            return Err(match removal {
                Ok(_) => format!("{why}; the learner was removed. Start the node, then add it again"),
                Err(failure) => format!(
                    "{why}; removing the learner failed ({failure}): DELETE /v1/cluster/groups/{}/nodes/{node_id} removes it",
                    node.group()
                ),
            });
        }
    }
    let node = alive(weak)?;
    node.joins.set(node_id, run, JoinState::Promoting, None);
    let _change = node.joins.changes.lock().await;
    bounded(
        &node,
        "promoting the learner",
        "it stays a learner: add it again to retry",
        || {
            node.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
        },
    )
    .await?;
    Ok(format!("node {node_id} is a voter"))
}

/// A membership change of a join, bounded by `control.join_timeout`: without a
/// quorum openraft waits for one indefinitely, and the join would keep the change
/// lock (every other join waits on it) and its join slot for good.
///
/// A change refused because the previous membership is not committed yet is made
/// again until it is (or the bound passes): a leader just elected has not
/// committed its own first entry, and a removal made through `DELETE …/nodes/{id}`
/// may still be committing. Both end by themselves.
async fn bounded<T, F, Fut>(node: &Node, what: &str, left: &str, change: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<
        Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
    >,
{
    let limit = node.config.control.join_timeout;
    let deadline = tokio::time::Instant::now() + limit.0;
    let mut waited_for_previous = false;
    loop {
        match tokio::time::timeout_at(deadline, change()).await {
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )))) if tokio::time::Instant::now() + IN_PROGRESS_RETRY < deadline => {
                waited_for_previous = true;
                tokio::time::sleep(IN_PROGRESS_RETRY).await;
            }
            Ok(result) => return result.map_err(|e| raft_failure(e, what, left)),
            Err(_) => {
                let why = if waited_for_previous {
                    format!("the previous membership change did not commit within {limit}")
                } else {
                    format!("no answer within {limit} (no quorum?)")
                };
                return Err(raft_words(what, &why, left));
            }
        }
    }
}

/// How long a join waits before making a change again whose previous membership
/// was not committed yet.
const IN_PROGRESS_RETRY: Duration = Duration::from_millis(50);

/// Why a learner did not catch up.
enum Behind {
    /// The join cannot go on here (leadership moved, the node was removed).
    Gone(String),
    /// `control.join_timeout` passed.
    TimedOut(String),
}

/// The log index of the membership `metrics` show (0 before any).
fn membership_index(metrics: &RaftMetrics<TypeConfig>) -> u64 {
    metrics.membership_config.log_id().map_or(0, |id| id.index)
}

/// Whether the learner was removed: only a membership at least as new as the one
/// that added it can say so. The metrics are a watch that may not yet show the
/// `add_learner` that just returned; read then, an older membership without the
/// learner means nothing.
fn learner_removed(shown_at: u64, shows_learner: bool, holds_learner_at: u64) -> bool {
    shown_at >= holds_learner_at && !shows_learner
}

/// Waits until the learner `node_id` has every entry the leader had when the wait
/// began (up to `control.join_timeout`). `holds_learner_at` is the log index of a
/// membership that holds it.
///
/// openraft's own "blocking" `add_learner` returns once the learner is within
/// `replication_lag_threshold` (5000) entries — which an empty node that is not
/// even running satisfies on a young log. A voter that has nothing weakens the
/// quorum until it catches up, so the promotion waits for the real thing.
async fn wait_for_catch_up(
    weak: &Weak<Node>,
    node_id: NodeId,
    holds_learner_at: u64,
) -> Result<(), Behind> {
    let (target, timeout) = {
        let node = alive(weak).map_err(Behind::Gone)?;
        (
            node.raft_metrics().last_log_index.unwrap_or(0),
            node.config.control.join_timeout,
        )
    };
    let deadline = tokio::time::Instant::now() + timeout.0;
    loop {
        {
            let node = alive(weak).map_err(Behind::Gone)?;
            let metrics = node.raft_metrics();
            if metrics.current_leader != Some(node.id()) {
                let leader = metrics
                    .current_leader
                    .and_then(|l| node.node_url(&metrics, l));
                return Err(Behind::Gone(format!(
                    "this node stopped leading (leader now {}) while node {node_id} caught up; the learner stays: add it again on the leader to finish",
                    leader.as_deref().unwrap_or("unknown")
                )));
            }
            let shows_learner = metrics
                .membership_config
                .membership()
                .get_node(&node_id)
                .is_some();
            if learner_removed(membership_index(&metrics), shows_learner, holds_learner_at) {
                return Err(Behind::Gone(format!(
                    "node {node_id} was removed while it was joining"
                )));
            }
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).cloned())
                .flatten()
                .map(|log_id| log_id.index);
            if matched.is_some_and(|m| m >= target) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Behind::TimedOut(format!(
                    "node {node_id} did not catch up to index {target} within {timeout} (it had {})",
                    matched.map_or("nothing".to_string(), |m| format!("index {m}"))
                )));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A failed membership change in words: what was tried, and what is left.
fn raft_failure(
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    what: &str,
    left: &str,
) -> String {
    let why = match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => format!(
            "this node stopped leading (leader now {})",
            forward
                .leader_node
                .map_or_else(|| "unknown".to_string(), |n| n.url)
        ),
        RaftError::APIError(e) => e.to_string(),
        RaftError::Fatal(e) => format!("raft stopped: {e}"),
    };
    raft_words(what, &why, left)
}

/// "what: why; left", without the last part when nothing is left.
fn raft_words(what: &str, why: &str, left: &str) -> String {
    if left.is_empty() {
        format!("{what}: {why}")
    } else {
        format!("{what}: {why}; {left}")
    }
}

#[cfg(test)]
mod tests {
    use super::learner_removed;

    #[test]
    fn a_membership_older_than_the_add_does_not_say_removed() {
        // The add committed the learner at index 12; the metrics still show the
        // membership of index 5, without it. The first version of the wait (any
        // membership without the learner means removed) failed joins this way.
        assert!(!learner_removed(5, false, 12));
        // The metrics caught up: the learner is there.
        assert!(!learner_removed(12, true, 12));
        // A later membership without it: removed (a DELETE during the join).
        assert!(learner_removed(14, false, 12));
        // A node already a learner when the join began: its current membership.
        assert!(learner_removed(12, false, 12));
    }
}
