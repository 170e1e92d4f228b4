//! Power-loss-like damage above the checkpointed flushed offset is truncated exactly at
//! the first damaged entry; everything before it is intact and the store goes on.
//!
//! # How
//!
//! A SIGKILL keeps the page cache (see `store_crash.rs`), so this test damages the
//! files the way a power cut can instead. Each trial appends random entries (1–5
//! messages of 100 B to 7 KiB over 64 KiB CommitLog files), flushes (the checkpoint now
//! says everything up to offset `F` is durable), appends more entries over one to
//! three more files, and drops the store without closing it. It then damages only bytes
//! at or above `F` in one of these ways:
//!
//! * lost pages: each 4 KiB page holding bytes above `F` is, at random, reset to what
//!   it held at the last flush (zeros above `F`), and the newest file may be lost
//!   entirely (its creation never reached the disk);
//! * lost suffix: everything from a random point on is zeros;
//! * torn writes: a few random runs of bytes are overwritten with garbage.
//!
//! The first changed byte that matters (inside a record, or a blank record's header)
//! lies in some entry; counting a blank written on an entry's way to the next file as
//! part of that entry, recovery must end the log exactly where that entry begins (or at
//! the old end if only bytes past it changed), report the written bytes it dropped,
//! keep every earlier message byte for byte, and take new appends there, which survive
//! a clean reopen.
//!
//! `STORE_POWER_LOSS_TRIALS` (default 60) and `STORE_POWER_LOSS_SEED` tune a run.

mod common;

use std::path::Path;

