//! The recorded history: one JSON object per line, one line per operation event.
//!
//! Every client operation is recorded twice, Jepsen-style: an `invoke` line when it
//! starts and a completion line (`ok`, `fail` or `info`) when it ends, both with the
//! same `process`. A process has at most one operation in flight, so the checker
//! pairs an invocation with the next completion of the same process. `info` means
//! the outcome is unknown (timeout, connection lost after the request went out,
//! an error that does not prove the write was not applied); `fail` means it
//! certainly did not take effect (refused before it reached Raft).
//!
//! ```text
//! {"index":7,"time_ms":1520.3,"process":"p3","type":"invoke","f":"send","value":{"body":"p3-12","queue":1,"node":2,...}}
//! {"index":9,"time_ms":1531.9,"process":"p3","type":"ok","f":"send","value":{"body":"p3-12","queue":1,"offset":40,...}}
//! ```
//!
//! The nemesis records `invoke` when a fault starts and `ok` when it is healed,
//! under the process `nemesis`; final reads of every node's local copy are `ok`
//! lines of the process `final`.
//!
//! The receive workload (lease-based consumption) adds `receive`, `ack` and
//! `change_invisible` operations of the receivers `r0..`, and, from the process
//! `final`, one `receive_drain` line saying whether the final drain went quiet and
//! one `dlq_read` line per node with the group's whole dead-letter topic. A
//! receive's completion carries `unix_ms`, the wall clock when its answer came
//! back, because leases end at the broker's `invisible_until` (Unix ms); `time_ms`
//! is monotonic time since the start of the run and orders operations.
//!
//! The transactions workload adds `txn_send` (a transactional send of 1–3
//! messages; its invoke carries the producer's decision, recorded before any
//! resolution), `txn_resolve` (one commit or rollback attempt, from a producer,
//! a check responder, or the final probe), `txn_checks` (one long poll of the
//! producer group's transaction checks and what it offered) and, from the process
//! `final`, one `txn_settle` line saying whether every node's open transactions
//! reached zero once the faults were healed. A transaction is named by its
//! producer (`tx`, e.g. `p3-17`); its bodies are `{tx}.{i}`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    /// Unknown outcome.
    Info,
}

