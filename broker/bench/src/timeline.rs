//! The run's timeline: every progress interval (every [`DEFAULT_SAMPLE`] when
//! progress lines are off) the sampler records the operations completed in the
//! interval, the errors, and the percentiles of the latencies recorded in it, for
//! the report's `timeline` and the SVG chart (see [`crate::chart`]).
//!
//! Latency per interval: the workers record each latency once more, in an
//! [`IntervalLatency`] (one short lock per request, or per batch of messages); at
//! each tick the sampler swaps an empty histogram in and reads the interval's out,
//! so the percentiles of a point are those of its interval only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;

use crate::{new_histogram, StopSignal};

/// How often the timeline is sampled when progress lines are off.
pub(crate) const DEFAULT_SAMPLE: Duration = Duration::from_secs(1);

/// What the latency of a timeline measures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum LatencyKind {
    /// A request, from its send to its answer.
    Request,
    /// One message through a batching producer, from its send call to its ack.
    Message,
    /// A message's receive time minus the send time its producer stamped.
    EndToEnd,
}

impl LatencyKind {
    /// The report's `timeline_latency`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Message => "message",
            Self::EndToEnd => "e2e",
        }
    }

    /// The chart's and the progress line's name for it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Request => "request latency",
            Self::Message => "latency per message",
            Self::EndToEnd => "end-to-end latency",
        }
    }
}

/// Latencies (microseconds) recorded since the sampler's last tick.
pub(crate) struct IntervalLatency {
    current: Mutex<Histogram<u64>>,
}

impl IntervalLatency {
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(new_histogram()),
        }
    }

    /// Records one latency of the current interval.
    pub(crate) fn record(&self, us: u64) {
        self.lock().saturating_record(us.max(1));
    }

    /// The current interval's histogram, to record a batch under one lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Histogram<u64>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the interval: empties `spare` (outside the lock), swaps it in, and
    /// leaves the ended interval's latencies in `spare`.
    pub(crate) fn swap(&self, spare: &mut Histogram<u64>) {
        spare.reset();
        std::mem::swap(&mut *self.lock(), spare);
    }
}

/// One interval of the run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TimelinePoint {
    /// Seconds since the run started, at the end of the interval.
    pub(crate) t_s: f64,
    /// Operations (messages acked, received) completed in the interval, per second.
    pub(crate) ops_per_s: f64,
    /// Failed requests in the interval.
    pub(crate) errors: u64,
    /// Percentiles of the latencies recorded in the interval, in milliseconds;
    /// `None` when it recorded none.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

