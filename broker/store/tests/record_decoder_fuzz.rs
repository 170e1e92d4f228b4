//! The CommitLog record decoder never panics on garbage, and whatever it accepts is a
//! record the encoder would write byte for byte.
//!
//! # How
//!
//! `broker_store::record::decode` is fed, under proptest (tens of thousands of
//! cases in all, a few seconds in `--release`):
//!
//! 1. arbitrary byte vectors;
//! 2. "plausible garbage": arbitrary bytes behind a valid `total_size`, magic and a
//!    CRC computed over the garbage, so the decoder's field parsing (length prefixes,
//!    UTF-8, key and property lists, entry numbering) sees the garbage instead of the
//!    checksum rejecting it first;
//! 3. "structured garbage": consistent length prefixes around adversarial contents
//!    (unsorted or repeated properties, control records with topics, over-long
//!    topics, bytes that are not UTF-8, odd string lists, size slack), CRC valid;
//! 4. valid records (every field random) after random mutations — byte flips,
//!    truncations, overwritten and inserted runs, trailing garbage — with or without
//!    the CRC recomputed afterwards;
//! 5. valid records with exactly one byte changed (must be refused);
//! 6. valid records followed by arbitrary bytes (must decode to the same record).
//!
//! A panic anywhere fails the case. Whenever `decode` returns a record, the test
//! re-encodes it with `encoded_len`/`encode_into` from the decoded fields and requires
//! exactly the bytes that were decoded: the decoder accepts only canonical records.
//!
//! `RECORD_FUZZ_CASES` scales every property's case count (default 1.0 ≈ 49k cases).

use std::collections::BTreeMap;

use broker_store::record::{
    decode, encode_blank, encode_into, encoded_len, layout, Decoded, RecordContent, RecordKind,
    RecordMeta, RecordView, BLANK_MAGIC, CONTROL_MAGIC, FLAG_BINARY_BODY, FLAG_HAS_PRODUCER,
    MESSAGE_MAGIC,
};
use broker_store::{CommitLogOffset, MessageId, QueueId, QueueOffset, RaftLogRef};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// A record's variable fields, owned.
#[derive(Clone, Debug)]
struct Content {
    topic: String,
    producer_id: String,
    born_host: String,
    tags: String,
    keys: Vec<String>,
    properties: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Content {
    fn borrow(&self) -> RecordContent<'_> {
        RecordContent {
            topic: &self.topic,
            producer_id: &self.producer_id,
            born_host: &self.born_host,
            tags: &self.tags,
            keys: &self.keys,
            properties: &self.properties,
            body: &self.body,
        }
    }
}

/// One change to an encoded record.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at `at % len` with `mask` (non-zero).
    Flip { at: usize, mask: u8 },
    /// Keep only the first `keep % (len + 1)` bytes.
    Truncate { keep: usize },
    /// Overwrite bytes from `at % len` with `bytes` (clipped to the buffer).
    Overwrite { at: usize, bytes: Vec<u8> },
    /// Insert `bytes` at `at % (len + 1)`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Append `bytes` at the end.
    Append { bytes: Vec<u8> },
}

