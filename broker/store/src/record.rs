//! The on-disk layout of a CommitLog record — a protocol, not an implementation detail.
//!
//! All integers are little-endian. A record never spans two CommitLog files; the tail
//! of a file too short for the next record holds a [blank record](BLANK_MAGIC).
//!
//! ```text
//!  offset size field
//!       0    4 total_size          u32  whole record, this field included
//!       4    4 magic               u32  MESSAGE_MAGIC | CONTROL_MAGIC | BLANK_MAGIC (format version inside)
//!       8    4 crc32               u32  CRC-32 (IEEE) of bytes [12, total_size): every field and the body
//!      12    4 flags               u32  FLAG_*
//!      16    4 queue_id            u32
//!      20    8 queue_offset        u64  assigned at append: index of the ConsumeQueue unit
//!      28    8 physical_offset     u64  assigned at append: CommitLog offset of byte 0 of this record
//!      36    8 born_timestamp      u64  ms, as the producer (or the leader on its behalf) saw it
//!      44    8 store_timestamp     u64  ms, fixed by the leader, made monotonic by the store
//!      52    4 reconsume_times     u32
//!      56    8 raft_term           u64  } the Raft log id of the entry that produced this record
//!      64    8 raft_index          u64  }
//!      72    4 entry_record_index  u32  } this record's position among the records of that entry;
//!      76    4 entry_record_count  u32  } recovery drops an entry whose records are not all present
//!      80   16 msg_id              [u8; 16]
//!      96    8 producer_sequence   u64  meaningful when FLAG_HAS_PRODUCER
//!     104      variable section, each field length-prefixed:
//!              u8  len + topic            (UTF-8; 1..=127 bytes for messages and for control records
//!                                          with FLAG_DROPS_TOPIC, empty for other control records)
//!              u8  len + producer_id      (UTF-8)
//!              u8  len + born_host        (UTF-8)
//!              u16 len + tags             (UTF-8; empty = no tags)
//!              u16 len + keys             repeated { u16 len + key (UTF-8) }
//!              u32 len + properties       repeated { u16 len + name, u16 len + value } (UTF-8, sorted by name)
//!              u32 len + body
//! ```
//!
//! A blank record is just `total_size` (the bytes left in the file) and `BLANK_MAGIC`;
//! the rest of it is zero. Eight zero bytes where a record should start mean "end of
//! written data".
//!
//! [`decode`] validates everything (size, magic, CRC, flags, every length and UTF-8)
//! and never panics, whatever bytes it is given.

use std::collections::BTreeMap;

use super::types::{CommitLogOffset, MessageId, QueueId, QueueOffset, RaftLogRef};

/// Field offsets within a record.
pub mod layout {
    pub const TOTAL_SIZE: usize = 0;
    pub const MAGIC: usize = 4;
    pub const CRC: usize = 8;
    /// The CRC covers everything from here to the end of the record.
    pub const CRC_START: usize = 12;
    pub const FLAGS: usize = 12;
    pub const QUEUE_ID: usize = 16;
    pub const QUEUE_OFFSET: usize = 20;
    pub const PHYSICAL_OFFSET: usize = 28;
    pub const BORN_TIMESTAMP: usize = 36;
    pub const STORE_TIMESTAMP: usize = 44;
    pub const RECONSUME_TIMES: usize = 52;
    pub const RAFT_TERM: usize = 56;
    pub const RAFT_INDEX: usize = 64;
    pub const ENTRY_RECORD_INDEX: usize = 72;
    pub const ENTRY_RECORD_COUNT: usize = 76;
    pub const MSG_ID: usize = 80;
    pub const PRODUCER_SEQUENCE: usize = 96;
    /// Where the variable section starts.
    pub const FIXED_LEN: usize = 104;
    /// The smallest variable section: every length prefix, every field empty.
    pub const MIN_VARIABLE_LEN: usize = 1 + 1 + 1 + 2 + 2 + 4 + 4;
    /// The smallest possible message or control record.
    pub const MIN_RECORD_LEN: usize = FIXED_LEN + MIN_VARIABLE_LEN;
    /// A blank record: total_size + magic.
    pub const BLANK_LEN: usize = 8;
}

