//! The consumer side: long polling and consumer-group coordination (retry and
//! delays come later).
//!
//! # Layout
//! * [`long_poll`] — waiting pulls and their wake-ups.
//! * [`coordinator`] — group members by heartbeat and their queue assignments.

pub mod coordinator;
pub mod long_poll;
