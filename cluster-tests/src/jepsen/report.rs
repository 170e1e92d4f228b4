//! The report of a run: availability and latency over time with the fault
//! windows marked, per-fault outage and recovery times, and the checker's verdict
//! — as text (`report.txt`), JSON (`report.json`) and a picture (`timeline.svg`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::checker::{AnomalyKind, CheckResult, Verdict};
use super::history::{Body, Kind, Op};

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    pub second: u64,
    pub sends_ok: u64,
    pub sends_failed: u64,
    pub sends_unknown: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
}

/// One fault, from injection to heal.
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub fault: String,
    pub detail: String,
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    pub healed: String,
    /// Longest time without a completed acknowledged send, from the fault's start
    /// to 10 s after its heal (the failover time for leader faults).
    pub longest_outage_ms: f64,
    /// From the heal to the first acknowledged send invoked after it.
    pub recovery_ms: Option<f64>,
    /// From the fault to a new leader agreed by a majority (leader faults only).
    pub failover_ms: Option<f64>,
}

/// Everything the report shows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: BTreeMap<String, String>,
    pub verdict: Verdict,
    pub check: CheckResult,
    pub faults: Vec<FaultWindow>,
    pub timeline: Vec<Bucket>,
    pub notes: Vec<String>,
    /// Each node's memory, open files and disk, first tenth of the run against
    /// the last (see `resources`); empty when nothing was sampled.
    pub resources: Vec<super::resources::Trend>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// Completed sends (plain or transactional): (invoke_ms, complete_ms, kind).
fn send_completions(ops: &[Op]) -> Vec<(f64, f64, Kind)> {
    let mut pending: HashMap<&str, f64> = HashMap::new();
    let mut out = Vec::new();
    for op in ops {
        if let Body::Send(_) | Body::TxnSend(_) = op.body {
            if op.kind == Kind::Invoke {
                pending.insert(op.process.as_str(), op.time_ms.0);
            } else if let Some(start) = pending.remove(op.process.as_str()) {
                out.push((start, op.time_ms.0, op.kind));
            }
        }
    }
    out
}

