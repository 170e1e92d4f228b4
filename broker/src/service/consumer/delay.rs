//! Delayed delivery, RocketMQ's way: a message with a delay level is stored in the
//! schedule topic (one queue per level, so each queue is in due-time order) with
//! its real topic and queue in properties, and the leader moves it to the real topic
//! when it is due (see [`super::scheduler`]).
//!
//! Timer messages (`deliver_at` / `delay_ms`) take the same shape in the timer
//! topic (`replication::timers::schedule_timer`); their delivery is `replication::timers`' and
//! [`super::timer_delivery`]'s.
//!
//! The due time is fixed in the message when it is scheduled (by the leader, from
//! its clock and the delay table it has then), so delivery never depends on a
//! configuration that could differ between replicas or change across a restart.

pub use crate::replication::timers::schedule_timer;
use crate::storage::{MessageDraft, QueueId, StoredMessage};
use crate::topic::{SCHEDULE_TOPIC, TIMER_TOPIC};

pub use broker_proto::delay::{DelayLevels, MAX_DELAY_LEVELS, ROCKETMQ_DELAY_LEVELS};
pub use broker_proto::properties::{
    PROPERTY_DELAY, PROPERTY_DELIVER_TIME_MS, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC,
};

/// Moves a draft into the schedule topic: it will reach its topic and queue
/// `levels.delay(level)` after `now_ms`.
pub fn schedule(draft: &mut MessageDraft, level: u32, levels: &DelayLevels, now_ms: u64) {
    let level = level.clamp(1, levels.max_level());
    let due = now_ms.saturating_add(levels.delay(level).as_millis() as u64);
    let properties = &mut draft.properties;
    properties.insert(PROPERTY_DELAY.into(), level.to_string());
    properties.insert(PROPERTY_REAL_TOPIC.into(), draft.topic.clone());
    properties.insert(PROPERTY_REAL_QUEUE_ID.into(), draft.queue_id.0.to_string());
    properties.insert(PROPERTY_DELIVER_TIME_MS.into(), due.to_string());
    draft.topic = SCHEDULE_TOPIC.to_string();
    draft.queue_id = schedule_queue(level);
}

/// The schedule-topic queue of a delay level.
pub fn schedule_queue(level: u32) -> QueueId {
    QueueId(level.max(1) - 1)
}

/// When a scheduled message is due; `None` if it does not say (not written by
/// [`schedule`]).
pub fn due_ms(message: &StoredMessage) -> Option<u64> {
    message
        .properties
        .get(PROPERTY_DELIVER_TIME_MS)?
        .parse()
        .ok()
}

/// When a draft [`schedule`] or [`schedule_timer`] moved into the schedule or
/// timer topic is due; `None` for any other draft.
pub fn draft_due_ms(draft: &MessageDraft) -> Option<u64> {
    if draft.topic != SCHEDULE_TOPIC && draft.topic != TIMER_TOPIC {
        return None;
    }
    draft.properties.get(PROPERTY_DELIVER_TIME_MS)?.parse().ok()
}

