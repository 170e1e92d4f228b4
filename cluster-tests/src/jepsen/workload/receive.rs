//! The receive workload: lease-based consumption (shared/API.md "Receive and
//! ack") of the test topic by group [`RECEIVE_GROUP`], and the read of its
//! dead-letter topic at the end.
//!
//! Receivers `r0..` loop: receive (a long poll) from a random node with a lease
//! drawn from [`ReceiveLoad::invisible_ms`], "process" the batch, then for each
//! message: ack it (most), nack it (change-invisible 0), let its lease expire
//! (no ack), or extend its lease and then ack the new handle. Poison messages
//! (bodies ending with
//! [`POISON_MARKER`](crate::jepsen::history::POISON_MARKER)) are nacked on every delivery, so after
//! `consumer.max_delivery_attempts` deliveries they must be in
//! `%DLQ%{group}`. Acks and changes go to a random node too (followers forward).
//!
//! The final drain ([`Receivers::drain`]) acks everything but poison and ends
//! once no receive delivered anything or failed for a quiet period longer than
//! any lease: every lease taken before (also by a receive whose answer was lost)
//! has ended by then, so a message neither acked nor dead-lettered would have
//! been delivered again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_proto::receive::{
    AckRequest, AckResponse, ChangeInvisibleRequest, ChangeInvisibleResponse, ReceiveRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{classify, client, ErrorAnswer, Outcome, Target, TOPIC};
use crate::jepsen::history::{
    is_poison, unix_now_ms, AckStatusValue, AckValue, Body, ChangeInvisibleValue, DeliveryValue,
    DlqMessageValue, DlqReadValue, Kind, ReceiveDrainValue, ReceiveValue, Recorder,
};

/// The consumer group the receivers receive for.
pub const RECEIVE_GROUP: &str = "jepsen-receivers";

/// `%DLQ%{RECEIVE_GROUP}` percent-encoded for a URL path (`%` is `%25`).
const DLQ_TOPIC_PATH: &str = "%25DLQ%25jepsen-receivers";

/// Messages one receive asks for.
const MAX_MESSAGES: usize = 16;

/// How long an ack or a change waits for its answer (as a producer's send).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The receivers' behaviour.
#[derive(Clone, Copy, Debug)]
pub struct ReceiveLoad {
    pub receivers: usize,
    /// Shortest and longest lease a receive asks for, ms (each receive draws one;
    /// the contract's minimum is 1000).
    pub invisible_ms: (u64, u64),
    /// How long a receive waits for messages (long polling), ms.
    pub max_wait_ms: u64,
    /// Fractions of delivered (non-poison) messages nacked, left to expire, and
    /// given a new lease before the ack; the rest are acked at once.
    pub nack_fraction: f64,
    pub expire_fraction: f64,
    pub extend_fraction: f64,
    /// Fraction of sends that are poison messages (never acked).
    pub poison_fraction: f64,
}

impl Default for ReceiveLoad {
    fn default() -> Self {
        Self {
            receivers: 4,
            invisible_ms: (2_000, 5_000),
            max_wait_ms: 1_000,
            nack_fraction: 0.01,
            expire_fraction: 0.02,
            extend_fraction: 0.01,
            poison_fraction: 0.005,
        }
    }
}

impl ReceiveLoad {
    /// The drain's quiet period: longer than any lease, plus a long poll and
    /// slack, so every lease taken before it began has ended inside it.
    pub fn drain_quiet(&self) -> Duration {
        Duration::from_millis(self.invisible_ms.1 + self.max_wait_ms + 2_000)
    }
}

/// What the receivers are told to do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Run,
    /// Ack everything but poison; stop after `quiet_ms` without activity.
    Drain {
        quiet_ms: f64,
    },
    Stop,
}

/// When a receive last delivered something, or a call failed (which may leave a
/// lease we do not know of): recorder milliseconds, as `f64` bits.
struct Activity(AtomicU64);

impl Activity {
    fn touch(&self, recorder: &Recorder) {
        self.0.store(recorder.now_ms().to_bits(), Ordering::Relaxed);
    }

