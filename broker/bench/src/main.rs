//! `broker-bench`: a load tool for a broker cluster, on the client library.
//!
//! * `produce` — `producers` tasks each keep `in-flight` send requests outstanding,
//!   each a batch of `batch` messages of `size` body bytes, for `duration` after a
//!   `warmup`. Prints acked messages/s, payload MB/s (10^6 bytes), per-request latency
//!   percentiles (an HDR histogram in microseconds) and errors by kind; writes a JSON
//!   report.
//! * `consume` — pulls every queue of a topic with long polling, from its earliest
//!   (or latest) offset, for a duration or until every queue is empty; reports
//!   messages/s, MB/s, end-to-end latency (receive time minus the send time the
//!   producer put in the `bench_send_us` property), and checks what it read:
//!   duplicates and gaps per (`producer_id`, `sequence`), offsets that skip. With
//!   `--commit-group G` each pull that returned messages is followed by a commit of
//!   G's offset of that queue (`PUT /v1/groups/G/offsets/...`) before the next pull,
//!   so the run measures pull + commit.
//! * `receive` — lease-based consumption (shared/API.md "Receive and ack"):
//!   `consumers` tasks each receive up to `max-messages` messages of the topic for
//!   the consumer group `--group`, leased for `--invisible`, then ack all of them in
//!   one request, for a duration or until a receive finds nothing after its wait.
//!   Reports messages/s, MB/s and end-to-end latency as `consume` does, receive and
//!   ack request latency, the ack statuses (`OK`, `EXPIRED`, `INVALID`), and checks:
//!   duplicates (a first delivery of a message already received), redeliveries
//!   (`delivery_attempt` > 1), messages received again after an `OK` ack, gaps.
//!   `--no-ack` leaves every message leased (to see what a broker holding many
//!   leases costs).
//!
//! With `--batching`, each producer task is one [`BatchingProducer`] instead and
//! `in-flight` counts messages: each is sent alone by the caller, and the batching
//! producer packs those waiting for a free request into one request, as an
//! application with many messages in flight would use it.
//!
//! Every progress interval (every second when progress lines are off) each mode
//! samples a timeline point: operations per second in the interval, its failed
//! requests, and the p50 / p99 / max latency of what completed in it (an interval
//! histogram the sampler swaps out at each tick, see [`timeline`]). The report's
//! `timeline` holds the points, and an SVG chart of them ([`chart`]: throughput
//! above, latency below) is written beside the report.
//!
//! Each in-flight slot ("lane") of a producer is its own idempotent
//! [`Producer`] (own `producer_id`, sequential sequences): the broker remembers only
//! the last 256 sequences per producer id, which one id shared by many lanes of large
//! batches would outrun. Failures never end a run: they are counted by kind
//! (`UNAVAILABLE`, `NOT_LEADER`, `connect`, `timeout`, …) and the lane carries on.

mod chart;
mod consume;
mod ledger;
mod produce;
mod receive;
mod timeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use broker_client::{BrokerClient, ClientOptions, ReadPreference};
use broker_proto::receive::{
    DEFAULT_RECEIVE_MESSAGES, MAX_INVISIBLE_MS, MAX_RECEIVE_MESSAGES, MAX_RECEIVE_WAIT_MS,
    MIN_INVISIBLE_MS,
};
use broker_proto::units::{parse_bytes, parse_duration};

use crate::chart::ChartInfo;
use crate::timeline::Timeline;

/// The load generator shares the cores with the brokers it measures: glibc's
/// allocator cost it a fifth of its CPU (free-list upkeep under many small
/// allocations), mimalloc far less — as in the broker itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The message property carrying the send time, microseconds since the Unix epoch.
const SEND_TIME_PROPERTY: &str = "bench_send_us";
/// Tag on every bench message.
const BENCH_TAG: &str = "bench";
/// Highest latency the histograms hold: one hour in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Wait after an error before a lane or queue tries again, so a down cluster is not
/// hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bytes per MB in the reports.
const MB: f64 = 1_000_000.0;

#[derive(Parser, Debug)]
#[command(
    name = "broker-bench",
    version,
    about = "Load tool: produce to, consume from or receive from a broker cluster and report throughput and latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Send messages as fast as `producers` × `in-flight` allows.
    Produce(ProduceArgs),
    /// Pull every queue of a topic and measure end-to-end latency.
    Consume(ConsumeArgs),
    /// Receive leased messages of a topic for a consumer group and ack them.
    Receive(ReceiveArgs),
}

