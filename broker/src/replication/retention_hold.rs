//! What retention must keep for the group's own later use, whatever the disk
//! pressure: the records of pending timers (the timer index reads them when they
//! fall due) and the half messages of open transactions (a commit reads them to
//! store their messages). A commit of a transaction whose half messages retention
//! had deleted would be answered COMMITTED and store nothing.
//!
//! The hold is the lowest CommitLog offset either needs (`MessageStore::
//! set_hold_floor`); it is recomputed after every change to either, on every
//! replica alike. The price is disk: a long timer or a transaction left open pins
//! every CommitLog file from its record on, until it is delivered or resolved
//! (a transaction at most `check_after + max_checks × check_interval`: 16 minutes
//! by default).

use std::sync::Mutex;

use super::state_machine::BrokerStateMachine;
use super::transactions::{HALF_QUEUE, HALF_TOPIC};
use crate::storage::CommitLogOffset;

/// Open transactions looked at for a stored first half message.
const MAX_LOOKS: usize = 16;

/// The half-queue offset last converted to a CommitLog offset, and the result:
/// the oldest open transaction rarely changes, and reading its record each time
/// would cost a read per transactional send.
#[derive(Debug, Default)]
pub struct HalfHoldCache(Mutex<Option<(u64, u64)>>);

impl HalfHoldCache {
    /// Forgets the conversion (the store's content was replaced).
    pub fn clear(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl BrokerStateMachine {
    /// Sets the store's hold floor to what pending timers and open transactions
    /// need now. Call it without the group state's lock.
    pub(super) fn hold_for_pending(&self) {
        let timers = self.shared.timers.retention_floor();
        let halves = self.oldest_half_record();
        let floor = timers.into_iter().chain(halves).min();
        self.shared.store.set_hold_floor(floor.map(CommitLogOffset));
    }

    /// The CommitLog offset of the oldest open transaction's first half message
    /// that is still stored. One stored before this build held halves may be
    /// gone already; the open transactions after it must still be held.
    fn oldest_half_record(&self) -> Option<u64> {
        let mut cache = self
            .shared
            .half_hold
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Retention deletes from the front: nothing below the queue's minimum
        // is stored, and above it a missing record is rare (a gap a crash
        // left), so a few looks suffice.
        let min = self
            .shared
            .store
            .queue_offsets(HALF_TOPIC, HALF_QUEUE)
            .map_or(0, |(min, _)| min.0);
        let candidates: Vec<u64> = self
            .shared
            .state()
            .transactions
            .first_halves_from(min)
            .take(MAX_LOOKS)
            .collect();
        for offset in candidates {
            if let Some((cached, record)) = *cache {
                if cached == offset {
                    return Some(record);
                }
            }
            match self.half_message(offset) {
                Ok(Some(half)) => {
                    *cache = Some((offset, half.commit_log_offset.0));
                    return Some(half.commit_log_offset.0);
                }
                Ok(None) => continue,
                Err(e) => {
                    // Keep the last hold rather than lift it on a read error.
                    tracing::warn!(error = %e, "cannot read an open transaction's half message");
                    return cache.map(|(_, record)| record);
                }
            }
        }
        *cache = None;
        None
    }
}
