//! The replicated lease table of lease-based consumption (shared/API.md "Receive
//! and ack"; RocketMQ 5's POP): per (consumer group, topic, queue), a receive
//! cursor and the messages delivered below it that are not acked yet, each with
//! its current lease.
//!
//! This is the compact shape shared/DESIGN.md names instead of RocketMQ's CK/ACK
//! records and revive scan: everything below the cursor that is not in flight is
//! done (acked, dead-lettered, filtered out by tags, or gone by retention), so
//! the first un-acked offset — the cursor's committed offset — is the first key
//! in flight, or the cursor.
//!
//! Every change is a [`LeaseOp`] decided by the leader against the state it read
//! and checked again here, when applied, against the state it meets (compare and
//! set on the cursor and on each lease): two receives that raced, a retried
//! proposal or a new leader's stale read change nothing twice. Time is the
//! leader's clock fixed in the command, never a replica's, so every replica
//! decides the same. What apply decided is folded from its record
//! ([`LeaseUpdate`]) without deciding again, so replay after a restart rebuilds
//! the same table.
//!
//! Memory: per queue a cursor, and per message in flight its offset and lease
//! plus one entry of the expiry index (~100 bytes); at most
//! [`MAX_IN_FLIGHT_PER_QUEUE`] per queue — past it a queue delivers nothing new
//! until acks or expiries make room (SQS caps in-flight messages the same way).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::storage::{MessageDraft, QueueId, QueueOffset};

/// Most messages of one (group, topic, queue) leased and not acked at once.
pub const MAX_IN_FLIGHT_PER_QUEUE: usize = 1 << 20;

/// One consumer group's lease state of one queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseKey {
    pub group: String,
    pub topic: String,
    pub queue_id: QueueId,
}

/// A message's current lease: its delivery and the time it ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// 1 for the first delivery to the group, one more for each after.
    pub attempt: u32,
    /// Unix ms; at and after it the message may be delivered again.
    pub until_ms: u64,
}

impl Lease {
    pub fn expired_at(self, now_ms: u64) -> bool {
        self.until_ms <= now_ms
    }
}

/// The lease state of one queue for one group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QueueLeases {
    /// The next offset never delivered to the group.
    pub cursor: QueueOffset,
    /// Delivered below the cursor and not acked: offset → lease.
    in_flight: BTreeMap<u64, Lease>,
    /// (lease end, offset) of every message in flight. Derived; rebuilt on load.
    #[serde(skip)]
    by_until: BTreeSet<(u64, u64)>,
}

impl QueueLeases {
    pub fn lease(&self, offset: u64) -> Option<Lease> {
        self.in_flight.get(&offset).copied()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The first offset not acked.
    pub fn committed(&self) -> QueueOffset {
        self.in_flight
            .keys()
            .next()
            .map_or(self.cursor, |first| QueueOffset(*first))
    }

    /// Messages whose lease ended at `now_ms`, the longest expired first.
    pub fn expired(&self, now_ms: u64) -> impl Iterator<Item = (u64, Lease)> + '_ {
        self.by_until
            .range(..=(now_ms, u64::MAX))
            .map(|(_, offset)| (*offset, self.in_flight[offset]))
    }

    /// Messages in flight in queue order.
    pub fn in_order(&self) -> impl Iterator<Item = (u64, Lease)> + '_ {
        self.in_flight
            .iter()
            .map(|(offset, lease)| (*offset, *lease))
    }

    /// The earliest lease end, if any message is in flight.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_until.first().map(|(until, _)| *until)
    }

    /// Whether some message is leased (in flight and not expired) at `now_ms`.
    pub fn any_leased(&self, now_ms: u64) -> bool {
        self.by_until
            .last()
            .is_some_and(|(until, _)| *until > now_ms)
    }

    /// Messages in flight whose delivery was not the first.
    pub fn redelivered(&self) -> usize {
        self.in_flight.values().filter(|l| l.attempt > 1).count()
    }

    fn set(&mut self, offset: u64, lease: Lease) {
        if let Some(old) = self.in_flight.insert(offset, lease) {
            self.by_until.remove(&(old.until_ms, offset));
        }
        self.by_until.insert((lease.until_ms, offset));
    }

    fn finish(&mut self, offset: u64) {
        if let Some(old) = self.in_flight.remove(&offset) {
            self.by_until.remove(&(old.until_ms, offset));
        }
    }

    fn rebuild_index(&mut self) {
        self.by_until = self
            .in_flight
            .iter()
            .map(|(offset, lease)| (lease.until_ms, *offset))
            .collect();
    }
}

