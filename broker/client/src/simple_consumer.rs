//! [`SimpleConsumer`]: RocketMQ 5's SimpleConsumer over the receive-and-ack
//! endpoints (shared/API.md "Receive and ack"), with a push-style loop around it:
//! the caller gives a handler, the consumer does the leases.
//!
//! It receives leased messages of one topic for a consumer group with long
//! polling, hands each one to the handler, and then:
//! * **success**: acks it. Acks are batched: one ack request is outstanding at a
//!   time, and the next carries every handle queued meanwhile (at most
//!   [`MAX_ACK_HANDLES`]).
//! * **failure** ([`ConsumeResult::RetryLater`], or a handler that panicked):
//!   gives it back with a change-invisible of [`SimpleConsumerOptions::retry_delay`]:
//!   it is delivered again after that delay with `delivery_attempt` one higher,
//!   and after the broker's maximum delivery attempts it goes to `%DLQ%{group}`.
//! * **a slow handler**: when a third of a lease is left, the lease is extended by
//!   [`SimpleConsumerOptions::invisible_duration`] (change-invisible); the new
//!   handle replaces the old one, and the ack uses it.
//!
//! Leases are timed on the local monotonic clock, from the moment the request
//! that took or extended the lease was *sent*: the broker starts its lease later,
//! so the local deadline is never after the broker's, and no clock skew enters.
//!
//! # Bounds
//! At most [`SimpleConsumerOptions::handler_concurrency`] messages are held at once
//! (received and not yet acked or given back): a receive asks only for as many
//! messages as there are free slots, so nothing received waits unhandled while its
//! lease runs.
//!
//! # FIFO
//! With [`SimpleConsumerOptions::fifo`], the messages of one queue are handled one
//! at a time in queue order. When one fails it is given back with the retry delay,
//! and the rest of its run is given back at once, unhandled: the broker delivers
//! nothing more of a queue while one of its messages is leased, so the run comes
//! again, in order, starting with the failed message.
//!
//! # Failures
//! * A failed receive is retried after an exponential backoff
//!   ([`SimpleConsumerOptions::backoff_initial`] doubling up to
//!   [`SimpleConsumerOptions::backoff_max`]), for as long as the consumer runs: a
//!   missing topic may be created later, a partitioned node may come back.
//! * Acks, give-backs and extensions are retried on retryable errors while the
//!   lease lasts (after that the broker could only answer `EXPIRED`). Ack answers
//!   `EXPIRED` and `INVALID`, and requests that fail for good, are logged and
//!   counted ([`SimpleConsumer::stats`]), never retried: such a message is
//!   delivered again (delivery is at least once).
//! * A change-invisible is not idempotent (it spends the handle it names), so a
//!   retry after a timeout that did take effect is refused; the consumer then
//!   counts the lease as lost, and the message is delivered again.
//!
//! # Shutdown
//! [`SimpleConsumer::shutdown`] stops receiving (an outstanding long poll is
//! abandoned: messages it leased come again once their lease runs out), lets the
//! running handlers finish while keeping their leases, gives back the FIFO
//! messages still waiting, sends the last acks, and returns once every task it
//! started has ended. Dropping the consumer stops it the same way, in the
//! background.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info_span, warn, Instrument};

use super::broker_client::BrokerClient;
use super::consumer::ConsumeResult;
use super::error::{ClientError, Result};
use broker_proto::receive::{
    AckResponse, ReceiveRequest, ReceivedMessage, ACK_EXPIRED, ACK_INVALID, ACK_OK,
    DEFAULT_INVISIBLE_MS, DEFAULT_RECEIVE_MESSAGES, MAX_ACK_HANDLES, MAX_INVISIBLE_MS,
    MAX_RECEIVE_MESSAGES, MAX_RECEIVE_WAIT_MS, MIN_INVISIBLE_MS,
};

