//! Timer messages (`deliver_at` / `delay_ms` on send): what is replicated, and the
//! index each replica keeps of what is due when (RocketMQ 5's RIP-43 timer log and
//! time wheel).
//!
//! A timer message is stored in the timer topic ([`TIMER_TOPIC`], one queue, in
//! arrival order) with its real topic, queue and due time in properties, as a
//! delayed message is in the schedule topic. Unlike delay levels, the queue is not
//! in due order, so each replica indexes it:
//!
//! * the **timer log** — append-only segment files `timerlog/{position:020}` of
//!   32-byte records (little-endian):
//!
//!   ```text
//!    0  8  due_ms             u64  when the message is due
//!    8  8  queue_offset       u64  its offset in the timer topic's queue
//!   16  8  commit_log_offset  u64  where its record starts
//!   24  8  previous           u64  position of the slot's previous record (u64::MAX: none)
//!   ```
//!
//! * the **time wheel** — in memory, one slot per [`SLOT_MS`] of due time holding
//!   the position of its newest record (each record points to the one before it
//!   in the same slot) and a count. Memory holds the slots, not the timers: a week
//!   of 10-second slots is at most 60,480 of them, whatever the number of timers.
//!
//! Both are derived: rebuilt from the timer topic when the node starts and when it
//! installs a snapshot ([`TimerIndex::rebuild`]), never fsynced, readable by the
//! broker's user only (the files say which topics wait for what, not the bodies).
//!
//! **Exactly once.** Timers are delivered in [`TimerKey`] order (due time, then
//! queue offset). The group state holds the key up to which every timer was moved
//! to its topic ([`TimerState::delivered`]); the leader proposes the next due run
//! as one [`DeliverTimersCommand`] from that key to the last key it moves, and
//! apply accepts it only from the current key — a retried proposal or a new
//! leader's stale plan changes nothing. A timer stored after the plan was read
//! but before it applies, due inside the run, would be passed over: apply refuses
//! such a run (`through`), and the leader reads again. A timer whose time the
//! delivered key already passed when its send applies (it was in flight while a
//! run was read and applied) would sort below the delivered key, where no run
//! looks: apply stores it due at the delivered key's time instead, so the next
//! run takes it — late by the time it spent in flight, never early.
//!
//! **Retention.** A pending timer's record is in the CommitLog; retention keeps
//! every file from the oldest live timer-log segment's first record on
//! ([`TimerIndex::retention_floor`]), even under disk pressure, so a timer is never
//! lost to it — at the price of disk while long timers wait (rolling old timers
//! forward, as RocketMQ does, would lift that).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::storage::{MessageDraft, MessageStore, QueueId, QueueOffset, StoredMessage, TagFilter};
use crate::topic::TIMER_TOPIC;
use broker_proto::properties::{
    PROPERTY_DELIVER_TIME_MS, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC,
};

/// The timer topic's only queue.
pub const TIMER_QUEUE: QueueId = QueueId(0);

/// Bytes per timer-log record.
pub const RECORD_BYTES: u64 = 32;
/// Bytes per timer-log segment (a multiple of [`RECORD_BYTES`]): 262,144 timers.
pub const SEGMENT_BYTES: u64 = 8 << 20;
const _: () = assert!(SEGMENT_BYTES.is_multiple_of(RECORD_BYTES));
/// Width of a time-wheel slot.
pub const SLOT_MS: u64 = 10_000;
/// "No previous record" in a record's `previous`.
const NONE: u64 = u64::MAX;

/// Moves a draft into the timer topic: it will reach its topic and queue at
/// `due_ms` (the schedule topic's format: real topic, queue and due time in
/// properties).
pub fn schedule_timer(draft: &mut MessageDraft, due_ms: u64) {
    let properties = &mut draft.properties;
    properties.insert(PROPERTY_REAL_TOPIC.into(), draft.topic.clone());
    properties.insert(PROPERTY_REAL_QUEUE_ID.into(), draft.queue_id.0.to_string());
    properties.insert(PROPERTY_DELIVER_TIME_MS.into(), due_ms.to_string());
    draft.topic = TIMER_TOPIC.to_string();
    draft.queue_id = TIMER_QUEUE;
}

/// Moves the due time of a draft [`schedule_timer`] made.
pub fn reschedule_timer(draft: &mut MessageDraft, due_ms: u64) {
    draft
        .properties
        .insert(PROPERTY_DELIVER_TIME_MS.into(), due_ms.to_string());
}

/// When a timer draft is due; `None` for any other draft.
pub fn timer_due_ms(draft: &MessageDraft) -> Option<u64> {
    if draft.topic != TIMER_TOPIC {
        return None;
    }
    draft.properties.get(PROPERTY_DELIVER_TIME_MS)?.parse().ok()
}

