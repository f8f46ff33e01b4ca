//! Workers, machines and the context switch protocol.
//!
//! A *worker* (Go's P) owns the scheduling state: a ring of runnable tasks, a
//! LIFO `runnext` slot, a free cache of task structs, an inbox for pinned
//! tasks, and the hook state the preemption and GC crates read
//! (`switch_count`, `running_task`). A *machine* (Go's M) is an OS thread; it
//! runs a worker's scheduler loop on its own stack. Normally worker i is
//! driven by machine i; `blocking(f)` hands a worker to a spare machine while
//! the calling machine blocks.
//!
//! Switching is direct task-to-task whenever the worker has a task ready
//! (runnext or ring): the outgoing task picks its successor on its own stack,
//! then `switch`es with an *action word* (`outgoing task | action`). The
//! incoming context — whichever it is: a resumed task, a new task's entry, or
//! the scheduler loop — runs [`finish_switch`] first, which does what the
//! outgoing task could not do while its registers were still live: put it in
//! a run queue (yield), complete parking (park), recycle it (exit), queue it
//! globally (return from blocking), or queue it pinned (async preemption).
//! Only when nothing is ready locally does a task switch to its machine's
//! scheduler loop, which searches globally, steals, fires timers, and sleeps
//! on a futex when there is nothing at all.

use crate::arch;
use crate::queue::{CachePadded, LocalQueue, TaskList};
use crate::runtime::Shared;
use crate::sys::{futex_wait, futex_wake, now_ns};
use crate::tcb::{park, state, Task, NO_PIN};
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

// Actions passed in the low bits of the switch argument.
const A_YIELD: usize = 1;
const A_PARK: usize = 2;
const A_EXIT: usize = 3;
const A_REQUEUE: usize = 4;
const A_PREEMPT: usize = 5;
/// The outgoing task calls `blocking` and moves to the spare thread in
/// `Worker::adopt_to` (see `blocking_dyn`).
const A_ADOPT: usize = 6;
/// Async preemption while another task waits: the outgoing task goes to
/// the global queue (see [`preempted_goes_global`]).
const A_PREEMPT_GLOBAL: usize = 7;
const A_MASK: usize = 7;

/// Every this many schedules a worker goes through its full scheduler loop
/// (global queue, inbox, timers, shutdown) even if local work is ready.
const FAIR_TICKS: u32 = 61;
/// How many boosted picks (the woken FIFO, then `runnext`) in a row may win
/// over the ring before a ring task gets a turn: the bound of the latency
/// boost (issue 11), so tasks that wake each other in a loop cannot starve
/// tasks that used up their quantum.
const RUNNEXT_STREAK: u32 = 32;

/// Test-only switch (negative controls of latency fairness, issue 11), set
/// through `hooks::set_boost_policy_for_tests` and
/// `hooks::set_boost_first_version_for_tests`: 0 normal; [`BOOST_OFF`]:
/// woken tasks displaced from `runnext` go to the back of the ring (no woken
/// FIFO), as before; [`BOOST_UNBOUNDED`]: boosted picks always win over the
/// ring (no streak bound); [`BOOST_FIRST_VERSION`]: the first version of
/// the woken FIFO, which starved it beside a ping-pong pair (see
/// `Worker::take_boosted`): boosted picks take `runnext` before the FIFO,
/// and a wake from the scheduler loop goes straight to the FIFO's back.
pub(crate) static BOOST_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub(crate) const BOOST_OFF: u8 = 1;
pub(crate) const BOOST_UNBOUNDED: u8 = 2;
pub(crate) const BOOST_FIRST_VERSION: u8 = 3;
/// How long an idle worker leaves a task in the `runnext` slot of a worker
/// that is running a task before stealing it (Go waits 3 µs: a switch takes
/// well under a microsecond, so the owner would have taken it by then).
const RUNNEXT_GRACE_NS: u64 = 5_000;
/// Test-only switch (negative control of the spinner's wake-up, issue 11
/// review), set through `hooks::set_spinner_wakep_for_tests`: `true`
/// (normal): a spinning worker that finds work wakes an idle worker
/// (`Worker::find_runnable`); `false`: it does so only when the global
/// queue or its own ring holds more tasks, as before, so with three or more
/// workers a second task made runnable while it searched can wait on a busy
/// worker while another worker sleeps.
pub(crate) static SPINNER_WAKEP: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative control of uneven loop splits, issue 11), set
/// through `hooks::set_preempted_to_global_for_tests`: `true` (normal): an
/// async-preempted task that may migrate goes to the global queue when
/// [`preempted_goes_global`] says so; `false`: always to its worker's
/// ring, as before.
pub(crate) static PREEMPTED_TO_GLOBAL: AtomicBool = AtomicBool::new(true);
/// Rounds of searching before an idle worker sleeps.
const SPIN_ROUNDS: u32 = 64;
/// Tasks kept in a worker's free cache.
pub(crate) const FREE_CACHE: usize = 64;

/// Test-only switch (negative controls of "tick only when someone waits",
/// issue 12), set through `hooks::set_tick_policy_for_tests`: 0 normal;
/// [`TICK_ALWAYS`]: workers always report themselves contended, so their
/// quantum timers tick whenever they are busy, as before; [`TICK_NO_WAKE`]:
/// wakers never mark workers contended (only a worker's own picks do), so
/// a task made runnable while every worker runs a loop is never served.
pub(crate) static TICK_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub(crate) const TICK_ALWAYS: u8 = 1;
pub(crate) const TICK_NO_WAKE: u8 = 2;

/// `set_contended(true)` from a waker, out of line (the wake path stays
/// small: the flag is usually set already).
#[cold]
#[inline(never)]
fn contend_slow(s: &usurp_preempt::WorkerSlot) {
    if wakers_contend() {
        let _ = s.set_contended(true);
    }
}

/// Whether wakers mark workers contended (false only under the
/// `TICK_NO_WAKE` test policy).
#[inline]
pub(crate) fn wakers_contend() -> bool {
    TICK_POLICY.load(Ordering::Relaxed) != TICK_NO_WAKE
}

/// Per-OS-thread state of a runtime thread.
pub(crate) struct Machine {
    /// Saved SP of this thread's scheduler loop while a task runs.
    pub(crate) sched_sp: UnsafeCell<usize>,
    /// The worker this thread drives, or null (spare, or inside `blocking`).
    pub(crate) worker: Cell<*const Worker>,
    /// The task running on this thread, or null in the scheduler loop.
    pub(crate) current: Cell<*mut Task>,
    pub(crate) shared: Arc<Shared>,
    /// Futex word a spare thread sleeps on.
    pub(crate) spare_word: AtomicU32,
    /// Worker handed to this spare thread.
    pub(crate) handoff: AtomicPtr<Worker>,
    /// A task handed to this spare thread to run its `blocking` closure (the
    /// task's worker keeps tasks pinned to its thread). Written (release) by
    /// the thread that popped this spare, in `finish_switch(A_ADOPT)`;
    /// taken by this thread.
    pub(crate) adopt: AtomicPtr<Task>,
    /// With `adopt`: where to resume the task (its saved SP from the switch
    /// away), and the SP of its register-spill frame (what it records as
    /// its saved SP while the closure runs). Written before `adopt` is
    /// published (`adopt_sp` by the adopted task while it owns this spare).
    pub(crate) adopt_resume: AtomicUsize,
    pub(crate) adopt_sp: AtomicUsize,
}

// SAFETY: the Cells are touched only by the owning thread; other threads use
// only the atomics (spare_word, handoff).
unsafe impl Sync for Machine {}

thread_local! {
    static MACHINE: Cell<*mut Machine> = const { Cell::new(ptr::null_mut()) };
}

/// This thread's machine, or null outside runtime threads.
///
/// Tasks migrate between threads. LLVM may keep a thread-local's address in a
/// register across a call (llvm-project#98479), which after a switch would be
/// another thread's. This accessor is never inlined and contains an asm
/// barrier (treated as having side effects), so every call really re-reads
/// the thread pointer of the thread it runs on.
#[inline(never)]
pub(crate) fn machine() -> *mut Machine {
    // SAFETY: an empty asm statement; it touches nothing.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
    MACHINE.with(|m| m.get())
}

/// Signal-handler variant of [`machine`]: the thread-local is const-initialised
/// without a destructor, so reading it allocates nothing and takes no lock.
pub(crate) fn machine_in_signal() -> *mut Machine {
    MACHINE.try_with(|m| m.get()).unwrap_or(ptr::null_mut())
}

