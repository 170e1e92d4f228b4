//! [`LogStoreStats`]: sizes and flush metrics of a store, cheap enough to scrape.

use openraft::RaftTypeConfig;

use crate::types::RaftLog;

/// A point-in-time view of one log store, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStoreStats {
    /// Bytes of chunk files holding live records.
    pub disk_usage_bytes: u64,
    /// Number of chunk files, the open one included.
    pub chunk_count: u64,
    /// Index of the first entry present (`last_purged + 1`, or 0), if any entry is.
    pub first_index: Option<u64>,
    /// Index of the last entry (or of the last purged one when the log is empty).
    pub last_index: Option<u64>,
    /// Entries between `first_index` and `last_index`.
    pub entry_count: u64,
    /// Bytes of encoded payloads held in memory (cache plus the open chunk).
    pub payload_cache_bytes: u64,
    /// Payloads held in memory.
    pub payload_cache_items: u64,
    /// Reads served from memory / from chunk files since open.
    pub payload_cache_hits: u64,
    /// See `payload_cache_hits`.
    pub payload_cache_misses: u64,
    /// Flush requests handed to the flush thread since open (one per append/vote/...).
    pub flush_requests: u64,
    /// fsync calls since open; `flush_requests / fsyncs` is the group-commit factor.
    pub fsyncs: u64,
    /// Duration of the latest fsync, in microseconds.
    pub last_fsync_us: u64,
    /// Median fsync duration since open, in microseconds.
    pub fsync_p50_us: u64,
    /// 90th percentile fsync duration since open, in microseconds.
    pub fsync_p90_us: u64,
    /// 99th percentile fsync duration since open, in microseconds.
    pub fsync_p99_us: u64,
    /// Time spent in fsync since open, in microseconds (with `fsyncs`, a mean).
    pub fsync_total_us: u64,
    /// Flush requests in the latest batch.
    pub last_batch_requests: u64,
}

impl LogStoreStats {
    pub(crate) fn from_raft_log<C: RaftTypeConfig>(log: &RaftLog<C>) -> Self {
        let stat = log.stat();
        let state = log.log_state();
        let first = state.purged().map_or(0, |p| p.id.index + 1);
        let last = state.last().map(|l| l.id.index);
        let entry_count = last.map_or(0, |last| (last + 1).saturating_sub(first));
        let flush = &stat.flush_metrics;
        Self {
            disk_usage_bytes: log.on_disk_size(),
            chunk_count: stat.closed_chunks.len() as u64 + 1,
            first_index: (entry_count > 0).then_some(first),
            last_index: last,
            entry_count,
            payload_cache_bytes: stat.payload_cache_size,
            payload_cache_items: stat.payload_cache_item_count,
            payload_cache_hits: stat.payload_cache_hit,
            payload_cache_misses: stat.payload_cache_miss,
            flush_requests: flush.write_request_count,
            fsyncs: flush.sync_batch_count,
            last_fsync_us: flush.last_sync_us,
            fsync_p50_us: flush.sync_percentiles.p50_us,
            fsync_p90_us: flush.sync_percentiles.p90_us,
            fsync_p99_us: flush.sync_percentiles.p99_us,
            fsync_total_us: flush.sync_us,
            last_batch_requests: flush.last_batch_size,
        }
    }
}
