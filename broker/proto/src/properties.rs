//! Message property names the broker sets (RocketMQ's names): clients read them to
//! tell a retried or delayed message's origin.

// Retry and dead-letter (`POST /v1/groups/{group}/retry`).
/// The topic a retried message came from; a consumer shows the message as that
/// topic's (RocketMQ's `RETRY_TOPIC`).
pub const PROPERTY_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Where the message was first stored (kept through every retry, and in the DLQ).
pub const PROPERTY_ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";
pub const PROPERTY_ORIGIN_QUEUE_ID: &str = "ORIGIN_QUEUE_ID";
pub const PROPERTY_ORIGIN_QUEUE_OFFSET: &str = "ORIGIN_QUEUE_OFFSET";
pub const PROPERTY_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
/// How many times a dead letter was reconsumed before it went to the DLQ.
pub const PROPERTY_RECONSUME_TIMES: &str = "RECONSUME_TIMES";
/// The consumer group that gave the message back (or, for a lease-based dead
/// letter, the group that received it).
pub const PROPERTY_CONSUMER_GROUP: &str = "CONSUMER_GROUP";
/// How many times a lease-based dead letter was delivered to its group without an
/// ack before it went to `%DLQ%{group}` (receive and ack).
pub const PROPERTY_DELIVERY_ATTEMPTS: &str = "DELIVERY_ATTEMPTS";

// Delayed delivery (`delay_level` on send).
/// The delay level a message was sent with (RocketMQ's `DELAY`).
pub const PROPERTY_DELAY: &str = "DELAY";
/// The topic a scheduled message goes to when due (RocketMQ's `REAL_TOPIC`).
pub const PROPERTY_REAL_TOPIC: &str = "REAL_TOPIC";
/// The queue a scheduled message goes to when due (RocketMQ's `REAL_QID`).
pub const PROPERTY_REAL_QUEUE_ID: &str = "REAL_QID";
/// When a scheduled message is due, in epoch milliseconds.
pub const PROPERTY_DELIVER_TIME_MS: &str = "DELIVER_TIME_MS";