/// A send of one message with a unique body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendValue {
    pub body: String,
    pub queue: u32,
    /// The node the request went to.
    pub node: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The queue offset the broker answered (ok only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One pull of one queue from one node; `messages` are `[offset, body]` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollValue {
    pub queue: u32,
    pub node: u64,
    /// The offset asked for.
    pub from: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<(u64, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A consumer-group offset commit; `offset` is what the broker answered it stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitValue {
    pub group: String,
    pub queue: u32,
    pub node: u64,
    /// The offset asked for (invoke) or stored (ok).
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A read of a group's committed offsets on one node (its local, applied state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOffsetsValue {
    pub group: String,
    pub node: u64,
    /// Queue → committed offset, written as `[[queue, offset], …]`: JSON object
    /// keys are strings, which the flattened operation cannot turn back into numbers.
    #[serde(default, with = "pairs")]
    pub offsets: BTreeMap<u32, u64>,
    /// Whether this read is part of the final phase, after every fault healed and
    /// the nodes converged.
    #[serde(default)]
    pub is_final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        Ok(Vec::<(u32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

/// The whole local copy of one queue on one node, read after healing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReadValue {
    pub queue: u32,
    pub node: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<(u64, String)>,
}

/// A fault: `invoke` when injected, `ok` when healed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisValue {
    /// The nemesis kind (`kill`, `partition-leader`, …).
    pub fault: String,
    /// What exactly was done, for people.
    pub detail: String,
    /// Nodes whose process or disk the fault touched (their local state may lag
    /// after it: the checker resets per-node expectations for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<u64>,
}

/// A body ending with this marker is a poison message: the receive workload never
/// acks it (it nacks every delivery), so it must end in the dead-letter topic.
pub const POISON_MARKER: &str = "-poison";

/// Whether a body is a poison message ([`POISON_MARKER`]).
pub fn is_poison(body: &str) -> bool {
    body.ends_with(POISON_MARKER)
}

/// The wall clock in Unix milliseconds: the broker's `invisible_until` is on this
/// clock (client and broker run on one machine).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One message a receive delivered: the message, and the lease it came with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryValue {
    /// The producer's unique body: the message's identity in the checker.
    pub body: String,
    #[serde(default)]
    pub msg_id: String,
    pub topic: String,
    #[serde(default)]
    pub broker_group: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub receipt_handle: String,
    pub delivery_attempt: u32,
    /// Unix ms, the broker's clock.
    pub invisible_until: u64,
}

/// One receive of a topic for a consumer group, from one node. The invoke has no
/// messages; the `ok` completion has what was delivered (an `info` or `fail`
/// receive may have leased messages the history never learns of).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveValue {
    pub group: String,
    pub topic: String,
    pub node: u64,
    pub invisible_ms: u64,
    pub max_wait_ms: u64,
    /// Unix ms when this event was recorded (for the completion: after the answer
    /// was read, so not before the broker delivered).
    pub unix_ms: u64,
    /// Part of the final drain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<DeliveryValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer for one receipt handle of an ack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckStatusValue {
    pub receipt_handle: String,
    /// `OK`, `EXPIRED` or `INVALID`.
    pub status: String,
}

/// One ack of a batch of receipt handles; `results` only on `ok`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckValue {
    pub group: String,
    pub node: u64,
    pub receipt_handles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<AckStatusValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One change of a lease: `invisible_ms` 0 is a nack (the message goes back at
/// once); an expired handle is a `fail` with the `EXPIRED` error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibleValue {
    pub group: String,
    pub node: u64,
    pub receipt_handle: String,
    pub invisible_ms: u64,
    /// The handle of the new lease (ok only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_receipt_handle: Option<String>,
    /// The new lease's end, Unix ms (ok only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invisible_until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One message of a dead-letter topic, with the properties the broker set on it
/// (`ORIGIN_TOPIC`, `ORIGIN_QUEUE_ID`, `ORIGIN_QUEUE_OFFSET`, `ORIGIN_MESSAGE_ID`,
/// `CONSUMER_GROUP`, `DELIVERY_ATTEMPTS`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqMessageValue {
    pub queue: u32,
    pub offset: u64,
    #[serde(default)]
    pub msg_id: String,
    pub body: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// The whole dead-letter topic of a group as one node serves it, read after the
/// drain: `ok` when every queue was read to its end (a topic that does not exist
/// is an empty one), `fail` otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReadValue {
    pub group: String,
    /// The topic the group received from (what `ORIGIN_TOPIC` must say).
    pub source_topic: String,
    pub node: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<DlqMessageValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The end of the receive workload's final drain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveDrainValue {
    pub group: String,
    /// Receives went `quiet_ms` without delivering anything or failing: every
    /// lease taken before had ended, so every message not acked or dead-lettered
    /// would have been delivered again.
    pub complete: bool,
    pub quiet_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What a producer decided, before sending, to do with a transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnDecision {
    /// The producer commits it (retrying until a definite answer).
    #[default]
    Commit,
    /// The producer rolls it back.
    Rollback,
    /// The producer never resolves it: a check responder (or the broker's
    /// timeout) must.
    Abandon,
}

/// What a check responder answers when a transaction is offered to it; carried
/// by every message of the transaction (a property), so the responder decides
/// from the message content alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckAnswer {
    #[default]
    Commit,
    Rollback,
    /// No answer: after `transaction.max_checks` offers the broker rolls it back.
    Ignore,
}

impl CheckAnswer {
    pub fn name(self) -> &'static str {
        match self {
            CheckAnswer::Commit => "commit",
            CheckAnswer::Rollback => "rollback",
            CheckAnswer::Ignore => "ignore",
        }
    }

    /// Reads [`CheckAnswer::name`] back.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "commit" => Some(CheckAnswer::Commit),
            "rollback" => Some(CheckAnswer::Rollback),
            "ignore" => Some(CheckAnswer::Ignore),
            _ => None,
        }
    }
}

/// A resolution request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnAction {
    #[default]
    Commit,
    Rollback,
}

impl TxnAction {
    /// The path word (`/v1/transactions/{id}/{word}`).
    pub fn name(self) -> &'static str {
        match self {
            TxnAction::Commit => "commit",
            TxnAction::Rollback => "rollback",
        }
    }
}

/// Who asked for a resolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveSource {
    /// The producer that opened the transaction, as it decided.
    #[default]
    Producer,
    /// A check responder, answering an offer by the rule in the messages.
    Check,
    /// The final probe: a rollback of every known transaction once none is open,
    /// to learn how each ended (200 says rolled back, and whether by timeout; 409
    /// says committed).
    Probe,
}

/// One message of a transaction: its unique body and the queue it is sent to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMessageValue {
    pub body: String,
    pub queue: u32,
}

