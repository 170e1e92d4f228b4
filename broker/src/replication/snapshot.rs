//! Snapshots as CommitLog handles.
//!
//! A snapshot is "the CommitLog up to offset X" plus the group state (topics,
//! offsets, producers, membership) folded up to X. Building one costs a flush and a
//! small file: X is the CommitLog end when the builder was created, flushed before the
//! snapshot is reported, so the Raft log may be purged up to the snapshot's last log
//! id without losing an applied entry.
//!
//! Sending one streams only the bytes the follower lacks (`[follower_end, X)`, or the
//! leader's whole retained log when the follower is behind its minimum) into a
//! staging file on the follower; `install_snapshot` then moves the staged bytes into
//! the CommitLog. Staging keeps a transfer that breaks off half-way from putting
//! records into the CommitLog that normal replication would later apply again.
//!
//! ```text
//!  snapshot file (`<data>/snapshot/current`), replaced atomically
//!    0  4 magic       SNAPSHOT_MAGIC (format version 1)
//!    4  4 body_len    u32
//!    8    body        bincode (standard) of SnapshotFileBody
//!  end 4 crc32       of magic, body_len and body
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use tracing::{info, warn};

use super::error::StateMachineError;
use super::group_state::GroupState;
use super::type_config::SnapshotMeta;
use crate::storage::durable_file::{create_dir_durably, write_atomically};
use crate::storage::CommitLogOffset;

/// Magic of the snapshot file, format version 1.
pub const SNAPSHOT_MAGIC: u32 = 0x534E_5001;

/// The data of a snapshot, on either side of a transfer.
#[derive(Clone, Debug)]
pub struct CommitLogSnapshot {
    /// The snapshot covers the CommitLog below this offset.
    pub commit_log_end: CommitLogOffset,
    /// The encoded group state folded up to `commit_log_end`.
    pub state: Arc<Vec<u8>>,
    /// On a receiver: the bytes received into the staging file.
    pub staged: Option<StagedBytes>,
}

/// CommitLog bytes received from a leader, waiting in the staging file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedBytes {
    pub path: PathBuf,
    /// CommitLog offset of the first staged byte.
    pub start: CommitLogOffset,
    /// The follower's own CommitLog ends below the leader's minimum: discard it and
    /// start again at `start`.
    pub reset: bool,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFileBody {
    meta: SnapshotMeta,
    commit_log_end: CommitLogOffset,
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

/// Where a node keeps its current snapshot and its staging file.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The transfer being received: (start, reset, bytes staged so far).
    receiving: Mutex<Option<(CommitLogOffset, bool, u64)>>,
}

impl SnapshotFiles {
    /// Opens (creating) the snapshot directory.
    ///
    /// # Errors
    /// Creating the directory failed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        create_dir_durably(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            receiving: Mutex::new(None),
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// Path of the staging file.
    pub fn staging_path(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Saves the current snapshot durably.
    ///
    /// # Errors
    /// Writing failed; the previous snapshot file is intact.
    pub fn save(
        &self,
        meta: &SnapshotMeta,
        commit_log_end: CommitLogOffset,
        state: &[u8],
    ) -> std::io::Result<()> {
        let body = SnapshotFileBody {
            meta: meta.clone(),
            commit_log_end,
            state: state.to_vec(),
        };
        let encoded = bincode::serde::encode_to_vec(&body, bincode::config::standard())
            .map_err(std::io::Error::other)?;
        let len = u32::try_from(encoded.len())
            .map_err(|_| std::io::Error::other("snapshot state over 4 GiB"))?;
        let mut out = Vec::with_capacity(encoded.len() + 12);
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&encoded);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        write_atomically(&self.current_path(), &out)
    }

