//! Fixed-size memory-mapped files: the only `unsafe` code of the broker.
//!
//! Two shapes, each with the discipline that makes its shared memory sound:
//!
//! * [`MappedFile`] — append-only, shared by one writer and many readers (CommitLog
//!   and ConsumeQueue files). Three positions, all relative to the file start:
//!   `write ≥ committed ≥ flushed`. The single writer (serialized by a mutex) puts
//!   bytes at `[write, write + len)` — through the mapping ([`FileWriter::append_with`])
//!   or with `pwrite` into the same page cache ([`FileWriter::write_all`]) — and later
//!   publishes them by storing `committed` with `Release`; readers load `committed`
//!   with `Acquire` and only ever borrow bytes below it. Bytes below `committed` are never written again while the file
//!   is shared: the only ways to change them ([`MappedFile::truncate`],
//!   [`MappedFile::recovery_bytes`]) take `&mut self`, i.e. run during recovery
//!   before the file is shared.
//! * [`MutableMappedFile`] — a plain byte array on disk, mutated through `&mut self`
//!   and read through `&self`, so the borrow checker (and the `RwLock` the owner
//!   wraps it in) does the synchronization. Used by the index, whose hash slots are
//!   updated in place.
//!
//! Why two ways to write: a store through the mapping faults in and zero-fills each
//! new page before copying, which measured at about half the throughput of
//! `pwrite` and `fdatasync` for CommitLog-sized batches; `pwrite` fills page-cache
//! pages directly (RocketMQ's `transientStorePoolEnable` exists for the same reason).
//! Small in-place records (ConsumeQueue units) are cheaper through the mapping.
//!
//! Files are sized once at creation and never resized, but start sparse, so disk use
//! follows the data written, not the file sizes (a ConsumeQueue file is 5.7 MiB; a
//! queue with one message uses one block). A store through the mapping into a hole
//! on a full disk would raise SIGBUS instead of returning an error, so bytes are
//! only ever written through the mapping into blocks reserved (`fallocate`) first,
//! by a call that can fail cleanly: [`MappedFile::reserve_through`] grows an
//! append-only file's reserved prefix, [`MutableMappedFile::ensure_allocated`]
//! reserves the pages an in-place update will touch. Files written with `pwrite` need
//! no reservation, as `pwrite` reports a full disk as an error. The store
//! directory is locked against other processes; another process truncating or
//! rewriting a mapped file behind our back is outside this model (and would be
//! SIGBUS or garbage, caught by record CRCs, not memory unsafety in our code).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use memmap2::MmapRaw;

/// How a file's blocks are allocated.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// A sparse file whose reserved prefix grows ahead of the writer
    /// ([`MappedFile::reserve_through`]): for files written through the mapping.
    Grow,
    /// A sparse file: for files written with `pwrite` only.
    Sparse,
}

/// The allocation unit of reservations: a page (and the common file system block).
const PAGE: u64 = 4096;
/// The first reservation of a growing file; each next one doubles, up to
/// [`MAX_GROWTH`], so a busy queue reserves in few calls and an idle one uses a block.
const MIN_GROWTH: u64 = PAGE;
const MAX_GROWTH: u64 = 1 << 20;

/// An append-only mapped file shared by one writer and many readers.
pub struct MappedFile {
    path: PathBuf,
    /// Kept open so the mapping's file stays the same inode even if renamed.
    file: File,
    map: MmapRaw,
    /// Global offset of byte 0 (the file is named by it).
    start_offset: u64,
    size: u64,
    allocation: Allocation,
    /// [`Allocation::Grow`]: bytes below this have their blocks reserved, so writes
    /// through the mapping cannot fault on a full disk. Only grows, under the writer
    /// lock; zero for a file just opened (reserving again what is already allocated
    /// costs one call and no space).
    reserved: AtomicU64,
    /// The writer's position: bytes below it are written, maybe not yet committed.
    write: Mutex<u64>,
    /// Bytes below this are published to readers and immutable while shared.
    committed: AtomicU64,
    /// Bytes below this are durable (msync'd).
    flushed: AtomicU64,
}

/// Exclusive append access to a [`MappedFile`], held while writing a batch.
pub struct FileWriter<'a> {
    file: &'a MappedFile,
    position: MutexGuard<'a, u64>,
}

