//! A RocketMQ-style message broker whose CommitLog is replicated by Raft.
//!
//! # Layout
//! Top-level modules form layers; each uses only the ones below it (no import
//! cycle between them: `tests/module_layers.rs` checks).
//!
//! * [`server`], [`launch`] — `run`: wires storage → Raft → HTTP and stops them in
//!   order; what the `broker` binary does (flags → config → logging → run).
//! * [`http`] — the HTTP/JSON API and the internal endpoints: decode, call the
//!   service, encode. `faults` — test-only fault switches (feature
//!   `fault-injection`, never in releases).
//! * [`service`] — the broker's operations on a running node: sends, pulls,
//!   consumer groups, retries and delays, topics, users, route registration,
//!   health.
//! * [`replication`] — openraft wired to the store: commands and their typed
//!   proposals, state machine, snapshots, node-to-node RPC.
//! * [`auth`] — the cluster secret, tokens, users, permissions and quotas.
//! * [`peer_client`], [`tls`] — the client nodes call each other with; TLS files.
//! * [`config`] — the node's configuration; [`metrics`] — counters and histograms
//!   for `/metrics` (states are read at scrape time); [`topic`] — topic
//!   configuration; [`error`] — the broker's domain error (`http::error` maps it
//!   to the API's one error shape); [`certs`] — a CA and
//!   node certificates for local TLS clusters (`broker-certs`).
//! * [`storage`] (crate `broker-store`) — the single-node storage engine;
//!   [`api`], [`units`] (crate `broker-proto`) — the protocol's wire types and
//!   human units.

// The protocol's modules, where the server has always named them.
pub use broker_proto::{api, receive, units};
// The storage engine is its own crate; the server has always called it `storage`.
pub use broker_store as storage;

pub mod auth;
pub mod certs;
pub mod config;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod http;
pub mod launch;
pub mod metrics;
pub mod peer_client;
pub mod peer_protocol;
pub mod replication;
pub mod server;
pub mod service;
pub mod tls;
pub mod topic;
