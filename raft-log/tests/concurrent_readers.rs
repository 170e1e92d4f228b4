//! Readers and the writer share one raft-log safely: while one task appends (with many
//! appends in flight), truncates and purges, reader tasks on other threads keep reading
//! bounded and unbounded ranges, and every read they get is a consistent slice of some
//! state of the log: consecutive indexes, increasing log ids, intact payloads.
//!
//! `entries_stream` reads in steps and is atomic only per step (openraft streams committed
//! entries, which are neither truncated nor purged under it): across steps it promises
//! consecutive indexes or a "hole" error, and intact payloads, but a truncation between
//! two steps may change the term, so log-id order is not checked for it.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::ensure;
use common::log_id;
use common::normal_entry;
use common::open_store;
use common::Entry;
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

fn body(index: u64, term: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (index * 7 + term * 13 + j as u64) as u8)
        .collect()
}

/// Checks one read: consecutive, (if `atomic`) increasing, each payload what its log id
/// implies.
fn check_slice(entries: &[Entry], atomic: bool) -> anyhow::Result<()> {
    for pair in entries.windows(2) {
        ensure!(pair[1].index() == pair[0].index() + 1, "hole in a read");
        if atomic {
            ensure!(
                pair[0].log_id() < pair[1].log_id(),
                "log ids not increasing"
            );
        }
    }
    for entry in entries {
        let id = entry.log_id();
        let EntryPayload::Normal(command) = &entry.payload else {
            anyhow::bail!("not a normal entry");
        };
        ensure!(command.tag == id.index, "tag of {id} is {}", command.tag);
        let expected = body(id.index, id.leader_id.term, command.body.len());
        ensure!(command.body == expected, "payload of {id} damaged");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_consistent_slices_while_the_writer_mutates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open_store(dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for seed in 0..3u64 {
        let mut reader = store.get_log_reader().await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = rng.random_range(0..3000);
                let end = start + rng.random_range(1..400);
                match rng.random_range(0..3) {
                    0 => check_slice(&reader.limited_get_log_entries(start, end).await?, true)?,
                    1 => check_slice(&reader.try_get_log_entries(start..end).await?, true)?,
                    _ => {
                        let items: Vec<_> = reader.entries_stream(start..end).await.collect().await;
                        let mut entries = Vec::new();
                        for item in items {
                            match item {
                                Ok(entry) => entries.push(entry),
                                // A purge or truncation between two steps.
                                Err(e) if e.to_string().contains("hole in the log") => break,
                                Err(e) => return Err(e.into()),
                            }
                        }
                        check_slice(&entries, false)?;
                    }
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(reads)
        }));
    }

    let mut rng = StdRng::seed_from_u64(99);
    let mut term = 1;
    let mut max_term = 1;
    let mut next = 0u64;
    let mut purged: Option<u64> = None;
    let mut in_flight = FuturesUnordered::new();
    while next < 3000 {
        let count = rng.random_range(1..5);
        let batch: Vec<Entry> = (next..next + count)
            .map(|i| {
                normal_entry(
                    log_id(term, 1, i),
                    i,
                    body(i, term, rng.random_range(10..2000)),
                )
            })
            .collect();
        next += count;
        let (tx, rx) = TestConfig::oneshot();
        store.append(batch, IOFlushed::signal(tx)).await?;
        in_flight.push(rx);
        if in_flight.len() >= 32 {
            if let Some(done) = in_flight.next().await {
                done??;
            }
        }
        match rng.random_range(0..100) {
            0..=2 if next > 50 => {
                // Cut a few entries (some maybe still in flight) and continue with a new
                // term, sometimes below the cut tail's term.
                let keep = next - rng.random_range(1..20);
                if purged.is_some_and(|p| keep <= p) {
                    continue;
                }
                let mut reader = store.get_log_reader().await;
                let Some(keep_id) = reader
                    .try_get_log_entries(keep..=keep)
                    .await?
                    .first()
                    .map(|e| e.log_id())
                else {
                    continue;
                };
                store.truncate_after(Some(keep_id)).await?;
                next = keep + 1;
                max_term += 1;
                term = if rng.random_bool(0.5) {
                    max_term
                } else {
                    keep_id.leader_id.term
                };
            }
            3 if next > 500 => {
                let upto = next - 400;
                if purged.is_none_or(|p| p < upto) {
                    // The entry at `upto` has the current term or an older one; find it.
                    let mut reader = store.get_log_reader().await;
                    let found = reader.try_get_log_entries(upto..=upto).await?;
                    if let Some(entry) = found.first() {
                        store.purge(entry.log_id()).await?;
                        purged = Some(upto);
                    }
                }
            }
            _ => {}
        }
    }
    while let Some(done) = in_flight.next().await {
        done??;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total_reads = 0;
    for reader in readers {
        total_reads += reader.await??;
    }
    ensure!(total_reads > 100, "readers barely ran: {total_reads} reads");

    let all = common::read_all(&mut store).await?;
    check_slice(&all, true)?;
    ensure!(all.last().map(|e| e.index()) == Some(next - 1));
    Ok(())
}