impl MappedFile {
    /// Creates a new, sparse file of `size_bytes` and maps it.
    ///
    /// The caller syncs the parent directory to make the new name durable.
    ///
    /// # Errors
    /// The file already exists, the disk is full, or mapping fails.
    pub fn create(
        path: &Path,
        start_offset: u64,
        size_bytes: u64,
        allocation: Allocation,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size_bytes)?;
        file.sync_all()?;
        Self::map(
            path.to_path_buf(),
            file,
            start_offset,
            size_bytes,
            allocation,
        )
    }

    /// Maps an existing file, which must be exactly `size_bytes` long. All positions
    /// start at zero; recovery sets them with [`MappedFile::set_recovered_position`].
    ///
    /// # Errors
    /// The file is missing, has another size, or mapping fails.
    pub fn open(
        path: &Path,
        start_offset: u64,
        size_bytes: u64,
        allocation: Allocation,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual != size_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {actual} bytes, expected {size_bytes}",
                    path.display()
                ),
            ));
        }
        Self::map(
            path.to_path_buf(),
            file,
            start_offset,
            size_bytes,
            allocation,
        )
    }

    fn map(
        path: PathBuf,
        file: File,
        start_offset: u64,
        size: u64,
        allocation: Allocation,
    ) -> io::Result<Self> {
        let map = MmapRaw::map_raw(&file)?;
        if map.len() as u64 != size {
            return Err(io::Error::other("mapping length differs from file size"));
        }
        Ok(Self {
            path,
            file,
            map,
            start_offset,
            size,
            allocation,
            reserved: AtomicU64::new(0),
            write: Mutex::new(0),
            committed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Global offset of the first byte.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the file occupies on disk: its allocated blocks (files are sparse).
    pub fn allocated_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map_or(self.size, |m| m.blocks() * 512)
    }

    /// Global offset one past the last byte of the file.
    pub fn end_offset(&self) -> u64 {
        self.start_offset + self.size
    }

    /// Bytes published to readers (relative to the file start).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Bytes known durable (relative to the file start).
    pub fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Whether every byte of the file has been published.
    pub fn is_full(&self) -> bool {
        self.committed() == self.size
    }

    /// Borrows `len` published bytes at `pos` (relative to the file start), or `None`
    /// if any of them is not published.
    pub fn read(&self, pos: u64, len: u64) -> Option<&[u8]> {
        let end = pos.checked_add(len)?;
        if end > self.committed() {
            return None;
        }
        // SAFETY: [pos, end) lies within the mapping (end <= committed <= size) and
        // below `committed`, loaded with Acquire after the writer's Release store, so
        // the bytes are initialized and visible; they are never written again while
        // `&self` is shared (see the module docs), so the shared borrow cannot alias
        // a write. The mapping lives as long as `self`, which the borrow is tied to.
        Some(unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(pos as usize), len as usize)
        })
    }

    /// Borrows every published byte from `pos` on.
    pub fn read_from(&self, pos: u64) -> &[u8] {
        let committed = self.committed();
        let pos = pos.min(committed);
        self.read(pos, committed - pos).unwrap_or_default()
    }

    /// Reserves the blocks of every byte below `end` (relative to the file start) of
    /// an [`Allocation::Grow`] file, ahead of the writer: a little more than asked,
    /// doubling up to 1 MiB per call, so appends reserve rarely.
    ///
    /// # Errors
    /// The disk is full (or the reservation failed otherwise); nothing was written
    /// and the file is as before.
    ///
    /// # Panics
    /// On a file that does not grow, or `end` beyond the file.
    pub fn reserve_through(&self, end: u64) -> io::Result<()> {
        assert_eq!(
            self.allocation,
            Allocation::Grow,
            "{} is not written through its mapping",
            self.path.display()
        );
        assert!(
            end <= self.size,
            "reservation beyond {}",
            self.path.display()
        );
        // The writer lock orders reservations with appends.
        let _writer = self.writer();
        let reserved = self.reserved.load(Ordering::Acquire);
        if end <= reserved {
            return Ok(());
        }
        let growth = reserved.clamp(MIN_GROWTH, MAX_GROWTH);
        let target = end
            .max(reserved + growth)
            .next_multiple_of(PAGE)
            .min(self.size);
        reserve_blocks(&self.file, reserved, target - reserved)?;
        self.reserved.store(target, Ordering::Release);
        Ok(())
    }

    /// Bytes whose blocks are reserved (relative to the file start).
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Takes the writer lock. Only one writer exists at a time.
    pub fn writer(&self) -> FileWriter<'_> {
        FileWriter {
            file: self,
            position: self
                .write
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        }
    }

    /// Makes every published byte durable, returning the flushed position.
    ///
    /// # Errors
    /// `msync` failed; the flushed position does not move.
    pub fn flush(&self) -> io::Result<u64> {
        self.flush_to(self.committed())
    }

    /// Makes the published bytes below `end` (relative to the file start) durable,
    /// and no more: group commit flushes exactly what its waiters asked for.
    ///
    /// # Errors
    /// `msync` failed; the flushed position does not move.
    pub fn flush_to(&self, end: u64) -> io::Result<u64> {
        let end = end.min(self.committed());
        let flushed = self.flushed();
        if end > flushed {
            // msync on a shared file mapping syncs that range of the file's page
            // cache, whether the bytes came through the mapping or from pwrite.
            self.map
                .flush_range(flushed as usize, (end - flushed) as usize)?;
            self.flushed.fetch_max(end, Ordering::AcqRel);
        }
        Ok(end)
    }

    /// Exclusive view of the whole file, for recovery scans before it is shared.
    pub fn recovery_bytes(&mut self) -> &[u8] {
        // SAFETY: `&mut self` proves no reader or writer holds a borrow of this file;
        // the mapping covers exactly `size` bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size as usize) }
    }

    /// Sets all positions after recovery found `pos` valid bytes. `flushed` is set to
    /// zero: what recovery read may have come from the page cache, not the disk, so
    /// the next flush syncs the whole range (clean pages cost nothing).
    pub fn set_recovered_position(&mut self, pos: u64) {
        assert!(
            pos <= self.size,
            "recovered position {pos} beyond file size {}",
            self.size
        );
        *self
            .write
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner()) = pos;
        self.committed.store(pos, Ordering::Release);
        self.flushed.store(0, Ordering::Release);
    }

    /// How far written (non-zero) bytes extend from `from` on: one past the last
    /// non-zero byte, or `from` if there is none.
    ///
    /// Only the file's data regions (`SEEK_DATA`/`SEEK_HOLE`) are read, so the
    /// unwritten, preallocated rest of a 1 GiB file costs nothing.
    pub fn written_extent(&mut self, from: u64) -> u64 {
        let size = self.size;
        let regions = data_regions(&self.file, from, size);
        let bytes = self.recovery_bytes();
        let mut extent = from;
        for (start, end) in regions {
            if let Some(last) = bytes[start as usize..end as usize]
                .iter()
                .rposition(|b| *b != 0)
            {
                extent = extent.max(start + last as u64 + 1);
            }
        }
        extent
    }

    /// Zeroes whatever was written from `pos` on and makes that durable, so stale bytes
    /// past a truncated tail can never be mistaken for records later; sets all
    /// positions to `pos`. Returns how many bytes it zeroed. Only bytes written before
    /// are zeroed, so their blocks exist and the stores cannot fault.
    ///
    /// # Errors
    /// Syncing failed.
    pub fn truncate(&mut self, pos: u64) -> io::Result<u64> {
        assert!(
            pos <= self.size,
            "truncate to {pos} beyond file size {}",
            self.size
        );
        let extent = self.written_extent(pos);
        if extent > pos {
            // SAFETY: `&mut self` proves exclusive access; [pos, extent) is within the
            // mapping (extent <= size).
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    self.map.as_mut_ptr().add(pos as usize),
                    (extent - pos) as usize,
                )
            };
            bytes.fill(0);
            self.map
                .flush_range(pos as usize, (extent - pos) as usize)?;
        }
        self.set_recovered_position(pos);
        Ok(extent - pos)
    }
}