    /// Loads the current snapshot, if one was saved.
    ///
    /// # Errors
    /// The file exists but is damaged: refuse to start rather than forget it.
    pub fn load(&self) -> std::io::Result<Option<(SnapshotMeta, CommitLogSnapshot)>> {
        let path = self.current_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let damaged = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("snapshot file {}: {why}", path.display()),
            )
        };
        if bytes.len() < 12 {
            return Err(damaged("too short"));
        }
        let (content, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(content) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(damaged("checksum mismatch"));
        }
        if u32::from_le_bytes([content[0], content[1], content[2], content[3]]) != SNAPSHOT_MAGIC {
            return Err(damaged("bad magic"));
        }
        let len = u32::from_le_bytes([content[4], content[5], content[6], content[7]]) as usize;
        if content.len() != 8 + len {
            return Err(damaged("length mismatch"));
        }
        let (body, _): (SnapshotFileBody, usize) =
            bincode::serde::decode_from_slice(&content[8..], bincode::config::standard())
                .map_err(|e| damaged(&e.to_string()))?;
        Ok(Some((
            body.meta,
            CommitLogSnapshot {
                commit_log_end: body.commit_log_end,
                state: Arc::new(body.state),
                staged: None,
            },
        )))
    }

    /// Starts receiving a transfer that begins at `start` (discarding any earlier one).
    ///
    /// # Errors
    /// Creating the staging file failed.
    pub fn begin_receive(&self, start: CommitLogOffset, reset: bool) -> std::io::Result<()> {
        let mut receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        fs::File::create(self.staging_path())?;
        *receiving = Some((start, reset, 0));
        Ok(())
    }

    /// Appends a chunk at CommitLog offset `from` to the staging file.
    ///
    /// # Errors
    /// No transfer is being received, the chunk is not contiguous, or writing failed.
    pub fn receive_chunk(&self, from: CommitLogOffset, bytes: &[u8]) -> std::io::Result<()> {
        let mut receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        let Some((start, _, staged)) = receiving.as_mut() else {
            return Err(std::io::Error::other("no snapshot transfer in progress"));
        };
        if from.0 != start.0 + *staged {
            return Err(std::io::Error::other(format!(
                "snapshot chunk at {from} does not continue the staged bytes ending at {}",
                start.0 + *staged
            )));
        }
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.staging_path())?;
        file.write_all(bytes)?;
        *staged += bytes.len() as u64;
        Ok(())
    }

    /// The staged transfer, if it covers exactly `[start, end)`.
    ///
    /// # Errors
    /// Nothing was staged, or it does not end at `end`.
    pub fn staged_until(&self, end: CommitLogOffset) -> std::io::Result<StagedBytes> {
        let receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        match *receiving {
            Some((start, reset, staged)) if start.0 + staged == end.0 => Ok(StagedBytes {
                path: self.staging_path(),
                start,
                reset,
            }),
            Some((start, _, staged)) => Err(std::io::Error::other(format!(
                "staged bytes [{start}, {}) do not end at the snapshot end {end}",
                start.0 + staged
            ))),
            None => Err(std::io::Error::other("no snapshot bytes were staged")),
        }
    }

    /// Forgets the staged transfer and deletes its file.
    pub fn finish_receive(&self) {
        *self.receiving.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Best effort: a leftover staging file is overwritten by the next transfer.
        let _ = fs::remove_file(self.staging_path());
    }
}
/// Installing a received snapshot: its staged bytes go into the CommitLog (only
/// those past this replica's end), then its group state is adopted.
impl super::state_machine::BrokerStateMachine {
    /// Copies staged snapshot bytes into the CommitLog and adopts the snapshot's state.
    pub(super) fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: &CommitLogSnapshot,
    ) -> io::Result<()> {
        let store = &self.shared.store;
        let Some(staged) = &snapshot.staged else {
            // Re-installing our own snapshot (openraft may at start-up): its bytes are
            // ours already.
            if store.max_commit_log_offset() >= snapshot.commit_log_end {
                return Ok(());
            }
            return Err(StateMachineError::SnapshotPastLogEnd {
                covers: snapshot.commit_log_end,
                end: store.max_commit_log_offset(),
            }
            .into());
        };
        let state =
            GroupState::decode(&snapshot.state).map_err(StateMachineError::BadGroupState)?;
        if state.last_applied != meta.last_log_id {
            return Err(StateMachineError::StateNotMeta {
                state: state.last_applied,
                meta: meta.last_log_id,
            }
            .into());
        }
        if state.commit_log_end != snapshot.commit_log_end {
            return Err(StateMachineError::StateNotSnapshot {
                state: state.commit_log_end,
                snapshot: snapshot.commit_log_end,
            }
            .into());
        }
        let mut end = store.max_commit_log_offset();
        if staged.reset && end < staged.start {
            warn!(
                own_end = end.0,
                leader_start = staged.start.0,
                "commit log ends below the leader's minimum: resetting it"
            );
            store
                .reset_to(staged.start)
                .map_err(StateMachineError::Store)?;
            end = staged.start;
        }
        if end < staged.start {
            return Err(StateMachineError::StagedPastLogEnd {
                start: staged.start,
                end,
            }
            .into());
        }
        // Bytes below our end are already here (committed data is identical on every
        // replica): copy only the rest.
        let mut file = std::fs::File::open(&staged.path)?;
        let skip = end.0 - staged.start.0;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(skip))?;
        let file_size = store.config().commit_log_file_size_bytes;
        let mut buffer = vec![0u8; INSTALL_CHUNK_BYTES];
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        loop {
            while !eof && pending.len() < INSTALL_CHUNK_BYTES {
                let n = std::io::Read::read(&mut file, &mut buffer)?;
                eof = n == 0;
                pending.extend_from_slice(&buffer[..n]);
            }
            if pending.is_empty() {
                break;
            }
            // `append_commit_log_raw` takes whole records within one file.
            let to_file_end = (file_size - end.0 % file_size) as usize;
            let cut = whole_records(&pending[..pending.len().min(to_file_end)], end, file_size);
            if cut == 0 {
                if eof {
                    return Err(StateMachineError::StagedTornRecord { at: end }.into());
                }
                // A record longer than the buffer holds so far: read on.
                let n = std::io::Read::read(&mut file, &mut buffer)?;
                eof = n == 0;
                pending.extend_from_slice(&buffer[..n]);
                continue;
            }
            end = store
                .append_commit_log_raw(end, &pending[..cut])
                .map_err(StateMachineError::Store)?;
            pending.drain(..cut);
        }
        if end != snapshot.commit_log_end {
            return Err(StateMachineError::InstalledEndMismatch {
                end,
                expected: snapshot.commit_log_end,
            }
            .into());
        }
        store.flush().map_err(StateMachineError::Store)?;
        self.shared
            .snapshots
            .save(meta, snapshot.commit_log_end, &snapshot.state)?;
        store.set_retention_floor(snapshot.commit_log_end);
        // The installed bytes may hold timers the index never saw (and a reset
        // store none of those it saw): read the timer topic again.
        let delivered = state.timers.delivered;
        *self.shared.state_mut() = state;
        let pending = self
            .shared
            .timers
            .rebuild(store, delivered)
            .map_err(|e| StateMachineError::TimerIndex(e.to_string()))?;
        self.shared.half_hold.clear();
        self.hold_for_pending();
        info!(pending, "timer index rebuilt");
        self.shared.snapshots.finish_receive();
        self.shared.applied.send_modify(|n| *n = n.wrapping_add(1));
        self.shared.waiters.wake_all();
        info!(commit_log_end = end.0, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }
}

/// Staged snapshot bytes are copied into the CommitLog in pieces of this size.
const INSTALL_CHUNK_BYTES: usize = 4 << 20;

fn whole_records(bytes: &[u8], at: CommitLogOffset, file_size: u64) -> usize {
    use crate::storage::record::{decode, Decoded};
    let mut pos = 0usize;
    while pos < bytes.len() {
        let global = at.0 + pos as u64;
        let file_end = ((global / file_size + 1) * file_size - global) as usize;
        match decode(&bytes[pos..bytes.len().min(pos + file_end)]) {
            Ok(Decoded::Record(view)) => pos += view.size as usize,
            Ok(Decoded::Blank { len }) => pos += len as usize,
            _ => break,
        }
    }
    pos
}
