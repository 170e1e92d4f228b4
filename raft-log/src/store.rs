//! [`LogStore`] (openraft's `RaftLogStorage`) and [`LogReader`] (its `RaftLogReader`).
//!
//! # Shape
//!
//! One [`raft_log::RaftLog`] per directory, shared by the store (the single writer, driven
//! by openraft's core) and any number of readers (replication tasks, the state-machine
//! worker) behind one `std::sync::RwLock`. A std lock rather than an async one because no
//! critical section awaits: writes only encode into raft-log's in-memory buffer and queue
//! it for the flush thread, and reads copy `Arc`'d payloads out of the cache or `pread`
//! at most one bounded read's worth of records. Entries are bincode-decoded after the lock
//! is released.
//!
//! # Durability and ordering
//!
//! raft-log writes records in call order through one flush thread, so every write (vote,
//! append, truncate, purge, commit) reaches the disk in the order openraft issued it; an
//! fsync covers everything queued before it. Hence:
//!
//! - `append` buffers the entries (readable at once, as openraft requires), queues a flush
//!   with `sync = true` and returns; openraft's `IOFlushed` callback fires on the flush
//!   thread after the fsync. raft-log groups every request that arrives within
//!   `flush_batch_wait` of the first into one write + one fsync.
//! - `save_vote` queues the vote and a synced flush and waits for it (openraft requires the
//!   vote on disk before it returns).
//! - `truncate_after` and `purge` are queued with a synced flush but not awaited: a crash
//!   before that fsync brings back entries openraft had removed, which is harmless (they are
//!   uncommitted and will be truncated again, or purged ones were applied already), and any
//!   later acknowledged append is fsync'd after them. The synced flush is also what lets
//!   raft-log unlink purged chunk files (only after the purge record is durable).
//! - `save_committed` is written without an fsync of its own: the next synced flush carries
//!   it, and losing it only means re-applying a little more after a restart.
//!
//! # Generations
//!
//! Log ids are stored as [`StoredLogId`]: `(generation, log id)`, with the generation
//! bumped by every truncation and every open. raft-log decides what it may evict from its
//! cache and which chunk files it may delete by comparing stored log ids, assuming they
//! grow in append order; after a truncation to an older term's entries plain log ids do
//! not, and the generation restores that order (see the type's docs).

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use futures::Stream;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use openraft::type_config::TypeConfigExt;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use raft_log::api::raft_log_writer::RaftLogWriter;

use crate::codec::EncodedEntry;
use crate::codec::StoreMeta;
use crate::codec::StoredLogId;
use crate::codec::StoredVote;
use crate::codec::FORMAT_VERSION;
use crate::config::LogStoreConfig;
use crate::error::OpenError;
use crate::error::StoreError;
use crate::stats::LogStoreStats;
use crate::types::FlushCallback;
use crate::types::RaftLog;

/// State shared by the store and its readers.
struct Shared<C: RaftTypeConfig> {
    /// `None` once [`LogStore::close`] has run.
    log: RwLock<Option<RaftLog<C>>>,
    /// Generation of the entries appended next (see [`StoredLogId`]): one more than any
    /// found at open, bumped by every truncation. Changed only by the writer.
    generation: AtomicU64,
    config: LogStoreConfig,
}

impl<C: RaftTypeConfig> Shared<C> {
    fn read_guard(&self) -> Result<RwLockReadGuard<'_, Option<RaftLog<C>>>, StoreError> {
        self.log.read().map_err(|_| StoreError::Poisoned)
    }

    fn write_guard(&self) -> Result<RwLockWriteGuard<'_, Option<RaftLog<C>>>, StoreError> {
        self.log.write().map_err(|_| StoreError::Poisoned)
    }

    /// Runs `f` on the open log under the read lock.
    fn with_log<T>(&self, f: impl FnOnce(&RaftLog<C>) -> io::Result<T>) -> io::Result<T> {
        let guard = self.read_guard()?;
        let log = guard.as_ref().ok_or(StoreError::Closed)?;
        f(log)
    }

    /// Runs `f` on the open log under the write lock.
    fn with_log_mut<T>(&self, f: impl FnOnce(&mut RaftLog<C>) -> io::Result<T>) -> io::Result<T> {
        let mut guard = self.write_guard()?;
        let log = guard.as_mut().ok_or(StoreError::Closed)?;
        f(log)
    }

    /// Entries with index in `[start, end)`, in index order. With `max_bytes`, stops before
    /// the entry that would take the encoded total past it, but always returns the first
    /// entry present. Missing entries are tolerated only at the start (purged) and the end
    /// (not yet appended); a gap inside is an error.
    fn read_range(
        &self,
        start: u64,
        end: u64,
        max_bytes: Option<u64>,
    ) -> io::Result<Vec<C::Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }

        // Collect the still-encoded payloads under the lock (cache hits are `Arc` clones,
        // misses a `pread`); decode after releasing it.
        let raw = self.with_log(|log| {
            let mut raw: Vec<(StoredLogId<C>, EncodedEntry)> = Vec::new();
            let mut bytes = 0u64;
            for item in log.read(start, end) {
                let (log_id, payload) = item?;
                let len = payload.len() as u64;
                if let Some(max) = max_bytes {
                    if !raw.is_empty() && bytes + len > max {
                        break;
                    }
                }
                bytes += len;
                raw.push((log_id, payload));
            }
            Ok(raw)
        })?;

        let mut expected = None;
        let mut entries = Vec::with_capacity(raw.len());
        for (log_id, payload) in raw {
            let index = log_id.id.index;
            if let Some(expected) = expected {
                if index != expected {
                    return Err(StoreError::Hole {
                        expected,
                        found: index,
                    }
                    .into());
                }
            }
            expected = Some(index + 1);
            entries.push(
                payload
                    .decode_entry::<C>(&log_id.id)
                    .map_err(StoreError::from)?,
            );
        }
        Ok(entries)
    }

    fn stats(&self) -> io::Result<LogStoreStats> {
        self.with_log(|log| Ok(LogStoreStats::from_raft_log(log)))
    }
}

