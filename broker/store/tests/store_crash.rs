//! Crash test: a child process appends to a store and is killed with SIGKILL at
//! random moments, many times over the same directory; after every kill the parent
//! reopens the store and checks that recovery kept everything acknowledged, returned
//! no partial record, and left a store that keeps working.
//!
//! # How
//!
//! The child is this test binary re-executed to run [`crash_child`] (an `#[ignore]`d
//! test that does nothing unless `STORE_CRASH_CHILD` names a directory). It opens the
//! store with its background thread (`FlushMode::Sync`, or `Async` flushing and
//! checkpointing every 5 ms), continues after the last Raft index it finds, and
//! appends entry after entry, printing to stdout:
//!
//! - `READY <next index>` once the store is open (recovery done);
//! - `APPENDING <index>` before each `append_entry`;
//! - `APPENDED <index> <end offset>` after it returned;
//! - `FLUSHED <offset>`: `flushed_commit_log_offset()` after each append (Sync), or
//!   what an explicit `flush()` returned every fifth entry (Async).
//!
//! Entry `b` is a pure function of `b` ([`entry`]): 1–6 messages over two topics and
//! three queues, bodies of 50 bytes to 9 KiB (so entries cross 64 KiB CommitLog files),
//! proposed store times that sometimes go backwards. The whole log is therefore a
//! function of how many entries it holds, and the parent recomputes it exactly —
//! offsets, sizes, queue offsets, monotonic store times ([`Shadow`]).
//!
//! The parent kills the child right after it starts (during its own recovery) or after
//! a random number of `APPENDED` lines plus a random jitter, reaps it, and checks on
//! reopen, with `N` the last Raft index in the recovered log:
//!
//! 1. every acknowledged entry is present (`N` ≥ the last `APPENDED`), nothing that was
//!    never appended is (`N` ≤ the last `APPENDING`), and the log never loses what an
//!    earlier iteration verified;
//! 2. the recovered end covers every offset the child reported flushed;
//! 3. the log is exactly entries `1..=N`: a scan returns every record, each decoding to
//!    exactly the expected message (no partial record, no partial entry); every queue
//!    pulls back dense from 0 with exactly its expected messages;
//! 4. the `RecoveryReport` is sane: not a clean shutdown, validation started at the
//!    start of the file holding the checkpoint's flushed offset, the recovered end is
//!    at or above that offset and equals the store's end.
//!
//! The next iteration's child appends to the recovered store, and at the end the parent
//! appends more itself, closes, reopens and checks everything once more.
//!
//! # What it can and cannot show
//!
//! SIGKILL kills the process, not the machine: the page cache survives, so bytes
//! written but never fsync'd are still read back. This test shows that recovery copes
//! with whatever state a kill leaves — an entry half written (even across a file
//! boundary), a checkpoint mid-replacement, a kill during the previous recovery — and
//! that acknowledgements follow the writes; it cannot show that fsync works. For
//! power-loss-like damage see `store_power_loss.rs`.
//!
//! `STORE_CRASH_ITERATIONS` (default 30 per flush mode) and `STORE_CRASH_SEED` tune a
//! run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use broker_store::checkpoint::Checkpoint;
use broker_store::{
    Appended, CommitLogOffset, FlushMode, MessageDraft, MessageStore, QueueId, QueueOffset,
    RaftLogRef, StoreConfig, StoredMessage,
};
use common::{append, draft, encoded_size, expected_message, init_tracing, mix, test_config};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::info;

const CHILD_DIR_ENV: &str = "STORE_CRASH_CHILD";
const CHILD_MODE_ENV: &str = "STORE_CRASH_MODE";
const TOPICS: [&str; 2] = ["alpha", "beta"];
const T0: u64 = 1_700_000_000_000;

/// The messages of Raft entry `b` (term 1, index `b`).
fn entry(b: u64) -> Vec<MessageDraft> {
    let count = 1 + mix(b) % 6;
    (0..count)
        .map(|i| {
            let n = b * 8 + i;
            let h = mix(n ^ 0xC0FFEE);
            let body_len = if h.is_multiple_of(12) {
                3_000 + (h >> 8) as usize % 6_000
            } else {
                50 + (h >> 8) as usize % 550
            };
            let mut d = draft(
                TOPICS[(h >> 32) as usize % 2],
                ((h >> 40) % 3) as u32,
                n,
                body_len,
            );
            // Mostly forward, sometimes behind earlier entries: the store raises it.
            d.store_timestamp_ms = T0 + b * 1_000 + i - (h >> 16) % 5_000;
            d
        })
        .collect()
}

/// The config both child and parent use.
fn config(dir: &Path, mode: FlushMode) -> StoreConfig {
    let mut config = test_config(dir);
    config.flush_mode = mode;
    config.flush_interval_ms = 5;
    config
}