/// How a [`SimpleConsumer`] receives, handles and resolves messages.
#[derive(Clone, Debug)]
pub struct SimpleConsumerOptions {
    /// The consumer group.
    pub group: String,
    pub topic: String,
    /// Most messages one receive asks for (1..=256). Fewer are asked for when
    /// fewer handler slots are free.
    pub max_messages: usize,
    /// The lease a receive takes, and the one an extension sets (1 s ..= 12 h).
    pub invisible_duration: Duration,
    /// Long polling: how long the broker may hold a receive while it has nothing
    /// to deliver (at most 30 s).
    pub max_wait: Duration,
    /// Tag filter, `*` or `TagA||TagB`; `None` for all. Messages it leaves out are
    /// consumed for the group without being delivered.
    pub tags: Option<String>,
    /// Deliver and handle each queue's messages in queue order (see the module
    /// documentation).
    pub fifo: bool,
    /// Most messages held at once (received and not yet acked or given back), so
    /// also the most handler calls running at once. In FIFO a queue's run is
    /// handled one by one and holds a slot per message.
    pub handler_concurrency: usize,
    /// How long a message the handler failed stays invisible before it is
    /// delivered again: zero (at once) or 1 s ..= 12 h.
    pub retry_delay: Duration,
    /// Wait before retrying a failed request; doubled for each further failure of
    /// a receive, up to [`SimpleConsumerOptions::backoff_max`].
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl SimpleConsumerOptions {
    /// The defaults for `group` consuming `topic`: 16 messages per receive, 30 s
    /// leases, 20 s long polls, 16 handler slots, a 1 s retry delay.
    pub fn new(group: &str, topic: &str) -> Self {
        Self {
            group: group.to_string(),
            topic: topic.to_string(),
            max_messages: DEFAULT_RECEIVE_MESSAGES,
            invisible_duration: Duration::from_millis(DEFAULT_INVISIBLE_MS),
            max_wait: Duration::from_secs(20),
            tags: None,
            fifo: false,
            handler_concurrency: 16,
            retry_delay: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// Checks the options against the contract's bounds.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] naming the first option out of bounds.
    pub fn validate(&self) -> Result<()> {
        let invalid = |text: String| Err(ClientError::InvalidArgument(text));
        if !(1..=MAX_RECEIVE_MESSAGES).contains(&self.max_messages) {
            return invalid(format!(
                "max_messages must be 1..={MAX_RECEIVE_MESSAGES}, not {}",
                self.max_messages
            ));
        }
        let invisible_ms = millis(self.invisible_duration);
        if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&invisible_ms) {
            return invalid(format!(
                "invisible_duration must be {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS} ms, not {invisible_ms} ms"
            ));
        }
        let wait_ms = millis(self.max_wait);
        if wait_ms > MAX_RECEIVE_WAIT_MS {
            return invalid(format!(
                "max_wait must be at most {MAX_RECEIVE_WAIT_MS} ms, not {wait_ms} ms"
            ));
        }
        let retry_ms = millis(self.retry_delay);
        if retry_ms != 0 && !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&retry_ms) {
            return invalid(format!(
                "retry_delay must be 0 or {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS} ms, not {retry_ms} ms"
            ));
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.handler_concurrency) {
            return invalid(format!(
                "handler_concurrency must be at least 1, not {}",
                self.handler_concurrency
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return invalid(format!(
                "backoff_initial ({:?}) must be above zero and at most backoff_max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        Ok(())
    }

    /// The receive request for `free_slots` free handler slots.
    fn receive_request(&self, free_slots: usize) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: Some(self.max_messages.min(free_slots).max(1)),
            invisible_ms: Some(millis(self.invisible_duration)),
            max_wait_ms: Some(millis(self.max_wait)),
            tags: self.tags.clone(),
            fifo: self.fifo,
        }
    }
}

/// A duration in whole milliseconds, as the wire has it.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Counters of a consumer's work since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimpleConsumerStats {
    /// Messages received (each delivery counts).
    pub received: u64,
    /// Messages acked (`OK`).
    pub acked: u64,
    /// Acks answered `EXPIRED`: the lease had run out; the message comes again.
    pub ack_expired: u64,
    /// Acks answered `INVALID` (or with a status word this client does not know).
    pub ack_invalid: u64,
    /// Messages whose ack request failed for good, or got no status.
    pub ack_failed: u64,
    /// Messages the handler failed, given back with the retry delay.
    pub nacked: u64,
    /// FIFO messages given back unhandled behind a failed one, or at shutdown.
    pub released: u64,
    /// Give-backs the broker did not take (the message comes again once its lease
    /// runs out).
    pub give_back_failed: u64,
    /// Leases extended for slow handlers.
    pub lease_extensions: u64,
    /// Leases whose extension was refused or did not get through in time.
    pub leases_lost: u64,
    /// Receives that failed (each was retried after a backoff).
    pub receive_errors: u64,
}

/// The live counters behind [`SimpleConsumerStats`].
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
    ack_expired: AtomicU64,
    ack_invalid: AtomicU64,
    ack_failed: AtomicU64,
    nacked: AtomicU64,
    released: AtomicU64,
    give_back_failed: AtomicU64,
    lease_extensions: AtomicU64,
    leases_lost: AtomicU64,
    receive_errors: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SimpleConsumerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SimpleConsumerStats {
            received: read(&self.received),
            acked: read(&self.acked),
            ack_expired: read(&self.ack_expired),
            ack_invalid: read(&self.ack_invalid),
            ack_failed: read(&self.ack_failed),
            nacked: read(&self.nacked),
            released: read(&self.released),
            give_back_failed: read(&self.give_back_failed),
            lease_extensions: read(&self.lease_extensions),
            leases_lost: read(&self.leases_lost),
            receive_errors: read(&self.receive_errors),
        }
    }
}

/// The handler, type-erased.
type Handler = Arc<
    dyn Fn(ReceivedMessage) -> Pin<Box<dyn Future<Output = ConsumeResult> + Send>> + Send + Sync,
>;

/// What every task of one consumer shares.
struct Shared {
    client: BrokerClient,
    options: SimpleConsumerOptions,
    handler: Handler,
    counters: Counters,
}

/// A running lease-based consumer; stop it with [`SimpleConsumer::shutdown`].
pub struct SimpleConsumer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl SimpleConsumer {
    /// Starts receiving; `handler` is called for every message received (with
    /// its lease: `receipt_handle` is the delivery's, which the consumer may
    /// replace by extending the lease; the consumer acks or gives the message
    /// back, never the handler). It returns `()` (success) or a
    /// [`ConsumeResult`].
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for options out of the contract's bounds
    /// ([`SimpleConsumerOptions::validate`]); nothing is started then.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns its tasks there).
    pub fn start<H, Fut, R>(
        client: BrokerClient,
        options: SimpleConsumerOptions,
        handler: H,
    ) -> Result<Self>
    where
        H: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<ConsumeResult> + Send + 'static,
    {
        options.validate()?;
        let handler: Handler = Arc::new(move |message| {
            let outcome = handler(message);
            Box::pin(async move { outcome.await.into() })
        });
        let span = info_span!("simple_consumer", group = %options.group, topic = %options.topic);
        let shared = Arc::new(Shared {
            client,
            options,
            handler,
            counters: Counters::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&shared), stopped).instrument(span));
        Ok(Self { stop, task, shared })
    }

