//! [`TransactionProducer`]: RocketMQ's `TransactionMQProducer` over HTTP — the
//! "local transaction + message" pattern (shared/API.md "Transactional messages").
//!
//! # One transaction
//! [`TransactionProducer::send`] stores a batch as half messages (invisible to
//! consumers), runs the caller's local transaction (e.g. the database write of an
//! order) with the broker's answer in hand, and resolves what that returns:
//! [`LocalTransactionState::Commit`] makes the batch visible exactly once,
//! [`LocalTransactionState::Rollback`] discards it, and
//! [`LocalTransactionState::Unknown`] leaves it open for the check below (a local
//! transaction still running, or whose outcome the caller cannot tell yet).
//!
//! # Checks
//! A transaction its producer never resolves — the producer crashed after its
//! local transaction, a resolution failed, or it answered `Unknown` — stays open.
//! After `transaction.check_after` the broker offers it to its producer group
//! through a long poll (an HTTP broker cannot call its clients), again every
//! `transaction.check_interval`, and rolls it back after `transaction.max_checks`
//! offers. A started producer polls those checks of every broker group in the
//! cluster (as `/v1/cluster` lists them; a caller who may not read that, not
//! being a cluster admin, polls the groups that serve the topics it sends to and
//! [`TransactionProducerOptions::check_topics`]), calls the `checker` callback with each offered transaction (its
//! messages, with the properties and keys they were sent with: look the local
//! transaction up by them), and resolves what the callback answers. Any member of
//! the producer group can answer any check, so the callback must decide from the
//! messages and the local state alone, never from the sending process's memory.
//!
//! # Failures
//! * A send refused before it could open a transaction (`NOT_LEADER` after the
//!   client's own leader following, a refused connection) is retried. A send whose
//!   outcome is unknown (a timeout, `UNAVAILABLE`) is not: it may have opened a
//!   transaction that no caller knows the id of, and resending would open a second.
//!   The error is returned before the local transaction runs; if the first attempt
//!   did store the batch, the check offers it, and the callback finds no local
//!   transaction for it and answers `Rollback`.
//! * A commit or rollback is safe to repeat (a repeat answers as the first did),
//!   so it is retried on every retryable or outcome-unknown error. One that still
//!   fails is reported in [`TransactionSendResult::resolve_error`], not as an
//!   error of the send: the local transaction has happened, and the check will
//!   settle the transaction the same way.
//! * `CONFLICT` on a commit means the broker rolled the transaction back (after
//!   its last check went unanswered): the batch will never be visible.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info_span, warn, Instrument};

use super::broker_client::BrokerClient;
use super::error::{ClientError, Result};
use crate::api::{MessageInput, SendResponse};
use broker_proto::transaction::{
    TransactionCheck, TransactionResolution, MAX_CHECK_WAIT_MS, STATUS_COMMITTED,
};

/// What a local transaction (or a check of one) decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LocalTransactionState {
    /// It happened: make the messages visible.
    Commit,
    /// It did not happen: discard the messages.
    Rollback,
    /// Not known yet: leave the transaction open; the broker asks again after
    /// `transaction.check_interval` (and rolls it back after its last check).
    Unknown,
}

/// How a [`TransactionProducer`] sends, resolves and polls.
#[derive(Clone, Debug)]
pub struct TransactionProducerOptions {
    /// The producer group whose checks this producer answers.
    pub producer_group: String,
    /// Further attempts of a send refused before it opened a transaction, and of
    /// a commit or rollback.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_initial: Duration,
    /// Longest wait between attempts (also after a failed check poll).
    pub backoff_max: Duration,
    /// How long one check poll waits for a check (at most 30 s).
    pub check_wait: Duration,
    /// Checks answered at the same time (callbacks running at once).
    pub check_concurrency: usize,
    /// How often the broker groups to poll are looked up again.
    pub groups_refresh: Duration,
    /// Topics whose transactions this producer answers checks for besides those
    /// it sends to: a restarted member of the group names the topics its
    /// predecessor sent to. Only matters to a caller that is not a cluster
    /// admin, in a cluster of several broker groups (module documentation).
    pub check_topics: Vec<String>,
}

impl TransactionProducerOptions {
    /// The defaults, for `producer_group`.
    pub fn new(producer_group: &str) -> Self {
        Self {
            producer_group: producer_group.to_string(),
            retries: 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            check_wait: Duration::from_secs(20),
            check_concurrency: 4,
            groups_refresh: Duration::from_secs(30),
            check_topics: Vec::new(),
        }
    }

