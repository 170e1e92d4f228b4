//! Configuration of a [`LogStore`](crate::LogStore).
//!
//! One plain struct with public fields, two constructors ([`LogStoreConfig::new`] for
//! production, [`LogStoreConfig::for_test`] for tests that want to exercise chunk
//! rotation and cache eviction with tiny logs), and [`LogStoreConfig::validate`], which
//! names the offending field. [`LogStore::open`](crate::LogStore::open) validates before
//! touching the directory.
//!
//! # Memory bound
//!
//! raft-log keeps every payload of the *open* chunk in memory (it serves reads of the
//! open chunk only from its cache), and keeps older payloads only while the cache is
//! under `log_cache_capacity_bytes`. What is not bounded by the payload settings is
//! raft-log's per-entry index (log id, chunk id, record position: under 100 bytes per
//! live entry), which grows with the number of entries not yet purged. So:
//!
//! ```text
//! payload RAM ≲ log_cache_capacity_bytes + 2 × chunk_max_bytes   (the open chunk, plus the
//!                                                                 chunk just closed until its
//!                                                                 successor is fsync'd)
//!             + flush_queue_max_bytes                            (encoded records queued for
//!                                                                 the flush thread)
//! index RAM   ≈ 100 B × (last_log_index − last_purged_index)
//! ```
//!
//! The broker bounds the second term by snapshotting and purging (openraft's
//! `max_in_snapshot_log_to_keep` and snapshot policy).

use std::path::PathBuf;
use std::time::Duration;

/// Chunk size below which raft-log would spend most of its time rotating files.
///
/// Every chunk starts with a checkpoint record (vote, last, committed, purged, meta) and a
/// rotation costs a file creation plus an fsync of the closed file.
pub const MIN_CHUNK_MAX_BYTES: u64 = 4 * 1024;

/// Largest accepted group-commit window; anything longer is almost certainly a unit mistake
/// (milliseconds written where microseconds were meant) and would add that much latency to
/// every write.
pub const MAX_FLUSH_BATCH_WAIT: Duration = Duration::from_millis(100);

