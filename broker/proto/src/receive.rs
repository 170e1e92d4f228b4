//! Lease-based consumption (shared/API.md "Receive and ack"): receive messages of
//! a topic leased to a consumer group for a while, ack each one, or change its
//! lease; and the receipt handle that names one lease.
//!
//! The bounds are the contract's: 1..=[`MAX_RECEIVE_MESSAGES`] messages per
//! receive, leases of [`MIN_INVISIBLE_MS`]..=[`MAX_INVISIBLE_MS`], a wait of at
//! most [`MAX_RECEIVE_WAIT_MS`], at most [`MAX_ACK_HANDLES`] handles per ack.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::api::MessageView;

/// Most messages one receive answers.
pub const MAX_RECEIVE_MESSAGES: usize = 256;
/// Messages a receive answers when the request does not say.
pub const DEFAULT_RECEIVE_MESSAGES: usize = 16;
/// Shortest lease a receive or a change may ask for (a change may also ask for
/// 0: give the message back now).
pub const MIN_INVISIBLE_MS: u64 = 1_000;
/// Longest lease (12 h, as SQS and RocketMQ's POP).
pub const MAX_INVISIBLE_MS: u64 = 12 * 3_600_000;
/// The lease a receive takes when the request does not say.
pub const DEFAULT_INVISIBLE_MS: u64 = 30_000;
/// Longest a receive is held when there is nothing to deliver.
pub const MAX_RECEIVE_WAIT_MS: u64 = 30_000;
/// Most receipt handles one ack names.
pub const MAX_ACK_HANDLES: usize = 1024;
/// Longest a receipt handle may be (names are at most 127 characters).
pub const MAX_RECEIPT_HANDLE_LEN: usize = 512;

/// The ack answers, per handle.
pub const ACK_STATUSES: [&str; 3] = [ACK_OK, ACK_EXPIRED, ACK_INVALID];
/// Acked: the group never receives the message again.
pub const ACK_OK: &str = "OK";
/// The lease ran out (or another delivery replaced it): the message may be
/// delivered again.
pub const ACK_EXPIRED: &str = "EXPIRED";
/// Not a handle of this group (undecodable, another group's, a deleted topic's).
pub const ACK_INVALID: &str = "INVALID";

/// `POST /v1/groups/{group}/topics/{topic}/receive`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// 1..=256, default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, maximum = 256)
    )]
    pub max_messages: Option<usize>,
    /// How long the messages stay leased: 1000..=43200000 ms, default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1000, maximum = 43200000)
    )]
    pub invisible_ms: Option<u64>,
    /// Hold the request up to this long while there is nothing to deliver:
    /// 0..=30000 ms, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, maximum = 30000))]
    pub max_wait_ms: Option<u64>,
    /// `*` (default) or `TagA||TagB`. Messages the filter leaves out are
    /// consumed for the group (never delivered to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, schema_with = crate::openapi::tags)
    )]
    pub tags: Option<String>,
    /// Deliver each queue's messages in order, one leased run at a time.
    #[serde(default)]
    pub fifo: bool,
}

/// One received message: the message as a pull answers it, and its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceivedMessage {
    #[serde(flatten)]
    pub message: MessageView,
    /// Names this lease in an ack or a change.
    pub receipt_handle: String,
    /// 1 for the first delivery to the group, one more for each after.
    pub delivery_attempt: u32,
    /// Unix ms until which no other receiver of the group gets the message.
    pub invisible_until: u64,
    /// The broker group that stores the message.
    pub broker_group: String,
}

/// The answer of a receive.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiveResponse {
    pub messages: Vec<ReceivedMessage>,
}

/// `POST /v1/groups/{group}/ack`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(deserialize_with = "ack_handles")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::receipt_handles))]
    pub receipt_handles: Vec<String>,
}

fn ack_handles<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    crate::api::capped(d, MAX_ACK_HANDLES, "receipt handles per ack")
}

/// One handle's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckResult {
    pub receipt_handle: String,
    /// `OK`, `EXPIRED` or `INVALID` ([`ACK_STATUSES`]).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::ack_status))]
    pub status: String,
}

/// The answer of an ack: one result per handle, in request order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckResponse {
    pub results: Vec<AckResult>,
}

