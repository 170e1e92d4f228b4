//! [`BatchingProducer`]: one message per call, many messages per request — the
//! client half of group commit, like Kafka's record accumulator (without a
//! `linger.ms` timer).
//!
//! Every send request pays a fixed cost at both ends (an HTTP exchange, a JSON
//! envelope, a Raft proposal), which at one message per request dominates: the
//! broker's profile at 512 single-message requests in flight is a third syscalls,
//! most of them writing answers. A caller that has many messages in flight should
//! not pay that per message.
//!
//! # How batches form
//! There is no timer. At most [`BatchingOptions::max_requests`] requests are
//! outstanding. A message that finds a free request slot goes out at once (alone,
//! when nothing else waits), so a lone send pays nothing for batching. A message
//! that finds every slot busy waits; when a request finishes, its slot takes the
//! waiting messages of one topic, in arrival order, up to
//! [`BatchingOptions::max_batch_messages`] messages and
//! [`BatchingOptions::max_batch_bytes`] of bodies, as the next request. The busier
//! the broker, the larger the batches: batch size follows load, not a clock.
//!
//! # Slots and idempotence
//! Each slot is its own [`Producer`] (own `producer_id`, own sequences) with one
//! request at a time, so a batch never waits for the broker's dedup window and a
//! retry resends the very same batch with the same sequences, exactly as
//! [`Producer::send_messages`] does.
//!
//! # Answers
//! Each call gets its own message's [`SendResultView`]. A batch is atomic at the
//! broker, so a failed request fails every message in it: each caller gets
//! [`ClientError::Batch`] sharing the request's error (its retryable and
//! outcome-unknown verdicts are the request's). One exception: a batch refused as
//! bad input on its first attempt (`400 BAD_REQUEST`, e.g. one body above the
//! broker's limit) stored nothing, so each of its messages is sent again alone, one
//! after another on the same slot, and only the bad one fails.
//!
//! A caller that drops its future while its message still waits in the queue takes
//! the message back; once the message is in a request it may be stored.
//!
//! # Order
//! Messages in flight at the same time may be stored in any order (they travel in
//! different requests). A caller that needs order awaits each send before the next,
//! or uses one slot (`max_requests: 1`) with a `sharding_key`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::broker_client::BrokerClient;
use super::error::{ClientError, Result};
use super::producer::{Idempotence, Producer, ProducerOptions, Unsent, DEDUP_WINDOW};
use crate::api::{MessageInput, SendResponse, SendResultView};

/// Envelope bytes counted per message besides its body (keys, tags, properties and
/// JSON punctuation, roughly), so that many tiny messages still fill a batch.
const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// How a [`BatchingProducer`] batches.
#[derive(Clone, Debug)]
pub struct BatchingOptions {
    /// Requests outstanding at once (Kafka's `max.in.flight.requests.per.connection`
    /// is 5). More slots mean more concurrency and smaller batches; two keep one
    /// batch filling while the other is committed, and did best with
    /// `broker-bench --batching` at 64 and 512 messages in flight (1 to 4 tried).
    pub max_requests: usize,
    /// Most messages in one request; at most [`DEDUP_WINDOW`] with idempotence, and
    /// at most the broker's `http.max_batch_messages` (1024 by default), or every
    /// full batch is refused and resent one message at a time.
    pub max_batch_messages: usize,
    /// Most bytes (bodies plus a small per-message allowance) in one request; a
    /// single message larger than this still goes, alone. Keep it well below the
    /// broker's `http.max_body_size`.
    pub max_batch_bytes: usize,
}

impl Default for BatchingOptions {
    fn default() -> Self {
        Self {
            max_requests: 2,
            max_batch_messages: 256,
            max_batch_bytes: 1 << 20,
        }
    }
}

/// Counters of a [`BatchingProducer`]'s work since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchingStats {
    /// Requests sent (answered or failed), splits of refused batches included.
    pub requests: u64,
    /// Messages those requests carried.
    pub messages: u64,
    /// The most messages one request carried.
    pub largest_batch: u64,
    /// Batches refused as bad input and sent again one message at a time.
    pub split_batches: u64,
    /// Attempts beyond the first, over all slots.
    pub retries: u64,
}