const _: () = assert!(layout::PRODUCER_SEQUENCE + 8 == layout::FIXED_LEN);
const _: () = assert!(layout::MSG_ID + 16 == layout::PRODUCER_SEQUENCE);
const _: () = assert!(layout::ENTRY_RECORD_COUNT + 4 == layout::MSG_ID);
const _: () = assert!(layout::CRC + 4 == layout::CRC_START);

/// Magic of a message record, format version 1.
pub const MESSAGE_MAGIC: u32 = 0x4D53_4701;
/// Magic of a control record (an opaque payload for the layer above, not dispatched
/// to any ConsumeQueue), format version 1.
pub const CONTROL_MAGIC: u32 = 0x4354_4C01;
/// Magic of the blank record that fills the end of a CommitLog file.
pub const BLANK_MAGIC: u32 = 0x424C_4B01;

/// The body was given as base64 (binary); pulls return it as `body_base64`.
pub const FLAG_BINARY_BODY: u32 = 1 << 0;
/// `producer_id` and `producer_sequence` are set (idempotent send).
pub const FLAG_HAS_PRODUCER: u32 = 1 << 1;
/// On a control record: its `topic` was deleted here. Every message of that topic
/// before this record is gone (no ConsumeQueue, index hit or query answers it), and
/// the topic's queues start again at offset 0 after it. The store acts on it while
/// dispatching, so replicas, recoveries and snapshot installs all drop the same data.
pub const FLAG_DROPS_TOPIC: u32 = 1 << 2;
/// Every flag this version knows; any other bit set means a newer or corrupt record.
pub const KNOWN_FLAGS: u32 = FLAG_BINARY_BODY | FLAG_HAS_PRODUCER | FLAG_DROPS_TOPIC;

/// Largest topic name in bytes (shared/API.md: 1..=127 characters).
pub const MAX_TOPIC_LEN: usize = 127;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record needs {needed} bytes but only {available} are there")]
    Truncated { needed: u64, available: u64 },
    #[error("unknown magic {0:#010x}")]
    BadMagic(u32),
    #[error("impossible record size {0}")]
    BadSize(u32),
    #[error("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u32),
    #[error("field `{field}`: {reason}")]
    BadField {
        field: &'static str,
        reason: &'static str,
    },
}

/// What kind of record a magic announces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A message, dispatched to its ConsumeQueue and the index.
    Message,
    /// An opaque payload of the layer above (the Raft state machine's own commands).
    Control,
}

/// The fixed-size fields of a message or control record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub flags: u32,
    pub queue_id: QueueId,
    pub queue_offset: QueueOffset,
    pub physical_offset: CommitLogOffset,
    pub born_timestamp_ms: u64,
    pub store_timestamp_ms: u64,
    pub reconsume_times: u32,
    pub raft: RaftLogRef,
    pub entry_record_index: u32,
    pub entry_record_count: u32,
    pub msg_id: MessageId,
    pub producer_sequence: u64,
}

/// The variable-size fields of a record, as given for encoding.
#[derive(Copy, Clone, Debug)]
pub struct RecordContent<'a> {
    pub topic: &'a str,
    pub producer_id: &'a str,
    pub born_host: &'a str,
    pub tags: &'a str,
    pub keys: &'a [String],
    pub properties: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

/// A record decoded in place: fixed fields copied out, variable fields borrowed.
#[derive(Copy, Clone, Debug)]
pub struct RecordView<'a> {
    pub meta: RecordMeta,
    /// Total encoded size in bytes.
    pub size: u32,
    pub topic: &'a str,
    pub producer_id: &'a str,
    pub born_host: &'a str,
    pub tags: &'a str,
    keys_raw: &'a [u8],
    properties_raw: &'a [u8],
    pub body: &'a [u8],
}