/// `POST /v1/groups/{group}/change-invisible`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeInvisibleRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 512))]
    pub receipt_handle: String,
    /// The new lease from now: 0 (give the message back now: a nack) or
    /// 1000..=43200000 ms.
    #[cfg_attr(feature = "openapi", schema(maximum = 43200000))]
    pub invisible_ms: u64,
}

/// The answer of a change: the handle of the new lease (the old one is spent).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeInvisibleResponse {
    pub receipt_handle: String,
    pub invisible_until: u64,
}

/// What a receipt handle names: one lease of one message to one consumer group.
///
/// Written as text, `1:{broker group}:{topic}:{queue}:{offset}:{attempt}:{until}:{group}`
/// (`:` is in no name). Clients treat it as opaque. It is not a secret: it grants
/// nothing the caller's `sub` on the group does not (a forged handle can only ack
/// or move a lease the group holds, which receiving would allow too).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReceiptHandle {
    pub broker_group: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub delivery_attempt: u32,
    pub invisible_until: u64,
    pub group: String,
}

const HANDLE_VERSION: &str = "1";

impl ReceiptHandle {
    /// Reads a handle written by [`ReceiptHandle::to_string`]; `None` when it is
    /// not one.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > MAX_RECEIPT_HANDLE_LEN {
            return None;
        }
        let mut parts = text.split(':');
        let version = parts.next()?;
        if version != HANDLE_VERSION {
            return None;
        }
        let broker_group = parts.next()?.to_string();
        let topic = parts.next()?.to_string();
        let queue_id = parts.next()?.parse().ok()?;
        let queue_offset = parts.next()?.parse().ok()?;
        let delivery_attempt = parts.next()?.parse().ok()?;
        let invisible_until = parts.next()?.parse().ok()?;
        let group = parts.next()?.to_string();
        if parts.next().is_some() || broker_group.is_empty() || topic.is_empty() || group.is_empty()
        {
            return None;
        }
        Some(Self {
            broker_group,
            topic,
            queue_id,
            queue_offset,
            delivery_attempt,
            invisible_until,
            group,
        })
    }
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HANDLE_VERSION}:{}:{}:{}:{}:{}:{}:{}",
            self.broker_group,
            self.topic,
            self.queue_id,
            self.queue_offset,
            self.delivery_attempt,
            self.invisible_until,
            self.group
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_round_trips_and_nothing_else_parses() {
        let handle = ReceiptHandle {
            broker_group: "broker-a".into(),
            topic: "%RETRY%g|x".into(),
            queue_id: 3,
            queue_offset: 42,
            delivery_attempt: 2,
            invisible_until: 1_700_000_000_000,
            group: "g".into(),
        };
        let text = handle.to_string();
        assert_eq!(ReceiptHandle::parse(&text), Some(handle));
        for bad in [
            "",
            "2:broker-a:t:3:42:2:1:g",
            "1:broker-a:t:3:42:2:1",
            "1:broker-a:t:3:42:2:1:g:extra",
            "1:broker-a:t:x:42:2:1:g",
            "1::t:3:42:2:1:g",
            "1:broker-a:t:3:-1:2:1:g",
        ] {
            assert_eq!(ReceiptHandle::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_ack_names_at_most_the_cap() {
        let handles: Vec<String> = (0..=MAX_ACK_HANDLES).map(|i| i.to_string()).collect();
        let body = serde_json::json!({ "receipt_handles": handles });
        let err = serde_json::from_value::<AckRequest>(body).expect_err("over the cap");
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }

    #[test]
    fn a_received_message_is_a_message_with_its_lease() {
        let text = r#"{"msg_id":"m","topic":"t","queue_id":1,"queue_offset":2,
            "commit_log_offset":3,"body":"b","keys":[],"properties":{},
            "born_timestamp":4,"store_timestamp":5,"reconsume_times":0,
            "receipt_handle":"h","delivery_attempt":1,"invisible_until":6,
            "broker_group":"broker-a"}"#;
        let received: ReceivedMessage = serde_json::from_str(text).expect("parses");
        assert_eq!(received.message.queue_offset, 2);
        assert_eq!(received.delivery_attempt, 1);
        let back = serde_json::to_value(&received).expect("encodes");
        assert_eq!(back["receipt_handle"], "h");
        assert_eq!(back["body"], "b");
    }
}
