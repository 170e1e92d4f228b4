//! The message store: one CommitLog, its ConsumeQueues and index, their flushing,
//! checkpointing, recovery and retention, behind one API usable without Raft.
//!
//! Concurrency: appends are serialized by `write_lock` (the Raft state machine is
//! the only writer in the broker); reads run concurrently with appends and with each
//! other, seeing whole published batches. A background thread flushes on an interval
//! and runs retention; it is owned by the store and joined on close.

use std::collections::HashSet;
use std::fs::File;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::checkpoint::Checkpoint;
use super::commit_log::{
    CommitLog, CommitLogCheckpoint, CommitLogRecovery, PendingRecord, TailState,
};
use super::config::{FlushMode, StoreConfig};
use super::consume_queue::{ConsumeQueueTable, CQ_UNIT_BYTES};
use super::dispatch::{tag_hash_of, DispatchInput, Dispatched, Dispatcher};
use super::error::{StoreError, StoreResult};
use super::filter::TagFilter;
use super::group_commit::{GroupCommit, GroupCommitThread};
use super::index::{id_hash, key_hash, Index};
use super::message::{Appended, MessageDraft, PullResult, PullStatus, RecordInput, StoredMessage};
use super::record::{
    self, RecordContent, RecordKind, RecordMeta, RecordView, FLAG_BINARY_BODY, FLAG_DROPS_TOPIC,
    FLAG_HAS_PRODUCER,
};
use super::retention::{self, RetentionReport};
use super::tombstones::Tombstones;
use super::types::{CommitLogOffset, MessageId, QueueId, QueueOffset, RaftLogRef};

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub commit_log: CommitLogRecovery,
    pub clean_shutdown: bool,
    /// Records dispatched again to ConsumeQueues and the index.
    pub records_redispatched: u64,
    /// Queues found missing or behind their checkpointed length and rebuilt.
    pub queues_rebuilt: Vec<(String, QueueId)>,
}

/// The shared state of an open store.
struct Inner {
    config: StoreConfig,
    commit_log: CommitLog,
    dispatcher: Dispatcher,
    /// Serializes appends (queue offset assignment + CommitLog + dispatch).
    write_lock: Mutex<()>,
    /// Serializes flushes (the background thread and explicit calls).
    flush_lock: Mutex<()>,
    /// Set when a write failed half-way; writes are refused until reopened.
    failed: AtomicBool,
    /// Retention never deletes records at or above this CommitLog offset (the layer
    /// above still needs to replay them).
    retention_floor: AtomicU64,
    /// The layer above's second floor: the oldest record of a message it still
    /// has to move (a pending timer); `u64::MAX` when there is none.
    hold_floor: AtomicU64,
    /// Told the duration of every CommitLog flush (msync of dirty pages),
    /// background and group-commit alike: the server's `/metrics` histogram. The
    /// store keeps no metrics registry of its own.
    flush_observer: OnceLock<FlushObserver>,
    _lock_file: File,
}

/// What [`MessageStore::on_commit_log_flush`] installs.
type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl Inner {
    fn observe_flush(&self, elapsed: Duration) {
        if let Some(observer) = self.flush_observer.get() {
            observer(elapsed);
        }
    }
}

/// An open message store. Dropping it stops the background thread and flushes.
pub struct MessageStore {
    inner: Arc<Inner>,
    background: Mutex<Option<Background>>,
    /// Waiters for durability, and the thread that flushes for them.
    group_commit: Arc<GroupCommit>,
    group_commit_thread: Mutex<Option<GroupCommitThread>>,
}

struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MessageStore {
    /// Opens (creating if needed) the store, recovering from a crash if the last
    /// shutdown was not clean, and starts its background flush and retention.
    ///
    /// # Errors
    /// Invalid configuration, the directory is locked by another process, corruption
    /// that is not a torn tail (naming file and offset), or I/O failure.
    pub fn open(config: StoreConfig) -> StoreResult<(Self, RecoveryReport)> {
        let (store, report) = Self::open_without_background(config)?;
        store.start_background();
        Ok((store, report))
    }

    /// Opens the store without starting the background thread (tests and tools that
    /// flush explicitly).
    ///
    /// # Errors
    /// As [`MessageStore::open`].
    pub fn open_without_background(config: StoreConfig) -> StoreResult<(Self, RecoveryReport)> {
        config.validate()?;
        super::durable_file::create_dir_durably(config.root())
            .map_err(|e| StoreError::io(config.root(), e))?;
        let lock_path = config.lock_path();
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Locked {
                path: config.root().to_path_buf(),
            });
        }

        let checkpoint = Checkpoint::load(&config.checkpoint_path())?;
        let cl_checkpoint = checkpoint
            .as_ref()
            .map_or_else(CommitLogCheckpoint::default, |c| CommitLogCheckpoint {
                flushed: c.flushed,
                tail: c.tail,
            });
        let (commit_log, cl_report) = CommitLog::open(
            &config.commit_log_dir(),
            config.commit_log_file_size_bytes,
            cl_checkpoint,
        )?;
        let cl_min = commit_log.min_offset();
        let cl_end = commit_log.max_offset();
        let queues = ConsumeQueueTable::open(
            &config.consume_queue_dir(),
            config.consume_queue_units_per_file,
            cl_min,
            cl_end,
        )?;
        let index = Index::open(
            &config.index_dir(),
            config.index_slot_count,
            config.index_max_entries,
        )?;
        let tombstones = Tombstones::new(
            checkpoint
                .iter()
                .flat_map(|c| c.dropped_topics.iter().cloned()),
        );
        let dispatcher = Dispatcher {
            queues,
            index,
            tombstones,
        };
        // A crash between a drop's checkpoint and the deletion of its files leaves
        // the dropped topic's queues on disk: they must not serve a pull.
        for (topic, at) in dispatcher.tombstones.entries() {
            dispatcher.drop_topic_before(&topic, at)?;
        }

        // What must be dispatched again: everything past the checkpoint; every queue
        // missing or shorter than checkpointed (from the start of the log); and the
        // index files written since the checkpoint unless the shutdown was clean.
        let clean = checkpoint.as_ref().is_some_and(|c| c.clean_shutdown);
        let queues_from = checkpoint
            .as_ref()
            .map_or(cl_min, |c| c.flushed)
            .clamp(cl_min, cl_end);
        let mut rebuild = HashSet::new();
        for (topic, queue_id, max) in checkpoint.iter().flat_map(|c| c.queues.iter()) {
            let current = dispatcher.queues.get(topic, *queue_id);
            if current.as_ref().is_none_or(|q| q.max_offset() < *max) {
                warn!(topic, queue_id = queue_id.0, "consume queue missing or behind its checkpoint; rebuilding from the commit log");
                dispatcher.queues.recreate(topic, *queue_id)?;
                rebuild.insert((topic.clone(), *queue_id));
            }
        }
        let index_from = if dispatcher.index.last_file_begin().is_none() {
            // No index files although the log has records (a deleted `index/`): the
            // index is derived data, rebuild all of it.
            cl_min
        } else if clean {
            queues_from
        } else {
            let from = checkpoint
                .as_ref()
                .map_or(cl_min, |c| c.index_rebuild_from)
                .clamp(cl_min, cl_end);
            dispatcher.index.discard_from(from)?;
            from
        };
        let scan_from = if rebuild.is_empty() {
            queues_from.min(index_from)
        } else {
            cl_min
        };
        let mut redispatched = 0u64;
        commit_log.scan(scan_from, cl_end, |view| {
            dispatcher.redispatch(&view, queues_from, &rebuild, index_from)?;
            redispatched += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        // A rebuilt queue whose messages retention deleted has no unit to restart from:
        // it continues from its checkpointed end, so its offsets never go backwards.
        for (topic, queue_id, max) in checkpoint.iter().flat_map(|c| c.queues.iter()) {
            if rebuild.contains(&(topic.clone(), *queue_id)) {
                if let Some(queue) = dispatcher.queues.get(topic, *queue_id) {
                    if queue.max_offset().0 == 0 && max.0 > 0 {
                        queue.continue_empty_from(*max);
                    }
                }
            }
        }

        let report = RecoveryReport {
            commit_log: cl_report,
            clean_shutdown: clean,
            records_redispatched: redispatched,
            queues_rebuilt: rebuild.into_iter().collect(),
        };
        let inner = Arc::new(Inner {
            config,
            commit_log,
            dispatcher,
            write_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            failed: AtomicBool::new(false),
            retention_floor: AtomicU64::new(u64::MAX),
            hold_floor: AtomicU64::new(u64::MAX),
            flush_observer: OnceLock::new(),
            _lock_file: lock_file,
        });
        let flushing = Arc::clone(&inner);
        let group_commit_thread = GroupCommitThread::start(
            inner.commit_log.flushed_offset(),
            Box::new(move |target| {
                let started = std::time::Instant::now();
                let flushed = flushing.commit_log.flush_to(target);
                flushing.observe_flush(started.elapsed());
                flushed
            }),
        );
        let store = Self {
            inner,
            background: Mutex::new(None),
            group_commit: Arc::clone(group_commit_thread.shared()),
            group_commit_thread: Mutex::new(Some(group_commit_thread)),
        };
        // From now on the store is dirty: a crash must be recovered as one.
        store.flush_and_checkpoint(false)?;
        if report.commit_log.truncated_bytes > 0 || report.records_redispatched > 0 {
            info!(?report, "message store recovered");
        }
        Ok((store, report))
    }

    fn start_background(&self) {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let inner = Arc::clone(&self.inner);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || background_loop(&inner, &thread_stop))
            .expect("spawning the store flush thread");
        *self.background.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Background { stop, thread });
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Appends the records of one Raft entry (or one storage-level batch), stamped
    /// with `raft`, atomically: all are stored and published, or none. With
    /// [`FlushMode::Sync`] it returns once they are durable.
    ///
    /// # Errors
    /// A record is invalid or too large (nothing written), a file could not be
    /// created (nothing written), a flush failed, or the store failed earlier.
    pub fn append_entry(
        &self,
        raft: RaftLogRef,
        records: &[RecordInput<'_>],
    ) -> StoreResult<Vec<Appended>> {
        let (appended, end) = self.append_entry_nowait(raft, records)?;
        if self.inner.config.flush_mode == FlushMode::Sync {
            self.wait_durable(end)?;
        }
        Ok(appended)
    }

    /// Checks that a message can be stored — a topic, an encoding that fits the
    /// record format, within the size limit — without storing it:
    /// [`MessageStore::append_entry`] refuses exactly the messages this refuses. Apply
    /// uses it to refuse one send of a batched entry on its own rather than the entry.
    ///
    /// # Errors
    /// As the validation of [`MessageStore::append_entry`].
    pub fn check_message(&self, draft: &MessageDraft) -> StoreResult<()> {
        check_topic(draft)?;
        checked_len(
            &draft.record_content(),
            self.inner.config.max_message_size_bytes,
        )
        .map(|_| ())
    }

    /// Blocks until every CommitLog byte below `offset` is durable, sharing one flush
    /// with every other waiter (group commit).
    ///
    /// # Errors
    /// The flush failed; the store refuses writes until reopened.
    pub fn wait_durable(&self, offset: CommitLogOffset) -> StoreResult<()> {
        self.group_commit
            .wait_durable(offset)
            .inspect_err(|_| self.inner.failed.store(true, Ordering::Release))
    }

    /// Asks for every CommitLog byte below `offset` to be made durable, without
    /// waiting (see [`MessageStore::wait_durable`]).
    pub fn request_durable(&self, offset: CommitLogOffset) {
        self.group_commit.request_durable(offset);
    }

    /// Like [`MessageStore::append_entry`] but never waits for a flush: returns the
    /// appended records and the CommitLog end after them, to pass to
    /// [`MessageStore::wait_durable`]. A writer can so prepare its next batch while
    /// this one is being synced.
    ///
    /// # Errors
    /// As [`MessageStore::append_entry`], without the flush.
    pub fn append_entry_nowait(
        &self,
        raft: RaftLogRef,
        records: &[RecordInput<'_>],
    ) -> StoreResult<(Vec<Appended>, CommitLogOffset)> {
        let inner = &*self.inner;
        if inner.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        if records.is_empty() {
            return Ok((Vec::new(), inner.commit_log.max_offset()));
        }
        let count = u32::try_from(records.len())
            .map_err(|_| StoreError::InvalidMessage("too many records in one entry".into()))?;
        let _write = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_store_ms = inner.commit_log.tail().last_store_timestamp_ms;

        // Validate and size every record before touching anything.
        let mut pending = Vec::with_capacity(records.len());
        let mut inputs = Vec::new();
        for (i, input) in records.iter().enumerate() {
            let (kind, content, flags, store_ms, queue_id, born_ms, reconsume, msg_id, sequence) =
                match input {
                    RecordInput::Message(draft) => {
                        check_topic(draft)?;
                        let mut flags = 0;
                        if draft.binary_body {
                            flags |= FLAG_BINARY_BODY;
                        }
                        if draft.producer.is_some() {
                            flags |= FLAG_HAS_PRODUCER;
                        }
                        inputs.push(DispatchInput {
                            topic: &draft.topic,
                            queue_id: draft.queue_id,
                            msg_id: draft.msg_id,
                            keys: &draft.keys,
                        });
                        (
                            RecordKind::Message,
                            draft.record_content(),
                            flags,
                            draft.store_timestamp_ms,
                            draft.queue_id,
                            draft.born_timestamp_ms,
                            draft.reconsume_times,
                            draft.msg_id,
                            draft.producer.as_ref().map_or(0, |p| p.sequence),
                        )
                    }
                    RecordInput::Control {
                        payload,
                        store_timestamp_ms,
                    } => control_parts("", payload, *store_timestamp_ms, 0),
                    RecordInput::DropTopic { topic, payload } => {
                        control_parts(topic, payload, 0, FLAG_DROPS_TOPIC)
                    }
                };
            let len = checked_len(&content, inner.config.max_message_size_bytes)?;
            // Store times never go backwards, so time searches can bisect.
            last_store_ms = last_store_ms.max(store_ms);
            pending.push(PendingRecord {
                meta: RecordMeta {
                    kind,
                    flags,
                    queue_id,
                    queue_offset: QueueOffset(0),
                    physical_offset: CommitLogOffset(0),
                    born_timestamp_ms: born_ms,
                    store_timestamp_ms: last_store_ms,
                    reconsume_times: reconsume,
                    raft,
                    entry_record_index: i as u32,
                    entry_record_count: count,
                    msg_id,
                    producer_sequence: sequence,
                },
                content,
                len,
            });
        }

        // Plan dispatch (assign queue offsets, reserve files), then append.
        let plan = inner
            .dispatcher
            .plan(&inputs, inner.commit_log.max_offset())?;
        let mut slots = plan.slots.iter();
        for p in pending
            .iter_mut()
            .filter(|p| p.meta.kind == RecordKind::Message)
        {
            let (_, offset) = slots.next().expect("one slot per message");
            p.meta.queue_offset = *offset;
        }
        let end = inner.commit_log.append(&mut pending)?;

        let dispatched: Vec<Dispatched<'_>> = pending
            .iter()
            .filter(|p| p.meta.kind == RecordKind::Message)
            .map(|p| Dispatched {
                topic: p.content.topic,
                keys: p.content.keys,
                msg_id: p.meta.msg_id,
                commit_log_offset: p.meta.physical_offset,
                size: p.len,
                tag_hash: tag_hash_of(p.content.tags),
                store_timestamp_ms: p.meta.store_timestamp_ms,
            })
            .collect();
        inner.dispatcher.apply(plan, &dispatched);

        let appended = pending
            .iter()
            .map(|p| Appended {
                commit_log_offset: p.meta.physical_offset,
                size: p.len,
                queue_id: p.meta.queue_id,
                queue_offset: p.meta.queue_offset,
                store_timestamp_ms: p.meta.store_timestamp_ms,
            })
            .collect();
        Ok((appended, end))
    }

    /// Pulls up to `max_messages` messages of a queue from `offset` that match
    /// `filter`, scanning at most the configured number of units and ending with
    /// the message that reaches `pull_max_bytes` of records.
    ///
    /// # Errors
    /// A record failed validation (corruption surfaces; it is never skipped).
    pub fn pull(
        &self,
        topic: &str,
        queue_id: QueueId,
        offset: QueueOffset,
        max_messages: usize,
        filter: &TagFilter,
    ) -> StoreResult<PullResult> {
        self.pull_with(topic, queue_id, offset, max_messages, filter, |view| {
            StoredMessage::from_view(&view)
        })
    }

    /// Like [`MessageStore::pull`], handing each matching record to `map` in place
    /// (no copy of the record unless `map` makes one).
    ///
    /// # Errors
    /// A record failed validation.
    pub fn pull_with<T>(
        &self,
        topic: &str,
        queue_id: QueueId,
        offset: QueueOffset,
        max_messages: usize,
        filter: &TagFilter,
        mut map: impl FnMut(RecordView<'_>) -> T,
    ) -> StoreResult<PullResult<T>> {
        let inner = &*self.inner;
        let Some(queue) = inner.dispatcher.queues.get(topic, queue_id) else {
            let status = if offset.0 == 0 {
                PullStatus::NoNewMsg
            } else {
                PullStatus::OffsetOverflow
            };
            return Ok(PullResult::empty(
                status,
                QueueOffset(0),
                QueueOffset(0),
                QueueOffset(0),
            ));
        };
        let (min, max) = (queue.min_offset(), queue.max_offset());
        if offset < min {
            return Ok(PullResult::empty(PullStatus::OffsetTooSmall, min, min, max));
        }
        if offset == max {
            return Ok(PullResult::empty(PullStatus::NoNewMsg, offset, min, max));
        }
        if offset > max {
            return Ok(PullResult::empty(PullStatus::OffsetOverflow, max, min, max));
        }
        let mut messages = Vec::new();
        let mut next = offset;
        let mut scanned = 0usize;
        let mut bytes = 0u64;
        let scan_limit = inner.config.pull_max_scan_units.max(max_messages);
        'scan: while messages.len() < max_messages && scanned < scan_limit && next < max {
            let units = queue.units_from(next, (scan_limit - scanned).min(1024));
            if units.is_empty() {
                break;
            }
            for (queue_offset, unit) in units {
                scanned += 1;
                next = queue_offset.next();
                if !filter.may_match(unit.tag_hash) {
                    continue;
                }
                // The unit is not checksummed: check that it led to this queue's
                // record before handing the record out as this queue's message.
                let read = inner.commit_log.read(unit.commit_log_offset, |view| {
                    let belongs = view.meta.kind == RecordKind::Message
                        && view.topic == topic
                        && view.meta.queue_id == queue_id
                        && view.meta.queue_offset == queue_offset;
                    belongs.then(|| {
                        filter.matches(view.tags).then(|| {
                            let size = view.size;
                            (map(view), size)
                        })
                    })
                });
                match read {
                    Ok(Some(Some((item, size)))) => {
                        messages.push(item);
                        bytes += u64::from(size);
                    }
                    Ok(Some(None)) => {}
                    Ok(None) => {
                        return Err(StoreError::Corrupt {
                            file: inner
                                .config
                                .consume_queue_dir()
                                .join(topic)
                                .join(queue_id.0.to_string()),
                            offset: queue_offset.0 * CQ_UNIT_BYTES,
                            reason: format!(
                                "unit {queue_offset} points at commit log offset {}, which holds another queue's record",
                                unit.commit_log_offset
                            ),
                        })
                    }
                    // Retention deleted the record after we read the unit: skip it,
                    // as the queue's minimum is about to move past it.
                    Err(StoreError::CommitLogOffsetTooSmall { .. }) => {}
                    Err(e) => return Err(e),
                }
                // The message that reaches the byte budget is the last: an answer
                // holds at least one message, and its memory is bounded.
                if messages.len() >= max_messages
                    || scanned >= scan_limit
                    || bytes >= inner.config.pull_max_bytes
                {
                    break 'scan;
                }
            }
        }
        let status = if messages.is_empty() {
            PullStatus::NoMatchedMsg
        } else {
            PullStatus::Found
        };
        Ok(PullResult {
            status,
            next_offset: next,
            min_offset: min,
            max_offset: max,
            messages,
        })
    }

    /// The message at a CommitLog offset.
    ///
    /// # Errors
    /// The offset was deleted, is beyond the end, or is not a valid message record.
    pub fn message_at(&self, offset: CommitLogOffset) -> StoreResult<StoredMessage> {
        self.inner.commit_log.read(offset, |view| {
            if view.meta.kind == RecordKind::Message && self.dropped(view.topic, offset) {
                Err(StoreError::TopicDropped {
                    topic: view.topic.to_string(),
                    offset,
                })
            } else if view.meta.kind == RecordKind::Message {
                Ok(StoredMessage::from_view(&view))
            } else {
                Err(StoreError::BadRecord {
                    offset,
                    source: super::record::RecordError::BadField {
                        field: "magic",
                        reason: "a control record, not a message",
                    },
                })
            }
        })?
    }

    /// The message with this id, if the index still knows it.
    ///
    /// Index entries may be stale (a torn tail rewritten after a crash, records
    /// deleted by retention) and may collide: a hit is returned only if it reads back
    /// as a valid record with this id, and skipped otherwise — a stale pointer into
    /// the middle of a record fails its CRC just like corruption would, so the two
    /// cannot be told apart here; reads by queue offset surface corruption.
    pub fn message_by_id(&self, id: &MessageId) -> Option<StoredMessage> {
        let hits = self
            .inner
            .dispatcher
            .index
            .lookup(id_hash(id), 0, u64::MAX, 16);
        hits.into_iter().find_map(|offset| {
            self.inner
                .commit_log
                .read(offset, |view| {
                    (view.meta.kind == RecordKind::Message
                        && view.meta.msg_id == *id
                        && !self.dropped(view.topic, offset))
                    .then(|| StoredMessage::from_view(&view))
                })
                .ok()
                .flatten()
        })
    }

    /// Messages of `topic` with `key` stored within `[begin_ms, end_ms]`, newest first.
    /// Hits are verified against the CommitLog as in [`MessageStore::message_by_id`].
    pub fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Vec<StoredMessage> {
        let hits = self.inner.dispatcher.index.lookup(
            key_hash(topic, key),
            begin_ms,
            end_ms,
            max.saturating_mul(2).max(16),
        );
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for offset in hits {
            if out.len() >= max || !seen.insert(offset) {
                continue;
            }
            let found = self.inner.commit_log.read(offset, |view| {
                (view.meta.kind == RecordKind::Message
                    && view.topic == topic
                    && !self.dropped(topic, offset)
                    && (begin_ms..=end_ms).contains(&view.meta.store_timestamp_ms)
                    && view.keys().any(|k| k == key))
                .then(|| StoredMessage::from_view(&view))
            });
            if let Ok(Some(message)) = found {
                out.push(message);
            }
        }
        out
    }

    /// (min, max) offsets of a queue; `None` if it has never had a message.
    pub fn queue_offsets(
        &self,
        topic: &str,
        queue_id: QueueId,
    ) -> Option<(QueueOffset, QueueOffset)> {
        self.inner
            .dispatcher
            .queues
            .get(topic, queue_id)
            .map(|q| (q.min_offset(), q.max_offset()))
    }

    /// Every queue of a topic with its (min, max) offsets.
    pub fn topic_queue_offsets(&self, topic: &str) -> Vec<(QueueId, QueueOffset, QueueOffset)> {
        self.inner
            .dispatcher
            .queues
            .topic_queues(topic)
            .iter()
            .map(|q| (q.queue_id(), q.min_offset(), q.max_offset()))
            .collect()
    }

    /// The first queue offset whose message was stored at or after `timestamp_ms`.
    pub fn offset_by_timestamp(
        &self,
        topic: &str,
        queue_id: QueueId,
        timestamp_ms: u64,
    ) -> QueueOffset {
        self.inner
            .dispatcher
            .queues
            .get(topic, queue_id)
            .map_or(QueueOffset(0), |q| {
                q.offset_by_timestamp(timestamp_ms, &self.inner.commit_log)
            })
    }

    /// Visits every record (messages and control records) in `[from, to)`.
    ///
    /// # Errors
    /// A record failed validation, or `visit` failed.
    pub fn scan(
        &self,
        from: CommitLogOffset,
        to: CommitLogOffset,
        visit: impl FnMut(RecordView<'_>) -> StoreResult<ControlFlow<()>>,
    ) -> StoreResult<()> {
        self.inner.commit_log.scan(from, to, visit)
    }

    /// Copies raw CommitLog bytes for a snapshot transfer (never past a file end).
    ///
    /// # Errors
    /// `from` was deleted by retention or is beyond the end.
    pub fn read_commit_log_raw(&self, from: CommitLogOffset, max_len: u64) -> StoreResult<Vec<u8>> {
        self.inner.commit_log.read_raw(from, max_len)
    }

    /// Appends raw CommitLog bytes from another replica at `from` (this log's end),
    /// validating every record, and dispatches them.
    ///
    /// # Errors
    /// The bytes are invalid or do not continue this log; nothing is published then.
    pub fn append_commit_log_raw(
        &self,
        from: CommitLogOffset,
        bytes: &[u8],
    ) -> StoreResult<CommitLogOffset> {
        let inner = &*self.inner;
        let _write = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut failure = None;
        let end = inner.commit_log.append_raw(from, bytes, |view| {
            if failure.is_none() {
                if let Err(e) = inner.dispatcher.redispatch(
                    &view,
                    CommitLogOffset(0),
                    &HashSet::new(),
                    CommitLogOffset(0),
                ) {
                    failure = Some(e);
                }
            }
        })?;
        if let Some(e) = failure {
            inner.failed.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(end)
    }

    /// Smallest CommitLog offset still kept.
    pub fn min_commit_log_offset(&self) -> CommitLogOffset {
        self.inner.commit_log.min_offset()
    }

    /// One past the last published CommitLog byte.
    pub fn max_commit_log_offset(&self) -> CommitLogOffset {
        self.inner.commit_log.max_offset()
    }

    /// Every CommitLog byte below this is durable.
    pub fn flushed_commit_log_offset(&self) -> CommitLogOffset {
        self.inner.commit_log.flushed_offset()
    }

    /// Raft id and store time of the last record.
    pub fn tail(&self) -> TailState {
        self.inner.commit_log.tail()
    }

    /// Flushes the CommitLog, ConsumeQueues and index, then writes the checkpoint.
    /// Returns the new flushed CommitLog offset.
    ///
    /// # Errors
    /// A flush or the checkpoint write failed.
    pub fn flush(&self) -> StoreResult<CommitLogOffset> {
        self.flush_and_checkpoint(false)
    }

    /// Has `observer` told the duration of every CommitLog flush from now on
    /// (background, group commit and checkpoint flushes alike). One observer per
    /// store: a second call is refused and returns `false`.
    pub fn on_commit_log_flush(&self, observer: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.inner.flush_observer.set(Box::new(observer)).is_ok()
    }

    fn flush_and_checkpoint(&self, clean_shutdown: bool) -> StoreResult<CommitLogOffset> {
        flush_and_checkpoint(&self.inner, clean_shutdown)
    }

    /// Runs retention now (the background thread also does on its interval).
    ///
    /// # Errors
    /// Deleting a file failed.
    pub fn run_retention(&self, now_ms: u64) -> StoreResult<RetentionReport> {
        run_retention(&self.inner, now_ms)
    }

    /// Keeps retention from deleting records at or above `offset` (the layer above
    /// replays from there after a restart).
    pub fn set_retention_floor(&self, offset: CommitLogOffset) {
        self.inner
            .retention_floor
            .store(offset.0, Ordering::Release);
    }

    /// Keeps retention from deleting records at or above `offset` — also under disk
    /// pressure — for messages the layer above still has to read (pending timers);
    /// `None` lifts it. Independent of [`MessageStore::set_retention_floor`]:
    /// retention keeps everything above the lower of the two.
    pub fn set_hold_floor(&self, offset: Option<CommitLogOffset>) {
        self.inner
            .hold_floor
            .store(offset.map_or(u64::MAX, |o| o.0), Ordering::Release);
    }

    /// Discards everything and restarts the store empty, its CommitLog beginning at
    /// `start` (a file boundary): a follower whose log ends below the leader's
    /// minimum before it receives the leader's retained log.
    ///
    /// # Errors
    /// Deleting failed.
    pub fn reset_to(&self, start: CommitLogOffset) -> StoreResult<()> {
        let inner = &*self.inner;
        {
            let _write = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            inner.commit_log.reset_to(start)?;
            inner.dispatcher.queues.remove_all()?;
            inner.dispatcher.index.discard_from(CommitLogOffset(0))?;
            inner.failed.store(false, Ordering::Release);
        }
        self.flush_and_checkpoint(false)?;
        Ok(())
    }

    /// Bytes on disk: (CommitLog, ConsumeQueues, index).
    pub fn disk_bytes(&self) -> (u64, u64, u64) {
        let inner = &*self.inner;
        (
            inner.commit_log.disk_bytes(),
            inner
                .dispatcher
                .queues
                .all()
                .iter()
                .map(|q| q.disk_bytes())
                .sum(),
            inner.dispatcher.index.disk_bytes(),
        )
    }

    /// Drops a topic: its ConsumeQueues and their files go, and every record of it
    /// stored so far is hidden from queries and from any later rebuild (its bytes
    /// stay in the CommitLog until retention). A topic of that name created later
    /// starts at queue offset 0. The caller then appends a
    /// [`RecordInput::DropTopic`] in the same Raft entry, which makes replicas,
    /// recoveries and snapshot installs drop the same records.
    ///
    /// Order, for crashes: the tombstone (topic → CommitLog end) reaches the
    /// checkpoint before any file is deleted, so a recovery never rebuilds the old
    /// queues from the CommitLog; a crash before the drop record is written re-applies
    /// the entry, and dropping again is harmless.
    ///
    /// # Errors
    /// The checkpoint or a deletion failed; retrying is safe.
    pub fn drop_topic(&self, topic: &str) -> StoreResult<()> {
        let inner = &*self.inner;
        {
            let _write = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let end = inner.commit_log.max_offset();
            inner.dispatcher.tombstones.drop_before(topic, end);
            inner.dispatcher.queues.forget_topic(topic);
        }
        self.flush_and_checkpoint(false)?;
        inner.dispatcher.queues.remove_topic_files(topic)
    }

    /// Whether the record of `topic` at `offset` belongs to a dropped incarnation.
    fn dropped(&self, topic: &str, offset: CommitLogOffset) -> bool {
        self.inner.dispatcher.tombstones.hides(topic, offset)
    }

    /// Like [`MessageStore::close`] for a store shared behind an `Arc`: stops the
    /// background thread, flushes everything and marks the shutdown clean. Writes
    /// after this make the next open a crash recovery again.
    ///
    /// # Errors
    /// The final flush failed; the next open recovers as after a crash.
    pub fn shutdown(&self) -> StoreResult<()> {
        self.stop_background();
        self.flush_and_checkpoint(true).map(|_| ())
    }

    /// Stops the background thread, flushes everything and marks the shutdown clean.
    ///
    /// # Errors
    /// The final flush failed; the next open recovers as after a crash.
    pub fn close(self) -> StoreResult<()> {
        self.stop_background();
        let result = self.flush_and_checkpoint(true);
        // `Drop` runs next with the background already stopped.
        result.map(|_| ())
    }

    fn stop_background(&self) {
        if let Some(mut thread) = self
            .group_commit_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            thread.stop();
        }
        let background = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(background) = background {
            {
                let (stopped, wake) = &*background.stop;
                *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
                wake.notify_all();
            }
            if background.thread.join().is_err() {
                warn!("store flush thread panicked");
            }
        }
    }

    /// Whether an earlier write or flush failed half-way, so the store refuses
    /// writes until reopened (the node's health watch reads it).
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        self.stop_background();
        // A last flush so data written by a storage-only user is durable; still an
        // unclean shutdown as far as the checkpoint is concerned unless `close` ran.
        if let Err(e) = self.inner.commit_log.flush() {
            warn!(error = %e, "final commit log flush failed");
        }
    }
}

static EMPTY_PROPERTIES: std::sync::LazyLock<std::collections::BTreeMap<String, String>> =
    std::sync::LazyLock::new(std::collections::BTreeMap::new);

fn flush_and_checkpoint(inner: &Inner, clean_shutdown: bool) -> StoreResult<CommitLogOffset> {
    let _flush = inner.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
    // A consistent cut: the CommitLog end, its tail, every queue's length and the
    // index file being written, all at a batch boundary.
    let (end, tail, queues, index_rebuild_from) = {
        let _write = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let end = inner.commit_log.max_offset();
        let queues: Vec<(String, QueueId, QueueOffset)> = inner
            .dispatcher
            .queues
            .all()
            .iter()
            .map(|q| (q.topic().to_string(), q.queue_id(), q.max_offset()))
            .collect();
        let index_from = inner.dispatcher.index.last_file_begin().unwrap_or(end);
        (end, inner.commit_log.tail(), queues, index_from)
    };
    inner
        .dispatcher
        .tombstones
        .prune(inner.commit_log.min_offset());
    let dropped_topics = inner.dispatcher.tombstones.entries();
    let started = std::time::Instant::now();
    let flushed = inner.commit_log.flush()?;
    inner.observe_flush(started.elapsed());
    debug_assert!(flushed >= end);
    for queue in inner.dispatcher.queues.all() {
        queue.flush()?;
    }
    inner.dispatcher.index.flush()?;
    let checkpoint = Checkpoint {
        clean_shutdown,
        flushed: end,
        tail,
        index_rebuild_from,
        written_at_ms: now_ms(),
        queues,
        dropped_topics,
    };
    checkpoint.store(&inner.config.checkpoint_path())?;
    Ok(end)
}

fn run_retention(inner: &Inner, now_ms: u64) -> StoreResult<RetentionReport> {
    let floor = CommitLogOffset(
        inner
            .retention_floor
            .load(Ordering::Acquire)
            .min(inner.hold_floor.load(Ordering::Acquire)),
    );
    retention::run(
        &inner.config,
        &inner.commit_log,
        &inner.dispatcher,
        now_ms,
        floor,
    )
}

/// The fields of a control record, in the order `append_entry_nowait` destructures
/// them: `topic` is empty except for a topic drop.
#[allow(clippy::type_complexity)]
fn control_parts<'a>(
    topic: &'a str,
    payload: &'a [u8],
    store_timestamp_ms: u64,
    flags: u32,
) -> (
    RecordKind,
    RecordContent<'a>,
    u32,
    u64,
    QueueId,
    u64,
    u32,
    MessageId,
    u64,
) {
    (
        RecordKind::Control,
        RecordContent {
            topic,
            producer_id: "",
            born_host: "",
            tags: "",
            keys: &[],
            properties: &EMPTY_PROPERTIES,
            body: payload,
        },
        flags,
        store_timestamp_ms,
        QueueId(0),
        store_timestamp_ms,
        0,
        MessageId::default(),
        0,
    )
}

