//! The history checker: what a queue of a replicated log must never do.
//!
//! Inputs are the events of [`super::history`]. Facts the checker builds:
//! * every send attempt of a body, and its outcome: acknowledged (`ok` with a
//!   queue offset), certainly failed (every attempt `fail`), or unknown;
//! * every `(queue, offset) → body` observation: from consumer polls on any node
//!   and from the final read of every node's local copy after healing;
//! * committed consumer offsets, from commits and offset reads.
//!
//! Anomalies, per queue (see [`AnomalyKind`]): lost and unseen acknowledged
//! writes, duplicates, inconsistent offsets, gaps, non-monotonic polls, phantoms,
//! reads of failed sends, replica divergence, consumer offsets going backwards.
//! Unknown-outcome sends may appear or not. A history with too little in it to
//! judge is [`Verdict::Inconclusive`], never a pass.
//!
//! A history with `receive` operations comes from the receive workload
//! (lease-based consumption): its deliveries count as reads of the topic (so
//! phantoms, reads of failed sends and inconsistent offsets cover them), the
//! pull-only expectations (every acknowledged send polled) give way to the
//! lease checks of [`leases`] (`acked_redelivered`, `never_delivered`,
//! `leased_twice`, the dead-letter classes, …).
//!
//! A history with `txn_send` operations comes from the transactions workload:
//! its messages are sent as transactions, so a body counts as sent (no phantom)
//! but not as acknowledged — whether it must be visible depends on how its
//! transaction ended, which the checks of [`transactions`] judge
//! (`committed_missing`, `rolled_back_visible`, `partial`, `both_outcomes`, …);
//! the messages of committed transactions stand in for acknowledged sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::history::{Body, FinalReadValue, Kind, Op, PollValue};

mod leases;
mod transactions;

pub use leases::{ReceiveSummary, LEASE_CLOCK_TOLERANCE_MS};
pub use transactions::TransactionSummary;

