//! ConsumeQueues: per (topic, queue id), a dense array of fixed 20-byte units that
//! index the CommitLog. The unit's position *is* the queue offset.
//!
//! ```text
//!  unit (little-endian)
//!   0  8  commit_log_offset  u64  where the message record starts
//!   8  4  size               u32  its encoded size (never 0 for a real unit)
//!  12  8  tag_hash           u64  TagHash of its tags (0 = no tags)
//! ```
//!
//! Files hold `units_per_file` units and are named by the byte offset of their first
//! unit (queue offset × 20), in `consumequeue/<topic>/<queue id>/`. A unit of size
//! zero was never written: a queue rebuilt after retention starts mid-file with zero
//! units before its minimum.
//!
//! Invariants: units are appended in queue-offset order by the single writer; a unit
//! is published (`max_offset`) only after the CommitLog record it points to is; the
//! units of one queue point to strictly increasing CommitLog offsets.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::commit_log::CommitLog;
use super::error::{StoreError, StoreResult};
use super::mapped_file::Allocation;
use super::mapped_file_queue::MappedFileQueue;
use super::types::{CommitLogOffset, QueueId, QueueOffset, TagHash};

/// Bytes per ConsumeQueue unit.
pub const CQ_UNIT_BYTES: u64 = 20;
const _: () = assert!(CQ_UNIT_BYTES == 8 + 4 + 8);

/// One ConsumeQueue unit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CqUnit {
    pub commit_log_offset: CommitLogOffset,
    pub size: u32,
    pub tag_hash: TagHash,
}

