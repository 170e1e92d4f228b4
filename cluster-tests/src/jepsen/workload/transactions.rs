//! The transactions workload: transactional messages (shared/API.md
//! "Transactional messages") sent, committed, rolled back and abandoned while the
//! nemesis runs, and a check responder answering the broker's checks.
//!
//! Producers `p0..` each open one transaction per tick: a transactional send of
//! 1–3 messages with unique bodies `{tx}.{i}` (also their key) to random queues
//! of the test topic, through a random node. Before sending, the producer draws
//! (seeded) what it will do: commit (60 %), roll back (25 %) or abandon it
//! (15 %, never resolved by the producer). The decision is in the send's invoke,
//! so it is in the history before any resolution. A commit or rollback is
//! retried on the next node until a definite answer (200, 409, 404) or
//! [`RESOLVE_DEADLINE`]; every attempt is recorded. A send whose answer was lost
//! is never retried (a second send would be a second transaction with the same
//! bodies): the transaction it may have opened is left to the checks.
//!
//! Every message carries, as properties, its transaction's name
//! ([`PROPERTY_TX`]) and the answer a check responder gives
//! ([`PROPERTY_CHECK_ANSWER`]): the producer's own decision for the ones it
//! resolves, and for abandoned ones commit, rollback or `ignore` (no answer, so
//! the broker rolls it back after `transaction.max_checks` offers). A responder
//! therefore decides from the message content alone, whether the producer ever
//! learned the transaction id or not, and always as the producer would.
//!
//! Check responders `k0..` long-poll the producer group's checks from random
//! nodes (any node forwards to the leader) and answer each offer by that rule.
//!
//! After the workload, once every node reports no open transaction
//! (`broker_transactions_open`), [`Transactions::probe`] rolls back every
//! transaction id the workload learned: nothing is open any more, so the answers
//! only say how each one ended (200 ROLLED_BACK with `by_timeout`, or 409: it was
//! committed). The probe's attempts are recorded like the others, so the checker
//! holds the final read to every known transaction's outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_proto::api::{MessageInput, MessageView, SendRequest, SendResponse};
use broker_proto::transaction::{
    is_transaction_id, TransactionChecksResponse, TransactionInput, TransactionResolution,
    MAX_CHECK_WAIT_MS,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{classify, client, ErrorAnswer, Outcome, Target, SEND_TIMEOUT, TOPIC};
use crate::jepsen::history::{
    Body, CheckAnswer, Kind, ResolveSource, TxnAction, TxnCheckValue, TxnCheckedMessage,
    TxnChecksValue, TxnDecision, TxnMessageValue, TxnResolveValue, TxnSendValue,
};

/// The producer group every transaction belongs to.
pub const PRODUCER_GROUP: &str = "jepsen-producers";
/// Property of every message: its transaction's name (`p3-17`).
pub const PROPERTY_TX: &str = "jepsen-tx";
/// Property of every message: what a check responder answers
/// ([`CheckAnswer::name`]).
pub const PROPERTY_CHECK_ANSWER: &str = "jepsen-check-answer";

/// How long one commit or rollback attempt waits for its answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a producer keeps retrying a resolution without a definite answer;
/// after it, the checks resolve the transaction the same way.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(15);
/// How long a responder retries its answer to an offer: an offer it could not
/// answer is made again at the next interval.
const CHECK_RESOLVE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the probe retries one transaction.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Concurrent probes.
const PROBE_WORKERS: usize = 8;
/// The long poll of the checks.
const CHECK_WAIT_MS: u64 = 2_000;
const _: () = assert!(CHECK_WAIT_MS <= MAX_CHECK_WAIT_MS);

/// The transactions workload's settings.
#[derive(Clone, Copy, Debug)]
pub struct TransactionLoad {
    /// Concurrent check responders.
    pub responders: usize,
    /// The nodes' `transaction.check_after`, `check_interval` and `max_checks`
    /// (short, so abandoned transactions are checked and timed out in a run).
    pub check_after: Duration,
    pub check_interval: Duration,
    pub max_checks: u32,
}

impl Default for TransactionLoad {
    fn default() -> Self {
        Self {
            responders: 2,
            check_after: Duration::from_secs(2),
            check_interval: Duration::from_secs(1),
            max_checks: 5,
        }
    }
}

impl TransactionLoad {
    /// Longest a transaction stays open while its group has a leader: its last
    /// check is due `check_after + (max_checks - 1) × check_interval` after it
    /// was stored, and the rollback comes one interval later.
    pub fn longest_open(&self) -> Duration {
        self.check_after + self.check_interval * self.max_checks
    }

    /// The nodes' environment for these settings.
    pub fn node_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "BROKER_TRANSACTION_CHECK_AFTER".into(),
                format!("{}ms", self.check_after.as_millis()),
            ),
            (
                "BROKER_TRANSACTION_CHECK_INTERVAL".into(),
                format!("{}ms", self.check_interval.as_millis()),
            ),
            (
                "BROKER_TRANSACTION_MAX_CHECKS".into(),
                self.max_checks.to_string(),
            ),
        ]
    }
}