/// The current task and its worker, if called from a task that currently
/// holds a worker (i.e. not inside `blocking`).
#[inline]
pub(crate) fn current_with_worker() -> Option<(&'static Machine, &'static Worker, *mut Task)> {
    let m = machine();
    if m.is_null() {
        return None;
    }
    // SAFETY: a machine lives as long as its thread; we are on that thread.
    let m = unsafe { &*m };
    let cur = m.current.get();
    let w = m.worker.get();
    if cur.is_null() || w.is_null() {
        return None;
    }
    // SAFETY: the worker is owned by this thread while it is set in `m`.
    Some((m, unsafe { &*w }, cur))
}

/// The current task (also inside `blocking`), or null.
#[inline]
pub(crate) fn current_task() -> *mut Task {
    let m = machine();
    if m.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: as in `current_with_worker`.
    unsafe { (*m).current.get() }
}

#[repr(align(64))]
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) shared: *const Shared,
    pub(crate) queue: LocalQueue,
    /// The task to run next (LIFO slot for tasks spawned or woken by the
    /// running task). Written by the owner (swap in `make_runnable`, swap to
    /// null in `next_local`); an idle worker may take it with a CAS from
    /// non-null to null after a grace period (`steal_runnext`). Whoever
    /// swaps/CASes a task out of the slot owns it. On its own cache line:
    /// idle workers read it while the owner switches.
    pub(crate) runnext: CachePadded<AtomicPtr<Task>>,
    /// Woken tasks waiting for a boosted pick (latency fairness, issue 11):
    /// a woken task displaced from `runnext` by a later wake or spawn moves
    /// here, so `runnext` holds the newest task and this FIFO the older
    /// woken ones, in wake order. Boosted picks take its front before
    /// `runnext` (oldest first: see `take_boosted`), before the ring, within
    /// the streak bound. Pushed and popped by the owner under the lock; a
    /// thief takes its front under the lock (`steal`).
    pub(crate) woken: crate::spin::SpinLock<TaskList>,
    /// `woken.len()`, written under the `woken` lock (SeqCst), read without
    /// it for idle and contention checks.
    pub(crate) woken_len: AtomicUsize,
    /// The outgoing task of the switch in progress (see `switch_to`).
    prev: Cell<*mut Task>,
    tick: Cell<u32>,
    streak: Cell<u32>,
    rng: Cell<u32>,
    pub(crate) free: UnsafeCell<Vec<*mut Task>>,
    /// Tasks pinned to this worker that other workers found in their queues.
    pub(crate) inbox: crate::spin::SpinLock<TaskList>,
    pub(crate) inbox_len: AtomicUsize,
    /// Tasks pinned here (queued or running) that have not switched
    /// cooperatively since; while nonzero, `blocking` does not hand off the
    /// worker (it moves the calling task to a spare thread instead).
    pinned: Cell<usize>,
    /// The spare thread the outgoing task moves to (`A_ADOPT`); set by the
    /// running task right before its switch, taken by `finish_switch` on
    /// the same thread.
    adopt_to: Cell<*const Machine>,
    /// Per other worker, for runnext stealing: (its `switch_count` when
    /// this worker last looked, when it first saw that value). Touched only
    /// by the thread driving this worker (in `steal_runnext`).
    watch: Box<[Cell<(u64, u64)>]>,
    /// The runtime has this one worker: nobody steals from `runnext` and
    /// there is no idle worker to wake, so its owner uses plain loads and
    /// stores on it (no locked read-modify-write on the wake path).
    solo: bool,
    pub(crate) idle: AtomicBool,
    pub(crate) sleep_word: AtomicU32,
    /// Incremented on every task switch on this worker (preemption hook).
    /// Not a duplicate of `WorkerSlot::switches`: that one counts per OS
    /// thread (a worker changes threads at a `blocking` handoff) and exists
    /// only with async preemption on; this one counts per worker, always
    /// (runnext stealing and the hooks read it).
    pub(crate) switch_count: AtomicU64,
    /// Address of the task on this worker's CPU, or 0 (preemption hook).
    pub(crate) running_task: AtomicUsize,
    /// Preemption slot of the thread driving this worker (null if that
    /// thread has none: async preemption off). See `preempt_glue.rs`.
    pub(crate) slot: AtomicPtr<usurp_preempt::WorkerSlot>,
    /// `arch::cycles()` when the running task was switched in (per-task CPU
    /// time, issue 15; see [`Worker::charge`]). Touched only by the thread
    /// driving the worker.
    run_since: Cell<u64>,
}

// SAFETY: the Cells and UnsafeCells are touched only by the thread currently
// driving the worker (handed over with release/acquire in `handoff`); the rest
// are atomics or locks.
unsafe impl Sync for Worker {}
// SAFETY: as above.
unsafe impl Send for Worker {}

impl Worker {
    pub(crate) fn new(index: usize, nworkers: usize, shared: *const Shared) -> Worker {
        Worker {
            index,
            shared,
            queue: LocalQueue::new(),
            runnext: CachePadded(AtomicPtr::new(ptr::null_mut())),
            woken: crate::spin::SpinLock::new(TaskList::new()),
            woken_len: AtomicUsize::new(0),
            prev: Cell::new(ptr::null_mut()),
            tick: Cell::new(0),
            streak: Cell::new(0),
            rng: Cell::new(0x9E37_79B9 ^ (index as u32).wrapping_mul(0x85EB_CA6B) | 1),
            free: UnsafeCell::new(Vec::with_capacity(FREE_CACHE)),
            inbox: crate::spin::SpinLock::new(TaskList::new()),
            inbox_len: AtomicUsize::new(0),
            pinned: Cell::new(0),
            adopt_to: Cell::new(ptr::null()),
            watch: (0..nworkers).map(|_| Cell::new((u64::MAX, 0))).collect(),
            solo: nworkers == 1,
            idle: AtomicBool::new(false),
            sleep_word: AtomicU32::new(0),
            switch_count: AtomicU64::new(0),
            running_task: AtomicUsize::new(0),
            slot: AtomicPtr::new(ptr::null_mut()),
            run_since: Cell::new(0),
        }
    }

    /// Adds the CPU time `t` used since it was switched in to `t.cpu`, and
    /// restarts the count (for the next task, or for `t` if it goes on
    /// running). One cycle-counter read, no system call, no locked RMW:
    /// only the thread running `t` writes `t.cpu`.
    #[inline]
    fn charge(&self, t: *mut Task) {
        let now = arch::cycles();
        // SAFETY: `t` is the task running on this thread.
        let cpu = unsafe { &(*t).cpu };
        let used = now.saturating_sub(self.run_since.get());
        cpu.store(cpu.load(Ordering::Relaxed).wrapping_add(used), Ordering::Relaxed);
        self.run_since.set(now);
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: workers live inside their Shared.
        unsafe { &*self.shared }
    }

    #[inline]
    fn bump_switch(&self) {
        // Only the driving thread writes: a plain load+store, no locked RMW.
        let c = self.switch_count.load(Ordering::Relaxed);
        self.switch_count.store(c.wrapping_add(1), Ordering::Relaxed);
    }

    fn next_rand(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }

    /// True if `t` may run here; otherwise forwards it to the worker it is
    /// pinned to.
    #[inline]
    fn claim(&self, t: *mut Task) -> bool {
        // The common case inline (one load; no call on the switch path):
        // unpinned, or pinned here.
        // SAFETY: we own `t`, just taken out of a queue.
        let p = unsafe { (*t).pinned_worker.get() };
        if p == NO_PIN || p == self.index {
            return true;
        }
        self.shared().claim_for(self, t)
    }

    /// The fast-path choice of the next task: runnext or the ring; null when
    /// nothing is ready locally or when a periodic full schedule is due.
    #[inline]
    fn next_fast(&self) -> *mut Task {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick % FAIR_TICKS == 0 || self.stopping() {
            return ptr::null_mut();
        }
        self.next_local()
    }

