//! Messages as they enter and leave the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{RecordContent, RecordView, FLAG_BINARY_BODY};
use super::types::{CommitLogOffset, MessageId, QueueId, QueueOffset, RaftLogRef};

/// An idempotent producer's identity for one message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerStamp {
    pub producer_id: String,
    pub sequence: u64,
}

/// A message with everything fixed except its queue and CommitLog offsets, which
/// the store assigns. In the replicated broker the leader fills it in before
/// proposing, so every replica stores identical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDraft {
    pub topic: String,
    pub queue_id: QueueId,
    pub msg_id: MessageId,
    /// As bytes, not a sequence of u8: bincode then copies the body in one go
    /// (serde's default encodes and decodes it byte by byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The body was given as base64 and goes back out as base64.
    pub binary_body: bool,
    /// Empty for no tags.
    pub tags: String,
    pub keys: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub born_timestamp_ms: u64,
    /// Proposed store time; the store raises it to keep store times monotonic.
    pub store_timestamp_ms: u64,
    pub born_host: String,
    pub reconsume_times: u32,
    pub producer: Option<ProducerStamp>,
}

impl MessageDraft {
    /// The variable fields the record format encodes (see `record::encoded_len`).
    pub fn record_content(&self) -> RecordContent<'_> {
        RecordContent {
            topic: &self.topic,
            producer_id: self
                .producer
                .as_ref()
                .map_or("", |p| p.producer_id.as_str()),
            born_host: &self.born_host,
            tags: &self.tags,
            keys: &self.keys,
            properties: &self.properties,
            body: &self.body,
        }
    }
}

/// One record of a Raft entry, as given to [`super::MessageStore::append_entry`].
#[derive(Copy, Clone, Debug)]
pub enum RecordInput<'a> {
    Message(&'a MessageDraft),
    /// An opaque payload of the layer above, stored in the CommitLog (so it is
    /// replicated, snapshotted and recovered with the messages) but not dispatched.
    Control {
        payload: &'a [u8],
        /// Store time; 0 reuses the previous record's (store times never go back).
        store_timestamp_ms: u64,
    },
    /// A control record that also drops `topic` (`FLAG_DROPS_TOPIC`): call
    /// [`super::MessageStore::drop_topic`] first, then append this in the same entry
    /// that the layer above applies the deletion with.
    DropTopic {
        topic: &'a str,
        payload: &'a [u8],
    },
}

/// Where a record landed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub commit_log_offset: CommitLogOffset,
    pub size: u32,
    /// Meaningful for messages only.
    pub queue_id: QueueId,
    pub queue_offset: QueueOffset,
    pub store_timestamp_ms: u64,
}

/// A message read back from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub queue_id: QueueId,
    pub queue_offset: QueueOffset,
    pub commit_log_offset: CommitLogOffset,
    pub size: u32,
    pub msg_id: MessageId,
    pub body: Vec<u8>,
    pub binary_body: bool,
    pub tags: String,
    pub keys: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub born_timestamp_ms: u64,
    pub store_timestamp_ms: u64,
    pub born_host: String,
    pub reconsume_times: u32,
    pub producer: Option<ProducerStamp>,
    pub raft: RaftLogRef,
}

impl StoredMessage {
    /// Copies a record view out of the mapped file.
    pub fn from_view(view: &RecordView<'_>) -> Self {
        Self {
            topic: view.topic.to_string(),
            queue_id: view.meta.queue_id,
            queue_offset: view.meta.queue_offset,
            commit_log_offset: view.meta.physical_offset,
            size: view.size,
            msg_id: view.meta.msg_id,
            body: view.body.to_vec(),
            binary_body: view.meta.flags & FLAG_BINARY_BODY != 0,
            tags: view.tags.to_string(),
            keys: view.keys().map(str::to_string).collect(),
            properties: view
                .properties()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            born_timestamp_ms: view.meta.born_timestamp_ms,
            store_timestamp_ms: view.meta.store_timestamp_ms,
            born_host: view.born_host.to_string(),
            reconsume_times: view.meta.reconsume_times,
            producer: view.producer().map(|(id, sequence)| ProducerStamp {
                producer_id: id.to_string(),
                sequence,
            }),
            raft: view.meta.raft,
        }
    }
}

impl StoredMessage {
    /// A copy of this message for another topic and queue (a delayed delivery, a
    /// retry, a dead letter): same id, body, tags, keys, born time and host and
    /// reconsume count, the given properties, stored at `store_timestamp_ms`, with
    /// no producer stamp (idempotence was settled when the original was stored).
    pub fn into_draft(
        self,
        topic: String,
        queue_id: QueueId,
        properties: BTreeMap<String, String>,
        store_timestamp_ms: u64,
    ) -> MessageDraft {
        MessageDraft {
            topic,
            queue_id,
            msg_id: self.msg_id,
            body: self.body,
            binary_body: self.binary_body,
            tags: self.tags,
            keys: self.keys,
            properties,
            born_timestamp_ms: self.born_timestamp_ms,
            store_timestamp_ms,
            born_host: self.born_host,
            reconsume_times: self.reconsume_times,
            producer: None,
        }
    }
}

/// The outcome of a pull, in the words of shared/API.md.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PullStatus {
    Found,
    /// The offset is the queue's end.
    NoNewMsg,
    /// Every scanned message was filtered out; `next_offset` moved past them.
    NoMatchedMsg,
    /// Below the minimum (deleted by retention).
    OffsetTooSmall,
    /// Beyond the end.
    OffsetOverflow,
}

/// What a pull returns: its status, the queue's offsets, and its messages, each
/// copied out as a [`StoredMessage`] or as whatever the caller of
/// `MessageStore::pull_with` made of the record where it lies.
#[derive(Clone, Debug)]
pub struct PullResult<T = StoredMessage> {
    pub status: PullStatus,
    pub next_offset: QueueOffset,
    pub min_offset: QueueOffset,
    pub max_offset: QueueOffset,
    pub messages: Vec<T>,
}

impl<T> PullResult<T> {
    /// An answer without messages.
    pub fn empty(
        status: PullStatus,
        next_offset: QueueOffset,
        min_offset: QueueOffset,
        max_offset: QueueOffset,
    ) -> Self {
        Self {
            status,
            next_offset,
            min_offset,
            max_offset,
            messages: Vec::new(),
        }
    }
}
