//! The checker is itself tested: hand-made histories with one anomaly each are
//! flagged with exactly that anomaly, clean histories pass, and thin ones are
//! inconclusive rather than clean.

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
        check(
            &self.ops,
            CheckOptions {
                min_acknowledged: 3,
                expected_nodes: 3,
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
    let mut h = clean_base();
    h.read_offsets(2, &[(0, 3)], false);
    h.read_offsets(2, &[(0, 1)], false);
    h.finals(0, &[(0, "a"), (1, "b"), (2, "c")]);
    only(&h.check(), AnomalyKind::OffsetBackwards);
}

#[test]
fn a_restarted_node_may_serve_an_older_offset_for_a_moment() {
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
    assert_eq!(h.check().verdict, Verdict::Clean);
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
