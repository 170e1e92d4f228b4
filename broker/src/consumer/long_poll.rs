//! Long polling: a pull that finds nothing new waits until a message arrives in its
//! queue or its deadline passes (RocketMQ's `PullRequestHoldService`).
//!
//! Waiters register per (topic, queue) and the state machine wakes only the queues
//! an applied batch touched, so thousands of held polls on idle queues cost nothing
//! per write. The number of polls held at once is capped; past the cap a pull
//! answers at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::storage::QueueId;

/// Registered waiters and the cap on held polls.
pub struct PollWaiters {
    queues: Mutex<HashMap<(String, QueueId), Arc<Notify>>>,
    held: Arc<Semaphore>,
}

impl PollWaiters {
    pub fn new(max_held: usize) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            held: Arc::new(Semaphore::new(max_held)),
        }
    }

    /// A slot for one held poll, or `None` when the cap is reached.
    pub fn try_hold(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.held).try_acquire_owned().ok()
    }

    /// Polls held right now.
    pub fn held(&self, max_held: usize) -> usize {
        max_held.saturating_sub(self.held.available_permits())
    }

    /// The notifier of a queue; create the `notified()` future and enable it
    /// *before* checking the queue, so a message arriving in between is not missed.
    pub fn notifier(&self, topic: &str, queue_id: QueueId) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            queues
                .entry((topic.to_string(), queue_id))
                .or_insert_with(|| Arc::new(Notify::new())),
        )
    }

    /// Wakes every poll waiting on a queue.
    pub fn wake(&self, topic: &str, queue_id: QueueId) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let key = (topic.to_string(), queue_id);
        if let Some(notify) = queues.get(&key) {
            notify.notify_waiters();
            // Nobody else holds it: no poll is registered, forget the queue.
            if Arc::strong_count(notify) == 1 {
                queues.remove(&key);
            }
        }
    }

    /// Wakes every held poll (e.g. after a snapshot replaced the store's content).
    pub fn wake_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for notify in queues.values() {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_a_registered_waiter() {
        let waiters = PollWaiters::new(2);
        let notify = waiters.notifier("t", QueueId(0));
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        waiters.wake("t", QueueId(0));
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .expect("woken");
    }

    #[test]
    fn the_cap_is_enforced() {
        let waiters = PollWaiters::new(1);
        let first = waiters.try_hold();
        assert!(first.is_some());
        assert!(waiters.try_hold().is_none());
        assert_eq!(waiters.held(1), 1);
        drop(first);
        assert!(waiters.try_hold().is_some());
    }
}