impl FileWriter<'_> {
    /// The writer's position relative to the file start.
    pub fn position(&self) -> u64 {
        *self.position
    }

    /// Bytes left between the write position and the end of the file.
    pub fn remaining(&self) -> u64 {
        self.file.size - *self.position
    }

    /// Reserves the next `len` bytes, lets `fill` write them, and returns their
    /// position. The bytes stay invisible to readers until [`FileWriter::commit`].
    ///
    /// # Panics
    /// If `len` exceeds [`FileWriter::remaining`] (writers plan their layout first),
    /// or the bytes are not reserved ([`MappedFile::reserve_through`]): a store into an
    /// unreserved hole could raise SIGBUS on a full disk.
    pub fn append_with<T>(&mut self, len: u64, fill: impl FnOnce(&mut [u8]) -> T) -> (u64, T) {
        let pos = *self.position;
        assert!(
            len <= self.remaining(),
            "append of {len} bytes at {pos} overruns {} ({} bytes)",
            self.file.path.display(),
            self.file.size
        );
        assert!(
            pos + len <= self.file.reserved(),
            "append of {len} bytes at {pos} to {} beyond its reserved {} bytes",
            self.file.path.display(),
            self.file.reserved()
        );
        // SAFETY: [pos, pos + len) is within the mapping (checked above) and at or
        // beyond `committed` (the writer only moves `committed` up to its own
        // position), so no reader borrows these bytes; the mutex guard held by `self`
        // makes this the only writer, so the mutable borrow is unique.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                self.file.map.as_mut_ptr().add(pos as usize),
                len as usize,
            )
        };
        let result = fill(bytes);
        *self.position = pos + len;
        (pos, result)
    }

    /// Writes `bytes` at the write position with `pwrite` and returns their position.
    /// The bytes stay invisible to readers until [`FileWriter::commit`].
    ///
    /// # Errors
    /// The write failed (e.g. the disk is full). Some of the bytes may have reached the
    /// file; the write position does not move, and the caller must not publish.
    ///
    /// # Panics
    /// If `bytes` exceeds [`FileWriter::remaining`].
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let pos = *self.position;
        assert!(
            bytes.len() as u64 <= self.remaining(),
            "write of {} bytes at {pos} overruns {}",
            bytes.len(),
            self.file.path.display()
        );
        // The kernel copies into the page cache pages the mapping shares; the range is
        // at or beyond `committed`, so no reader borrows it.
        self.file.file.write_all_at(bytes, pos)?;
        *self.position = pos + bytes.len() as u64;
        Ok(pos)
    }

    /// Moves the write position to the end of the file without writing: the bytes
    /// there were never written (files are append-only, and recovery zeroes a torn
    /// tail), so they read as zeros. Used after a blank record's header.
    pub fn skip_to_end(&mut self) {
        *self.position = self.file.size;
    }

    /// Publishes everything written so far to readers.
    pub fn commit(&mut self) {
        self.file.committed.store(*self.position, Ordering::Release);
    }
}

