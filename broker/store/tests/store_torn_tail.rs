//! A torn CommitLog tail — anything above the checkpointed flushed offset that is not
//! whole records of whole Raft entries — is truncated on reopen, and the store goes
//! on from there.
//!
//! # How
//!
//! Each test appends "durable" entries, flushes (the checkpoint now covers them),
//! appends "tail" entries of several records each (`append_entry` with 2–4 records),
//! and drops the store without `close`, so the checkpoint stays below the tail. It then
//! damages the tail in the closed files the way a crash can leave it:
//!
//! * the last record cut in half (its second half never reached the disk);
//! * garbage written after the last record;
//! * the second half of the last entry zeroed, so the entry has records missing;
//! * an entry spanning two files whose second file is zeroed, missing, or torn;
//! * the newest CommitLog, ConsumeQueue or index file caught half created (empty, or
//!   an index file without its header).
//!
//! On reopen, recovery must cut exactly at the start of the first damaged entry (an
//! entry with missing records is dropped whole: the Raft log still has it), report
//! the written bytes it dropped in `truncated_bytes`, keep every earlier message
//! byte for byte (pull, offset and id reads), restore the tail's Raft id to the last
//! kept entry, and accept new appends at the cut, which survive another reopen.

mod common;

use broker_store::mapped_file_queue::file_name;
use broker_store::{CommitLogOffset, MessageStore, RaftLogRef, StoreConfig};
use common::{
    append_sent, assert_store_holds, commit_log_file, draft, expected_truncated_bytes,
    init_tracing, read_at, test_config, write_at, written_extent, zero_range, Sent,
};
use tracing::info;

/// The store state a test damages: what is durable, what is in the tail.
struct Written {
    config: StoreConfig,
    /// Messages below the checkpointed flushed offset.
    durable: Vec<Sent>,
    /// The tail entries' messages, entry by entry.
    tail: Vec<Vec<Sent>>,
    /// The checkpointed flushed offset.
    flushed: u64,
    /// The next message number and Raft index to use.
    next_message: u64,
    next_index: u64,
}

impl Written {
    /// Appends an entry of `records` messages with `body_len`-byte bodies.
    fn entry(&mut self, store: &MessageStore, records: u64, body_len: usize) -> Vec<Sent> {
        let drafts = (0..records)
            .map(|i| {
                let n = self.next_message + i;
                draft("orders", (n % 3) as u32, n, body_len)
            })
            .collect();
        self.next_message += records;
        self.next_index += 1;
        append_sent(store, self.next_index, drafts)
    }

    /// Everything that must survive a cut at the start of tail entry `first_lost`.
    fn kept(&self, first_lost: usize) -> Vec<Sent> {
        let mut kept = self.durable.clone();
        kept.extend(self.tail[..first_lost].iter().flatten().cloned());
        kept
    }

    /// The Raft id of the last entry kept by a cut at tail entry `first_lost`.
    fn last_kept_raft(&self, first_lost: usize) -> RaftLogRef {
        match first_lost {
            0 => self.durable.last().expect("durable messages").raft,
            n => self.tail[n - 1][0].raft,
        }
    }
}

/// Opens a store in `dir`, appends `durable_entries` single-record entries and
/// flushes, then appends the tail entries `(records, body_len)` and drops the store
/// without closing it.
fn write_store(dir: &std::path::Path, durable_entries: u64, tail: &[(u64, usize)]) -> Written {
    let config = test_config(dir);
    let (store, _) =
        MessageStore::open_without_background(config.clone()).expect("opening a new store");
    let mut written = Written {
        config,
        durable: Vec::new(),
        tail: Vec::new(),
        flushed: 0,
        next_message: 0,
        next_index: 0,
    };
    for _ in 0..durable_entries {
        let sent = written.entry(&store, 1, 200);
        written.durable.extend(sent);
    }
    written.flushed = store.flush().expect("flushing the durable part").0;
    for (records, body_len) in tail {
        let sent = written.entry(&store, *records, *body_len);
        written.tail.push(sent);
    }
    assert!(
        store.max_commit_log_offset().0 > written.flushed,
        "the tail lies above the checkpoint"
    );
    drop(store); // no close: the checkpoint stays at `flushed`
    written
}

