//! `receive` mode: lease-based consumption (shared/API.md "Receive and ack").
//!
//! `consumers` tasks each loop: one receive of up to `max-messages` messages leased
//! to `--group` for `--invisible`, then (unless `--no-ack`) one ack naming every
//! handle it got, then the next receive, so a task has at most one request
//! outstanding and the run measures receive + ack as an application doing one
//! after the other would see it. A failed ack request is resent (acking twice is
//! harmless, per the client), at most [`ACK_ATTEMPTS`] times in all.
//!
//! What it checks, by (`producer_id`, `sequence`): a first delivery
//! (`delivery_attempt` 1) of a message already received is a duplicate — the
//! broker's lease should have kept it from a second receiver; a delivery with
//! `delivery_attempt` > 1 is a redelivery (a lease ran out, or an earlier receive
//! failed after leasing), counted apart; a message received after its `OK` ack
//! breaks the contract ("the group never receives that message again").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::json;

use broker_client::BrokerClient;
use broker_proto::receive::{ReceiveRequest, ReceivedMessage, ACK_OK, ACK_STATUSES};

use crate::chart::ChartInfo;
use crate::ledger::SequenceLedger;
use crate::timeline::{IntervalLatency, LatencyKind, Sampler, Timeline};
use crate::{
    client, errors_line, latency_json, latency_line, latency_summary, merge_counts, new_histogram,
    now_us, spawn_stopper, url_count, write_report, ReceiveArgs, StopSignal, ERROR_PAUSE, MB,
    SEND_TIME_PROPERTY,
};

/// Ack requests sent for one batch before its messages count as unacked.
const ACK_ATTEMPTS: u32 = 3;

/// Shared by the consumer tasks of a run.
struct ReceiveRun {
    args: ReceiveArgs,
    request: ReceiveRequest,
    stop: Arc<StopSignal>,
    ledgers: Mutex<Ledgers>,
    received: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// End-to-end latencies (first deliveries) since the timeline's last tick.
    latency: Arc<IntervalLatency>,
}

/// Every (`producer_id`, `sequence`) received, and those acked `OK`.
#[derive(Default)]
struct Ledgers {
    received: SequenceLedger,
    acked: SequenceLedger,
}

/// What one consumer task measured.
struct ConsumerStats {
    messages: u64,
    payload_bytes: u64,
    /// Receive time minus send time, first deliveries only (a redelivery's is its
    /// lease plus whatever came before).
    e2e_us: Histogram<u64>,
    /// Request latency of the receives that answered messages (an empty one is
    /// mostly its wait).
    receive_us: Histogram<u64>,
    ack_us: Histogram<u64>,
    receives: u64,
    empty_receives: u64,
    ack_requests: u64,
    /// Per ack status, `OK`, `EXPIRED`, `INVALID` (and anything else the broker
    /// answers).
    ack_statuses: BTreeMap<String, u64>,
    /// Results whose handle was not the one asked at that position, or answers
    /// with another number of results than handles asked.
    ack_mismatches: u64,
    /// Messages whose every ack request failed.
    unacked: u64,
    duplicates: u64,
    redeliveries: u64,
    after_ack: u64,
    without_send_time: u64,
    without_producer_id: u64,
    receive_errors: BTreeMap<String, u64>,
    ack_errors: BTreeMap<String, u64>,
    /// When the last batch was done with: acked (or given up), or with `--no-ack`
    /// received.
    last_done_at: Option<Instant>,
}

impl ConsumerStats {
    fn new() -> Self {
        Self {
            messages: 0,
            payload_bytes: 0,
            e2e_us: new_histogram(),
            receive_us: new_histogram(),
            ack_us: new_histogram(),
            receives: 0,
            empty_receives: 0,
            ack_requests: 0,
            ack_statuses: BTreeMap::new(),
            ack_mismatches: 0,
            unacked: 0,
            duplicates: 0,
            redeliveries: 0,
            after_ack: 0,
            without_send_time: 0,
            without_producer_id: 0,
            receive_errors: BTreeMap::new(),
            ack_errors: BTreeMap::new(),
            last_done_at: None,
        }
    }

