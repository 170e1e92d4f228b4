//! The on-disk format is a protocol: a directory written by format version 1 (kept in
//! `tests/compat/v1/`) must still open and read back exactly, whatever changes later.
//!
//! The fixture holds a vote, a committed id, a purge, a truncation to a lower term (so
//! two generations) and entries spread over several 64 KiB chunks. To regenerate it after
//! a deliberate format change (and a `FORMAT_VERSION` bump, with a new directory), run
//! this test with `RAFT_LOG_WRITE_COMPAT_FIXTURE=1`.

mod common;

use std::path::Path;
use std::path::PathBuf;

use common::append_durably;
use common::log_id;
use common::normal_entry;
use common::open_store;
use common::read_all;
use common::vote;
use common::Entry;
use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/v1")
}

fn body(index: u64, term: u64) -> Vec<u8> {
    let len = 200 + (index % 7) as usize * 300;
    (0..len)
        .map(|j| (index * 31 + term * 7 + j as u64) as u8)
        .collect()
}

fn entry(term: u64, index: u64) -> Entry {
    normal_entry(log_id(term, 1, index), index, body(index, term))
}

/// The log the fixture holds once written: indexes 21..=199, term 1 up to 119, then the
/// term-2 entries that replaced a truncated term-3 tail.
fn expected_entries() -> Vec<Entry> {
    (21..120)
        .map(|i| entry(1, i))
        .chain((120..200).map(|i| entry(2, i)))
        .collect()
}

async fn write_fixture(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut store = open_store(dir)?;
    store.save_vote(&vote(3, 1, true)).await?;
    append_durably(&mut store, (0..120).map(|i| entry(1, i)).collect()).await?;
    append_durably(&mut store, (120..180).map(|i| entry(3, i)).collect()).await?;
    store.truncate_after(Some(log_id(1, 1, 119))).await?;
    append_durably(&mut store, (120..200).map(|i| entry(2, i)).collect()).await?;
    store.save_committed(Some(log_id(2, 1, 150))).await?;
    store.purge(log_id(1, 1, 20)).await?;
    store.close().await?;
    std::fs::remove_file(dir.join("LOCK")).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    })?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for item in std::fs::read_dir(from)? {
        let item = item?;
        std::fs::copy(item.path(), to.join(item.file_name()))?;
    }
    Ok(())
}

/// Format version 1 opens and reads back: entries, vote, committed, purge point; and the
/// log accepts new entries after it.
#[tokio::test]
async fn format_v1_fixture_still_reads() -> anyhow::Result<()> {
    if std::env::var_os("RAFT_LOG_WRITE_COMPAT_FIXTURE").is_some() {
        write_fixture(&fixture_dir()).await?;
    }
    // Work on a copy: opening takes a lock and may repair a tail.
    let dir = tempfile::tempdir()?;
    copy_dir(&fixture_dir(), dir.path())?;

    let mut store = open_store(dir.path())?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 199)));
    assert_eq!(store.read_committed().await?, Some(log_id(2, 1, 150)));
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await?, Some(vote(3, 1, true)));
    assert_eq!(read_all(&mut store).await?, expected_entries());

    append_durably(&mut store, vec![entry(4, 200)]).await?;
    assert_eq!(
        read_all(&mut store).await?.len(),
        expected_entries().len() + 1
    );
    Ok(())
}