    /// What the consumer has done so far.
    pub fn stats(&self) -> SimpleConsumerStats {
        self.shared.counters.snapshot()
    }

    /// Stops receiving, lets the running handlers finish (their leases kept),
    /// gives back FIFO messages still waiting, sends the last acks, and returns
    /// once every task of the consumer has ended, with the final stats.
    pub async fn shutdown(self) -> SimpleConsumerStats {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "simple consumer task failed");
        }
        self.shared.counters.snapshot()
    }
}

impl std::fmt::Debug for SimpleConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleConsumer")
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Exponential waits between retries: `initial`, doubled up to `max`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(options: &SimpleConsumerOptions) -> Self {
        Self {
            next: options.backoff_initial,
            initial: options.backoff_initial,
            max: options.backoff_max,
        }
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// One lease on one message, as this consumer holds it.
#[derive(Debug)]
struct Lease {
    /// The handle of the newest lease (an extension replaces it).
    handle: String,
    /// When the lease runs out on the local clock (never after the broker's).
    deadline: Instant,
    /// When to extend it.
    renew_at: Instant,
    /// An extension was refused: the handle may be spent, nothing renews it.
    lost: bool,
}

impl Lease {
    /// A lease of `duration` taken by a request sent at `taken_at`; it is extended
    /// once a third of it is left.
    fn new(handle: String, taken_at: Instant, duration: Duration) -> Self {
        let deadline = taken_at + duration;
        Self {
            handle,
            deadline,
            renew_at: deadline - duration / 3,
            lost: false,
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        !self.lost && now >= self.renew_at
    }
}

/// A handle waiting to be acked, and when its lease runs out.
#[derive(Debug)]
struct PendingAck {
    handle: String,
    deadline: Instant,
}

/// The receive loop: owns the handling tasks and the acker, and waits for all of
/// them before it returns.
async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let options = &shared.options;
    let slots = Arc::new(Semaphore::new(options.handler_concurrency));
    // Bounded: a slow acker holds handlers, which hold slots, which stops
    // receiving.
    let (acks, queued) = mpsc::channel(MAX_ACK_HANDLES);
    let acker = tokio::spawn(ack_loop(Arc::clone(&shared), queued).in_current_span());
    let mut units = JoinSet::new();
    let mut backoff = Backoff::new(options);
    loop {
        while let Some(done) = units.try_join_next() {
            report_unit(done);
        }
        if *stopped.borrow() {
            break;
        }
        // Only this loop takes slots, so the count read after one was free is a
        // lower bound of what is free when the answer comes.
        let free = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => {
                drop(slot.expect("the slots are never closed"));
                slots.available_permits()
            }
            _ = stopped.changed() => break,
        };
        let request = options.receive_request(free);
        let sent_at = Instant::now();
        let answer = tokio::select! {
            answer = shared.client.receive(&options.group, &options.topic, &request) => answer,
            _ = stopped.changed() => break,
        };
        let messages = match answer {
            Ok(answer) => {
                backoff.reset();
                answer.messages
            }
            Err(e) => {
                shared
                    .counters
                    .receive_errors
                    .fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next_wait();
                warn!(error = %e, ?wait, "receive failed; retrying after a backoff");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => break,
                }
                continue;
            }
        };
        if messages.is_empty() {
            // A zero wait (or a broker that did not wait) answers at once: pause,
            // so that an idle consumer does not spin.
            if sent_at.elapsed() < options.backoff_initial {
                tokio::select! {
                    () = tokio::time::sleep(options.backoff_initial) => {}
                    _ = stopped.changed() => break,
                }
            }
            continue;
        }
        Counters::add(&shared.counters.received, messages.len());
        for run in runs(messages, options.fifo) {
            // A broker that answered more than was asked for waits for slots; a
            // run is never asked more than all the slots (it would wait forever).
            let wanted = run.len().min(options.handler_concurrency);
            let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
            let held = Arc::clone(&slots)
                .acquire_many_owned(wanted)
                .await
                .expect("the slots are never closed");
            let unit = handle_run(
                Arc::clone(&shared),
                run,
                sent_at,
                acks.clone(),
                stopped.clone(),
                held,
            );
            units.spawn(unit.in_current_span());
        }
    }
    while let Some(done) = units.join_next().await {
        report_unit(done);
    }
    // The units held the other senders: the acker drains the queue and ends.
    drop(acks);
    if let Err(e) = acker.await {
        warn!(error = %e, "ack task failed");
    }
}