/// Sends single messages, batching those that wait for a free request slot. Cheap
/// to share (`Arc`) between tasks; needs a Tokio runtime (it spawns one task per
/// busy slot).
///
/// ```no_run
/// # async fn demo() -> Result<(), broker_client::ClientError> {
/// use broker_client::api::MessageInput;
/// use broker_client::{BatchingOptions, BatchingProducer, BrokerClient, ProducerOptions};
///
/// let client = BrokerClient::new(vec!["http://127.0.0.1:18081".into()], Default::default())?;
/// let producer =
///     BatchingProducer::new(client, ProducerOptions::default(), BatchingOptions::default())?;
/// let sends = (0..1000).map(|i| {
///     let message = MessageInput { body: Some(format!("m{i}")), ..MessageInput::default() };
///     producer.send("orders", message)
/// });
/// // A thousand sends in flight at once, carried by a few requests.
/// for sent in futures::future::join_all(sends).await {
///     let sent = sent?;
///     println!("{} at {}:{}", sent.msg_id, sent.queue_id, sent.queue_offset);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BatchingProducer {
    accumulator: Arc<Accumulator<Producer>>,
}

impl BatchingProducer {
    /// A batching producer sending through `client`, each slot a [`Producer`] with
    /// `producer` options (a fixed `producer_id` there is refused: slots need ids of
    /// their own).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for a zero limit, a batch larger than the
    /// dedup window with idempotence on, or a fixed `producer_id`.
    pub fn new(
        client: BrokerClient,
        producer: ProducerOptions,
        options: BatchingOptions,
    ) -> Result<Self> {
        if producer.producer_id.is_some() {
            return Err(ClientError::InvalidArgument(
                "a batching producer draws one producer_id per request slot; leave producer_id unset".into(),
            ));
        }
        let window = match producer.idempotence {
            Idempotence::On => Some(DEDUP_WINDOW as usize),
            Idempotence::Off => None,
        };
        options.validate(window)?;
        let slots = (0..options.max_requests)
            .map(|_| Producer::new(client.clone(), producer.clone()))
            .collect();
        Ok(Self {
            accumulator: Arc::new(Accumulator::new(slots, options)),
        })
    }

    /// Sends one message to `topic` (in a batch with others waiting, if any) and
    /// answers with where it was stored once the broker has committed it.
    ///
    /// # Errors
    /// As [`Producer::send_messages`] for a message sent alone;
    /// [`ClientError::Batch`] when the request carrying it with others failed.
    pub async fn send(&self, topic: &str, message: MessageInput) -> Result<SendResultView> {
        Arc::clone(&self.accumulator).send(topic, message).await
    }

    /// Counters so far.
    pub fn stats(&self) -> BatchingStats {
        self.accumulator.stats()
    }
}

impl BatchingOptions {
    fn validate(&self, dedup_window: Option<usize>) -> Result<()> {
        let refuse = |why: String| Err(ClientError::InvalidArgument(why));
        if self.max_requests == 0 || self.max_batch_messages == 0 || self.max_batch_bytes == 0 {
            return refuse(format!("batching limits must be positive: {self:?}"));
        }
        match dedup_window {
            Some(window) if self.max_batch_messages > window => refuse(format!(
                "an idempotent batch holds at most {window} messages (the broker's dedup window), max_batch_messages is {}",
                self.max_batch_messages
            )),
            _ => Ok(()),
        }
    }
}

/// What sends one batch on one slot: a [`Producer`], or a fake in the tests.
trait SendBatch: Send + Sync + 'static {
    /// Sends one atomic batch; a failure hands the messages back.
    fn send_batch(
        &self,
        topic: &str,
        messages: Vec<MessageInput>,
    ) -> impl Future<Output = std::result::Result<SendResponse, Unsent>> + Send;

    /// Attempts beyond the first so far.
    fn retries(&self) -> u64;
}

impl SendBatch for Producer {
    fn send_batch(
        &self,
        topic: &str,
        messages: Vec<MessageInput>,
    ) -> impl Future<Output = std::result::Result<SendResponse, Unsent>> + Send {
        self.send_or_give_back(topic, messages)
    }

