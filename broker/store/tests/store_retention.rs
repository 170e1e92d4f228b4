//! Retention deletes expired CommitLog files oldest first and never the last one, and
//! every read path then agrees on the new minimum; so does a reopened store.
//!
//! # How
//!
//! With 64 KiB CommitLog files, 64-unit ConsumeQueue files, 256-entry index files and
//! `file_reserved_ms` = one hour, the test appends ~7 files of messages one minute of
//! store time apart over three queues of `orders` (plus an `early` topic written only
//! at the start), then calls `run_retention(now)` for chosen `now`s:
//!
//! 1. `now` within the hour of every file → nothing is deleted;
//! 2. `now` just past the hour of file 4's first record → exactly files 0–3 go (a
//!    file's age is its successor's first store time), oldest first;
//! 3. `now` far in the future → every file but the last.
//!
//! After each deleting run: `min_commit_log_offset` is the first kept file's start;
//! each queue's minimum is its first message at or above it; pulls below the minimum
//! return `OffsetTooSmall` with `next_offset` = the minimum, pulls from it return
//! exactly the kept messages; `message_at` a deleted offset is
//! `CommitLogOffsetTooSmall`; id and key queries and `offset_by_timestamp` no longer
//! see deleted messages; ConsumeQueue files whose units all lie below a queue's minimum
//! and index files whose entries all point below the CommitLog minimum are gone, and
//! no others. Then the store is reopened (cleanly and not), checked the same way,
//! and appended to.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use broker_store::{
    CommitLogOffset, MessageStore, PullStatus, QueueId, QueueOffset, StoreConfig, StoreError,
    TagFilter,
};
use common::{
    append_sent, draft, files_by_offset, init_tracing, pull_all, read_at, test_config, Sent,
};
use tracing::info;

const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;
const T0: u64 = 1_700_000_000_000;