/// Draws what a producer does with a transaction, and what the checks answer.
fn draw(rng: &mut StdRng) -> (TxnDecision, CheckAnswer) {
    let x: f64 = rng.random();
    if x < 0.60 {
        (TxnDecision::Commit, CheckAnswer::Commit)
    } else if x < 0.85 {
        (TxnDecision::Rollback, CheckAnswer::Rollback)
    } else if x < 0.90 {
        (TxnDecision::Abandon, CheckAnswer::Commit)
    } else if x < 0.95 {
        (TxnDecision::Abandon, CheckAnswer::Rollback)
    } else {
        (TxnDecision::Abandon, CheckAnswer::Ignore)
    }
}

/// Transaction ids the workload learned (from send answers and checks), with
/// their names: the probe's list.
#[derive(Default)]
struct Known(Mutex<BTreeMap<String, String>>);

impl Known {
    // A std Mutex: held only to insert or copy, never across an await.
    fn insert(&self, id: &str, tx: &str) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = known.entry(id.to_string()).or_default();
        if entry.is_empty() {
            *entry = tx.to_string();
        }
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The transactions workload's own tasks: responders, and what they learned.
pub(super) struct Transactions {
    target: Option<Arc<Target>>,
    known: Arc<Known>,
    stop_responders: watch::Sender<bool>,
    responders: Vec<JoinHandle<()>>,
}

impl Transactions {
    pub(super) fn none() -> Self {
        Self {
            target: None,
            known: Arc::default(),
            stop_responders: watch::channel(true).0,
            responders: Vec::new(),
        }
    }

    /// Starts `producers` producers (stopped by `stop`) and the responders.
    pub(super) fn start(
        target: &Arc<Target>,
        load: TransactionLoad,
        producers: usize,
        interval: Duration,
        seed: u64,
        stop: &watch::Receiver<bool>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let known = Arc::new(Known::default());
        let producers = (0..producers)
            .map(|index| {
                let producer = Producer {
                    target: Arc::clone(target),
                    process: format!("p{index}"),
                    known: Arc::clone(&known),
                };
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
                tokio::spawn(producer.run(interval, seed, stop.clone()))
            })
            .collect();
        let (stop_responders, stopped) = watch::channel(false);
        let responders = (0..load.responders.max(1))
            .map(|index| {
                let responder = Responder {
                    target: Arc::clone(target),
                    process: format!("k{index}"),
                    known: Arc::clone(&known),
                };
                let seed = seed.wrapping_mul(104_729).wrapping_add(3000 + index as u64);
                tokio::spawn(responder.run(seed, stopped.clone()))
            })
            .collect();
        (
            Self {
                target: Some(Arc::clone(target)),
                known,
                stop_responders,
                responders,
            },
            producers,
        )
    }

    /// Stops the responders and waits for their last calls.
    pub(super) async fn stop_responders(&mut self) {
        let _ = self.stop_responders.send(true);
        for task in self.responders.drain(..) {
            let _ = task.await;
        }
    }

