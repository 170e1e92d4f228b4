//! The broker group's Raft: openraft wired to the message store.
//!
//! # Layout
//! * [`type_config`] — openraft's type configuration and aliases.
//! * [`command`] — replicated commands, responses and control records.
//! * [`error`] — why applying, snapshotting or installing failed (typed, inside
//!   the `io::Error` openraft takes).
//! * [`proposal`] — typed proposals: each command with the answer apply gives it.
//! * [`group_state`] — the replicated metadata (topics, offsets, producers).
//! * [`leases`] — the lease table of receive and ack (cursors, messages in
//!   flight), and the ops that change it.
//! * [`timers`] — timer messages: the replicated delivery progress, and each
//!   replica's timer log and time wheel.
//! * [`claims`] — which member each queue was granted to, per consumer group
//!   (so a new coordinator knows its predecessor's grants).
//! * [`transactions`] — the table of transactions (open ones, recent
//!   resolutions) and its changes.
//! * [`state_lock`] — the group state's lock, one guard per thread at a time
//!   (a second one deadlocks behind apply; it panics instead).
//! * [`state_machine`] — applies entries to the store; [`apply_send`] — the sends
//!   of an entry, decided one by one and stored in one append; [`apply_timers`] —
//!   timer messages indexed as they are stored, and moved when due;
//!   [`apply_transactions`] — commits, rollbacks and offers of checks.
//! * [`snapshot`] — snapshot files, the staging of received bytes, and installing
//!   them.
//! * [`network`] — node-to-node RPC client.
//! * [`poll_waiters`] — the applied-queues notification that wakes long polls.
//! * [`append_stream`] — pipelined AppendEntries over one upgraded connection.

pub mod append_stream;
pub mod apply_send;
pub mod apply_timers;
pub mod apply_transactions;
pub mod claims;
pub mod command;
pub mod error;
pub mod group_state;
pub mod leases;
pub mod network;
pub mod poll_waiters;
pub mod proposal;
pub mod retention_hold;
pub mod snapshot;
pub mod state_lock;
pub mod state_machine;
pub mod timers;
pub mod transactions;
pub mod type_config;
