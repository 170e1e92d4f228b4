//! The broker's protocol as clients see it (shared/API.md): what the server, the
//! client library and the tools must agree on, and nothing else. It depends on
//! serde (and base64, for binary bodies) only, so a client compiles none of the
//! server (the `openapi` feature, which the server turns on for its OpenAPI
//! document, adds utoipa).
//!
//! * [`api`] — request and response bodies, with the caps on every list they carry.
//! * [`error_code`] — the `code` words of error answers and their HTTP statuses.
//! * [`topic`] — name rules, reserved topics, permission bits, queue counts.
//! * [`acl`] — permissions: resource patterns × actions.
//! * [`limits`] — protocol limits that are not per-request (idempotency window).
//! * [`receive`] — receive and ack: leases and receipt handles.
//! * [`pull_binary`] — the compact binary form of a pull's answer (`Accept`).
//! * [`delay`] — delay levels; [`properties`] — property names the broker sets.
//! * [`units`] — human durations and sizes (`"500ms"`, `"1GiB"`).
//! * `openapi` (feature `openapi`, off by default) — the OpenAPI schemas that the
//!   wire types' `#[derive(utoipa::ToSchema)]` attributes cannot say.

pub mod acl;
pub mod api;
pub mod delay;
pub mod error_code;
pub mod limits;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod properties;
pub mod pull_binary;
pub mod receive;
pub mod topic;
pub mod transaction;
pub mod units;
