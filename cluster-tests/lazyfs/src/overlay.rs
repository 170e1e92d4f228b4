//! The unsynced data of one file: byte ranges written but not yet fsync'd, held in
//! memory over the backing file and applied to it only by [`Overlay::apply`].
//!
//! Nothing here knows about FUSE; [`Backing`] is the little a file must do, so the
//! logic is tested on an in-memory file.
//!
//! Semantics (see the crate documentation for why):
//! * a write goes into the overlay, never to the backing file;
//! * a read sees the backing file with the overlay on top; the file is as long as
//!   the longer of the two, and a gap between the backing file's end and dirty data
//!   beyond it reads as zeros;
//! * a size change (truncate) is metadata: it is applied to the backing file at
//!   once, and dirty bytes at or past the new size are dropped;
//! * [`Overlay::apply`] (fsync) writes every dirty range to the backing file and
//!   empties the overlay; [`Overlay::drop_all`] (power loss) empties it without
//!   writing.
//!
//! Memory: the dirty bytes themselves, in non-overlapping extents (ranges that
//! touch or overlap are merged into one), plus one map entry per extent.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

/// What the overlay needs of the file underneath.
pub trait Backing {
    /// The file's size.
    ///
    /// # Errors
    /// The file could not be examined.
    fn size(&self) -> io::Result<u64>;
    /// Reads into `buf` from `offset`; fewer bytes only at the end of the file.
    ///
    /// # Errors
    /// The read failed.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    ///
    /// # Errors
    /// The write failed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len`.
    ///
    /// # Errors
    /// The size could not be changed.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Backing for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

/// The dirty ranges of one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Start offset → bytes. Extents never overlap or touch.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths.
    bytes: u64,
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held (written and not yet applied or dropped).
    pub fn dirty_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Number of separate dirty ranges.
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// The dirty ranges, `[start, end)`, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.extents
            .iter()
            .map(|(start, bytes)| (*start, start + bytes.len() as u64))
    }

    /// Where the first dirty byte at or after `offset` is (`SEEK_DATA` over the
    /// overlay alone).
    pub fn next_data(&self, offset: u64) -> Option<u64> {
        if let Some(end) = self.covering_end(offset) {
            debug_assert!(end > offset);
            return Some(offset);
        }
        self.extents.range(offset..).next().map(|(start, _)| *start)
    }

    /// The end of the dirty range holding `offset`, if one does.
    pub fn covering_end(&self, offset: u64) -> Option<u64> {
        self.extents
            .range(..=offset)
            .next_back()
            .map(|(start, bytes)| start + bytes.len() as u64)
            .filter(|end| *end > offset)
    }

    /// End of the last dirty byte (0 when clean).
    pub fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(start, data)| start + data.len() as u64)
    }

    /// The file's size as readers see it, given the backing file's size.
    pub fn size(&self, backing_len: u64) -> u64 {
        backing_len.max(self.end())
    }

    /// Records a write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // An extent starting at or before `offset` that reaches it (touching counts)
        // becomes the base, extended in place: appends cost no copy of what is held.
        let previous = self
            .extents
            .range(..=offset)
            .next_back()
            .filter(|(start, bytes)| *start + bytes.len() as u64 >= offset)
            .map(|(start, _)| *start);
        let (base, mut buffer) = match previous {
            Some(start) => {
                let bytes = self.extents.remove(&start).unwrap_or_default();
                self.bytes -= bytes.len() as u64;
                (start, bytes)
            }
            None => (offset, Vec::with_capacity(data.len())),
        };
        let relative = (offset - base) as usize;
        if buffer.len() < relative + data.len() {
            buffer.resize(relative + data.len(), 0);
        }
        buffer[relative..relative + data.len()].copy_from_slice(data);
        // Extents starting inside (offset, end] are merged: what sticks out past
        // the new data is kept, the rest was overwritten.
        let following: Vec<u64> = self
            .extents
            .range((Bound::Excluded(offset), Bound::Included(end)))
            .map(|(start, _)| *start)
            .collect();
        for start in following {
            let bytes = self.extents.remove(&start).unwrap_or_default();
            self.bytes -= bytes.len() as u64;
            let from = (start - base) as usize;
            let covered = buffer.len().saturating_sub(from).min(bytes.len());
            buffer.extend_from_slice(&bytes[covered..]);
        }
        self.bytes += buffer.len() as u64;
        self.extents.insert(base, buffer);
    }

    /// Reads up to `size` bytes at `offset`: the backing file's bytes with the dirty
    /// ones on top, cut at the file's size.
    ///
    /// # Errors
    /// Reading the backing file failed.
    pub fn read(&self, backing: &impl Backing, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let backing_len = backing.size()?;
        let file_size = self.size(backing_len);
        if offset >= file_size || size == 0 {
            return Ok(Vec::new());
        }
        let end = file_size.min(offset + size as u64);
        let mut buffer = vec![0u8; (end - offset) as usize];
        if offset < backing_len {
            let want = (end.min(backing_len) - offset) as usize;
            let mut filled = 0;
            while filled < want {
                let n = backing.read_at(&mut buffer[filled..want], offset + filled as u64)?;
                if n == 0 {
                    // Shrunk under us: the rest reads as zeros.
                    break;
                }
                filled += n;
            }
        }
        self.overlay_onto(&mut buffer, offset);
        Ok(buffer)
    }

    /// Copies the dirty bytes that fall in `[offset, offset + buffer.len())` into
    /// `buffer`.
    pub fn overlay_onto(&self, buffer: &mut [u8], offset: u64) {
        let end = offset + buffer.len() as u64;
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(start, _)| *start);
        for (start, bytes) in self.extents.range(first..end) {
            let extent_end = start + bytes.len() as u64;
            if extent_end <= offset {
                continue;
            }
            let from = (*start).max(offset);
            let to = extent_end.min(end);
            buffer[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }

    /// Changes the file's size: at once on the backing file (metadata), and the
    /// dirty bytes at or past `len` are dropped.
    ///
    /// # Errors
    /// The backing file's size could not be changed; the overlay is then unchanged.
    pub fn truncate(&mut self, backing: &impl Backing, len: u64) -> io::Result<()> {
        backing.set_len(len)?;
        self.cut(len);
        Ok(())
    }

    /// Drops the dirty bytes at or past `len`.
    pub fn cut(&mut self, len: u64) {
        let dropped = self.extents.split_off(&len);
        self.bytes -= dropped.values().map(|b| b.len() as u64).sum::<u64>();
        if let Some((start, bytes)) = self.extents.iter_mut().next_back() {
            let keep = len.saturating_sub(*start) as usize;
            if bytes.len() > keep {
                self.bytes -= (bytes.len() - keep) as u64;
                bytes.truncate(keep);
            }
        }
    }

    /// Writes every dirty byte to the backing file (fsync) and empties the overlay.
    /// Returns the number of bytes written.
    ///
    /// # Errors
    /// A write failed; the extents not yet written stay dirty.
    pub fn apply(&mut self, backing: &impl Backing) -> io::Result<u64> {
        let mut written = 0;
        while let Some((start, bytes)) = self.extents.pop_first() {
            if let Err(e) = backing.write_all_at(&bytes, start) {
                self.extents.insert(start, bytes);
                return Err(e);
            }
            self.bytes -= bytes.len() as u64;
            written += bytes.len() as u64;
        }
        Ok(written)
    }

    /// Forgets every dirty byte (power loss). Returns how many there were.
    pub fn drop_all(&mut self) -> u64 {
        let dropped = self.bytes;
        self.extents.clear();
        self.bytes = 0;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// An in-memory file.
    #[derive(Default)]
    struct Memory(RefCell<Vec<u8>>);

    impl Memory {
        fn with(bytes: &[u8]) -> Self {
            Self(RefCell::new(bytes.to_vec()))
        }
        fn bytes(&self) -> Vec<u8> {
            self.0.borrow().clone()
        }
    }

    impl Backing for Memory {
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.borrow().len() as u64)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let data = self.0.borrow();
            let offset = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - offset);
            buf[..n].copy_from_slice(&data[offset..offset + n]);
            Ok(n)
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut data = self.0.borrow_mut();
            let end = offset as usize + buf.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(buf);
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    fn read_all(overlay: &Overlay, backing: &Memory) -> Vec<u8> {
        overlay.read(backing, 0, 1 << 20).expect("read")
    }

    /// The same writes applied to a plain vector: what a file without power loss holds.
    fn model(writes: &[(u64, &[u8])], base: &[u8]) -> Vec<u8> {
        let mut data = base.to_vec();
        for (offset, bytes) in writes {
            let end = *offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*offset as usize..end].copy_from_slice(bytes);
        }
        data
    }

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let backing = Memory::with(b"0123456789");
        let mut overlay = Overlay::new();
        overlay.write(2, b"ab");
        assert_eq!(
            backing.bytes(),
            b"0123456789",
            "the backing file is untouched"
        );
        assert_eq!(read_all(&overlay, &backing), b"01ab456789");
        assert_eq!(overlay.read(&backing, 3, 3).expect("read"), b"b45");
        assert_eq!(overlay.dirty_bytes(), 2);
        assert_eq!(overlay.size(10), 10);
    }

    #[test]
    fn writes_past_the_end_grow_the_visible_size_with_a_zero_gap() {
        let backing = Memory::with(b"abc");
        let mut overlay = Overlay::new();
        overlay.write(6, b"xyz");
        assert_eq!(overlay.size(3), 9);
        assert_eq!(read_all(&overlay, &backing), b"abc\0\0\0xyz");
        assert_eq!(overlay.read(&backing, 9, 10).expect("read"), b"");
        assert_eq!(overlay.read(&backing, 100, 10).expect("read"), b"");
        assert_eq!(backing.bytes(), b"abc");
    }

    #[test]
    fn fsync_applies_and_empties() {
        let backing = Memory::with(b"abc");
        let mut overlay = Overlay::new();
        overlay.write(1, b"XY");
        overlay.write(5, b"Z");
        assert_eq!(overlay.extent_count(), 2);
        assert_eq!(overlay.apply(&backing).expect("apply"), 3);
        assert!(overlay.is_empty());
        assert_eq!(overlay.dirty_bytes(), 0);
        assert_eq!(backing.bytes(), b"aXY\0\0Z");
        assert_eq!(read_all(&overlay, &backing), b"aXY\0\0Z");
    }

    #[test]
    fn power_loss_drops_unsynced_bytes_only() {
        let backing = Memory::with(b"");
        let mut overlay = Overlay::new();
        overlay.write(0, b"synced");
        overlay.apply(&backing).expect("apply");
        overlay.write(6, b"-lost");
        overlay.write(0, b"S");
        assert_eq!(read_all(&overlay, &backing), b"Synced-lost");
        assert_eq!(overlay.drop_all(), 6);
        assert!(overlay.is_empty());
        assert_eq!(read_all(&overlay, &backing), b"synced");
        assert_eq!(backing.bytes(), b"synced");
    }

    #[test]
    fn appends_merge_into_one_extent() {
        let mut overlay = Overlay::new();
        for i in 0..100u64 {
            overlay.write(i * 10, &[i as u8; 10]);
        }
        assert_eq!(overlay.extent_count(), 1);
        assert_eq!(overlay.dirty_bytes(), 1000);
    }

    #[test]
    fn overlapping_writes_merge_and_keep_the_newest_bytes() {
        let backing = Memory::default();
        let mut overlay = Overlay::new();
        let writes: [(u64, &[u8]); 7] = [
            (10, b"aaaa"),
            (20, b"bbbb"),
            (30, b"cccc"),
            (12, b"XXXXXXXXXXXXXXXXXXX"), // over the end of a, all of b, into c
            (0, b"y"),
            (1, b"zz"), // touches y: merged
            (40, b"q"),
        ];
        for (offset, bytes) in writes {
            overlay.write(offset, bytes);
        }
        assert_eq!(read_all(&overlay, &backing), model(&writes, b""));
        assert_eq!(overlay.extent_count(), 3); // [0,3) [10,34) [40,41)
        assert_eq!(overlay.dirty_bytes(), 3 + 24 + 1);
        overlay.apply(&backing).expect("apply");
        assert_eq!(backing.bytes(), model(&writes, b""));
    }

    #[test]
    fn data_and_holes_of_the_overlay() {
        let mut overlay = Overlay::new();
        assert_eq!(overlay.next_data(0), None);
        overlay.write(10, b"abc");
        overlay.write(20, b"d");
        assert_eq!(overlay.next_data(0), Some(10));
        assert_eq!(overlay.next_data(11), Some(11));
        assert_eq!(overlay.next_data(13), Some(20));
        assert_eq!(overlay.next_data(21), None);
        assert_eq!(overlay.covering_end(9), None);
        assert_eq!(overlay.covering_end(10), Some(13));
        assert_eq!(overlay.covering_end(12), Some(13));
        assert_eq!(overlay.covering_end(13), None);
        assert_eq!(overlay.ranges().collect::<Vec<_>>(), [(10, 13), (20, 21)]);
    }

    #[test]
    fn a_write_inside_an_extent_changes_nothing_else() {
        let mut overlay = Overlay::new();
        overlay.write(0, b"abcdef");
        overlay.write(2, b"X");
        assert_eq!(overlay.extent_count(), 1);
        assert_eq!(overlay.dirty_bytes(), 6);
        assert_eq!(read_all(&overlay, &Memory::default()), b"abXdef");
    }

    #[test]
    fn truncate_shrinks_the_backing_file_at_once_and_cuts_dirty_bytes() {
        let backing = Memory::with(b"0123456789");
        let mut overlay = Overlay::new();
        overlay.write(4, b"abcd");
        overlay.write(12, b"zz");
        overlay.truncate(&backing, 6).expect("truncate");
        assert_eq!(backing.bytes(), b"012345", "metadata applies at once");
        assert_eq!(overlay.dirty_bytes(), 2);
        assert_eq!(read_all(&overlay, &backing), b"0123ab");
        assert_eq!(overlay.drop_all(), 2);
        assert_eq!(read_all(&overlay, &backing), b"012345");
    }

    #[test]
    fn truncate_that_extends_gives_zeros_after_power_loss() {
        let backing = Memory::with(b"ab");
        let mut overlay = Overlay::new();
        overlay.write(2, b"cd");
        overlay.truncate(&backing, 8).expect("extend");
        assert_eq!(read_all(&overlay, &backing), b"abcd\0\0\0\0");
        overlay.drop_all();
        assert_eq!(read_all(&overlay, &backing), b"ab\0\0\0\0\0\0");
    }

    #[test]
    fn truncate_below_dirty_data_past_the_backing_end() {
        let backing = Memory::default();
        let mut overlay = Overlay::new();
        overlay.write(0, b"0123456789");
        overlay.truncate(&backing, 4).expect("truncate");
        assert_eq!(overlay.size(backing.bytes().len() as u64), 4);
        assert_eq!(read_all(&overlay, &backing), b"0123");
        overlay.write(6, b"x");
        assert_eq!(read_all(&overlay, &backing), b"0123\0\0x");
        overlay.apply(&backing).expect("apply");
        assert_eq!(backing.bytes(), b"0123\0\0x");
    }

    #[test]
    fn truncate_to_zero_then_rewrite() {
        let backing = Memory::with(b"old contents");
        let mut overlay = Overlay::new();
        overlay.truncate(&backing, 0).expect("truncate");
        overlay.write(0, b"new");
        assert_eq!(read_all(&overlay, &backing), b"new");
        overlay.drop_all();
        assert_eq!(
            read_all(&overlay, &backing),
            b"",
            "the truncate survived, the data not"
        );
    }

    /// Random writes, truncates, syncs and power losses against a model of what a
    /// durable file holds and what a reader sees.
    #[test]
    fn random_operations_match_a_model() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let backing = Memory::with(&vec![7u8; rng.random_range(0..64)]);
            let mut overlay = Overlay::new();
            // `durable`: what the backing file must hold; `visible`: what reads see.
            let mut durable = backing.bytes();
            let mut visible = durable.clone();
            for _ in 0..60 {
                match rng.random_range(0..10) {
                    0..=5 => {
                        let offset = rng.random_range(0..96u64);
                        let len = rng.random_range(1..24usize);
                        let byte: u8 = rng.random();
                        let data = vec![byte; len];
                        overlay.write(offset, &data);
                        visible = model(&[(offset, &data)], &visible);
                    }
                    6 => {
                        let len = rng.random_range(0..110u64);
                        overlay.truncate(&backing, len).expect("truncate");
                        durable.resize(len as usize, 0);
                        visible.resize(len as usize, 0);
                    }
                    7 | 8 => {
                        overlay.apply(&backing).expect("apply");
                        durable = visible.clone();
                    }
                    _ => {
                        overlay.drop_all();
                        visible = durable.clone();
                    }
                }
                assert_eq!(read_all(&overlay, &backing), visible, "seed {seed}");
                assert_eq!(backing.bytes(), durable, "seed {seed}");
                let offset = rng.random_range(0..120u64);
                let size = rng.random_range(0..40usize);
                let expected: Vec<u8> = visible
                    .iter()
                    .skip(offset as usize)
                    .take(size)
                    .copied()
                    .collect();
                assert_eq!(
                    overlay.read(&backing, offset, size).expect("read"),
                    expected,
                    "seed {seed}"
                );
                let held: u64 = overlay.extents.values().map(|b| b.len() as u64).sum();
                assert_eq!(overlay.dirty_bytes(), held, "seed {seed}");
                let mut previous_end = None;
                for (start, bytes) in &overlay.extents {
                    assert!(!bytes.is_empty(), "seed {seed}: empty extent");
                    if let Some(end) = previous_end {
                        assert!(*start > end, "seed {seed}: extents touch or overlap");
                    }
                    previous_end = Some(start + bytes.len() as u64);
                }
            }
        }
    }
}