/// Marks the child's own lines: libtest's "test crash_child ... " precedes the first
/// one on the same line.
const MARK: &str = "@@ ";

/// One line to the process's stdout (not libtest's capture), written at once.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let text = format!("{MARK}{line}\n");
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .expect("writing to the parent");
}

/// The child: append entries until killed (or 20 s pass).
#[test]
#[ignore = "child process of the crash tests; does nothing on its own"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mode = match std::env::var(CHILD_MODE_ENV).as_deref() {
        Ok("sync") => FlushMode::Sync,
        _ => FlushMode::Async,
    };
    let (store, _) = MessageStore::open(config(Path::new(&dir), mode)).expect("child: open");
    let mut next = store.tail().last_raft.map_or(1, |r| r.index + 1);
    say(format_args!("READY {next}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        say(format_args!("APPENDING {next}"));
        let appended = append(&store, next, &entry(next));
        let last = appended.last().expect("entries have messages");
        say(format_args!(
            "APPENDED {next} {}",
            last.commit_log_offset.0 + u64::from(last.size)
        ));
        if mode == FlushMode::Sync {
            say(format_args!(
                "FLUSHED {}",
                store.flushed_commit_log_offset().0
            ));
        } else if next.is_multiple_of(5) {
            let flushed = store.flush().expect("child: flush");
            say(format_args!("FLUSHED {}", flushed.0));
        }
        next += 1;
    }
}

/// The exact content of a log holding entries `1..=n`, built entry by entry.
struct Shadow {
    file_size: u64,
    end: u64,
    last_store_ms: u64,
    queue_counts: BTreeMap<(String, QueueId), u64>,
    /// Every message, in CommitLog order.
    messages: Vec<StoredMessage>,
    /// After entry `b`: (CommitLog end, messages so far) at index `b - 1`.
    after: Vec<(u64, usize)>,
}

impl Shadow {
    fn new(file_size: u64) -> Self {
        Self {
            file_size,
            end: 0,
            last_store_ms: 0,
            queue_counts: BTreeMap::new(),
            messages: Vec::new(),
            after: Vec::new(),
        }
    }

    fn extend_to(&mut self, n: u64) {
        while (self.after.len() as u64) < n {
            let b = self.after.len() as u64 + 1;
            for d in entry(b) {
                let size = encoded_size(&d);
                let file_end = (self.end / self.file_size + 1) * self.file_size;
                if self.end + u64::from(size) + 8 > file_end {
                    self.end = file_end;
                }
                self.last_store_ms = self.last_store_ms.max(d.store_timestamp_ms);
                let count = self
                    .queue_counts
                    .entry((d.topic.clone(), d.queue_id))
                    .or_default();
                let appended = Appended {
                    commit_log_offset: CommitLogOffset(self.end),
                    size,
                    queue_id: d.queue_id,
                    queue_offset: QueueOffset(*count),
                    store_timestamp_ms: self.last_store_ms,
                };
                *count += 1;
                self.end += u64::from(size);
                self.messages.push(expected_message(
                    &d,
                    &appended,
                    RaftLogRef { term: 1, index: b },
                ));
            }
            self.after.push((self.end, self.messages.len()));
        }
    }

    /// (CommitLog end, message count) of a log holding entries `1..=n`.
    fn at(&self, n: u64) -> (u64, usize) {
        match n {
            0 => (0, 0),
            n => self.after[(n - 1) as usize],
        }
    }
}

/// What the child printed.
#[derive(Default, Debug)]
struct Observed {
    ready: Option<u64>,
    appending: Option<u64>,
    appended: Option<(u64, u64)>,
    flushed: u64,
}

impl Observed {
    fn apply(&mut self, line: &str) -> anyhow::Result<()> {
        let Some((_, ours)) = line.split_once(MARK) else {
            return Ok(()); // libtest's own output
        };
        let words: Vec<&str> = ours.split_whitespace().collect();
        match words.as_slice() {
            ["READY", next] => self.ready = Some(next.parse()?),
            ["APPENDING", b] => self.appending = Some(b.parse()?),
            ["APPENDED", b, end] => self.appended = Some((b.parse()?, end.parse()?)),
            ["FLUSHED", offset] => self.flushed = self.flushed.max(offset.parse()?),
            _ => bail!("unexpected line from the child: {line}"),
        }
        Ok(())
    }
}

/// Counts of what the kills hit, for the log.
#[derive(Default, Debug)]
struct Stats {
    kills_before_ready: u64,
    entries_lost_in_flight: u64,
    torn_tails: u64,
    truncated_bytes: u64,
    checkpoint_tmp_left: u64,
    acknowledged: u64,
}