/// One change to a queue's leases, as the leader decided it; apply checks its
/// expectation against the table first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// Deliver new messages: move the cursor from `from` (the one the leader
    /// read) to `to`, leasing `offsets` (all in `from..to`) with attempt 1 until
    /// `until_ms`; the others in between are consumed (filtered out, or gone).
    Deliver {
        queue_id: QueueId,
        from: QueueOffset,
        to: QueueOffset,
        offsets: Vec<u64>,
        until_ms: u64,
    },
    /// Deliver again a message whose lease `expect` ended: attempt + 1.
    Redeliver {
        queue_id: QueueId,
        offset: u64,
        expect: Lease,
        until_ms: u64,
    },
    /// Ack a message under its running lease `expect`.
    Ack {
        queue_id: QueueId,
        offset: u64,
        expect: Lease,
    },
    /// Replace the running lease `expect` by one ending at `until_ms` (at the
    /// command's time: give it back now).
    Change {
        queue_id: QueueId,
        offset: u64,
        expect: Lease,
        until_ms: u64,
    },
    /// Store `copy` in the group's dead-letter topic and finish the message,
    /// whose lease `expect` ended after its last allowed delivery.
    DeadLetter {
        queue_id: QueueId,
        offset: u64,
        expect: Lease,
        copy: Box<MessageDraft>,
    },
    /// Finish a message retention deleted while it was in flight.
    Forget {
        queue_id: QueueId,
        offset: u64,
        expect: Lease,
    },
}

impl LeaseOp {
    pub fn queue_id(&self) -> QueueId {
        match self {
            Self::Deliver { queue_id, .. }
            | Self::Redeliver { queue_id, .. }
            | Self::Ack { queue_id, .. }
            | Self::Change { queue_id, .. }
            | Self::DeadLetter { queue_id, .. }
            | Self::Forget { queue_id, .. } => *queue_id,
        }
    }
}

/// What apply made of one [`LeaseOp`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOutcome {
    /// Done as asked.
    Done,
    /// An ack or change of a lease that ended (or was replaced: redelivered or
    /// changed since).
    Expired,
    /// An ack of a message finished already, under a lease that has not ended: a
    /// repeated ack. The message is not delivered again.
    AlreadyAcked,
    /// The state is not the one the leader read (another receive moved it first):
    /// nothing changed.
    Stale,
    /// Names no message the group was delivered.
    Invalid,
}

/// The leases of a receive, ack or change, in one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCommand {
    pub group: String,
    pub topic: String,
    /// The leader's clock when it decided: leases are judged by it.
    pub now_ms: u64,
    pub ops: Vec<LeaseOp>,
}

/// The changes apply accepted, as written in the control record and folded into
/// the table (replay folds the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseUpdate {
    pub group: String,
    pub topic: String,
    pub changes: Vec<LeaseChange>,
}

/// One accepted change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseChange {
    /// The cursor moves to `cursor`, `offsets` leased with `lease`.
    Deliver {
        queue_id: QueueId,
        cursor: QueueOffset,
        offsets: Vec<u64>,
        lease: Lease,
    },
    /// A message gets a new lease (a redelivery or a change).
    Lease {
        queue_id: QueueId,
        offset: u64,
        lease: Lease,
    },
    /// A message is done: acked, dead-lettered or forgotten.
    Finish { queue_id: QueueId, offset: u64 },
}