/// Buffer used to replay one chunk sequentially at open.
///
/// raft-log's default is 64 MiB per chunk being replayed, which is pure start-up memory; a
/// few MiB already makes the replay sequential-read bound.
pub(crate) const REPLAY_READ_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// An invalid [`LogStoreConfig`] field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log store config: `{field}` {reason}")]
pub struct ConfigError {
    /// The name of the offending field, as written in [`LogStoreConfig`].
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Settings of one Raft log store (one directory, one Raft group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Directory holding the chunk files and the `LOCK` file; created if missing. One
    /// process at a time may open it (raft-log takes an exclusive lock).
    pub dir: PathBuf,

    /// A chunk file is closed and a new one started once it reaches this size. Purge frees
    /// disk space a whole chunk at a time, and the open chunk's payloads stay in memory, so
    /// this is both the purge granularity and part of the memory bound (see module docs).
    /// One record larger than this still fits: the chunk just holds that one record.
    pub chunk_max_bytes: u64,

    /// A chunk is also closed after this many records, whatever its size.
    pub chunk_max_records: u64,

    /// Group-commit window of raft-log's flush thread: after taking the first pending flush
    /// request it waits up to this long for more before it writes and fsyncs them together.
    /// Requests already queued are taken without waiting, but with a zero window raft-log
    /// does not even drain the queue: every flush request gets its own fsync.
    pub flush_batch_wait: Duration,

    /// At most this many flush requests (one per `append`/`save_vote` call) share one fsync.
    pub flush_batch_max_items: u64,

    /// Back-pressure: `append` blocks while this many bytes are queued for the flush thread
    /// and not yet written. A single larger request is still accepted once the queue drains.
    pub flush_queue_max_bytes: u64,

    /// Payload cache for entries in closed chunks, in bytes of encoded entries. Replication
    /// to a lagging follower and re-applying after a restart read from here or, on a miss,
    /// from the chunk file (one `pread` per entry).
    pub log_cache_capacity_bytes: u64,

    /// Upper bound on the number of cached payloads, whatever their size; it bounds the
    /// cache's per-item overhead when entries are tiny.
    pub log_cache_max_items: u64,

    /// Cap on the encoded bytes returned by one bounded read: `limited_get_log_entries`
    /// (one AppendEntries payload) and each step of `entries_stream` (one apply batch).
    /// At least one entry is always returned, however large.
    pub max_read_bytes: u64,

    /// FAULT INJECTION ONLY: acknowledge appends as durable without fsync (the bytes are
    /// still written to the page cache, in order). Exists so the fault-injection suite can
    /// prove that it catches lost writes. Never set outside that suite.
    #[cfg(feature = "fault-injection")]
    pub fault_skip_fsync: bool,
}

impl LogStoreConfig {
    /// Production defaults, chosen for message batches of 1 KiB – 1 MiB per entry:
    ///
    /// - `chunk_max_bytes` = 64 MiB: 64 one-MiB batches or ~60 000 one-KiB batches per
    ///   file; a rotation (file create + fsync) every few seconds at 20–50 MB/s; the open
    ///   chunk's payloads (always in RAM) cost at most 64 MiB.
    /// - `chunk_max_records` = 1 Mi: never the binding limit above ~64 B per entry.
    /// - `flush_batch_wait` = 100 µs: measured with `examples/log_bench.rs` (see the crate
    ///   README for the table). A zero window means one fsync per append; 1 ms (raft-log's
    ///   default) adds a full millisecond to every lightly loaded write for no throughput
    ///   gain once writers are concurrent.
    /// - `flush_batch_max_items` = 2048, `flush_queue_max_bytes` = 64 MiB: raft-log's
    ///   defaults; 2048 covers 512 concurrent writers with room to spare.
    /// - `log_cache_capacity_bytes` = 128 MiB, `log_cache_max_items` = 1 Mi: keeps roughly
    ///   the last 128 MiB of closed-chunk payloads in memory for lagging followers.
    /// - `max_read_bytes` = 4 MiB: one AppendEntries carries 4 MiB at most (or one batch
    ///   bigger than that), so a 1 MiB-batch workload still pipelines several entries per
    ///   RPC while a catching-up follower never receives hundreds of MiB at once.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            chunk_max_bytes: 64 * 1024 * 1024,
            chunk_max_records: 1024 * 1024,
            flush_batch_wait: Duration::from_micros(100),
            flush_batch_max_items: 2048,
            flush_queue_max_bytes: 64 * 1024 * 1024,
            log_cache_capacity_bytes: 128 * 1024 * 1024,
            log_cache_max_items: 1024 * 1024,
            max_read_bytes: 4 * 1024 * 1024,
            #[cfg(feature = "fault-injection")]
            fault_skip_fsync: false,
        }
    }

    /// Small chunks (64 KiB), a small cache (128 KiB) and small bounded reads (16 KiB), so
    /// that tests with a few hundred entries rotate chunks, evict from the cache, read
    /// from disk and split reads.
    pub fn for_test(dir: impl Into<PathBuf>) -> Self {
        Self {
            chunk_max_bytes: 64 * 1024,
            chunk_max_records: 1024,
            log_cache_capacity_bytes: 128 * 1024,
            log_cache_max_items: 1024,
            max_read_bytes: 16 * 1024,
            ..Self::new(dir)
        }
    }

    /// Checks every field; the error names the first bad one.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `dir` is empty or not UTF-8 (raft-log takes a `String`), a size
    /// or count is zero, `chunk_max_bytes` is below [`MIN_CHUNK_MAX_BYTES`] or does not
    /// fit in `usize`, or `flush_batch_wait` exceeds [`MAX_FLUSH_BATCH_WAIT`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::new("dir", "is empty"));
        }
        if self.dir.to_str().is_none() {
            return Err(ConfigError::new(
                "dir",
                format!("is not valid UTF-8: {}", self.dir.display()),
            ));
        }
        if self.chunk_max_bytes < MIN_CHUNK_MAX_BYTES {
            return Err(ConfigError::new(
                "chunk_max_bytes",
                format!(
                    "is {}, below the minimum of {MIN_CHUNK_MAX_BYTES} bytes",
                    self.chunk_max_bytes
                ),
            ));
        }
        for (field, value) in [
            ("chunk_max_bytes", self.chunk_max_bytes),
            ("chunk_max_records", self.chunk_max_records),
            ("flush_batch_max_items", self.flush_batch_max_items),
            ("flush_queue_max_bytes", self.flush_queue_max_bytes),
            ("log_cache_capacity_bytes", self.log_cache_capacity_bytes),
            ("log_cache_max_items", self.log_cache_max_items),
        ] {
            to_usize(field, value)?;
        }
        for (field, value) in [
            ("chunk_max_records", self.chunk_max_records),
            ("flush_batch_max_items", self.flush_batch_max_items),
            ("flush_queue_max_bytes", self.flush_queue_max_bytes),
            ("max_read_bytes", self.max_read_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "is 0"));
            }
        }
        if self.flush_batch_wait > MAX_FLUSH_BATCH_WAIT {
            return Err(ConfigError::new(
                "flush_batch_wait",
                format!(
                    "is {:?}, above the maximum of {MAX_FLUSH_BATCH_WAIT:?}",
                    self.flush_batch_wait
                ),
            ));
        }
        Ok(())
    }

    /// Whether appends are acknowledged only after fsync; `false` only under the
    /// `fault-injection` feature with `fault_skip_fsync` set.
    pub(crate) fn fsync_appends(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            !self.fault_skip_fsync
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            true
        }
    }

    /// The raft-log configuration this one maps to. Call [`Self::validate`] first.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the same reasons as [`Self::validate`].
    pub(crate) fn to_raft_log_config(&self) -> Result<raft_log::Config, ConfigError> {
        self.validate()?;
        let dir = self
            .dir
            .to_str()
            .ok_or_else(|| ConfigError::new("dir", "is not valid UTF-8"))?;
        let chunk_max_bytes = to_usize("chunk_max_bytes", self.chunk_max_bytes)?;

        let mut config = raft_log::Config::new(dir);
        config.log_cache_capacity = Some(to_usize(
            "log_cache_capacity_bytes",
            self.log_cache_capacity_bytes,
        )?);
        config.log_cache_max_items =
            Some(to_usize("log_cache_max_items", self.log_cache_max_items)?);
        config.wal.chunk_max_size = Some(chunk_max_bytes);
        config.wal.chunk_max_records = Some(to_usize("chunk_max_records", self.chunk_max_records)?);
        config.wal.read_buffer_size = Some(REPLAY_READ_BUFFER_BYTES.min(chunk_max_bytes));
        // A torn last record is the normal result of a crash mid-write; any other damage
        // still fails the open (raft-log checks every record's CRC).
        config.wal.truncate_incomplete_record = Some(true);
        config.wal.flush_batch_wait = Some(self.flush_batch_wait);
        config.wal.flush_batch_max_items = Some(to_usize(
            "flush_batch_max_items",
            self.flush_batch_max_items,
        )?);
        config.wal.flush_queue_max_bytes = Some(to_usize(
            "flush_queue_max_bytes",
            self.flush_queue_max_bytes,
        )?);
        Ok(config)
    }
}