    fn quiet_ms(&self, recorder: &Recorder) -> f64 {
        recorder.now_ms() - f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The running receivers (none in pull mode).
pub(super) struct Receivers {
    target: Option<Arc<Target>>,
    phase: watch::Sender<Phase>,
    activity: Arc<Activity>,
    tasks: Vec<JoinHandle<bool>>,
}

impl Receivers {
    pub(super) fn none() -> Self {
        Self {
            target: None,
            phase: watch::channel(Phase::Stop).0,
            activity: Arc::new(Activity(AtomicU64::new(0))),
            tasks: Vec::new(),
        }
    }

    pub(super) fn start(target: &Arc<Target>, load: ReceiveLoad, seed: u64) -> Self {
        let (phase, phase_rx) = watch::channel(Phase::Run);
        let activity = Arc::new(Activity(AtomicU64::new(0)));
        activity.touch(&target.recorder);
        let tasks = (0..load.receivers.max(1))
            .map(|index| {
                let receiver = Receiver {
                    target: Arc::clone(target),
                    process: format!("r{index}"),
                    long_poll: client(
                        target,
                        Duration::from_millis(load.max_wait_ms) + CALL_TIMEOUT,
                    ),
                    http: client(target, CALL_TIMEOUT),
                    ids: target.nodes.keys().copied().collect(),
                    load,
                };
                let seed = seed
                    .wrapping_mul(15_485_863)
                    .wrapping_add(2000 + index as u64);
                tokio::spawn(receiver.run(seed, phase_rx.clone(), Arc::clone(&activity)))
            })
            .collect();
        Self {
            target: Some(Arc::clone(target)),
            phase,
            activity,
            tasks,
        }
    }

    /// Switches the receivers to the drain and waits until each saw `quiet`
    /// without activity, or `timeout` passed (then stops them and waits for their
    /// last calls). Records the drain's end; returns whether it went quiet.
    pub(super) async fn drain(&mut self, quiet: Duration, timeout: Duration) -> bool {
        let Some(target) = self.target.clone() else {
            return true;
        };
        let quiet_ms = quiet.as_secs_f64() * 1000.0;
        self.activity.touch(&target.recorder);
        let _ = self.phase.send(Phase::Drain { quiet_ms });
        let deadline = tokio::time::Instant::now() + timeout;
        let mut complete = true;
        let mut unfinished = Vec::new();
        for mut task in std::mem::take(&mut self.tasks) {
            if !unfinished.is_empty() {
                unfinished.push(task);
                continue;
            }
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(quieted) => complete &= quieted.unwrap_or(false),
                Err(_) => {
                    complete = false;
                    unfinished.push(task);
                }
            }
        }
        let _ = self.phase.send(Phase::Stop);
        // Every receiver is owned: each notices the stop within one call.
        for task in unfinished {
            let _ = task.await;
        }
        let detail = if complete {
            String::new()
        } else {
            format!(
                "still delivering (or failing) {} s after the drain began",
                timeout.as_secs()
            )
        };
        target.recorder.record(
            "final",
            Kind::Ok,
            Body::ReceiveDrain(ReceiveDrainValue {
                group: RECEIVE_GROUP.into(),
                complete,
                quiet_ms: quiet.as_millis() as u64,
                detail,
            }),
        );
        complete
    }
}

/// The answer of a receive, read leniently: only what the checker needs is
/// required, so an answer with fewer message fields than a pull's still yields
/// its deliveries (an unparseable answer would hide leases from the history).
#[derive(Deserialize)]
struct ReceiveAnswer {
    #[serde(default)]
    messages: Vec<ReceivedMessage>,
}

#[derive(Deserialize)]
struct ReceivedMessage {
    #[serde(default)]
    msg_id: String,
    #[serde(default)]
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    receipt_handle: String,
    delivery_attempt: u32,
    invisible_until: u64,
    #[serde(default)]
    broker_group: String,
}

impl From<ReceivedMessage> for DeliveryValue {
    fn from(m: ReceivedMessage) -> Self {
        Self {
            body: body_text(m.body, m.body_base64),
            msg_id: m.msg_id,
            topic: m.topic,
            broker_group: m.broker_group,
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            receipt_handle: m.receipt_handle,
            delivery_attempt: m.delivery_attempt,
            invisible_until: m.invisible_until,
        }
    }
}

fn body_text(body: Option<String>, base64: Option<String>) -> String {
    body.or(base64.map(|b| format!("base64:{b}")))
        .unwrap_or_default()
}

/// What a receiver does with one delivered message.
enum Action {
    Ack,
    Nack,
    Expire,
    Extend,
}

struct Receiver {
    target: Arc<Target>,
    process: String,
    /// For receives: the long poll plus the usual answer time.
    long_poll: reqwest::Client,
    /// For acks and changes.
    http: reqwest::Client,
    ids: Vec<u64>,
    load: ReceiveLoad,
}

impl Receiver {
    /// Receives until stopped, or until the drain went quiet (then `true`).
    async fn run(self, seed: u64, phase: watch::Receiver<Phase>, activity: Arc<Activity>) -> bool {
        let mut rng = StdRng::seed_from_u64(seed);
        let recorder = &self.target.recorder;
        let (lease_low, lease_high) = self.load.invisible_ms;
        // The drain stays on a node until a call to it fails: one node that
        // keeps failing must not keep the drain from going quiet.
        let mut drain_node = self.pick(&mut rng);
        loop {
            let current = *phase.borrow();
            let draining = match current {
                Phase::Stop => return false,
                Phase::Drain { quiet_ms } => {
                    if activity.quiet_ms(recorder) >= quiet_ms {
                        return true;
                    }
                    true
                }
                Phase::Run => false,
            };
            let invisible_ms = rng.random_range(lease_low..=lease_high.max(lease_low));
            let node = self.next_node(&mut rng, draining, drain_node);
            let Some(messages) = self.receive(node, invisible_ms, draining).await else {
                activity.touch(recorder);
                drain_node = self.pick(&mut rng);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if messages.is_empty() {
                continue;
            }
            activity.touch(recorder);
            // "Processing" the batch.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
            let mut to_ack = Vec::new();
            for message in messages {
                if *phase.borrow() == Phase::Stop {
                    break;
                }
                let action = if is_poison(&message.body) {
                    Action::Nack
                } else if draining {
                    Action::Ack
                } else {
                    let draw: f64 = rng.random();
                    let load = &self.load;
                    if draw < load.nack_fraction {
                        Action::Nack
                    } else if draw < load.nack_fraction + load.expire_fraction {
                        Action::Expire
                    } else if draw
                        < load.nack_fraction + load.expire_fraction + load.extend_fraction
                    {
                        Action::Extend
                    } else {
                        Action::Ack
                    }
                };
                match action {
                    Action::Ack => to_ack.push(message.receipt_handle),
                    Action::Expire => {}
                    Action::Nack => {
                        let node = self.next_node(&mut rng, draining, drain_node);
                        if self
                            .change(node, &message.receipt_handle, 0)
                            .await
                            .is_none()
                        {
                            activity.touch(recorder);
                        }
                    }
                    Action::Extend => {
                        let node = self.next_node(&mut rng, draining, drain_node);
                        match self
                            .change(node, &message.receipt_handle, invisible_ms)
                            .await
                        {
                            Some(handle) => to_ack.push(handle),
                            None => activity.touch(recorder),
                        }
                    }
                }
            }
            if !to_ack.is_empty() {
                let node = self.next_node(&mut rng, draining, drain_node);
                if !self.ack(node, to_ack).await {
                    activity.touch(recorder);
                }
            }
        }
    }

    /// Where a call goes: any node, or during the drain the drain's node.
    fn next_node(&self, rng: &mut StdRng, draining: bool, drain_node: u64) -> u64 {
        if draining {
            drain_node
        } else {
            self.pick(rng)
        }
    }

    fn pick(&self, rng: &mut StdRng) -> u64 {
        self.ids[rng.random_range(0..self.ids.len())]
    }

    fn url(&self, node: u64, path: &str) -> String {
        format!(
            "{}/v1/groups/{RECEIVE_GROUP}/{path}",
            self.target.nodes[&node]
        )
    }

    /// One receive, recorded; `None` when it failed or its answer was lost.
    async fn receive(
        &self,
        node: u64,
        invisible_ms: u64,
        drain: bool,
    ) -> Option<Vec<DeliveryValue>> {
        let mut value = ReceiveValue {
            group: RECEIVE_GROUP.into(),
            topic: TOPIC.into(),
            node,
            invisible_ms,
            max_wait_ms: self.load.max_wait_ms,
            unix_ms: unix_now_ms(),
            drain,
            ..ReceiveValue::default()
        };
        self.invoke(&value);
        let request = ReceiveRequest {
            max_messages: Some(MAX_MESSAGES),
            invisible_ms: Some(invisible_ms),
            max_wait_ms: Some(self.load.max_wait_ms),
            ..ReceiveRequest::default()
        };
        let answer = self
            .long_poll
            .post(self.url(node, &format!("topics/{TOPIC}/receive")))
            .json(&request)
            .send()
            .await;
        let outcome = classify::<ReceiveAnswer>(answer).await;
        // Read after the whole answer arrived: not before the broker delivered.
        value.unix_ms = unix_now_ms();
        self.complete(outcome, value, |answer: ReceiveAnswer, value| {
            value.messages = answer.messages.into_iter().map(Into::into).collect();
            value.messages.clone()
        })
    }

    /// One ack of `handles`, recorded; whether it was answered.
    async fn ack(&self, node: u64, handles: Vec<String>) -> bool {
        let value = AckValue {
            group: RECEIVE_GROUP.into(),
            node,
            receipt_handles: handles,
            ..AckValue::default()
        };
        self.invoke(&value);
        let request = AckRequest {
            receipt_handles: value.receipt_handles.clone(),
        };
        let answer = self
            .http
            .post(self.url(node, "ack"))
            .json(&request)
            .send()
            .await;
        let outcome = classify::<AckResponse>(answer).await;
        self.complete(outcome, value, |answer: AckResponse, value| {
            value.results = answer
                .results
                .into_iter()
                .map(|r| AckStatusValue {
                    receipt_handle: r.receipt_handle,
                    status: r.status,
                })
                .collect();
        })
        .is_some()
    }

    /// One change-invisible (0: a nack), recorded; the new handle when answered.
    async fn change(&self, node: u64, handle: &str, invisible_ms: u64) -> Option<String> {
        let value = ChangeInvisibleValue {
            group: RECEIVE_GROUP.into(),
            node,
            receipt_handle: handle.into(),
            invisible_ms,
            ..ChangeInvisibleValue::default()
        };
        self.invoke(&value);
        let request = ChangeInvisibleRequest {
            receipt_handle: handle.into(),
            invisible_ms,
        };
        let answer = self
            .http
            .post(self.url(node, "change-invisible"))
            .json(&request)
            .send()
            .await;
        // An expired handle is a 409 EXPIRED: certainly not applied (a failure).
        let outcome = classify::<ChangeInvisibleResponse>(answer).await;
        self.complete(outcome, value, |answer: ChangeInvisibleResponse, value| {
            value.new_receipt_handle = Some(answer.receipt_handle.clone());
            value.invisible_until = Some(answer.invisible_until);
            answer.receipt_handle
        })
    }

    /// Records the invocation of this receiver's operation `value`.
    fn invoke<V: Completion + Clone>(&self, value: &V) {
        self.target
            .recorder
            .record(&self.process, Kind::Invoke, value.clone().into_body());
    }

    /// Records the completion of this receiver's operation `value`: `ok` with
    /// what `answered` took from the answer (also returned), `fail` or `info`
    /// with the error.
    fn complete<A, V: Completion, R>(
        &self,
        outcome: Outcome<A>,
        mut value: V,
        answered: impl FnOnce(A, &mut V) -> R,
    ) -> Option<R> {
        let (kind, result) = match outcome {
            Outcome::Ok(answer) => (Kind::Ok, Some(answered(answer, &mut value))),
            Outcome::Fail(e) => {
                value.set_error(e);
                (Kind::Fail, None)
            }
            Outcome::Unknown(e) => {
                value.set_error(e);
                (Kind::Info, None)
            }
        };
        self.target
            .recorder
            .record(&self.process, kind, value.into_body());
        result
    }
}

/// A receiver's recorded operation value.
trait Completion {
    fn set_error(&mut self, error: String);
    fn into_body(self) -> Body;
}

impl Completion for ReceiveValue {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn into_body(self) -> Body {
        Body::Receive(self)
    }
}

impl Completion for AckValue {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn into_body(self) -> Body {
        Body::Ack(self)
    }
}

impl Completion for ChangeInvisibleValue {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn into_body(self) -> Body {
        Body::ChangeInvisible(self)
    }
}

#[derive(Deserialize, PartialEq, Debug)]
struct DlqQueue {
    queue_id: u32,
    #[serde(default)]
    min_offset: u64,
    max_offset: u64,
}

#[derive(Deserialize)]
struct DlqQueues {
    queues: Vec<DlqQueue>,
}

#[derive(Deserialize)]
struct DlqPullAnswer {
    status: String,
    next_offset: u64,
    min_offset: u64,
    #[serde(default)]
    messages: Vec<DlqPulled>,
}

#[derive(Deserialize)]
struct DlqPulled {
    queue_offset: u64,
    #[serde(default)]
    msg_id: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// The dead-letter topic's queues as `node` serves them; `None` when the topic
/// does not exist (nothing was dead-lettered).
async fn dlq_queues(
    http: &reqwest::Client,
    target: &Target,
    node: u64,
) -> Result<Option<Vec<DlqQueue>>, String> {
    let response = http
        .get(format!(
            "{}/v1/topics/{DLQ_TOPIC_PATH}/queues",
            target.nodes[&node]
        ))
        .send()
        .await
        .map_err(|e| format!("queues of the dead-letter topic on node {node}: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.as_u16() == 404 {
        let code = serde_json::from_str::<ErrorAnswer>(&text).map(|e| e.code);
        if code.is_ok_and(|code| code == "TOPIC_NOT_FOUND") {
            return Ok(None);
        }
    }
    if !status.is_success() {
        return Err(format!(
            "queues of the dead-letter topic on node {node}: {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let mut queues = serde_json::from_str::<DlqQueues>(&text)
        .map_err(|e| format!("queues of the dead-letter topic on node {node}: {e}: {text}"))?
        .queues;
    queues.sort_by_key(|q| q.queue_id);
    Ok(Some(queues))
}

/// Waits until every node serves the same dead-letter queues and ends twice in a
/// row (the last dead letters of the drain may still be applying on followers).
///
/// # Errors
/// They still differed after `timeout`; the error shows each node's view.
pub async fn wait_dlq_converged(target: &Target, timeout: Duration) -> Result<(), String> {
    let http = client(target, Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut previous = None;
    loop {
        let mut views = Vec::new();
        for node in target.nodes.keys() {
            views.push(dlq_queues(&http, target, *node).await);
        }
        let agreed = views.iter().all(Result::is_ok) && views.windows(2).all(|w| w[0] == w[1]);
        if agreed && previous.as_ref() == Some(&views) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "dead-letter queues per node after {timeout:?}: {views:?}"
            ));
        }
        previous = agreed.then_some(views);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Reads the whole dead-letter topic of [`RECEIVE_GROUP`] from `node` (every
/// queue it lists, from its first retained message to its end) and records it:
/// `ok` when complete, `fail` with the error otherwise. The test cluster is one
/// broker group, so one node's queues are the whole topic.
pub async fn read_dlq(target: &Target, node: u64) -> DlqReadValue {
    let mut value = DlqReadValue {
        group: RECEIVE_GROUP.into(),
        source_topic: TOPIC.into(),
        node,
        ..DlqReadValue::default()
    };
    match read_dlq_messages(target, node).await {
        Ok(messages) => {
            value.messages = messages;
            target
                .recorder
                .record("final", Kind::Ok, Body::DlqRead(value.clone()));
        }
        Err(e) => {
            value.error = Some(e);
            target
                .recorder
                .record("final", Kind::Fail, Body::DlqRead(value.clone()));
        }
    }
    value
}

async fn read_dlq_messages(target: &Target, node: u64) -> Result<Vec<DlqMessageValue>, String> {
    let http = client(target, Duration::from_secs(10));
    let mut failures = 0;
    let queues = loop {
        match dlq_queues(&http, target, node).await {
            Ok(queues) => break queues.unwrap_or_default(),
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut messages = Vec::new();
    for queue in queues {
        let mut offset = queue.min_offset;
        let mut failures = 0;
        while offset < queue.max_offset {
            let answer = http
                .get(format!(
                    "{}/v1/topics/{DLQ_TOPIC_PATH}/queues/{}/messages?offset={offset}&max_messages=1024",
                    target.nodes[&node], queue.queue_id
                ))
                .send()
                .await;
            let answer: DlqPullAnswer = match classify(answer).await {
                Outcome::Ok(answer) => answer,
                Outcome::Fail(e) | Outcome::Unknown(e) => {
                    failures += 1;
                    if failures >= 3 {
                        return Err(format!(
                            "dead-letter queue {} on node {node} at offset {offset}: {e}",
                            queue.queue_id
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if answer.status == "OFFSET_TOO_SMALL" && answer.min_offset > offset {
                offset = answer.min_offset;
                continue;
            }
            let got = answer.messages.len();
            messages.extend(answer.messages.into_iter().map(|m| DlqMessageValue {
                queue: queue.queue_id,
                offset: m.queue_offset,
                msg_id: m.msg_id,
                body: body_text(m.body, m.body_base64),
                properties: m.properties,
            }));
            // A queue that answers nothing below the end it listed was not read
            // completely: a failed read leaves the DLQ checks unjudged, a short
            // one would make them flag messages that are there.
            if got == 0 || answer.next_offset <= offset {
                return Err(format!(
                    "dead-letter queue {} on node {node} lists end {} but a pull at {offset} answered {} with next_offset {}",
                    queue.queue_id, queue.max_offset, answer.status, answer.next_offset
                ));
            }
            offset = answer.next_offset;
        }
    }
    Ok(messages)
}