fn report_unit(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        warn!(error = %e, "message handling task failed");
    }
}

/// Splits an answer into what is handled as one: each message alone, or in FIFO
/// each queue's messages in queue order.
fn runs(messages: Vec<ReceivedMessage>, fifo: bool) -> Vec<Vec<ReceivedMessage>> {
    if !fifo {
        return messages.into_iter().map(|m| vec![m]).collect();
    }
    let same_queue = |a: &ReceivedMessage, b: &ReceivedMessage| {
        a.broker_group == b.broker_group
            && a.message.topic == b.message.topic
            && a.message.queue_id == b.message.queue_id
    };
    let mut runs: Vec<Vec<ReceivedMessage>> = Vec::new();
    for message in messages {
        match runs.iter_mut().find(|run| same_queue(&run[0], &message)) {
            Some(run) => run.push(message),
            None => runs.push(vec![message]),
        }
    }
    for run in &mut runs {
        run.sort_by_key(|m| m.message.queue_offset);
    }
    runs
}

/// Handles one run (one message, or in FIFO a queue's messages in order) and
/// resolves each message: ack, give back, or give back unhandled.
async fn handle_run(
    shared: Arc<Shared>,
    run: Vec<ReceivedMessage>,
    taken_at: Instant,
    acks: mpsc::Sender<PendingAck>,
    stopped: watch::Receiver<bool>,
    _slots: OwnedSemaphorePermit,
) {
    let duration = shared.options.invisible_duration;
    let mut leases: Vec<Lease> = run
        .iter()
        .map(|m| Lease::new(m.receipt_handle.clone(), taken_at, duration))
        .collect();
    for (index, message) in run.into_iter().enumerate() {
        let (lease, rest) = leases[index..]
            .split_first_mut()
            .expect("a run has one lease per message");
        // Only a FIFO run has messages waiting: they wait for the ones before.
        // One whose lease was lost while waiting may be with another receiver
        // already, so the run stops there to keep the queue's order.
        if index > 0 && (*stopped.borrow() || lease.lost) {
            give_back_unhandled(&shared, std::iter::once(lease).chain(rest)).await;
            return;
        }
        let msg_id = message.message.msg_id.clone();
        let result = handle_one(&shared, message, lease, rest).await;
        match result {
            ConsumeResult::Success => {
                let ack = PendingAck {
                    handle: lease.handle.clone(),
                    deadline: lease.deadline,
                };
                if acks.send(ack).await.is_err() {
                    // Cannot happen: the acker ends after every unit did.
                    warn!(
                        msg_id,
                        "the ack task has ended; the message will come again"
                    );
                }
            }
            ConsumeResult::RetryLater => {
                let delay_ms = millis(shared.options.retry_delay);
                match change_lease(&shared, lease, delay_ms).await {
                    Ok(()) => shared.counters.nacked.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        warn!(error = %e, msg_id, "cannot give the message back; it comes again when its lease runs out");
                        shared
                            .counters
                            .give_back_failed
                            .fetch_add(1, Ordering::Relaxed)
                    }
                };
                give_back_unhandled(&shared, rest.iter_mut()).await;
                return;
            }
        }
    }
}

