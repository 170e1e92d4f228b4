//! What the node counts for `/metrics` (Prometheus text format, version 0.0.4).
//!
//! The request path only touches atomics: counters are `AtomicU64`s, histograms are
//! fixed bucket arrays of them, and the per-topic counters sit in a map behind an
//! `RwLock` that a request takes for reading (a topic's first message takes it for
//! writing once). A metrics registry crate would cost a hash lookup per series
//! and label set on every request; everything that is a *state* (Raft indexes,
//! disk sizes, consumer lag) is read at scrape time instead of being kept here.
//!
//! Names follow Prometheus conventions: `broker_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use broker_proto::error_code::ErrorCode;

/// Bucket bounds (seconds) of the request latency histograms: 250 µs to 30 s, so a
/// long poll held for its whole wait still lands in a bucket.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Bucket bounds (seconds) of fsync latency: 50 µs to 5 s.
pub const FSYNC_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0,
];

/// Beyond this many distinct topics, further topics are counted under
/// `topic="_other"`, so a client inventing topic names cannot grow the scrape
/// without bound.
pub const MAX_TOPIC_SERIES: usize = 10_000;
/// The topic label of counts beyond [`MAX_TOPIC_SERIES`].
pub const OTHER_TOPIC: &str = "_other";

/// A Prometheus histogram with fixed buckets, safe to observe from any thread.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// # Panics
    /// If `bounds` are not strictly increasing (a bug in a constant above).
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase: {bounds:?}"
        );
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples (no HELP/TYPE lines).
    /// `labels` is empty or `key="value",…` without braces.
    fn render_samples(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => format!("{bound}"),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        // The count is read after the buckets, so it may run ahead of `+Inf` by the
        // observations in flight; Prometheus tolerates that, and `+Inf` is exact.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }

    /// Writes HELP, TYPE and the samples.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        write_header(out, name, help, "histogram");
        self.render_samples(out, name, "");
    }
}

