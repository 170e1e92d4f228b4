//! A pull's answer, written straight from the mapped store records.
//!
//! The JSON form is what `PullResponse` with `message_view` gives, byte for byte
//! (the tests hold the two equal), without the copies on the way: no
//! `StoredMessage`, no `MessageView`, no growing output buffer, and no copy of the
//! messages to put the head in front of them (room for it is left at the start of
//! the buffer, which the answer then starts inside). The binary form
//! (`Accept: application/vnd.broker.pull-v1`, [`broker_proto::pull_binary`]) says
//! the same without JSON's escaping and parsing.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::http::error::ApiError;
use crate::storage::record::{RecordView, FLAG_BINARY_BODY};
use broker_proto::pull_binary;

/// The form a pull answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFormat {
    Json,
    Binary,
}

impl PullFormat {
    /// Binary when the request's `Accept` asks for it; JSON otherwise.
    pub fn of(headers: &HeaderMap) -> Self {
        let binary = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(pull_binary::accepts);
        if binary {
            Self::Binary
        } else {
            Self::Json
        }
    }
}

/// Room before the messages for the JSON head: `{"status":"…",` with the longest
/// status word and three offsets of 20 digits take 144 bytes.
const JSON_HEAD_ROOM: usize = 160;

/// The messages of one answer, encoded as the store hands them over.
pub struct PullBody {
    format: PullFormat,
    /// Room for the head (JSON: [`JSON_HEAD_ROOM`]; binary: the fixed header),
    /// then the messages (JSON: comma-separated).
    buf: Vec<u8>,
    count: u32,
    max_messages: usize,
    /// Most bytes reserved up front from a guess (the store's byte budget of an
    /// answer); more are allocated only if messages come larger than the first.
    max_reserve: usize,
    /// The first message that could not be encoded (never, for what the store
    /// accepts: its length prefixes are no wider than the binary form's).
    failed: Option<String>,
}

impl PullBody {
    pub fn new(format: PullFormat, max_messages: usize, max_reserve: usize) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.resize(Self::head_room(format), 0);
        Self {
            format,
            buf,
            count: 0,
            max_messages,
            max_reserve,
            failed: None,
        }
    }

    fn head_room(format: PullFormat) -> usize {
        match format {
            PullFormat::Json => JSON_HEAD_ROOM,
            PullFormat::Binary => pull_binary::HEADER_LEN,
        }
    }

    /// Appends one message.
    pub fn push(&mut self, view: &RecordView<'_>) {
        if self.failed.is_some() {
            return;
        }
        let before = self.buf.len();
        let hex = view.meta.msg_id.to_hex();
        let msg_id = std::str::from_utf8(&hex).expect("hex digits");
        let text = (view.meta.flags & FLAG_BINARY_BODY == 0)
            .then(|| std::str::from_utf8(view.body).ok())
            .flatten();
        match self.format {
            PullFormat::Json => {
                if self.count > 0 {
                    self.buf.push(b',');
                }
                let message = JsonMessage { view, msg_id, text };
                if let Err(e) = serde_json::to_writer(&mut self.buf, &message) {
                    self.failed = Some(e.to_string());
                }
            }
            PullFormat::Binary => {
                let message = pull_binary::MessageRef {
                    msg_id,
                    topic: view.topic,
                    queue_id: view.meta.queue_id.0,
                    queue_offset: view.meta.queue_offset.0,
                    commit_log_offset: view.meta.physical_offset.0,
                    body: view.body,
                    base64_body: text.is_none(),
                    tags: view.tags,
                    keys: view.keys(),
                    properties: view.properties(),
                    born_timestamp: view.meta.born_timestamp_ms,
                    store_timestamp: view.meta.store_timestamp_ms,
                    reconsume_times: view.meta.reconsume_times,
                    producer: view.producer(),
                };
                if let Err(e) = pull_binary::encode_message(&mut self.buf, message) {
                    self.failed = Some(e.to_string());
                }
            }
        }
        self.count += 1;
        if self.count == 1 {
            // The rest are likely of the first one's size: one allocation for all.
            let each = self.buf.len() - before + 1;
            let rest = self.max_messages.saturating_sub(1);
            self.buf
                .reserve(each.saturating_mul(rest).min(self.max_reserve));
        }
    }

    /// The answer: these messages under the pull's status and offsets.
    pub fn finish(
        self,
        status: &str,
        next_offset: u64,
        min_offset: u64,
        max_offset: u64,
    ) -> Response {
        if let Some(reason) = self.failed {
            return ApiError::internal(format!("cannot encode a pulled message: {reason}"))
                .into_response();
        }
        let room = Self::head_room(self.format);
        let mut buf = self.buf;
        let (content_type, head) = match self.format {
            PullFormat::Json => {
                buf.extend_from_slice(b"]}");
                let head = format!(
                    r#"{{"status":"{status}","next_offset":{next_offset},"min_offset":{min_offset},"max_offset":{max_offset},"messages":["#
                );
                ("application/json", head.into_bytes())
            }
            PullFormat::Binary => {
                let mut head = Vec::with_capacity(pull_binary::HEADER_LEN);
                pull_binary::encode_header(
                    &mut head,
                    status,
                    next_offset,
                    min_offset,
                    max_offset,
                    self.count,
                );
                (pull_binary::MEDIA_TYPE, head)
            }
        };
        // The head ends where the messages begin; the answer starts at the head.
        let start = room
            .checked_sub(head.len())
            .expect("the room before the messages holds the longest head");
        buf[start..room].copy_from_slice(&head);
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            bytes::Bytes::from(buf).slice(start..),
        )
            .into_response()
    }
}

