//! The CommitLog: every record of every topic, appended to one byte stream of mapped
//! files.
//!
//! Invariants:
//! * Records are written back to back; a record never spans two files. When the next
//!   record (plus room for a blank marker) does not fit in the current file, the rest
//!   of that file becomes a blank record and the record goes to the next file.
//! * An append is planned before anything is written: the files it needs are created
//!   first, so writing the bytes cannot fail half-way and a batch is published whole
//!   or not at all.
//! * Positions: `flushed ≤ committed ≤ write`. Readers see bytes below `committed`,
//!   which always ends a whole batch (Raft entry). `flushed` is durable.
//! * Recovery (`open`) trusts nothing above the checkpointed flushed offset: from the
//!   start of the file holding it, records are validated; a bad record below the
//!   checkpoint is corruption (refuse to open), at or above it a torn tail
//!   (truncate, and zero what follows). A trailing Raft entry whose records are not
//!   all present is dropped too — it is still in the Raft log and will be re-applied.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{StoreError, StoreResult};
use super::mapped_file::{Allocation, MappedFile};
use super::mapped_file_queue::MappedFileQueue;
use super::record::{self, layout, Decoded, RecordContent, RecordMeta, RecordView};
use super::types::{CommitLogOffset, RaftLogRef};

/// A record ready to append: everything but its physical offset is fixed.
pub struct PendingRecord<'a> {
    pub meta: RecordMeta,
    pub content: RecordContent<'a>,
    /// Encoded size, from [`record::encoded_len`].
    pub len: u32,
}

/// Where the CommitLog's tail stood after recovery, or after the last append.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TailState {
    /// Raft log id of the last record.
    pub last_raft: Option<RaftLogRef>,
    /// Store timestamp of the last record (store timestamps never go backwards).
    pub last_store_timestamp_ms: u64,
}

/// What `open` found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitLogRecovery {
    /// Where validation started.
    pub scanned_from: CommitLogOffset,
    /// The end of valid data.
    pub end: CommitLogOffset,
    /// Bytes dropped from a torn tail (including a trailing incomplete Raft entry).
    pub truncated_bytes: u64,
    /// Records validated.
    pub records_validated: u64,
}

/// The checkpoint's claims about the CommitLog, which recovery starts from.
#[derive(Copy, Clone, Debug, Default)]
pub struct CommitLogCheckpoint {
    /// Every byte below this was durable when the checkpoint was written.
    pub flushed: CommitLogOffset,
    /// The tail state at `flushed`.
    pub tail: TailState,
}

/// The shared CommitLog.
pub struct CommitLog {
    files: MappedFileQueue,
    /// End of the last published batch.
    committed: AtomicU64,
    /// Every byte below this is durable.
    flushed: AtomicU64,
    /// Serializes appends; holds the tail state.
    writer: Mutex<WriterState>,
}

struct WriterState {
    /// Next global write position (== `committed` between appends).
    position: u64,
    tail: TailState,
    /// Reused encode buffer: one `pwrite` per file segment of a batch.
    buffer: Vec<u8>,
    /// A write failed half-way: bytes may sit past `committed` in a file whose own
    /// committed position already moved, so no further write may happen until
    /// recovery (reopen) repairs the tail.
    failed: bool,
}

/// The encode buffer is shrunk back after a batch larger than this.
const MAX_KEPT_BUFFER_BYTES: usize = 16 << 20;

impl CommitLog {
    /// Opens the CommitLog in `dir` and recovers its tail.
    ///
    /// An empty directory starts a log at `empty_start` (normally 0; a follower
    /// installing a snapshot from a leader whose old files were deleted starts later).
    ///
    /// # Errors
    /// Corruption below the checkpoint (naming file and offset), or I/O failure.
    pub fn open(
        dir: &Path,
        file_size: u64,
        checkpoint: CommitLogCheckpoint,
    ) -> StoreResult<(Self, CommitLogRecovery)> {
        // Written with pwrite only (see `mapped_file`): files may stay sparse.
        let mut files = MappedFileQueue::open(dir, file_size, Allocation::Sparse)?;
        let (position, tail, recovery) = recover(&mut files, checkpoint)?;
        let log = Self {
            files,
            committed: AtomicU64::new(position),
            flushed: AtomicU64::new(recovery.scanned_from.0.min(position)),
            writer: Mutex::new(WriterState {
                position,
                tail,
                buffer: Vec::new(),
                failed: false,
            }),
        };
        Ok((log, recovery))
    }

    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    pub fn file_size(&self) -> u64 {
        self.files.file_size()
    }

