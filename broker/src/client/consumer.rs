//! [`PushConsumer`]: a member of a consumer group in clustering mode.
//!
//! It heartbeats to the group's coordinator every `heartbeat_interval`, pulls the
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
        }
    }
}

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
}

impl PushConsumer {
    /// Starts the member; `handler` is called for every message, one queue's
    /// messages in order.
    pub fn start<H, Fut>(client: BrokerClient, options: ConsumerOptions, handler: H) -> Self
    where
        H: Fn(MessageView) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let (assigned_tx, assigned) = watch::channel(Vec::new());
        let handler = Arc::new(handler);
        let task = tokio::spawn(run(client, options, handler, stopped, assigned_tx));
        Self {
            stop,
            task,
            assigned,
        }
    }

    /// The queues this member consumes now.
    pub fn assigned(&self) -> Vec<GroupQueue> {
        self.assigned.borrow().clone()
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

async fn run<H, Fut>(
    client: BrokerClient,
    options: ConsumerOptions,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
    assigned_tx: watch::Sender<Vec<GroupQueue>>,
) where
    H: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut workers: BTreeMap<GroupQueue, Worker> = BTreeMap::new();
    let mut last_ok = Instant::now();
    loop {
        let stopping = *stopped.borrow();
        let request = HeartbeatRequest {
            client_id: options.client_id.clone(),
            topics: if stopping {
                Vec::new()
            } else {
                options.topics.clone()
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
                let start = committed.unwrap_or(0).max(hint.unwrap_or(0));
                workers.insert(
                    queue.clone(),
                    spawn_worker(
                        client.clone(),
                        options.clone(),
                        queue,
                        start,
                        Arc::clone(&handler),
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

fn spawn_worker<H, Fut>(
    client: BrokerClient,
    options: ConsumerOptions,
    queue: GroupQueue,
    start: u64,
    handler: Arc<H>,
) -> Worker
where
    H: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
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
                handler(message).await;
            }
            if next == offset {
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
