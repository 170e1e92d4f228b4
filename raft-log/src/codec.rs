//! How openraft's values are stored in raft-log's records.
//!
//! raft-log frames, CRCs and orders the records; it asks its `Types` for a
//! [`codeq::Encode`]/[`codeq::Decode`] pair for the log id, the vote, the payload and the
//! user data. Each value here is written as one length-prefixed field
//!
//! ```text
//! u32 big-endian length | bincode 2 (serde, `config::standard()`) bytes
//! ```
//!
//! so a field never depends on bincode to find its own end, and a damaged length can only
//! make the read come up short (which raft-log's record CRC then rejects) rather than
//! allocate a huge buffer.
//!
//! The payload of an `Append` record is the whole openraft entry, log id included, encoded
//! once in [`EncodedEntry::encode_entry`] and kept encoded in raft-log's cache: the cache
//! then measures exact bytes, cloning a cached payload is an `Arc` bump, and decoding
//! happens once per read. [`EncodedEntry::decode_entry`] checks the decoded log id against
//! the one raft-log indexed, so a record served for the wrong index is caught on read.
//!
//! [`StoreMeta`] is kept in raft-log's user data (rewritten at the head of every chunk), and
//! carries the version of this encoding.

use std::cmp::Ordering;
use std::fmt;
use std::io;
use std::io::Read;
use std::io::Write;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use openraft::vote::RaftVote;
use openraft::RaftTypeConfig;
use raft_log::codeq;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the field encoding above, stored in [`StoreMeta`]. Bump it when the encoding
/// of any stored value changes, and teach `LogStore::open` to read the old one.
pub const FORMAT_VERSION: u32 = 1;

/// A stored value that could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// bincode could not encode a value.
    #[error("encoding {what}: {source}")]
    Encode {
        /// The kind of value.
        what: &'static str,
        /// bincode's error.
        source: bincode::error::EncodeError,
    },
    /// bincode could not decode a stored value.
    #[error("decoding {what} of {len} bytes: {source}")]
    Decode {
        /// The kind of value.
        what: &'static str,
        /// Length of the stored field.
        len: usize,
        /// bincode's error.
        source: bincode::error::DecodeError,
    },
    /// bincode decoded a value but left bytes of the field unread.
    #[error("decoding {what}: {trailing} trailing bytes after the value in a {len}-byte field")]
    TrailingBytes {
        /// The kind of value.
        what: &'static str,
        /// Length of the stored field.
        len: usize,
        /// Bytes left over.
        trailing: usize,
    },
    /// A value too large for the u32 length prefix.
    #[error("encoding {what}: {len} bytes exceed the 4 GiB field limit")]
    TooLarge {
        /// The kind of value.
        what: &'static str,
        /// Its encoded length.
        len: usize,
    },
    /// The entry stored for an index carries another log id than raft-log's index says.
    #[error("entry log id mismatch: raft-log indexed {indexed}, the stored entry says {stored}")]
    LogIdMismatch {
        /// The log id in raft-log's index.
        indexed: String,
        /// The log id inside the decoded entry.
        stored: String,
    },
}

impl From<CodecError> for io::Error {
    fn from(err: CodecError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

fn to_bincode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|source| CodecError::Encode { what, source })
}

fn from_bincode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let len = bytes.len();
    let (value, read) =
        bincode::serde::decode_from_slice::<T, _>(bytes, bincode::config::standard())
            .map_err(|source| CodecError::Decode { what, len, source })?;
    if read != len {
        return Err(CodecError::TrailingBytes {
            what,
            len,
            trailing: len - read,
        });
    }
    Ok(value)
}

/// Writes `u32 BE length | bytes`; returns the bytes written.
fn write_field<W: Write>(what: &'static str, bytes: &[u8], mut w: W) -> io::Result<usize> {
    let len = u32::try_from(bytes.len()).map_err(|_| CodecError::TooLarge {
        what,
        len: bytes.len(),
    })?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(4 + bytes.len())
}