/// When a stored scheduled (timer or delayed) message is due; `None` if it does
/// not say.
pub fn stored_due_ms(message: &StoredMessage) -> Option<u64> {
    message
        .properties
        .get(PROPERTY_DELIVER_TIME_MS)?
        .parse()
        .ok()
}

/// A timer's place in delivery order.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TimerKey {
    pub due_ms: u64,
    /// Its offset in the timer topic's queue.
    pub offset: u64,
}

/// The replicated progress of timer delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// Every timer whose key is at most this one was moved to its topic.
    pub delivered: TimerKey,
}

/// One indexed timer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimerEntry {
    pub key: TimerKey,
    pub commit_log_offset: u64,
}

impl TimerEntry {
    fn encode(&self, previous: u64) -> [u8; RECORD_BYTES as usize] {
        let mut buf = [0u8; RECORD_BYTES as usize];
        buf[0..8].copy_from_slice(&self.key.due_ms.to_le_bytes());
        buf[8..16].copy_from_slice(&self.key.offset.to_le_bytes());
        buf[16..24].copy_from_slice(&self.commit_log_offset.to_le_bytes());
        buf[24..32].copy_from_slice(&previous.to_le_bytes());
        buf
    }

    /// The entry and the position of the slot's previous record.
    fn decode(buf: &[u8; RECORD_BYTES as usize]) -> (Self, u64) {
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        let entry = Self {
            key: TimerKey {
                due_ms: word(0),
                offset: word(1),
            },
            commit_log_offset: word(2),
        };
        (entry, word(3))
    }
}

/// One wheel slot: its newest record, and how many it has.
#[derive(Copy, Clone, Debug)]
struct Slot {
    newest: u64,
    count: u64,
}

/// One timer-log file, holding positions `start..start + len`.
struct Segment {
    start: u64,
    file: Arc<File>,
    len: u64,
    /// The greatest key written to it: once delivered, the file goes.
    max_key: TimerKey,
    first_commit_log_offset: u64,
}

struct Inner {
    dir: PathBuf,
    /// Oldest first; each but the last holds exactly [`SEGMENT_BYTES`].
    segments: VecDeque<Segment>,
    wheel: BTreeMap<u64, Slot>,
    /// The position the next record gets.
    end: u64,
    /// One past the timer-topic offset of the newest indexed timer.
    indexed_to: u64,
    /// Timers indexed and not yet delivered.
    pending: u64,
}

/// The timer log and time wheel of one replica.
pub struct TimerIndex {
    inner: Mutex<Inner>,
}

/// What [`TimerIndex::due`] found.
#[derive(Debug, Default)]
pub struct DueTimers {
    /// In key order.
    pub entries: Vec<TimerEntry>,
    /// Every timer below this timer-topic offset was indexed when they were read.
    pub indexed_to: u64,
}

fn slot_of(due_ms: u64) -> u64 {
    due_ms / SLOT_MS
}

