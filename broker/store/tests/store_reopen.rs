//! Write → close/drop → reopen → the same content, through the public store API.

use std::collections::BTreeMap;

use broker_store::{
    MessageDraft, MessageId, MessageStore, PullStatus, QueueId, QueueOffset, RaftLogRef,
    RecordInput, StoreConfig, TagFilter,
};

fn draft(topic: &str, queue: u32, i: u64, tags: &str) -> MessageDraft {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    id[8..12].copy_from_slice(&queue.to_be_bytes());
    MessageDraft {
        topic: topic.to_string(),
        queue_id: QueueId(queue),
        msg_id: MessageId(id),
        body: format!("body-{topic}-{queue}-{i}").repeat(20).into_bytes(),
        binary_body: false,
        tags: tags.to_string(),
        keys: vec![format!("key-{i}")],
        properties: BTreeMap::from([("i".to_string(), i.to_string())]),
        born_timestamp_ms: 1_000 + i,
        store_timestamp_ms: 2_000 + i,
        born_host: "127.0.0.1:1".into(),
        reconsume_times: 0,
        producer: None,
    }
}

/// Appends 1,000 messages over two topics and three queues (rolling many CommitLog
/// files), reopens after a clean close and after a plain drop, and checks every pull,
/// query and offset is unchanged.
#[test]
fn content_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::for_test(dir.path());
    let mut sent = Vec::new();
    {
        let (store, report) = MessageStore::open(config.clone()).expect("open");
        assert_eq!(report.commit_log.records_validated, 0);
        for batch in 0..100u64 {
            let drafts: Vec<MessageDraft> = (0..10u64)
                .map(|j| {
                    let i = batch * 10 + j;
                    draft(
                        if i % 2 == 0 { "a" } else { "b" },
                        (i % 3) as u32,
                        i,
                        if i % 5 == 0 { "T5" } else { "T" },
                    )
                })
                .collect();
            let inputs: Vec<RecordInput<'_>> = drafts.iter().map(RecordInput::Message).collect();
            let appended = store
                .append_entry(
                    RaftLogRef {
                        term: 1,
                        index: batch + 1,
                    },
                    &inputs,
                )
                .expect("append");
            assert_eq!(appended.len(), 10);
            sent.extend(drafts);
        }
        assert!(store.min_commit_log_offset().0 == 0);
        assert!(store.config().commit_log_file_size_bytes < store.max_commit_log_offset().0);
        store.close().expect("close");
    }
    for round in 0..2 {
        let (store, report) = MessageStore::open(config.clone()).expect("reopen");
        assert_eq!(report.commit_log.truncated_bytes, 0, "round {round}");
        assert_eq!(
            store.tail().last_raft,
            Some(RaftLogRef {
                term: 1,
                index: 100
            })
        );
        for topic in ["a", "b"] {
            for queue in 0..3u32 {
                let expected: Vec<&MessageDraft> = sent
                    .iter()
                    .filter(|d| d.topic == topic && d.queue_id == QueueId(queue))
                    .collect();
                let pulled = store
                    .pull(topic, QueueId(queue), QueueOffset(0), 1000, &TagFilter::All)
                    .expect("pull");
                assert_eq!(pulled.status, PullStatus::Found);
                assert_eq!(pulled.messages.len(), expected.len());
                for (i, (got, want)) in pulled.messages.iter().zip(&expected).enumerate() {
                    assert_eq!(got.queue_offset, QueueOffset(i as u64));
                    assert_eq!(got.body, want.body);
                    assert_eq!(got.msg_id, want.msg_id);
                    assert_eq!(got.keys, want.keys);
                    assert_eq!(got.properties, want.properties);
                }
                let tagged = store
                    .pull(
                        topic,
                        QueueId(queue),
                        QueueOffset(0),
                        1000,
                        &TagFilter::parse("T5").expect("filter"),
                    )
                    .expect("pull");
                assert!(tagged.messages.iter().all(|m| m.tags == "T5"));
                assert_eq!(
                    tagged.messages.len(),
                    expected.iter().filter(|d| d.tags == "T5").count()
                );
            }
        }
        let probe = &sent[517];
        let by_id = store.message_by_id(&probe.msg_id).expect("found by id");
        assert_eq!(by_id.body, probe.body);
        let by_key = store.messages_by_key(&probe.topic, "key-517", 0, u64::MAX, 10);
        assert_eq!(by_key.len(), 1);
        assert_eq!(by_key[0].msg_id, probe.msg_id);
        let offset = store.offset_by_timestamp("a", QueueId(0), 2_000 + 600);
        let at = store
            .pull("a", QueueId(0), offset, 1, &TagFilter::All)
            .expect("pull")
            .messages;
        assert!(at[0].store_timestamp_ms >= 2_600);
        if round == 0 {
            drop(store); // unclean: no close
        } else {
            store.close().expect("close");
        }
    }
}
