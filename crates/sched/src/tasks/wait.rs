//! Waiting: the one mechanism under every blocking primitive (join, Mutex,
//! Condvar, channels).
//!
//! A waiter builds a [`WaitNode`] on its own stack, links it into the
//! primitive's [`WaitQueue`] under the primitive's lock, releases the lock and
//! calls [`WaitNode::wait_noted`]. A waker removes the node under the same lock and
//! calls [`WaitNode::take_waker`] (still under the lock), then, after
//! releasing the lock, [`Waker::wake`].
//!
//! The discipline that keeps this sound without reference counts: a node
//! is dequeued by exactly one waker, which wakes it exactly once. A task
//! waiter then parks until that wake's token arrives (parking at least once),
//! so it cannot leave — and free its stack node or exit — before the waker is
//! done with it; a thread waiter loops on the node's `notified` flag, and the
//! waker copied the thread handle out before setting the flag.
//!
//! **Timed and multi-node waits: the claim.** A waiter that can be woken by
//! more than one party — a timed wait (`recv_timeout`, `wait_timeout`:
//! the timer or a waker) or a `Select` (one node per case, in several
//! queues, plus perhaps a timer) — gives its nodes a pointer to one
//! [`Claim`] on its stack. Whoever wants to wake it must first win the
//! claim's single atomic transition, a compare-exchange of `state` from
//! WAITING to either TIMED_OUT (the timer, or a thread waiter whose
//! `park_timeout` ran out) or WON + case index (a waker, under the queue
//! lock of the node it dequeued). Exactly one party wins; only the winner
//! writes a payload, marks its node notified and wakes the waiter, so the
//! waiter is woken exactly once — never by both, never by neither (the
//! timer always fires unless a waker won). A waker that loses skips the node
//! as if it were not queued (the value or notification goes to the next
//! waiter, or the buffer); a timer that loses drops its entry. The waiter,
//! woken, removes its nodes still queued (those whose cases did not win)
//! under their queues' locks, and, if a waker won, its timer entry under
//! the timers lock (see `timer.rs`), before its stack frame goes away; so
//! no one touches its claim or nodes afterwards. Untimed single waits have
//! no claim (a null pointer: the one waker always wins).

use crate::tasks::tcb::TaskRef;
use crate::worker;
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `Claim::state` values; a waker that wins case `i` stores `WON + i`.
pub(crate) mod claim {
    pub(crate) const WAITING: usize = 0;
    pub(crate) const TIMED_OUT: usize = 1;
    pub(crate) const WON: usize = 2;
}

/// Test-only: when false, claims are taken with a plain store instead of a
/// compare-exchange (every party "wins"): the negative control of the
/// exactly-once wake (tests/sched_timeouts.rs). Never false in real use.
pub(crate) static CLAIM_ENABLED: AtomicBool = AtomicBool::new(true);

/// Test-only switch for the negative control of the timed-wait claim (see
/// the `wait` module docs): `false` lets both the timer and a waker "win"
/// a timed wait. Unsound for anything but demonstrating that a test
/// catches the race; the default is `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_wait_claim_for_tests(enabled: bool) {
    CLAIM_ENABLED.store(enabled, Ordering::SeqCst);
}

/// Test-only: when false, waiters that are tasks of a runtime whose
/// shutdown has begun (but which are not abandoned yet) count as live for
/// hand-offs again ([`WaitNode::is_abandoned`]): the negative control of
/// tests/sched_shutdown_handoff.rs. Never false in real use.
pub(crate) static SHUTDOWN_SKIP: AtomicBool = AtomicBool::new(true);

/// Test-only switch for the negative control of the shutdown hand-off rule
/// (see [`WaitNode::is_abandoned`]): `false` lets a mutex unlock, a
/// notification or a sent value go to a parked task of a runtime that is
/// shutting down (which never runs again) until the abandonment. The
/// default is `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_shutdown_skip_for_tests(enabled: bool) {
    SHUTDOWN_SKIP.store(enabled, Ordering::SeqCst);
}

/// The exactly-once arbiter of a timed or multi-node wait (see the module
/// docs). Lives on the waiter's stack; `state` is written only by the
/// compare-exchanges in [`Claim::try_win`] and [`Claim::fire_timeout`] and
/// by the thread waiter's own timeout; `task` is written once at creation.
pub(crate) struct Claim {
    state: AtomicUsize,
    /// The waiting task, to be unparked by the timer; null for a thread
    /// waiter (it times out by itself with `park_timeout`).
    task: Option<TaskRef>,
}

