//! The send path at the leader: everything that must be decided once, before the
//! batch is proposed, so every replica stores the same bytes — validation, queue
//! choice, message ids, timestamps, and auto-creation of a missing topic.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::Engine;

use crate::api::{MessageInput, SendRequest};
use crate::error::{BrokerError, QueueKind};
use crate::replication::command::SendCommand;
use crate::replication::group_state::{GroupState, DEDUP_WINDOW};
use crate::service::consumer::delay::{self, DelayLevels};
use crate::storage::record;
use crate::storage::{now_ms, MessageDraft, MessageId, ProducerStamp, QueueId};
use crate::topic::{validate_user_topic, TopicConfig};

/// Limits on a send request.
#[derive(Copy, Clone, Debug)]
pub struct SendLimits {
    pub max_batch_messages: usize,
    pub max_message_size_bytes: u64,
}

pub use crate::api::{MAX_KEYS, MAX_PROPERTIES, MAX_SHORT_TEXT};

/// Generates message ids: 4 bytes of the group's hash (so any node can tell which
/// group stored a message), 2 of the node id, 6 of milliseconds, 4 of a counter.
pub struct MessageIdGenerator {
    prefix: [u8; 6],
    counter: AtomicU32,
}

impl MessageIdGenerator {
    pub fn new(group: &str, node_id: u64) -> Self {
        let mut prefix = [0u8; 6];
        prefix[..4].copy_from_slice(&group_hash(group).to_be_bytes());
        prefix[4..].copy_from_slice(&(node_id as u16).to_be_bytes());
        Self {
            prefix,
            counter: AtomicU32::new(rand::random()),
        }
    }

    pub fn next(&self, now_ms: u64) -> MessageId {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&self.prefix);
        id[6..12].copy_from_slice(&now_ms.to_be_bytes()[2..]);
        id[12..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        MessageId(id)
    }
}

/// The 32-bit hash of a group name carried in its message ids.
pub fn group_hash(group: &str) -> u32 {
    crc32fast::hash(group.as_bytes())
}