impl CqUnit {
    fn encode(&self, buf: &mut [u8]) {
        buf[0..8].copy_from_slice(&self.commit_log_offset.0.to_le_bytes());
        buf[8..12].copy_from_slice(&self.size.to_le_bytes());
        buf[12..20].copy_from_slice(&self.tag_hash.0.to_le_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        let mut offset = [0u8; 8];
        let mut size = [0u8; 4];
        let mut hash = [0u8; 8];
        offset.copy_from_slice(&buf[0..8]);
        size.copy_from_slice(&buf[8..12]);
        hash.copy_from_slice(&buf[12..20]);
        Self {
            commit_log_offset: CommitLogOffset(u64::from_le_bytes(offset)),
            size: u32::from_le_bytes(size),
            tag_hash: TagHash(u64::from_le_bytes(hash)),
        }
    }

    /// One past the last byte of the record.
    pub fn end_offset(&self) -> CommitLogOffset {
        self.commit_log_offset.advance(u64::from(self.size))
    }
}

/// The ConsumeQueue of one (topic, queue id).
pub struct ConsumeQueue {
    topic: String,
    queue_id: QueueId,
    files: MappedFileQueue,
    /// First queue offset still readable (retention moves it up).
    min_offset: AtomicU64,
    /// One past the last published unit.
    max_offset: AtomicU64,
    /// The writer's next queue offset (== `max_offset` between appends).
    next_offset: Mutex<u64>,
}

impl ConsumeQueue {
    /// Opens (or creates) the queue in `dir`, dropping units at its tail that point at
    /// or beyond `commit_log_end` (records a torn CommitLog tail lost) and never-written
    /// units; sets the minimum from `commit_log_min`.
    ///
    /// # Errors
    /// I/O failure, or files that do not form a contiguous queue.
    pub fn open(
        dir: &Path,
        topic: &str,
        queue_id: QueueId,
        units_per_file: u64,
        commit_log_min: CommitLogOffset,
        commit_log_end: CommitLogOffset,
    ) -> StoreResult<Self> {
        let file_size = units_per_file * CQ_UNIT_BYTES;
        // Units are written through the mapping into files that grow their reserved
        // blocks ahead of the writer (`reserve`): a queue uses disk for its units,
        // not for its 5.7 MiB files.
        let mut files = MappedFileQueue::open(dir, file_size, Allocation::Grow)?;
        let end_unit = recover_end(&mut files, commit_log_end)?;
        let queue = Self {
            topic: topic.to_string(),
            queue_id,
            files,
            min_offset: AtomicU64::new(0),
            max_offset: AtomicU64::new(end_unit),
            next_offset: Mutex::new(end_unit),
        };
        queue.correct_min_offset(commit_log_min);
        Ok(queue)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue_id(&self) -> QueueId {
        self.queue_id
    }

    /// First readable queue offset.
    pub fn min_offset(&self) -> QueueOffset {
        QueueOffset(self.min_offset.load(Ordering::Acquire))
    }

    /// One past the last published unit.
    pub fn max_offset(&self) -> QueueOffset {
        QueueOffset(self.max_offset.load(Ordering::Acquire))
    }

    fn next_offset(&self) -> std::sync::MutexGuard<'_, u64> {
        self.next_offset
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The queue offset the next appended unit gets.
    pub fn next_queue_offset(&self) -> QueueOffset {
        QueueOffset(*self.next_offset())
    }

    /// Creates the files and reserves the blocks needed for `count` more units from
    /// queue offset `from` (the next offset, or any offset for an empty queue being
    /// rebuilt), so the appends that follow cannot fail.
    ///
    /// # Errors
    /// Creating a file or reserving its blocks failed (a full disk).
    pub fn reserve(&self, from: QueueOffset, count: u64) -> StoreResult<()> {
        if count == 0 {
            return Ok(());
        }
        let file_size = self.files.file_size();
        let start_byte = from.0 * CQ_UNIT_BYTES;
        let end_byte = (from.0 + count) * CQ_UNIT_BYTES;
        let mut next_start = match self.files.last() {
            Some(last) => last.end_offset(),
            None => start_byte / file_size * file_size,
        };
        while next_start < end_byte {
            self.files.create_file(next_start)?;
            next_start += file_size;
        }
        let mut byte = start_byte;
        while byte < end_byte {
            let file = self.files.find(byte).expect("the files were created above");
            let through = end_byte.min(file.end_offset());
            file.reserve_through(through - file.start_offset())
                .map_err(|e| StoreError::io(file.path(), e))?;
            byte = through;
        }
        Ok(())
    }

    /// Writes the unit at `queue_offset`, which must be the next offset — or, for a
    /// queue with no units at all, any offset (a rebuild after retention). The unit is
    /// invisible until [`ConsumeQueue::publish`].
    ///
    /// # Panics
    /// On a gap or a rewrite (a dispatch bug), or if [`ConsumeQueue::reserve`] was not
    /// called for it.
    pub fn append(&self, queue_offset: QueueOffset, unit: CqUnit) {
        let mut next = self.next_offset();
        let empty = *next == self.min_offset.load(Ordering::Acquire) && *next == 0;
        assert!(
            queue_offset.0 == *next || empty,
            "consume queue {}:{} append at {queue_offset}, expected {}",
            self.topic,
            self.queue_id,
            *next
        );
        assert!(unit.size > 0, "a consume queue unit has a size");
        let byte = queue_offset.0 * CQ_UNIT_BYTES;
        let file = self
            .files
            .find(byte)
            .expect("consume queue files reserved before appending");
        let mut writer = file.writer();
        let in_file = byte - file.start_offset();
        if writer.position() < in_file {
            // First unit of a rebuilt queue: skip the never-written units before it.
            let gap = in_file - writer.position();
            writer.append_with(gap, |buf| buf.fill(0));
        }
        writer.append_with(CQ_UNIT_BYTES, |buf| unit.encode(buf));
        writer.commit();
        if empty && queue_offset.0 > 0 {
            self.min_offset.store(queue_offset.0, Ordering::Release);
        }
        *next = queue_offset.0 + 1;
    }

    /// Makes a queue without any unit continue from `offset` (min = max = `offset`):
    /// a queue rebuilt after retention deleted all of its messages keeps its offsets.
    ///
    /// # Panics
    /// If the queue has units: only an empty queue may be moved.
    pub fn continue_empty_from(&self, offset: QueueOffset) {
        let mut next = self.next_offset();
        assert!(
            *next == 0 && self.files.is_empty(),
            "consume queue {}:{} is not empty",
            self.topic,
            self.queue_id
        );
        *next = offset.0;
        self.min_offset.store(offset.0, Ordering::Release);
        self.max_offset.store(offset.0, Ordering::Release);
    }

    /// Publishes every appended unit to readers.
    pub fn publish(&self) {
        let next = *self.next_offset();
        self.max_offset.store(next, Ordering::Release);
    }

    /// The last readable unit, if any.
    pub fn last_unit(&self) -> Option<CqUnit> {
        let max = self.max_offset();
        if max <= self.min_offset() {
            return None;
        }
        self.unit(QueueOffset(max.0 - 1))
    }

    /// The unit at `offset`, if it is readable.
    pub fn unit(&self, offset: QueueOffset) -> Option<CqUnit> {
        if offset < self.min_offset() || offset >= self.max_offset() {
            return None;
        }
        self.read_unit(offset.0)
    }

    fn read_unit(&self, offset: u64) -> Option<CqUnit> {
        let byte = offset * CQ_UNIT_BYTES;
        let file = self.files.find(byte)?;
        file.read(byte - file.start_offset(), CQ_UNIT_BYTES)
            .map(CqUnit::decode)
    }

    /// Up to `max` readable units from `from`, in order, stopping at a file end (the
    /// caller asks again from where it stopped).
    pub fn units_from(&self, from: QueueOffset, max: usize) -> Vec<(QueueOffset, CqUnit)> {
        let end = self.max_offset().0.min(from.0.saturating_add(max as u64));
        if from < self.min_offset() || from.0 >= end {
            return Vec::new();
        }
        let byte = from.0 * CQ_UNIT_BYTES;
        let Some(file) = self.files.find(byte) else {
            return Vec::new();
        };
        let in_file_end = (file.end_offset() / CQ_UNIT_BYTES).min(end);
        let count = in_file_end - from.0;
        let Some(bytes) = file.read(byte - file.start_offset(), count * CQ_UNIT_BYTES) else {
            return Vec::new();
        };
        bytes
            .chunks_exact(CQ_UNIT_BYTES as usize)
            .enumerate()
            .map(|(i, chunk)| (QueueOffset(from.0 + i as u64), CqUnit::decode(chunk)))
            .collect()
    }

    /// The first queue offset whose message was stored at or after `timestamp_ms`
    /// (`max_offset` if none): a binary search over store timestamps, which the store
    /// keeps monotonic.
    pub fn offset_by_timestamp(&self, timestamp_ms: u64, commit_log: &CommitLog) -> QueueOffset {
        let (mut low, mut high) = (self.min_offset().0, self.max_offset().0);
        while low < high {
            let mid = low + (high - low) / 2;
            let stored = self
                .read_unit(mid)
                .and_then(|unit| commit_log.peek_store_timestamp(unit.commit_log_offset));
            match stored {
                Some(ts) if ts < timestamp_ms => low = mid + 1,
                Some(_) => high = mid,
                // Deleted under us by retention: everything before is gone too.
                None => low = mid + 1,
            }
        }
        QueueOffset(low)
    }

    /// Moves the minimum to the first unit pointing at or beyond `commit_log_min`
    /// (after retention deleted older CommitLog files).
    pub fn correct_min_offset(&self, commit_log_min: CommitLogOffset) {
        let max = self.max_offset().0;
        let first_file_unit = self
            .files
            .min_offset()
            .map_or(max, |byte| byte / CQ_UNIT_BYTES);
        let mut low = self.min_offset().0.max(first_file_unit).min(max);
        let mut high = max;
        while low < high {
            let mid = low + (high - low) / 2;
            match self.read_unit(mid) {
                Some(unit) if unit.size > 0 && unit.commit_log_offset >= commit_log_min => {
                    high = mid
                }
                _ => low = mid + 1,
            }
        }
        self.min_offset.fetch_max(low, Ordering::AcqRel);
    }

    /// Deletes files whose units all lie below the minimum.
    ///
    /// # Errors
    /// Deleting failed.
    pub fn delete_expired_files(&self) -> StoreResult<usize> {
        let min_byte = self.min_offset().0 * CQ_UNIT_BYTES;
        Ok(self.files.delete_before(min_byte)?.len())
    }

    /// Flushes published units.
    ///
    /// # Errors
    /// `msync` failed.
    pub fn flush(&self) -> StoreResult<()> {
        self.files.flush()
    }

    /// Whether the unit at `queue_offset` exists and points at `commit_log_offset`
    /// (recovery's idempotent re-dispatch).
    pub fn has_unit_at(
        &self,
        queue_offset: QueueOffset,
        commit_log_offset: CommitLogOffset,
    ) -> Option<bool> {
        if queue_offset >= self.max_offset() || queue_offset < self.min_offset() {
            return None;
        }
        self.read_unit(queue_offset.0)
            .map(|unit| unit.commit_log_offset == commit_log_offset)
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.files.disk_bytes()
    }

    /// Removes every unit and file; the queue restarts empty (for a rebuild).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn reset(&mut self) -> StoreResult<()> {
        self.files.remove_all()?;
        self.min_offset.store(0, Ordering::Release);
        self.max_offset.store(0, Ordering::Release);
        *self
            .next_offset
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner()) = 0;
        Ok(())
    }
}