    /// Whether a stop-the-world is requested: then every switch goes to the
    /// scheduler loop, which parks (see `stw.rs`).
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.shared().stw.stop.load(Ordering::Relaxed)
    }

    #[inline]
    fn next_local(&self) -> *mut Task {
        loop {
            let rn = self.runnext.0.load(Ordering::Relaxed);
            // Boosted picks first (the woken FIFO, then runnext), at most
            // RUNNEXT_STREAK in a row. Taking runnext: a thief may have
            // taken it since the load (`take_runnext` then returns null).
            let mut t = ptr::null_mut();
            if (!rn.is_null() || self.woken_len.load(Ordering::Relaxed) != 0)
                && (self.streak.get() < RUNNEXT_STREAK || BOOST_POLICY.load(Ordering::Relaxed) == BOOST_UNBOUNDED)
            {
                t = self.take_boosted();
                if !t.is_null() {
                    self.streak.set(self.streak.get() + 1);
                }
            }
            if t.is_null() {
                self.streak.set(0);
                t = match self.queue.pop() {
                    Some(t) => t,
                    None => {
                        let t = self.take_boosted();
                        if t.is_null() {
                            return t;
                        }
                        t
                    }
                };
            }
            if self.claim(t) {
                return t;
            }
        }
    }

    /// Owner only: the next boosted task, oldest wake first: the front of
    /// the woken FIFO, else `runnext` (or null).
    ///
    /// The order is what keeps a woken task from waiting forever. `runnext`
    /// always holds the newest task (a wake or spawn displaces its occupant,
    /// a woken one to the back of the FIFO), so taking the FIFO first makes
    /// boosted picks FIFO in wake order: a woken task waits for at most the
    /// boosted tasks woken before it, plus one ring pick per
    /// `RUNNEXT_STREAK`. The first version took `runnext` first: beside a
    /// ping-pong pair (each task wakes the other into `runnext`, then parks)
    /// the slot was full at every pick and the FIFO was never reached, nor
    /// stolen from (the other worker was busy too). That was the hang of
    /// `usurp-stress --workers 2 --tasks 20` (2 runs in 61; 3 in ~110 here):
    /// its main task, woken from its 2 s sleep by a timer fired in the
    /// scheduler loop, sat in worker 0's FIFO behind two sleepers while
    /// `pingpong-0`/`-1` filled `runnext` forever, so it never set the stop
    /// flag; the GC kept stopping and starting the world meanwhile, which is
    /// why a stack dump looked like a worker parked for a stop (it was one
    /// of the ~500 stops a second, not a stuck one). Regression test:
    /// `tests/sched_fairness.rs` `woken_fifo_not_starved_by_runnext` (with
    /// [`BOOST_FIRST_VERSION`] as its negative control).
    #[inline]
    fn take_boosted(&self) -> *mut Task {
        if BOOST_POLICY.load(Ordering::Relaxed) == BOOST_FIRST_VERSION {
            let t = self.take_runnext();
            if !t.is_null() {
                return t;
            }
            return self.take_woken();
        }
        let t = self.take_woken();
        if !t.is_null() {
            return t;
        }
        self.take_runnext()
    }

    /// Takes the front of the woken FIFO (owner or thief), or null.
    #[inline]
    fn take_woken(&self) -> *mut Task {
        if self.woken_len.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        let mut q = self.woken.lock();
        let t = q.pop_front().unwrap_or(ptr::null_mut());
        self.woken_len.store(q.len(), Ordering::SeqCst);
        t
    }

    /// Owner only: a task just displaced from `runnext` (so owned by this
    /// thread): a woken one keeps its boost (woken FIFO), a spawned one goes
    /// to the back of the ring.
    #[inline]
    fn push_displaced(&self, t: *mut Task) {
        // SAFETY: we own `t`; its flag was written on this thread when it
        // was put in `runnext` (only the owner fills the slot).
        if unsafe { (*t).woken.get() } {
            self.push_woken(t);
        } else {
            self.push_local(t);
        }
    }

    /// Owner only: queues a woken task for a boosted pick (at the back of
    /// the ring instead under the `BOOST_OFF` test switch).
    #[inline]
    fn push_woken(&self, t: *mut Task) {
        if BOOST_POLICY.load(Ordering::Relaxed) == BOOST_OFF {
            self.push_local(t);
            return;
        }
        let mut q = self.woken.lock();
        q.push_back(t);
        self.woken_len.store(q.len(), Ordering::SeqCst);
    }

    /// Owner only: empties the runnext slot; returns its task (or null).
    #[inline]
    fn take_runnext(&self) -> *mut Task {
        let t = self.runnext.0.load(Ordering::Relaxed);
        if t.is_null() {
            return t;
        }
        if self.solo {
            self.runnext.0.store(ptr::null_mut(), Ordering::Relaxed);
            return t;
        }
        // The swap decides between the owner and a thief (`steal_runnext`).
        self.runnext.0.swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// Pushes `t` on the ring; overflow goes to the global queue (and wakes
    /// an idle worker for it, or marks the busy ones contended).
    #[inline]
    pub(crate) fn push_local(&self, t: *mut Task) {
        if let Some(list) = self.queue.push(t) {
            let sh = self.shared();
            sh.push_global_list(list);
            sh.notify_global();
        }
    }

    /// Whether runnable work waits for this worker: its ring, `runnext`, its
    /// inbox, or the global queue. Another worker's ring needs no look: that
    /// worker marks itself contended when it fills it, so its own ticks
    /// serve it (and an idle worker steals it). SeqCst loads: the second
    /// half of the Dekker handshake in [`Worker::update_contention`].
    #[inline]
    fn work_waits(&self) -> bool {
        self.queue.len() != 0
            || !self.runnext.0.load(Ordering::SeqCst).is_null()
            || self.woken_len.load(Ordering::SeqCst) != 0
            || self.inbox_len.load(Ordering::SeqCst) != 0
            || self.shared().global_len.load(Ordering::SeqCst) != 0
    }

    /// "Tick only when someone waits" (issue 12), the worker's half: called
    /// each time the scheduler loop picks the next task. Marks the thread's
    /// preemption slot contended if work waits for this worker (its quantum
    /// timer ticks), uncontended otherwise (no signal at all: a running loop
    /// keeps its CPU undisturbed). Clearing races with wakers, who publish
    /// work and then set the flag if they read it clear
    /// (`Shared::contend_busy`, `make_runnable`, `claim_for`): the clear is
    /// a SeqCst swap followed by a SeqCst fence and a second look at the
    /// queues, so either the waker sees the flag clear (and sets it, arming
    /// the timer), or this second look sees its work.
    #[inline]
    fn update_contention(&self) {
        // SAFETY: slots are `'static`.
        let Some(s) = (unsafe { self.slot.load(Ordering::Relaxed).as_ref() }) else { return };
        if TICK_POLICY.load(Ordering::Relaxed) == TICK_ALWAYS || self.work_waits() {
            if !s.is_contended() {
                let _ = s.set_contended(true);
            }
            return;
        }
        if !s.is_contended() {
            return;
        }
        let _ = s.set_contended(false);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.work_waits() {
            let _ = s.set_contended(true);
        }
    }

    /// The direct-switch half: a task-to-task switch only *raises* the
    /// contention flag (the outgoing task is requeued, or work waits); it
    /// never clears it, which would need a full fence on every switch. A
    /// stale flag costs at most one tick: the next preemption (or the
    /// periodic full schedule, every 61 schedules) goes through the
    /// scheduler loop, which clears it.
    #[inline]
    fn raise_contention(&self, slot: &usurp_preempt::WorkerSlot, requeued: bool) {
        if !slot.is_contended() {
            self.raise_contention_slow(slot, requeued);
        }
    }

    /// Out of line: keeps the switch path small (the flag is usually set
    /// while tasks switch back and forth).
    #[cold]
    #[inline(never)]
    fn raise_contention_slow(&self, slot: &usurp_preempt::WorkerSlot, requeued: bool) {
        if requeued || self.work_waits() {
            let _ = slot.set_contended(true);
        }
    }

    /// A task was made runnable on this worker by its running task: the
    /// worker is expected to run it, so its quantum must tick (the running
    /// task may keep the CPU in a loop; an idle worker, if any, steals it
    /// sooner). Same thread as the worker's own picks: no fence needed.
    #[inline]
    fn contend_self(&self) {
        // SAFETY: slots are `'static`.
        if let Some(s) = unsafe { self.slot.load(Ordering::Relaxed).as_ref() } {
            if !s.is_contended() {
                contend_slow(s);
            }
        }
    }

    /// After a task used up its quantum (async preemption, or a yield at a
    /// checkpoint) and nothing is ready locally: a task waiting in the
    /// global queue runs next, rather than the preempted task again (it goes
    /// back to the local ring, where the scheduler loop would find it
    /// before the global queue, which it checks first only every 61
    /// schedules). Null if none.
    #[inline]
    fn take_global_now(&self) -> *mut Task {
        let sh = self.shared();
        if self.stopping() || sh.global_len.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        sh.take_global(self).unwrap_or(ptr::null_mut())
    }

    /// Clears the pin of the current task at a cooperative switch.
    #[inline]
    fn clear_pin(&self, cur: *mut Task) {
        // SAFETY: `cur` is the running task, owned by this thread.
        let t = unsafe { &*cur };
        if t.pinned_worker.get() != NO_PIN {
            t.pinned_worker.set(NO_PIN);
            self.pinned.set(self.pinned.get() - 1);
        }
    }

    fn drain_inbox(&self) -> *mut Task {
        if self.inbox_len.load(Ordering::Acquire) == 0 {
            return ptr::null_mut();
        }
        let mut list = {
            let mut inbox = self.inbox.lock();
            self.inbox_len.store(0, Ordering::SeqCst);
            std::mem::replace(&mut *inbox, TaskList::new())
        };
        let first = list.pop_front().unwrap_or(ptr::null_mut());
        while let Some(t) = list.pop_front() {
            self.push_local(t);
        }
        first
    }

    /// One pass over every source of work except stealing.
    fn find_local_or_global(&self) -> *mut Task {
        let sh = self.shared();
        let t = self.drain_inbox();
        if !t.is_null() {
            return t;
        }
        // A fast path that bailed out for fairness left `tick` at a multiple
        // of FAIR_TICKS: then the global queue goes first.
        let tick = self.tick.get();
        self.tick.set(tick.wrapping_add(1));
        if tick % FAIR_TICKS == 0 {
            if let Some(t) = sh.take_global(self) {
                return t;
            }
        }
        sh.run_timers();
        let t = self.next_local();
        if !t.is_null() {
            return t;
        }
        if let Some(t) = sh.take_global(self) {
            return t;
        }
        ptr::null_mut()
    }

    /// Whether a task other than the one this searching worker just took
    /// is visible in a queue another worker could take it from: the global
    /// queue, a worker's ring or woken FIFO, another worker's `runnext`
    /// (`tests/sched_spinner_wakep.rs` strands a task there without it). A
    /// spinner that found work wakes an idle worker only then: waking one
    /// after every find (the first version of Go's resetspinning -> wakep
    /// here) made a second worker search on every channel hand-off, and
    /// ping-pong on `workers(2)` cost 235 ns instead of 161 ns (153 ns with
    /// no wake-up at all; `cargo bench --bench switch`, quiet). Racy reads
    /// (relaxed): a task queued after the check is the queuer's to announce
    /// (`notify`).
    fn more_work_visible(&self) -> bool {
        let sh = self.shared();
        if sh.global_len.load(Ordering::Relaxed) > 0 {
            return true;
        }
        sh.workers.iter().any(|w| {
            w.queue.len() > 0
                || w.woken_len.load(Ordering::Relaxed) > 0
                || (w.index != self.index && !w.runnext.0.load(Ordering::Relaxed).is_null())
        })
    }

    /// Takes the front of another worker's woken FIFO, else steals half of
    /// another worker's ring; when every ring is empty, a
    /// task waiting in another worker's `runnext` slot (see
    /// [`Worker::steal_runnext`]).
    fn steal(&self) -> *mut Task {
        let sh = self.shared();
        let n = sh.workers.len();
        if n == 1 {
            return ptr::null_mut();
        }
        let start = self.next_rand() as usize % n;
        // A woken task waiting on a busy worker first: it keeps its boost
        // across stealing (it runs now, ahead of the victim's ring).
        for i in 0..n {
            let v = (start + i) % n;
            if v == self.index {
                continue;
            }
            let t = sh.workers[v].take_woken();
            if !t.is_null() {
                if self.claim(t) {
                    return t;
                }
                return self.next_local();
            }
        }
        for i in 0..n {
            let v = (start + i) % n;
            if v == self.index {
                continue;
            }
            if let Some(t) = sh.workers[v].queue.steal_into(&self.queue) {
                if self.claim(t) {
                    return t;
                }
                return self.next_local();
            }
        }
        for i in 0..n {
            let v = (start + i) % n;
            if v == self.index {
                continue;
            }
            let t = self.steal_runnext(&sh.workers[v]);
            if !t.is_null() {
                if self.claim(t) {
                    return t;
                }
                return self.next_local();
            }
        }
        ptr::null_mut()
    }

    /// Takes the task in `victim`'s `runnext` slot (as Go's runqsteal with
    /// stealRunNextG). The slot holds a task that the victim's running task
    /// just spawned or woke; the victim usually runs it within a switch
    /// (the running task parks or joins right after), so the thief takes
    /// the slot only once it has seen the victim make no switch for
    /// `RUNNEXT_GRACE_NS` (across its search rounds). If the victim's task
    /// keeps running without a switch (ordinary code, a loop), the woken
    /// task would otherwise wait for its whole quantum, or forever.
    fn steal_runnext(&self, victim: &Worker) -> *mut Task {
        // Look at the slot only once the victim has made no switch for the
        // grace period (its running task keeps the CPU): a victim that is
        // switching gets to its runnext soon (a task re-woken into the slot,
        // as in a ping-pong, must not be carried off to another worker),
        // and not touching its slot's line then keeps the owner's swaps on
        // it cheap. `switch_count` is written with plain stores.
        let switches = victim.switch_count.load(Ordering::Relaxed);
        let watch = &self.watch[victim.index];
        let (seen, since) = watch.get();
        let now = now_ns();
        if seen != switches {
            watch.set((switches, now));
            return ptr::null_mut();
        }
        if now.saturating_sub(since) < RUNNEXT_GRACE_NS {
            return ptr::null_mut();
        }
        let t = victim.runnext.0.load(Ordering::Acquire);
        if t.is_null() {
            return t;
        }
        // Whoever empties the slot owns the task; the pointer is only
        // dereferenced after winning.
        match victim.runnext.0.compare_exchange(t, ptr::null_mut(), Ordering::Acquire, Ordering::Relaxed) {
            Ok(t) => t,
            Err(_) => ptr::null_mut(),
        }
    }

    /// Sleeps on the futex until woken, a timer is due, or shutdown.
    fn idle_sleep(&self) {
        let sh = self.shared();
        self.sleep_word.store(0, Ordering::SeqCst);
        self.idle.store(true, Ordering::SeqCst);
        sh.nidle.fetch_add(1, Ordering::SeqCst);
        let mut timeout = None;
        let nt = sh.next_timer.load(Ordering::SeqCst);
        if nt != u64::MAX {
            let now = now_ns();
            timeout = Some(nt.saturating_sub(now));
        }
        if timeout != Some(0) && !sh.has_work(self) && !self.stopping() {
            // No timer signals while asleep (a system call only on this
            // transition).
            // SAFETY: slots are `'static`.
            let slot = unsafe { self.slot.load(Ordering::Relaxed).as_ref() };
            if let Some(s) = slot {
                let _ = s.set_idle(true);
            }
            futex_wait(&self.sleep_word, 0, timeout);
            if let Some(s) = slot {
                let _ = s.set_idle(false);
            }
        }
        if self.idle.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            sh.nidle.fetch_sub(1, Ordering::SeqCst);
        }
        // An idle worker counts as stopped without being woken: `idle` is
        // clear now, and the stop flag is read after this fence (the
        // caller's `stopping()`), see `stw.rs`.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// The scheduler's search: local, global, timers, stealing, then spinning
    /// briefly and sleeping. Returns None on shutdown.
    fn find_runnable(&self) -> Option<*mut Task> {
        let sh = self.shared();
        let mut spinning = false;
        let mut rounds = 0;
        loop {
            if sh.shutdown.load(Ordering::Acquire) {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                }
                return None;
            }
            if self.stopping() {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                    spinning = false;
                }
                crate::stw::park_worker(self);
                continue;
            }
            let mut t = self.find_local_or_global();
            if t.is_null() {
                t = self.steal();
            }
            if !t.is_null() {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                    if SPINNER_WAKEP.load(Ordering::Relaxed) && self.more_work_visible() {
                        // We may have been the only searcher, and wakers
                        // woke nobody while we searched (`notify` leaves
                        // the work to a spinner): more of it may wait (the
                        // rest of a woken FIFO, a `runnext`, a ring, the
                        // global queue). Wake an idle worker to look, as
                        // Go's resetspinning calls wakep when a spinner
                        // finds work (`notify` does nothing if another
                        // worker still searches or none idles).
                        sh.notify();
                    } else if sh.global_len.load(Ordering::Relaxed) > 0 || self.queue.len() > 0 {
                        // Test-only: the first version, which looked only
                        // at the global queue and its own ring.
                        sh.notify();
                    }
                }
                return Some(t);
            }
            if !spinning {
                spinning = true;
                sh.nspinning.fetch_add(1, Ordering::SeqCst);
            }
            rounds += 1;
            if rounds < SPIN_ROUNDS {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                continue;
            }
            sh.nspinning.fetch_sub(1, Ordering::SeqCst);
            spinning = false;
            rounds = 0;
            self.idle_sleep();
        }
    }
}

