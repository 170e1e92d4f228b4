//! The wire types of the HTTP/JSON API (shared/API.md): requests and responses as
//! clients see them. Shared by the HTTP handlers, the client library and the tools.
//!
//! # Limits
//! Every list a request carries, and every table a request makes the broker keep,
//! has a cap: the constants below (protocol limits, the same on every node, not
//! configuration). A request over a list cap is 400 `BAD_REQUEST` naming the cap,
//! refused while it is parsed (before the list is built); a table at its cap
//! refuses growth with 503 `UNAVAILABLE` naming it, and keeps what it has.
//!
//! | what | cap | over it |
//! | --- | --- | --- |
//! | messages per send | `http.max_batch_messages` (config, 1024); [`crate::limits::DEDUP_WINDOW`] (256) with `producer_id` | 400 |
//! | keys / properties per message | [`MAX_KEYS`] (32) / [`MAX_PROPERTIES`] (64) | 400 |
//! | a key, tags, property name, `producer_id`, `sharding_key` | [`MAX_SHORT_TEXT`] (255 bytes) | 400 |
//! | a property value | 64 KiB | 400 |
//! | topics per heartbeat | [`MAX_HEARTBEAT_TOPICS`] (256) | 400 |
//! | held queues per heartbeat (`owned`), and queues assigned to one member | [`MAX_OWNED_QUEUES`] (4096) | 400 / the rest waits for more members |
//! | broker groups in a topic's `groups` | [`MAX_TOPIC_GROUPS`] (64) | 400 |
//! | tags in a pull's filter (`TagA\|\|TagB`) | [`MAX_FILTER_TAGS`] (64) | 400 |
//! | messages per pull or query (`max_messages`, `max`) | 1024 | 400 |
//! | members of one consumer group | [`MAX_GROUP_MEMBERS`] (1024) | 503 for a new member |
//! | consumer groups per coordinator | [`MAX_CONSUMER_GROUPS`] (1024) | 503 for a new group |
//! | topics, queues and hints a coordinator keeps in all | [`MAX_COORDINATOR_ENTRIES`] (262,144) | 503 |
//! | idempotent producers per broker group | [`crate::limits::MAX_PRODUCERS`] (10,000), each kept 1 h | 503 for a new producer |

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::transaction::TransactionInput;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::acl::Permission;

/// Most keys one message may carry (each is an index entry).
pub const MAX_KEYS: usize = 32;
/// Most properties one message may carry.
pub const MAX_PROPERTIES: usize = 64;
/// Longest key, tags string, property name, producer id or sharding key, in bytes.
pub const MAX_SHORT_TEXT: usize = 255;
/// A message's tags as a pattern: no `||`, which separates a pull filter's tags.
pub const TAGS_PATTERN: &str = "^([^|]|[|][^|])*[|]?$";
/// Most topics one consumer-group member may subscribe to in a heartbeat.
pub const MAX_HEARTBEAT_TOPICS: usize = 256;
/// Most queues a heartbeat may report held, and most the coordinator assigns to
/// one member (a topic has at most 1024 queues per broker group; a member of a
/// large group holds far fewer).
pub const MAX_OWNED_QUEUES: usize = 4096;
/// Most broker groups a topic's `groups` may name.
pub const MAX_TOPIC_GROUPS: usize = 64;
/// Most tags a pull's filter may name.
pub const MAX_FILTER_TAGS: usize = 64;
/// Most members one consumer group may have at its coordinator. More members than
/// queues get nothing to consume anyway.
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Most consumer groups one coordinator keeps (groups without live members are
/// forgotten first).
pub const MAX_CONSUMER_GROUPS: usize = 1024;
/// Most entries a coordinator keeps over all its groups: one per group, member,
/// subscribed topic, held queue and hand-off hint. About 200 bytes each, so the
/// tables stay under ~50 MiB whatever clients send.
pub const MAX_COORDINATOR_ENTRIES: usize = 1 << 18;

/// Deserializes a list of at most `max` elements, refusing a longer one as soon as
/// its element `max + 1` is reached (so it is never built).
pub(crate) fn capped<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    struct Capped<T> {
        max: usize,
        what: &'static str,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {} {}", self.max, self.what)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(serde::de::Error::custom(format!(
                        "at most {} {} (a protocol limit)",
                        self.max, self.what
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(Capped {
        max,
        what,
        item: PhantomData,
    })
}

fn heartbeat_topics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    capped(d, MAX_HEARTBEAT_TOPICS, "topics per heartbeat")
}

fn owned_queues<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OwnedQueue>, D::Error> {
    let owned: Vec<Strict<OwnedQueue>> =
        capped(d, MAX_OWNED_QUEUES, "held queues (`owned`) per heartbeat")?;
    Ok(owned.into_iter().map(|queue| queue.0).collect())
}