    /// Rolls back every known transaction (see the module's documentation);
    /// answers how many were probed.
    pub(super) async fn probe(&self) -> usize {
        let Some(target) = &self.target else {
            return 0;
        };
        let known = self.known.snapshot();
        let http = client(target, RESOLVE_TIMEOUT);
        let workers = (0..PROBE_WORKERS).map(|w| {
            let mine: Vec<&(String, String)> =
                known.iter().skip(w).step_by(PROBE_WORKERS).collect();
            let resolver = Resolver {
                target,
                http: &http,
                process: format!("v{w}"),
                source: ResolveSource::Probe,
            };
            async move {
                for (i, (id, tx)) in mine.into_iter().enumerate() {
                    resolver
                        .resolve(id, tx, TxnAction::Rollback, PROBE_DEADLINE, w + i)
                        .await;
                }
            }
        });
        futures::future::join_all(workers).await;
        known.len()
    }
}

struct Producer {
    target: Arc<Target>,
    process: String,
    known: Arc<Known>,
}

impl Producer {
    async fn run(self, interval: Duration, seed: u64, stop: watch::Receiver<bool>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let http = client(&self.target, SEND_TIMEOUT);
        let resolve_http = client(&self.target, RESOLVE_TIMEOUT);
        let resolver = Resolver {
            target: &self.target,
            http: &resolve_http,
            process: self.process.clone(),
            source: ResolveSource::Producer,
        };
        let ids: Vec<u64> = self.target.nodes.keys().copied().collect();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Spread the producers' first ticks over one interval.
        tokio::time::sleep(interval.mul_f64(rng.random::<f64>())).await;
        let mut number: u64 = 0;
        while !*stop.borrow() {
            ticker.tick().await;
            number += 1;
            let tx = format!("{}-{number}", self.process);
            let count = rng.random_range(1..=3usize);
            let messages: Vec<TxnMessageValue> = (0..count)
                .map(|i| TxnMessageValue {
                    body: format!("{tx}.{i}"),
                    queue: rng.random_range(0..self.target.queues),
                })
                .collect();
            let (decision, check_answer) = draw(&mut rng);
            let node_index = rng.random_range(0..ids.len());
            let Some(id) = self
                .send(
                    &http,
                    &tx,
                    ids[node_index],
                    decision,
                    check_answer,
                    messages,
                )
                .await
            else {
                continue;
            };
            self.known.insert(&id, &tx);
            let action = match decision {
                TxnDecision::Commit => TxnAction::Commit,
                TxnDecision::Rollback => TxnAction::Rollback,
                TxnDecision::Abandon => continue,
            };
            resolver
                .resolve(&id, &tx, action, RESOLVE_DEADLINE, node_index)
                .await;
        }
    }

    /// One transactional send, recorded; the transaction id when answered.
    async fn send(
        &self,
        http: &reqwest::Client,
        tx: &str,
        node: u64,
        decision: TxnDecision,
        check_answer: CheckAnswer,
        messages: Vec<TxnMessageValue>,
    ) -> Option<String> {
        let mut value = TxnSendValue {
            tx: tx.to_string(),
            producer_group: PRODUCER_GROUP.into(),
            topic: TOPIC.into(),
            node,
            decision,
            check_answer,
            messages,
            transaction_id: None,
            error: None,
        };
        let recorder = &self.target.recorder;
        recorder.record(&self.process, Kind::Invoke, Body::TxnSend(value.clone()));
        let request = SendRequest {
            messages: value
                .messages
                .iter()
                .map(|m| MessageInput {
                    body: Some(m.body.clone()),
                    keys: vec![m.body.clone()],
                    properties: BTreeMap::from([
                        (PROPERTY_TX.to_string(), tx.to_string()),
                        (
                            PROPERTY_CHECK_ANSWER.to_string(),
                            check_answer.name().to_string(),
                        ),
                    ]),
                    queue_id: Some(m.queue),
                    ..MessageInput::default()
                })
                .collect(),
            transaction: Some(TransactionInput {
                producer_group: PRODUCER_GROUP.into(),
            }),
        };
        let answer = http
            .post(format!(
                "{}/v1/topics/{TOPIC}/messages",
                self.target.nodes[&node]
            ))
            .json(&request)
            .send()
            .await;
        let (kind, answer) = split(classify::<SendResponse>(answer).await, &mut value.error);
        let id = answer.and_then(|answer| {
            // An answer without a well-formed id, or with another count of
            // results, is recorded as it came: the checker flags it.
            let id = answer
                .transaction_id
                .clone()
                .filter(|id| is_transaction_id(id));
            if id.is_none() || answer.results.len() != value.messages.len() {
                value.error = Some(format!(
                    "answer with transaction_id {:?} and {} results for {} messages",
                    answer.transaction_id,
                    answer.results.len(),
                    value.messages.len()
                ));
            }
            value.transaction_id = answer.transaction_id;
            id
        });
        recorder.record(&self.process, kind, Body::TxnSend(value));
        id
    }
}

/// What a definite answer to a resolution said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    /// 200, with this status.
    Resolved,
    /// 409 CONFLICT: resolved the other way.
    Conflict,
    /// 404 TRANSACTION_NOT_FOUND.
    NotFound,
    /// Another definite refusal (400, 403, …): retrying would not help.
    Refused,
}

