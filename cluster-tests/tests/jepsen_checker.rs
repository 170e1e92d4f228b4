//! The checker is itself tested: hand-made histories with one anomaly each are
//! flagged with exactly that anomaly, clean histories pass, and thin ones are
//! inconclusive rather than clean. The second part does the same for the receive
//! workload's histories (leases, acks, nacks, the dead-letter topic), the third
//! for the transactions workload's (commits, rollbacks, checks, timeouts).

use std::collections::BTreeMap;

use cluster_tests::jepsen::checker::{check, AnomalyKind, CheckOptions, CheckResult, Verdict};
use cluster_tests::jepsen::history::{
    Body, CommitValue, FinalReadValue, Kind, NemesisValue, Op, OrderedMs, PollValue,
    ReadOffsetsValue, SendValue,
};

/// Builds histories event by event with increasing times.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn push(&mut self, process: &str, kind: Kind, body: Body) -> &mut Self {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time_ms: OrderedMs(index as f64 * 10.0),
            process: process.into(),
            kind,
            body,
        });
        self
    }

    /// An acknowledged send of `body` to `queue` at `offset`.
    fn sent(&mut self, body: &str, queue: u32, offset: u64) -> &mut Self {
        let v = SendValue {
            body: body.into(),
            queue,
            node: 1,
            ..SendValue::default()
        };
        self.push("p0", Kind::Invoke, Body::Send(v.clone()));
        self.push(
            "p0",
            Kind::Ok,
            Body::Send(SendValue {
                offset: Some(offset),
                ..v
            }),
        )
    }

    /// A send with the given non-ok outcome.
    fn sent_with(&mut self, body: &str, queue: u32, kind: Kind) -> &mut Self {
        let v = SendValue {
            body: body.into(),
            queue,
            node: 1,
            ..SendValue::default()
        };
        self.push("p1", Kind::Invoke, Body::Send(v.clone()));
        self.push(
            "p1",
            kind,
            Body::Send(SendValue {
                error: Some("test".into()),
                ..v
            }),
        )
    }

    fn polled(&mut self, queue: u32, node: u64, from: u64, messages: &[(u64, &str)]) -> &mut Self {
        let next = messages.last().map_or(from, |(o, _)| o + 1);
        let v = PollValue {
            queue,
            node,
            from,
            status: Some("FOUND".into()),
            next: Some(next),
            messages: messages.iter().map(|(o, b)| (*o, b.to_string())).collect(),
            error: None,
        };
        self.push("c0", Kind::Invoke, Body::Poll(v.clone()));
        self.push("c0", Kind::Ok, Body::Poll(v))
    }

    /// Final copies of `queue` on nodes 1..=3, identical.
    fn finals(&mut self, queue: u32, messages: &[(u64, &str)]) -> &mut Self {
        for node in 1..=3 {
            self.final_on(queue, node, messages);
        }
        self
    }

    fn final_on(&mut self, queue: u32, node: u64, messages: &[(u64, &str)]) -> &mut Self {
        self.final_from(queue, node, 0, messages)
    }

    /// A final copy whose queue starts at `min_offset` (retention deleted the rest).
    fn final_from(
        &mut self,
        queue: u32,
        node: u64,
        min_offset: u64,
        messages: &[(u64, &str)],
    ) -> &mut Self {
        let max = messages.last().map_or(min_offset, |(o, _)| o + 1);
        self.push(
            "final",
            Kind::Ok,
            Body::FinalRead(FinalReadValue {
                queue,
                node,
                min_offset,
                max_offset: max,
                messages: messages.iter().map(|(o, b)| (*o, b.to_string())).collect(),
            }),
        )
    }

    fn committed(&mut self, queue: u32, offset: u64) -> &mut Self {
        let v = CommitValue {
            group: "g".into(),
            queue,
            node: 1,
            offset,
            error: None,
        };
        self.push("c0", Kind::Invoke, Body::Commit(v.clone()));
        self.push("c0", Kind::Ok, Body::Commit(v))
    }

    /// A commit of `offset` whose answer was lost.
    fn committed_unanswered(&mut self, queue: u32, offset: u64) -> &mut Self {
        let v = CommitValue {
            group: "g".into(),
            queue,
            node: 1,
            offset,
            error: None,
        };
        self.push("c0", Kind::Invoke, Body::Commit(v.clone()));
        self.push(
            "c0",
            Kind::Info,
            Body::Commit(CommitValue {
                error: Some("timeout".into()),
                ..v
            }),
        )
    }

    fn read_offsets(&mut self, node: u64, offsets: &[(u32, u64)], is_final: bool) -> &mut Self {
        let v = ReadOffsetsValue {
            group: "g".into(),
            node,
            offsets: offsets.iter().copied().collect::<BTreeMap<_, _>>(),
            is_final,
            error: None,
        };
        self.push("r", Kind::Invoke, Body::ReadOffsets(v.clone()));
        self.push("r", Kind::Ok, Body::ReadOffsets(v))
    }

    fn check(&self) -> CheckResult {
        self.check_with_retention(false)
    }

    /// As [`H::check`], with the nodes allowed (or not) to delete old files.
    fn check_with_retention(&self, retention: bool) -> CheckResult {
        check(
            &self.ops,
            CheckOptions {
                min_acknowledged: 3,
                expected_nodes: 3,
                retention,
                ..CheckOptions::default()
            },
        )
    }
}

/// Three acknowledged sends in queue 0, polled and read back the same everywhere.
fn clean_base() -> H {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 1).sent("c", 0, 2);
    h.polled(0, 1, 0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.committed(0, 3);
    h
}

/// [`clean_base`] whose commit's answer was lost: no read is held to it.
fn base_with_unanswered_commit() -> H {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 1).sent("c", 0, 2);
    h.polled(0, 1, 0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.committed_unanswered(0, 3);
    h
}

fn only(result: &CheckResult, kind: AnomalyKind) {
    assert_eq!(
        result.verdict,
        Verdict::Anomalies,
        "expected {kind:?}: {result:#?}"
    );
    assert!(result.count(kind) > 0, "expected {kind:?}: {result:#?}");
    for other in AnomalyKind::ALL {
        if other != kind {
            assert_eq!(
                result.count(other),
                0,
                "only {kind:?} expected, also got {other:?}: {:#?}",
                result.anomalies
            );
        }
    }
}

#[test]
fn a_clean_history_passes() {
    let mut h = clean_base();
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.read_offsets(1, &[(0, 3)], true);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
    assert_eq!(result.sends.ok, 3);
    assert_eq!(result.sends.attempted, 3);
}

#[test]
fn unknown_sends_may_appear_or_not() {
    let mut h = clean_base();
    h.sent_with("maybe-in", 0, Kind::Info)
        .sent_with("maybe-out", 0, Kind::Info);
    h.polled(0, 2, 3, &[(3, "maybe-in")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "maybe-in")]);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
    assert_eq!(result.sends.unknown, 2);
}

#[test]
fn a_lost_acknowledged_write_is_flagged() {
    let mut h = clean_base();
    // "c" was acknowledged and polled, but no node has it after healing.
    h.finals(0, &[(0, "a"), (1, "b")]);
    only(&h.check(), AnomalyKind::LostWrite);
}

/// Retention deleted offsets 0 and 1 on every node: the final copies start at 2.
fn base_after_retention() -> H {
    let mut h = clean_base();
    h.sent("d", 0, 3);
    h.polled(0, 1, 3, &[(3, "d")]);
    for node in 1..=3 {
        h.final_from(0, node, 2, &[(2, "c"), (3, "d")]);
    }
    h
}

#[test]
fn sends_retention_deleted_everywhere_aged_out_when_the_run_allows_it() {
    let result = base_after_retention().check_with_retention(true);
    assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
    assert_eq!(result.queues[&0].aged_out, 2, "{result:#?}");
}

#[test]
fn without_retention_a_queue_that_starts_late_lost_its_first_sends() {
    let result = base_after_retention().check();
    only(&result, AnomalyKind::LostWrite);
    assert_eq!(result.count(AnomalyKind::LostWrite), 2);
    assert_eq!(result.queues[&0].aged_out, 0);
}

#[test]
fn retention_excuses_no_send_past_a_copys_first_offset() {
    let mut h = base_after_retention();
    // Acknowledged at 4, after every copy's first offset, and in no copy: lost.
    h.sent("e", 0, 4);
    let result = h.check_with_retention(true);
    only(&result, AnomalyKind::LostWrite);
    assert_eq!(result.count(AnomalyKind::LostWrite), 1);
    assert_eq!(result.queues[&0].aged_out, 2);
}

#[test]
fn retention_excuses_no_send_one_node_still_covers() {
    let mut h = clean_base();
    h.sent("d", 0, 3);
    h.polled(0, 1, 3, &[(3, "d")]);
    // Nodes 1 and 2 deleted offsets 0-1; node 3 still starts at 1, where it holds
    // another body: "b" is lost there, not aged.
    h.final_from(0, 1, 2, &[(2, "c"), (3, "d")]);
    h.final_from(0, 2, 2, &[(2, "c"), (3, "d")]);
    h.final_from(0, 3, 1, &[(1, "x"), (2, "c"), (3, "d")]);
    let result = h.check_with_retention(true);
    assert!(result.count(AnomalyKind::LostWrite) == 1, "{result:#?}");
    assert_eq!(result.queues[&0].aged_out, 1, "{result:#?}");
}