impl Report {
    /// Builds the report from the history and the check.
    pub fn build(
        ops: &[Op],
        check: CheckResult,
        run: BTreeMap<String, String>,
        notes: Vec<String>,
    ) -> Self {
        let sends = send_completions(ops);
        let end_ms = ops.last().map_or(0.0, |op| op.time_ms.0);
        let seconds = (end_ms / 1000.0).ceil() as u64 + 1;
        let mut timeline: Vec<Bucket> = (0..seconds)
            .map(|second| Bucket {
                second,
                ..Bucket::default()
            })
            .collect();
        let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); seconds as usize];
        for (start, end, kind) in &sends {
            let i = ((end / 1000.0) as usize).min(timeline.len().saturating_sub(1));
            let Some(bucket) = timeline.get_mut(i) else {
                continue;
            };
            match kind {
                Kind::Ok => {
                    bucket.sends_ok += 1;
                    latencies[i].push(end - start);
                }
                Kind::Fail => bucket.sends_failed += 1,
                _ => bucket.sends_unknown += 1,
            }
        }
        for (bucket, mut values) in timeline.iter_mut().zip(latencies) {
            values.sort_by(f64::total_cmp);
            bucket.latency_p50_ms = percentile(&values, 50.0);
            bucket.latency_p99_ms = percentile(&values, 99.0);
            bucket.latency_max_ms = values.last().copied();
        }

        let mut ok_times: Vec<(f64, f64)> = sends
            .iter()
            .filter(|(_, _, k)| *k == Kind::Ok)
            .map(|(s, e, _)| (*s, *e))
            .collect();
        ok_times.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut faults: Vec<FaultWindow> = Vec::new();
        for op in ops {
            let Body::Nemesis(v) = &op.body else { continue };
            match op.kind {
                Kind::Invoke => faults.push(FaultWindow {
                    fault: v.fault.clone(),
                    detail: v.detail.clone(),
                    start_ms: op.time_ms.0,
                    end_ms: None,
                    healed: String::new(),
                    longest_outage_ms: 0.0,
                    recovery_ms: None,
                    failover_ms: None,
                }),
                _ => {
                    if let Some(open) = faults
                        .iter_mut()
                        .rev()
                        .find(|f| f.end_ms.is_none() && f.fault == v.fault)
                    {
                        open.end_ms = Some(op.time_ms.0);
                        open.healed = v.detail.clone();
                        open.failover_ms = v
                            .detail
                            .split("failover: leader ")
                            .nth(1)
                            .and_then(|rest| rest.split(" agreed ").nth(1))
                            .and_then(|rest| rest.split(' ').next())
                            .and_then(|ms| ms.parse().ok());
                    }
                }
            }
        }
        for window in &mut faults {
            let heal = window.end_ms.unwrap_or(end_ms);
            let horizon = (heal + 10_000.0).min(end_ms);
            let mut last = window.start_ms;
            let mut longest: f64 = 0.0;
            for (_, done) in ok_times
                .iter()
                .filter(|(_, e)| *e > window.start_ms && *e <= horizon)
            {
                longest = longest.max(done - last);
                last = *done;
            }
            longest = longest.max(horizon - last);
            window.longest_outage_ms = longest;
            window.recovery_ms = ok_times
                .iter()
                .find(|(s, _)| *s >= heal)
                .map(|(_, e)| e - heal);
        }
        Self {
            run,
            verdict: check.verdict,
            check,
            faults,
            timeline,
            notes,
            resources: Vec::new(),
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let c = &self.check;
        let _ = writeln!(out, "Jepsen-style run: {:?}", self.verdict);
        for (key, value) in &self.run {
            let _ = writeln!(out, "  {key}: {value}");
        }
        let _ = writeln!(
            out,
            "\nOperations        attempted        ok    failed   unknown"
        );
        let rows = match (&c.receive, &c.transactions) {
            (None, Some(t)) => vec![
                ("txn sends", c.sends),
                ("resolutions", t.resolutions),
                ("check polls", t.check_polls),
                ("final probes", t.probes),
                ("polls", c.polls),
                ("offset commits", c.commits),
                ("offset reads", c.offset_reads),
            ],
            (None, None) => vec![
                ("sends", c.sends),
                ("polls", c.polls),
                ("offset commits", c.commits),
                ("offset reads", c.offset_reads),
            ],
            (Some(r), _) => vec![
                ("sends", c.sends),
                ("receives", r.receives),
                ("acks", r.acks),
                ("nacks", r.nacks),
                ("lease changes", r.lease_changes),
            ],
        };
        for (name, counts) in rows {
            let _ = writeln!(
                out,
                "  {name:<16}{:>9} {:>9} {:>9} {:>9}",
                counts.attempted, counts.ok, counts.failed, counts.unknown
            );
        }
        if let Some(r) = &c.receive {
            let _ = writeln!(out, "\nReceive and ack");
            let _ = writeln!(
                out,
                "  deliveries {} of {} messages, redeliveries (attempt > 1) {}",
                r.deliveries, r.messages_delivered, r.redeliveries
            );
            let _ = writeln!(
                out,
                "  ack handles: OK {}  EXPIRED {}  INVALID {}  unanswered {}",
                r.acks_ok, r.acks_expired, r.acks_invalid, r.acks_unanswered
            );
            let _ = writeln!(
                out,
                "  dead-letter topic: {} messages ({} copies, {} poison) of {} poison sent; max delivery attempts {}",
                r.dlq_messages, r.dlq_copies, r.dlq_poison, r.poison_sent, r.max_delivery_attempts
            );
            let _ = writeln!(
                out,
                "  final drain: {}; complete dead-letter reads: {} node(s)",
                match r.drain_complete {
                    Some(true) => "went quiet",
                    Some(false) => "did NOT go quiet",
                    None => "not recorded",
                },
                r.dlq_reads_complete
            );
        }
        if let Some(t) = &c.transactions {
            let _ = writeln!(out, "\nTransactions");
            let _ = writeln!(
                out,
                "  opened {}: decided commit {}, rollback {}, abandoned {} (checks to answer commit {}, rollback {}, ignore {})",
                t.opened,
                t.decided_commit,
                t.decided_rollback,
                t.abandoned_commit + t.abandoned_rollback + t.abandoned_ignore,
                t.abandoned_commit,
                t.abandoned_rollback,
                t.abandoned_ignore
            );
            let _ = writeln!(
                out,
                "  sends with unknown outcome {} ({} of them later offered in a check)",
                t.send_unknown, t.send_unknown_offered
            );
            let _ = writeln!(
                out,
                "  committed {} (by producer {}, by check {}, known otherwise {}); {} messages",
                t.committed,
                t.committed_by_producer,
                t.committed_by_check,
                t.committed_otherwise,
                t.committed_messages
            );
            let _ = writeln!(
                out,
                "  rolled back {} (by producer {}, by check {}, by timeout {}, known otherwise {}); undetermined {}",
                t.rolled_back,
                t.rolled_back_by_producer,
                t.rolled_back_by_check,
                t.rolled_back_by_timeout,
                t.rolled_back_otherwise,
                t.undetermined
            );
            let _ = writeln!(
                out,
                "  resolution retries {}, answered 409 {}, 404 {}",
                t.resolution_retries, t.conflicts, t.not_found
            );
            let _ = writeln!(
                out,
                "  checks offered {}: answered commit {}, rollback {}, ignored {}, unreadable {}; offered after being resolved {}",
                t.offers,
                t.offers_commit,
                t.offers_rollback,
                t.offers_ignored,
                t.offers_unreadable,
                t.stale_offers
            );
            let _ = writeln!(
                out,
                "  messages visible in the final copies {}; open transactions after the heal: {}",
                t.visible_messages,
                match t.settled {
                    Some(true) => "none",
                    Some(false) => "SOME LEFT",
                    None => "not recorded",
                }
            );
        }
        let shown = |kind: &AnomalyKind| {
            if c.receive.is_some() {
                !kind.is_pull_only() && !kind.is_transaction_only()
            } else if c.transactions.is_some() {
                !kind.is_receive_only()
            } else {
                !kind.is_receive_only() && !kind.is_transaction_only()
            }
        };
        let _ = writeln!(out, "\nAnomalies");
        for kind in AnomalyKind::ALL.iter().filter(|k| shown(k)) {
            let _ = writeln!(out, "  {:<28}{:>6}", kind.name(), c.count(*kind));
        }
        if !c.inconclusive_reasons.is_empty() {
            let _ = writeln!(out, "\nInconclusive because");
            for reason in &c.inconclusive_reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        }
        let _ = writeln!(
            out,
            "\nPer queue: acknowledged / unknown sends / final length / anomalies"
        );
        let aged_out: u64 = c.queues.values().map(|q| q.aged_out).sum();
        if aged_out > 0 {
            let _ = writeln!(
                out,
                "  ({aged_out} acknowledged sends aged out: retention deleted them from every node, as the run's settings allow; not counted lost)"
            );
        }
        for (queue, q) in &c.queues {
            let anomalies: Vec<String> = q
                .anomalies
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let _ = writeln!(
                out,
                "  queue {queue}: {}{} / {} / {} / {}",
                q.acknowledged,
                if q.aged_out > 0 {
                    format!(" ({} aged out)", q.aged_out)
                } else {
                    String::new()
                },
                q.unknown_sends,
                q.final_messages,
                if anomalies.is_empty() {
                    "none".into()
                } else {
                    anomalies.join(" ")
                }
            );
        }
        if !c.anomalies.is_empty() {
            let _ = writeln!(out, "\nExamples (first 5 of each kind)");
            for kind in AnomalyKind::ALL {
                for a in c.anomalies.iter().filter(|a| a.kind == kind).take(5) {
                    let _ = writeln!(out, "  [{}] {}", kind.name(), a.detail);
                }
            }
        }
        let _ = writeln!(out, "\nFaults (times from the start of the run)");
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  {:>8.1}s..{:>8} {:<18} {} -> {}; longest outage {:.0} ms, recovery after heal {}",
                f.start_ms / 1000.0,
                f.end_ms.map_or("open".into(), |e| format!("{:.1}s", e / 1000.0)),
                f.fault,
                f.detail,
                f.healed,
                f.longest_outage_ms,
                f.recovery_ms.map_or("none".into(), |r| format!("{r:.0} ms"))
            );
        }
        let _ = writeln!(
            out,
            "\nThroughput and latency per 10 s (ok sends/s, p99 ms)"
        );
        for chunk in self.timeline.chunks(10) {
            let ok: u64 = chunk.iter().map(|b| b.sends_ok).sum();
            let bad: u64 = chunk.iter().map(|b| b.sends_failed + b.sends_unknown).sum();
            let p99 = chunk
                .iter()
                .filter_map(|b| b.latency_p99_ms)
                .fold(0.0f64, f64::max);
            let _ = writeln!(
                out,
                "  {:>5}s  ok/s {:>7.1}  failed+unknown {:>5}  p99 {:>8.1} ms",
                chunk.first().map_or(0, |b| b.second),
                ok as f64 / chunk.len() as f64,
                bad,
                p99
            );
        }
        if !self.resources.is_empty() {
            let _ = writeln!(
                out,
                "\nResources (median of the run's first tenth against its last; resources.svg)"
            );
            out.push_str(&super::resources::text(&self.resources));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The picture: ok/failed/unknown sends per second (top) and latency (bottom,
    /// log scale), fault windows shaded and labelled.
    pub fn svg(&self) -> String {
        const W: f64 = 1200.0;
        const LEFT: f64 = 60.0;
        const RIGHT: f64 = 20.0;
        const TOP1: f64 = 40.0;
        const H1: f64 = 220.0;
        const TOP2: f64 = 310.0;
        const H2: f64 = 220.0;
        let seconds = self.timeline.len().max(1) as f64;
        let x = |s: f64| LEFT + (W - LEFT - RIGHT) * s / seconds;
        let max_count = self
            .timeline
            .iter()
            .map(|b| b.sends_ok + b.sends_failed + b.sends_unknown)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_latency = self
            .timeline
            .iter()
            .filter_map(|b| b.latency_max_ms)
            .fold(10.0f64, f64::max);
        let log_max = max_latency.log10().ceil().max(1.0);
        let y_lat = |ms: f64| TOP2 + H2 - H2 * (ms.max(1.0).log10() / log_max);

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="600" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let title = format!(
            "{} — {:?} — sends ok {} / failed {} / unknown {}",
            self.run.get("nemesis").cloned().unwrap_or_default(),
            self.verdict,
            self.check.sends.ok,
            self.check.sends.failed,
            self.check.sends.unknown
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
            escape(&title)
        );
        // Fault windows across both panels.
        for (i, f) in self.faults.iter().enumerate() {
            let start = f.start_ms / 1000.0;
            let end = f.end_ms.map_or(seconds, |e| e / 1000.0);
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{TOP1}" width="{:.1}" height="{:.1}" fill="#f4a261" fill-opacity="0.25"><title>{}</title></rect>"##,
                x(start),
                (x(end) - x(start)).max(1.0),
                TOP2 + H2 - TOP1,
                escape(&format!("{}: {} → {}", f.fault, f.detail, f.healed))
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#9c4a00" font-size="9">{}</text>"##,
                x(start) + 2.0,
                TOP1 + 10.0 + 10.0 * (i % 3) as f64,
                escape(&f.fault)
            );
        }
        // Panel frames and axes.
        for (top, h, label) in [
            (
                TOP1,
                H1,
                "sends completed per second (green ok, red failed, grey unknown)",
            ),
            (
                TOP2,
                H2,
                "ok send latency per second, ms, log scale (blue p50, purple p99, black max)",
            ),
        ] {
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{h}" fill="none" stroke="#888"/>"##,
                W - LEFT - RIGHT
            );
            let _ = writeln!(
                s,
                r#"<text x="{LEFT}" y="{:.1}">{label}</text>"#,
                top + h + 14.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="5" y="{:.1}">{max_count:.0}/s</text>"#,
            TOP1 + 10.0
        );
        let _ = writeln!(s, r#"<text x="5" y="{:.1}">0</text>"#, TOP1 + H1);
        for decade in 0..=(log_max as i32) {
            let ms = 10f64.powi(decade);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="5" y="{y:.1}">{ms} ms</text>"##,
                W - RIGHT,
                y = y_lat(ms)
            );
        }
        let step = ((seconds / 12.0).ceil() as u64).max(1);
        for second in (0..seconds as u64).step_by(step as usize) {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{second}s</text>"#,
                x(second as f64),
                TOP2 + H2 + 28.0
            );
        }
        // Stacked bars.
        let bar = ((W - LEFT - RIGHT) / seconds).max(1.0);
        for b in &self.timeline {
            let mut y = TOP1 + H1;
            for (count, color) in [
                (b.sends_ok, "#2a9d8f"),
                (b.sends_failed, "#e63946"),
                (b.sends_unknown, "#999999"),
            ] {
                if count == 0 {
                    continue;
                }
                let h = H1 * count as f64 / max_count;
                y -= h;
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/>"#,
                    x(b.second as f64),
                    (bar - 0.5).max(0.5)
                );
            }
        }
        // Latency lines.
        for (pick, color) in [(0usize, "#1d3557"), (1, "#7b2cbf"), (2, "#000000")] {
            let points: Vec<String> = self
                .timeline
                .iter()
                .filter_map(|b| {
                    let v = match pick {
                        0 => b.latency_p50_ms,
                        1 => b.latency_p99_ms,
                        _ => b.latency_max_ms,
                    }?;
                    Some(format!("{:.1},{:.1}", x(b.second as f64 + 0.5), y_lat(v)))
                })
                .collect();
            if !points.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1"/>"#,
                    points.join(" ")
                );
            }
        }
        let _ = writeln!(s, "</svg>");
        s
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
