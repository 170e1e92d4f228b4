//! The checkpoint: what was durable at the last flush, so recovery knows where to
//! start validating and what it may treat as a torn tail.
//!
//! ```text
//!  checkpoint file (little-endian), replaced atomically (tmp → fsync → rename → fsync dir)
//!    0  4 magic                 CHECKPOINT_MAGIC (format version 2; version 1 is read too)
//!    4  4 flags                 FLAG_CLEAN_SHUTDOWN | FLAG_HAS_TAIL_RAFT
//!    8  8 flushed               CommitLog offset: every CommitLog byte, ConsumeQueue unit
//!                               and index entry for records below it was durable
//!   16  8 tail_store_timestamp  ms, of the last record below `flushed`
//!   24  8 tail_raft_term        } Raft log id of that record
//!   32  8 tail_raft_index       }
//!   40  8 index_rebuild_from    begin offset of the index file then being written
//!   48  8 written_at            ms
//!   56  4 queue_count
//!   60    queues: queue_count × { u8 len + topic, u32 queue_id, u64 max_offset }
//!       4 dropped_count         } version 2 only
//!         dropped: dropped_count × { u8 len + topic, u64 tombstone }
//!  end  4 crc32                 CRC-32 of every byte before it
//! ```
//!
//! The queue list lets recovery notice a ConsumeQueue that is missing or shorter than
//! it was when checkpointed, and rebuild it from the CommitLog. The dropped list
//! holds the tombstones of deleted topics (see `tombstones`), so a rebuild never
//! brings back a deleted topic's records.

use std::path::Path;

use super::commit_log::TailState;
use super::durable_file::write_atomically;
use super::error::{StoreError, StoreResult};
use super::types::{CommitLogOffset, QueueId, QueueOffset, RaftLogRef};

/// Magic of a checkpoint file, format version 2 (adds the dropped topics).
pub const CHECKPOINT_MAGIC: u32 = 0x434B_5002;
/// Magic of format version 1, still read: no dropped topics.
const CHECKPOINT_MAGIC_V1: u32 = 0x434B_5001;
const FLAG_CLEAN_SHUTDOWN: u32 = 1 << 0;
const FLAG_HAS_TAIL_RAFT: u32 = 1 << 1;
const FIXED_LEN: usize = 60;

/// The decoded checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The store was closed cleanly (everything flushed, nothing written since).
    pub clean_shutdown: bool,
    pub flushed: CommitLogOffset,
    pub tail: TailState,
    pub index_rebuild_from: CommitLogOffset,
    pub written_at_ms: u64,
    pub queues: Vec<(String, QueueId, QueueOffset)>,
    /// Tombstones of dropped topics: their records below the offset are gone.
    pub dropped_topics: Vec<(String, CommitLogOffset)>,
}

