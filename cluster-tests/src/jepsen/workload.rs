//! The workload: producers sending unique bodies, consumers pulling every queue
//! and committing their offsets, and the final read of every node's local copy.
//!
//! Producers `p0..` send one message at a time to a random node (followers
//! forward to the leader). Even-numbered producers stamp `producer_id`+`sequence`
//! and retry an unknown outcome with the same stamp (the broker must store it
//! once); odd-numbered ones send plain messages and never retry (a retry could
//! legitimately store a duplicate). Each attempt is an `invoke` and an `ok` /
//! `fail` / `info` event.
//!
//! Consumers `c<queue>` pull their queue from one node until it errs, then from
//! another, commit the position they reached to group [`GROUP`], and now and then
//! read the group's offsets from a random node.
//!
//! In the receive mode ([`Mode::Receive`]) receivers `r0..` take the consumers'
//! place: lease-based consumption for group [`RECEIVE_GROUP`] (see [`receive`]),
//! and producers mark a small fraction of their bodies as poison.
//!
//! In the transactions mode ([`Mode::Transactions`]) the producers send
//! transactions instead (commit, roll back or abandon them; see
//! [`transactions`]) and check responders `k0..` answer the broker's checks; the
//! consumers, the drain and the final read are the pull mode's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::history::{
    Body, CommitValue, FinalReadValue, Kind, PollValue, ReadOffsetsValue, Recorder, SendValue,
    POISON_MARKER,
};

pub mod receive;
pub mod transactions;

pub use receive::{ReceiveLoad, RECEIVE_GROUP};
pub use transactions::{TransactionLoad, PRODUCER_GROUP};

/// The topic every run writes.
pub const TOPIC: &str = "jepsen";
/// The consumer group whose offsets the consumers commit.
pub const GROUP: &str = "jepsen-consumers";

/// How the workload consumes the topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One consumer per queue pulls it and commits offsets (`--workload pull`).
    #[default]
    Pull,
    /// Receivers take leases, ack, nack and let leases expire; poison messages
    /// go to the dead-letter topic (`--workload receive`).
    Receive,
    /// Producers send transactions and commit, roll back or abandon them; check
    /// responders answer the broker's checks; consumers pull as in `pull`
    /// (`--workload transactions`).
    Transactions,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pull => "pull",
            Mode::Receive => "receive",
            Mode::Transactions => "transactions",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pull" => Ok(Mode::Pull),
            "receive" => Ok(Mode::Receive),
            "transactions" => Ok(Mode::Transactions),
            _ => Err(format!(
                "`{text}`: the workload is pull, receive or transactions"
            )),
        }
    }
}

/// How long a producer waits for a send's answer. Shorter than the broker's write
/// timeout (10 s) on purpose: a producer whose request hangs on a paused or
/// isolated node gives up (outcome unknown) and moves on, so the availability
/// the report shows is the cluster's, not one stuck client's.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Retries of one stamped send whose outcome was unknown.
const IDEMPOTENT_RETRIES: u32 = 3;

/// What the workload runs against.
#[derive(Clone)]
pub struct Target {
    /// Node id → base URL.
    pub nodes: BTreeMap<u64, String>,
    pub queues: u32,
    pub recorder: Recorder,
    /// Headers of every request: the admin token of a secured cluster.
    pub headers: reqwest::header::HeaderMap,
}

/// How much load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Sends per second over all producers.
    pub rate: f64,
    pub producers: usize,
    pub seed: u64,
    pub mode: Mode,
    /// The receivers' behaviour (receive mode only).
    pub receive: ReceiveLoad,
    /// The responders and the nodes' check settings (transactions mode only).
    pub transactions: TransactionLoad,
}

/// Running producers and consumers (or receivers).
pub struct Workload {
    stop_producers: watch::Sender<bool>,
    drain_to: watch::Sender<Option<BTreeMap<u32, u64>>>,
    stop_consumers: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<bool>>,
    receivers: receive::Receivers,
    transactions: transactions::Transactions,
}

#[derive(Deserialize)]
struct SendAnswer {
    results: Vec<SendResult>,
}