impl TimerIndex {
    /// An empty index in `dir` (created; whatever a previous run left there is
    /// deleted: the index is rebuilt from the timer topic).
    ///
    /// # Errors
    /// The directory cannot be cleared or created.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let index = Self {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                segments: VecDeque::new(),
                wheel: BTreeMap::new(),
                end: 0,
                indexed_to: 0,
                pending: 0,
            }),
        };
        index.lock().clear()?;
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes a timer just stored (apply, in queue order). A timer already
    /// indexed (a rebuild read it) is skipped.
    ///
    /// # Errors
    /// Writing the timer log failed.
    pub fn add(&self, entry: TimerEntry) -> io::Result<()> {
        self.lock().add(entry)
    }

    /// Up to `limit` timers after `after` in key order that are due at `now_ms`
    /// (read without holding up [`TimerIndex::add`]).
    ///
    /// # Errors
    /// Reading the timer log failed.
    pub fn due(&self, after: TimerKey, now_ms: u64, limit: usize) -> io::Result<DueTimers> {
        if now_ms < after.due_ms || limit == 0 {
            return Ok(DueTimers::default());
        }
        let (slots, segments, indexed_to) = {
            let inner = self.lock();
            let slots: Vec<Slot> = inner
                .wheel
                .range(slot_of(after.due_ms)..=slot_of(now_ms))
                .map(|(_, slot)| *slot)
                .collect();
            let segments: Vec<(u64, Arc<File>)> = inner
                .segments
                .iter()
                .map(|s| (s.start, Arc::clone(&s.file)))
                .collect();
            (slots, segments, inner.indexed_to)
        };
        let Some(&(first_start, _)) = segments.first() else {
            return Ok(DueTimers::default());
        };
        let mut entries = Vec::new();
        let mut buf = [0u8; RECORD_BYTES as usize];
        for slot in slots {
            let mut position = slot.newest;
            // Records in deleted segments were all delivered.
            while position != NONE && position >= first_start {
                let (start, file) = &segments[((position - first_start) / SEGMENT_BYTES) as usize];
                file.read_exact_at(&mut buf, position - start)?;
                let (entry, previous) = TimerEntry::decode(&buf);
                if entry.key > after && entry.key.due_ms <= now_ms {
                    entries.push(entry);
                }
                position = previous;
            }
            // Slots come in due order: later ones hold only later keys.
            if entries.len() >= limit {
                break;
            }
        }
        entries.sort_unstable_by_key(|e| e.key);
        entries.truncate(limit);
        Ok(DueTimers {
            entries,
            indexed_to,
        })
    }

    /// `count` timers up to `delivered` were moved to their topics: slots and
    /// segments holding only delivered timers go.
    ///
    /// # Errors
    /// Deleting a segment file failed.
    pub fn delivered(&self, delivered: TimerKey, count: u64) -> io::Result<()> {
        let mut inner = self.lock();
        inner.pending = inner.pending.saturating_sub(count);
        // A slot ending at or before the delivered due time holds only keys below it.
        let passed: Vec<u64> = inner
            .wheel
            .range(..slot_of(delivered.due_ms))
            .map(|(slot, _)| *slot)
            .collect();
        for slot in passed {
            inner.wheel.remove(&slot);
        }
        while inner.segments.len() > 1
            && inner
                .segments
                .front()
                .is_some_and(|s| s.max_key <= delivered)
        {
            if let Some(segment) = inner.segments.pop_front() {
                let path = segment_path(&inner.dir, segment.start);
                fs::remove_file(&path).or_else(ignore_missing)?;
            }
        }
        Ok(())
    }

    /// Timers indexed and not yet delivered.
    pub fn pending(&self) -> u64 {
        self.lock().pending
    }

    /// Bytes of timer log on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.len).sum()
    }

    /// The CommitLog offset below which no pending timer is stored (`None`: none
    /// pending): retention keeps everything from there.
    pub fn retention_floor(&self) -> Option<u64> {
        let inner = self.lock();
        if inner.pending == 0 {
            return None;
        }
        inner.segments.front().map(|s| s.first_commit_log_offset)
    }

    /// Empties the index and reads the timer topic's queue into it: every timer
    /// after `delivered`. Answers how many it indexed.
    ///
    /// # Errors
    /// Reading the store or writing the timer log failed.
    pub fn rebuild(&self, store: &MessageStore, delivered: TimerKey) -> io::Result<u64> {
        let mut inner = self.lock();
        inner.clear()?;
        let Some((min, max)) = store.queue_offsets(TIMER_TOPIC, TIMER_QUEUE) else {
            return Ok(0);
        };
        let mut offset = min;
        while offset < max {
            let page = store
                .pull(TIMER_TOPIC, TIMER_QUEUE, offset, 1024, &TagFilter::All)
                .map_err(io::Error::other)?;
            if page.messages.is_empty() {
                break;
            }
            for message in &page.messages {
                let Some(due_ms) = stored_due_ms(message) else {
                    continue;
                };
                let key = TimerKey {
                    due_ms,
                    offset: message.queue_offset.0,
                };
                if key > delivered {
                    inner.add(TimerEntry {
                        key,
                        commit_log_offset: message.commit_log_offset.0,
                    })?;
                }
            }
            offset = QueueOffset(page.next_offset.0.max(offset.0 + 1));
        }
        inner.indexed_to = inner.indexed_to.max(max.0);
        Ok(inner.pending)
    }
}

