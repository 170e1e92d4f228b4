//! Receive (shared/API.md "Receive and ack"; RocketMQ 5's POP) at the leader of
//! one broker group: pick messages of a topic's queues for a consumer group,
//! lease them until `invisible_until` through Raft, and answer them with their
//! receipt handles; hold the receive while there is nothing to deliver.
//!
//! A round looks at each read queue in turn (from a rotating start, so no queue
//! starves): first the messages whose lease ended — each delivered again with
//! the next attempt, or, after `consumer.max_delivery_attempts`, stored in
//! `%DLQ%{group}` — then new ones from the queue's receive cursor, through the
//! tag filter. Everything a round decided is one [`LeaseCommand`], one Raft
//! entry; apply checks each op against the table (`replication::leases`), so a
//! decision made on a stale read changes nothing.
//!
//! Two receives at this leader never plan the same queue at once: a round takes
//! the queue at the [`LeaseDesk`] and skips queues another round holds, until
//! its entry is applied.
//!
//! `fifo`: a queue with any message leased delivers nothing; otherwise its run
//! starts at its first un-acked message (those whose lease ended, in queue
//! order, then new ones).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use crate::api::MessageView;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::receive::{ReceiptHandle, ReceivedMessage};
use crate::replication::leases::{
    Lease, LeaseCommand, LeaseKey, LeaseOp, LeaseOutcome, MAX_IN_FLIGHT_PER_QUEUE,
};
use crate::service::node::Node;
use crate::storage::{now_ms, PullStatus, QueueId, QueueOffset, StoredMessage, TagFilter};
use crate::topic::{dlq_topic, TopicConfig};

use super::retry::{origin_properties, PROPERTY_CONSUMER_GROUP};
use broker_proto::properties::PROPERTY_DELIVERY_ATTEMPTS;

/// A receive, its bounds checked by the caller (the protocol's).
#[derive(Clone, Debug)]
pub struct Receive {
    pub group: String,
    pub topic: String,
    pub max_messages: usize,
    pub invisible: Duration,
    pub max_wait: Duration,
    pub filter: TagFilter,
    pub fifo: bool,
}

/// The queues a receive round is planning at this leader.
#[derive(Default)]
pub struct LeaseDesk {
    busy: Mutex<HashSet<LeaseKey>>,
}

/// A queue taken at the desk; given back when dropped.
pub struct DeskGuard<'a> {
    desk: &'a LeaseDesk,
    key: LeaseKey,
}

impl LeaseDesk {
    /// Takes `key`, unless another round holds it.
    pub fn try_take(&self, key: LeaseKey) -> Option<DeskGuard<'_>> {
        let taken = {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            busy.insert(key.clone())
        };
        // The guard is made only for a key taken here, after the lock is let go:
        // dropping one locks the desk and gives its key back.
        taken.then(|| DeskGuard { desk: self, key })
    }
}

impl Drop for DeskGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.desk.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
    }
}

static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// Longest a held receive sleeps before it looks again without being woken. It
/// is woken by new messages and given-back ones, and sleeps until the earliest
/// lease end it saw (a lease that runs out wakes nobody); this bounds what it
/// could not see — a queue another round held while it looked.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// Shortest sleep of a held receive between rounds.
const MIN_LOOK: Duration = Duration::from_millis(50);

