//! Group commit of sends at the leader.
//!
//! Every Raft entry costs the same fixed work whatever it holds: its encoding,
//! a log append, replication bookkeeping per follower, an apply with one CommitLog
//! append and a wake-up per answer. Under load the broker spent most of its CPU on
//! that per-entry work, so sends that arrive while earlier ones are still being
//! proposed are proposed together, as one [`Command::SendBatch`] entry.
//!
//! The rule is the usual group-commit one, with no timer: at most
//! [`MAX_OUTSTANDING_PROPOSALS`] proposals are in flight. A send that finds one free
//! is proposed at once, as its own [`Command::Send`] (a lone send pays nothing for
//! batching). A send that finds none waits in the queue; when a proposal finishes,
//! everything queued by then (up to [`MAX_BATCH_MESSAGES`] messages or
//! [`MAX_BATCH_BODY_BYTES`]) goes out as the next entry. Batches so grow with the
//! load and shrink back to single sends when it falls.
//!
//! Batching never changes an answer: apply decides, deduplicates and answers each
//! send of a batch as if it were its own entry (see `apply_sends` in the state
//! machine), and a failed proposal fails every send in it with the same error (a
//! NOT_LEADER is then forwarded by each request on its own).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::BrokerError;
use crate::replication::command::{Rejection, SendCommand, SendResult};
use crate::replication::proposal::propose;
use crate::replication::proposal::SendBatch;
use crate::replication::type_config::Raft;
use crate::units::HumanDuration;

/// Proposals in flight at once. openraft pipelines them (one log flush and one
/// AppendEntries can carry several); more gave no more throughput in the
/// measurements and only smaller batches.
pub const MAX_OUTSTANDING_PROPOSALS: usize = 4;
/// A batch stops growing at this many messages…
pub const MAX_BATCH_MESSAGES: usize = 4096;
/// …or this many body bytes (an entry is read, replicated and applied whole).
pub const MAX_BATCH_BODY_BYTES: u64 = 2 << 20;

/// What a send is answered with: its results or why apply refused it, once
/// committed; or why it was not.
type Answer = Result<Result<Vec<SendResult>, Rejection>, BrokerError>;

/// A send waiting for a free proposal.
struct Queued {
    send: SendCommand,
    answer: oneshot::Sender<Answer>,
}

/// The leader's send path into Raft (a follower's sends never reach it: they are
/// forwarded first).
pub struct SendBatcher {
    raft: Raft,
    write_timeout: HumanDuration,
    proposals: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<Queued>,
}

impl SendBatcher {
    /// Starts the task that proposes queued sends. Needs a Tokio runtime; the task
    /// ends when the batcher is dropped.
    pub fn start(raft: Raft, write_timeout: HumanDuration) -> Self {
        let proposals = Arc::new(Semaphore::new(MAX_OUTSTANDING_PROPOSALS));
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(propose_queued(
            queued,
            Arc::clone(&proposals),
            raft.clone(),
            write_timeout,
        ));
        Self {
            raft,
            write_timeout,
            proposals,
            queue,
        }
    }

    /// Proposes one request's send, alone or batched with others, and waits until
    /// it is committed and applied here. Answers as [`crate::service::node::Node::write`].
    pub async fn send(&self, send: SendCommand) -> Answer {
        // The semaphore is fair: a permit freed while sends are queued goes to the
        // queue's task, so this only succeeds when nothing is waiting.
        if let Ok(permit) = Arc::clone(&self.proposals).try_acquire_owned() {
            let answer = propose(&self.raft, self.write_timeout, send).await;
            drop(permit);
            return answer;
        }
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Queued { send, answer }).is_err() {
            return Err(BrokerError::ShuttingDown);
        }
        // The write timeout counts from here, queueing included: with no quorum the
        // proposals ahead each take the whole timeout, and the client should hear
        // UNAVAILABLE from the broker before its own request timeout.
        match tokio::time::timeout(self.write_timeout.0, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::WriteTimeout {
                timeout: self.write_timeout,
            }),
        }
    }
}

/// The queue's task: waits for a send and a free proposal, takes every send queued
/// by then (within the batch limits), and proposes them as one entry.
async fn propose_queued(
    mut queued: mpsc::UnboundedReceiver<Queued>,
    proposals: Arc<Semaphore>,
    raft: Raft,
    write_timeout: HumanDuration,
) {
    while let Some(first) = queued.recv().await {
        let Ok(permit) = Arc::clone(&proposals).acquire_owned().await else {
            return;
        };
        let mut messages = first.send.messages.len();
        let mut body_bytes = body_bytes_of(&first.send);
        let mut batch = vec![first];
        while messages < MAX_BATCH_MESSAGES && body_bytes < MAX_BATCH_BODY_BYTES {
            let Ok(next) = queued.try_recv() else {
                break;
            };
            messages += next.send.messages.len();
            body_bytes += body_bytes_of(&next.send);
            batch.push(next);
        }
        tokio::spawn(propose_batch(raft.clone(), write_timeout, batch, permit));
    }
}

fn body_bytes_of(send: &SendCommand) -> u64 {
    send.messages.iter().map(|m| m.body.len() as u64).sum()
}

/// Proposes a batch and hands every send its answer.
async fn propose_batch(
    raft: Raft,
    write_timeout: HumanDuration,
    mut batch: Vec<Queued>,
    permit: OwnedSemaphorePermit,
) {
    if batch.len() == 1 {
        let Queued { send, answer } = batch.pop().expect("one send");
        let result = propose(&raft, write_timeout, send).await;
        drop(permit);
        // The request may have gone (its client disconnected); nothing to do then.
        let _ = answer.send(result);
        return;
    }
    let (sends, answers): (Vec<SendCommand>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|q| (q.send, q.answer)).unzip();
    let count = sends.len();
    let result = propose(&raft, write_timeout, SendBatch(sends)).await;
    drop(permit);
    match result {
        Ok(responses) => {
            assert_eq!(responses.len(), count, "apply answers each send of a batch");
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(Ok(response));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}