/// The message a due scheduled message becomes: its real topic and queue, the same
/// id, body, tags, keys and born time, the schedule properties removed, stored at
/// `now_ms`. `None` for a record that does not name its real topic and queue.
pub fn delivery(mut message: StoredMessage, now_ms: u64) -> Option<MessageDraft> {
    let mut properties = std::mem::take(&mut message.properties);
    let topic = properties.remove(PROPERTY_REAL_TOPIC)?;
    let queue_id: u32 = properties.remove(PROPERTY_REAL_QUEUE_ID)?.parse().ok()?;
    properties.remove(PROPERTY_DELIVER_TIME_MS);
    properties.remove(PROPERTY_DELAY);
    Some(message.into_draft(topic, QueueId(queue_id), properties, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CommitLogOffset, MessageId, QueueOffset, RaftLogRef};
    use std::time::Duration;

    #[test]
    fn a_timer_draft_goes_back_to_its_topic_unchanged() {
        let mut draft = MessageDraft {
            topic: "orders".into(),
            queue_id: QueueId(3),
            msg_id: MessageId([7; 16]),
            body: b"hello".to_vec(),
            binary_body: false,
            tags: "TagA".into(),
            keys: vec!["k".into()],
            properties: [("user".to_string(), "v".to_string())].into(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 1_000,
            born_host: "h".into(),
            reconsume_times: 0,
            producer: None,
        };
        let original = draft.clone();
        schedule_timer(&mut draft, 90_000);
        assert_eq!(
            (draft.topic.as_str(), draft.queue_id),
            (TIMER_TOPIC, crate::replication::timers::TIMER_QUEUE)
        );
        assert_eq!(draft_due_ms(&draft), Some(90_000));
        let stored = StoredMessage {
            topic: draft.topic.clone(),
            queue_id: draft.queue_id,
            queue_offset: QueueOffset(0),
            commit_log_offset: CommitLogOffset(0),
            size: 0,
            msg_id: draft.msg_id,
            body: draft.body.clone(),
            binary_body: false,
            tags: draft.tags.clone(),
            keys: draft.keys.clone(),
            properties: draft.properties.clone(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 1_000,
            born_host: "h".into(),
            reconsume_times: 0,
            producer: None,
            raft: RaftLogRef::default(),
        };
        let delivered = delivery(stored, 90_000).expect("names its real topic");
        assert_eq!(
            delivered,
            MessageDraft {
                store_timestamp_ms: 90_000,
                ..original
            }
        );
    }

    #[test]
    fn levels_parse_and_clamp() {
        let levels = DelayLevels::default();
        assert_eq!(levels.max_level(), 18);
        assert_eq!(levels.delay(1), Duration::from_secs(1));
        assert_eq!(levels.delay(3), Duration::from_secs(10));
        assert_eq!(levels.delay(18), Duration::from_secs(7200));
        assert_eq!(levels.delay(40), Duration::from_secs(7200));
        assert!(DelayLevels::parse("").is_err());
        assert!(DelayLevels::parse("1s 0s").is_err());
        assert!(DelayLevels::parse("1s x").is_err());
        assert_eq!(
            DelayLevels::parse("100ms 2s").expect("parses").delay(2),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_scheduled_draft_comes_back_as_it_was() {
        let mut draft = MessageDraft {
            topic: "orders".into(),
            queue_id: QueueId(3),
            msg_id: MessageId([7; 16]),
            body: b"hello".to_vec(),
            binary_body: false,
            tags: "TagA".into(),
            keys: vec!["k".into()],
            properties: [("user".to_string(), "v".to_string())].into(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 1_000,
            born_host: "h".into(),
            reconsume_times: 2,
            producer: None,
        };
        let original = draft.clone();
        schedule(&mut draft, 2, &DelayLevels::default(), 1_000);
        assert_eq!(draft.topic, SCHEDULE_TOPIC);
        assert_eq!(draft.queue_id, QueueId(1));
        assert_eq!(
            draft
                .properties
                .get(PROPERTY_REAL_TOPIC)
                .map(String::as_str),
            Some("orders")
        );
        let stored = StoredMessage {
            topic: draft.topic.clone(),
            queue_id: draft.queue_id,
            queue_offset: QueueOffset(0),
            commit_log_offset: CommitLogOffset(0),
            size: 0,
            msg_id: draft.msg_id,
            body: draft.body.clone(),
            binary_body: false,
            tags: draft.tags.clone(),
            keys: draft.keys.clone(),
            properties: draft.properties.clone(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 1_000,
            born_host: "h".into(),
            reconsume_times: 2,
            producer: None,
            raft: RaftLogRef::default(),
        };
        assert_eq!(due_ms(&stored), Some(6_000));
        let delivered = delivery(stored, 6_001).expect("names its real topic");
        assert_eq!(
            delivered,
            MessageDraft {
                store_timestamp_ms: 6_001,
                ..original
            }
        );
    }
}