fn to_usize(field: &'static str, value: u64) -> Result<usize, ConfigError> {
    usize::try_from(value)
        .map_err(|_| ConfigError::new(field, format!("is {value}, which does not fit in usize")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogStoreConfig::new("/tmp/x")
            .validate()
            .expect("production defaults");
        LogStoreConfig::for_test("/tmp/x")
            .validate()
            .expect("test defaults");
    }

    #[test]
    fn validate_names_the_bad_field() {
        type BreakIt = fn(&mut LogStoreConfig);
        let cases: Vec<(&str, BreakIt)> = vec![
            ("dir", |c| c.dir = PathBuf::new()),
            ("chunk_max_bytes", |c| c.chunk_max_bytes = 100),
            ("chunk_max_records", |c| c.chunk_max_records = 0),
            ("flush_batch_max_items", |c| c.flush_batch_max_items = 0),
            ("flush_queue_max_bytes", |c| c.flush_queue_max_bytes = 0),
            ("max_read_bytes", |c| c.max_read_bytes = 0),
            ("flush_batch_wait", |c| {
                c.flush_batch_wait = Duration::from_secs(1)
            }),
        ];
        for (field, break_it) in cases {
            let mut config = LogStoreConfig::new("/tmp/x");
            break_it(&mut config);
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn maps_to_raft_log_config() {
        let config = LogStoreConfig::for_test("/tmp/x");
        let raft = config.to_raft_log_config().expect("valid");
        assert_eq!(raft.wal.dir, "/tmp/x");
        assert_eq!(raft.wal.chunk_max_size(), 64 * 1024);
        assert_eq!(raft.wal.flush_batch_wait(), config.flush_batch_wait);
        assert_eq!(raft.log_cache_capacity(), 128 * 1024);
        assert!(raft.wal.read_buffer_size() <= 64 * 1024);
        raft.wal.validate().expect("raft-log accepts the mapping");
    }
}
