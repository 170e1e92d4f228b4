//! Dispatch: from CommitLog records to ConsumeQueue units and index entries.
//!
//! On the write path dispatch has two phases around the CommitLog append:
//! [`Dispatcher::plan`] assigns queue offsets and creates every file the units and
//! index entries will need (the only fallible part), then, once the records are in
//! the CommitLog, [`Dispatcher::apply`] writes the units and entries and publishes
//! them. A batch is therefore dispatched whole or, if planning fails, not written at
//! all. Recovery uses [`Dispatcher::redispatch`], which is idempotent: a unit already
//! present is checked, not rewritten.

use std::collections::HashSet;
use std::sync::Arc;

use super::consume_queue::{ConsumeQueue, ConsumeQueueTable, CqUnit};
use super::error::{StoreError, StoreResult};
use super::index::{id_hash, key_hash, Index, IndexEntry};
use super::record::{RecordKind, RecordView, FLAG_DROPS_TOPIC};
use super::tombstones::Tombstones;
use super::types::{CommitLogOffset, MessageId, QueueId, QueueOffset, TagHash};

/// The dispatch targets of a store.
pub struct Dispatcher {
    pub queues: ConsumeQueueTable,
    pub index: Index,
    /// Dropped topics: their older records are never dispatched again.
    pub tombstones: Tombstones,
}

/// A message about to be appended, as dispatch needs to see it.
pub struct DispatchInput<'a> {
    pub topic: &'a str,
    pub queue_id: QueueId,
    pub msg_id: MessageId,
    pub keys: &'a [String],
}

/// Queue offsets assigned to a batch, with its files reserved.
pub struct DispatchPlan {
    /// Per message, in batch order: its queue and offset.
    pub slots: Vec<(Arc<ConsumeQueue>, QueueOffset)>,
}

/// A message now in the CommitLog, as dispatch needs to see it.
pub struct Dispatched<'a> {
    pub topic: &'a str,
    pub keys: &'a [String],
    pub msg_id: MessageId,
    pub commit_log_offset: CommitLogOffset,
    pub size: u32,
    pub tag_hash: TagHash,
    pub store_timestamp_ms: u64,
}