/// Switches from `cur` to `next` (or to this thread's scheduler loop when
/// `next` is null), telling the next context to apply `action` to `cur`.
/// Returns when `cur` is resumed.
///
/// # Safety
/// `cur` is the task running on this thread (`m.current`), `w` its worker,
/// `next` null or a runnable task claimed for `w`.
#[inline]
unsafe fn switch_to(m: &Machine, w: &Worker, cur: *mut Task, next: *mut Task, action: usize) {
    w.charge(cur);
    let target = if next.is_null() {
        m.current.set(ptr::null_mut());
        w.running_task.store(0, Ordering::Relaxed);
        // SAFETY: the scheduler loop's SP was saved when it switched to a task.
        unsafe { *m.sched_sp.get() }
    } else {
        m.current.set(next);
        w.running_task.store(next as usize, Ordering::Relaxed);
        // SAFETY: `next` is a runnable task we own; its SP was saved.
        unsafe {
            (*next).state.store(state::RUNNING, Ordering::Relaxed);
            *(*next).sp.get()
        }
    };
    w.bump_switch();
    // Preemption bookkeeping (no system call): the outgoing task keeps its
    // no-preempt depth; the incoming one gets its stack bounds and depth.
    let slot = w.slot.load(Ordering::Relaxed);
    if !slot.is_null() {
        // SAFETY: slots are `'static`; `cur` and `next` are ours.
        unsafe {
            let slot = &*slot;
            (*cur).preempt_state.set(slot.switch_out());
            if !next.is_null() {
                w.raise_contention(slot, action == A_YIELD || action == A_PREEMPT || action == A_PREEMPT_GLOBAL);
                slot.switch_in((*next).stack.lo(), (*next).stack.hi(), (*next).preempt_state.get());
            }
        }
    }
    // The incoming context runs on this thread, which drives `w`: hand it the
    // worker (64-byte aligned, so the action fits in the low bits) and leave
    // the outgoing task in `w.prev`; it needs no thread-local lookup then.
    w.prev.set(cur);
    // SAFETY: `cur.sp` is writable; `target` is a suspended context whose
    // stack is mapped. `m` and `w` are not used after the switch: this task
    // may resume on another thread.
    let r = unsafe { arch::switch((*cur).sp.get(), target, w as *const Worker as usize | action) };
    finish_switch(r);
}

