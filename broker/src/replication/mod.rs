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
//! * [`state_machine`] — applies entries to the store; [`apply_send`] — the sends
//!   of an entry, decided one by one and stored in one append.
//! * [`snapshot`] — snapshot files, the staging of received bytes, and installing
//!   them.
//! * [`network`] — node-to-node RPC client.
//! * [`poll_waiters`] — the applied-queues notification that wakes long polls.
//! * [`append_stream`] — pipelined AppendEntries over one upgraded connection.

pub mod append_stream;
pub mod apply_send;
pub mod command;
pub mod error;
pub mod group_state;
pub mod leases;
pub mod network;
pub mod poll_waiters;
pub mod proposal;
pub mod snapshot;
pub mod state_machine;
pub mod type_config;
