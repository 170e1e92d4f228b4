//! [`PushConsumer`]: a member of a consumer group.
//!
//! **Clustering mode** (the default): it heartbeats to the group's coordinator every `heartbeat_interval`, pulls the
//! queues it is assigned with long polling, hands every message to the handler in
//! queue order, and commits the queue's offset after each handled batch. When a
//! queue is taken away (another member joined, or left and came back), the worker
//! finishes its batch, commits, and only then stops claiming the queue in its next
//! heartbeat — the coordinator gives the queue to someone else only after that, so
//! a queue never has two consumers and no handled message is handled again by the
//! next owner. A member whose heartbeats fail for `member_expiry` drops every queue
//! (the coordinator has dropped it by then).
//!
//! Delivery is at least once: a handler that crashes the process before its batch
//! is committed sees the batch again on restart (or another member does).
//!
//! A handler that answers [`ConsumeResult::RetryLater`] gives the message back
//! (`POST /v1/groups/{group}/retry`) before the batch is committed: the broker
//! brings it again through the group's retry topic `%RETRY%{group}` after a growing
//! delay — members subscribe to it automatically, and see such a message under its
//! original topic — and moves it to `%DLQ%{group}` after the broker's
//! `max_reconsume_times`.
//!
//! **Broadcasting mode**: every member reads every queue of its topics (found from
//! the routes) and keeps its offsets itself ([`PushConsumer::offsets`], seeded by
//! [`ConsumerOptions::initial_offsets`]); nothing is committed on the broker and,
//! as in RocketMQ, a message the handler asks to retry is not redelivered.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::broker_client::BrokerClient;
use super::endpoints::{CommitMode, GroupQueue, PullOptions};
use crate::api::{HeartbeatRequest, MessageView, OwnedQueue};
use broker_proto::properties::PROPERTY_RETRY_TOPIC;
use broker_proto::topic::{retry_topic, RETRY_PREFIX};

/// What the handler made of a message (RocketMQ's `ConsumeConcurrentlyStatus`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConsumeResult {
    Success,
    /// Give it back: it comes again later through the retry topic.
    RetryLater,
}

/// A handler returning `()` always succeeds.
impl From<()> for ConsumeResult {
    fn from((): ()) -> Self {
        Self::Success
    }
}

/// How the members of a group share the messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageModel {
    /// Each queue has one member at a time; offsets are kept by the broker.
    Clustering,
    /// Every member reads everything; offsets are kept by each member.
    Broadcasting,
}

/// Where a queue without a known offset starts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// At its oldest message still stored.
    First,
    /// At its end: only messages stored from now on.
    Last,
}

/// How a [`PushConsumer`] behaves.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// The consumer group.
    pub group: String,
    /// This member's id, unique in the group.
    pub client_id: String,
    pub topics: Vec<String>,
    /// How often to heartbeat (well under the broker's `control.member_expiry`).
    pub heartbeat_interval: Duration,
    /// The broker's `control.member_expiry`: without a successful heartbeat for this
    /// long the member gives up its queues.
    pub member_expiry: Duration,
    /// Pull batch size, long-poll wait and tag filter.
    pub pull: PullOptions,
    pub model: MessageModel,
    /// Where a queue without a committed (or, broadcasting, local) offset starts.
    pub consume_from: ConsumeFrom,
    /// Broadcasting: offsets to resume from (as [`PushConsumer::offsets`] gave
    /// them before a restart).
    pub initial_offsets: BTreeMap<GroupQueue, u64>,
}

impl ConsumerOptions {
    pub fn new(group: &str, client_id: &str, topics: &[&str]) -> Self {
        Self {
            group: group.to_string(),
            client_id: client_id.to_string(),
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
            heartbeat_interval: Duration::from_secs(2),
            member_expiry: Duration::from_secs(10),
            pull: PullOptions {
                max_messages: 32,
                max_wait_ms: 1000,
                tags: None,
            },
            model: MessageModel::Clustering,
            consume_from: ConsumeFrom::First,
            initial_offsets: BTreeMap::new(),
        }
    }