fn topic_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    /// `groups` when present and not null.
    struct Groups(Vec<String>);
    impl<'de> Deserialize<'de> for Groups {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            capped(d, MAX_TOPIC_GROUPS, "broker groups per topic").map(Groups)
        }
    }
    Ok(Option::<Groups>::deserialize(d)?.map(|groups| groups.0))
}

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

/// Deserializes a JSON object (see [`Strict`]).
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    Strict::<T>::deserialize(deserializer).map(|strict| strict.0)
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    // At most `http.max_batch_messages`, a node's configuration: the server's
    // document writes its default.
    #[serde(deserialize_with = "objects")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub messages: Vec<MessageInput>,
    /// Store the batch as one transaction's half messages, invisible until it is
    /// committed (shared/API.md "Transactional messages").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub transaction: Option<TransactionInput>,
}

/// One message to send. Exactly one of `body` and `body_base64`.
// The OpenAPI document's schema (feature `openapi`): an absent field is absent, not
// `null` (`nullable = false`); the literal limits are [`MAX_SHORT_TEXT`] and
// [`MAX_KEYS`] (the server's `http::openapi` tests hold them equal).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, format = Byte))]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::tags))]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_items = 32, min_length = 1, max_length = 255)
    )]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::message_properties))]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub queue_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, max_length = 255))]
    pub sharding_key: Option<String>,
    // At most the node's highest delay level (configuration): the server's
    // document writes the default table's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub delay_level: Option<u32>,
    /// A timer message: visible in its topic at this time (epoch milliseconds),
    /// at most `consumer.max_delay` (7 days by default) ahead; a time already
    /// passed means now. Not with `delay_level` or `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub deliver_at: Option<u64>,
    /// A timer message: visible in its topic this many milliseconds after it is
    /// stored, at most `consumer.max_delay`. Not with `delay_level` or `deliver_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, min_length = 1, max_length = 255)
    )]
    pub producer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub sequence: Option<u64>,
}

/// Where one sent message was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SendResult))]
pub struct SendResultView {
    pub msg_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    pub store_timestamp: u64,
    /// A delayed or timer message: when it reaches its topic (until then it waits
    /// in the schedule or timer topic, named by `topic`, whose queue and offset
    /// the other fields give).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub deliver_timestamp: Option<u64>,
}

/// Answer to a send: one result per message, in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendResponse {
    pub results: Vec<SendResultView>,
    pub group: String,
    /// A transactional send: the id to commit or roll back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub transaction_id: Option<String>,
}

/// A stored message as pulls and queries return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Message))]
pub struct MessageView {
    pub msg_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub tags: Option<String>,
    // Always written (no `skip_serializing_if`): required in the document.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub keys: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub properties: BTreeMap<String, String>,
    pub born_timestamp: u64,
    pub store_timestamp: u64,
    pub reconsume_times: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub producer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub sequence: Option<u64>,
}

/// The `status` words of a pull's answer (RocketMQ's `PullStatus`).
pub const PULL_STATUSES: [&str; 5] = [
    "FOUND",
    "NO_NEW_MSG",
    "NO_MATCHED_MSG",
    "OFFSET_TOO_SMALL",
    "OFFSET_OVERFLOW",
];

/// `GET /v1/topics/{topic}/queues/{queue_id}/messages`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullResponse {
    /// One of [`PULL_STATUSES`].
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::pull_status))]
    pub status: String,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<MessageView>,
}

/// One queue's offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Queue))]
pub struct QueueView {
    pub group: String,
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// `GET /v1/topics/{topic}/queues`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuesResponse {
    pub topic: String,
    pub queues: Vec<QueueView>,
}

/// `{"offset": N}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetResponse {
    pub offset: u64,
}

/// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitOffsetRequest {
    pub offset: u64,
    #[serde(default)]
    pub force: bool,
}

/// Answer to an offset commit: the offset stored afterwards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitOffsetResponse {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

/// `POST /v1/groups/{group}/retry`: give a message back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    /// 0 or absent: the growing delay (level 3 + reconsume count); a level of the
    /// consumer's choosing; negative: straight to the dead-letter topic.
    // At most the node's highest delay level (configuration): the server's
    // document writes the default table's.
    #[serde(default)]
    pub delay_level: i32,
}

/// Where a given-back message went.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryResponse {
    pub msg_id: String,
    /// `%RETRY%{group}`, or `%DLQ%{group}` for a dead letter.
    pub topic: String,
    /// The reconsume count of the copy.
    pub reconsume_times: u32,
    /// When the retry reaches the retry topic; absent for a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub deliver_timestamp: Option<u64>,
    pub dead_letter: bool,
    /// The broker group that stored it.
    pub broker_group: String,
}

