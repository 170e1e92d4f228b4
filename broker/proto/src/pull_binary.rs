//! The compact binary form of a pull's answer, for SDK clients.
//!
//! A pull (`GET /v1/topics/{topic}/queues/{queue_id}/messages`) answers JSON
//! unless its `Accept` header names [`MEDIA_TYPE`]; then a `200` carries this
//! form, which says exactly what the JSON [`PullResponse`] says, and error
//! answers stay JSON. It exists because JSON costs both ends more than the
//! messages do: escaping every body byte on the way out, parsing it on the way in.
//!
//! All integers are little-endian. A string is its UTF-8 bytes after a length
//! prefix of the width given.
//!
//! ```text
//! answer   = magic "MQP1" · status u8 (index in PULL_STATUSES) · next_offset u64
//!            · min_offset u64 · max_offset u64 · count u32 · message × count
//! message  = len u32 (bytes of the message after this field)
//!            · flags u8 (FLAG_BASE64_BODY | FLAG_TAGS | FLAG_PRODUCER)
//!            · queue_id u32 · queue_offset u64 · commit_log_offset u64
//!            · born_timestamp u64 · store_timestamp u64 · reconsume_times u32
//!            · sequence u64 (0 without FLAG_PRODUCER)
//!            · msg_id str8 · topic str8 · tags str16 · producer_id str16
//!            · keys: count u32 · str16 × count
//!            · properties: count u32 · (name str16 · value str16) × count
//!            · body: len u32 · bytes
//! ```
//!
//! `FLAG_BASE64_BODY` marks a body JSON would send as `body_base64` (sent as
//! binary, or not UTF-8); its bytes here are the raw body. A decoder skips bytes
//! a later version appends to a message (`len` covers them) and refuses anything
//! shorter than it says, so a damaged answer is an error, never a wrong message.

use std::collections::BTreeMap;

use base64::Engine;

use crate::api::{MessageView, PullResponse, PULL_STATUSES};

/// The `Accept` (and answer `Content-Type`) value of this form.
pub const MEDIA_TYPE: &str = "application/vnd.broker.pull-v1";

/// The first four bytes of an answer.
pub const MAGIC: &[u8; 4] = b"MQP1";

/// The body is binary (JSON's `body_base64`); otherwise it is UTF-8 text.
pub const FLAG_BASE64_BODY: u8 = 1;
/// The message has tags.
pub const FLAG_TAGS: u8 = 2;
/// The message has a producer stamp (`producer_id` and `sequence`).
pub const FLAG_PRODUCER: u8 = 4;

/// Bytes of an answer's header.
pub const HEADER_LEN: usize = 4 + 1 + 8 * 3 + 4;

/// One message to encode, borrowed from wherever it lives (the server encodes
/// straight from its mapped store files).
#[derive(Clone, Debug)]
pub struct MessageRef<'a, K, P> {
    pub msg_id: &'a str,
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    pub body: &'a [u8],
    /// JSON would send the body as `body_base64`.
    pub base64_body: bool,
    /// Empty for none.
    pub tags: &'a str,
    pub keys: K,
    pub properties: P,
    pub born_timestamp: u64,
    pub store_timestamp: u64,
    pub reconsume_times: u32,
    pub producer: Option<(&'a str, u64)>,
}

/// Why a message cannot be encoded: a field longer than its length prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLong(pub &'static str);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is too long for the binary pull form", self.0)
    }
}

impl std::error::Error for TooLong {}

