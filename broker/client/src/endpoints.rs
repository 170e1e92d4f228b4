//! The typed endpoint methods of [`BrokerClient`], one per endpoint of shared/API.md,
//! using the wire types of [`crate::api`].

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use super::broker_client::{BrokerClient, Call};
use super::error::{ClientError, Result};
use crate::api::{
    ClusterResponse, CommitOffsetRequest, CommitOffsetResponse, GroupOffsetsResponse,
    HeartbeatRequest, HeartbeatResponse, MessageView, MessagesResponse, OffsetResponse,
    PullResponse, QueuesResponse, ResetOffsetsRequest, RetryRequest, RetryResponse, RouteResponse,
    SendRequest, SendResponse, TopicRequest, TopicView, TopicsResponse,
};
use broker_proto::pull_binary;
use broker_proto::receive::{
    AckRequest, AckResponse, ChangeInvisibleRequest, ChangeInvisibleResponse, ReceiveRequest,
    ReceiveResponse, MAX_ACK_HANDLES,
};
use broker_proto::transaction::{
    TransactionChecksResponse, TransactionInput, TransactionResolution,
};

/// A pull's `Accept` with [`crate::ClientOptions::binary_pulls`]: the binary
/// form, else JSON.
const PULL_ACCEPT: &str = "application/vnd.broker.pull-v1, application/json;q=0.5";

/// `GET /ready`: the node is a member of a group with a known leader.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Readiness {
    pub status: String,
    pub group: String,
    pub leader_id: u64,
    /// The leader's base URL.
    pub leader: Option<String>,
}

/// How an offset commit treats a stored offset that is ahead of the new one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Keep the stored offset if it is ahead (a late commit never moves a group back).
    Advance,
    /// Store the offset even if it moves the group back (a reset): `"force": true`.
    Force,
}

/// Options of a pull beyond the queue and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullOptions {
    /// Most messages returned (1..=1024; the broker's default is 32).
    pub max_messages: u32,
    /// Long polling: how long the broker may hold the request while the queue has no
    /// new message (0..=30000; 0 answers at once).
    pub max_wait_ms: u64,
    /// Tag filter, `*` or `TagA||TagB`; `None` for all.
    pub tags: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            max_messages: 32,
            max_wait_ms: 0,
            tags: None,
        }
    }
}