/// One kind of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// An acknowledged send is in no node's final copy of its queue.
    LostWrite,
    /// An acknowledged send is in the final copy but no consumer poll ever returned
    /// it, although consumers drained the queue.
    UnseenWrite,
    /// One body at two offsets (or in two queues).
    Duplicate,
    /// Two bodies at one offset, or an acknowledged offset that reads back a
    /// different body.
    InconsistentOffset,
    /// A missing offset inside a node's final copy, or a poll that skipped offsets.
    Gap,
    /// A poll that answered offsets out of order, below the one asked for, or a
    /// `next_offset` below it.
    NonMonotonicPoll,
    /// A body no producer ever sent.
    Phantom,
    /// A body whose every send attempt certainly failed.
    ReadOfFailedSend,
    /// After healing, nodes' local copies of a queue differ.
    ReplicaDivergence,
    /// A committed consumer offset moved backwards.
    OffsetBackwards,
    /// A read of committed offsets, on any node, below a commit acknowledged
    /// before the read began (the API promises every such commit, from any
    /// node, unless the read asks for `stale=true`).
    StaleOffsetRead,
    // Receive and ack (lease-based consumption).
    /// A message delivered by a receive invoked after an ack of it had been
    /// answered `OK` (after `OK` the group never receives it again).
    AckedRedelivered,
    /// An acknowledged send that no completed receive delivered and that is not
    /// in the dead-letter topic after a complete drain.
    NeverDelivered,
    /// A delivery answered while an earlier delivery's lease of the same message
    /// still held: before its `invisible_until` (as the last change of it
    /// answered it) and before any nack or change of it that may have ended it
    /// was invoked. An ack does not end a lease here: after an ack that applied
    /// the message must never come again (deliveries by receives invoked after
    /// an `OK` ack are `acked_redelivered` instead), and one that did not apply
    /// left the lease in force.
    LeasedTwice,
    /// A dead-letter copy whose `DELIVERY_ATTEMPTS` is missing or below the
    /// maximum, or below a `delivery_attempt` a receive delivered the message with.
    DlqWithoutAttempts,
    /// A message acked `OK` that is also in the dead-letter topic.
    AckedAndDeadLettered,
    /// A later delivery of a message (its receive invoked after the earlier one's
    /// answer) with a `delivery_attempt` not above the earlier one's, or 0.
    AttemptNotIncreasing,
    /// A delivery with a `delivery_attempt` above the maximum: the message should
    /// have gone to the dead-letter topic instead.
    DeliveredPastMaxAttempts,
    /// One message at two places of the dead-letter topic.
    DeadLetteredTwice,
    /// A dead-letter copy whose `ORIGIN_TOPIC`, `ORIGIN_QUEUE_ID`,
    /// `ORIGIN_QUEUE_OFFSET`, `ORIGIN_MESSAGE_ID` or `CONSUMER_GROUP` does not name
    /// the message and the group.
    DlqWrongOrigin,
    /// A delivered message that after a complete drain was neither acked (nor
    /// possibly acked by an ack whose answer was lost) nor dead-lettered: the
    /// group stopped getting it. Poison messages land here when they never reach
    /// the dead-letter topic.
    UnresolvedAfterDrain,
    // Transactional messages.
    /// A transaction a definite answer said was committed (a commit answered 200
    /// `COMMITTED`, or a rollback 409) lacks a message in a node's final copy.
    CommittedMissing,
    /// A transaction a definite answer said was rolled back (a rollback answered
    /// 200, by its caller or by timeout, or a commit 409) has a message visible.
    RolledBackVisible,
    /// A node's final copy holds some but not all of a transaction's messages.
    Partial,
    /// One transaction answered committed by one resolution and rolled back by
    /// another.
    BothOutcomes,
    /// A transaction no commit was ever requested for (not even one whose answer
    /// was lost) has messages visible, or was answered committed.
    UncommittedVisible,
    /// An answer that contradicts the request or the send: a 200 whose status,
    /// transaction id, message count or topic is not the transaction's; a 404
    /// for a transaction that was stored; a send answered without an id.
    WrongAnswer,
    /// A check that offered messages that are not exactly one sent
    /// transaction's (as sent: bodies, queues, topic, properties), one sent
    /// transaction under two ids, or a transaction whose send certainly failed.
    CheckMismatch,
    /// After the final heal and longer than the checks and their timeout take,
    /// a node still had open transactions.
    NeverResolved,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 29] = [
        AnomalyKind::LostWrite,
        AnomalyKind::UnseenWrite,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffset,
        AnomalyKind::Gap,
        AnomalyKind::NonMonotonicPoll,
        AnomalyKind::Phantom,
        AnomalyKind::ReadOfFailedSend,
        AnomalyKind::ReplicaDivergence,
        AnomalyKind::OffsetBackwards,
        AnomalyKind::StaleOffsetRead,
        AnomalyKind::AckedRedelivered,
        AnomalyKind::NeverDelivered,
        AnomalyKind::LeasedTwice,
        AnomalyKind::DlqWithoutAttempts,
        AnomalyKind::AckedAndDeadLettered,
        AnomalyKind::AttemptNotIncreasing,
        AnomalyKind::DeliveredPastMaxAttempts,
        AnomalyKind::DeadLetteredTwice,
        AnomalyKind::DlqWrongOrigin,
        AnomalyKind::UnresolvedAfterDrain,
        AnomalyKind::CommittedMissing,
        AnomalyKind::RolledBackVisible,
        AnomalyKind::Partial,
        AnomalyKind::BothOutcomes,
        AnomalyKind::UncommittedVisible,
        AnomalyKind::WrongAnswer,
        AnomalyKind::CheckMismatch,
        AnomalyKind::NeverResolved,
    ];

    /// Whether only a receive-workload history can show this kind.
    pub fn is_receive_only(self) -> bool {
        matches!(
            self,
            AnomalyKind::AckedRedelivered
                | AnomalyKind::NeverDelivered
                | AnomalyKind::LeasedTwice
                | AnomalyKind::DlqWithoutAttempts
                | AnomalyKind::AckedAndDeadLettered
                | AnomalyKind::AttemptNotIncreasing
                | AnomalyKind::DeliveredPastMaxAttempts
                | AnomalyKind::DeadLetteredTwice
                | AnomalyKind::DlqWrongOrigin
                | AnomalyKind::UnresolvedAfterDrain
        )
    }

    /// Whether only a history with pull consumers (the pull and transactions
    /// workloads) can show this kind.
    pub fn is_pull_only(self) -> bool {
        matches!(
            self,
            AnomalyKind::UnseenWrite
                | AnomalyKind::NonMonotonicPoll
                | AnomalyKind::OffsetBackwards
                | AnomalyKind::StaleOffsetRead
        )
    }

    /// Whether only a transactions-workload history can show this kind.
    pub fn is_transaction_only(self) -> bool {
        matches!(
            self,
            AnomalyKind::CommittedMissing
                | AnomalyKind::RolledBackVisible
                | AnomalyKind::Partial
                | AnomalyKind::BothOutcomes
                | AnomalyKind::UncommittedVisible
                | AnomalyKind::WrongAnswer
                | AnomalyKind::CheckMismatch
                | AnomalyKind::NeverResolved
        )
    }

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost_write",
            AnomalyKind::UnseenWrite => "unseen_write",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffset => "inconsistent_offset",
            AnomalyKind::Gap => "gap",
            AnomalyKind::NonMonotonicPoll => "non_monotonic_poll",
            AnomalyKind::Phantom => "phantom",
            AnomalyKind::ReadOfFailedSend => "read_of_failed_send",
            AnomalyKind::ReplicaDivergence => "replica_divergence",
            AnomalyKind::OffsetBackwards => "offset_backwards",
            AnomalyKind::StaleOffsetRead => "stale_offset_read",
            AnomalyKind::AckedRedelivered => "acked_redelivered",
            AnomalyKind::NeverDelivered => "never_delivered",
            AnomalyKind::LeasedTwice => "leased_twice",
            AnomalyKind::DlqWithoutAttempts => "dlq_without_attempts",
            AnomalyKind::AckedAndDeadLettered => "acked_and_dead_lettered",
            AnomalyKind::AttemptNotIncreasing => "attempt_not_increasing",
            AnomalyKind::DeliveredPastMaxAttempts => "delivered_past_max_attempts",
            AnomalyKind::DeadLetteredTwice => "dead_lettered_twice",
            AnomalyKind::DlqWrongOrigin => "dlq_wrong_origin",
            AnomalyKind::UnresolvedAfterDrain => "unresolved_after_drain",
            AnomalyKind::CommittedMissing => "committed_missing",
            AnomalyKind::RolledBackVisible => "rolled_back_visible",
            AnomalyKind::Partial => "partial",
            AnomalyKind::BothOutcomes => "both_outcomes",
            AnomalyKind::UncommittedVisible => "uncommitted_visible",
            AnomalyKind::WrongAnswer => "wrong_answer",
            AnomalyKind::CheckMismatch => "check_mismatch",
            AnomalyKind::NeverResolved => "never_resolved",
        }
    }
}