/// Finds the end of the units in a queue after a crash: past the last non-zero unit,
/// then back over units pointing beyond the recovered CommitLog end. Truncates the
/// files there and returns the end as a queue offset.
fn recover_end(files: &mut MappedFileQueue, commit_log_end: CommitLogOffset) -> StoreResult<u64> {
    let Some(first_byte) = files.min_offset() else {
        return Ok(0);
    };
    let mut end_byte = first_byte;
    for file in files.files_mut() {
        let start = file.start_offset();
        let extent = file.written_extent(0).div_ceil(CQ_UNIT_BYTES) * CQ_UNIT_BYTES;
        let extent = extent.min(file.size() / CQ_UNIT_BYTES * CQ_UNIT_BYTES);
        if extent > 0 {
            end_byte = start + extent;
        }
    }
    // Walk back over units that point into a truncated CommitLog tail.
    loop {
        if end_byte <= first_byte {
            break;
        }
        let unit_byte = end_byte - CQ_UNIT_BYTES;
        let Some(file) = files
            .files_mut()
            .find(|f| f.start_offset() <= unit_byte && unit_byte < f.end_offset())
        else {
            break;
        };
        let in_file = (unit_byte - file.start_offset()) as usize;
        let unit =
            CqUnit::decode(&file.recovery_bytes()[in_file..in_file + CQ_UNIT_BYTES as usize]);
        if unit.size > 0 && unit.end_offset() <= commit_log_end {
            break;
        }
        end_byte = unit_byte;
    }
    files.truncate_to(end_byte)?;
    // Every file before the one holding the end is full.
    let file_size = files.file_size();
    for file in files.files_mut() {
        if file.end_offset() <= end_byte {
            file.set_recovered_position(file_size);
        }
    }
    Ok(end_byte / CQ_UNIT_BYTES)
}

