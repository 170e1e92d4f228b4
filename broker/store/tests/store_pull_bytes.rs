//! A pull's answer is bounded in bytes as well as in messages
//! (`StoreConfig::pull_max_bytes`, RocketMQ's `maxTransferBytesOnMessageInMemory`):
//! 1024 messages of the largest size would otherwise be one answer of gigabytes, held
//! in memory while it is written. The answer stops after the message that reaches
//! the budget — always at least one message, so a message larger than the budget is
//! still delivered — and `next_offset` points at the first message left out, so the
//! next pull goes on from there without a gap.

mod common;

use broker_store::{MessageStore, PullStatus, QueueId, QueueOffset, TagFilter};
use common::{append_sent, draft, fast_tempdir, init_tracing, test_config};
use tempfile::TempDir;

const TOPIC: &str = "big";

/// A store whose pulls answer at most `pull_max_bytes` of records (and the
/// directory that must outlive it).
fn store_with_budget(pull_max_bytes: u64) -> (TempDir, MessageStore) {
    init_tracing();
    let dir = fast_tempdir();
    let mut config = test_config(dir.path());
    config.pull_max_bytes = pull_max_bytes;
    let (store, _) = MessageStore::open(config).expect("open store");
    (dir, store)
}

#[test]
fn a_pull_stops_at_its_byte_budget_and_the_next_goes_on() {
    let (_dir, store) = store_with_budget(10_000);
    // 12 messages of about 3 KiB: the budget holds three and a bit.
    let mut sent = Vec::new();
    for n in 0..12 {
        sent.extend(append_sent(&store, n + 1, vec![draft(TOPIC, 0, n, 3_000)]));
    }
    let mut offset = QueueOffset(0);
    let mut pulled = 0;
    let mut pulls = 0;
    while offset.0 < 12 {
        let result = store
            .pull(TOPIC, QueueId(0), offset, 1024, &TagFilter::All)
            .expect("pull");
        assert_eq!(result.status, PullStatus::Found);
        let records: u64 = result.messages.iter().map(|m| u64::from(m.size)).sum();
        let last = result.messages.last().expect("at least one message");
        assert!(
            records - u64::from(last.size) < 10_000,
            "the answer went on after reaching its budget: {records} bytes in {}",
            result.messages.len()
        );
        assert_eq!(
            result.messages.len(),
            4,
            "three messages under the budget, then the one that reaches it"
        );
        for message in &result.messages {
            assert_eq!(*message, sent[pulled].expected(), "message {pulled}");
            pulled += 1;
        }
        assert_eq!(
            result.next_offset.0, pulled as u64,
            "next_offset follows the last message"
        );
        offset = result.next_offset;
        pulls += 1;
    }
    assert_eq!((pulled, pulls), (12, 3));
}

#[test]
fn a_message_larger_than_the_budget_is_still_delivered() {
    let (_dir, store) = store_with_budget(1_000);
    let sent = append_sent(
        &store,
        1,
        vec![draft(TOPIC, 0, 0, 5_000), draft(TOPIC, 0, 1, 5_000)],
    );
    for (n, expected) in sent.iter().enumerate() {
        let result = store
            .pull(
                TOPIC,
                QueueId(0),
                QueueOffset(n as u64),
                1024,
                &TagFilter::All,
            )
            .expect("pull");
        assert_eq!(result.messages, vec![expected.expected()], "message {n}");
        assert_eq!(result.next_offset, QueueOffset(n as u64 + 1));
    }
}
