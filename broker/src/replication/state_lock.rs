//! The lock around the group state, with the one rule that keeps it from
//! deadlocking: **a thread holds at most one guard of it at a time.**
//!
//! `std::sync::RwLock` (futex-based on Linux) queues a new reader behind a
//! waiting writer. The state machine's apply is that writer, all the time under
//! load. A thread that takes a second read guard while its first one lives
//! therefore deadlocks as soon as apply arrives between the two: apply waits for
//! the first guard, the second read waits for apply. With two tokio workers
//! that is the whole node — Raft heartbeats included — silent until killed.
//! `Node::registration` did exactly that (a temporary guard in one struct field,
//! a second guard in the next); `broker/tests/group_state_lock.rs` shows it.
//!
//! A guard taken while the same thread already holds one of the same lock
//! panics at once, before it waits, naming the mistake: every path that breaks
//! the rule fails in tests on its first run instead of hanging a node once in a
//! while under load. A guard is `!Send` (it holds a std guard), and every
//! future that could hold one across an `.await` must be `Send` (spawned tasks,
//! axum handlers, openraft's futures), so a guard never moves to another
//! thread: "held by this thread" is exactly "held by the code now running here".

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::group_state::GroupState;

thread_local! {
    /// The addresses of the state locks this thread holds a guard of (almost
    /// always none or one: several nodes may share a test process).
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The group state behind its lock (see the module doc for the rule).
pub struct StateLock {
    inner: RwLock<GroupState>,
}

/// Marks the lock as held by this thread for as long as it lives.
struct Held {
    lock: usize,
}

impl Held {
    /// # Panics
    /// This thread already holds a guard of `lock`.
    fn enter(lock: &StateLock, wanted: &str) -> Self {
        let lock = std::ptr::from_ref(lock) as usize;
        HELD.with_borrow_mut(|held| {
            assert!(
                !held.contains(&lock),
                "the group state's lock taken for {wanted} by a thread that already \
                 holds it: with apply waiting to write, that deadlocks the node \
                 (take one guard and read everything through it)"
            );
            held.push(lock);
        });
        Self { lock }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with_borrow_mut(|held| {
            if let Some(at) = held.iter().rposition(|&l| l == self.lock) {
                held.swap_remove(at);
            }
        });
    }
}

/// Read access to the group state. Fields drop in order: the lock is released
/// before the thread's mark is cleared.
pub struct StateRead<'a> {
    guard: RwLockReadGuard<'a, GroupState>,
    _held: Held,
}

/// Write access to the group state (apply and snapshot install only).
pub struct StateWrite<'a> {
    guard: RwLockWriteGuard<'a, GroupState>,
    _held: Held,
}

impl StateLock {
    pub fn new(state: GroupState) -> Self {
        Self {
            inner: RwLock::new(state),
        }
    }

    /// # Panics
    /// This thread already holds a guard of this lock (see the module doc).
    pub fn read(&self) -> StateRead<'_> {
        let held = Held::enter(self, "reading");
        StateRead {
            guard: self.inner.read().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }

    /// # Panics
    /// This thread already holds a guard of this lock (see the module doc).
    pub fn write(&self) -> StateWrite<'_> {
        let held = Held::enter(self, "writing");
        StateWrite {
            guard: self.inner.write().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }
}

impl Deref for StateRead<'_> {
    type Target = GroupState;

    fn deref(&self) -> &GroupState {
        &self.guard
    }
}

impl Deref for StateWrite<'_> {
    type Target = GroupState;

    fn deref(&self) -> &GroupState {
        &self.guard
    }
}

impl DerefMut for StateWrite<'_> {
    fn deref_mut(&mut self) -> &mut GroupState {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_one_after_another_are_fine() {
        let lock = StateLock::new(GroupState::default());
        for _ in 0..3 {
            let read = lock.read();
            drop(read);
            let write = lock.write();
            drop(write);
        }
        // Two locks (two nodes in one process) may be held together.
        let other = StateLock::new(GroupState::default());
        let _a = lock.read();
        let _b = other.read();
    }

    #[test]
    #[should_panic(expected = "already holds it")]
    fn a_second_read_guard_on_one_thread_panics_instead_of_waiting() {
        let lock = StateLock::new(GroupState::default());
        let _first = lock.read();
        let _second = lock.read();
    }

    #[test]
    #[should_panic(expected = "already holds it")]
    fn a_write_while_reading_on_one_thread_panics_instead_of_waiting() {
        let lock = StateLock::new(GroupState::default());
        let _read = lock.read();
        let _write = lock.write();
    }

    #[test]
    fn the_mark_is_cleared_when_a_guard_drops_even_by_unwinding() {
        let lock = StateLock::new(GroupState::default());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _read = lock.read();
            panic!("a reader failed");
        }));
        assert!(unwound.is_err());
        let _again = lock.write();
    }

    #[test]
    fn other_threads_read_while_one_thread_holds_a_guard() {
        let lock = StateLock::new(GroupState::default());
        let _mine = lock.read();
        std::thread::scope(|scope| {
            scope.spawn(|| drop(lock.read()));
        });
    }
}
