//! The receive-and-ack checks (shared/API.md "Receive and ack"): what lease-based
//! consumption must never do, judged from `receive`, `ack`, `change_invisible`,
//! `receive_drain` and `dlq_read` events.
//!
//! A message is its producer's unique body. Facts built per message: every
//! delivery the history knows of (from receives that completed `ok`) with its
//! lease, every ack and change of those leases, and its dead-letter copies.
//!
//! Deliveries the history does not know of: a receive whose answer was lost
//! (`info`) or that failed may still have leased messages. Every check here is
//! written so that missing deliveries can only hide an anomaly, never make one:
//! pairs of deliveries are judged only on what both of them say, attempt counts
//! are compared only between known deliveries, and the end-of-run checks
//! (`never_delivered`, `unresolved_after_drain`) run only after a drain that
//! stayed quiet longer than any lease, by which time a message leased by a lost
//! receive has been delivered again (and seen) unless it was acked or
//! dead-lettered.
//!
//! Times: `time_ms` (monotonic, since the start of the run) orders operations of
//! the client; a lease's end `invisible_until` is the broker's wall clock (Unix
//! ms), compared with the receive completion's `unix_ms` on the same machine's
//! clock within [`LEASE_CLOCK_TOLERANCE_MS`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{AnomalyKind, CheckOptions, Checker, OpCounts, SendFacts};
use crate::jepsen::history::{
    is_poison, Body, DlqMessageValue, Kind, Op, ReceiveDrainValue, POISON_MARKER,
};

/// Slack when comparing a receive's completion wall clock with a lease's
/// `invisible_until`. Both are Unix ms of one machine's clock (client and broker
/// share it): the broker reads its clock when it decides a delivery, the client
/// reads it after the answer arrived, so without error the client's reading is
/// the later one and a delivery is flagged only when it certainly came before the
/// end. The slack absorbs millisecond rounding on both sides and small wall-clock
/// adjustments during the run; it can only hide a delivery less than 50 ms
/// before a lease's end, never flag a correct one.
pub const LEASE_CLOCK_TOLERANCE_MS: u64 = 50;

/// Property of a dead-letter copy: deliveries made before it was dead-lettered.
const DELIVERY_ATTEMPTS: &str = broker_proto::properties::PROPERTY_DELIVERY_ATTEMPTS;
const ORIGIN_TOPIC: &str = broker_proto::properties::PROPERTY_ORIGIN_TOPIC;
const ORIGIN_QUEUE_ID: &str = broker_proto::properties::PROPERTY_ORIGIN_QUEUE_ID;
const ORIGIN_QUEUE_OFFSET: &str = broker_proto::properties::PROPERTY_ORIGIN_QUEUE_OFFSET;
const ORIGIN_MESSAGE_ID: &str = broker_proto::properties::PROPERTY_ORIGIN_MESSAGE_ID;
const CONSUMER_GROUP: &str = broker_proto::properties::PROPERTY_CONSUMER_GROUP;

/// Totals of a receive-workload history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReceiveSummary {
    /// Receive requests.
    pub receives: OpCounts,
    /// Messages delivered by receives that completed.
    pub deliveries: u64,
    /// Distinct messages delivered.
    pub messages_delivered: u64,
    /// Deliveries with `delivery_attempt` > 1.
    pub redeliveries: u64,
    /// Ack requests.
    pub acks: OpCounts,
    /// Receipt handles answered `OK`, `EXPIRED`, `INVALID`; handles of acks whose
    /// answer was lost (or that the answer left out) are `acks_unanswered`.
    pub acks_ok: u64,
    pub acks_expired: u64,
    pub acks_invalid: u64,
    pub acks_unanswered: u64,
    /// Change-invisible requests with 0 (nacks) and with a new lease.
    pub nacks: OpCounts,
    pub lease_changes: OpCounts,
    /// Acknowledged sends of poison messages (never acked by the workload).
    pub poison_sent: u64,
    /// Distinct messages in the dead-letter topic, its copies, and how many of
    /// the messages are poison.
    pub dlq_messages: u64,
    pub dlq_copies: u64,
    pub dlq_poison: u64,
    /// Nodes whose dead-letter topic was read completely.
    pub dlq_reads_complete: u64,
    /// Whether the final drain went quiet (`None`: no drain recorded).
    pub drain_complete: Option<bool>,
    /// The maximum the checker held DLQ copies and deliveries to.
    pub max_delivery_attempts: u32,
}

