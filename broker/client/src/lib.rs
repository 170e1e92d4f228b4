//! A Rust client of the broker's HTTP/JSON API (shared/API.md), shared by `mqctl`,
//! the load tool (`broker-bench`) and the tests. It depends on the protocol crate
//! ([`broker_proto`], re-exported as [`proto`], its wire types as [`api`]) and an
//! HTTP client, never on the server.
//!
//! # Layout
//! * [`broker_client`] — [`BrokerClient`]: the connection pool, node choice and
//!   leader following (the rules are documented there).
//! * [`endpoints`] — one typed method per endpoint, on the wire types of
//!   [`api`]; [`users`] and [`membership`] — the same for the users and the
//!   membership endpoints (admin only).
//! * [`producer`] — [`Producer`]: idempotent sends (`producer_id` + `sequence`) with
//!   retries and backoff.
//! * [`batching`] — [`BatchingProducer`]: one message per call, batched into
//!   requests while earlier requests are outstanding.
//! * [`consumer`] — [`PushConsumer`]: a consumer-group member (heartbeat,
//!   assigned queues, long polling, offset commits, clean hand-over, retries
//!   through the retry topic; or broadcasting with its own offsets).
//! * [`simple_consumer`] — [`SimpleConsumer`]: lease-based consumption (receive,
//!   ack, change-invisible) with a handler: batched acks, give-backs with a retry
//!   delay, lease extension for slow handlers, FIFO runs.
//! * [`transaction_producer`] — [`TransactionProducer`]: transactional messages
//!   (half messages, the local transaction, commit or rollback) and the answers
//!   to the producer group's transaction checks, through a callback.
//! * [`error`] — [`ClientError`], classified as retryable and outcome-unknown.
//! * [`options`] — [`ClientOptions`]: timeouts, pool, hops, read preference, the
//!   bearer token and the CA file of a secured cluster, the user agent.
//! * [`endpoint`], [`nodes`] — base URLs and endpoint URLs; the known nodes and the
//!   remembered leader.
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker_client::ClientError> {
//! use broker_client::api::MessageInput;
//! use broker_client::{BrokerClient, ClientOptions, Producer, ProducerOptions};
//!
//! let options = ClientOptions {
//!     token: std::env::var("MQ_TOKEN").ok(), // a secured cluster answers 401 without
//!     ..ClientOptions::default()
//! };
//! let client = BrokerClient::new(
//!     vec!["http://127.0.0.1:18081".into(), "http://127.0.0.1:18082".into()],
//!     options,
//! )?;
//! let producer = Producer::new(client.clone(), ProducerOptions::default());
//! let message = MessageInput { body: Some("hello".into()), ..MessageInput::default() };
//! let sent = producer.send_messages("orders", vec![message]).await?;
//! let first = &sent.results[0];
//! let pulled = client.pull("orders", first.queue_id, first.queue_offset, 32, 0, None).await?;
//! assert_eq!(pulled.messages[0].body.as_deref(), Some("hello"));
//! # Ok(()) }
//! ```

pub use broker_proto::{self as proto, api};

pub mod batching;
pub mod broker_client;
pub mod consumer;
pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod membership;
pub mod nodes;
pub mod options;
pub mod producer;
pub mod simple_consumer;
pub mod transaction_producer;
pub mod users;

pub use batching::{BatchingOptions, BatchingProducer, BatchingStats};
pub use broker_client::{http_builder, BrokerClient};
pub use consumer::{ConsumeFrom, ConsumeResult, ConsumerOptions, MessageModel, PushConsumer};
pub use endpoints::{CommitMode, GroupQueue, PullOptions, Readiness};
pub use error::{ClientError, Result};
pub use options::{ClientOptions, ReadPreference};
pub use producer::{Idempotence, Producer, ProducerOptions, ProducerStats, DEDUP_WINDOW};
pub use simple_consumer::{SimpleConsumer, SimpleConsumerOptions, SimpleConsumerStats};
pub use transaction_producer::{
    LocalTransactionState, TransactionProducer, TransactionProducerOptions,
    TransactionProducerStats, TransactionSendResult,
};