/// A record as `MessageView` serializes it: the same fields in the same order,
/// the same ones left out.
struct JsonMessage<'v, 'a> {
    view: &'v RecordView<'a>,
    msg_id: &'v str,
    /// The body as text, when JSON sends it as `body`.
    text: Option<&'a str>,
}

impl Serialize for JsonMessage<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let view = self.view;
        let mut s = serializer.serialize_struct("MessageView", 15)?;
        s.serialize_field("msg_id", self.msg_id)?;
        s.serialize_field("topic", view.topic)?;
        s.serialize_field("queue_id", &view.meta.queue_id.0)?;
        s.serialize_field("queue_offset", &view.meta.queue_offset.0)?;
        s.serialize_field("commit_log_offset", &view.meta.physical_offset.0)?;
        match self.text {
            Some(text) => s.serialize_field("body", text)?,
            None => s.serialize_field(
                "body_base64",
                &base64::engine::general_purpose::STANDARD.encode(view.body),
            )?,
        }
        if !view.tags.is_empty() {
            s.serialize_field("tags", view.tags)?;
        }
        s.serialize_field("keys", &Keys(view))?;
        s.serialize_field("properties", &Properties(view))?;
        s.serialize_field("born_timestamp", &view.meta.born_timestamp_ms)?;
        s.serialize_field("store_timestamp", &view.meta.store_timestamp_ms)?;
        s.serialize_field("reconsume_times", &view.meta.reconsume_times)?;
        if let Some((producer_id, sequence)) = view.producer() {
            s.serialize_field("producer_id", producer_id)?;
            s.serialize_field("sequence", &sequence)?;
        }
        s.end()
    }
}

struct Keys<'v, 'a>(&'v RecordView<'a>);

impl Serialize for Keys<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.keys())
    }
}

struct Properties<'v, 'a>(&'v RecordView<'a>);