/// `POST /v1/groups/{group}/offsets/reset`: move a consumer group's offsets of a
/// topic to the first message stored at or after `timestamp`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetOffsetsRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub topic: String,
    pub timestamp: u64,
}

/// One committed offset with the queue's lag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = GroupOffset))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupOffsetsResponse {
    pub group: String,
    pub offsets: Vec<GroupOffsetView>,
}

/// One consumer group in `GET /v1/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ConsumerGroup))]
pub struct ConsumerGroupView {
    /// The consumer group.
    pub group: String,
    /// Topics it has committed offsets for, sorted.
    pub topics: Vec<String>,
    /// Broker groups holding its offsets, sorted.
    pub broker_groups: Vec<String>,
    /// Queues with a committed offset, or with a receive cursor (receive and
    /// ack).
    pub queues: u64,
    /// Messages behind, summed over those queues (receive and ack: not yet
    /// delivered, plus delivered and not acked).
    pub lag: u64,
    /// Receive and ack: messages leased now (delivered, not acked, lease
    /// running).
    #[serde(default)]
    pub leased: u64,
    /// Receive and ack: messages delivered and not acked whose lease ended; the
    /// next receive delivers them again (or dead-letters them).
    #[serde(default)]
    pub awaiting_redelivery: u64,
    /// Receive and ack: messages in flight delivered more than once.
    #[serde(default)]
    pub redelivered: u64,
}

/// `GET /v1/groups`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerGroupsResponse {
    pub groups: Vec<ConsumerGroupView>,
}

/// `PUT /v1/topics/{topic}`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TopicRequest {
    // 1..=`crate::topic::MAX_QUEUE_NUMS` (the server's `http::openapi` tests hold
    // the literal equal to it).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, maximum = 1024)
    )]
    pub read_queue_nums: Option<u32>,
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, maximum = 1024)
    )]
    pub write_queue_nums: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::perm))]
    pub perm: Option<u8>,
    #[serde(default, deserialize_with = "topic_groups")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::topic_groups))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Topic))]
pub struct TopicView {
    pub topic: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u8,
    pub groups: Vec<String>,
}

/// `GET /v1/topics`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicsResponse {
    pub topics: Vec<TopicView>,
}

/// The answer to `DELETE /v1/topics/{topic}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeletedTopic))]
pub struct DeletedTopicResponse {
    pub topic: String,
    pub deleted: bool,
    /// The broker groups that deleted it.
    pub groups: Vec<String>,
}

/// `GET /v1/topics/{topic}/messages?key=…`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagesResponse {
    pub messages: Vec<MessageView>,
}

/// One group serving a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RouteGroup))]
pub struct RouteGroupView {
    pub group: String,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub leader: Option<String>,
    pub replicas: Vec<String>,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u8,
}

/// `GET /v1/routes/{topic}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteResponse {
    pub topic: String,
    pub groups: Vec<RouteGroupView>,
}

/// One node as `/v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Node))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Group))]
pub struct GroupView {
    pub group: String,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub leader_id: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub leader: Option<String>,
    pub term: u64,
    pub nodes: Vec<NodeView>,
    /// Milliseconds since this group's routes were last registered here.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub registration_age_ms: Option<u64>,
}

/// `GET /v1/cluster`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterResponse {
    pub node_id: u64,
    pub group: String,
    pub groups: Vec<GroupView>,
}

/// `POST /v1/cluster/groups/{group}/nodes`: the node to add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    pub node_id: u64,
    /// The node's base URL as the group's other nodes reach it.
    pub address: String,
}

/// `POST /v1/cluster/groups/{group}/transfer-leader`: the voter to hand
/// leadership to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    pub to: u64,
}

/// `POST /v1/node/drain`: what draining the answering node did (readiness off,
/// held requests answered, leadership handed over).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainResponse {
    pub node_id: u64,
    pub group: String,
    /// Whether the node led its group when the drain began.
    pub was_leader: bool,
    /// The group's leader when the drain ended (`null`: none known, e.g. a
    /// transfer that did not finish in time).
    #[cfg_attr(feature = "openapi", schema(required))]
    pub leader_id: Option<u64>,
    /// Whether this call began the drain (a repeat reports the same state).
    pub started: bool,
}