/// A mapped byte array mutated through `&mut self` only; the owner provides the
/// lock (the index wraps it in an `RwLock`). Sparse: a page gets its blocks when
/// [`MutableMappedFile::ensure_allocated`] is first asked for it, and
/// [`MutableMappedFile::write`] refuses pages not allocated that way.
pub struct MutableMappedFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    /// One bit per page: its blocks are known reserved. Empty for a file just
    /// opened; allocating a page again costs one call and no space.
    allocated: Vec<u64>,
}

impl MutableMappedFile {
    /// Creates a sparse, zero-reading file of `size_bytes` and maps it.
    ///
    /// # Errors
    /// The file exists, the disk is full, or mapping fails.
    pub fn create(path: &Path, size_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size_bytes)?;
        file.sync_all()?;
        Self::map(path, file)
    }

    /// Maps an existing file.
    ///
    /// # Errors
    /// The file is missing or mapping fails.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(path, file)
    }

    fn map(path: &Path, file: File) -> io::Result<Self> {
        let map = MmapRaw::map_raw(&file)?;
        let pages = (map.len() as u64).div_ceil(PAGE);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            allocated: vec![0; pages.div_ceil(64) as usize],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: mutation needs `&mut self`, so no mutable borrow coexists with this
        // shared one; the mapping covers `len()` bytes and lives as long as `self`.
        // Reading a hole of a sparse file maps zeros; it never faults.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    fn page_allocated(&self, page: u64) -> bool {
        self.allocated[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Reserves the blocks of the pages holding `[offset, offset + len)`, so
    /// [`MutableMappedFile::write`] may store there.
    ///
    /// # Errors
    /// The disk is full; pages reserved before the failure stay reserved.
    ///
    /// # Panics
    /// If the range is outside the file.
    pub fn ensure_allocated(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        assert!(
            end <= self.size(),
            "{} is {} bytes, not {end}",
            self.path.display(),
            self.size()
        );
        let mut page = offset / PAGE;
        let last = (end - 1) / PAGE;
        while page <= last {
            if self.page_allocated(page) {
                page += 1;
                continue;
            }
            // One call for each run of unreserved pages.
            let run_start = page;
            while page <= last && !self.page_allocated(page) {
                page += 1;
            }
            let from = run_start * PAGE;
            let to = (page * PAGE).min(self.size());
            reserve_blocks(&self.file, from, to - from)?;
            for p in run_start..page {
                self.allocated[(p / 64) as usize] |= 1 << (p % 64);
            }
        }
        Ok(())
    }

    /// Copies `data` into the file at `offset`.
    ///
    /// # Panics
    /// If a page it touches was not reserved by [`MutableMappedFile::ensure_allocated`]
    /// (a store into a hole could raise SIGBUS on a full disk), or the range is
    /// outside the file.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len();
        let (first, last) = (offset as u64 / PAGE, (end as u64 - 1) / PAGE);
        assert!(
            (first..=last).all(|page| self.page_allocated(page)),
            "write of {} bytes at {offset} of {} into unreserved pages",
            data.len(),
            self.path.display()
        );
        // SAFETY: `&mut self` makes this the only borrow of the mapping; the slice
        // bounds check below keeps the copy inside it.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.map.len()) };
        bytes[offset..end].copy_from_slice(data);
    }

    /// Makes every byte durable.
    ///
    /// # Errors
    /// `msync` failed.
    pub fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Makes the byte range durable.
    ///
    /// # Errors
    /// `msync` failed.
    pub fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        self.map.flush_range(offset, len)
    }

    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The underlying file, for metadata sync.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// The data regions of `file` within `[from, size)`: everything not a hole. Where
