//! Storage settings, with RocketMQ's defaults where it has one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{StoreError, StoreResult};
use super::record::layout;

/// When CommitLog writes reach the disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    /// A background thread flushes every `flush_interval_ms` (RocketMQ's default,
    /// and the broker's: the Raft log already made each write durable on a quorum).
    Async,
    /// Every append is flushed before it returns (a single-node store's durability).
    Sync,
}

/// Settings of one message store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Root directory: `commitlog/`, `consumequeue/`, `index/`, `checkpoint`.
    pub dir: PathBuf,
    /// Size of each CommitLog file (RocketMQ: 1 GiB).
    pub commit_log_file_size_bytes: u64,
    /// Units per ConsumeQueue file (RocketMQ: 300,000, i.e. 5.7 MiB).
    pub consume_queue_units_per_file: u64,
    /// Hash slots per index file.
    pub index_slot_count: u32,
    /// Entries per index file (one per message id and one per key).
    pub index_max_entries: u32,
    /// Largest encoded message record (RocketMQ: 4 MiB).
    pub max_message_size_bytes: u64,
    pub flush_mode: FlushMode,
    /// Interval of the background flush (RocketMQ: 500 ms; 1 s here, the Raft log
    /// holding everything not yet flushed).
    pub flush_interval_ms: u64,
    /// CommitLog files older than this are deleted (RocketMQ's `fileReservedTime`,
    /// which counts hours; milliseconds here so tests can use tiny windows).
    pub file_reserved_ms: u64,
    /// Above this fraction of the disk used, the oldest files are deleted early.
    pub disk_high_water_ratio: f64,
    /// How often retention runs.
    pub retention_interval_ms: u64,
    /// How many ConsumeQueue units one pull may skip while tag filtering
    /// (RocketMQ's `maxFilterMessageCount`).
    pub pull_max_scan_units: usize,
    /// Record bytes one pull's answer may hold (RocketMQ's
    /// `maxTransferBytesOnMessageInMemory`): the answer ends with the message that
    /// reaches it, so it always has at least one message, and its memory is
    /// bounded whatever the message size and `max_messages`.
    pub pull_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("store"),
            commit_log_file_size_bytes: 1 << 30,
            consume_queue_units_per_file: 300_000,
            index_slot_count: 1_000_000,
            index_max_entries: 4_000_000,
            max_message_size_bytes: 4 << 20,
            flush_mode: FlushMode::Async,
            flush_interval_ms: 1000,
            file_reserved_ms: 72 * 3_600_000,
            disk_high_water_ratio: 0.85,
            retention_interval_ms: 10_000,
            pull_max_scan_units: 16_000,
            // 1024 messages of 1 KiB fit with room to spare; 4 MiB ones come two
            // or three at a time.
            pull_max_bytes: 8 << 20,
        }
    }
}

impl StoreConfig {
    /// Production defaults in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    /// Small files so tests roll files and exercise retention quickly.
    pub fn for_test(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            commit_log_file_size_bytes: 64 * 1024,
            consume_queue_units_per_file: 64,
            index_slot_count: 64,
            index_max_entries: 256,
            max_message_size_bytes: 16 * 1024,
            flush_interval_ms: 50,
            retention_interval_ms: 1000,
            ..Self::default()
        }
    }

    pub fn commit_log_dir(&self) -> PathBuf {
        self.dir.join("commitlog")
    }

    pub fn consume_queue_dir(&self) -> PathBuf {
        self.dir.join("consumequeue")
    }

    pub fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("LOCK")
    }

    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// Checks every value; the error names the key.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> StoreResult<()> {
        fn bad(key: &'static str, reason: String) -> StoreResult<()> {
            Err(StoreError::Config { key, reason })
        }
        if self.max_message_size_bytes < layout::MIN_RECORD_LEN as u64 {
            return bad(
                "max_message_size_bytes",
                format!("must be at least {} bytes", layout::MIN_RECORD_LEN),
            );
        }
        if self.max_message_size_bytes > u64::from(u32::MAX) {
            return bad("max_message_size_bytes", "must fit in 32 bits".into());
        }
        if self.commit_log_file_size_bytes < self.max_message_size_bytes + layout::BLANK_LEN as u64
        {
            return bad(
                "commit_log_file_size_bytes",
                format!(
                    "{} cannot hold a message of max_message_size_bytes ({}) plus a blank marker",
                    self.commit_log_file_size_bytes, self.max_message_size_bytes
                ),
            );
        }
        if self.commit_log_file_size_bytes > u64::from(u32::MAX) {
            return bad("commit_log_file_size_bytes", "must be below 4 GiB".into());
        }
        if self.consume_queue_units_per_file == 0 {
            return bad("consume_queue_units_per_file", "must be positive".into());
        }
        if self.index_slot_count == 0 || self.index_max_entries == 0 {
            return bad("index_slot_count", "index sizes must be positive".into());
        }
        if self.flush_interval_ms == 0 {
            return bad("flush_interval_ms", "must be positive".into());
        }
        if !(self.disk_high_water_ratio > 0.0 && self.disk_high_water_ratio <= 1.0) {
            return bad("disk_high_water_ratio", "must be in (0, 1]".into());
        }
        if self.retention_interval_ms == 0 {
            return bad("retention_interval_ms", "must be positive".into());
        }
        if self.pull_max_scan_units == 0 {
            return bad("pull_max_scan_units", "must be positive".into());
        }
        if self.pull_max_bytes == 0 {
            return bad("pull_max_bytes", "must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        StoreConfig::new("x").validate().expect("defaults valid");
        StoreConfig::for_test("x")
            .validate()
            .expect("test config valid");
    }

    #[test]
    fn errors_name_the_key() {
        let mut config = StoreConfig::for_test("x");
        config.commit_log_file_size_bytes = 100;
        let err = config.validate().expect_err("too small");
        assert!(
            err.to_string().contains("commit_log_file_size_bytes"),
            "{err}"
        );
    }
}
