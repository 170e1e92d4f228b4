//! The consumer side: long polling, consumer-group coordination, delayed delivery
//! and retries.
//!
//! # Layout
//! * [`coordinator`] — group members by heartbeat and their queue assignments;
//!   [`claims`] — a heartbeat at the leader, its grants recorded through Raft.
//! * [`delay`] — delay levels and the schedule topic's message format.
//! * [`scheduler`] — the leader's task that delivers delayed messages when due;
//!   [`timer_delivery`] — the one that delivers timer messages.
//! * [`receive`] — receive at a group's leader: lease messages, redeliver those
//!   whose lease ended, dead-letter after the last attempt; [`ack`] — acks and
//!   lease changes.
//! * [`retry`] — a message given back: to the retry topic, or the dead-letter topic;
//!   [`give_back`] — the operation at the leader (read, plan, store).

pub mod ack;
pub mod claims;
pub mod coordinator;
pub mod delay;
pub mod give_back;
pub mod receive;
pub mod retry;
pub mod scheduler;
pub mod timer_delivery;