    /// Checks the options against the contract's bounds.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] naming the first option out of bounds.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(ClientError::InvalidArgument(what));
        if self.producer_group.is_empty() {
            return invalid("producer_group must not be empty".into());
        }
        if self.check_wait > Duration::from_millis(MAX_CHECK_WAIT_MS) {
            return invalid(format!("check_wait must be at most {MAX_CHECK_WAIT_MS} ms"));
        }
        if self.check_concurrency == 0 {
            return invalid("check_concurrency must be at least 1".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid("backoff_initial must be above 0 and at most backoff_max".into());
        }
        if self.groups_refresh < Duration::from_millis(100) {
            return invalid("groups_refresh must be at least 100 ms".into());
        }
        Ok(())
    }
}

/// One transaction sent by [`TransactionProducer::send`].
#[derive(Debug)]
pub struct TransactionSendResult {
    /// The broker's answer to the send (the half messages' results).
    pub sent: SendResponse,
    /// The transaction's id.
    pub transaction_id: String,
    /// What the local transaction returned.
    pub local_state: LocalTransactionState,
    /// The broker's answer to the commit or rollback; `None` when the local
    /// transaction answered `Unknown` or the resolution failed.
    pub resolution: Option<TransactionResolution>,
    /// Why the resolution failed, after its retries. The transaction stays open
    /// for the check, unless this is `CONFLICT` (see
    /// [`TransactionSendResult::is_committed`]).
    pub resolve_error: Option<ClientError>,
}

impl TransactionSendResult {
    /// Whether the broker confirmed the commit: the messages are visible.
    pub fn is_committed(&self) -> bool {
        self.resolution
            .as_ref()
            .is_some_and(|r| r.status == STATUS_COMMITTED)
    }
}

/// Counters of a transaction producer's work since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionProducerStats {
    /// Transactions opened (half messages stored).
    pub sent: u64,
    /// Sends that failed (after their retries).
    pub send_failed: u64,
    /// Resolutions the broker confirmed, by this producer's sends and checks.
    pub committed: u64,
    pub rolled_back: u64,
    /// Local transactions and checks that answered `Unknown`.
    pub left_open: u64,
    /// Resolutions that failed after their retries (`CONFLICT` included).
    pub resolve_failed: u64,
    /// Commits refused with `CONFLICT`: the broker had rolled them back.
    pub conflicts: u64,
    /// Checks offered to this producer.
    pub checks: u64,
    /// Check polls that failed.
    pub check_poll_errors: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    send_failed: AtomicU64,
    committed: AtomicU64,
    rolled_back: AtomicU64,
    left_open: AtomicU64,
    resolve_failed: AtomicU64,
    conflicts: AtomicU64,
    checks: AtomicU64,
    check_poll_errors: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TransactionProducerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransactionProducerStats {
            sent: read(&self.sent),
            send_failed: read(&self.send_failed),
            committed: read(&self.committed),
            rolled_back: read(&self.rolled_back),
            left_open: read(&self.left_open),
            resolve_failed: read(&self.resolve_failed),
            conflicts: read(&self.conflicts),
            checks: read(&self.checks),
            check_poll_errors: read(&self.check_poll_errors),
        }
    }
}

/// The check callback, type-erased.
type Checker = Arc<
    dyn Fn(TransactionCheck) -> Pin<Box<dyn Future<Output = LocalTransactionState> + Send>>
        + Send
        + Sync,
>;

/// What the producer and its polling tasks share.
struct Shared {
    client: BrokerClient,
    options: TransactionProducerOptions,
    checker: Checker,
    counters: Counters,
    /// `check_topics` and every topic sent to: the groups serving them store
    /// this producer group's transactions.
    topics: Mutex<BTreeSet<String>>,
}