impl BrokerClient {
    /// `POST /v1/topics/{topic}/messages`: stores a batch (all or nothing) once a
    /// quorum has it. Not retried here beyond leader following: see
    /// [`super::Producer`] for idempotent retries.
    ///
    /// # Errors
    /// The broker's refusal or failure ([`super::ClientError::Api`]), or a transport
    /// failure; check [`super::ClientError::is_outcome_unknown`] before resending.
    pub async fn send(&self, topic: &str, request: &SendRequest) -> Result<SendResponse> {
        let segments = ["v1", "topics", topic, "messages"];
        let call = Call::write(Method::POST, &segments, Some(request))?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/topics/{topic}/queues/{queue_id}/messages`: messages from `offset`,
    /// waiting up to `max_wait_ms` for new ones when there are none.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `QUEUE_NOT_FOUND` for a queue past the topic's read
    /// queues, `BAD_REQUEST` for a limit out of range or a topic several broker
    /// groups serve (name one with [`BrokerClient::pull_queue`]), transport
    /// failures.
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: u32,
        max_wait_ms: u64,
        tags: Option<&str>,
    ) -> Result<PullResponse> {
        let queue = queue_id.to_string();
        let segments = ["v1", "topics", topic, "queues", &queue, "messages"];
        let mut call = Call::read(&segments);
        call.query = vec![
            ("offset", offset.to_string()),
            ("max_messages", max_messages.to_string()),
            ("max_wait_ms", max_wait_ms.to_string()),
        ];
        if let Some(tags) = tags {
            call.query.push(("tags", tags.to_string()));
        }
        call.extra_timeout = Duration::from_millis(max_wait_ms);
        if self.options().binary_pulls {
            call.accept = Some(PULL_ACCEPT);
        }
        let answer = self.execute(&call).await?;
        let binary = answer
            .content_type
            .as_deref()
            .is_some_and(pull_binary::is_answer_type);
        if !binary {
            return answer.json();
        }
        pull_binary::decode(&answer.body).map_err(|e| ClientError::Decode {
            status: answer.status,
            url: answer.url.to_string(),
            reason: e.to_string(),
        })
    }

    /// [`BrokerClient::pull`] with its options in a struct.
    ///
    /// # Errors
    /// As [`BrokerClient::pull`].
    pub async fn pull_with(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        options: &PullOptions,
    ) -> Result<PullResponse> {
        self.pull(
            topic,
            queue_id,
            offset,
            options.max_messages,
            options.max_wait_ms,
            options.tags.as_deref(),
        )
        .await
    }

    /// `GET /v1/topics/{topic}/queues`: every queue with its min and max offsets, in
    /// every broker group serving the topic.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, transport failures.
    pub async fn queues(&self, topic: &str) -> Result<QueuesResponse> {
        self.queues_in(topic, None).await
    }

    /// `GET /v1/topics/{topic}/queues?group=G`: the topic's queues in the broker
    /// group `group` names (any node asks that group), or with `None` in every group
    /// serving the topic, as [`BrokerClient::queues`].
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND` (also when the named group does not serve the topic),
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, transport failures.
    pub async fn queues_in(&self, topic: &str, group: Option<&str>) -> Result<QueuesResponse> {
        let segments = ["v1", "topics", topic, "queues"];
        let mut call = Call::read(&segments);
        if let Some(group) = group {
            call.query.push(("group", group.to_string()));
        }
        self.execute(&call).await?.json()
    }

    /// `PUT /v1/topics/{topic}`: creates or updates a topic; answers its config.
    ///
    /// # Errors
    /// `BAD_REQUEST` for a bad name or settings, transport failures.
    pub async fn create_topic(&self, topic: &str, request: &TopicRequest) -> Result<TopicView> {
        let segments = ["v1", "topics", topic];
        let call = Call::write(Method::PUT, &segments, Some(request))?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/topics`
    ///
    /// # Errors
    /// Transport failures.
    pub async fn topics(&self) -> Result<TopicsResponse> {
        self.execute(&Call::read(&["v1", "topics"])).await?.json()
    }

    /// `GET /v1/topics/{topic}`
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, transport failures.
    pub async fn topic(&self, topic: &str) -> Result<TopicView> {
        let segments = ["v1", "topics", topic];
        self.execute(&Call::read(&segments)).await?.json()
    }

    /// `DELETE /v1/topics/{topic}`
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, transport failures.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let segments = ["v1", "topics", topic];
        let call = Call::write(Method::DELETE, &segments, None::<&()>)?;
        self.execute(&call).await.map(drop)
    }

    /// `GET /v1/routes/{topic}`: the groups serving a topic and their leaders.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, transport failures.
    pub async fn route(&self, topic: &str) -> Result<RouteResponse> {
        let segments = ["v1", "routes", topic];
        self.execute(&Call::read(&segments)).await?.json()
    }

    /// `GET /v1/cluster`: every known group with its nodes, as the answering node
    /// sees them.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn cluster(&self) -> Result<ClusterResponse> {
        self.execute(&Call::read(&["v1", "cluster"])).await?.json()
    }

    /// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}`: commits a consumer
    /// group's offset; answers the offset stored afterwards.
    ///
    /// # Errors
    /// `CONFLICT` for an offset beyond the queue's max offset, `TOPIC_NOT_FOUND`,
    /// `QUEUE_NOT_FOUND` for a queue past the topic's queues, `BAD_REQUEST` for a
    /// bad name or a topic several broker groups serve (name one with
    /// [`BrokerClient::commit_queue_offset`]), `NO_PERMISSION` for a
    /// [`CommitMode::Force`] without `admin` on the group, transport failures.
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        mode: CommitMode,
    ) -> Result<CommitOffsetResponse> {
        let queue = queue_id.to_string();
        let segments = ["v1", "groups", group, "offsets", topic, &queue];
        let body = CommitOffsetRequest {
            offset,
            force: mode == CommitMode::Force,
        };
        let call = Call::write(Method::PUT, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/groups/{group}/offsets?topic=T`: a group's committed offsets and
    /// lags, for one topic or (`None`) all: at least every commit acknowledged
    /// before the call, from whichever node answers.
    ///
    /// # Errors
    /// `BAD_REQUEST` for a bad name, `UNAVAILABLE` from a node that cannot
    /// reach its leader, transport failures.
    pub async fn group_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<GroupOffsetsResponse> {
        self.group_offsets_with(group, topic, false).await
    }

    /// [`BrokerClient::group_offsets`]; with `stale`, each node's own copy
    /// (`stale=true`: answered also by a node cut off from its leader, and maybe
    /// behind recent commits).
    ///
    /// # Errors
    /// As [`BrokerClient::group_offsets`].
    pub async fn group_offsets_with(
        &self,
        group: &str,
        topic: Option<&str>,
        stale: bool,
    ) -> Result<GroupOffsetsResponse> {
        let segments = ["v1", "groups", group, "offsets"];
        let mut call = Call::read(&segments);
        if let Some(topic) = topic {
            call.query.push(("topic", topic.to_string()));
        }
        if stale {
            call.query.push(("stale", "true".into()));
        }
        self.execute(&call).await?.json()
    }

    /// `GET /v1/messages/{msg_id}`
    ///
    /// # Errors
    /// `MESSAGE_NOT_FOUND`, `BAD_REQUEST` for a malformed id, transport failures.
    pub async fn message_by_id(&self, msg_id: &str) -> Result<MessageView> {
        let segments = ["v1", "messages", msg_id];
        self.execute(&Call::read(&segments)).await?.json()
    }

    /// `GET /v1/topics/{topic}/messages?key=K&begin=MS&end=MS&max=N`: messages with a
    /// key, stored between `begin_ms` and `end_ms` (inclusive; open when `None`).
    ///
    /// # Errors
    /// `MESSAGE_NOT_FOUND` when none match, `TOPIC_NOT_FOUND`, transport failures.
    pub async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: Option<u64>,
        end_ms: Option<u64>,
        max: Option<u32>,
    ) -> Result<MessagesResponse> {
        let segments = ["v1", "topics", topic, "messages"];
        let mut call = Call::read(&segments);
        call.query.push(("key", key.to_string()));
        let optional = [
            ("begin", begin_ms),
            ("end", end_ms),
            ("max", max.map(u64::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                call.query.push((name, value.to_string()));
            }
        }
        self.execute(&call).await?.json()
    }

    /// `GET /v1/topics/{topic}/queues/{queue_id}/offset?timestamp=MS`: the first
    /// offset whose store time is at or after `timestamp_ms`.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `QUEUE_NOT_FOUND` for a queue past the topic's queues,
    /// `BAD_REQUEST` when several broker groups serve the topic (name one with
    /// [`BrokerClient::queue_offset_by_timestamp`]), transport failures.
    pub async fn offset_by_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
    ) -> Result<u64> {
        self.offset_at(topic, queue_id, timestamp_ms, None).await
    }

    /// The offset-by-time request, in the broker group `group` names if any.
    async fn offset_at(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
        group: Option<&str>,
    ) -> Result<u64> {
        let queue = queue_id.to_string();
        let segments = ["v1", "topics", topic, "queues", &queue, "offset"];
        let mut call = Call::read(&segments);
        call.query.push(("timestamp", timestamp_ms.to_string()));
        if let Some(group) = group {
            call.query.push(("group", group.to_string()));
        }
        let answer: OffsetResponse = self.execute(&call).await?.json()?;
        Ok(answer.offset)
    }

    /// `GET /health`: the node's process is up.
    ///
    /// # Errors
    /// Transport failures, a non-2xx answer.
    pub async fn health(&self) -> Result<()> {
        self.execute(&Call::read(&["health"])).await.map(drop)
    }

    /// `GET /ready`: the node answering is a member of a group with a known leader.
    ///
    /// # Errors
    /// `UNAVAILABLE` when not ready, transport failures.
    pub async fn ready(&self) -> Result<Readiness> {
        self.execute(&Call::read(&["ready"])).await?.json()
    }
}

/// A queue of a topic in one broker group (queue ids are per group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupQueue {
    pub topic: String,
    /// The broker group.
    pub group: String,
    pub queue_id: u32,
}

impl BrokerClient {
    /// [`BrokerClient::pull_with`] on the queue of a named broker group (any node
    /// forwards it there).
    ///
    /// # Errors
    /// As [`BrokerClient::pull`]; `BROKER_GROUP_NOT_FOUND` (404) for an unknown
    /// group.
    pub async fn pull_queue(
        &self,
        queue: &GroupQueue,
        offset: u64,
        options: &PullOptions,
    ) -> Result<PullResponse> {
        let queue_id = queue.queue_id.to_string();
        let segments = [
            "v1",
            "topics",
            &queue.topic,
            "queues",
            &queue_id,
            "messages",
        ];
        let mut call = Call::read(&segments);
        call.query = vec![
            ("offset", offset.to_string()),
            ("max_messages", options.max_messages.to_string()),
            ("max_wait_ms", options.max_wait_ms.to_string()),
            ("group", queue.group.clone()),
        ];
        if let Some(tags) = &options.tags {
            call.query.push(("tags", tags.clone()));
        }
        call.extra_timeout = Duration::from_millis(options.max_wait_ms);
        self.execute(&call).await?.json()
    }

    /// [`BrokerClient::offset_by_timestamp`] in the queue of a named broker group
    /// (any node forwards it there): the first offset whose store time is at or
    /// after `timestamp_ms`.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `QUEUE_NOT_FOUND` for a queue past the topic's queues,
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, transport failures.
    pub async fn queue_offset_by_timestamp(
        &self,
        queue: &GroupQueue,
        timestamp_ms: u64,
    ) -> Result<u64> {
        self.offset_at(
            &queue.topic,
            queue.queue_id,
            timestamp_ms,
            Some(&queue.group),
        )
        .await
    }

    /// [`BrokerClient::send`] to a named broker group (any node forwards it there).
    ///
    /// # Errors
    /// As [`BrokerClient::send`]; `BROKER_GROUP_NOT_FOUND` for an unknown group.
    pub async fn send_to_group(
        &self,
        topic: &str,
        group: &str,
        request: &SendRequest,
    ) -> Result<SendResponse> {
        let segments = ["v1", "topics", topic, "messages"];
        let mut call = Call::write(Method::POST, &segments, Some(request))?;
        call.query.push(("group", group.to_string()));
        self.execute(&call).await?.json()
    }

    /// [`BrokerClient::commit_offset`] for the queue of a named broker group (any
    /// node forwards it there).
    ///
    /// # Errors
    /// As [`BrokerClient::commit_offset`]; `BROKER_GROUP_NOT_FOUND` for an unknown
    /// group.
    pub async fn commit_queue_offset(
        &self,
        consumer_group: &str,
        queue: &GroupQueue,
        offset: u64,
        mode: CommitMode,
    ) -> Result<CommitOffsetResponse> {
        let queue_id = queue.queue_id.to_string();
        let segments = [
            "v1",
            "groups",
            consumer_group,
            "offsets",
            &queue.topic,
            &queue_id,
        ];
        let body = CommitOffsetRequest {
            offset,
            force: mode == CommitMode::Force,
        };
        let mut call = Call::write(Method::PUT, &segments, Some(&body))?;
        call.query.push(("broker_group", queue.group.clone()));
        self.execute(&call).await?.json()
    }

    /// The committed offset of one queue of a named broker group, if any.
    ///
    /// # Errors
    /// Transport failures, a bad name.
    pub async fn committed_offset(
        &self,
        consumer_group: &str,
        queue: &GroupQueue,
    ) -> Result<Option<u64>> {
        let segments = ["v1", "groups", consumer_group, "offsets"];
        let mut call = Call::read(&segments);
        call.query.push(("topic", queue.topic.clone()));
        call.query.push(("broker_group", queue.group.clone()));
        let answer: GroupOffsetsResponse = self.execute(&call).await?.json()?;
        Ok(answer
            .offsets
            .iter()
            .find(|o| o.queue_id == queue.queue_id && o.group == queue.group)
            .map(|o| o.offset))
    }

    /// `POST /v1/groups/{group}/heartbeat`: registers a consumer-group member with
    /// its coordinator; answers the members and this member's queues.
    ///
    /// # Errors
    /// `BAD_REQUEST` for bad names, transport failures.
    pub async fn heartbeat(
        &self,
        consumer_group: &str,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse> {
        let segments = ["v1", "groups", consumer_group, "heartbeat"];
        let call = Call::write(Method::POST, &segments, Some(request))?;
        self.execute(&call).await?.json()
    }
}

impl BrokerClient {
    /// `POST /v1/groups/{group}/retry`: gives the message at `queue_offset` of a
    /// named broker group's queue back: it comes again through `%RETRY%{group}`
    /// after the growing delay (`delay_level` 0), a chosen level (> 0), or goes to
    /// `%DLQ%{group}` (< 0, or once reconsumed the broker's maximum).
    ///
    /// # Errors
    /// `MESSAGE_NOT_FOUND` when the offset holds no message (deleted by retention),
    /// `TOPIC_NOT_FOUND`, `QUEUE_NOT_FOUND`, `BROKER_GROUP_NOT_FOUND` for an unknown
    /// group, `BAD_REQUEST` for bad names or levels, transport failures.
    pub async fn give_back(
        &self,
        consumer_group: &str,
        queue: &GroupQueue,
        queue_offset: u64,
        delay_level: i32,
    ) -> Result<RetryResponse> {
        let request = RetryRequest {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            queue_offset,
            delay_level,
        };
        self.give_back_with(consumer_group, &request, Some(&queue.group))
            .await
    }

    /// [`BrokerClient::give_back`] with the request as the wire has it and the broker
    /// group optional: with `None` the node answering resolves the group serving
    /// `request.topic`, which must then be only one.
    ///
    /// # Errors
    /// `MESSAGE_NOT_FOUND` when the offset holds no message, `TOPIC_NOT_FOUND`,
    /// `QUEUE_NOT_FOUND` for a queue past the topic's queues,
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, `BAD_REQUEST` for bad names or
    /// levels or (without a group) a topic several groups serve, transport failures.
    pub async fn give_back_with(
        &self,
        consumer_group: &str,
        request: &RetryRequest,
        broker_group: Option<&str>,
    ) -> Result<RetryResponse> {
        let segments = ["v1", "groups", consumer_group, "retry"];
        let mut call = Call::write(Method::POST, &segments, Some(request))?;
        if let Some(group) = broker_group {
            call.query.push(("broker_group", group.to_string()));
        }
        self.execute(&call).await?.json()
    }

    /// `POST /v1/groups/{group}/offsets/reset`: moves the group's offsets of every
    /// queue of `topic` (in every broker group) to the first message stored at or
    /// after `timestamp_ms`.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `BAD_REQUEST` for bad names, transport failures.
    pub async fn reset_offsets(
        &self,
        consumer_group: &str,
        topic: &str,
        timestamp_ms: u64,
    ) -> Result<GroupOffsetsResponse> {
        let segments = ["v1", "groups", consumer_group, "offsets", "reset"];
        let body = ResetOffsetsRequest {
            topic: topic.to_string(),
            timestamp: timestamp_ms,
        };
        let call = Call::write(Method::POST, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }
}

/// Receive and ack (shared/API.md "Receive and ack"): leases on messages of a
/// topic for a consumer group. Any node takes these and forwards them to the
/// broker group that holds the lease, so they go where writes go (leader first,
/// failover on connect errors) and are not resent beyond that here: see
/// [`super::SimpleConsumer`] for a consumer that retries them.
impl BrokerClient {
    /// `POST /v1/groups/{group}/topics/{topic}/receive`: leases up to
    /// `request.max_messages` messages of `topic` to `consumer_group` for
    /// `request.invisible_ms`, waiting up to `request.max_wait_ms` while there are
    /// none (the request's timeout grows by that wait). An empty answer means the
    /// wait is over.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND` (receives never create topics), `BAD_REQUEST` for a bad
    /// name or a limit out of range, `NO_PERMISSION` without `sub`, transport
    /// failures. After an outcome-unknown failure the messages may have been
    /// leased: they come again once the lease runs out.
    pub async fn receive(
        &self,
        consumer_group: &str,
        topic: &str,
        request: &ReceiveRequest,
    ) -> Result<ReceiveResponse> {
        let segments = ["v1", "groups", consumer_group, "topics", topic, "receive"];
        let mut call = Call::write(Method::POST, &segments, Some(request))?;
        call.extra_timeout = Duration::from_millis(request.max_wait_ms.unwrap_or(0));
        self.execute(&call).await?.json()
    }

    /// `POST /v1/groups/{group}/ack`: acks the leases `receipt_handles` name; the
    /// answer has one status per handle, in order: `OK` (the group never receives
    /// the message again), `EXPIRED` or `INVALID` ([`broker_proto::receive`]).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for no handle or more than
    /// [`MAX_ACK_HANDLES`] (nothing is sent); `BAD_REQUEST`, `NO_PERMISSION`,
    /// transport failures. Acking a handle twice is harmless, so a retry after an
    /// outcome-unknown failure is safe: a handle the first attempt acked answers
    /// `OK` again while its lease runs, `EXPIRED` after.
    pub async fn ack(
        &self,
        consumer_group: &str,
        receipt_handles: &[String],
    ) -> Result<AckResponse> {
        if receipt_handles.is_empty() || receipt_handles.len() > MAX_ACK_HANDLES {
            return Err(ClientError::InvalidArgument(format!(
                "an ack names 1..={MAX_ACK_HANDLES} receipt handles, not {}",
                receipt_handles.len()
            )));
        }
        let segments = ["v1", "groups", consumer_group, "ack"];
        let body = AckRequest {
            receipt_handles: receipt_handles.to_vec(),
        };
        let call = Call::write(Method::POST, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }

    /// `POST /v1/groups/{group}/change-invisible`: replaces the lease
    /// `receipt_handle` names with one of `invisible_ms` from now (0 or
    /// 1000..=43200000); 0 gives the message back at once (a nack: it is delivered
    /// again, its `delivery_attempt` one higher). Answers the new lease's handle:
    /// the old one is spent.
    ///
    /// # Errors
    /// `EXPIRED` (409) when the lease ran out, `MESSAGE_NOT_FOUND` (404) for a
    /// handle naming no lease of the group, `BAD_REQUEST` for a duration out of
    /// range, `NO_PERMISSION`, transport failures. Not safe to
    /// resend after an outcome-unknown failure: if the first attempt took effect,
    /// the handle is spent and the retry is refused.
    pub async fn change_invisible(
        &self,
        consumer_group: &str,
        receipt_handle: &str,
        invisible_ms: u64,
    ) -> Result<ChangeInvisibleResponse> {
        let segments = ["v1", "groups", consumer_group, "change-invisible"];
        let body = ChangeInvisibleRequest {
            receipt_handle: receipt_handle.to_string(),
            invisible_ms,
        };
        let call = Call::write(Method::POST, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }

    /// `POST /v1/topics/{topic}/messages` with `transaction`: stores `messages` as
    /// one transaction of `producer_group`, invisible until it is committed; the
    /// answer's `transaction_id` names it.
    ///
    /// # Errors
    /// As [`BrokerClient::send`]. Not safe to resend after an outcome-unknown
    /// failure: the first attempt may have opened a transaction, which the
    /// producer group's checks then offer (answer them by the messages' keys).
    pub async fn send_transaction(
        &self,
        topic: &str,
        producer_group: &str,
        messages: Vec<crate::api::MessageInput>,
    ) -> Result<SendResponse> {
        let request = SendRequest {
            messages,
            transaction: Some(TransactionInput {
                producer_group: producer_group.to_string(),
            }),
        };
        self.send(topic, &request).await
    }

    /// `POST /v1/transactions/{id}/commit` (`commit`) or `…/rollback`: resolves a
    /// transaction. Safe to repeat: a repeat answers as the first did.
    ///
    /// # Errors
    /// `CONFLICT` (409) when it was resolved the other way (also by the broker
    /// after its last check), `TRANSACTION_NOT_FOUND` (404), `NO_PERMISSION`
    /// without `pub` on its topic, transport failures.
    pub async fn resolve_transaction(
        &self,
        transaction_id: &str,
        commit: bool,
    ) -> Result<TransactionResolution> {
        let action = if commit { "commit" } else { "rollback" };
        let segments = ["v1", "transactions", transaction_id, action];
        let call = Call::write(Method::POST, &segments, None::<&()>)?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/producer-groups/{pg}/transaction-checks`: open transactions of
    /// `producer_group` to resolve, waiting up to `max_wait` for one. Each offer
    /// goes to one caller; resolve it with [`BrokerClient::resolve_transaction`].
    ///
    /// # Errors
    /// `BAD_REQUEST` for a wait over 30 s or a bad name, transport failures.
    pub async fn transaction_checks(
        &self,
        producer_group: &str,
        max_wait: Duration,
    ) -> Result<TransactionChecksResponse> {
        self.transaction_checks_in(producer_group, None, max_wait)
            .await
    }

    /// [`BrokerClient::transaction_checks`] of the transactions `broker_group`
    /// stores (`None`: the answering node's group). A cluster of several groups
    /// keeps each transaction in the group that stored its messages: ask each.
    ///
    /// # Errors
    /// As [`BrokerClient::transaction_checks`]; `BROKER_GROUP_NOT_FOUND` for a
    /// group no node knows.
    pub async fn transaction_checks_in(
        &self,
        producer_group: &str,
        broker_group: Option<&str>,
        max_wait: Duration,
    ) -> Result<TransactionChecksResponse> {
        let segments = [
            "v1",
            "producer-groups",
            producer_group,
            "transaction-checks",
        ];
        let mut call = Call::read(&segments);
        call.target = super::broker_client::Target::Leader;
        call.query
            .push(("max_wait_ms", max_wait.as_millis().to_string()));
        if let Some(group) = broker_group {
            call.query.push(("broker_group", group.to_string()));
        }
        call.extra_timeout = max_wait;
        self.execute(&call).await?.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_ask_for_the_binary_form_first() {
        assert!(pull_binary::accepts(PULL_ACCEPT));
        assert!(PULL_ACCEPT.starts_with(pull_binary::MEDIA_TYPE));
    }
}
