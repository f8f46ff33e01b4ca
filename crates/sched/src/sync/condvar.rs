//! A condition variable for [`Mutex`]: waiting parks the task.

use super::mutex::{Mutex, MutexGuard};
use crate::spin::SpinLock;
use crate::wait::{WaitNode, WaitQueue};

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
        let node = WaitNode::new(());
        // SAFETY: the node stays on our stack until dequeued and woken.
        unsafe { self.waiters.lock().push(&node as *const _ as *mut WaitNode<()>) };
        drop(guard);
        node.wait();
        mutex.lock()
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
