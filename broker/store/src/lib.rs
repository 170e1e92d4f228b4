//! The single-node storage engine, usable as a library without Raft.
//!
//! # Layout
//! * [`types`] — typed offsets and ids (`CommitLogOffset`, `QueueOffset`, …).
//! * [`record`] — the on-disk record format: one `encode`/`decode` pair.
//! * [`mapped_file`] — memory-mapped files; the only `unsafe` in the crate.
//! * [`mapped_file_queue`] — a directory of mapped files named by start offset.
//! * [`commit_log`] — the CommitLog: appends, reads, flush positions, tail recovery.
//! * [`consume_queue`] — per-queue 20-byte units indexing the CommitLog.
//! * [`index`] — key and message-id hash index with store times.
//! * [`dispatch`] — CommitLog records → ConsumeQueue units and index entries.
//! * [`tombstones`] — deleted topics: which of their records are gone.
//! * [`checkpoint`] — what was durable at the last flush.
//! * [`group_commit`] — one flush thread syncing for every writer that waits.
//! * [`retention`] — deleting old files.
//! * [`filter`] — tag filters for pulls.
//! * [`message`], [`config`], [`error`] — the store's inputs, outputs and settings.
//! * [`store`] — [`MessageStore`], the facade over all of the above.

pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod dispatch;
pub mod durable_file;
pub mod error;
pub mod filter;
pub mod group_commit;
pub mod index;
pub mod mapped_file;
pub mod mapped_file_queue;
pub mod message;
pub mod record;
pub mod retention;
pub mod store;
pub mod tombstones;
pub mod types;

pub use config::{FlushMode, StoreConfig};
pub use error::{StoreError, StoreResult};
pub use filter::TagFilter;
pub use message::{
    Appended, MessageDraft, ProducerStamp, PullResult, PullStatus, RecordInput, StoredMessage,
};
pub use store::{now_ms, MessageStore, RecoveryReport};
pub use types::{CommitLogOffset, MessageId, QueueId, QueueOffset, RaftLogRef, TagHash};