/// What [`decode`] found at a position.
// A short-lived return value on the read path: boxing the view would cost an
// allocation per record read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A valid message or control record.
    Record(RecordView<'a>),
    /// A blank record of `len` bytes: the rest of this file is unused.
    Blank { len: u32 },
    /// Zeros: nothing was ever written here.
    End,
}

/// Returns the encoded size of a record with this content, or why it cannot be encoded.
///
/// # Errors
/// A field longer than its length prefix allows.
pub fn encoded_len(content: &RecordContent<'_>) -> Result<usize, RecordError> {
    fn bounded(len: usize, max: usize, field: &'static str) -> Result<usize, RecordError> {
        if len > max {
            return Err(RecordError::BadField {
                field,
                reason: "too long for its length prefix",
            });
        }
        Ok(len)
    }
    let u16_max = usize::from(u16::MAX);
    let mut len = layout::FIXED_LEN;
    len += 1 + bounded(content.topic.len(), MAX_TOPIC_LEN, "topic")?;
    len += 1 + bounded(
        content.producer_id.len(),
        usize::from(u8::MAX),
        "producer_id",
    )?;
    len += 1 + bounded(content.born_host.len(), usize::from(u8::MAX), "born_host")?;
    len += 2 + bounded(content.tags.len(), u16_max, "tags")?;
    let mut keys_len = 0usize;
    for key in content.keys {
        keys_len += 2 + bounded(key.len(), u16_max, "keys")?;
    }
    len += 2 + bounded(keys_len, u16_max, "keys")?;
    let mut properties_len = 0usize;
    for (name, value) in content.properties {
        properties_len += 2 + bounded(name.len(), u16_max, "properties")?;
        properties_len += 2 + bounded(value.len(), u16_max, "properties")?;
    }
    len += 4 + bounded(properties_len, u32::MAX as usize, "properties")?;
    len += 4 + bounded(content.body.len(), u32::MAX as usize, "body")?;
    bounded(len, u32::MAX as usize, "total_size")
}

