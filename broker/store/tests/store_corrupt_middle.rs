//! Damage below the durable (checkpointed) position is never mistaken for a torn
//! tail and never returned as data; derived data (ConsumeQueues, the index) is rebuilt
//! from the CommitLog.
//!
//! # How
//!
//! Each test writes about three CommitLog files of messages, closes the store (the
//! checkpoint then covers everything, in the last file) and damages the closed files:
//!
//! * a byte of a record in the checkpoint's file (which recovery validates) →
//!   `open` fails with `StoreError::Corrupt` naming that file and the record's global
//!   offset, changes nothing, and succeeds with everything once the byte is restored;
//! * a byte of a record in an older file (trusted at open) → reading it by offset,
//!   pulling across it or scanning over it fails with `StoreError::BadRecord`; it is
//!   never skipped or returned;
//! * a ConsumeQueue unit pointing at another (valid) record → the pull fails with
//!   `Corrupt` naming the queue, rather than return another queue's message;
//! * a deleted ConsumeQueue directory, or units zeroed (lost writes) → rebuilt from the
//!   CommitLog on reopen and reported in `queues_rebuilt`;
//! * a deleted `index/` directory → rebuilt; queries by id and key work again.

mod common;

use std::path::Path;

use broker_store::{
    CommitLogOffset, MessageStore, QueueId, QueueOffset, StoreConfig, StoreError, TagFilter,
};
use common::{
    append_sent, assert_store_holds, commit_log_file, draft, files_by_offset, flip_byte,
    init_tracing, read_at, test_config, write_at, zero_range, Sent,
};
use tracing::info;

const TOPIC: &str = "orders";
const QUEUES: u64 = 3;

/// Writes about three CommitLog files' worth of entries of 1–3 messages over three
/// queues and closes the store.
fn write_store(dir: &Path) -> (StoreConfig, Vec<Sent>) {
    let config = test_config(dir);
    let (store, _) =
        MessageStore::open_without_background(config.clone()).expect("opening a new store");
    let mut sent = Vec::new();
    let mut n = 0u64;
    let mut index = 0u64;
    while store.max_commit_log_offset().0 < 2 * config.commit_log_file_size_bytes + 20_000 {
        index += 1;
        let records = 1 + index % 3;
        let drafts = (0..records)
            .map(|_| {
                n += 1;
                draft(TOPIC, (n % QUEUES) as u32, n, 300 + (n as usize * 37) % 900)
            })
            .collect();
        sent.extend(append_sent(&store, index, drafts));
    }
    store.close().expect("closing");
    (config, sent)
}

/// The sent message whose record starts at or after `offset`.
fn message_from(sent: &[Sent], offset: u64) -> &Sent {
    sent.iter()
        .find(|s| s.appended.commit_log_offset.0 >= offset)
        .expect("a message at or after the offset")
}

/// Expects `open` to refuse the store with `Corrupt` naming `file` and `offset`.
fn expect_corrupt(config: &StoreConfig, file: &Path, offset: u64) {
    match MessageStore::open_without_background(config.clone()) {
        Err(error @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt {
                file: named,
                offset: at,
                ..
            } = &error
            else {
                unreachable!("matched above");
            };
            assert_eq!(named, file, "{error}");
            assert_eq!(*at, offset, "{error}");
            let text = error.to_string();
            assert!(
                text.contains(&file.display().to_string()) && text.contains(&offset.to_string()),
                "the message names file and offset: {text}"
            );
            info!(%error, "refused as expected");
        }
        Err(other) => panic!(
            "expected Corrupt at {offset} in {}, got {other}",
            file.display()
        ),
        Ok((_, report)) => panic!(
            "a store corrupt at {offset} in {} opened: {report:?}",
            file.display()
        ),
    }
}

