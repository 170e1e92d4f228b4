//! openraft log storage for the broker's per-group Raft log, on drmingdrmer's
//! [`raft-log`](raft_log) write-ahead log.
//!
//! [`LogStore`] implements openraft's `RaftLogStorage` and [`LogReader`] its
//! `RaftLogReader`, for any type config `C` (openraft's `serde` feature supplies every
//! bound this crate needs). raft-log provides chunk files of CRC'd records, an exclusive
//! directory lock, torn-tail repair on open, a payload cache, and a flush thread that
//! group-commits: many appends share one fsync, and openraft's `IOFlushed` callback fires
//! from that thread once the entries are durable.
//!
//! # Layout
//!
//! - [`config`]: [`LogStoreConfig`], its defaults and the memory bound they imply.
//! - `store`: [`LogStore`] and [`LogReader`]; the durability and ordering rules.
//! - [`codec`]: how openraft values are encoded into raft-log records.
//! - `types`: the raft-log `Types` binding and the flush callback.
//! - [`stats`]: [`LogStoreStats`] for metrics.
//! - [`error`]: [`OpenError`], [`StoreError`].
//!
//! # Invariants
//!
//! - The log is contiguous: entries exist exactly for indexes `(last_purged, last]`, which
//!   raft-log enforces on append and every read re-checks.
//! - Writes reach the disk in the order openraft issued them (one WAL, one flush thread).
//! - An append's callback reports success only after an fsync covering its records
//!   (unless the `fault-injection` feature's `fault_skip_fsync` is set).
//! - The stored vote never decreases (raft-log rejects a smaller one).
//! - Stored log ids (`(generation, log id)`) increase in append order, which raft-log's
//!   cache eviction and chunk removal rely on; see [`codec::StoredLogId`].

pub mod codec;
pub mod config;
pub mod error;
pub mod stats;
mod store;
mod types;

pub use config::ConfigError;
pub use config::LogStoreConfig;
pub use error::OpenError;
pub use error::StoreError;
pub use stats::LogStoreStats;
pub use store::LogReader;
pub use store::LogStore;
pub use types::FlushCallback;
pub use types::LogTypes;