/// Encodes a record into `buf`, which must be exactly [`encoded_len`] bytes long.
///
/// # Panics
/// If `buf` has the wrong length, or the content was not checked by [`encoded_len`]:
/// both are bugs of the caller, which sizes the buffer from that very function.
pub fn encode_into(buf: &mut [u8], meta: &RecordMeta, content: &RecordContent<'_>) {
    let magic = match meta.kind {
        RecordKind::Message => MESSAGE_MAGIC,
        RecordKind::Control => CONTROL_MAGIC,
    };
    assert!(
        meta.flags & !KNOWN_FLAGS == 0,
        "encoding unknown flags {:#x}",
        meta.flags
    );
    let total = u32::try_from(buf.len()).expect("record size checked by encoded_len");
    let mut w = Writer { buf, pos: 0 };
    w.u32(total);
    w.u32(magic);
    w.u32(0); // CRC, filled in last
    w.u32(meta.flags);
    w.u32(meta.queue_id.0);
    w.u64(meta.queue_offset.0);
    w.u64(meta.physical_offset.0);
    w.u64(meta.born_timestamp_ms);
    w.u64(meta.store_timestamp_ms);
    w.u32(meta.reconsume_times);
    w.u64(meta.raft.term);
    w.u64(meta.raft.index);
    w.u32(meta.entry_record_index);
    w.u32(meta.entry_record_count);
    w.bytes(&meta.msg_id.0);
    w.u64(meta.producer_sequence);
    debug_assert_eq!(w.pos, layout::FIXED_LEN);
    w.u8_prefixed(content.topic.as_bytes());
    w.u8_prefixed(content.producer_id.as_bytes());
    w.u8_prefixed(content.born_host.as_bytes());
    w.u16_prefixed(content.tags.as_bytes());
    let keys_len: usize = content.keys.iter().map(|k| 2 + k.len()).sum();
    w.u16(u16::try_from(keys_len).expect("checked by encoded_len"));
    for key in content.keys {
        w.u16_prefixed(key.as_bytes());
    }
    let properties_len: usize = content
        .properties
        .iter()
        .map(|(n, v)| 4 + n.len() + v.len())
        .sum();
    w.u32(u32::try_from(properties_len).expect("checked by encoded_len"));
    for (name, value) in content.properties {
        w.u16_prefixed(name.as_bytes());
        w.u16_prefixed(value.as_bytes());
    }
    w.u32(u32::try_from(content.body.len()).expect("checked by encoded_len"));
    w.bytes(content.body);
    assert_eq!(w.pos, w.buf.len(), "record buffer not sized by encoded_len");
    let crc = crc32fast::hash(&w.buf[layout::CRC_START..]);
    w.buf[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Writes a blank record header filling `buf` (the rest of a file).
///
/// # Panics
/// If `buf` is shorter than [`layout::BLANK_LEN`]: the writer always leaves room for it.
pub fn encode_blank(buf: &mut [u8]) {
    assert!(buf.len() >= layout::BLANK_LEN, "no room for a blank record");
    let len = u32::try_from(buf.len()).expect("file sizes fit in u32");
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&BLANK_MAGIC.to_le_bytes());
}

/// Decodes the record at the start of `buf`, which runs to the end of the readable
/// bytes (for a CommitLog file, at most to the end of the file).
///
/// # Errors
/// Whatever makes the bytes not a complete, valid record.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, RecordError> {
    let available = buf.len() as u64;
    if buf.len() < layout::BLANK_LEN {
        return Err(RecordError::Truncated {
            needed: layout::BLANK_LEN as u64,
            available,
        });
    }
    let total = read_u32(buf, layout::TOTAL_SIZE);
    let magic = read_u32(buf, layout::MAGIC);
    let kind = match magic {
        0 if total == 0 => return Ok(Decoded::End),
        BLANK_MAGIC => {
            if (total as usize) < layout::BLANK_LEN || u64::from(total) > available {
                return Err(RecordError::BadSize(total));
            }
            return Ok(Decoded::Blank { len: total });
        }
        MESSAGE_MAGIC => RecordKind::Message,
        CONTROL_MAGIC => RecordKind::Control,
        other => return Err(RecordError::BadMagic(other)),
    };
    if (total as usize) < layout::MIN_RECORD_LEN {
        return Err(RecordError::BadSize(total));
    }
    if u64::from(total) > available {
        return Err(RecordError::Truncated {
            needed: u64::from(total),
            available,
        });
    }
    let record = &buf[..total as usize];
    let expected = read_u32(record, layout::CRC);
    let actual = crc32fast::hash(&record[layout::CRC_START..]);
    if expected != actual {
        return Err(RecordError::ChecksumMismatch { expected, actual });
    }
    let flags = read_u32(record, layout::FLAGS);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(RecordError::UnknownFlags(flags));
    }
    let mut msg_id = [0u8; 16];
    msg_id.copy_from_slice(&record[layout::MSG_ID..layout::MSG_ID + 16]);
    let meta = RecordMeta {
        kind,
        flags,
        queue_id: QueueId(read_u32(record, layout::QUEUE_ID)),
        queue_offset: QueueOffset(read_u64(record, layout::QUEUE_OFFSET)),
        physical_offset: CommitLogOffset(read_u64(record, layout::PHYSICAL_OFFSET)),
        born_timestamp_ms: read_u64(record, layout::BORN_TIMESTAMP),
        store_timestamp_ms: read_u64(record, layout::STORE_TIMESTAMP),
        reconsume_times: read_u32(record, layout::RECONSUME_TIMES),
        raft: RaftLogRef {
            term: read_u64(record, layout::RAFT_TERM),
            index: read_u64(record, layout::RAFT_INDEX),
        },
        entry_record_index: read_u32(record, layout::ENTRY_RECORD_INDEX),
        entry_record_count: read_u32(record, layout::ENTRY_RECORD_COUNT),
        msg_id: MessageId(msg_id),
        producer_sequence: read_u64(record, layout::PRODUCER_SEQUENCE),
    };
    if meta.entry_record_index >= meta.entry_record_count {
        return Err(RecordError::BadField {
            field: "entry_record_index",
            reason: "not below entry_record_count",
        });
    }

    let mut r = Reader {
        buf: record,
        pos: layout::FIXED_LEN,
    };
    let topic = r.utf8_u8_prefixed("topic")?;
    let producer_id = r.utf8_u8_prefixed("producer_id")?;
    let born_host = r.utf8_u8_prefixed("born_host")?;
    let tags_len = r.u16("tags")?;
    let tags = r.utf8(usize::from(tags_len), "tags")?;
    let keys_len = r.u16("keys")?;
    let keys_raw = r.take(usize::from(keys_len), "keys")?;
    validate_string_list(keys_raw, 1, "keys")?;
    let properties_len = r.u32("properties")?;
    let properties_raw = r.take(properties_len as usize, "properties")?;
    validate_string_list(properties_raw, 2, "properties")?;
    validate_property_order(properties_raw)?;
    let body_len = r.u32("body")?;
    let body = r.take(body_len as usize, "body")?;
    if r.pos != record.len() {
        return Err(RecordError::BadField {
            field: "total_size",
            reason: "fields do not add up to the record size",
        });
    }
    let names_topic = kind == RecordKind::Message || flags & FLAG_DROPS_TOPIC != 0;
    if kind == RecordKind::Message && flags & FLAG_DROPS_TOPIC != 0 {
        return Err(RecordError::BadField {
            field: "flags",
            reason: "only a control record drops a topic",
        });
    }
    if names_topic && (topic.is_empty() || topic.len() > MAX_TOPIC_LEN) {
        return Err(RecordError::BadField {
            field: "topic",
            reason: "empty or longer than 127 bytes",
        });
    }
    if !names_topic && !topic.is_empty() {
        return Err(RecordError::BadField {
            field: "topic",
            reason: "a control record has no topic unless it drops one",
        });
    }
    Ok(Decoded::Record(RecordView {
        meta,
        size: total,
        topic,
        producer_id,
        born_host,
        tags,
        keys_raw,
        properties_raw,
        body,
    }))
}

