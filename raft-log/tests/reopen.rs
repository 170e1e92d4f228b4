//! Open → write → close (or drop) → reopen → check, one behaviour per test, plus the
//! bounded-read and bounded-memory properties that need a log bigger than the cache.
//!
//! All tests use `LogStoreConfig::for_test`: 64 KiB chunks, a 128 KiB payload cache and
//! 16 KiB bounded reads, so a few hundred KiB of entries already rotate chunks, evict
//! payloads and read back from chunk files.

mod common;

use anyhow::Context;
use common::append_durably;
use common::log_id;
use common::normal_entry;
use common::open_store;
use common::read_all;
use common::vote;
use common::Entry;
use common::TestConfig;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;
use raft_log_store::OpenError;

/// `count` entries of term 1 from `first`, each with a `body_len`-byte body derived from
/// its index (so a mixed-up payload is visible).
fn entries(first: u64, count: u64, body_len: usize) -> Vec<Entry> {
    (first..first + count)
        .map(|i| normal_entry(log_id(1, 1, i), i, body(i, body_len)))
        .collect()
}

fn body(index: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (index as usize * 31 + j) as u8).collect()
}

/// The store's chunk files (`*.wal`), oldest first (their names sort by offset).
fn chunk_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no chunk file in {}", dir.display());
    Ok(files)
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

/// Entries, vote, committed id and purge point written before a clean close are all there
/// after reopen, including entries whose payloads were evicted and are read from disk.
#[tokio::test]
async fn reopen_restores_entries_vote_committed_and_purged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let written = entries(0, 300, 1000); // ~300 KiB: several chunks, beyond the cache

    {
        let mut store = open_store(dir.path())?;
        store.save_vote(&vote(3, 1, true)).await?;
        append_durably(&mut store, written.clone()).await?;
        store.save_committed(Some(log_id(1, 1, 250))).await?;
        store.purge(log_id(1, 1, 9)).await?;
        store.close().await?;
    }

    let mut store = open_store(dir.path())?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 9)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 299)));
    assert_eq!(store.read_committed().await?, Some(log_id(1, 1, 250)));
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await?, Some(vote(3, 1, true)));

    let got = read_all(&mut store).await?;
    assert_eq!(got, written[10..].to_vec());

    let stats = store.stats()?;
    assert_eq!(stats.first_index, Some(10));
    assert_eq!(stats.last_index, Some(299));
    assert_eq!(stats.entry_count, 290);
    assert!(
        stats.payload_cache_misses > 0,
        "old entries must come from disk: {stats:?}"
    );
    Ok(())
}

/// A store dropped without `close` (as when the process exits normally) still has every
/// acknowledged entry on reopen.
#[tokio::test]
async fn drop_without_close_keeps_acknowledged_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let written = entries(0, 50, 100);
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, written.clone()).await?;
    }
    let mut store = open_store(dir.path())?;
    assert_eq!(read_all(&mut store).await?, written);
    Ok(())
}

/// `truncate_after` survives a reopen, and the log continues from the kept entry with a
/// new leader's entries.
#[tokio::test]
async fn truncate_after_then_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, entries(0, 200, 1000)).await?;
        store.truncate_after(Some(log_id(1, 1, 119))).await?;
        let replacement: Vec<Entry> = (120..130)
            .map(|i| normal_entry(log_id(2, 2, i), i, body(i + 7, 50)))
            .collect();
        append_durably(&mut store, replacement).await?;
        store.close().await?;
    }

    let mut store = open_store(dir.path())?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_log_id, Some(log_id(2, 2, 129)));
    let got = read_all(&mut store).await?;
    assert_eq!(indexes(&got), (0..130).collect::<Vec<_>>());
    assert_eq!(got[119], entries(119, 1, 1000)[0]);
    assert_eq!(
        got[120],
        normal_entry(log_id(2, 2, 120), 120, body(127, 50))
    );
    Ok(())
}

/// `truncate_after(None)` empties the log, durably.
#[tokio::test]
async fn truncate_everything_then_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, entries(0, 20, 10)).await?;
        store.truncate_after(None).await?;
        store.close().await?;
    }
    let mut store = open_store(dir.path())?;
    assert_eq!(store.get_log_state().await?.last_log_id, None);
    assert!(read_all(&mut store).await?.is_empty());
    Ok(())
}

