//! A directory of equally sized [`MappedFile`]s forming one logical byte stream.
//!
//! Each file is named by the 20-digit, zero-padded global offset of its first byte
//! (RocketMQ's naming), so `ls` shows the layout and a file's place needs no other
//! metadata. Invariant: the files are contiguous — each starts where the previous
//! one ends — from the first (the minimum offset kept after retention) to the last.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::durable_file::{create_dir_durably, sync_dir};
use super::error::{StoreError, StoreResult};
use super::mapped_file::{Allocation, MappedFile};

/// Width of a file name: enough digits for any u64.
const FILE_NAME_DIGITS: usize = 20;

/// An ordered, contiguous run of mapped files in one directory.
pub struct MappedFileQueue {
    dir: PathBuf,
    file_size: u64,
    allocation: Allocation,
    files: RwLock<Vec<Arc<MappedFile>>>,
}

/// The file name for a file starting at `start_offset`.
pub fn file_name(start_offset: u64) -> String {
    format!("{start_offset:0width$}", width = FILE_NAME_DIGITS)
}

impl MappedFileQueue {
    /// Opens (creating if needed) the directory and maps every data file in it.
    ///
    /// # Errors
    /// A file has the wrong size, the files are not contiguous, or I/O fails.
    pub fn open(dir: &Path, file_size: u64, allocation: Allocation) -> StoreResult<Self> {
        create_dir_durably(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut starts = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == FILE_NAME_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) {
                let start: u64 = name.parse().map_err(|_| StoreError::Corrupt {
                    file: entry.path(),
                    offset: 0,
                    reason: "file name is not a valid offset".into(),
                })?;
                starts.push(start);
            }
        }
        starts.sort_unstable();
        // A crash between creating the newest file and sizing it leaves it empty. Files
        // are sized before anything is written to them, so it never held a byte: a
        // torn tail. An empty file anywhere else is refused below like any bad size.
        if let Some(last) = starts.last() {
            let path = dir.join(file_name(*last));
            let len = fs::metadata(&path)
                .map_err(|e| StoreError::io(&path, e))?
                .len();
            if len == 0 {
                tracing::warn!(
                    path = %path.display(),
                    "removing an empty file left by a torn creation"
                );
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
                starts.pop();
            }
        }
        let mut files = Vec::with_capacity(starts.len());
        for (i, start) in starts.iter().enumerate() {
            let path = dir.join(file_name(*start));
            if start % file_size != 0 {
                return Err(StoreError::Corrupt {
                    file: path,
                    offset: *start,
                    reason: format!("start offset is not a multiple of the file size {file_size}"),
                });
            }
            if i > 0 && starts[i - 1] + file_size != *start {
                return Err(StoreError::Corrupt {
                    file: path,
                    offset: *start,
                    reason: format!(
                        "files are not contiguous: previous file starts at {}",
                        starts[i - 1]
                    ),
                });
            }
            let file = MappedFile::open(&path, *start, file_size, allocation)
                .map_err(|e| StoreError::io(&path, e))?;
            files.push(Arc::new(file));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            file_size,
            allocation,
            files: RwLock::new(files),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    fn read_files(&self) -> RwLockReadGuard<'_, Vec<Arc<MappedFile>>> {
        self.files
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write_files(&self) -> RwLockWriteGuard<'_, Vec<Arc<MappedFile>>> {
        self.files
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A snapshot of the current files, oldest first.
    pub fn files(&self) -> Vec<Arc<MappedFile>> {
        self.read_files().clone()
    }

    pub fn is_empty(&self) -> bool {
        self.read_files().is_empty()
    }

    pub fn first(&self) -> Option<Arc<MappedFile>> {
        self.read_files().first().cloned()
    }

    pub fn last(&self) -> Option<Arc<MappedFile>> {
        self.read_files().last().cloned()
    }

    /// The file holding global offset `offset`, if it is still kept.
    pub fn find(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let files = self.read_files();
        let first = files.first()?;
        if offset < first.start_offset() {
            return None;
        }
        let index = usize::try_from((offset - first.start_offset()) / self.file_size).ok()?;
        files.get(index).cloned()
    }

    /// Global offset of the first kept byte (`None` when there are no files).
    pub fn min_offset(&self) -> Option<u64> {
        self.read_files().first().map(|f| f.start_offset())
    }

    /// Global offset one past the last published byte.
    pub fn committed_offset(&self) -> Option<u64> {
        self.read_files()
            .last()
            .map(|f| f.start_offset() + f.committed())
    }

    /// Creates the file starting at `start_offset` and appends it. It must continue the
    /// queue (or be the first file, at any multiple of the file size).
    ///
    /// # Errors
    /// Creating the file or syncing the directory failed.
    ///
    /// # Panics
    /// If `start_offset` does not continue the queue: the writer's own bug.
    pub fn create_file(&self, start_offset: u64) -> StoreResult<Arc<MappedFile>> {
        let mut files = self.write_files();
        if let Some(last) = files.last() {
            assert_eq!(
                last.end_offset(),
                start_offset,
                "new file in {} does not continue the queue",
                self.dir.display()
            );
        }
        assert_eq!(start_offset % self.file_size, 0, "unaligned file start");
        let path = self.dir.join(file_name(start_offset));
        let file = MappedFile::create(&path, start_offset, self.file_size, self.allocation)
            .map_err(|e| StoreError::io(&path, e))?;
        sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let file = Arc::new(file);
        files.push(Arc::clone(&file));
        Ok(file)
    }

    /// Exclusive access to the files for recovery (before the queue is shared).
    ///
    /// # Panics
    /// If a file is still shared: recovery runs before anything else holds one.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut MappedFile> {
        self.files
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter_mut()
            .map(|f| Arc::get_mut(f).expect("files are not shared during recovery"))
    }