/// Every consumer group's leases, per queue.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseTable {
    queues: BTreeMap<LeaseKey, QueueLeases>,
}

impl LeaseTable {
    pub fn queue(&self, key: &LeaseKey) -> Option<&QueueLeases> {
        self.queues.get(key)
    }

    /// Every queue's leases, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&LeaseKey, &QueueLeases)> {
        self.queues.iter()
    }

    /// Decides `command` against the table: each op's outcome, and the changes to
    /// fold for those done. Changes nothing itself. `dead_letter_ok` says whether
    /// a dead letter's copy can be stored (its topic exists).
    ///
    /// Costs what the command names, not what the queues hold: the ops see the
    /// earlier ops' changes through an overlay, never a copy of a queue.
    pub fn decide(
        &self,
        command: &LeaseCommand,
        dead_letter_ok: impl Fn(&MessageDraft) -> bool,
    ) -> (Vec<LeaseOutcome>, Vec<LeaseChange>) {
        // Ops of one command may touch the same queue (a redelivery and new
        // deliveries): decide each against the state the earlier ones left.
        let mut overlays: BTreeMap<QueueId, Overlay<'_>> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(command.ops.len());
        let mut changes = Vec::new();
        let now = command.now_ms;
        for op in &command.ops {
            let queue_id = op.queue_id();
            let queue = overlays.entry(queue_id).or_insert_with(|| {
                Overlay::new(self.queues.get(&LeaseKey {
                    group: command.group.clone(),
                    topic: command.topic.clone(),
                    queue_id,
                }))
            });
            let (outcome, change) = decide_one(queue, op, now, &dead_letter_ok);
            if let Some(change) = change {
                queue.apply(&change);
                changes.push(change);
            }
            outcomes.push(outcome);
        }
        (outcomes, changes)
    }

    /// Folds what apply accepted.
    pub fn fold(&mut self, update: &LeaseUpdate) {
        for change in &update.changes {
            let queue_id = match change {
                LeaseChange::Deliver { queue_id, .. }
                | LeaseChange::Lease { queue_id, .. }
                | LeaseChange::Finish { queue_id, .. } => *queue_id,
            };
            let queue = self
                .queues
                .entry(LeaseKey {
                    group: update.group.clone(),
                    topic: update.topic.clone(),
                    queue_id,
                })
                .or_default();
            fold_change(queue, change);
        }
    }

    /// Forgets a deleted topic's leases (a topic created again under the name
    /// starts at offset 0).
    pub fn drop_topic(&mut self, topic: &str) {
        self.queues.retain(|key, _| key.topic != topic);
    }

    /// Rebuilds the derived expiry indexes after decoding.
    pub fn rebuild_index(&mut self) {
        for queue in self.queues.values_mut() {
            queue.rebuild_index();
        }
    }

    /// Messages in flight over every queue.
    pub fn in_flight(&self) -> usize {
        self.queues.values().map(QueueLeases::in_flight).sum()
    }
}

fn fold_change(queue: &mut QueueLeases, change: &LeaseChange) {
    match change {
        LeaseChange::Deliver {
            cursor,
            offsets,
            lease,
            ..
        } => {
            queue.cursor = queue.cursor.max(*cursor);
            for offset in offsets {
                queue.set(*offset, *lease);
            }
        }
        LeaseChange::Lease { offset, lease, .. } => queue.set(*offset, *lease),
        LeaseChange::Finish { offset, .. } => queue.finish(*offset),
    }
}

/// A queue's leases as the earlier ops of a command left them: the table's,
/// with their changes on top.
struct Overlay<'a> {
    base: Option<&'a QueueLeases>,
    cursor: QueueOffset,
    in_flight: usize,
    /// Offsets the earlier ops leased (`Some`) or finished (`None`).
    changed: BTreeMap<u64, Option<Lease>>,
}