/// One delivery of a message: one lease.
struct Delivery {
    op_index: u64,
    node: u64,
    body: String,
    msg_id: String,
    topic: String,
    queue: u32,
    offset: u64,
    attempt: u32,
    receive_invoked_ms: f64,
    receive_done_ms: f64,
    receive_done_unix_ms: u64,
    /// The lease's end on the broker's clock; an `ok` change replaces it with the
    /// end it answered.
    until_unix_ms: u64,
    /// The earliest invocation (monotonic ms) of a nack or change of this lease
    /// that may have ended it: from then on the broker may deliver again. Acks do
    /// not end a lease here: after an ack that applied the message is never
    /// delivered again, and an ack that did not apply leaves the lease as it
    /// was, so a delivery before the lease's end is wrong either way.
    ended_ms: Option<f64>,
}

impl Delivery {
    /// Whether this lease certainly still held when the broker answered a receive
    /// that completed at `done_ms` / `done_unix_ms`: the broker answered before
    /// both the lease's end and anything we did that may have ended it.
    fn held_at(&self, done_ms: f64, done_unix_ms: u64) -> bool {
        done_unix_ms.saturating_add(LEASE_CLOCK_TOLERANCE_MS) < self.until_unix_ms
            && self.ended_ms.is_none_or(|ended| done_ms < ended)
    }

    fn end_by(&mut self, invoked_ms: f64) {
        self.ended_ms = Some(self.ended_ms.map_or(invoked_ms, |e| e.min(invoked_ms)));
    }

    fn describe(&self) -> String {
        format!(
            "attempt {} at {}/{} (receive op {} on node {}, invoked {:.1} ms, answered {:.1} ms / unix {}, lease until {})",
            self.attempt,
            self.queue,
            self.offset,
            self.op_index,
            self.node,
            self.receive_invoked_ms,
            self.receive_done_ms,
            self.receive_done_unix_ms,
            self.until_unix_ms
        )
    }
}

/// What is known about one message (body).
#[derive(Default)]
struct MessageFacts {
    deliveries: Vec<usize>,
    /// The earliest completion of an ack answered `OK`: (time_ms, op index).
    acked_ok: Option<(f64, u64)>,
    /// An ack whose outcome is unknown named one of its handles.
    maybe_acked: bool,
}