#[test]
fn an_unseen_write_is_flagged() {
    let mut h = clean_base();
    h.sent("d", 0, 3);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "d")]);
    only(&h.check(), AnomalyKind::UnseenWrite);
}

#[test]
fn a_value_at_two_offsets_is_a_duplicate() {
    let mut h = clean_base();
    h.polled(0, 1, 3, &[(3, "b")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "b")]);
    only(&h.check(), AnomalyKind::Duplicate);
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    let mut h = clean_base();
    // A poll on node 2 saw "x" where everyone else has "b"; "x" was sent (unknown).
    h.sent_with("x", 0, Kind::Info);
    h.polled(0, 2, 1, &[(1, "x")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::InconsistentOffset);
}

#[test]
fn an_acknowledged_offset_that_reads_back_differently_is_inconsistent() {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 0).sent("c", 0, 2);
    h.polled(0, 1, 0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::InconsistentOffset);
}

#[test]
fn a_hole_in_a_final_copy_is_a_gap() {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 1).sent("c", 0, 3);
    h.polled(0, 1, 0, &[(0, "a"), (1, "b")]);
    h.polled(0, 1, 3, &[(3, "c")]);
    let copy = [(0, "a"), (1, "b"), (3, "c")];
    h.finals(0, &copy);
    only(&h.check(), AnomalyKind::Gap);
}

#[test]
fn a_poll_that_skips_offsets_is_a_gap() {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 1).sent("c", 0, 2);
    h.polled(0, 1, 0, &[(0, "a"), (2, "c")]);
    h.polled(0, 2, 1, &[(1, "b")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::Gap);
}

#[test]
fn a_poll_going_backwards_is_non_monotonic() {
    let mut h = clean_base();
    // Asked from offset 2, answered offsets 2 then 1.
    h.polled(0, 1, 2, &[(2, "c"), (1, "b")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::NonMonotonicPoll);
}

#[test]
fn a_poll_answering_next_offset_below_the_request_is_non_monotonic() {
    let mut h = clean_base();
    h.push(
        "c1",
        Kind::Ok,
        Body::Poll(PollValue {
            queue: 0,
            node: 3,
            from: 3,
            status: Some("NO_NEW_MSG".into()),
            next: Some(1),
            ..PollValue::default()
        }),
    );
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::NonMonotonicPoll);
}

#[test]
fn a_lagging_replica_may_answer_offset_overflow_with_its_own_end() {
    let mut h = clean_base();
    // The consumer read up to 3 on node 1; node 2 has applied only 2 messages.
    h.push(
        "c1",
        Kind::Ok,
        Body::Poll(PollValue {
            queue: 0,
            node: 2,
            from: 3,
            status: Some("OFFSET_OVERFLOW".into()),
            next: Some(2),
            ..PollValue::default()
        }),
    );
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    assert_eq!(h.check().verdict, Verdict::Clean);
}

#[test]
fn a_value_never_sent_is_a_phantom() {
    let mut h = clean_base();
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "ghost")]);
    only(&h.check(), AnomalyKind::Phantom);
}

#[test]
fn a_read_of_a_failed_send_is_flagged() {
    let mut h = clean_base();
    h.sent_with("refused", 0, Kind::Fail);
    h.polled(0, 1, 3, &[(3, "refused")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "refused")]);
    only(&h.check(), AnomalyKind::ReadOfFailedSend);
}

#[test]
fn a_failed_attempt_then_an_unknown_retry_is_not_a_failed_send() {
    let mut h = clean_base();
    h.sent_with("retried", 0, Kind::Fail)
        .sent_with("retried", 0, Kind::Info);
    h.polled(0, 1, 3, &[(3, "retried")]);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c"), (3, "retried")]);
    assert_eq!(h.check().verdict, Verdict::Clean);
}

#[test]
fn replicas_of_different_length_diverge() {
    let mut h = clean_base();
    let full = [(0, "a"), (1, "b"), (2, "c")];
    h.final_on(0, 1, &full).final_on(0, 2, &full);
    h.final_on(0, 3, &full[..2]);
    only(&h.check(), AnomalyKind::ReplicaDivergence);
}

#[test]
fn replicas_with_different_bodies_diverge() {
    let mut h = clean_base();
    h.sent_with("x", 0, Kind::Info);
    let full = [(0, "a"), (1, "b"), (2, "c")];
    h.final_on(0, 1, &full).final_on(0, 2, &full);
    h.final_on(0, 3, &[(0, "a"), (1, "b"), (2, "x")]);
    let result = h.check();
    assert!(
        result.count(AnomalyKind::ReplicaDivergence) > 0,
        "{result:#?}"
    );
}