impl<'a> Overlay<'a> {
    fn new(base: Option<&'a QueueLeases>) -> Self {
        Self {
            base,
            cursor: base.map_or(QueueOffset(0), |queue| queue.cursor),
            in_flight: base.map_or(0, QueueLeases::in_flight),
            changed: BTreeMap::new(),
        }
    }

    fn lease(&self, offset: u64) -> Option<Lease> {
        match self.changed.get(&offset) {
            Some(changed) => *changed,
            None => self.base.and_then(|queue| queue.lease(offset)),
        }
    }

    fn set(&mut self, offset: u64, lease: Option<Lease>) {
        match (self.lease(offset).is_some(), lease.is_some()) {
            (false, true) => self.in_flight += 1,
            (true, false) => self.in_flight -= 1,
            _ => {}
        }
        self.changed.insert(offset, lease);
    }

    fn apply(&mut self, change: &LeaseChange) {
        match change {
            LeaseChange::Deliver {
                cursor,
                offsets,
                lease,
                ..
            } => {
                self.cursor = self.cursor.max(*cursor);
                for offset in offsets {
                    self.set(*offset, Some(*lease));
                }
            }
            LeaseChange::Lease { offset, lease, .. } => self.set(*offset, Some(*lease)),
            LeaseChange::Finish { offset, .. } => self.set(*offset, None),
        }
    }
}

fn decide_one(
    queue: &Overlay<'_>,
    op: &LeaseOp,
    now: u64,
    dead_letter_ok: &impl Fn(&MessageDraft) -> bool,
) -> (LeaseOutcome, Option<LeaseChange>) {
    use LeaseOutcome::{AlreadyAcked, Done, Expired, Stale};
    match op {
        LeaseOp::Deliver {
            queue_id,
            from,
            to,
            offsets,
            until_ms,
        } => {
            let in_range = offsets.iter().all(|offset| (from.0..to.0).contains(offset));
            if queue.cursor != *from || to < from || !in_range {
                return (Stale, None);
            }
            if queue.in_flight + offsets.len() > MAX_IN_FLIGHT_PER_QUEUE {
                return (Stale, None);
            }
            let change = LeaseChange::Deliver {
                queue_id: *queue_id,
                cursor: *to,
                offsets: offsets.clone(),
                lease: Lease {
                    attempt: 1,
                    until_ms: *until_ms,
                },
            };
            (Done, Some(change))
        }
        LeaseOp::Redeliver {
            queue_id,
            offset,
            expect,
            until_ms,
        } => match queue.lease(*offset) {
            Some(lease) if lease == *expect && lease.expired_at(now) => {
                let change = LeaseChange::Lease {
                    queue_id: *queue_id,
                    offset: *offset,
                    lease: Lease {
                        attempt: expect.attempt.saturating_add(1),
                        until_ms: *until_ms,
                    },
                };
                (Done, Some(change))
            }
            _ => (Stale, None),
        },
        LeaseOp::Ack {
            queue_id,
            offset,
            expect,
        } => match queue.lease(*offset) {
            Some(lease) if lease == *expect && !lease.expired_at(now) => (
                Done,
                Some(LeaseChange::Finish {
                    queue_id: *queue_id,
                    offset: *offset,
                }),
            ),
            Some(lease) => (judge_other_lease(lease, *expect, now), None),
            None => (
                judge_finished(queue, *offset, *expect, now, AlreadyAcked),
                None,
            ),
        },
        LeaseOp::Change {
            queue_id,
            offset,
            expect,
            until_ms,
        } => match queue.lease(*offset) {
            Some(lease) if lease == *expect && !lease.expired_at(now) => {
                let change = LeaseChange::Lease {
                    queue_id: *queue_id,
                    offset: *offset,
                    lease: Lease {
                        attempt: lease.attempt,
                        until_ms: *until_ms,
                    },
                };
                (Done, Some(change))
            }
            Some(lease) => (judge_other_lease(lease, *expect, now), None),
            // A finished message's lease cannot change: for its holder, it
            // ended.
            None => (judge_finished(queue, *offset, *expect, now, Expired), None),
        },
        LeaseOp::DeadLetter {
            queue_id,
            offset,
            expect,
            copy,
        } => match queue.lease(*offset) {
            Some(lease) if lease == *expect && lease.expired_at(now) && dead_letter_ok(copy) => (
                Done,
                Some(LeaseChange::Finish {
                    queue_id: *queue_id,
                    offset: *offset,
                }),
            ),
            _ => (Stale, None),
        },
        LeaseOp::Forget {
            queue_id,
            offset,
            expect,
        } => match queue.lease(*offset) {
            Some(lease) if lease == *expect => (
                Done,
                Some(LeaseChange::Finish {
                    queue_id: *queue_id,
                    offset: *offset,
                }),
            ),
            _ => (Stale, None),
        },
    }
}