/// One anomaly found, with enough detail to find it in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub queue: Option<u32>,
    pub detail: String,
}

/// Outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Enough work was done and no anomaly was found.
    Clean,
    /// At least one anomaly.
    Anomalies,
    /// No anomaly, but too little happened to trust that.
    Inconclusive,
}

/// Counts of one operation function's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl OpCounts {
    /// Counts one event of an operation of this function.
    fn tally(&mut self, kind: Kind) {
        match kind {
            Kind::Invoke => self.attempted += 1,
            Kind::Ok => self.ok += 1,
            Kind::Fail => self.failed += 1,
            Kind::Info => self.unknown += 1,
        }
    }
}

/// Per-queue totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    pub acknowledged: u64,
    pub unknown_sends: u64,
    /// Length of the longest final copy.
    pub final_messages: u64,
    /// Acknowledged sends that retention deleted (see [`CheckOptions::retention`]).
    pub aged_out: u64,
    pub anomalies: BTreeMap<String, u64>,
}

/// What makes a history judgeable.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Fewer acknowledged sends than this is inconclusive.
    pub min_acknowledged: u64,
    /// Nodes whose final copies must all be present (0: whatever was read).
    pub expected_nodes: usize,
    /// The broker's `consumer.max_delivery_attempts`: deliveries a message gets
    /// before it goes to the dead-letter topic (receive workload).
    pub max_delivery_attempts: u32,
    /// The nodes were told to delete old CommitLog files during the run (a
    /// soak's short `file_reserved_time`). An acknowledged send that is in no
    /// final copy and whose offsets are all below every node's first offset
    /// then aged out instead of being lost. Off, such a send is a lost write:
    /// nothing else moves a queue's first offset.
    pub retention: bool,
}

/// The contract's default `consumer.max_delivery_attempts`.
pub const DEFAULT_MAX_DELIVERY_ATTEMPTS: u32 = 16;

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            min_acknowledged: 20,
            expected_nodes: 0,
            max_delivery_attempts: DEFAULT_MAX_DELIVERY_ATTEMPTS,
            retention: false,
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub verdict: Verdict,
    /// Why the run is inconclusive (also filled when anomalies were found).
    pub inconclusive_reasons: Vec<String>,
    pub anomaly_counts: BTreeMap<String, u64>,
    /// Every anomaly; reports show the first few of each kind.
    pub anomalies: Vec<Anomaly>,
    pub sends: OpCounts,
    pub polls: OpCounts,
    pub commits: OpCounts,
    pub offset_reads: OpCounts,
    pub queues: BTreeMap<u32, QueueSummary>,
    /// Receive-workload totals (a history with receives only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive: Option<ReceiveSummary>,
    /// Transactions-workload totals (a history with transactional sends only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TransactionSummary>,
}

impl CheckResult {
    /// Number of anomalies of one kind.
    pub fn count(&self, kind: AnomalyKind) -> u64 {
        self.anomaly_counts.get(kind.name()).copied().unwrap_or(0)
    }
}