/// Counts of one topic's traffic through this node.
#[derive(Default)]
pub struct TopicCounters {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// The node's counters and histograms.
pub struct Metrics {
    pub messages_in_total: AtomicU64,
    pub bytes_in_total: AtomicU64,
    pub messages_out_total: AtomicU64,
    pub bytes_out_total: AtomicU64,
    pub send_requests_total: AtomicU64,
    pub pull_requests_total: AtomicU64,
    pub forwarded_requests_total: AtomicU64,
    /// Append streams (pipelined replication) a leader opened to this node.
    pub append_streams_total: AtomicU64,
    /// AppendEntries requests received on append streams.
    pub append_stream_requests_total: AtomicU64,
    /// Of those, the ones that arrived while an earlier request of the same
    /// stream was still unanswered: replication rounds that overlapped.
    pub append_stream_pipelined_requests_total: AtomicU64,
    /// Every error answer (the sum over `rejected_by_code`); kept for callers that
    /// want the total without adding up.
    pub rejected_requests_total: AtomicU64,
    /// Error answers by [`ErrorCode`], indexed by [`code_index`]; the last slot
    /// counts error answers without a code (proxied answers of other nodes).
    rejected_by_code: [AtomicU64; ErrorCode::ALL.len() + 1],
    /// Time from receiving a send request to answering it.
    pub send_duration: Histogram,
    /// Time from receiving a pull request to answering it, long-poll wait included.
    pub pull_duration: Histogram,
    /// Time to flush (msync) the CommitLog's dirty pages, told by the store
    /// (`MessageStore::on_commit_log_flush`).
    pub commit_log_flush_duration: Histogram,
    /// Per topic: see [`Metrics::topic`].
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    /// Sends this node led that were refused because their new producer ids did
    /// not fit in the full dedup table.
    pub producer_table_full_total: AtomicU64,
    /// Receive and ack, counted by the leader that decided.
    pub leases: LeaseCounters,
    /// Timer messages moved to their topics by runs this node led.
    pub timers_delivered_total: AtomicU64,
    /// Transactions resolved and checks offered while this node led.
    pub transactions: TransactionCounters,
    /// From a timer message's due time to its store in its topic (runs this node
    /// led).
    pub timer_lag: Histogram,
}

/// Counters of transactional messages, by the leader that decided.
#[derive(Default)]
pub struct TransactionCounters {
    pub committed: AtomicU64,
    /// Rolled back by their producer.
    pub rolled_back: AtomicU64,
    /// Rolled back by the broker after their last check.
    pub timed_out: AtomicU64,
    /// Checks offered to producer groups.
    pub checks: AtomicU64,
}

/// Buckets of [`Metrics::timer_lag`], in seconds: the promise is "within a second".
pub const TIMER_LAG_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counters of lease-based consumption (receive, ack, change-invisible).
#[derive(Default)]
pub struct LeaseCounters {
    /// Messages delivered by receives (first deliveries and later ones).
    pub delivered: AtomicU64,
    /// Of those, deliveries after the first.
    pub redelivered: AtomicU64,
    /// Leases that ended without an ack (ran out, or given back), found by
    /// receives: each is delivered again or dead-lettered.
    pub expired: AtomicU64,
    /// Acks answered `OK`.
    pub acked: AtomicU64,
    /// Acks and changes answered `EXPIRED`.
    pub ack_expired: AtomicU64,
    /// Acks and changes answered `INVALID`.
    pub ack_invalid: AtomicU64,
    /// Changes with `invisible_ms` 0 (nacks).
    pub nacked: AtomicU64,
    /// Messages moved to `%DLQ%{group}` after their last delivery.
    pub dead_lettered: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            messages_in_total: AtomicU64::new(0),
            bytes_in_total: AtomicU64::new(0),
            messages_out_total: AtomicU64::new(0),
            bytes_out_total: AtomicU64::new(0),
            send_requests_total: AtomicU64::new(0),
            pull_requests_total: AtomicU64::new(0),
            forwarded_requests_total: AtomicU64::new(0),
            append_streams_total: AtomicU64::new(0),
            append_stream_requests_total: AtomicU64::new(0),
            append_stream_pipelined_requests_total: AtomicU64::new(0),
            rejected_requests_total: AtomicU64::new(0),
            rejected_by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            send_duration: Histogram::new(REQUEST_BUCKETS),
            pull_duration: Histogram::new(REQUEST_BUCKETS),
            commit_log_flush_duration: Histogram::new(FSYNC_BUCKETS),
            topics: RwLock::new(HashMap::new()),
            producer_table_full_total: AtomicU64::new(0),
            leases: LeaseCounters::default(),
            timers_delivered_total: AtomicU64::new(0),
            transactions: TransactionCounters::default(),
            timer_lag: Histogram::new(TIMER_LAG_BUCKETS),
        }
    }
}

fn code_index(code: Option<ErrorCode>) -> usize {
    code.and_then(|code| ErrorCode::ALL.iter().position(|c| *c == code))
        .unwrap_or(ErrorCode::ALL.len())
}

/// The `code` label of error answers without an [`ErrorCode`].
pub const UNKNOWN_CODE: &str = "OTHER";

fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value for the text format (`\`, `"` and newlines).
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A labelled series for [`Metrics::render`]: (`key="value",…`, value).
pub type Series = (String, f64);

/// A gauge family for [`Metrics::render`]: name, help, and its series.
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub series: Vec<Series>,
}

