//! A follower truncates an uncommitted tail written by a higher-term leader and then
//! receives the new leader's entries, whose log ids are *smaller* (an older term at the
//! same indexes). raft-log 0.4.6 orders its cache and its chunk-removal test by log id and
//! assumes that order is the append order; these tests pin down the two failures that
//! broke that assumption, and that the store's generation prefix (see
//! `codec::StoredLogId`) prevents both.
//!
//! Both scenarios: term-1 entries 0..10, a term-3 tail 10..200 (several 64 KiB chunks, so
//! a closed chunk's checkpoint names term 3), `truncate_after((1, 9))`, then term-2
//! entries from index 10.

mod common;

use common::append_durably;
use common::log_id;
use common::normal_entry;
use common::read_all;
use common::Entry;
use common::TestConfig;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;

fn run(first: u64, end: u64, term: u64, body_len: usize) -> Vec<Entry> {
    (first..end)
        .map(|i| normal_entry(log_id(term, 1, i), i, vec![term as u8; body_len]))
        .collect()
}

async fn write_term3_tail_then_truncate(store: &mut LogStore<TestConfig>) -> anyhow::Result<()> {
    append_durably(store, run(0, 10, 1, 10)).await?;
    append_durably(store, run(10, 200, 3, 1000)).await?;
    append_durably(store, run(200, 201, 3, 10)).await?;
    store.truncate_after(Some(log_id(1, 1, 9))).await?;
    Ok(())
}

/// With a cache that evicts everything evictable, the term-2 entries in the open chunk
/// must still be readable (raft-log would evict them as "older" than the term-3 checkpoint
/// and then fail every read with "Chunk not found"), before and after a reopen.
#[tokio::test]
async fn lower_term_entries_after_truncation_stay_readable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = LogStoreConfig::for_test(dir.path());
    config.log_cache_capacity_bytes = 0;
    let expected: Vec<Entry> = run(0, 10, 1, 10)
        .into_iter()
        .chain(run(10, 20, 2, 10))
        .collect();

    let mut store = LogStore::<TestConfig>::open(config.clone())?;
    write_term3_tail_then_truncate(&mut store).await?;
    append_durably(&mut store, run(10, 20, 2, 10)).await?;
    assert_eq!(read_all(&mut store).await?, expected);
    store.close().await?;

    let mut store = LogStore::<TestConfig>::open(config)?;
    assert_eq!(read_all(&mut store).await?, expected);
    // And the log goes on normally.
    append_durably(&mut store, run(20, 30, 2, 10)).await?;
    assert_eq!(read_all(&mut store).await?.len(), 30);
    Ok(())
}

/// Purging past the new entries frees the chunks that held the truncated term-3 tail
/// (raft-log would keep that chunk, and every chunk after it, forever).
#[tokio::test]
async fn purge_after_truncation_to_lower_term_frees_chunks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LogStoreConfig::for_test(dir.path());
    let mut store = LogStore::<TestConfig>::open(config.clone())?;
    write_term3_tail_then_truncate(&mut store).await?;
    append_durably(&mut store, run(10, 400, 2, 1000)).await?;
    let before = store.disk_usage_bytes()?;
    store.purge(log_id(2, 1, 390)).await?;
    store.close().await?;

    let mut store = LogStore::<TestConfig>::open(config)?;
    let after = store.disk_usage_bytes()?;
    let got = read_all(&mut store).await?;
    assert_eq!(
        got.iter().map(|e| e.index()).collect::<Vec<_>>(),
        (391..400).collect::<Vec<_>>()
    );
    assert!(
        after < 3 * config_chunk_bytes(),
        "purge must free the chunks of the truncated tail: {before} -> {after} bytes"
    );
    Ok(())
}

fn config_chunk_bytes() -> u64 {
    LogStoreConfig::for_test("unused").chunk_max_bytes
}