/// A transactional send: one batch stored as one transaction's half messages.
/// The invoke carries the decision; the `ok` completion the transaction id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnSendValue {
    /// The producer's name of the transaction (`p3-17`).
    pub tx: String,
    pub producer_group: String,
    pub topic: String,
    pub node: u64,
    pub decision: TxnDecision,
    pub check_answer: CheckAnswer,
    pub messages: Vec<TxnMessageValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One commit or rollback attempt. `ok` is a 200 (with the resolution it
/// answered); `fail` is a definite refusal (`http_status` 409 CONFLICT: resolved
/// the other way; 404 TRANSACTION_NOT_FOUND; or a request that never reached the
/// broker); `info` an unknown outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResolveValue {
    pub transaction_id: String,
    /// The transaction's name when the caller knows it (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tx: String,
    pub action: TxnAction,
    pub source: ResolveSource,
    pub node: u64,
    /// 1 for the first attempt of this resolution, 2.. for its retries.
    pub attempt: u32,
    /// The answer's `status` (`COMMITTED`, `ROLLED_BACK`), `by_timeout`, message
    /// count, topic and transaction id (ok only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_timeout: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_id: Option<String>,
    /// The HTTP status of a refusal, and its error `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One message of an offered transaction, as the check showed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheckedMessage {
    pub body: String,
    pub topic: String,
    pub queue: u32,
    /// The `jepsen-tx` and `jepsen-check-answer` properties it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// One offered transaction of a checks answer, and what the responder decided
/// to answer (`None`: the messages did not say one answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheckValue {
    pub transaction_id: String,
    pub topic: String,
    pub check_count: u32,
    pub messages: Vec<TxnCheckedMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<CheckAnswer>,
}

/// One long poll of a producer group's transaction checks; `checks` only on `ok`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnChecksValue {
    pub producer_group: String,
    pub node: u64,
    pub max_wait_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<TxnCheckValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The end of the wait for open transactions after the final heal: every node's
/// `broker_transactions_open` (`None`: the node did not answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnSettleValue {
    /// Every node answered 0 (twice in a row).
    pub settled: bool,
    pub waited_ms: u64,
    /// `[[node, open], …]` at the end of the wait.
    pub open: Vec<(u64, Option<u64>)>,
}

/// The operation, by function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "snake_case")]
pub enum Body {
    Send(SendValue),
    Poll(PollValue),
    Commit(CommitValue),
    ReadOffsets(ReadOffsetsValue),
    FinalRead(FinalReadValue),
    Nemesis(NemesisValue),
    Receive(ReceiveValue),
    Ack(AckValue),
    ChangeInvisible(ChangeInvisibleValue),
    DlqRead(DlqReadValue),
    ReceiveDrain(ReceiveDrainValue),
    TxnSend(TxnSendValue),
    TxnResolve(TxnResolveValue),
    TxnChecks(TxnChecksValue),
    TxnSettle(TxnSettleValue),
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Milliseconds since the start of the run, microsecond precision.
    pub time_ms: OrderedMs,
    pub process: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(flatten)]
    pub body: Body,
}

/// Milliseconds as a float that compares totally (never NaN: it comes from an
/// `Instant` difference or a test's literal).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderedMs(pub f64);

impl Eq for OrderedMs {}

/// Appends events to a JSON-lines file and keeps them in memory for the checker.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
    start: Instant,
}

struct RecorderInner {
    file: BufWriter<File>,
    ops: Vec<Op>,
    write_error: Option<String>,
}

impl Recorder {
    /// Creates (truncates) the history file.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("creating history {}", path.display()))?;
        Ok(Self {
            inner: Arc::new(Mutex::new(RecorderInner {
                file: BufWriter::new(file),
                ops: Vec::new(),
                write_error: None,
            })),
            start: Instant::now(),
        })
    }

    /// Milliseconds since the recorder was created.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Records one event now.
    pub fn record(&self, process: &str, kind: Kind, body: Body) {
        // A std Mutex: held only to append one line, never across an await.
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let op = Op {
            index: inner.ops.len() as u64,
            time_ms: OrderedMs((self.now_ms() * 1000.0).round() / 1000.0),
            process: process.to_string(),
            kind,
            body,
        };
        let line = serde_json::to_string(&op).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if let Err(e) = writeln!(inner.file, "{line}") {
            inner.write_error.get_or_insert_with(|| e.to_string());
        }
        inner.ops.push(op);
    }

    /// Flushes the file and returns every event recorded.
    ///
    /// # Errors
    /// A write to the history file failed at any point.
    pub fn finish(&self) -> Result<Vec<Op>> {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.file.flush().context("flushing the history")?;
        if let Some(e) = &inner.write_error {
            anyhow::bail!("writing the history failed: {e}");
        }
        Ok(inner.ops.clone())
    }
}

/// Reads a history file written by [`Recorder`] (or by hand).
///
/// # Errors
/// The file cannot be read or a line is not an operation.
pub fn load(path: &Path) -> Result<Vec<Op>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ops = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an operation", path.display(), number + 1))?;
        ops.push(op);
    }
    Ok(ops)
}
