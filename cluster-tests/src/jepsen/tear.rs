//! Torn tails: what a crash mid-write leaves in a stopped node's files, made by hand
//! on a plain disk (lazyfs's power loss makes them for real).
//!
//! A crash can only take back bytes that were never fsync'd. For the CommitLog the
//! store's checkpoint says which those are: every byte below its `flushed` offset
//! was fsync'd before the checkpoint was written, so no crash can lose it. Zeroing
//! such a byte is disk corruption, which recovery rightly refuses to open (see
//! `broker_store::commit_log`), not a torn tail. [`tear_commit_log`] therefore
//! never reaches below the checkpoint: when everything a node wrote was already
//! checkpointed (an idle node), its CommitLog has no tail to tear.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use broker_store::checkpoint::Checkpoint;

/// What [`tear_commit_log`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitLogTear {
    /// No CommitLog file holds any data.
    Empty,
    /// Every written byte is below the checkpoint (durable): nothing was torn.
    Durable { end: u64, flushed: u64 },
    /// `zeroed` bytes ending at `end` (global CommitLog offsets) were zeroed.
    Zeroed {
        file: PathBuf,
        zeroed: u64,
        end: u64,
        flushed: u64,
    },
}

impl std::fmt::Display for CommitLogTear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "the CommitLog is empty"),
            Self::Durable { end, flushed } => write!(
                f,
                "the CommitLog's tail was durable (data ends at {end}, checkpoint at {flushed}): not torn"
            ),
            Self::Zeroed {
                file,
                zeroed,
                end,
                flushed,
            } => write!(
                f,
                "zeroed the last {zeroed} bytes (ending at {end}, checkpoint at {flushed}) of {}",
                file.display()
            ),
        }
    }
}

