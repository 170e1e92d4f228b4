//! Crash test: a child process appends under concurrent load and is killed with SIGKILL at
//! a random moment, many times over the same directory; after every kill the parent
//! reopens the store and checks it against what the child had reported as acknowledged.
//!
//! # How
//!
//! The child is this test binary re-executed to run [`crash_child`] (an `#[ignore]`d test
//! that does nothing unless `RAFT_LOG_CRASH_CHILD_DIR` is set). It opens the store, keeps
//! [`IN_FLIGHT`] appends of 1–4 entries outstanding, and prints to stdout, in order:
//!
//! - `ACK <index> <term> <hash>` for each entry once its append's flush callback reported
//!   success (the entry is durable);
//! - `VOTE <term>` once `save_vote` returned (the vote is durable);
//! - `PURGE <index>` *before* purging up to an acknowledged index;
//! - `TRUNC <index>` *before* truncating after an index (with all appends quiesced and a
//!   new term voted first, as a new leader would). Half the time the entries appended
//!   after it carry the kept entry's older term, i.e. log ids lower than the truncated
//!   tail's, the case raft-log's own ordering mishandles (see `truncate_to_lower_leader.rs`).
//!
//! Entries carry `hash = FNV-1a(index, body)` in their tag, so any entry read back can be
//! checked on its own. The parent reads the pipe, kills the child after a random delay,
//! and checks on reopen:
//!
//! 1. every acknowledged entry not since covered by a `PURGE`/`TRUNC` line is present with
//!    the same log id and payload;
//! 2. the stored vote is at least the last acknowledged vote;
//! 3. entries exist for exactly the indexes `(last_purged, last]`, with no hole, log ids
//!    strictly increasing, and every payload's hash intact.
//!
//! After a check, what is on disk becomes the baseline for the next iteration.
//!
//! # What it can and cannot detect
//!
//! SIGKILL kills the process, not the machine: the page cache survives, so data that was
//! `write()`n but never fsync'd is still read back. This test therefore catches an
//! acknowledgement that precedes the *write* (a callback fired before the flush thread
//! wrote the records, records lost from a user-space buffer, reordered or torn writes,
//! recovery bugs), but NOT a missing fsync. Proving the fsync needs power-loss simulation
//! (the fault-injection suite, with `fault_skip_fsync`, is for that).
//!
//! `RAFT_LOG_CRASH_ITERATIONS` (default 30) and `RAFT_LOG_CRASH_SEED` tune a run.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::ensure;
use anyhow::Context;
use common::log_id;
use common::normal_entry;
use common::open_store;
use common::vote;
use common::Entry;
use common::LogId;
use common::TestConfig;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;

const CHILD_DIR_ENV: &str = "RAFT_LOG_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "RAFT_LOG_CRASH_CHILD_SEED";

/// Appends the child keeps outstanding.
const IN_FLIGHT: usize = 64;

/// The only node id in this test; terms change, the leader node does not.
const NODE: u64 = 1;