/// Runs in the context that was just switched to: applies the outgoing
/// context's action to it (see the module comment). `arg` is
/// `worker | action` (the outgoing task is in `worker.prev`), except for
/// `A_REQUEUE`, which comes from a thread without a worker: `task | A_REQUEUE`.
#[inline]
pub(crate) fn finish_switch(arg: usize) {
    if arg == 0 {
        return;
    }
    let action = arg & A_MASK;
    // SAFETY: `prev` is a task that just switched away from this thread; its
    // context is saved and nobody else can reach it until we queue it. `w` is
    // the worker this thread drives.
    unsafe {
        if action == A_REQUEUE {
            let prev = (arg & !A_MASK) as *mut Task;
            (*prev).state.store(state::RUNNABLE, Ordering::Relaxed);
            let sh = (*prev).shared();
            sh.push_global_one(prev);
            sh.notify_global();
            return;
        }
        let w = &*((arg & !A_MASK) as *const Worker);
        let prev = w.prev.get();
        match action {
            A_YIELD => {
                (*prev).state.store(state::RUNNABLE, Ordering::Relaxed);
                w.push_local(prev);
            }
            A_PREEMPT => {
                (*prev).state.store(state::RUNNABLE, Ordering::Relaxed);
                w.push_local(prev);
            }
            A_PREEMPT_GLOBAL => {
                (*prev).state.store(state::RUNNABLE, Ordering::Relaxed);
                let sh = w.shared();
                sh.push_global_one(prev);
                sh.notify_global();
            }
            A_PARK => {
                (*prev).state.store(state::PARKED, Ordering::Relaxed);
                if (*prev)
                    .park
                    .compare_exchange(park::EMPTY, park::PARKED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Unparked while switching out: run it again.
                    (*prev).park.store(park::EMPTY, Ordering::Relaxed);
                    make_runnable(prev, true);
                }
            }
            A_EXIT => recycle(w, prev),
            A_ADOPT => {
                // `prev` is saved: record the spill frame as its SP (the
                // frames above it stay frozen while the closure runs on the
                // spare thread; a collection scans them from there), count
                // it as blocking, then give it to the spare.
                let s = &*w.adopt_to.replace(ptr::null());
                s.adopt_resume.store(*(*prev).sp.get(), Ordering::Relaxed);
                *(*prev).sp.get() = s.adopt_sp.load(Ordering::Relaxed);
                (*prev).state.store(state::BLOCKING, Ordering::SeqCst);
                s.adopt.store(prev, Ordering::Release);
                s.spare_word.store(1, Ordering::SeqCst);
                futex_wake(&s.spare_word, 1);
            }
            _ => {}
        }
    }
}

/// Where a task that used up its quantum (async preemption) while another
/// task waits for its worker queues: the global queue, as Go's
/// `gopreempt_m` (issue 11, uneven loop splits), when it may run on any
/// worker and another worker has nothing queued; else its worker's ring. (When nothing waits, the preemption
/// found no successor and the task stays local: pushing it to the global
/// queue would mark every worker contended, so loops as many as the
/// workers would tick each other forever; issue 12's quiet loops.)
///
/// With the ring, loops split unevenly stayed so: with 3 loops on worker A
/// and 1 on B, B's ring and the global queue stay empty, so B is never
/// contended (its quantum never ticks) and runs its loop alone, while A
/// rotates 3; B helps only once its loop ends (it then steals one), and the
/// tail runs on one core. Through the global queue every preemption makes
/// the busy workers contended (`notify_global`), and a worker whose ring is
/// empty takes the next loop from it (`take_global_now`), so all the loops
/// rotate over all the workers, as in Go. Kept local: a task pinned to this
/// thread, a runtime with one worker, and a preemption for a stop (the
/// world restarts where it was).
///
/// `t` is the running task being preempted, on the thread driving `w`.
#[inline]
fn preempted_goes_global(w: &Worker, t: *mut Task) -> bool {
    // SAFETY: `t` is the running task, owned by this thread.
    let pinned = unsafe { (*t).pinned_worker.get() } != NO_PIN;
    if pinned || w.solo || w.stopping() || !PREEMPTED_TO_GLOBAL.load(Ordering::Relaxed) {
        return false;
    }
    // Only while another worker has nothing queued (it runs one task at
    // most): the split is uneven. When every worker has a queue (e.g. 32
    // loops on 2 workers), the tasks stay local: going through the global
    // queue there made 1 ms sleepers beside them wake later (p99 10-47 ms
    // against 2-21 ms kept local, `benches/preempt.rs --fairness`,
    // alternated runs on a loaded machine).
    w.shared().workers.iter().any(|v| {
        v.index != w.index
            && v.queue.len() == 0
            && v.runnext.0.load(Ordering::Relaxed).is_null()
            && v.woken_len.load(Ordering::Relaxed) == 0
    })
}

/// Returns a finished task's struct and stack to `w`'s free cache, or to the
/// pool.
///
/// # Safety
/// `t` is a task that has exited; its stack is no longer in use; this thread
/// drives `w`.
unsafe fn recycle(w: &Worker, t: *mut Task) {
    // SAFETY: per the contract we own `t` and `w`'s cache.
    unsafe {
        let task = &*t;
        task.state.store(state::FREE, Ordering::Relaxed);
        // The name stays until the struct is prepared again (`Task::prepare`
        // replaces it): a stalled stop-the-world reads the name of a task
        // that may be exiting (`stw::report_stragglers`).
        let free = &mut *w.free.get();
        if w.shared == task.shared && free.len() < FREE_CACHE {
            free.push(t);
            return;
        }
        task.shared().release_task(t);
    }
}

/// CPU time of task `t` in cycles: what was charged at its switches, plus,
/// if `t` is the task running on the calling thread's worker, the time since
/// it was switched in.
pub(crate) fn current_cpu_cycles(t: *mut Task) -> u64 {
    // SAFETY: callers pass a live task (their own, or one they keep alive).
    let base = unsafe { (*t).cpu.load(Ordering::Relaxed) };
    match current_with_worker() {
        Some((_, w, cur)) if cur == t => base.wrapping_add(arch::cycles().saturating_sub(w.run_since.get())),
        _ => base,
    }
}