/// A damaged record below the checkpoint, in the file recovery validates, refuses the
/// open — for damage in its size, its checksum, a fixed field, its body, or zeros.
#[test]
fn corrupt_record_below_the_checkpoint_refuses_open() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sent) = write_store(dir.path());
    let file_size = config.commit_log_file_size_bytes;
    let last_file_start = 2 * file_size;
    let file = commit_log_file(&config, last_file_start);
    // Well below the checkpointed end (the end of the log), in the checkpoint's file.
    let victim = message_from(&sent, last_file_start + 5_000).appended;
    let record = victim.commit_log_offset.0;
    let in_file = record - last_file_start;
    assert!(record + 10_000 < sent.last().expect("sent").appended.commit_log_offset.0);

    for (what, at) in [
        ("total_size", 0),
        ("crc", 9),
        ("queue_offset", 21),
        ("store_timestamp", 45),
        ("body", u64::from(victim.size) - 3),
    ] {
        info!(
            what,
            record, "--- flip a byte of the record's {what}; expect open to refuse"
        );
        flip_byte(&file, in_file + at);
        expect_corrupt(&config, &file, record);
        flip_byte(&file, in_file + at);
    }

    info!("--- zero the record; expect open to refuse (unwritten bytes below the durable offset)");
    let original = read_at(&file, in_file, victim.size as usize);
    zero_range(&file, in_file, in_file + u64::from(victim.size));
    expect_corrupt(&config, &file, record);
    write_at(&file, in_file, &original);

    info!("--- restored: expect the refused opens to have changed nothing");
    let (store, report) = MessageStore::open_without_background(config.clone()).expect("reopening");
    assert!(report.clean_shutdown);
    assert_eq!(report.commit_log.truncated_bytes, 0);
    assert_store_holds(&store, &sent);
    store.close().expect("closing");
}

/// A damaged record in an older file (not validated at open) is an error whenever it
/// is read, never skipped and never returned.
#[test]
fn corrupt_record_in_an_older_file_fails_reads() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sent) = write_store(dir.path());
    let victim = message_from(&sent, 10_000);
    let record = victim.appended.commit_log_offset;
    info!(%record, "--- flip a byte in the body of a record in file 0");
    flip_byte(
        &commit_log_file(&config, 0),
        record.0 + u64::from(victim.appended.size) - 5,
    );

    let (store, report) =
        MessageStore::open_without_background(config.clone()).expect("file 0 is trusted at open");
    assert_eq!(
        report.commit_log.scanned_from,
        CommitLogOffset(2 * config.commit_log_file_size_bytes)
    );

    info!("--- read it by offset: expect BadRecord");
    match store.message_at(record) {
        Err(StoreError::BadRecord { offset, .. }) => assert_eq!(offset, record),
        other => panic!("message_at of a corrupt record returned {other:?}"),
    }

    info!("--- pull it, and pull across it from the queue's start: expect BadRecord");
    let queue = victim.draft.queue_id;
    for from in [victim.appended.queue_offset, QueueOffset(0)] {
        match store.pull(TOPIC, queue, from, 1_000, &TagFilter::All) {
            Err(StoreError::BadRecord { offset, .. }) => assert_eq!(offset, record),
            Ok(result) => panic!(
                "pull from {from} across a corrupt record returned {:?} with {} messages",
                result.status,
                result.messages.len()
            ),
            Err(other) => panic!("pull returned {other}"),
        }
    }

    info!("--- scan over it: expect BadRecord");
    let scanned = store.scan(CommitLogOffset(0), store.max_commit_log_offset(), |_| {
        Ok(std::ops::ControlFlow::Continue(()))
    });
    assert!(
        matches!(scanned, Err(StoreError::BadRecord { offset, .. }) if offset == record),
        "{scanned:?}"
    );

    info!("--- the id lookup finds nothing rather than something wrong; neighbours are fine");
    assert_eq!(store.message_by_id(&victim.draft.msg_id), None);
    let others: Vec<Sent> = sent
        .iter()
        .filter(|s| s.draft.queue_id != queue)
        .cloned()
        .collect();
    assert_store_holds(&store, &others);
    store.close().expect("closing");
}

/// The directory of ConsumeQueue `queue` of `TOPIC`.
fn queue_dir(config: &StoreConfig, queue: u32) -> std::path::PathBuf {
    config
        .consume_queue_dir()
        .join(TOPIC)
        .join(queue.to_string())
}

