//! Giving a message back (RocketMQ's `sendMessageBack`): a consumer that failed to
//! handle a message hands it to the broker, which stores a copy in the group's retry
//! topic `%RETRY%{group}` after a growing delay (level 3 + reconsume count), or in
//! its dead-letter topic `%DLQ%{group}` once it was reconsumed
//! `max_reconsume_times` times. Members of the group consume their retry topic with
//! their other topics; the dead-letter topic is for people (inspect, resend).
//!
//! The copy keeps the message's id, body, tags, keys, born time and properties, and
//! records where the message first came from, so a dead letter still says which
//! topic, queue and offset it was and how often it was tried.

use std::collections::BTreeMap;

use super::delay::{self, DelayLevels};
use crate::storage::{MessageDraft, QueueId, StoredMessage};
use crate::topic::{dlq_topic, retry_topic};

pub use broker_proto::properties::{
    PROPERTY_CONSUMER_GROUP, PROPERTY_ORIGIN_MESSAGE_ID, PROPERTY_ORIGIN_QUEUE_ID,
    PROPERTY_ORIGIN_QUEUE_OFFSET, PROPERTY_ORIGIN_TOPIC, PROPERTY_RECONSUME_TIMES,
    PROPERTY_RETRY_TOPIC,
};

/// What the consumer asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The growing delay: level 3 + reconsume count (RocketMQ's default).
    Default,
    /// A delay level of the consumer's choosing.
    Level(u32),
    /// Straight to the dead-letter topic.
    DeadLetter,
}

/// Where a given-back message goes.
#[derive(Clone, Debug)]
pub struct GiveBack {
    /// The topic the send is for: the retry or the dead-letter topic.
    pub topic: String,
    /// The copy to store; for a retry it is in the schedule topic already.
    pub draft: MessageDraft,
    /// When a retry is due; `None` for a dead letter.
    pub due_ms: Option<u64>,
}

/// The message's properties, taken out of it, with where it was first stored
/// (`ORIGIN_*`) added unless a copy of it already carries them: a retried,
/// delayed or dead-lettered copy keeps its first origin.
pub fn origin_properties(message: &mut StoredMessage) -> BTreeMap<String, String> {
    let mut properties = std::mem::take(&mut message.properties);
    if !properties.contains_key(PROPERTY_ORIGIN_TOPIC) {
        properties.insert(PROPERTY_ORIGIN_TOPIC.into(), message.topic.clone());
        properties.insert(
            PROPERTY_ORIGIN_QUEUE_ID.into(),
            message.queue_id.0.to_string(),
        );
        properties.insert(
            PROPERTY_ORIGIN_QUEUE_OFFSET.into(),
            message.queue_offset.0.to_string(),
        );
        properties.insert(
            PROPERTY_ORIGIN_MESSAGE_ID.into(),
            message.msg_id.to_string(),
        );
    }
    properties
}