/// Reads one `u32 BE length | bytes` field. A length beyond the data fails with
/// `UnexpectedEof` without allocating it: the buffer grows only with bytes actually read.
fn read_field<R: Read>(r: R) -> io::Result<Vec<u8>> {
    let mut r = r;
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u64::from(u32::from_be_bytes(len));
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// An openraft log id as raft-log's `LogId`, prefixed with a truncation generation.
///
/// raft-log orders its payload cache, its "evictable up to" mark and its chunk-removal test
/// by `LogId`, and so assumes log ids grow in append order. Raft log ids do not: a follower
/// that truncates a term-3 tail and then receives the new leader's term-2 entries appends
/// ids *smaller* than ones already written. raft-log 0.4.6 then (a) treats those new
/// entries as evictable although they sit in the open chunk, which it can only serve from
/// the cache, so reading them fails with "Chunk not found" (also after a restart), and
/// (b) never deletes the chunk holding the old term-3 tail, nor any chunk after it.
///
/// The store bumps `generation` at every truncation and at every open, and orders by
/// `(generation, log_id)`: the stored order is then the append order again, while within
/// one generation it is openraft's order. Only the store assigns generations; openraft
/// never sees them.
pub struct StoredLogId<C: RaftTypeConfig> {
    /// Truncation generation the record was appended in.
    pub generation: u64,
    /// openraft's log id.
    pub id: LogIdOf<C>,
}

impl<C: RaftTypeConfig> StoredLogId<C> {
    /// Pairs `id` with `generation`.
    pub fn new(generation: u64, id: LogIdOf<C>) -> Self {
        Self { generation, id }
    }
}

impl<C: RaftTypeConfig> Clone for StoredLogId<C> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation,
            id: self.id.clone(),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for StoredLogId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}:{}", self.generation, self.id)
    }
}

impl<C: RaftTypeConfig> PartialEq for StoredLogId<C> {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation && self.id == other.id
    }
}

impl<C: RaftTypeConfig> Eq for StoredLogId<C> {}

impl<C: RaftTypeConfig> PartialOrd for StoredLogId<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<C: RaftTypeConfig> Ord for StoredLogId<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.generation, &self.id).cmp(&(other.generation, &other.id))
    }
}

impl<C: RaftTypeConfig> codeq::Encode for StoredLogId<C> {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_field(
            "log id",
            &to_bincode("log id", &(self.generation, &self.id))?,
            w,
        )
    }
}

impl<C: RaftTypeConfig> codeq::Decode for StoredLogId<C> {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        let (generation, id) = from_bincode("log id", &read_field(r)?)?;
        Ok(Self { generation, id })
    }
}

/// An openraft vote as raft-log's `Vote`, with openraft's partial order: raft-log refuses
/// to store a vote that is not `>=` the stored one, which is exactly openraft's rule.
pub struct StoredVote<C: RaftTypeConfig>(pub VoteOf<C>);

impl<C: RaftTypeConfig> Clone for StoredVote<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: RaftTypeConfig> fmt::Debug for StoredVote<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<C: RaftTypeConfig> PartialEq for StoredVote<C> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<C: RaftTypeConfig> Eq for StoredVote<C> {}

impl<C: RaftTypeConfig> PartialOrd for StoredVote<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        RaftVote::partial_cmp(&self.0, &other.0)
    }
}

impl<C: RaftTypeConfig> codeq::Encode for StoredVote<C> {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_field("vote", &to_bincode("vote", &self.0)?, w)
    }
}

impl<C: RaftTypeConfig> codeq::Decode for StoredVote<C> {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        Ok(Self(from_bincode("vote", &read_field(r)?)?))
    }
}

/// One openraft entry, bincode-encoded: raft-log's `LogPayload`.
#[derive(Clone)]
pub struct EncodedEntry(Arc<Vec<u8>>);

impl EncodedEntry {
    /// Encodes `entry` (log id and payload).
    ///
    /// # Errors
    ///
    /// [`CodecError`] if bincode cannot encode the entry or it exceeds 4 GiB.
    pub fn encode_entry<C: RaftTypeConfig>(entry: &C::Entry) -> Result<Self, CodecError> {
        let bytes = to_bincode("entry", entry)?;
        if u32::try_from(bytes.len()).is_err() {
            return Err(CodecError::TooLarge {
                what: "entry",
                len: bytes.len(),
            });
        }
        Ok(Self(Arc::new(bytes)))
    }

