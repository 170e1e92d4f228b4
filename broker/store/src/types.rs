//! Typed positions and identifiers of the storage engine.
//!
//! A CommitLog offset, a queue offset and a queue id are all integers; mixing them
//! up is the classic storage bug. Each gets its own newtype so the compiler
//! refuses `cq.unit_at(commit_log_offset)`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A byte position in the CommitLog, global across its mapped files.
///
/// The CommitLog is one logical byte stream; file `N` holds bytes
/// `[N * file_size, (N + 1) * file_size)` and is named by its first offset.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CommitLogOffset(pub u64);

/// A message's position in one (topic, queue): the index of its ConsumeQueue unit.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct QueueOffset(pub u64);

/// The id of a queue within a topic (`0..write_queue_nums`).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct QueueId(pub u32);

/// The Raft log id (term, index) of the entry that produced a record.
///
/// The broker uses openraft's "standard" leader id, where a committed leader id is
/// just the term, so (term, index) identifies a log entry completely.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RaftLogRef {
    pub term: u64,
    pub index: u64,
}

/// A 128-bit message id, fixed by the leader before proposing, unique per message.
/// A delayed, retried or dead-lettered message keeps its id in the topic it moves to
/// (as RocketMQ keeps its `UNIQ_KEY`), so one id may name several records: its path.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

/// The 64-bit hash of a message's tags string, stored in its ConsumeQueue unit so a
/// pull can skip non-matching messages without reading the CommitLog.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TagHash(pub u64);

impl CommitLogOffset {
    /// The offset `bytes` further on.
    pub fn advance(self, bytes: u64) -> Self {
        Self(self.0 + bytes)
    }
}

impl QueueOffset {
    /// The next queue offset.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl TagHash {
    /// The hash of "no tags". Messages without tags match only the `*` filter.
    pub const NONE: TagHash = TagHash(0);

    /// Hashes a tags string with 64-bit FNV-1a.
    ///
    /// The hash is part of the ConsumeQueue's on-disk format, so it must never
    /// change: FNV-1a is specified by its constants, unlike `std`'s hasher.
    pub fn of(tags: &str) -> Self {
        const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = FNV_OFFSET_BASIS;
        for byte in tags.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        // Zero is reserved for "no tags"; a real tag hashing to zero is nudged.
        TagHash(if hash == 0 { 1 } else { hash })
    }
}

impl MessageId {
    /// Parses the 32-hex-digit form produced by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        // `from_str_radix` alone would take a sign (`+F`).
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The 32 upper-case hex digits `Display` writes, without a formatter (a pull
    /// writes one per message).
    pub fn to_hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0; 32];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(byte >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(byte & 0xF)];
        }
        out
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for CommitLogOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for QueueOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for RaftLogRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_round_trips_through_text() {
        let id = MessageId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xff]);
        let text = id.to_string();
        assert_eq!(text, "000102030405060708090A0B0C0D0EFF");
        assert_eq!(MessageId::parse(&text), Some(id));
        assert_eq!(MessageId::parse(&text.to_lowercase()), Some(id));
        assert_eq!(MessageId::parse("00"), None);
        assert_eq!(MessageId::parse("zz0102030405060708090A0B0C0D0EFF"), None);
    }

    #[test]
    fn tag_hash_is_stable_and_never_zero() {
        // Fixed values: the hash is an on-disk format.
        assert_eq!(TagHash::of("TagA"), TagHash::of("TagA"));
        assert_ne!(TagHash::of("TagA"), TagHash::of("TagB"));
        assert_eq!(TagHash::of("").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(TagHash::of("a").0, 0xaf63_dc4c_8601_ec8c);
    }
}