/// An ack or change whose handle names a lease other than the message's current
/// one: ended (replaced by a later delivery or change, or run out), or never
/// given (a handle from the future is not one the broker wrote).
fn judge_other_lease(current: Lease, expect: Lease, now: u64) -> LeaseOutcome {
    if expect.attempt > current.attempt || expect.attempt == 0 {
        LeaseOutcome::Invalid
    } else {
        // Replaced, or run out at `now` (the caller took the running one).
        debug_assert!(current != expect || current.expired_at(now));
        LeaseOutcome::Expired
    }
}

/// An ack or change of a message not in flight: finished already if it is below
/// the cursor (`finished` when the handle's own lease still runs, else
/// `Expired`), never delivered otherwise.
fn judge_finished(
    queue: &Overlay<'_>,
    offset: u64,
    expect: Lease,
    now: u64,
    finished: LeaseOutcome,
) -> LeaseOutcome {
    if offset >= queue.cursor.0 || expect.attempt == 0 {
        LeaseOutcome::Invalid
    } else if expect.expired_at(now) {
        LeaseOutcome::Expired
    } else {
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: QueueId = QueueId(0);

    fn command(now_ms: u64, ops: Vec<LeaseOp>) -> LeaseCommand {
        LeaseCommand {
            group: "g".into(),
            topic: "t".into(),
            now_ms,
            ops,
        }
    }

    /// Decides and folds, as apply does; answers the outcomes.
    fn apply(table: &mut LeaseTable, command: &LeaseCommand) -> Vec<LeaseOutcome> {
        let (outcomes, changes) = table.decide(command, |_| true);
        table.fold(&LeaseUpdate {
            group: command.group.clone(),
            topic: command.topic.clone(),
            changes,
        });
        outcomes
    }

    fn key() -> LeaseKey {
        LeaseKey {
            group: "g".into(),
            topic: "t".into(),
            queue_id: Q,
        }
    }

    fn deliver(from: u64, to: u64, offsets: &[u64], until_ms: u64) -> LeaseOp {
        LeaseOp::Deliver {
            queue_id: Q,
            from: QueueOffset(from),
            to: QueueOffset(to),
            offsets: offsets.to_vec(),
            until_ms,
        }
    }

    fn lease(attempt: u32, until_ms: u64) -> Lease {
        Lease { attempt, until_ms }
    }

    #[test]
    fn a_delivery_moves_the_cursor_once() {
        let mut table = LeaseTable::default();
        let first = command(100, vec![deliver(0, 3, &[0, 2], 1_100)]);
        assert_eq!(apply(&mut table, &first), [LeaseOutcome::Done]);
        // The same delivery again (a retried proposal, a racing receive): stale.
        assert_eq!(apply(&mut table, &first), [LeaseOutcome::Stale]);
        let queue = table.queue(&key()).expect("queue");
        assert_eq!(queue.cursor, QueueOffset(3));
        assert_eq!(queue.in_flight(), 2, "offset 1 was filtered out");
        assert_eq!(queue.committed(), QueueOffset(0));
        assert_eq!(queue.lease(2), Some(lease(1, 1_100)));
        // An offset outside the range is refused.
        let outside = command(100, vec![deliver(3, 5, &[7], 1_100)]);
        assert_eq!(apply(&mut table, &outside), [LeaseOutcome::Stale]);
    }

    #[test]
    fn acks_answer_by_the_lease_they_name() {
        let mut table = LeaseTable::default();
        apply(
            &mut table,
            &command(100, vec![deliver(0, 2, &[0, 1], 1_100)]),
        );
        let ack = |offset, expect, now| {
            command(
                now,
                vec![LeaseOp::Ack {
                    queue_id: Q,
                    offset,
                    expect,
                }],
            )
        };
        assert_eq!(
            apply(&mut table, &ack(0, lease(1, 1_100), 500)),
            [LeaseOutcome::Done]
        );
        assert_eq!(
            apply(&mut table, &ack(0, lease(1, 1_100), 600)),
            [LeaseOutcome::AlreadyAcked],
            "a repeated ack while its lease runs"
        );
        assert_eq!(
            apply(&mut table, &ack(0, lease(1, 1_100), 1_100)),
            [LeaseOutcome::Expired],
            "a repeated ack after its lease ended"
        );
        assert_eq!(
            apply(&mut table, &ack(1, lease(1, 1_100), 1_100)),
            [LeaseOutcome::Expired],
            "the lease ends at invisible_until"
        );
        assert_eq!(
            apply(&mut table, &ack(1, lease(2, 1_100), 500)),
            [LeaseOutcome::Invalid],
            "an attempt never made"
        );
        assert_eq!(
            apply(&mut table, &ack(5, lease(1, 9_000), 500)),
            [LeaseOutcome::Invalid],
            "never delivered"
        );
        assert_eq!(
            table.queue(&key()).expect("queue").committed(),
            QueueOffset(1)
        );
    }

    #[test]
    fn an_expired_lease_is_delivered_again_once_with_the_next_attempt() {
        let mut table = LeaseTable::default();
        apply(&mut table, &command(100, vec![deliver(0, 1, &[0], 1_100)]));
        let redeliver = |now, until_ms| {
            command(
                now,
                vec![LeaseOp::Redeliver {
                    queue_id: Q,
                    offset: 0,
                    expect: lease(1, 1_100),
                    until_ms,
                }],
            )
        };
        assert_eq!(
            apply(&mut table, &redeliver(1_099, 2_099)),
            [LeaseOutcome::Stale],
            "not before the lease ends"
        );
        assert_eq!(
            apply(&mut table, &redeliver(1_100, 2_100)),
            [LeaseOutcome::Done]
        );
        assert_eq!(
            apply(&mut table, &redeliver(1_200, 2_200)),
            [LeaseOutcome::Stale],
            "once"
        );
        let queue = table.queue(&key()).expect("queue");
        assert_eq!(queue.lease(0), Some(lease(2, 2_100)));
        assert_eq!(queue.redelivered(), 1);
        // The first delivery's handle is spent.
        let late = command(
            1_300,
            vec![LeaseOp::Ack {
                queue_id: Q,
                offset: 0,
                expect: lease(1, 1_100),
            }],
        );
        assert_eq!(apply(&mut table, &late), [LeaseOutcome::Expired]);
    }

    #[test]
    fn a_change_replaces_the_lease_and_spends_the_old_handle() {
        let mut table = LeaseTable::default();
        apply(&mut table, &command(100, vec![deliver(0, 1, &[0], 1_100)]));
        let change = |expect, until_ms, now| {
            command(
                now,
                vec![LeaseOp::Change {
                    queue_id: Q,
                    offset: 0,
                    expect,
                    until_ms,
                }],
            )
        };
        assert_eq!(
            apply(&mut table, &change(lease(1, 1_100), 5_000, 200)),
            [LeaseOutcome::Done]
        );
        assert_eq!(
            apply(&mut table, &change(lease(1, 1_100), 6_000, 300)),
            [LeaseOutcome::Expired],
            "the old handle"
        );
        // A nack: the lease ends now, and a receive may deliver it again.
        assert_eq!(
            apply(&mut table, &change(lease(1, 5_000), 400, 400)),
            [LeaseOutcome::Done]
        );
        let queue = table.queue(&key()).expect("queue");
        assert_eq!(queue.expired(400).collect::<Vec<_>>(), [(0, lease(1, 400))]);
        assert!(!queue.any_leased(400));
    }

    #[test]
    fn dead_letters_and_forgotten_messages_finish() {
        let mut table = LeaseTable::default();
        apply(
            &mut table,
            &command(100, vec![deliver(0, 2, &[0, 1], 1_100)]),
        );
        let copy = Box::new(crate::storage::MessageDraft {
            topic: "%DLQ%g".into(),
            queue_id: QueueId(0),
            msg_id: crate::storage::MessageId([1; 16]),
            body: Vec::new(),
            binary_body: false,
            tags: String::new(),
            keys: Vec::new(),
            properties: Default::default(),
            born_timestamp_ms: 0,
            store_timestamp_ms: 0,
            born_host: String::new(),
            reconsume_times: 0,
            producer: None,
        });
        let ops = vec![
            LeaseOp::DeadLetter {
                queue_id: Q,
                offset: 0,
                expect: lease(1, 1_100),
                copy,
            },
            LeaseOp::Forget {
                queue_id: Q,
                offset: 1,
                expect: lease(1, 1_100),
            },
        ];
        // Not while leased; then both.
        let (early, _) = table.decide(&command(1_000, ops.clone()), |_| true);
        assert_eq!(early[0], LeaseOutcome::Stale);
        let (no_topic, _) = table.decide(&command(2_000, ops.clone()), |_| false);
        assert_eq!(no_topic[0], LeaseOutcome::Stale, "no dead-letter topic");
        assert_eq!(
            apply(&mut table, &command(2_000, ops)),
            [LeaseOutcome::Done, LeaseOutcome::Done]
        );
        let queue = table.queue(&key()).expect("queue");
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(queue.committed(), QueueOffset(2));
    }

    /// Ops of one command are decided in order against what the earlier ones
    /// left: a redelivery and an ack of the same message in one entry.
    #[test]
    fn ops_of_one_command_see_each_other() {
        let mut table = LeaseTable::default();
        let outcomes = apply(
            &mut table,
            &command(
                100,
                vec![
                    deliver(0, 1, &[0], 1_100),
                    LeaseOp::Ack {
                        queue_id: Q,
                        offset: 0,
                        expect: lease(1, 1_100),
                    },
                    deliver(1, 2, &[1], 1_100),
                ],
            ),
        );
        assert_eq!(outcomes, [LeaseOutcome::Done; 3]);
        let queue = table.queue(&key()).expect("queue");
        assert_eq!(queue.committed(), QueueOffset(1));
        assert_eq!(queue.cursor, QueueOffset(2));
    }

    #[test]
    fn the_index_is_rebuilt_after_decoding() {
        let mut table = LeaseTable::default();
        apply(
            &mut table,
            &command(100, vec![deliver(0, 3, &[0, 1, 2], 1_100)]),
        );
        let bytes =
            bincode::serde::encode_to_vec(&table, bincode::config::standard()).expect("encodes");
        let (mut decoded, _): (LeaseTable, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                .expect("decodes");
        decoded.rebuild_index();
        let queue = decoded.queue(&key()).expect("queue");
        assert_eq!(queue.expired(1_100).count(), 3);
        assert_eq!(queue.next_expiry(), Some(1_100));
    }
}