use broker_store::checkpoint::Checkpoint;
use broker_store::{CommitLogOffset, MessageStore, StoreConfig};
use common::{
    append_sent, assert_store_holds, commit_log_file, commit_log_files, draft,
    expected_truncated_bytes, init_tracing, test_config, write_at, Sent,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::info;

const PAGE: u64 = 4096;

/// An appended entry and the CommitLog bytes it wrote.
struct Entry {
    messages: Vec<Sent>,
    /// Where its first written byte is: its first record, or the blank record it wrote
    /// to reach the next file.
    extent_start: u64,
    end: u64,
}

/// Appends an entry of random messages; `n` numbers messages, `index` entries.
fn append_entry(
    store: &MessageStore,
    rng: &mut StdRng,
    n: &mut u64,
    index: &mut u64,
    previous_end: u64,
) -> Entry {
    let count = rng.random_range(1..=5u64);
    let drafts = (0..count)
        .map(|_| {
            *n += 1;
            let len = if rng.random_bool(0.2) {
                rng.random_range(2_000..7_000)
            } else {
                rng.random_range(100..600)
            };
            draft(["a", "b"][(*n % 2) as usize], (*n % 3) as u32, *n, len)
        })
        .collect();
    *index += 1;
    let messages = append_sent(store, *index, drafts);
    let first = messages[0].appended;
    let last = messages.last().expect("an entry has messages").appended;
    Entry {
        // A record is placed after the previous one unless it had to move to the next
        // file, leaving a blank from `previous_end` on.
        extent_start: previous_end.min(first.commit_log_offset.0),
        end: last.commit_log_offset.0 + u64::from(last.size),
        messages,
    }
}

/// The byte ranges whose content recovery reads: every record, and the 8-byte header of
/// every blank record (the rest of a blank is never read).
fn meaningful_ranges(entries: &[Entry], file_size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut position = 0;
    for entry in entries {
        for s in &entry.messages {
            let offset = s.appended.commit_log_offset.0;
            if offset > position && offset.is_multiple_of(file_size) {
                ranges.push((position, position + 8)); // the blank's header
            }
            position = offset + u64::from(s.appended.size);
            ranges.push((offset, position));
        }
    }
    ranges
}

/// How the power cut damaged the files.
#[derive(Debug, Clone, Copy)]
enum Damage {
    LostPages,
    LostSuffix,
    TornWrites,
}

/// One trial: write, damage, recover, check, go on.
fn trial(dir: &Path, rng: &mut StdRng, trial: u64) {
    let config: StoreConfig = test_config(dir);
    let file_size = config.commit_log_file_size_bytes;
    let (store, _) =
        MessageStore::open_without_background(config.clone()).expect("opening a new store");
    let (mut n, mut index) = (0u64, 0u64);
    let mut entries: Vec<Entry> = Vec::new();
    let durable_entries = rng.random_range(1..40);
    for _ in 0..durable_entries {
        let previous_end = entries.last().map_or(0, |e| e.end);
        entries.push(append_entry(&store, rng, &mut n, &mut index, previous_end));
    }
    let flushed = store.flush().expect("flushing").0;
    let target_end = flushed + rng.random_range(5_000..3 * file_size);
    while entries.last().map_or(0, |e| e.end) < target_end {
        let previous_end = entries.last().map_or(0, |e| e.end);
        entries.push(append_entry(&store, rng, &mut n, &mut index, previous_end));
    }
    let end = entries.last().map_or(0, |e| e.end);
    drop(store); // no close: the checkpoint stays at `flushed`
    let checkpoint = Checkpoint::load(&config.checkpoint_path())
        .expect("reading the checkpoint")
        .expect("a checkpoint");
    assert_eq!(checkpoint.flushed, CommitLogOffset(flushed));

    // Damage, keeping a copy of every file to find the first byte that changed.
    let before: Vec<(u64, Vec<u8>)> = commit_log_files(&config)
        .iter()
        .map(|(start, path)| (*start, std::fs::read(path).expect("reading a file")))
        .collect();
    let damage = match rng.random_range(0..3) {
        0 => Damage::LostPages,
        1 => Damage::LostSuffix,
        _ => Damage::TornWrites,
    };
    match damage {
        Damage::LostPages => {
            let keep = rng.random_range(0.0..0.9);
            for (start, path) in commit_log_files(&config) {
                for page in (0..file_size).step_by(PAGE as usize) {
                    let (from, to) = ((start + page).max(flushed), start + page + PAGE);
                    if to > flushed && from < end && !rng.random_bool(keep) {
                        common::zero_range(&path, from - start, to - start);
                    }
                }
            }
            let files = commit_log_files(&config);
            let (last_start, last_path) = files.last().expect("files");
            if *last_start > flushed && rng.random_bool(0.3) {
                std::fs::remove_file(last_path).expect("losing the newest file");
            }
        }
        Damage::LostSuffix => {
            let from = rng.random_range(flushed..end);
            for (start, path) in commit_log_files(&config) {
                if start + file_size > from {
                    common::zero_range(&path, from.saturating_sub(start), file_size);
                }
            }
        }
        Damage::TornWrites => {
            let last_file_end = before.last().map_or(0, |(start, _)| start + file_size);
            for _ in 0..rng.random_range(1..4) {
                // Anywhere above the checkpoint, a little past the end included.
                let at = rng.random_range(flushed..(end + 100).min(last_file_end));
                let len = rng.random_range(1..64u64).min(file_size - at % file_size);
                let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                write_at(
                    &commit_log_file(&config, at / file_size * file_size),
                    at % file_size,
                    &garbage,
                );
            }
        }
    }
    let after: Vec<Option<Vec<u8>>> = before
        .iter()
        .map(|(start, _)| std::fs::read(commit_log_file(&config, *start)).ok())
        .collect();
    let changed = |offset: u64| -> bool {
        let i = before
            .iter()
            .position(|(s, _)| *s <= offset && offset < s + file_size)
            .expect("a file held this offset");
        let pos = (offset - before[i].0) as usize;
        after[i]
            .as_ref()
            .is_none_or(|now| now[pos] != before[i].1[pos])
    };
    let first_damage = meaningful_ranges(&entries, file_size)
        .into_iter()
        .flat_map(|(from, to)| from.max(flushed)..to)
        .find(|offset| changed(*offset));
    let (cut, kept) = match first_damage {
        Some(at) => {
            let lost = entries
                .iter()
                .position(|e| e.extent_start <= at && at < e.end)
                .expect("damage lies in an entry");
            (entries[lost].extent_start, lost)
        }
        None => (end, entries.len()),
    };
    assert!(cut >= flushed, "damage stays above the checkpoint");
    let expected_truncated = expected_truncated_bytes(&config, cut);
    info!(
        trial,
        ?damage,
        flushed,
        end,
        cut,
        first_damage,
        expected_truncated,
        "--- reopen after the damage"
    );

    let (store, report) =
        MessageStore::open_without_background(config.clone()).expect("reopening after the damage");
    assert_eq!(
        report.commit_log.end,
        CommitLogOffset(cut),
        "trial {trial}: {report:?}"
    );
    assert_eq!(
        report.commit_log.truncated_bytes, expected_truncated,
        "trial {trial}: {report:?}"
    );
    let mut kept_messages: Vec<Sent> = entries[..kept]
        .iter()
        .flat_map(|e| e.messages.iter().cloned())
        .collect();
    assert_store_holds(&store, &kept_messages);
    assert_eq!(
        store.tail().last_raft,
        kept_messages.last().map(|s| s.raft),
        "trial {trial}: the tail is the last kept entry"
    );

    let mut index = kept as u64;
    let again = append_entry(&store, rng, &mut n, &mut index, cut);
    let first = again.messages[0].appended;
    let file_end = (cut / file_size + 1) * file_size;
    let expected_first = if cut + u64::from(first.size) + 8 <= file_end {
        cut
    } else {
        file_end
    };
    assert_eq!(
        first.commit_log_offset,
        CommitLogOffset(expected_first),
        "trial {trial}: the next entry goes on from the cut"
    );
    kept_messages.extend(again.messages);
    store.close().expect("closing");
    let (store, report) = MessageStore::open_without_background(config).expect("reopening");
    assert_eq!(report.commit_log.truncated_bytes, 0);
    assert_store_holds(&store, &kept_messages);
    store.close().expect("closing");
}

/// Many trials of write → power-loss damage above the checkpoint → recover → check.
#[test]
fn power_loss_damage_is_truncated_at_the_first_damaged_entry() {
    init_tracing();
    let trials: u64 = std::env::var("STORE_POWER_LOSS_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("STORE_POWER_LOSS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    info!(
        trials,
        seed, "power loss test (rerun with STORE_POWER_LOSS_SEED={seed})"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    for t in 0..trials {
        let dir = common::fast_tempdir();
        trial(dir.path(), &mut rng, t);
    }
}