fn check_topic(draft: &MessageDraft) -> StoreResult<()> {
    if draft.topic.is_empty() {
        return Err(StoreError::InvalidMessage("empty topic".into()));
    }
    Ok(())
}

/// The record's encoded length, if it has one within `max` bytes.
fn checked_len(content: &RecordContent<'_>, max: u64) -> StoreResult<u32> {
    let len =
        record::encoded_len(content).map_err(|e| StoreError::InvalidMessage(e.to_string()))?;
    if len as u64 > max {
        return Err(StoreError::MessageTooLarge {
            size: len as u64,
            max,
        });
    }
    Ok(len as u32)
}

fn background_loop(inner: &Inner, stop: &(Mutex<bool>, Condvar)) {
    let flush_every = Duration::from_millis(inner.config.flush_interval_ms);
    let retention_every = Duration::from_millis(inner.config.retention_interval_ms);
    let mut last_retention = std::time::Instant::now();
    let mut last_checkpointed: Option<CommitLogOffset> = None;
    loop {
        {
            let (stopped, wake) = stop;
            let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
            let (guard, _) = wake
                .wait_timeout_while(guard, flush_every, |stopped| !*stopped)
                .unwrap_or_else(|p| p.into_inner());
            if *guard {
                return;
            }
        }
        let end = inner.commit_log.max_offset();
        let changed = last_checkpointed != Some(end);
        if changed {
            match flush_and_checkpoint(inner, false) {
                Ok(at) => last_checkpointed = Some(at),
                Err(e) => warn!(error = %e, "background flush failed"),
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = std::time::Instant::now();
            if let Err(e) = run_retention(inner, now_ms()) {
                warn!(error = %e, "retention failed");
            }
        }
    }
}