/// Reopens the store and checks it holds exactly entries `1..=n` for an `n` within
/// `[at_least, at_most]`; returns `n`.
fn check_store(
    config: &StoreConfig,
    shadow: &mut Shadow,
    at_least: u64,
    at_most: u64,
    flushed: u64,
    opened_by_child: bool,
    stats: &mut Stats,
) -> anyhow::Result<u64> {
    let checkpoint = Checkpoint::load(&config.checkpoint_path())
        .context("the checkpoint is readable after a kill")?;
    if config
        .checkpoint_path()
        .with_file_name("checkpoint.tmp")
        .exists()
    {
        stats.checkpoint_tmp_left += 1;
    }
    let (store, report) = MessageStore::open_without_background(config.clone())
        .context("reopening after the kill")?;
    let n = store.tail().last_raft.map_or(0, |r| r.index);
    ensure!(
        (at_least..=at_most).contains(&n),
        "the log holds entries 1..={n}; acknowledged up to {at_least}, appended up to {at_most}"
    );
    shadow.extend_to(n);
    let (end, count) = shadow.at(n);

    // The report.
    let file_size = config.commit_log_file_size_bytes;
    let cp_flushed = checkpoint.as_ref().map_or(0, |c| c.flushed.0);
    ensure!(
        !(report.clean_shutdown && opened_by_child),
        "a store killed after its open reported a clean shutdown"
    );
    ensure!(
        report.commit_log.scanned_from == CommitLogOffset(cp_flushed / file_size * file_size),
        "validation started at {} with the checkpoint at {cp_flushed}",
        report.commit_log.scanned_from
    );
    ensure!(
        report.commit_log.end == CommitLogOffset(end)
            && store.max_commit_log_offset() == CommitLogOffset(end)
            && end >= cp_flushed,
        "recovered end {} / store end {} / expected {end} / checkpoint {cp_flushed}",
        report.commit_log.end,
        store.max_commit_log_offset()
    );
    ensure!(
        end >= flushed,
        "the child reported {flushed} flushed but the log ends at {end}"
    );
    if report.commit_log.truncated_bytes > 0 {
        stats.torn_tails += 1;
        stats.truncated_bytes += report.commit_log.truncated_bytes;
    }

    // Every record, in order, exactly.
    let mut scanned = Vec::with_capacity(count);
    store.scan(CommitLogOffset(0), CommitLogOffset(end), |view| {
        scanned.push(StoredMessage::from_view(&view));
        Ok(ControlFlow::Continue(()))
    })?;
    ensure!(
        scanned.len() == count,
        "scanned {} records, expected {count}",
        scanned.len()
    );
    for (got, want) in scanned.iter().zip(&shadow.messages) {
        ensure!(
            got == want,
            "record at {} differs from the expected message {} of entry {}",
            got.commit_log_offset,
            want.msg_id,
            want.raft
        );
    }

    // Every queue, dense from 0, exactly.
    let mut by_queue: BTreeMap<(String, QueueId), Vec<&StoredMessage>> = BTreeMap::new();
    for m in &shadow.messages[..count] {
        by_queue
            .entry((m.topic.clone(), m.queue_id))
            .or_default()
            .push(m);
    }
    for topic in TOPICS {
        for (queue_id, min, max) in store.topic_queue_offsets(topic) {
            let expected = by_queue
                .get(&(topic.to_string(), queue_id))
                .map_or(&[][..], Vec::as_slice);
            ensure!(
                (min, max) == (QueueOffset(0), QueueOffset(expected.len() as u64)),
                "queue {topic}:{queue_id} has offsets [{min}, {max}), expected [0, {})",
                expected.len()
            );
            let pulled = common::pull_all(&store, topic, queue_id, QueueOffset(0));
            ensure!(
                pulled.len() == expected.len() && pulled.iter().zip(expected).all(|(g, w)| g == *w),
                "queue {topic}:{queue_id} pulled {} messages that differ from the {} expected",
                pulled.len(),
                expected.len()
            );
        }
    }
    for ((topic, queue_id), expected) in &by_queue {
        ensure!(
            store.queue_offsets(topic, *queue_id).map(|(_, max)| max)
                == Some(QueueOffset(expected.len() as u64)),
            "queue {topic}:{queue_id} is missing"
        );
    }
    if let Some(last) = shadow.messages[..count].last() {
        ensure!(
            store.message_by_id(&last.msg_id).as_ref() == Some(last),
            "the last message is not found by id"
        );
    }
    store.close()?;
    Ok(n)
}