/// What is known about one body.
#[derive(Default)]
struct SendFacts {
    queue: u32,
    acked_offsets: BTreeSet<u64>,
    ok: bool,
    unknown: bool,
    failed: bool,
}

impl SendFacts {
    fn certainly_failed(&self) -> bool {
        self.failed && !self.ok && !self.unknown
    }
}

/// Where an observation came from, for messages.
#[derive(Clone, Debug)]
struct Seen {
    body: String,
    source: String,
}

struct Checker {
    anomalies: Vec<Anomaly>,
    inconclusive: Vec<String>,
}

impl Checker {
    fn flag(&mut self, kind: AnomalyKind, queue: Option<u32>, detail: String) {
        self.anomalies.push(Anomaly {
            kind,
            queue,
            detail,
        });
    }
}

/// A node's read of a queue's committed offset: (completed at, the highest
/// offset the node answered by then, the op that answered it).
type ReadMark = (f64, u64, u64);

/// Checks a history.
pub fn check(ops: &[Op], options: CheckOptions) -> CheckResult {
    let mut checker = Checker {
        anomalies: Vec::new(),
        inconclusive: Vec::new(),
    };
    let mut counts = [OpCounts::default(); 4];
    let mut sends: HashMap<String, SendFacts> = HashMap::new();
    // (queue, offset) → first observation, and the per-queue offsets of each body.
    let mut observed: BTreeMap<(u32, u64), Seen> = BTreeMap::new();
    let mut offsets_of: HashMap<String, BTreeMap<u32, BTreeSet<u64>>> = HashMap::new();
    let mut polled: BTreeSet<String> = BTreeSet::new();
    let mut finals: BTreeMap<u32, BTreeMap<u64, FinalReadValue>> = BTreeMap::new();
    let mut unknown_per_queue: BTreeMap<u32, u64> = BTreeMap::new();

    // Offsets: per (node, queue) the last value read (reset when a fault touches the
    // node: a restarted node may serve its older applied state for a moment); per
    // queue the highest stored offset a completed commit answered.
    // Per (node, queue), the reads of committed offsets in completion order:
    // (completed at, the highest offset answered by then, the op that answered
    // it). A read is held only to reads that completed before it was invoked:
    // two concurrent reads may answer in either order.
    let mut last_read: HashMap<(u64, u32), Vec<ReadMark>> = HashMap::new();
    let mut committed: BTreeMap<u32, (u64, f64)> = BTreeMap::new();
    let mut commit_invoked: HashMap<String, f64> = HashMap::new();
    // Per queue, every acknowledged commit in completion order: (completed at,
    // the highest offset stored by then). A read must answer at least the
    // highest one completed before it was invoked.
    let mut acknowledged_commits: BTreeMap<u32, Vec<(f64, u64)>> = BTreeMap::new();
    let mut read_invoked: HashMap<String, f64> = HashMap::new();
    let mut final_offset_reads = Vec::new();
    // A receive-workload history: deliveries replace polls.
    let receive_mode = ops.iter().any(|op| matches!(op.body, Body::Receive(_)));
    // A transactions-workload history: transactional sends replace sends.
    let transaction_mode = ops.iter().any(|op| matches!(op.body, Body::TxnSend(_)));

    for op in ops {
        let slot = match &op.body {
            Body::Send(_) | Body::TxnSend(_) => Some(0),
            Body::Poll(_) => Some(1),
            Body::Commit(_) => Some(2),
            Body::ReadOffsets(_) => Some(3),
            _ => None,
        };
        if let Some(slot) = slot {
            counts[slot].tally(op.kind);
        }
        match &op.body {
            Body::Send(v) => {
                let facts = sends.entry(v.body.clone()).or_default();
                facts.queue = v.queue;
                match op.kind {
                    Kind::Invoke => {}
                    Kind::Ok => {
                        facts.ok = true;
                        match v.offset {
                            Some(offset) => {
                                facts.acked_offsets.insert(offset);
                            }
                            None => checker.flag(
                                AnomalyKind::InconsistentOffset,
                                Some(v.queue),
                                format!(
                                    "send of {} acknowledged without an offset (op {})",
                                    v.body, op.index
                                ),
                            ),
                        }
                    }
                    Kind::Fail => facts.failed = true,
                    Kind::Info => {
                        facts.unknown = true;
                        *unknown_per_queue.entry(v.queue).or_default() += 1;
                    }
                }
            }
            Body::TxnSend(v) => {
                for m in &v.messages {
                    // Sent, never `ok` (acknowledged): whether it must be
                    // visible is its transaction's outcome's business.
                    let facts = sends.entry(m.body.clone()).or_default();
                    facts.queue = m.queue;
                    match op.kind {
                        Kind::Invoke | Kind::Ok => {}
                        Kind::Fail => facts.failed = true,
                        Kind::Info => {
                            facts.unknown = true;
                            *unknown_per_queue.entry(m.queue).or_default() += 1;
                        }
                    }
                }
            }
            Body::Poll(v) if op.kind == Kind::Ok => {
                check_poll(&mut checker, op.index, v);
                for (offset, body) in &v.messages {
                    polled.insert(body.clone());
                    observe(
                        &mut checker,
                        &mut observed,
                        &mut offsets_of,
                        v.queue,
                        *offset,
                        body,
                        &format!("poll op {} on node {}", op.index, v.node),
                    );
                }
            }
            Body::Poll(_) => {}
            Body::Commit(v) => match op.kind {
                Kind::Invoke => {
                    commit_invoked.insert(op.process.clone(), op.time_ms.0);
                }
                Kind::Ok => {
                    let invoked = commit_invoked.remove(&op.process).unwrap_or(op.time_ms.0);
                    // Commits apply in log order and store the maximum: a commit
                    // invoked after another completed must answer at least its value.
                    if let Some((prev, completed_ms)) = committed.get(&v.queue).copied() {
                        if completed_ms < invoked && v.offset < prev {
                            checker.flag(
                                AnomalyKind::OffsetBackwards,
                                Some(v.queue),
                                format!(
                                    "commit op {} stored offset {} after an earlier commit stored {prev}",
                                    op.index, v.offset
                                ),
                            );
                        }
                    }
                    let entry = committed.entry(v.queue).or_insert((v.offset, op.time_ms.0));
                    if v.offset >= entry.0 {
                        *entry = (v.offset, op.time_ms.0);
                    }
                    let history = acknowledged_commits.entry(v.queue).or_default();
                    let highest = history.last().map_or(v.offset, |(_, h)| v.offset.max(*h));
                    history.push((op.time_ms.0, highest));
                }
                _ => {
                    commit_invoked.remove(&op.process);
                }
            },
            Body::ReadOffsets(_) if op.kind == Kind::Invoke => {
                read_invoked.insert(op.process.clone(), op.time_ms.0);
            }
            Body::ReadOffsets(v) if op.kind == Kind::Ok => {
                let invoked = read_invoked.remove(&op.process).unwrap_or(op.time_ms.0);
                // Final reads have their own check below (every acknowledged
                // commit, whenever it completed).
                let promises = if v.is_final {
                    None
                } else {
                    Some(&acknowledged_commits)
                };
                for (queue, history) in promises.into_iter().flatten() {
                    // The highest offset of the commits that completed before
                    // the read began.
                    let before = history.partition_point(|(done, _)| *done < invoked);
                    let Some((done, promised)) = before.checked_sub(1).map(|i| history[i]) else {
                        continue;
                    };
                    let answered = v.offsets.get(queue).copied().unwrap_or(0);
                    if answered < promised {
                        checker.flag(
                            AnomalyKind::StaleOffsetRead,
                            Some(*queue),
                            format!(
                                "node {} answered committed offset {answered} (op {}, invoked at {invoked:.0} ms) although a commit of {promised} was acknowledged at {done:.0} ms",
                                v.node, op.index
                            ),
                        );
                    }
                }
                for (queue, offset) in &v.offsets {
                    let key = (v.node, *queue);
                    let earlier = last_read.get(&key).and_then(|reads| {
                        let before = reads.partition_point(|(done, _, _)| *done < invoked);
                        before.checked_sub(1).map(|i| reads[i])
                    });
                    if let Some((_, prev, prev_index)) = earlier {
                        if *offset < prev {
                            checker.flag(
                                AnomalyKind::OffsetBackwards,
                                Some(*queue),
                                format!(
                                    "node {} answered committed offset {offset} (op {}) after answering {prev} (op {prev_index})",
                                    v.node, op.index
                                ),
                            );
                        }
                    }
                    let reads = last_read.entry(key).or_default();
                    let highest = match reads.last() {
                        Some((_, high, high_index)) if high >= offset => (*high, *high_index),
                        _ => (*offset, op.index),
                    };
                    reads.push((op.time_ms.0, highest.0, highest.1));
                }
                if v.is_final {
                    final_offset_reads.push((op.index, v.clone()));
                }
            }
            Body::ReadOffsets(_) => {
                read_invoked.remove(&op.process);
            }
            Body::FinalRead(v) => {
                if op.kind == Kind::Ok {
                    for (offset, body) in &v.messages {
                        observe(
                            &mut checker,
                            &mut observed,
                            &mut offsets_of,
                            v.queue,
                            *offset,
                            body,
                            &format!("final read of node {}", v.node),
                        );
                    }
                    finals.entry(v.queue).or_default().insert(v.node, v.clone());
                }
            }
            Body::Nemesis(v) => {
                for node in &v.nodes {
                    last_read.retain(|(n, _), _| n != node);
                }
            }
            Body::Receive(v) if op.kind == Kind::Ok => {
                // A delivery is a read of the message at its place in the topic.
                for m in v.messages.iter().filter(|m| m.topic == v.topic) {
                    observe(
                        &mut checker,
                        &mut observed,
                        &mut offsets_of,
                        m.queue_id,
                        m.queue_offset,
                        &m.body,
                        &format!("receive op {} on node {}", op.index, v.node),
                    );
                }
            }
            // The lease checks (leases::check) read these.
            Body::Receive(_)
            | Body::Ack(_)
            | Body::ChangeInvisible(_)
            | Body::DlqRead(_)
            | Body::ReceiveDrain(_) => {}
            // The transaction checks (transactions::check) read these.
            Body::TxnResolve(_) | Body::TxnChecks(_) | Body::TxnSettle(_) => {}
        }
    }

    // Final offsets on every node must hold every acknowledged commit.
    for (index, read) in &final_offset_reads {
        for (queue, (stored, _)) in &committed {
            let seen = read.offsets.get(queue).copied().unwrap_or(0);
            if seen < *stored {
                checker.flag(
                    AnomalyKind::OffsetBackwards,
                    Some(*queue),
                    format!(
                        "after healing, node {} holds committed offset {seen} (op {index}) below the acknowledged {stored}",
                        read.node
                    ),
                );
            }
        }
    }

    // Observed bodies: phantoms, reads of failed sends, duplicates.
    for (body, per_queue) in &offsets_of {
        match sends.get(body) {
            None => checker.flag(
                AnomalyKind::Phantom,
                per_queue.keys().next().copied(),
                format!("{body} was read but never sent"),
            ),
            Some(facts) => {
                if facts.certainly_failed() {
                    checker.flag(
                        AnomalyKind::ReadOfFailedSend,
                        Some(facts.queue),
                        format!("{body} was read although every send of it failed"),
                    );
                }
                for queue in per_queue.keys() {
                    if *queue != facts.queue {
                        checker.flag(
                            AnomalyKind::InconsistentOffset,
                            Some(*queue),
                            format!(
                                "{body} sent to queue {} was read in queue {queue}",
                                facts.queue
                            ),
                        );
                    }
                }
            }
        }
        let places: Vec<String> = per_queue
            .iter()
            .flat_map(|(q, offsets)| offsets.iter().map(move |o| format!("{q}/{o}")))
            .collect();
        if places.len() > 1 {
            checker.flag(
                AnomalyKind::Duplicate,
                per_queue.keys().next().copied(),
                format!("{body} is stored at queue/offset {}", places.join(", ")),
            );
        }
    }

    check_finals(&mut checker, &finals, options);

    // Acknowledged sends: present, at the acknowledged offset, and polled.
    let drained = !finals.is_empty();
    let mut lost: BTreeSet<String> = BTreeSet::new();
    let mut acked_per_queue: BTreeMap<u32, u64> = BTreeMap::new();
    let mut aged_out_per_queue: BTreeMap<u32, u64> = BTreeMap::new();
    let mut acked: Vec<(&String, &SendFacts)> = sends.iter().filter(|(_, f)| f.ok).collect();
    acked.sort_by(|a, b| a.0.cmp(b.0));
    for (body, facts) in acked {
        *acked_per_queue.entry(facts.queue).or_default() += 1;
        let in_final = finals.get(&facts.queue).is_some_and(|copies| {
            copies
                .values()
                .any(|copy| copy.messages.iter().any(|(_, b)| b == body))
        });
        if !in_final && options.retention && aged_out(facts, finals.get(&facts.queue)) {
            *aged_out_per_queue.entry(facts.queue).or_default() += 1;
            continue;
        }
        // Without any final read, absence proves nothing (the run is inconclusive).
        if !in_final && drained {
            lost.insert(body.clone());
            checker.flag(
                AnomalyKind::LostWrite,
                Some(facts.queue),
                format!(
                    "{body} was acknowledged at offset(s) {:?} of queue {} and is in no node's final copy",
                    facts.acked_offsets, facts.queue
                ),
            );
            continue;
        }
        if !in_final {
            continue;
        }
        for offset in &facts.acked_offsets {
            match observed.get(&(facts.queue, *offset)) {
                Some(seen) if seen.body != *body => checker.flag(
                    AnomalyKind::InconsistentOffset,
                    Some(facts.queue),
                    format!(
                        "{body} was acknowledged at {}/{offset}, which reads back {} ({})",
                        facts.queue, seen.body, seen.source
                    ),
                ),
                Some(_) => {}
                None => checker.flag(
                    AnomalyKind::InconsistentOffset,
                    Some(facts.queue),
                    format!(
                        "{body} was acknowledged at {}/{offset}, which no read returned",
                        facts.queue
                    ),
                ),
            }
        }
        // The receive workload checks delivery instead (never_delivered).
        if drained && !receive_mode && !polled.contains(body) {
            checker.flag(
                AnomalyKind::UnseenWrite,
                Some(facts.queue),
                format!("{body} is stored but no consumer poll returned it"),
            );
        }
    }

    // Transactions: committed ones' messages are the acknowledged writes.
    let transactions = transaction_mode.then(|| {
        let (summary, committed_per_queue) =
            transactions::check(&mut checker, ops, &finals, &polled);
        for (queue, n) in committed_per_queue {
            *acked_per_queue.entry(queue).or_default() += n;
        }
        summary
    });
    let total_acked: u64 = acked_per_queue.values().sum();
    if total_acked < options.min_acknowledged {
        checker.inconclusive.push(format!(
            "only {total_acked} acknowledged {} (need {})",
            if transaction_mode {
                "messages of committed transactions"
            } else {
                "sends"
            },
            options.min_acknowledged
        ));
    }
    if finals.is_empty() {
        checker
            .inconclusive
            .push("no final read of any node: lost writes and divergence unchecked".into());
    }
    if polled.is_empty() && !receive_mode {
        checker
            .inconclusive
            .push("no consumer poll returned a message".into());
    }
    let receive = receive_mode.then(|| leases::check(&mut checker, ops, &sends, &lost, options));

    let mut result = CheckResult {
        verdict: Verdict::Clean,
        inconclusive_reasons: checker.inconclusive,
        anomaly_counts: BTreeMap::new(),
        anomalies: Vec::new(),
        sends: counts[0],
        polls: counts[1],
        commits: counts[2],
        offset_reads: counts[3],
        queues: BTreeMap::new(),
        receive,
        transactions,
    };
    let queues: BTreeSet<u32> = acked_per_queue
        .keys()
        .chain(finals.keys())
        .chain(unknown_per_queue.keys())
        .copied()
        .collect();
    for queue in queues {
        result.queues.insert(
            queue,
            QueueSummary {
                acknowledged: acked_per_queue.get(&queue).copied().unwrap_or(0),
                unknown_sends: unknown_per_queue.get(&queue).copied().unwrap_or(0),
                final_messages: finals
                    .get(&queue)
                    .and_then(|c| c.values().map(|v| v.messages.len() as u64).max())
                    .unwrap_or(0),
                aged_out: aged_out_per_queue.get(&queue).copied().unwrap_or(0),
                anomalies: BTreeMap::new(),
            },
        );
    }
    for anomaly in &checker.anomalies {
        *result
            .anomaly_counts
            .entry(anomaly.kind.name().to_string())
            .or_default() += 1;
        if let Some(summary) = anomaly.queue.and_then(|q| result.queues.get_mut(&q)) {
            *summary
                .anomalies
                .entry(anomaly.kind.name().to_string())
                .or_default() += 1;
        }
    }
    result.anomalies = checker.anomalies;
    result.verdict = if !result.anomalies.is_empty() {
        Verdict::Anomalies
    } else if !result.inconclusive_reasons.is_empty() {
        Verdict::Inconclusive
    } else {
        Verdict::Clean
    };
    result
}

