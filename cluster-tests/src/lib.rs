//! Multi-process tests of the broker: real node processes, real faults.
//!
//! # Layout
//! * [`harness`] — start a cluster of node processes on loopback ports; kill, stop,
//!   pause, restart nodes; talk to them over HTTP.

pub mod harness;
