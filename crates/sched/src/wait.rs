//! Waiting: the one mechanism under every blocking primitive (join, Mutex,
//! Condvar, channels).
//!
//! A waiter builds a [`WaitNode`] on its own stack, links it into the
//! primitive's [`WaitQueue`] under the primitive's lock, releases the lock and
//! calls [`WaitNode::wait`]. A waker removes the node under the same lock and
//! calls [`WaitNode::take_waker`] (still under the lock), then, after
//! releasing the lock, [`Waker::wake`].
//!
//! The discipline that keeps this sound without reference counts: a node
//! is dequeued by exactly one waker, which wakes it exactly once. A task
//! waiter then parks until that wake's token arrives (parking at least once),
//! so it cannot leave — and free its stack node or exit — before the waker is
//! done with it; a thread waiter loops on the node's `notified` flag, and the
//! waker copied the thread handle out before setting the flag.

use crate::tcb::Task;
use crate::worker;
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who to wake: a task (parks its task) or a plain OS thread (parks the
/// thread). Tasks inside `blocking` count as threads.
pub(crate) enum Waker {
    Task(*mut Task),
    Thread(std::thread::Thread),
}

// SAFETY: a task pointer is only used to unpark, which is thread-safe.
unsafe impl Send for Waker {}

impl Waker {
    /// The waker for the calling context.
    pub(crate) fn current() -> Waker {
        match worker::current_with_worker() {
            Some((_, _, t)) => Waker::Task(t),
            None => Waker::Thread(std::thread::current()),
        }
    }

    pub(crate) fn wake(self) {
        match self {
            Waker::Task(t) => worker::unpark(t),
            Waker::Thread(th) => th.unpark(),
        }
    }
}

/// Waits for a [`Waker`] obtained by [`Waker::current`] to be woken, until
/// `done()` holds. Tasks park at least once (consuming exactly the token of
/// the one wake they were promised).
pub(crate) fn wait_until(is_task: bool, done: impl Fn() -> bool) {
    if is_task {
        loop {
            worker::park_current();
            if done() {
                return;
            }
        }
    } else {
        while !done() {
            std::thread::park();
        }
    }
}

pub(crate) struct WaitNode<P> {
    waker: UnsafeCell<Option<Waker>>,
    notified: AtomicBool,
    next: UnsafeCell<*mut WaitNode<P>>,
    /// Payload exchanged between waiter and waker (e.g. a channel value),
    /// accessed by the waker under the queue's lock and by the waiter after
    /// `notified`.
    pub(crate) payload: UnsafeCell<P>,
}

impl<P> WaitNode<P> {
    pub(crate) fn new(payload: P) -> WaitNode<P> {
        WaitNode {
            waker: UnsafeCell::new(Some(Waker::current())),
            notified: AtomicBool::new(false),
            next: UnsafeCell::new(ptr::null_mut()),
            payload: UnsafeCell::new(payload),
        }
    }

    /// Waker side, under the queue's lock, on a node just dequeued: marks it
    /// notified and returns the waker to call after unlocking.
    ///
    /// # Safety
    /// `node` was dequeued by the caller and not yet notified.
    pub(crate) unsafe fn take_waker(node: *mut WaitNode<P>) -> Waker {
        // SAFETY: the waiter does not touch `waker` until notified.
        let w = unsafe { (*(*node).waker.get()).take().expect("node woken twice") };
        // SAFETY: the node is alive until the waiter sees `notified`.
        unsafe { (*node).notified.store(true, Ordering::Release) };
        w
    }

    /// Waker side, under the queue's lock, on a queued node not yet
    /// notified: whether its waiter is a task abandoned by its runtime's
    /// shutdown (it will never run again: nothing may be handed to it).
    ///
    /// # Safety
    /// `node` is queued (valid, its waker untouched by the waiter).
    pub(crate) unsafe fn is_abandoned(node: *mut WaitNode<P>) -> bool {
        // SAFETY: per the contract; a task waker's task is valid (abandoned
        // tasks are leaked, never freed).
        unsafe {
            match &*(*node).waker.get() {
                Some(Waker::Task(t)) => (**t).state.load(Ordering::Acquire) == crate::tcb::state::ABANDONED,
                _ => false,
            }
        }
    }

    /// Waiter side, after enqueuing the node and releasing the lock.
    pub(crate) fn wait(&self) {
        // The waker may `take` the node's waker concurrently: decide how to
        // wait from the calling context (the same one `new` recorded).
        let is_task = worker::current_with_worker().is_some();
        wait_until(is_task, || self.notified.load(Ordering::Acquire));
    }
}

/// An intrusive FIFO of wait nodes living on waiters' stacks. Always used
/// under a lock.
pub(crate) struct WaitQueue<P> {
    head: *mut WaitNode<P>,
    tail: *mut WaitNode<P>,
}

// SAFETY: the nodes are owned by waiters blocked until dequeued; the queue is
// only touched under its owner's lock.
unsafe impl<P: Send> Send for WaitQueue<P> {}

impl<P> WaitQueue<P> {
    pub(crate) const fn new() -> Self {
        WaitQueue { head: ptr::null_mut(), tail: ptr::null_mut() }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// # Safety
    /// `node` stays valid (its waiter blocked) until dequeued.
    pub(crate) unsafe fn push(&mut self, node: *mut WaitNode<P>) {
        // SAFETY: per the contract; `tail` is a queued, valid node.
        unsafe {
            *(*node).next.get() = ptr::null_mut();
            if self.tail.is_null() {
                self.head = node;
            } else {
                *(*self.tail).next.get() = node;
            }
        }
        self.tail = node;
    }

    /// Pops the oldest node whose waiter is not an abandoned task; the
    /// abandoned ones before it are dequeued and dropped without a wake
    /// (issue 11 item 7: a lock or notification handed to a dead task is
    /// lost for everyone).
    pub(crate) fn pop_live(&mut self) -> Option<*mut WaitNode<P>> {
        loop {
            let n = self.pop()?;
            // SAFETY: just dequeued by us (under the owner's lock), not yet
            // notified; an abandoned waiter never looks at it again.
            unsafe {
                if !WaitNode::is_abandoned(n) {
                    return Some(n);
                }
                let _ = WaitNode::take_waker(n);
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<*mut WaitNode<P>> {
        if self.head.is_null() {
            return None;
        }
        let n = self.head;
        // SAFETY: queued nodes are valid.
        self.head = unsafe { *(*n).next.get() };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        Some(n)
    }
}
