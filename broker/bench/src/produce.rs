//! `produce` mode: `producers` tasks each keep `in-flight` send requests (or, with
//! `--batching`, messages on a [`BatchingProducer`]) outstanding for a measured
//! window after a warmup, and report acked messages/s, MB/s, per-request latency
//! and errors by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;

use broker_client::{
    BatchingOptions, BatchingProducer, BatchingStats, BrokerClient, ClientError, Idempotence,
    Producer, ProducerOptions, DEDUP_WINDOW,
};
use broker_proto::api::{MessageInput, TopicRequest};

use crate::chart::ChartInfo;
use crate::timeline::{IntervalLatency, LatencyKind, Sampler, Timeline};
use crate::{
    client, errors_line, latency_json, latency_line, latency_summary, merge_counts, new_histogram,
    now_us, spawn_stopper, url_count, write_report, OnOff, ProduceArgs, StopSignal, BENCH_TAG,
    ERROR_PAUSE, MB, SEND_TIME_PROPERTY,
};

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
    /// Latencies since the timeline's last tick, warmup included.
    latency: Arc<IntervalLatency>,
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
                let us = u64::try_from(finished.duration_since(started).as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                run.latency.record(us);
                let acked = run.acked.fetch_add(messages, Ordering::Relaxed) + messages;
                if run
                    .args
                    .bytes
                    .is_some_and(|bytes| acked.saturating_mul(run.args.size) >= bytes)
                {
                    run.stop.stop();
                }
                if measured {
                    stats.latency_us.saturating_record(us);
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

pub(crate) async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
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
        latency: Arc::new(IntervalLatency::new()),
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
    let latency_kind = if args.batching {
        LatencyKind::Message
    } else {
        LatencyKind::Request
    };
    let sampler = Sampler {
        progress: args.progress,
        started,
        done: Arc::clone(&run.acked),
        failed: Arc::clone(&run.failed),
        latency: Arc::clone(&run.latency),
        kind: latency_kind,
        stop: Arc::clone(&run.stop),
        what: "acked",
    }
    .spawn();
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
    // Already stopped, unless every task ended early (e.g. no producer could start).
    run.stop.stop();
    stopper.abort();
    let timeline = sampler.await.unwrap_or_else(|_| Timeline {
        latency: latency_kind,
        points: Vec::new(),
    });
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
    let chart = ChartInfo {
        title: format!("broker-bench produce: topic {}", args.topic),
        params: format!(
            "{}, {} producers x {} in flight, {}, {} B per message, producer-id {}, warmup {:?}, duration {:?}",
            url_count(&args.connection.urls),
            args.producers,
            args.in_flight,
            if args.batching {
                format!(
                    "batching (max-requests {}, batch-max {})",
                    args.max_requests, args.batch_max
                )
            } else {
                format!("batch {}", args.batch)
            },
            args.size,
            if args.producer_id == OnOff::On { "on" } else { "off" },
            args.warmup,
            args.duration,
        ),
        result: format!(
            "{msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s over {measured_s:.1} s measured; {}; {errors_total} failed requests",
            latency_summary(&total.latency_us)
        ),
        ops: "acked msgs/s",
        warmup_s: args.warmup.as_secs_f64(),
    };
    write_report(
        args.report.as_deref(),
        args.chart.as_deref(),
        report,
        &timeline,
        &chart,
    )
}