/// Runs the child once and kills it at a random moment. Returns what it printed.
fn run_child(
    exe: &Path,
    dir: &Path,
    mode: FlushMode,
    rng: &mut StdRng,
    stats: &mut Stats,
) -> anyhow::Result<Observed> {
    let stderr_path = dir.with_extension("child-stderr");
    let mut child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(
            CHILD_MODE_ENV,
            if mode == FlushMode::Sync {
                "sync"
            } else {
                "async"
            },
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("spawning the child")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut observed = Observed::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let kill_early = rng.random_bool(0.15);
    let target = rng.random_range(1..=60u64);
    let mut appended_lines = 0u64;
    if kill_early {
        // Most likely during the child's own open and recovery.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
    } else {
        while appended_lines < target {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    if line.contains("@@ APPENDED") {
                        appended_lines += 1;
                    }
                    observed.apply(&line)?;
                }
                Err(_) => break, // the child ended or the deadline passed
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..1_500)));
    }
    child.kill().context("killing the child")?; // SIGKILL on Unix
    let status = child.wait()?;
    reader.join().ok();
    for line in rx.try_iter() {
        observed.apply(&line)?;
    }
    if observed.ready.is_none() {
        stats.kills_before_ready += 1;
    }
    if !kill_early && observed.ready.is_none() {
        let mut stderr = String::new();
        std::fs::File::open(&stderr_path)?.read_to_string(&mut stderr)?;
        bail!("the child never became ready ({status}); its stderr:\n{stderr}");
    }
    if status.success() {
        info!("the child ran until its own deadline");
    }
    Ok(observed)
}

/// Runs the crash tests of this binary one at a time. A child spawned while another
/// test thread of this process holds its store open inherits a duplicate of that
/// store's `LOCK` descriptor until the child's `exec` closes it, and a `flock` lock
/// belongs to the open file description, so that other store would stay locked for
/// that moment — long enough, on a loaded machine, for its next child to find it
/// locked.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kill the child at random moments; check every recovery; then go on ourselves.
fn crash_recovery(mode: FlushMode) -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    init_tracing();
    let iterations: u64 = match std::env::var("STORE_CRASH_ITERATIONS") {
        Ok(v) => v.parse()?,
        Err(_) => 30,
    };
    let seed: u64 = match std::env::var("STORE_CRASH_SEED") {
        Ok(v) => v.parse()?,
        Err(_) => rand::rng().random(),
    };
    info!(
        ?mode,
        iterations, seed, "crash test (rerun with STORE_CRASH_SEED={seed})"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir()?;
    let dir = root.path().join("store");
    let config = config(&dir, mode);
    let exe = std::env::current_exe()?;
    let mut shadow = Shadow::new(config.commit_log_file_size_bytes);
    let mut stats = Stats::default();
    let mut verified = 0u64;

    for iteration in 0..iterations {
        let observed = run_child(&exe, &dir, mode, &mut rng, &mut stats)?;
        if !dir.join("checkpoint").exists() {
            info!(iteration, "killed before the store was ever created");
            continue;
        }
        let acknowledged = observed.appended.map_or(verified, |(b, _)| b);
        let appended_up_to = observed.appending.unwrap_or(verified);
        if let Some((b, end)) = observed.appended {
            shadow.extend_to(b);
            ensure!(
                shadow.at(b).0 == end,
                "the child reported entry {b} ending at {end}, the shadow at {}",
                shadow.at(b).0
            );
        }
        let n = check_store(
            &config,
            &mut shadow,
            acknowledged.max(verified),
            appended_up_to.max(verified),
            observed.flushed,
            observed.ready.is_some(),
            &mut stats,
        )
        .with_context(|| format!("iteration {iteration} (seed {seed}), child saw {observed:?}"))?;
        if n < appended_up_to {
            stats.entries_lost_in_flight += 1;
        }
        stats.acknowledged += acknowledged.saturating_sub(verified);
        info!(
            iteration,
            entries = n,
            ?observed,
            "--- recovered and verified"
        );
        verified = n;
    }
    info!(
        ?stats,
        "--- all kills recovered; append more ourselves, close, reopen"
    );
    ensure!(
        stats.acknowledged > 0,
        "no append was ever acknowledged: the test tested nothing"
    );

    let (store, _) = MessageStore::open_without_background(config.clone())?;
    for b in verified + 1..=verified + 20 {
        append(&store, b, &entry(b));
    }
    store.close()?;
    let (store, _) = MessageStore::open_without_background(config.clone())?;
    ensure!(store.tail().last_raft.map(|r| r.index) == Some(verified + 20));
    drop(store);
    // A drop is an unclean shutdown, as `check_store` expects of a kill.
    check_store(
        &config,
        &mut shadow,
        verified + 20,
        verified + 20,
        0,
        true,
        &mut stats,
    )?;
    Ok(())
}

/// Kills a child appending with `FlushMode::Sync`.
#[test]
fn crash_recovery_sync_flush() -> anyhow::Result<()> {
    crash_recovery(FlushMode::Sync)
}

/// Kills a child appending with `FlushMode::Async` and a 5 ms background flush and
/// checkpoint.
#[test]
fn crash_recovery_async_flush() -> anyhow::Result<()> {
    crash_recovery(FlushMode::Async)
}
