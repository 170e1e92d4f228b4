//! [`Producer`]: idempotent sends with retries, RocketMQ's `retryTimesWhenSendFailed`
//! on top of [`BrokerClient::send`].
//!
//! # Idempotence
//! Every producer has a random `producer_id`; each message it sends gets the next
//! `sequence`. The broker stores a (`producer_id`, `sequence`) once and answers a
//! resend with the first result, so a retry after an unknown outcome (a timeout,
//! `UNAVAILABLE`) cannot duplicate a message. Retries resend the very same batch with
//! the same sequences.
//!
//! The broker remembers only the last [`DEDUP_WINDOW`] sequences of each producer and
//! refuses (`BAD_REQUEST`) a sequence older than those. So a producer never lets the
//! newest sequence it has handed out run more than `DEDUP_WINDOW - 1` ahead of the
//! oldest one still in flight: a send that would waits until older sends finish.
//! With that, no first attempt and no retry is ever "too old". It also caps one
//! producer at `DEDUP_WINDOW` messages in flight: use more producers for more.
//!
//! # Retries
//! A failed attempt is retried, after an exponential backoff, up to
//! [`ProducerOptions::retries`] more times when the error
//! [`is_retryable`](ClientError::is_retryable) — `UNAVAILABLE`, `NOT_LEADER` (after
//! the client's own leader following), connect errors, and, for an idempotent
//! producer, timeouts and broken connections. Without idempotence, an error whose
//! [outcome is unknown](ClientError::is_outcome_unknown) is not retried (a retry
//! could store the batch twice). A producer that gives up after retrying returns
//! [`ClientError::RetriesExhausted`], whose outcome is unknown if *any* attempt's
//! was: a send cut off by a leader crash (outcome unknown) and then refused twice
//! with `NOT_LEADER` during the election may well have been committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::broker_client::BrokerClient;
use super::error::{ClientError, Result};
use crate::api::{MessageInput, SendRequest, SendResponse};

/// Sequences the broker remembers per producer (its dedup window).
pub const DEDUP_WINDOW: u64 = broker_proto::limits::DEDUP_WINDOW as u64;

/// Whether a producer stamps its messages for deduplication.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Idempotence {
    /// Stamp every message with `producer_id` + `sequence` (the default).
    On,
    /// Send plain messages (to measure what idempotence costs, or for brokers that
    /// must not keep producer state).
    Off,
}

/// How a [`Producer`] retries.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// Further attempts after the first fails (RocketMQ's
    /// `retryTimesWhenSendFailed`, default 2).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    pub idempotence: Idempotence,
    /// The producer id; `None` draws a random one.
    pub producer_id: Option<String>,
    /// How long a topic's route (its writable queues in every broker group) is used
    /// before it is fetched again; it is also dropped on errors that suggest it is
    /// stale. RocketMQ polls its NameServer every 30 s.
    pub route_refresh: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            idempotence: Idempotence::On,
            producer_id: None,
            route_refresh: Duration::from_secs(30),
        }
    }
}

/// Counters of a producer's work since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Batches sent successfully (after any retries).
    pub batches_sent: u64,
    /// Batches that failed after their last attempt.
    pub batches_failed: u64,
    /// Attempts beyond the first.
    pub retries: u64,
}

/// A batch that failed, with its messages handed back
/// ([`Producer::send_or_give_back`]).
#[derive(Debug)]
pub(crate) struct Unsent {
    pub error: ClientError,
    pub messages: Vec<MessageInput>,
}

/// A topic's writable (broker group, queue id) pairs, and when they were fetched.
type CachedRoute = (Instant, Arc<Vec<(String, u32)>>);

/// Sends batches with sequence numbers and retries. Clone the [`BrokerClient`], not
/// the producer: each producer is one sequence space. Concurrent sends on one
/// producer are fine.
#[derive(Debug)]
pub struct Producer {
    client: BrokerClient,
    options: ProducerOptions,
    producer_id: String,
    sequences: SequenceWindow,
    batches_sent: AtomicU64,
    batches_failed: AtomicU64,
    retries: AtomicU64,
    /// Writable (group, queue) pairs per topic, and when they were fetched.
    routes: Mutex<HashMap<String, CachedRoute>>,
    next_queue: AtomicU64,
}

impl Producer {
    /// A producer sending through `client`.
    pub fn new(client: BrokerClient, options: ProducerOptions) -> Self {
        let producer_id = options
            .producer_id
            .clone()
            .unwrap_or_else(|| format!("p-{:016x}", rand::random::<u64>()));
        Self {
            client,
            options,
            producer_id,
            sequences: SequenceWindow::new(DEDUP_WINDOW),
            batches_sent: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            routes: Mutex::new(HashMap::new()),
            next_queue: AtomicU64::new(0),
        }
    }

    /// This producer's id (stamped on its messages when idempotence is on).
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &BrokerClient {
        &self.client
    }

