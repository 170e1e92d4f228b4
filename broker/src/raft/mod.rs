//! The broker group's Raft: openraft wired to the message store.
//!
//! # Layout
//! * [`type_config`] — openraft's type configuration and aliases.
//! * [`command`] — replicated commands, responses and control records.
//! * [`group_state`] — the replicated metadata (topics, offsets, producers).
//! * [`state_machine`] — applies entries to the store; snapshots.
//! * [`snapshot`] — snapshot files and the staging of received bytes.
//! * [`network`] — node-to-node RPC client.
//! * [`append_stream`] — pipelined AppendEntries over one upgraded connection.

pub mod append_stream;
pub mod command;
pub mod group_state;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod type_config;