/// Receives from this node's group, which it leads: answers as soon as a round
/// leased something, or empty once `max_wait` passed.
///
/// # Errors
/// `TopicNotFound` (also when deleted while held), `NoPermission` for a topic
/// that is not readable; the write's errors (NOT_LEADER, UNAVAILABLE).
pub async fn receive(node: &Node, receive: Receive) -> Result<Vec<ReceivedMessage>, BrokerError> {
    let config = readable_topic(node, &receive.topic)?;
    let deadline = tokio::time::Instant::now() + receive.max_wait;
    let mut _held = None;
    loop {
        // Register before looking, so a message arriving in between wakes us.
        let waiting = !receive.max_wait.is_zero();
        let notifiers: Vec<Arc<Notify>> = if waiting {
            (0..config.read_queue_nums)
                .map(|queue| node.shared.waiters.notifier(&receive.topic, QueueId(queue)))
                .collect()
        } else {
            Vec::new()
        };
        let mut notified: Vec<_> = notifiers.iter().map(|n| Box::pin(n.notified())).collect();
        for future in &mut notified {
            future.as_mut().enable();
        }
        let (found, next_expiry_ms) = round(node, &receive, &config).await?;
        let now = tokio::time::Instant::now();
        if !found.is_empty() || now >= deadline || node.drain.is_draining() {
            return Ok(found);
        }
        if _held.is_none() {
            _held = node.shared.waiters.try_hold();
            if _held.is_none() {
                // Past the cap on held polls: answer now, as a pull does.
                return Ok(found);
            }
        }
        // Not sooner than MIN_LOOK: an ended lease this round could not move
        // (its dead-letter topic missing) must not make the loop spin.
        let until_expiry = next_expiry_ms.map_or(LOOK_AGAIN, |at| {
            Duration::from_millis(at.saturating_sub(now_ms())).max(MIN_LOOK)
        });
        let look_again = deadline.min(now + until_expiry.min(LOOK_AGAIN));
        if notified.is_empty() {
            tokio::time::sleep_until(look_again).await;
        } else {
            tokio::select! {
                _ = futures::future::select_all(notified) => {}
                () = tokio::time::sleep_until(look_again) => {}
            }
        }
        if !node.shared.state().topics.contains_key(&receive.topic) {
            return Err(BrokerError::topic_not_found(&receive.topic));
        }
    }
}

fn readable_topic(node: &Node, topic: &str) -> Result<TopicConfig, BrokerError> {
    let config = node.topic(topic)?;
    if !config.readable() {
        return Err(BrokerError::NoPermission(format!(
            "topic `{topic}` is not readable (perm {})",
            config.perm
        )));
    }
    Ok(config)
}

/// What a round plans to answer for one op.
enum Planned {
    /// Messages leased by a Deliver or Redeliver op, with their attempt.
    Deliveries(Vec<(StoredMessage, u32)>),
    /// A dead letter or a forgotten message: nothing to answer.
    Nothing,
}

/// One round: plan every queue, propose the plan as one entry, answer what
/// apply accepted — and the earliest lease end seen (Unix ms), when the round
/// leased nothing.
async fn round(
    node: &Node,
    receive: &Receive,
    config: &TopicConfig,
) -> Result<(Vec<ReceivedMessage>, Option<u64>), BrokerError> {
    let now = now_ms();
    let until_ms = now + receive.invisible.as_millis() as u64;
    let queues = config.read_queue_nums.max(1);
    let start = ROTATION.fetch_add(1, Ordering::Relaxed) as u32 % queues;
    let mut budget = receive.max_messages;
    let mut guards = Vec::new();
    let mut ops = Vec::new();
    let mut planned = Vec::new();
    let mut next_expiry = None;
    for i in 0..config.read_queue_nums {
        if budget == 0 {
            break;
        }
        let queue = QueueId((start + i) % queues);
        let key = LeaseKey {
            group: receive.group.clone(),
            topic: receive.topic.clone(),
            queue_id: queue,
        };
        let Some(guard) = node.leases.try_take(key.clone()) else {
            continue;
        };
        let before = ops.len();
        plan_queue(
            node,
            receive,
            &key,
            now,
            until_ms,
            &mut budget,
            &mut ops,
            &mut planned,
            &mut next_expiry,
        )?;
        if ops.len() > before {
            guards.push(guard);
        }
    }
    if ops.is_empty() {
        return Ok((Vec::new(), next_expiry));
    }
    ensure_dead_letter_topic(node, &receive.group, &mut ops, &mut planned).await?;
    if ops.is_empty() {
        return Ok((Vec::new(), next_expiry));
    }
    let command = LeaseCommand {
        group: receive.group.clone(),
        topic: receive.topic.clone(),
        now_ms: now,
        ops,
    };
    let counted: Vec<(bool, bool)> = command
        .ops
        .iter()
        .map(|op| {
            (
                matches!(op, LeaseOp::Redeliver { .. } | LeaseOp::DeadLetter { .. }),
                matches!(op, LeaseOp::DeadLetter { .. }),
            )
        })
        .collect();
    let outcomes = node.write(command).await?;
    drop(guards);
    let mut answer = Vec::new();
    let leases = &node.metrics.leases;
    for ((outcome, planned), (ended, dead)) in outcomes.into_iter().zip(planned).zip(counted) {
        if outcome != LeaseOutcome::Done {
            continue;
        }
        if ended {
            Metrics::add(&leases.expired, 1);
        }
        if dead {
            Metrics::add(&leases.dead_lettered, 1);
        }
        let Planned::Deliveries(messages) = planned else {
            continue;
        };
        for (message, attempt) in messages {
            Metrics::add(&leases.delivered, 1);
            if attempt > 1 {
                Metrics::add(&leases.redelivered, 1);
            }
            let bytes = message.body.len() as u64;
            node.metrics.record_out(&receive.topic, 1, bytes);
            answer.push(received(node, &receive.group, message, attempt, until_ms));
        }
    }
    Ok((answer, next_expiry))
}

