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
//!   duplicates and gaps per (`producer_id`, `sequence`), offsets that skip.
//!
//! With `--batching`, each producer task is one [`BatchingProducer`] instead and
//! `in-flight` counts messages: each is sent alone by the caller, and the batching
//! producer packs those waiting for a free request into one request, as an
//! application with many messages in flight would use it.
//!
//! Each in-flight slot ("lane") of a producer is its own idempotent
//! [`Producer`] (own `producer_id`, sequential sequences): the broker remembers only
//! the last 256 sequences per producer id, which one id shared by many lanes of large
//! batches would outrun. Failures never end a run: they are counted by kind
//! (`UNAVAILABLE`, `NOT_LEADER`, `connect`, `timeout`, …) and the lane carries on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use broker_client::{
    BatchingOptions, BatchingProducer, BatchingStats, BrokerClient, ClientError, ClientOptions,
    Idempotence, Producer, ProducerOptions, ReadPreference, DEDUP_WINDOW,
};
use broker_proto::api::{MessageInput, MessageView, TopicRequest};
use broker_proto::units::{parse_bytes, parse_duration};

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
    about = "Load tool: produce to or consume from a broker cluster and report throughput and latency"
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
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum StartFrom {
    /// Each queue's min offset: everything stored.
    Earliest,
    /// Each queue's max offset when the run starts: only new messages.
    Latest,
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
    /// Long-polling wait of each pull.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_wait: Duration,
    /// Print a progress line this often (0 for none).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
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
            Mode::Produce(args) => produce(args).await,
            Mode::Consume(args) => consume(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("broker-bench: {e:#}");
        std::process::exit(1);
    }
}

fn client(connection: &Connection) -> anyhow::Result<BrokerClient> {
    let options = ClientOptions {
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

fn write_report(path: &Option<PathBuf>, report: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report:    {}", path.display());
    }
    Ok(())
}

/// The end of a run: set by the duration timer or Ctrl-C. Work completing after it
/// is not measured.
#[derive(Default)]
struct StopSignal {
    stopped: AtomicBool,
    at: Mutex<Option<Instant>>,
}

impl StopSignal {
    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
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

/// Prints a progress line every `every` from shared counters until stopped.
fn spawn_progress(
    every: Duration,
    started: Instant,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<StopSignal>,
    what: &'static str,
) -> Option<tokio::task::JoinHandle<()>> {
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut last = (0u64, Instant::now());
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        while !stop.is_stopped() {
            ticks.tick().await;
            let now = Instant::now();
            let count = done.load(Ordering::Relaxed);
            let rate = (count - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            eprintln!(
                "[{:>6.1}s] {what} {count} ({rate:.0}/s), errors {}",
                now.duration_since(started).as_secs_f64(),
                failed.load(Ordering::Relaxed)
            );
            last = (count, now);
        }
    }))
}

// ----------------------------------------------------------------------------------
// produce

/// What one producer task measured.
struct ProduceStats {
    latency_us: Histogram<u64>,
    acked_requests: u64,
    acked_messages: u64,
    /// Messages acked during the warmup or after the window closed.
    unmeasured_messages: u64,
    errors: BTreeMap<String, u64>,
    /// Failed requests that may nevertheless have been stored.
    failed_outcome_unknown: u64,
    retries: u64,
    /// With `--batching`: what the batching producers' requests carried.
    batching: BatchingStats,
}

impl ProduceStats {
    fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            acked_requests: 0,
            acked_messages: 0,
            unmeasured_messages: 0,
            errors: BTreeMap::new(),
            failed_outcome_unknown: 0,
            retries: 0,
            batching: BatchingStats::default(),
        }
    }

    fn merge(&mut self, other: ProduceStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.acked_requests += other.acked_requests;
        self.acked_messages += other.acked_messages;
        self.unmeasured_messages += other.unmeasured_messages;
        merge_counts(&mut self.errors, other.errors);
        self.failed_outcome_unknown += other.failed_outcome_unknown;
        self.retries += other.retries;
        self.batching.requests += other.batching.requests;
        self.batching.messages += other.batching.messages;
        self.batching.largest_batch = self
            .batching
            .largest_batch
            .max(other.batching.largest_batch);
        self.batching.split_batches += other.batching.split_batches;
        self.batching.retries += other.batching.retries;
    }
}