    fn retries(&self) -> u64 {
        self.stats().retries
    }
}

/// The queue of waiting messages and the request slots draining it.
#[derive(Debug)]
struct Accumulator<S> {
    slots: Vec<S>,
    options: BatchingOptions,
    /// std mutex: held for queue operations only, never across an `.await`.
    state: Mutex<Queue>,
    requests: AtomicU64,
    messages: AtomicU64,
    largest_batch: AtomicU64,
    split_batches: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Slots with no request outstanding (no task draining the queue with them).
    idle_slots: Vec<usize>,
}

/// A message waiting for a request, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    topic: String,
    message: MessageInput,
    bytes: usize,
    reply: oneshot::Sender<Result<SendResultView>>,
}

/// Messages of one topic going out as one request.
struct Batch {
    topic: String,
    waiting: Vec<Waiting>,
}

impl<S: SendBatch> Accumulator<S> {
    fn new(slots: Vec<S>, options: BatchingOptions) -> Self {
        let idle_slots = (0..slots.len()).rev().collect();
        Self {
            slots,
            options,
            state: Mutex::new(Queue {
                waiting: VecDeque::new(),
                idle_slots,
            }),
            requests: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            split_batches: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> BatchingStats {
        BatchingStats {
            requests: self.requests.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            split_batches: self.split_batches.load(Ordering::Relaxed),
            retries: self.slots.iter().map(S::retries).sum(),
        }
    }

    async fn send(self: Arc<Self>, topic: &str, message: MessageInput) -> Result<SendResultView> {
        let (reply, answer) = oneshot::channel();
        let bytes = message_bytes(&message);
        // Queue the message and, under the same lock, claim an idle slot if there is
        // one: a slot's task only goes idle after finding the queue empty under this
        // lock, so a queued message always has a task coming for it.
        let slot = {
            let mut queue = self.lock();
            queue.waiting.push_back(Waiting {
                topic: topic.to_string(),
                message,
                bytes,
                reply,
            });
            queue.idle_slots.pop()
        };
        if let Some(slot) = slot {
            tokio::spawn(Arc::clone(&self).drain(slot));
        }
        answer.await.unwrap_or(Err(ClientError::Abandoned))
    }

    /// A slot's task: sends batches from the queue until it finds it empty.
    async fn drain(self: Arc<Self>, slot: usize) {
        let mut guard = SlotGuard {
            accumulator: Arc::clone(&self),
            slot: Some(slot),
        };
        loop {
            let batch = {
                let mut queue = self.lock();
                match self.take_batch(&mut queue.waiting) {
                    Some(batch) => batch,
                    None => {
                        queue.idle_slots.push(slot);
                        guard.slot = None;
                        return;
                    }
                }
            };
            self.send_batch(slot, batch).await;
        }
    }

    /// The oldest waiting message and, after it, the other waiting messages of its
    /// topic in arrival order, within the limits.
    fn take_batch(&self, waiting: &mut VecDeque<Waiting>) -> Option<Batch> {
        // A caller that gave up (dropped its future) before its message left the
        // queue does not have it sent behind its back.
        waiting.retain(|w| !w.reply.is_closed());
        let first = waiting.pop_front()?;
        let topic = first.topic.clone();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        let mut i = 0;
        while batch.len() < self.options.max_batch_messages && i < waiting.len() {
            // Only the oldest message's topic is gathered: a long queue of mixed
            // topics is scanned (under the lock), which a queue per topic would avoid;
            // the queue holds at most what callers have in flight.
            if waiting[i].topic != topic {
                i += 1;
                continue;
            }
            if bytes + waiting[i].bytes > self.options.max_batch_bytes {
                break;
            }
            if let Some(next) = waiting.remove(i) {
                bytes += next.bytes;
                batch.push(next);
            }
        }
        Some(Batch {
            topic,
            waiting: batch,
        })
    }

    async fn send_batch(&self, slot: usize, batch: Batch) {
        let Batch { topic, waiting } = batch;
        let count = waiting.len();
        self.count_request(count);
        let (messages, replies): (Vec<MessageInput>, Vec<_>) =
            waiting.into_iter().map(|w| (w.message, w.reply)).unzip();
        match self.slots[slot].send_batch(&topic, messages).await {
            Ok(response) if response.results.len() == count => {
                for (reply, result) in replies.into_iter().zip(response.results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(response) => {
                let error = ClientError::Decode {
                    status: 200,
                    url: format!("send to {topic} ({})", response.group),
                    reason: format!(
                        "{} results for a batch of {count} messages",
                        response.results.len()
                    ),
                };
                answer_all(replies, error);
            }
            Err(unsent) if count > 1 && is_bad_input(&unsent.error) => {
                // One after another: the slot keeps to one request at a time.
                self.split_batches.fetch_add(1, Ordering::Relaxed);
                for (message, reply) in unsent.messages.into_iter().zip(replies) {
                    self.count_request(1);
                    let sent = self.slots[slot].send_batch(&topic, vec![message]).await;
                    let answer = sent
                        .map_err(|unsent| unsent.error)
                        .and_then(|r| single_result(r, &topic));
                    let _ = reply.send(answer);
                }
            }
            Err(unsent) => answer_all(replies, unsent.error),
        }
    }

    fn count_request(&self, messages: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        self.largest_batch
            .fetch_max(messages as u64, Ordering::Relaxed);
    }
}

/// Bytes a message counts against [`BatchingOptions::max_batch_bytes`].
fn message_bytes(message: &MessageInput) -> usize {
    let body = message.body.as_ref().map_or(0, String::len)
        + message.body_base64.as_ref().map_or(0, String::len);
    body + MESSAGE_OVERHEAD_BYTES
}

/// A first attempt refused for its content (not for its topic, not a transient
/// failure): nothing was stored, and each message alone may fare differently. Only
/// a plain answer counts: a `BAD_REQUEST` after retries may follow an attempt that
/// timed out but committed (a retry is placed and checked before it is
/// deduplicated), and resending its messages with new sequences could store them
/// twice.
fn is_bad_input(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { status: 400, body } if body.code == super::error::codes::BAD_REQUEST)
}

/// Gives a slot back if its task ends without doing so (a panic in a send, or the
/// runtime dropping the task): the slot returns to the idle list, and if messages
/// are waiting a new task takes them, so no later message waits forever.
struct SlotGuard<S: SendBatch> {
    accumulator: Arc<Accumulator<S>>,
    /// `None` once the task has returned the slot itself.
    slot: Option<usize>,
}

impl<S: SendBatch> Drop for SlotGuard<S> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let restart = {
            let mut queue = self.accumulator.lock();
            if queue.waiting.is_empty() {
                queue.idle_slots.push(slot);
                false
            } else {
                true
            }
        };
        if restart {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(Arc::clone(&self.accumulator).drain(slot));
                }
                // No runtime left to send with: the waiting messages' callers are
                // going away with it.
                Err(_) => self.accumulator.lock().idle_slots.push(slot),
            }
        }
    }
}

