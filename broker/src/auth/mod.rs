//! Who may talk to a node, and what they may do (shared/API.md "Security").
//!
//! * [`cluster_secret`] — the node-to-node credential on `/internal/` and on
//!   forwarded requests.
//! * [`token`] — bearer tokens and their hashes.
//! * [`acl`] — resource patterns × actions.
//! * [`users`] — the replicated user table (last writer wins per user).
//! * [`identity`] — resolving a request's token to its caller.
//! * [`quota`] — per-user send quotas (token buckets).
//!
//! The HTTP side — which permission each route needs, and checking it — is
//! `http::auth`.

pub use broker_proto::acl;
pub mod cluster_secret;
pub mod identity;
pub mod quota;
pub mod token;
pub mod users;

pub use acl::{Action, Resource};
pub use identity::{Authenticator, Identity};
