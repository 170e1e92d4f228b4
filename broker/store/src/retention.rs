//! Retention: delete CommitLog files older than `file_reserved_ms`, or the oldest
//! ones early while the disk is fuller than `disk_high_water_ratio`; then move every
//! ConsumeQueue's minimum past the deleted records and drop queue and index files
//! that only point below the new CommitLog minimum.
//!
//! A file's age is the store time of the *next* file's first record: store times
//! never go backwards, so every record of a file is at least that old. This costs one
//! header read per file (RocketMQ uses the file's mtime, which a replica copying
//! bytes or a restore would reset). The file being written is never deleted.

use std::path::{Path, PathBuf};

use super::commit_log::CommitLog;
use super::config::StoreConfig;
use super::dispatch::Dispatcher;
use super::error::{StoreError, StoreResult};
use super::types::CommitLogOffset;

/// What one retention run deleted.
#[derive(Debug, Default, Clone)]
pub struct RetentionReport {
    pub commit_log_files_deleted: Vec<PathBuf>,
    pub consume_queue_files_deleted: usize,
    pub index_files_deleted: usize,
    /// Fraction of the disk in use before deleting.
    pub disk_used_ratio: f64,
}

/// Runs retention once, never deleting a file that holds bytes at or above `floor`.
///
/// # Errors
/// Reading disk usage or deleting a file failed.
pub fn run(
    config: &StoreConfig,
    commit_log: &CommitLog,
    dispatcher: &Dispatcher,
    now_ms: u64,
    floor: CommitLogOffset,
) -> StoreResult<RetentionReport> {
    let reserved_ms = config.file_reserved_ms;
    let (used_ratio, bytes_over) = disk_pressure(config.root(), config.disk_high_water_ratio)?;
    let files = commit_log.files();
    let mut delete_before = None;
    let mut freed = 0u64;
    for pair in files.windows(2) {
        let next_start = CommitLogOffset(pair[1].start_offset());
        if next_start > floor {
            break;
        }
        let expired_by_age = commit_log
            .peek_store_timestamp(next_start)
            .is_some_and(|next_first_ms| next_first_ms.saturating_add(reserved_ms) < now_ms);
        let disk_too_full = freed < bytes_over;
        if !(expired_by_age || disk_too_full) {
            break;
        }
        delete_before = Some(next_start);
        freed += pair[0].size();
    }
    let mut report = RetentionReport {
        disk_used_ratio: used_ratio,
        ..Default::default()
    };
    if let Some(offset) = delete_before {
        report.commit_log_files_deleted = commit_log.delete_files_before(offset)?;
        tracing::info!(
            files = report.commit_log_files_deleted.len(),
            min_offset = commit_log.min_offset().0,
            disk_used_ratio = used_ratio,
            "retention deleted commit log files"
        );
    }
    let min = commit_log.min_offset();
    for queue in dispatcher.queues.all() {
        queue.correct_min_offset(min);
        report.consume_queue_files_deleted += queue.delete_expired_files()?;
    }
    report.index_files_deleted = dispatcher.index.delete_expired(min)?;
    Ok(report)
}

/// Bytes used and in total on the filesystem holding `dir`, counting blocks
/// reserved for root as used (as `df` does). Retention's high-water mark and the
/// node's low-water mark (`health`) both read it.
///
/// # Errors
/// `statvfs` failed.
pub fn disk_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(dir)?;
    let block = stat.f_frsize.max(1);
    let total = stat.f_blocks.saturating_mul(block);
    let available = stat.f_bavail.saturating_mul(block);
    Ok((total.saturating_sub(available), total))
}

/// The fraction of the filesystem holding `dir` that is used, and how many bytes must
/// be freed to get below `high_water`.
fn disk_pressure(dir: &Path, high_water: f64) -> StoreResult<(f64, u64)> {
    let (used, total) = disk_usage(dir).map_err(|e| StoreError::io(dir, e))?;
    if total == 0 {
        return Ok((0.0, 0));
    }
    let ratio = used as f64 / total as f64;
    let allowed = (total as f64 * high_water) as u64;
    Ok((ratio, used.saturating_sub(allowed)))
}