#[derive(Args, Debug, Clone)]
struct Connection {
    /// A node's base URL (repeat, or comma-separate, for more nodes).
    #[arg(long = "url", required = true, value_delimiter = ',')]
    urls: Vec<String>,
    /// Limit on one request (a pull adds its wait).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Limit on opening one connection.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Bearer token of a secured cluster (`scripts/cluster.sh token`); prefer the
    /// environment variable, a command line is visible to every local user.
    #[arg(long, env = "MQ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate of a TLS cluster (`scripts/cluster.sh start --tls` writes
    /// DIR/tls/ca.pem), for `https://` URLs.
    #[arg(long, env = "MQ_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to send to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Independent producer tasks.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Requests each producer keeps outstanding.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Messages per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Send through the client's `BatchingProducer` (one per producer task):
    /// `--in-flight` then counts messages, each its own single-message send, and up
    /// to `--max-requests` requests carry whichever messages are waiting (at most
    /// `--batch-max` each). Latency is then per message, from its send call to its
    /// acknowledgement.
    #[arg(long)]
    batching: bool,
    /// With `--batching`: requests each producer keeps outstanding.
    #[arg(long, default_value_t = 2)]
    max_requests: usize,
    /// With `--batching`: most messages in one request.
    #[arg(long, default_value_t = 256)]
    batch_max: usize,
    /// Body bytes per message (e.g. 1024, 4KiB).
    #[arg(long, default_value = "1024", value_parser = parse_bytes)]
    size: u64,
    /// How long to measure.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Create (or update) the topic with `--queues` queues before sending.
    #[arg(long)]
    create_topic: bool,
    /// Read and write queues of a topic made by `--create-topic`.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Stamp messages with producer_id + sequence (idempotent sends).
    #[arg(long = "producer-id", value_enum, default_value = "on")]
    producer_id: OnOff,
    /// Also stop once this many payload bytes are acknowledged (warmup included),
    /// e.g. to build a backlog of a known size.
    #[arg(long, value_parser = parse_bytes)]
    bytes: Option<u64>,
    /// Further attempts of a failed send (retryable errors only).
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Wait before the first retry, doubled for each further one (capped at 2 s). A
    /// leader election takes about a second: ride it out with e.g. `--retries 5`.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    retry_backoff: Duration,
    /// Print a progress line this often (0 for none).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// Write the JSON report here (with the run's `timeline`), and an SVG chart of
    /// throughput and latency over the run beside it: the same path with the
    /// extension `.svg` (report.json → report.svg), unless `--chart` names another.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the SVG chart here instead (also without `--report`).
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum StartFrom {
    /// Each queue's min offset: everything stored.
    Earliest,
    /// Each queue's max offset when the run starts: only new messages.
    Latest,
}

/// The form of a pull's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum PullFormat {
    /// `application/vnd.broker.pull-v1` (the client's default).
    Binary,
    /// JSON, as curl and most HTTP clients get it.
    Json,
}