/// Shared by the producer tasks of a run.
struct ProduceRun {
    args: ProduceArgs,
    body: String,
    measure_from: Instant,
    stop: Arc<StopSignal>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ProduceRun {
    fn batch(&self) -> Vec<MessageInput> {
        let sent_us = now_us().to_string();
        (0..self.args.batch)
            .map(|_| self.message(sent_us.clone()))
            .collect()
    }

    fn message(&self, sent_us: String) -> MessageInput {
        MessageInput {
            body: Some(self.body.clone()),
            tags: Some(BENCH_TAG.into()),
            properties: BTreeMap::from([(SEND_TIME_PROPERTY.to_string(), sent_us)]),
            ..MessageInput::default()
        }
    }
}

/// How a producer task sends: `in_flight` lanes of batches, or single messages
/// through a batching producer.
enum Sender {
    Lanes(Vec<Producer>),
    Batching(BatchingProducer),
}

impl Sender {
    fn new(run: &ProduceRun, client: BrokerClient) -> Result<Self, ClientError> {
        let options = ProducerOptions {
            retries: run.args.retries,
            backoff_initial: run.args.retry_backoff,
            idempotence: match run.args.producer_id {
                OnOff::On => Idempotence::On,
                OnOff::Off => Idempotence::Off,
            },
            ..ProducerOptions::default()
        };
        if run.args.batching {
            let batching = BatchingOptions {
                max_requests: run.args.max_requests,
                max_batch_messages: run.args.batch_max,
                ..BatchingOptions::default()
            };
            return BatchingProducer::new(client, options, batching).map(Self::Batching);
        }
        Ok(Self::Lanes(
            (0..run.args.in_flight)
                .map(|_| Producer::new(client.clone(), options.clone()))
                .collect(),
        ))
    }

    /// Sends lane `lane`'s next batch (or message); answers how many were acked.
    async fn send(&self, run: &ProduceRun, lane: usize) -> Result<u64, ClientError> {
        let topic = run.args.topic.as_str();
        match self {
            Self::Lanes(lanes) => {
                let response = lanes[lane].send_messages(topic, run.batch()).await?;
                Ok(response.results.len() as u64)
            }
            Self::Batching(producer) => {
                let message = run.message(now_us().to_string());
                producer.send(topic, message).await.map(|_| 1)
            }
        }
    }

