//! A task-aware mutex: contended lockers park their task (or, on a plain
//! thread, block the thread) instead of spinning. Unlock hands the lock
//! directly to the oldest waiter (FIFO, no barging on the slow path).

use crate::spin::SpinLock;
use crate::tasks::wait::{WaitNode, WaitQueue, Waker};
use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering};

const UNLOCKED: u8 = 0;
const LOCKED: u8 = 1;
/// Locked, and the wait queue may be non-empty.
const CONTENDED: u8 = 2;

/// A mutual-exclusion lock whose `lock` parks the calling task while another
/// holds it. Works from tasks and from plain threads. Unlike
/// `std::sync::Mutex` it does not poison: a panic while locked just unlocks.
pub struct Mutex<T: ?Sized> {
    state: AtomicU8,
    waiters: SpinLock<WaitQueue<()>>,
    data: UnsafeCell<T>,
}

// SAFETY: like std's Mutex: the lock serialises access to `data`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Why [`Mutex::try_lock`] failed, like `std::sync::TryLockError` without
/// the `Poisoned` case (this mutex does not poison).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum TryLockError {
    /// Another holder has the lock.
    WouldBlock,
}

impl fmt::Display for TryLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("try_lock failed because the operation would block")
    }
}
impl std::error::Error for TryLockError {}

/// Proof of holding a [`Mutex`]; unlocks on drop.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(crate) mutex: &'a Mutex<T>,
}

// SAFETY: sharing a guard shares &T.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { state: AtomicU8::new(UNLOCKED), waiters: SpinLock::new(WaitQueue::new()), data: UnsafeCell::new(value) }
    }

    /// Consumes the mutex, returning the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock, parking the task until it is available.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_slow();
        }
        MutexGuard { mutex: self }
    }

    /// Acquires the lock if it is free right now, like
    /// `std::sync::Mutex::try_lock`: `Err(TryLockError::WouldBlock)` if
    /// another holds it. Never blocks. (Before, this returned an `Option`;
    /// `.ok()` gives that back.) There is no `Poisoned` case: this mutex
    /// does not poison. When the lock is taken, a pending checkpoint
    /// request (quantum up, a stop waiting) is honoured before returning,
    /// as `checkpoint()` does, so a task polling `try_lock` in a loop
    /// lets the holder run even on a single worker (one load of a global
    /// word when none is pending).
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError> {
        match self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(MutexGuard { mutex: self }),
            Err(_) => {
                usurp_preempt::checkpoint();
                Err(TryLockError::WouldBlock)
            }
        }
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    #[cold]
    fn lock_slow(&self) {
        let waker = Waker::current();
        let task = waker.task();
        let node = WaitNode::with_waker((), waker);
        {
            let mut q = self.waiters.lock();
            let mut s = self.state.load(Ordering::Relaxed);
            loop {
                if s == UNLOCKED {
                    match self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => return,
                        Err(x) => s = x,
                    }
                } else if s == LOCKED {
                    match self.state.compare_exchange(LOCKED, CONTENDED, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => break,
                        Err(x) => s = x,
                    }
                } else {
                    break;
                }
            }
            // SAFETY: the node lives on our stack until we are woken, which
            // happens only after it is dequeued.
            unsafe { q.push(&node as *const _ as *mut WaitNode<()>) };
        }
        node.wait_noted(task, crate::tasks::tcb::wait_kind::MUTEX, self as *const Self as *const () as u64);
        // The unlocker handed the lock to us (state stays locked).
        std::sync::atomic::fence(Ordering::Acquire);
    }

    fn unlock(&self) {
        if self.state.compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed).is_ok() {
            return;
        }
        self.unlock_slow();
    }

    #[cold]
    fn unlock_slow(&self) {
        let waker = {
            let mut q = self.waiters.lock();
            match q.pop_live() {
                Some(n) => {
                    if q.is_empty() {
                        self.state.store(LOCKED, Ordering::Release);
                    }
                    // SAFETY: dequeued by us, not yet notified.
                    Some(unsafe { WaitNode::take_waker(n) })
                }
                None => {
                    self.state.store(UNLOCKED, Ordering::Release);
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `try_lock`: formatting is no polling point (no checkpoint).
        match self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                let g = MutexGuard { mutex: self };
                f.debug_struct("Mutex").field("data", &&*g).finish()
            }
            Err(_) => f.write_str("Mutex { <locked> }"),
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}