    /// The topics a clustering member subscribes to: its own and the group's retry
    /// topic.
    fn subscribed_topics(&self) -> Vec<String> {
        let mut topics = self.topics.clone();
        topics.push(retry_topic(&self.group));
        topics
    }
}

/// Offsets a broadcasting member keeps itself.
type LocalOffsets = Arc<std::sync::Mutex<BTreeMap<GroupQueue, u64>>>;

struct Worker {
    stop: watch::Sender<bool>,
    /// The offset committed last (shared with the worker task).
    committed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// A running consumer-group member; stop it with [`PushConsumer::shutdown`].
pub struct PushConsumer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    assigned: watch::Receiver<Vec<GroupQueue>>,
    local_offsets: LocalOffsets,
}

impl PushConsumer {
    /// Starts the member; `handler` is called for every message, one queue's
    /// messages in order. It returns `()` (success) or a [`ConsumeResult`].
    pub fn start<H, Fut, R>(client: BrokerClient, options: ConsumerOptions, handler: H) -> Self
    where
        H: Fn(MessageView) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<ConsumeResult> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let (assigned_tx, assigned) = watch::channel(Vec::new());
        let handler: Handler = Arc::new(move |message| {
            let outcome = handler(message);
            Box::pin(async move { outcome.await.into() })
        });
        let local_offsets: LocalOffsets =
            Arc::new(std::sync::Mutex::new(options.initial_offsets.clone()));
        let task = match options.model {
            MessageModel::Clustering => {
                tokio::spawn(run(client, options, handler, stopped, assigned_tx))
            }
            MessageModel::Broadcasting => tokio::spawn(run_broadcasting(
                client,
                options,
                handler,
                stopped,
                assigned_tx,
                Arc::clone(&local_offsets),
            )),
        };
        Self {
            stop,
            task,
            assigned,
            local_offsets,
        }
    }

    /// The queues this member consumes now.
    pub fn assigned(&self) -> Vec<GroupQueue> {
        self.assigned.borrow().clone()
    }

    /// Broadcasting: the next offset of every queue read so far (persist them and
    /// pass them as [`ConsumerOptions::initial_offsets`] to resume after a
    /// restart). Empty in clustering mode, where the broker keeps them.
    pub fn offsets(&self) -> BTreeMap<GroupQueue, u64> {
        self.local_offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops pulling, commits every queue's offset, and tells the coordinator it
    /// holds nothing, so the others take over at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "consumer task failed");
        }
    }
}

/// The handler, type-erased.
type Handler = Arc<
    dyn Fn(MessageView) -> std::pin::Pin<Box<dyn Future<Output = ConsumeResult> + Send>>
        + Send
        + Sync,
>;