    fn retries(&self) -> u64 {
        match self {
            Self::Lanes(lanes) => lanes.iter().map(|p| p.stats().retries).sum(),
            Self::Batching(producer) => producer.stats().retries,
        }
    }
}

/// One producer: `in_flight` lanes (each its own [`Producer`], or each a message
/// at a time on one [`BatchingProducer`]), driven from one task.
async fn run_producer(run: Arc<ProduceRun>, client: BrokerClient) -> ProduceStats {
    let mut stats = ProduceStats::new();
    let sender = match Sender::new(&run, client) {
        Ok(sender) => sender,
        Err(error) => {
            *stats.errors.entry(error.to_string()).or_default() += 1;
            return stats;
        }
    };
    // A lane that failed pauses before its next send (in its own future: a pause
    // in this loop would hold up every other lane's answers and refills).
    let send = |lane: usize, pause: bool| {
        let sender = &sender;
        let run = &run;
        async move {
            if pause {
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            let started = Instant::now();
            let result = sender.send(run, lane).await;
            (lane, started, result)
        }
    };
    let mut pending = FuturesUnordered::new();
    for lane in 0..run.args.in_flight {
        pending.push(send(lane, false));
    }
    while let Some((lane, started, result)) = pending.next().await {
        let finished = Instant::now();
        let measured = finished >= run.measure_from && !run.stop.is_stopped();
        let failed = result.is_err();
        match result {
            Ok(messages) => {
                let acked = run.acked.fetch_add(messages, Ordering::Relaxed) + messages;
                if run
                    .args
                    .bytes
                    .is_some_and(|bytes| acked.saturating_mul(run.args.size) >= bytes)
                {
                    run.stop.stop();
                }
                if measured {
                    let us = u64::try_from(finished.duration_since(started).as_micros())
                        .unwrap_or(u64::MAX);
                    stats.latency_us.saturating_record(us.max(1));
                    stats.acked_requests += 1;
                    stats.acked_messages += messages;
                } else {
                    stats.unmeasured_messages += messages;
                }
            }
            Err(error) => {
                run.failed.fetch_add(1, Ordering::Relaxed);
                *stats.errors.entry(error.kind()).or_default() += 1;
                if error.is_outcome_unknown() {
                    stats.failed_outcome_unknown += 1;
                }
            }
        }
        if !run.stop.is_stopped() {
            pending.push(send(lane, failed));
        }
    }
    stats.retries = sender.retries();
    if let Sender::Batching(producer) = &sender {
        stats.batching = producer.stats();
    }
    stats
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        !args.batching || args.batch == 1,
        "--batching sends one message per call: leave --batch at 1 (use --batch-max)"
    );
    anyhow::ensure!(
        !args.batching || args.producer_id == OnOff::Off || args.batch_max as u64 <= DEDUP_WINDOW,
        "--batch-max is at most {DEDUP_WINDOW} with producer ids (the broker's dedup window)"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be positive");
    let client = client(&args.connection)?;
    if args.create_topic {
        let request = TopicRequest::with_queues(args.queues);
        let view = client
            .create_topic(&args.topic, &request)
            .await
            .with_context(|| format!("creating topic `{}`", args.topic))?;
        println!(
            "topic `{}`: {} write / {} read queues",
            view.topic, view.write_queue_nums, view.read_queue_nums
        );
    }
    if client.discover_leader().await.is_none() {
        eprintln!("warning: no node named a leader yet; sends will follow NOT_LEADER answers");
    }
    let size = usize::try_from(args.size).context("--size does not fit in memory")?;
    let started = Instant::now();
    let run = Arc::new(ProduceRun {
        body: "x".repeat(size),
        measure_from: started + args.warmup,
        stop: Arc::new(StopSignal::default()),
        acked: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        args,
    });
    let args = &run.args;
    println!(
        "produce: topic={} producers={} in-flight={} batch={} size={}B producer-id={:?} retries={} warmup={:?} duration={:?} leader={}",
        args.topic,
        args.producers,
        args.in_flight,
        if args.batching {
            format!("batching(max-requests={}, batch-max={})", args.max_requests, args.batch_max)
        } else {
            args.batch.to_string()
        },
        args.size,
        args.producer_id,
        args.retries,
        args.warmup,
        args.duration,
        client.leader().unwrap_or_else(|| "unknown".into())
    );
    let stopper = spawn_stopper(Arc::clone(&run.stop), Some(args.warmup + args.duration));
    let progress = spawn_progress(
        args.progress,
        started,
        Arc::clone(&run.acked),
        Arc::clone(&run.failed),
        Arc::clone(&run.stop),
        "acked",
    );
    let tasks: Vec<_> = (0..args.producers)
        .map(|_| tokio::spawn(run_producer(Arc::clone(&run), client.clone())))
        .collect();
    let mut total = ProduceStats::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => *total.errors.entry(format!("task failed: {e}")).or_default() += 1,
        }
    }
    let drained = Instant::now();
    stopper.abort();
    if let Some(progress) = progress {
        progress.abort();
    }
    let window_end = run.stop.at().unwrap_or(drained);
    let measured_s = window_end
        .saturating_duration_since(run.measure_from)
        .as_secs_f64();
    let payload_bytes = total.acked_messages * args.size;
    let msgs_per_s = total.acked_messages as f64 / measured_s.max(f64::EPSILON);
    let mb_per_s = payload_bytes as f64 / MB / measured_s.max(f64::EPSILON);
    let errors_total: u64 = total.errors.values().sum();
    println!(
        "acked:     {} msgs in {} {} over {measured_s:.2} s (+{} msgs in warmup/drain)",
        total.acked_messages,
        total.acked_requests,
        if args.batching {
            "send calls"
        } else {
            "requests"
        },
        total.unmeasured_messages
    );
    println!("rate:      {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s of payload");
    if args.batching {
        let b = &total.batching;
        println!(
            "batching:  {} requests carried {} msgs (mean {:.1}, largest {}, {} split), warmup included",
            b.requests,
            b.messages,
            b.messages as f64 / (b.requests.max(1)) as f64,
            b.largest_batch,
            b.split_batches
        );
        println!(
            "latency:   {} (per message)",
            latency_line(&total.latency_us)
        );
    } else {
        println!("latency:   {}", latency_line(&total.latency_us));
    }
    println!(
        "errors:    {} ({errors_total} failed requests, {} of them possibly stored; {} retries)",
        errors_line(&total.errors),
        total.failed_outcome_unknown,
        total.retries
    );
    println!(
        "drain:     {:.2} s after the window closed",
        drained.saturating_duration_since(window_end).as_secs_f64()
    );
    let report = json!({
        "mode": "produce",
        "config": {
            "urls": args.connection.urls,
            "token": args.connection.token.is_some(),
            "ca_file": args.connection.ca_file.is_some(),
            "topic": args.topic,
            "producers": args.producers,
            "in_flight": args.in_flight,
            "batch": args.batch,
            "batching": args.batching.then(|| json!({
                "max_requests": args.max_requests,
                "batch_max": args.batch_max,
            })),
            "size_bytes": args.size,
            "producer_id": args.producer_id == OnOff::On,
            "retries": args.retries,
            "retry_backoff_ms": args.retry_backoff.as_millis() as u64,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": args.duration.as_secs_f64(),
            "request_timeout_s": args.connection.request_timeout.as_secs_f64(),
        },
        "leader": client.leader(),
        "measured_s": measured_s,
        "acked_messages": total.acked_messages,
        "acked_requests": total.acked_requests,
        "acked_payload_bytes": payload_bytes,
        "unmeasured_acked_messages": total.unmeasured_messages,
        "msgs_per_s": msgs_per_s,
        "mb_per_s": mb_per_s,
        "latency_ms": latency_json(&total.latency_us),
        // With --batching, "requests" are send calls: one message each.
        "failed_requests": errors_total,
        "errors": total.errors,
        "failed_outcome_unknown": total.failed_outcome_unknown,
        "retries": total.retries,
        "batching": args.batching.then(|| json!({
            "requests": total.batching.requests,
            "messages": total.batching.messages,
            "largest_batch": total.batching.largest_batch,
            "split_batches": total.batching.split_batches,
        })),
    });
    write_report(&args.report, &report)
}