#[derive(Deserialize)]
struct SendResult {
    queue_id: u32,
    queue_offset: u64,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct PullAnswer {
    status: String,
    next_offset: u64,
    min_offset: u64,
    max_offset: u64,
    #[serde(default)]
    messages: Vec<PulledMessage>,
}

#[derive(Deserialize)]
struct PulledMessage {
    queue_offset: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
}

impl PulledMessage {
    fn body(self) -> String {
        self.body
            .or(self.body_base64.map(|b| format!("base64:{b}")))
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct CommitAnswer {
    offset: u64,
}

#[derive(Deserialize)]
struct OffsetsAnswer {
    offsets: Vec<OffsetEntry>,
}

#[derive(Deserialize)]
struct OffsetEntry {
    topic: String,
    queue_id: u32,
    offset: u64,
}

/// Outcome of one HTTP call, classified for the history.
enum Outcome<T> {
    Ok(T),
    /// Certainly not applied.
    Fail(String),
    /// Maybe applied.
    Unknown(String),
}

fn client(target: &Target, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(target.headers.clone())
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Classifies a write's answer. Only an answer that proves the write never
/// reached Raft is a failure: a request that could not connect, or a 4xx other
/// than NOT_LEADER (the broker may answer NOT_LEADER for an entry it had already
/// appended when it lost leadership). Everything else is unknown.
async fn classify<T: for<'de> Deserialize<'de>>(
    answer: Result<reqwest::Response, reqwest::Error>,
) -> Outcome<T> {
    match answer {
        Err(e) if e.is_connect() => Outcome::Fail(format!("connect: {e}")),
        Err(e) if e.is_timeout() => Outcome::Unknown("timeout".into()),
        Err(e) => Outcome::Unknown(format!("{e}")),
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return match serde_json::from_str(&text) {
                    Ok(value) => Outcome::Ok(value),
                    Err(e) => Outcome::Unknown(format!("unparseable answer ({e}): {text}")),
                };
            }
            let word = serde_json::from_str::<ErrorAnswer>(&text)
                .map(|e| format!("{} {}", e.code, e.message))
                .unwrap_or_else(|_| text.chars().take(200).collect());
            if status.is_client_error() && status.as_u16() != 421 && status.as_u16() != 408 {
                Outcome::Fail(format!("{status}: {word}"))
            } else {
                Outcome::Unknown(format!("{status}: {word}"))
            }
        }
    }
}

impl Workload {
    /// Starts producers and consumers.
    pub fn start(target: &Target, load: Load) -> Self {
        let (stop_producers, producers_stopped) = watch::channel(false);
        let (drain_to, drain_rx) = watch::channel(None);
        let (stop_consumers, consumers_stopped) = watch::channel(false);
        let target = Arc::new(target.clone());
        let per_producer = if load.rate > 0.0 {
            Duration::from_secs_f64(load.producers as f64 / load.rate)
        } else {
            Duration::from_millis(100)
        };
        let poison_fraction = match load.mode {
            Mode::Pull | Mode::Transactions => 0.0,
            Mode::Receive => load.receive.poison_fraction,
        };
        let (transactions, transaction_producers) = match load.mode {
            Mode::Transactions => transactions::Transactions::start(
                &target,
                load.transactions,
                load.producers,
                per_producer,
                load.seed,
                &producers_stopped,
            ),
            Mode::Pull | Mode::Receive => (transactions::Transactions::none(), Vec::new()),
        };
        let plain_producers = match load.mode {
            Mode::Transactions => 0,
            Mode::Pull | Mode::Receive => load.producers,
        };
        let mut producers: Vec<JoinHandle<()>> = (0..plain_producers)
            .map(|i| {
                let target = Arc::clone(&target);
                let stop = producers_stopped.clone();
                let seed = load.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                tokio::spawn(produce(
                    target,
                    i,
                    per_producer,
                    poison_fraction,
                    seed,
                    stop,
                ))
            })
            .collect();
        producers.extend(transaction_producers);
        let pull_consumers = match load.mode {
            Mode::Pull | Mode::Transactions => target.queues,
            Mode::Receive => 0,
        };
        let consumers = (0..pull_consumers)
            .map(|queue| {
                let target = Arc::clone(&target);
                let seed = load
                    .seed
                    .wrapping_mul(7_919)
                    .wrapping_add(1000 + u64::from(queue));
                tokio::spawn(consume(
                    target,
                    queue,
                    seed,
                    drain_rx.clone(),
                    consumers_stopped.clone(),
                ))
            })
            .collect();
        let receivers = match load.mode {
            Mode::Pull | Mode::Transactions => receive::Receivers::none(),
            Mode::Receive => receive::Receivers::start(&target, load.receive, load.seed),
        };
        Self {
            stop_producers,
            drain_to,
            stop_consumers,
            producers,
            consumers,
            receivers,
            transactions,
        }
    }