impl Inner {
    fn clear(&mut self) -> io::Result<()> {
        self.segments.clear();
        self.wheel.clear();
        self.end = 0;
        self.indexed_to = 0;
        self.pending = 0;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The broker's user alone: the records say which topics wait for what.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    fn add(&mut self, entry: TimerEntry) -> io::Result<()> {
        if entry.key.offset < self.indexed_to {
            return Ok(());
        }
        if self
            .segments
            .back()
            .is_none_or(|s| s.len + RECORD_BYTES > SEGMENT_BYTES)
        {
            let start = self.end;
            let path = segment_path(&self.dir, start);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            self.segments.push_back(Segment {
                start,
                file: Arc::new(file),
                len: 0,
                max_key: entry.key,
                first_commit_log_offset: entry.commit_log_offset,
            });
        }
        let slot = slot_of(entry.key.due_ms);
        let previous = self.wheel.get(&slot).map_or(NONE, |s| s.newest);
        let position = self.end;
        let segment = self
            .segments
            .back_mut()
            .expect("a segment with room was just ensured");
        segment
            .file
            .write_all_at(&entry.encode(previous), segment.len)?;
        segment.len += RECORD_BYTES;
        segment.max_key = segment.max_key.max(entry.key);
        let slot = self.wheel.entry(slot).or_insert(Slot {
            newest: NONE,
            count: 0,
        });
        slot.newest = position;
        slot.count += 1;
        self.end += RECORD_BYTES;
        self.indexed_to = entry.key.offset + 1;
        self.pending += 1;
        Ok(())
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}"))
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(due_ms: u64, offset: u64) -> TimerEntry {
        TimerEntry {
            key: TimerKey { due_ms, offset },
            commit_log_offset: offset * 100,
        }
    }

    fn keys(due: &DueTimers) -> Vec<(u64, u64)> {
        due.entries
            .iter()
            .map(|e| (e.key.due_ms, e.key.offset))
            .collect()
    }

    #[test]
    fn due_timers_come_in_key_order_never_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TimerIndex::open(&dir.path().join("timerlog")).expect("open");
        // Arrival order is not due order; two share a due time.
        for (offset, due) in [(0, 50_000), (1, 5_000), (2, 20_000), (3, 5_000), (4, 9_999)] {
            index.add(entry(due, offset)).expect("add");
        }
        assert_eq!(index.pending(), 5);
        let due = index.due(TimerKey::default(), 10_000, 100).expect("due");
        assert_eq!(keys(&due), vec![(5_000, 1), (5_000, 3), (9_999, 4)]);
        assert_eq!(due.indexed_to, 5);
        // After a key: only later ones.
        let after = TimerKey {
            due_ms: 5_000,
            offset: 1,
        };
        assert_eq!(
            keys(&index.due(after, 10_000, 100).expect("due")),
            vec![(5_000, 3), (9_999, 4)]
        );
        // A limit cuts in key order.
        assert_eq!(
            keys(&index.due(TimerKey::default(), 60_000, 2).expect("due")),
            vec![(5_000, 1), (5_000, 3)]
        );
        // Nothing before its time.
        assert!(index
            .due(TimerKey::default(), 4_999, 100)
            .expect("due")
            .entries
            .is_empty());
    }

    #[test]
    fn delivered_timers_leave_the_wheel_and_their_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TimerIndex::open(&dir.path().join("timerlog")).expect("open");
        let per_segment = SEGMENT_BYTES / RECORD_BYTES;
        // Two full segments and a bit: due times rise with the offset.
        let total = per_segment * 2 + 10;
        for offset in 0..total {
            index.add(entry(1_000 + offset, offset)).expect("add");
        }
        assert_eq!(index.disk_bytes(), total * RECORD_BYTES);
        assert_eq!(index.retention_floor(), Some(0));
        // Deliver the first segment's timers.
        let last_of_first = TimerKey {
            due_ms: 1_000 + per_segment - 1,
            offset: per_segment - 1,
        };
        index
            .delivered(last_of_first, per_segment)
            .expect("delivered");
        assert_eq!(index.pending(), total - per_segment);
        assert_eq!(index.disk_bytes(), (per_segment + 10) * RECORD_BYTES);
        assert_eq!(index.retention_floor(), Some(per_segment * 100));
        let files = fs::read_dir(dir.path().join("timerlog"))
            .expect("dir")
            .count();
        assert_eq!(files, 2);
        // The next due timer is the first of the second segment, read across the
        // deleted one in its slot's chain.
        let due = index.due(last_of_first, u64::MAX / 2, 1).expect("due");
        assert_eq!(keys(&due), vec![(1_000 + per_segment, per_segment)]);
        // Everything delivered: no floor.
        let last = TimerKey {
            due_ms: 1_000 + total - 1,
            offset: total - 1,
        };
        index
            .delivered(last, total - per_segment)
            .expect("delivered");
        assert_eq!(index.pending(), 0);
        assert_eq!(index.retention_floor(), None);
    }

    #[test]
    fn an_indexed_timer_is_not_indexed_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TimerIndex::open(&dir.path().join("timerlog")).expect("open");
        index.add(entry(5_000, 0)).expect("add");
        index.add(entry(5_000, 0)).expect("add again");
        assert_eq!(index.pending(), 1);
        assert_eq!(
            index
                .due(TimerKey::default(), 5_000, 10)
                .expect("due")
                .entries
                .len(),
            1
        );
    }
}