#[test]
fn a_committed_offset_read_lower_on_the_same_node_went_backwards() {
    let mut h = base_with_unanswered_commit();
    h.read_offsets(2, &[(0, 3)], false);
    h.read_offsets(2, &[(0, 1)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::OffsetBackwards);
}

#[test]
fn concurrent_reads_on_one_node_may_answer_out_of_order() {
    let mut h = base_with_unanswered_commit();
    let read = |offset| ReadOffsetsValue {
        group: "g".into(),
        node: 2,
        offsets: BTreeMap::from([(0, offset)]),
        is_final: false,
        error: None,
    };
    // r1 is invoked first and answers last, with the older offset: it read
    // before r2 did (as in run tx-kill-121: 3074, then 3073 from the earlier read).
    h.push("r1", Kind::Invoke, Body::ReadOffsets(read(2)));
    h.push("r2", Kind::Invoke, Body::ReadOffsets(read(3)));
    h.push("r2", Kind::Ok, Body::ReadOffsets(read(3)));
    h.push("r1", Kind::Ok, Body::ReadOffsets(read(2)));
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
    // A read invoked after both answered is held to the higher.
    h.read_offsets(2, &[(0, 2)], false);
    only(&h.check(), AnomalyKind::OffsetBackwards);
}

#[test]
fn a_restarted_node_may_serve_an_older_offset_than_it_did_when_no_commit_promises_more() {
    let mut h = base_with_unanswered_commit();
    h.read_offsets(2, &[(0, 3)], false);
    h.push(
        "nemesis",
        Kind::Ok,
        Body::Nemesis(NemesisValue {
            fault: "kill".into(),
            detail: "restart node 2".into(),
            nodes: vec![2],
        }),
    );
    h.read_offsets(2, &[(0, 1)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    assert_eq!(h.check().verdict, Verdict::Clean);
}

#[test]
fn a_read_below_a_commit_acknowledged_before_it_began_is_stale() {
    let mut h = clean_base();
    // Node 2 never answered more before: not backwards, but stale.
    h.read_offsets(2, &[(0, 1)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::StaleOffsetRead);
    // A queue missing from the answer reads as offset 0.
    let mut h = clean_base();
    h.read_offsets(3, &[], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::StaleOffsetRead);
}

#[test]
fn a_restarted_node_is_held_to_the_acknowledged_commits_too() {
    let mut h = clean_base();
    h.read_offsets(2, &[(0, 3)], false);
    h.push(
        "nemesis",
        Kind::Ok,
        Body::Nemesis(NemesisValue {
            fault: "kill".into(),
            detail: "restart node 2".into(),
            nodes: vec![2],
        }),
    );
    h.read_offsets(2, &[(0, 1)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::StaleOffsetRead);
}

#[test]
fn a_read_that_began_before_the_commit_was_acknowledged_may_miss_it() {
    let mut h = H::default();
    h.sent("a", 0, 0).sent("b", 0, 1).sent("c", 0, 2);
    h.polled(0, 1, 0, &[(0, "a"), (1, "b"), (2, "c")]);
    let commit = CommitValue {
        group: "g".into(),
        queue: 0,
        node: 1,
        offset: 3,
        error: None,
    };
    let read = ReadOffsetsValue {
        group: "g".into(),
        node: 2,
        offsets: BTreeMap::from([(0, 0)]),
        is_final: false,
        error: None,
    };
    // The read is invoked, then the commit is acknowledged, then the read
    // answers the old offset: concurrent, so either answer is right.
    h.push("c0", Kind::Invoke, Body::Commit(commit.clone()));
    h.push("r", Kind::Invoke, Body::ReadOffsets(read.clone()));
    h.push("c0", Kind::Ok, Body::Commit(commit));
    h.push("r", Kind::Ok, Body::ReadOffsets(read));
    // Begun after the acknowledgement: held to it.
    h.read_offsets(3, &[(0, 3)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
}

#[test]
fn a_final_committed_offset_below_an_acknowledged_commit_went_backwards() {
    let mut h = clean_base();
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.read_offsets(1, &[(0, 3)], true);
    h.read_offsets(3, &[(0, 2)], true);
    only(&h.check(), AnomalyKind::OffsetBackwards);
}

#[test]
fn a_commit_answering_less_than_an_earlier_commit_went_backwards() {
    let mut h = clean_base();
    h.committed(0, 2);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::OffsetBackwards);
}

#[test]
fn too_little_work_is_inconclusive_not_clean() {
    let mut h = H::default();
    h.sent("a", 0, 0);
    h.polled(0, 1, 0, &[(0, "a")]);
    h.finals(0, &[(0, "a")]);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
    assert!(result.anomalies.is_empty());
}

#[test]
fn no_final_read_is_inconclusive() {
    let h = clean_base();
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
}

#[test]
fn missing_final_copies_of_a_node_are_inconclusive() {
    let mut h = clean_base();
    let full = [(0, "a"), (1, "b"), (2, "c")];
    h.final_on(0, 1, &full).final_on(0, 2, &full);
    let result = h.check();
    assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
}

#[test]
fn a_history_round_trips_through_json_lines() {
    let mut h = clean_base();
    h.sent_with("x", 1, Kind::Info);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    h.read_offsets(2, &[(0, 3), (1, 0)], true);
    h.push(
        "nemesis",
        Kind::Invoke,
        Body::Nemesis(NemesisValue {
            fault: "kill".into(),
            detail: "kill node 2".into(),
            nodes: vec![2],
        }),
    );
    let text: String = h
        .ops
        .iter()
        .map(|op| serde_json::to_string(op).expect("serialisable") + "\n")
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, text).expect("write");
    let loaded = cluster_tests::jepsen::history::load(&path).expect("load");
    assert_eq!(loaded, h.ops);
}

// ---------------------------------------------------------------------------
// The receive workload: lease-based consumption.
// ---------------------------------------------------------------------------

mod receive {
    use std::collections::BTreeMap;

    use cluster_tests::jepsen::checker::{
        check, AnomalyKind, CheckOptions, CheckResult, Verdict, LEASE_CLOCK_TOLERANCE_MS,
    };
    use cluster_tests::jepsen::history::{
        AckStatusValue, AckValue, Body, ChangeInvisibleValue, DeliveryValue, DlqMessageValue,
        DlqReadValue, FinalReadValue, Kind, Op, OrderedMs, ReceiveDrainValue, ReceiveValue,
        SendValue,
    };
    use cluster_tests::jepsen::report::Report;

    /// Unix ms at `time_ms` 0: the histories' wall clock runs with their
    /// monotonic one, as on one machine.
    const EPOCH_MS: u64 = 1_700_000_000_000;
    const TOPIC: &str = "jepsen";
    const GROUP: &str = "g";
    /// A small `max_delivery_attempts` keeps the poison histories short.
    const MAX: u32 = 3;
    const LEASE_MS: u64 = 3_000;

    /// A message: its unique body and where its send was acknowledged.
    #[derive(Clone, Copy)]
    struct Msg {
        body: &'static str,
        queue: u32,
        offset: u64,
    }

    const fn msg(body: &'static str, queue: u32, offset: u64) -> Msg {
        Msg {
            body,
            queue,
            offset,
        }
    }

    const A: Msg = msg("a", 0, 0);
    const B: Msg = msg("b", 0, 1);
    const C: Msg = msg("c", 0, 2);
    const D: Msg = msg("d", 0, 3);
    const E: Msg = msg("e", 0, 4);
    const X: Msg = msg("x-poison", 1, 0);
    const Y: Msg = msg("y-poison", 1, 1);

    /// Builds receive histories with explicit time: every event takes 1 ms, a
    /// receive 5 ms from invoke to answer, and `wait` moves the clock on.
    #[derive(Default)]
    struct R {
        ops: Vec<Op>,
        now_ms: f64,
        handles: u64,
        /// Messages in the topic, for the final copies.
        stored: BTreeMap<u32, Vec<(u64, String)>>,
        /// When the last receive was answered.
        answered_ms: f64,
    }

    impl R {
        fn push(&mut self, process: &str, kind: Kind, body: Body) -> &mut Self {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ms: OrderedMs(self.now_ms),
                process: process.into(),
                kind,
                body,
            });
            self.now_ms += 1.0;
            self
        }

        fn wait(&mut self, ms: f64) -> &mut Self {
            self.now_ms += ms;
            self
        }

        fn unix_ms(&self) -> u64 {
            EPOCH_MS + self.now_ms as u64
        }

        /// An acknowledged send, stored where it was acknowledged.
        fn sent(&mut self, m: Msg) -> &mut Self {
            self.store(m);
            let v = SendValue {
                body: m.body.into(),
                queue: m.queue,
                node: 1,
                ..SendValue::default()
            };
            self.push("p0", Kind::Invoke, Body::Send(v.clone()));
            self.push(
                "p0",
                Kind::Ok,
                Body::Send(SendValue {
                    offset: Some(m.offset),
                    ..v
                }),
            )
        }

        fn store(&mut self, m: Msg) {
            let queue = self.stored.entry(m.queue).or_default();
            queue.push((m.offset, m.body.into()));
            queue.sort();
        }

        fn receive_value(&self, drain: bool) -> ReceiveValue {
            ReceiveValue {
                group: GROUP.into(),
                topic: TOPIC.into(),
                node: 1,
                invisible_ms: LEASE_MS,
                max_wait_ms: 1_000,
                unix_ms: self.unix_ms(),
                drain,
                ..ReceiveValue::default()
            }
        }

        fn receive_invoke(&mut self, process: &str) -> &mut Self {
            let v = self.receive_value(false);
            self.push(process, Kind::Invoke, Body::Receive(v))
        }

        /// The answer of `process`'s receive: each message with its attempt, all
        /// leased for `lease_ms`. Returns the receipt handles.
        fn receive_ok(&mut self, process: &str, lease_ms: u64, got: &[(Msg, u32)]) -> Vec<String> {
            let mut v = self.receive_value(false);
            for (m, attempt) in got {
                self.handles += 1;
                v.messages.push(DeliveryValue {
                    body: m.body.into(),
                    msg_id: format!("m-{}", m.body),
                    topic: TOPIC.into(),
                    broker_group: "broker-a".into(),
                    queue_id: m.queue,
                    queue_offset: m.offset,
                    receipt_handle: format!("h{}-{}", self.handles, m.body),
                    delivery_attempt: *attempt,
                    invisible_until: self.unix_ms() + lease_ms,
                });
            }
            let handles = v
                .messages
                .iter()
                .map(|m| m.receipt_handle.clone())
                .collect();
            self.answered_ms = self.now_ms;
            self.push(process, Kind::Ok, Body::Receive(v));
            handles
        }

        fn receive(&mut self, process: &str, lease_ms: u64, got: &[(Msg, u32)]) -> Vec<String> {
            self.receive_invoke(process);
            self.wait(4.0);
            self.receive_ok(process, lease_ms, got)
        }

        /// A receive whose answer was lost: what it leased is unknown.
        fn receive_lost(&mut self, process: &str) -> &mut Self {
            self.receive_invoke(process);
            self.wait(4.0);
            let v = ReceiveValue {
                error: Some("timeout".into()),
                ..self.receive_value(false)
            };
            self.push(process, Kind::Info, Body::Receive(v))
        }

        fn ack_value(handles: &[&str]) -> AckValue {
            AckValue {
                group: GROUP.into(),
                node: 2,
                receipt_handles: handles.iter().map(|h| h.to_string()).collect(),
                ..AckValue::default()
            }
        }

        /// An ack answered with a status per handle.
        fn ack(&mut self, process: &str, answers: &[(&str, &str)]) -> &mut Self {
            let handles: Vec<&str> = answers.iter().map(|(h, _)| *h).collect();
            let v = Self::ack_value(&handles);
            self.push(process, Kind::Invoke, Body::Ack(v.clone()));
            let results = answers
                .iter()
                .map(|(h, status)| AckStatusValue {
                    receipt_handle: h.to_string(),
                    status: status.to_string(),
                })
                .collect();
            self.push(process, Kind::Ok, Body::Ack(AckValue { results, ..v }))
        }

        fn ack_ok(&mut self, process: &str, handles: &[String]) -> &mut Self {
            let answers: Vec<(&str, &str)> = handles.iter().map(|h| (h.as_str(), "OK")).collect();
            self.ack(process, &answers)
        }

        /// An ack whose answer was lost.
        fn ack_lost(&mut self, process: &str, handles: &[&str]) -> &mut Self {
            let v = Self::ack_value(handles);
            self.push(process, Kind::Invoke, Body::Ack(v.clone()));
            self.push(
                process,
                Kind::Info,
                Body::Ack(AckValue {
                    error: Some("timeout".into()),
                    ..v
                }),
            )
        }

        fn change_value(handle: &str, invisible_ms: u64) -> ChangeInvisibleValue {
            ChangeInvisibleValue {
                group: GROUP.into(),
                node: 3,
                receipt_handle: handle.into(),
                invisible_ms,
                ..ChangeInvisibleValue::default()
            }
        }

        /// A change-invisible answered OK (0: a nack); returns the new handle.
        fn change(&mut self, process: &str, handle: &str, invisible_ms: u64) -> String {
            let v = Self::change_value(handle, invisible_ms);
            self.push(process, Kind::Invoke, Body::ChangeInvisible(v.clone()));
            let new = format!("{handle}'");
            let until = self.unix_ms() + invisible_ms;
            self.push(
                process,
                Kind::Ok,
                Body::ChangeInvisible(ChangeInvisibleValue {
                    new_receipt_handle: Some(new.clone()),
                    invisible_until: Some(until),
                    ..v
                }),
            );
            new
        }

        fn nack(&mut self, process: &str, handle: &str) -> &mut Self {
            self.change(process, handle, 0);
            self
        }

        /// A change with the given non-ok outcome.
        fn change_with(
            &mut self,
            process: &str,
            handle: &str,
            invisible_ms: u64,
            kind: Kind,
        ) -> &mut Self {
            let v = Self::change_value(handle, invisible_ms);
            self.push(process, Kind::Invoke, Body::ChangeInvisible(v.clone()));
            self.push(
                process,
                kind,
                Body::ChangeInvisible(ChangeInvisibleValue {
                    error: Some("409: EXPIRED".into()),
                    ..v
                }),
            )
        }

        fn drain(&mut self, complete: bool) -> &mut Self {
            self.push(
                "final",
                Kind::Ok,
                Body::ReceiveDrain(ReceiveDrainValue {
                    group: GROUP.into(),
                    complete,
                    quiet_ms: 8_000,
                    detail: String::new(),
                }),
            )
        }

        /// The dead-letter topic as nodes 1..=3 serve it.
        fn dlq(&mut self, copies: &[DlqMessageValue]) -> &mut Self {
            for node in 1..=3 {
                self.push(
                    "final",
                    Kind::Ok,
                    Body::DlqRead(DlqReadValue {
                        group: GROUP.into(),
                        source_topic: TOPIC.into(),
                        node,
                        messages: copies.to_vec(),
                        error: None,
                    }),
                );
            }
            self
        }

        /// Final copies of every queue on nodes 1..=3.
        fn finals(&mut self) -> &mut Self {
            for (queue, messages) in self.stored.clone() {
                for node in 1..=3 {
                    self.push(
                        "final",
                        Kind::Ok,
                        Body::FinalRead(FinalReadValue {
                            queue,
                            node,
                            min_offset: 0,
                            max_offset: messages.last().map_or(0, |(o, _)| o + 1),
                            messages: messages.clone(),
                        }),
                    );
                }
            }
            self
        }

        /// The end of a run: a quiet drain, the dead-letter topic, final copies.
        fn finish_with(&mut self, copies: &[DlqMessageValue]) -> CheckResult {
            self.drain(true).dlq(copies).finals();
            self.check()
        }

        /// The end of a run whose dead-letter topic holds the poison message X.
        fn finish(&mut self) -> CheckResult {
            self.finish_with(&[dead_letter(X, 0, MAX)])
        }

        fn check(&self) -> CheckResult {
            check(
                &self.ops,
                CheckOptions {
                    min_acknowledged: 3,
                    expected_nodes: 3,
                    max_delivery_attempts: MAX,
                    retention: false,
                },
            )
        }
    }

    /// The dead-letter copy of `m` at offset `at` of DLQ queue 0, as the contract
    /// describes it.
    fn dead_letter(m: Msg, at: u64, attempts: u32) -> DlqMessageValue {
        let properties = [
            ("ORIGIN_TOPIC", TOPIC.to_string()),
            ("ORIGIN_QUEUE_ID", m.queue.to_string()),
            ("ORIGIN_QUEUE_OFFSET", m.offset.to_string()),
            ("ORIGIN_MESSAGE_ID", format!("m-{}", m.body)),
            ("CONSUMER_GROUP", GROUP.to_string()),
            ("DELIVERY_ATTEMPTS", attempts.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        DlqMessageValue {
            queue: 0,
            offset: at,
            msg_id: format!("dlq-{}", m.body),
            body: m.body.into(),
            properties,
        }
    }

    /// A run without anomalies: A and B acked at once; C's first lease expires
    /// and its redelivery is acked; the poison X is nacked on each of its MAX
    /// deliveries and ends in the dead-letter topic.
    fn base() -> R {
        let mut h = R::default();
        h.sent(A).sent(B).sent(C).sent(X);
        let first = h.receive("r0", LEASE_MS, &[(A, 1), (B, 1), (X, 1)]);
        h.ack_ok("r0", &first[..2]);
        h.nack("r0", &first[2]);
        let second = h.receive("r1", LEASE_MS, &[(X, 2), (C, 1)]);
        // C is left to expire.
        h.nack("r1", &second[0]);
        let third = h.receive("r2", LEASE_MS, &[(X, 3)]);
        h.nack("r2", &third[0]);
        h.wait(LEASE_MS as f64 + 100.0);
        let again = h.receive("r0", LEASE_MS, &[(C, 2)]);
        h.ack_ok("r0", &again);
        h
    }

    /// Flagged with exactly `kinds`.
    fn flagged(result: &CheckResult, kinds: &[AnomalyKind]) {
        assert_eq!(
            result.verdict,
            Verdict::Anomalies,
            "expected {kinds:?}: {result:#?}"
        );
        for kind in AnomalyKind::ALL {
            let count = result.count(kind);
            if kinds.contains(&kind) {
                assert!(count > 0, "expected {kind:?}: {:#?}", result.anomalies);
            } else {
                assert_eq!(
                    count, 0,
                    "only {kinds:?} expected, also got {kind:?}: {:#?}",
                    result.anomalies
                );
            }
        }
    }

    fn clean(result: &CheckResult) {
        assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
    }

    #[test]
    fn a_clean_receive_history_passes_with_its_counts() {
        let result = base().finish();
        clean(&result);
        let r = result.receive.clone().expect("a receive summary");
        assert_eq!(r.receives.attempted, 4);
        assert_eq!(r.receives.ok, 4);
        assert_eq!(r.deliveries, 7);
        assert_eq!(r.messages_delivered, 4);
        assert_eq!(r.redeliveries, 3, "X twice and C once");
        assert_eq!(r.acks_ok, 3);
        assert_eq!(r.acks.attempted, 2);
        assert_eq!(
            (r.acks_expired, r.acks_invalid, r.acks_unanswered),
            (0, 0, 0)
        );
        assert_eq!(r.nacks.ok, 3);
        assert_eq!((r.dlq_messages, r.dlq_copies, r.dlq_poison), (1, 1, 1));
        assert_eq!(r.poison_sent, 1);
        assert_eq!(r.dlq_reads_complete, 3);
        assert_eq!(r.drain_complete, Some(true));
        assert_eq!(r.max_delivery_attempts, MAX);
        // The pull-only expectations do not apply: nothing was polled.
        assert_eq!(result.count(AnomalyKind::UnseenWrite), 0);
    }

    #[test]
    fn a_receive_history_round_trips_through_json_lines() {
        let mut h = base();
        h.receive_lost("r3");
        h.ack_lost("r3", &["h1-a"]);
        h.change_with("r3", "h2-b", 0, Kind::Fail);
        h.drain(true).dlq(&[dead_letter(X, 0, MAX)]).finals();
        let text: String = h
            .ops
            .iter()
            .map(|op| serde_json::to_string(op).expect("serialisable") + "\n")
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, text).expect("write");
        let loaded = cluster_tests::jepsen::history::load(&path).expect("load");
        assert_eq!(loaded, h.ops);
    }

    #[test]
    fn the_report_names_the_receive_classes_and_counts() {
        let mut h = base();
        h.receive("r3", LEASE_MS, &[(A, 2)]);
        let result = h.finish();
        let report = Report::build(&h.ops, result, BTreeMap::new(), Vec::new());
        let text = report.text();
        for needle in [
            "Receive and ack",
            "receives",
            "acked_redelivered",
            "leased_twice",
            "never_delivered",
            "dlq_without_attempts",
            "[acked_redelivered]",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!text.contains("unseen_write"), "{text}");
    }

    // --- acked_redelivered -------------------------------------------------

    #[test]
    fn a_message_delivered_by_a_receive_invoked_after_its_ok_ack_is_acked_redelivered() {
        let mut h = base();
        // A was acked OK in base(); long after, it comes again.
        let again = h.receive("r3", LEASE_MS, &[(A, 2)]);
        h.ack_ok("r3", &again);
        flagged(&h.finish(), &[AnomalyKind::AckedRedelivered]);
    }

    #[test]
    fn a_redelivery_after_an_expired_or_lost_ack_is_not_acked_redelivered() {
        let mut h = base();
        h.sent(D).sent(E);
        let d = h.receive("r0", LEASE_MS, &[(D, 1), (E, 1)]);
        h.wait(LEASE_MS as f64 + 100.0);
        // Too late for D; E's answer is lost (it may or may not have applied).
        h.ack("r0", &[(&d[0], "EXPIRED")]);
        h.ack_lost("r0", &[&d[1]]);
        let again = h.receive("r1", LEASE_MS, &[(D, 2), (E, 2)]);
        h.ack_ok("r1", &again);
        let result = h.finish();
        clean(&result);
        let r = result.receive.expect("summary");
        assert_eq!((r.acks_expired, r.acks_unanswered), (1, 1));
    }

    // --- never_delivered ---------------------------------------------------

    #[test]
    fn an_acknowledged_send_never_delivered_nor_dead_lettered_is_flagged() {
        let mut h = base();
        h.sent(D);
        flagged(&h.finish(), &[AnomalyKind::NeverDelivered]);
    }

    #[test]
    fn a_message_leased_only_by_lost_receives_may_be_dead_lettered() {
        let mut h = base();
        h.sent(D);
        for process in ["r0", "r1", "r2"] {
            h.receive_lost(process);
            h.wait(LEASE_MS as f64 + 100.0);
        }
        clean(&h.finish_with(&[dead_letter(X, 0, MAX), dead_letter(D, 1, MAX)]));
    }

    #[test]
    fn never_delivered_is_not_judged_without_a_quiet_drain() {
        let mut h = base();
        h.sent(D);
        h.drain(false).dlq(&[dead_letter(X, 0, MAX)]).finals();
        let result = h.check();
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result.anomalies.is_empty(), "{:#?}", result.anomalies);
        assert!(
            result
                .inconclusive_reasons
                .iter()
                .any(|r| r.contains("drain")),
            "{:?}",
            result.inconclusive_reasons
        );
    }

    #[test]
    fn a_lost_write_is_not_also_never_delivered() {
        let mut h = base();
        h.sent(D);
        // No node kept D.
        h.stored
            .get_mut(&0)
            .expect("queue 0")
            .retain(|(_, b)| b != "d");
        flagged(&h.finish(), &[AnomalyKind::LostWrite]);
    }

    // --- leased_twice ------------------------------------------------------

    #[test]
    fn a_delivery_during_an_earlier_lease_is_leased_twice() {
        let mut h = base();
        h.sent(D);
        h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.wait(1_000.0);
        let early = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r1", &early);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn deliveries_after_an_expiry_a_nack_or_a_shortened_lease_are_clean() {
        let mut h = base();
        h.sent(D).sent(E);
        // D: its lease shortened to 1 s, then delivered again after that.
        let d = h.receive("r0", 5_000, &[(D, 1)]);
        h.change("r0", &d[0], 1_000);
        h.wait(1_100.0);
        let d = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r1", &d);
        // E: a nack whose answer was lost may have applied at once.
        let e = h.receive("r0", 5_000, &[(E, 1)]);
        h.change_with("r0", &e[0], 0, Kind::Info);
        let e = h.receive("r1", LEASE_MS, &[(E, 2)]);
        h.ack_ok("r1", &e);
        clean(&h.finish());
    }

    #[test]
    fn a_redelivery_before_the_nack_was_invoked_is_leased_twice() {
        let mut h = base();
        h.sent(D);
        let first = h.receive("r0", LEASE_MS, &[(D, 1)]);
        let second = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.nack("r0", &first[0]);
        h.ack_ok("r1", &second);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn an_extended_lease_holds_until_its_new_end() {
        let mut h = base();
        h.sent(D);
        let first = h.receive("r0", 2_000, &[(D, 1)]);
        h.wait(500.0);
        let renewed = h.change("r0", &first[0], 5_000);
        // Past the first end (2 s), before the new one (5.5 s).
        h.wait(3_000.0);
        let second = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack("r1", &[(&renewed, "EXPIRED")]);
        h.ack_ok("r1", &second);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn a_failed_nack_does_not_end_the_lease() {
        let mut h = base();
        h.sent(D);
        let first = h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.change_with("r0", &first[0], 0, Kind::Fail);
        let second = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r1", &second);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn an_ack_does_not_end_a_lease_early() {
        // Whether the lost ack applied (then D must never come again) or not
        // (then its lease still held), a delivery before the end is wrong.
        let mut h = base();
        h.sent(D);
        let first = h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.ack_lost("r0", &[&first[0]]);
        let second = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r1", &second);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    /// D leased at `t`, delivered again by a receive answered `before_end_ms`
    /// before the lease's end.
    fn redelivered_before_the_end(before_end_ms: f64) -> CheckResult {
        let mut h = base();
        h.sent(D);
        h.receive("r0", LEASE_MS, &[(D, 1)]);
        let end = h.answered_ms + LEASE_MS as f64;
        // The next receive is answered 5 ms after it is invoked.
        h.now_ms = end - before_end_ms - 5.0;
        let second = h.receive("r1", LEASE_MS, &[(D, 2)]);
        assert_eq!(h.answered_ms, end - before_end_ms);
        h.ack_ok("r1", &second);
        h.finish()
    }

    #[test]
    fn a_delivery_within_the_clock_tolerance_of_the_lease_end_is_not_flagged() {
        // The contract's clock slack: 50 ms (client and broker share one clock).
        assert_eq!(LEASE_CLOCK_TOLERANCE_MS, 50);
        clean(&redelivered_before_the_end(30.0));
        clean(&redelivered_before_the_end(0.0));
        clean(&redelivered_before_the_end(-10.0));
        flagged(
            &redelivered_before_the_end(100.0),
            &[AnomalyKind::LeasedTwice],
        );
    }

    #[test]
    fn overlapping_receives_that_both_lease_a_message_are_leased_twice() {
        let mut h = base();
        h.sent(D);
        h.receive_invoke("r0");
        h.receive_invoke("r1");
        h.wait(4.0);
        let first = h.receive_ok("r0", LEASE_MS, &[(D, 1)]);
        let second = h.receive_ok("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r0", &first).ack_ok("r1", &second);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn one_receive_answering_a_message_twice_is_leased_twice() {
        let mut h = base();
        h.sent(D);
        let both = h.receive("r0", LEASE_MS, &[(D, 1), (D, 1)]);
        h.ack_ok("r0", &both);
        flagged(&h.finish(), &[AnomalyKind::LeasedTwice]);
    }

    #[test]
    fn deliveries_hidden_by_lost_receives_make_no_anomaly() {
        // Attempt 2 was leased by a receive whose answer was lost: the history
        // sees attempts 1 then 3, and nothing is wrong.
        let mut h = base();
        h.sent(D);
        h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.wait(LEASE_MS as f64 + 100.0);
        h.receive_lost("r1");
        h.wait(LEASE_MS as f64 + 100.0);
        let third = h.receive("r2", LEASE_MS, &[(D, 3)]);
        h.ack_ok("r2", &third);
        clean(&h.finish());
    }

    // --- dlq_without_attempts ----------------------------------------------

    #[test]
    fn a_dead_letter_with_fewer_attempts_than_the_maximum_is_flagged() {
        let mut h = base();
        flagged(
            &h.finish_with(&[dead_letter(X, 0, MAX - 1)]),
            &[AnomalyKind::DlqWithoutAttempts],
        );
    }

    #[test]
    fn a_dead_letter_without_the_attempts_property_is_flagged() {
        let mut h = base();
        let mut copy = dead_letter(X, 0, MAX);
        copy.properties.remove("DELIVERY_ATTEMPTS");
        flagged(&h.finish_with(&[copy]), &[AnomalyKind::DlqWithoutAttempts]);
    }

    #[test]
    fn a_dead_letter_counting_fewer_deliveries_than_were_made_is_flagged() {
        let mut h = base();
        h.wait(10.0);
        let fourth = h.receive("r3", LEASE_MS, &[(X, MAX + 1)]);
        h.nack("r3", &fourth[0]);
        flagged(
            &h.finish(),
            &[
                AnomalyKind::DlqWithoutAttempts,
                AnomalyKind::DeliveredPastMaxAttempts,
            ],
        );
    }

    // --- acked_and_dead_lettered -------------------------------------------

    #[test]
    fn a_message_acked_ok_and_dead_lettered_is_flagged() {
        let mut h = base();
        flagged(
            &h.finish_with(&[dead_letter(X, 0, MAX), dead_letter(A, 1, MAX)]),
            &[AnomalyKind::AckedAndDeadLettered],
        );
    }

    // --- attempt_not_increasing --------------------------------------------

    #[test]
    fn a_later_delivery_with_the_same_attempt_is_flagged() {
        let mut h = base();
        h.sent(D);
        h.receive("r0", LEASE_MS, &[(D, 2)]);
        h.wait(LEASE_MS as f64 + 100.0);
        let again = h.receive("r1", LEASE_MS, &[(D, 2)]);
        h.ack_ok("r1", &again);
        flagged(&h.finish(), &[AnomalyKind::AttemptNotIncreasing]);
    }

    #[test]
    fn a_later_delivery_with_a_smaller_attempt_is_flagged() {
        let mut h = base();
        h.sent(D);
        let first = h.receive("r0", LEASE_MS, &[(D, 2)]);
        h.nack("r0", &first[0]);
        let again = h.receive("r1", LEASE_MS, &[(D, 1)]);
        h.ack_ok("r1", &again);
        flagged(&h.finish(), &[AnomalyKind::AttemptNotIncreasing]);
    }

    /// D delivered once (earlier attempts by lost receives, if any) and acked.
    fn delivered_once_with_attempt(attempt: u32) -> CheckResult {
        let mut h = base();
        h.sent(D);
        let d = h.receive("r0", LEASE_MS, &[(D, attempt)]);
        h.ack_ok("r0", &d);
        h.finish()
    }

    #[test]
    fn a_delivery_with_attempt_zero_is_flagged() {
        flagged(
            &delivered_once_with_attempt(0),
            &[AnomalyKind::AttemptNotIncreasing],
        );
    }

    // --- delivered_past_max_attempts ---------------------------------------

    #[test]
    fn a_delivery_past_the_maximum_attempts_is_flagged() {
        clean(&delivered_once_with_attempt(MAX));
        flagged(
            &delivered_once_with_attempt(MAX + 1),
            &[AnomalyKind::DeliveredPastMaxAttempts],
        );
    }

    // --- dead_lettered_twice -----------------------------------------------

    #[test]
    fn a_message_dead_lettered_twice_is_flagged() {
        let mut h = base();
        flagged(
            &h.finish_with(&[dead_letter(X, 0, MAX), dead_letter(X, 1, MAX)]),
            &[AnomalyKind::DeadLetteredTwice],
        );
    }

    // --- dlq_wrong_origin --------------------------------------------------

    #[test]
    fn a_dead_letter_naming_the_wrong_origin_or_group_is_flagged() {
        for (property, value) in [
            ("ORIGIN_QUEUE_OFFSET", "5"),
            ("ORIGIN_QUEUE_ID", "0"),
            ("ORIGIN_TOPIC", "other"),
            ("ORIGIN_MESSAGE_ID", "m-other"),
            ("CONSUMER_GROUP", "other-group"),
        ] {
            let mut h = base();
            let mut copy = dead_letter(X, 0, MAX);
            copy.properties.insert(property.into(), value.into());
            flagged(&h.finish_with(&[copy]), &[AnomalyKind::DlqWrongOrigin]);
        }
    }

    // --- unresolved_after_drain --------------------------------------------

    #[test]
    fn a_poison_message_missing_from_the_dead_letter_topic_is_unresolved() {
        let mut h = base();
        h.sent(Y);
        let y = h.receive("r0", LEASE_MS, &[(Y, 1)]);
        h.nack("r0", &y[0]);
        let result = h.finish();
        flagged(&result, &[AnomalyKind::UnresolvedAfterDrain]);
        assert!(
            result.anomalies.iter().any(|a| a.detail.contains("poison")),
            "{:#?}",
            result.anomalies
        );
    }

    #[test]
    fn a_message_whose_ack_expired_and_never_came_back_is_unresolved() {
        let mut h = base();
        h.sent(D);
        let d = h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.wait(LEASE_MS as f64 + 100.0);
        h.ack("r0", &[(&d[0], "EXPIRED")]);
        flagged(&h.finish(), &[AnomalyKind::UnresolvedAfterDrain]);
    }

    #[test]
    fn a_message_whose_ack_answer_was_lost_is_not_unresolved() {
        let mut h = base();
        h.sent(D);
        let d = h.receive("r0", LEASE_MS, &[(D, 1)]);
        h.ack_lost("r0", &[&d[0]]);
        clean(&h.finish());
    }

    // --- bodies nobody sent ------------------------------------------------

    #[test]
    fn a_delivered_or_dead_lettered_body_nobody_sent_is_a_phantom() {
        const GHOST: Msg = msg("ghost", 0, 9);
        let mut h = base();
        let ghost = h.receive("r0", LEASE_MS, &[(GHOST, 1)]);
        h.ack_ok("r0", &ghost);
        flagged(&h.finish(), &[AnomalyKind::Phantom]);

        let mut h = base();
        flagged(
            &h.finish_with(&[dead_letter(X, 0, MAX), dead_letter(GHOST, 1, MAX)]),
            &[AnomalyKind::Phantom],
        );
    }

    // --- too little to judge -----------------------------------------------

    #[test]
    fn a_receive_history_without_a_dead_letter_read_is_inconclusive() {
        let mut h = base();
        h.drain(true).finals();
        let result = h.check();
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result.anomalies.is_empty());
    }

    #[test]
    fn a_receive_history_without_redeliveries_is_inconclusive() {
        let mut h = R::default();
        h.sent(A).sent(B).sent(C);
        let all = h.receive("r0", LEASE_MS, &[(A, 1), (B, 1), (C, 1)]);
        h.ack_ok("r0", &all);
        let result = h.finish_with(&[]);
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result.anomalies.is_empty());
        assert!(
            result
                .inconclusive_reasons
                .iter()
                .any(|r| r.contains("delivered twice")),
            "{:?}",
            result.inconclusive_reasons
        );
    }
}

// ---------------------------------------------------------------------------
// The transactions workload: transactional sends, commits, rollbacks, checks,
// timeouts and the final probe. Each history with one anomaly is flagged with
// exactly that anomaly; the clean one passes (including a transaction whose send
// answer was lost and that a check responder committed), and thin ones are
// inconclusive rather than clean.
// ---------------------------------------------------------------------------

mod transactions {
    use super::only;
    use cluster_tests::jepsen::checker::{check, AnomalyKind, CheckOptions, CheckResult, Verdict};
    use cluster_tests::jepsen::history::{
        Body, CheckAnswer, FinalReadValue, Kind, Op, OrderedMs, PollValue, ResolveSource,
        TxnAction, TxnCheckValue, TxnCheckedMessage, TxnChecksValue, TxnDecision, TxnMessageValue,
        TxnResolveValue, TxnSendValue, TxnSettleValue,
    };
    use cluster_tests::jepsen::report::Report;

    const TOPIC: &str = "jepsen";

    /// Transaction ids (32 hex digits).
    const A: &str = "0000000000000000000000000000000a";
    const B: &str = "0000000000000000000000000000000b";
    const C: &str = "0000000000000000000000000000000c";
    const D: &str = "0000000000000000000000000000000d";
    const E: &str = "0000000000000000000000000000000e";
    const F: &str = "0000000000000000000000000000000f";
    const G: &str = "00000000000000000000000000000010";

    /// How a resolution attempt ended.
    #[derive(Clone, Copy)]
    enum Answer {
        /// 200 with this status (and `by_timeout`).
        Status(&'static str, bool),
        /// 200 with the right status but this message count.
        StatusCount(&'static str, u64),
        Conflict,
        NotFound,
        Unknown,
    }

    /// A transaction as sent: its messages (body, queue) and check answer.
    struct Sent {
        tx: String,
        messages: Vec<(String, u32)>,
        answer: CheckAnswer,
    }

    /// Builds histories event by event with increasing times.
    #[derive(Default)]
    struct T {
        ops: Vec<Op>,
        /// Every transaction sent, for answers and offers.
        sent: Vec<Sent>,
    }

    impl T {
        fn push(&mut self, process: &str, kind: Kind, body: Body) -> &mut Self {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ms: OrderedMs(index as f64 * 10.0),
                process: process.into(),
                kind,
                body,
            });
            self
        }

        fn messages_of(&self, tx: &str) -> Vec<(String, u32)> {
            self.sent
                .iter()
                .find(|s| s.tx == tx)
                .map(|s| s.messages.clone())
                .unwrap_or_default()
        }

        fn answer_of(&self, tx: &str) -> CheckAnswer {
            self.sent
                .iter()
                .find(|s| s.tx == tx)
                .map_or(CheckAnswer::Commit, |s| s.answer)
        }

        /// A transactional send of `tx` (bodies `{tx}.{i}` to `queues[i]`) by the
        /// process its name starts with; `id` on an `ok` outcome.
        fn send(
            &mut self,
            tx: &str,
            queues: &[u32],
            decision: TxnDecision,
            answer: CheckAnswer,
            outcome: Kind,
            id: Option<&str>,
        ) -> &mut Self {
            let process = tx.split('-').next().unwrap_or("p0").to_string();
            let messages: Vec<(String, u32)> = queues
                .iter()
                .enumerate()
                .map(|(i, q)| (format!("{tx}.{i}"), *q))
                .collect();
            self.sent.push(Sent {
                tx: tx.into(),
                messages: messages.clone(),
                answer,
            });
            let v = TxnSendValue {
                tx: tx.into(),
                producer_group: "jepsen-producers".into(),
                topic: TOPIC.into(),
                node: 1,
                decision,
                check_answer: answer,
                messages: messages
                    .iter()
                    .map(|(body, queue)| TxnMessageValue {
                        body: body.clone(),
                        queue: *queue,
                    })
                    .collect(),
                transaction_id: None,
                error: None,
            };
            self.push(&process, Kind::Invoke, Body::TxnSend(v.clone()));
            let done = TxnSendValue {
                transaction_id: id.map(str::to_string),
                error: (outcome != Kind::Ok).then(|| "test".to_string()),
                ..v
            };
            self.push(&process, outcome, Body::TxnSend(done))
        }

        /// One resolution attempt.
        fn resolve(
            &mut self,
            source: ResolveSource,
            id: &str,
            tx: &str,
            action: TxnAction,
            answer: Answer,
        ) -> &mut Self {
            let process = match source {
                ResolveSource::Producer => tx.split('-').next().unwrap_or("p0").to_string(),
                ResolveSource::Check => "k0".into(),
                ResolveSource::Probe => "v0".into(),
            };
            let v = TxnResolveValue {
                transaction_id: id.into(),
                tx: tx.into(),
                action,
                source,
                node: 2,
                attempt: 1,
                ..TxnResolveValue::default()
            };
            self.push(&process, Kind::Invoke, Body::TxnResolve(v.clone()));
            let size = self.messages_of(tx).len() as u64;
            let (kind, done) = match answer {
                Answer::Status(status, by_timeout) => (
                    Kind::Ok,
                    TxnResolveValue {
                        status: Some(status.into()),
                        by_timeout: Some(by_timeout),
                        messages: Some(size),
                        topic: Some(TOPIC.into()),
                        answered_id: Some(id.into()),
                        ..v
                    },
                ),
                Answer::StatusCount(status, count) => (
                    Kind::Ok,
                    TxnResolveValue {
                        status: Some(status.into()),
                        by_timeout: Some(false),
                        messages: Some(count),
                        topic: Some(TOPIC.into()),
                        answered_id: Some(id.into()),
                        ..v
                    },
                ),
                Answer::Conflict => (
                    Kind::Fail,
                    TxnResolveValue {
                        http_status: Some(409),
                        code: Some("CONFLICT".into()),
                        error: Some("CONFLICT".into()),
                        ..v
                    },
                ),
                Answer::NotFound => (
                    Kind::Fail,
                    TxnResolveValue {
                        http_status: Some(404),
                        code: Some("TRANSACTION_NOT_FOUND".into()),
                        error: Some("TRANSACTION_NOT_FOUND".into()),
                        ..v
                    },
                ),
                Answer::Unknown => (
                    Kind::Info,
                    TxnResolveValue {
                        error: Some("timeout".into()),
                        ..v
                    },
                ),
            };
            self.push(&process, kind, Body::TxnResolve(done))
        }

        /// A long poll of the checks that offered `id` with `bodies` of `tx` (all of
        /// its messages when `bodies` is empty).
        fn offered(&mut self, id: &str, tx: &str, bodies: &[&str], check_count: u32) -> &mut Self {
            let answer = self.answer_of(tx);
            let messages: Vec<TxnCheckedMessage> = self
                .messages_of(tx)
                .into_iter()
                .filter(|(b, _)| bodies.is_empty() || bodies.contains(&b.as_str()))
                .map(|(body, queue)| TxnCheckedMessage {
                    body,
                    topic: TOPIC.into(),
                    queue,
                    tx: Some(tx.into()),
                    answer: Some(answer.name().into()),
                })
                .collect();
            let v = TxnChecksValue {
                producer_group: "jepsen-producers".into(),
                node: 3,
                max_wait_ms: 2000,
                ..TxnChecksValue::default()
            };
            self.push("k0", Kind::Invoke, Body::TxnChecks(v.clone()));
            self.push(
                "k0",
                Kind::Ok,
                Body::TxnChecks(TxnChecksValue {
                    checks: vec![TxnCheckValue {
                        transaction_id: id.into(),
                        topic: TOPIC.into(),
                        check_count,
                        messages,
                        answer: Some(answer),
                    }],
                    ..v
                }),
            )
        }

        fn polled(&mut self, queue: u32, messages: &[(u64, &str)]) -> &mut Self {
            let next = messages.last().map_or(0, |(o, _)| o + 1);
            let v = PollValue {
                queue,
                node: 1,
                from: 0,
                status: Some("FOUND".into()),
                next: Some(next),
                messages: messages.iter().map(|(o, b)| (*o, b.to_string())).collect(),
                error: None,
            };
            self.push("c0", Kind::Invoke, Body::Poll(v.clone()));
            self.push("c0", Kind::Ok, Body::Poll(v))
        }

        fn final_on(&mut self, queue: u32, node: u64, messages: &[(u64, &str)]) -> &mut Self {
            let max = messages.last().map_or(0, |(o, _)| o + 1);
            self.push(
                "final",
                Kind::Ok,
                Body::FinalRead(FinalReadValue {
                    queue,
                    node,
                    min_offset: 0,
                    max_offset: max,
                    messages: messages.iter().map(|(o, b)| (*o, b.to_string())).collect(),
                }),
            )
        }

        /// Final copies of `queue` on nodes 1..=3, identical, and a poll of them.
        fn visible(&mut self, queue: u32, messages: &[(u64, &str)]) -> &mut Self {
            self.polled(queue, messages);
            for node in 1..=3 {
                self.final_on(queue, node, messages);
            }
            self
        }

        fn settled(&mut self, open: &[(u64, Option<u64>)]) -> &mut Self {
            self.push(
                "final",
                Kind::Ok,
                Body::TxnSettle(TxnSettleValue {
                    settled: open.iter().all(|(_, n)| *n == Some(0)),
                    waited_ms: 1234,
                    open: open.to_vec(),
                }),
            )
        }

        /// The clean history's final copies ([`QUEUE_0`], [`QUEUE_1`]) with
        /// `extra` bodies appended to their queues, polled and read on every node.
        fn finish_with(&mut self, extra: &[(u32, &'static str)]) -> &mut Self {
            let mut queues = [QUEUE_0.to_vec(), QUEUE_1.to_vec()];
            for (queue, body) in extra {
                let copy = &mut queues[*queue as usize];
                copy.push((copy.len() as u64, body));
            }
            self.visible(0, &queues[0]).visible(1, &queues[1])
        }

        fn check(&self) -> CheckResult {
            check(
                &self.ops,
                CheckOptions {
                    min_acknowledged: 3,
                    expected_nodes: 3,
                    ..CheckOptions::default()
                },
            )
        }
    }

    use Answer::{Conflict, NotFound, Status, StatusCount, Unknown};
    use CheckAnswer as Ca;
    use ResolveSource::{Check, Probe, Producer};
    use TxnAction::{Commit, Rollback};
    use TxnDecision as Td;

    const COMMITTED: &str = "COMMITTED";
    const ROLLED_BACK: &str = "ROLLED_BACK";

    /// Sends, resolutions, checks and the probe of six transactions, up to (not
    /// including) the final copies:
    /// * p0-1 (2 messages, queues 0 and 1): committed by its producer;
    /// * p0-2: rolled back by its producer;
    /// * p0-3: its send certainly failed;
    /// * p1-1: abandoned, committed by a check responder;
    /// * p1-2: abandoned, ignored by the responder, rolled back by timeout;
    /// * p1-3 (2 messages): its send's answer was lost; the responder committed it.
    fn sends_and_resolutions() -> T {
        let mut t = T::default();
        t.send("p0-1", &[0, 1], Td::Commit, Ca::Commit, Kind::Ok, Some(A))
            .resolve(Producer, A, "p0-1", Commit, Status(COMMITTED, false));
        t.send("p0-2", &[0], Td::Rollback, Ca::Rollback, Kind::Ok, Some(B))
            .resolve(Producer, B, "p0-2", Rollback, Status(ROLLED_BACK, false));
        t.send("p0-3", &[1], Td::Commit, Ca::Commit, Kind::Fail, None);
        t.send("p1-1", &[1], Td::Abandon, Ca::Commit, Kind::Ok, Some(C));
        t.send("p1-2", &[0], Td::Abandon, Ca::Ignore, Kind::Ok, Some(D));
        t.send("p1-3", &[0, 0], Td::Commit, Ca::Commit, Kind::Info, None);
        t.offered(C, "p1-1", &[], 1)
            .resolve(Check, C, "p1-1", Commit, Status(COMMITTED, false));
        t.offered(D, "p1-2", &[], 1).offered(D, "p1-2", &[], 2);
        t.offered(E, "p1-3", &[], 1)
            .resolve(Check, E, "p1-3", Commit, Status(COMMITTED, false));
        t.settled(&[(1, Some(0)), (2, Some(0)), (3, Some(0))]);
        t.resolve(Probe, A, "p0-1", Rollback, Conflict)
            .resolve(Probe, B, "p0-2", Rollback, Status(ROLLED_BACK, false))
            .resolve(Probe, C, "p1-1", Rollback, Conflict)
            .resolve(Probe, D, "p1-2", Rollback, Status(ROLLED_BACK, true))
            .resolve(Probe, E, "p1-3", Rollback, Conflict);
        t
    }

    /// What the clean history's nodes hold: the committed transactions' messages.
    const QUEUE_0: [(u64, &str); 3] = [(0, "p0-1.0"), (1, "p1-3.0"), (2, "p1-3.1")];
    const QUEUE_1: [(u64, &str); 2] = [(0, "p0-1.1"), (1, "p1-1.0")];

    fn clean() -> T {
        let mut t = sends_and_resolutions();
        t.finish_with(&[]);
        t
    }

    #[test]
    fn a_clean_transaction_history_passes_and_is_counted() {
        let result = clean().check();
        assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
        let t = result.transactions.expect("a transactions summary");
        assert_eq!(t.opened, 6);
        assert_eq!((t.decided_commit, t.decided_rollback), (3, 1));
        assert_eq!((t.abandoned_commit, t.abandoned_ignore), (1, 1));
        assert_eq!((t.send_unknown, t.send_unknown_offered), (1, 1));
        assert_eq!(
            (
                t.committed,
                t.committed_by_producer,
                t.committed_by_check,
                t.committed_otherwise
            ),
            (3, 1, 2, 0)
        );
        assert_eq!(
            (
                t.rolled_back,
                t.rolled_back_by_producer,
                t.rolled_back_by_timeout
            ),
            (2, 1, 1)
        );
        assert_eq!(t.committed_messages, 5);
        assert_eq!(t.visible_messages, 5);
        assert_eq!(t.undetermined, 0);
        assert_eq!((t.offers, t.offers_commit, t.offers_ignored), (4, 2, 2));
        assert_eq!(t.probes.attempted, 5);
        assert_eq!(t.resolutions.attempted, 4);
        assert_eq!(t.settled, Some(true));
        // The committed messages are the acknowledged ones per queue.
        assert_eq!(result.queues[&0].acknowledged, 3);
        assert_eq!(result.queues[&1].acknowledged, 2);
    }

    #[test]
    fn a_committed_transaction_missing_from_the_final_copies_is_flagged() {
        let mut t = sends_and_resolutions();
        // p1-1 was committed by the responder; no node has it.
        t.visible(0, &QUEUE_0).visible(1, &QUEUE_1[..1]);
        only(&t.check(), AnomalyKind::CommittedMissing);
    }

    #[test]
    fn a_rolled_back_transaction_visible_is_flagged() {
        let mut t = sends_and_resolutions();
        t.finish_with(&[(0, "p0-2.0")]);
        only(&t.check(), AnomalyKind::RolledBackVisible);
    }

    #[test]
    fn a_transaction_rolled_back_by_timeout_and_visible_is_flagged() {
        let mut t = sends_and_resolutions();
        t.finish_with(&[(0, "p1-2.0")]);
        only(&t.check(), AnomalyKind::RolledBackVisible);
    }

    #[test]
    fn a_commit_answered_409_is_a_rollback() {
        let mut t = sends_and_resolutions();
        t.send("p2-1", &[1], Td::Commit, Ca::Commit, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Commit, Conflict);
        // Its message visible although the commit was refused: rolled back.
        t.finish_with(&[(1, "p2-1.0")]);
        only(&t.check(), AnomalyKind::RolledBackVisible);
    }

    #[test]
    fn some_messages_of_a_transaction_visible_is_partial() {
        let mut t = sends_and_resolutions();
        // p2-1's commit answer was lost and the probe's too: it may have been
        // committed or not, but not half.
        t.send("p2-1", &[0, 1], Td::Commit, Ca::Commit, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Commit, Unknown)
            .resolve(Probe, F, "p2-1", Rollback, Unknown);
        t.finish_with(&[(0, "p2-1.0")]);
        let result = t.check();
        only(&result, AnomalyKind::Partial);
        assert_eq!(result.transactions.expect("summary").undetermined, 1);
    }

    #[test]
    fn a_committed_transaction_half_visible_is_partial_and_missing() {
        let mut t = sends_and_resolutions();
        // p0-1's second message (queue 1) is gone.
        t.visible(0, &QUEUE_0);
        t.polled(1, &[(1, "p1-1.0")]);
        for node in 1..=3 {
            t.final_on(1, node, &[(1, "p1-1.0")]);
        }
        let result = t.check();
        assert!(result.count(AnomalyKind::Partial) > 0, "{result:#?}");
        assert!(
            result.count(AnomalyKind::CommittedMissing) > 0,
            "{result:#?}"
        );
    }

    #[test]
    fn a_transaction_answered_both_ways_is_flagged() {
        let mut t = sends_and_resolutions();
        // The probe's rollback of the committed p0-1 answered 200 ROLLED_BACK.
        t.ops.retain(
        |op| !matches!(&op.body, Body::TxnResolve(v) if v.transaction_id == A && v.source == Probe),
    );
        t.resolve(Probe, A, "p0-1", Rollback, Status(ROLLED_BACK, false));
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::BothOutcomes);
    }

    #[test]
    fn a_lost_send_visible_without_any_commit_is_flagged() {
        let mut t = sends_and_resolutions();
        // p2-1's send answer was lost; no check offered it, nobody committed it.
        t.send("p2-1", &[1], Td::Commit, Ca::Commit, Kind::Info, None);
        t.finish_with(&[(1, "p2-1.0")]);
        only(&t.check(), AnomalyKind::UncommittedVisible);
    }

    #[test]
    fn an_ignored_transaction_answered_committed_is_flagged() {
        let mut t = sends_and_resolutions();
        // p1-2 (the responder ignores it) rolled back by the probe → 409: the
        // broker says committed, and it is visible; no commit was requested.
        t.ops.retain(
        |op| !matches!(&op.body, Body::TxnResolve(v) if v.transaction_id == D && v.source == Probe),
    );
        t.resolve(Probe, D, "p1-2", Rollback, Conflict);
        t.finish_with(&[(0, "p1-2.0")]);
        only(&t.check(), AnomalyKind::UncommittedVisible);
    }

    #[test]
    fn a_lost_commit_answer_may_have_committed() {
        let mut t = sends_and_resolutions();
        // p2-1's commit and the probe both went unanswered: visible or not is fine.
        t.send("p2-1", &[1], Td::Commit, Ca::Commit, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Commit, Unknown)
            .resolve(Probe, F, "p2-1", Rollback, Unknown);
        t.send("p2-2", &[1], Td::Commit, Ca::Commit, Kind::Ok, Some(G))
            .resolve(Producer, G, "p2-2", Commit, Unknown)
            .resolve(Probe, G, "p2-2", Rollback, Unknown);
        t.finish_with(&[(1, "p2-1.0")]);
        let result = t.check();
        assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
        assert_eq!(result.transactions.expect("summary").undetermined, 2);
    }

    #[test]
    fn a_message_visible_twice_is_a_duplicate() {
        let mut t = sends_and_resolutions();
        t.finish_with(&[(0, "p0-1.0")]);
        only(&t.check(), AnomalyKind::Duplicate);
    }

    #[test]
    fn a_message_never_sent_is_a_phantom() {
        let mut t = sends_and_resolutions();
        t.finish_with(&[(0, "p9-9.0")]);
        only(&t.check(), AnomalyKind::Phantom);
    }

    #[test]
    fn a_stored_transaction_answered_not_found_is_a_wrong_answer() {
        let mut t = sends_and_resolutions();
        t.send("p2-1", &[1], Td::Commit, Ca::Commit, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Commit, NotFound)
            .resolve(Probe, F, "p2-1", Rollback, Conflict);
        t.finish_with(&[(1, "p2-1.0")]);
        only(&t.check(), AnomalyKind::WrongAnswer);
    }

    #[test]
    fn a_resolution_answering_another_message_count_is_a_wrong_answer() {
        let mut t = sends_and_resolutions();
        t.send("p2-1", &[1], Td::Rollback, Ca::Rollback, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Rollback, StatusCount(ROLLED_BACK, 3));
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::WrongAnswer);
    }

    #[test]
    fn a_commit_answered_rolled_back_is_a_wrong_answer() {
        let mut t = sends_and_resolutions();
        t.send("p2-1", &[1], Td::Commit, Ca::Commit, Kind::Ok, Some(F))
            .resolve(Producer, F, "p2-1", Commit, Status(ROLLED_BACK, false));
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::WrongAnswer);
    }

    #[test]
    fn a_check_missing_a_message_is_a_mismatch() {
        let mut t = sends_and_resolutions();
        t.offered(E, "p1-3", &["p1-3.0"], 2);
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::CheckMismatch);
    }

    #[test]
    fn a_check_of_a_failed_send_is_a_mismatch() {
        let mut t = sends_and_resolutions();
        // p0-3's send certainly failed, yet a check offers it.
        t.offered(F, "p0-3", &[], 1);
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::CheckMismatch);
    }

    #[test]
    fn one_send_under_two_transaction_ids_is_a_mismatch() {
        let mut t = sends_and_resolutions();
        // p0-1 was answered as A; a check offers its messages as F.
        t.offered(F, "p0-1", &[], 1);
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::CheckMismatch);
    }

    #[test]
    fn a_check_offered_after_its_resolution_is_counted_not_flagged() {
        let mut t = sends_and_resolutions();
        t.offered(A, "p0-1", &[], 1);
        t.finish_with(&[]);
        let result = t.check();
        assert_eq!(result.verdict, Verdict::Clean, "{result:#?}");
        assert_eq!(result.transactions.expect("summary").stale_offers, 1);
    }

    #[test]
    fn transactions_open_after_the_heal_are_never_resolved() {
        let mut t = sends_and_resolutions();
        t.settled(&[(1, Some(0)), (2, Some(2)), (3, Some(0))]);
        t.finish_with(&[]);
        only(&t.check(), AnomalyKind::NeverResolved);
    }

    #[test]
    fn without_the_settle_wait_or_checks_or_timeouts_it_is_inconclusive() {
        let mut t = clean();
        t.ops.retain(|op| !matches!(op.body, Body::TxnSettle(_)));
        let result = t.check();
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result.anomalies.is_empty());

        let mut t = clean();
        t.ops.retain(|op| !matches!(op.body, Body::TxnChecks(_)));
        let result = t.check();
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result
            .inconclusive_reasons
            .iter()
            .any(|r| r.contains("offered")));

        let mut t = clean();
        t.ops
            .retain(|op| !matches!(&op.body, Body::TxnResolve(v) if v.by_timeout == Some(true)));
        let result = t.check();
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result
            .inconclusive_reasons
            .iter()
            .any(|r| r.contains("timeout")));
    }

    #[test]
    fn too_few_committed_messages_are_inconclusive() {
        // Five messages of committed transactions; six needed.
        let result = check(
            &clean().ops,
            CheckOptions {
                min_acknowledged: 6,
                expected_nodes: 3,
                ..CheckOptions::default()
            },
        );
        assert_eq!(result.verdict, Verdict::Inconclusive, "{result:#?}");
        assert!(result
            .inconclusive_reasons
            .iter()
            .any(|r| r.contains("committed transactions")));
    }

    #[test]
    fn the_report_shows_the_transaction_counts_and_classes() {
        let result = clean().check();
        let report = Report::build(&clean().ops, result, Default::default(), Vec::new());
        let text = report.text();
        assert!(text.contains("Transactions"), "{text}");
        assert!(
            text.contains("committed 3 (by producer 1, by check 2"),
            "{text}"
        );
        assert!(text.contains("by timeout 1"), "{text}");
        assert!(text.contains("txn sends"), "{text}");
        for kind in [
            "committed_missing",
            "rolled_back_visible",
            "partial",
            "duplicate",
        ] {
            assert!(text.contains(kind), "{kind}: {text}");
        }
        assert!(!text.contains("leased_twice"), "{text}");
    }

    #[test]
    fn a_transaction_history_round_trips_through_json_lines() {
        let t = clean();
        let text: String = t
            .ops
            .iter()
            .map(|op| serde_json::to_string(op).expect("serialisable") + "\n")
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, text).expect("write");
        let loaded = cluster_tests::jepsen::history::load(&path).expect("load");
        assert_eq!(loaded, t.ops);
    }
}
