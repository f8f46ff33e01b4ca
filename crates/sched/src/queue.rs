//! Run queues.
//!
//! * [`LocalQueue`]: each worker's bounded ring of runnable tasks, in the
//!   style of Go's `runq`: a single producer (the owning worker pushes at the
//!   tail with a release store) and many consumers (the owner pops at the head,
//!   thieves take half the ring at once; both by CAS on `head`). When the ring
//!   is full, the owner moves half of it to the global queue in one batch.
//! * [`TaskList`]: an intrusive FIFO linked through `Task::next`, used under a
//!   lock for the global injection queue and for each worker's inbox of
//!   forwarded pinned tasks. No allocation: a task is in at most one queue.

use crate::tcb::Task;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Capacity of a worker's ring (a power of two).
pub(crate) const RING: u32 = 256;
/// Half a ring: the size of an overflow batch.
const HALF: usize = RING as usize / 2;

#[repr(align(64))]
pub(crate) struct LocalQueue {
    head: AtomicU32,
    // Written only by the owner; on its own cache line so that thieves'
    // CASes on `head` do not bounce the owner's tail.
    tail: CachePadded<AtomicU32>,
    buf: Box<[AtomicPtr<Task>]>,
}

/// A value on its own cache line(s).
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl LocalQueue {
    pub(crate) fn new() -> Self {
        LocalQueue {
            head: AtomicU32::new(0),
            tail: CachePadded(AtomicU32::new(0)),
            buf: (0..RING).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
        }
    }

    #[inline]
    fn slot(&self, i: u32) -> &AtomicPtr<Task> {
        // SAFETY: the index is reduced modulo the ring size.
        unsafe { self.buf.get_unchecked((i % RING) as usize) }
    }

    /// Number of queued tasks (racy snapshot; for idle checks).
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        let h = self.head.load(Ordering::Acquire);
        let t = self.tail.0.load(Ordering::Acquire);
        t.wrapping_sub(h)
    }

    /// Owner only. Pushes at the tail; if the ring is full, returns `t`
    /// together with half of the ring as a list for the global queue.
    #[inline]
    pub(crate) fn push(&self, t: *mut Task) -> Option<TaskList> {
        loop {
            let h = self.head.load(Ordering::Acquire);
            let tl = self.tail.0.load(Ordering::Relaxed);
            if tl.wrapping_sub(h) < RING {
                self.slot(tl).store(t, Ordering::Relaxed);
                self.tail.0.store(tl.wrapping_add(1), Ordering::Release);
                return None;
            }
            if let Some(list) = self.push_overflow(t, h, tl) {
                return Some(list);
            }
        }
    }

    /// Moves half of a full ring (and `t`) into a list for the global
    /// queue. The batch is copied to a fixed array on the stack first (no
    /// allocation: this runs on task stacks, on the spawn and wake paths):
    /// the tasks' links may only be written once the CAS has made them ours.
    #[cold]
    fn push_overflow(&self, t: *mut Task, h: u32, tl: u32) -> Option<TaskList> {
        let n = tl.wrapping_sub(h) / 2;
        debug_assert!(n as usize <= HALF);
        let mut batch = [ptr::null_mut::<Task>(); HALF];
        for (i, b) in batch.iter_mut().enumerate().take(n as usize) {
            *b = self.slot(h.wrapping_add(i as u32)).load(Ordering::Relaxed);
        }
        if self.head.compare_exchange(h, h.wrapping_add(n), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return None; // thieves made room; retry the fast path
        }
        let mut list = TaskList::new();
        for &x in &batch[..n as usize] {
            list.push_back(x);
        }
        list.push_back(t);
        Some(list)
    }

    /// Owner only. Pops the oldest task.
    #[inline]
    pub(crate) fn pop(&self) -> Option<*mut Task> {
        loop {
            let h = self.head.load(Ordering::Acquire);
            let t = self.tail.0.load(Ordering::Relaxed);
            if h == t {
                return None;
            }
            let x = self.slot(h).load(Ordering::Relaxed);
            if self.head.compare_exchange_weak(h, h.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Some(x);
            }
        }
    }

    /// Called by a thief (the owner of `dst`): moves about half of `self`'s
    /// tasks into `dst` (which must be empty) and returns one of them to run.
    pub(crate) fn steal_into(&self, dst: &LocalQueue) -> Option<*mut Task> {
        let dt = dst.tail.0.load(Ordering::Relaxed);
        let n = loop {
            let h = self.head.load(Ordering::Acquire);
            let t = self.tail.0.load(Ordering::Acquire);
            let avail = t.wrapping_sub(h);
            let n = avail - avail / 2;
            if n == 0 {
                return None;
            }
            if n > RING / 2 {
                continue; // inconsistent snapshot (h and t read at different times)
            }
            for i in 0..n {
                let x = self.slot(h.wrapping_add(i)).load(Ordering::Relaxed);
                dst.slot(dt.wrapping_add(i)).store(x, Ordering::Relaxed);
            }
            if self.head.compare_exchange(h, h.wrapping_add(n), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                break n;
            }
        };
        let last = dt.wrapping_add(n - 1);
        let x = dst.slot(last).load(Ordering::Relaxed);
        if n > 1 {
            dst.tail.0.store(last, Ordering::Release);
        }
        Some(x)
    }
}

/// An intrusive FIFO of tasks linked through `Task::next`.
pub(crate) struct TaskList {
    head: *mut Task,
    tail: *mut Task,
    len: usize,
}

// SAFETY: the list only holds pointers to tasks, which are Send; access is
// guarded by whoever owns the list.
unsafe impl Send for TaskList {}

impl TaskList {
    pub(crate) const fn new() -> Self {
        TaskList { head: ptr::null_mut(), tail: ptr::null_mut(), len: 0 }
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn push_back(&mut self, t: *mut Task) {
        // SAFETY: `t` is a live task not in any other queue; we own its link.
        unsafe { (*t).next.set(ptr::null_mut()) };
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: `tail` is a live task in this list.
            unsafe { (*self.tail).next.set(t) };
        }
        self.tail = t;
        self.len += 1;
    }
    pub(crate) fn pop_front(&mut self) -> Option<*mut Task> {
        if self.head.is_null() {
            return None;
        }
        let t = self.head;
        // SAFETY: `t` is a live task in this list.
        self.head = unsafe { (*t).next.get() };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        Some(t)
    }
    pub(crate) fn append(&mut self, other: TaskList) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is a live task in this list.
            unsafe { (*self.tail).next.set(other.head) };
        }
        self.tail = other.tail;
        self.len += other.len;
    }
}