/// the filesystem cannot tell, the whole range.
fn data_regions(file: &File, from: u64, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut regions = Vec::new();
    let mut cursor = from;
    while cursor < size {
        let data = match seek(file, SeekFrom::Data(cursor)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => {
                regions.push((cursor, size));
                break;
            }
        };
        if data >= size {
            break;
        }
        let hole = seek(file, SeekFrom::Hole(data)).unwrap_or(size).min(size);
        regions.push((data, hole));
        cursor = hole;
    }
    regions
}

/// Reserves the disk blocks of `[offset, offset + len)` of a file already that long,
/// so later stores through a mapping cannot fault on a full disk. Where `fallocate`
/// is unsupported, writes the range back as it reads (holes read as zeros): that
/// allocates every block and changes no byte. Callers hold the range exclusively (the
/// writer lock of an append-only file, `&mut` of a mutable one), so nothing writes
/// it in between.
fn reserve_blocks(file: &File, offset: u64, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            use std::os::unix::fs::FileExt;
            let mut bytes = vec![0; len as usize];
            file.read_exact_at(&mut bytes, offset)?;
            file.write_all_at(&bytes, offset)
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_only_committed_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = MappedFile::create(&path, 4096, 8192, Allocation::Grow).expect("create");
        file.reserve_through(5).expect("reserve");
        {
            let mut writer = file.writer();
            let (pos, ()) = writer.append_with(5, |b| b.copy_from_slice(b"hello"));
            assert_eq!(pos, 0);
            assert!(file.read(0, 5).is_none(), "uncommitted bytes are invisible");
            writer.commit();
        }
        assert_eq!(file.read(0, 5), Some(&b"hello"[..]));
        assert!(file.read(0, 6).is_none());
        assert!(
            file.read(u64::MAX, 2).is_none(),
            "overflow is refused, not a panic"
        );
        assert_eq!(file.flush().expect("flush"), 5);
        assert_eq!(file.end_offset(), 4096 + 8192);
    }

    #[test]
    fn truncate_zeroes_the_tail_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let size = 3 * 4096;
        {
            let file = MappedFile::create(&path, 0, size, Allocation::Sparse).expect("create");
            let mut writer = file.writer();
            let len = writer.remaining();
            writer.write_all(&vec![0xAB; len as usize]).expect("pwrite");
            writer.commit();
            file.flush().expect("flush");
        }
        let mut file = MappedFile::open(&path, 0, size, Allocation::Sparse).expect("open");
        assert_eq!(file.truncate(100).expect("truncate"), size - 100);
        let bytes = file.recovery_bytes();
        assert!(bytes[..100].iter().all(|b| *b == 0xAB));
        assert!(bytes[100..].iter().all(|b| *b == 0));
        drop(file);
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(on_disk.len() as u64, size);
        assert!(on_disk[100..].iter().all(|b| *b == 0));
    }

    #[test]
    fn written_extent_reads_only_data_regions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        let size = 1u64 << 30;
        let file = MappedFile::create(&path, 0, size, Allocation::Sparse).expect("create");
        {
            let mut writer = file.writer();
            writer.write_all(&[7u8; 100_000]).expect("pwrite");
            writer.commit();
        }
        file.flush().expect("flush");
        drop(file);
        let mut file = MappedFile::open(&path, 0, size, Allocation::Sparse).expect("open");
        let started = std::time::Instant::now();
        assert_eq!(file.written_extent(0), 100_000);
        assert_eq!(file.written_extent(200_000), 200_000);
        // Scanning a gigabyte of zeros would take far longer; this bounds the test's
        // own runtime, it asserts nothing about performance.
        eprintln!(
            "written_extent on a sparse 1 GiB file: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn growing_files_reserve_ahead_of_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grow");
        let size = 8 << 20;
        let file = MappedFile::create(&path, 0, size, Allocation::Grow).expect("create");
        let allocated = |path: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).expect("metadata").blocks() * 512
        };
        assert!(allocated(&path) < size / 8, "a new file is sparse");
        file.reserve_through(20).expect("reserve");
        assert_eq!(file.reserved(), PAGE, "the first reservation is one page");
        {
            let mut writer = file.writer();
            writer.append_with(20, |b| b.fill(1));
            writer.commit();
        }
        file.reserve_through(PAGE + 1).expect("reserve");
        assert_eq!(file.reserved(), 2 * PAGE, "then it doubles");
        file.reserve_through(5 << 20).expect("reserve");
        assert_eq!(file.reserved(), 5 << 20, "a larger request is met exactly");
        file.reserve_through((5 << 20) + 1).expect("reserve");
        assert_eq!(
            file.reserved(),
            (5 << 20) + MAX_GROWTH,
            "growth stops doubling at 1 MiB"
        );
    }

    #[test]
    #[should_panic(expected = "beyond its reserved")]
    fn appends_beyond_the_reservation_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = MappedFile::create(&dir.path().join("f"), 0, 8 * PAGE, Allocation::Grow)
            .expect("create");
        file.reserve_through(10).expect("reserve");
        let mut writer = file.writer();
        writer.append_with(PAGE + 1, |b| b.fill(1));
    }

    #[test]
    fn mutable_files_allocate_the_pages_they_write() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        let mut file = MutableMappedFile::create(&path, 64 << 20).expect("create");
        file.ensure_allocated(0, 64).expect("allocate");
        file.write(0, &[1; 64]);
        file.ensure_allocated(10 * PAGE + 100, 8).expect("allocate");
        file.write(10 * PAGE as usize + 100, &[2; 8]);
        file.flush().expect("flush");
        let used = std::fs::metadata(&path).expect("metadata").blocks() * 512;
        assert!(
            used <= 4 * PAGE,
            "two pages written, {used} bytes allocated"
        );
        assert_eq!(file.bytes()[10 * PAGE as usize + 100], 2);
        assert_eq!(file.bytes()[5 * PAGE as usize], 0, "holes read as zeros");
    }

    #[test]
    #[should_panic(expected = "unreserved pages")]
    fn mutable_writes_into_unallocated_pages_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = MutableMappedFile::create(&dir.path().join("m"), 16 * PAGE).expect("create");
        file.ensure_allocated(0, PAGE).expect("allocate");
        file.write(PAGE as usize - 2, &[1; 4]);
    }
}