    /// Counters so far.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Sends `messages` to `topic` as one atomic batch, stamping each with this
    /// producer's id and the next sequence (overwriting any the caller set), and
    /// retries as the module documentation describes.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an empty batch or (with idempotence) one
    /// larger than [`DEDUP_WINDOW`]; the error of a first attempt that is not
    /// retried; or [`ClientError::RetriesExhausted`] with the last attempt's error
    /// and whether any attempt may have been applied.
    pub async fn send_messages(
        &self,
        topic: &str,
        messages: Vec<MessageInput>,
    ) -> Result<SendResponse> {
        self.send_or_give_back(topic, messages)
            .await
            .map_err(|unsent| unsent.error)
    }

    /// [`Self::send_messages`], handing the messages back when the batch fails, so
    /// that a caller can send them again another way without keeping a copy of every
    /// batch: the `BatchingProducer` resends a refused batch one message at a time.
    /// Their `producer_id` and `sequence` are this attempt's (a later send stamps
    /// its own) and a queue this producer chose is cleared again.
    pub(crate) async fn send_or_give_back(
        &self,
        topic: &str,
        mut messages: Vec<MessageInput>,
    ) -> std::result::Result<SendResponse, Unsent> {
        let count = messages.len() as u64;
        if count == 0 {
            return Err(Unsent {
                error: ClientError::InvalidArgument("a batch needs at least one message".into()),
                messages,
            });
        }
        let _reserved = match self.options.idempotence {
            Idempotence::On => {
                if count > DEDUP_WINDOW {
                    return Err(Unsent {
                        error: ClientError::InvalidArgument(format!(
                            "an idempotent batch holds at most {DEDUP_WINDOW} messages (the broker's dedup window), got {count}"
                        )),
                        messages,
                    });
                }
                let reserved = self.sequences.reserve(count).await;
                for (message, sequence) in messages.iter_mut().zip(reserved.first..) {
                    message.producer_id = Some(self.producer_id.clone());
                    message.sequence = Some(sequence);
                }
                Some(reserved)
            }
            Idempotence::Off => {
                for message in &mut messages {
                    message.producer_id = None;
                    message.sequence = None;
                }
                None
            }
        };
        // Batches that leave the queue to the broker go round-robin over every
        // writable queue of every group serving the topic; retries keep the group
        // (the dedup table of producer_id/sequence lives in it) and the queue.
        let placed = messages
            .iter()
            .all(|m| m.queue_id.is_none() && m.sharding_key.is_none());
        let target = if placed {
            self.next_target(topic).await
        } else {
            None
        };
        if let Some((_, queue_id)) = &target {
            for message in &mut messages {
                message.queue_id = Some(*queue_id);
            }
        }
        let request = SendRequest {
            messages,
            transaction: None,
        };
        let mut retry = 0;
        let mut outcome_unknown = false;
        loop {
            let sent = match &target {
                Some((group, _)) => self.client.send_to_group(topic, group, &request).await,
                None => self.client.send(topic, &request).await,
            };
            let error = match sent {
                Ok(response) => {
                    self.batches_sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => error,
            };
            if target.is_some() && stale_route(&error) {
                self.forget_route(topic);
            }
            if retry < self.options.retries && self.may_retry(&error) {
                outcome_unknown |= error.is_outcome_unknown();
                tokio::time::sleep(self.backoff(retry)).await;
                retry += 1;
                self.retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.batches_failed.fetch_add(1, Ordering::Relaxed);
            let error = if retry == 0 {
                error
            } else {
                ClientError::RetriesExhausted {
                    attempts: retry + 1,
                    outcome_unknown,
                    last: Box::new(error),
                }
            };
            let SendRequest { mut messages, .. } = request;
            if target.is_some() {
                for message in &mut messages {
                    message.queue_id = None;
                }
            }
            return Err(Unsent { error, messages });
        }
    }

    /// The next (group, queue) of the topic's route, fetching it when missing or
    /// older than `route_refresh`; `None` while the route cannot be had (the broker
    /// then places the batch, and may create the topic).
    async fn next_target(&self, topic: &str) -> Option<(String, u32)> {
        let cached = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .filter(|(at, _)| at.elapsed() < self.options.route_refresh)
            .map(|(_, queues)| Arc::clone(queues));
        let queues = match cached {
            Some(queues) => queues,
            None => {
                // No route (yet): remember that too, so every send does not ask
                // again; the broker places those batches.
                let queues: Vec<(String, u32)> = match self.client.route(topic).await {
                    Ok(route) => route
                        .groups
                        .iter()
                        .filter(|g| g.perm & broker_proto::topic::PERM_WRITE != 0)
                        .flat_map(|g| (0..g.write_queue_nums).map(|q| (g.group.clone(), q)))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let queues = Arc::new(queues);
                self.routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(topic.to_string(), (Instant::now(), Arc::clone(&queues)));
                queues
            }
        };
        if queues.is_empty() {
            return None;
        }
        let i = self.next_queue.fetch_add(1, Ordering::Relaxed) as usize % queues.len();
        queues.get(i).cloned()
    }

    fn forget_route(&self, topic: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    fn may_retry(&self, error: &ClientError) -> bool {
        error.is_retryable()
            && (self.options.idempotence == Idempotence::On || !error.is_outcome_unknown())
    }

    /// The wait before retry number `attempt + 1`: `backoff_initial * 2^attempt`,
    /// capped, with up to 25% random jitter so producers do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .options
            .backoff_initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.options.backoff_max);
        base + base.mul_f64(rand::random::<f64>() * 0.25)
    }
}

/// Hands out sequence ranges so that the newest never runs `window` or more ahead of
/// the oldest still in flight (see the module documentation).
#[derive(Debug)]
struct SequenceWindow {
    window: u64,
    /// std mutex: held for a few map operations, never across an `.await`.
    state: Mutex<WindowState>,
    released: Notify,
}

#[derive(Debug, Default)]
struct WindowState {
    next: u64,
    /// First sequence → length of each range in flight.
    in_flight: BTreeMap<u64, u64>,
}

/// A range of sequences in flight; releases it when dropped (also when the sending
/// future is cancelled).
#[derive(Debug)]
struct Reserved<'a> {
    window: &'a SequenceWindow,
    first: u64,
}

impl SequenceWindow {
    fn new(window: u64) -> Self {
        Self {
            window,
            state: Mutex::new(WindowState::default()),
            released: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        // Every update is complete before anything can panic: poison is harmless.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `count` (1..=window) consecutive sequences, waiting while that would
    /// put the newest `window` or more ahead of the oldest in flight.
    async fn reserve(&self, count: u64) -> Reserved<'_> {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            // Register before looking, so a release in between wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let oldest = state.in_flight.keys().next().copied().unwrap_or(state.next);
                let newest = state.next + count - 1;
                if newest - oldest < self.window {
                    let first = state.next;
                    state.next += count;
                    state.in_flight.insert(first, count);
                    return Reserved {
                        window: self,
                        first,
                    };
                }
            }
            notified.await;
        }
    }