impl Dispatcher {
    /// Assigns each message its queue offset and reserves the ConsumeQueue and index
    /// files the batch needs. `commit_log_end` is where the batch will start.
    ///
    /// # Errors
    /// Creating a queue directory or file failed; nothing was assigned for good.
    pub fn plan(
        &self,
        messages: &[DispatchInput<'_>],
        commit_log_end: CommitLogOffset,
    ) -> StoreResult<DispatchPlan> {
        let mut slots: Vec<(Arc<ConsumeQueue>, QueueOffset)> = Vec::with_capacity(messages.len());
        // (queue, first offset, count), few per batch: a linear scan beats hashing.
        let mut runs: Vec<(Arc<ConsumeQueue>, QueueOffset, u64)> = Vec::new();
        // The hash of every index entry, in the order `apply` puts them.
        let mut index_hashes = Vec::with_capacity(messages.len() * 2);
        for message in messages {
            let run = runs
                .iter_mut()
                .find(|(q, _, _)| q.topic() == message.topic && q.queue_id() == message.queue_id);
            let (queue, offset) = match run {
                Some((queue, first, count)) => {
                    *count += 1;
                    (Arc::clone(queue), QueueOffset(first.0 + *count - 1))
                }
                None => {
                    let queue = self.queues.get_or_create(message.topic, message.queue_id)?;
                    let first = queue.next_queue_offset();
                    runs.push((Arc::clone(&queue), first, 1));
                    (queue, first)
                }
            };
            slots.push((queue, offset));
            index_hashes.push(id_hash(&message.msg_id));
            index_hashes.extend(message.keys.iter().map(|key| key_hash(message.topic, key)));
        }
        for (queue, first, count) in &runs {
            queue.reserve(*first, *count)?;
        }
        self.index.reserve(&index_hashes, commit_log_end)?;
        Ok(DispatchPlan { slots })
    }

    /// Writes the units and index entries of a planned batch now in the CommitLog, and
    /// publishes the units.
    ///
    /// # Panics
    /// If `records` does not match the plan (a caller bug).
    pub fn apply(&self, plan: DispatchPlan, records: &[Dispatched<'_>]) {
        assert_eq!(
            plan.slots.len(),
            records.len(),
            "dispatch plan and records differ"
        );
        let mut entries = Vec::with_capacity(records.len() * 2);
        for ((queue, offset), record) in plan.slots.iter().zip(records) {
            queue.append(
                *offset,
                CqUnit {
                    commit_log_offset: record.commit_log_offset,
                    size: record.size,
                    tag_hash: record.tag_hash,
                },
            );
            push_index_entries(&mut entries, record);
        }
        self.index.put(&entries);
        let mut published: Vec<*const ConsumeQueue> = Vec::new();
        for (queue, _) in &plan.slots {
            let ptr = Arc::as_ptr(queue);
            if !published.contains(&ptr) {
                queue.publish();
                published.push(ptr);
            }
        }
    }

    /// Dispatches one recovered record again. Units are written only for queues in
    /// `rebuild` or records at or after `queues_from`; index entries only for records
    /// at or after `index_from`. A unit already present must point at this record.
    ///
    /// # Errors
    /// A ConsumeQueue disagrees with the CommitLog (a unit at this queue offset points
    /// elsewhere, or the queue has a gap), or a file could not be created.
    pub fn redispatch(
        &self,
        view: &RecordView<'_>,
        queues_from: CommitLogOffset,
        rebuild: &HashSet<(String, QueueId)>,
        index_from: CommitLogOffset,
    ) -> StoreResult<()> {
        let offset = view.meta.physical_offset;
        if view.meta.kind == RecordKind::Control && view.meta.flags & FLAG_DROPS_TOPIC != 0 {
            return self.drop_topic_before(view.topic, offset);
        }
        if view.meta.kind != RecordKind::Message || self.tombstones.hides(view.topic, offset) {
            return Ok(());
        }
        let queue_offset = view.meta.queue_offset;
        let needs_unit = offset >= queues_from
            || rebuild.contains(&(view.topic.to_string(), view.meta.queue_id));
        if needs_unit {
            let queue = self.queues.get_or_create(view.topic, view.meta.queue_id)?;
            match queue.has_unit_at(queue_offset, offset) {
                Some(true) => {}
                Some(false) => {
                    return Err(StoreError::Corrupt {
                        file: queue_path_hint(view.topic, view.meta.queue_id),
                        offset: queue_offset.0,
                        reason: format!(
                            "consume queue unit does not point at commit log offset {offset}"
                        ),
                    })
                }
                None if queue_offset < queue.min_offset() => {}
                None => {
                    let next = queue.next_queue_offset();
                    let empty = next.0 == 0;
                    if queue_offset != next && !empty {
                        return Err(StoreError::Corrupt {
                            file: queue_path_hint(view.topic, view.meta.queue_id),
                            offset: next.0,
                            reason: format!(
                                "consume queue ends at {next} but the commit log's next message for it has queue offset {queue_offset}"
                            ),
                        });
                    }
                    queue.reserve(queue_offset, 1)?;
                    queue.append(
                        queue_offset,
                        CqUnit {
                            commit_log_offset: offset,
                            size: view.size,
                            tag_hash: tag_hash_of(view.tags),
                        },
                    );
                    queue.publish();
                }
            }
        }
        if offset >= index_from {
            let keys: Vec<String> = view.keys().map(str::to_string).collect();
            let mut entries = Vec::with_capacity(1 + keys.len());
            push_index_entries(
                &mut entries,
                &Dispatched {
                    topic: view.topic,
                    keys: &keys,
                    msg_id: view.meta.msg_id,
                    commit_log_offset: offset,
                    size: view.size,
                    tag_hash: TagHash::NONE,
                    store_timestamp_ms: view.meta.store_timestamp_ms,
                },
            );
            let hashes: Vec<u32> = entries.iter().map(|e| e.key_hash).collect();
            self.index.reserve(&hashes, offset)?;
            self.index.put(&entries);
        }
        Ok(())
    }
}

impl Dispatcher {
    /// Hides `topic`'s records below `at` and removes the queues that hold only such
    /// records: for a topic drop met while dispatching again (recovery, a snapshot
    /// install, raw replication), and for the tombstones a store opens with (a crash
    /// after the drop's checkpoint may have left its files). A queue with a unit at
    /// or after `at` belongs to the topic created again later: it stays.
    pub fn drop_topic_before(&self, topic: &str, at: CommitLogOffset) -> StoreResult<()> {
        self.tombstones.drop_before(topic, at);
        for queue in self.queues.topic_queues(topic) {
            let newer = queue
                .last_unit()
                .is_some_and(|unit| unit.commit_log_offset >= at);
            if !newer {
                self.queues.remove_queue(topic, queue.queue_id())?;
            }
        }
        Ok(())
    }
}

/// The tag hash stored for a message's tags string.
pub fn tag_hash_of(tags: &str) -> TagHash {
    if tags.is_empty() {
        TagHash::NONE
    } else {
        TagHash::of(tags)
    }
}

fn push_index_entries(entries: &mut Vec<IndexEntry>, record: &Dispatched<'_>) {
    entries.push(IndexEntry {
        key_hash: id_hash(&record.msg_id),
        commit_log_offset: record.commit_log_offset,
        store_timestamp_ms: record.store_timestamp_ms,
    });
    for key in record.keys {
        entries.push(IndexEntry {
            key_hash: key_hash(record.topic, key),
            commit_log_offset: record.commit_log_offset,
            store_timestamp_ms: record.store_timestamp_ms,
        });
    }
}

fn queue_path_hint(topic: &str, queue_id: QueueId) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("consumequeue/{topic}/{queue_id}"))
}