/// openraft log storage on a raft-log directory. See the module docs for durability.
pub struct LogStore<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

/// A cheap, cloneable handle that reads the log and the vote of a [`LogStore`].
pub struct LogReader<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens (creating if needed) the store in `config.dir`.
    ///
    /// This replays every chunk file to rebuild raft-log's index, truncating a torn last
    /// record, so it does blocking I/O proportional to the unpurged log: call it at start-up
    /// or from a blocking task. The directory stays locked until the store and all its
    /// readers are dropped, or [`Self::close`] returns.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: invalid config, the directory cannot be created, is locked by another
    /// process, holds damaged chunks (beyond a torn tail), holds a foreign raft-log or a
    /// newer format.
    pub fn open(config: LogStoreConfig) -> Result<Self, OpenError> {
        let raft_config = config.to_raft_log_config()?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::CreateDir {
            dir: dir.clone(),
            source,
        })?;

        let mut log =
            RaftLog::<C>::open(Arc::new(raft_config)).map_err(|source| OpenError::Open {
                dir: dir.clone(),
                source,
            })?;

        let state = log.log_state();
        match state.user_data.as_ref() {
            Some(meta) if meta.format_version == FORMAT_VERSION => {}
            Some(meta) => {
                return Err(OpenError::UnsupportedFormat {
                    dir,
                    found: meta.format_version,
                    supported: FORMAT_VERSION,
                });
            }
            None => {
                let pristine = state.vote().is_none()
                    && state.last().is_none()
                    && state.committed().is_none()
                    && state.purged().is_none();
                if !pristine {
                    return Err(OpenError::ForeignLog { dir });
                }
                write_meta(&mut log).map_err(|source| OpenError::WriteMeta {
                    dir: dir.clone(),
                    source,
                })?;
            }
        }

        let state = log.log_state();
        tracing::info!(
            dir = %dir.display(),
            vote = ?state.vote(),
            last = ?state.last(),
            purged = ?state.purged(),
            committed = ?state.committed(),
            disk_bytes = log.on_disk_size(),
            "opened raft log store"
        );

        // Start above every generation on disk, the chunk checkpoints included (they may
        // still name a truncated tail), so that new entries sort after everything written.
        let stat = log.stat();
        let generation = stat
            .closed_chunks
            .iter()
            .map(|chunk| &chunk.log_state)
            .chain([log.log_state()])
            .flat_map(|s| [s.last(), s.purged(), s.committed()])
            .flatten()
            .map(|id| id.generation)
            .max()
            .map_or(0, |g| g + 1);

        Ok(Self {
            shared: Arc::new(Shared {
                log: RwLock::new(Some(log)),
                generation: AtomicU64::new(generation),
                config,
            }),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &LogStoreConfig {
        &self.shared.config
    }

    /// Bytes of chunk files holding live records (purged chunks awaiting unlink excluded).
    ///
    /// # Errors
    ///
    /// `io::Error` if the store is closed or its lock is poisoned.
    pub fn disk_usage_bytes(&self) -> io::Result<u64> {
        self.shared.with_log(|log| Ok(log.on_disk_size()))
    }

    /// A snapshot of sizes and flush metrics, for export as metrics.
    ///
    /// # Errors
    ///
    /// `io::Error` if the store is closed or its lock is poisoned.
    pub fn stats(&self) -> io::Result<LogStoreStats> {
        self.shared.stats()
    }

    /// Flushes and fsyncs everything written so far, stops raft-log's flush thread and
    /// releases the directory lock. Readers still held fail afterwards with `NotConnected`.
    ///
    /// # Errors
    ///
    /// `io::Error` if the final write or fsync fails, or the store is already closed.
    pub async fn close(self) -> io::Result<()> {
        let (tx, rx) = C::oneshot();
        self.shared.with_log_mut(|log| {
            log.flush(true, Some(FlushCallback::Raft(IOFlushed::signal(tx))))
        })?;
        rx.await
            .map_err(|_| StoreError::FlushAborted { what: "close" })??;

        let log = self.shared.write_guard()?.take();
        // Dropping joins the flush thread: do it off the async reactor.
        C::spawn_blocking(move || drop(log)).await?;
        Ok(())
    }

    /// Queues `entries` and a flush whose completion is reported to `callback`.
    fn append_encoded(
        &self,
        entries: Vec<(StoredLogId<C>, EncodedEntry)>,
        callback: FlushCallback<C>,
    ) -> io::Result<()> {
        let sync = self.shared.config.fsync_appends();
        self.shared.with_log_mut(|log| {
            log.append(entries)?;
            log.flush(sync, Some(callback))
        })
    }
}

/// Persists [`StoreMeta`] in a pristine log and waits for the fsync.
fn write_meta<C: RaftTypeConfig>(log: &mut RaftLog<C>) -> io::Result<()> {
    log.save_user_data(Some(StoreMeta {
        format_version: FORMAT_VERSION,
    }))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    log.flush(true, Some(FlushCallback::Blocking(tx)))?;
    rx.recv()
        .map_err(|_| StoreError::FlushAborted { what: "store meta" })?
}

/// `[start, end)` of an index range; bounds past `u64::MAX` saturate.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<C::Entry>> {
        let (start, end) = index_range(&range);
        self.shared.read_range(start, end, None)
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<C>>> {
        self.shared
            .with_log(|log| Ok(log.log_state().vote().map(|v| v.0.clone())))
    }

    /// At most `max_read_bytes` of encoded entries (at least one entry), so one
    /// AppendEntries never carries more.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<C::Entry>> {
        self.shared
            .read_range(start, end, Some(self.shared.config.max_read_bytes))
    }

    /// Streams the range in steps of at most `max_read_bytes`, so applying a long range
    /// (a follower catching up, a restart re-applying) holds one step in memory rather than
    /// the whole range, and the lock is released between steps.
    ///
    /// The range is read for applying committed entries, which openraft neither truncates
    /// nor purges before they are applied; should an index still go missing between two
    /// steps, the stream ends with an error rather than skip it.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = io::Result<C::Entry>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = index_range(&range);
        let shared = self.shared.clone();
        let max_bytes = shared.config.max_read_bytes;

        // State: the next index to read, and whether it must be exactly that index (every
        // step but the first, which may start later when the range begins in purged log).
        futures::stream::unfold(Some((start, false)), move |state| {
            let shared = shared.clone();
            async move {
                let (next, exact) = state?;
                if next >= end {
                    return None;
                }
                let step =
                    shared
                        .read_range(next, end, Some(max_bytes))
                        .and_then(|step| match step.first() {
                            Some(first) if exact && first.index() != next => {
                                Err(StoreError::Hole {
                                    expected: next,
                                    found: first.index(),
                                }
                                .into())
                            }
                            _ => Ok(step),
                        });
                match step {
                    Ok(step) => {
                        let last = step.last()?.index();
                        let items: Vec<io::Result<C::Entry>> = step.into_iter().map(Ok).collect();
                        Some((items, Some((last + 1, true))))
                    }
                    Err(err) => Some((vec![Err(err)], None)),
                }
            }
        })
        .flat_map(futures::stream::iter)
    }
}

