//! The consumer side: long polling (consumer groups, retry and delays come later).
//!
//! # Layout
//! * [`long_poll`] — waiting pulls and their wake-ups.

pub mod long_poll;