/// Makes a parked or new task runnable: on this thread's worker if it belongs
/// to the same runtime, otherwise on its runtime's global queue. On this
/// worker it takes the `runnext` slot (as Go does) when a task is running,
/// or when it is `woken` (a wake: timer, channel, mutex, join..., not a
/// spawn) from the scheduler loop; a spawn from the scheduler loop goes to
/// the ring. The slot's previous occupant is displaced: to the woken FIFO if
/// it was woken (it keeps its boost, latency fairness, issue 11), else to
/// the back of the ring. So `runnext` always holds the newest task and the
/// FIFO the older woken ones in wake order (see `Worker::take_boosted`).
pub(crate) fn make_runnable(t: *mut Task, woken: bool) {
    // SAFETY: we own `t` (it is new, or we won the unpark).
    let task = unsafe { &*t };
    task.woken.set(woken);
    task.state.store(state::RUNNABLE, Ordering::Relaxed);
    let m = machine();
    // SAFETY: machine and worker are valid on this thread while set.
    unsafe {
        if !m.is_null() {
            let w = (*m).worker.get();
            if !w.is_null() && (*w).shared == task.shared {
                let w = &*w;
                let running = !(*m).current.get().is_null();
                if !running && woken {
                    match BOOST_POLICY.load(Ordering::Relaxed) {
                        BOOST_OFF => {
                            w.push_local(t);
                            w.shared().notify();
                            return;
                        }
                        BOOST_FIRST_VERSION => {
                            w.push_woken(t);
                            w.shared().notify();
                            return;
                        }
                        _ => {}
                    }
                }
                if running || woken {
                    if running {
                        // The running task made it runnable here: its
                        // quantum must tick from now on (it may keep the
                        // CPU).
                        w.contend_self();
                    }
                    if w.solo {
                        let old = w.runnext.0.load(Ordering::Relaxed);
                        w.runnext.0.store(t, Ordering::Relaxed);
                        if !old.is_null() {
                            w.push_displaced(old);
                        }
                        return;
                    }
                    // SeqCst swap: orders the publication before the idle
                    // check in `notify_after_seqcst` (see there).
                    let old = w.runnext.0.swap(t, Ordering::SeqCst);
                    if old.is_null() {
                        // Work appeared while a worker may idle: wake one
                        // (Go's wakep), which can steal from runnext if this
                        // worker does not get to it.
                        w.shared().notify_after_seqcst();
                        return;
                    }
                    // An idle worker takes a displaced woken task from the
                    // FIFO at once (`steal`), or steals from the ring.
                    w.push_displaced(old);
                    w.shared().notify();
                    return;
                }
                // A spawn from the scheduler loop (no task current): the
                // worker picks next and sees its ring.
                w.push_local(t);
                w.shared().notify();
                return;
            }
        }
    }
    let sh = task.shared();
    sh.push_global_one(t);
    sh.notify_global();
}

/// Gives `t` its park token; if it was parked, makes it runnable.
pub(crate) fn unpark(t: *mut Task) {
    // SAFETY: callers only unpark tasks that cannot exit before this unpark
    // (they wait for exactly this token).
    let task = unsafe { &*t };
    if task.park.swap(park::NOTIFIED, Ordering::AcqRel) == park::PARKED {
        task.park.store(park::EMPTY, Ordering::Relaxed);
        if task.state.load(Ordering::Acquire) == state::ABANDONED {
            return; // its runtime is gone: it stays abandoned, never queued
        }
        make_runnable(t, true);
    }
}

/// Parks the current task until its token is given with [`unpark`].
///
/// # Safety contract (internal)
/// Must be called from a task holding a worker; every park is matched by
/// exactly one unpark from whoever the task registered with.
pub(crate) fn park_current() {
    let (m, w, cur) = current_with_worker().expect("park_current outside a task");
    if crate::stw::task_is_stopper(w.shared(), cur) {
        // The caller already queued a wait node on its stack: unwinding
        // would free it under the waker. Parking would wait for a wake-up
        // that needs the world running, which only this task can restart.
        crate::sys::write_stderr(
            b"usurp: fatal: the task that stopped the world (Runtime::stop_the_world) parked (sleep, join, a \
              channel or mutex wait) before Runtime::start_the_world: nothing could ever wake it; aborting\n",
        );
        std::process::abort();
    }
    // SAFETY: `cur` is the running task.
    let task = unsafe { &*cur };
    if task.park.compare_exchange(park::NOTIFIED, park::EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return;
    }
    w.clear_pin(cur);
    let next = w.next_fast();
    // SAFETY: per `switch_to`'s contract.
    unsafe { switch_to(m, w, cur, next, A_PARK) };
}

/// Yields the current task (see `crate::yield_now`).
pub(crate) fn yield_current(m: &Machine, w: &Worker, cur: *mut Task) {
    if crate::stw::task_is_stopper(w.shared(), cur) {
        stopper_yielded();
    }
    w.clear_pin(cur);
    let mut next = w.next_fast();
    if next.is_null() {
        next = w.take_global_now();
    }
    if next.is_null() && w.tick.get() % FAIR_TICKS != 0 && !w.stopping() {
        let sh = w.shared();
        if sh.global_len.load(Ordering::Relaxed) == 0 && w.inbox_len.load(Ordering::Relaxed) == 0 {
            return; // nothing else to run: keep going
        }
    }
    // SAFETY: per `switch_to`'s contract.
    unsafe { switch_to(m, w, cur, next, A_YIELD) };
}

#[cold]
#[inline(never)]
fn stopper_yielded() -> ! {
    panic!(
        "usurp: yield_now called by the task that holds the world stopped (Runtime::stop_the_world): its worker \
         would park for the stop and never resume it; call Runtime::start_the_world first"
    )
}

/// Puts the current (async-preempted) task back in a run queue, pinned to
/// this worker if `pin` (its interrupted code may hold a thread-local
/// address: `preempt_glue::must_pin`; then its worker's ring), else the
/// global queue (see [`preempted_goes_global`]), and runs something else.
/// See the preemption hooks in the crate docs.
pub(crate) fn preempt_current(pin: bool) {
    let Some((m, w, cur)) = current_with_worker() else { return };
    if crate::stw::task_is_stopper(w.shared(), cur) {
        // Cannot happen (the stopper runs in a no-preemption section); if it
        // did, parking would deadlock: keep running.
        return;
    }
    // SAFETY: `cur` is the running task.
    let task = unsafe { &*cur };
    if pin && task.pinned_worker.get() == NO_PIN {
        task.pinned_worker.set(w.index);
        w.pinned.set(w.pinned.get() + 1);
    }
    // A worker saturated by tight loops only reaches its scheduler loop now
    // and then (a direct switch follows every preemption): fire due timers
    // here, once per quantum, so that sleepers wake within a quantum. Woken
    // tasks go to `runnext` (this task is still current) and run next.
    w.shared().run_timers();
    let mut next = w.next_fast();
    if next.is_null() {
        next = w.take_global_now();
    }
    let action = if !next.is_null() && preempted_goes_global(w, cur) { A_PREEMPT_GLOBAL } else { A_PREEMPT };
    // SAFETY: per `switch_to`'s contract.
    unsafe { switch_to(m, w, cur, next, action) };
}

/// Entry point of every task (called by the arch trampoline on the task's
/// fresh stack). Never returns: the task ends by switching away for good.
pub(crate) unsafe extern "C" fn task_entry(task: usize, arg: usize) -> ! {
    finish_switch(arg);
    run_body(task as *mut Task);
    exit_current()
}

#[inline(never)]
fn run_body(t: *mut Task) {
    // The body stays in the task while it runs, so that a runtime shutting
    // down can still complete (abandon) the join state of a suspended task.
    // SAFETY: `t` is the running task; the body is only touched by it, or by
    // the shutdown path once no worker runs.
    unsafe {
        if let Some(body) = (*(*t).body.get()).as_ref() {
            body.run();
        }
        // Task-local destructors run before the joiner is woken (issue 11
        // item 8): a join that returned sees the task entirely finished.
        crate::local::drop_locals(t);
        if let Some(body) = (*(*t).body.get()).as_ref() {
            // Its CPU time so far stays readable through the join handle.
            body.cpu_link().retire(current_cpu_cycles(t));
            body.finish();
        }
        // Out of the task first, then dropped: dropping the packet may run
        // user code (the result's destructor) that reaches a switch point,
        // and a GC scan must then not find a half-dropped body in the task.
        let body = (*(*t).body.get()).take();
        drop(body);
    }
}