/// A producer of transactions that answers its group's checks; stop it with
/// [`TransactionProducer::shutdown`]. Concurrent sends on one producer are fine.
pub struct TransactionProducer {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TransactionProducer {
    /// Starts answering the producer group's checks with `checker`, which gets
    /// each offered transaction and returns its local state; the producer
    /// resolves it (`Unknown`: left for the next check).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for options out of bounds
    /// ([`TransactionProducerOptions::validate`]); nothing is started then.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns its tasks there).
    pub fn start<C, Fut>(
        client: BrokerClient,
        options: TransactionProducerOptions,
        checker: C,
    ) -> Result<Self>
    where
        C: Fn(TransactionCheck) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = LocalTransactionState> + Send + 'static,
    {
        options.validate()?;
        let options_topics = options.check_topics.iter().cloned().collect();
        let checker: Checker = Arc::new(move |check| Box::pin(checker(check)));
        let span = info_span!("transaction_producer", group = %options.producer_group);
        let shared = Arc::new(Shared {
            client,
            options,
            checker,
            counters: Counters::default(),
            topics: Mutex::new(options_topics),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(poll_checks(Arc::clone(&shared), stopped).instrument(span));
        Ok(Self { shared, stop, task })
    }

    /// Opens a transaction of `messages` on `topic`, runs `local` with the
    /// broker's answer (its `transaction_id` names the transaction), and commits,
    /// rolls back or leaves open what `local` returns (module documentation).
    ///
    /// # Errors
    /// The send's error (`local` did not run then): refusals (`BAD_REQUEST` for a
    /// message with `producer_id`, `sequence` or a delay, `NO_PERMISSION`, …), a
    /// retryable error after its retries, or an outcome-unknown one (not retried).
    pub async fn send<L, Fut>(
        &self,
        topic: &str,
        messages: Vec<MessageInput>,
        local: L,
    ) -> Result<TransactionSendResult>
    where
        L: FnOnce(&SendResponse) -> Fut,
        Fut: Future<Output = LocalTransactionState>,
    {
        let sent = match self.open(topic, messages).await {
            Ok(sent) => sent,
            Err(e) => {
                Counters::add(&self.shared.counters.send_failed);
                return Err(e);
            }
        };
        Counters::add(&self.shared.counters.sent);
        let Some(transaction_id) = sent.transaction_id.clone() else {
            return Err(ClientError::Decode {
                status: 200,
                url: format!("/v1/topics/{topic}/messages"),
                reason: "a transactional send answered no transaction_id".into(),
            });
        };
        let local_state = local(&sent).await;
        let (resolution, resolve_error) =
            match settle(&self.shared, &transaction_id, local_state).await {
                Ok(resolution) => (resolution, None),
                Err(e) => (None, Some(e)),
            };
        Ok(TransactionSendResult {
            sent,
            transaction_id,
            local_state,
            resolution,
            resolve_error,
        })
    }

    /// Commits (`commit`) or rolls back a transaction by id, with the retries a
    /// resolution gets — e.g. one whose local transaction finished after `send`
    /// returned with `Unknown`.
    ///
    /// # Errors
    /// `CONFLICT` (it was resolved the other way), `TRANSACTION_NOT_FOUND`, or the
    /// last attempt's error after the retries.
    pub async fn resolve(
        &self,
        transaction_id: &str,
        commit: bool,
    ) -> Result<TransactionResolution> {
        let state = if commit {
            LocalTransactionState::Commit
        } else {
            LocalTransactionState::Rollback
        };
        settle(&self.shared, transaction_id, state)
            .await
            .map(|resolution| resolution.expect("a commit or rollback answers a resolution"))
    }

    /// What the producer has done so far.
    pub fn stats(&self) -> TransactionProducerStats {
        self.shared.counters.snapshot()
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &BrokerClient {
        &self.shared.client
    }

    /// Stops polling checks, lets the callbacks running finish and their
    /// resolutions be sent, and returns the final stats. A check taken by a poll
    /// cut short is offered again after `transaction.check_interval`.
    pub async fn shutdown(self) -> TransactionProducerStats {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "transaction producer task failed");
        }
        self.shared.counters.snapshot()
    }

    /// The transactional send, retried while no attempt can have opened one.
    async fn open(&self, topic: &str, messages: Vec<MessageInput>) -> Result<SendResponse> {
        if messages.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a transaction needs at least one message".into(),
            ));
        }
        let shared = &self.shared;
        let group = &shared.options.producer_group;
        lock(&shared.topics).insert(topic.to_string());
        let mut attempt = 0;
        loop {
            let error = match shared
                .client
                .send_transaction(topic, group, messages.clone())
                .await
            {
                Ok(sent) => return Ok(sent),
                Err(e) => e,
            };
            if error.is_outcome_unknown() || !error.is_retryable() {
                return Err(error);
            }
            if attempt == shared.options.retries {
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt + 1,
                    outcome_unknown: false,
                    last: Box::new(error),
                });
            }
            debug!(attempt, error = %error, "transactional send refused; retrying");
            tokio::time::sleep(backoff(&shared.options, attempt)).await;
            attempt += 1;
        }
    }
}

