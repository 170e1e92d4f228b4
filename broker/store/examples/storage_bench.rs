//! Storage benchmark: appends through the store API with a sync flush per group,
//! against plain sequential `write` + `fdatasync` of the same bytes in the same
//! group sizes, in one run; then pulls everything back through ConsumeQueue →
//! CommitLog.
//!
//! ```text
//! cargo run --release -p broker-store --example storage_bench -- --messages 200000 --size 1024 --groups 1,16,256
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use broker_store::{
    FlushMode, MessageDraft, MessageId, MessageStore, QueueId, QueueOffset, RaftLogRef,
    RecordInput, StoreConfig, TagFilter,
};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Storage engine append/read benchmark")]
struct Args {
    /// Messages per append run (group size 1 runs at most `--messages-single`).
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Cap on messages for group size 1 (one fsync per message is slow).
    #[arg(long, default_value_t = 10_000)]
    messages_single: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Group sizes (messages per sync flush), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    groups: Vec<u64>,
    /// Queues the messages are spread over.
    #[arg(long, default_value_t = 4)]
    queues: u32,
    /// Directory for the data (a temporary directory under it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rounds per group size; store and raw runs alternate and the medians are
    /// compared, so both see the same (noisy, shared) disk.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `sync` flushes every group before the append returns (the comparison with
    /// write + fdatasync); `async` leaves flushing to the background thread, which
    /// measures the store's CPU cost per message.
    #[arg(long, default_value = "sync")]
    flush: String,
    /// Measure only the store's appends (for profiling).
    #[arg(long)]
    store_only: bool,
    /// Messages per pull request in the read benchmark.
    #[arg(long, default_value_t = 32)]
    pull_batch: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = tempfile::Builder::new()
        .prefix("storage-bench-")
        .tempdir_in(&args.dir)
        .context("creating the benchmark directory")?;
    println!(
        "storage bench: body {} B, groups {:?}, {} queues, dir {}",
        args.size,
        args.groups,
        args.queues,
        root.path().display()
    );
    println!(
        "{:>6} {:>9} | {:>12} {:>7} | {:>12} {:>7} | {:>11} {:>7} | {:>5} {:>5}",
        "group",
        "messages",
        "sequential/s",
        "MB/s",
        "pipelined/s",
        "MB/s",
        "raw msg/s",
        "MB/s",
        "seq",
        "pipe"
    );
    let mut last_store_dir = None;
    for &group in &args.groups {
        let messages = if group == 1 {
            args.messages.min(args.messages_single)
        } else {
            args.messages
        };
        let mut sequential_secs = Vec::new();
        let mut pipelined_secs = Vec::new();
        let mut raw_secs = Vec::new();
        let mut bytes = 0;
        let mut store_dir = PathBuf::new();
        for round in 0..args.rounds {
            for (mode, secs) in [
                (Mode::Sequential, &mut sequential_secs),
                (Mode::Pipelined, &mut pipelined_secs),
            ] {
                if !store_dir.as_os_str().is_empty() {
                    std::fs::remove_dir_all(&store_dir).ok();
                }
                store_dir = root
                    .path()
                    .join(format!("store-g{group}-r{round}-{mode:?}"));
                let (elapsed, written) =
                    bench_store_append(&store_dir, messages, group, mode, &args)?;
                secs.push(elapsed.as_secs_f64());
                bytes = written;
            }
            if args.store_only {
                raw_secs.push(f64::NAN);
            } else {
                let raw = bench_raw_append(&root.path().join("raw"), bytes, messages, group)?;
                raw_secs.push(raw.as_secs_f64());
            }
        }
        let sequential = messages as f64 / median(&mut sequential_secs);
        let pipelined = messages as f64 / median(&mut pipelined_secs);
        let raw = messages as f64 / median(&mut raw_secs);
        let mb = |rate: f64| rate * bytes as f64 / messages as f64 / 1e6;
        println!(
            "{:>6} {:>9} | {:>12.0} {:>7.1} | {:>12.0} {:>7.1} | {:>11.0} {:>7.1} | {:>5.2} {:>5.2}",
            group,
            messages,
            sequential,
            mb(sequential),
            pipelined,
            mb(pipelined),
            raw,
            mb(raw),
            sequential / raw,
            pipelined / raw
        );
        if let Some(previous) = last_store_dir.replace(store_dir) {
            std::fs::remove_dir_all(previous).ok();
        }
    }
    if let Some(store_dir) = last_store_dir.filter(|_| !args.store_only) {
        bench_read(&store_dir, &args)?;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn drafts(count: u64, first: u64, args: &Args) -> Vec<MessageDraft> {
    (first..first + count)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            MessageDraft {
                topic: "bench".into(),
                queue_id: QueueId((i % u64::from(args.queues)) as u32),
                msg_id: MessageId(id),
                body: vec![b'x'; args.size],
                binary_body: false,
                tags: "TagA".into(),
                keys: Vec::new(),
                properties: BTreeMap::new(),
                born_timestamp_ms: i,
                store_timestamp_ms: i,
                born_host: "127.0.0.1:1".into(),
                reconsume_times: 0,
                producer: None,
            }
        })
        .collect()
}