/// Commits or rolls back transactions for one process, recording every attempt.
struct Resolver<'a> {
    target: &'a Target,
    http: &'a reqwest::Client,
    process: String,
    source: ResolveSource,
}

impl Resolver<'_> {
    /// Resolves `id` by `action` on the nodes in turn from the `start`-th, until
    /// a definite answer or `deadline` passed.
    async fn resolve(
        &self,
        id: &str,
        tx: &str,
        action: TxnAction,
        deadline: Duration,
        start: usize,
    ) -> Option<Answered> {
        let ids: Vec<u64> = self.target.nodes.keys().copied().collect();
        let give_up = Instant::now() + deadline;
        for attempt in 1u32.. {
            let node = ids[(start + attempt as usize - 1) % ids.len()];
            let (answered, stop) = self.attempt(id, tx, action, node, attempt).await;
            if let Some(answered) = answered {
                return Some(answered);
            }
            if stop || Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        None
    }

    /// One attempt, recorded: its definite answer, if any, and whether to stop.
    async fn attempt(
        &self,
        id: &str,
        tx: &str,
        action: TxnAction,
        node: u64,
        attempt: u32,
    ) -> (Option<Answered>, bool) {
        let mut value = TxnResolveValue {
            transaction_id: id.to_string(),
            tx: tx.to_string(),
            action,
            source: self.source,
            node,
            attempt,
            ..TxnResolveValue::default()
        };
        let recorder = &self.target.recorder;
        recorder.record(&self.process, Kind::Invoke, Body::TxnResolve(value.clone()));
        let answer = self
            .http
            .post(format!(
                "{}/v1/transactions/{id}/{}",
                self.target.nodes[&node],
                action.name()
            ))
            .send()
            .await;
        let (kind, answered) = match answer {
            Err(e) if e.is_connect() => {
                value.error = Some(format!("connect: {e}"));
                (Kind::Fail, None)
            }
            Err(e) if e.is_timeout() => {
                value.error = Some("timeout".into());
                (Kind::Info, None)
            }
            Err(e) => {
                value.error = Some(e.to_string());
                (Kind::Info, None)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                match status {
                    200 => match serde_json::from_str::<TransactionResolution>(&text) {
                        Ok(r) => {
                            value.status = Some(r.status);
                            value.by_timeout = Some(r.by_timeout);
                            value.messages = Some(r.messages);
                            value.topic = Some(r.topic);
                            value.answered_id = Some(r.transaction_id);
                            (Kind::Ok, Some(Answered::Resolved))
                        }
                        Err(e) => {
                            value.error = Some(format!("unparseable answer ({e}): {text}"));
                            (Kind::Info, None)
                        }
                    },
                    _ => {
                        let error = serde_json::from_str::<ErrorAnswer>(&text).ok();
                        value.http_status = Some(status);
                        value.code = error.as_ref().map(|e| e.code.clone());
                        value.error = Some(error.map_or_else(
                            || text.chars().take(200).collect(),
                            |e| format!("{} {}", e.code, e.message),
                        ));
                        match status {
                            409 => (Kind::Fail, Some(Answered::Conflict)),
                            404 => (Kind::Fail, Some(Answered::NotFound)),
                            // Not leader, timeouts, too many requests, server
                            // errors: maybe applied; ask again.
                            408 | 421 | 429 => (Kind::Info, None),
                            s if s >= 500 => (Kind::Info, None),
                            _ => (Kind::Fail, Some(Answered::Refused)),
                        }
                    }
                }
            }
        };
        recorder.record(&self.process, kind, Body::TxnResolve(value));
        let stop = answered == Some(Answered::Refused);
        (answered.filter(|a| *a != Answered::Refused), stop)
    }
}