/// Every ConsumeQueue of the store, by topic and queue id.
pub struct ConsumeQueueTable {
    root: PathBuf,
    units_per_file: u64,
    queues: RwLock<HashMap<String, HashMap<QueueId, Arc<ConsumeQueue>>>>,
}

impl ConsumeQueueTable {
    /// Opens every queue under `root` (`<root>/<topic>/<queue id>/`).
    ///
    /// # Errors
    /// A queue failed to open.
    pub fn open(
        root: &Path,
        units_per_file: u64,
        commit_log_min: CommitLogOffset,
        commit_log_end: CommitLogOffset,
    ) -> StoreResult<Self> {
        super::durable_file::create_dir_durably(root).map_err(|e| StoreError::io(root, e))?;
        let mut queues: HashMap<String, HashMap<QueueId, Arc<ConsumeQueue>>> = HashMap::new();
        for topic_entry in fs::read_dir(root).map_err(|e| StoreError::io(root, e))? {
            let topic_entry = topic_entry.map_err(|e| StoreError::io(root, e))?;
            let topic_dir = topic_entry.path();
            let Some(topic) = topic_entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !topic_dir.is_dir() {
                continue;
            }
            for queue_entry in
                fs::read_dir(&topic_dir).map_err(|e| StoreError::io(&topic_dir, e))?
            {
                let queue_entry = queue_entry.map_err(|e| StoreError::io(&topic_dir, e))?;
                let Some(queue_id) = queue_entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<u32>().ok())
                else {
                    continue;
                };
                let queue = ConsumeQueue::open(
                    &queue_entry.path(),
                    &topic,
                    QueueId(queue_id),
                    units_per_file,
                    commit_log_min,
                    commit_log_end,
                )?;
                queues
                    .entry(topic.clone())
                    .or_default()
                    .insert(QueueId(queue_id), Arc::new(queue));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            units_per_file,
            queues: RwLock::new(queues),
        })
    }

    /// The queue, if it exists.
    pub fn get(&self, topic: &str, queue_id: QueueId) -> Option<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(topic)?
            .get(&queue_id)
            .cloned()
    }

    /// The queue, created empty if it does not exist.
    ///
    /// # Errors
    /// Creating its directory failed.
    pub fn get_or_create(&self, topic: &str, queue_id: QueueId) -> StoreResult<Arc<ConsumeQueue>> {
        if let Some(queue) = self.get(topic, queue_id) {
            return Ok(queue);
        }
        let mut queues = self
            .queues
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let by_id = queues.entry(topic.to_string()).or_default();
        if let Some(queue) = by_id.get(&queue_id) {
            return Ok(Arc::clone(queue));
        }
        let dir = self.root.join(topic).join(queue_id.0.to_string());
        let queue = Arc::new(ConsumeQueue::open(
            &dir,
            topic,
            queue_id,
            self.units_per_file,
            CommitLogOffset(0),
            CommitLogOffset(u64::MAX),
        )?);
        by_id.insert(queue_id, Arc::clone(&queue));
        Ok(queue)
    }

    /// Every queue.
    pub fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .flat_map(|by_id| by_id.values().cloned())
            .collect()
    }

    /// The queues of one topic, by queue id.
    pub fn topic_queues(&self, topic: &str) -> Vec<Arc<ConsumeQueue>> {
        let queues = self
            .queues
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut list: Vec<_> = queues
            .get(topic)
            .map(|by_id| by_id.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|q| q.queue_id());
        list
    }

    /// Removes a queue and its files (for a rebuild from the CommitLog), returning it
    /// re-created empty.
    ///
    /// # Errors
    /// Deleting or creating failed.
    pub fn recreate(&self, topic: &str, queue_id: QueueId) -> StoreResult<Arc<ConsumeQueue>> {
        self.remove_queue(topic, queue_id)?;
        self.get_or_create(topic, queue_id)
    }

    /// Deletes every queue and its files (a reset of the whole store).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn remove_all(&self) -> StoreResult<()> {
        let topics: Vec<String> = self
            .queues
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .keys()
            .cloned()
            .collect();
        for topic in topics {
            self.remove_topic(&topic)?;
        }
        Ok(())
    }

    /// Deletes every queue of a topic and its files.
    ///
    /// # Errors
    /// Deleting failed.
    pub fn remove_topic(&self, topic: &str) -> StoreResult<()> {
        self.forget_topic(topic);
        self.remove_topic_files(topic)
    }

    /// Forgets every queue of a topic, leaving its files (readers holding a queue
    /// keep reading their mapping).
    pub fn forget_topic(&self, topic: &str) {
        self.queues
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(topic);
    }

    /// Deletes the files of a topic's queues (forgotten first).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn remove_topic_files(&self, topic: &str) -> StoreResult<()> {
        let dir = self.root.join(topic);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            super::durable_file::sync_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        }
        Ok(())
    }

    /// Forgets one queue and deletes its files.
    ///
    /// # Errors
    /// Deleting failed.
    pub fn remove_queue(&self, topic: &str, queue_id: QueueId) -> StoreResult<()> {
        {
            let mut queues = self
                .queues
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            if let Some(by_id) = queues.get_mut(topic) {
                by_id.remove(&queue_id);
                if by_id.is_empty() {
                    queues.remove(topic);
                }
            }
        }
        let dir = self.root.join(topic).join(queue_id.0.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            let parent = self.root.join(topic);
            super::durable_file::sync_dir(&parent).map_err(|e| StoreError::io(&parent, e))?;
        }
        Ok(())
    }
}