/// Records that `body` was read at `queue/offset`; flags a second body at one offset.
fn observe(
    checker: &mut Checker,
    observed: &mut BTreeMap<(u32, u64), Seen>,
    offsets_of: &mut HashMap<String, BTreeMap<u32, BTreeSet<u64>>>,
    queue: u32,
    offset: u64,
    body: &str,
    source: &str,
) {
    offsets_of
        .entry(body.to_string())
        .or_default()
        .entry(queue)
        .or_default()
        .insert(offset);
    match observed.get(&(queue, offset)) {
        Some(seen) if seen.body != body => checker.flag(
            AnomalyKind::InconsistentOffset,
            Some(queue),
            format!(
                "{queue}/{offset} holds {} ({}) and {body} ({source})",
                seen.body, seen.source
            ),
        ),
        Some(_) => {}
        None => {
            observed.insert(
                (queue, offset),
                Seen {
                    body: body.to_string(),
                    source: source.to_string(),
                },
            );
        }
    }
}

/// One poll answer on its own: offsets contiguous from the one asked for.
fn check_poll(checker: &mut Checker, index: u64, poll: &PollValue) {
    let queue = Some(poll.queue);
    // OFFSET_OVERFLOW (a replica that applied less than the consumer read
    // elsewhere) and OFFSET_TOO_SMALL answer with the offset to correct to, which
    // may be below the one asked for; only data-bearing answers must move forward.
    let corrective = matches!(
        poll.status.as_deref(),
        Some("OFFSET_OVERFLOW" | "OFFSET_TOO_SMALL")
    );
    if let (Some(next), false) = (poll.next, corrective) {
        if next < poll.from {
            checker.flag(
                AnomalyKind::NonMonotonicPoll,
                queue,
                format!(
                    "poll op {index} from offset {} answered next_offset {next}",
                    poll.from
                ),
            );
        }
    }
    let mut expected = poll.from;
    for (position, (offset, _)) in poll.messages.iter().enumerate() {
        if *offset < expected {
            checker.flag(
                AnomalyKind::NonMonotonicPoll,
                queue,
                format!(
                    "poll op {index} from offset {} answered offset {offset} at position {position}, after {}",
                    poll.from,
                    expected.saturating_sub(1)
                ),
            );
            return;
        }
        // The first message may start above `from` only when `from` is below the
        // queue's retained minimum, which a fresh run never reaches.
        if *offset > expected {
            checker.flag(
                AnomalyKind::Gap,
                queue,
                format!(
                    "poll op {index} from offset {} skipped offsets {expected}..{offset}",
                    poll.from
                ),
            );
        }
        expected = offset + 1;
    }
    if let (Some(next), Some((last, _))) = (poll.next, poll.messages.last()) {
        if next <= *last {
            checker.flag(
                AnomalyKind::NonMonotonicPoll,
                queue,
                format!("poll op {index} returned offset {last} but next_offset {next}"),
            );
        }
    }
}

