//! Counters the node keeps for `/metrics` (Prometheus text format).
//!
//! Plain atomics: every counter is bumped on a request path, and a lock or a metrics
//! registry there would cost more than the counting.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    pub messages_in_total: AtomicU64,
    pub bytes_in_total: AtomicU64,
    pub messages_out_total: AtomicU64,
    pub bytes_out_total: AtomicU64,
    pub send_requests_total: AtomicU64,
    pub pull_requests_total: AtomicU64,
    pub forwarded_requests_total: AtomicU64,
    pub rejected_requests_total: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders the counters, then the gauges the caller passes.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
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
                "broker_forwarded_requests_total",
                "Writes forwarded to the leader.",
                &self.forwarded_requests_total,
            ),
            (
                "broker_rejected_requests_total",
                "Requests answered with an error.",
                &self.rejected_requests_total,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