/// Runs the receive-and-ack checks. `lost` holds the acknowledged bodies already
/// flagged as lost writes (not flagged again as never delivered).
pub(super) fn check(
    checker: &mut Checker,
    ops: &[Op],
    sends: &HashMap<String, SendFacts>,
    lost: &BTreeSet<String>,
    options: CheckOptions,
) -> ReceiveSummary {
    let max = options.max_delivery_attempts;
    let mut summary = ReceiveSummary {
        max_delivery_attempts: max,
        ..ReceiveSummary::default()
    };
    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut messages: BTreeMap<String, MessageFacts> = BTreeMap::new();
    // Receipt handle → the delivery whose lease it names (a change's answer names
    // the same lease by a new handle).
    let mut handles: HashMap<String, usize> = HashMap::new();
    let mut receive_invoked: HashMap<&str, f64> = HashMap::new();
    let mut change_invoked: HashMap<&str, f64> = HashMap::new();
    let mut ack_invoked: HashMap<&str, Vec<String>> = HashMap::new();
    // Dead-letter copies by (queue, offset), over every node's read.
    let mut dlq: BTreeMap<(u32, u64), (DlqMessageValue, u64)> = BTreeMap::new();
    let mut dlq_source: Option<(String, String)> = None;
    let mut drain: Option<ReceiveDrainValue> = None;

    for op in ops {
        let process = op.process.as_str();
        let now = op.time_ms.0;
        match &op.body {
            Body::Receive(v) => {
                summary.receives.tally(op.kind);
                match op.kind {
                    Kind::Invoke => {
                        receive_invoked.insert(process, now);
                    }
                    Kind::Ok => {
                        let invoked = receive_invoked.remove(process).unwrap_or(now);
                        for m in &v.messages {
                            let id = deliveries.len();
                            deliveries.push(Delivery {
                                op_index: op.index,
                                node: v.node,
                                body: m.body.clone(),
                                msg_id: m.msg_id.clone(),
                                topic: m.topic.clone(),
                                queue: m.queue_id,
                                offset: m.queue_offset,
                                attempt: m.delivery_attempt,
                                receive_invoked_ms: invoked,
                                receive_done_ms: now,
                                receive_done_unix_ms: v.unix_ms,
                                until_unix_ms: m.invisible_until,
                                ended_ms: None,
                            });
                            handles.insert(m.receipt_handle.clone(), id);
                            messages
                                .entry(m.body.clone())
                                .or_default()
                                .deliveries
                                .push(id);
                        }
                    }
                    Kind::Fail | Kind::Info => {
                        receive_invoked.remove(process);
                    }
                }
            }
            Body::ChangeInvisible(v) => {
                let counts = if v.invisible_ms == 0 {
                    &mut summary.nacks
                } else {
                    &mut summary.lease_changes
                };
                counts.tally(op.kind);
                if op.kind == Kind::Invoke {
                    change_invoked.insert(process, now);
                    continue;
                }
                let invoked = change_invoked.remove(process).unwrap_or(now);
                let Some(&id) = handles.get(&v.receipt_handle) else {
                    continue;
                };
                let lease = &mut deliveries[id];
                match op.kind {
                    Kind::Ok => {
                        if v.invisible_ms == 0 {
                            // A nack ended the lease when it applied, some time
                            // after its invocation. The end it answers (about
                            // "now") is not used: the invocation orders it against
                            // receives on the client's own clock, with no slack.
                            lease.end_by(invoked);
                        } else if let Some(until) = v.invisible_until {
                            // A change answered OK applied while the lease held,
                            // so the lease held without a break until the end it
                            // answered, shorter or longer than before.
                            lease.until_unix_ms = until;
                        }
                        if let Some(handle) = &v.new_receipt_handle {
                            handles.insert(handle.clone(), id);
                        }
                    }
                    // It may have applied at any moment after its invocation, with
                    // an end we do not know.
                    Kind::Info => lease.end_by(invoked),
                    Kind::Fail | Kind::Invoke => {}
                }
            }
            Body::Ack(v) => {
                summary.acks.tally(op.kind);
                if op.kind == Kind::Invoke {
                    ack_invoked.insert(process, v.receipt_handles.clone());
                    continue;
                }
                let mut asked = ack_invoked.remove(process).unwrap_or_default();
                if asked.is_empty() {
                    asked.clone_from(&v.receipt_handles);
                }
                match op.kind {
                    Kind::Ok => {
                        let answered: HashMap<&str, &str> = v
                            .results
                            .iter()
                            .map(|r| (r.receipt_handle.as_str(), r.status.as_str()))
                            .collect();
                        let named: BTreeSet<&str> = asked
                            .iter()
                            .map(String::as_str)
                            .chain(answered.keys().copied())
                            .collect();
                        for handle in named {
                            let status = answered.get(handle).copied();
                            let acked = match status {
                                Some(broker_proto::receive::ACK_OK) => {
                                    summary.acks_ok += 1;
                                    Some(true)
                                }
                                Some(broker_proto::receive::ACK_EXPIRED) => {
                                    summary.acks_expired += 1;
                                    Some(false)
                                }
                                Some(broker_proto::receive::ACK_INVALID) => {
                                    summary.acks_invalid += 1;
                                    Some(false)
                                }
                                // Left out of the answer, or a word the contract
                                // does not have: it may have been acked.
                                _ => {
                                    summary.acks_unanswered += 1;
                                    None
                                }
                            };
                            let Some(&id) = handles.get(handle) else {
                                continue;
                            };
                            let facts = messages.entry(deliveries[id].body.clone()).or_default();
                            match acked {
                                Some(true) => {
                                    if facts.acked_ok.is_none_or(|(t, _)| now < t) {
                                        facts.acked_ok = Some((now, op.index));
                                    }
                                }
                                Some(false) => {}
                                None => facts.maybe_acked = true,
                            }
                        }
                    }
                    Kind::Info => {
                        summary.acks_unanswered += asked.len() as u64;
                        for handle in &asked {
                            if let Some(&id) = handles.get(handle) {
                                messages
                                    .entry(deliveries[id].body.clone())
                                    .or_default()
                                    .maybe_acked = true;
                            }
                        }
                    }
                    Kind::Fail | Kind::Invoke => {}
                }
            }
            Body::DlqRead(v) if op.kind == Kind::Ok => {
                summary.dlq_reads_complete += 1;
                dlq_source.get_or_insert_with(|| (v.source_topic.clone(), v.group.clone()));
                for m in &v.messages {
                    match dlq.get(&(m.queue, m.offset)) {
                        Some((seen, node)) if seen.body != m.body => checker.flag(
                            AnomalyKind::ReplicaDivergence,
                            None,
                            format!(
                                "dead-letter queue {} offset {} holds {} on node {node} and {} on node {}",
                                m.queue, m.offset, seen.body, m.body, v.node
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            dlq.insert((m.queue, m.offset), (m.clone(), v.node));
                        }
                    }
                }
            }
            Body::ReceiveDrain(v) => drain = Some(v.clone()),
            _ => {}
        }
    }

    summary.deliveries = deliveries.len() as u64;
    summary.redeliveries = deliveries.iter().filter(|d| d.attempt > 1).count() as u64;
    summary.messages_delivered = messages
        .values()
        .filter(|f| !f.deliveries.is_empty())
        .count() as u64;
    summary.drain_complete = drain.as_ref().map(|d| d.complete);
    summary.poison_sent = sends
        .iter()
        .filter(|(body, facts)| facts.ok && is_poison(body))
        .count() as u64;

    check_deliveries(checker, &deliveries, &messages, max);

    // The dead-letter topic.
    let mut dead: BTreeMap<&str, Vec<&DlqMessageValue>> = BTreeMap::new();
    for (copy, _) in dlq.values() {
        dead.entry(copy.body.as_str()).or_default().push(copy);
    }
    summary.dlq_copies = dlq.len() as u64;
    summary.dlq_messages = dead.len() as u64;
    summary.dlq_poison = dead.keys().filter(|body| is_poison(body)).count() as u64;
    let (source_topic, group) = dlq_source.unwrap_or_default();
    for (body, copies) in &dead {
        let facts = messages.get(*body);
        let delivered: Vec<&Delivery> = facts
            .map(|f| f.deliveries.iter().map(|&id| &deliveries[id]).collect())
            .unwrap_or_default();
        match sends.get(*body) {
            None => checker.flag(
                AnomalyKind::Phantom,
                None,
                format!("{body} is in the dead-letter topic but was never sent"),
            ),
            Some(send) if send.certainly_failed() => checker.flag(
                AnomalyKind::ReadOfFailedSend,
                Some(send.queue),
                format!("{body} is in the dead-letter topic although every send of it failed"),
            ),
            Some(_) => {}
        }
        if copies.len() > 1 {
            let places: Vec<String> = copies
                .iter()
                .map(|c| format!("{}/{}", c.queue, c.offset))
                .collect();
            checker.flag(
                AnomalyKind::DeadLetteredTwice,
                None,
                format!(
                    "{body} is in the dead-letter topic at {}",
                    places.join(", ")
                ),
            );
        }
        if let Some((acked_ms, ack_index)) = facts.and_then(|f| f.acked_ok) {
            checker.flag(
                AnomalyKind::AckedAndDeadLettered,
                None,
                format!(
                    "{body} was acked OK (ack op {ack_index}, answered {acked_ms:.1} ms) and is in the dead-letter topic at {}/{}",
                    copies[0].queue, copies[0].offset
                ),
            );
        }
        let most_delivered = delivered.iter().map(|d| d.attempt).max();
        for copy in copies {
            let place = format!(
                "dead-letter copy of {body} at {}/{}",
                copy.queue, copy.offset
            );
            match copy
                .properties
                .get(DELIVERY_ATTEMPTS)
                .and_then(|n| n.parse::<u32>().ok())
            {
                None => checker.flag(
                    AnomalyKind::DlqWithoutAttempts,
                    None,
                    format!(
                        "{place} has no numeric {DELIVERY_ATTEMPTS} (properties {:?})",
                        copy.properties
                    ),
                ),
                Some(n) if n < max => checker.flag(
                    AnomalyKind::DlqWithoutAttempts,
                    None,
                    format!("{place} says {DELIVERY_ATTEMPTS}={n}, below the {max} deliveries a message gets before the DLQ"),
                ),
                Some(n) => {
                    if let Some(seen) = most_delivered.filter(|seen| *seen > n) {
                        checker.flag(
                            AnomalyKind::DlqWithoutAttempts,
                            None,
                            format!("{place} says {DELIVERY_ATTEMPTS}={n}, but a receive delivered it with delivery_attempt {seen}"),
                        );
                    }
                }
            }
            check_origin(
                checker,
                &place,
                copy,
                &source_topic,
                &group,
                sends.get(*body),
                &delivered,
            );
        }
    }

    let drain_complete = drain.as_ref().is_some_and(|d| d.complete);
    let dlq_read = summary.dlq_reads_complete > 0;
    match &drain {
        None => checker
            .inconclusive
            .push("no final receive drain recorded: never_delivered and unresolved_after_drain unchecked".into()),
        Some(d) if !d.complete => checker.inconclusive.push(format!(
            "the final receive drain did not go quiet ({}): never_delivered and unresolved_after_drain unchecked",
            if d.detail.is_empty() { "no detail" } else { d.detail.as_str() }
        )),
        Some(_) => {}
    }
    if !dlq_read {
        checker.inconclusive.push(
            "no complete read of the dead-letter topic: DLQ checks, never_delivered and unresolved_after_drain unchecked"
                .into(),
        );
    }
    if drain_complete && dlq_read {
        let mut acknowledged: Vec<(&String, &SendFacts)> =
            sends.iter().filter(|(_, f)| f.ok).collect();
        acknowledged.sort_by(|a, b| a.0.cmp(b.0));
        for (body, send) in acknowledged {
            let delivered = messages.get(body).is_some_and(|f| !f.deliveries.is_empty());
            if !delivered && !dead.contains_key(body.as_str()) && !lost.contains(body) {
                checker.flag(
                    AnomalyKind::NeverDelivered,
                    Some(send.queue),
                    format!(
                        "{body} was acknowledged at offset(s) {:?} of queue {} but no receive delivered it and it is not in the dead-letter topic",
                        send.acked_offsets, send.queue
                    ),
                );
            }
        }
        for (body, facts) in &messages {
            let Some(&last) = facts.deliveries.last() else {
                continue;
            };
            if facts.acked_ok.is_some() || facts.maybe_acked || dead.contains_key(body.as_str()) {
                continue;
            }
            let poison = if is_poison(body) {
                format!(" (a poison message, marker {POISON_MARKER}: never acked, so it must be dead-lettered)")
            } else {
                String::new()
            };
            checker.flag(
                AnomalyKind::UnresolvedAfterDrain,
                Some(deliveries[last].queue),
                format!(
                    "{body} was delivered {} time(s), last {}, never acked, and is not in the dead-letter topic after the drain{poison}",
                    facts.deliveries.len(),
                    deliveries[last].describe()
                ),
            );
        }
    }
    if summary.deliveries == 0 {
        checker
            .inconclusive
            .push("no receive delivered a message".into());
    } else if summary.redeliveries == 0 {
        checker
            .inconclusive
            .push("no message was delivered twice: lease expiry and nacks went unexercised".into());
    }
    if summary.acks_ok == 0 {
        checker.inconclusive.push("no ack was answered OK".into());
    }
    summary
}

/// Checks among the deliveries of each message: after an ack, during a lease, in
/// attempt order, and within the maximum attempts.
fn check_deliveries(
    checker: &mut Checker,
    deliveries: &[Delivery],
    messages: &BTreeMap<String, MessageFacts>,
    max: u32,
) {
    for d in deliveries {
        if d.attempt == 0 {
            checker.flag(
                AnomalyKind::AttemptNotIncreasing,
                Some(d.queue),
                format!(
                    "{} was delivered with delivery_attempt 0: {}",
                    d.body,
                    d.describe()
                ),
            );
        }
        if d.attempt > max {
            checker.flag(
                AnomalyKind::DeliveredPastMaxAttempts,
                Some(d.queue),
                format!(
                    "{} was delivered with delivery_attempt {} above the maximum {max} (it should have gone to the DLQ): {}",
                    d.body,
                    d.attempt,
                    d.describe()
                ),
            );
        }
    }
    for (body, facts) in messages {
        // A delivery by a receive invoked after an OK ack is `acked_redelivered`;
        // it is not judged again against the leases.
        let after_ack = |d: &Delivery| {
            facts
                .acked_ok
                .is_some_and(|(acked_ms, _)| d.receive_invoked_ms > acked_ms)
        };
        if let Some((acked_ms, ack_index)) = facts.acked_ok {
            for d in facts.deliveries.iter().map(|&id| &deliveries[id]) {
                if d.receive_invoked_ms > acked_ms {
                    checker.flag(
                        AnomalyKind::AckedRedelivered,
                        Some(d.queue),
                        format!(
                            "{body} was acked OK by ack op {ack_index} (answered {acked_ms:.1} ms) and delivered again later: {}",
                            d.describe()
                        ),
                    );
                }
            }
        }
        for (position, &i) in facts.deliveries.iter().enumerate() {
            for &j in &facts.deliveries[position + 1..] {
                let (a, b) = (&deliveries[i], &deliveries[j]);
                // Which was answered first, when the client's times tell.
                let order = if a.receive_done_ms < b.receive_invoked_ms {
                    Some((a, b))
                } else if b.receive_done_ms < a.receive_invoked_ms {
                    Some((b, a))
                } else {
                    None
                };
                match order {
                    Some((first, later)) => {
                        if !after_ack(later)
                            && first.held_at(later.receive_done_ms, later.receive_done_unix_ms)
                        {
                            checker.flag(
                                AnomalyKind::LeasedTwice,
                                Some(later.queue),
                                format!(
                                    "{body} was delivered while an earlier lease held: first {}; then {}",
                                    first.describe(),
                                    later.describe()
                                ),
                            );
                        }
                        if later.attempt <= first.attempt {
                            checker.flag(
                                AnomalyKind::AttemptNotIncreasing,
                                Some(later.queue),
                                format!(
                                    "{body}: a later delivery did not count up: first {}; then {}",
                                    first.describe(),
                                    later.describe()
                                ),
                            );
                        }
                    }
                    // Concurrent receives: whichever the broker answered first, the
                    // other came during its lease if each lease held when the
                    // other receive was answered.
                    None => {
                        if !after_ack(a)
                            && !after_ack(b)
                            && a.held_at(b.receive_done_ms, b.receive_done_unix_ms)
                            && b.held_at(a.receive_done_ms, a.receive_done_unix_ms)
                        {
                            checker.flag(
                                AnomalyKind::LeasedTwice,
                                Some(b.queue),
                                format!(
                                    "{body} was delivered by two overlapping receives, each during the other's lease: {}; and {}",
                                    a.describe(),
                                    b.describe()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A dead-letter copy names where the message was stored and the group.
fn check_origin(
    checker: &mut Checker,
    place: &str,
    copy: &DlqMessageValue,
    source_topic: &str,
    group: &str,
    send: Option<&SendFacts>,
    delivered: &[&Delivery],
) {
    let property = |name: &str| copy.properties.get(name).map(String::as_str);
    let mut wrong = Vec::new();
    if property(ORIGIN_TOPIC) != Some(source_topic) {
        wrong.push(format!(
            "{ORIGIN_TOPIC}={:?}, expected {source_topic:?}",
            property(ORIGIN_TOPIC)
        ));
    }
    if property(CONSUMER_GROUP) != Some(group) {
        wrong.push(format!(
            "{CONSUMER_GROUP}={:?}, expected {group:?}",
            property(CONSUMER_GROUP)
        ));
    }
    // Where the message is stored: its acknowledged send's position and the
    // positions its deliveries named.
    let mut positions: BTreeSet<(u32, u64)> = delivered
        .iter()
        .filter(|d| d.topic == source_topic)
        .map(|d| (d.queue, d.offset))
        .collect();
    if let Some(send) = send.filter(|s| s.ok) {
        positions.extend(send.acked_offsets.iter().map(|o| (send.queue, *o)));
    }
    let origin = property(ORIGIN_QUEUE_ID)
        .and_then(|q| q.parse::<u32>().ok())
        .zip(property(ORIGIN_QUEUE_OFFSET).and_then(|o| o.parse::<u64>().ok()));
    match origin {
        None => wrong.push(format!(
            "no numeric {ORIGIN_QUEUE_ID}/{ORIGIN_QUEUE_OFFSET} ({:?}/{:?})",
            property(ORIGIN_QUEUE_ID),
            property(ORIGIN_QUEUE_OFFSET)
        )),
        Some(origin) if !positions.is_empty() && !positions.contains(&origin) => {
            wrong.push(format!(
                "origin {}/{} but the message is at {positions:?}",
                origin.0, origin.1
            ));
        }
        Some(_) => {}
    }
    let ids: BTreeSet<&str> = delivered
        .iter()
        .map(|d| d.msg_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    match property(ORIGIN_MESSAGE_ID) {
        None => wrong.push(format!("no {ORIGIN_MESSAGE_ID}")),
        Some(id) if !ids.is_empty() && !ids.contains(id) => {
            wrong.push(format!(
                "{ORIGIN_MESSAGE_ID}={id} but receives delivered it as {ids:?}"
            ));
        }
        Some(_) => {}
    }
    if !wrong.is_empty() {
        checker.flag(
            AnomalyKind::DlqWrongOrigin,
            None,
            format!("{place}: {}", wrong.join("; ")),
        );
    }
}