impl std::fmt::Debug for TransactionProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionProducer")
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, also one a panicking thread held (the set stays valid).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The broker groups whose checks to poll: every group of the cluster (`Listed`),
/// or for a caller who may not list them, those serving the producer's topics
/// (`Routed`, a lower bound: groups polled already are kept); `None` when
/// neither answers (`None` polls the answering node's group).
enum CheckGroups {
    Listed(BTreeSet<String>),
    Routed(BTreeSet<String>),
}

async fn check_groups(shared: &Shared) -> Option<CheckGroups> {
    match shared.client.cluster().await {
        Ok(cluster) => {
            return Some(CheckGroups::Listed(
                cluster.groups.into_iter().map(|g| g.group).collect(),
            ))
        }
        Err(e) => debug!(error = %e, "cannot list the cluster's groups; using the topics' routes"),
    }
    let topics: Vec<String> = lock(&shared.topics).iter().cloned().collect();
    let mut groups = BTreeSet::new();
    let mut answered = false;
    for topic in topics {
        match shared.client.route(&topic).await {
            Ok(route) => {
                answered = true;
                groups.extend(route.groups.into_iter().map(|g| g.group));
            }
            Err(e) => debug!(topic, error = %e, "cannot read the topic's route"),
        }
    }
    answered.then_some(CheckGroups::Routed(groups))
}

/// The wait before retry `attempt` (0-based): doubling, capped.
fn backoff(options: &TransactionProducerOptions, attempt: u32) -> Duration {
    options
        .backoff_initial
        .saturating_mul(1 << attempt.min(16))
        .min(options.backoff_max)
}

/// Resolves `transaction_id` as `state` says (nothing for `Unknown`), retrying
/// every error a repeat could cure: a resolution is idempotent. Counts the
/// outcome.
async fn settle(
    shared: &Shared,
    transaction_id: &str,
    state: LocalTransactionState,
) -> Result<Option<TransactionResolution>> {
    let counters = &shared.counters;
    let commit = match state {
        LocalTransactionState::Commit => true,
        LocalTransactionState::Rollback => false,
        LocalTransactionState::Unknown => {
            Counters::add(&counters.left_open);
            return Ok(None);
        }
    };
    let mut attempt = 0;
    let mut outcome_unknown = false;
    let error = loop {
        match shared
            .client
            .resolve_transaction(transaction_id, commit)
            .await
        {
            Ok(resolution) => {
                if resolution.status == STATUS_COMMITTED {
                    Counters::add(&counters.committed);
                } else {
                    Counters::add(&counters.rolled_back);
                }
                return Ok(Some(resolution));
            }
            Err(e) if !(e.is_retryable() || e.is_outcome_unknown()) => break e,
            Err(e) if attempt == shared.options.retries => {
                outcome_unknown |= e.is_outcome_unknown();
                break ClientError::RetriesExhausted {
                    attempts: attempt + 1,
                    outcome_unknown,
                    last: Box::new(e),
                };
            }
            Err(e) => {
                outcome_unknown |= e.is_outcome_unknown();
                debug!(attempt, transaction_id, error = %e, "resolution failed; retrying");
                tokio::time::sleep(backoff(&shared.options, attempt)).await;
                attempt += 1;
            }
        }
    };
    Counters::add(&counters.resolve_failed);
    if error.is_conflict() {
        Counters::add(&counters.conflicts);
    }
    Err(error)
}