fn cases(base: u32) -> Config {
    let scale: f64 = std::env::var("RECORD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    Config {
        cases: ((f64::from(base) * scale) as u32).max(1),
        // Failures print the minimal input; no regression files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// UTF-8 text of at most `max_bytes` bytes, with multi-byte characters in it.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            1 => Just('é'),
            1 => Just('✓'),
            1 => Just('\u{1F600}'),
        ],
        0..=max_chars,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn meta_strategy() -> impl Strategy<Value = RecordMeta> {
    (
        (
            prop_oneof![Just(RecordKind::Message), Just(RecordKind::Control)],
            prop_oneof![
                Just(0),
                Just(FLAG_BINARY_BODY),
                Just(FLAG_HAS_PRODUCER),
                Just(FLAG_BINARY_BODY | FLAG_HAS_PRODUCER)
            ],
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            (1u32..=u32::MAX).prop_flat_map(|count| (0..count, Just(count))),
            any::<[u8; 16]>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (kind, flags, queue_id, queue_offset, physical, born, store),
                (reconsume, term, index, (entry_index, entry_count), id, sequence),
            )| RecordMeta {
                kind,
                flags,
                queue_id: QueueId(queue_id),
                queue_offset: QueueOffset(queue_offset),
                physical_offset: CommitLogOffset(physical),
                born_timestamp_ms: born,
                store_timestamp_ms: store,
                reconsume_times: reconsume,
                raft: RaftLogRef { term, index },
                entry_record_index: entry_index,
                entry_record_count: entry_count,
                msg_id: MessageId(id),
                producer_sequence: sequence,
            },
        )
}

/// A valid record: its fields and its encoding. Control records have an empty topic,
/// as the store writes them; message topics are 1..=127 bytes.
fn record_strategy() -> impl Strategy<Value = (RecordMeta, Content, Vec<u8>)> {
    (
        meta_strategy(),
        text(30).prop_filter("topics are 1..=127 bytes", |t| !t.is_empty()),
        text(20),
        text(20),
        text(40),
        vec(text(12), 0..4),
        btree_map(text(8), text(12), 0..4),
        vec(any::<u8>(), 0..400),
    )
        .prop_map(
            |(meta, topic, producer_id, born_host, tags, keys, properties, body)| {
                let topic = if meta.kind == RecordKind::Control {
                    String::new()
                } else {
                    topic
                };
                let content = Content {
                    topic,
                    producer_id,
                    born_host,
                    tags,
                    keys,
                    properties,
                    body,
                };
                let len = encoded_len(&content.borrow()).expect("generated fields fit");
                let mut buf = vec![0u8; len];
                encode_into(&mut buf, &meta, &content.borrow());
                (meta, content, buf)
            },
        )
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        2 => (any::<usize>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        1 => (any::<usize>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip { at, mask } => {
            if !buf.is_empty() {
                let at = at % buf.len();
                buf[at] ^= mask;
            }
        }
        Mutation::Truncate { keep } => buf.truncate(keep % (buf.len() + 1)),
        Mutation::Overwrite { at, bytes } => {
            if !buf.is_empty() {
                let at = at % buf.len();
                let n = bytes.len().min(buf.len() - at);
                buf[at..at + n].copy_from_slice(&bytes[..n]);
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (buf.len() + 1);
            buf.splice(at..at, bytes.iter().copied());
        }
        Mutation::Append { bytes } => buf.extend_from_slice(bytes),
    }
}

/// Rewrites the CRC field (if the buffer has one) to match the bytes after it, as a
/// writer that computed the checksum over garbage would have.
fn fix_crc(buf: &mut [u8]) {
    if buf.len() < layout::CRC_START {
        return;
    }
    let total = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let end = total.clamp(layout::CRC_START, buf.len());
    let crc = crc32fast::hash(&buf[layout::CRC_START..end]);
    buf[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Re-encodes a decoded record from its fields.
fn reencode(view: &RecordView<'_>) -> Result<Vec<u8>, TestCaseError> {
    let keys: Vec<String> = view.keys().map(str::to_string).collect();
    let properties: BTreeMap<String, String> = view
        .properties()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let content = RecordContent {
        topic: view.topic,
        producer_id: view.producer_id,
        born_host: view.born_host,
        tags: view.tags,
        keys: &keys,
        properties: &properties,
        body: view.body,
    };
    let len = encoded_len(&content).map_err(|e| {
        TestCaseError::fail(format!("decode accepted a record the encoder refuses: {e}"))
    })?;
    let mut buf = vec![0u8; len];
    encode_into(&mut buf, &view.meta, &content);
    Ok(buf)
}

/// Decodes `buf` (a panic fails the case) and checks what an accepted record must
/// satisfy. Returns the decoded record's size, if it was one.
fn check_decode(buf: &[u8]) -> Result<Option<usize>, TestCaseError> {
    match decode(buf) {
        Ok(Decoded::Record(view)) => {
            let size = view.size as usize;
            prop_assert!(
                size >= layout::MIN_RECORD_LEN && size <= buf.len(),
                "record size {size} outside [{}, {}]",
                layout::MIN_RECORD_LEN,
                buf.len()
            );
            prop_assert!(view.meta.entry_record_index < view.meta.entry_record_count);
            if view.meta.kind == RecordKind::Message {
                prop_assert!(!view.topic.is_empty() && view.topic.len() <= 127);
            }
            let again = reencode(&view)?;
            prop_assert!(
                again == buf[..size],
                "re-encoding the decoded fields does not reproduce the record's {size} bytes \
                 (first difference at byte {:?}); decoded: {:?}, keys {:?}, properties {:?}",
                again.iter().zip(&buf[..size]).position(|(a, b)| a != b),
                view,
                view.keys().collect::<Vec<_>>(),
                view.properties().collect::<Vec<_>>()
            );
            Ok(Some(size))
        }
        Ok(Decoded::Blank { len }) => {
            prop_assert!(len as usize >= layout::BLANK_LEN && len as usize <= buf.len());
            prop_assert_eq!(&buf[4..8], &BLANK_MAGIC.to_le_bytes()[..]);
            Ok(None)
        }
        Ok(Decoded::End) => {
            prop_assert!(buf.len() >= 8 && buf[..8].iter().all(|b| *b == 0));
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

proptest! {
    #![proptest_config(cases(12_000))]

    /// Arbitrary bytes: no panic; anything accepted is canonical.
    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..2048)) {
        check_decode(&buf)?;
    }
}

proptest! {
    #![proptest_config(cases(12_000))]

    /// Garbage behind a valid size, magic and CRC reaches the field parser, which
    /// must refuse it (or accept only a canonical record) without panicking.
    #[test]
    fn plausible_garbage_never_panics(
        magic in prop_oneof![Just(MESSAGE_MAGIC), Just(CONTROL_MAGIC), Just(BLANK_MAGIC)],
        size_slack in prop_oneof![3 => Just(0usize), 1 => 0usize..64],
        rest in vec(any::<u8>(), 0..600),
        sane_fixed_fields in any::<bool>(),
        small_lengths in any::<bool>(),
    ) {
        let mut buf = Vec::with_capacity(rest.len() + 8);
        let total = (rest.len() + 8).saturating_sub(size_slack) as u32;
        buf.extend_from_slice(&total.to_le_bytes());
        buf.extend_from_slice(&magic.to_le_bytes());
        buf.extend_from_slice(&rest);
        if sane_fixed_fields && buf.len() >= layout::FIXED_LEN {
            // Known flags and a valid place in an entry, so that decoding gets past
            // the fixed fields to the variable section.
            buf[layout::FLAGS] &= 0x03;
            buf[layout::FLAGS + 1..layout::FLAGS + 4].fill(0);
            buf[layout::ENTRY_RECORD_INDEX..layout::ENTRY_RECORD_INDEX + 4].fill(0);
            buf[layout::ENTRY_RECORD_COUNT] |= 1;
        }
        if small_lengths {
            // Small length prefixes stay inside the record more often: clear the high
            // bits of every byte of the variable section.
            for b in buf.iter_mut().skip(layout::FIXED_LEN) {
                *b &= 0x07;
            }
        }
        fix_crc(&mut buf);
        check_decode(&buf)?;
    }
}

/// Bytes of a string field: usually text, sometimes arbitrary bytes (maybe not
/// UTF-8), up to `max_len` bytes.
fn field_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'z')], 0..=max_len.min(12)),
        1 => vec(any::<u8>(), 0..=max_len.min(12)),
        1 => vec(Just(b'x'), 0..=max_len),
        1 => vec(any::<u8>(), 0..=3).prop_map(|mut v| { v.insert(0, 0xC3); v }),
    ]
}

/// A record whose length prefixes are consistent but whose contents are adversarial:
/// control records with topics, topics of up to 255 bytes, bytes that are not UTF-8,
/// string lists with an odd member count or a stray byte, properties out of order or
/// repeated, entry numbers out of range, unknown flags, size slack at the end. The
/// CRC is computed over it all, so only the decoder's field checks stand in the way.
fn structured_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        (
            prop_oneof![Just(MESSAGE_MAGIC), Just(CONTROL_MAGIC)],
            prop_oneof![8 => 0u32..4, 1 => any::<u32>()],
            // Everything after total_size, magic, crc and flags.
            vec(any::<u8>(), layout::FIXED_LEN - layout::QUEUE_ID),
            prop_oneof![
                6 => (1u32..4).prop_flat_map(|count| (0..count, Just(count))),
                1 => (0u32..3, 0u32..3),
            ],
        ),
        (
            prop_oneof![field_bytes(255), Just(Vec::new())],
            field_bytes(20),
            field_bytes(20),
            field_bytes(300),
        ),
        (
            vec(field_bytes(8), 0..4),
            any::<bool>(),
            vec((field_bytes(6), field_bytes(6)), 0..4),
            prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            vec(any::<u8>(), 0..40),
            prop_oneof![6 => Just(0usize), 1 => 1usize..4],
        ),
    )
        .prop_map(
            |(
                (magic, flags, fixed, (entry_index, entry_count)),
                (topic, producer_id, born_host, tags),
                (keys, stray_key_byte, properties, property_shape, body, slack),
            )| {
                let mut buf = Vec::new();
                buf.extend_from_slice(&0u32.to_le_bytes()); // total, set below
                buf.extend_from_slice(&magic.to_le_bytes());
                buf.extend_from_slice(&0u32.to_le_bytes()); // crc, set below
                buf.extend_from_slice(&flags.to_le_bytes());
                buf.extend_from_slice(&fixed);
                debug_assert_eq!(buf.len(), layout::FIXED_LEN);
                buf[layout::ENTRY_RECORD_INDEX..layout::ENTRY_RECORD_INDEX + 4]
                    .copy_from_slice(&entry_index.to_le_bytes());
                buf[layout::ENTRY_RECORD_COUNT..layout::ENTRY_RECORD_COUNT + 4]
                    .copy_from_slice(&entry_count.to_le_bytes());
                for field in [&topic, &producer_id, &born_host] {
                    let len = field.len().min(255);
                    buf.push(len as u8);
                    buf.extend_from_slice(&field[..len]);
                }
                buf.extend_from_slice(&(tags.len() as u16).to_le_bytes());
                buf.extend_from_slice(&tags);
                let mut list = Vec::new();
                for key in &keys {
                    list.extend_from_slice(&(key.len() as u16).to_le_bytes());
                    list.extend_from_slice(key);
                }
                if stray_key_byte {
                    list.push(b'k');
                }
                buf.extend_from_slice(&(list.len() as u16).to_le_bytes());
                buf.extend_from_slice(&list);
                let mut list = Vec::new();
                for (i, (name, value)) in properties.iter().enumerate() {
                    // Shape 1: repeat the first name; shape 2: drop the last value.
                    let name = if property_shape == 1 {
                        &properties[0].0
                    } else {
                        name
                    };
                    list.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    list.extend_from_slice(name);
                    if property_shape == 2 && i + 1 == properties.len() {
                        break;
                    }
                    list.extend_from_slice(&(value.len() as u16).to_le_bytes());
                    list.extend_from_slice(value);
                }
                buf.extend_from_slice(&(list.len() as u32).to_le_bytes());
                buf.extend_from_slice(&list);
                buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                buf.extend_from_slice(&body);
                buf.extend(std::iter::repeat_n(0xEE, slack));
                let total = buf.len() as u32;
                buf[..4].copy_from_slice(&total.to_le_bytes());
                fix_crc(&mut buf);
                buf
            },
        )
}