/// Zeroes up to `cut` bytes at the end of the data in the newest CommitLog file of
/// the store in `store_dir` (a node's `data/store`), never one below the
/// checkpoint's flushed offset. The node must be stopped.
///
/// # Errors
/// A file could not be read or written, or the checkpoint is unreadable.
pub fn tear_commit_log(store_dir: &Path, cut: u64) -> Result<CommitLogTear> {
    let flushed = Checkpoint::load(&store_dir.join("checkpoint"))
        .with_context(|| format!("reading the checkpoint in {}", store_dir.display()))?
        .map_or(0, |c| c.flushed.0);
    let Some((start, path)) = newest_commit_log_file(&store_dir.join("commitlog"))? else {
        return Ok(CommitLogTear::Empty);
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let Some(data_end) = last_nonzero_end(&mut file)? else {
        return Ok(CommitLogTear::Empty);
    };
    let end = start + data_end;
    let zeroed = cut.min(end.saturating_sub(flushed));
    if zeroed == 0 {
        return Ok(CommitLogTear::Durable { end, flushed });
    }
    let from = data_end - zeroed;
    file.seek(SeekFrom::Start(from))?;
    file.write_all(&vec![0u8; zeroed as usize])?;
    file.sync_all()?;
    Ok(CommitLogTear::Zeroed {
        file: path,
        zeroed,
        end,
        flushed,
    })
}

/// The CommitLog file with the highest start offset (its name), with that offset.
fn newest_commit_log_file(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut newest = None;
    for entry in entries {
        let path = entry?.path();
        let start = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(start) = start.filter(|_| path.is_file()) {
            if newest.as_ref().is_none_or(|(s, _)| start > *s) {
                newest = Some((start, path));
            }
        }
    }
    Ok(newest)
}

/// One past the last non-zero byte of `file`, scanning backwards in 1 MiB blocks
/// (CommitLog files are preallocated and zero-filled past the data).
fn last_nonzero_end(file: &mut File) -> Result<Option<u64>> {
    let block = 1u64 << 20;
    let mut buffer = vec![0u8; block as usize];
    let mut position = file.metadata()?.len();
    while position > 0 {
        let start = position.saturating_sub(block);
        let size = (position - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buffer[..size])?;
        if let Some(i) = buffer[..size].iter().rposition(|b| *b != 0) {
            return Ok(Some(start + i as u64 + 1));
        }
        position = start;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use broker_store::{
        MessageDraft, MessageId, MessageStore, QueueId, RaftLogRef, RecordInput, StoreConfig,
    };

    use super::*;

    fn config(dir: &Path) -> StoreConfig {
        let mut config = StoreConfig::for_test(dir);
        // Nothing here may expire or be deleted behind the test's back.
        config.file_reserved_ms = u64::MAX;
        config.disk_high_water_ratio = 1.0;
        config
    }

    fn append(store: &MessageStore, index: u64) {
        let draft = MessageDraft {
            topic: "orders".into(),
            queue_id: QueueId(0),
            msg_id: MessageId([index as u8; 16]),
            body: vec![index as u8 | 1; 300],
            binary_body: true,
            tags: String::new(),
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp_ms: 1_000 + index,
            store_timestamp_ms: 2_000 + index,
            born_host: "127.0.0.1:1".into(),
            reconsume_times: 0,
            producer: None,
        };
        store
            .append_entry(
                RaftLogRef { term: 1, index },
                &[RecordInput::Message(&draft)],
            )
            .expect("append");
    }

    /// Writes `durable` checkpointed entries and `tail` entries past the checkpoint,
    /// then drops the store without closing it (a crash as far as the files go).
    fn crashed_store(dir: &Path, durable: u64, tail: u64) -> (u64, u64) {
        let (store, _) = MessageStore::open_without_background(config(dir)).expect("open");
        for index in 1..=durable {
            append(&store, index);
        }
        let flushed = store.flush().expect("flush").0;
        for index in durable + 1..=durable + tail {
            append(&store, index);
        }
        let end = store.max_commit_log_offset().0;
        drop(store);
        (flushed, end)
    }

    /// The bug a CI smoke run hit: an idle node's whole CommitLog was checkpointed,
    /// the tear zeroed durable bytes, and the node could never start again.
    #[test]
    fn an_idle_nodes_durable_tail_is_not_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (flushed, end) = crashed_store(dir.path(), 20, 0);
        assert_eq!(flushed, end);

        let tear = tear_commit_log(dir.path(), 48).expect("tear");
        assert_eq!(tear, CommitLogTear::Durable { end, flushed });
        let (store, report) = MessageStore::open(config(dir.path())).expect("reopen");
        assert_eq!(report.commit_log.truncated_bytes, 0);
        assert_eq!(store.max_commit_log_offset().0, end);
    }

    #[test]
    fn a_tail_past_the_checkpoint_is_torn_and_recovery_cuts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (flushed, end) = crashed_store(dir.path(), 20, 3);
        assert!(end > flushed);

        let tear = tear_commit_log(dir.path(), 48).expect("tear");
        let CommitLogTear::Zeroed {
            zeroed,
            end: torn_end,
            ..
        } = tear
        else {
            panic!("expected a tear, got {tear:?}");
        };
        assert_eq!((zeroed, torn_end), (48, end));
        let (store, report) = MessageStore::open(config(dir.path())).expect("reopen");
        assert!(report.commit_log.truncated_bytes > 0);
        let kept = store.max_commit_log_offset().0;
        assert!(
            flushed <= kept && kept < end,
            "kept {kept}, flushed {flushed}, end {end}"
        );
    }

    #[test]
    fn a_tear_stops_at_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (flushed, end) = crashed_store(dir.path(), 20, 1);
        let past = end - flushed;

        let tear = tear_commit_log(dir.path(), past + 1_000).expect("tear");
        assert!(
            matches!(tear, CommitLogTear::Zeroed { zeroed, .. } if zeroed == past),
            "{tear:?}"
        );
        let (store, _) = MessageStore::open(config(dir.path())).expect("reopen");
        assert_eq!(store.max_commit_log_offset().0, flushed);
    }
}