fn exit_current() -> ! {
    let Some((m, w, cur)) = current_with_worker() else {
        // Cannot happen: `blocking` re-attaches before returning.
        crate::sys::write_stderr(b"usurp: internal error: task exiting without a worker\n");
        std::process::abort();
    };
    if crate::stw::task_is_stopper(w.shared(), cur) {
        // It would switch to its scheduler loop, which parks for the stop:
        // nobody could restart the world. Restart it (the task is gone).
        crate::sys::write_stderr(
            b"usurp: a task exited while it held the world stopped (Runtime::stop_the_world without \
              start_the_world): restarting the world\n",
        );
        crate::stw::start_the_world(w.shared());
    }
    w.clear_pin(cur);
    let next = w.next_fast();
    // SAFETY: per `switch_to`'s contract; an exited task is never resumed.
    unsafe { switch_to(m, w, cur, next, A_EXIT) };
    crate::sys::write_stderr(b"usurp: internal error: exited task resumed\n");
    std::process::abort();
}

/// Runs `f` with this task's worker handed to another thread (see
/// `crate::blocking`).
///
/// Non-generic and never inlined (issue 11 item 3): `crate::blocking` is
/// generic, so it is instantiated in the user's crate and can be inlined
/// into a `preemptible!` function; everything that touches the worker (the
/// pinned counter's read-modify-write, switches) must stay here, in the
/// runtime's own non-preemptible code. The generic shim only moves the
/// closure and its result through its own locals.
#[inline(never)]
pub(crate) fn blocking_dyn(f: &mut dyn FnMut()) {
    // A request outstanding (a refused tick, a stop) is honoured first: run
    // in place below (no spare thread), the closure would otherwise keep it,
    // and with it the process-wide request count (every allocation's and
    // `Gc<T>` deref's poll on its slow path), raised until it returns. The
    // checkpoint may move this task to another worker: it comes before the
    // worker is read.
    usurp_preempt::checkpoint();
    let Some((m, w, cur)) = current_with_worker() else { return f() };
    let sh = w.shared();
    if crate::stw::task_is_stopper(sh, cur) {
        // The stopper keeps running through its stop: blocking in place is
        // harmless (and handing off or counting as stopped would wait for
        // the start only it can give).
        return f();
    }
    w.clear_pin(cur);
    let shutdown = sh.shutdown.load(Ordering::Relaxed);
    // Tasks pinned here must resume on this thread, so the worker cannot be
    // handed off. Move this task to a spare thread instead (issue 11 item
    // 1: running `f` in place would deadlock if it waits for a pinned task).
    let adopt: *const Machine = if w.pinned.get() > 0 && !shutdown { sh.take_spare() } else { ptr::null() };
    if (w.pinned.get() > 0 && adopt.is_null()) || shutdown {
        // No spare thread to be had: run `f` in place. The thread counts as
        // stopped meanwhile.
        crate::stw::safe_region(sh, f);
        // Ran in place on this worker: if the quantum ran out meanwhile (a
        // refused tick set the checkpoint flag), let the others run now.
        usurp_preempt::checkpoint();
        return;
    }
    let mut res: Option<std::thread::Result<()>> = None;
    let mut handed = false;
    // Run everything below a frame holding all callee-saved registers, and
    // record that frame's SP as the task's saved SP: while `f` runs, the
    // frames above it are frozen, and a conservative scan of
    // [sp - RED_ZONE, stack top) sees every value they hold, registers
    // included. The closure must not panic (it runs under an assembly
    // frame): `f`'s panics are caught and resumed afterwards.
    arch::with_registers_spilled(&mut |sp| {
        if !adopt.is_null() {
            // SAFETY: we popped `adopt` from the spare list: it waits for
            // exactly this (see `Shared::take_spare`).
            unsafe { (*adopt).adopt_sp.store(sp, Ordering::Relaxed) };
            w.adopt_to.set(adopt);
            let next = w.next_fast();
            // SAFETY: per `switch_to`'s contract. `finish_switch(A_ADOPT)`
            // on this thread hands this task to the spare, on which it
            // resumes here, with no worker.
            unsafe { switch_to(m, w, cur, next, A_ADOPT) };
        } else {
            // Its time in the handed-off closure is not CPU time on a
            // worker (see `dump.rs`): charge what it used up to here.
            w.charge(cur);
            // SAFETY: `cur` is the running task, owned by this thread.
            unsafe {
                *(*cur).sp.get() = sp;
                (*cur).state.store(state::BLOCKING, Ordering::SeqCst);
            }
            // The task leaves its worker: this thread gets no preemption
            // signals while it blocks; the thread taking `w` over installs
            // its own slot.
            let slot = w.slot.swap(ptr::null_mut(), Ordering::AcqRel);
            w.running_task.store(0, Ordering::Relaxed);
            m.worker.set(ptr::null());
            if !sh.handoff(w) {
                // No spare thread: undo, and run in place below.
                m.worker.set(w);
                // SAFETY: as above.
                unsafe { (*cur).state.store(state::RUNNING, Ordering::SeqCst) };
                w.running_task.store(cur as usize, Ordering::Relaxed);
                w.slot.store(slot, Ordering::Release);
                return;
            }
            // SAFETY: slots are `'static`.
            if let Some(s) = unsafe { slot.as_ref() } {
                // SAFETY: `cur` is ours.
                unsafe { (*cur).preempt_state.set(s.switch_out()) };
                let _ = s.set_idle(true);
            }
        }
        handed = true;
        // The task counts as stopped: no allocation in `f` (the GC's slow
        // path reports why); the thread's mutator is back right after `f`.
        let no_alloc = usurp_gc::forbid_allocation(crate::gc_world::INSIDE_BLOCKING);
        res = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f)));
        drop(no_alloc);
        // A stopped world must not see this task move: wait here.
        crate::stw::wait_until_started(sh);
        // Back from the blocking call: queue ourselves globally via this
        // thread's scheduler context (which then becomes a spare thread).
        let m = machine();
        // SAFETY: still on the same thread since the closure started (an
        // adopted task runs it entirely on the spare); its machine.
        unsafe {
            (*m).current.set(ptr::null_mut());
            let r = arch::switch((*cur).sp.get(), *(*m).sched_sp.get(), cur as usize | A_REQUEUE);
            finish_switch(r);
        }
    });
    if !handed {
        crate::stw::safe_region(sh, f);
        usurp_preempt::checkpoint();
        return;
    }
    if let Err(p) = res.expect("blocking closure ran") {
        std::panic::resume_unwind(p);
    }
}

/// A spare thread runs task `t`, handed to it by `finish_switch(A_ADOPT)`,
/// until it leaves its `blocking` closure (it then switches back here with
/// `A_REQUEUE`, which queues it globally).
fn run_adopted(m: &Machine, t: *mut Task) {
    m.current.set(t);
    let resume = m.adopt_resume.load(Ordering::Relaxed);
    // SAFETY: `t` was saved at `resume` on its old thread and handed to us
    // alone (acquire on `adopt`); this thread has no worker, so nothing else
    // runs here meanwhile.
    let r = unsafe { arch::switch(m.sched_sp.get(), resume, 0) };
    finish_switch(r);
}

/// The body of every runtime thread: drive a worker's scheduler loop; when
/// the worker is handed away, wait as a spare until given one.
pub(crate) fn machine_main(shared: Arc<Shared>, worker: *const Worker) {
    // Idle workers wait for the next timer with a futex timeout: no slack.
    crate::sys::set_timer_slack();
    let _alt = crate::guard::AltStack::install();
    // Preemption slot and GC mutator of this thread (dropped before `_alt`).
    let _integ = crate::preempt_glue::ThreadInit::new(&shared);
    let m = Box::new(Machine {
        sched_sp: UnsafeCell::new(0),
        worker: Cell::new(worker),
        current: Cell::new(ptr::null_mut()),
        shared,
        spare_word: AtomicU32::new(0),
        handoff: AtomicPtr::new(ptr::null_mut()),
        adopt: AtomicPtr::new(ptr::null_mut()),
        adopt_resume: AtomicUsize::new(0),
        adopt_sp: AtomicUsize::new(0),
    });
    let mp = &*m as *const Machine as *mut Machine;
    MACHINE.with(|c| c.set(mp));
    loop {
        if !m.worker.get().is_null() {
            schedule_loop(&m);
        }
        let t = m.adopt.swap(ptr::null_mut(), Ordering::Acquire);
        if !t.is_null() {
            run_adopted(&m, t);
            continue;
        }
        if !m.shared.wait_as_spare(&m) {
            break;
        }
    }
    MACHINE.with(|c| c.set(ptr::null_mut()));
    m.shared.threads.fetch_sub(1, Ordering::AcqRel);
}

