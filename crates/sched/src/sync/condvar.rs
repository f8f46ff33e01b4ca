//! A condition variable for [`Mutex`]: waiting parks the task.
//!
//! Waiters queue FIFO; `notify_one` wakes the oldest waiter still waiting.
//! A timed waiter ([`Condvar::wait_timeout`]) and `notify_one` race for the
//! waiter's claim (one compare-exchange, see `wait.rs`): a notification
//! either wakes it (it reports "not timed out") or skips it for the next
//! waiter, so a notification is never consumed by a waiter that reports a
//! timeout, and a waiter never reports both.

use super::mutex::{Mutex, MutexGuard};
use crate::spin::SpinLock;
use crate::tasks::wait::{Claim, WaitNode, WaitQueue, Waker};
use std::time::{Duration, Instant};

/// Whether a [`Condvar::wait_timeout`] returned because its time ran out,
/// like `std::sync::WaitTimeoutResult`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended by timeout (no notification woke it).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// A condition variable used with [`Mutex`], like `std::sync::Condvar`.
/// Waiting parks the calling task (or blocks a plain thread). There are no
/// spurious wakeups, but use a loop (or [`Condvar::wait_while`]) anyway: the
/// condition may have changed again by the time the waiter relocks.
pub struct Condvar {
    waiters: SpinLock<WaitQueue<()>>,
}

impl std::fmt::Debug for Condvar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condvar { .. }")
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Condvar {
        Condvar { waiters: SpinLock::new(WaitQueue::new()) }
    }

    /// Atomically unlocks `guard`'s mutex and waits for a notification, then
    /// relocks and returns the guard.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let mutex: &'a Mutex<T> = guard.mutex;
        let waker = Waker::current();
        let task = waker.task();
        let node = WaitNode::with_waker((), waker);
        // SAFETY: the node stays on our stack until dequeued and woken.
        unsafe { self.waiters.lock().push(&node as *const _ as *mut WaitNode<()>) };
        drop(guard);
        node.wait_noted(task, crate::tasks::tcb::wait_kind::CONDVAR, self as *const Self as u64);
        mutex.lock()
    }

    /// Like [`Condvar::wait`], but gives up after `timeout`, like
    /// `std::sync::Condvar::wait_timeout`. Returns the relocked guard and
    /// whether the time ran out. Exactly one of the timer and a notifier
    /// wins the waiter: a waiter that reports `timed_out()` consumed no
    /// notification (it went to another waiter), and one that reports
    /// `!timed_out()` was notified. No spurious wakeups. For tasks the
    /// timeout fires from the runtime's timers (as `usurp::sleep`): never
    /// early, perhaps late under load; from plain threads it blocks the
    /// thread with `park_timeout`.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let mutex: &'a Mutex<T> = guard.mutex;
        let deadline = crate::tasks::wait::deadline_after(timeout);
        let claim = Claim::new();
        let node = WaitNode::with_claim((), &claim, 0);
        let np = &node as *const _ as *mut WaitNode<()>;
        // SAFETY: the node stays on our stack until a notifier that won our
        // claim woke it, or we removed it from the queue (below).
        unsafe { self.waiters.lock().push(np) };
        drop(guard);
        crate::tasks::wait::note_wait(crate::tasks::tcb::wait_kind::CONDVAR, self as *const Self as u64);
        let timed_out = claim.wait(Some(deadline), |_| node.is_notified()).is_none();
        if timed_out {
            // Unlink the node unless a notifier that lost the claim already
            // dequeued it; nobody touches it afterwards.
            self.waiters.lock().remove(np);
        }
        (mutex.lock(), WaitTimeoutResult(timed_out))
    }

    /// Waits while `cond` holds, for at most `timeout` in total, like
    /// `std::sync::Condvar::wait_timeout_while`. `timed_out()` is true if
    /// `cond` still held when the time ran out.
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut cond: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let start = Instant::now();
        loop {
            if !cond(&mut guard) {
                return (guard, WaitTimeoutResult(false));
            }
            let Some(left) = timeout.checked_sub(start.elapsed()) else {
                return (guard, WaitTimeoutResult(true));
            };
            guard = self.wait_timeout(guard, left).0;
        }
    }

    /// Waits while `cond` holds.
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut cond: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while cond(&mut guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// Wakes one waiter, if any.
    pub fn notify_one(&self) {
        let w = {
            let mut q = self.waiters.lock();
            // SAFETY: dequeued by us, not yet notified.
            q.pop_live().map(|n| unsafe { WaitNode::take_waker(n) })
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        let mut wakers = Vec::new();
        {
            let mut q = self.waiters.lock();
            while let Some(n) = q.pop_live() {
                // SAFETY: dequeued by us, not yet notified.
                wakers.push(unsafe { WaitNode::take_waker(n) });
            }
        }
        for w in wakers {
            w.wake();
        }
    }
}