// ----------------------------------------------------------------------------------
// consume

/// Which sequences of which producers were read: duplicates and gaps.
#[derive(Default)]
struct SequenceLedger {
    /// producer_id → bit per sequence seen.
    seen: HashMap<String, Vec<u64>>,
    duplicates: u64,
}

impl SequenceLedger {
    fn record(&mut self, producer_id: &str, sequence: u64) {
        let Ok(index) = usize::try_from(sequence / 64) else {
            return;
        };
        let bits = self.seen.entry(producer_id.to_string()).or_default();
        if bits.len() <= index {
            bits.resize(index + 1, 0);
        }
        let mask = 1u64 << (sequence % 64);
        if bits[index] & mask != 0 {
            self.duplicates += 1;
        }
        bits[index] |= mask;
    }

    /// Sequences missing between each producer's lowest and highest sequence read.
    fn gaps(&self) -> u64 {
        self.seen
            .values()
            .map(|bits| {
                let first = bits.iter().position(|w| *w != 0);
                let last = bits.iter().rposition(|w| *w != 0);
                let (Some(first), Some(last)) = (first, last) else {
                    return 0;
                };
                let low = first as u64 * 64 + u64::from(bits[first].trailing_zeros());
                let high = last as u64 * 64 + 63 - u64::from(bits[last].leading_zeros());
                let set: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
                high - low + 1 - set
            })
            .sum()
    }
}

/// What one queue's reader measured.
struct QueueStats {
    queue_id: u32,
    start_offset: u64,
    next_offset: u64,
    messages: u64,
    payload_bytes: u64,
    e2e_us: Histogram<u64>,
    without_send_time: u64,
    /// A FOUND answer whose messages did not start at the requested offset or were
    /// not consecutive, or whose `next_offset` did not follow the last message.
    offset_anomalies: u64,
    /// Messages skipped because the offset fell below the queue's min (retention).
    skipped_too_small: u64,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    last_message_at: Option<Instant>,
}