/// Plans one queue: ended leases first (in queue order for `fifo`, else the
/// longest ended first), then new messages.
#[allow(clippy::too_many_arguments)]
fn plan_queue(
    node: &Node,
    receive: &Receive,
    key: &LeaseKey,
    now: u64,
    until_ms: u64,
    budget: &mut usize,
    ops: &mut Vec<LeaseOp>,
    planned: &mut Vec<Planned>,
    next_expiry: &mut Option<u64>,
) -> Result<(), BrokerError> {
    let queue = key.queue_id;
    let (cursor, ended, in_flight) = {
        let state = node.shared.state();
        match state.leases.queue(key) {
            None => (QueueOffset(0), Vec::new(), 0),
            Some(leases) => {
                if let Some(at) = leases.next_expiry() {
                    *next_expiry = Some(next_expiry.map_or(at, |earliest: u64| earliest.min(at)));
                }
                if receive.fifo && leases.any_leased(now) {
                    return Ok(());
                }
                // Ended leases looked at per round: the budget's worth, plus the
                // dead letters and vanished messages among them (bounded too).
                let look = *budget + 64;
                let ended: Vec<(u64, Lease)> = if receive.fifo {
                    leases.in_order().take(look).collect()
                } else {
                    leases.expired(now).take(look).collect()
                };
                (leases.cursor, ended, leases.in_flight())
            }
        }
    };
    let max_attempts = node.config.consumer.max_delivery_attempts;
    for (offset, lease) in ended {
        if *budget == 0 {
            return Ok(());
        }
        match read_one(node, &key.topic, queue, offset)? {
            None => {
                ops.push(LeaseOp::Forget {
                    queue_id: queue,
                    offset,
                    expect: lease,
                });
                planned.push(Planned::Nothing);
            }
            Some(message) if lease.attempt >= max_attempts => {
                let copy = dead_letter_copy(message, &key.group, lease.attempt, now);
                ops.push(LeaseOp::DeadLetter {
                    queue_id: queue,
                    offset,
                    expect: lease,
                    copy: Box::new(copy),
                });
                planned.push(Planned::Nothing);
            }
            Some(message) => {
                ops.push(LeaseOp::Redeliver {
                    queue_id: queue,
                    offset,
                    expect: lease,
                    until_ms,
                });
                planned.push(Planned::Deliveries(vec![(message, lease.attempt + 1)]));
                *budget -= 1;
            }
        }
    }
    let room = MAX_IN_FLIGHT_PER_QUEUE.saturating_sub(in_flight);
    let want = (*budget).min(room);
    if want == 0 {
        return Ok(());
    }
    let result = node
        .shared
        .store
        .pull(&key.topic, queue, cursor, want, &receive.filter)
        .map_err(|e| BrokerError::Internal(format!("reading queue {}/{queue}: {e}", key.topic)))?;
    let to = match result.status {
        // Nothing past the cursor (or a replica behind the cursor: never here,
        // the leader applied it).
        PullStatus::NoNewMsg | PullStatus::OffsetOverflow => return Ok(()),
        // Retention deleted what the group never received: start at what is
        // left; a filter skipped messages: they are consumed.
        PullStatus::Found | PullStatus::NoMatchedMsg | PullStatus::OffsetTooSmall => {
            result.next_offset
        }
    };
    if to <= cursor {
        return Ok(());
    }
    let offsets: Vec<u64> = result.messages.iter().map(|m| m.queue_offset.0).collect();
    *budget -= offsets.len();
    ops.push(LeaseOp::Deliver {
        queue_id: queue,
        from: cursor,
        to,
        offsets,
        until_ms,
    });
    planned.push(Planned::Deliveries(
        result.messages.into_iter().map(|m| (m, 1)).collect(),
    ));
    Ok(())
}

/// The message at `offset`, or `None` when retention deleted it.
fn read_one(
    node: &Node,
    topic: &str,
    queue: QueueId,
    offset: u64,
) -> Result<Option<StoredMessage>, BrokerError> {
    let page = node
        .shared
        .store
        .pull(topic, queue, QueueOffset(offset), 1, &TagFilter::All)
        .map_err(|e| BrokerError::Internal(format!("reading {topic}/{queue} at {offset}: {e}")))?;
    Ok(page
        .messages
        .into_iter()
        .find(|m| m.queue_offset.0 == offset))
}