impl Checkpoint {
    /// Encodes the checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.queues.len() * 32 + 4);
        let mut flags = 0;
        if self.clean_shutdown {
            flags |= FLAG_CLEAN_SHUTDOWN;
        }
        if self.tail.last_raft.is_some() {
            flags |= FLAG_HAS_TAIL_RAFT;
        }
        let raft = self.tail.last_raft.unwrap_or_default();
        out.extend_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.flushed.0.to_le_bytes());
        out.extend_from_slice(&self.tail.last_store_timestamp_ms.to_le_bytes());
        out.extend_from_slice(&raft.term.to_le_bytes());
        out.extend_from_slice(&raft.index.to_le_bytes());
        out.extend_from_slice(&self.index_rebuild_from.0.to_le_bytes());
        out.extend_from_slice(&self.written_at_ms.to_le_bytes());
        let count = u32::try_from(self.queues.len()).expect("fewer than 2^32 queues");
        out.extend_from_slice(&count.to_le_bytes());
        debug_assert_eq!(out.len(), FIXED_LEN);
        for (topic, queue_id, max) in &self.queues {
            let len = u8::try_from(topic.len()).expect("topic names are at most 127 bytes");
            out.push(len);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&queue_id.0.to_le_bytes());
            out.extend_from_slice(&max.0.to_le_bytes());
        }
        let dropped = u32::try_from(self.dropped_topics.len()).expect("fewer than 2^32 topics");
        out.extend_from_slice(&dropped.to_le_bytes());
        for (topic, tombstone) in &self.dropped_topics {
            let len = u8::try_from(topic.len()).expect("topic names are at most 127 bytes");
            out.push(len);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&tombstone.0.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a checkpoint; `path` names the file in errors.
    ///
    /// # Errors
    /// Bad magic, checksum or lengths.
    pub fn decode(bytes: &[u8], path: &Path) -> StoreResult<Self> {
        let corrupt = |offset: usize, reason: &str| StoreError::Corrupt {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: reason.to_string(),
        };
        if bytes.len() < FIXED_LEN + 4 {
            return Err(corrupt(0, "checkpoint too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != stored {
            return Err(corrupt(body.len(), "checkpoint checksum mismatch"));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version2 = match u32_at(0) {
            CHECKPOINT_MAGIC => true,
            CHECKPOINT_MAGIC_V1 => false,
            _ => return Err(corrupt(0, "bad checkpoint magic")),
        };
        let flags = u32_at(4);
        let tail_raft = (flags & FLAG_HAS_TAIL_RAFT != 0).then(|| RaftLogRef {
            term: u64_at(24),
            index: u64_at(32),
        });
        let count = u32_at(56) as usize;
        let mut queues = Vec::with_capacity(count.min(1 << 16));
        let mut pos = FIXED_LEN;
        for _ in 0..count {
            let len = usize::from(
                *body
                    .get(pos)
                    .ok_or_else(|| corrupt(pos, "queue list truncated"))?,
            );
            let end = pos + 1 + len + 4 + 8;
            if end > body.len() {
                return Err(corrupt(pos, "queue list truncated"));
            }
            let topic = std::str::from_utf8(&body[pos + 1..pos + 1 + len])
                .map_err(|_| corrupt(pos, "queue topic is not UTF-8"))?
                .to_string();
            let queue_id = QueueId(u32_at(pos + 1 + len));
            let max = QueueOffset(u64_at(pos + 1 + len + 4));
            queues.push((topic, queue_id, max));
            pos = end;
        }
        let mut dropped_topics = Vec::new();
        if version2 {
            if pos + 4 > body.len() {
                return Err(corrupt(pos, "dropped topic count truncated"));
            }
            let count = u32_at(pos) as usize;
            pos += 4;
            for _ in 0..count {
                let len = usize::from(
                    *body
                        .get(pos)
                        .ok_or_else(|| corrupt(pos, "dropped topic list truncated"))?,
                );
                let end = pos + 1 + len + 8;
                if end > body.len() {
                    return Err(corrupt(pos, "dropped topic list truncated"));
                }
                let topic = std::str::from_utf8(&body[pos + 1..pos + 1 + len])
                    .map_err(|_| corrupt(pos, "dropped topic is not UTF-8"))?
                    .to_string();
                dropped_topics.push((topic, CommitLogOffset(u64_at(pos + 1 + len))));
                pos = end;
            }
        }
        if pos != body.len() {
            return Err(corrupt(pos, "trailing bytes after the lists"));
        }
        Ok(Self {
            clean_shutdown: flags & FLAG_CLEAN_SHUTDOWN != 0,
            flushed: CommitLogOffset(u64_at(8)),
            tail: TailState {
                last_raft: tail_raft,
                last_store_timestamp_ms: u64_at(16),
            },
            index_rebuild_from: CommitLogOffset(u64_at(40)),
            written_at_ms: u64_at(48),
            queues,
            dropped_topics,
        })
    }

    /// Reads the checkpoint at `path`; `None` if there is none.
    ///
    /// # Errors
    /// It exists but cannot be read or decoded.
    pub fn load(path: &Path) -> StoreResult<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => Self::decode(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Writes the checkpoint durably and atomically.
    ///
    /// # Errors
    /// The write failed; the previous checkpoint is intact.
    pub fn store(&self, path: &Path) -> StoreResult<()> {
        write_atomically(path, &self.encode()).map_err(|e| StoreError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let checkpoint = Checkpoint {
            clean_shutdown: true,
            flushed: CommitLogOffset(12345),
            tail: TailState {
                last_raft: Some(RaftLogRef { term: 3, index: 77 }),
                last_store_timestamp_ms: 99,
            },
            index_rebuild_from: CommitLogOffset(4096),
            written_at_ms: 5,
            queues: vec![("orders".into(), QueueId(2), QueueOffset(40))],
            dropped_topics: vec![("gone".into(), CommitLogOffset(777))],
        };
        let bytes = checkpoint.encode();
        let path = Path::new("checkpoint");
        assert_eq!(
            Checkpoint::decode(&bytes, path).expect("decodes"),
            checkpoint
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                Checkpoint::decode(&bad, path).is_err(),
                "flip at {i} accepted"
            );
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1], path).is_err());
    }

    #[test]
    fn reads_version_1_without_dropped_topics() {
        let checkpoint = Checkpoint {
            flushed: CommitLogOffset(64),
            queues: vec![("orders".into(), QueueId(1), QueueOffset(3))],
            ..Checkpoint::default()
        };
        let mut bytes = checkpoint.encode();
        // A version-1 file: the old magic, no dropped list (its 4-byte count is the
        // last field before the CRC here, as the list is empty).
        bytes.truncate(bytes.len() - 8);
        bytes[0..4].copy_from_slice(&CHECKPOINT_MAGIC_V1.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = Path::new("checkpoint");
        assert_eq!(
            Checkpoint::decode(&bytes, path).expect("decodes"),
            checkpoint
        );
    }
}
