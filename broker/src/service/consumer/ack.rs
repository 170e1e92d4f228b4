//! Acks and lease changes (shared/API.md "Receive and ack") at the leader of the
//! broker group that stores the messages: each receipt handle names a lease
//! ([`ReceiptHandle`]); apply compares it with the message's current lease
//! (`replication::leases`), so an ack of a lease that ended, or was replaced by
//! a later delivery or change, is `EXPIRED` and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::receive::{ReceiptHandle, ACK_EXPIRED, ACK_INVALID, ACK_OK};
use crate::replication::leases::{Lease, LeaseCommand, LeaseOp, LeaseOutcome};
use crate::service::node::Node;
use crate::storage::{now_ms, QueueId};

/// What an ack answers for one handle (the API's status word).
pub fn status_word(outcome: LeaseOutcome) -> &'static str {
    match outcome {
        LeaseOutcome::Done | LeaseOutcome::AlreadyAcked => ACK_OK,
        LeaseOutcome::Expired => ACK_EXPIRED,
        LeaseOutcome::Stale | LeaseOutcome::Invalid => ACK_INVALID,
    }
}

fn expect(handle: &ReceiptHandle) -> Lease {
    Lease {
        attempt: handle.delivery_attempt,
        until_ms: handle.invisible_until,
    }
}

/// Acks `handles` of consumer group `group` (all of this node's broker group,
/// which it leads): one outcome per handle, in order. One entry per topic named.
///
/// # Errors
/// The write's (NOT_LEADER, UNAVAILABLE); nothing is acked for the topics not
/// yet written when one fails — an ack is safe to repeat while its lease runs.
pub async fn ack(
    node: &Node,
    group: &str,
    handles: &[ReceiptHandle],
) -> Result<Vec<LeaseOutcome>, BrokerError> {
    let mut outcomes = vec![LeaseOutcome::Invalid; handles.len()];
    let mut by_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, handle) in handles.iter().enumerate() {
        if handle.group == group && handle.broker_group == node.group() {
            by_topic.entry(&handle.topic).or_default().push(i);
        }
    }
    let now = now_ms();
    for (topic, indexes) in by_topic {
        if !node.shared.state().topics.contains_key(topic) {
            continue;
        }
        let ops = indexes
            .iter()
            .map(|&i| LeaseOp::Ack {
                queue_id: QueueId(handles[i].queue_id),
                offset: handles[i].queue_offset,
                expect: expect(&handles[i]),
            })
            .collect();
        let answered = node
            .write(LeaseCommand {
                group: group.to_string(),
                topic: topic.to_string(),
                now_ms: now,
                ops,
            })
            .await?;
        for (i, outcome) in indexes.into_iter().zip(answered) {
            outcomes[i] = outcome;
        }
    }
    let counters = &node.metrics.leases;
    for outcome in &outcomes {
        let counter = match status_word(*outcome) {
            ACK_OK => &counters.acked,
            ACK_EXPIRED => &counters.ack_expired,
            _ => &counters.ack_invalid,
        };
        Metrics::add(counter, 1);
    }
    Ok(outcomes)
}

/// Replaces the lease `handle` names by one of `invisible` from now (zero: the
/// message is given back now, and the next receive delivers it again). Answers
/// the new lease.
///
/// # Errors
/// `LeaseExpired` when the handle's lease ended; `MessageNotFound` when it
/// names no message the group was delivered (a lease is a resource: a handle
/// naming none is like an unknown id); the write's errors.
pub async fn change_invisible(
    node: &Node,
    group: &str,
    handle: &ReceiptHandle,
    invisible: Duration,
) -> Result<Lease, BrokerError> {
    if handle.group != group {
        return Err(BrokerError::MessageNotFound(format!(
            "the receipt handle names a lease of consumer group `{}`, not of `{group}`",
            handle.group
        )));
    }
    node.topic(&handle.topic)?;
    let now = now_ms();
    let until_ms = now + invisible.as_millis() as u64;
    let outcome = node
        .write(LeaseCommand {
            group: group.to_string(),
            topic: handle.topic.clone(),
            now_ms: now,
            ops: vec![LeaseOp::Change {
                queue_id: QueueId(handle.queue_id),
                offset: handle.queue_offset,
                expect: expect(handle),
                until_ms,
            }],
        })
        .await?
        .pop()
        .unwrap_or(LeaseOutcome::Invalid);
    let counters = &node.metrics.leases;
    match outcome {
        LeaseOutcome::Done => {
            if invisible.is_zero() {
                Metrics::add(&counters.nacked, 1);
            }
            Ok(Lease {
                attempt: handle.delivery_attempt,
                until_ms,
            })
        }
        LeaseOutcome::Expired | LeaseOutcome::AlreadyAcked => {
            Metrics::add(&counters.ack_expired, 1);
            Err(BrokerError::LeaseExpired(format!(
                "the lease of message {}/{}/{} (delivery {}) ended at {}: it may be delivered again; receive it again to get a new handle",
                handle.topic,
                handle.queue_id,
                handle.queue_offset,
                handle.delivery_attempt,
                handle.invisible_until
            )))
        }
        LeaseOutcome::Stale | LeaseOutcome::Invalid => {
            Metrics::add(&counters.ack_invalid, 1);
            Err(BrokerError::MessageNotFound(format!(
                "the receipt handle names no message delivered to consumer group `{group}` ({}/{}/{}, delivery {})",
                handle.topic, handle.queue_id, handle.queue_offset, handle.delivery_attempt
            )))
        }
    }
}
