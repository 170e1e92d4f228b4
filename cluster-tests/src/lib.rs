//! Multi-process tests of the broker: real node processes, real faults.
//!
//! # Layout
//! * [`harness`] — start a cluster of node processes on loopback ports; kill, stop,
//!   pause, restart nodes; talk to them over HTTP.
//! * [`jepsen`] — the Jepsen-style suite: real hosts (network namespaces), a
//!   nemesis, a recorded history, its checker and a report (`jepsen` binary).

pub mod harness;
pub mod jepsen;