impl Serialize for Properties<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Stored sorted by name and unique, as the BTreeMap of `MessageView` has them.
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.0.properties() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::to_bytes;

    use super::*;
    use crate::api::PullResponse;
    use crate::service::pull::message_view;
    use crate::storage::message::{MessageDraft, ProducerStamp, RecordInput};
    use crate::storage::{
        MessageId, MessageStore, QueueId, QueueOffset, RaftLogRef, StoreConfig, StoredMessage,
        TagFilter,
    };

    /// Messages covering every way a field is written or left out.
    fn drafts() -> Vec<MessageDraft> {
        let base = MessageDraft {
            topic: "t".into(),
            queue_id: QueueId(0),
            msg_id: MessageId([0; 16]),
            body: b"plain text".to_vec(),
            binary_body: false,
            tags: String::new(),
            keys: Vec::new(),
            properties: BTreeMap::new(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 2_000,
            born_host: "127.0.0.1:1".into(),
            reconsume_times: 0,
            producer: None,
        };
        let mut all = Vec::new();
        for n in 0..6u8 {
            let mut draft = base.clone();
            draft.msg_id = MessageId([n.wrapping_mul(37).wrapping_add(0xA5); 16]);
            match n {
                // Escapes, quotes and non-ASCII text.
                1 => draft.body = "quote \" backslash \\ newline \n tab \t ü €".into(),
                // Sent as binary.
                2 => {
                    draft.body = vec![0, 1, 2, 255];
                    draft.binary_body = true;
                }
                // Text that is not UTF-8: JSON sends it as base64.
                3 => draft.body = vec![b'a', 0xFF, b'b'],
                4 => {
                    draft.tags = "TagA".into();
                    draft.keys = vec!["k1".into(), "k \"2\"".into()];
                    draft.properties =
                        BTreeMap::from([("A".into(), "1".into()), ("z".into(), "last".into())]);
                    draft.reconsume_times = 3;
                }
                5 => {
                    draft.producer = Some(ProducerStamp {
                        producer_id: "p-1".into(),
                        sequence: 42,
                    });
                    draft.body = Vec::new();
                }
                _ => {}
            }
            all.push(draft);
        }
        all
    }

    async fn body_of(response: Response) -> (String, Vec<u8>) {
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("a text Content-Type")
            .to_string();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body");
        (content_type, bytes.to_vec())
    }

    #[tokio::test]
    async fn both_forms_say_what_message_view_says() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (store, _) =
            MessageStore::open(StoreConfig::for_test(dir.path().join("store"))).expect("test step");
        let drafts = drafts();
        let inputs: Vec<RecordInput<'_>> = drafts.iter().map(RecordInput::Message).collect();
        store
            .append_entry(RaftLogRef { term: 1, index: 1 }, &inputs)
            .expect("test step");
        let pull = |map: &mut dyn FnMut(&RecordView<'_>)| {
            store
                .pull_with(
                    "t",
                    QueueId(0),
                    QueueOffset(0),
                    32,
                    &TagFilter::All,
                    |view| map(&view),
                )
                .expect("test step")
        };
        // The answer as it was built before: StoredMessage, MessageView, serde_json.
        let mut stored = Vec::new();
        let pulled = pull(&mut |view| stored.push(StoredMessage::from_view(view)));
        let (status, next, min, max) = (
            pulled.status,
            pulled.next_offset,
            pulled.min_offset,
            pulled.max_offset,
        );
        assert_eq!(stored.len(), drafts.len());
        let expected = PullResponse {
            status: "FOUND".into(),
            next_offset: next.0,
            min_offset: min.0,
            max_offset: max.0,
            messages: stored.into_iter().map(message_view).collect(),
        };
        assert_eq!(status, crate::storage::PullStatus::Found);

        let mut json = PullBody::new(PullFormat::Json, 32, 1 << 20);
        pull(&mut |view| json.push(view));
        let (content_type, bytes) = body_of(json.finish("FOUND", next.0, min.0, max.0)).await;
        assert_eq!(content_type, "application/json");
        assert_eq!(
            String::from_utf8(bytes).expect("test step"),
            serde_json::to_string(&expected).expect("test step"),
            "the JSON written from the records is byte for byte the old answer"
        );

        let mut binary = PullBody::new(PullFormat::Binary, 32, 1 << 20);
        pull(&mut |view| binary.push(view));
        let (content_type, bytes) = body_of(binary.finish("FOUND", next.0, min.0, max.0)).await;
        assert_eq!(content_type, pull_binary::MEDIA_TYPE);
        let decoded = pull_binary::decode(&bytes).expect("test step");
        assert_eq!(
            serde_json::to_value(&decoded).expect("test step"),
            serde_json::to_value(&expected).expect("test step")
        );
    }

    #[tokio::test]
    async fn an_empty_answer_in_both_forms() {
        let (_, json) =
            body_of(PullBody::new(PullFormat::Json, 32, 1 << 20).finish("NO_NEW_MSG", 7, 0, 7))
                .await;
        assert_eq!(
            String::from_utf8(json).expect("test step"),
            r#"{"status":"NO_NEW_MSG","next_offset":7,"min_offset":0,"max_offset":7,"messages":[]}"#
        );
        let (_, binary) = body_of(PullBody::new(PullFormat::Binary, 32, 1 << 20).finish(
            "OFFSET_TOO_SMALL",
            3,
            3,
            9,
        ))
        .await;
        let decoded = pull_binary::decode(&binary).expect("test step");
        assert_eq!(
            (
                decoded.status.as_str(),
                decoded.next_offset,
                decoded.min_offset,
                decoded.max_offset
            ),
            ("OFFSET_TOO_SMALL", 3, 3, 9)
        );
        assert!(decoded.messages.is_empty());
    }

    #[tokio::test]
    async fn the_longest_head_fits_its_room() {
        let (_, json) = body_of(PullBody::new(PullFormat::Json, 1, 1024).finish(
            "OFFSET_TOO_SMALL",
            u64::MAX,
            u64::MAX,
            u64::MAX,
        ))
        .await;
        let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(value["next_offset"], u64::MAX);
        assert_eq!(value["messages"], serde_json::json!([]));
    }

    #[test]
    fn accept_picks_the_form() {
        let mut headers = HeaderMap::new();
        assert_eq!(PullFormat::of(&headers), PullFormat::Json);
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(PullFormat::of(&headers), PullFormat::Json);
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static(pull_binary::MEDIA_TYPE),
        );
        assert_eq!(PullFormat::of(&headers), PullFormat::Binary);
    }
}