struct ConsumeRun {
    args: ConsumeArgs,
    stop: Arc<StopSignal>,
    ledger: Mutex<SequenceLedger>,
    received: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

fn check_offsets(requested: u64, messages: &[MessageView], next_offset: u64) -> bool {
    let consecutive = messages
        .iter()
        .zip(requested..)
        .all(|(m, expected)| m.queue_offset == expected);
    let follows = messages
        .last()
        .is_none_or(|m| next_offset == m.queue_offset + 1);
    consecutive && follows
}

async fn read_queue(
    run: Arc<ConsumeRun>,
    client: BrokerClient,
    queue_id: u32,
    start_offset: u64,
) -> QueueStats {
    let args = &run.args;
    let until_empty = args.until_empty || args.duration.is_none();
    let max_wait_ms = u64::try_from(args.max_wait.as_millis()).unwrap_or(u64::MAX);
    let mut stats = QueueStats {
        queue_id,
        start_offset,
        next_offset: start_offset,
        messages: 0,
        payload_bytes: 0,
        e2e_us: new_histogram(),
        without_send_time: 0,
        offset_anomalies: 0,
        skipped_too_small: 0,
        statuses: BTreeMap::new(),
        errors: BTreeMap::new(),
        last_message_at: None,
    };
    while !run.stop.is_stopped() {
        let pulled = client
            .pull(
                &args.topic,
                queue_id,
                stats.next_offset,
                args.max_messages,
                max_wait_ms,
                None,
            )
            .await;
        let response = match pulled {
            Ok(response) => response,
            Err(error) => {
                run.failed.fetch_add(1, Ordering::Relaxed);
                *stats.errors.entry(error.kind()).or_default() += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let received_us = now_us();
        *stats.statuses.entry(response.status.clone()).or_default() += 1;
        match response.status.as_str() {
            "FOUND" => {
                if !check_offsets(stats.next_offset, &response.messages, response.next_offset) {
                    stats.offset_anomalies += 1;
                }
                let count = response.messages.len() as u64;
                stats.messages += count;
                run.received.fetch_add(count, Ordering::Relaxed);
                stats.last_message_at = Some(Instant::now());
                {
                    let mut ledger = run.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    for m in &response.messages {
                        if let (Some(id), Some(seq)) = (&m.producer_id, m.sequence) {
                            ledger.record(id, seq);
                        }
                    }
                }
                for m in &response.messages {
                    stats.payload_bytes += m
                        .body
                        .as_ref()
                        .or(m.body_base64.as_ref())
                        .map_or(0, |b| b.len() as u64);
                    match m
                        .properties
                        .get(SEND_TIME_PROPERTY)
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        Some(sent_us) => stats
                            .e2e_us
                            .saturating_record(received_us.saturating_sub(sent_us).max(1)),
                        None => stats.without_send_time += 1,
                    }
                }
                stats.next_offset = response.next_offset;
            }
            "NO_MATCHED_MSG" => stats.next_offset = response.next_offset,
            "NO_NEW_MSG" if until_empty => break,
            "NO_NEW_MSG" => {}
            "OFFSET_TOO_SMALL" => {
                stats.skipped_too_small += response.min_offset.saturating_sub(stats.next_offset);
                stats.next_offset = response.min_offset;
            }
            // Beyond the answering node's end (a lagging replica): wait, do not rewind.
            _ => tokio::time::sleep(ERROR_PAUSE).await,
        }
    }
    stats
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1024).contains(&args.max_messages),
        "--max-messages must be in 1..=1024"
    );
    let client = client(&args.connection)?;
    let queues = client
        .queues(&args.topic)
        .await
        .with_context(|| format!("listing the queues of `{}`", args.topic))?;
    let started = Instant::now();
    let run = Arc::new(ConsumeRun {
        stop: Arc::new(StopSignal::default()),
        ledger: Mutex::new(SequenceLedger::default()),
        received: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        args,
    });
    let args = &run.args;
    println!(
        "consume: topic={} queues={} from={:?} max-messages={} max-wait={:?} until={}",
        args.topic,
        queues.queues.len(),
        args.from,
        args.max_messages,
        args.max_wait,
        match args.duration {
            Some(d) if args.until_empty => format!("empty or {d:?}"),
            Some(d) => format!("{d:?}"),
            None => "empty".into(),
        }
    );
    let stopper = spawn_stopper(Arc::clone(&run.stop), args.duration);
    let progress = spawn_progress(
        args.progress,
        started,
        Arc::clone(&run.received),
        Arc::clone(&run.failed),
        Arc::clone(&run.stop),
        "received",
    );
    let tasks: Vec<_> = queues
        .queues
        .iter()
        .map(|q| {
            let start = match args.from {
                StartFrom::Earliest => q.min_offset,
                StartFrom::Latest => q.max_offset,
            };
            tokio::spawn(read_queue(
                Arc::clone(&run),
                client.clone(),
                q.queue_id,
                start,
            ))
        })
        .collect();
    let mut per_queue = Vec::new();
    let mut errors = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(stats) => per_queue.push(stats),
            Err(e) => *errors.entry(format!("task failed: {e}")).or_default() += 1,
        }
    }
    let finished = Instant::now();
    run.stop.stop();
    stopper.abort();
    if let Some(progress) = progress {
        progress.abort();
    }
    let mut e2e = new_histogram();
    let mut statuses = BTreeMap::new();
    let (mut messages, mut payload_bytes, mut without_time, mut anomalies, mut skipped) =
        (0, 0, 0, 0, 0);
    let mut last_message_at = None;
    for q in &per_queue {
        // Same bounds everywhere, so adding cannot fail.
        let _ = e2e.add(&q.e2e_us);
        messages += q.messages;
        payload_bytes += q.payload_bytes;
        without_time += q.without_send_time;
        anomalies += q.offset_anomalies;
        skipped += q.skipped_too_small;
        merge_counts(&mut statuses, q.statuses.clone());
        merge_counts(&mut errors, q.errors.clone());
        last_message_at = last_message_at.max(q.last_message_at);
    }
    // Throughput over the time messages were flowing: an until-empty run's final
    // empty long polls are not reading time.
    let end = if args.duration.is_some() && !args.until_empty {
        run.stop.at().unwrap_or(finished)
    } else {
        last_message_at.unwrap_or(finished)
    };
    let elapsed_s = end.saturating_duration_since(started).as_secs_f64();
    let msgs_per_s = messages as f64 / elapsed_s.max(f64::EPSILON);
    let mb_per_s = payload_bytes as f64 / MB / elapsed_s.max(f64::EPSILON);
    let (duplicates, gaps, producers) = {
        let ledger = run.ledger.lock().unwrap_or_else(|e| e.into_inner());
        (ledger.duplicates, ledger.gaps(), ledger.seen.len())
    };
    println!(
        "received:  {messages} msgs over {elapsed_s:.2} s from {} queues",
        per_queue.len()
    );
    println!("rate:      {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s of payload");
    println!("e2e:       {}", latency_line(&e2e));
    println!(
        "checks:    {duplicates} duplicates, {gaps} sequence gaps over {producers} producer ids, {anomalies} offset anomalies, {skipped} skipped below min offset, {without_time} without send time"
    );
    println!("statuses:  {}", errors_line(&statuses));
    println!("errors:    {}", errors_line(&errors));
    let report = json!({
        "mode": "consume",
        "config": {
            "urls": args.connection.urls,
            "token": args.connection.token.is_some(),
            "ca_file": args.connection.ca_file.is_some(),
            "topic": args.topic,
            "from": format!("{:?}", args.from).to_lowercase(),
            "duration_s": args.duration.map(|d| d.as_secs_f64()),
            "until_empty": args.until_empty || args.duration.is_none(),
            "max_messages": args.max_messages,
            "max_wait_ms": args.max_wait.as_millis() as u64,
        },
        "elapsed_s": elapsed_s,
        "messages": messages,
        "payload_bytes": payload_bytes,
        "msgs_per_s": msgs_per_s,
        "mb_per_s": mb_per_s,
        "e2e_latency_ms": latency_json(&e2e),
        "messages_without_send_time": without_time,
        "duplicates": duplicates,
        "sequence_gaps": gaps,
        "producer_ids": producers,
        "offset_anomalies": anomalies,
        "skipped_below_min_offset": skipped,
        "statuses": statuses,
        "errors": errors,
        "queues": per_queue.iter().map(|q| json!({
            "queue_id": q.queue_id,
            "start_offset": q.start_offset,
            "end_offset": q.next_offset,
            "messages": q.messages,
        })).collect::<Vec<_>>(),
    });
    write_report(&args.report, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_duplicates_and_gaps() {
        let mut ledger = SequenceLedger::default();
        for seq in [5, 6, 8, 70, 6] {
            ledger.record("a", seq);
        }
        ledger.record("b", 0);
        assert_eq!(ledger.duplicates, 1);
        // a: 5..=70 is 66 sequences, 4 distinct seen → 62 missing; b: none.
        assert_eq!(ledger.gaps(), 62);
    }

    #[test]
    fn offsets_must_be_consecutive() {
        let message = |offset| MessageView {
            msg_id: String::new(),
            topic: "t".into(),
            queue_id: 0,
            queue_offset: offset,
            commit_log_offset: 0,
            body: None,
            body_base64: None,
            tags: None,
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp: 0,
            store_timestamp: 0,
            reconsume_times: 0,
            producer_id: None,
            sequence: None,
        };
        assert!(check_offsets(3, &[message(3), message(4)], 5));
        assert!(!check_offsets(3, &[message(4)], 5));
        assert!(!check_offsets(3, &[message(3), message(5)], 6));
        assert!(!check_offsets(3, &[message(3)], 7));
        assert!(check_offsets(3, &[], 3));
    }

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
}