impl Claim {
    /// A claim for the calling context (task holding a worker, or thread).
    pub(crate) fn new() -> Claim {
        let task = worker::Current::get().map(|c| c.task());
        Claim { state: AtomicUsize::new(claim::WAITING), task }
    }

    fn transition(&self, to: usize) -> bool {
        if CLAIM_ENABLED.load(Ordering::Relaxed) {
            self.state.compare_exchange(claim::WAITING, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
        } else {
            self.state.store(to, Ordering::Release);
            true
        }
    }

    /// Waker side: wins case `case` for the waker, or fails if the timer or
    /// another case's waker won first.
    pub(crate) fn try_win(&self, case: usize) -> bool {
        self.transition(claim::WON + case)
    }

    /// Timer side (under the timers lock): times the wait out and unparks
    /// its task, unless a waker won first.
    ///
    /// # Safety
    /// `c` is a registered timer entry's claim (valid: see `timer.rs`).
    pub(crate) unsafe fn fire_timeout(c: *const Claim) {
        // SAFETY: per the contract.
        let c = unsafe { &*c };
        // Copy the task out first: once we win, the waiter may run (after
        // our unpark) and leave.
        let t = c.task;
        if c.transition(claim::TIMED_OUT) {
            if let Some(t) = t {
                worker::unpark(t);
            }
        }
    }

    /// The current state (see [`claim`]).
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    /// Waiter side: waits until a waker won and marked the winning case's
    /// node notified (`notified(case)`), or the wait timed out at
    /// `deadline` (monotonic ns; `None` = never). Returns the winning case,
    /// or `None` on timeout. Afterwards, the caller must remove its nodes
    /// that are still queued (under their queues' locks) before they go
    /// away; the timer entry is already gone.
    pub(crate) fn wait(&self, deadline: Option<u64>, notified: impl Fn(usize) -> bool) -> Option<usize> {
        if self.task.is_some() {
            return self.wait_task(deadline, notified);
        }
        loop {
            let s = self.state();
            if s >= claim::WON {
                if notified(s - claim::WON) {
                    return Some(s - claim::WON);
                }
                std::thread::park(); // the winner unparks us once notified
                continue;
            }
            if s == claim::TIMED_OUT {
                return None; // only reachable with the claim switched off
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = crate::sys::now_ns();
                    if now >= d {
                        if self.transition(claim::TIMED_OUT) {
                            return None;
                        }
                        // A waker won just now: wait for its notification.
                    } else {
                        std::thread::park_timeout(std::time::Duration::from_nanos(d - now));
                    }
                }
            }
        }
    }

    #[inline(never)]
    fn wait_task(&self, deadline: Option<u64>, notified: impl Fn(usize) -> bool) -> Option<usize> {
        let cur = worker::Current::get().expect("claim made by a task waited on elsewhere").task();
        debug_assert_eq!(Some(cur), self.task);
        let sh = cur.shared();
        let key = deadline.map(|d| sh.add_claim_timer(d, self));
        // Exactly one unpark comes: from the winner (timer or waker), after
        // its state change (and, for a waker, after `notified`).
        loop {
            worker::park_current();
            let s = self.state();
            if s == claim::TIMED_OUT {
                // The timer popped its entry when it won: nothing to cancel.
                clear_wait();
                return None;
            }
            if s >= claim::WON && notified(s - claim::WON) {
                if let Some(k) = key {
                    sh.cancel_timer(k);
                }
                clear_wait();
                return Some(s - claim::WON);
            }
        }
    }
}

/// Records what the current task is about to wait for (`tcb::wait_kind`
/// and its argument), for task dumps; the wait functions clear it when the
/// wait ends ([`clear_wait`]). Nothing outside a task. Never inlined and
/// not generic: called from generic primitives that may be inlined into
/// `preemptible!` code, it keeps the runtime's state out of it.
#[inline(never)]
pub(crate) fn note_wait(kind: u8, arg: u64) {
    let t = worker::current_task();
    if !t.is_null() {
        // SAFETY: the current task is valid while it runs; only it writes
        // these fields.
        unsafe {
            (*t).wait_arg.store(arg, Ordering::Relaxed);
            (*t).wait_kind.store(kind, Ordering::Relaxed);
        }
    }
}