    /// Decodes the entry and checks it carries `expected`, the log id raft-log indexed it
    /// under.
    ///
    /// # Errors
    ///
    /// [`CodecError`] if the bytes do not decode or the log ids differ.
    pub fn decode_entry<C: RaftTypeConfig>(
        &self,
        expected: &LogIdOf<C>,
    ) -> Result<C::Entry, CodecError> {
        let entry: C::Entry = from_bincode("entry", &self.0)?;
        let stored = entry.log_id();
        if &stored != expected {
            return Err(CodecError::LogIdMismatch {
                indexed: expected.to_string(),
                stored: stored.to_string(),
            });
        }
        Ok(entry)
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the encoding is empty (never, for a real entry).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for EncodedEntry {
    // raft-log formats records with `{:?}` in errors and logs: print the size, never the
    // message bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedEntry({} bytes)", self.0.len())
    }
}

impl codeq::Encode for EncodedEntry {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_field("entry", &self.0, w)
    }
}

impl codeq::Decode for EncodedEntry {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        Ok(Self(Arc::new(read_field(r)?)))
    }
}

/// What this crate stores in raft-log's user data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreMeta {
    /// [`FORMAT_VERSION`] of the writer that created the directory.
    pub format_version: u32,
}

impl codeq::Encode for StoreMeta {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_field("store meta", &to_bincode("store meta", self)?, w)
    }
}

impl codeq::Decode for StoreMeta {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        Ok(from_bincode("store meta", &read_field(r)?)?)
    }
}

#[cfg(test)]
mod tests {
    use codeq::Decode;
    use codeq::Encode;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::EntryPayload;

    use super::*;

    openraft::declare_raft_types!(Cfg);

    fn log_id(term: u64, index: u64) -> LogIdOf<Cfg> {
        LogIdOf::<Cfg>::new(
            <Cfg as RaftTypeConfig>::LeaderId::new_committed(term, 7),
            index,
        )
    }

    #[test]
    fn log_id_round_trips_and_orders_by_generation_then_openraft() -> io::Result<()> {
        let stored =
            |generation, term, index| StoredLogId::<Cfg>::new(generation, log_id(term, index));
        let a = stored(4, 2, 10);
        let mut buf = Vec::new();
        let n = a.encode(&mut buf)?;
        assert_eq!(n, buf.len());
        assert_eq!(StoredLogId::<Cfg>::decode(buf.as_slice())?, a);

        // Within a generation: openraft's order.
        assert!(stored(0, 1, 99) < stored(0, 2, 1));
        assert!(stored(0, 2, 1) < stored(0, 2, 2));
        // Across generations: append order, whatever the terms.
        assert!(stored(0, 3, 200) < stored(1, 2, 10));
        Ok(())
    }

    #[test]
    fn entry_round_trips_and_checks_its_log_id() -> Result<(), CodecError> {
        let entry =
            <Cfg as RaftTypeConfig>::Entry::new(log_id(3, 5), EntryPayload::Normal("hello".into()));
        let encoded = EncodedEntry::encode_entry::<Cfg>(&entry)?;
        let decoded = encoded.decode_entry::<Cfg>(&log_id(3, 5))?;
        assert_eq!(decoded, entry);

        let err = encoded
            .decode_entry::<Cfg>(&log_id(3, 6))
            .expect_err("wrong index");
        assert!(matches!(err, CodecError::LogIdMismatch { .. }), "{err}");
        Ok(())
    }

    #[test]
    fn truncated_field_fails_without_allocating_its_length() {
        // Length says 4 GiB - 1, only 3 bytes follow.
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = EncodedEntry::decode(bytes.as_slice()).expect_err("short field");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn trailing_bytes_in_a_field_are_rejected() -> io::Result<()> {
        let mut field = to_bincode("store meta", &StoreMeta { format_version: 1 })?;
        field.push(0);
        let mut buf = Vec::new();
        write_field("store meta", &field, &mut buf)?;
        let err = StoreMeta::decode(buf.as_slice()).expect_err("trailing byte");
        assert!(err.to_string().contains("trailing"), "{err}");
        Ok(())
    }
}