/// Whether retention deleted an acknowledged send: every node's final copy of
/// its queue starts after every offset it was acknowledged at. A node that still
/// holds the offset holds it with another body, which is a loss, not an age.
fn aged_out(facts: &SendFacts, copies: Option<&BTreeMap<u64, FinalReadValue>>) -> bool {
    let Some(copies) = copies.filter(|c| !c.is_empty()) else {
        return false;
    };
    let Some(last_acked) = facts.acked_offsets.last() else {
        return false;
    };
    copies.values().all(|copy| copy.min_offset > *last_acked)
}

/// Every node's final copy: contiguous, and the same on every node.
fn check_finals(
    checker: &mut Checker,
    finals: &BTreeMap<u32, BTreeMap<u64, FinalReadValue>>,
    options: CheckOptions,
) {
    for (queue, copies) in finals {
        let q = Some(*queue);
        for copy in copies.values() {
            let mut expected = copy.min_offset;
            for (offset, _) in &copy.messages {
                if *offset != expected {
                    checker.flag(
                        AnomalyKind::Gap,
                        q,
                        format!(
                            "node {}'s copy of queue {queue} jumps from offset {} to {offset}",
                            copy.node,
                            expected.saturating_sub(1)
                        ),
                    );
                }
                expected = offset + 1;
            }
            if expected != copy.max_offset {
                checker.flag(
                    AnomalyKind::Gap,
                    q,
                    format!(
                        "node {}'s copy of queue {queue} ends at offset {} but reports max_offset {}",
                        copy.node,
                        expected,
                        copy.max_offset
                    ),
                );
            }
        }
        if options.expected_nodes > 0 && copies.len() < options.expected_nodes {
            checker.inconclusive.push(format!(
                "queue {queue}: final copies of {} node(s) of {}",
                copies.len(),
                options.expected_nodes
            ));
        }
        // Compare every copy with the longest one.
        let Some(reference) = copies.values().max_by_key(|c| (c.max_offset, c.node)) else {
            continue;
        };
        let reference_bodies: BTreeMap<u64, &String> =
            reference.messages.iter().map(|(o, b)| (*o, b)).collect();
        for copy in copies.values() {
            if copy.node == reference.node {
                continue;
            }
            if copy.max_offset != reference.max_offset {
                checker.flag(
                    AnomalyKind::ReplicaDivergence,
                    q,
                    format!(
                        "after healing, node {} has {} messages in queue {queue} and node {} has {}",
                        copy.node, copy.max_offset, reference.node, reference.max_offset
                    ),
                );
            }
            let differing: Vec<u64> = copy
                .messages
                .iter()
                .filter(|(o, b)| reference_bodies.get(o).is_some_and(|r| *r != b))
                .map(|(o, _)| *o)
                .collect();
            if let Some(first) = differing.first() {
                checker.flag(
                    AnomalyKind::ReplicaDivergence,
                    q,
                    format!(
                        "nodes {} and {} differ at {} offset(s) of queue {queue}, first at {first}",
                        copy.node,
                        reference.node,
                        differing.len()
                    ),
                );
            }
        }
    }
}