/// How the store's appends wait for their flush.
#[derive(Copy, Clone, Debug)]
enum Mode {
    /// Each group's append returns once the group is durable.
    Sequential,
    /// Group k+1 is encoded and written while group k is being synced; still one
    /// fsync per group (the writer waits for group k before writing group k+2).
    Pipelined,
}

/// Appends `messages` in groups, each group made durable before the run counts it.
/// Returns the elapsed time and the CommitLog bytes written.
fn bench_store_append(
    dir: &Path,
    messages: u64,
    group: u64,
    mode: Mode,
    args: &Args,
) -> Result<(Duration, u64)> {
    let mut config = StoreConfig::new(dir);
    config.flush_mode = if args.flush == "async" {
        config.flush_interval_ms = 60_000;
        FlushMode::Async
    } else {
        FlushMode::Sync
    };
    let (store, _) = MessageStore::open(config).context("opening the store")?;
    // Build inputs up front: the benchmark measures the store, not allocation.
    let batches: Vec<Vec<MessageDraft>> = (0..messages.div_ceil(group))
        .map(|b| drafts(group.min(messages - b * group), b * group, args))
        .collect();
    let started = Instant::now();
    let mut previous = None;
    for (b, batch) in batches.iter().enumerate() {
        let inputs: Vec<RecordInput<'_>> = batch.iter().map(RecordInput::Message).collect();
        let raft = RaftLogRef {
            term: 1,
            index: b as u64 + 1,
        };
        match mode {
            Mode::Sequential => {
                store.append_entry(raft, &inputs).context("append")?;
            }
            Mode::Pipelined => {
                let (_, end) = store.append_entry_nowait(raft, &inputs).context("append")?;
                // Ask for this group's flush now; it covers this group only, so the
                // store does one sync per group, as the raw writer does.
                store.request_durable(end);
                if let Some(previous) = previous.replace(end) {
                    store.wait_durable(previous).context("flush")?;
                }
            }
        }
    }
    if let Some(last) = previous {
        store.wait_durable(last).context("flush")?;
    }
    let elapsed = started.elapsed();
    let bytes = store.max_commit_log_offset().0;
    store.close().context("closing the store")?;
    Ok((elapsed, bytes))
}

/// Writes `bytes` with plain `write` + `fdatasync`, in as many equal groups as the
/// store run had.
fn bench_raw_append(path: &Path, bytes: u64, messages: u64, group: u64) -> Result<Duration> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .context("creating the raw file")?;
    let groups = messages.div_ceil(group);
    let per_group = (bytes / groups) as usize;
    let buffer = vec![b'x'; per_group];
    let started = Instant::now();
    for _ in 0..groups {
        file.write_all(&buffer).context("write")?;
        file.sync_data().context("fdatasync")?;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(path).ok();
    Ok(elapsed)
}

/// Pulls every message back, `pull_batch` per call, as owned messages (what the API
/// serializes) and in place (the raw read path).
fn bench_read(dir: &Path, args: &Args) -> Result<()> {
    let opening = Instant::now();
    let (store, report) =
        MessageStore::open(StoreConfig::new(dir)).context("reopening the store")?;
    println!(
        "reopen: {:.3} s (validated {} records, redispatched {})",
        opening.elapsed().as_secs_f64(),
        report.commit_log.records_validated,
        report.records_redispatched
    );
    for (label, copy) in [("owned messages", true), ("in place", false)] {
        let started = Instant::now();
        let mut total = 0u64;
        for queue in 0..args.queues {
            let mut offset = QueueOffset(0);
            loop {
                let (next, count) = if copy {
                    let result = store.pull(
                        "bench",
                        QueueId(queue),
                        offset,
                        args.pull_batch,
                        &TagFilter::All,
                    )?;
                    (result.next_offset, result.messages.len())
                } else {
                    let lens = store.pull_with(
                        "bench",
                        QueueId(queue),
                        offset,
                        args.pull_batch,
                        &TagFilter::All,
                        |view| view.body.len(),
                    )?;
                    (lens.next_offset, lens.messages.len())
                };
                if count == 0 {
                    break;
                }
                total += count as u64;
                offset = next;
            }
        }
        let elapsed = started.elapsed();
        println!(
            "read ({label}, {} per pull): {total} messages in {:.2} s = {:.0} msg/s",
            args.pull_batch,
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
    store.close().context("closing the store")?;
    Ok(())
}
