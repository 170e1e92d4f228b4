//! `peer-bench`: acked publishers against the systems we compare with, measured the
//! way `broker-bench produce` measures ours, for `scripts/bench-compare.sh`.
//!
//! * `nats` — a JetStream publisher (async-nats): creates (or reuses) a stream with
//!   `--replicas` replicas on file storage, then keeps `--in-flight` publishes
//!   outstanding on one connection, each awaited until its `PubAck` (the stream
//!   leader's acknowledgement after its Raft group stored the message).
//! * `rabbitmq` — an AMQP publisher (lapin) with publisher confirms: declares a
//!   durable quorum queue, then keeps `--in-flight` persistent publishes outstanding
//!   on one confirm-mode channel, each awaited until its broker ack (RabbitMQ confirms
//!   a quorum-queue message once a majority fsync'd it).
//!
//! Both print `rate:` and `latency:` lines like `broker-bench` and write a JSON report
//! with `msgs_per_s`, `mb_per_s` and `latency_ms.{p50,p99}`: latency is per message,
//! from the publish call to its acknowledgement. Only acknowledgements arriving after
//! the warmup and before the window closes are counted.
//!
//! Built only with `--features bench-peers` (the clients are heavy and CI does not need
//! them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;

use broker::units::{parse_bytes, parse_duration};

/// Bytes per MB in the reports (10^6, as broker-bench).
const MB: f64 = 1_000_000.0;
/// Highest latency the histogram holds: one hour in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "peer-bench",
    about = "Acked publishers for NATS JetStream and RabbitMQ quorum queues"
)]
struct Cli {
    #[command(subcommand)]
    system: System,
}

#[derive(Subcommand, Debug)]
enum System {
    /// NATS JetStream: publish to a replicated file-storage stream, await each PubAck.
    Nats(NatsArgs),
    /// RabbitMQ: publish persistent messages to a quorum queue, await each confirm.
    Rabbitmq(RabbitArgs),
}

#[derive(Args, Debug, Clone)]
struct Load {
    /// Publishes kept outstanding.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Body bytes per message (e.g. 1024, 4KiB).
    #[arg(long, default_value = "1024", value_parser = parse_bytes)]
    size: u64,
    /// How long to measure.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Delete the stream or queue after the run (frees the disk between runs).
    #[arg(long)]
    delete_after: bool,
}

#[derive(Args, Debug, Clone)]
struct NatsArgs {
    #[command(flatten)]
    load: Load,
    /// Server URL(s), comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Stream name; its subject is `<stream>.msgs`.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Stream replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
}

