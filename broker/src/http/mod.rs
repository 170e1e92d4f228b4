//! The HTTP/JSON API (shared/API.md) and the internal node-to-node endpoints.
//!
//! # Layout
//! * [`router`] — every route.
//! * [`data_plane`] — send, pull, queues, queries, consumer offsets.
//! * [`control_plane`] — topics, routes, cluster, health, readiness, metrics.
//! * [`internal`] — Raft RPC and snapshot transfer, behind the cluster secret.
//! * [`forward`] — writes reaching a follower go to the leader.
//! * [`extract`], [`error`] — extractors and errors in the API's shape.

pub mod control_plane;
pub mod data_plane;
pub mod error;
pub mod extract;
pub mod forward;
pub mod internal;
pub mod router;

pub use router::router;