    fn merge(&mut self, other: ConsumerStats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.e2e_us.add(&other.e2e_us);
        let _ = self.receive_us.add(&other.receive_us);
        let _ = self.ack_us.add(&other.ack_us);
        self.messages += other.messages;
        self.payload_bytes += other.payload_bytes;
        self.receives += other.receives;
        self.empty_receives += other.empty_receives;
        self.ack_requests += other.ack_requests;
        merge_counts(&mut self.ack_statuses, other.ack_statuses);
        self.ack_mismatches += other.ack_mismatches;
        self.unacked += other.unacked;
        self.duplicates += other.duplicates;
        self.redeliveries += other.redeliveries;
        self.after_ack += other.after_ack;
        self.without_send_time += other.without_send_time;
        self.without_producer_id += other.without_producer_id;
        merge_counts(&mut self.receive_errors, other.receive_errors);
        merge_counts(&mut self.ack_errors, other.ack_errors);
        self.last_done_at = self.last_done_at.max(other.last_done_at);
    }

    fn ack_status(&self, status: &str) -> u64 {
        self.ack_statuses.get(status).copied().unwrap_or(0)
    }
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The checks and the measures of one received batch.
fn record_batch(run: &ReceiveRun, stats: &mut ConsumerStats, batch: &[ReceivedMessage]) {
    let received_us = now_us();
    {
        let mut ledgers = run.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        for m in batch {
            let (Some(id), Some(seq)) = (&m.message.producer_id, m.message.sequence) else {
                stats.without_producer_id += 1;
                continue;
            };
            if ledgers.acked.contains(id, seq) {
                stats.after_ack += 1;
            }
            let repeated = ledgers.received.record(id, seq);
            if m.delivery_attempt > 1 {
                stats.redeliveries += 1;
            } else if repeated {
                stats.duplicates += 1;
            }
        }
    }
    let mut interval = run.latency.lock();
    for m in batch {
        stats.payload_bytes += m
            .message
            .body
            .as_ref()
            .or(m.message.body_base64.as_ref())
            .map_or(0, |b| b.len() as u64);
        let sent_us = m
            .message
            .properties
            .get(SEND_TIME_PROPERTY)
            .and_then(|v| v.parse::<u64>().ok());
        match sent_us {
            Some(sent_us) if m.delivery_attempt <= 1 => {
                let us = received_us.saturating_sub(sent_us).max(1);
                stats.e2e_us.saturating_record(us);
                interval.saturating_record(us);
            }
            Some(_) => {}
            None => stats.without_send_time += 1,
        }
    }
}

/// Acks every message of `batch` in one request, resending it after a failure.
async fn ack_batch(
    run: &ReceiveRun,
    client: &BrokerClient,
    stats: &mut ConsumerStats,
    batch: &[ReceivedMessage],
) {
    let handles: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
    for attempt in 1..=ACK_ATTEMPTS {
        let started = Instant::now();
        match client.ack(&run.args.group, &handles).await {
            Ok(response) => {
                stats.ack_us.saturating_record(elapsed_us(started));
                stats.ack_requests += 1;
                if response.results.len() != handles.len() {
                    stats.ack_mismatches += 1;
                }
                let mut ledgers = run.ledgers.lock().unwrap_or_else(|e| e.into_inner());
                for (m, result) in batch.iter().zip(&response.results) {
                    *stats.ack_statuses.entry(result.status.clone()).or_default() += 1;
                    if result.receipt_handle != m.receipt_handle {
                        stats.ack_mismatches += 1;
                    } else if result.status == ACK_OK {
                        if let (Some(id), Some(seq)) = (&m.message.producer_id, m.message.sequence)
                        {
                            ledgers.acked.record(id, seq);
                        }
                    }
                }
                return;
            }
            Err(error) => {
                run.failed.fetch_add(1, Ordering::Relaxed);
                *stats.ack_errors.entry(error.kind()).or_default() += 1;
                if attempt < ACK_ATTEMPTS {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
    }
    stats.unacked += handles.len() as u64;
}

/// One consumer: receive, ack, repeat, until the run stops or (until-empty) a
/// receive answers nothing.
async fn run_consumer(run: Arc<ReceiveRun>, client: BrokerClient) -> ConsumerStats {
    let args = &run.args;
    let until_empty = args.until_empty || args.duration.is_none();
    let mut stats = ConsumerStats::new();
    while !run.stop.is_stopped() {
        let started = Instant::now();
        let received = client.receive(&args.group, &args.topic, &run.request).await;
        let response = match received {
            Ok(response) => response,
            Err(error) => {
                run.failed.fetch_add(1, Ordering::Relaxed);
                *stats.receive_errors.entry(error.kind()).or_default() += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        stats.receives += 1;
        if response.messages.is_empty() {
            stats.empty_receives += 1;
            if until_empty {
                break;
            }
            continue;
        }
        stats.receive_us.saturating_record(elapsed_us(started));
        let count = response.messages.len() as u64;
        stats.messages += count;
        let total = run.received.fetch_add(count, Ordering::Relaxed) + count;
        if args.messages.is_some_and(|limit| total >= limit) {
            run.stop.stop();
        }
        record_batch(&run, &mut stats, &response.messages);
        if !args.no_ack {
            ack_batch(&run, &client, &mut stats, &response.messages).await;
        }
        stats.last_done_at = Some(Instant::now());
    }
    stats
}

pub(crate) async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    args.validate()?;
    let client = client(&args.connection)?;
    let request = ReceiveRequest {
        max_messages: Some(args.max_messages),
        invisible_ms: Some(args.invisible_ms()),
        max_wait_ms: Some(args.max_wait_ms()),
        tags: None,
        fifo: args.fifo,
    };
    let started = Instant::now();
    let run = Arc::new(ReceiveRun {
        request,
        stop: Arc::new(StopSignal::default()),
        ledgers: Mutex::new(Ledgers::default()),
        received: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        latency: Arc::new(IntervalLatency::new()),
        args,
    });
    let args = &run.args;
    println!(
        "receive: topic={} group={} consumers={} max-messages={} invisible={:?} max-wait={:?} fifo={} ack={} until={}",
        args.topic,
        args.group,
        args.consumers,
        args.max_messages,
        args.invisible,
        args.max_wait,
        args.fifo,
        if args.no_ack { "never" } else { "each batch" },
        until(args)
    );
    let stopper = spawn_stopper(Arc::clone(&run.stop), args.duration);
    let sampler = Sampler {
        progress: args.progress,
        started,
        done: Arc::clone(&run.received),
        failed: Arc::clone(&run.failed),
        latency: Arc::clone(&run.latency),
        kind: LatencyKind::EndToEnd,
        stop: Arc::clone(&run.stop),
        what: "received",
    }
    .spawn();
    let tasks: Vec<_> = (0..args.consumers)
        .map(|_| tokio::spawn(run_consumer(Arc::clone(&run), client.clone())))
        .collect();
    let mut total = ConsumerStats::new();
    let mut task_errors = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => *task_errors.entry(format!("task failed: {e}")).or_default() += 1,
        }
    }
    let finished = Instant::now();
    run.stop.stop();
    stopper.abort();
    let timeline = sampler.await.unwrap_or_else(|_| Timeline {
        latency: LatencyKind::EndToEnd,
        points: Vec::new(),
    });
    // As in `consume`: over the time messages were flowing, up to the last ack; an
    // until-empty run's final empty receives are not reading time.
    let end = if args.duration.is_some() && !args.until_empty {
        run.stop.at().unwrap_or(finished)
    } else {
        total.last_done_at.unwrap_or(finished)
    };
    let elapsed_s = end.saturating_duration_since(started).as_secs_f64();
    let msgs_per_s = total.messages as f64 / elapsed_s.max(f64::EPSILON);
    let mb_per_s = total.payload_bytes as f64 / MB / elapsed_s.max(f64::EPSILON);
    let acked_ok = total.ack_status(ACK_OK);
    let acked_per_s = acked_ok as f64 / elapsed_s.max(f64::EPSILON);
    let (gaps, producers) = {
        let ledgers = run.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        (ledgers.received.gaps(), ledgers.received.producer_ids())
    };
    // Every status the contract names, zeros included, then anything else.
    let mut ack_statuses: BTreeMap<String, u64> =
        ACK_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    merge_counts(&mut ack_statuses, total.ack_statuses.clone());
    println!(
        "received:  {} msgs over {elapsed_s:.2} s by {} consumers ({} receives, {} empty)",
        total.messages, args.consumers, total.receives, total.empty_receives
    );
    println!(
        "rate:      {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s of payload; {acked_per_s:.0} msgs/s acked OK"
    );
    println!(
        "e2e:       {} (first deliveries)",
        latency_line(&total.e2e_us)
    );
    println!("receive:   {}", latency_line(&total.receive_us));
    if !args.no_ack {
        println!("ack:       {}", latency_line(&total.ack_us));
    }
    println!(
        "acks:      {} in {} requests; {} msgs unacked after {ACK_ATTEMPTS} failed requests, {} mismatched results",
        errors_line(&ack_statuses),
        total.ack_requests,
        total.unacked,
        total.ack_mismatches
    );
    println!(
        "checks:    {} duplicates, {} redeliveries (delivery_attempt > 1), {} received after an OK ack, {gaps} sequence gaps over {producers} producer ids, {} without producer id, {} without send time",
        total.duplicates,
        total.redeliveries,
        total.after_ack,
        total.without_producer_id,
        total.without_send_time
    );
    println!(
        "errors:    receive: {}; ack: {}",
        errors_line(&total.receive_errors),
        errors_line(&total.ack_errors)
    );
    if !task_errors.is_empty() {
        println!("tasks:     {}", errors_line(&task_errors));
    }
    let report = json!({
        "mode": "receive",
        "config": {
            "urls": args.connection.urls,
            "token": args.connection.token.is_some(),
            "ca_file": args.connection.ca_file.is_some(),
            "topic": args.topic,
            "group": args.group,
            "consumers": args.consumers,
            "max_messages": args.max_messages,
            "invisible_ms": args.invisible_ms(),
            "max_wait_ms": args.max_wait_ms(),
            "fifo": args.fifo,
            "ack": !args.no_ack,
            "duration_s": args.duration.map(|d| d.as_secs_f64()),
            "until_empty": args.until_empty || args.duration.is_none(),
            "messages_limit": args.messages,
        },
        "elapsed_s": elapsed_s,
        "messages": total.messages,
        "payload_bytes": total.payload_bytes,
        "msgs_per_s": msgs_per_s,
        "mb_per_s": mb_per_s,
        "acked_ok_per_s": acked_per_s,
        "e2e_latency_ms": latency_json(&total.e2e_us),
        "receive_latency_ms": latency_json(&total.receive_us),
        "ack_latency_ms": latency_json(&total.ack_us),
        "receives": total.receives,
        "empty_receives": total.empty_receives,
        "ack_requests": total.ack_requests,
        "ack_statuses": ack_statuses,
        "ack_mismatches": total.ack_mismatches,
        "unacked_messages": total.unacked,
        "duplicates": total.duplicates,
        "redeliveries": total.redeliveries,
        "received_after_ack": total.after_ack,
        "sequence_gaps": gaps,
        "producer_ids": producers,
        "messages_without_producer_id": total.without_producer_id,
        "messages_without_send_time": total.without_send_time,
        "receive_errors": total.receive_errors,
        "ack_errors": total.ack_errors,
        "task_errors": task_errors,
    });
    let chart = ChartInfo {
        title: format!(
            "broker-bench receive: topic {}, group {}",
            args.topic, args.group
        ),
        params: format!(
            "{}, {} consumers, max-messages {}, invisible {:?}, max-wait {:?}, fifo {}, ack {}, until {}",
            url_count(&args.connection.urls),
            args.consumers,
            args.max_messages,
            args.invisible,
            args.max_wait,
            args.fifo,
            if args.no_ack { "never" } else { "each batch" },
            until(args)
        ),
        result: format!(
            "{} msgs, {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s over {elapsed_s:.1} s; e2e {}; {} duplicates, {} redeliveries",
            total.messages,
            latency_summary(&total.e2e_us),
            total.duplicates,
            total.redeliveries
        ),
        ops: "received msgs/s",
        warmup_s: 0.0,
    };
    write_report(
        args.report.as_deref(),
        args.chart.as_deref(),
        report,
        &timeline,
        &chart,
    )
}

/// When the run ends, as the start line and the chart say it.
fn until(args: &ReceiveArgs) -> String {
    match (args.duration, args.messages) {
        (Some(d), _) if args.until_empty => format!("empty or {d:?}"),
        (Some(d), _) => format!("{d:?}"),
        (None, Some(n)) => format!("empty or {n} msgs"),
        (None, None) => "empty".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use broker_proto::api::MessageView;

    use super::*;
    use crate::Connection;

    fn received(producer_id: &str, sequence: u64, delivery_attempt: u32) -> ReceivedMessage {
        ReceivedMessage {
            message: MessageView {
                msg_id: String::new(),
                topic: "t".into(),
                queue_id: 0,
                queue_offset: sequence,
                commit_log_offset: 0,
                body: Some("xyz".into()),
                body_base64: None,
                tags: None,
                keys: Vec::new(),
                properties: BTreeMap::from([(SEND_TIME_PROPERTY.to_string(), "1".to_string())]),
                born_timestamp: 0,
                store_timestamp: 0,
                reconsume_times: 0,
                producer_id: Some(producer_id.into()),
                sequence: Some(sequence),
            },
            receipt_handle: format!("h{sequence}"),
            delivery_attempt,
            invisible_until: 0,
            broker_group: "broker-a".into(),
        }
    }

    fn run() -> ReceiveRun {
        let args = ReceiveArgs {
            connection: Connection {
                urls: vec!["http://a:1".into()],
                request_timeout: std::time::Duration::from_secs(1),
                connect_timeout: std::time::Duration::from_secs(1),
                token: None,
                ca_file: None,
            },
            topic: "t".into(),
            group: "g".into(),
            consumers: 1,
            max_messages: 16,
            invisible: std::time::Duration::from_secs(30),
            max_wait: std::time::Duration::from_secs(1),
            fifo: false,
            duration: None,
            until_empty: true,
            messages: None,
            no_ack: false,
            progress: std::time::Duration::ZERO,
            report: None,
            chart: None,
        };
        ReceiveRun {
            args,
            request: ReceiveRequest::default(),
            stop: Arc::new(StopSignal::default()),
            ledgers: Mutex::new(Ledgers::default()),
            received: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            latency: Arc::new(IntervalLatency::new()),
        }
    }

    #[test]
    fn redeliveries_are_not_duplicates_and_acked_messages_must_not_come_back() {
        let run = run();
        let mut stats = ConsumerStats::new();
        record_batch(
            &run,
            &mut stats,
            &[received("p", 0, 1), received("p", 1, 1)],
        );
        // The lease of 1 ran out: it comes again as attempt 2; 0 comes again as a
        // first delivery, which no lease allows.
        record_batch(
            &run,
            &mut stats,
            &[received("p", 1, 2), received("p", 0, 1)],
        );
        assert_eq!((stats.duplicates, stats.redeliveries), (1, 1));
        assert_eq!(stats.after_ack, 0);
        run.ledgers
            .lock()
            .expect("not poisoned")
            .acked
            .record("p", 1);
        record_batch(&run, &mut stats, &[received("p", 1, 3)]);
        assert_eq!(stats.after_ack, 1);
        assert_eq!(stats.redeliveries, 2);
        // Only first deliveries carry an end-to-end latency.
        assert_eq!(stats.e2e_us.len(), 3);
        assert_eq!(run.latency.lock().len(), 3, "and so does the timeline");
        assert_eq!(stats.payload_bytes, 5 * 3);
        assert_eq!(stats.without_send_time + stats.without_producer_id, 0);
    }
}