#[derive(Args, Debug, Clone)]
struct RabbitArgs {
    #[command(flatten)]
    load: Load,
    /// AMQP URL of one node.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Queue name.
    #[arg(long, default_value = "bench")]
    queue: String,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("peer-bench: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.system {
            System::Nats(args) => nats(args).await,
            System::Rabbitmq(args) => rabbitmq(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("peer-bench: {e:#}");
        std::process::exit(1);
    }
}

/// What a run measured.
struct Outcome {
    latency_us: Histogram<u64>,
    acked: u64,
    errors: u64,
    measured_s: f64,
}

/// Keeps `load.in_flight` calls of `publish` outstanding for warmup + duration and
/// records each acknowledged one finishing inside the measured window.
async fn drive<F, Fut, E>(load: &Load, publish: F) -> Outcome
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let measure_from = started + load.warmup;
    let stop_at = measure_from + load.duration;
    let mut latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("1..=1h at 3 significant digits is a valid histogram range");
    let (mut acked, mut errors) = (0u64, 0u64);
    let timed = |fut: Fut| async move {
        let sent = Instant::now();
        let result = fut.await;
        (sent, result)
    };
    let mut pending = FuturesUnordered::new();
    for _ in 0..load.in_flight {
        pending.push(timed(publish()));
    }
    let mut first_error_shown = false;
    while let Some((sent, result)) = pending.next().await {
        let now = Instant::now();
        match result {
            Ok(()) if now >= measure_from && now < stop_at => {
                let us = u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                latency_us.saturating_record(us.max(1));
                acked += 1;
            }
            Ok(()) => {}
            Err(e) => {
                errors += 1;
                if !first_error_shown {
                    eprintln!("publish failed: {e}");
                    first_error_shown = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if now < stop_at {
            pending.push(timed(publish()));
        }
    }
    Outcome {
        latency_us,
        acked,
        errors,
        measured_s: load.duration.as_secs_f64(),
    }
}

fn report(system: &str, load: &Load, outcome: &Outcome) -> anyhow::Result<()> {
    let h = &outcome.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let msgs_per_s = outcome.acked as f64 / outcome.measured_s;
    let mb_per_s = (outcome.acked * load.size) as f64 / MB / outcome.measured_s;
    println!(
        "acked:     {} msgs over {:.2} s ({} errors)",
        outcome.acked, outcome.measured_s, outcome.errors
    );
    println!("rate:      {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s of payload");
    println!(
        "latency:   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    if let Some(path) = &load.report {
        let report = json!({
            "system": system,
            "config": {
                "in_flight": load.in_flight,
                "size_bytes": load.size,
                "duration_s": load.duration.as_secs_f64(),
                "warmup_s": load.warmup.as_secs_f64(),
            },
            "measured_s": outcome.measured_s,
            "acked_messages": outcome.acked,
            "failed_requests": outcome.errors,
            "msgs_per_s": msgs_per_s,
            "mb_per_s": mb_per_s,
            "latency_ms": {
                "count": h.len(),
                "p50": ms(0.5),
                "p99": ms(0.99),
                "max": h.max() as f64 / 1000.0,
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Retries `attempt` until it succeeds or `deadline` passes (a fresh cluster elects
/// its JetStream meta leader a few seconds after the servers start).
async fn until_ok<T, E: std::fmt::Display, Fut: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    deadline: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> anyhow::Result<T> {
    let give_up = Instant::now() + deadline;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= give_up => anyhow::bail!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn nats(args: NatsArgs) -> anyhow::Result<()> {
    use async_nats::jetstream::{self, stream};

    let servers: Vec<&str> = args.url.split(',').collect();
    let client = until_ok("connecting to NATS", Duration::from_secs(30), || {
        async_nats::connect(servers.clone())
    })
    .await?;
    let js = jetstream::new(client);
    let subject = format!("{}.msgs", args.stream);
    let config = stream::Config {
        name: args.stream.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        ..Default::default()
    };
    until_ok("creating the stream", Duration::from_secs(60), || {
        js.get_or_create_stream(config.clone())
    })
    .await?;
    println!(
        "nats: stream={} replicas={} in-flight={} size={}B duration={:?}",
        args.stream, args.replicas, args.load.in_flight, args.load.size, args.load.duration
    );
    let payload = bytes::Bytes::from(vec![b'x'; usize::try_from(args.load.size)?]);
    let outcome = drive(&args.load, || {
        let js = js.clone();
        let subject = subject.clone();
        let payload = payload.clone();
        async move {
            let ack = js
                .publish(subject, payload)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await;
    if args.load.delete_after {
        js.delete_stream(&args.stream)
            .await
            .context("deleting the stream")?;
    }
    report("nats-jetstream", &args.load, &outcome)
}

async fn rabbitmq(args: RabbitArgs) -> anyhow::Result<()> {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let connection = until_ok("connecting to RabbitMQ", Duration::from_secs(30), || {
        Connection::connect(&args.url, ConnectionProperties::default())
    })
    .await?;
    let channel = connection.create_channel().await?;
    let mut queue_args = FieldTable::default();
    queue_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            args.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            queue_args,
        )
        .await
        .context("declaring the quorum queue")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    println!(
        "rabbitmq: queue={} (quorum, durable) in-flight={} size={}B duration={:?}",
        args.queue, args.load.in_flight, args.load.size, args.load.duration
    );
    let payload = vec![b'x'; usize::try_from(args.load.size)?];
    // Delivery mode 2: persistent (quorum queues store every message durably anyway).
    let properties = BasicProperties::default().with_delivery_mode(2);
    let outcome = drive(&args.load, || {
        let channel = channel.clone();
        let queue = args.queue.clone();
        let payload = payload.clone();
        let properties = properties.clone();
        async move {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    properties,
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            if confirm.is_ack() {
                Ok(())
            } else {
                Err("nacked".to_string())
            }
        }
    })
    .await;
    if args.load.delete_after {
        channel
            .queue_delete(args.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .context("deleting the queue")?;
    }
    report("rabbitmq-quorum", &args.load, &outcome)
}