impl GaugeFamily {
    /// A family of one unlabelled series.
    pub fn single(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            series: vec![(String::new(), value)],
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of `topic`, created on first use (beyond [`MAX_TOPIC_SERIES`]
    /// topics, the shared `_other` counters).
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        {
            // A poisoned lock only means a panic elsewhere while holding it; the
            // map itself is always whole (inserts are single calls).
            let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
            if let Some(counters) = topics.get(topic) {
                return Arc::clone(counters);
            }
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let key = if topics.len() >= MAX_TOPIC_SERIES && !topics.contains_key(topic) {
            OTHER_TOPIC
        } else {
            topic
        };
        Arc::clone(topics.entry(key.to_string()).or_default())
    }

    /// Messages of `topic` stored by a send this node led.
    pub fn record_in(&self, topic: &str, messages: u64, bytes: u64) {
        Self::add(&self.messages_in_total, messages);
        Self::add(&self.bytes_in_total, bytes);
        let counters = self.topic(topic);
        Self::add(&counters.messages_in, messages);
        Self::add(&counters.bytes_in, bytes);
    }

    /// Messages of `topic` returned by a pull.
    pub fn record_out(&self, topic: &str, messages: u64, bytes: u64) {
        Self::add(&self.messages_out_total, messages);
        Self::add(&self.bytes_out_total, bytes);
        if messages > 0 {
            let counters = self.topic(topic);
            Self::add(&counters.messages_out, messages);
            Self::add(&counters.bytes_out, bytes);
        }
    }

    /// An error answer, with its code when the answer is one of ours.
    pub fn record_rejection(&self, code: Option<ErrorCode>) {
        Self::add(&self.rejected_requests_total, 1);
        Self::add(&self.rejected_by_code[code_index(code)], 1);
    }

    /// Renders the counters and histograms, then the gauges the caller read.
    pub fn render(
        &self,
        gauges: &[GaugeFamily],
        histograms: &[(&str, &str, &Histogram)],
    ) -> String {
        let mut out = String::with_capacity(16 << 10);
        let counters = [
            (
                "broker_messages_in_total",
                "Messages stored by sends this node led.",
                &self.messages_in_total,
            ),
            (
                "broker_bytes_in_total",
                "Message body bytes stored by sends this node led.",
                &self.bytes_in_total,
            ),
            (
                "broker_messages_out_total",
                "Messages returned by pulls.",
                &self.messages_out_total,
            ),
            (
                "broker_bytes_out_total",
                "Message body bytes returned by pulls.",
                &self.bytes_out_total,
            ),
            (
                "broker_send_requests_total",
                "Send requests received.",
                &self.send_requests_total,
            ),
            (
                "broker_pull_requests_total",
                "Pull requests received.",
                &self.pull_requests_total,
            ),
            (
                "broker_lease_delivered_total",
                "Messages delivered by receives (receive and ack), first deliveries and later ones.",
                &self.leases.delivered,
            ),
            (
                "broker_lease_redelivered_total",
                "Deliveries by receives after a message's first.",
                &self.leases.redelivered,
            ),
            (
                "broker_lease_expired_total",
                "Leases that ended without an ack (ran out, or given back), found by receives.",
                &self.leases.expired,
            ),
            (
                "broker_lease_acked_total",
                "Acks answered OK.",
                &self.leases.acked,
            ),
            (
                "broker_lease_ack_expired_total",
                "Acks and lease changes answered EXPIRED.",
                &self.leases.ack_expired,
            ),
            (
                "broker_lease_ack_invalid_total",
                "Acks and lease changes answered INVALID.",
                &self.leases.ack_invalid,
            ),
            (
                "broker_lease_nacked_total",
                "Lease changes to 0 ms (messages given back at once).",
                &self.leases.nacked,
            ),
            (
                "broker_lease_dead_lettered_total",
                "Messages moved to %DLQ%{group} after their last delivery without an ack.",
                &self.leases.dead_lettered,
            ),
            (
                "broker_forwarded_requests_total",
                "Writes forwarded to the leader.",
                &self.forwarded_requests_total,
            ),
            (
                "broker_raft_append_streams_total",
                "Pipelined replication streams a leader opened to this node.",
                &self.append_streams_total,
            ),
            (
                "broker_raft_append_stream_requests_total",
                "AppendEntries requests received on replication streams.",
                &self.append_stream_requests_total,
            ),
            (
                "broker_raft_append_stream_pipelined_requests_total",
                "AppendEntries requests that arrived while an earlier one of the same stream was unanswered.",
                &self.append_stream_pipelined_requests_total,
            ),
            (
                "broker_timers_delivered_total",
                "Timer messages moved to their topics by runs this node led.",
                &self.timers_delivered_total,
            ),
            (
                "broker_transactions_committed_total",
                "Transactions committed (their messages made visible) while this node led.",
                &self.transactions.committed,
            ),
            (
                "broker_transactions_rolled_back_total",
                "Transactions rolled back by their producer while this node led.",
                &self.transactions.rolled_back,
            ),
            (
                "broker_transactions_timed_out_total",
                "Transactions rolled back by the broker after their last check went unanswered.",
                &self.transactions.timed_out,
            ),
            (
                "broker_transaction_checks_total",
                "Checks of open transactions offered to their producer groups.",
                &self.transactions.checks,
            ),
            (
                "broker_producer_table_full_total",
                "Sends refused because the idempotent-producer table was full (new producer ids wait until one expires).",
                &self.producer_table_full_total,
            ),
        ];
        for (name, help, value) in counters {
            write_header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }

        let name = "broker_rejected_requests_total";
        write_header(
            &mut out,
            name,
            "Requests answered with an error, by the error's code.",
            "counter",
        );
        for (i, counter) in self.rejected_by_code.iter().enumerate() {
            let code = ErrorCode::ALL.get(i).map_or(UNKNOWN_CODE, |c| c.word());
            let _ = writeln!(
                out,
                "{name}{{code=\"{code}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }

        self.render_topics(&mut out);

        self.send_duration.render(
            &mut out,
            "broker_send_duration_seconds",
            "Time to answer a send request (commit by a quorum and apply included).",
        );
        self.pull_duration.render(
            &mut out,
            "broker_pull_duration_seconds",
            "Time to answer a pull request, long-poll wait included.",
        );
        self.timer_lag.render(
            &mut out,
            "broker_timer_lag_seconds",
            "From a timer message's due time until it is stored in its topic (runs this node led).",
        );
        for (name, help, histogram) in histograms {
            histogram.render(&mut out, name, help);
        }
        for family in gauges {
            write_header(&mut out, family.name, family.help, "gauge");
            for (labels, value) in &family.series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{} {value}", family.name);
                } else {
                    let _ = writeln!(out, "{}{{{labels}}} {value}", family.name);
                }
            }
        }
        out
    }

    fn render_topics(&self, out: &mut String) {
        let topics: Vec<(String, Arc<TopicCounters>)> = {
            let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<_> = topics
                .iter()
                .map(|(name, c)| (escape_label(name), Arc::clone(c)))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        type Pick = fn(&TopicCounters) -> &AtomicU64;
        let families: [(&str, &str, Pick); 4] = [
            (
                "broker_topic_messages_in_total",
                "Messages stored by sends this node led, per topic.",
                |c| &c.messages_in,
            ),
            (
                "broker_topic_bytes_in_total",
                "Message body bytes stored by sends this node led, per topic.",
                |c| &c.bytes_in,
            ),
            (
                "broker_topic_messages_out_total",
                "Messages returned by pulls from this node, per topic.",
                |c| &c.messages_out,
            ),
            (
                "broker_topic_bytes_out_total",
                "Message body bytes returned by pulls from this node, per topic.",
                |c| &c.bytes_out,
            ),
        ];
        for (name, help, pick) in families {
            write_header(out, name, help, "counter");
            for (topic, counters) in &topics {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{topic}\"}} {}",
                    pick(counters).load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = Histogram::new(&[0.001, 0.01, 0.1]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        assert!(out.contains("x_seconds_sum 1.0105\n"), "{out}");
    }

    #[test]
    fn topics_beyond_the_cap_share_one_series() {
        let m = Metrics::default();
        for i in 0..MAX_TOPIC_SERIES + 5 {
            m.record_in(&format!("t{i}"), 1, 1);
        }
        let other = m.topic(OTHER_TOPIC);
        assert_eq!(other.messages_in.load(Ordering::Relaxed), 5);
        // A topic seen before the cap keeps its own series.
        m.record_in("t0", 1, 1);
        assert_eq!(m.topic("t0").messages_in.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