async fn run(
    client: BrokerClient,
    options: ConsumerOptions,
    handler: Handler,
    mut stopped: watch::Receiver<bool>,
    assigned_tx: watch::Sender<Vec<GroupQueue>>,
) {
    let mut workers: BTreeMap<GroupQueue, Worker> = BTreeMap::new();
    let mut last_ok = Instant::now();
    loop {
        let stopping = *stopped.borrow();
        let request = HeartbeatRequest {
            client_id: options.client_id.clone(),
            topics: if stopping {
                Vec::new()
            } else {
                options.subscribed_topics()
            },
            owned: workers
                .iter()
                .map(|(queue, worker)| OwnedQueue {
                    topic: queue.topic.clone(),
                    group: queue.group.clone(),
                    queue_id: queue.queue_id,
                    offset: Some(*worker.committed.borrow()),
                })
                .collect(),
        };
        let target: Option<BTreeMap<GroupQueue, Option<u64>>> =
            match client.heartbeat(&options.group, &request).await {
                Ok(answer) => {
                    last_ok = Instant::now();
                    Some(
                        answer
                            .assignments
                            .into_iter()
                            .map(|a| {
                                (
                                    GroupQueue {
                                        topic: a.topic,
                                        group: a.group,
                                        queue_id: a.queue_id,
                                    },
                                    a.offset,
                                )
                            })
                            .collect(),
                    )
                }
                Err(e) => {
                    debug!(error = %e, "heartbeat failed");
                    // Fenced: the coordinator has dropped this member by now.
                    (last_ok.elapsed() >= options.member_expiry).then(BTreeMap::new)
                }
            };
        if stopping {
            // The last heartbeat claimed what we still held; release all, then
            // heartbeat once more claiming nothing.
            release(&mut workers, |_| true).await;
            let _ = client
                .heartbeat(
                    &options.group,
                    &HeartbeatRequest {
                        client_id: options.client_id.clone(),
                        topics: Vec::new(),
                        owned: Vec::new(),
                    },
                )
                .await;
            let _ = assigned_tx.send(Vec::new());
            return;
        }
        if let Some(target) = target {
            release(&mut workers, |queue| !target.contains_key(queue)).await;
            for (queue, hint) in target {
                if workers.contains_key(&queue) {
                    continue;
                }
                let committed = match client.committed_offset(&options.group, &queue).await {
                    Ok(committed) => committed,
                    Err(e) => {
                        debug!(error = %e, "reading the committed offset failed; next round");
                        continue;
                    }
                };
                let start = match (committed, hint) {
                    (Some(committed), hint) => committed.max(hint.unwrap_or(0)),
                    (None, Some(hint)) => hint,
                    (None, None) => {
                        match initial_offset(&client, &queue, options.consume_from).await {
                            Some(offset) => offset,
                            None => continue,
                        }
                    }
                };
                workers.insert(
                    queue.clone(),
                    spawn_worker(
                        client.clone(),
                        options.clone(),
                        queue,
                        start,
                        Arc::clone(&handler),
                        None,
                    ),
                );
            }
            let _ = assigned_tx.send(workers.keys().cloned().collect());
        }
        tokio::select! {
            () = tokio::time::sleep(options.heartbeat_interval) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// Stops the workers whose queue `pred` picks and waits until each committed.
async fn release(workers: &mut BTreeMap<GroupQueue, Worker>, pred: impl Fn(&GroupQueue) -> bool) {
    let leaving: Vec<GroupQueue> = workers.keys().filter(|q| pred(q)).cloned().collect();
    for queue in leaving {
        if let Some(worker) = workers.remove(&queue) {
            let _ = worker.stop.send(true);
            if let Err(e) = worker.task.await {
                warn!(error = %e, ?queue, "queue worker failed");
            }
        }
    }
}

/// Where a queue without a stored offset starts; `None` if its offsets cannot be
/// read now.
async fn initial_offset(
    client: &BrokerClient,
    queue: &GroupQueue,
    from: ConsumeFrom,
) -> Option<u64> {
    if from == ConsumeFrom::First {
        // The broker answers OFFSET_TOO_SMALL below the minimum and the worker
        // moves up to it.
        return Some(0);
    }
    match client.queues(&queue.topic).await {
        Ok(queues) => queues
            .queues
            .iter()
            .find(|q| q.queue_id == queue.queue_id && q.group == queue.group)
            .map(|q| q.max_offset),
        Err(e) => {
            debug!(error = %e, ?queue, "reading the queue's offsets failed; next round");
            None
        }
    }
}

/// Broadcasting: read every queue of the topics, keep offsets here.
async fn run_broadcasting(
    client: BrokerClient,
    options: ConsumerOptions,
    handler: Handler,
    mut stopped: watch::Receiver<bool>,
    assigned_tx: watch::Sender<Vec<GroupQueue>>,
    offsets: LocalOffsets,
) {
    let mut workers: BTreeMap<GroupQueue, Worker> = BTreeMap::new();
    loop {
        if *stopped.borrow() {
            release(&mut workers, |_| true).await;
            let _ = assigned_tx.send(Vec::new());
            return;
        }
        for topic in &options.topics {
            let queues = match client.queues(topic).await {
                Ok(answer) => answer.queues,
                Err(e) => {
                    debug!(error = %e, topic, "listing queues failed; next round");
                    continue;
                }
            };
            for view in queues {
                let queue = GroupQueue {
                    topic: topic.clone(),
                    group: view.group.clone(),
                    queue_id: view.queue_id,
                };
                if workers.contains_key(&queue) {
                    continue;
                }
                let known = offsets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&queue)
                    .copied();
                let start = known.unwrap_or(match options.consume_from {
                    ConsumeFrom::First => view.min_offset,
                    ConsumeFrom::Last => view.max_offset,
                });
                offsets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue.clone(), start);
                workers.insert(
                    queue.clone(),
                    spawn_worker(
                        client.clone(),
                        options.clone(),
                        queue,
                        start,
                        Arc::clone(&handler),
                        Some(Arc::clone(&offsets)),
                    ),
                );
            }
        }
        let _ = assigned_tx.send(workers.keys().cloned().collect());
        tokio::select! {
            () = tokio::time::sleep(options.heartbeat_interval) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// Shows a message from the retry topic under the topic it first came from.
fn restore_topic(mut message: MessageView) -> MessageView {
    if message.topic.starts_with(RETRY_PREFIX) {
        if let Some(origin) = message.properties.get(PROPERTY_RETRY_TOPIC) {
            message.topic = origin.clone();
        }
    }
    message
}

/// Gives a message back until the broker took it. Gives up (at least once becomes
/// at most once for this message) when the broker says it cannot be given back,
/// or once stopping for longer than `member_expiry`.
async fn give_back(
    client: &BrokerClient,
    options: &ConsumerOptions,
    queue: &GroupQueue,
    offset: u64,
    stopped: &watch::Receiver<bool>,
) {
    let started = Instant::now();
    loop {
        match client.give_back(&options.group, queue, offset, 0).await {
            Ok(_) => return,
            Err(e) if e.is_not_found() || e.code() == Some("BAD_REQUEST") => {
                warn!(error = %e, ?queue, offset, "cannot give the message back; dropping it");
                return;
            }
            Err(e) if *stopped.borrow() && started.elapsed() > options.member_expiry => {
                warn!(error = %e, ?queue, offset, "giving up giving the message back");
                return;
            }
            Err(e) => {
                debug!(error = %e, ?queue, offset, "give-back failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Pulls and handles one queue from `start`. Offsets go to the broker, or to
/// `local` (broadcasting).
fn spawn_worker(
    client: BrokerClient,
    options: ConsumerOptions,
    queue: GroupQueue,
    start: u64,
    handler: Handler,
    local: Option<LocalOffsets>,
) -> Worker {
    let (stop, mut stopped) = watch::channel(false);
    let (committed_tx, committed) = watch::channel(start);
    let task = tokio::spawn(async move {
        let mut offset = start;
        loop {
            if *stopped.borrow() {
                return;
            }
            let page = tokio::select! {
                page = client.pull_queue(&queue, offset, &options.pull) => page,
                // Nothing handled from an abandoned pull: the offset stands.
                _ = stopped.changed() => return,
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    debug!(error = %e, ?queue, "pull failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let next = page.next_offset;
            for message in page.messages {
                let offset = message.queue_offset;
                if handler(restore_topic(message)).await == ConsumeResult::RetryLater {
                    if local.is_some() {
                        warn!(
                            ?queue,
                            offset, "broadcasting does not retry; message dropped"
                        );
                    } else {
                        give_back(&client, &options, &queue, offset, &stopped).await;
                    }
                }
            }
            if next == offset {
                continue;
            }
            if let Some(local) = &local {
                local
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue.clone(), next);
                offset = next;
                let _ = committed_tx.send(offset);
                continue;
            }
            // Commit before pulling on (and before letting go): the next owner
            // starts where this one stopped. Retry until it sticks; once asked to
            // stop, give up after `member_expiry` (the queue has moved on by then,
            // and the batch will be seen again: at least once).
            let started = Instant::now();
            loop {
                match client
                    .commit_queue_offset(&options.group, &queue, next, CommitMode::Advance)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if *stopped.borrow() && started.elapsed() > options.member_expiry => {
                        warn!(error = %e, ?queue, "giving up committing offset {next}");
                        return;
                    }
                    Err(e) => {
                        debug!(error = %e, ?queue, "offset commit failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            offset = next;
            let _ = committed_tx.send(offset);
        }
    });
    Worker {
        stop,
        committed,
        task,
    }
}