#[derive(Args, Debug, Clone)]
struct ConsumeArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to read.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Stop after this long (default: when every queue is empty).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop each queue when a pull finds nothing new after waiting `--max-wait`
    /// (the default without `--duration`; with it, whichever comes first).
    #[arg(long)]
    until_empty: bool,
    /// Where to start in each queue.
    #[arg(long, value_enum, default_value = "earliest")]
    from: StartFrom,
    /// Messages per pull (1..=1024).
    #[arg(long, default_value_t = 256)]
    max_messages: u32,
    /// The form pulls answer in.
    #[arg(long, value_enum, default_value = "binary")]
    pull_format: PullFormat,
    /// Long-polling wait of each pull.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_wait: Duration,
    /// After each pull that returned messages, commit this consumer group's offset
    /// of the queue (the pull's `next_offset`) before pulling again. The run still
    /// starts at `--from`, not at the group's committed offsets.
    #[arg(long, value_name = "GROUP")]
    commit_group: Option<String>,
    /// Print a progress line this often (0 for none).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// Write the JSON report here (with the run's `timeline`), and an SVG chart of
    /// throughput and latency over the run beside it: the same path with the
    /// extension `.svg` (report.json → report.svg), unless `--chart` names another.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the SVG chart here instead (also without `--report`).
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct ReceiveArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to receive from.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Consumer group the leases and acks belong to.
    #[arg(long, default_value = "bench-receive")]
    group: String,
    /// Receiving tasks, each one receive (then its ack) at a time.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Messages per receive (1..=256).
    #[arg(long, default_value_t = DEFAULT_RECEIVE_MESSAGES)]
    max_messages: usize,
    /// How long each received message stays leased (1s..=12h).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    invisible: Duration,
    /// How long a receive may wait while nothing is deliverable (0..=30s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_wait: Duration,
    /// Receive in FIFO mode: a queue's messages in order, one leased run at a time.
    #[arg(long)]
    fifo: bool,
    /// Stop after this long (default: when a receive finds nothing).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop each consumer when a receive answers nothing after waiting `--max-wait`
    /// (the default without `--duration`; with it, whichever comes first).
    #[arg(long)]
    until_empty: bool,
    /// Also stop once this many messages were received (the receives then in
    /// flight still count: up to `consumers` × `max-messages` more).
    #[arg(long)]
    messages: Option<u64>,
    /// Never ack: every received message stays leased until its lease runs out.
    #[arg(long)]
    no_ack: bool,
    /// Print a progress line this often (0 for none).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// Write the JSON report here (with the run's `timeline`), and an SVG chart of
    /// throughput and latency over the run beside it: the same path with the
    /// extension `.svg` (report.json → report.svg), unless `--chart` names another.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the SVG chart here instead (also without `--report`).
    #[arg(long)]
    chart: Option<PathBuf>,
}

impl ReceiveArgs {
    /// Checks the limits of shared/API.md before the first request.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.consumers > 0, "--consumers must be at least 1");
        anyhow::ensure!(
            (1..=MAX_RECEIVE_MESSAGES).contains(&self.max_messages),
            "--max-messages must be in 1..={MAX_RECEIVE_MESSAGES}"
        );
        anyhow::ensure!(
            (MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&self.invisible_ms()),
            "--invisible must be in {MIN_INVISIBLE_MS}ms..={MAX_INVISIBLE_MS}ms"
        );
        anyhow::ensure!(
            self.max_wait_ms() <= MAX_RECEIVE_WAIT_MS,
            "--max-wait must be at most {MAX_RECEIVE_WAIT_MS}ms"
        );
        Ok(())
    }

    fn invisible_ms(&self) -> u64 {
        u64::try_from(self.invisible.as_millis()).unwrap_or(u64::MAX)
    }

    fn max_wait_ms(&self) -> u64 {
        u64::try_from(self.max_wait.as_millis()).unwrap_or(u64::MAX)
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("broker-bench: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Mode::Produce(args) => produce::produce(args).await,
            Mode::Consume(args) => consume::consume(args).await,
            Mode::Receive(args) => receive::receive(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("broker-bench: {e:#}");
        std::process::exit(1);
    }
}

fn client(connection: &Connection) -> anyhow::Result<BrokerClient> {
    client_with(connection, true)
}

/// [`client`], asking pulls for the binary form or not.
fn client_with(connection: &Connection, binary_pulls: bool) -> anyhow::Result<BrokerClient> {
    let options = ClientOptions {
        binary_pulls,
        request_timeout: connection.request_timeout,
        connect_timeout: connection.connect_timeout,
        read_preference: ReadPreference::Sticky,
        token: connection.token.clone().filter(|t| !t.is_empty()),
        ca_file: connection.ca_file.clone(),
        ..ClientOptions::default()
    };
    BrokerClient::new(connection.urls.clone(), options).context("building the client")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("1..=1h at 3 significant digits is a valid histogram range")
}

/// Percentiles of a microsecond histogram, in milliseconds.
fn latency_json(histogram: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if histogram.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": histogram.len(),
        "mean": histogram.mean() / 1000.0,
        "p50": ms(histogram.value_at_quantile(0.50)),
        "p90": ms(histogram.value_at_quantile(0.90)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
    })
}

fn latency_line(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".into();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms  (mean {:.3} ms, {} samples)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
        histogram.mean() / 1000.0,
        histogram.len()
    )
}

/// p50 and p99 of a microsecond histogram, for the chart's result line.
fn latency_summary(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no latency samples".into();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.3} ms, p99 {:.3} ms", ms(0.5), ms(0.99))
}

fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn merge_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind).or_default() += n;
    }
}