/// A running poll of one broker group's checks, and its own stop.
struct GroupPoll {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Keeps one check poll running per broker group of the cluster (read again
/// every `groups_refresh`) until stopped; then stops them and waits for them.
/// A poll is stopped, never aborted: a callback it started finishes and sends
/// its resolution.
async fn poll_checks(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let options = &shared.options;
    let callbacks = Arc::new(Semaphore::new(options.check_concurrency));
    let mut polls: BTreeMap<Option<String>, GroupPoll> = BTreeMap::new();
    let mut retired = Vec::new();
    loop {
        let found = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            found = check_groups(&shared) => found,
        };
        let groups: Vec<Option<String>> = match found {
            Some(CheckGroups::Listed(groups)) if !groups.is_empty() => {
                groups.into_iter().map(Some).collect()
            }
            // Routes name the groups this producer's topics use, not every
            // group it polled (a listing that failed once must not stop polls).
            Some(CheckGroups::Routed(groups)) if !groups.is_empty() => {
                let mut all: BTreeSet<Option<String>> = groups.into_iter().map(Some).collect();
                all.extend(polls.keys().filter(|g| g.is_some()).cloned());
                all.into_iter().collect()
            }
            // Nothing known yet: poll the answering node's own group meanwhile.
            _ if polls.is_empty() => vec![None],
            _ => polls.keys().cloned().collect(),
        };
        // A group gone from the cluster stops being polled (its polls answer
        // BROKER_GROUP_NOT_FOUND anyway); one that appeared starts.
        let (keep, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut polls)
            .into_iter()
            .partition(|(group, poll)| groups.contains(group) && !poll.task.is_finished());
        polls = keep;
        for (_, poll) in gone {
            let _ = poll.stop.send(true);
            retired.push(poll.task);
        }
        retired.retain(|task| !task.is_finished());
        for group in groups {
            polls.entry(group.clone()).or_insert_with(|| {
                let (stop, stopped) = watch::channel(false);
                let task = tokio::spawn(
                    poll_group(Arc::clone(&shared), group, Arc::clone(&callbacks), stopped)
                        .in_current_span(),
                );
                GroupPoll { stop, task }
            });
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(options.groups_refresh) => {}
        }
    }
    for poll in polls.values() {
        let _ = poll.stop.send(true);
    }
    let tasks = polls.into_values().map(|poll| poll.task);
    for task in tasks.chain(retired) {
        let _ = task.await;
    }
}

/// Polls the checks `group` stores (`None`: the answering node's group) and
/// answers each through the callback, until stopped; then lets the callbacks
/// running finish.
async fn poll_group(
    shared: Arc<Shared>,
    group: Option<String>,
    callbacks: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let options = &shared.options;
    let mut answering = JoinSet::new();
    let mut failures = 0u32;
    loop {
        // Reap finished callbacks so the set does not grow with the checks.
        while answering.try_join_next().is_some() {}
        let poll = shared.client.transaction_checks_in(
            &options.producer_group,
            group.as_deref(),
            options.check_wait,
        );
        let asked = tokio::time::Instant::now();
        let checks = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            checks = poll => checks,
        };
        match checks {
            Ok(response) if response.checks.is_empty() => {
                failures = 0;
                // Answered empty without being held (a draining node, a short
                // `check_wait`): do not ask again at once.
                let pause = options.backoff_initial.saturating_sub(asked.elapsed());
                if !pause.is_zero() {
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
            Ok(response) => {
                failures = 0;
                for check in response.checks {
                    Counters::add(&shared.counters.checks);
                    let Ok(permit) = Arc::clone(&callbacks).acquire_owned().await else {
                        break;
                    };
                    let shared = Arc::clone(&shared);
                    answering.spawn(
                        async move {
                            let id = check.transaction_id.clone();
                            let state = (shared.checker)(check).await;
                            if let Err(e) = settle(&shared, &id, state).await {
                                warn!(transaction_id = %id, error = %e, "cannot resolve a checked transaction");
                            }
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
            }
            Err(e) => {
                Counters::add(&shared.counters.check_poll_errors);
                if e.code() == Some("BROKER_GROUP_NOT_FOUND") {
                    debug!(?group, "the broker group is gone; no more checks from it");
                    break;
                }
                warn!(?group, error = %e, "transaction check poll failed");
                let wait = backoff(options, failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    while answering.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(TransactionProducerOptions::new("pg").validate().is_ok());
        let bad = [
            TransactionProducerOptions::new(""),
            TransactionProducerOptions {
                check_wait: Duration::from_millis(MAX_CHECK_WAIT_MS + 1),
                ..TransactionProducerOptions::new("pg")
            },
            TransactionProducerOptions {
                check_concurrency: 0,
                ..TransactionProducerOptions::new("pg")
            },
            TransactionProducerOptions {
                backoff_initial: Duration::from_secs(3),
                ..TransactionProducerOptions::new("pg")
            },
            TransactionProducerOptions {
                groups_refresh: Duration::ZERO,
                ..TransactionProducerOptions::new("pg")
            },
        ];
        for options in bad {
            assert!(
                matches!(options.validate(), Err(ClientError::InvalidArgument(_))),
                "{options:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let options = TransactionProducerOptions::new("pg");
        assert_eq!(backoff(&options, 0), Duration::from_millis(100));
        assert_eq!(backoff(&options, 1), Duration::from_millis(200));
        assert_eq!(backoff(&options, 4), Duration::from_millis(1600));
        assert_eq!(backoff(&options, 5), Duration::from_secs(2));
        assert_eq!(backoff(&options, 40), Duration::from_secs(2));
    }
}