struct Responder {
    target: Arc<Target>,
    process: String,
    known: Arc<Known>,
}

impl Responder {
    async fn run(self, seed: u64, stop: watch::Receiver<bool>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let long_poll = client(
            &self.target,
            Duration::from_millis(CHECK_WAIT_MS) + SEND_TIMEOUT,
        );
        let resolve_http = client(&self.target, RESOLVE_TIMEOUT);
        let resolver = Resolver {
            target: &self.target,
            http: &resolve_http,
            process: self.process.clone(),
            source: ResolveSource::Check,
        };
        let ids: Vec<u64> = self.target.nodes.keys().copied().collect();
        while !*stop.borrow() {
            let node_index = rng.random_range(0..ids.len());
            let Some(checks) = self.poll(&long_poll, ids[node_index]).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for check in checks {
                let tx = check
                    .messages
                    .iter()
                    .find_map(|m| m.tx.clone())
                    .unwrap_or_default();
                self.known.insert(&check.transaction_id, &tx);
                let action = match check.answer {
                    Some(CheckAnswer::Commit) => TxnAction::Commit,
                    Some(CheckAnswer::Rollback) => TxnAction::Rollback,
                    Some(CheckAnswer::Ignore) | None => continue,
                };
                resolver
                    .resolve(
                        &check.transaction_id,
                        &tx,
                        action,
                        CHECK_RESOLVE_DEADLINE,
                        node_index,
                    )
                    .await;
            }
        }
    }

    /// One long poll of the checks, recorded; the offers when answered.
    async fn poll(&self, http: &reqwest::Client, node: u64) -> Option<Vec<TxnCheckValue>> {
        let mut value = TxnChecksValue {
            producer_group: PRODUCER_GROUP.into(),
            node,
            max_wait_ms: CHECK_WAIT_MS,
            ..TxnChecksValue::default()
        };
        let recorder = &self.target.recorder;
        recorder.record(&self.process, Kind::Invoke, Body::TxnChecks(value.clone()));
        let answer = http
            .get(format!(
                "{}/v1/producer-groups/{PRODUCER_GROUP}/transaction-checks?max_wait_ms={CHECK_WAIT_MS}",
                self.target.nodes[&node]
            ))
            .send()
            .await;
        let (kind, answer) = split(
            classify::<TransactionChecksResponse>(answer).await,
            &mut value.error,
        );
        let checks = answer.map(|answer| {
            value.checks = answer
                .checks
                .into_iter()
                .map(|c| TxnCheckValue {
                    answer: rule(&c.messages),
                    transaction_id: c.transaction_id,
                    topic: c.topic,
                    check_count: c.check_count,
                    messages: c.messages.into_iter().map(checked_message).collect(),
                })
                .collect();
            value.checks.clone()
        });
        recorder.record(&self.process, kind, Body::TxnChecks(value));
        checks
    }
}

/// The history's kind of a classified answer, and the answer when there is one
/// (a failure's or unknown outcome's error goes to `error`).
fn split<T>(outcome: Outcome<T>, error: &mut Option<String>) -> (Kind, Option<T>) {
    match outcome {
        Outcome::Ok(answer) => (Kind::Ok, Some(answer)),
        Outcome::Fail(e) => {
            *error = Some(e);
            (Kind::Fail, None)
        }
        Outcome::Unknown(e) => {
            *error = Some(e);
            (Kind::Info, None)
        }
    }
}

/// The responder's rule: the answer every message of the transaction names;
/// none when they name none, several, or a word not in the rule.
fn rule(messages: &[MessageView]) -> Option<CheckAnswer> {
    let named: BTreeSet<Option<&str>> = messages
        .iter()
        .map(|m| m.properties.get(PROPERTY_CHECK_ANSWER).map(String::as_str))
        .collect();
    match named.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(word)] => CheckAnswer::parse(word),
        _ => None,
    }
}

fn checked_message(m: MessageView) -> TxnCheckedMessage {
    TxnCheckedMessage {
        body: m
            .body
            .or(m.body_base64.map(|b| format!("base64:{b}")))
            .unwrap_or_default(),
        topic: m.topic,
        queue: m.queue_id,
        tx: m.properties.get(PROPERTY_TX).cloned(),
        answer: m.properties.get(PROPERTY_CHECK_ANSWER).cloned(),
    }
}