impl TimelinePoint {
    /// The point of an interval of `interval_s` ending `t_s` after the start.
    fn new(t_s: f64, interval_s: f64, ops: u64, errors: u64, latency: &Histogram<u64>) -> Self {
        let ms = |us: u64| (!latency.is_empty()).then_some(us as f64 / 1000.0);
        Self {
            t_s,
            ops_per_s: ops as f64 / interval_s.max(f64::EPSILON),
            errors,
            p50_ms: ms(latency.value_at_quantile(0.50)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            max_ms: ms(latency.max()),
        }
    }

    fn json(&self) -> Value {
        json!({
            "t_s": round(self.t_s, 3),
            "ops_per_s": round(self.ops_per_s, 1),
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        })
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A run's timeline: its points and what their latency measures.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Timeline {
    pub(crate) latency: LatencyKind,
    pub(crate) points: Vec<TimelinePoint>,
}

impl Timeline {
    /// The report's `timeline` array.
    pub(crate) fn json(&self) -> Value {
        Value::Array(self.points.iter().map(TimelinePoint::json).collect())
    }
}

/// Counter values and latencies at the last tick, turned into a point per tick.
struct Meter {
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    latency: Arc<IntervalLatency>,
    started: Instant,
    last: (u64, u64, Instant),
    spare: Histogram<u64>,
}

impl Meter {
    fn new(
        done: Arc<AtomicU64>,
        failed: Arc<AtomicU64>,
        latency: Arc<IntervalLatency>,
        started: Instant,
    ) -> Self {
        Self {
            last: (
                done.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                started,
            ),
            done,
            failed,
            latency,
            started,
            spare: new_histogram(),
        }
    }

    /// Ends the interval at `now`: its point.
    fn sample(&mut self, now: Instant) -> TimelinePoint {
        let (done, failed) = (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        self.latency.swap(&mut self.spare);
        let (last_done, last_failed, last_at) = self.last;
        self.last = (done, failed, now);
        TimelinePoint::new(
            now.saturating_duration_since(self.started).as_secs_f64(),
            now.saturating_duration_since(last_at).as_secs_f64(),
            done.saturating_sub(last_done),
            failed.saturating_sub(last_failed),
            &self.spare,
        )
    }

    fn since_last(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last.2)
    }
}

/// Samples the timeline and prints the progress lines of a run, until it stops.
pub(crate) struct Sampler {
    /// Progress line interval, also the sampling interval; zero: no lines, a
    /// sample every [`DEFAULT_SAMPLE`].
    pub(crate) progress: Duration,
    pub(crate) started: Instant,
    /// Operations completed and requests failed since the start.
    pub(crate) done: Arc<AtomicU64>,
    pub(crate) failed: Arc<AtomicU64>,
    pub(crate) latency: Arc<IntervalLatency>,
    pub(crate) kind: LatencyKind,
    pub(crate) stop: Arc<StopSignal>,
    /// The progress line's name of the operations, e.g. `acked`.
    pub(crate) what: &'static str,
}

impl Sampler {
    /// Runs until `stop`; the task answers the timeline, whose last point is the
    /// interval cut short by the stop (unless it was under a quarter interval).
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<Timeline> {
        tokio::spawn(self.run())
    }

    async fn run(self) -> Timeline {
        let print = !self.progress.is_zero();
        let every = if print { self.progress } else { DEFAULT_SAMPLE };
        let mut meter = Meter::new(
            Arc::clone(&self.done),
            Arc::clone(&self.failed),
            Arc::clone(&self.latency),
            self.started,
        );
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::from_std(self.started) + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut points = Vec::new();
        loop {
            let stopped = tokio::select! {
                _ = ticks.tick() => false,
                () = self.stop.stopped() => true,
            };
            let now = Instant::now();
            if stopped && !points.is_empty() && meter.since_last(now) < every / 4 {
                // Its rate would be mostly noise.
                break;
            }
            let point = meter.sample(now);
            if print && !stopped {
                eprintln!("{}", self.line(&point));
            }
            points.push(point);
            if stopped {
                break;
            }
        }
        Timeline {
            latency: self.kind,
            points,
        }
    }

    fn line(&self, point: &TimelinePoint) -> String {
        let latency = match (point.p50_ms, point.p99_ms) {
            (Some(p50), Some(p99)) => {
                format!(", {} p50 {p50:.2} ms p99 {p99:.2} ms", self.kind.label())
            }
            _ => String::new(),
        };
        format!(
            "[{:>6.1}s] {} {} ({:.0}/s), errors {}{latency}",
            point.t_s,
            self.what,
            self.done.load(Ordering::Relaxed),
            point.ops_per_s,
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a latency is `ms` to within the histogram's precision.
    fn near(latency: Option<f64>, ms: f64) -> bool {
        latency.is_some_and(|l| (l - ms).abs() <= ms / 500.0)
    }

    fn counters() -> (Arc<AtomicU64>, Arc<AtomicU64>, Arc<IntervalLatency>) {
        (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(IntervalLatency::new()),
        )
    }

    #[test]
    fn the_interval_histogram_resets_each_tick() {
        let (done, failed, latency) = counters();
        let started = Instant::now();
        let mut meter = Meter::new(
            Arc::clone(&done),
            Arc::clone(&failed),
            Arc::clone(&latency),
            started,
        );
        for us in [1_000, 2_000, 100_000] {
            latency.record(us);
        }
        done.fetch_add(50, Ordering::Relaxed);
        failed.fetch_add(2, Ordering::Relaxed);
        let first = meter.sample(started + Duration::from_millis(500));
        assert_eq!(first.t_s, 0.5);
        assert_eq!(first.ops_per_s, 100.0);
        assert_eq!(first.errors, 2);
        assert!(near(first.p50_ms, 2.0), "{first:?}");
        assert!(near(first.max_ms, 100.0), "{first:?}");

        // Recorded after the tick: only these show in the next point.
        {
            let mut interval = latency.lock();
            interval.saturating_record(5_000);
            interval.saturating_record(5_000);
        }
        done.fetch_add(10, Ordering::Relaxed);
        let second = meter.sample(started + Duration::from_secs(1));
        assert_eq!(second.ops_per_s, 20.0);
        assert_eq!(second.errors, 0);
        assert!(near(second.p50_ms, 5.0), "{second:?}");
        assert!(near(second.p99_ms, 5.0), "{second:?}");
        assert!(
            near(second.max_ms, 5.0),
            "the 100 ms of the first interval is gone: {second:?}"
        );

        // An interval without latencies has none.
        let third = meter.sample(started + Duration::from_secs(2));
        assert_eq!(
            (third.ops_per_s, third.p50_ms, third.max_ms),
            (0.0, None, None)
        );
        assert_eq!(third.json()["p50_ms"], Value::Null);
        let json = second.json();
        assert_eq!(json["t_s"], json!(1.0));
        assert_eq!(json["ops_per_s"], json!(20.0));
        assert!(near(json["p99_ms"].as_f64(), 5.0), "{json}");
    }

    #[tokio::test]
    async fn the_sampler_ticks_until_the_run_stops() {
        let (done, failed, latency) = counters();
        let stop = Arc::new(StopSignal::default());
        let sampler = Sampler {
            progress: Duration::from_millis(40),
            started: Instant::now(),
            done: Arc::clone(&done),
            failed,
            latency: Arc::clone(&latency),
            kind: LatencyKind::Request,
            stop: Arc::clone(&stop),
            what: "acked",
        }
        .spawn();
        for _ in 0..10 {
            done.fetch_add(4, Ordering::Relaxed);
            latency.record(3_000);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.stop();
        let timeline = tokio::time::timeout(Duration::from_secs(5), sampler)
            .await
            .expect("the sampler ends when the run stops")
            .expect("the sampler does not panic");
        assert_eq!(timeline.latency, LatencyKind::Request);
        assert!(timeline.points.len() >= 2, "{:?}", timeline.points);
        assert!(timeline.points.windows(2).all(|w| w[0].t_s < w[1].t_s));
        assert!(timeline.points.iter().any(|p| near(p.p50_ms, 3.0)));
        let sum: f64 = timeline
            .points
            .windows(2)
            .map(|w| w[1].ops_per_s * (w[1].t_s - w[0].t_s))
            .sum::<f64>()
            + timeline.points[0].ops_per_s * timeline.points[0].t_s;
        assert!(sum <= 40.5, "no operation counted twice: {sum}");
    }
}