/// A ConsumeQueue unit overwritten to point at another queue's (valid) record: a pull
/// must fail, not hand out another queue's message as this one's.
#[test]
fn consume_queue_unit_pointing_elsewhere_is_not_returned() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sent) = write_store(dir.path());
    let victim = sent
        .iter()
        .find(|s| s.draft.queue_id == QueueId(1) && s.appended.queue_offset == QueueOffset(5))
        .expect("queue 1 has six messages");
    let other = sent
        .iter()
        .find(|s| s.draft.queue_id == QueueId(2))
        .expect("queue 2 has messages");
    info!(
        from = %victim.appended.commit_log_offset,
        to = %other.appended.commit_log_offset,
        "--- point unit 5 of queue 1 at a message of queue 2"
    );
    let (_, cq_file) = files_by_offset(&queue_dir(&config, 1))
        .into_iter()
        .next()
        .expect("queue 1 has a file");
    let mut unit = other.appended.commit_log_offset.0.to_le_bytes().to_vec();
    unit.extend_from_slice(&other.appended.size.to_le_bytes());
    write_at(&cq_file, 5 * 20, &unit);

    let (store, _) = MessageStore::open_without_background(config.clone())
        .expect("the unit is below the checkpoint");
    let pulled = store.pull(TOPIC, QueueId(1), QueueOffset(5), 1, &TagFilter::All);
    match pulled {
        Err(StoreError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, queue_dir(&config, 1));
            assert_eq!(offset, 5 * 20, "the unit's byte offset in the queue");
            info!(reason, "refused as expected");
        }
        Err(other) => panic!("expected Corrupt naming the queue, got {other}"),
        Ok(result) => {
            for message in &result.messages {
                assert_eq!(
                    (
                        message.topic.as_str(),
                        message.queue_id,
                        message.queue_offset
                    ),
                    (TOPIC, QueueId(1), QueueOffset(5)),
                    "pull of queue 1 at offset 5 returned another queue's message"
                );
            }
            panic!(
                "pull through a unit pointing elsewhere returned {:?}",
                result.status
            );
        }
    }
    info!("--- the queue's other messages still pull");
    let fine = store
        .pull(TOPIC, QueueId(1), QueueOffset(0), 5, &TagFilter::All)
        .expect("pulling before the bad unit");
    assert_eq!(fine.messages.len(), 5);
    store.close().expect("closing");
}

/// A deleted ConsumeQueue directory is rebuilt from the CommitLog.
#[test]
fn deleted_consume_queue_is_rebuilt() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sent) = write_store(dir.path());
    info!("--- delete queue 1's directory");
    std::fs::remove_dir_all(queue_dir(&config, 1)).expect("deleting the queue");

    let (store, report) = MessageStore::open_without_background(config.clone()).expect("reopening");
    assert_eq!(report.queues_rebuilt, vec![(TOPIC.to_string(), QueueId(1))]);
    assert_store_holds(&store, &sent);
    store.close().expect("closing");

    info!("--- reopen: expect nothing more to rebuild");
    let (store, report) = MessageStore::open_without_background(config.clone()).expect("reopening");
    assert!(report.queues_rebuilt.is_empty(), "{report:?}");
    assert_store_holds(&store, &sent);
    store.close().expect("closing");
}

/// ConsumeQueue units lost (zeroed) at the end of a queue's newest file make it
/// shorter than its checkpoint: it is rebuilt.
#[test]
fn consume_queue_with_lost_units_is_rebuilt() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sent) = write_store(dir.path());
    let files = files_by_offset(&queue_dir(&config, 2));
    let (start, newest) = files.last().expect("queue 2 has files");
    let count = sent
        .iter()
        .filter(|s| s.draft.queue_id == QueueId(2))
        .count() as u64;
    let end_in_file = count * 20 - start;
    assert!(
        end_in_file >= 60,
        "the newest file holds at least three units"
    );
    info!(count, "--- zero the last three units of queue 2");
    zero_range(newest, end_in_file - 60, end_in_file);

    let (store, report) = MessageStore::open_without_background(config.clone()).expect("reopening");
    assert_eq!(report.queues_rebuilt, vec![(TOPIC.to_string(), QueueId(2))]);
    assert_store_holds(&store, &sent);
    store.close().expect("closing");
}

/// A deleted `index/` directory is rebuilt: every message is found by id and key —
/// after a clean shutdown and after an unclean one.
#[test]
fn deleted_index_is_rebuilt() {
    init_tracing();
    for clean in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, sent) = write_store(dir.path());
        if !clean {
            info!("--- reopen and drop without close (an unclean shutdown)");
            let (store, _) =
                MessageStore::open_without_background(config.clone()).expect("reopening");
            drop(store);
        }
        info!(clean, "--- delete index/");
        assert!(
            !files_by_offset(&config.index_dir()).is_empty(),
            "the index has files"
        );
        std::fs::remove_dir_all(config.index_dir()).expect("deleting the index");

        let (store, _) = MessageStore::open_without_background(config.clone()).expect("reopening");
        for s in &sent {
            assert_eq!(
                store.message_by_id(&s.draft.msg_id),
                Some(s.expected()),
                "message {} by id after the index was rebuilt (clean shutdown: {clean})",
                s.draft.msg_id
            );
            for key in &s.draft.keys {
                let found = store.messages_by_key(TOPIC, key, 0, u64::MAX, 10);
                assert_eq!(
                    found,
                    vec![s.expected()],
                    "key {key} (clean shutdown: {clean})"
                );
            }
        }
        store.close().expect("closing");
    }
}
