//! Test-only fault switches, compiled in only with the cargo feature
//! `fault-injection` and chosen at start-up by the environment variable
//! `BROKER_FAULT`.
//!
//! They exist so the Jepsen-style suite (`cluster-tests`, `scripts/jepsen.sh`) can
//! prove that it catches the bugs it claims to catch: a checker that never saw a
//! broken broker report an anomaly cannot be trusted when it reports none. Release
//! builds and `scripts/cluster.sh` never enable the feature; a broker built with
//! it logs the active switch loudly at start-up, and the suite checks that line
//! before it trusts a run with a switch.
//!
//! The switches (one at a time):
//! * `ack-before-commit` — the leader answers a send at once with the offsets it
//!   predicts and proposes the batch in the background. Writes that never commit
//!   (leader isolated, crashed) are acknowledged anyway, and concurrent sends get
//!   predicted offsets that read back differently.
//! * `skip-fsync` — the Raft log acknowledges appends without fsync
//!   (`raft-log-store`'s `fault_skip_fsync`). Only a loss of the page cache (power
//!   loss, not `kill -9`) turns this into lost writes.
//! * `ignore-dedup` — the leader drops `producer_id`/`sequence` before proposing,
//!   so a retried send is stored twice.
//! * `lagging-apply` — the state machine waits [`APPLY_LAG`] before applying each
//!   run of committed entries, so this node's store trails the group's. Not a bug
//!   but a timing: as leader it answers reads the others already see, which is
//!   how a test catches leader-side reads that do not wait for what was
//!   committed (a new leader's usual state right after an election).
//!
//! The hooks in other modules are single `#[cfg(feature = "fault-injection")]`
//! calls into this one.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{SendRequest, SendResponse, SendResultView};
use crate::replication::command::SendCommand;
use crate::service::node::Node;
use crate::storage::QueueId;

/// The environment variable that picks a switch.
pub const ENV_VAR: &str = "BROKER_FAULT";

/// One fault switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    AckBeforeCommit,
    SkipFsync,
    IgnoreDedup,
    LaggingApply,
}

impl Fault {
    /// Every switch with its `BROKER_FAULT` spelling.
    pub const ALL: [(Fault, &'static str); 4] = [
        (Fault::AckBeforeCommit, "ack-before-commit"),
        (Fault::SkipFsync, "skip-fsync"),
        (Fault::IgnoreDedup, "ignore-dedup"),
        (Fault::LaggingApply, "lagging-apply"),
    ];

    fn parse(text: &str) -> Option<Fault> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(fault, _)| *fault)
    }
}

static ACTIVE: OnceLock<Option<Fault>> = OnceLock::new();

/// Reads `BROKER_FAULT` once, at start-up, and logs the active switch.
///
/// # Errors
/// The variable names no known switch.
pub fn init() -> Result<(), String> {
    let fault = match std::env::var(ENV_VAR) {
        Ok(text) if !text.is_empty() => Some(Fault::parse(&text).ok_or_else(|| {
            let known: Vec<&str> = Fault::ALL.iter().map(|(_, name)| *name).collect();
            format!(
                "{ENV_VAR}={text} is not a fault switch (known: {})",
                known.join(", ")
            )
        })?),
        _ => None,
    };
    if let Some(fault) = fault {
        // Plain stderr as well as tracing: the suite greps the node log for this line,
        // whatever the log filter.
        eprintln!("broker: FAULT INJECTION ACTIVE: {fault:?} — this node is deliberately broken");
        tracing::warn!(?fault, "fault injection active");
    }
    ACTIVE.get_or_init(|| fault);
    Ok(())
}

fn active(fault: Fault) -> bool {
    ACTIVE.get().copied().flatten() == Some(fault)
}

/// `skip-fsync`: the Raft log acknowledges appends without fsync.
pub fn adjust_log_store(
    mut config: raft_log_store::LogStoreConfig,
) -> raft_log_store::LogStoreConfig {
    config.fault_skip_fsync = active(Fault::SkipFsync);
    config
}

/// How long `lagging-apply` holds each run of committed entries.
pub const APPLY_LAG: std::time::Duration = std::time::Duration::from_millis(700);

/// `lagging-apply`: how long the state machine waits before applying.
pub fn apply_lag() -> Option<std::time::Duration> {
    active(Fault::LaggingApply).then_some(APPLY_LAG)
}

/// `ignore-dedup`: forget the idempotency keys of a send.
pub fn strip_dedup(mut request: SendRequest) -> SendRequest {
    if active(Fault::IgnoreDedup) {
        for message in &mut request.messages {
            message.producer_id = None;
            message.sequence = None;
        }
    }
    request
}

/// `ack-before-commit`: answers with predicted offsets and proposes in the
/// background; otherwise gives the command back for the normal path.
///
/// # Errors
/// The switch is off: the command, untouched.
pub fn ack_before_commit(node: &Arc<Node>, command: SendCommand) -> Result<Response, SendCommand> {
    if !active(Fault::AckBeforeCommit) {
        return Err(command);
    }
    // The offsets this batch would get if nothing else were in flight: the local
    // queue ends plus the messages before it in the batch.
    let mut next: BTreeMap<QueueId, u64> = BTreeMap::new();
    let results = command
        .messages
        .iter()
        .map(|m| {
            let offset = next.entry(m.queue_id).or_insert_with(|| {
                node.shared
                    .store
                    .queue_offsets(&command.topic, m.queue_id)
                    .map_or(0, |(_, max)| max.0)
            });
            let queue_offset = *offset;
            *offset += 1;
            SendResultView {
                msg_id: m.msg_id.to_string(),
                topic: command.topic.clone(),
                queue_id: m.queue_id.0,
                queue_offset,
                commit_log_offset: 0,
                store_timestamp: m.store_timestamp_ms,
                deliver_timestamp: None,
            }
        })
        .collect();
    let background = Arc::clone(node);
    tokio::spawn(async move {
        if let Err(e) = background.write(command).await {
            tracing::warn!(error = %e, "ack-before-commit: an acknowledged send did not commit");
        }
    });
    Ok(Json(SendResponse {
        results,
        group: node.group().to_string(),
        transaction_id: None,
    })
    .into_response())
}
