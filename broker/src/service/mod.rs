//! The broker's operations on a running node, between HTTP (which decodes and
//! encodes) and replication (which orders and applies): what a send, a pull, a
//! topic change or a user change does, which group and node it belongs to, and
//! what its outcome means. Operations fail with [`crate::error::BrokerError`];
//! only `http/` turns that into a status and an error code.
//!
//! * [`node`] — [`node::Node`]: a running node (Raft handle, shared state,
//!   routes, health) and typed writes (`Node::write`).
//! * [`send`] — a send at the leader, prepared and committed; [`producer`] — its
//!   validation, queues and message ids; [`send_batcher`] — group commit of
//!   concurrent sends into one Raft entry.
//! * [`consumer`] — consumer groups (coordinator, rebalancing), retries and the
//!   dead-letter queue, delayed delivery and its scheduler, timer delivery.
//! * [`transactions`] — transactional sends, commit and rollback, and the checks
//!   offered to producer groups.
//! * [`routing`] — which broker group a request is for: this node's, or another
//!   through one of its nodes.
//! * [`offsets`] — a consumer group's committed offsets: commits, offsets by
//!   time.
//! * [`pull`] — the pull loop: read a queue, and hold the pull until a message
//!   arrives or its deadline passes.
//! * [`users`] — user changes applied in every broker group, and anti-entropy.
//! * [`control`] — route registration between groups (no NameServer), joins.
//! * [`topics`] — creating, changing and deleting a topic of this group.
//! * [`drain`] — readiness off, held requests answered and leadership moved
//!   away before a planned stop.
//! * [`topic_limits`] — topic and queue quotas; [`health`] — fail-stop after a
//!   storage failure, the disk low-water mark.

pub mod consumer;
pub mod control;
pub mod drain;
pub mod health;
pub mod node;
pub mod offsets;
pub mod producer;
pub mod pull;
pub mod routing;
pub mod send;
pub mod send_batcher;
pub mod topic_limits;
pub mod topics;
pub mod transactions;
pub mod users;
