//! The HTTP/JSON API (shared/API.md) and the internal node-to-node endpoints.
//!
//! # Layout
//! * [`router`] — the route table: every route with its description and permission.
//! * [`auth`] — each route's required permission, checked before its handler.
//! * [`users`] — `/v1/users…` and the user table's fan-out to every group.
//! * [`data_plane`] — send, pull, queues, queries, consumer offsets.
//! * [`consumer_groups`] — consumer-group heartbeats and queue assignment.
//! * [`transactions`] — commit, rollback, and a producer group's checks.
//! * [`control_plane`] — topics, routes, cluster, health, readiness, metrics.
//! * [`internal`] — Raft RPC and snapshot transfer, behind the cluster secret.
//! * [`groups`] — which broker group a request is for.
//! * [`membership`] — adding and removing nodes, transferring leadership.
//! * [`forward`] — writes reaching a follower go to the leader, requests for
//!   another group to a node of it.
//! * [`extract`], [`error`] — extractors and errors in the API's shape.
//! * [`consumer_group_list`] — `GET /v1/groups`, consumer groups merged over groups.
//! * [`openapi`] — the OpenAPI document (`/openapi.json`) and its route table.
//! * [`dashboard`] — the dashboard page at `/` (HTML/JS/CSS inside the binary).
//! * [`request_id`] — `x-request-id` on every answer and in the request's log span.
//! * [`connections`] — accepting connections: TLS, the connection limit, header
//!   timeouts, hyper's own errors in the API's shape.

pub mod auth;
pub mod connections;
pub mod consumer_group_list;
pub mod consumer_groups;
pub mod control_plane;
pub mod dashboard;
pub mod data_plane;
pub mod error;
pub mod extract;
pub mod forward;
pub mod groups;
pub mod internal;
pub mod membership;
pub mod openapi;
pub mod pull_body;
pub mod receive;
pub mod request_id;
pub mod router;
pub mod stream;
pub mod transactions;
pub mod users;

pub use router::{router, router_with_connections};