/// [`note_wait`] for the current task `t`, already at hand (no
/// thread-local lookup).
#[inline(never)]
pub(crate) fn note_wait_of(t: TaskRef, kind: u8, arg: u64) {
    t.wait_arg.store(arg, Ordering::Relaxed);
    t.wait_kind.store(kind, Ordering::Relaxed);
}

/// Clears what [`note_wait`] recorded (the wait is over).
#[inline(never)]
pub(crate) fn clear_wait() {
    let t = worker::current_task();
    if !t.is_null() {
        // SAFETY: as in `note_wait`.
        unsafe { (*t).wait_kind.store(crate::tasks::tcb::wait_kind::NONE, Ordering::Relaxed) };
    }
}

/// [`clear_wait`] for the current task `t`, already at hand.
#[inline(never)]
pub(crate) fn clear_wait_of(t: TaskRef) {
    t.wait_kind.store(crate::tasks::tcb::wait_kind::NONE, Ordering::Relaxed);
}

/// The monotonic deadline (ns, as `sys::now_ns`) `d` from now, saturating.
pub(crate) fn deadline_after(d: std::time::Duration) -> u64 {
    crate::sys::now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Who to wake: a task (parks its task) or a plain OS thread (parks the
/// thread). Tasks inside `blocking` count as threads.
pub(crate) enum Waker {
    Task(TaskRef),
    Thread(std::thread::Thread),
}

// SAFETY: a task pointer is only used to unpark, which is thread-safe.
unsafe impl Send for Waker {}

impl Waker {
    /// The waker for the calling context.
    pub(crate) fn current() -> Waker {
        match worker::Current::get() {
            Some(c) => Waker::Task(c.task()),
            None => Waker::Thread(std::thread::current()),
        }
    }

    /// The task this waker unparks (`None`: a thread). For a waker from
    /// [`Waker::current`]: the calling task, which waiters pass on to
    /// [`WaitNode::wait_noted`] instead of re-reading the thread-local
    /// state.
    pub(crate) fn task(&self) -> Option<TaskRef> {
        match self {
            Waker::Task(t) => Some(*t),
            Waker::Thread(_) => None,
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
pub(crate) fn wait_until(task: Option<TaskRef>, done: impl Fn() -> bool) {
    if let Some(t) = task {
        loop {
            worker::park_current();
            if done() {
                clear_wait_of(t);
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
    /// The waiter's claim (null: untimed single wait, the waker always
    /// wins) and this node's case index in it. Written at creation.
    claim: *const Claim,
    case: usize,
    /// Payload exchanged between waiter and waker (e.g. a channel value),
    /// accessed by the waker under the queue's lock and by the waiter after
    /// `notified`.
    pub(crate) payload: UnsafeCell<P>,
}

impl<P> WaitNode<P> {
    pub(crate) fn new(payload: P) -> WaitNode<P> {
        WaitNode::with_waker(payload, Waker::current())
    }

    /// [`WaitNode::new`] with the caller's [`Waker::current`], already at
    /// hand (one thread-local lookup per wait instead of three: see
    /// [`WaitNode::wait_noted`]).
    pub(crate) fn with_waker(payload: P, waker: Waker) -> WaitNode<P> {
        WaitNode {
            waker: UnsafeCell::new(Some(waker)),
            notified: AtomicBool::new(false),
            next: UnsafeCell::new(ptr::null_mut()),
            claim: ptr::null(),
            case: 0,
            payload: UnsafeCell::new(payload),
        }
    }

    /// A node of a timed or multi-node wait: wakers must win `claim` (with
    /// this node's `case`) before waking it. `claim` must outlive the node's
    /// time in any queue.
    pub(crate) fn with_claim(payload: P, claim: &Claim, case: usize) -> WaitNode<P> {
        let mut n = WaitNode::new(payload);
        n.claim = claim;
        n.case = case;
        n
    }

    /// Whether a waker marked this node notified (waiter side).
    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Waiter side (or a scan on its behalf): whether the node's claim went
    /// to another case or to the timer. Then no waker writes this node's
    /// payload any more (a waker must win the claim first), so the
    /// waiter's side owns it. `false` for a node without a claim.
    ///
    /// # Safety
    /// The node's claim (if any) is still alive.
    pub(crate) unsafe fn claim_lost(&self) -> bool {
        if self.claim.is_null() {
            return false;
        }
        // SAFETY: per the contract the claim is alive.
        let s = unsafe { (*self.claim).state() };
        s != claim::WAITING && s != claim::WON + self.case
    }

    /// Waker side, under the queue's lock, on a node just dequeued: tries to
    /// win its waiter's claim. `false`: the timer or another case won; the
    /// node must be left alone (as if it had not been queued).
    ///
    /// # Safety
    /// `node` was dequeued by the caller under the queue's lock (its waiter
    /// cannot leave before taking that lock).
    pub(crate) unsafe fn try_claim(node: *mut WaitNode<P>) -> bool {
        // SAFETY: per the contract the node and its claim are alive.
        unsafe {
            let c = (*node).claim;
            c.is_null() || (*c).try_win((*node).case)
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
    /// shutdown, or a task of a runtime whose shutdown has begun (G5,
    /// session 12): nothing may be handed to it (a lock, a notification, a
    /// value), since it may never run again.
    ///
    /// Why "shutdown begun" already counts: `Shared::begin_shutdown` sets
    /// the flag, then the workers stop one by one as they reach their
    /// scheduler, and only after the last one `abandon_remaining` marks
    /// the leftover tasks ABANDONED. A parked waiter seen in between was
    /// otherwise handed the lock or notification, made runnable and, in
    /// general, never run: the mutex stayed locked for everyone, the
    /// notification or value was lost for the live waiters queued behind
    /// it. Skipping it instead is sound: the skipped task is parked (or
    /// about to park) on this node, which we dequeue without marking it
    /// notified and without a wake, and every park is matched by exactly
    /// one unpark from the node's dequeuer, so it stays parked until the
    /// abandonment: it never returns from the wait believing it got what
    /// the next waiter got instead (no double ownership). What it gives up
    /// is only a chance to run on its worker's direct-switch path while
    /// that worker is stopping; the runtime's docs already promise nothing
    /// to a task that has not finished when its worker stops. A task of
    /// the dying runtime that is *running* is unaffected when it takes a
    /// free lock or receives a buffered value. A task inside `blocking`
    /// handed to a spare thread waits as a thread (`Waker::Thread`) and is
    /// served as before (if the runtime is gone when its closure returns,
    /// it keeps what it got: `Runtime` docs); one whose closure runs in
    /// place (a pinned task, or no thread to be had) waits as a task and
    /// is skipped like a parked one. The flag is read with a relaxed load
    /// under the primitive's lock, which orders it only against other
    /// hand-offs, not against `begin_shutdown`: a hand-off that read it
    /// false may race the shutdown's start, and then the task holds what
    /// it got at the shutdown, like a task that took it just before and
    /// was descheduled, and is abandoned holding it (see the `Runtime`
    /// docs); only the ABANDONED state (acquire) says for certain that the
    /// task never runs again.
    ///
    /// # Safety
    /// `node` is queued (valid, its waker untouched by the waiter).
    #[inline]
    pub(crate) unsafe fn is_abandoned(node: *mut WaitNode<P>) -> bool {
        // SAFETY: per the contract; a task waker's task is valid (abandoned
        // tasks are leaked, never freed), and so is its shared state (a
        // task never outlives it: `TaskRef::shared`).
        unsafe {
            match &*(*node).waker.get() {
                Some(Waker::Task(t)) => {
                    t.state.load(Ordering::Acquire) == crate::tasks::tcb::state::ABANDONED
                        || (t.shared().shutdown.load(Ordering::Relaxed) && SHUTDOWN_SKIP.load(Ordering::Relaxed))
                }
                _ => false,
            }
        }
    }

    /// Waker side, under the queue's lock, on a node just dequeued whose
    /// waiter is abandoned ([`WaitNode::is_abandoned`]): whether `addr`
    /// lies on that waiter task's stack (`false` for a thread waiter).
    ///
    /// # Safety
    /// As [`WaitNode::take_waker`].
    pub(crate) unsafe fn waiter_stack_holds(node: *mut WaitNode<P>, addr: usize) -> bool {
        // SAFETY: per the contract the node's waker is untouched by its
        // waiter; an abandoned task is leaked, never freed, and keeps its
        // stack mapping.
        unsafe {
            match &*(*node).waker.get() {
                Some(Waker::Task(t)) => (t.stack.lo()..t.stack.hi()).contains(&addr),
                _ => false,
            }
        }
    }

    /// Waker side, under the queue's lock, on a node just dequeued whose
    /// waiter is abandoned or of a runtime shutting down
    /// ([`WaitNode::is_abandoned`]): claims it (if it can, so that its
    /// timer, if any, cannot wake it either) and drops its waker without a
    /// wake and without marking it notified (should the task ever be
    /// resumed, it would find its wait unfinished, never a hand-off it did
    /// not get). Out of line and cold: dropping a waker (a thread handle's
    /// reference count) inlined into the dequeue paths cost every dequeue
    /// register saves.
    ///
    /// # Safety
    /// As [`WaitNode::take_waker`].
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn drop_abandoned(node: *mut WaitNode<P>) {
        // SAFETY: per the contract; the waiter does not touch `waker` until
        // notified, which it never is by us.
        unsafe {
            if WaitNode::try_claim(node) {
                let _ = (*(*node).waker.get()).take();
            }
        }
    }

    /// Waiter side, after enqueuing the node and releasing the lock: records
    /// the wait ([`note_wait`]`(kind, arg)`) and waits until notified. The
    /// node was made with [`WaitNode::with_waker`] from `Waker::current()`
    /// in this same call and `task` is that waker's [`Waker::task`]: the
    /// waker may `take` the node's waker concurrently, so how to wait is
    /// decided from this copy, not from the node, and without re-reading
    /// the thread-local state: the calling context cannot change in between
    /// (no switch can make a task a thread or the reverse; `blocking` is
    /// entered and left by calls, and a task keeps its identity when it
    /// migrates). A task inside `blocking` (`task` = `None`) still gets its
    /// wait noted through the thread-local lookup, as before.
    pub(crate) fn wait_noted(&self, task: Option<TaskRef>, kind: u8, arg: u64) {
        match task {
            Some(t) => note_wait_of(t, kind, arg),
            None => note_wait(kind, arg),
        }
        wait_until(task, || self.notified.load(Ordering::Acquire));
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

    /// Pops the oldest node whose waiter is not an abandoned task and whose
    /// claim (if any) this call wins: the caller must wake it. Abandoned
    /// ones before it are dequeued and dropped without a wake (issue 11 item
    /// 7: a lock or notification handed to a dead task is lost for
    /// everyone); nodes whose claim is lost (timed out, or another case of a
    /// select won) are dequeued and left to their waiters.
    pub(crate) fn pop_live(&mut self) -> Option<*mut WaitNode<P>> {
        loop {
            let n = self.pop()?;
            // SAFETY: just dequeued by us (under the owner's lock), not yet
            // notified; an abandoned waiter never looks at it again, and a
            // waiter whose claim we lose does not need it.
            unsafe {
                if WaitNode::is_abandoned(n) {
                    WaitNode::drop_abandoned(n);
                    continue;
                }
                if WaitNode::try_claim(n) {
                    return Some(n);
                }
            }
        }
    }

    /// Waiter side, under the owner's lock: removes `node` if it is still
    /// queued (a timed-out or losing node). O(queue length).
    pub(crate) fn remove(&mut self, node: *mut WaitNode<P>) -> bool {
        let mut prev: *mut WaitNode<P> = ptr::null_mut();
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: queued nodes are valid.
            let next = unsafe { *(*cur).next.get() };
            if cur == node {
                if prev.is_null() {
                    self.head = next;
                } else {
                    // SAFETY: as above.
                    unsafe { *(*prev).next.get() = next };
                }
                if self.tail == node {
                    self.tail = prev;
                }
                return true;
            }
            prev = cur;
            cur = next;
        }
        false
    }

    /// Calls `f` with the payload of every queued node (a GC scan of the
    /// values blocked senders offer: `mpsc::scan_buffer`). Under the
    /// owner's lock, like every access to queued payloads.
    pub(crate) fn for_each_payload(&self, mut f: impl FnMut(*const P)) {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: queued nodes are valid (their waiters are blocked
            // until dequeued, under the lock the caller holds).
            unsafe {
                f((*cur).payload.get());
                cur = *(*cur).next.get();
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