/// "1 URL", "3 URLs": for the chart's title.
fn url_count(urls: &[String]) -> String {
    match urls.len() {
        1 => "1 URL".into(),
        n => format!("{n} URLs"),
    }
}

/// Where the chart goes: `--chart`, else beside the report with the extension
/// `.svg` (never the report's own path).
fn chart_path(report: Option<&Path>, chart: Option<&Path>) -> Option<PathBuf> {
    if let Some(chart) = chart {
        return Some(chart.to_path_buf());
    }
    let report = report?;
    let beside = report.with_extension("svg");
    if beside != report {
        return Some(beside);
    }
    let mut name = report.as_os_str().to_owned();
    name.push(".svg");
    Some(PathBuf::from(name))
}

/// Writes the JSON report (`report` with the timeline added) to `report_path` and
/// the chart of the timeline to [`chart_path`] (from `--chart`, `chart_flag`), if
/// any, and prints their paths.
fn write_report(
    report_path: Option<&Path>,
    chart_flag: Option<&Path>,
    mut report: Value,
    timeline: &Timeline,
    info: &ChartInfo,
) -> anyhow::Result<()> {
    if let Some(path) = report_path {
        if let Some(fields) = report.as_object_mut() {
            fields.insert("timeline".into(), timeline.json());
            fields.insert("timeline_latency".into(), timeline.latency.key().into());
        }
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report:    {}", path.display());
    }
    if let Some(path) = chart_path(report_path, chart_flag) {
        std::fs::write(&path, chart::svg(info, timeline))
            .with_context(|| format!("writing the chart to {}", path.display()))?;
        println!("chart:     {}", path.display());
    }
    Ok(())
}

/// The end of a run: set by the duration timer or Ctrl-C. Work completing after it
/// is not measured.
#[derive(Default)]
struct StopSignal {
    stopped: AtomicBool,
    at: Mutex<Option<Instant>>,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        self.notify.notify_waiters();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Waits until stopped.
    async fn stopped(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check: a stop in between still wakes it.
        notified.as_mut().enable();
        if !self.is_stopped() {
            notified.await;
        }
    }