/// Writes an answer's header.
///
/// # Panics
/// If `status` is not one of [`PULL_STATUSES`] (a bug in the caller).
pub fn encode_header(
    out: &mut Vec<u8>,
    status: &str,
    next_offset: u64,
    min_offset: u64,
    max_offset: u64,
    count: u32,
) {
    let status = PULL_STATUSES
        .iter()
        .position(|s| *s == status)
        .expect("a pull status word");
    out.extend_from_slice(MAGIC);
    out.push(u8::try_from(status).expect("five statuses"));
    out.extend_from_slice(&next_offset.to_le_bytes());
    out.extend_from_slice(&min_offset.to_le_bytes());
    out.extend_from_slice(&max_offset.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

/// Appends one message. On an error `out` is as it was.
///
/// # Errors
/// A field longer than its length prefix allows.
pub fn encode_message<'a, K, P>(
    out: &mut Vec<u8>,
    message: MessageRef<'a, K, P>,
) -> Result<(), TooLong>
where
    K: IntoIterator<Item = &'a str>,
    P: IntoIterator<Item = (&'a str, &'a str)>,
{
    let start = out.len();
    let result = encode_message_at(out, start, message);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_message_at<'a, K, P>(
    out: &mut Vec<u8>,
    start: usize,
    m: MessageRef<'a, K, P>,
) -> Result<(), TooLong>
where
    K: IntoIterator<Item = &'a str>,
    P: IntoIterator<Item = (&'a str, &'a str)>,
{
    out.extend_from_slice(&[0; 4]); // the length, filled in at the end
    let mut flags = 0;
    if m.base64_body {
        flags |= FLAG_BASE64_BODY;
    }
    if !m.tags.is_empty() {
        flags |= FLAG_TAGS;
    }
    if m.producer.is_some() {
        flags |= FLAG_PRODUCER;
    }
    out.push(flags);
    out.extend_from_slice(&m.queue_id.to_le_bytes());
    out.extend_from_slice(&m.queue_offset.to_le_bytes());
    out.extend_from_slice(&m.commit_log_offset.to_le_bytes());
    out.extend_from_slice(&m.born_timestamp.to_le_bytes());
    out.extend_from_slice(&m.store_timestamp.to_le_bytes());
    out.extend_from_slice(&m.reconsume_times.to_le_bytes());
    let (producer_id, sequence) = m.producer.unwrap_or(("", 0));
    out.extend_from_slice(&sequence.to_le_bytes());
    put_str8(out, m.msg_id, "msg_id")?;
    put_str8(out, m.topic, "topic")?;
    put_str16(out, m.tags, "tags")?;
    put_str16(out, producer_id, "producer_id")?;
    put_list(out, m.keys, "keys", |out, key| put_str16(out, key, "a key"))?;
    put_list(out, m.properties, "properties", |out, (name, value)| {
        put_str16(out, name, "a property name")?;
        put_str16(out, value, "a property value")
    })?;
    let body_len = u32::try_from(m.body.len()).map_err(|_| TooLong("the body"))?;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(m.body);
    let len = u32::try_from(out.len() - start - 4).map_err(|_| TooLong("a message"))?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_str8(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), TooLong> {
    out.push(u8::try_from(s.len()).map_err(|_| TooLong(what))?);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_str16(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), TooLong> {
    out.extend_from_slice(
        &u16::try_from(s.len())
            .map_err(|_| TooLong(what))?
            .to_le_bytes(),
    );
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Writes a u32 count, then each item; the count is filled in after the items.
fn put_list<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    what: &'static str,
    mut put: impl FnMut(&mut Vec<u8>, T) -> Result<(), TooLong>,
) -> Result<(), TooLong> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut count: u32 = 0;
    for item in items {
        count = count.checked_add(1).ok_or(TooLong(what))?;
        put(out, item)?;
    }
    out[at..at + 4].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

/// Why an answer could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "binary pull answer: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn error(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// Reads an answer into the same [`PullResponse`] its JSON form gives.
///
/// # Errors
/// Wrong magic, an unknown status, a field running past its message or the
/// answer, text that is not UTF-8, or bytes after the last message.
pub fn decode(bytes: &[u8]) -> Result<PullResponse, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(error("it does not start with MQP1"));
    }
    let status = r.u8("status")?;
    let status = PULL_STATUSES
        .get(usize::from(status))
        .ok_or_else(|| error(format!("unknown status {status}")))?;
    let next_offset = r.u64("next_offset")?;
    let min_offset = r.u64("min_offset")?;
    let max_offset = r.u64("max_offset")?;
    let count = r.u32("count")?;
    // Every message takes at least its length field: a count the bytes cannot
    // hold is refused before anything is allocated for it.
    if u64::from(count) * 4 > (bytes.len() - r.at) as u64 {
        return Err(error(format!("{count} messages cannot fit")));
    }
    let mut messages = Vec::with_capacity(count as usize);
    for i in 0..count {
        let len = r.u32("message length")? as usize;
        let body = r
            .take(len, "message")
            .map_err(|e| error(format!("message {i}: {}", e.0)))?;
        messages.push(decode_message(body).map_err(|e| error(format!("message {i}: {}", e.0)))?);
    }
    if r.at != bytes.len() {
        return Err(error(format!(
            "{} bytes after the last message",
            bytes.len() - r.at
        )));
    }
    Ok(PullResponse {
        status: (*status).to_string(),
        next_offset,
        min_offset,
        max_offset,
        messages,
    })
}

fn decode_message(bytes: &[u8]) -> Result<MessageView, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let flags = r.u8("flags")?;
    let queue_id = r.u32("queue_id")?;
    let queue_offset = r.u64("queue_offset")?;
    let commit_log_offset = r.u64("commit_log_offset")?;
    let born_timestamp = r.u64("born_timestamp")?;
    let store_timestamp = r.u64("store_timestamp")?;
    let reconsume_times = r.u32("reconsume_times")?;
    let sequence = r.u64("sequence")?;
    let msg_id = r.str8("msg_id")?;
    let topic = r.str8("topic")?;
    let tags = r.str16("tags")?;
    let producer_id = r.str16("producer_id")?;
    let key_count = r.u32("key count")?;
    // Each key takes at least its length: the capacity is bounded by the bytes.
    let mut keys = Vec::with_capacity((key_count as usize).min(bytes.len() / 2));
    for _ in 0..key_count {
        keys.push(r.str16("a key")?);
    }
    let property_count = r.u32("property count")?;
    let mut properties = BTreeMap::new();
    for _ in 0..property_count {
        let name = r.str16("a property name")?;
        let value = r.str16("a property value")?;
        properties.insert(name, value);
    }
    let body_len = r.u32("body length")? as usize;
    let body = r.take(body_len, "body")?;
    let (body, body_base64) = if flags & FLAG_BASE64_BODY != 0 {
        (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        )
    } else {
        let text = std::str::from_utf8(body).map_err(|_| error("a text body is not UTF-8"))?;
        (Some(text.to_string()), None)
    };
    let producer = flags & FLAG_PRODUCER != 0;
    Ok(MessageView {
        msg_id,
        topic,
        queue_id,
        queue_offset,
        commit_log_offset,
        body,
        body_base64,
        tags: (flags & FLAG_TAGS != 0).then_some(tags),
        keys,
        properties,
        born_timestamp,
        store_timestamp,
        reconsume_times,
        producer_id: producer.then_some(producer_id),
        sequence: producer.then_some(sequence),
    })
    // Bytes past the body belong to a later version: skipped.
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| error(format!("{what} runs past the end")))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn text(&mut self, n: usize, what: &str) -> Result<String, DecodeError> {
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| error(format!("{what} is not UTF-8")))
    }

    fn str8(&mut self, what: &str) -> Result<String, DecodeError> {
        let n = self.u8(what)?;
        self.text(usize::from(n), what)
    }

    fn str16(&mut self, what: &str) -> Result<String, DecodeError> {
        let n = self.u16(what)?;
        self.text(usize::from(n), what)
    }
}