    /// Stops the producers and waits for their last operations to complete.
    pub async fn stop_producers(&mut self) {
        let _ = self.stop_producers.send(true);
        for handle in self.producers.drain(..) {
            let _ = handle.await;
        }
    }

    /// Lets consumers run until each reached `ends[queue]` or `timeout` passed.
    /// Returns whether every consumer got there.
    pub async fn drain(&mut self, ends: BTreeMap<u32, u64>, timeout: Duration) -> bool {
        let _ = self.drain_to.send(Some(ends));
        let all = futures::future::join_all(self.consumers.drain(..));
        let drained = match tokio::time::timeout(timeout, all).await {
            Ok(results) => results.into_iter().all(|r| r.unwrap_or(false)),
            Err(_) => false,
        };
        let _ = self.stop_consumers.send(true);
        drained
    }

    /// Receive mode: lets the receivers drain (ack everything but poison) until
    /// no receive delivered anything or failed for `quiet`, or `timeout` passed;
    /// records the drain's end and returns whether it went quiet.
    pub async fn drain_receivers(&mut self, quiet: Duration, timeout: Duration) -> bool {
        self.receivers.drain(quiet, timeout).await
    }

    /// Transactions mode: stops the check responders and waits for their last
    /// calls.
    pub async fn stop_responders(&mut self) {
        self.transactions.stop_responders().await;
    }

