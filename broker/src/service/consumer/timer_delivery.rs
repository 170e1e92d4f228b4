//! Delivery of timer messages: while this node leads its group, every
//! `consumer.delivery_interval` it reads the timers that are due from its timer
//! index, in key order, and proposes them as [`DeliverTimersCommand`]s of at most
//! [`MAX_BATCH_MESSAGES`] messages (RocketMQ 5's `TimerMessageStore`, with the
//! progress replicated: see `replication::timers` for why each timer is
//! delivered exactly once).
//!
//! Never early: a timer is read only once the leader's clock passed its due
//! time, and apply refuses a delivery stored before it.

use std::sync::Weak;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::delay;
use crate::metrics::Metrics;
use crate::replication::command::{DeliverTimersCommand, DueMessage};
use crate::replication::proposal::Delivered;
use crate::replication::timers::{TimerEntry, TimerKey, TIMER_QUEUE};
use crate::service::node::Node;
use crate::storage::{now_ms, QueueOffset, TagFilter};
use crate::topic::TIMER_TOPIC;

/// Most messages one run moves.
pub const MAX_BATCH_MESSAGES: usize = 256;
/// Most due timers read from the index at once (24 bytes each).
const MAX_READ: usize = 64 * MAX_BATCH_MESSAGES;
/// Most message bytes one run moves (at least one message).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Runs until the node is dropped (it holds the node only while delivering).
pub async fn run(node: Weak<Node>) {
    let Some(interval) = node
        .upgrade()
        .map(|n| n.config.consumer.delivery_interval.0)
    else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        // Due timers are stored again in their topic: not above the disk
        // low-water mark (they wait, and go out once there is room).
        if !node.is_leader() || node.health.disk_over_mark() {
            continue;
        }
        // Drain what is due; a full run means there may be more.
        loop {
            match deliver_due(&node).await {
                Ok(Run::Full) => continue,
                Ok(Run::Partial | Run::Idle) => break,
                Err(e) => {
                    debug!(error = %e, "timer delivery failed; next round");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

/// What one delivery attempt did.
#[derive(Debug, PartialEq, Eq)]
enum Run {
    /// Nothing due (or another run moved first).
    Idle,
    /// Delivered everything due it read.
    Partial,
    /// Delivered all it read, and the read was cut short: more may be due.
    Full,
}

/// Delivers the due timers the index holds, up to [`MAX_READ`] of them, as
/// consecutive runs of at most [`MAX_BATCH_MESSAGES`].
async fn deliver_due(node: &Node) -> Result<Run, String> {
    let mut from = node.shared.state().timers.delivered;
    let now = now_ms();
    // One read of the index serves many runs: reading a slot walks all its
    // records, so a slot of many timers is walked once per MAX_READ, not per run.
    let due = node
        .shared
        .timers
        .due(from, now, MAX_READ)
        .map_err(|e| format!("reading the timer index: {e}"))?;
    if due.entries.is_empty() {
        return Ok(Run::Idle);
    }
    let more = due.entries.len() == MAX_READ;
    let mut rest = &due.entries[..];
    while !rest.is_empty() {
        let (command, lags, taken) = plan_run(node, from, rest, due.indexed_to, now)?;
        rest = &rest[taken..];
        let to = command.to;
        let count = command.messages.len();
        match node.write(command).await {
            Ok(Ok(Delivered { delivered, skipped })) => {
                if skipped > 0 {
                    info!(
                        skipped,
                        "timer messages dropped: their topic or queue is gone"
                    );
                }
                Metrics::add(&node.metrics.timers_delivered_total, delivered as u64);
                for lag in lags {
                    node.metrics.timer_lag.observe(Duration::from_millis(lag));
                }
                debug!(delivered, "timer messages delivered");
                from = to;
            }
            // Another run moved the delivered key first (a retry of ours, or an
            // earlier leader's), or a timer stored meanwhile falls inside this
            // run: read again.
            Ok(Err(rejection)) => {
                debug!(?rejection, count, "timer run refused");
                return Ok(Run::Idle);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(if more { Run::Full } else { Run::Partial })
}

/// The next run from `from` over the front of `entries`: the command, the lag of
/// each message it moves, and how many entries it covers.
fn plan_run(
    node: &Node,
    from: TimerKey,
    entries: &[TimerEntry],
    through: u64,
    now: u64,
) -> Result<(DeliverTimersCommand, Vec<u64>, usize), String> {
    let store = &node.shared.store;
    let mut to = from;
    let mut messages = Vec::new();
    let mut lags = Vec::new();
    let mut bytes = 0usize;
    let mut taken = 0;
    for entry in entries.iter().take(MAX_BATCH_MESSAGES) {
        let page = store
            .pull(
                TIMER_TOPIC,
                TIMER_QUEUE,
                QueueOffset(entry.key.offset),
                1,
                &TagFilter::All,
            )
            .map_err(|e| e.to_string())?;
        let found = page
            .messages
            .into_iter()
            .find(|m| m.queue_offset.0 == entry.key.offset);
        if let Some(message) = &found {
            if !messages.is_empty() && bytes + message.body.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += message.body.len();
        }
        match found.map(|message| delay::delivery(message, now)) {
            Some(Some(draft)) => {
                lags.push(now.saturating_sub(entry.key.due_ms));
                messages.push(DueMessage {
                    due_ms: entry.key.due_ms,
                    message: draft,
                });
            }
            Some(None) => warn!(key = ?entry.key, "timer message without its real topic: dropped"),
            // Retention holds every pending timer's record (the timer index's
            // floor): this is a bug or a lost file, not a normal path.
            None => warn!(key = ?entry.key, "timer message missing from the timer topic: skipped"),
        }
        to = entry.key;
        taken += 1;
    }
    let command = DeliverTimersCommand {
        from,
        to,
        through,
        messages,
    };
    Ok((command, lags, taken))
}