/// The copy a dead letter stores in `%DLQ%{group}`: the message with where it
/// came from, its group and its deliveries (the properties a retry's dead letter
/// carries, plus `DELIVERY_ATTEMPTS`).
fn dead_letter_copy(
    mut message: StoredMessage,
    group: &str,
    attempts: u32,
    now: u64,
) -> crate::storage::MessageDraft {
    let mut properties = origin_properties(&mut message);
    properties.insert(PROPERTY_CONSUMER_GROUP.into(), group.to_string());
    properties.insert(PROPERTY_DELIVERY_ATTEMPTS.into(), attempts.to_string());
    message.into_draft(dlq_topic(group), QueueId(0), properties, now)
}

/// Makes sure a round can store its dead letters: their topic exists — created
/// on first use when topics may be created by use — and the disk has room.
/// Otherwise the dead letters wait (their messages are not delivered again
/// either) until an admin creates the topic or room is made; a later round
/// moves them.
async fn ensure_dead_letter_topic(
    node: &Node,
    group: &str,
    ops: &mut Vec<LeaseOp>,
    planned: &mut Vec<Planned>,
) -> Result<(), BrokerError> {
    if !ops
        .iter()
        .any(|op| matches!(op, LeaseOp::DeadLetter { .. }))
    {
        return Ok(());
    }
    let topic = dlq_topic(group);
    let why = if let Err(full) = node.health.check_room() {
        full.to_string()
    } else if node.shared.state().topics.contains_key(&topic) {
        return Ok(());
    } else if !node.config.auto_create_topics {
        "it does not exist and auto_create_topics is off: an admin creates it".to_string()
    } else {
        let config = TopicConfig::for_consumer_group_topic(&topic);
        match crate::service::topics::upsert(node, config).await {
            Ok(_) => return Ok(()),
            // Leadership moved: the receive goes to the new leader.
            Err(e @ BrokerError::NotLeader { .. }) => return Err(e),
            Err(e) => format!("creating it failed: {e}"),
        }
    };
    // Every round that meets such a message would say it: once a minute is enough.
    static LAST_WARNED_MS: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let last = LAST_WARNED_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST_WARNED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        warn!(group, topic, reason = %why, "messages are due for the dead-letter topic, which cannot take them now: they wait");
    }
    let mut kept = ops.drain(..).zip(planned.drain(..)).collect::<Vec<_>>();
    kept.retain(|(op, _)| !matches!(op, LeaseOp::DeadLetter { .. }));
    for (op, plan) in kept {
        ops.push(op);
        planned.push(plan);
    }
    Ok(())
}

/// A leased message as the API answers it.
fn received(
    node: &Node,
    group: &str,
    message: StoredMessage,
    attempt: u32,
    until_ms: u64,
) -> ReceivedMessage {
    let handle = ReceiptHandle {
        broker_group: node.group().to_string(),
        topic: message.topic.clone(),
        queue_id: message.queue_id.0,
        queue_offset: message.queue_offset.0,
        delivery_attempt: attempt,
        invisible_until: until_ms,
        group: group.to_string(),
    };
    let view: MessageView = crate::service::pull::message_view(message);
    ReceivedMessage {
        message: view,
        receipt_handle: handle.to_string(),
        delivery_attempt: attempt,
        invisible_until: until_ms,
        broker_group: node.group().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(queue: u32) -> LeaseKey {
        LeaseKey {
            group: "g".into(),
            topic: "t".into(),
            queue_id: QueueId(queue),
        }
    }

    /// A queue another round holds is refused (without giving the holder's key
    /// back), and free again once the holder is done.
    #[test]
    fn the_desk_gives_a_queue_to_one_round_at_a_time() {
        let desk = LeaseDesk::default();
        let first = desk.try_take(key(0)).expect("a free queue");
        assert!(desk.try_take(key(0)).is_none(), "held by the first round");
        assert!(
            desk.try_take(key(0)).is_none(),
            "still held: a refusal gives nothing back"
        );
        let other = desk.try_take(key(1)).expect("another queue is free");
        drop(first);
        assert!(
            desk.try_take(key(0)).is_some(),
            "free once the holder is done"
        );
        drop(other);
    }
}