/// Reads the store timestamp of an encoded record without validating it; used by
/// binary searches over records already validated when they were published.
pub fn peek_store_timestamp(record: &[u8]) -> Option<u64> {
    record
        .get(layout::STORE_TIMESTAMP..layout::STORE_TIMESTAMP + 8)
        .map(|b| read_u64(b, 0))
}

impl<'a> RecordView<'a> {
    /// The message keys, in the order they were given.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        StringList {
            buf: self.keys_raw,
            pos: 0,
        }
    }

    /// The properties as (name, value) pairs, sorted by name.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut list = StringList {
            buf: self.properties_raw,
            pos: 0,
        };
        std::iter::from_fn(move || Some((list.next()?, list.next()?)))
    }

    /// The end of this record in the CommitLog.
    pub fn end_offset(&self) -> CommitLogOffset {
        self.meta.physical_offset.advance(u64::from(self.size))
    }

    /// The producer id and sequence, if the message carried them.
    pub fn producer(&self) -> Option<(&'a str, u64)> {
        (self.meta.flags & FLAG_HAS_PRODUCER != 0)
            .then_some((self.producer_id, self.meta.producer_sequence))
    }
}

/// Iterates a validated list of u16-prefixed UTF-8 strings.
struct StringList<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for StringList<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let len_bytes = self.buf.get(self.pos..self.pos + 2)?;
        let len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
        let start = self.pos + 2;
        let bytes = self.buf.get(start..start + len)?;
        self.pos = start + len;
        // Validated by `validate_string_list` when the record was decoded.
        std::str::from_utf8(bytes).ok()
    }
}

/// Checks that `buf` is a whole number of groups of `group` u16-prefixed UTF-8 strings.
fn validate_string_list(buf: &[u8], group: usize, field: &'static str) -> Result<(), RecordError> {
    let mut reader = Reader { buf, pos: 0 };
    let mut count = 0usize;
    while reader.pos < buf.len() {
        let len = reader.u16(field)?;
        reader.utf8(usize::from(len), field)?;
        count += 1;
    }
    if !count.is_multiple_of(group) {
        return Err(RecordError::BadField {
            field,
            reason: "a name without a value",
        });
    }
    Ok(())
}