/// The CommitLog range of a tail entry: (first byte, one past the last byte).
fn entry_range(entry: &[Sent]) -> (u64, u64) {
    let first = entry.first().expect("entries have records");
    let last = entry.last().expect("entries have records");
    (
        first.appended.commit_log_offset.0,
        last.appended.commit_log_offset.0 + u64::from(last.appended.size),
    )
}

/// Reopens after damage and checks the cut, the survivors, and that appends go on
/// from the cut and survive another reopen.
fn reopen_and_check(mut written: Written, cut: u64, first_lost: usize) {
    let expected_truncated = expected_truncated_bytes(&written.config, cut);
    assert!(
        expected_truncated > 0,
        "the damage left written bytes past the cut"
    );

    info!(
        cut,
        expected_truncated, "--- reopen: expect the tail cut at the first damaged entry"
    );
    let (store, report) =
        MessageStore::open_without_background(written.config.clone()).expect("reopening");
    assert!(!report.clean_shutdown);
    assert_eq!(report.commit_log.end, CommitLogOffset(cut), "{report:?}");
    assert_eq!(
        report.commit_log.truncated_bytes, expected_truncated,
        "{report:?}"
    );
    assert_eq!(store.max_commit_log_offset(), CommitLogOffset(cut));
    assert_eq!(
        store.tail().last_raft,
        Some(written.last_kept_raft(first_lost)),
        "the tail's Raft id is the last kept entry's"
    );
    let mut kept = written.kept(first_lost);
    assert_store_holds(&store, &kept);
    for lost in written.tail[first_lost..].iter().flatten() {
        assert!(
            store.message_by_id(&lost.draft.msg_id).is_none(),
            "dropped message {} still found by id",
            lost.draft.msg_id
        );
        assert!(
            store.message_at(lost.appended.commit_log_offset).is_err(),
            "dropped message at {} still readable",
            lost.appended.commit_log_offset
        );
    }

    info!("--- append after the cut: expect it to land exactly there");
    written.next_index = written.last_kept_raft(first_lost).index;
    let again = written.entry(&store, 3, 100);
    assert_eq!(
        again[0].appended.commit_log_offset,
        CommitLogOffset(cut),
        "the first new record starts at the cut"
    );
    kept.extend(again);
    assert_store_holds(&store, &kept);
    store.close().expect("closing");

    info!("--- reopen once more: expect no truncation and the same content");
    let (store, report) =
        MessageStore::open_without_background(written.config.clone()).expect("reopening");
    assert!(report.clean_shutdown);
    assert_eq!(report.commit_log.truncated_bytes, 0, "{report:?}");
    assert_store_holds(&store, &kept);
    store.close().expect("closing");
}

/// The last record of the last entry is cut in half: the whole entry goes.
#[test]
fn half_written_last_record_drops_its_entry() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_store(dir.path(), 10, &[(3, 300), (3, 300), (4, 300)]);
    let last = written.tail[2].last().expect("a record").appended;
    let (start, end) = (
        last.commit_log_offset.0,
        last.commit_log_offset.0 + u64::from(last.size),
    );
    info!(start, end, "--- zero the second half of the last record");
    let file = commit_log_file(&written.config, 0);
    zero_range(&file, start + u64::from(last.size) / 2, end);
    let cut = entry_range(&written.tail[2]).0;
    reopen_and_check(written, cut, 2);
}

/// Garbage after the last record is dropped; no record is lost.
#[test]
fn garbage_after_the_last_record_is_dropped() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_store(dir.path(), 10, &[(3, 300), (2, 300)]);
    let end = entry_range(&written.tail[1]).1;
    info!(end, "--- write 100 bytes of garbage after the last record");
    let garbage: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251 + 1) as u8).collect();
    write_at(&commit_log_file(&written.config, 0), end, &garbage);
    reopen_and_check(written, end, 2);
}

/// The second half of the last entry's bytes is zeroed: the entry has records
/// missing, so it is dropped whole even though its first records are intact.
#[test]
fn entry_with_missing_records_is_dropped_whole() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_store(dir.path(), 10, &[(2, 300), (4, 400)]);
    let (first, end) = entry_range(&written.tail[1]);
    let mid = first + (end - first) / 2;
    info!(
        first,
        mid, end, "--- zero the second half of the last entry"
    );
    let file = commit_log_file(&written.config, 0);
    zero_range(&file, mid, end);
    assert!(
        written_extent(&file, first) > first,
        "the entry's first records are still there"
    );
    reopen_and_check(written, first, 1);
}