    /// The smallest offset still kept (after retention).
    pub fn min_offset(&self) -> CommitLogOffset {
        CommitLogOffset(
            self.files
                .min_offset()
                .unwrap_or_else(|| self.committed.load(Ordering::Acquire)),
        )
    }

    /// One past the last published byte: readers may read below it.
    pub fn max_offset(&self) -> CommitLogOffset {
        CommitLogOffset(self.committed.load(Ordering::Acquire))
    }

    /// Every byte below this is durable.
    pub fn flushed_offset(&self) -> CommitLogOffset {
        CommitLogOffset(self.flushed.load(Ordering::Acquire))
    }

    /// Raft id and store timestamp of the last record.
    pub fn tail(&self) -> TailState {
        self.lock_writer().tail
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends records (one Raft entry's worth, or a storage-level batch), assigning
    /// each its physical offset, and publishes them together.
    ///
    /// # Errors
    /// Creating a new file failed (nothing written), or a write failed half-way
    /// (nothing published; the log refuses writes until reopened).
    ///
    /// # Panics
    /// If a record is larger than a file can hold: callers validate sizes first.
    pub fn append(&self, records: &mut [PendingRecord<'_>]) -> StoreResult<CommitLogOffset> {
        let mut guard = self.lock_writer();
        let writer = &mut *guard;
        if writer.failed {
            return Err(StoreError::Failed);
        }
        let file_size = self.files.file_size();

        // Plan: the position of every record and the files the batch needs.
        let mut position = writer.position;
        for pending in records.iter_mut() {
            let len = u64::from(pending.len);
            assert!(
                len + layout::BLANK_LEN as u64 <= file_size,
                "record of {len} bytes cannot fit a {file_size}-byte file"
            );
            let file_end = (position / file_size + 1) * file_size;
            if position + len + layout::BLANK_LEN as u64 > file_end {
                position = file_end;
            }
            pending.meta.physical_offset = CommitLogOffset(position);
            position += len;
        }
        let end = position;
        self.ensure_files_until(writer.position, end)?;

        // Write: encode each file's segment into the buffer, one pwrite per segment.
        let result = self.write_planned(records, &mut writer.buffer, writer.position);
        if writer.buffer.capacity() > MAX_KEPT_BUFFER_BYTES {
            writer.buffer = Vec::new();
        }
        if let Err(e) = result {
            writer.failed = true;
            return Err(e);
        }

        if let Some(last) = records.last() {
            writer.tail = TailState {
                last_raft: Some(last.meta.raft),
                last_store_timestamp_ms: last.meta.store_timestamp_ms,
            };
        }
        writer.position = end;
        self.committed.store(end, Ordering::Release);
        Ok(CommitLogOffset(end))
    }

    /// Encodes and writes planned records from `start`, committing each file.
    fn write_planned(
        &self,
        records: &[PendingRecord<'_>],
        buffer: &mut Vec<u8>,
        start: u64,
    ) -> StoreResult<()> {
        let mut file = self.file_for_write(start);
        let mut file_writer = file.writer();
        buffer.clear();
        let io_error = |file: &MappedFile, e| StoreError::io(file.path(), e);
        for pending in records {
            let target = pending.meta.physical_offset.0;
            if target >= file.end_offset() {
                // The rest of this file becomes a blank record: its header is written,
                // the bytes after it were never written and read as zeros.
                let blank_at = buffer.len();
                buffer.resize(blank_at + layout::BLANK_LEN, 0);
                let rest = file_writer.remaining() - blank_at as u64;
                let rest = u32::try_from(rest).expect("file sizes fit in u32");
                buffer[blank_at..blank_at + 4].copy_from_slice(&rest.to_le_bytes());
                buffer[blank_at + 4..blank_at + 8]
                    .copy_from_slice(&record::BLANK_MAGIC.to_le_bytes());
                file_writer
                    .write_all(buffer)
                    .map_err(|e| io_error(&file, e))?;
                file_writer.skip_to_end();
                file_writer.commit();
                drop(file_writer);
                buffer.clear();
                file = self.file_for_write(target);
                file_writer = file.writer();
            }
            assert_eq!(
                file.start_offset() + file_writer.position() + buffer.len() as u64,
                target,
                "commit log write position diverged from its plan"
            );
            let at = buffer.len();
            buffer.resize(at + pending.len as usize, 0);
            record::encode_into(&mut buffer[at..], &pending.meta, &pending.content);
        }
        file_writer
            .write_all(buffer)
            .map_err(|e| io_error(&file, e))?;
        file_writer.commit();
        Ok(())
    }

    /// Appends bytes copied from another replica's CommitLog at `from` (which must be
    /// this log's end), validating every record, and publishes them. Returns the new
    /// end. `visit` sees every record, for dispatch.
    ///
    /// # Errors
    /// The bytes do not continue this log, are not whole valid records, or a file
    /// could not be created. Nothing is published then.
    pub fn append_raw(
        &self,
        from: CommitLogOffset,
        bytes: &[u8],
        mut visit: impl FnMut(RecordView<'_>),
    ) -> StoreResult<CommitLogOffset> {
        let mut writer = self.lock_writer();
        if writer.failed {
            return Err(StoreError::Failed);
        }
        if from.0 != writer.position {
            return Err(StoreError::NotContiguous {
                offered: from,
                end: CommitLogOffset(writer.position),
            });
        }
        let file_size = self.files.file_size();
        // Validate the whole chunk before writing any of it.
        let mut pos = 0usize;
        let mut tail = writer.tail;
        let mut records = 0u64;
        while pos < bytes.len() {
            let global = from.0 + pos as u64;
            let file_end = (global / file_size + 1) * file_size;
            let in_file = &bytes[pos..bytes.len().min(pos + (file_end - global) as usize)];
            match record::decode(in_file) {
                Ok(Decoded::Record(view)) if view.meta.physical_offset.0 == global => {
                    tail = TailState {
                        last_raft: Some(view.meta.raft),
                        last_store_timestamp_ms: view.meta.store_timestamp_ms,
                    };
                    records += 1;
                    pos += view.size as usize;
                }
                Ok(Decoded::Blank { len }) if global + u64::from(len) == file_end => {
                    pos += len as usize;
                }
                Ok(_) => {
                    return Err(StoreError::BadRecord {
                        offset: CommitLogOffset(global),
                        source: record::RecordError::BadField {
                            field: "physical_offset",
                            reason: "record does not belong at this offset",
                        },
                    })
                }
                Err(source) => {
                    return Err(StoreError::BadRecord {
                        offset: CommitLogOffset(global),
                        source,
                    })
                }
            }
        }
        let end = from.0 + bytes.len() as u64;
        self.ensure_files_until(from.0, end)?;
        let mut written = 0usize;
        while written < bytes.len() {
            let global = from.0 + written as u64;
            let file = self.file_for_write(global);
            let mut file_writer = file.writer();
            let n = (file.end_offset() - global).min((bytes.len() - written) as u64) as usize;
            // pwrite, not the mapping: the file is sparse, and a store into a hole on a
            // full disk would raise SIGBUS instead of returning ENOSPC.
            if let Err(e) = file_writer.write_all(&bytes[written..written + n]) {
                // Earlier files of the chunk may be written already: refuse every
                // later write until recovery has looked at the tail again.
                writer.failed = true;
                return Err(StoreError::io(file.path(), e));
            }
            file_writer.commit();
            written += n;
        }
        if records > 0 {
            writer.tail = tail;
        }
        writer.position = end;
        self.committed.store(end, Ordering::Release);
        drop(writer);
        self.scan(from, CommitLogOffset(end), |view| {
            visit(view);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(CommitLogOffset(end))
    }

    /// Creates the files needed to write `[from, to)`.
    fn ensure_files_until(&self, from: u64, to: u64) -> StoreResult<()> {
        let file_size = self.files.file_size();
        let mut next_start = match self.files.last() {
            Some(last) => last.end_offset(),
            None => from / file_size * file_size,
        };
        // A write ending exactly at a file end still needs nothing more, but one that
        // starts at a file boundary needs the file holding its first byte.
        while next_start < to || (next_start == from && from == to && self.files.is_empty()) {
            self.files.create_file(next_start)?;
            next_start += file_size;
        }
        Ok(())
    }

    fn file_for_write(&self, position: u64) -> Arc<MappedFile> {
        self.files
            .find(position)
            .expect("files for a planned write exist")
    }

    /// Calls `f` with the record at `offset`.
    ///
    /// # Errors
    /// The offset was deleted by retention, is beyond the end, or does not hold a
    /// valid record.
    pub fn read<T>(
        &self,
        offset: CommitLogOffset,
        f: impl FnOnce(RecordView<'_>) -> T,
    ) -> StoreResult<T> {
        let max = self.max_offset();
        if offset >= max {
            return Err(StoreError::CommitLogOffsetOverflow {
                requested: offset,
                max,
            });
        }
        let file = self
            .files
            .find(offset.0)
            .ok_or(StoreError::CommitLogOffsetTooSmall {
                requested: offset,
                min: self.min_offset(),
            })?;
        let bytes = file.read_from(offset.0 - file.start_offset());
        match record::decode(bytes) {
            Ok(Decoded::Record(view)) if view.meta.physical_offset == offset => Ok(f(view)),
            Ok(_) => Err(StoreError::BadRecord {
                offset,
                source: record::RecordError::BadField {
                    field: "physical_offset",
                    reason: "no record starts at this offset",
                },
            }),
            Err(source) => Err(StoreError::BadRecord { offset, source }),
        }
    }

    /// Reads the store timestamp of the (already published) record at `offset`
    /// without validating it: for binary searches over positions taken from a
    /// ConsumeQueue.
    pub fn peek_store_timestamp(&self, offset: CommitLogOffset) -> Option<u64> {
        if offset >= self.max_offset() {
            return None;
        }
        let file = self.files.find(offset.0)?;
        record::peek_store_timestamp(file.read_from(offset.0 - file.start_offset()))
    }

    /// Copies up to `max_len` published bytes from `from`, never past the end of the
    /// file holding `from` (chunks of a snapshot transfer).
    ///
    /// # Errors
    /// `from` was deleted by retention or is beyond the end.
    pub fn read_raw(&self, from: CommitLogOffset, max_len: u64) -> StoreResult<Vec<u8>> {
        let max = self.max_offset();
        if from > max {
            return Err(StoreError::CommitLogOffsetOverflow {
                requested: from,
                max,
            });
        }
        if from == max {
            return Ok(Vec::new());
        }
        let file = self
            .files
            .find(from.0)
            .ok_or(StoreError::CommitLogOffsetTooSmall {
                requested: from,
                min: self.min_offset(),
            })?;
        let start = from.0 - file.start_offset();
        let limit = (max.0 - file.start_offset()).min(file.size());
        let len = (limit - start).min(max_len);
        Ok(file.read(start, len).unwrap_or_default().to_vec())
    }

    /// Visits every published record in `[from, to)` in order (blank records are
    /// skipped). `from` must be a record boundary.
    ///
    /// # Errors
    /// A record failed validation, or `visit` returned an error.
    pub fn scan(
        &self,
        from: CommitLogOffset,
        to: CommitLogOffset,
        mut visit: impl FnMut(RecordView<'_>) -> StoreResult<ControlFlow<()>>,
    ) -> StoreResult<()> {
        let to = to.min(self.max_offset());
        let mut pos = from.0.max(self.min_offset().0);
        while pos < to.0 {
            let Some(file) = self.files.find(pos) else {
                return Err(StoreError::CommitLogOffsetTooSmall {
                    requested: CommitLogOffset(pos),
                    min: self.min_offset(),
                });
            };
            let bytes = file.read_from(pos - file.start_offset());
            match record::decode(bytes) {
                Ok(Decoded::Record(view)) => {
                    pos += u64::from(view.size);
                    if visit(view)?.is_break() {
                        return Ok(());
                    }
                }
                Ok(Decoded::Blank { .. }) => pos = file.end_offset(),
                Ok(Decoded::End) => break,
                Err(source) => {
                    return Err(StoreError::BadRecord {
                        offset: CommitLogOffset(pos),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Makes every published byte durable; returns the new flushed offset (a batch
    /// boundary).
    ///
    /// # Errors
    /// `msync` failed; the flushed offset does not move.
    pub fn flush(&self) -> StoreResult<CommitLogOffset> {
        // Read `committed` first: files may already hold more (a batch being
        // published), but only a batch boundary may be reported as flushed.
        self.flush_to(CommitLogOffset(self.committed.load(Ordering::Acquire)))
    }

    /// Makes the published bytes below `target` durable (and not necessarily more);
    /// `target` must be a batch boundary. Returns the new flushed offset.
    ///
    /// # Errors
    /// `msync` failed; the flushed offset does not move.
    pub fn flush_to(&self, target: CommitLogOffset) -> StoreResult<CommitLogOffset> {
        let target = target.0.min(self.committed.load(Ordering::Acquire));
        let from = self.flushed.load(Ordering::Acquire);
        if target > from {
            for file in self.files.files() {
                if file.end_offset() <= from || file.start_offset() >= target {
                    continue;
                }
                file.flush_to(target - file.start_offset())
                    .map_err(|e| StoreError::io(file.path(), e))?;
            }
            self.flushed.fetch_max(target, Ordering::AcqRel);
        }
        Ok(CommitLogOffset(self.flushed.load(Ordering::Acquire)))
    }

    /// Deletes every file ending at or before `offset` (never the file being
    /// written). Returns the deleted paths.
    ///
    /// # Errors
    /// Deleting a file failed.
    pub fn delete_files_before(
        &self,
        offset: CommitLogOffset,
    ) -> StoreResult<Vec<std::path::PathBuf>> {
        self.files.delete_before(offset.0)
    }

    /// The files, oldest first.
    pub fn files(&self) -> Vec<Arc<MappedFile>> {
        self.files.files()
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.files.disk_bytes()
    }

    /// Discards every file and restarts the log empty at `start` (a file boundary).
    /// Used when a follower receives a snapshot that starts beyond its own end.
    /// Readers holding a file keep a valid mapping until they drop it.
    ///
    /// # Errors
    /// Deleting failed; the log is then marked failed until reopened.
    pub fn reset_to(&self, start: CommitLogOffset) -> StoreResult<()> {
        assert_eq!(
            start.0 % self.file_size(),
            0,
            "a reset commit log must start at a file boundary"
        );
        let mut writer = self.lock_writer();
        if let Err(e) = self
            .files
            .delete_before(u64::MAX)
            .and_then(|_| self.files.delete_last())
        {
            writer.failed = true;
            return Err(e);
        }
        writer.position = start.0;
        writer.tail = TailState::default();
        writer.failed = false;
        self.committed.store(start.0, Ordering::Release);
        self.flushed.store(start.0, Ordering::Release);
        Ok(())
    }
}

/// The Raft entry whose records recovery is scanning.
#[derive(Copy, Clone)]
struct EntryScan {
    raft: RaftLogRef,
    /// Index of the next record expected.
    next: u32,
    count: u32,
    /// Where its bytes start: its first record, or the blank it wrote to end the
    /// previous file.
    first: u64,
    /// The tail state just before this entry, restored if the entry is dropped.
    tail_before: TailState,
}

/// Where and why recovery stopped reading.
struct Cut {
    at: u64,
    /// `None` when it found zeros (end of written data).
    problem: Option<String>,
    file: std::path::PathBuf,
}

/// Validates from the start of the file holding the checkpoint, truncates a torn
/// tail, and returns (end, tail state, report).
fn recover(
    files: &mut MappedFileQueue,
    checkpoint: CommitLogCheckpoint,
) -> StoreResult<(u64, TailState, CommitLogRecovery)> {
    let file_size = files.file_size();
    let Some(first_start) = files.min_offset() else {
        // No files: an empty log at the checkpoint's file (offset 0 for a new store).
        let start = checkpoint.flushed.0 / file_size * file_size;
        let report = CommitLogRecovery {
            scanned_from: CommitLogOffset(start),
            end: CommitLogOffset(start),
            ..Default::default()
        };
        return Ok((start, TailState::default(), report));
    };
    let last_end = files.last().map_or(first_start, |f| f.end_offset());
    let flushed = checkpoint.flushed.0.max(first_start);
    if flushed > last_end {
        return Err(StoreError::Corrupt {
            file: files.dir().to_path_buf(),
            offset: last_end,
            reason: format!(
                "checkpoint says {flushed} bytes are durable but the commit log ends at {last_end}: files are missing"
            ),
        });
    }
    let scan_start = (flushed / file_size * file_size).max(first_start);
    let mut report = CommitLogRecovery {
        scanned_from: CommitLogOffset(scan_start),
        ..Default::default()
    };

    let mut tail = checkpoint.tail;
    let mut entry: Option<EntryScan> = None;
    let mut cut: Option<Cut> = None;
    let mut end = scan_start;
    // (start of the blank ending the last file scanned, that file's end) while no valid
    // record has followed it.
    let mut trailing_blank: Option<(u64, u64)> = None;

    for file in files.files_mut() {
        if file.end_offset() <= scan_start {
            // Whole files below the scan: trusted here, verified whenever read.
            let size = file.size();
            file.set_recovered_position(size);
            continue;
        }
        if cut.is_some() {
            break;
        }
        let start = file.start_offset();
        let path = file.path().to_path_buf();
        let bytes = file.recovery_bytes();
        let mut pos = 0usize;
        let ended_with_blank = loop {
            let global = start + pos as u64;
            let problem = match record::decode(&bytes[pos..]) {
                Ok(Decoded::Record(view)) => {
                    let meta = view.meta;
                    if meta.physical_offset.0 != global {
                        Some(format!(
                            "record claims physical offset {} but sits at {global}",
                            meta.physical_offset
                        ))
                    } else {
                        match follow_entry(entry, &meta, global, tail) {
                            Ok(mut next) => {
                                // An entry opening this file wrote the blank ending the
                                // previous one: if the entry is dropped, so is the blank.
                                if let Some((blank_at, _)) = trailing_blank {
                                    if next.first == global && meta.entry_record_index == 0 {
                                        next.first = blank_at;
                                    }
                                }
                                entry = Some(next);
                                tail = TailState {
                                    last_raft: Some(meta.raft),
                                    last_store_timestamp_ms: meta.store_timestamp_ms,
                                };
                                report.records_validated += 1;
                                pos += view.size as usize;
                                end = start + pos as u64;
                                trailing_blank = None;
                                continue;
                            }
                            Err(reason) => Some(reason),
                        }
                    }
                }
                Ok(Decoded::Blank { .. }) => break true,
                Ok(Decoded::End) => None,
                Err(e) => Some(e.to_string()),
            };
            cut = Some(Cut {
                at: global,
                problem,
                file: path.clone(),
            });
            break false;
        };
        if ended_with_blank {
            file.set_recovered_position(file_size);
            end = file.end_offset();
            trailing_blank = Some((start + pos as u64, end));
        }
    }

    if let Some(cut) = &cut {
        if cut.at < flushed {
            return Err(StoreError::Corrupt {
                file: cut.file.clone(),
                offset: cut.at,
                reason: cut.problem.clone().unwrap_or_else(|| {
                    format!("unwritten bytes below the durable offset {flushed}")
                }),
            });
        }
        end = cut.at;
    }
    // The writer fills the rest of a file with a blank only on its way to the next file,
    // so a blank that nothing valid follows is what is left of an entry whose records
    // there were lost: part of the torn tail.
    if let Some((blank_at, file_end)) = trailing_blank {
        if end == file_end && blank_at >= flushed {
            end = blank_at;
        }
    }
    // A trailing Raft entry with missing records is dropped: it is still in the Raft
    // log and will be applied again.
    if let Some(scan) = entry.filter(|e| e.next != e.count) {
        if scan.first < flushed {
            return Err(StoreError::Corrupt {
                file: files.dir().to_path_buf(),
                offset: scan.first,
                reason: format!(
                    "raft entry {} has {} of {} records below the durable offset {flushed}",
                    scan.raft, scan.next, scan.count
                ),
            });
        }
        end = scan.first;
        tail = scan.tail_before;
    }

    report.end = CommitLogOffset(end);
    report.truncated_bytes = files.truncate_to(end)?;
    Ok((end, tail, report))
}

/// Checks that a record continues the Raft entry being scanned (or starts the next
/// one after a complete entry) and returns the updated scan state.
fn follow_entry(
    entry: Option<EntryScan>,
    meta: &RecordMeta,
    global: u64,
    tail: TailState,
) -> Result<EntryScan, String> {
    let previous_complete = entry.is_none_or(|e| e.next == e.count);
    if meta.entry_record_index == 0 && previous_complete {
        return Ok(EntryScan {
            raft: meta.raft,
            next: 1,
            count: meta.entry_record_count,
            first: global,
            tail_before: tail,
        });
    }
    match entry {
        Some(e)
            if !previous_complete && e.raft == meta.raft && e.next == meta.entry_record_index =>
        {
            Ok(EntryScan {
                next: e.next + 1,
                ..e
            })
        }
        // The scan began inside an entry that started in an earlier file: its start is
        // below the checkpoint, so it was complete when checkpointed.
        None => Ok(EntryScan {
            raft: meta.raft,
            next: meta.entry_record_index + 1,
            count: meta.entry_record_count,
            first: global,
            tail_before: tail,
        }),
        _ => Err(format!(
            "raft entry {} record {} of {} does not follow the previous record",
            meta.raft, meta.entry_record_index, meta.entry_record_count
        )),
    }
}
