//! The message index: message key (per topic) and message id → CommitLog offsets,
//! queryable within a store-time range. RocketMQ's IndexFile design.
//!
//! ```text
//!  index file (little-endian), named by a 20-digit sequence number
//!   header, 64 bytes
//!     0  4 magic            INDEX_MAGIC (format version 1)
//!     4  4 slot_count
//!     8  4 max_entries
//!    12  4 entry_count      entries written
//!    16  8 begin_timestamp  ms, first entry
//!    24  8 end_timestamp    ms, last entry
//!    32  8 begin_offset     CommitLog offset of the first indexed record
//!    40  8 end_offset       CommitLog offset of the last indexed record
//!    48 16 reserved
//!   slots: slot_count × u32     number (1-based) of the newest entry hashing here; 0 = none
//!   entries: max_entries × 24
//!     0  4 key_hash         CRC-32 of the namespaced key
//!     4  8 commit_log_offset
//!    12  8 store_timestamp  ms
//!    20  4 prev             number (1-based) of the previous entry in this slot's chain; 0 = none
//! ```
//!
//! An entry is written before the slot and header that point to it. Walks only follow
//! entry numbers that strictly decrease and do not exceed `entry_count`, so garbage
//! cannot loop or run out of bounds. The index can hold stale or colliding entries:
//! callers verify every hit against the CommitLog record. After an unclean shutdown,
//! the files written since the last checkpoint are discarded and rebuilt from the
//! CommitLog (see recovery).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::durable_file::{create_dir_durably, sync_dir};
use super::error::{StoreError, StoreResult};
use super::mapped_file::MutableMappedFile;
use super::mapped_file_queue::file_name;
use super::types::{CommitLogOffset, MessageId};

/// Magic of an index file, format version 1.
pub const INDEX_MAGIC: u32 = 0x4958_4401;
const HEADER_LEN: usize = 64;
const SLOT_LEN: usize = 4;
const ENTRY_LEN: usize = 24;
const _: () = assert!(ENTRY_LEN == 4 + 8 + 8 + 4);

mod header {
    pub const MAGIC: usize = 0;
    pub const SLOT_COUNT: usize = 4;
    pub const MAX_ENTRIES: usize = 8;
    pub const ENTRY_COUNT: usize = 12;
    pub const BEGIN_TIMESTAMP: usize = 16;
    pub const END_TIMESTAMP: usize = 24;
    pub const BEGIN_OFFSET: usize = 32;
    pub const END_OFFSET: usize = 40;
}

/// Longest chain a lookup walks in one file, bounding the cost of a hot key.
const MAX_WALK: usize = 1 << 16;

/// The hash of a message key within a topic.
pub fn key_hash(topic: &str, key: &str) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(b"K");
    hasher.update(topic.as_bytes());
    hasher.update(b"#");
    hasher.update(key.as_bytes());
    hasher.finalize()
}

/// The hash of a message id.
pub fn id_hash(id: &MessageId) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(b"I");
    hasher.update(&id.0);
    hasher.finalize()
}

/// One entry to add.
#[derive(Copy, Clone, Debug)]
pub struct IndexEntry {
    pub key_hash: u32,
    pub commit_log_offset: CommitLogOffset,
    pub store_timestamp_ms: u64,
}

struct IndexFile {
    map: MutableMappedFile,
    slot_count: u32,
    max_entries: u32,
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn file_len(slot_count: u32, max_entries: u32) -> u64 {
    (HEADER_LEN + slot_count as usize * SLOT_LEN + max_entries as usize * ENTRY_LEN) as u64
}

impl IndexFile {
    fn create(
        path: &Path,
        slot_count: u32,
        max_entries: u32,
        begin: CommitLogOffset,
    ) -> std::io::Result<Self> {
        let mut map = MutableMappedFile::create(path, file_len(slot_count, max_entries))?;
        // Sparse: the header's page now, a slot's or an entry's page when `reserve`
        // is first asked for it.
        map.ensure_allocated(0, HEADER_LEN as u64)?;
        map.write(header::MAGIC, &INDEX_MAGIC.to_le_bytes());
        map.write(header::SLOT_COUNT, &slot_count.to_le_bytes());
        map.write(header::MAX_ENTRIES, &max_entries.to_le_bytes());
        map.write(header::BEGIN_OFFSET, &begin.0.to_le_bytes());
        map.flush()?;
        Ok(Self {
            map,
            slot_count,
            max_entries,
        })
    }

