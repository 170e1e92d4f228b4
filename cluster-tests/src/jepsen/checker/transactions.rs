//! The transactional-message checks (shared/API.md "Transactional messages"):
//! what commits, rollbacks, checks and their timeouts must never do, judged from
//! `txn_send`, `txn_resolve`, `txn_checks` and `txn_settle` events against every
//! node's final copy of the topic.
//!
//! A transaction is its producer's name for it (`tx`); its messages are their
//! unique bodies. Its transaction id comes from the send's answer or, when that
//! answer was lost, from a check that offered messages of it (attributed by
//! their bodies, never by the id alone).
//!
//! How it ended, from the answers to its resolutions (by its producer, a check
//! responder, or the final probe — every attempt is recorded):
//! * committed: a commit answered 200 `COMMITTED`, or a rollback answered 409;
//! * rolled back: a rollback answered 200 `ROLLED_BACK` (`by_timeout` when the
//!   broker did it after the last check), or a commit answered 409.
//!
//! An attempt whose answer was lost proves nothing either way. The checks are
//! written so that a lost answer can only hide an anomaly, never make one: a
//! transaction is held to an outcome only when a definite answer said it, and
//! "visible but never committed" needs that no commit of it was even attempted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{AnomalyKind, Checker, OpCounts};
use crate::jepsen::history::{
    Body, CheckAnswer, FinalReadValue, Kind, Op, ResolveSource, TxnAction, TxnCheckValue,
    TxnDecision, TxnResolveValue, TxnSettleValue,
};

/// Resolutions a broker group remembers (the newest): a repeat of an older one
/// may answer 404, so a 404 is wrong only while fewer transactions than this
/// were opened (every transaction of the test cluster is the workload's).
const REMEMBERED_RESOLUTIONS: usize = broker::replication::transactions::MAX_RESOLVED;

const COMMITTED: &str = broker_proto::transaction::STATUS_COMMITTED;
const ROLLED_BACK: &str = broker_proto::transaction::STATUS_ROLLED_BACK;

/// Totals of a transactions-workload history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransactionSummary {
    /// Transactional sends (one per transaction: a send is never retried).
    pub sends: OpCounts,
    /// Transactions whose send was invoked.
    pub opened: u64,
    /// The producers' decisions, recorded before the send.
    pub decided_commit: u64,
    pub decided_rollback: u64,
    /// Abandoned ones, by the answer their messages tell the check responder.
    pub abandoned_commit: u64,
    pub abandoned_rollback: u64,
    pub abandoned_ignore: u64,
    /// Sends whose outcome was unknown, and how many of those a check offered.
    pub send_unknown: u64,
    pub send_unknown_offered: u64,
    /// Transactions a definite answer said were committed: first answered 200
    /// `COMMITTED` to their producer, else to a responder, else known from a 409
    /// to a rollback (the final probe) only.
    pub committed: u64,
    pub committed_by_producer: u64,
    pub committed_by_check: u64,
    pub committed_otherwise: u64,
    /// Transactions a definite answer said were rolled back: by the broker after
    /// the last check (`by_timeout`), else by their producer, else by a
    /// responder, else known from a 409 to a commit only.
    pub rolled_back: u64,
    pub rolled_back_by_timeout: u64,
    pub rolled_back_by_producer: u64,
    pub rolled_back_by_check: u64,
    pub rolled_back_otherwise: u64,
    /// Transactions whose send was answered (or offered) but whose outcome no
    /// definite answer told.
    pub undetermined: u64,
    /// Commit and rollback attempts of producers and responders, the attempts
    /// after each resolution's first, and the definite refusals among them.
    pub resolutions: OpCounts,
    pub resolution_retries: u64,
    pub conflicts: u64,
    pub not_found: u64,
    /// The final probe's attempts.
    pub probes: OpCounts,
    /// Long polls of the checks, the offers they brought, and what the
    /// responders answered.
    pub check_polls: OpCounts,
    pub offers: u64,
    pub offers_commit: u64,
    pub offers_rollback: u64,
    pub offers_ignored: u64,
    pub offers_unreadable: u64,
    /// Offers taken after a definite answer had resolved the transaction (a
    /// leader offering from state it has not applied yet): harmless while the
    /// answer is the same, counted to be seen.
    pub stale_offers: u64,
    /// Messages of committed transactions, and messages of any transaction in
    /// some node's final copy.
    pub committed_messages: u64,
    pub visible_messages: u64,
    /// Whether every node reported no open transaction after the heal (`None`:
    /// the wait was not recorded).
    pub settled: Option<bool>,
}