/// The store being tested and what was sent to it.
struct Fixture {
    _dir: tempfile::TempDir,
    config: StoreConfig,
    sent: Vec<Sent>,
    next_message: u64,
    next_index: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = common::fast_tempdir();
        let mut config = test_config(dir.path());
        config.file_reserved_ms = 3_600_000;
        Self {
            config,
            _dir: dir,
            sent: Vec::new(),
            next_message: 0,
            next_index: 0,
        }
    }

    /// Appends one entry of `records` messages to `topic`, stored one minute apart.
    fn append(&mut self, store: &MessageStore, topic: &str, records: u64) {
        let drafts = (0..records)
            .map(|_| {
                let n = self.next_message;
                self.next_message += 1;
                let mut d = draft(topic, (n % 3) as u32, n, 300 + (n as usize * 53) % 400);
                d.store_timestamp_ms = T0 + n * MINUTE_MS;
                d
            })
            .collect();
        self.next_index += 1;
        let sent = append_sent(store, self.next_index, drafts);
        self.sent.extend(sent);
    }

    /// The store time of the first record of the CommitLog file starting at `start`.
    fn first_store_ms(&self, start: u64) -> u64 {
        self.sent
            .iter()
            .find(|s| s.appended.commit_log_offset.0 >= start)
            .expect("a record in that file")
            .appended
            .store_timestamp_ms
    }

    /// Every (topic, queue) written, with its messages in queue order.
    fn queues(&self) -> BTreeMap<(String, QueueId), Vec<&Sent>> {
        let mut queues: BTreeMap<(String, QueueId), Vec<&Sent>> = BTreeMap::new();
        for s in &self.sent {
            queues
                .entry((s.draft.topic.clone(), s.draft.queue_id))
                .or_default()
                .push(s);
        }
        queues
    }

    /// Checks every read path against a CommitLog minimum of `min`.
    fn check(&self, store: &MessageStore, min: u64) {
        assert_eq!(store.min_commit_log_offset(), CommitLogOffset(min));
        for ((topic, queue_id), messages) in self.queues() {
            let kept: Vec<&Sent> = messages
                .iter()
                .copied()
                .filter(|s| s.appended.commit_log_offset.0 >= min)
                .collect();
            let queue_min = QueueOffset((messages.len() - kept.len()) as u64);
            let queue_max = QueueOffset(messages.len() as u64);
            assert_eq!(
                store.queue_offsets(&topic, queue_id),
                Some((queue_min, queue_max)),
                "offsets of {topic}:{queue_id} with the CommitLog minimum at {min}"
            );
            if queue_min.0 > 0 {
                for below in [QueueOffset(0), QueueOffset(queue_min.0 - 1)] {
                    let result = store
                        .pull(&topic, queue_id, below, 10, &TagFilter::All)
                        .expect("pulling below the minimum");
                    assert_eq!(
                        result.status,
                        PullStatus::OffsetTooSmall,
                        "{topic}:{queue_id} at {below}"
                    );
                    assert_eq!(result.next_offset, queue_min);
                    assert_eq!(result.min_offset, queue_min);
                    assert_eq!(result.max_offset, queue_max);
                    assert!(result.messages.is_empty());
                }
            }
            let pulled = pull_all(store, &topic, queue_id, queue_min);
            let expected: Vec<_> = kept.iter().map(|s| s.expected()).collect();
            assert_eq!(pulled, expected, "kept messages of {topic}:{queue_id}");
            // The first message stored at or after the first deleted one's time is the
            // first kept one.
            let first_ms = messages[0].appended.store_timestamp_ms;
            assert_eq!(
                store.offset_by_timestamp(&topic, queue_id, first_ms),
                queue_min,
                "offset_by_timestamp of {topic}:{queue_id}"
            );
        }
        for s in &self.sent {
            let offset = s.appended.commit_log_offset;
            if offset.0 >= min {
                assert_eq!(
                    store.message_at(offset).expect("a kept message"),
                    s.expected()
                );
                assert_eq!(store.message_by_id(&s.draft.msg_id), Some(s.expected()));
                continue;
            }
            match store.message_at(offset) {
                Err(StoreError::CommitLogOffsetTooSmall { requested, min: m }) => {
                    assert_eq!((requested, m), (offset, CommitLogOffset(min)));
                }
                other => panic!("message_at a deleted offset {offset} returned {other:?}"),
            }
            assert_eq!(
                store.message_by_id(&s.draft.msg_id),
                None,
                "deleted {offset} by id"
            );
            for key in &s.draft.keys {
                assert!(
                    store
                        .messages_by_key(&s.draft.topic, key, 0, u64::MAX, 10)
                        .is_empty(),
                    "deleted message found by key {key}"
                );
            }
        }
    }
}

/// The (begin, end) CommitLog offsets an index file's header says it covers.
fn index_file_range(path: &std::path::Path) -> (u64, u64) {
    let header = read_at(path, 0, 64);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    (u64_at(32), u64_at(40))
}

/// The ConsumeQueue files of every queue: (topic, queue) → file start bytes.
fn consume_queue_files(config: &StoreConfig) -> BTreeMap<(String, u32), Vec<u64>> {
    let mut out = BTreeMap::new();
    for topic in ["orders", "early"] {
        for queue in 0..3u32 {
            let dir = config
                .consume_queue_dir()
                .join(topic)
                .join(queue.to_string());
            if dir.is_dir() {
                let starts = files_by_offset(&dir).into_iter().map(|(s, _)| s).collect();
                out.insert((topic.to_string(), queue), starts);
            }
        }
    }
    out
}