    fn open(path: &Path) -> StoreResult<Self> {
        let mut map = MutableMappedFile::open(path).map_err(|e| StoreError::io(path, e))?;
        let bytes = map.bytes();
        let corrupt = |reason: String| StoreError::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("index file shorter than its header".into()));
        }
        let magic = get_u32(bytes, header::MAGIC);
        if magic != INDEX_MAGIC {
            return Err(corrupt(format!("bad index magic {magic:#010x}")));
        }
        let slot_count = get_u32(bytes, header::SLOT_COUNT);
        let max_entries = get_u32(bytes, header::MAX_ENTRIES);
        if slot_count == 0 || bytes.len() as u64 != file_len(slot_count, max_entries) {
            return Err(corrupt(format!(
                "index header ({slot_count} slots, {max_entries} entries) does not match the file size {}",
                bytes.len()
            )));
        }
        // Its header was written at creation, so its blocks exist: this only marks
        // the page (`put` updates the header with every entry).
        map.ensure_allocated(0, HEADER_LEN as u64)
            .map_err(|e| StoreError::io(path, e))?;
        Ok(Self {
            map,
            slot_count,
            max_entries,
        })
    }

    fn entry_count(&self) -> u32 {
        get_u32(self.map.bytes(), header::ENTRY_COUNT).min(self.max_entries)
    }

    fn free(&self) -> u32 {
        self.max_entries - self.entry_count()
    }

    fn begin_offset(&self) -> CommitLogOffset {
        CommitLogOffset(get_u64(self.map.bytes(), header::BEGIN_OFFSET))
    }

    fn end_offset(&self) -> CommitLogOffset {
        CommitLogOffset(get_u64(self.map.bytes(), header::END_OFFSET))
    }

    fn time_range(&self) -> (u64, u64) {
        let bytes = self.map.bytes();
        (
            get_u64(bytes, header::BEGIN_TIMESTAMP),
            get_u64(bytes, header::END_TIMESTAMP),
        )
    }

    fn slot_pos(&self, key_hash: u32) -> usize {
        HEADER_LEN + (key_hash % self.slot_count) as usize * SLOT_LEN
    }

    fn entry_pos(&self, number: u32) -> usize {
        HEADER_LEN + self.slot_count as usize * SLOT_LEN + (number as usize - 1) * ENTRY_LEN
    }

    /// Reserves the pages entry `number` with this hash will write (its entry and its
    /// slot; the header's page is reserved at creation).
    fn allocate_entry(&mut self, number: u32, key_hash: u32) -> std::io::Result<()> {
        let slot_pos = self.slot_pos(key_hash);
        let entry_pos = self.entry_pos(number);
        self.map
            .ensure_allocated(slot_pos as u64, SLOT_LEN as u64)?;
        self.map
            .ensure_allocated(entry_pos as u64, ENTRY_LEN as u64)
    }

    /// Appends one entry. The caller checked there is room and reserved its pages
    /// ([`IndexFile::allocate_entry`]).
    fn put(&mut self, entry: &IndexEntry) {
        let count = self.entry_count();
        assert!(count < self.max_entries, "index file full");
        let number = count + 1;
        let slot_pos = self.slot_pos(entry.key_hash);
        let entry_pos = self.entry_pos(number);
        let prev = get_u32(self.map.bytes(), slot_pos);
        let prev = if prev > count { 0 } else { prev };
        let mut e = [0u8; ENTRY_LEN];
        e[0..4].copy_from_slice(&entry.key_hash.to_le_bytes());
        e[4..12].copy_from_slice(&entry.commit_log_offset.0.to_le_bytes());
        e[12..20].copy_from_slice(&entry.store_timestamp_ms.to_le_bytes());
        e[20..24].copy_from_slice(&prev.to_le_bytes());
        self.map.write(entry_pos, &e);
        self.map.write(slot_pos, &number.to_le_bytes());
        if count == 0 {
            self.map.write(
                header::BEGIN_TIMESTAMP,
                &entry.store_timestamp_ms.to_le_bytes(),
            );
        }
        self.map.write(
            header::END_TIMESTAMP,
            &entry.store_timestamp_ms.to_le_bytes(),
        );
        self.map
            .write(header::END_OFFSET, &entry.commit_log_offset.0.to_le_bytes());
        self.map.write(header::ENTRY_COUNT, &number.to_le_bytes());
    }

    /// Offsets of entries with this hash stored within [begin, end], newest first.
    fn lookup(
        &self,
        key_hash: u32,
        begin_ms: u64,
        end_ms: u64,
        out: &mut Vec<CommitLogOffset>,
        max: usize,
    ) {
        let bytes = self.map.bytes();
        let count = self.entry_count();
        let mut number = get_u32(bytes, self.slot_pos(key_hash));
        let mut steps = 0;
        while number != 0 && number <= count && out.len() < max && steps < MAX_WALK {
            let pos = self.entry_pos(number);
            let e = &bytes[pos..pos + ENTRY_LEN];
            let timestamp = get_u64(e, 12);
            if get_u32(e, 0) == key_hash && (begin_ms..=end_ms).contains(&timestamp) {
                out.push(CommitLogOffset(get_u64(e, 4)));
            }
            let prev = get_u32(e, 20);
            if prev >= number {
                break; // not a valid chain: stop rather than loop
            }
            number = prev;
            steps += 1;
        }
    }
}