fn fnv1a(index: u64, body: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in index.to_le_bytes().iter().chain(body) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn term_of(log_id: &LogId) -> u64 {
    log_id.leader_id.term
}

/// The child: append, vote, purge and truncate until killed.
#[test]
#[ignore = "child process of crash_recovery_under_concurrent_load; does nothing on its own"]
fn crash_child() -> anyhow::Result<()> {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return Ok(());
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(child_workload(dir.into(), seed))
}

fn say(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    // Straight to the process's stdout (not libtest's capture), one line per write.
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

struct Pending {
    entries: Vec<(u64, u64, u64)>, // (index, term, hash)
}

async fn child_workload(dir: std::path::PathBuf, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = open_store(&dir)?;
    let mut reader = store.get_log_reader().await;

    let state = store.get_log_state().await?;
    let stored_vote = reader.read_vote().await?;
    let mut term = stored_vote
        .as_ref()
        .map_or(0, |v| v.leader_id().term)
        .max(state.last_log_id.as_ref().map_or(0, term_of));
    let mut purged = state.last_purged_log_id.as_ref().map(|l| l.index);
    let mut next_index = state.last_log_id.as_ref().map_or(0, |l| l.index + 1);
    // Log ids of the entries appended in this run or found at start, by index.
    let mut ids: BTreeMap<u64, LogId> = BTreeMap::new();
    if let Some(last) = state.last_log_id {
        ids.insert(last.index, last);
    }

    term += 1;
    store.save_vote(&vote(term, NODE, true)).await?;
    say(format_args!("VOTE {term}"))?;
    say(format_args!("READY {next_index}"))?;
    // Term of the entries appended next: the vote's, except after some truncations, where
    // the "new leader" replicates entries of an older term (lower log ids than the
    // truncated tail, the case raft-log's own ordering gets wrong).
    let mut entry_term = term;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_flight = FuturesUnordered::new();
    while Instant::now() < deadline {
        while in_flight.len() < IN_FLIGHT {
            let count = rng.random_range(1..=4);
            let mut batch: Vec<Entry> = Vec::with_capacity(count);
            let mut pending = Pending {
                entries: Vec::new(),
            };
            for _ in 0..count {
                let len = match rng.random_range(0..100) {
                    0 => rng.random_range(20_000..80_000), // spans chunks
                    1..=10 => rng.random_range(1_000..8_000),
                    _ => rng.random_range(8..600),
                };
                let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let hash = fnv1a(next_index, &body);
                let id = log_id(entry_term, NODE, next_index);
                ids.insert(next_index, id);
                batch.push(normal_entry(id, hash, body));
                pending.entries.push((next_index, entry_term, hash));
                next_index += 1;
            }
            let (tx, rx) = TestConfig::oneshot();
            store.append(batch, IOFlushed::signal(tx)).await?;
            in_flight.push(async move { (rx.await, pending) });
        }

        let Some((result, pending)) = in_flight.next().await else {
            continue;
        };
        result
            .context("flush callback dropped")?
            .context("flush failed")?;
        for (index, term, hash) in pending.entries {
            say(format_args!("ACK {index} {term} {hash}"))?;
        }

        match rng.random_range(0..1000) {
            0..=9 => {
                term += 1;
                entry_term = term;
                store.save_vote(&vote(term, NODE, true)).await?;
                say(format_args!("VOTE {term}"))?;
            }
            10..=19 => {
                // Purge up to an entry well behind the appends in flight (all of which are
                // above `next_index - 4 * IN_FLIGHT - 100`), as openraft purges applied ones.
                let upto = next_index.saturating_sub(4 * IN_FLIGHT as u64 + 100);
                let Some(id) = ids.get(&upto).copied() else {
                    continue;
                };
                if purged.is_some_and(|p| p >= upto) {
                    continue;
                }
                say(format_args!("PURGE {upto}"))?;
                store.purge(id).await?;
                purged = Some(upto);
                ids = ids.split_off(&upto);
            }
            20..=22 => {
                // A new leader's conflicting entries: wait for every append (so no ACK of
                // a truncated entry can follow the TRUNC line), vote, cut, go on.
                while let Some((result, pending)) = in_flight.next().await {
                    result
                        .context("flush callback dropped")?
                        .context("flush failed")?;
                    for (index, term, hash) in pending.entries {
                        say(format_args!("ACK {index} {term} {hash}"))?;
                    }
                }
                let lowest = purged.map_or(0, |p| p + 1);
                let keep = next_index
                    .saturating_sub(rng.random_range(1..40))
                    .max(lowest);
                let Some(keep_id) = ids.get(&keep).copied() else {
                    continue;
                };
                term += 1;
                store.save_vote(&vote(term, NODE, true)).await?;
                say(format_args!("VOTE {term}"))?;
                say(format_args!("TRUNC {keep}"))?;
                store.truncate_after(Some(keep_id)).await?;
                next_index = keep + 1;
                entry_term = if rng.random_bool(0.5) {
                    term_of(&keep_id)
                } else {
                    term
                };
                let _truncated = ids.split_off(&next_index);
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the parent knows must (or may) be on disk.
#[derive(Default)]
struct Oracle {
    /// Acknowledged entries that must be present: index → (term, hash).
    certain: BTreeMap<u64, (u64, u64)>,
    /// Acknowledged entries a later PURGE/TRUNC line may have removed.
    maybe: BTreeMap<u64, (u64, u64)>,
    /// The highest acknowledged vote term.
    vote_term: u64,
    acks: u64,
}

impl Oracle {
    fn apply_line(&mut self, line: &str) -> anyhow::Result<()> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ACK", index, term, hash] => {
                let index: u64 = index.parse()?;
                self.maybe.remove(&index);
                self.certain.insert(index, (term.parse()?, hash.parse()?));
                self.acks += 1;
            }
            ["VOTE", term] => self.vote_term = self.vote_term.max(term.parse()?),
            ["PURGE", upto] => {
                let upto: u64 = upto.parse()?;
                let rest = self.certain.split_off(&(upto + 1));
                let purged = std::mem::replace(&mut self.certain, rest);
                self.maybe.extend(purged);
            }
            ["TRUNC", keep] => {
                let keep: u64 = keep.parse()?;
                let cut = self.certain.split_off(&(keep + 1));
                self.maybe.extend(cut);
            }
            _ => {} // libtest's own output, READY
        }
        Ok(())
    }

    /// Checks the reopened store in `dir`, then makes what is on disk the new baseline.
    async fn check_and_rebase(&mut self, dir: &std::path::Path) -> anyhow::Result<usize> {
        let mut store = open_store(dir)?;
        let mut reader = store.get_log_reader().await;

        let stored_vote = reader.read_vote().await?;
        let stored_term = stored_vote.as_ref().map_or(0, |v| v.leader_id().term);
        ensure!(
            stored_term >= self.vote_term,
            "vote went backwards: stored term {stored_term}, acknowledged {}",
            self.vote_term
        );

        let state = store.get_log_state().await?;
        let entries = reader.try_get_log_entries(..).await?;
        let first_expected = state.last_purged_log_id.as_ref().map_or(0, |p| p.index + 1);
        if let Some(last) = &state.last_log_id {
            let expected_len = (last.index + 1).saturating_sub(first_expected);
            ensure!(
                entries.len() as u64 == expected_len,
                "log state says ({:?}, {last}] but {} entries were read",
                state.last_purged_log_id,
                entries.len()
            );
            if let Some(tail) = entries.last() {
                ensure!(
                    &tail.log_id() == last,
                    "last entry {} != last log id {last}",
                    tail.log_id()
                );
            }
        } else {
            ensure!(
                entries.is_empty(),
                "no last log id but {} entries",
                entries.len()
            );
        }

        let mut present: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut previous: Option<LogId> = None;
        for (offset, entry) in entries.iter().enumerate() {
            let id = entry.log_id();
            ensure!(
                id.index == first_expected + offset as u64,
                "hole: expected index {}, found {}",
                first_expected + offset as u64,
                id.index
            );
            if let Some(previous) = &previous {
                ensure!(
                    previous < &id,
                    "log ids not increasing: {previous} then {id}"
                );
            }
            let EntryPayload::Normal(command) = &entry.payload else {
                bail!("entry {id} is not a normal entry");
            };
            ensure!(
                command.tag == fnv1a(id.index, &command.body),
                "payload of {id} is damaged ({} bytes)",
                command.body.len()
            );
            present.insert(id.index, (term_of(&id), command.tag));
            previous = Some(id);
        }

        for (index, expected) in &self.certain {
            match present.get(index) {
                Some(found) if found == expected => {}
                Some(found) => bail!(
                    "acknowledged entry {index} (term, hash) {expected:?} replaced by {found:?}"
                ),
                None => bail!(
                    "acknowledged entry {index} (term {}) is missing; log is ({:?}, {:?}]",
                    expected.0,
                    state.last_purged_log_id,
                    state.last_log_id
                ),
            }
        }

        let checked = self.certain.len();
        self.certain = present;
        self.maybe.clear();
        self.vote_term = stored_term;
        store.close().await?;
        Ok(checked)
    }
}

/// Kills a child writer at random moments, many times, and checks every recovery.
#[test]
fn crash_recovery_under_concurrent_load() -> anyhow::Result<()> {
    let iterations: u64 = match std::env::var("RAFT_LOG_CRASH_ITERATIONS") {
        Ok(v) => v.parse()?,
        Err(_) => 30,
    };
    let seed: u64 = match std::env::var("RAFT_LOG_CRASH_SEED") {
        Ok(v) => v.parse()?,
        Err(_) => rand::rng().random(),
    };
    eprintln!("crash test: {iterations} iterations, RAFT_LOG_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut oracle = Oracle::default();
    let mut total_acks = 0;

    for iteration in 0..iterations {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the child")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stderr = child.stderr.take().context("child stderr")?;
        let (tx, rx) = mpsc::channel::<String>();
        let pipe_reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A line cut short by the kill has no newline: the child never finished
                // reporting that acknowledgement, so it must not count.
                if line.last() != Some(&b'\n') {
                    break;
                }
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Kill before the store is even open now and then; otherwise at a random point
        // of the workload.
        let kill_early = rng.random_range(0..10) == 0;
        let mut lines = Vec::new();
        let started = Instant::now();
        if !kill_early {
            loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .context("child never became ready")?;
                let ready = line.starts_with("READY");
                lines.push(line);
                if ready {
                    break;
                }
            }
        }
        let delay = if kill_early {
            Duration::from_millis(rng.random_range(0..40))
        } else {
            Duration::from_millis(rng.random_range(20..400))
        };
        std::thread::sleep(delay);
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut err)?;
            bail!("child exited by itself ({status}) at iteration {iteration}: {err}");
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        pipe_reader
            .join()
            .map_err(|_| anyhow::anyhow!("pipe reader panicked"))?;
        lines.extend(rx.try_iter());

        let mut complete = 0;
        for line in &lines {
            oracle.apply_line(line)?;
            complete += 1;
        }
        total_acks += oracle.acks;
        let acks = std::mem::take(&mut oracle.acks);
        let checked = runtime
            .block_on(oracle.check_and_rebase(dir.path()))
            .with_context(|| {
                format!(
                    "iteration {iteration} (seed {seed}), killed {:?} after start, {acks} acks",
                    started.elapsed()
                )
            })?;
        eprintln!(
            "iteration {iteration}: killed after {:?}, {complete} lines, {acks} acks, \
             {checked} acknowledged entries verified, {} entries on disk",
            started.elapsed(),
            oracle.certain.len()
        );
    }
    ensure!(
        total_acks > 0,
        "no append was ever acknowledged: the test checked nothing"
    );
    Ok(())
}