proptest! {
    #![proptest_config(cases(12_000))]

    /// Structurally plausible records with adversarial contents: no panic, and the
    /// decoder accepts only what the encoder would have written.
    #[test]
    fn structured_garbage_is_refused_or_canonical(buf in structured_garbage()) {
        check_decode(&buf)?;
    }
}

proptest! {
    #![proptest_config(cases(8_000))]

    /// Valid records after random mutations, with the CRC left stale or recomputed:
    /// no panic, anything accepted is canonical, and an untouched prefix still
    /// decodes to the original.
    #[test]
    fn mutated_records_never_panic(
        (meta, content, original) in record_strategy(),
        mutations in vec(mutation_strategy(), 1..4),
        recompute_crc in any::<bool>(),
    ) {
        let mut buf = original.clone();
        for mutation in &mutations {
            apply(&mut buf, mutation);
        }
        if recompute_crc {
            fix_crc(&mut buf);
        }
        let decoded = check_decode(&buf)?;
        if buf.len() >= original.len() && buf[..original.len()] == original[..] {
            prop_assert_eq!(decoded, Some(original.len()), "an intact record was refused");
            if let Ok(Decoded::Record(view)) = decode(&buf) {
                prop_assert_eq!(view.meta, meta);
                prop_assert_eq!(view.topic, content.topic.as_str());
                prop_assert_eq!(view.body, &content.body[..]);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(4_000))]

    /// Without a recomputed CRC, changing any one byte of a record is always caught.
    #[test]
    fn any_single_byte_change_is_refused(
        (_meta, _content, original) in record_strategy(),
        at in any::<usize>(),
        mask in 1u8..=255,
    ) {
        let mut buf = original;
        let at = at % buf.len();
        buf[at] ^= mask;
        let result = decode(&buf);
        prop_assert!(
            result.is_err(),
            "byte {at} ^ {mask:#04x} still decoded: {result:?}"
        );
    }
}

proptest! {
    #![proptest_config(cases(1_000))]

    /// Records are self-delimiting: whatever follows one (the next record, a blank,
    /// garbage) does not change how it decodes; and a blank record decodes as one.
    #[test]
    fn trailing_bytes_do_not_change_a_record(
        (meta, content, original) in record_strategy(),
        trailer in vec(any::<u8>(), 0..256),
        blank_len in layout::BLANK_LEN..512,
    ) {
        let mut buf = original.clone();
        buf.extend_from_slice(&trailer);
        match decode(&buf) {
            Ok(Decoded::Record(view)) => {
                prop_assert_eq!(view.size as usize, original.len());
                prop_assert_eq!(view.meta, meta);
                prop_assert_eq!(view.tags, content.tags.as_str());
                let keys: Vec<&str> = view.keys().collect();
                prop_assert_eq!(keys, content.keys.iter().map(String::as_str).collect::<Vec<_>>());
            }
            other => prop_assert!(false, "a valid record followed by bytes decoded as {other:?}"),
        }
        let mut blank = vec![0u8; blank_len];
        encode_blank(&mut blank);
        let blank_ok =
            matches!(decode(&blank), Ok(Decoded::Blank { len }) if len as usize == blank_len);
        prop_assert!(blank_ok, "a blank record of {} bytes did not decode as one", blank_len);
        prop_assert!(decode(&blank[..blank_len - 1]).is_err(), "a blank longer than its buffer");
    }
}