/// Runs retention at `now` and checks which files of each kind it deleted.
fn retain(fixture: &Fixture, store: &MessageStore, now: u64, expect_min: u64) {
    let file_size = fixture.config.commit_log_file_size_bytes;
    let cl_before: Vec<(u64, PathBuf)> = common::commit_log_files(&fixture.config);
    let cq_before = consume_queue_files(&fixture.config);
    let index_before: Vec<(u64, u64)> = files_by_offset(&fixture.config.index_dir())
        .into_iter()
        .map(|(sequence, path)| (sequence, index_file_range(&path).1))
        .collect();

    let report = store.run_retention(now).expect("running retention");
    info!(
        commit_log = report.commit_log_files_deleted.len(),
        consume_queue = report.consume_queue_files_deleted,
        index = report.index_files_deleted,
        "retention report"
    );

    let expected_cl: Vec<PathBuf> = cl_before
        .iter()
        .filter(|(start, _)| start + file_size <= expect_min)
        .map(|(_, path)| path.clone())
        .collect();
    assert_eq!(
        report.commit_log_files_deleted, expected_cl,
        "CommitLog files deleted, oldest first"
    );
    let cl_after = common::commit_log_files(&fixture.config);
    assert_eq!(cl_after.first().map(|(s, _)| *s), Some(expect_min));
    assert_eq!(
        cl_after.last(),
        cl_before.last(),
        "the last file is never deleted"
    );

    // A queue's file goes when every unit in it lies below the queue's minimum
    // (never the queue's last file).
    let mut expected_cq_deleted = 0;
    let cq_after = consume_queue_files(&fixture.config);
    let unit_file_bytes = fixture.config.consume_queue_units_per_file * 20;
    for ((topic, queue), before) in &cq_before {
        let (queue_min, _) = store
            .queue_offsets(topic, QueueId(*queue))
            .expect("the queue exists");
        let min_byte = queue_min.0 * 20;
        let expected: Vec<u64> = before
            .iter()
            .enumerate()
            .filter(|(i, start)| *start + unit_file_bytes > min_byte || i + 1 == before.len())
            .map(|(_, start)| *start)
            .collect();
        expected_cq_deleted += before.len() - expected.len();
        assert_eq!(
            cq_after.get(&(topic.clone(), *queue)),
            Some(&expected),
            "ConsumeQueue files of {topic}:{queue} after retention (minimum {queue_min})"
        );
    }
    assert_eq!(report.consume_queue_files_deleted, expected_cq_deleted);

    // An index file goes when its newest entry points below the CommitLog minimum
    // (never the file being written).
    let expected_index: Vec<u64> = index_before
        .iter()
        .enumerate()
        .filter(|(i, (_, end))| *end >= expect_min || i + 1 == index_before.len())
        .map(|(_, (sequence, _))| *sequence)
        .collect();
    let index_after: Vec<u64> = files_by_offset(&fixture.config.index_dir())
        .into_iter()
        .map(|(sequence, _)| sequence)
        .collect();
    assert_eq!(index_after, expected_index, "index files after retention");
    assert_eq!(
        report.index_files_deleted,
        index_before.len() - index_after.len()
    );
}

/// Expired files go oldest first, never the last; reads agree; reopen agrees.
#[test]
fn retention_deletes_expired_files_and_reads_agree() {
    init_tracing();
    let mut fixture = Fixture::new();
    let file_size = fixture.config.commit_log_file_size_bytes;
    let (store, _) =
        MessageStore::open_without_background(fixture.config.clone()).expect("opening a new store");

    info!("--- append ~7 files of messages a minute apart; `early` only at the start");
    for _ in 0..20 {
        fixture.append(&store, "early", 1);
    }
    while store.max_commit_log_offset().0 < 6 * file_size + 20_000 {
        let records = 1 + fixture.next_index % 2;
        fixture.append(&store, "orders", records);
    }
    assert!(
        consume_queue_files(&fixture.config)
            .get(&("orders".to_string(), 0))
            .is_some_and(|files| files.len() >= 3),
        "queues span several ConsumeQueue files"
    );
    assert!(files_by_offset(&fixture.config.index_dir()).len() >= 4);
    fixture.check(&store, 0);

    info!("--- retention within the hour of every file: expect nothing deleted");
    let first_of_file_1 = fixture.first_store_ms(file_size);
    retain(&fixture, &store, first_of_file_1 + HOUR_MS, 0);
    fixture.check(&store, 0);

    info!("--- retention just past the hour of file 4's first record: expect files 0-3 gone");
    let now = fixture.first_store_ms(4 * file_size) + HOUR_MS + 1;
    retain(&fixture, &store, now, 4 * file_size);
    fixture.check(&store, 4 * file_size);
    let early = store
        .queue_offsets("early", QueueId(0))
        .expect("the early queue");
    assert_eq!(early.0, early.1, "every early message is gone");

    info!("--- close and reopen: expect the same minimum and reads");
    store.close().expect("closing");
    let (store, report) =
        MessageStore::open_without_background(fixture.config.clone()).expect("reopening");
    assert!(report.queues_rebuilt.is_empty(), "{report:?}");
    fixture.check(&store, 4 * file_size);

    info!("--- retention far in the future: expect every file but the last gone");
    let last_start = common::commit_log_files(&fixture.config)
        .last()
        .expect("files")
        .0;
    retain(&fixture, &store, u64::MAX / 2, last_start);
    fixture.check(&store, last_start);
    let again = store.run_retention(u64::MAX / 2).expect("retention again");
    assert!(
        again.commit_log_files_deleted.is_empty(),
        "the last file stays"
    );

    info!("--- drop without close, reopen, append: expect offsets to go on");
    drop(store);
    let (store, _) =
        MessageStore::open_without_background(fixture.config.clone()).expect("reopening");
    fixture.check(&store, last_start);
    fixture.append(&store, "orders", 3);
    fixture.append(&store, "early", 1);
    fixture.check(&store, last_start);
    store.close().expect("closing");
    let (store, _) =
        MessageStore::open_without_background(fixture.config.clone()).expect("reopening");
    fixture.check(&store, last_start);
    store.close().expect("closing");
}