    fn at(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops `stop` after `after` or on Ctrl-C, whichever is first.
fn spawn_stopper(stop: Arc<StopSignal>, after: Option<Duration>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let timer = async {
            match after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = timer => {}
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted: finishing the run"),
        }
        stop.stop();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{LatencyKind, TimelinePoint};

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "broker-bench",
            "produce",
            "--url",
            "http://a:1,http://b:2",
            "--url",
            "http://c:3",
            "--size",
            "1KiB",
            "--duration",
            "2s",
            "--producer-id",
            "off",
        ])
        .expect("valid flags");
        let Mode::Produce(args) = cli.command else {
            panic!("produce expected");
        };
        assert_eq!(args.connection.urls.len(), 3);
        assert_eq!(args.size, 1024);
        assert_eq!(args.duration, Duration::from_secs(2));
        assert_eq!(args.producer_id, OnOff::Off);
        assert!(
            Cli::try_parse_from(["broker-bench", "consume"]).is_err(),
            "--url required"
        );
    }

    #[test]
    fn receive_flags_default_to_the_contract() {
        let cli = Cli::try_parse_from(["broker-bench", "receive", "--url", "http://a:1"])
            .expect("valid flags");
        let Mode::Receive(args) = cli.command else {
            panic!("receive expected");
        };
        assert_eq!(args.group, "bench-receive");
        assert_eq!(args.consumers, 4);
        assert_eq!(args.max_messages, DEFAULT_RECEIVE_MESSAGES);
        assert_eq!(
            args.invisible_ms(),
            broker_proto::receive::DEFAULT_INVISIBLE_MS
        );
        assert_eq!(args.max_wait, Duration::from_secs(1));
        assert!(!args.no_ack);
        args.validate().expect("the defaults are in range");

        let cli = Cli::try_parse_from([
            "broker-bench",
            "receive",
            "--url",
            "http://a:1",
            "--invisible",
            "12h",
            "--max-messages",
            "256",
            "--no-ack",
            "--messages",
            "250000",
        ])
        .expect("valid flags");
        let Mode::Receive(args) = cli.command else {
            panic!("receive expected");
        };
        assert_eq!(args.invisible_ms(), MAX_INVISIBLE_MS);
        assert_eq!(args.messages, Some(250_000));
        assert!(args.no_ack);
        args.validate().expect("12 h and 256 are the limits");
        for (flag, value) in [
            ("--max-messages", "257"),
            ("--max-messages", "0"),
            ("--invisible", "999ms"),
            ("--invisible", "13h"),
            ("--max-wait", "31s"),
            ("--consumers", "0"),
        ] {
            let cli = Cli::try_parse_from(["broker-bench", "receive", "--url", "u", flag, value])
                .expect("parses");
            let Mode::Receive(args) = cli.command else {
                panic!("receive expected");
            };
            assert!(args.validate().is_err(), "{flag} {value} is out of range");
        }
    }

    #[test]
    fn the_chart_goes_beside_the_report() {
        let path = |p: &str| Some(PathBuf::from(p));
        let chart = |report: Option<&str>, chart: Option<&str>| {
            chart_path(report.map(Path::new), chart.map(Path::new))
        };
        assert_eq!(
            chart(Some("/tmp/b/report.json"), None),
            path("/tmp/b/report.svg")
        );
        assert_eq!(chart(Some("report"), None), path("report.svg"));
        assert_eq!(
            chart(Some("r.svg"), None),
            path("r.svg.svg"),
            "not over the report"
        );
        assert_eq!(chart(Some("r.json"), Some("c.svg")), path("c.svg"));
        assert_eq!(chart(None, Some("c.svg")), path("c.svg"));
        assert_eq!(chart(None, None), None);

        let cli = Cli::try_parse_from([
            "broker-bench",
            "receive",
            "--url",
            "u",
            "--report",
            "r.json",
            "--chart",
            "c.svg",
        ])
        .expect("valid flags");
        let Mode::Receive(args) = cli.command else {
            panic!("receive expected");
        };
        assert_eq!((args.report, args.chart), (path("r.json"), path("c.svg")));
    }

    #[test]
    fn the_report_holds_the_timeline_and_the_chart_is_beside_it() {
        let dir = std::env::temp_dir().join(format!("broker-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let report_path = dir.join("report.json");
        let point = |t_s: f64, errors: u64, p50: Option<f64>| TimelinePoint {
            t_s,
            ops_per_s: 1000.0 * t_s,
            errors,
            p50_ms: p50,
            p99_ms: p50.map(|p| p * 2.0),
            max_ms: p50.map(|p| p * 3.0),
        };
        let timeline = Timeline {
            latency: LatencyKind::Request,
            points: vec![point(1.0, 0, Some(1.5)), point(2.0, 3, None)],
        };
        let info = ChartInfo {
            title: "broker-bench produce: topic t".into(),
            params: "1 URL, 2 producers x 8 in flight".into(),
            result: String::new(),
            ops: "acked msgs/s",
            warmup_s: 0.5,
        };
        let report = json!({
            "mode": "produce",
            "msgs_per_s": 1500.0,
            "latency_ms": {"count": 2, "p50": 1.5},
        });
        write_report(Some(&report_path), None, report, &timeline, &info).expect("written");

        let text = std::fs::read_to_string(&report_path).expect("the report");
        let report: Value = serde_json::from_str(&text).expect("JSON");
        // The fields scripts read are as they were.
        assert_eq!(report["mode"], "produce");
        assert_eq!(report["msgs_per_s"], json!(1500.0));
        assert_eq!(report["latency_ms"]["p50"], json!(1.5));
        assert_eq!(report["timeline_latency"], "request");
        let points = report["timeline"].as_array().expect("a timeline array");
        assert_eq!(points.len(), 2);
        assert_eq!(
            points[0],
            json!({"t_s": 1.0, "ops_per_s": 1000.0, "errors": 0, "p50_ms": 1.5, "p99_ms": 3.0, "max_ms": 4.5})
        );
        assert_eq!(points[1]["errors"], 3);
        assert_eq!(points[1]["p99_ms"], Value::Null);

        let svg = std::fs::read_to_string(dir.join("report.svg")).expect("the chart beside it");
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("broker-bench produce: topic t"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn consume_commits_only_when_asked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["broker-bench", "consume", "--url", "http://a:1"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("valid flags").command {
                Mode::Consume(args) => args,
                _ => panic!("consume expected"),
            }
        };
        assert_eq!(parse(&[]).commit_group, None);
        assert_eq!(
            parse(&["--commit-group", "g1"]).commit_group.as_deref(),
            Some("g1")
        );
    }
}
