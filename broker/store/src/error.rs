//! The storage engine's error type.
//!
//! Variants carry the numbers that explain them (file, offset, expected and actual
//! values) so a log line or an API error says what went wrong where.

use std::io;
use std::path::PathBuf;

use super::record::RecordError;
use super::types::{CommitLogOffset, QueueOffset};

/// Every failure of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system I/O call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk below the durable (checkpointed) position failed validation.
    /// Recovery refuses to open rather than silently dropping acknowledged data.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        /// Global offset (CommitLog offset, or byte offset in a queue) of the bad bytes.
        offset: u64,
        reason: String,
    },

    /// A record read back at runtime failed validation.
    #[error("bad record at commit log offset {offset}: {source}")]
    BadRecord {
        offset: CommitLogOffset,
        #[source]
        source: RecordError,
    },

    /// The store directory is locked by another process.
    #[error("store directory {path} is in use by another process")]
    Locked { path: PathBuf },

    /// A configuration value is out of range; `key` names it.
    #[error("invalid storage configuration `{key}`: {reason}")]
    Config { key: &'static str, reason: String },

    /// A message was rejected before anything was written.
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// An encoded message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge { size: u64, max: u64 },

    /// The requested CommitLog position was deleted by retention.
    #[error("commit log offset {requested} is below the minimum {min}")]
    CommitLogOffsetTooSmall {
        requested: CommitLogOffset,
        min: CommitLogOffset,
    },

    /// The requested CommitLog position is beyond what has been written.
    #[error("commit log offset {requested} is beyond the end {max}")]
    CommitLogOffsetOverflow {
        requested: CommitLogOffset,
        max: CommitLogOffset,
    },

    /// The requested queue position was deleted by retention.
    #[error("queue offset {requested} is below the minimum {min}")]
    QueueOffsetTooSmall {
        requested: QueueOffset,
        min: QueueOffset,
    },

    /// Raw CommitLog bytes offered for appending do not continue this log.
    #[error("raw append at {offered} does not continue the commit log ending at {end}")]
    NotContiguous {
        offered: CommitLogOffset,
        end: CommitLogOffset,
    },

    /// An earlier write failed half-way; the store refuses writes until reopened,
    /// when recovery repairs it from the CommitLog.
    #[error("store is failed after an earlier write error; reopen to recover")]
    Failed,

    /// The record belongs to a topic deleted after it was stored.
    #[error("the message at commit log offset {offset} belongs to topic {topic}, deleted since")]
    TopicDropped {
        topic: String,
        offset: CommitLogOffset,
    },
}

impl StoreError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of the storage engine.
pub type StoreResult<T> = Result<T, StoreError>;
