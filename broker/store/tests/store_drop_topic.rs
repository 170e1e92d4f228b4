//! Dropping a topic through the public store API (issue "Hostile clients and full
//! disks", findings 3 and 4): the topic's queues and files go, its older records
//! answer no pull or query, and a topic created again under the name starts at
//! queue offset 0 — after a clean close, after a crash, without a checkpoint (the
//! drop record in the CommitLog drives the rebuild), on a replica that receives the
//! raw CommitLog, and after a crash between the drop and its record. Also: the disk a
//! topic with 1,024 queues and one message in each costs, with production file sizes.

mod common;

use std::path::Path;

use broker_store::{
    MessageDraft, MessageStore, QueueId, QueueOffset, RaftLogRef, RecordInput, StoreConfig,
    TagFilter,
};
use common::{append, draft};

const TOPIC: &str = "orders";

/// The bodies queue 0 of [`TOPIC`] answers from offset 0, with their offsets.
fn queue_zero(store: &MessageStore) -> Vec<(u64, Vec<u8>)> {
    let pulled = store
        .pull(TOPIC, QueueId(0), QueueOffset(0), 100, &TagFilter::All)
        .expect("pull");
    pulled
        .messages
        .into_iter()
        .map(|m| (m.queue_offset.0, m.body))
        .collect()
}

/// Drops [`TOPIC`] as the state machine does: the store's drop, then the drop
/// record in Raft entry `index`.
fn drop_topic(store: &MessageStore, index: u64) {
    store.drop_topic(TOPIC).expect("drop");
    store
        .append_entry(
            RaftLogRef { term: 1, index },
            &[RecordInput::DropTopic {
                topic: TOPIC,
                payload: b"delete",
            }],
        )
        .expect("drop record");
}

/// Old messages 0..5 in queue 0 (entry 1), the drop (entry 2), a new message 100
/// (entry 3). Answers (old drafts, new draft).
fn write_history(store: &MessageStore) -> (Vec<MessageDraft>, MessageDraft) {
    let old: Vec<MessageDraft> = (0..5).map(|n| draft(TOPIC, 0, n, 64)).collect();
    append(store, 1, &old);
    // Another topic's message keeps its place.
    append(store, 2, &[draft("other", 0, 50, 64)]);
    drop_topic(store, 3);
    let new = draft(TOPIC, 0, 100, 64);
    append(store, 4, std::slice::from_ref(&new));
    (old, new)
}

/// Only the new incarnation answers, from offset 0.
#[track_caller]
fn assert_only_new(store: &MessageStore, old: &[MessageDraft], new: &MessageDraft, when: &str) {
    assert_eq!(
        queue_zero(store),
        vec![(0, new.body.clone())],
        "{when}: queue 0 holds the new message only, at offset 0"
    );
    assert_eq!(
        store.queue_offsets(TOPIC, QueueId(0)),
        Some((QueueOffset(0), QueueOffset(1))),
        "{when}"
    );
    for message in old {
        assert!(
            store.message_by_id(&message.msg_id).is_none(),
            "{when}: an old message answers by id"
        );
        for key in &message.keys {
            assert!(
                store
                    .messages_by_key(TOPIC, key, 0, u64::MAX, 10)
                    .is_empty(),
                "{when}: an old message answers by key {key}"
            );
        }
    }
    assert!(store.message_by_id(&new.msg_id).is_some(), "{when}");
    assert_eq!(
        store
            .pull("other", QueueId(0), QueueOffset(0), 10, &TagFilter::All)
            .expect("pull")
            .messages
            .len(),
        1,
        "{when}: another topic keeps its message"
    );
}

#[test]
fn a_dropped_topic_stays_dropped_across_reopens_and_rebuilds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::for_test(dir.path());
    let (old, new) = {
        let (store, _) = MessageStore::open(config.clone()).expect("open");
        let history = write_history(&store);
        assert_only_new(&store, &history.0, &history.1, "live");
        // A crash: no clean close.
        drop(store);
        history
    };
    {
        let (store, _) = MessageStore::open(config.clone()).expect("reopen after a crash");
        assert_only_new(&store, &old, &new, "after a crash");
        store.close().expect("close");
    }
    {
        let (store, _) = MessageStore::open(config.clone()).expect("reopen after close");
        assert_only_new(&store, &old, &new, "after a clean close");
        store.close().expect("close");
    }
    // Without its checkpoint or its queues the store rebuilds everything from the
    // CommitLog: the drop record, met in order, drops the old queue.
    std::fs::remove_file(config.checkpoint_path()).expect("remove the checkpoint");
    std::fs::remove_dir_all(config.consume_queue_dir()).expect("remove the queues");
    std::fs::remove_dir_all(config.index_dir()).expect("remove the index");
    let (store, report) = MessageStore::open(config).expect("rebuild");
    assert!(report.records_redispatched > 0);
    assert_only_new(&store, &old, &new, "after a rebuild from the log");
}