/// The group hash inside a message id.
pub fn group_hash_of(id: &MessageId) -> u32 {
    u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

/// Turns a send request into a command.
pub struct SendPreparer {
    ids: MessageIdGenerator,
    round_robin: AtomicU64,
    delay_levels: DelayLevels,
    /// The longest a timer message may wait (`consumer.max_delay`).
    max_delay_ms: u64,
}

/// `consumer.max_delay`'s default: 7 days.
pub const DEFAULT_MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

impl SendPreparer {
    pub fn new(group: &str, node_id: u64, delay_levels: DelayLevels) -> Self {
        Self {
            ids: MessageIdGenerator::new(group, node_id),
            round_robin: AtomicU64::new(0),
            delay_levels,
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
        }
    }

    /// With timer messages waiting at most `max_delay`.
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: std::time::Duration) -> Self {
        self.max_delay_ms = u64::try_from(max_delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The delay of each level, as this node schedules them.
    pub fn delay_levels(&self) -> &DelayLevels {
        &self.delay_levels
    }

    /// A message id for a message this node stores.
    pub fn next_id(&self, now_ms: u64) -> MessageId {
        self.ids.next(now_ms)
    }

    /// Validates the request and fixes every message's queue, id and timestamps.
    ///
    /// # Errors
    /// `Invalid` for an invalid request, `TopicNotFound` for a missing topic when
    /// auto-creation is off, `NoPermission` for a topic that is not writable,
    /// `QueueNotFound` for a queue id past its write queues.
    pub fn prepare(
        &self,
        state: &GroupState,
        auto_create: bool,
        topic: &str,
        request: SendRequest,
        born_host: &str,
        limits: SendLimits,
    ) -> Result<SendCommand, BrokerError> {
        validate_user_topic(topic).map_err(BrokerError::Invalid)?;
        if request.messages.is_empty() {
            return Err(BrokerError::invalid(
                "`messages` must hold at least one message",
            ));
        }
        if request.messages.len() > limits.max_batch_messages {
            return Err(BrokerError::Invalid(format!(
                "a batch holds at most {} messages, got {}",
                limits.max_batch_messages,
                request.messages.len()
            )));
        }
        let idempotent = request
            .messages
            .iter()
            .any(|m| m.producer_id.is_some() || m.sequence.is_some());
        if idempotent && request.messages.len() > DEDUP_WINDOW {
            // A retry of a larger batch could no longer be recognised whole: its
            // first sequences would have left the replicated dedup window.
            return Err(BrokerError::Invalid(format!(
                "a batch with producer_id/sequence holds at most {DEDUP_WINDOW} messages (the dedup window), got {}",
                request.messages.len()
            )));
        }
        let (config, create_if_missing) = match state.topics.get(topic) {
            Some(config) => (config.clone(), None),
            None if auto_create => {
                let config = TopicConfig::with_defaults(topic);
                (config.clone(), Some(config))
            }
            None => return Err(BrokerError::topic_not_found(topic)),
        };
        if !config.writable() {
            return Err(BrokerError::NoPermission(format!(
                "topic `{topic}` is not writable (perm {})",
                config.perm
            )));
        }
        if let Some(queue) = request
            .messages
            .iter()
            .filter_map(|m| m.queue_id)
            .find(|queue| *queue >= config.write_queue_nums)
        {
            return Err(BrokerError::queue_not_found(
                topic,
                queue,
                QueueKind::Write,
                config.write_queue_nums,
            ));
        }
        let now = now_ms();
        let mut messages = Vec::with_capacity(request.messages.len());
        for (i, input) in request.messages.into_iter().enumerate() {
            let draft = self
                .draft(topic, &config, input, now, born_host, limits)
                .map_err(|e| BrokerError::Invalid(format!("messages[{i}]: {e}")))?;
            messages.push(draft);
        }
        Ok(SendCommand {
            topic: topic.to_string(),
            messages,
            create_if_missing,
        })
    }

    /// When a timer message is due (`deliver_at`, or `delay_ms` from `now`).
    fn timer_due(
        &self,
        deliver_at: Option<u64>,
        delay_ms: Option<u64>,
        now: u64,
    ) -> Result<Option<u64>, String> {
        let max = self.max_delay_ms;
        match (deliver_at, delay_ms) {
            (Some(_), Some(_)) => Err("give `deliver_at` or `delay_ms`, not both".into()),
            (None, Some(delay)) if delay > max => Err(format!(
                "delay_ms must be at most {max} (consumer.max_delay), got {delay}"
            )),
            (None, Some(delay)) => Ok(Some(now + delay)),
            (Some(at), None) if at > now.saturating_add(max) => Err(format!(
                "deliver_at {at} is more than consumer.max_delay ({max} ms) after now ({now})"
            )),
            (Some(at), None) => Ok(Some(at)),
            (None, None) => Ok(None),
        }
    }

    fn draft(
        &self,
        topic: &str,
        config: &TopicConfig,
        input: MessageInput,
        now: u64,
        born_host: &str,
        limits: SendLimits,
    ) -> Result<MessageDraft, String> {
        let (body, binary_body) = match (input.body, input.body_base64) {
            (Some(text), None) => (text.into_bytes(), false),
            (None, Some(encoded)) => (
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| format!("body_base64 is not valid base64: {e}"))?,
                true,
            ),
            (Some(_), Some(_)) => {
                return Err("give either `body` or `body_base64`, not both".into())
            }
            (None, None) => return Err("`body` (or `body_base64`) is required".into()),
        };
        let tags = input.tags.unwrap_or_default();
        if tags.len() > MAX_SHORT_TEXT || tags.contains("||") {
            return Err(format!(
                "tags must be at most {MAX_SHORT_TEXT} bytes without `||`"
            ));
        }
        if input.keys.len() > MAX_KEYS
            || input
                .keys
                .iter()
                .any(|k| k.is_empty() || k.len() > MAX_SHORT_TEXT)
        {
            return Err(format!(
                "at most {MAX_KEYS} keys of 1..={MAX_SHORT_TEXT} bytes each"
            ));
        }
        if input.properties.len() > MAX_PROPERTIES
            || input.properties.iter().any(|(k, v)| {
                // An empty name is a name (JSON allows it, the record stores it):
                // OpenAPI 3.0 cannot say otherwise about a map's keys.
                k.len() > MAX_SHORT_TEXT || v.len() > usize::from(u16::MAX)
            })
        {
            return Err(format!(
                "at most {MAX_PROPERTIES} properties, names of at most {MAX_SHORT_TEXT} bytes, values under 64KiB"
            ));
        }
        let delay_level = input.delay_level.unwrap_or(0);
        if delay_level > self.delay_levels.max_level() {
            return Err(format!(
                "delay_level must be 0 (none) to {}, got {delay_level}",
                self.delay_levels.max_level()
            ));
        }
        let timer_due = self.timer_due(input.deliver_at, input.delay_ms, now)?;
        if timer_due.is_some() && delay_level > 0 {
            return Err(
                "give `delay_level` or a timer (`deliver_at` or `delay_ms`), not both".into(),
            );
        }
        let producer = match (input.producer_id, input.sequence) {
            (Some(id), Some(sequence)) => {
                if id.is_empty() || id.len() > MAX_SHORT_TEXT {
                    return Err(format!("producer_id must be 1..={MAX_SHORT_TEXT} bytes"));
                }
                Some(ProducerStamp {
                    producer_id: id,
                    sequence,
                })
            }
            (None, None) => None,
            _ => return Err("`producer_id` and `sequence` go together".into()),
        };
        if input
            .sharding_key
            .as_ref()
            .is_some_and(|key| key.len() > MAX_SHORT_TEXT)
        {
            return Err(format!(
                "sharding_key must be at most {MAX_SHORT_TEXT} bytes"
            ));
        }
        let queue_id = match (input.queue_id, input.sharding_key) {
            (Some(queue), _) => {
                if queue >= config.write_queue_nums {
                    return Err(format!(
                        "queue_id {queue} is not a write queue of `{topic}` (it has {})",
                        config.write_queue_nums
                    ));
                }
                queue
            }
            (None, Some(key)) => crc32fast::hash(key.as_bytes()) % config.write_queue_nums,
            (None, None) => {
                (self.round_robin.fetch_add(1, Ordering::Relaxed)
                    % u64::from(config.write_queue_nums)) as u32
            }
        };
        let mut draft = MessageDraft {
            topic: topic.to_string(),
            queue_id: QueueId(queue_id),
            msg_id: self.ids.next(now),
            body,
            binary_body,
            tags,
            keys: input.keys,
            properties: input.properties,
            born_timestamp_ms: now,
            store_timestamp_ms: now,
            born_host: born_host.chars().take(usize::from(u8::MAX)).collect(),
            reconsume_times: 0,
            producer,
        };
        if delay_level > 0 {
            delay::schedule(&mut draft, delay_level, &self.delay_levels, now);
        }
        // A time already passed means now: an ordinary message.
        if let Some(due) = timer_due.filter(|due| *due > now) {
            delay::schedule_timer(&mut draft, due);
        }
        let size = record::encoded_len(&draft.record_content()).map_err(|e| e.to_string())?;
        if size as u64 > limits.max_message_size_bytes {
            return Err(format!(
                "message of {size} bytes exceeds the maximum of {} bytes",
                limits.max_message_size_bytes
            ));
        }
        Ok(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MessageInput;

    fn limits() -> SendLimits {
        SendLimits {
            max_batch_messages: 4,
            max_message_size_bytes: 4096,
        }
    }

    fn request(messages: Vec<MessageInput>) -> SendRequest {
        SendRequest {
            messages,
            transaction: None,
        }
    }

    fn body(text: &str) -> MessageInput {
        MessageInput {
            body: Some(text.into()),
            ..MessageInput::default()
        }
    }

    #[test]
    fn round_robin_spreads_and_sharding_is_stable() {
        let preparer = SendPreparer::new("g", 1, DelayLevels::default());
        let state = GroupState::default();
        let command = preparer
            .prepare(
                &state,
                true,
                "t",
                request(vec![body("a"), body("b"), body("c"), body("d")]),
                "h",
                limits(),
            )
            .expect("valid");
        let queues: Vec<u32> = command.messages.iter().map(|m| m.queue_id.0).collect();
        assert_eq!(queues, vec![0, 1, 2, 3]);
        assert!(command.create_if_missing.is_some());
        let sharded = |key: &str| MessageInput {
            sharding_key: Some(key.into()),
            ..body("x")
        };
        let first = preparer
            .prepare(
                &state,
                true,
                "t",
                request(vec![sharded("user-7"), sharded("user-7")]),
                "h",
                limits(),
            )
            .expect("valid");
        assert_eq!(first.messages[0].queue_id, first.messages[1].queue_id);
        assert_ne!(first.messages[0].msg_id, first.messages[1].msg_id);
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let preparer = SendPreparer::new("g", 1, DelayLevels::default());
        let state = GroupState::default();
        let check = |messages: Vec<MessageInput>, auto: bool, needle: &str| {
            let err = preparer
                .prepare(&state, auto, "t", request(messages), "h", limits())
                .expect_err("must be refused");
            assert!(err.to_string().contains(needle), "{err:?} lacks {needle}");
        };
        check(vec![], true, "at least one");
        check(vec![body("a"); 5], true, "at most 4");
        check(vec![MessageInput::default()], true, "required");
        check(
            vec![MessageInput {
                body_base64: Some("!!".into()),
                ..MessageInput::default()
            }],
            true,
            "base64",
        );
        check(
            vec![MessageInput {
                queue_id: Some(9),
                ..body("a")
            }],
            true,
            "queue 9 is not a write queue",
        );
        check(
            vec![MessageInput {
                producer_id: Some("p".into()),
                ..body("a")
            }],
            true,
            "go together",
        );
        check(vec![body(&"x".repeat(5000))], true, "exceeds");
        let big = SendPreparer::new("g", 1, DelayLevels::default());
        let idempotent: Vec<MessageInput> = (0..=DEDUP_WINDOW as u64)
            .map(|sequence| MessageInput {
                producer_id: Some("p".into()),
                sequence: Some(sequence),
                ..body("a")
            })
            .collect();
        let wide = SendLimits {
            max_batch_messages: 1024,
            max_message_size_bytes: 4096,
        };
        let err = big
            .prepare(&state, true, "t", request(idempotent), "h", wide)
            .expect_err("idempotent batch over the window");
        assert!(err.to_string().contains("dedup window"), "{err:?}");
        let err = preparer
            .prepare(&state, false, "t", request(vec![body("a")]), "h", limits())
            .expect_err("no auto-create");
        assert!(matches!(err, BrokerError::TopicNotFound { .. }), "{err:?}");
        let err = preparer
            .prepare(
                &state,
                true,
                "%DLQ%g",
                request(vec![body("a")]),
                "h",
                limits(),
            )
            .expect_err("reserved");
        assert!(matches!(err, BrokerError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn message_ids_carry_the_group() {
        let ids = MessageIdGenerator::new("broker-a", 3);
        let a = ids.next(1_700_000_000_000);
        let b = ids.next(1_700_000_000_000);
        assert_ne!(a, b);
        assert_eq!(group_hash_of(&a), group_hash("broker-a"));
    }
}