/// A ConsumeQueue rebuilt from the CommitLog after retention deleted some or all of its
/// messages keeps its offsets: its minimum is its first kept message, and a queue with
/// nothing kept stays at its old end (offsets never go backwards).
#[test]
fn queue_rebuilt_after_retention_keeps_its_offsets() {
    init_tracing();
    let mut fixture = Fixture::new();
    let file_size = fixture.config.commit_log_file_size_bytes;
    let (store, _) =
        MessageStore::open_without_background(fixture.config.clone()).expect("opening a new store");
    info!("--- append `early` first, then ~3 files of `orders`; expire files 0-1");
    for _ in 0..20 {
        fixture.append(&store, "early", 1);
    }
    while store.max_commit_log_offset().0 < 2 * file_size + 20_000 {
        fixture.append(&store, "orders", 2);
    }
    let now = fixture.first_store_ms(2 * file_size) + HOUR_MS + 1;
    retain(&fixture, &store, now, 2 * file_size);
    fixture.check(&store, 2 * file_size);
    let offsets_before: Vec<_> = [("early", 0u32), ("orders", 0)]
        .iter()
        .map(|(topic, queue)| store.queue_offsets(topic, QueueId(*queue)))
        .collect();
    store.close().expect("closing");

    info!("--- delete the directories of early:0 (nothing kept) and orders:0 (partly kept)");
    for (topic, queue) in [("early", 0u32), ("orders", 0)] {
        std::fs::remove_dir_all(
            fixture
                .config
                .consume_queue_dir()
                .join(topic)
                .join(queue.to_string()),
        )
        .expect("deleting a queue directory");
    }
    let (store, report) =
        MessageStore::open_without_background(fixture.config.clone()).expect("reopening");
    assert_eq!(report.queues_rebuilt.len(), 2, "{report:?}");
    let offsets_after: Vec<_> = [("early", 0u32), ("orders", 0)]
        .iter()
        .map(|(topic, queue)| store.queue_offsets(topic, QueueId(*queue)))
        .collect();
    assert_eq!(
        offsets_after, offsets_before,
        "queue offsets after the rebuild"
    );
    fixture.check(&store, 2 * file_size);

    info!("--- reopen without appending: expect the empty queue to keep its offsets");
    store.close().expect("closing");
    let (store, _) =
        MessageStore::open_without_background(fixture.config.clone()).expect("reopening");
    let offsets_again: Vec<_> = [("early", 0u32), ("orders", 0)]
        .iter()
        .map(|(topic, queue)| store.queue_offsets(topic, QueueId(*queue)))
        .collect();
    assert_eq!(
        offsets_again, offsets_before,
        "queue offsets after another reopen"
    );

    info!("--- append to both queues: expect offsets to continue from the old ends");
    fixture.append(&store, "early", 3);
    fixture.append(&store, "orders", 3);
    fixture.check(&store, 2 * file_size);
    store.close().expect("closing");
}