/// The one result of a one-message request.
fn single_result(response: SendResponse, topic: &str) -> Result<SendResultView> {
    let count = response.results.len();
    let group = response.group;
    let mut results = response.results.into_iter();
    match (results.next(), results.next()) {
        (Some(result), None) => Ok(result),
        _ => Err(ClientError::Decode {
            status: 200,
            url: format!("send to {topic} ({group})"),
            reason: format!("{count} results for one message"),
        }),
    }
}

/// Fails every message of a request with its error: alone, the error itself;
/// shared, [`ClientError::Batch`].
fn answer_all(replies: Vec<oneshot::Sender<Result<SendResultView>>>, error: ClientError) {
    if replies.len() == 1 {
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(Err(error));
        }
        return;
    }
    let messages = replies.len();
    let error = Arc::new(error);
    for reply in replies {
        let _ = reply.send(Err(ClientError::Batch {
            messages,
            cause: Arc::clone(&error),
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::api::ErrorBody;

    /// A request a fake slot was given: its topic and its message bodies.
    type Request = (String, Vec<String>);

    /// A slot that holds every request until the gate opens, records what it was
    /// given, and answers each message with its body as `msg_id`. A body `bad`
    /// makes the whole request `BAD_REQUEST`, a body `down` makes it `UNAVAILABLE`,
    /// a body `panic` panics.
    struct FakeSlot {
        gate: watch::Receiver<bool>,
        sent: Arc<Mutex<Vec<Request>>>,
    }

    impl SendBatch for FakeSlot {
        fn send_batch(
            &self,
            topic: &str,
            messages: Vec<MessageInput>,
        ) -> impl Future<Output = std::result::Result<SendResponse, Unsent>> + Send {
            let mut gate = self.gate.clone();
            let sent = Arc::clone(&self.sent);
            let topic = topic.to_string();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                let bodies: Vec<String> = messages
                    .iter()
                    .map(|m| m.body.clone().unwrap_or_default())
                    .collect();
                let offset = {
                    let mut sent = sent.lock().expect("not poisoned");
                    sent.push((topic.clone(), bodies.clone()));
                    sent.len() as u64
                };
                let refuse = |status: u16, code: &str| ClientError::Api {
                    status,
                    body: ErrorBody {
                        code: code.into(),
                        message: "refused".into(),
                        leader: None,
                    },
                };
                let error = if bodies.iter().any(|b| b == "bad") {
                    Some(refuse(400, "BAD_REQUEST"))
                } else if bodies.iter().any(|b| b == "down") {
                    Some(refuse(503, "UNAVAILABLE"))
                } else {
                    None
                };
                if let Some(error) = error {
                    return Err(Unsent { error, messages });
                }
                assert!(!bodies.iter().any(|b| b == "panic"), "the fake slot panics");
                let results = bodies
                    .into_iter()
                    .map(|body| SendResultView {
                        msg_id: body,
                        topic: topic.clone(),
                        queue_id: 0,
                        queue_offset: offset,
                        commit_log_offset: 0,
                        store_timestamp: 0,
                        deliver_timestamp: None,
                    })
                    .collect();
                Ok(SendResponse {
                    results,
                    group: "g".into(),
                    transaction_id: None,
                })
            }
        }

        fn retries(&self) -> u64 {
            0
        }
    }

    type Answer = tokio::task::JoinHandle<Result<SendResultView>>;

    struct Harness {
        accumulator: Arc<Accumulator<FakeSlot>>,
        open: watch::Sender<bool>,
        sent: Arc<Mutex<Vec<Request>>>,
    }

    impl Harness {
        fn new(options: BatchingOptions, open: bool) -> Self {
            let (open, gate) = watch::channel(open);
            let sent = Arc::new(Mutex::new(Vec::new()));
            let slots = (0..options.max_requests)
                .map(|_| FakeSlot {
                    gate: gate.clone(),
                    sent: Arc::clone(&sent),
                })
                .collect();
            Self {
                accumulator: Arc::new(Accumulator::new(slots, options)),
                open,
                sent,
            }
        }

        /// One slot, held at a closed gate by a first message `m0` on topic `t`
        /// (answered as `Answer`), so that what is sent next waits in the queue.
        async fn with_a_held_slot(
            max_batch_messages: usize,
            max_batch_bytes: usize,
        ) -> (Self, Answer) {
            Self::holding(max_batch_messages, max_batch_bytes, "m0").await
        }

        async fn holding(
            max_batch_messages: usize,
            max_batch_bytes: usize,
            body: &str,
        ) -> (Self, Answer) {
            let options = BatchingOptions {
                max_requests: 1,
                max_batch_messages,
                max_batch_bytes,
            };
            let harness = Self::new(options, false);
            let held = harness.send("t", body);
            harness
                .until(|q| q.idle_slots.is_empty() && q.waiting.is_empty())
                .await;
            (harness, held)
        }

        fn send(&self, topic: &str, body: &str) -> Answer {
            let accumulator = Arc::clone(&self.accumulator);
            let topic = topic.to_string();
            let message = MessageInput {
                body: Some(body.into()),
                ..MessageInput::default()
            };
            tokio::spawn(async move { accumulator.send(&topic, message).await })
        }

        /// Sends each of `messages` (topic, body) and waits until it is queued before
        /// sending the next, so the queue holds them in this order.
        async fn queue(&self, messages: &[(&str, &str)]) -> Vec<Answer> {
            let mut answers = Vec::new();
            for (topic, body) in messages {
                let queued = self.accumulator.lock().waiting.len();
                answers.push(self.send(topic, body));
                self.until(|q| q.waiting.len() > queued).await;
            }
            answers
        }

        fn open_gate(&self) {
            self.open
                .send(true)
                .expect("the slots hold the gate's receiver");
        }

        /// Waits (polling) until the queue's state satisfies `ready`.
        async fn until(&self, ready: impl Fn(&Queue) -> bool) {
            for _ in 0..500 {
                if ready(&self.accumulator.lock()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("the queue never reached the expected state");
        }

        fn requests(&self) -> Vec<Request> {
            self.sent.lock().expect("not poisoned").clone()
        }

        fn request_sizes(&self) -> Vec<usize> {
            self.requests()
                .iter()
                .map(|(_, bodies)| bodies.len())
                .collect()
        }
    }

    fn on<'a>(topic: &'a str, bodies: &[&'a str]) -> Vec<(&'a str, &'a str)> {
        bodies.iter().map(|body| (topic, *body)).collect()
    }

    async fn sent(answer: Answer) -> SendResultView {
        answer.await.expect("task").expect("sent")
    }

    async fn failed(answer: Answer) -> ClientError {
        answer.await.expect("task").expect_err("a failure")
    }

    #[tokio::test]
    async fn a_lone_message_goes_alone_at_once() {
        let harness = Harness::new(BatchingOptions::default(), true);
        assert_eq!(sent(harness.send("t", "m0")).await.msg_id, "m0");
        assert_eq!(harness.requests(), vec![("t".into(), vec!["m0".into()])]);
        let stats = harness.accumulator.stats();
        assert_eq!(
            (stats.requests, stats.messages, stats.largest_batch),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn messages_waiting_for_a_busy_slot_share_the_next_request() {
        let (harness, held) = Harness::with_a_held_slot(256, 1 << 20).await;
        let bodies = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"];
        let rest = harness.queue(&on("t", &bodies)).await;
        harness.open_gate();
        assert_eq!(sent(held).await.msg_id, "m0");
        for (body, answer) in bodies.iter().zip(rest) {
            let result = sent(answer).await;
            assert_eq!(result.msg_id, *body, "each caller gets its own result");
            assert_eq!(
                result.queue_offset, 2,
                "all nine went in the second request"
            );
        }
        assert_eq!(harness.request_sizes(), vec![1, 9]);
        assert_eq!(harness.accumulator.stats().largest_batch, 9);
        assert_eq!(
            harness.accumulator.lock().idle_slots,
            vec![0],
            "the slot is idle again"
        );
    }

    #[tokio::test]
    async fn batches_keep_to_their_limits_and_to_one_topic() {
        let (harness, held) = Harness::with_a_held_slot(2, 1 << 20).await;
        let mixed = [
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("b", "b2"),
            ("a", "a3"),
        ];
        let answers = harness.queue(&mixed).await;
        harness.open_gate();
        sent(held).await;
        for answer in answers {
            sent(answer).await;
        }
        let expected: Vec<Request> = vec![
            ("t".into(), vec!["m0".into()]),
            ("a".into(), vec!["a1".into(), "a2".into()]),
            ("b".into(), vec!["b1".into(), "b2".into()]),
            ("a".into(), vec!["a3".into()]),
        ];
        assert_eq!(
            harness.requests(),
            expected,
            "max_batch_messages 2, oldest topic first"
        );

        // Bodies of 2 bytes count 66: 200 bytes hold three messages.
        let (harness, held) = Harness::with_a_held_slot(256, 200).await;
        let answers = harness
            .queue(&on("t", &["x1", "x2", "x3", "x4", "x5"]))
            .await;
        harness.open_gate();
        sent(held).await;
        for answer in answers {
            sent(answer).await;
        }
        assert_eq!(harness.request_sizes(), vec![1, 3, 2]);
    }

    #[tokio::test]
    async fn a_failed_request_fails_each_of_its_messages_with_the_shared_error() {
        let (harness, held) = Harness::with_a_held_slot(256, 1 << 20).await;
        let answers = harness.queue(&on("t", &["m1", "down", "m3"])).await;
        harness.open_gate();
        sent(held).await;
        for answer in answers {
            let error = failed(answer).await;
            assert!(
                matches!(error, ClientError::Batch { messages: 3, .. }),
                "{error}"
            );
            assert!(error.is_unavailable() && error.is_outcome_unknown() && error.is_retryable());
            assert_eq!(error.kind(), "UNAVAILABLE");
        }
        // Alone, a message gets the request's own error.
        let alone = failed(harness.send("t", "down")).await;
        assert!(
            matches!(alone, ClientError::Api { status: 503, .. }),
            "{alone}"
        );
    }

    #[tokio::test]
    async fn a_batch_refused_as_bad_input_is_split_and_only_the_bad_message_fails() {
        let (harness, held) = Harness::with_a_held_slot(256, 1 << 20).await;
        let mut answers = harness
            .queue(&on("t", &["m1", "bad", "m3"]))
            .await
            .into_iter();
        harness.open_gate();
        sent(held).await;
        let (first, bad, last) = (answers.next(), answers.next(), answers.next());
        assert_eq!(sent(first.expect("m1")).await.msg_id, "m1");
        let refused = failed(bad.expect("bad")).await;
        assert!(
            matches!(refused, ClientError::Api { status: 400, .. }),
            "{refused}"
        );
        assert_eq!(sent(last.expect("m3")).await.msg_id, "m3");
        let stats = harness.accumulator.stats();
        assert_eq!(stats.split_batches, 1);
        // m0, the refused batch of three, then each of the three alone.
        assert_eq!(harness.request_sizes(), vec![1, 3, 1, 1, 1]);
        assert_eq!((stats.requests, stats.messages), (5, 7));
    }

    #[tokio::test]
    async fn a_slot_whose_task_dies_is_given_back_and_later_messages_still_go() {
        let (harness, held) = Harness::holding(256, 1 << 20, "panic").await;
        let after = harness.queue(&[("t", "m1")]).await;
        harness.open_gate();
        let abandoned = failed(held).await;
        assert!(matches!(abandoned, ClientError::Abandoned), "{abandoned}");
        assert!(abandoned.is_outcome_unknown() && !abandoned.is_retryable());
        let answer = after.into_iter().next().expect("m1");
        let result = tokio::time::timeout(Duration::from_secs(5), sent(answer))
            .await
            .expect("the waiting message is taken by a new task");
        assert_eq!(result.msg_id, "m1");
    }

    #[tokio::test]
    async fn a_message_whose_caller_gave_up_while_queued_is_not_sent() {
        let (harness, held) = Harness::with_a_held_slot(256, 1 << 20).await;
        for dropped in harness.queue(&[("t", "gone")]).await {
            dropped.abort();
            let _ = dropped.await;
        }
        let kept = harness.queue(&[("t", "m2")]).await;
        harness.open_gate();
        sent(held).await;
        for answer in kept {
            sent(answer).await;
        }
        let bodies: Vec<String> = harness
            .requests()
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect();
        assert_eq!(bodies, vec!["m0".to_string(), "m2".to_string()]);
    }

    #[test]
    fn options_are_checked() {
        let window = Some(DEDUP_WINDOW as usize);
        assert!(BatchingOptions::default().validate(window).is_ok());
        let too_big = BatchingOptions {
            max_batch_messages: DEDUP_WINDOW as usize + 1,
            ..BatchingOptions::default()
        };
        assert!(too_big.validate(window).is_err());
        assert!(too_big.validate(None).is_ok());
        let no_slots = BatchingOptions {
            max_requests: 0,
            ..BatchingOptions::default()
        };
        assert!(no_slots.validate(None).is_err());
    }
}
