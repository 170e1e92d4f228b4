//! The binding between openraft's type config and raft-log's `Types`, and the flush
//! callback raft-log's flush thread invokes.
//!
//! Every bound this crate needs from a user's type config lives here, in the
//! `C: RaftTypeConfig` of [`LogTypes`]: openraft's `serde` feature (enabled workspace-wide)
//! already makes entries, votes and log ids `Serialize + Deserialize`, so any type config
//! whose `D`/`R` derive serde works unchanged.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::mpsc::SyncSender;

use openraft::storage::IOFlushed;
use openraft::RaftTypeConfig;

use crate::codec::EncodedEntry;
use crate::codec::StoreMeta;
use crate::codec::StoredLogId;
use crate::codec::StoredVote;

/// raft-log's `Types` for openraft type config `C`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTypes<C: RaftTypeConfig>(PhantomData<C>);

impl<C: RaftTypeConfig> raft_log::Types for LogTypes<C> {
    type LogId = StoredLogId<C>;
    type LogPayload = EncodedEntry;
    type Vote = StoredVote<C>;
    type Callback = FlushCallback<C>;
    type UserData = StoreMeta;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.id.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.len() as u64
    }
}

/// The raft-log log this crate drives.
pub(crate) type RaftLog<C> = raft_log::RaftLog<LogTypes<C>>;

/// Who to tell when a flush request has been written (and, if it asked, fsync'd).
///
/// raft-log calls [`raft_log::Callback::send`] from its flush thread once the request's
/// batch is done, in request order, with the batch's result.
pub enum FlushCallback<C: RaftTypeConfig> {
    /// openraft's completion: `append`'s callback, or a `signal` this crate awaits.
    Raft(IOFlushed<C>),
    /// A blocking waiter, for synchronous paths such as `open`.
    Blocking(SyncSender<io::Result<()>>),
}

impl<C: RaftTypeConfig> fmt::Debug for FlushCallback<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Raft(_) => f.write_str("FlushCallback::Raft"),
            Self::Blocking(_) => f.write_str("FlushCallback::Blocking"),
        }
    }
}

impl<C: RaftTypeConfig> raft_log::Callback for FlushCallback<C> {
    fn send(self, res: io::Result<()>) {
        if let Err(err) = &res {
            tracing::error!(error = %err, "raft log flush failed");
        }
        match self {
            Self::Raft(flushed) => flushed.io_completed(res),
            // The waiter may have given up; raft-log's own impl for `SyncSender` ignores a
            // closed channel, which is what we want then.
            Self::Blocking(tx) => raft_log::Callback::send(tx, res),
        }
    }
}