impl<C: RaftTypeConfig> LogReader<C> {
    /// Same as [`LogStore::stats`].
    ///
    /// # Errors
    ///
    /// `io::Error` if the store is closed or its lock is poisoned.
    pub fn stats(&self) -> io::Result<LogStoreStats> {
        self.shared.stats()
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> io::Result<LogState<C>> {
        self.shared.with_log(|log| {
            let state = log.log_state();
            Ok(LogState {
                last_purged_log_id: state.purged().map(|id| id.id.clone()),
                last_log_id: state.last().map(|id| id.id.clone()),
            })
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> io::Result<()> {
        let (tx, rx) = C::oneshot();
        self.shared.with_log_mut(|log| {
            log.save_vote(StoredVote(vote.clone()))?;
            log.flush(true, Some(FlushCallback::Raft(IOFlushed::signal(tx))))
        })?;
        rx.await
            .map_err(|_| StoreError::FlushAborted { what: "vote" })?
    }

    /// Records `committed` when it is ahead of the recorded one and is an entry of the log
    /// (or its purge point); otherwise keeps the recorded one. Skipping is safe: a stale
    /// committed id only makes a restart re-apply less. openraft never commits past its own
    /// last log id, which raft-log would reject as `CommitBeyondLast`.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> io::Result<()> {
        let Some(committed) = committed else {
            return Ok(());
        };
        self.shared.with_log_mut(|log| {
            let Some(stored) = stored_id_of(log, &committed)? else {
                tracing::debug!(%committed, "not recording a committed log id absent from the log");
                return Ok(());
            };
            if Some(&stored) <= log.log_state().committed() {
                return Ok(());
            }
            log.commit(stored)?;
            log.flush(false, None)
        })
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<C>>> {
        self.shared
            .with_log(|log| Ok(log.log_state().committed().map(|id| id.id.clone())))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> io::Result<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Only this (`&mut self`) writer changes the generation.
        let generation = self.shared.generation.load(AtomicOrdering::Relaxed);
        // Encode before taking the lock: a MiB batch should not stall readers.
        let encoded = entries
            .into_iter()
            .map(|entry| {
                let payload = EncodedEntry::encode_entry::<C>(&entry)?;
                Ok((StoredLogId::new(generation, entry.log_id()), payload))
            })
            .collect::<Result<Vec<_>, crate::codec::CodecError>>()
            .map_err(StoreError::from)?;
        self.append_encoded(encoded, FlushCallback::Raft(callback))
    }

    /// Removes the entries after `last_log_id` and starts a new generation (see
    /// [`StoredLogId`]) for the entries appended next.
    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> io::Result<()> {
        self.shared.with_log_mut(|log| {
            let state = log.log_state();
            let first_present = state.purged().map_or(0, |p| p.id.index + 1);
            let end = state.last().map_or(0, |l| l.id.index + 1);
            let keep_end = last_log_id.as_ref().map_or(0, |id| id.index + 1);
            // Purged entries are gone already; openraft never asks to cut below them.
            let cut = keep_end.max(first_present);
            if cut >= end {
                return Ok(());
            }
            tracing::debug!(from_index = cut, "truncating raft log");
            log.truncate(cut)?;
            self.shared.generation.fetch_add(1, AtomicOrdering::Relaxed);
            log.flush(true, None)
        })
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> io::Result<()> {
        self.shared.with_log_mut(|log| {
            let state = log.log_state();
            let purged_index = state.purged().map(|p| p.id.index);
            if purged_index.is_some_and(|p| log_id.index <= p) {
                return Ok(());
            }
            let upto = match log.read(log_id.index, u64::MAX).next() {
                Some(item) => {
                    let (next, _payload) = item?;
                    if next.id.index == log_id.index {
                        // openraft purges applied entries only: it must be this very one.
                        if next.id != log_id {
                            return Err(StoreError::PurgeMismatch {
                                requested: log_id.to_string(),
                            }
                            .into());
                        }
                        next
                    } else {
                        // Below the first entry of a log that did not start at index 0.
                        StoredLogId::new(next.generation, log_id)
                    }
                }
                // Beyond the last entry (a snapshot was installed): the log restarts after it.
                None => {
                    StoredLogId::new(self.shared.generation.load(AtomicOrdering::Relaxed), log_id)
                }
            };
            tracing::debug!(?upto, "purging raft log");
            log.purge(upto)?;
            log.flush(true, None)
        })
    }
}

/// The stored form of `log_id` if the log holds exactly that entry (or purged up to it).
fn stored_id_of<C: RaftTypeConfig>(
    log: &RaftLog<C>,
    log_id: &LogIdOf<C>,
) -> io::Result<Option<StoredLogId<C>>> {
    if let Some(purged) = log.log_state().purged() {
        if &purged.id == log_id {
            return Ok(Some(purged.clone()));
        }
    }
    match log.read(log_id.index, log_id.index + 1).next() {
        Some(item) => {
            let (stored, _payload) = item?;
            Ok((&stored.id == log_id).then_some(stored))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::index_range;

    #[test]
    fn index_range_handles_every_bound() {
        assert_eq!(index_range(&(3..7)), (3, 7));
        assert_eq!(index_range(&(3..=7)), (3, 8));
        assert_eq!(index_range(&(3..)), (3, u64::MAX));
        assert_eq!(index_range(&(..7)), (0, 7));
        assert_eq!(index_range(&(..)), (0, u64::MAX));
        assert_eq!(index_range(&(0..=u64::MAX)), (0, u64::MAX));
    }
}