/// What `POST /v1/cluster/groups/{group}/finalize-upgrade` did: the broker group
/// uses every feature of the leader's internal protocol from now on. A group
/// bootstrapped by this build has them from the start; an upgraded group only
/// after this call, which every voter must be able to follow — and after which a
/// node of an older build can no longer join or be downgraded to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FinalizeUpgradeResponse {
    pub group: String,
    /// The internal protocol version the group now uses.
    pub protocol: u32,
    /// Queue claims: a new consumer-group coordinator grants at once (see the
    /// README's consumer groups).
    pub queue_claims: bool,
    /// Whether this call enabled them (a repeat answers `false`).
    pub enabled_now: bool,
}

/// Where a node's join of a group stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JoinState {
    /// Being added as a learner.
    AddingLearner,
    /// A learner, receiving the log up to what the leader had when it began.
    CatchingUp,
    /// Caught up; being made a voter.
    Promoting,
    /// It did not catch up in time; its learner is being removed.
    RemovingLearner,
    /// A voter.
    Done,
    /// Ended without making it a voter; `message` says why and what is left.
    Failed,
}

impl JoinState {
    /// Whether the join ended (nothing more will change without a new request).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// A node joining a group: the answer to `POST /v1/cluster/groups/{group}/nodes`
/// (202 while it runs) and to `GET /v1/cluster/groups/{group}/nodes/{node_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Join))]
pub struct JoinView {
    pub group: String,
    pub node_id: u64,
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub state: JoinState,
    /// Why it failed, or what it found (e.g. already a voter).
    #[serde(default)]
    pub message: Option<String>,
    /// When the group's leader started the join (absent when the leader knows the
    /// node only from the membership, e.g. after a leader change).
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
}

/// The error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Error))]
pub struct ErrorBody {
    /// One of [`crate::error_code::ErrorCode`]'s words.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::error_code))]
    pub code: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub leader: Option<String>,
}

/// `POST /v1/groups/{group}/heartbeat`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub client_id: String,
    #[serde(deserialize_with = "heartbeat_topics")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::heartbeat_topics))]
    pub topics: Vec<String>,
    /// Queues the member still holds (consumes or has not yet let go of), with the
    /// offset it last committed: a queue moves to another member only once no one
    /// holds it.
    // At most `MAX_OWNED_QUEUES` (the server's `http::openapi` tests hold the
    // literal equal to it).
    #[serde(default, deserialize_with = "owned_queues")]
    #[cfg_attr(feature = "openapi", schema(max_items = 4096))]
    pub owned: Vec<OwnedQueue>,
}

/// A queue a member holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OwnedQueue {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub topic: String,
    /// The broker group of the queue.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub group: String,
    pub queue_id: u32,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub offset: Option<u64>,
}

/// A queue assigned to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    pub topic: String,
    /// The broker group of the queue.
    pub group: String,
    pub queue_id: u32,
    /// The offset its previous holder last reported, when known: resume at the
    /// larger of this and the committed offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub offset: Option<u64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Every live member of the consumer group, sorted.
    pub members: Vec<String>,
    /// This member's queues.
    pub assignments: Vec<Assignment>,
}

/// `POST /v1/users`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::name))]
    pub name: String,
    // At most `crate::acl::MAX_PERMISSIONS` (the server's `http::openapi` tests
    // hold the literal equal to it).
    #[serde(default, deserialize_with = "objects")]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub permissions: Vec<Permission>,
    #[serde(default, deserialize_with = "object")]
    pub quotas: QuotasView,
}

/// `PUT /v1/users/{name}`: the new permissions and quotas (both replaced).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default, deserialize_with = "objects")]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub permissions: Vec<Permission>,
    #[serde(default, deserialize_with = "object")]
    pub quotas: QuotasView,
}

/// A user's send quotas (absent: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Quotas))]
#[serde(deny_unknown_fields)]
pub struct QuotasView {
    /// Absent or null: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub send_messages_per_s: Option<u64>,
    /// Absent or null: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub send_bytes_per_s: Option<u64>,
}

/// The answer to creating a user or rotating its token: the only time the token
/// is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = UserToken))]
pub struct UserTokenResponse {
    pub name: String,
    pub token: String,
    /// Broker groups that applied the change.
    pub groups: Vec<String>,
    /// Broker groups that could not be reached: they catch up from the others
    /// within a few seconds of becoming reachable (anti-entropy).
    // Always written (no `skip_serializing_if`): required in the document.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub pending_groups: Vec<String>,
}

/// A user as `GET /v1/users` shows it: never its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = User))]
pub struct UserView {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub quotas: QuotasView,
    pub created: u64,
    pub updated: u64,
}

/// `GET /v1/users`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsersResponse {
    pub users: Vec<UserView>,
}

/// The answer to `DELETE /v1/users/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeletedUser))]
pub struct DeletedUserResponse {
    pub name: String,
    pub deleted: bool,
    pub groups: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub pending_groups: Vec<String>,
}