/// A definite answer about how a transaction ended.
#[derive(Clone, Debug)]
struct Evidence {
    done_ms: f64,
    source: ResolveSource,
    by_timeout: bool,
    detail: String,
}

/// What is known about one transaction.
#[derive(Default)]
struct Txn {
    process: String,
    send_index: u64,
    decision: TxnDecision,
    check_answer: CheckAnswer,
    topic: String,
    /// Body → queue, as sent.
    messages: BTreeMap<String, u32>,
    send: SendState,
    ids: BTreeSet<String>,
    offered: u64,
    commit_attempted: bool,
    committed: Vec<Evidence>,
    rolled_back: Vec<Evidence>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum SendState {
    /// Invoked, never completed.
    #[default]
    Pending,
    Ok,
    Failed,
    Unknown,
}

/// One offered transaction, with the times of the poll that brought it.
struct Offer {
    op_index: u64,
    invoked_ms: f64,
    check: TxnCheckValue,
}

/// One resolution attempt that completed.
struct Attempt {
    op_index: u64,
    process: String,
    kind: Kind,
    done_ms: f64,
    value: TxnResolveValue,
}

/// Runs the transaction checks; answers the totals and the messages of
/// committed transactions per queue (the transactions mode's "acknowledged").
pub(super) fn check(
    checker: &mut Checker,
    ops: &[Op],
    finals: &BTreeMap<u32, BTreeMap<u64, FinalReadValue>>,
    polled: &BTreeSet<String>,
) -> (TransactionSummary, BTreeMap<u32, u64>) {
    let mut summary = TransactionSummary::default();
    let mut txs: BTreeMap<String, Txn> = BTreeMap::new();
    let mut tx_of_body: HashMap<String, String> = HashMap::new();
    let mut offers: Vec<Offer> = Vec::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut poll_invoked: HashMap<&str, f64> = HashMap::new();
    let mut settle: Option<TxnSettleValue> = None;

    for op in ops {
        let process = op.process.as_str();
        match &op.body {
            Body::TxnSend(v) => {
                summary.sends.tally(op.kind);
                if op.kind == Kind::Invoke {
                    summary.opened += 1;
                    match (v.decision, v.check_answer) {
                        (TxnDecision::Commit, _) => summary.decided_commit += 1,
                        (TxnDecision::Rollback, _) => summary.decided_rollback += 1,
                        (TxnDecision::Abandon, CheckAnswer::Commit) => {
                            summary.abandoned_commit += 1;
                        }
                        (TxnDecision::Abandon, CheckAnswer::Rollback) => {
                            summary.abandoned_rollback += 1;
                        }
                        (TxnDecision::Abandon, CheckAnswer::Ignore) => {
                            summary.abandoned_ignore += 1;
                        }
                    }
                    for m in &v.messages {
                        tx_of_body.insert(m.body.clone(), v.tx.clone());
                    }
                    txs.insert(
                        v.tx.clone(),
                        Txn {
                            process: op.process.clone(),
                            send_index: op.index,
                            decision: v.decision,
                            check_answer: v.check_answer,
                            topic: v.topic.clone(),
                            messages: v
                                .messages
                                .iter()
                                .map(|m| (m.body.clone(), m.queue))
                                .collect(),
                            ..Txn::default()
                        },
                    );
                    continue;
                }
                let Some(tx) = txs.get_mut(&v.tx) else {
                    continue;
                };
                match op.kind {
                    Kind::Ok => {
                        tx.send = SendState::Ok;
                        let id = v
                            .transaction_id
                            .as_deref()
                            .filter(|id| broker_proto::transaction::is_transaction_id(id));
                        match id {
                            Some(id) => {
                                tx.ids.insert(id.to_string());
                            }
                            None => checker.flag(
                                AnomalyKind::WrongAnswer,
                                None,
                                format!(
                                    "the send of {} (op {}) was answered without a transaction id: {:?}",
                                    v.tx, op.index, v.transaction_id
                                ),
                            ),
                        }
                        if let Some(error) = &v.error {
                            checker.flag(
                                AnomalyKind::WrongAnswer,
                                None,
                                format!("the send of {} (op {}): {error}", v.tx, op.index),
                            );
                        }
                    }
                    Kind::Fail => tx.send = SendState::Failed,
                    Kind::Info => {
                        tx.send = SendState::Unknown;
                        summary.send_unknown += 1;
                    }
                    Kind::Invoke => {}
                }
            }
            Body::TxnChecks(v) => {
                summary.check_polls.tally(op.kind);
                match op.kind {
                    Kind::Invoke => {
                        poll_invoked.insert(process, op.time_ms.0);
                    }
                    Kind::Ok => {
                        let invoked = poll_invoked.remove(process).unwrap_or(op.time_ms.0);
                        for check in &v.checks {
                            summary.offers += 1;
                            match check.answer {
                                Some(CheckAnswer::Commit) => summary.offers_commit += 1,
                                Some(CheckAnswer::Rollback) => summary.offers_rollback += 1,
                                Some(CheckAnswer::Ignore) => summary.offers_ignored += 1,
                                None => summary.offers_unreadable += 1,
                            }
                            offers.push(Offer {
                                op_index: op.index,
                                invoked_ms: invoked,
                                check: check.clone(),
                            });
                        }
                    }
                    Kind::Fail | Kind::Info => {
                        poll_invoked.remove(process);
                    }
                }
            }
            Body::TxnResolve(v) => {
                let counts = if v.source == ResolveSource::Probe {
                    &mut summary.probes
                } else {
                    &mut summary.resolutions
                };
                counts.tally(op.kind);
                if op.kind == Kind::Invoke {
                    if v.source != ResolveSource::Probe && v.attempt > 1 {
                        summary.resolution_retries += 1;
                    }
                    // A commit attempted, whatever came of it, may have committed.
                    if v.action == TxnAction::Commit {
                        attempts.push(Attempt {
                            op_index: op.index,
                            process: op.process.clone(),
                            kind: Kind::Invoke,
                            done_ms: op.time_ms.0,
                            value: v.clone(),
                        });
                    }
                    continue;
                }
                if v.source != ResolveSource::Probe && op.kind == Kind::Fail {
                    match v.http_status {
                        Some(409) => summary.conflicts += 1,
                        Some(404) => summary.not_found += 1,
                        _ => {}
                    }
                }
                attempts.push(Attempt {
                    op_index: op.index,
                    process: op.process.clone(),
                    kind: op.kind,
                    done_ms: op.time_ms.0,
                    value: v.clone(),
                });
            }
            Body::TxnSettle(v) => settle = Some(v.clone()),
            _ => {}
        }
    }

    // Offers: which transaction each is, by its messages.
    let mut tx_of_id: HashMap<String, String> = HashMap::new();
    for (name, tx) in &txs {
        for id in &tx.ids {
            tx_of_id.insert(id.clone(), name.clone());
        }
    }
    let mut offer_tx: Vec<Option<String>> = Vec::new();
    for offer in &offers {
        let name = attribute_offer(checker, offer, &txs, &tx_of_body);
        if let Some(name) = &name {
            let id = &offer.check.transaction_id;
            match tx_of_id.get(id) {
                Some(other) if other != name => checker.flag(
                    AnomalyKind::CheckMismatch,
                    None,
                    format!(
                        "check op {} offered {id} with the messages of {name}, but {id} is {other}'s",
                        offer.op_index
                    ),
                ),
                Some(_) => {}
                None => {
                    tx_of_id.insert(id.clone(), name.clone());
                }
            }
            if let Some(tx) = txs.get_mut(name) {
                tx.offered += 1;
                tx.ids.insert(id.clone());
            }
        }
        offer_tx.push(name);
    }
    for (name, tx) in &txs {
        if tx.ids.len() > 1 {
            checker.flag(
                AnomalyKind::CheckMismatch,
                None,
                format!(
                    "{name} was sent once (op {}) but is known under several transaction ids {:?}",
                    tx.send_index, tx.ids
                ),
            );
        }
        if tx.offered > 0 && tx.send == SendState::Failed {
            checker.flag(
                AnomalyKind::CheckMismatch,
                None,
                format!(
                    "{name} was offered in a check although its send (op {}) certainly failed",
                    tx.send_index
                ),
            );
        }
        if tx.offered > 0 && tx.send == SendState::Unknown {
            summary.send_unknown_offered += 1;
        }
    }

    // Resolutions: evidence of how each transaction ended.
    let txs_opened = txs.len();
    for attempt in &attempts {
        let v = &attempt.value;
        let name = if v.tx.is_empty() {
            tx_of_id.get(&v.transaction_id).cloned()
        } else {
            Some(v.tx.clone())
        };
        let Some(tx) = name.as_ref().and_then(|n| txs.get_mut(n)) else {
            continue;
        };
        let name = name.unwrap_or_default();
        if attempt.kind == Kind::Invoke {
            tx.commit_attempted = true;
            continue;
        }
        let what = format!(
            "{} op {} by {} ({:?}) on node {}",
            v.action.name(),
            attempt.op_index,
            attempt.process,
            v.source,
            v.node
        );
        match attempt.kind {
            Kind::Ok => {
                let mut wrong = Vec::new();
                let status = v.status.as_deref().unwrap_or("");
                let expected = match v.action {
                    TxnAction::Commit => COMMITTED,
                    TxnAction::Rollback => ROLLED_BACK,
                };
                if status != expected {
                    wrong.push(format!("status {status:?} to a {}", v.action.name()));
                }
                if v.answered_id.as_deref() != Some(v.transaction_id.as_str()) {
                    wrong.push(format!("transaction_id {:?}", v.answered_id));
                }
                if v.messages != Some(tx.messages.len() as u64) {
                    wrong.push(format!(
                        "messages {:?} of {} sent",
                        v.messages,
                        tx.messages.len()
                    ));
                }
                if v.topic.as_deref() != Some(tx.topic.as_str()) {
                    wrong.push(format!("topic {:?}, sent to {:?}", v.topic, tx.topic));
                }
                if !wrong.is_empty() {
                    checker.flag(
                        AnomalyKind::WrongAnswer,
                        None,
                        format!(
                            "{name} ({}): {what} answered 200 with {}",
                            v.transaction_id,
                            wrong.join(", ")
                        ),
                    );
                }
                let by_timeout = v.by_timeout.unwrap_or(false);
                let evidence = Evidence {
                    done_ms: attempt.done_ms,
                    source: v.source,
                    by_timeout,
                    detail: format!(
                        "{what} answered 200 {status}{}",
                        if by_timeout { " by timeout" } else { "" }
                    ),
                };
                match status {
                    COMMITTED => tx.committed.push(evidence),
                    ROLLED_BACK => tx.rolled_back.push(evidence),
                    _ => {}
                }
            }
            Kind::Fail => match v.http_status {
                Some(409) => {
                    let evidence = Evidence {
                        done_ms: attempt.done_ms,
                        source: v.source,
                        by_timeout: false,
                        detail: format!("{what} answered 409 {}", v.code.as_deref().unwrap_or("")),
                    };
                    match v.action {
                        TxnAction::Commit => tx.rolled_back.push(evidence),
                        TxnAction::Rollback => tx.committed.push(evidence),
                    }
                }
                Some(404) if txs_opened < REMEMBERED_RESOLUTIONS => checker.flag(
                    AnomalyKind::WrongAnswer,
                    None,
                    format!(
                        "{name} ({}): {what} answered 404 {} although the transaction was stored",
                        v.transaction_id,
                        v.code.as_deref().unwrap_or("")
                    ),
                ),
                _ => {}
            },
            Kind::Info | Kind::Invoke => {}
        }
    }

    // Offers of transactions a definite answer had already resolved.
    for (offer, name) in offers.iter().zip(&offer_tx) {
        let Some(tx) = name.as_ref().and_then(|n| txs.get(n)) else {
            continue;
        };
        let resolved_before = tx
            .committed
            .iter()
            .chain(&tx.rolled_back)
            .any(|e| e.done_ms < offer.invoked_ms);
        if resolved_before {
            summary.stale_offers += 1;
        }
    }

    let visible = Visibility::of(finals);
    let mut committed_per_queue: BTreeMap<u32, u64> = BTreeMap::new();
    for (name, tx) in &txs {
        judge(
            checker,
            name,
            tx,
            &visible,
            polled,
            &mut summary,
            &mut committed_per_queue,
        );
    }

    summary.settled = settle.as_ref().map(|s| s.settled);
    match &settle {
        None => checker
            .inconclusive
            .push("no wait for open transactions recorded: never_resolved unchecked".into()),
        Some(s) if !s.settled => {
            let open: Vec<String> = s
                .open
                .iter()
                .filter(|(_, n)| *n != Some(0))
                .map(|(node, n)| match n {
                    Some(n) => format!("node {node}: {n} open"),
                    None => format!("node {node}: no answer"),
                })
                .collect();
            if s.open.iter().any(|(_, n)| n.is_some_and(|n| n > 0)) {
                checker.flag(
                    AnomalyKind::NeverResolved,
                    None,
                    format!(
                        "{} ms after the final heal transactions were still open ({}): neither resolved nor rolled back after their last check",
                        s.waited_ms,
                        open.join(", ")
                    ),
                );
            } else {
                checker.inconclusive.push(format!(
                    "open transactions unknown after the heal ({})",
                    open.join(", ")
                ));
            }
        }
        Some(_) => {}
    }
    if summary.sends.ok == 0 {
        checker
            .inconclusive
            .push("no transactional send was answered".into());
    }
    if summary.offers == 0 {
        checker.inconclusive.push(
            "no transaction was offered in a check: the check responders went unexercised".into(),
        );
    }
    if summary.rolled_back_by_timeout == 0 {
        checker.inconclusive.push(
            "no transaction was rolled back by timeout: transaction.max_checks went unexercised"
                .into(),
        );
    }
    (summary, committed_per_queue)
}

/// The transaction an offer's messages belong to, if they are exactly one
/// transaction's messages as sent; flags the offer otherwise.
fn attribute_offer(
    checker: &mut Checker,
    offer: &Offer,
    txs: &BTreeMap<String, Txn>,
    tx_of_body: &HashMap<String, String>,
) -> Option<String> {
    let check = &offer.check;
    let place = format!(
        "check op {} offered {} (check_count {})",
        offer.op_index, check.transaction_id, check.check_count
    );
    let names: BTreeSet<Option<&String>> = check
        .messages
        .iter()
        .map(|m| tx_of_body.get(&m.body))
        .collect();
    let bodies: Vec<&str> = check.messages.iter().map(|m| m.body.as_str()).collect();
    let name = match names.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(name)] => (*name).clone(),
        _ => {
            checker.flag(
                AnomalyKind::CheckMismatch,
                None,
                format!("{place} with messages {bodies:?}: not one sent transaction's"),
            );
            return None;
        }
    };
    let tx = txs.get(&name)?;
    let mut wrong = Vec::new();
    let offered: BTreeMap<&str, u32> = check
        .messages
        .iter()
        .map(|m| (m.body.as_str(), m.queue))
        .collect();
    let sent: BTreeMap<&str, u32> = tx.messages.iter().map(|(b, q)| (b.as_str(), *q)).collect();
    if offered != sent || check.messages.len() != tx.messages.len() {
        wrong.push(format!(
            "messages (body, queue) {:?}, sent {sent:?}",
            check
                .messages
                .iter()
                .map(|m| (m.body.as_str(), m.queue))
                .collect::<Vec<_>>()
        ));
    }
    if check.topic != tx.topic || check.messages.iter().any(|m| m.topic != tx.topic) {
        wrong.push(format!("topic {:?}, sent to {:?}", check.topic, tx.topic));
    }
    for m in &check.messages {
        if m.tx.as_deref() != Some(name.as_str())
            || m.answer.as_deref() != Some(tx.check_answer.name())
        {
            wrong.push(format!(
                "{} carries properties tx {:?} answer {:?}, sent {name:?} {:?}",
                m.body,
                m.tx,
                m.answer,
                tx.check_answer.name()
            ));
        }
    }
    if check.check_count == 0 {
        wrong.push("check_count 0".into());
    }
    if !wrong.is_empty() {
        checker.flag(
            AnomalyKind::CheckMismatch,
            None,
            format!("{place} of {name}: {}", wrong.join("; ")),
        );
    }
    Some(name)
}