/// A record in the middle of the last entry is lost while the ones after it were
/// written: recovery must not accept the entry's later records past the hole.
#[test]
fn hole_inside_the_last_entry_drops_it() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_store(dir.path(), 10, &[(2, 300), (4, 400)]);
    let lost = written.tail[1][1].appended;
    info!(
        at = lost.commit_log_offset.0,
        "--- zero the entry's second record only"
    );
    let file = commit_log_file(&written.config, 0);
    zero_range(
        &file,
        lost.commit_log_offset.0,
        lost.commit_log_offset.0 + u64::from(lost.size),
    );
    let cut = entry_range(&written.tail[1]).0;
    reopen_and_check(written, cut, 1);
}

/// How the second file of an entry spanning two files was lost.
#[derive(Debug, Clone, Copy)]
enum SecondFile {
    /// Created, but none of its data reached the disk.
    Zeroed,
    /// Its creation never reached the disk.
    Missing,
    /// Its first record is there, the second is cut in half.
    Torn,
}

/// Builds a store whose last entry starts in file 0 and continues in file 1 (file 0
/// ends with a blank record between them), then loses part of it.
fn spanning_entry_case(loss: SecondFile) {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    let file_size = config.commit_log_file_size_bytes;

    info!(?loss, "--- fill file 0 up to ~10 KiB before its end, flush");
    let (store, _) =
        MessageStore::open_without_background(config.clone()).expect("opening a new store");
    let mut written = Written {
        config: config.clone(),
        durable: Vec::new(),
        tail: Vec::new(),
        flushed: 0,
        next_message: 0,
        next_index: 0,
    };
    while store.max_commit_log_offset().0 < file_size - 10_000 {
        let sent = written.entry(&store, 1, 200);
        written.durable.extend(sent);
    }
    written.flushed = store.flush().expect("flushing").0;

    info!("--- append an entry of three ~6 KiB records: one in file 0, two in file 1");
    let entry = written.entry(&store, 3, 6_000);
    let offsets: Vec<u64> = entry
        .iter()
        .map(|s| s.appended.commit_log_offset.0)
        .collect();
    assert!(
        offsets[0] < file_size && offsets[1] == file_size && offsets[2] > file_size,
        "the entry spans files 0 and 1 as planned: {offsets:?}"
    );
    written.tail.push(entry);
    drop(store);

    let second = commit_log_file(&config, file_size);
    match loss {
        SecondFile::Zeroed => {
            info!("--- zero file 1");
            zero_range(&second, 0, file_size);
        }
        SecondFile::Missing => {
            info!("--- delete file 1");
            std::fs::remove_file(&second).expect("deleting file 1");
        }
        SecondFile::Torn => {
            let last = written.tail[0][2].appended;
            let in_file = last.commit_log_offset.0 - file_size;
            info!(
                in_file,
                "--- cut the entry's last record (in file 1) in half"
            );
            zero_range(
                &second,
                in_file + u64::from(last.size) / 2,
                in_file + u64::from(last.size),
            );
        }
    }
    let blank = read_at(
        &commit_log_file(&config, 0),
        written.tail[0][0].appended.commit_log_offset.0
            + u64::from(written.tail[0][0].appended.size),
        8,
    );
    assert_ne!(blank, vec![0u8; 8], "file 0 ends with a blank record");
    let cut = entry_range(&written.tail[0]).0;
    reopen_and_check(written, cut, 0);
    assert!(
        !commit_log_file(&config, file_size).exists()
            || written_extent(&commit_log_file(&config, file_size), 0) == 0,
        "nothing of the dropped entry is left in file 1"
    );
}

/// The entry's second file was created but none of its data reached the disk.
#[test]
fn entry_spanning_into_a_zeroed_next_file_is_dropped() {
    spanning_entry_case(SecondFile::Zeroed);
}

/// The entry's second file itself was lost.
#[test]
fn entry_spanning_into_a_missing_next_file_is_dropped() {
    spanning_entry_case(SecondFile::Missing);
}

/// The entry's record in the next file is torn.
#[test]
fn entry_spanning_into_a_torn_next_file_is_dropped() {
    spanning_entry_case(SecondFile::Torn);
}

