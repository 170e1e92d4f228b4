//! Shared by the storage integration tests: a test configuration with background
//! retention neutralized, deterministic message drafts, the message a draft must read
//! back as, and helpers that damage store files while the store is closed.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use broker_store::mapped_file_queue::file_name;
use broker_store::{
    Appended, MessageDraft, MessageId, MessageStore, ProducerStamp, PullStatus, QueueId,
    QueueOffset, RaftLogRef, RecordInput, StoreConfig, StoredMessage, TagFilter,
};

/// Installs a tracing subscriber writing through libtest's capture (once per binary),
/// so the narrated phases (`info!("--- …")`) show up for failing tests.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call finds the subscriber installed; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// `StoreConfig::for_test` (64 KiB CommitLog files, 64-unit ConsumeQueue files) with
/// the background retention made inert: messages in these tests carry store times far
/// in the past, which the 72 h age limit would otherwise expire on the background
/// thread's first run, and a nearly full shared disk must not delete files either.
pub fn test_config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::for_test(dir);
    config.file_reserved_ms = u64::MAX;
    config.disk_high_water_ratio = 1.0;
    config
}

/// A temporary directory on tmpfs when there is one: tests that do not depend on what
/// `fsync` does (it is a no-op there) reopen stores and create many small files, and
/// each of those syncs costs milliseconds on a real disk.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("broker-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("creating a temporary directory")
}

/// A 64-bit mix (splitmix64's finalizer): deterministic pseudo-random numbers derived
/// from a message's identity, so a checker can recompute any message on its own.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic, never-zero-ending body bytes for message number `n` (a last byte of
/// zero would make a torn tail's written extent depend on the content).
pub fn body_bytes(n: u64, len: usize) -> Vec<u8> {
    let mut state = mix(n);
    let mut body: Vec<u8> = (0..len)
        .map(|i| {
            if i % 8 == 0 {
                state = mix(state);
            }
            (state >> ((i % 8) * 8)) as u8
        })
        .collect();
    if let Some(last) = body.last_mut() {
        *last |= 1;
    }
    body
}

/// The message id of message number `n`: its number in the first eight bytes.
pub fn message_id(n: u64) -> MessageId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&mix(n).to_be_bytes());
    MessageId(id)
}

/// Message number `n` of `topic`/`queue` with a body of `body_len` bytes; every other
/// field (tags, keys, properties, producer, timestamps) is derived from `n`.
pub fn draft(topic: &str, queue: u32, n: u64, body_len: usize) -> MessageDraft {
    let h = mix(n ^ 0x5EED);
    MessageDraft {
        topic: topic.to_string(),
        queue_id: QueueId(queue),
        msg_id: message_id(n),
        body: body_bytes(n, body_len),
        binary_body: h & 1 == 0,
        tags: ["", "TagA", "TagB"][(h >> 1) as usize % 3].to_string(),
        keys: (0..(h >> 3) % 3).map(|k| format!("key-{n}-{k}")).collect(),
        properties: BTreeMap::from([("n".to_string(), n.to_string())]),
        born_timestamp_ms: 1_000_000 + n,
        store_timestamp_ms: 2_000_000 + n,
        born_host: "127.0.0.1:10911".into(),
        reconsume_times: (h >> 5) as u32 % 3,
        producer: (h & 0x80 != 0).then(|| ProducerStamp {
            producer_id: format!("p-{}", h % 7),
            sequence: n,
        }),
    }
}

/// Appends `drafts` as the records of Raft entry (term 1, `index`).
pub fn append(store: &MessageStore, index: u64, drafts: &[MessageDraft]) -> Vec<Appended> {
    let inputs: Vec<RecordInput<'_>> = drafts.iter().map(RecordInput::Message).collect();
    store
        .append_entry(RaftLogRef { term: 1, index }, &inputs)
        .expect("appending a valid entry")
}

/// The message `draft`, appended at `appended` by Raft entry `raft`, must read back as.
pub fn expected_message(
    draft: &MessageDraft,
    appended: &Appended,
    raft: RaftLogRef,
) -> StoredMessage {
    StoredMessage {
        topic: draft.topic.clone(),
        queue_id: draft.queue_id,
        queue_offset: appended.queue_offset,
        commit_log_offset: appended.commit_log_offset,
        size: appended.size,
        msg_id: draft.msg_id,
        body: draft.body.clone(),
        binary_body: draft.binary_body,
        tags: draft.tags.clone(),
        keys: draft.keys.clone(),
        properties: draft.properties.clone(),
        born_timestamp_ms: draft.born_timestamp_ms,
        store_timestamp_ms: appended.store_timestamp_ms,
        born_host: draft.born_host.clone(),
        reconsume_times: draft.reconsume_times,
        producer: draft.producer.clone(),
        raft,
    }
}

/// The CommitLog file starting at global offset `start`.
pub fn commit_log_file(config: &StoreConfig, start: u64) -> PathBuf {
    config.commit_log_dir().join(file_name(start))
}

/// The CommitLog files on disk, oldest first, with their start offsets.
pub fn commit_log_files(config: &StoreConfig) -> Vec<(u64, PathBuf)> {
    files_by_offset(&config.commit_log_dir())
}

/// The offset-named data files of a directory, by start offset.
pub fn files_by_offset(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("listing a store directory")
        .filter_map(|entry| {
            let entry = entry.expect("reading a directory entry");
            let name = entry.file_name().to_str()?.to_string();
            (name.len() == 20)
                .then(|| name.parse::<u64>().ok())
                .flatten()
                .map(|start| (start, entry.path()))
        })
        .collect();
    files.sort();
    files
}

