//! A tag-filtered pull skips messages by the tag hash in their ConsumeQueue unit and
//! never reads their CommitLog record; a record whose hash matches is read and its
//! tag string checked exactly.
//!
//! # How
//!
//! 200 messages alternate tags `TagA` / `TagB` in one queue (two CommitLog files,
//! four ConsumeQueue files). While the store is open, the last bytes of every `TagB`
//! record — its body, the last field of the layout in `storage/record.rs` — are
//! inverted through a separate `std::fs::File` (the mapping shares the page cache,
//! so the store sees the damage at once). Then:
//!
//! * `TagA` returns exactly the `TagA` messages, intact: the damaged records were
//!   never decoded (a decode checks the CRC over the body);
//! * `*`, `TagB` and `TagA||TagB` fail with a checksum error at the first `TagB`
//!   record: the damage is real, and would have surfaced had `TagA` read it;
//! * a hash collision is simulated with a hand-built filter whose hash is `TagA`'s
//!   but whose tag string is another (a real 64-bit FNV-1a collision between short
//!   tag strings costs a 2^32 birthday search, too slow for a test): the records are
//!   read and rejected by the exact string check.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use broker_store::record::RecordError;
use broker_store::types::TagHash;
use broker_store::{
    CommitLogOffset, MessageStore, PullStatus, QueueId, QueueOffset, StoreConfig, StoreError,
    StoredMessage, TagFilter,
};
use common::{append_sent, commit_log_files, draft, fast_tempdir, init_tracing, test_config, Sent};
use tracing::info;

const TOPIC: &str = "orders";
const QUEUE: QueueId = QueueId(0);
const MESSAGES: u64 = 200;
const BODY_BYTES: usize = 200;
/// How many bytes at the end of each `TagB` record are damaged (all body bytes).
const DAMAGED_BYTES: usize = 16;
/// A small page so filtered pulls take several rounds and cross ConsumeQueue files.
const PAGE: usize = 7;

fn tag_of(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "TagA"
    } else {
        "TagB"
    }
}

/// Appends the messages, a few per Raft entry, tags alternating from `TagA`.
fn write_messages(store: &MessageStore) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut n = 0u64;
    let mut index = 0u64;
    while n < MESSAGES {
        index += 1;
        let drafts = (0..(1 + index % 3).min(MESSAGES - n))
            .map(|_| {
                let mut d = draft(TOPIC, QUEUE.0, n, BODY_BYTES);
                d.tags = tag_of(n).to_string();
                n += 1;
                d
            })
            .collect();
        sent.extend(append_sent(store, index, drafts));
    }
    sent
}

/// Pulls the whole queue through `filter` in pages of [`PAGE`], checking that each
/// round moves on, and returns the messages; the first error ends it.
fn pull_filtered(
    store: &MessageStore,
    filter: &TagFilter,
) -> Result<(Vec<StoredMessage>, Vec<PullStatus>), StoreError> {
    let mut offset = QueueOffset(0);
    let mut messages = Vec::new();
    let mut statuses = Vec::new();
    loop {
        let page = store.pull(TOPIC, QUEUE, offset, PAGE, filter)?;
        statuses.push(page.status);
        match page.status {
            PullStatus::NoNewMsg => return Ok((messages, statuses)),
            PullStatus::Found | PullStatus::NoMatchedMsg => {
                assert!(
                    page.next_offset > offset,
                    "a {:?} page at {offset} did not move on (next {})",
                    page.status,
                    page.next_offset
                );
                assert_eq!(
                    page.status == PullStatus::Found,
                    !page.messages.is_empty(),
                    "status {:?} with {} messages",
                    page.status,
                    page.messages.len()
                );
                assert!(page.messages.len() <= PAGE, "page larger than asked");
                messages.extend(page.messages);
                offset = page.next_offset;
            }
            other => panic!("pull at {offset} answered {other:?}"),
        }
    }
}

fn expected(sent: &[Sent], tags: &[&str]) -> Vec<StoredMessage> {
    sent.iter()
        .filter(|s| tags.contains(&s.draft.tags.as_str()))
        .map(Sent::expected)
        .collect()
}

/// Inverts the last [`DAMAGED_BYTES`] bytes of the record at `offset` (of `size`
/// bytes) in its CommitLog file, through the file rather than the store's mapping.
fn damage_record_tail(config: &StoreConfig, offset: CommitLogOffset, size: u32) {
    let (start, path) = commit_log_files(config)
        .into_iter()
        .rfind(|(start, _)| *start <= offset.0)
        .expect("a CommitLog file holds the record");
    let end = offset.0 - start + u64::from(size);
    assert!(
        end <= config.commit_log_file_size_bytes,
        "a record never spans two files"
    );
    let at = end - DAMAGED_BYTES as u64;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("opening the CommitLog file");
    let mut bytes = [0u8; DAMAGED_BYTES];
    file.read_exact_at(&mut bytes, at)
        .expect("reading the body");
    for b in &mut bytes {
        *b = !*b;
    }
    file.write_all_at(&bytes, at).expect("damaging the body");
}

