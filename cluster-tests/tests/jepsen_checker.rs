//! The checker is itself tested: hand-made histories with one anomaly each are
//! flagged with exactly that anomaly, clean histories pass, and thin ones are
//! inconclusive rather than clean. The second half does the same for the receive
//! workload's histories (leases, acks, nacks, the dead-letter topic).

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
