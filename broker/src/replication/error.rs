//! [`StateMachineError`]: why applying an entry, building a snapshot or installing
//! one failed on this node.
//!
//! openraft takes an `io::Error` from the state machine and stops the group's Raft
//! on one (a storage failure is fatal to the node: `service::health` reports it).
//! The error travels inside that `io::Error` with its type (`io::Error::other`),
//! not flattened into a string, so the store's error — its file, offset and OS
//! error — stays a [`StoreError`] for whoever reads the chain.

use std::io;

use super::type_config::LogId;
use crate::storage::{CommitLogOffset, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// The message store failed (I/O, corruption, a full disk).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The timer index could not be written or rebuilt (it is derived: a restart
    /// rebuilds it).
    #[error("the timer index: {0}")]
    TimerIndex(String),
    /// A snapshot's group state does not decode.
    #[error("damaged group state in a snapshot: {0}")]
    BadGroupState(String),
    /// A snapshot's group state was taken at another log position than its meta says.
    #[error("snapshot state applied {state:?} differs from its meta {meta:?}")]
    StateNotMeta {
        state: Option<LogId>,
        meta: Option<LogId>,
    },
    /// A snapshot's group state claims another CommitLog end than the snapshot.
    #[error("snapshot state ends the commit log at {state}, the snapshot at {snapshot}")]
    StateNotSnapshot {
        state: CommitLogOffset,
        snapshot: CommitLogOffset,
    },
    /// A snapshot covers CommitLog bytes this node does not have.
    #[error("the snapshot covers the commit log up to {covers} but it ends at {end}")]
    SnapshotPastLogEnd {
        covers: CommitLogOffset,
        end: CommitLogOffset,
    },
    /// Retention removed records that a snapshot needs replayed after it.
    #[error("the saved snapshot ends at {snapshot_end} but the commit log now starts at {log_start}: records to replay are gone")]
    ReplayGone {
        snapshot_end: CommitLogOffset,
        log_start: CommitLogOffset,
    },
    /// Received snapshot bytes start past this node's CommitLog end (a gap).
    #[error("staged snapshot bytes start at {start} beyond this commit log's end {end}")]
    StagedPastLogEnd {
        start: CommitLogOffset,
        end: CommitLogOffset,
    },
    /// Received snapshot bytes end inside a record.
    #[error("staged snapshot bytes end inside a record at {at}")]
    StagedTornRecord { at: CommitLogOffset },
    /// Installing received bytes did not end where the snapshot says.
    #[error("after installing, the commit log ends at {end}, not at the snapshot's {expected}")]
    InstalledEndMismatch {
        end: CommitLogOffset,
        expected: CommitLogOffset,
    },
    /// A blocking task of the state machine panicked or was cancelled.
    #[error("a state machine task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<StateMachineError> for io::Error {
    fn from(error: StateMachineError) -> Self {
        io::Error::other(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_error_stays_typed_inside_the_io_error() {
        let error: io::Error = StateMachineError::Store(StoreError::Corrupt {
            file: "commitlog".into(),
            offset: 42,
            reason: "crc".into(),
        })
        .into();
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<StateMachineError>())
            .expect("the typed error is kept");
        assert!(matches!(
            inner,
            StateMachineError::Store(StoreError::Corrupt { offset: 42, .. })
        ));
        assert_eq!(
            error.to_string(),
            "corrupt data in commitlog at offset 42: crc"
        );
    }
}