fn schedule_loop(m: &Machine) {
    loop {
        let w = m.worker.get();
        if w.is_null() {
            return;
        }
        // SAFETY: this thread drives `w` while it is set in `m`.
        let w = unsafe { &*w };
        let slot = crate::preempt_glue::thread_slot();
        if w.slot.load(Ordering::Relaxed) != slot {
            // This thread (just) took the worker over.
            w.slot.store(slot, Ordering::Release);
            // Orders the store before this worker's reads of the queues
            // (`update_contention`) against wakers that publish work and
            // then read `slot` (`Shared::contend_busy`).
            std::sync::atomic::fence(Ordering::SeqCst);
            // SAFETY: slots are `'static`.
            if let Some(s) = unsafe { slot.as_ref() } {
                let _ = s.set_idle(false);
            }
        }
        let Some(t) = w.find_runnable() else {
            // Shutdown: this worker stops; whatever is still queued is
            // abandoned by the runtime.
            m.worker.set(ptr::null());
            crate::stw::worker_exited(w);
            w.shared().worker_stopped();
            return;
        };
        w.update_contention();
        m.current.set(t);
        w.running_task.store(t as usize, Ordering::Relaxed);
        w.bump_switch();
        w.run_since.set(arch::cycles());
        // SAFETY: `t` is a runnable task claimed for `w`; its SP was saved.
        let r = unsafe {
            if let Some(s) = slot.as_ref() {
                s.switch_in((*t).stack.lo(), (*t).stack.hi(), (*t).preempt_state.get());
            }
            (*t).state.store(state::RUNNING, Ordering::Relaxed);
            arch::switch(m.sched_sp.get(), *(*t).sp.get(), 0)
        };
        finish_switch(r);
    }
}

/// Wakes worker `i` (sets its futex word), whether or not it sleeps.
pub(crate) fn wake_worker_word(w: &Worker) {
    w.sleep_word.store(1, Ordering::SeqCst);
    futex_wake(&w.sleep_word, 1);
}

/// Unit tests of the park token ([`park_current`] / [`unpark`], completed
/// by `finish_switch`'s `A_PARK`): a task parks and is unparked round after
/// round by a plain thread or by another task, each unpark racing the
/// task's way into its park (before `park_current`, between its fast-path
/// check and the switch out, or after it is parked: pseudo-random spins on
/// both sides move the race across these windows). A lost wake-up is a
/// task left PARKED with its token given: the checker waits for that state
/// to persist (5 s: a hang, not a speed check), then releases the task and
/// reports the round. The negative control unparks with a mutant that reads
/// the token and then stores it (instead of one swap): the task parking in
/// between is never queued, and the checker must report it.
#[cfg(test)]
mod park_token_tests {
    use super::*;
    use crate::Runtime;
    use std::time::{Duration, Instant};
    use usurp_testsupport::{scale, within};

    /// `(park, state)` of a task that cannot exit meanwhile (racy snapshot).
    fn token(t: *mut Task) -> (u8, u8) {
        // SAFETY: the task is parked or about to park for this round: it
        // cannot finish before the unpark the checker is waiting on.
        let task = unsafe { &*t };
        (task.park.load(Ordering::Acquire), task.state.load(Ordering::Acquire))
    }

    /// The negative control's unpark: a load and a store where [`unpark`]
    /// swaps, with a spin between them (widening the window in which the
    /// task parks: it then never sees the token, and nobody queues it).
    fn unpark_load_then_store(t: *mut Task) {
        // SAFETY: as in `unpark` (the task waits for this very token).
        let task = unsafe { &*t };
        if task.park.load(Ordering::Acquire) == park::PARKED {
            task.park.store(park::EMPTY, Ordering::Relaxed);
            make_runnable(t, true);
        } else {
            spin(20_000); // as long as the longest jitter (see `jitter`)
            task.park.store(park::NOTIFIED, Ordering::Release);
        }
    }

    /// A pseudo-random spin length for round `i` (0..20000): the task spins
    /// that long before it parks, the unparker a quarter of its own draw
    /// before it unparks, so that unparks land before, during and after the
    /// way into the park (most after it: the unparker also has to see the
    /// previous round's end), natively and under qemu.
    fn jitter(i: usize, side: u64) -> usize {
        let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(side.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        ((x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 40) as usize % 20_000
    }

    fn spin(n: usize) {
        for _ in 0..n {
            std::hint::spin_loop();
        }
    }

    struct Outcome {
        /// The first round whose wake-up was lost, if any.
        lost: Option<usize>,
        /// Unparks that found the task fully parked (the rest raced its
        /// way in).
        found_parked: usize,
    }

    /// `rounds` park/unpark handshakes between a task and an unparker (a
    /// plain thread, or a task if `from_task`) using `unpark_fn`; stops at
    /// the first lost wake-up.
    fn handshakes(rounds: usize, unpark_fn: fn(*mut Task), from_task: bool) -> Outcome {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let tp = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let parker = {
            let (tp, done, quit) = (tp.clone(), done.clone(), quit.clone());
            rt.spawn(move || {
                let (_, _, me) = current_with_worker().expect("a task");
                tp.store(me as usize, Ordering::Release);
                for i in 0..rounds {
                    // A varying delay on each side moves the unpark across
                    // the task's way into the park.
                    spin(jitter(i, 1));
                    park_current();
                    done.store(i + 1, Ordering::Release);
                    if quit.load(Ordering::Acquire) {
                        break;
                    }
                }
            })
        };
        let unparker = move || {
            let pause = || if from_task { crate::yield_now() } else { std::thread::yield_now() };
            while tp.load(Ordering::Acquire) == 0 {
                pause();
            }
            let t = tp.load(Ordering::Acquire) as *mut Task;
            let mut found_parked = 0;
            for i in 0..rounds {
                // Round i: the task finished round i - 1 and is on its way
                // to park (or parked already).
                spin(jitter(i, 2) / 4);
                if token(t).0 == park::PARKED {
                    found_parked += 1;
                }
                unpark_fn(t);
                let mut stuck_since: Option<Instant> = None;
                while done.load(Ordering::Acquire) <= i {
                    if token(t) == (park::NOTIFIED, state::PARKED) {
                        let since = *stuck_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(5) {
                            // Lost: release the task (give it a token it
                            // will see) and let it finish.
                            quit.store(true, Ordering::Release);
                            // SAFETY: the task is parked for good; only we
                            // touch its token now.
                            unsafe { (*t).park.store(park::PARKED, Ordering::Release) };
                            unpark(t);
                            return Outcome { lost: Some(i), found_parked };
                        }
                    } else {
                        stuck_since = None;
                    }
                    pause();
                }
            }
            Outcome { lost: None, found_parked }
        };
        let out = if from_task { rt.spawn(unparker).join().unwrap() } else { std::thread::spawn(unparker).join().unwrap() };
        parker.join().unwrap();
        out
    }

    #[test]
    fn no_wake_up_is_lost_unparking_from_a_thread() {
        let n = scale(10_000);
        let out = within(300, "park/unpark from a thread", move || handshakes(n, unpark, false));
        assert_eq!(out.lost, None, "a wake-up was lost (round {:?} of {n})", out.lost);
        eprintln!("{n} rounds; the unpark found the task parked in {}", out.found_parked);
    }

    #[test]
    fn no_wake_up_is_lost_unparking_from_a_task() {
        let n = scale(10_000);
        let out = within(300, "park/unpark from a task", move || handshakes(n, unpark, true));
        assert_eq!(out.lost, None, "a wake-up was lost (round {:?} of {n})", out.lost);
        eprintln!("{n} rounds; the unpark found the task parked in {}", out.found_parked);
    }

    #[test]
    fn negative_control_an_unpark_that_loads_then_stores_loses_a_wake_up() {
        // Unparked from a task first (under qemu a thread's unparks almost
        // always find the task parked already: too few races), then from a
        // thread; each run stops at the first loss, so the round count is
        // not scaled down under qemu (a loss takes longer to hit there).
        let n = 10_000;
        let caught = within(300, "mutant unpark", move || {
            [true, false].into_iter().find_map(|from_task| {
                handshakes(n, unpark_load_then_store, from_task).lost.map(|round| (from_task, round))
            })
        });
        let (from_task, round) = caught.expect("the checker never caught the mutant unpark's lost wake-up");
        eprintln!("mutant unpark lost the wake-up of round {round} (unparked from a {})", if from_task { "task" } else { "thread" });
    }
}