/// Runs the handler on `message` in its own task (a panic is a failure, and the
/// handler runs on while leases are extended), extending `lease` and the leases of
/// the messages waiting behind it (`waiting`) as they come due.
async fn handle_one(
    shared: &Shared,
    message: ReceivedMessage,
    lease: &mut Lease,
    waiting: &mut [Lease],
) -> ConsumeResult {
    let msg_id = message.message.msg_id.clone();
    let mut handling = tokio::spawn((shared.handler)(message).in_current_span());
    loop {
        let next_renewal = std::iter::once(&*lease)
            .chain(waiting.iter())
            .filter(|l| !l.lost)
            .map(|l| l.renew_at)
            .min();
        tokio::select! {
            joined = &mut handling => {
                return joined.unwrap_or_else(|e| {
                    warn!(error = %e, msg_id, "the handler failed; giving the message back");
                    ConsumeResult::RetryLater
                });
            }
            () = sleep_until(next_renewal) => {
                let now = Instant::now();
                for due in std::iter::once(&mut *lease).chain(waiting.iter_mut()) {
                    if due.is_due(now) {
                        extend(shared, due).await;
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Extends `lease` by the lease duration. A retryable failure is tried again
/// shortly, while the lease lasts; anything else loses the lease.
async fn extend(shared: &Shared, lease: &mut Lease) {
    let duration = shared.options.invisible_duration;
    let sent_at = Instant::now();
    let answer = shared
        .client
        .change_invisible(&shared.options.group, &lease.handle, millis(duration))
        .await;
    match answer {
        Ok(answer) => {
            *lease = Lease::new(answer.receipt_handle, sent_at, duration);
            shared
                .counters
                .lease_extensions
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if e.is_retryable() && Instant::now() < lease.deadline => {
            debug!(error = %e, "extending a lease failed; trying again");
            lease.renew_at = (Instant::now() + shared.options.backoff_initial).min(lease.deadline);
        }
        Err(e) => {
            lease.lost = true;
            shared.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, handle = %lease.handle, "cannot extend the lease; the message may be delivered again");
        }
    }
}

/// Sets the lease `lease` names to `invisible_ms` from now (0: give the message
/// back at once), retrying retryable failures while the lease lasts.
///
/// # Errors
/// The last failure, when it is not retryable or the lease has run out.
async fn change_lease(shared: &Shared, lease: &Lease, invisible_ms: u64) -> Result<()> {
    let mut backoff = Backoff::new(&shared.options);
    loop {
        let error = match shared
            .client
            .change_invisible(&shared.options.group, &lease.handle, invisible_ms)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let wait = backoff.next_wait();
        if !error.is_retryable() || Instant::now() + wait >= lease.deadline {
            return Err(error);
        }
        debug!(error = %error, "changing a lease failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Gives FIFO messages back at once, unhandled (their leases not lost).
async fn give_back_unhandled(shared: &Shared, leases: impl Iterator<Item = &mut Lease>) {
    for lease in leases.filter(|l| !l.lost) {
        match change_lease(shared, lease, 0).await {
            Ok(()) => shared.counters.released.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                debug!(error = %e, "cannot give a waiting message back; it comes again when its lease runs out");
                shared
                    .counters
                    .give_back_failed
                    .fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Sends acks one request at a time, each carrying every handle queued while the
/// previous one was outstanding. Ends when every sender is gone and the queue is
/// empty.
async fn ack_loop(shared: Arc<Shared>, mut queued: mpsc::Receiver<PendingAck>) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_ACK_HANDLES {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        ack_batch(&shared, batch).await;
    }
}

/// Acks one batch, retrying retryable failures while any of its leases lasts, and
/// counts the answers.
async fn ack_batch(shared: &Shared, batch: Vec<PendingAck>) {
    let handles: Vec<String> = batch.iter().map(|a| a.handle.clone()).collect();
    let last_deadline = batch.iter().map(|a| a.deadline).max();
    let mut backoff = Backoff::new(&shared.options);
    let answer = loop {
        let error = match shared.client.ack(&shared.options.group, &handles).await {
            Ok(answer) => break answer,
            Err(e) => e,
        };
        let wait = backoff.next_wait();
        if error.is_retryable() && last_deadline.is_some_and(|d| Instant::now() + wait < d) {
            debug!(error = %error, handles = handles.len(), "ack failed; retrying");
            tokio::time::sleep(wait).await;
            continue;
        }
        warn!(error = %error, handles = handles.len(), "ack failed; the messages will be delivered again");
        Counters::add(&shared.counters.ack_failed, handles.len());
        return;
    };
    let tally = AckTally::of(&handles, &answer);
    let counters = &shared.counters;
    Counters::add(&counters.acked, tally.ok);
    Counters::add(&counters.ack_expired, tally.expired);
    Counters::add(&counters.ack_invalid, tally.invalid);
    Counters::add(&counters.ack_failed, tally.unanswered);
    if tally.ok < handles.len() {
        warn!(
            expired = tally.expired,
            invalid = tally.invalid,
            unanswered = tally.unanswered,
            "acks not taken; those messages may be delivered again"
        );
    }
}

/// How the handles of one ack fared.
#[derive(Debug, Default, PartialEq, Eq)]
struct AckTally {
    ok: usize,
    expired: usize,
    /// `INVALID`, or a status word this client does not know.
    invalid: usize,
    /// Handles the answer has no result for.
    unanswered: usize,
}

impl AckTally {
    /// Counts the statuses of `answer` for `handles` (one result per handle, in
    /// order).
    fn of(handles: &[String], answer: &AckResponse) -> Self {
        let mut tally = Self {
            unanswered: handles.len().saturating_sub(answer.results.len()),
            ..Self::default()
        };
        for (handle, result) in handles.iter().zip(&answer.results) {
            if result.receipt_handle != *handle {
                debug!(sent = %handle, answered = %result.receipt_handle, "ack results out of order");
            }
            match result.status.as_str() {
                ACK_OK => tally.ok += 1,
                ACK_EXPIRED => tally.expired += 1,
                ACK_INVALID => tally.invalid += 1,
                other => {
                    debug!(status = other, "unknown ack status");
                    tally.invalid += 1;
                }
            }
            if result.status != ACK_OK {
                debug!(handle = %handle, status = %result.status, "ack not taken");
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_proto::api::MessageView;
    use broker_proto::receive::AckResult;

    fn received(group: &str, queue_id: u32, offset: u64) -> ReceivedMessage {
        ReceivedMessage {
            message: MessageView {
                msg_id: format!("{group}-{queue_id}-{offset}"),
                topic: "t".into(),
                queue_id,
                queue_offset: offset,
                commit_log_offset: 0,
                body: Some("b".into()),
                body_base64: None,
                tags: None,
                keys: Vec::new(),
                properties: Default::default(),
                born_timestamp: 0,
                store_timestamp: 0,
                reconsume_times: 0,
                producer_id: None,
                sequence: None,
            },
            receipt_handle: format!("h-{group}-{queue_id}-{offset}"),
            delivery_attempt: 1,
            invisible_until: 0,
            broker_group: group.into(),
        }
    }

    fn offsets(runs: &[Vec<ReceivedMessage>]) -> Vec<Vec<(String, u32, u64)>> {
        runs.iter()
            .map(|run| {
                run.iter()
                    .map(|m| {
                        (
                            m.broker_group.clone(),
                            m.message.queue_id,
                            m.message.queue_offset,
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_defaults_are_valid_and_each_bound_is_checked() {
        let defaults = SimpleConsumerOptions::new("g", "t");
        defaults.validate().expect("the defaults are valid");
        let zero_delay = SimpleConsumerOptions {
            retry_delay: Duration::ZERO,
            ..defaults.clone()
        };
        zero_delay
            .validate()
            .expect("a zero retry delay gives back at once");
        type BreakIt = fn(&mut SimpleConsumerOptions);
        let cases: [(&str, BreakIt); 8] = [
            ("max_messages", |o| o.max_messages = 0),
            ("max_messages", |o| {
                o.max_messages = MAX_RECEIVE_MESSAGES + 1
            }),
            ("invisible_duration", |o| {
                o.invisible_duration = Duration::from_millis(999)
            }),
            ("invisible_duration", |o| {
                o.invisible_duration = Duration::from_secs(12 * 3600 + 1)
            }),
            ("max_wait", |o| o.max_wait = Duration::from_millis(30_001)),
            ("retry_delay", |o| {
                o.retry_delay = Duration::from_millis(500)
            }),
            ("handler_concurrency", |o| o.handler_concurrency = 0),
            ("backoff_initial", |o| {
                o.backoff_max = Duration::from_millis(1)
            }),
        ];
        for (name, break_it) in cases {
            let mut options = defaults.clone();
            break_it(&mut options);
            let error = options.validate().expect_err(name);
            assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
            assert!(error.to_string().contains(name), "{name}: {error}");
        }
    }

    #[test]
    fn a_receive_asks_for_no_more_than_the_free_slots() {
        let options = SimpleConsumerOptions {
            tags: Some("A||B".into()),
            fifo: true,
            ..SimpleConsumerOptions::new("g", "t")
        };
        let request = options.receive_request(3);
        assert_eq!(request.max_messages, Some(3));
        assert_eq!(request.invisible_ms, Some(DEFAULT_INVISIBLE_MS));
        assert_eq!(request.max_wait_ms, Some(20_000));
        assert_eq!(request.tags.as_deref(), Some("A||B"));
        assert!(request.fifo);
        assert_eq!(options.receive_request(100).max_messages, Some(16));
    }

    #[test]
    fn fifo_runs_are_per_queue_in_queue_order() {
        let answer = || {
            vec![
                received("a", 0, 5),
                received("a", 1, 7),
                received("a", 0, 4),
                received("b", 0, 1),
                received("a", 0, 6),
            ]
        };
        assert_eq!(
            offsets(&runs(answer(), true)),
            [
                vec![("a".into(), 0, 4), ("a".into(), 0, 5), ("a".into(), 0, 6)],
                vec![("a".into(), 1, 7)],
                vec![("b".into(), 0, 1)],
            ]
        );
        let alone = runs(answer(), false);
        assert_eq!(alone.len(), 5);
        assert!(alone.iter().all(|run| run.len() == 1));
        assert_eq!(alone[2][0].message.queue_offset, 4, "received order kept");
    }

    #[test]
    fn a_lease_is_extended_when_a_third_is_left() {
        let taken = Instant::now();
        let lease = Lease::new("h".into(), taken, Duration::from_secs(30));
        assert_eq!(lease.deadline, taken + Duration::from_secs(30));
        assert_eq!(lease.renew_at, taken + Duration::from_secs(20));
        assert!(!lease.is_due(taken + Duration::from_secs(19)));
        assert!(lease.is_due(taken + Duration::from_secs(20)));
        let lost = Lease {
            lost: true,
            ..lease
        };
        assert!(
            !lost.is_due(taken + Duration::from_secs(29)),
            "a lost lease is never renewed"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let options = SimpleConsumerOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..SimpleConsumerOptions::new("g", "t")
        };
        let mut backoff = Backoff::new(&options);
        let waits: Vec<u64> = (0..4).map(|_| millis(backoff.next_wait())).collect();
        assert_eq!(waits, [100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(millis(backoff.next_wait()), 100);
    }

    #[test]
    fn ack_answers_are_tallied_per_status() {
        let handles: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let result = |handle: &str, status: &str| AckResult {
            receipt_handle: handle.into(),
            status: status.into(),
        };
        let answer = AckResponse {
            results: vec![
                result("a", ACK_OK),
                result("b", ACK_EXPIRED),
                result("c", ACK_INVALID),
                result("d", "SOMETHING_NEW"),
            ],
        };
        assert_eq!(
            AckTally::of(&handles, &answer),
            AckTally {
                ok: 1,
                expired: 1,
                invalid: 2,
                unanswered: 1,
            }
        );
    }
}
