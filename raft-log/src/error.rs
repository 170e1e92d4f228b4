//! Errors of this crate.
//!
//! [`OpenError`] is what [`LogStore::open`](crate::LogStore::open) returns, with the
//! directory in every variant. Once open, the store speaks openraft's language: every trait
//! method returns `io::Error`, built from a [`StoreError`] (or raft-log's own `io::Error`,
//! which already says what went wrong).

use std::io;
use std::path::PathBuf;

use crate::codec::CodecError;
use crate::config::ConfigError;

/// Why a log store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The directory could not be created.
    #[error("creating log directory {dir}: {source}")]
    CreateDir {
        /// The configured directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// raft-log failed to open the directory: it is locked by another process
    /// (`WouldBlock`), or a chunk is damaged beyond a torn tail, or an I/O error.
    #[error("opening raft log in {dir}: {source}")]
    Open {
        /// The configured directory.
        dir: PathBuf,
        /// raft-log's error.
        source: io::Error,
    },

    /// The directory holds a raft-log written by something other than this crate (it has
    /// state but no [`StoreMeta`](crate::codec::StoreMeta)).
    #[error("{dir} holds a raft log without this store's metadata; refusing to use it")]
    ForeignLog {
        /// The configured directory.
        dir: PathBuf,
    },

    /// The directory was written with an encoding this version cannot read.
    #[error("{dir} is in log store format {found}; this build reads format {supported}")]
    UnsupportedFormat {
        /// The configured directory.
        dir: PathBuf,
        /// Format version found on disk.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },

    /// Persisting the metadata of a new store failed.
    #[error("initialising log store metadata in {dir}: {source}")]
    WriteMeta {
        /// The configured directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Failures of an open store, beyond raft-log's own I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// [`LogStore::close`](crate::LogStore::close) has run; readers outlived it.
    #[error("log store is closed")]
    Closed,

    /// A thread panicked while it held the store's lock, so the in-memory state may be
    /// half-updated: refuse to serve it.
    #[error("log store lock poisoned by a panic")]
    Poisoned,

    /// raft-log's flush thread dropped a callback without calling it (it stopped).
    #[error("flush thread stopped before reporting the flush of {what}")]
    FlushAborted {
        /// What was being flushed.
        what: &'static str,
    },

    /// A stored value did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// openraft asked to purge up to a log id that is not the entry at that index.
    #[error("purge up to {requested}: the log holds another entry at that index")]
    PurgeMismatch {
        /// The requested log id.
        requested: String,
    },

    /// The log returned entries that are not consecutive: an index is missing.
    #[error("hole in the log: expected index {expected}, found {found}")]
    Hole {
        /// The next index expected.
        expected: u64,
        /// The index found instead.
        found: u64,
    },
}

impl From<StoreError> for io::Error {
    fn from(err: StoreError) -> Self {
        let kind = match &err {
            StoreError::Closed => io::ErrorKind::NotConnected,
            StoreError::Poisoned | StoreError::FlushAborted { .. } => io::ErrorKind::Other,
            StoreError::Codec(_) | StoreError::Hole { .. } => io::ErrorKind::InvalidData,
            StoreError::PurgeMismatch { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, err)
    }
}