/// The error a pull over a damaged `TagB` record must fail with.
fn assert_checksum_error(
    result: Result<(Vec<StoredMessage>, Vec<PullStatus>), StoreError>,
    first_b: CommitLogOffset,
    what: &str,
) {
    match result {
        Err(StoreError::BadRecord {
            offset,
            source: RecordError::ChecksumMismatch { .. },
        }) => assert_eq!(
            offset, first_b,
            "{what}: the error names the first damaged record"
        ),
        Err(other) => panic!("{what}: expected a checksum mismatch, got {other}"),
        Ok((messages, _)) => panic!(
            "{what}: pulled {} messages over damaged records without an error",
            messages.len()
        ),
    }
}

#[test]
fn a_filtered_pull_skips_hash_mismatches_without_reading_the_commit_log() {
    init_tracing();
    let dir = fast_tempdir();
    let config = test_config(dir.path());
    let (store, _) =
        MessageStore::open_without_background(config.clone()).expect("opening a new store");
    let sent = write_messages(&store);
    assert!(
        commit_log_files(&config).len() >= 2,
        "the messages span two CommitLog files"
    );
    let body_start = sent[0].appended.size as usize - BODY_BYTES;
    assert!(
        body_start >= broker_store::record::layout::FIXED_LEN,
        "the body is the record's last field"
    );
    let tag_a = TagFilter::parse("TagA").expect("a valid expression");
    let tag_b = TagFilter::parse("TagB").expect("a valid expression");
    let both = TagFilter::parse("TagA||TagB").expect("a valid expression");

    info!("--- before any damage, each filter returns exactly its messages");
    let (all, _) = pull_filtered(&store, &TagFilter::All).expect("pull *");
    assert_eq!(all, expected(&sent, &["TagA", "TagB"]), "pull *");
    let (a, _) = pull_filtered(&store, &tag_a).expect("pull TagA");
    assert_eq!(a, expected(&sent, &["TagA"]), "pull TagA");
    assert_eq!(a.len() as u64, MESSAGES / 2);
    let (b, _) = pull_filtered(&store, &tag_b).expect("pull TagB");
    assert_eq!(b, expected(&sent, &["TagB"]), "pull TagB");
    let (ab, _) = pull_filtered(&store, &both).expect("pull TagA||TagB");
    assert_eq!(ab, all, "pull TagA||TagB");
    let (none, statuses) =
        pull_filtered(&store, &TagFilter::parse("TagC").expect("valid")).expect("pull TagC");
    assert!(none.is_empty(), "TagC matched {} messages", none.len());
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == PullStatus::NoMatchedMsg),
        "TagC pages: {statuses:?}"
    );

    info!("--- invert the last body bytes of every TagB record through the file");
    let damaged: Vec<&Sent> = sent.iter().filter(|s| s.draft.tags == "TagB").collect();
    for s in &damaged {
        damage_record_tail(&config, s.appended.commit_log_offset, s.appended.size);
    }
    let first_b = damaged[0].appended.commit_log_offset;

    info!("--- TagA still returns exactly the TagA messages: no TagB record was read");
    let (a, _) = pull_filtered(&store, &tag_a).expect("pull TagA over damaged TagB records");
    assert_eq!(a, expected(&sent, &["TagA"]), "pull TagA after the damage");

    info!("--- filters that read TagB records fail on the damage");
    assert_checksum_error(pull_filtered(&store, &TagFilter::All), first_b, "pull *");
    assert_checksum_error(pull_filtered(&store, &tag_b), first_b, "pull TagB");
    assert_checksum_error(pull_filtered(&store, &both), first_b, "pull TagA||TagB");
    // What TagA would see if the hash did not skip TagB units: the string check
    // alone (a filter wanting only the string TagA but TagB's hash) hits the damage.
    let reads_b = TagFilter::Tags(vec![
        ("TagA".to_string(), TagHash::of("TagA")),
        ("TagA".to_string(), TagHash::of("TagB")),
    ]);
    assert_checksum_error(
        pull_filtered(&store, &reads_b),
        first_b,
        "pull TagA with TagB's hash too",
    );
    for s in damaged.iter().take(3) {
        assert!(
            store.message_at(s.appended.commit_log_offset).is_err(),
            "reading damaged record {} by offset",
            s.appended.commit_log_offset
        );
    }

    info!("--- a simulated hash collision: TagA's hash, another tag string");
    let collision = TagFilter::Tags(vec![("TagC".to_string(), TagHash::of("TagA"))]);
    let (none, statuses) = pull_filtered(&store, &collision).expect("pull colliding TagC");
    assert!(
        none.is_empty(),
        "the exact string check let {} colliding messages through",
        none.len()
    );
    assert_eq!(
        statuses.last(),
        Some(&PullStatus::NoNewMsg),
        "the collision filter ends at the queue's end"
    );
    let mixed = TagFilter::Tags(vec![
        ("TagX".to_string(), TagHash::of("TagA")),
        ("TagA".to_string(), TagHash::of("TagA")),
    ]);
    let (a, _) = pull_filtered(&store, &mixed).expect("pull TagX(colliding)||TagA");
    assert_eq!(
        a,
        expected(&sent, &["TagA"]),
        "a colliding tag beside a real one: each TagA message once"
    );

    store.close().expect("closing");
}