/// Whether the index file at `path` is empty or its header is all zeros.
fn header_never_written(path: &Path) -> StoreResult<bool> {
    use std::io::Read;
    let mut header = Vec::with_capacity(HEADER_LEN);
    fs::File::open(path)
        .and_then(|file| file.take(HEADER_LEN as u64).read_to_end(&mut header))
        .map_err(|e| StoreError::io(path, e))?;
    Ok(header.iter().all(|b| *b == 0))
}

/// All index files of a store.
pub struct Index {
    dir: PathBuf,
    slot_count: u32,
    max_entries: u32,
    files: RwLock<IndexFiles>,
}

struct IndexFiles {
    /// Oldest first, with their sequence numbers (file names).
    list: Vec<(u64, IndexFile)>,
    /// The file being filled: files before it are sealed (a batch whose entries do
    /// not fit the current file starts a new one rather than straddling).
    current: usize,
}

impl Index {
    /// Opens every index file in `dir`.
    ///
    /// # Errors
    /// A file's header is invalid, or I/O failed.
    pub fn open(dir: &Path, slot_count: u32, max_entries: u32) -> StoreResult<Self> {
        create_dir_durably(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            if let Some(sequence) = entry
                .file_name()
                .to_str()
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push(sequence);
            }
        }
        names.sort_unstable();
        // A crash while creating the newest file can leave it empty, or sized with its
        // header not yet written. The header is written and flushed before any entry,
        // so such a file never held one: a torn tail (its range is rebuilt, as after
        // any unclean shutdown). A bad header anywhere else is refused below.
        if let Some(last) = names.last() {
            let path = dir.join(file_name(*last));
            if header_never_written(&path)? {
                tracing::warn!(
                    path = %path.display(),
                    "removing an index file left by a torn creation"
                );
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
                names.pop();
            }
        }
        let mut list = Vec::new();
        for sequence in names {
            list.push((sequence, IndexFile::open(&dir.join(file_name(sequence)))?));
        }
        let current = list.len().saturating_sub(1);
        Ok(Self {
            dir: dir.to_path_buf(),
            slot_count,
            max_entries,
            files: RwLock::new(IndexFiles { list, current }),
        })
    }

    /// The CommitLog offset the newest file starts at (the rebuild point after an
    /// unclean shutdown), if any.
    pub fn last_file_begin(&self) -> Option<CommitLogOffset> {
        self.read().list.last().map(|(_, f)| f.begin_offset())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexFiles> {
        self.files
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexFiles> {
        self.files
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Deletes every file that begins at or after `from` (to rebuild them).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn discard_from(&self, from: CommitLogOffset) -> StoreResult<()> {
        let mut files = self.write();
        while files
            .list
            .last()
            .is_some_and(|(_, f)| f.begin_offset() >= from)
        {
            let (_, file) = files.list.pop().expect("checked non-empty");
            fs::remove_file(file.map.path()).map_err(|e| StoreError::io(file.map.path(), e))?;
        }
        files.current = files.list.len().saturating_sub(1);
        sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))
    }

    /// Creates the files, and reserves the pages, needed to add entries with these
    /// hashes (in order) for records starting at `first_offset`, so that
    /// [`Index::put`] of the same entries cannot fail.
    ///
    /// # Errors
    /// Creating a file or reserving its pages failed (a full disk).
    pub fn reserve(&self, hashes: &[u32], first_offset: CommitLogOffset) -> StoreResult<()> {
        let count = hashes.len();
        let mut files = self.write();
        let current = files.list.get(files.current).map(|(_, f)| f);
        let current_free = current.map_or(0, |f| u64::from(f.free()));
        // The batch starts in a fresh file rather than straddling a nearly full one,
        // unless the current file is still empty: then it counts towards the room.
        let current_empty = current.is_some_and(|f| f.entry_count() == 0);
        if current_free < count as u64 {
            let mut free = if current_empty { current_free } else { 0 };
            let mut first_new = None;
            while free < count as u64 {
                let sequence = files.list.last().map_or(0, |(s, _)| s + 1);
                let path = self.dir.join(file_name(sequence));
                let file =
                    IndexFile::create(&path, self.slot_count, self.max_entries, first_offset)
                        .map_err(|e| StoreError::io(&path, e))?;
                sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
                free += u64::from(file.free());
                first_new.get_or_insert(files.list.len());
                files.list.push((sequence, file));
            }
            if !current_empty {
                files.current = first_new.expect("created at least one file");
            }
        }
        // Walk the entries exactly as `put` will place them.
        let mut file = files.current;
        let mut number = files.list.get(file).map_or(0, |(_, f)| f.entry_count());
        for hash in hashes {
            while number == files.list[file].1.max_entries {
                file += 1;
                number = files.list[file].1.entry_count();
            }
            number += 1;
            let (_, target) = &mut files.list[file];
            target
                .allocate_entry(number, *hash)
                .map_err(|e| StoreError::io(target.map.path(), e))?;
        }
        Ok(())
    }

    /// Adds entries to the files made ready by [`Index::reserve`] for their hashes.
    ///
    /// # Panics
    /// If `reserve` was not called for them.
    pub fn put(&self, entries: &[IndexEntry]) {
        let mut files = self.write();
        let mut current = files.current;
        for entry in entries {
            while files.list[current].1.free() == 0 {
                current += 1;
                assert!(current < files.list.len(), "index reserved before put");
            }
            files.list[current].1.put(entry);
        }
        files.current = current;
    }

    /// Offsets of entries with `key_hash` stored within `[begin_ms, end_ms]`, newest
    /// first, at most `max`. Callers verify each against the CommitLog.
    pub fn lookup(
        &self,
        key_hash: u32,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Vec<CommitLogOffset> {
        let files = self.read();
        let mut out = Vec::new();
        for (_, file) in files.list.iter().rev() {
            if out.len() >= max {
                break;
            }
            let (first, last) = file.time_range();
            if file.entry_count() == 0 || last < begin_ms || first > end_ms {
                continue;
            }
            file.lookup(key_hash, begin_ms, end_ms, &mut out, max);
        }
        out.dedup();
        out
    }

    /// Flushes every file.
    ///
    /// # Errors
    /// `msync` failed.
    pub fn flush(&self) -> StoreResult<()> {
        for (_, file) in self.read().list.iter() {
            file.map
                .flush()
                .map_err(|e| StoreError::io(file.map.path(), e))?;
        }
        Ok(())
    }

    /// Deletes files whose newest entry points below `commit_log_min` (never the last).
    ///
    /// # Errors
    /// Deleting failed.
    pub fn delete_expired(&self, commit_log_min: CommitLogOffset) -> StoreResult<usize> {
        let mut files = self.write();
        let mut deleted = 0;
        while files.list.len() > 1
            && files.current > 0
            && files.list[0].1.end_offset() < commit_log_min
        {
            let (_, file) = files.list.remove(0);
            files.current -= 1;
            fs::remove_file(file.map.path()).map_err(|e| StoreError::io(file.map.path(), e))?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        }
        Ok(deleted)
    }

    /// Bytes on disk: the blocks allocated, not the files' (sparse) sizes.
    pub fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.read()
            .list
            .iter()
            .map(|(_, f)| f.map.file().metadata().map_or(0, |m| m.blocks() * 512))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entries_by_key_and_time_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(dir.path(), 7, 10).expect("open");
        let entries: Vec<IndexEntry> = (0..25u64)
            .map(|i| IndexEntry {
                key_hash: key_hash("t", &format!("k{}", i % 3)),
                commit_log_offset: CommitLogOffset(i * 100),
                store_timestamp_ms: 1000 + i,
            })
            .collect();
        let hashes: Vec<u32> = entries.iter().map(|e| e.key_hash).collect();
        index.reserve(&hashes, CommitLogOffset(0)).expect("reserve");
        index.put(&entries);
        let hits = index.lookup(key_hash("t", "k1"), 0, u64::MAX, 100);
        let expected: Vec<_> = (0..25u64)
            .rev()
            .filter(|i| i % 3 == 1)
            .map(|i| CommitLogOffset(i * 100))
            .collect();
        assert_eq!(hits, expected);
        let windowed = index.lookup(key_hash("t", "k1"), 1004, 1010, 100);
        assert_eq!(
            windowed,
            vec![
                CommitLogOffset(1000),
                CommitLogOffset(700),
                CommitLogOffset(400)
            ]
        );
        assert_eq!(index.lookup(key_hash("t", "k1"), 0, u64::MAX, 2).len(), 2);
        drop(index);
        let reopened = Index::open(dir.path(), 7, 10).expect("reopen");
        assert_eq!(
            reopened.lookup(key_hash("t", "k1"), 0, u64::MAX, 100),
            expected
        );
    }

    #[test]
    fn garbage_chains_terminate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(dir.path(), 3, 8).expect("open");
        let entry = IndexEntry {
            key_hash: 5,
            commit_log_offset: CommitLogOffset(1),
            store_timestamp_ms: 1,
        };
        index.reserve(&[5; 8], CommitLogOffset(0)).expect("reserve");
        index.put(&[entry; 8]);
        {
            let mut files = index.write();
            let map = &mut files.list[0].1.map;
            // Point every entry's prev at itself and beyond.
            for i in 0..8 {
                let pos = HEADER_LEN + 3 * SLOT_LEN + i * ENTRY_LEN + 20;
                map.write(pos, &(u32::MAX - i as u32).to_le_bytes());
            }
        }
        assert_eq!(index.lookup(5, 0, u64::MAX, 100).len(), 1);
    }

    /// The header's page must be writable after a reopen too, whatever page the
    /// next entry's slot is in (slots beyond the header's page are the common case
    /// with production sizes).
    #[test]
    fn entries_are_added_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = 64 * 1024;
        let entry = |hash: u32, offset: u64| IndexEntry {
            key_hash: hash,
            commit_log_offset: CommitLogOffset(offset),
            store_timestamp_ms: offset,
        };
        // A hash whose slot lies far beyond the header's page.
        let far = slots - 1;
        {
            let index = Index::open(dir.path(), slots, 1024).expect("open");
            index.reserve(&[far], CommitLogOffset(0)).expect("reserve");
            index.put(&[entry(far, 1)]);
            index.flush().expect("flush");
        }
        let index = Index::open(dir.path(), slots, 1024).expect("reopen");
        index
            .reserve(&[far - 1], CommitLogOffset(2))
            .expect("reserve");
        index.put(&[entry(far - 1, 2)]);
        assert_eq!(index.lookup(far, 0, u64::MAX, 10), vec![CommitLogOffset(1)]);
        assert_eq!(
            index.lookup(far - 1, 0, u64::MAX, 10),
            vec![CommitLogOffset(2)]
        );
    }

    /// A batch that does not fit the current file's free entries starts a new file;
    /// when it needs more than one new file, every one is made.
    #[test]
    fn a_batch_larger_than_a_file_spans_new_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(dir.path(), 7, 10).expect("open");
        index.reserve(&[1; 4], CommitLogOffset(0)).expect("reserve");
        index.put(
            &[IndexEntry {
                key_hash: 1,
                commit_log_offset: CommitLogOffset(0),
                store_timestamp_ms: 0,
            }; 4],
        );
        // 6 free in the current file, 15 asked: the batch goes to fresh files.
        let batch = [IndexEntry {
            key_hash: 2,
            commit_log_offset: CommitLogOffset(100),
            store_timestamp_ms: 1,
        }; 15];
        index
            .reserve(&[2; 15], CommitLogOffset(100))
            .expect("reserve");
        index.put(&batch);
        assert_eq!(
            index.lookup(2, 0, u64::MAX, 100).len(),
            1,
            "deduplicated offsets"
        );
        assert_eq!(index.read().list.len(), 3);
    }
}