/// Overwrites bytes of a closed store's file at `pos` (relative to the file start).
pub fn write_at(path: &Path, pos: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("opening a store file to damage it");
    file.write_all_at(bytes, pos)
        .expect("writing damage into a store file");
    file.sync_all().expect("syncing a damaged store file");
}

/// Reads `len` bytes of a closed store's file at `pos`.
pub fn read_at(path: &Path, pos: u64, len: usize) -> Vec<u8> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .expect("opening a store file to read it");
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)
        .expect("reading a store file");
    buf
}

/// Flips every bit of the byte at `pos` of a closed store's file.
pub fn flip_byte(path: &Path, pos: u64) {
    let old = read_at(path, pos, 1)[0];
    write_at(path, pos, &[!old]);
}

/// Zeroes `[from, to)` of a closed store's file.
pub fn zero_range(path: &Path, from: u64, to: u64) {
    let len = usize::try_from(to - from).expect("a range within one file");
    write_at(path, from, &vec![0u8; len]);
}

/// One past the last non-zero byte of the file at or after `from` (relative to the file
/// start), or `from` if there is none: what recovery counts as written.
pub fn written_extent(path: &Path, from: u64) -> u64 {
    let bytes = fs::read(path).expect("reading a store file");
    let from = usize::try_from(from).expect("a position within one file");
    bytes[from.min(bytes.len())..]
        .iter()
        .rposition(|b| *b != 0)
        .map_or(from as u64, |last| (from + last + 1) as u64)
}

/// A message the test appended, and where the store said it landed.
#[derive(Clone, Debug)]
pub struct Sent {
    pub raft: RaftLogRef,
    pub draft: MessageDraft,
    pub appended: Appended,
}

impl Sent {
    /// What the store must return for this message.
    pub fn expected(&self) -> StoredMessage {
        expected_message(&self.draft, &self.appended, self.raft)
    }
}

/// Appends `drafts` as Raft entry (term 1, `index`) and returns what was sent.
pub fn append_sent(store: &MessageStore, index: u64, drafts: Vec<MessageDraft>) -> Vec<Sent> {
    let appended = append(store, index, &drafts);
    assert_eq!(appended.len(), drafts.len(), "one Appended per record");
    let raft = RaftLogRef { term: 1, index };
    drafts
        .into_iter()
        .zip(appended)
        .map(|(draft, appended)| Sent {
            raft,
            draft,
            appended,
        })
        .collect()
}

/// Checks that each queue holding one of `sent` holds exactly those messages, in
/// order, from queue offset 0 (no retention has run), reading them back by pull, by
/// CommitLog offset and by id.
pub fn assert_store_holds(store: &MessageStore, sent: &[Sent]) {
    let mut queues: BTreeMap<(String, QueueId), Vec<&Sent>> = BTreeMap::new();
    for s in sent {
        queues
            .entry((s.draft.topic.clone(), s.draft.queue_id))
            .or_default()
            .push(s);
    }
    for ((topic, queue_id), expected) in &queues {
        let count = expected.len() as u64;
        assert_eq!(
            store.queue_offsets(topic, *queue_id),
            Some((QueueOffset(0), QueueOffset(count))),
            "offsets of queue {topic}:{queue_id}"
        );
        let pulled = pull_all(store, topic, *queue_id, QueueOffset(0));
        assert_eq!(
            pulled.len(),
            expected.len(),
            "messages pulled from queue {topic}:{queue_id}"
        );
        for (i, (got, want)) in pulled.iter().zip(expected).enumerate() {
            assert_eq!(
                *got,
                want.expected(),
                "message {i} of queue {topic}:{queue_id}"
            );
        }
    }
    for s in sent {
        let at = store
            .message_at(s.appended.commit_log_offset)
            .expect("reading a kept message by its CommitLog offset");
        assert_eq!(
            at,
            s.expected(),
            "message at {}",
            s.appended.commit_log_offset
        );
        let by_id = store.message_by_id(&s.draft.msg_id);
        assert_eq!(
            by_id.as_ref(),
            Some(&at),
            "message with id {}",
            s.draft.msg_id
        );
    }
}

/// Every message of a queue from `from` to its end, pulling in rounds as a consumer
/// would.
pub fn pull_all(
    store: &MessageStore,
    topic: &str,
    queue_id: QueueId,
    from: QueueOffset,
) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = store
            .pull(topic, queue_id, offset, 256, &TagFilter::All)
            .expect("pulling a queue");
        match result.status {
            PullStatus::Found => {
                assert!(
                    result.next_offset > offset,
                    "pull from {offset} did not advance"
                );
                out.extend(result.messages);
                offset = result.next_offset;
            }
            PullStatus::NoNewMsg => return out,
            other => panic!("pull of {topic}:{queue_id} at {offset} returned {other:?}"),
        }
    }
}

/// What recovery must count as dropped when it truncates the CommitLog at `end`: the
/// written bytes from `end` on, in the file holding it and every later file.
pub fn expected_truncated_bytes(config: &StoreConfig, end: u64) -> u64 {
    commit_log_files(config)
        .iter()
        .filter(|(start, _)| start + config.commit_log_file_size_bytes > end)
        .map(|(start, path)| {
            let from = end.saturating_sub(*start);
            written_extent(path, from) - from
        })
        .sum()
}

/// The encoded size of `draft`'s record, from the format's own `encoded_len`.
pub fn encoded_size(draft: &MessageDraft) -> u32 {
    let content = draft.record_content();
    let len = broker_store::record::encoded_len(&content).expect("a valid draft");
    u32::try_from(len).expect("records are smaller than 4 GiB")
}
