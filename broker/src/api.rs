//! The wire types of the HTTP/JSON API (shared/API.md): requests and responses as
//! clients see them. Shared by the HTTP handlers, the client library and the tools.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A request body that must be a JSON object.
///
/// serde's derived `Deserialize` also accepts a struct written as an array of its
/// fields in order (`[8, 8, 6]` for a topic); the API does not. Deserializing through
/// `Strict` asks for a map, so an array is refused with a clear error.
pub struct Strict<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Strict<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Strict)
    }
}

/// Deserializes a list whose elements must be JSON objects (see [`Strict`]).
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let items: Vec<Strict<T>> = Vec::deserialize(deserializer)?;
    Ok(items.into_iter().map(|item| item.0).collect())
}

/// `POST /v1/topics/{topic}/messages`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(deserialize_with = "objects")]
    pub messages: Vec<MessageInput>,
}

/// One message to send. Exactly one of `body` and `body_base64`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// Where one sent message was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResultView {
    pub msg_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    pub store_timestamp: u64,
    /// A delayed message: when it reaches `topic` (until then it waits in the
    /// schedule topic, whose queue and offset the other fields give).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_timestamp: Option<u64>,
}

/// Answer to a send: one result per message, in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendResponse {
    pub results: Vec<SendResultView>,
    pub group: String,
}

/// A stored message as pulls and queries return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub msg_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub born_timestamp: u64,
    pub store_timestamp: u64,
    pub reconsume_times: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// `GET /v1/topics/{topic}/queues/{queue_id}/messages`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullResponse {
    pub status: String,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<MessageView>,
}

/// One queue's offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub group: String,
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// `GET /v1/topics/{topic}/queues`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuesResponse {
    pub topic: String,
    pub queues: Vec<QueueView>,
}

/// `{"offset": N}`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OffsetResponse {
    pub offset: u64,
}

/// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitOffsetRequest {
    pub offset: u64,
    #[serde(default)]
    pub force: bool,
}

/// Answer to an offset commit: the offset stored afterwards.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitOffsetResponse {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

/// `POST /v1/groups/{group}/retry`: give a message back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    /// 0 or absent: the growing delay (level 3 + reconsume count); a level of the
    /// consumer's choosing; negative: straight to the dead-letter topic.
    #[serde(default)]
    pub delay_level: i32,
}

/// Where a given-back message went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetryResponse {
    pub msg_id: String,
    /// `%RETRY%{group}`, or `%DLQ%{group}` for a dead letter.
    pub topic: String,
    /// The reconsume count of the copy.
    pub reconsume_times: u32,
    /// When the retry reaches the retry topic; absent for a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_timestamp: Option<u64>,
    pub dead_letter: bool,
    /// The broker group that stored it.
    pub broker_group: String,
}

/// `POST /v1/groups/{group}/offsets/reset`: move a consumer group's offsets of a
/// topic to the first message stored at or after `timestamp`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsetsRequest {
    pub topic: String,
    pub timestamp: u64,
}

/// One committed offset with the queue's lag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsetView {
    /// The broker group keeping this offset (it owns the queue).
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub max_offset: u64,
    pub lag: u64,
}

/// `GET /v1/groups/{group}/offsets`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupOffsetsResponse {
    pub group: String,
    pub offsets: Vec<GroupOffsetView>,
}

/// `PUT /v1/topics/{topic}`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRequest {
    #[serde(default)]
    pub read_queue_nums: Option<u32>,
    #[serde(default)]
    pub write_queue_nums: Option<u32>,
    #[serde(default)]
    pub perm: Option<u8>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

impl TopicRequest {
    /// `n` read and `n` write queues, everything else left to the broker.
    pub fn with_queues(n: u32) -> Self {
        Self {
            read_queue_nums: Some(n),
            write_queue_nums: Some(n),
            ..Self::default()
        }
    }
}

/// A topic's configuration in one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicView {
    pub topic: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u8,
    pub groups: Vec<String>,
}

/// `GET /v1/topics`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicsResponse {
    pub topics: Vec<TopicView>,
}

/// `GET /v1/topics/{topic}/messages?key=…`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessagesResponse {
    pub messages: Vec<MessageView>,
}

/// One group serving a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteGroupView {
    pub group: String,
    pub leader: Option<String>,
    pub replicas: Vec<String>,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u8,
}

/// `GET /v1/routes/{topic}`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteResponse {
    pub topic: String,
    pub groups: Vec<RouteGroupView>,
}

/// One node as `/v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub url: String,
    /// leader, follower, learner, candidate or unknown.
    pub role: String,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Known to the leader as replicating (followers report only themselves).
    pub reachable: Option<bool>,
    /// Entries behind the leader's last log index, as the leader sees it.
    pub lag: Option<u64>,
}

/// One group as `/v1/cluster` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub group: String,
    pub leader_id: Option<u64>,
    pub leader: Option<String>,
    pub term: u64,
    pub nodes: Vec<NodeView>,
    /// Milliseconds since this group's routes were last registered here.
    pub registration_age_ms: Option<u64>,
}

/// `GET /v1/cluster`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterResponse {
    pub node_id: u64,
    pub group: String,
    pub groups: Vec<GroupView>,
}

/// The error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub leader: Option<String>,
}

/// `POST /v1/groups/{group}/heartbeat`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub client_id: String,
    pub topics: Vec<String>,
    /// Queues the member still holds (consumes or has not yet let go of), with the
    /// offset it last committed: a queue moves to another member only once no one
    /// holds it.
    #[serde(default)]
    pub owned: Vec<OwnedQueue>,
}

/// A queue a member holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedQueue {
    pub topic: String,
    /// The broker group of the queue.
    pub group: String,
    pub queue_id: u32,
    #[serde(default)]
    pub offset: Option<u64>,
}

/// A queue assigned to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub topic: String,
    /// The broker group of the queue.
    pub group: String,
    pub queue_id: u32,
    /// The offset its previous holder last reported, when known: resume at the
    /// larger of this and the committed offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Every live member of the consumer group, sorted.
    pub members: Vec<String>,
    /// This member's queues.
    pub assignments: Vec<Assignment>,
}
