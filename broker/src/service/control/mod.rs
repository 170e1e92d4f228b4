//! The control plane that replaces RocketMQ's NameServer.
//!
//! * [`routes`] — what this node knows of every broker group: its own group from
//!   its own Raft state, the others from the registrations their leaders push here,
//!   which expire when they stop.
//! * [`joins`] — adding a node to this node's group (learner, catch-up, voter) as
//!   an operation that outlives its request.
//! * [`registrar`] — the task by which a group's leader pushes its registration to
//!   every node it knows, on an interval.

pub mod joins;
pub mod registrar;
pub mod routes;

pub use routes::{GroupRoute, Registration, RouteTable};