/// Every node's final copy of the topic: which bodies it holds.
struct Visibility {
    /// (node, queue) pairs read.
    read: BTreeSet<(u64, u32)>,
    nodes: BTreeSet<u64>,
    /// (node, body) present.
    present: BTreeSet<(u64, String)>,
}

impl Visibility {
    fn of(finals: &BTreeMap<u32, BTreeMap<u64, FinalReadValue>>) -> Self {
        let mut read = BTreeSet::new();
        let mut present = BTreeSet::new();
        for (queue, copies) in finals {
            for (node, copy) in copies {
                read.insert((*node, *queue));
                for (_, body) in &copy.messages {
                    present.insert((*node, body.clone()));
                }
            }
        }
        let nodes = read.iter().map(|(n, _)| *n).collect();
        Self {
            read,
            nodes,
            present,
        }
    }

    fn is_empty(&self) -> bool {
        self.read.is_empty()
    }

    fn on(&self, node: u64, body: &str) -> bool {
        self.present.contains(&(node, body.to_string()))
    }

    fn anywhere(&self, body: &str) -> bool {
        self.nodes.iter().any(|n| self.on(*n, body))
    }
}

/// One transaction against the final copies.
fn judge(
    checker: &mut Checker,
    name: &str,
    tx: &Txn,
    visible: &Visibility,
    polled: &BTreeSet<String>,
    summary: &mut TransactionSummary,
    committed_per_queue: &mut BTreeMap<u32, u64>,
) {
    let committed = !tx.committed.is_empty();
    let rolled_back = !tx.rolled_back.is_empty();
    let id = tx.ids.iter().next().map_or("no id", String::as_str);
    let label = format!(
        "{name} ({id}, {} message(s), sent by {} op {}, decision {:?}, check answer {})",
        tx.messages.len(),
        tx.process,
        tx.send_index,
        tx.decision,
        tx.check_answer.name()
    );
    let first = |evidence: &[Evidence]| {
        evidence
            .iter()
            .min_by(|a, b| a.done_ms.total_cmp(&b.done_ms))
            .map_or(String::new(), |e| e.detail.clone())
    };
    if committed {
        summary.committed += 1;
        summary.committed_messages += tx.messages.len() as u64;
        for queue in tx.messages.values() {
            *committed_per_queue.entry(*queue).or_default() += 1;
        }
        let by = |source| tx.committed.iter().any(|e| e.source == source);
        if by(ResolveSource::Producer) {
            summary.committed_by_producer += 1;
        } else if by(ResolveSource::Check) {
            summary.committed_by_check += 1;
        } else {
            summary.committed_otherwise += 1;
        }
    }
    if rolled_back {
        summary.rolled_back += 1;
        let by = |source| {
            tx.rolled_back
                .iter()
                .any(|e| e.source == source && !e.by_timeout)
        };
        if tx.rolled_back.iter().any(|e| e.by_timeout) {
            summary.rolled_back_by_timeout += 1;
        } else if by(ResolveSource::Producer) {
            summary.rolled_back_by_producer += 1;
        } else if by(ResolveSource::Check) {
            summary.rolled_back_by_check += 1;
        } else {
            summary.rolled_back_otherwise += 1;
        }
    }
    if !committed && !rolled_back && (tx.send == SendState::Ok || tx.offered > 0) {
        summary.undetermined += 1;
    }
    if committed && rolled_back {
        checker.flag(
            AnomalyKind::BothOutcomes,
            None,
            format!(
                "{label}: committed ({}) and rolled back ({})",
                first(&tx.committed),
                first(&tx.rolled_back)
            ),
        );
    }
    let seen: Vec<&String> = tx.messages.keys().filter(|b| visible.anywhere(b)).collect();
    summary.visible_messages += seen.len() as u64;
    // Nothing but a commit makes a transaction visible: with none attempted
    // (not even one whose answer was lost) it must be invisible, and never be
    // answered committed. Rolled-back ones are judged below.
    if !tx.commit_attempted && !rolled_back && (committed || !seen.is_empty()) {
        checker.flag(
            AnomalyKind::UncommittedVisible,
            tx.messages.values().next().copied(),
            format!(
                "{label}: no commit of it was ever requested, yet {}",
                if committed {
                    format!(
                        "the broker answered it committed ({})",
                        first(&tx.committed)
                    )
                } else {
                    format!("{seen:?} are visible")
                }
            ),
        );
    }
    if visible.is_empty() {
        return;
    }
    // Per node whose copy of every queue of the transaction was read.
    let mut partial = Vec::new();
    let mut missing = Vec::new();
    for node in &visible.nodes {
        if !tx
            .messages
            .values()
            .all(|q| visible.read.contains(&(*node, *q)))
        {
            continue;
        }
        let absent: Vec<&String> = tx
            .messages
            .keys()
            .filter(|b| !visible.on(*node, b))
            .collect();
        if !absent.is_empty() && absent.len() < tx.messages.len() {
            partial.push(format!("node {node} lacks {absent:?}"));
        }
        if committed && !absent.is_empty() {
            missing.push(format!("node {node} lacks {absent:?}"));
        }
    }
    if !partial.is_empty() {
        checker.flag(
            AnomalyKind::Partial,
            tx.messages.values().next().copied(),
            format!(
                "{label}: only some of its messages are visible: {}",
                partial.join("; ")
            ),
        );
    }
    if !missing.is_empty() {
        checker.flag(
            AnomalyKind::CommittedMissing,
            tx.messages.values().next().copied(),
            format!(
                "{label} was committed ({}) but {}",
                first(&tx.committed),
                missing.join("; ")
            ),
        );
    }
    if rolled_back && !committed && !seen.is_empty() {
        checker.flag(
            AnomalyKind::RolledBackVisible,
            tx.messages.values().next().copied(),
            format!(
                "{label} was rolled back ({}) but {seen:?} are visible",
                first(&tx.rolled_back)
            ),
        );
    }
    // Consumers drained the topic: a committed message present must have been
    // polled (the pull mode's unseen_write, for transactions).
    if committed {
        for (body, queue) in &tx.messages {
            if visible.anywhere(body) && !polled.contains(body) {
                checker.flag(
                    AnomalyKind::UnseenWrite,
                    Some(*queue),
                    format!(
                        "{body} of committed {name} is stored but no consumer poll returned it"
                    ),
                );
            }
        }
    }
}
