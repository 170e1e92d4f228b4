//! Random sequences of store operations agree with a simple in-memory model.
//!
//! # How
//!
//! proptest generates sequences of up to 200 operations and runs each against a fresh
//! store (32 KiB CommitLog files, 8-unit ConsumeQueue files, 32-entry index files with
//! 8 hash slots, a scan limit of 12 units per pull, `file_reserved_ms` = one hour, so a
//! few hundred messages roll files of every kind) and against a model: the
//! list of records in append order and, per queue, the list of its messages. The
//! model predicts independently every number the store hands out or reports:
//!
//! * appends — entries of 1–6 records (messages over three topics, one with a
//!   127-byte name, and three queue ids; random tags, keys, properties, producer
//!   stamps, bodies from empty to ~11 KiB; control records), proposed
//!   store times that sometimes go backwards: each `Appended` (CommitLog offset, size,
//!   queue offset, store time raised to stay monotonic) and the tail's Raft id;
//! * refused appends — an entry with one oversized, empty-topic or 128-byte-topic
//!   message: an error, and nothing of the entry stored;
//! * flush; close + reopen; drop without close + reopen — the recovery report (clean
//!   or not, nothing truncated, nothing rebuilt) and the CommitLog end;
//! * pulls from random offsets (below the minimum, at and beyond the end, anywhere
//!   between) with random tag filters and batch sizes: status, next/min/max offsets
//!   and every message, field by field;
//! * `message_at` message starts, offsets inside records and past the end;
//!   `message_by_id`; `messages_by_key` over random time windows;
//!   `offset_by_timestamp`;
//! * `run_retention` at a random store time plus an hour, or far in the future: the
//!   new CommitLog minimum (files expire by their successor's first store time, never
//!   the last file), queue minimums, and from then on `OffsetTooSmall`,
//!   `CommitLogOffsetTooSmall` and queries that no longer see deleted messages.
//!
//! Each case ends with a full comparison: every queue pulled from its minimum, and a
//! scan of every record kept. `STORE_MODEL_CASES` sets the number of cases (default
//! 256).

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use broker_store::record::{encoded_len, RecordContent, RecordKind};
use broker_store::{
    Appended, CommitLogOffset, MessageDraft, MessageId, MessageStore, ProducerStamp, PullStatus,
    QueueId, QueueOffset, RaftLogRef, RecordInput, StoreConfig, StoreError, StoredMessage,
    TagFilter,
};
use common::{body_bytes, message_id, test_config};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

