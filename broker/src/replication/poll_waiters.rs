//! The applied-queues notification: long polls (a pull that finds nothing new waits
//! until a message arrives in its queue or its deadline passes, RocketMQ's
//! `PullRequestHoldService`) register here per (topic, queue), and the state
//! machine wakes only the queues an applied entry appended to, so thousands of held
//! polls on idle queues cost nothing per write. The state machine owns it and knows
//! nothing of who waits; the pull loop (`http::data_plane`) is the waiter.
//!
//! The number of polls held at once is capped here too (the notifier map is
//! bounded by that cap); past the cap a pull answers at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::storage::QueueId;

/// Registered waiters and the cap on held polls.
pub struct PollWaiters {
    queues: Mutex<HashMap<(String, QueueId), Arc<Notify>>>,
    held: Arc<Semaphore>,
    max_held: usize,
}

impl PollWaiters {
    pub fn new(max_held: usize) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            held: Arc::new(Semaphore::new(max_held)),
            max_held,
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
        // A poll that timed out leaves its queue's notifier behind (only a wake
        // removes one). At most `max_held` are in use, so once the map holds twice
        // that, drop those nobody waits on: the map stays bounded by the cap on held
        // polls, whatever queues polls name, at amortized constant cost.
        if queues.len() >= 2 * self.max_held + 64 {
            queues.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
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

    /// Wakes the polls held on a deleted topic's queues and forgets its notifiers.
    pub fn forget_topic(&self, topic: &str) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|(t, _), notify| {
            if t == topic {
                notify.notify_waiters();
            }
            t != topic
        });
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

    fn notifiers(waiters: &PollWaiters) -> usize {
        waiters.queues.lock().expect("lock").len()
    }

    #[test]
    fn notifiers_of_finished_polls_do_not_pile_up() {
        let waiters = PollWaiters::new(4);
        let held = waiters.notifier("kept", QueueId(0));
        // Polls on 10,000 queues (say, of topics deleted since) that all timed out.
        for i in 0..10_000 {
            drop(waiters.notifier(&format!("t{i}"), QueueId(0)));
        }
        assert!(
            notifiers(&waiters) <= 2 * 4 + 64,
            "{} notifiers kept for 4 held polls",
            notifiers(&waiters)
        );
        assert!(
            Arc::ptr_eq(&held, &waiters.notifier("kept", QueueId(0))),
            "a notifier in use survives the sweep"
        );
    }

    #[tokio::test]
    async fn forgetting_a_topic_wakes_its_polls() {
        let waiters = PollWaiters::new(2);
        let notify = waiters.notifier("gone", QueueId(3));
        let other = waiters.notifier("stays", QueueId(0));
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        waiters.forget_topic("gone");
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .expect("woken");
        assert_eq!(
            notifiers(&waiters),
            1,
            "only the other topic's notifier is left"
        );
        drop(other);
    }
}
