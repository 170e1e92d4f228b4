//! A RocketMQ-style message broker whose CommitLog is replicated by Raft.
//!
//! # Layout
//! * [`storage`] — the single-node storage engine: CommitLog, ConsumeQueues, index,
//!   flushing, recovery and retention. Usable without Raft.
//! * [`raft`] — openraft wired to the store: commands, state machine, snapshots,
//!   node-to-node RPC.
//! * [`http`] — the HTTP/JSON API and the internal endpoints.
//! * [`control`] — route registration between groups (no NameServer).
//! * [`node`] — a running node: Raft handle, shared state, proposing writes.
//! * [`producer`] — the send path at the leader (validation, queues, message ids).
//! * [`send_batcher`] — group commit of concurrent sends into one Raft entry.
//! * [`consumer`] — long polling (consumer groups, retry, delays later).
//! * [`server`] — `run`: wires storage → Raft → HTTP and stops them in order.
//! * [`launch`] — what the `broker` binary does (flags → config → logging → run).
//! * [`config`], [`units`] — the node's configuration and its human units.
//! * [`api`], [`error`] — the API's wire types and its one error shape.
//! * [`topic`] — topic configuration and naming rules.
//! * [`metrics`] — counters and histograms for `/metrics` (states are read at scrape time).
//! * [`client`] — a Rust client of the HTTP API (leader following, idempotent producer).
//! * [`cli`] — `mqctl`, the command line client covering the whole API.
//! * `faults` — test-only fault switches (feature `fault-injection`, never in releases).

// `http::openapi::schemas` is one large `json!` literal.
#![recursion_limit = "256"]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod consumer;
pub mod control;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod http;
pub mod launch;
pub mod metrics;
pub mod node;
pub mod producer;
pub mod raft;
pub mod send_batcher;
pub mod server;
pub mod storage;
pub mod topic;
pub mod units;