/// Whether an answer's `Content-Type` is [`MEDIA_TYPE`] (parameters aside; a type
/// that only starts with it, such as a later `…-v10`, is not).
pub fn is_answer_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Whether an `Accept` header value asks for [`MEDIA_TYPE`] (listed, and not with
/// `q=0`). Anything else, `*/*` included, gets JSON.
pub fn accepts(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        media.eq_ignore_ascii_case(MEDIA_TYPE)
            && !parts.any(|param| {
                param.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with its keys and properties in vectors.
    type TestMessage<'a> = MessageRef<'a, Vec<&'a str>, Vec<(&'a str, &'a str)>>;

    fn message<'a>(
        body: &'a [u8],
        base64_body: bool,
        tags: &'a str,
        producer: Option<(&'a str, u64)>,
    ) -> TestMessage<'a> {
        MessageRef {
            msg_id: "0A0B0C0D00000000000000000000002A",
            topic: "orders",
            queue_id: 3,
            queue_offset: 41,
            commit_log_offset: 1 << 40,
            body,
            base64_body,
            tags,
            keys: vec!["k1", "k2"],
            properties: vec![("A", "1"), ("B", "two")],
            born_timestamp: 1_700_000_000_000,
            store_timestamp: 1_700_000_000_005,
            reconsume_times: 2,
            producer,
        }
    }

    fn answer(messages: Vec<TestMessage<'_>>) -> Vec<u8> {
        let mut out = Vec::new();
        let count = u32::try_from(messages.len()).expect("test step");
        encode_header(&mut out, "FOUND", 44, 1, 90, count);
        for m in messages {
            encode_message(&mut out, m).expect("test step");
        }
        out
    }

    #[test]
    fn round_trip_gives_what_json_says() {
        let bytes = answer(vec![
            message(b"hello", false, "TagA", Some(("p-1", 7))),
            message(&[0, 159, 255], true, "", None),
        ]);
        let decoded = decode(&bytes).expect("test step");
        assert_eq!(decoded.status, "FOUND");
        assert_eq!(
            (decoded.next_offset, decoded.min_offset, decoded.max_offset),
            (44, 1, 90)
        );
        let json = serde_json::to_value(&decoded.messages).expect("test step");
        assert_eq!(
            json,
            serde_json::json!([
                {"msg_id": "0A0B0C0D00000000000000000000002A", "topic": "orders", "queue_id": 3,
                 "queue_offset": 41, "commit_log_offset": 1_u64 << 40, "body": "hello",
                 "tags": "TagA", "keys": ["k1", "k2"], "properties": {"A": "1", "B": "two"},
                 "born_timestamp": 1_700_000_000_000_u64, "store_timestamp": 1_700_000_000_005_u64,
                 "reconsume_times": 2, "producer_id": "p-1", "sequence": 7},
                {"msg_id": "0A0B0C0D00000000000000000000002A", "topic": "orders", "queue_id": 3,
                 "queue_offset": 41, "commit_log_offset": 1_u64 << 40, "body_base64": "AJ//",
                 "keys": ["k1", "k2"], "properties": {"A": "1", "B": "two"},
                 "born_timestamp": 1_700_000_000_000_u64, "store_timestamp": 1_700_000_000_005_u64,
                 "reconsume_times": 2},
            ])
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = answer(vec![
            message(b"hello", false, "TagA", Some(("p-1", 7))),
            message(b"world", false, "", None),
        ]);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "a trailing byte");
    }

    #[test]
    fn damaged_fields_are_errors_not_panics() {
        let bytes = answer(vec![message(b"hello", false, "TagA", Some(("p-1", 7)))]);
        // Flip every byte in turn: each result is an error or a well-formed answer,
        // never a panic (lengths and counts that point past the end are caught).
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xFF;
            let _ = decode(&damaged);
        }
        let mut huge_count = bytes.clone();
        huge_count[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_count).is_err());
        let mut bad_status = bytes.clone();
        bad_status[4] = 9;
        assert!(decode(&bad_status).is_err());
        let mut bad_magic = bytes;
        bad_magic[0] = b'X';
        assert!(decode(&bad_magic).is_err());
    }

    #[test]
    fn a_text_body_must_be_utf8() {
        let bytes = answer(vec![message(&[0xFF, 0xFE], false, "", None)]);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn later_versions_may_append_to_a_message() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes, "FOUND", 1, 0, 1, 1);
        let start = bytes.len();
        encode_message(&mut bytes, message(b"x", false, "", None)).expect("test step");
        bytes.extend_from_slice(b"future");
        let len = u32::from_le_bytes(bytes[start..start + 4].try_into().expect("test step")) + 6;
        bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let decoded = decode(&bytes).expect("test step");
        assert_eq!(decoded.messages[0].body.as_deref(), Some("x"));
    }

    #[test]
    fn too_long_fields_leave_the_buffer_as_it_was() {
        let long = "k".repeat(usize::from(u16::MAX) + 1);
        let mut out = vec![1, 2, 3];
        let mut m = message(b"x", false, "", None);
        m.keys = vec![long.as_str()];
        assert_eq!(encode_message(&mut out, m), Err(TooLong("a key")));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(MEDIA_TYPE));
        assert!(accepts(
            "application/json;q=0.5, application/vnd.broker.pull-v1"
        ));
        assert!(accepts("Application/VND.broker.pull-v1; q=1"));
        assert!(!accepts("application/vnd.broker.pull-v1;q=0"));
        assert!(!accepts("application/json"));
        assert!(!accepts("*/*"));
        assert!(!accepts("application/vnd.broker.pull-v2"));
    }

    #[test]
    fn answer_types() {
        assert!(is_answer_type(MEDIA_TYPE));
        assert!(is_answer_type(
            "Application/VND.broker.pull-v1; charset=binary"
        ));
        // A prefix match (the client's rule before a25a14d) took these for it.
        assert!(!is_answer_type("application/vnd.broker.pull-v10"));
        assert!(!is_answer_type("application/vnd.broker.pull-v1x"));
        assert!(!is_answer_type("application/json"));
        assert!(!is_answer_type(""));
    }
}