const QUEUE_IDS: [u32; 3] = [0, 1, 7];
const TAGS: [&str; 4] = ["", "A", "B", "C"];
const FILTERS: [&str; 4] = ["*", "A", "B", "A||C"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const HOUR_MS: u64 = 3_600_000;
const SCAN_UNITS: usize = 12;

/// Topic `i`; topic 2 has the longest name allowed, topic 3 is never written.
fn topic(i: usize) -> String {
    match i {
        0 => "t0".into(),
        1 => "t1".into(),
        2 => "x".repeat(127),
        _ => "never-written".into(),
    }
}

/// One record of an entry to append.
#[derive(Clone, Debug)]
enum Rec {
    Message {
        topic: usize,
        queue: usize,
        tag: usize,
        /// Bit `k` set: the message has key `KEYS[k]`.
        keys: u8,
        body_len: usize,
        /// Added to the model's clock to propose this record's store time.
        ts_step: i64,
        /// Bit 0: binary body; bit 1: producer stamp; bit 2: a property.
        flags: u8,
    },
    Control {
        len: usize,
        ts_step: i64,
    },
}

/// Why an entry must be refused.
#[derive(Clone, Copy, Debug)]
enum Invalid {
    TooLarge,
    EmptyTopic,
    TopicTooLong,
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Rec>),
    /// The records, with the message at `at % len` made invalid.
    AppendInvalid(Vec<Rec>, Invalid, usize),
    Flush,
    CloseReopen,
    DropReopen,
    Pull {
        topic: usize,
        queue: usize,
        pick: u8,
        raw: u64,
        max: usize,
        filter: usize,
    },
    ById(u64),
    ByKey {
        topic: usize,
        key: usize,
        window: u8,
        raw: u64,
        max: usize,
    },
    ByTimestamp {
        topic: usize,
        queue: usize,
        raw: u64,
        shift: i8,
    },
    MessageAt {
        raw: u64,
        mode: u8,
    },
    Retention {
        raw: u64,
        far: bool,
    },
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    let body_len = prop_oneof![
        12 => 0usize..200,
        3 => 500usize..3_000,
        1 => 5_000usize..11_500,
    ];
    let ts_step = prop_oneof![
        8 => 0i64..600_000,
        1 => -2_000_000i64..0,
    ];
    prop_oneof![
        9 => (0usize..3, 0usize..3, 0usize..4, 0u8..16, body_len, ts_step.clone(), 0u8..8)
            .prop_map(|(topic, queue, tag, keys, body_len, ts_step, flags)| Rec::Message {
                topic, queue, tag, keys, body_len, ts_step, flags,
            }),
        1 => (0usize..300, ts_step).prop_map(|(len, ts_step)| Rec::Control { len, ts_step }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => vec(rec_strategy(), 1..7).prop_map(Op::Append),
        2 => (
            vec(rec_strategy(), 1..4),
            prop_oneof![
                Just(Invalid::TooLarge),
                Just(Invalid::EmptyTopic),
                Just(Invalid::TopicTooLong)
            ],
            any::<usize>()
        ).prop_map(|(recs, why, at)| Op::AppendInvalid(recs, why, at)),
        4 => Just(Op::Flush),
        3 => Just(Op::CloseReopen),
        3 => Just(Op::DropReopen),
        20 => (0usize..4, 0usize..3, 0u8..8, any::<u64>(), 0usize..20, 0usize..4)
            .prop_map(|(topic, queue, pick, raw, max, filter)| Op::Pull {
                topic, queue, pick, raw, max, filter,
            }),
        5 => any::<u64>().prop_map(Op::ById),
        5 => (0usize..4, 0usize..4, 0u8..3, any::<u64>(), 1usize..8)
            .prop_map(|(topic, key, window, raw, max)| Op::ByKey { topic, key, window, raw, max }),
        4 => (0usize..4, 0usize..3, any::<u64>(), -1i8..=1)
            .prop_map(|(topic, queue, raw, shift)| Op::ByTimestamp { topic, queue, raw, shift }),
        5 => (any::<u64>(), 0u8..4).prop_map(|(raw, mode)| Op::MessageAt { raw, mode }),
        3 => (any::<u64>(), any::<bool>()).prop_map(|(raw, far)| Op::Retention { raw, far }),
    ]
}

/// A record the model knows of.
#[derive(Clone, Debug)]
struct ModelRecord {
    offset: u64,
    size: u32,
    store_ms: u64,
    /// Index into `Model::messages`, or the control payload.
    content: Result<usize, Vec<u8>>,
}

/// What the store must hold.
struct Model {
    file_size: u64,
    max_message_bytes: u64,
    reserved_ms: u64,
    /// CommitLog end and minimum.
    end: u64,
    min: u64,
    /// Drives proposed store times; the store keeps the maximum so far.
    clock: u64,
    last_store_ms: u64,
    tail: Option<RaftLogRef>,
    next_index: u64,
    next_message: u64,
    records: Vec<ModelRecord>,
    messages: Vec<StoredMessage>,
    /// Per (topic, queue id): indexes into `messages`, in queue-offset order.
    queues: BTreeMap<(String, u32), Vec<usize>>,
}

/// An input for `append_entry`, owned.
enum Input {
    Message(MessageDraft),
    Control { payload: Vec<u8>, store_ms: u64 },
}

impl Model {
    fn new(config: &StoreConfig) -> Self {
        Self {
            file_size: config.commit_log_file_size_bytes,
            max_message_bytes: config.max_message_size_bytes,
            reserved_ms: config.file_reserved_ms,
            end: 0,
            min: 0,
            clock: 1_700_000_000_000,
            last_store_ms: 0,
            tail: None,
            next_index: 0,
            next_message: 0,
            records: Vec::new(),
            messages: Vec::new(),
            queues: BTreeMap::new(),
        }
    }

    /// The inputs for `recs`, with proposed store times from the clock.
    fn inputs(&mut self, recs: &[Rec]) -> Vec<Input> {
        recs.iter()
            .map(|rec| match rec {
                Rec::Message {
                    topic: t,
                    queue,
                    tag,
                    keys,
                    body_len,
                    ts_step,
                    flags,
                } => {
                    self.clock = self.clock.saturating_add_signed(*ts_step);
                    let n = self.next_message;
                    self.next_message += 1;
                    Input::Message(MessageDraft {
                        topic: topic(*t),
                        queue_id: QueueId(QUEUE_IDS[*queue]),
                        msg_id: message_id(n),
                        body: body_bytes(n, *body_len),
                        binary_body: flags & 1 != 0,
                        tags: TAGS[*tag].to_string(),
                        keys: (0..4)
                            .filter(|k| keys & (1 << k) != 0)
                            .map(|k| KEYS[k].to_string())
                            .collect(),
                        properties: if flags & 4 != 0 {
                            BTreeMap::from([("n".to_string(), n.to_string())])
                        } else {
                            BTreeMap::new()
                        },
                        born_timestamp_ms: n,
                        store_timestamp_ms: self.clock,
                        born_host: "10.0.0.1:1".into(),
                        reconsume_times: u32::from(*flags),
                        producer: (flags & 2 != 0).then(|| ProducerStamp {
                            producer_id: format!("p{}", n % 3),
                            sequence: n,
                        }),
                    })
                }
                Rec::Control { len, ts_step } => {
                    self.clock = self.clock.saturating_add_signed(*ts_step);
                    Input::Control {
                        payload: body_bytes(u64::MAX - self.next_message, *len),
                        store_ms: self.clock,
                    }
                }
            })
            .collect()
    }

    /// The encoded size of an input.
    fn size_of(input: &Input) -> usize {
        let empty = BTreeMap::new();
        let content = match input {
            Input::Message(d) => RecordContent {
                topic: &d.topic,
                producer_id: d.producer.as_ref().map_or("", |p| p.producer_id.as_str()),
                born_host: &d.born_host,
                tags: &d.tags,
                keys: &d.keys,
                properties: &d.properties,
                body: &d.body,
            },
            Input::Control { payload, .. } => RecordContent {
                topic: "",
                producer_id: "",
                born_host: "",
                tags: "",
                keys: &[],
                properties: &empty,
                body: payload,
            },
        };
        encoded_len(&content).expect("valid inputs have an encoded size")
    }

    /// Appends a valid entry to the model; returns what `append_entry` must return.
    fn append(&mut self, raft: RaftLogRef, inputs: &[Input]) -> Vec<Appended> {
        let mut out = Vec::new();
        for input in inputs {
            let size = Self::size_of(input) as u64;
            let file_end = (self.end / self.file_size + 1) * self.file_size;
            if self.end + size + 8 > file_end {
                self.end = file_end; // the rest of the file becomes a blank record
            }
            let offset = self.end;
            self.end += size;
            let (proposed, queue) = match input {
                Input::Message(d) => (d.store_timestamp_ms, Some((d.topic.clone(), d.queue_id.0))),
                Input::Control { store_ms, .. } => (*store_ms, None),
            };
            self.last_store_ms = self.last_store_ms.max(proposed);
            let mut appended = Appended {
                commit_log_offset: CommitLogOffset(offset),
                size: size as u32,
                queue_id: QueueId(0),
                queue_offset: QueueOffset(0),
                store_timestamp_ms: self.last_store_ms,
            };
            let content = match (input, queue) {
                (Input::Message(d), Some(key)) => {
                    let queue_offset = self.queues.get(&key).map_or(0, Vec::len) as u64;
                    appended.queue_id = d.queue_id;
                    appended.queue_offset = QueueOffset(queue_offset);
                    self.messages
                        .push(common::expected_message(d, &appended, raft));
                    Ok(self.messages.len() - 1)
                }
                (Input::Control { payload, .. }, _) => Err(payload.clone()),
                (Input::Message(_), None) => unreachable!("messages have queues"),
            };
            if let Ok(index) = content {
                let m = &self.messages[index];
                self.queues
                    .entry((m.topic.clone(), m.queue_id.0))
                    .or_default()
                    .push(index);
            }
            self.records.push(ModelRecord {
                offset,
                size: size as u32,
                store_ms: self.last_store_ms,
                content,
            });
            out.push(appended);
        }
        self.tail = Some(raft);
        out
    }

    /// Queue (min, max) offsets; `None` for a queue never written.
    fn queue_offsets(&self, topic: &str, queue: u32) -> Option<(u64, u64)> {
        let list = self.queues.get(&(topic.to_string(), queue))?;
        let below = list
            .iter()
            .filter(|i| self.messages[**i].commit_log_offset.0 < self.min)
            .count();
        Some((below as u64, list.len() as u64))
    }

    /// The CommitLog minimum after `run_retention(now)`: files expire by their
    /// successor's first store time; the last file stays.
    fn retention_min(&self, now: u64) -> u64 {
        if self.end == 0 {
            return self.min;
        }
        let last_file = (self.end - 1) / self.file_size;
        let mut min = self.min;
        for next_file in (self.min / self.file_size + 1)..=last_file {
            let start = next_file * self.file_size;
            let first_ms = self
                .records
                .iter()
                .find(|r| r.offset >= start)
                .map(|r| r.store_ms)
                .expect("every file holds a record");
            if first_ms.saturating_add(self.reserved_ms) < now {
                min = start;
            } else {
                break;
            }
        }
        min
    }
}

/// Compares two messages field by field, naming the first difference briefly
/// (bodies can be kilobytes long).
fn same_message(
    got: &StoredMessage,
    want: &StoredMessage,
    what: &str,
) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    let body = if got.body == want.body {
        "equal".to_string()
    } else {
        format!(
            "{} vs {} bytes, first difference at {:?}",
            got.body.len(),
            want.body.len(),
            got.body.iter().zip(&want.body).position(|(a, b)| a != b)
        )
    };
    let (mut g, mut w) = (got.clone(), want.clone());
    g.body.clear();
    w.body.clear();
    Err(TestCaseError::fail(format!(
        "{what}: messages differ (bodies {body})\n got: {g:?}\nwant: {w:?}"
    )))
}