    fn release(&self, first: u64) {
        self.lock().in_flight.remove(&first);
        self.released.notify_waiters();
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.window.release(self.first);
    }
}

/// Whether an error suggests the cached route is wrong (the topic or group moved).
fn stale_route(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some("TOPIC_NOT_FOUND" | "BAD_REQUEST" | "NO_PERMISSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sequences_are_consecutive_and_bounded_by_the_oldest_in_flight() {
        let window = SequenceWindow::new(8);
        let a = window.reserve(3).await;
        let b = window.reserve(5).await;
        assert_eq!((a.first, b.first), (0, 3));
        // 8..=8 would be 8 ahead of 0: must wait for `a`.
        let blocked = tokio::time::timeout(Duration::from_millis(50), window.reserve(1)).await;
        assert!(blocked.is_err(), "must wait while sequence 0 is in flight");
        drop(a);
        let c = window.reserve(1).await;
        assert_eq!(c.first, 8);
        // Oldest is now 3: up to 10 may be handed out, 11 may not.
        let d = window.reserve(2).await;
        assert_eq!(d.first, 9);
        let waiter = window.reserve(1);
        tokio::pin!(waiter);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiter.as_mut())
                .await
                .is_err()
        );
        drop(b);
        let e = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a release wakes the waiter");
        assert_eq!(e.first, 11);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let client = BrokerClient::new(vec!["http://127.0.0.1:1".into()], Default::default())
            .expect("valid client");
        let producer = Producer::new(
            client,
            ProducerOptions {
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(300),
                ..ProducerOptions::default()
            },
        );
        let within = |attempt, low: u64, high: u64| {
            let wait = producer.backoff(attempt);
            assert!(
                wait >= Duration::from_millis(low) && wait <= Duration::from_millis(high),
                "attempt {attempt}: {wait:?}"
            );
        };
        within(0, 100, 125);
        within(1, 200, 250);
        within(2, 300, 375);
        within(40, 300, 375);
        assert!(producer.producer_id().starts_with("p-"));
    }

    #[test]
    fn retries_without_idempotence_skip_unknown_outcomes() {
        let client = BrokerClient::new(vec!["http://127.0.0.1:1".into()], Default::default())
            .expect("valid client");
        let unavailable = ClientError::Api {
            status: 503,
            body: crate::api::ErrorBody {
                code: "UNAVAILABLE".into(),
                message: "m".into(),
                leader: None,
            },
        };
        let not_leader = ClientError::Api {
            status: 421,
            body: crate::api::ErrorBody {
                code: "NOT_LEADER".into(),
                message: "m".into(),
                leader: None,
            },
        };
        let idempotent = Producer::new(client.clone(), ProducerOptions::default());
        assert!(idempotent.may_retry(&unavailable));
        assert!(idempotent.may_retry(&not_leader));
        let plain = Producer::new(
            client,
            ProducerOptions {
                idempotence: Idempotence::Off,
                ..ProducerOptions::default()
            },
        );
        assert!(!plain.may_retry(&unavailable));
        assert!(plain.may_retry(&not_leader));
    }
}
