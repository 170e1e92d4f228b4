//! `consume` mode: one task per queue of a topic pulls with long polling from the
//! queue's earliest (or latest) offset, for a duration or until every queue is
//! empty, and checks what it read: duplicates and gaps per (`producer_id`,
//! `sequence`), offsets that skip. With `--commit-group`, each pull that returned
//! messages is followed by a commit of the group's offset before the next pull.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use broker_client::{BrokerClient, CommitMode};
use broker_proto::api::MessageView;

use crate::chart::ChartInfo;
use crate::ledger::SequenceLedger;
use crate::timeline::{IntervalLatency, LatencyKind, Sampler, Timeline};
use crate::{
    client_with, errors_line, latency_json, latency_line, latency_summary, merge_counts,
    new_histogram, now_us, spawn_stopper, url_count, write_report, ConsumeArgs, PullFormat,
    StartFrom, StopSignal, ERROR_PAUSE, MB, SEND_TIME_PROPERTY,
};

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
    /// When the last messages were read (and, with `--commit-group`, their offset
    /// committed or the commit given up).
    last_message_at: Option<Instant>,
    /// With `--commit-group`: offset commits answered, their latency, failures.
    commits: u64,
    commit_us: Histogram<u64>,
    commit_errors: BTreeMap<String, u64>,
}

struct ConsumeRun {
    args: ConsumeArgs,
    stop: Arc<StopSignal>,
    ledger: Mutex<SequenceLedger>,
    received: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// End-to-end latencies since the timeline's last tick.
    latency: Arc<IntervalLatency>,
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
        commits: 0,
        commit_us: new_histogram(),
        commit_errors: BTreeMap::new(),
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
                {
                    let mut ledger = run.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    for m in &response.messages {
                        if let (Some(id), Some(seq)) = (&m.producer_id, m.sequence) {
                            ledger.record(id, seq);
                        }
                    }
                }
                {
                    let mut interval = run.latency.lock();
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
                            Some(sent_us) => {
                                let us = received_us.saturating_sub(sent_us).max(1);
                                stats.e2e_us.saturating_record(us);
                                interval.saturating_record(us);
                            }
                            None => stats.without_send_time += 1,
                        }
                    }
                }
                stats.next_offset = response.next_offset;
                if let Some(group) = &args.commit_group {
                    if count > 0 {
                        commit(&run, &client, group, &mut stats).await;
                    }
                }
                stats.last_message_at = Some(Instant::now());
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

/// Commits `stats.next_offset` as `group`'s offset of the queue, once: a failure is
/// counted and left to the next commit, which supersedes it (offsets only advance).
async fn commit(run: &ConsumeRun, client: &BrokerClient, group: &str, stats: &mut QueueStats) {
    let started = Instant::now();
    let committed = client
        .commit_offset(
            group,
            &run.args.topic,
            stats.queue_id,
            stats.next_offset,
            CommitMode::Advance,
        )
        .await;
    match committed {
        Ok(_) => {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.commit_us.saturating_record(us.max(1));
            stats.commits += 1;
        }
        Err(error) => {
            run.failed.fetch_add(1, Ordering::Relaxed);
            *stats.commit_errors.entry(error.kind()).or_default() += 1;
        }
    }
}

pub(crate) async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1024).contains(&args.max_messages),
        "--max-messages must be in 1..=1024"
    );
    let client = client_with(&args.connection, args.pull_format == PullFormat::Binary)?;
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
        latency: Arc::new(IntervalLatency::new()),
        args,
    });
    let args = &run.args;
    println!(
        "consume: topic={} queues={} from={:?} max-messages={} pull-format={:?} max-wait={:?} commit-group={} until={}",
        args.topic,
        queues.queues.len(),
        args.from,
        args.max_messages,
        args.pull_format,
        args.max_wait,
        args.commit_group.as_deref().unwrap_or("none"),
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
    let timeline = sampler.await.unwrap_or_else(|_| Timeline {
        latency: LatencyKind::EndToEnd,
        points: Vec::new(),
    });
    let mut e2e = new_histogram();
    let mut commit_us = new_histogram();
    let mut commit_errors = BTreeMap::new();
    let mut commits = 0;
    let mut statuses = BTreeMap::new();
    let (mut messages, mut payload_bytes, mut without_time, mut anomalies, mut skipped) =
        (0, 0, 0, 0, 0);
    let mut last_message_at = None;
    for q in &per_queue {
        // Same bounds everywhere, so adding cannot fail.
        let _ = e2e.add(&q.e2e_us);
        let _ = commit_us.add(&q.commit_us);
        commits += q.commits;
        merge_counts(&mut commit_errors, q.commit_errors.clone());
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
        (ledger.duplicates(), ledger.gaps(), ledger.producer_ids())
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
    if let Some(group) = &args.commit_group {
        println!(
            "commits:   {commits} to group `{group}`, failed: {}",
            errors_line(&commit_errors)
        );
        println!("commit:    {}", latency_line(&commit_us));
    }
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
            "commit_group": args.commit_group,
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
        "commits": args.commit_group.is_some().then(|| json!({
            "group": args.commit_group,
            "committed": commits,
            "latency_ms": latency_json(&commit_us),
            "errors": commit_errors,
        })),
        "queues": per_queue.iter().map(|q| json!({
            "queue_id": q.queue_id,
            "start_offset": q.start_offset,
            "end_offset": q.next_offset,
            "messages": q.messages,
        })).collect::<Vec<_>>(),
    });
    let chart = ChartInfo {
        title: format!("broker-bench consume: topic {}", args.topic),
        params: format!(
            "{}, {} queues from {}, max-messages {}, max-wait {:?}, commit-group {}, until {}",
            url_count(&args.connection.urls),
            per_queue.len(),
            format!("{:?}", args.from).to_lowercase(),
            args.max_messages,
            args.max_wait,
            args.commit_group.as_deref().unwrap_or("none"),
            until(args)
        ),
        result: format!(
            "{messages} msgs, {msgs_per_s:.0} msgs/s, {mb_per_s:.2} MB/s over {elapsed_s:.1} s; e2e {}; {duplicates} duplicates, {gaps} gaps",
            latency_summary(&e2e)
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
fn until(args: &ConsumeArgs) -> String {
    match args.duration {
        Some(d) if args.until_empty => format!("empty or {d:?}"),
        Some(d) => format!("{d:?}"),
        None => "empty".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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
}