#[test]
fn a_replica_receiving_the_raw_log_drops_the_same_records() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (leader, _) = MessageStore::open(StoreConfig::for_test(leader_dir.path())).expect("open");
    let (old, new) = write_history(&leader);
    let (follower, _) =
        MessageStore::open(StoreConfig::for_test(follower_dir.path())).expect("open");
    let mut at = follower.max_commit_log_offset();
    while at < leader.max_commit_log_offset() {
        let chunk = leader.read_commit_log_raw(at, 1 << 20).expect("read");
        at = follower
            .append_commit_log_raw(at, &chunk)
            .expect("append raw");
    }
    assert_only_new(&follower, &old, &new, "on the replica");
}

#[test]
fn a_crash_between_the_drop_and_its_record_hides_the_old_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::for_test(dir.path());
    let old: Vec<MessageDraft> = (0..5).map(|n| draft(TOPIC, 0, n, 64)).collect();
    {
        let (store, _) = MessageStore::open(config.clone()).expect("open");
        append(&store, 1, &old);
        append(&store, 2, &[draft("other", 0, 50, 64)]);
        store.drop_topic(TOPIC).expect("drop");
        drop(store); // the crash: the drop record was never appended
    }
    let (store, _) = MessageStore::open(config).expect("reopen");
    assert!(
        queue_zero(&store).is_empty(),
        "the old queue was rebuilt from the CommitLog"
    );
    assert!(store.message_by_id(&old[0].msg_id).is_none());
    // Raft applies the entry again: the drop, its record, then the new topic.
    drop_topic(&store, 3);
    let new = draft(TOPIC, 0, 100, 64);
    append(&store, 4, std::slice::from_ref(&new));
    assert_only_new(&store, &old, &new, "after the entry was applied again");
}

/// Copies a directory tree (the test's stand-in for files a crash left behind).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.metadata().expect("metadata").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn queue_files_a_crash_left_after_the_drop_serve_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::for_test(dir.path());
    let queues = config.consume_queue_dir().join(TOPIC);
    let kept = dir.path().join("kept-queues");
    let old: Vec<MessageDraft> = (0..5).map(|n| draft(TOPIC, 0, n, 64)).collect();
    {
        let (store, _) = MessageStore::open(config.clone()).expect("open");
        append(&store, 1, &old);
        store.flush().expect("flush");
        copy_tree(&queues, &kept);
        store.drop_topic(TOPIC).expect("drop");
        drop(store);
    }
    // The crash came after the drop's checkpoint, before its files were deleted.
    copy_tree(&kept, &queues);
    let (store, _) = MessageStore::open(config).expect("reopen");
    assert!(
        queue_zero(&store).is_empty(),
        "the dropped topic's leftover queue files served a pull"
    );
    assert_eq!(store.queue_offsets(TOPIC, QueueId(0)), None);
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, not sizes).
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let metadata = entry.metadata().expect("metadata");
        total += if metadata.is_dir() {
            disk_use(&entry.path())
        } else {
            metadata.blocks() * 512
        };
    }
    total
}

/// The acceptance figure, with production sizes (1 GiB CommitLog files,
/// 300,000-unit ConsumeQueue files, a 1,000,000-slot index): before, each queue's
/// first message reserved a whole 5.7 MiB ConsumeQueue file (1,024 × 5.7 MiB =
/// 5.7 GiB) and the index its 96 MiB.
#[test]
fn a_topic_with_1024_queues_and_one_message_each_uses_under_10_mib() {
    let dir = common::fast_tempdir();
    let config = StoreConfig::new(dir.path().join("store"));
    let (store, _) = MessageStore::open(config.clone()).expect("open");
    let empty = disk_use(dir.path());
    for batch in 0..8u32 {
        let drafts: Vec<MessageDraft> = (0..128u32)
            .map(|i| {
                let queue = batch * 128 + i;
                draft(TOPIC, queue, u64::from(queue), 100)
            })
            .collect();
        append(&store, u64::from(batch) + 1, &drafts);
    }
    store.flush().expect("flush");
    let used = disk_use(dir.path()) - empty;
    let (commit_log, queues, index) = store.disk_bytes();
    eprintln!(
        "1,024 queues × 1 message: {used} bytes on disk ({:.2} MiB): CommitLog {commit_log}, ConsumeQueues {queues}, index {index}",
        used as f64 / f64::from(1 << 20)
    );
    assert_eq!(store.topic_queue_offsets(TOPIC).len(), 1024);
    assert!(
        used < 10 << 20,
        "{used} bytes for one message in each of 1,024 queues"
    );
}