/// Decides where `message`, given back by `group`, goes, and builds its copy.
pub fn give_back(
    mut message: StoredMessage,
    group: &str,
    request: Request,
    max_reconsume_times: u32,
    levels: &DelayLevels,
    now_ms: u64,
) -> GiveBack {
    let mut properties = origin_properties(&mut message);
    let origin = properties[PROPERTY_ORIGIN_TOPIC].clone();
    properties.insert(PROPERTY_RETRY_TOPIC.into(), origin);
    properties.insert(PROPERTY_CONSUMER_GROUP.into(), group.to_string());
    let dead = request == Request::DeadLetter || message.reconsume_times >= max_reconsume_times;
    let topic = if dead {
        properties.insert(
            PROPERTY_RECONSUME_TIMES.into(),
            message.reconsume_times.to_string(),
        );
        dlq_topic(group)
    } else {
        retry_topic(group)
    };
    let reconsume_times = message.reconsume_times;
    let mut draft = message.into_draft(topic.clone(), QueueId(0), properties, now_ms);
    if dead {
        return GiveBack {
            topic,
            draft,
            due_ms: None,
        };
    }
    draft.reconsume_times += 1;
    let level = match request {
        Request::Level(level) => level,
        _ => 3 + reconsume_times,
    };
    delay::schedule(&mut draft, level, levels, now_ms);
    let due_ms = delay::draft_due_ms(&draft);
    GiveBack {
        topic,
        draft,
        due_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CommitLogOffset, MessageId, QueueOffset, RaftLogRef};
    use crate::topic::SCHEDULE_TOPIC;

    fn stored(topic: &str, reconsume_times: u32) -> StoredMessage {
        StoredMessage {
            topic: topic.into(),
            queue_id: QueueId(2),
            queue_offset: QueueOffset(41),
            commit_log_offset: CommitLogOffset(0),
            size: 0,
            msg_id: MessageId([9; 16]),
            body: b"b".to_vec(),
            binary_body: false,
            tags: "T".into(),
            keys: vec!["k".into()],
            properties: Default::default(),
            born_timestamp_ms: 5,
            store_timestamp_ms: 6,
            born_host: "h".into(),
            reconsume_times,
            producer: None,
            raft: RaftLogRef::default(),
        }
    }

    #[test]
    fn the_delay_grows_with_each_give_back() {
        let levels = DelayLevels::default();
        let first = give_back(
            stored("orders", 0),
            "g",
            Request::Default,
            16,
            &levels,
            1_000,
        );
        assert_eq!(first.topic, "%RETRY%g");
        assert_eq!(first.draft.topic, SCHEDULE_TOPIC);
        assert_eq!(first.draft.queue_id, QueueId(2), "level 3");
        assert_eq!(first.due_ms, Some(11_000));
        assert_eq!(first.draft.reconsume_times, 1);
        let props = &first.draft.properties;
        assert_eq!(props[PROPERTY_ORIGIN_TOPIC], "orders");
        assert_eq!(props[PROPERTY_ORIGIN_QUEUE_ID], "2");
        assert_eq!(props[PROPERTY_ORIGIN_QUEUE_OFFSET], "41");
        assert_eq!(props[PROPERTY_RETRY_TOPIC], "orders");
        assert_eq!(props[delay::PROPERTY_REAL_TOPIC], "%RETRY%g");

        // The retried copy given back again keeps its origin.
        let mut again = stored("%RETRY%g", 1);
        again.properties = first.draft.properties.clone();
        let second = give_back(again, "g", Request::Default, 16, &levels, 1_000);
        assert_eq!(second.draft.queue_id, QueueId(3), "level 4");
        assert_eq!(second.draft.properties[PROPERTY_ORIGIN_QUEUE_OFFSET], "41");
        assert_eq!(second.draft.properties[PROPERTY_RETRY_TOPIC], "orders");
    }

    #[test]
    fn the_last_give_back_is_a_dead_letter() {
        let levels = DelayLevels::default();
        let retried = give_back(
            stored("%RETRY%g", 15),
            "g",
            Request::Default,
            16,
            &levels,
            0,
        );
        assert_eq!(retried.topic, "%RETRY%g");
        assert_eq!(retried.draft.queue_id, QueueId(17), "level 18 (3 + 15)");
        let dead = give_back(
            stored("%RETRY%g", 16),
            "g",
            Request::Default,
            16,
            &levels,
            0,
        );
        assert_eq!(dead.topic, "%DLQ%g");
        assert_eq!(dead.draft.topic, "%DLQ%g");
        assert_eq!(dead.due_ms, None);
        assert_eq!(dead.draft.properties[PROPERTY_RECONSUME_TIMES], "16");
        let asked = give_back(
            stored("orders", 0),
            "g",
            Request::DeadLetter,
            16,
            &levels,
            0,
        );
        assert_eq!(asked.topic, "%DLQ%g");
        assert_eq!(asked.draft.properties[PROPERTY_ORIGIN_TOPIC], "orders");
    }
}