/// A purge survives a reopen, frees whole chunk files, and a purge beyond the last entry
/// (what installing a snapshot does) leaves an empty log that continues after it.
#[tokio::test]
async fn purge_then_reopen_frees_chunks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let before;
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, entries(0, 400, 1000)).await?;
        before = store.disk_usage_bytes()?;
        store.purge(log_id(1, 1, 299)).await?;
        store.close().await?;
    }

    let mut store = open_store(dir.path())?;
    let after = store.disk_usage_bytes()?;
    assert!(
        after < before / 2,
        "purge must free chunks: {before} -> {after}"
    );
    let chunk_files = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .count();
    assert!(
        chunk_files <= 4,
        "purged chunk files are unlinked, {chunk_files} left"
    );
    let got = read_all(&mut store).await?;
    assert_eq!(indexes(&got), (300..400).collect::<Vec<_>>());

    store.purge(log_id(5, 1, 1000)).await?;
    store.close().await?;

    let mut store = open_store(dir.path())?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(5, 1, 1000)));
    assert_eq!(state.last_log_id, Some(log_id(5, 1, 1000)));
    append_durably(
        &mut store,
        vec![normal_entry(log_id(5, 1, 1001), 1, vec![1])],
    )
    .await?;
    assert_eq!(indexes(&read_all(&mut store).await?), vec![1001]);
    Ok(())
}

/// A crash can leave the last record half-written; open truncates it and keeps the rest.
#[tokio::test]
async fn torn_last_record_is_truncated_on_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, entries(0, 10, 500)).await?;
        store.close().await?;
    }

    // Cut the newest chunk file in the middle of its last record (an entry of ~520 bytes).
    let newest = chunk_files(dir.path())?.last().cloned().expect("non-empty");
    let len = std::fs::metadata(&newest)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(&newest)?;
    file.set_len(len - 100)?;
    drop(file);

    let mut store = open_store(dir.path())?;
    let got = read_all(&mut store).await?;
    assert_eq!(got, entries(0, 9, 500));
    // The log continues where the surviving prefix ends.
    append_durably(&mut store, entries(9, 1, 5)).await?;
    store.close().await?;
    let mut store = open_store(dir.path())?;
    assert_eq!(
        indexes(&read_all(&mut store).await?),
        (0..10).collect::<Vec<_>>()
    );
    Ok(())
}

/// A crash while the next record is being written leaves a prefix of it after the
/// last whole record (the Jepsen torn-tail nemesis makes this by appending up to 17
/// of the chunk's first bytes, which begin a state record of at least 18 bytes):
/// open drops it and loses nothing that was durable.
#[tokio::test]
async fn a_partly_written_next_record_is_truncated_on_open() -> anyhow::Result<()> {
    for prefix in [1usize, 3, 8, 16, 17] {
        let dir = tempfile::tempdir()?;
        {
            let mut store = open_store(dir.path())?;
            append_durably(&mut store, entries(0, 10, 500)).await?;
            store.close().await?;
        }
        let newest = chunk_files(dir.path())?.last().cloned().expect("non-empty");
        let mut bytes = std::fs::read(&newest)?;
        assert_eq!(
            bytes[..4],
            [0, 0, 0, 5],
            "a chunk starts with a state record"
        );
        let start = bytes[..prefix].to_vec();
        bytes.extend_from_slice(&start);
        std::fs::write(&newest, bytes)?;

        let mut store = open_store(dir.path())
            .with_context(|| format!("open after appending a {prefix}-byte record prefix"))?;
        assert_eq!(
            read_all(&mut store).await?,
            entries(0, 10, 500),
            "prefix {prefix}"
        );
        append_durably(&mut store, entries(10, 1, 5)).await?;
        store.close().await?;
        let mut store = open_store(dir.path())?;
        assert_eq!(
            indexes(&read_all(&mut store).await?),
            (0..11).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Damage in the middle of a chunk is not a torn tail: open refuses rather than silently
/// dropping acknowledged entries.
#[tokio::test]
async fn corruption_inside_the_log_fails_the_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut store = open_store(dir.path())?;
        append_durably(&mut store, entries(0, 300, 1000)).await?;
        store.close().await?;
    }
    let oldest = chunk_files(dir.path())?[0].clone();
    let mut bytes = std::fs::read(&oldest)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&oldest, bytes)?;

    let err = LogStore::<TestConfig>::open(LogStoreConfig::for_test(dir.path()))
        .err()
        .ok_or_else(|| anyhow::anyhow!("open of a corrupted log succeeded"))?;
    assert!(matches!(err, OpenError::Open { .. }), "{err}");
    Ok(())
}