/// Which kind of file a crash caught half created.
#[derive(Debug, Clone, Copy)]
enum Torn {
    /// A CommitLog file created but not yet sized (zero length).
    CommitLogEmpty,
    /// A ConsumeQueue file created but not yet sized.
    ConsumeQueueEmpty,
    /// An index file created but not yet sized.
    IndexEmpty,
    /// An index file sized but its header not yet written (all zeros).
    IndexZeroed,
}

/// A crash while creating the next file of some kind leaves it empty, or (an index
/// file) sized without a header: that newest file is a torn tail — it never held
/// anything — so the store opens, keeps everything, and goes on.
#[test]
fn torn_file_creation_is_a_torn_tail() {
    init_tracing();
    for torn in [
        Torn::CommitLogEmpty,
        Torn::ConsumeQueueEmpty,
        Torn::IndexEmpty,
        Torn::IndexZeroed,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut written = write_store(dir.path(), 10, &[(3, 300)]);
        let config = written.config.clone();
        let path = match torn {
            Torn::CommitLogEmpty => commit_log_file(&config, config.commit_log_file_size_bytes),
            Torn::ConsumeQueueEmpty => {
                let units_bytes = config.consume_queue_units_per_file * 20;
                config
                    .consume_queue_dir()
                    .join("orders")
                    .join("0")
                    .join(file_name(units_bytes))
            }
            Torn::IndexEmpty | Torn::IndexZeroed => {
                let files = common::files_by_offset(&config.index_dir());
                let (sequence, newest) = files.last().expect("index files");
                let len = match torn {
                    Torn::IndexZeroed => std::fs::metadata(newest).expect("metadata").len(),
                    _ => 0,
                };
                let path = config.index_dir().join(file_name(sequence + 1));
                std::fs::File::create(&path)
                    .and_then(|f| f.set_len(len))
                    .expect("creating the torn index file");
                path
            }
        };
        if !path.exists() {
            std::fs::File::create(&path).expect("creating the torn file");
        }
        info!(?torn, path = %path.display(), "--- reopen with a torn file creation");
        let (store, report) = MessageStore::open_without_background(config.clone())
            .unwrap_or_else(|e| panic!("{torn:?}: the store does not open: {e}"));
        assert_eq!(report.commit_log.truncated_bytes, 0, "{torn:?}: {report:?}");
        let mut kept = written.kept(1);
        assert_store_holds(&store, &kept);

        info!(?torn, "--- append, close, reopen");
        let again = written.entry(&store, 30, 2_500);
        kept.extend(again);
        assert_store_holds(&store, &kept);
        store.close().expect("closing");
        let (store, _) = MessageStore::open_without_background(config.clone()).expect("reopening");
        assert_store_holds(&store, &kept);
        store.close().expect("closing");
    }
}

/// An entry whose first record did not fit in file 0 writes a blank record over the
/// rest of file 0 and its records into file 1. If file 1's part is lost, the blank is
/// all that is left of the entry: it is part of the torn tail, so the log ends where
/// the previous entry ends, not at the end of file 0.
#[test]
fn blank_left_by_an_entry_lost_in_the_next_file_is_dropped() {
    init_tracing();
    for lose_file in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = test_config(dir.path());
        let file_size = config.commit_log_file_size_bytes;
        let (store, _) =
            MessageStore::open_without_background(config.clone()).expect("opening a new store");
        let mut written = Written {
            config: config.clone(),
            durable: Vec::new(),
            tail: Vec::new(),
            flushed: 0,
            next_message: 0,
            next_index: 0,
        };
        info!(
            lose_file,
            "--- fill file 0 to less than 6 KiB before its end, flush"
        );
        while store.max_commit_log_offset().0 < file_size - 6_000 {
            let sent = written.entry(&store, 1, 200);
            written.durable.extend(sent);
        }
        written.flushed = store.flush().expect("flushing").0;
        let durable_end = written.flushed;

        info!("--- append an entry whose first record needs file 1");
        let entry = written.entry(&store, 2, 7_000);
        assert_eq!(
            entry[0].appended.commit_log_offset.0, file_size,
            "the entry starts in file 1, file 0 ends with a blank"
        );
        written.tail.push(entry);
        drop(store);

        let second = commit_log_file(&config, file_size);
        if lose_file {
            info!("--- delete file 1");
            std::fs::remove_file(&second).expect("deleting file 1");
        } else {
            info!("--- zero file 1");
            zero_range(&second, 0, file_size);
        }
        reopen_and_check(written, durable_end, 0);
    }
}