    /// Transactions mode: rolls back every transaction the workload learned of,
    /// to learn how each ended (once none is open); answers how many.
    pub async fn probe_transactions(&self) -> usize {
        self.transactions.probe().await
    }
}

async fn produce(
    target: Arc<Target>,
    index: usize,
    interval: Duration,
    poison_fraction: f64,
    seed: u64,
    stop: watch::Receiver<bool>,
) {
    let process = format!("p{index}");
    let idempotent = index.is_multiple_of(2);
    let mut rng = StdRng::seed_from_u64(seed);
    let http = client(&target, SEND_TIMEOUT);
    let ids: Vec<u64> = target.nodes.keys().copied().collect();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spread the producers' first ticks over one interval.
    tokio::time::sleep(interval.mul_f64(rng.random::<f64>())).await;
    let mut sequence: u64 = 0;
    while !*stop.borrow() {
        ticker.tick().await;
        sequence += 1;
        // Only a poison-making run draws for it, so the pull workload's choices
        // for a seed stay those of earlier runs.
        let poison = poison_fraction > 0.0 && rng.random::<f64>() < poison_fraction;
        let body = if poison {
            format!("{process}-{sequence}{POISON_MARKER}")
        } else {
            format!("{process}-{sequence}")
        };
        let queue = rng.random_range(0..target.queues);
        let attempts = if idempotent {
            1 + IDEMPOTENT_RETRIES
        } else {
            1
        };
        for attempt in 0..attempts {
            let node = ids[rng.random_range(0..ids.len())];
            let mut value = SendValue {
                body: body.clone(),
                queue,
                node,
                producer_id: idempotent.then(|| process.clone()),
                sequence: idempotent.then_some(sequence),
                ..SendValue::default()
            };
            target
                .recorder
                .record(&process, Kind::Invoke, Body::Send(value.clone()));
            let mut message = serde_json::json!({"body": body, "queue_id": queue});
            if idempotent {
                message["producer_id"] = process.clone().into();
                message["sequence"] = sequence.into();
            }
            let answer = http
                .post(format!(
                    "{}/v1/topics/{TOPIC}/messages",
                    target.nodes[&node]
                ))
                .json(&serde_json::json!({"messages": [message]}))
                .send()
                .await;
            let (kind, retry) = match classify::<SendAnswer>(answer).await {
                Outcome::Ok(answer) => match answer.results.first() {
                    Some(r) if r.queue_id == queue => {
                        value.offset = Some(r.queue_offset);
                        (Kind::Ok, false)
                    }
                    Some(r) => {
                        value.offset = Some(r.queue_offset);
                        value.error = Some(format!("stored in queue {} not {queue}", r.queue_id));
                        (Kind::Ok, false)
                    }
                    None => {
                        value.error = Some("answer without results".into());
                        (Kind::Info, true)
                    }
                },
                Outcome::Fail(e) => {
                    value.error = Some(e);
                    (Kind::Fail, false)
                }
                Outcome::Unknown(e) => {
                    value.error = Some(e);
                    (Kind::Info, true)
                }
            };
            target.recorder.record(&process, kind, Body::Send(value));
            if !retry || attempt + 1 == attempts || *stop.borrow() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Pulls one queue until told to stop, or until it reached the drain target.
/// Returns whether it reached the target.
async fn consume(
    target: Arc<Target>,
    queue: u32,
    seed: u64,
    drain: watch::Receiver<Option<BTreeMap<u32, u64>>>,
    stop: watch::Receiver<bool>,
) -> bool {
    let process = format!("c{queue}");
    let mut rng = StdRng::seed_from_u64(seed);
    let http = client(&target, Duration::from_secs(4));
    let ids: Vec<u64> = target.nodes.keys().copied().collect();
    let mut node = ids[rng.random_range(0..ids.len())];
    let mut position: u64 = 0;
    let mut committed: u64 = 0;
    let mut last_offsets_read = Instant::now();
    loop {
        if *stop.borrow() {
            return false;
        }
        let goal = drain
            .borrow()
            .as_ref()
            .map(|ends| ends.get(&queue).copied().unwrap_or(0));
        if goal.is_some_and(|goal| position >= goal && committed >= position) {
            return true;
        }
        let mut value = PollValue {
            queue,
            node,
            from: position,
            ..PollValue::default()
        };
        target
            .recorder
            .record(&process, Kind::Invoke, Body::Poll(value.clone()));
        let answer = http
            .get(format!(
                "{}/v1/topics/{TOPIC}/queues/{queue}/messages?offset={position}&max_messages=64&max_wait_ms=500",
                target.nodes[&node]
            ))
            .send()
            .await;
        let mut switch_node = false;
        match classify::<PullAnswer>(answer).await {
            Outcome::Ok(answer) => {
                value.status = Some(answer.status.clone());
                value.next = Some(answer.next_offset);
                value.messages = answer
                    .messages
                    .into_iter()
                    .map(|m| (m.queue_offset, m.body()))
                    .collect();
                target
                    .recorder
                    .record(&process, Kind::Ok, Body::Poll(value.clone()));
                match answer.status.as_str() {
                    "FOUND" | "NO_MATCHED_MSG" => position = position.max(answer.next_offset),
                    // This node has applied less than we read elsewhere: try another.
                    "OFFSET_OVERFLOW" => switch_node = true,
                    "OFFSET_TOO_SMALL" => position = answer.min_offset,
                    _ => {
                        if answer.max_offset < position {
                            switch_node = true;
                        }
                    }
                }
            }
            Outcome::Fail(e) | Outcome::Unknown(e) => {
                value.error = Some(e);
                target
                    .recorder
                    .record(&process, Kind::Fail, Body::Poll(value));
                switch_node = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if switch_node {
            node = ids[rng.random_range(0..ids.len())];
        }
        if position > committed {
            let commit_node = ids[rng.random_range(0..ids.len())];
            if let Some(stored) =
                commit(&target, &http, &process, queue, commit_node, position).await
            {
                committed = committed.max(stored.min(position));
            }
        }
        if last_offsets_read.elapsed() > Duration::from_secs(2) {
            last_offsets_read = Instant::now();
            let read_node = ids[rng.random_range(0..ids.len())];
            read_offsets(&target, &http, &process, read_node, false).await;
        }
    }
}

async fn commit(
    target: &Target,
    http: &reqwest::Client,
    process: &str,
    queue: u32,
    node: u64,
    offset: u64,
) -> Option<u64> {
    let mut value = CommitValue {
        group: GROUP.into(),
        queue,
        node,
        offset,
        error: None,
    };
    target
        .recorder
        .record(process, Kind::Invoke, Body::Commit(value.clone()));
    let answer = http
        .put(format!(
            "{}/v1/groups/{GROUP}/offsets/{TOPIC}/{queue}",
            target.nodes[&node]
        ))
        .json(&serde_json::json!({"offset": offset}))
        .send()
        .await;
    match classify::<CommitAnswer>(answer).await {
        Outcome::Ok(answer) => {
            value.offset = answer.offset;
            target
                .recorder
                .record(process, Kind::Ok, Body::Commit(value));
            Some(answer.offset)
        }
        Outcome::Fail(e) => {
            value.error = Some(e);
            target
                .recorder
                .record(process, Kind::Fail, Body::Commit(value));
            None
        }
        Outcome::Unknown(e) => {
            value.error = Some(e);
            target
                .recorder
                .record(process, Kind::Info, Body::Commit(value));
            None
        }
    }
}

/// Reads the group's committed offsets on one node; records and returns them.
pub async fn read_offsets(
    target: &Target,
    http: &reqwest::Client,
    process: &str,
    node: u64,
    is_final: bool,
) -> Option<BTreeMap<u32, u64>> {
    let mut value = ReadOffsetsValue {
        group: GROUP.into(),
        node,
        is_final,
        ..ReadOffsetsValue::default()
    };
    target
        .recorder
        .record(process, Kind::Invoke, Body::ReadOffsets(value.clone()));
    let answer = http
        .get(format!(
            "{}/v1/groups/{GROUP}/offsets?topic={TOPIC}",
            target.nodes[&node]
        ))
        .send()
        .await;
    match classify::<OffsetsAnswer>(answer).await {
        Outcome::Ok(answer) => {
            value.offsets = answer
                .offsets
                .into_iter()
                .filter(|o| o.topic == TOPIC)
                .map(|o| (o.queue_id, o.offset))
                .collect();
            target
                .recorder
                .record(process, Kind::Ok, Body::ReadOffsets(value.clone()));
            Some(value.offsets)
        }
        Outcome::Fail(e) | Outcome::Unknown(e) => {
            value.error = Some(e);
            target
                .recorder
                .record(process, Kind::Fail, Body::ReadOffsets(value));
            None
        }
    }
}

/// Reads a node's whole local copy of one queue and records it.
///
/// # Errors
/// A pull failed three times in a row.
pub async fn final_read(target: &Target, node: u64, queue: u32) -> anyhow::Result<FinalReadValue> {
    let http = client(target, Duration::from_secs(10));
    let mut copy = FinalReadValue {
        queue,
        node,
        ..FinalReadValue::default()
    };
    let mut offset = 0;
    let mut failures = 0;
    loop {
        let answer = http
            .get(format!(
                "{}/v1/topics/{TOPIC}/queues/{queue}/messages?offset={offset}&max_messages=1024",
                target.nodes[&node]
            ))
            .send()
            .await;
        let answer: PullAnswer = match classify(answer).await {
            Outcome::Ok(answer) => answer,
            Outcome::Fail(e) | Outcome::Unknown(e) => {
                failures += 1;
                if failures >= 3 {
                    anyhow::bail!("final read of node {node} queue {queue} at {offset}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if offset == 0 {
            copy.min_offset = answer.min_offset;
            if answer.status == "OFFSET_TOO_SMALL" {
                offset = answer.min_offset;
                continue;
            }
        }
        copy.max_offset = answer.max_offset;
        let got = answer.messages.len();
        copy.messages.extend(
            answer
                .messages
                .into_iter()
                .map(|m| (m.queue_offset, m.body())),
        );
        if got == 0 || answer.next_offset >= answer.max_offset || answer.next_offset <= offset {
            break;
        }
        offset = answer.next_offset;
    }
    target
        .recorder
        .record("final", Kind::Ok, Body::FinalRead(copy.clone()));
    Ok(copy)
}