/// Checks that property names strictly increase, as the encoder writes them (from a
/// sorted map): a record with unsorted or repeated names is not one this format
/// allows, and reading it into a map would silently drop values.
fn validate_property_order(buf: &[u8]) -> Result<(), RecordError> {
    let names = StringList { buf, pos: 0 }.step_by(2);
    let mut previous: Option<&str> = None;
    for name in names {
        if previous.is_some_and(|p| p >= name) {
            return Err(RecordError::BadField {
                field: "properties",
                reason: "names not strictly increasing",
            });
        }
        previous = Some(name);
    }
    Ok(())
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Bounds-checked reads of the variable section.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(RecordError::BadField {
                field,
                reason: "length runs past the record",
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn utf8(&mut self, len: usize, field: &'static str) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.take(len, field)?).map_err(|_| RecordError::BadField {
            field,
            reason: "not UTF-8",
        })
    }

    fn utf8_u8_prefixed(&mut self, field: &'static str) -> Result<&'a str, RecordError> {
        let len = self.take(1, field)?[0];
        self.utf8(usize::from(len), field)
    }
}

/// Sequential writes into a buffer sized by `encoded_len`.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn u8_prefixed(&mut self, bytes: &[u8]) {
        self.bytes(&[u8::try_from(bytes.len()).expect("checked by encoded_len")]);
        self.bytes(bytes);
    }
    fn u16_prefixed(&mut self, bytes: &[u8]) {
        self.u16(u16::try_from(bytes.len()).expect("checked by encoded_len"));
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_meta() -> RecordMeta {
        RecordMeta {
            kind: RecordKind::Message,
            flags: FLAG_HAS_PRODUCER,
            queue_id: QueueId(3),
            queue_offset: QueueOffset(42),
            physical_offset: CommitLogOffset(4096),
            born_timestamp_ms: 1_700_000_000_000,
            store_timestamp_ms: 1_700_000_000_001,
            reconsume_times: 2,
            raft: RaftLogRef { term: 7, index: 99 },
            entry_record_index: 1,
            entry_record_count: 4,
            msg_id: MessageId([9; 16]),
            producer_sequence: 17,
        }
    }

    fn encode(meta: &RecordMeta, content: &RecordContent<'_>) -> Vec<u8> {
        let len = encoded_len(content).expect("valid content");
        let mut buf = vec![0u8; len];
        encode_into(&mut buf, meta, content);
        buf
    }

    #[test]
    fn round_trips_every_field() {
        let keys = vec!["order-42".to_string(), "".to_string(), "k2".to_string()];
        let mut properties = BTreeMap::new();
        properties.insert("a".to_string(), "1".to_string());
        properties.insert("zeta".to_string(), "".to_string());
        let content = RecordContent {
            topic: "orders",
            producer_id: "p-1",
            born_host: "10.0.0.1:5000",
            tags: "TagA",
            keys: &keys,
            properties: &properties,
            body: b"hello world",
        };
        let meta = sample_meta();
        let buf = encode(&meta, &content);
        let Decoded::Record(view) = decode(&buf).expect("decodes") else {
            panic!("expected a record");
        };
        assert_eq!(view.meta, meta);
        assert_eq!(view.size as usize, buf.len());
        assert_eq!(view.topic, "orders");
        assert_eq!(view.producer(), Some(("p-1", 17)));
        assert_eq!(view.born_host, "10.0.0.1:5000");
        assert_eq!(view.tags, "TagA");
        assert_eq!(view.keys().collect::<Vec<_>>(), vec!["order-42", "", "k2"]);
        assert_eq!(
            view.properties().collect::<Vec<_>>(),
            vec![("a", "1"), ("zeta", "")]
        );
        assert_eq!(view.body, b"hello world");
        assert_eq!(view.end_offset(), CommitLogOffset(4096 + buf.len() as u64));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let props = BTreeMap::new();
        let content = RecordContent {
            topic: "t",
            producer_id: "",
            born_host: "",
            tags: "",
            keys: &[],
            properties: &props,
            body: b"payload",
        };
        let buf = encode(&sample_meta(), &content);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                // The CRC covers every byte after it; a flip in the size, magic or CRC
                // fields breaks the size bound, the magic or the checksum instead.
                match decode(&bad) {
                    Err(_) => {}
                    Ok(other) => panic!("flip at byte {byte} bit {bit} decoded as {other:?}"),
                }
            }
        }
    }

    #[test]
    fn zeros_are_end_and_blank_is_blank() {
        assert!(matches!(decode(&[0u8; 64]), Ok(Decoded::End)));
        let mut buf = vec![0u8; 100];
        encode_blank(&mut buf);
        assert!(matches!(decode(&buf), Ok(Decoded::Blank { len: 100 })));
        assert!(decode(&buf[..50]).is_err(), "blank longer than the buffer");
        assert!(decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn truncated_record_is_an_error() {
        let props = BTreeMap::new();
        let content = RecordContent {
            topic: "t",
            producer_id: "",
            born_host: "",
            tags: "",
            keys: &[],
            properties: &props,
            body: &[7u8; 100],
        };
        let buf = encode(&sample_meta(), &content);
        for cut in 0..buf.len() {
            assert!(
                decode(&buf[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn non_canonical_records_are_refused() {
        let mut properties = BTreeMap::new();
        properties.insert("a".to_string(), "1".to_string());
        properties.insert("c".to_string(), "2".to_string());
        let content = RecordContent {
            topic: "t",
            producer_id: "",
            born_host: "",
            tags: "",
            keys: &[],
            properties: &properties,
            body: b"x",
        };
        let good = encode(&sample_meta(), &content);
        assert!(decode(&good).is_ok());
        let second_name = good
            .windows(3)
            .position(|w| w == [1, 0, b'c'])
            .expect("second property name")
            + 2;
        // Out of order ("0" < "a"), then repeated ("a" twice), each with a valid CRC.
        for replacement in [b'0', b'a'] {
            let mut bad = good.clone();
            bad[second_name] = replacement;
            let crc = crc32fast::hash(&bad[layout::CRC_START..]);
            bad[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(
                    decode(&bad),
                    Err(RecordError::BadField {
                        field: "properties",
                        ..
                    })
                ),
                "properties named {:?} then {:?} accepted",
                "a",
                replacement as char
            );
        }
        let control = RecordMeta {
            kind: RecordKind::Control,
            ..sample_meta()
        };
        assert!(
            matches!(
                decode(&encode(&control, &content)),
                Err(RecordError::BadField { field: "topic", .. })
            ),
            "a control record with a topic accepted"
        );
        let drop = RecordMeta {
            kind: RecordKind::Control,
            flags: FLAG_DROPS_TOPIC,
            ..sample_meta()
        };
        assert!(
            matches!(decode(&encode(&drop, &content)), Ok(Decoded::Record(view)) if view.topic == content.topic),
            "a topic drop names its topic"
        );
        let no_topic = RecordContent {
            topic: "",
            ..content
        };
        assert!(
            decode(&encode(&drop, &no_topic)).is_err(),
            "a topic drop without a topic accepted"
        );
        let message_drop = RecordMeta {
            flags: FLAG_DROPS_TOPIC,
            ..sample_meta()
        };
        assert!(
            decode(&encode(&message_drop, &content)).is_err(),
            "a message that drops a topic accepted"
        );
    }

    #[test]
    fn oversize_fields_are_refused_before_encoding() {
        let props = BTreeMap::new();
        let long_topic = "t".repeat(128);
        let content = RecordContent {
            topic: &long_topic,
            producer_id: "",
            born_host: "",
            tags: "",
            keys: &[],
            properties: &props,
            body: b"",
        };
        assert!(encoded_len(&content).is_err());
    }
}
