//! Group commit: callers that need their bytes durable wait here while one thread
//! flushes the CommitLog for all of them (RocketMQ's `GroupCommitService`).
//!
//! A waiter asks for "durable up to offset X" and sleeps; the flush thread flushes
//! up to the highest offset asked for (one sync covers every waiter whose bytes are
//! in it) and wakes the waiters it satisfied. Writers never fsync inline, so a writer
//! can encode its next batch while the previous one is being synced.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::error::{StoreError, StoreResult};
use super::types::CommitLogOffset;

#[derive(Default)]
struct State {
    /// The highest offset a waiter asked to be durable.
    requested: u64,
    /// Everything below this is durable.
    flushed: u64,
    /// The last flush failed: waiters get an error until the store is reopened.
    failed: Option<String>,
    stopping: bool,
}

/// Shared between waiters and the flush thread.
pub struct GroupCommit {
    state: Mutex<State>,
    /// Wakes the flush thread (work requested) and the waiters (work done).
    changed: Condvar,
}

impl GroupCommit {
    fn new(flushed: CommitLogOffset) -> Self {
        Self {
            state: Mutex::new(State {
                flushed: flushed.0,
                requested: flushed.0,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for every CommitLog byte below `offset` to be made durable, without
    /// waiting.
    pub fn request_durable(&self, offset: CommitLogOffset) {
        let mut state = self.lock();
        if offset.0 > state.requested {
            state.requested = offset.0;
            self.changed.notify_all();
        }
    }

    /// Blocks until every CommitLog byte below `offset` is durable.
    ///
    /// # Errors
    /// A flush failed (the store must be reopened), or the store is closing.
    pub fn wait_durable(&self, offset: CommitLogOffset) -> StoreResult<()> {
        let mut state = self.lock();
        if state.flushed >= offset.0 {
            return Ok(());
        }
        if offset.0 > state.requested {
            state.requested = offset.0;
            self.changed.notify_all();
        }
        loop {
            if let Some(reason) = &state.failed {
                return Err(StoreError::io(
                    "commit log",
                    std::io::Error::other(reason.clone()),
                ));
            }
            if state.flushed >= offset.0 {
                return Ok(());
            }
            if state.stopping {
                return Err(StoreError::Failed);
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records a flush done by someone else (the periodic flush), waking waiters.
    pub fn note_flushed(&self, offset: CommitLogOffset) {
        let mut state = self.lock();
        if offset.0 > state.flushed {
            state.flushed = offset.0;
            self.changed.notify_all();
        }
    }
}

/// The flush thread and its handle.
pub struct GroupCommitThread {
    shared: Arc<GroupCommit>,
    thread: Option<JoinHandle<()>>,
}

/// Flushes the CommitLog up to (at least) an offset and returns the durable offset.
pub type FlushFn = Box<dyn Fn(CommitLogOffset) -> StoreResult<CommitLogOffset> + Send>;

impl GroupCommitThread {
    /// Starts the flush thread; `flushed` is what is durable already.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start(flushed: CommitLogOffset, flush: FlushFn) -> Self {
        let shared = Arc::new(GroupCommit::new(flushed));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("store-group-commit".into())
            .spawn(move || run(&thread_shared, &flush))
            .expect("spawning the group commit thread");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    pub fn shared(&self) -> &Arc<GroupCommit> {
        &self.shared
    }

    /// Stops the thread; pending waiters get an error.
    pub fn stop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommitThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &GroupCommit, flush: &FlushFn) {
    loop {
        let target = {
            let mut state = shared.lock();
            while state.requested <= state.flushed && !state.stopping {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if state.stopping {
                return;
            }
            CommitLogOffset(state.requested)
        };
        // Flush outside the lock (waiters keep arriving and raise `requested`), and
        // exactly what was asked for: one flush per request round.
        let result = flush(target);
        let mut state = shared.lock();
        match result {
            Ok(offset) => state.flushed = state.flushed.max(offset.0),
            Err(e) => state.failed = Some(e.to_string()),
        }
        shared.changed.notify_all();
        if state.failed.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A fake log: `written` grows as writers "append"; a flush takes a while and
    /// makes everything up to its target durable, counting how often it ran.
    fn fake_flush(flushes: Arc<AtomicU64>, durable: Arc<AtomicU64>) -> FlushFn {
        Box::new(move |target| {
            std::thread::sleep(Duration::from_millis(5));
            flushes.fetch_add(1, Ordering::SeqCst);
            durable.fetch_max(target.0, Ordering::SeqCst);
            Ok(CommitLogOffset(durable.load(Ordering::SeqCst)))
        })
    }

    #[test]
    fn concurrent_waiters_share_flushes_and_all_return_durable() {
        let flushes = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let mut thread = GroupCommitThread::start(
            CommitLogOffset(0),
            fake_flush(Arc::clone(&flushes), Arc::clone(&durable)),
        );
        let shared = Arc::clone(thread.shared());
        let waiters: Vec<_> = (1..=32u64)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let durable = Arc::clone(&durable);
                std::thread::spawn(move || {
                    shared
                        .wait_durable(CommitLogOffset(i * 100))
                        .expect("flushed");
                    assert!(
                        durable.load(Ordering::SeqCst) >= i * 100,
                        "returned before durable"
                    );
                })
            })
            .collect();
        for waiter in waiters {
            waiter.join().expect("waiter");
        }
        let count = flushes.load(Ordering::SeqCst);
        assert!(
            (1..32).contains(&count),
            "32 waiters should share flushes, took {count}"
        );
        thread.stop();
    }

    #[test]
    fn a_failed_flush_fails_every_waiter() {
        let mut thread = GroupCommitThread::start(
            CommitLogOffset(0),
            Box::new(|_| {
                Err(StoreError::io(
                    "commit log",
                    std::io::Error::other("disk gone"),
                ))
            }),
        );
        let shared = Arc::clone(thread.shared());
        let err = shared
            .wait_durable(CommitLogOffset(10))
            .expect_err("the flush failed");
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert!(
            shared.wait_durable(CommitLogOffset(20)).is_err(),
            "later waiters fail too"
        );
        thread.stop();
    }

    #[test]
    fn a_flush_covers_exactly_the_requested_offset() {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let mut thread = GroupCommitThread::start(
            CommitLogOffset(0),
            Box::new(move |target| {
                seen.lock().expect("lock").push(target.0);
                Ok(target)
            }),
        );
        let shared = Arc::clone(thread.shared());
        shared.wait_durable(CommitLogOffset(100)).expect("flushed");
        shared.wait_durable(CommitLogOffset(250)).expect("flushed");
        shared
            .wait_durable(CommitLogOffset(200))
            .expect("already durable");
        assert_eq!(*targets.lock().expect("lock"), vec![100, 250]);
        thread.stop();
    }
}