/// The directory lock keeps a second store off an open directory.
#[tokio::test]
async fn second_open_of_a_locked_dir_fails() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    let err = LogStore::<TestConfig>::open(LogStoreConfig::for_test(dir.path()))
        .err()
        .ok_or_else(|| anyhow::anyhow!("second open succeeded"))?;
    assert!(matches!(err, OpenError::Open { .. }), "{err}");
    store.close().await?;
    open_store(dir.path())?;
    Ok(())
}

/// An invalid config is rejected before the directory is touched, naming the field.
#[test]
fn invalid_config_names_the_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = LogStoreConfig::for_test(dir.path().join("never-created"));
    config.max_read_bytes = 0;
    let err = LogStore::<TestConfig>::open(config)
        .err()
        .ok_or_else(|| anyhow::anyhow!("invalid config accepted"))?;
    assert!(err.to_string().contains("max_read_bytes"), "{err}");
    assert!(!dir.path().join("never-created").exists());
    Ok(())
}

/// `limited_get_log_entries` stops at `max_read_bytes` (16 KiB here) but always returns at
/// least one entry, however large.
#[tokio::test]
async fn bounded_reads_cap_bytes_but_return_one_entry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open_store(dir.path())?;
    append_durably(&mut store, entries(0, 100, 1000)).await?;
    append_durably(&mut store, entries(100, 1, 100_000)).await?;
    let mut reader = store.get_log_reader().await;

    let got = reader.limited_get_log_entries(0, 101).await?;
    // ~1 KiB each once encoded: 15 fit in 16 KiB, the 16th would pass it.
    assert!((10..=16).contains(&got.len()), "{} entries", got.len());
    assert_eq!(indexes(&got), (0..got.len() as u64).collect::<Vec<_>>());

    let got = reader.limited_get_log_entries(100, 101).await?;
    assert_eq!(
        indexes(&got),
        vec![100],
        "an oversized entry is still returned alone"
    );

    let got = reader.limited_get_log_entries(99, 101).await?;
    assert_eq!(indexes(&got), vec![99], "the next entry would pass the cap");
    Ok(())
}

/// `entries_stream` yields the whole range in order although it reads it in bounded steps.
#[tokio::test]
async fn entries_stream_yields_the_whole_range_in_steps() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open_store(dir.path())?;
    let written = entries(0, 300, 1000);
    append_durably(&mut store, written.clone()).await?;
    store.purge(log_id(1, 1, 4)).await?;

    let mut reader = store.get_log_reader().await;
    let streamed: Vec<Entry> = reader
        .entries_stream(0..1000)
        .await
        .map(|r| r.map_err(anyhow::Error::from))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(streamed, written[5..].to_vec());
    Ok(())
}

/// Payload memory stays bounded by the cache plus the open chunk(s), not the log size.
#[tokio::test]
async fn payload_memory_is_bounded_by_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LogStoreConfig::for_test(dir.path());
    let bound = config.log_cache_capacity_bytes + 2 * config.chunk_max_bytes;
    let mut store = LogStore::<TestConfig>::open(config)?;
    for batch in 0..40 {
        append_durably(&mut store, entries(batch * 50, 50, 1000)).await?;
    }
    // One more append after the flushes lets the cache evict what they made evictable.
    append_durably(&mut store, entries(2000, 1, 10)).await?;

    let stats = store.stats()?;
    eprintln!("after ~2 MB of entries: {stats:?}");
    assert!(stats.disk_usage_bytes > 2_000_000, "{stats:?}");
    assert!(
        stats.payload_cache_bytes <= bound,
        "cache holds {} bytes, bound {bound}: {stats:?}",
        stats.payload_cache_bytes
    );
    assert_eq!(read_all(&mut store).await?.len(), 2001);
    Ok(())
}

/// An append is readable through an existing reader as soon as `append` returns, before
/// its flush callback fires.
#[tokio::test]
async fn appended_entries_are_readable_before_the_callback() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open_store(dir.path())?;
    let mut reader = store.get_log_reader().await;
    let (tx, rx) = {
        use openraft::type_config::TypeConfigExt;
        TestConfig::oneshot()
    };
    store
        .append(entries(0, 5, 10), openraft::storage::IOFlushed::signal(tx))
        .await?;
    assert_eq!(
        indexes(&reader.try_get_log_entries(0..5).await?),
        vec![0, 1, 2, 3, 4]
    );
    rx.await??;
    Ok(())
}