/// The store under test and its model.
struct Harness {
    _dir: tempfile::TempDir,
    config: StoreConfig,
    store: Option<MessageStore>,
    model: Model,
}

impl Harness {
    fn new() -> Self {
        let dir = common::fast_tempdir();
        let mut config = test_config(dir.path());
        config.file_reserved_ms = HOUR_MS;
        config.pull_max_scan_units = SCAN_UNITS;
        // Small files of every kind, so that a few hundred messages roll them all.
        config.commit_log_file_size_bytes = 32 * 1024;
        config.max_message_size_bytes = 12 * 1024;
        config.consume_queue_units_per_file = 8;
        config.index_slot_count = 8;
        config.index_max_entries = 32;
        let (store, _) =
            MessageStore::open_without_background(config.clone()).expect("opening a new store");
        Self {
            model: Model::new(&config),
            config,
            store: Some(store),
            _dir: dir,
        }
    }

    fn store(&self) -> &MessageStore {
        self.store
            .as_ref()
            .expect("the store is open between operations")
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(recs) => self.append(recs),
            Op::AppendInvalid(recs, why, at) => self.append_invalid(recs, *why, *at),
            Op::Flush => {
                let flushed = self.store().flush().map_err(fail)?;
                prop_assert_eq!(flushed, CommitLogOffset(self.model.end));
                prop_assert_eq!(
                    self.store().flushed_commit_log_offset(),
                    CommitLogOffset(self.model.end)
                );
                Ok(())
            }
            Op::CloseReopen | Op::DropReopen => {
                let clean = matches!(op, Op::CloseReopen);
                let store = self.store.take().expect("the store is open");
                if clean {
                    store.close().map_err(fail)?;
                } else {
                    drop(store);
                }
                let (store, report) =
                    MessageStore::open_without_background(self.config.clone()).map_err(fail)?;
                prop_assert_eq!(report.clean_shutdown, clean, "{:?}", report);
                prop_assert_eq!(report.commit_log.truncated_bytes, 0, "{:?}", report);
                prop_assert!(report.queues_rebuilt.is_empty(), "{:?}", report);
                prop_assert_eq!(report.commit_log.end, CommitLogOffset(self.model.end));
                self.store = Some(store);
                self.check_positions()
            }
            Op::Pull {
                topic: t,
                queue,
                pick,
                raw,
                max,
                filter,
            } => self.pull(&topic(*t), QUEUE_IDS[*queue], *pick, *raw, *max, *filter),
            Op::ById(raw) => {
                let count = self.model.messages.len() as u64;
                if count == 0 || raw % 8 == 0 {
                    let unknown = MessageId([0xEE; 16]);
                    prop_assert_eq!(self.store().message_by_id(&unknown), None);
                    return Ok(());
                }
                let m = &self.model.messages[(raw % count) as usize];
                let found = self.store().message_by_id(&m.msg_id);
                if m.commit_log_offset.0 < self.model.min {
                    prop_assert!(found.is_none(), "deleted message {} found by id", m.msg_id);
                } else {
                    let found = found.ok_or_else(|| {
                        TestCaseError::fail(format!("message {} not found by id", m.msg_id))
                    })?;
                    same_message(&found, m, "message_by_id")?;
                }
                Ok(())
            }
            Op::ByKey {
                topic: t,
                key,
                window,
                raw,
                max,
            } => self.by_key(&topic(*t), KEYS[*key], *window, *raw, *max),
            Op::ByTimestamp {
                topic: t,
                queue,
                raw,
                shift,
            } => {
                let (topic, queue) = (topic(*t), QUEUE_IDS[*queue]);
                let target = match self.model.records.len() as u64 {
                    0 => *raw,
                    n => self.model.records[(raw % n) as usize]
                        .store_ms
                        .saturating_add_signed(i64::from(*shift)),
                };
                let expected = match (
                    self.model.queue_offsets(&topic, queue),
                    self.model.queues.get(&(topic.clone(), queue)),
                ) {
                    (Some((min, max)), Some(list)) => (min..max)
                        .find(|qo| {
                            self.model.messages[list[*qo as usize]].store_timestamp_ms >= target
                        })
                        .unwrap_or(max),
                    _ => 0,
                };
                prop_assert_eq!(
                    self.store()
                        .offset_by_timestamp(&topic, QueueId(queue), target),
                    QueueOffset(expected),
                    "offset_by_timestamp({}:{}, {})",
                    topic,
                    queue,
                    target
                );
                Ok(())
            }
            Op::MessageAt { raw, mode } => self.message_at(*raw, *mode),
            Op::Retention { raw, far } => {
                let now = if *far || self.model.records.is_empty() {
                    u64::MAX / 4
                } else {
                    let n = self.model.records.len() as u64;
                    let base = self.model.records[(raw % n) as usize].store_ms;
                    (base + self.model.reserved_ms + (raw >> 32) % 3).saturating_sub(1)
                };
                let expected_min = self.model.retention_min(now);
                let report = self.store().run_retention(now).map_err(fail)?;
                let deleted = (expected_min - self.model.min) / self.model.file_size;
                prop_assert_eq!(
                    report.commit_log_files_deleted.len() as u64,
                    deleted,
                    "files deleted by retention at {}",
                    now
                );
                self.model.min = expected_min;
                self.check_positions()
            }
        }
    }

    fn append(&mut self, recs: &[Rec]) -> Result<(), TestCaseError> {
        let inputs = self.model.inputs(recs);
        self.model.next_index += 1;
        let raft = RaftLogRef {
            term: 1 + self.model.next_index / 10,
            index: self.model.next_index,
        };
        let records: Vec<RecordInput<'_>> = inputs
            .iter()
            .map(|input| match input {
                Input::Message(d) => RecordInput::Message(d),
                Input::Control { payload, store_ms } => RecordInput::Control {
                    payload,
                    store_timestamp_ms: *store_ms,
                },
            })
            .collect();
        let got = self.store().append_entry(raft, &records).map_err(fail)?;
        let want = self.model.append(raft, &inputs);
        prop_assert_eq!(got, want, "append of entry {}", raft);
        let tail = self.store().tail();
        prop_assert_eq!(tail.last_raft, Some(raft));
        prop_assert_eq!(tail.last_store_timestamp_ms, self.model.last_store_ms);
        prop_assert_eq!(
            self.store().max_commit_log_offset(),
            CommitLogOffset(self.model.end)
        );
        Ok(())
    }

    fn append_invalid(
        &mut self,
        recs: &[Rec],
        why: Invalid,
        at: usize,
    ) -> Result<(), TestCaseError> {
        let (end, tail) = (self.model.end, self.store().tail());
        let mut inputs = self.model.inputs(recs);
        let messages: Vec<usize> = inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, Input::Message(_)))
            .map(|(i, _)| i)
            .collect();
        let Some(victim) = messages.get(at % messages.len().max(1)).copied() else {
            return Ok(()); // only control records: nothing to make invalid
        };
        let Input::Message(d) = &mut inputs[victim] else {
            unreachable!("picked a message");
        };
        match why {
            Invalid::TooLarge => d.body = vec![1; self.model.max_message_bytes as usize],
            Invalid::EmptyTopic => d.topic.clear(),
            Invalid::TopicTooLong => d.topic = "y".repeat(128),
        }
        let records: Vec<RecordInput<'_>> = inputs
            .iter()
            .map(|input| match input {
                Input::Message(d) => RecordInput::Message(d),
                Input::Control { payload, store_ms } => RecordInput::Control {
                    payload,
                    store_timestamp_ms: *store_ms,
                },
            })
            .collect();
        let raft = RaftLogRef {
            term: 1 + (self.model.next_index + 1) / 10,
            index: self.model.next_index + 1,
        };
        match (why, self.store().append_entry(raft, &records)) {
            (Invalid::TooLarge, Err(StoreError::MessageTooLarge { .. }))
            | (Invalid::EmptyTopic | Invalid::TopicTooLong, Err(StoreError::InvalidMessage(_))) => {
            }
            (_, other) => {
                return Err(TestCaseError::fail(format!(
                    "an entry with a {why:?} message returned {other:?}"
                )))
            }
        }
        prop_assert_eq!(self.store().max_commit_log_offset(), CommitLogOffset(end));
        prop_assert_eq!(self.store().tail(), tail);
        self.check_positions()
    }

    fn pull(
        &self,
        topic: &str,
        queue: u32,
        pick: u8,
        raw: u64,
        max_messages: usize,
        filter: usize,
    ) -> Result<(), TestCaseError> {
        let offsets = self.model.queue_offsets(topic, queue);
        let (min, max) = offsets.unwrap_or((0, 0));
        let offset = match pick {
            0 => min,
            1 => min.saturating_sub(1 + raw % 3),
            2 => max,
            3 => max + 1 + raw % 3,
            _ => min + raw % (max - min + 1),
        };
        let tag_filter = TagFilter::parse(FILTERS[filter]).map_err(TestCaseError::fail)?;
        let result = self
            .store()
            .pull(
                topic,
                QueueId(queue),
                QueueOffset(offset),
                max_messages,
                &tag_filter,
            )
            .map_err(fail)?;
        let what = format!(
            "pull({topic}:{queue} at {offset}, max {max_messages}, filter {})",
            FILTERS[filter]
        );

        let (status, next, messages): (PullStatus, u64, Vec<&StoredMessage>) = match offsets {
            None => (
                if offset == 0 {
                    PullStatus::NoNewMsg
                } else {
                    PullStatus::OffsetOverflow
                },
                0,
                Vec::new(),
            ),
            Some(_) if offset < min => (PullStatus::OffsetTooSmall, min, Vec::new()),
            Some(_) if offset == max => (PullStatus::NoNewMsg, offset, Vec::new()),
            Some(_) if offset > max => (PullStatus::OffsetOverflow, max, Vec::new()),
            Some(_) => {
                let list = &self.model.queues[&(topic.to_string(), queue)];
                let scan_limit = SCAN_UNITS.max(max_messages);
                let (mut next, mut scanned, mut out) = (offset, 0usize, Vec::new());
                if max_messages > 0 {
                    for qo in offset..max {
                        scanned += 1;
                        next = qo + 1;
                        let m = &self.model.messages[list[qo as usize]];
                        if tag_filter.matches(&m.tags) {
                            out.push(m);
                        }
                        if out.len() >= max_messages || scanned >= scan_limit {
                            break;
                        }
                    }
                }
                let status = if out.is_empty() {
                    PullStatus::NoMatchedMsg
                } else {
                    PullStatus::Found
                };
                (status, next, out)
            }
        };
        prop_assert_eq!(result.status, status, "{}", what);
        prop_assert_eq!(result.next_offset, QueueOffset(next), "{}", what);
        if offsets.is_some() {
            prop_assert_eq!(
                (result.min_offset, result.max_offset),
                (QueueOffset(min), QueueOffset(max)),
                "{}",
                what
            );
        }
        prop_assert_eq!(result.messages.len(), messages.len(), "{}", what);
        for (got, want) in result.messages.iter().zip(messages) {
            same_message(got, want, &what)?;
        }
        Ok(())
    }

    fn by_key(
        &self,
        topic: &str,
        key: &str,
        window: u8,
        raw: u64,
        max: usize,
    ) -> Result<(), TestCaseError> {
        let times: Vec<u64> = self
            .model
            .messages
            .iter()
            .map(|m| m.store_timestamp_ms)
            .collect();
        let pick = |r: u64| {
            times
                .get((r % times.len().max(1) as u64) as usize)
                .copied()
                .unwrap_or(0)
        };
        let (begin, end) = match window {
            0 => (0, u64::MAX),
            _ => {
                let (a, b) = (pick(raw), pick(raw >> 20));
                (a.min(b), a.max(b))
            }
        };
        let found = self.store().messages_by_key(topic, key, begin, end, max);
        let mut expected: Vec<&StoredMessage> = self
            .model
            .messages
            .iter()
            .filter(|m| {
                m.topic == topic
                    && m.commit_log_offset.0 >= self.model.min
                    && (begin..=end).contains(&m.store_timestamp_ms)
                    && m.keys.iter().any(|k| k == key)
            })
            .collect();
        expected.reverse(); // newest first
        expected.truncate(max);
        let what = format!("messages_by_key({topic}, {key}, [{begin}, {end}], max {max})");
        prop_assert_eq!(
            found
                .iter()
                .map(|m| m.commit_log_offset.0)
                .collect::<Vec<_>>(),
            expected
                .iter()
                .map(|m| m.commit_log_offset.0)
                .collect::<Vec<_>>(),
            "{}",
            what
        );
        for (got, want) in found.iter().zip(expected) {
            same_message(got, want, &what)?;
        }
        Ok(())
    }

    fn message_at(&self, raw: u64, mode: u8) -> Result<(), TestCaseError> {
        let n = self.model.records.len() as u64;
        if n == 0 || mode == 3 {
            let at = CommitLogOffset(self.model.end + raw % 100);
            match self.store().message_at(at) {
                Err(StoreError::CommitLogOffsetOverflow { requested, max }) => {
                    prop_assert_eq!((requested, max), (at, CommitLogOffset(self.model.end)));
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "message_at({at}) past the end returned {other:?}"
                    )))
                }
            }
            return Ok(());
        }
        let record = &self.model.records[(raw % n) as usize];
        let inside = mode == 2 && record.size > 1;
        let at = CommitLogOffset(
            record.offset
                + if inside {
                    1 + (raw >> 32) % u64::from(record.size - 1)
                } else {
                    0
                },
        );
        let got = self.store().message_at(at);
        if record.offset < self.model.min {
            prop_assert!(
                matches!(&got, Err(StoreError::CommitLogOffsetTooSmall { requested, min })
                    if *requested == at && *min == CommitLogOffset(self.model.min)),
                "message_at({}) of a deleted record returned {:?}",
                at,
                got
            );
            return Ok(());
        }
        if inside {
            prop_assert!(
                matches!(&got, Err(StoreError::BadRecord { offset, .. }) if *offset == at),
                "message_at({}) inside a record returned {:?}",
                at,
                got
            );
            return Ok(());
        }
        match &record.content {
            Ok(index) => {
                let found = got.map_err(fail)?;
                same_message(&found, &self.model.messages[*index], "message_at")?;
            }
            // A control record is not a message: reading it as one is refused.
            Err(_) => prop_assert!(
                matches!(&got, Err(StoreError::BadRecord { offset, .. }) if *offset == at),
                "message_at({}) of a control record returned {:?}",
                at,
                got
            ),
        }
        Ok(())
    }

    /// The positions every operation must leave in agreement.
    fn check_positions(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        prop_assert_eq!(
            store.max_commit_log_offset(),
            CommitLogOffset(self.model.end)
        );
        prop_assert_eq!(
            store.min_commit_log_offset(),
            CommitLogOffset(self.model.min)
        );
        prop_assert_eq!(store.tail().last_raft, self.model.tail);
        prop_assert_eq!(
            store.tail().last_store_timestamp_ms,
            self.model.last_store_ms
        );
        for (topic, queue) in self.model.queues.keys() {
            let (min, max) = self
                .model
                .queue_offsets(topic, *queue)
                .expect("a written queue");
            prop_assert_eq!(
                store.queue_offsets(topic, QueueId(*queue)),
                Some((QueueOffset(min), QueueOffset(max))),
                "offsets of {}:{}",
                topic,
                queue
            );
        }
        Ok(())
    }

    /// Everything, at the end of a case: every queue from its minimum, every record.
    fn check_all(&self) -> Result<(), TestCaseError> {
        self.check_positions()?;
        let store = self.store();
        for ((topic, queue), list) in &self.model.queues {
            let (min, _) = self
                .model
                .queue_offsets(topic, *queue)
                .expect("a written queue");
            let pulled = common::pull_all(store, topic, QueueId(*queue), QueueOffset(min));
            prop_assert_eq!(
                pulled.len(),
                list.len() - min as usize,
                "{}:{}",
                topic,
                queue
            );
            for (got, index) in pulled.iter().zip(&list[min as usize..]) {
                same_message(got, &self.model.messages[*index], "final pull")?;
            }
        }
        let mut scanned = Vec::new();
        store
            .scan(
                CommitLogOffset(self.model.min),
                CommitLogOffset(self.model.end),
                |view| {
                    scanned.push((
                        view.meta.physical_offset.0,
                        view.meta.kind,
                        StoredMessage::from_view(&view),
                    ));
                    Ok(ControlFlow::Continue(()))
                },
            )
            .map_err(fail)?;
        let kept: Vec<&ModelRecord> = self
            .model
            .records
            .iter()
            .filter(|r| r.offset >= self.model.min)
            .collect();
        prop_assert_eq!(scanned.len(), kept.len(), "records scanned");
        for ((offset, kind, got), want) in scanned.iter().zip(kept) {
            prop_assert_eq!(*offset, want.offset);
            match &want.content {
                Ok(index) => {
                    prop_assert_eq!(*kind, RecordKind::Message);
                    same_message(got, &self.model.messages[*index], "scan")?;
                }
                Err(payload) => {
                    prop_assert_eq!(*kind, RecordKind::Control);
                    prop_assert_eq!(&got.body, payload);
                    prop_assert_eq!(got.store_timestamp_ms, want.store_ms);
                }
            }
        }
        Ok(())
    }
}

fn fail(e: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("store error: {e}"))
}

fn config() -> Config {
    let cases = std::env::var("STORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // Failures print the minimal operation sequence; no regression files in the
        // source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random operation sequences: every result agrees with the model.
    #[test]
    fn store_agrees_with_model(ops in vec(op_strategy(), 1..200)) {
        let mut harness = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            harness
                .run(op)
                .map_err(|e| TestCaseError::fail(format!("operation {i} ({op:?}): {e}")))?;
        }
        harness.check_all()?;
        if let Some(store) = harness.store.take() {
            store.close().map_err(fail)?;
        }
    }
}