    /// Truncates the stream at global offset `offset` during recovery: zeroes whatever
    /// was written past it in the file holding it and deletes every later file.
    /// Returns how many written bytes were dropped.
    ///
    /// # Errors
    /// Zeroing, syncing or deleting failed.
    pub fn truncate_to(&mut self, offset: u64) -> StoreResult<u64> {
        let files = self
            .files
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut dropped = 0u64;
        let mut deleted_any = false;
        while files
            .last()
            .is_some_and(|last| last.start_offset() > offset)
        {
            let mut last = files.pop().expect("checked non-empty");
            let file = Arc::get_mut(&mut last).expect("files are not shared during recovery");
            dropped += file.written_extent(0);
            fs::remove_file(file.path()).map_err(|e| StoreError::io(file.path(), e))?;
            deleted_any = true;
        }
        if let Some(last) = files.last_mut() {
            if offset < last.end_offset() {
                let file = Arc::get_mut(last).expect("files are not shared during recovery");
                let path = file.path().to_path_buf();
                dropped += file
                    .truncate(offset - file.start_offset())
                    .map_err(|e| StoreError::io(&path, e))?;
            }
        }
        if deleted_any {
            sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        }
        Ok(dropped)
    }

    /// Removes every file (recovery, or a rebuild starting elsewhere).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn remove_all(&mut self) -> StoreResult<()> {
        let files = std::mem::take(
            self.files
                .get_mut()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        for file in files {
            fs::remove_file(file.path()).map_err(|e| StoreError::io(file.path(), e))?;
        }
        sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))
    }

    /// Deletes every file that ends at or before `offset`, never the last file.
    /// Readers holding a deleted file keep a valid mapping until they drop it.
    ///
    /// # Errors
    /// Deleting failed; files before the failing one are gone.
    pub fn delete_before(&self, offset: u64) -> StoreResult<Vec<PathBuf>> {
        let victims: Vec<Arc<MappedFile>> = {
            let mut files = self.write_files();
            let keep_from = files
                .iter()
                .position(|f| f.end_offset() > offset)
                .unwrap_or(files.len())
                .min(files.len().saturating_sub(1));
            files.drain(..keep_from).collect()
        };
        let mut deleted = Vec::with_capacity(victims.len());
        for victim in victims {
            fs::remove_file(victim.path()).map_err(|e| StoreError::io(victim.path(), e))?;
            deleted.push(victim.path().to_path_buf());
        }
        if !deleted.is_empty() {
            sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        }
        Ok(deleted)
    }

    /// Deletes the last remaining file (a reset; `delete_before` always keeps one).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn delete_last(&self) -> StoreResult<()> {
        let last = self.write_files().pop();
        if let Some(file) = last {
            fs::remove_file(file.path()).map_err(|e| StoreError::io(file.path(), e))?;
            sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        }
        Ok(())
    }

    /// Flushes every file with unflushed published bytes.
    ///
    /// # Errors
    /// `msync` failed.
    pub fn flush(&self) -> StoreResult<()> {
        for file in self.files() {
            if file.flushed() < file.committed() {
                file.flush().map_err(|e| StoreError::io(file.path(), e))?;
            }
        }
        Ok(())
    }

    /// Bytes on disk taken by the files.
    pub fn disk_bytes(&self) -> u64 {
        self.read_files().iter().map(|f| f.allocated_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_offset_and_found_by_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = MappedFileQueue::open(dir.path(), 4096, Allocation::Sparse).expect("open");
        assert!(queue.is_empty());
        queue.create_file(8192).expect("create");
        queue.create_file(12288).expect("create");
        assert!(dir.path().join("00000000000000008192").exists());
        assert_eq!(queue.find(8192 + 5).map(|f| f.start_offset()), Some(8192));
        assert_eq!(
            queue.find(12288 + 4095).map(|f| f.start_offset()),
            Some(12288)
        );
        assert!(queue.find(100).is_none());
        assert!(queue.find(16384).is_none());
        drop(queue);
        let reopened = MappedFileQueue::open(dir.path(), 4096, Allocation::Sparse).expect("reopen");
        assert_eq!(reopened.min_offset(), Some(8192));
        assert_eq!(reopened.files().len(), 2);
    }

    #[test]
    fn a_gap_between_files_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let queue = MappedFileQueue::open(dir.path(), 4096, Allocation::Sparse).expect("open");
            queue.create_file(0).expect("create");
            queue.create_file(4096).expect("create");
            queue.create_file(8192).expect("create");
        }
        fs::remove_file(dir.path().join(file_name(4096))).expect("remove");
        let err = MappedFileQueue::open(dir.path(), 4096, Allocation::Sparse)
            .err()
            .expect("gap must be refused");
        assert!(err.to_string().contains("not contiguous"), "{err}");
    }

    #[test]
    fn retention_never_deletes_the_last_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = MappedFileQueue::open(dir.path(), 4096, Allocation::Sparse).expect("open");
        for i in 0..3 {
            queue.create_file(i * 4096).expect("create");
        }
        let deleted = queue.delete_before(u64::MAX).expect("delete");
        assert_eq!(deleted.len(), 2);
        assert_eq!(queue.min_offset(), Some(8192));
    }
}
