//! Per-worker preallocated state: what the signal handler may touch.
//!
//! A [`WorkerSlot`] is created by the scheduler (one per worker thread, with
//! `'static` lifetime) and registered on its worker thread with
//! [`register_worker`]. Registration installs an alternate signal stack and
//! creates the worker's POSIX timer; the handler finds the slot through a
//! thread-local pointer (static TLS, initialised with a constant: reading it is
//! a plain `fs:`/`tpidr_el0`-relative load, async-signal-safe).
//!
//! Only the worker thread writes the scheduling fields (running flag,
//! no-preempt depth, switch counter, stack bounds); the handler runs on the
//! same thread, so it sees them in program order. Other threads only touch the
//! request fields (`pending`, the checkpoint flag) and read counters.

use core::cell::Cell;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{last_errno, Error};
use crate::stats::{Counters, PreemptStats, Refusal};

/// The smallest quantum a [`WorkerSlot`] accepts (exported as
/// `internals::MIN_SLOT_QUANTUM`); the scheduler's own floor,
/// `usurp::MIN_QUANTUM`, is higher.
pub const MIN_QUANTUM: Duration = Duration::from_micros(50);

/// Headroom above the kernel's minimum signal stack size (the handler's own
/// frames, the decoder, a chained foreign handler).
const ALTSTACK_HEADROOM: usize = 64 * 1024;

/// `WorkerSlot::coop_yield_sw` when no checkpoint yield is pending a tick
/// (far from any switch count a worker reaches).
pub(crate) const NO_COOP_YIELD: u64 = u64::MAX - 8;

/// Per-task preemption state that the scheduler keeps in its task while the
/// task is switched out (the no-preempt depth travels with the task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskPreemptState {
    no_preempt: u32,
    cooperative: bool,
}

impl TaskPreemptState {
    /// The task's no-preemption nesting depth.
    pub fn no_preempt_depth(&self) -> u32 {
        self.no_preempt
    }

    /// Whether the task is known to be cooperative: it last left its worker
    /// at a [`crate::checkpoint`] yield that a refused tick had asked for
    /// (not by an asynchronous preemption since). A refused tick of such a
    /// task is not retried before max(quantum, 1 ms): it yields at its next
    /// poll anyway.
    pub fn is_cooperative(&self) -> bool {
        self.cooperative
    }
}

/// The preallocated per-worker state (see the module documentation).
pub struct WorkerSlot {
    // Written by the worker thread, read by its handler.
    pub(crate) running: AtomicBool,
    pub(crate) no_preempt: AtomicU32,
    pub(crate) switches: AtomicU64,
    pub(crate) stack_lo: AtomicUsize,
    pub(crate) stack_hi: AtomicUsize,
    /// CLOCK_MONOTONIC time (ns) at which the handler (or `set_idle(false)`)
    /// last saw the current task start: the start of its quantum.
    pub(crate) switched_at: AtomicU64,
    /// The `switches` count the handler saw at its last tick (handler only).
    pub(crate) seen_switches: AtomicU64,
    pub(crate) quantum_ns: AtomicU64,
    /// The current retry delay after refused ticks of the running task (0:
    /// no refusal yet). Written and read by the handler only.
    pub(crate) backoff_ns: AtomicU64,
    /// The running task is known to be cooperative (see
    /// [`TaskPreemptState::is_cooperative`]). Written by the worker thread
    /// (`switch_in`/`switch_out`, and `checkpoint()` when it yields after a
    /// refusal) and by its handler (cleared on an accepted preemption);
    /// read by the handler.
    pub(crate) cooperative: AtomicBool,
    /// The time (CLOCK_MONOTONIC ns) and switch count of the last
    /// checkpoint yield a refusal asked for, taken right before it. Written
    /// by the worker thread (`checkpoint()`); read, and the count reset to
    /// [`NO_COOP_YIELD`] (stale), by its handler at the next tick.
    pub(crate) coop_yield_at: AtomicU64,
    pub(crate) coop_yield_sw: AtomicU64,
    /// The checkpoint flag was set by a refused attempt (not only by a
    /// request from another thread). Set by the handler, cleared by
    /// `checkpoint()` and `switch_out` on the worker thread.
    pub(crate) refusal_request: AtomicBool,
    // Requests from other threads.
    pub(crate) pending: AtomicU32,
    pub(crate) requested: AtomicBool,
    /// When the handler last served a targeted request (CLOCK_MONOTONIC
    /// ns) and what came of it (0: accepted, else 1 + the `Refusal`
    /// index): for a stopper's trace of how its requests went
    /// ([`WorkerSlot::last_request`]). Written by the handler only.
    pub(crate) req_served_ns: AtomicU64,
    pub(crate) req_outcome: AtomicU32,
    // Identity and resources.
    pub(crate) tid: AtomicI32,
    pub(crate) registered: AtomicBool,
    timer: AtomicPtr<libc::c_void>,
    has_timer: AtomicBool,
    /// Registered by [`register_worker_cooperative`]: no handler, alternate
    /// stack or timer; requests set the checkpoint flag without a signal.
    /// Written at registration only, by the worker's thread.
    cooperative_only: AtomicBool,
    /// The timer is running (set by whoever arms it: the worker, a thread
    /// calling `set_contended(true)`, or the handler; cleared by whoever
    /// disarms it: `set_idle(true)`, or the handler on an uncontended tick).
    armed: AtomicBool,
    /// The worker is running tasks (`set_idle(false)`); written by the
    /// worker, read by `set_contended` on any thread.
    busy: AtomicBool,
    /// Runnable work waits for this worker (default true: ticks whenever
    /// busy; reset to true at registration). Written by `set_contended`
    /// (any thread); read by the handler.
    contended: AtomicBool,
    altstack: AtomicUsize,
    altstack_len: AtomicUsize,
    old_ss: Mutex<Option<(usize, usize, i32)>>,
    pub(crate) counters: Counters,
}

thread_local! {
    static CURRENT: Cell<*const WorkerSlot> = const { Cell::new(core::ptr::null()) };
}

/// The calling thread's slot, or null. `#[inline(never)]`: tasks migrate
/// between threads, and LLVM may otherwise keep a thread-local's address
/// cached across a context switch (llvm-project#98479).
#[inline(never)]
pub(crate) fn current_ptr() -> *const WorkerSlot {
    CURRENT.try_with(|c| c.get()).unwrap_or(core::ptr::null())
}

/// [`current_ptr`]'s read, inlined into its caller: only for callers that
/// are themselves never inlined and never switch tasks (so the address of
/// the thread-local they compute cannot be reused on another thread), e.g.
/// `guard::enter_section`.
#[inline(always)]
pub(crate) fn current_ptr_here() -> *const WorkerSlot {
    CURRENT.try_with(|c| c.get()).unwrap_or(core::ptr::null())
}

/// The calling thread's registered slot, if it is a worker.
#[inline(never)]
pub fn current_worker() -> Option<&'static WorkerSlot> {
    let p = current_ptr();
    // SAFETY: only `&'static WorkerSlot`s are ever stored in CURRENT.
    unsafe { p.as_ref() }
}

/// Number of processes-wide slots that have a checkpoint request set: lets
/// [`crate::checkpoint`] test one global word on its fast path.
pub(crate) static POLL: AtomicUsize = AtomicUsize::new(0);

/// Every slot ever registered (for stats and to recognise our timers).
pub const MAX_WORKERS: usize = 1024;
#[allow(clippy::declare_interior_mutable_const)]
const NULL_SLOT: AtomicPtr<WorkerSlot> = AtomicPtr::new(core::ptr::null_mut());
static ALL: [AtomicPtr<WorkerSlot>; MAX_WORKERS] = [NULL_SLOT; MAX_WORKERS];
static ALL_LEN: AtomicUsize = AtomicUsize::new(0);
static ALL_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn all_slots() -> impl Iterator<Item = &'static WorkerSlot> {
    let n = ALL_LEN.load(Ordering::Acquire).min(MAX_WORKERS);
    // SAFETY: entries below ALL_LEN are published `&'static WorkerSlot`s.
    ALL.iter().take(n).filter_map(|p| unsafe { p.load(Ordering::Acquire).as_ref() })
}

/// Async-signal-safe: is `p` one of our slots?
pub(crate) fn is_known_slot(p: usize) -> bool {
    let n = ALL_LEN.load(Ordering::Acquire).min(MAX_WORKERS);
    ALL.iter().take(n).any(|s| s.load(Ordering::Relaxed) as usize == p)
}

impl Default for WorkerSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerSlot {
    /// A fresh, unregistered slot (usable in a `static`).
    pub const fn new() -> WorkerSlot {
        WorkerSlot {
            running: AtomicBool::new(false),
            no_preempt: AtomicU32::new(0),
            switches: AtomicU64::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
            switched_at: AtomicU64::new(0),
            seen_switches: AtomicU64::new(0),
            quantum_ns: AtomicU64::new(10_000_000),
            backoff_ns: AtomicU64::new(0),
            cooperative: AtomicBool::new(false),
            coop_yield_at: AtomicU64::new(0),
            coop_yield_sw: AtomicU64::new(NO_COOP_YIELD),
            refusal_request: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            requested: AtomicBool::new(false),
            req_served_ns: AtomicU64::new(0),
            req_outcome: AtomicU32::new(0),
            tid: AtomicI32::new(0),
            registered: AtomicBool::new(false),
            timer: AtomicPtr::new(core::ptr::null_mut()),
            has_timer: AtomicBool::new(false),
            cooperative_only: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            contended: AtomicBool::new(true),
            altstack: AtomicUsize::new(0),
            altstack_len: AtomicUsize::new(0),
            old_ss: Mutex::new(None),
            counters: Counters::new(),
        }
    }

    /// Called by the scheduler on the worker thread right before it switches
    /// into a task: records the task's stack bounds (`lo` = lowest usable
    /// byte, above any guard page; `hi` = top), restores the task's
    /// no-preempt depth, counts a switch, and marks the worker as running a
    /// task. No clock read (a vDSO `clock_gettime` costs 20-30 ns, as much as
    /// a whole task switch): the next tick sees the switch count moved and
    /// starts the task's quantum then (see `on_tick`).
    #[inline]
    pub fn switch_in(&self, stack_lo: usize, stack_hi: usize, task: TaskPreemptState) {
        self.stack_lo.store(stack_lo, Ordering::Relaxed);
        self.stack_hi.store(stack_hi, Ordering::Relaxed);
        self.no_preempt.store(task.no_preempt, Ordering::Relaxed);
        self.cooperative.store(task.cooperative, Ordering::Relaxed);
        self.bump_switches();
        // The handler runs on this thread: a compiler fence orders the stores
        // above before `running` as it sees them.
        compiler_fence(Ordering::SeqCst);
        self.running.store(true, Ordering::Release);
    }

    /// Called by the scheduler on the worker thread when a task is switched
    /// out (it yielded, blocked, finished, or was parked after an async
    /// preemption): marks the worker as not running a task, counts a switch,
    /// clears a satisfied checkpoint request, and returns the task's state to
    /// keep until its next `switch_in`. No system call.
    #[inline]
    pub fn switch_out(&self) -> TaskPreemptState {
        self.running.store(false, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
        let st = TaskPreemptState {
            no_preempt: self.no_preempt.load(Ordering::Relaxed),
            cooperative: self.cooperative.load(Ordering::Relaxed),
        };
        self.no_preempt.store(0, Ordering::Relaxed);
        self.cooperative.store(false, Ordering::Relaxed);
        self.bump_switches();
        self.take_request();
        self.refusal_request.store(false, Ordering::Relaxed);
        st
    }

    #[inline]
    fn bump_switches(&self) {
        // Single writer (this worker): a load and a store, no locked RMW.
        let n = self.switches.load(Ordering::Relaxed);
        self.switches.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// The number of switches counted so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Whether the worker is currently running a task.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// The no-preempt depth of the task currently on this worker.
    pub fn no_preempt_depth(&self) -> u32 {
        self.no_preempt.load(Ordering::Relaxed)
    }

    /// The worker's kernel thread id (0 before registration).
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// Acknowledged targeted requests so far: a stop-the-world that sent a
    /// request waits until this exceeds the value read before sending.
    pub fn acks(&self) -> u64 {
        self.counters.acks.load(Ordering::Acquire)
    }

    /// When the handler last served a targeted request (CLOCK_MONOTONIC
    /// ns, 0 if never) and its outcome: `Ok(())` accepted (the task was
    /// preempted), `Err(reason)` refused (the checkpoint flag was set).
    /// Read with [`WorkerSlot::acks`] (Acquire) first: an ack count seen
    /// advanced makes that request's stamp visible.
    pub fn last_request(&self) -> (u64, Result<(), Refusal>) {
        let at = self.req_served_ns.load(Ordering::Relaxed);
        let o = self.req_outcome.load(Ordering::Relaxed) as usize;
        let r = if o == 0 { Ok(()) } else { Err(Refusal::ALL.get(o - 1).copied().unwrap_or(Refusal::NotRunning)) };
        (at, r)
    }

    /// Records a served request (handler only; see [`WorkerSlot::last_request`]).
    pub(crate) fn note_request_served(&self, r: Result<(), Refusal>) {
        self.req_outcome.store(r.map_or_else(|e| e as u32 + 1, |()| 0), Ordering::Relaxed);
        self.req_served_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Whether a preemption signal sent with [`crate::request_preempt`] is still
    /// pending (at most one is ever in flight per worker).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }

    /// Whether a cooperative checkpoint request is outstanding.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// This worker's counters.
    pub fn stats(&self) -> PreemptStats {
        self.counters.snapshot()
    }

    /// Sets the checkpoint flag (async-signal-safe).
    pub(crate) fn set_request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            POLL.fetch_add(1, Ordering::Release);
        }
    }

    /// Withdraws an outstanding checkpoint request; true if one was set.
    /// For a requester that finds, after [`crate::request_preempt`], that
    /// the slot no longer drives the worker it meant (the scheduler's
    /// stopper, when a `blocking` call handed the worker to another thread
    /// meanwhile): left set, the request would stay on a slot that runs no
    /// task, and keep every poll of the process (allocation, `Gc<T>`
    /// deref) on its slow path. Pair it with a `SeqCst` fence between the
    /// request and the re-check, as `set_idle(true)` has one between the
    /// worker's hand-off and its own clearing. Withdrawing a request that
    /// someone else has just posted only loses it until that requester
    /// retries (stops and the timer monitor re-send).
    pub fn withdraw_request(&self) -> bool {
        self.take_request()
    }

    /// Clears the checkpoint flag; true if it was set. Inline (it runs on
    /// every switch, from `switch_out`, another crate's code): the usual
    /// case is one relaxed load; clearing a set flag is out of line.
    #[inline]
    pub(crate) fn take_request(&self) -> bool {
        if self.requested.load(Ordering::Relaxed) {
            return self.take_request_slow();
        }
        false
    }

    #[cold]
    #[inline(never)]
    fn take_request_slow(&self) -> bool {
        if self.requested.swap(false, Ordering::AcqRel) {
            POLL.fetch_sub(1, Ordering::Release);
            return true;
        }
        false
    }

    /// Marks the worker idle (or blocked) — its timer is disarmed so it gets
    /// no signals — or busy again (timer armed one quantum from now, unless
    /// the worker is uncontended: see [`WorkerSlot::set_contended`]). Only
    /// transitions make a system call. Meant for the worker itself (a disarm
    /// racing with the worker's own tick may be undone by that tick's
    /// re-arm).
    ///
    /// `set_idle(true)` also clears an outstanding checkpoint request. The
    /// slot goes quiet: its worker sleeps, parks for a stop or was handed
    /// to another thread (a stop request that arrived between tasks, a tick
    /// refused just before a hand-off), or, for a task that stops the
    /// world, the task runs on in a no-preemption section where a request
    /// means nothing (the scheduler's stopper, whose quantum is off for the
    /// stop). Left set, the request kept the process-wide count of
    /// requests non-zero meanwhile, and with it every allocation's and
    /// every `Gc<T>` deref's poll on every worker on its slow path (issue
    /// 9), and made the slot's next task yield at its first checkpoint for
    /// nothing. A `SeqCst` fence comes first: a requester that posts after
    /// it and then re-checks (after its own fence) whether the slot still
    /// drives its worker sees the change and withdraws its request
    /// ([`WorkerSlot::withdraw_request`]).
    pub fn set_idle(&self, idle: bool) -> Result<(), Error> {
        if idle {
            core::sync::atomic::fence(Ordering::SeqCst);
            self.take_request();
            self.refusal_request.store(false, Ordering::Relaxed);
        }
        if !self.has_timer.load(Ordering::Acquire) {
            return Ok(());
        }
        self.busy.store(!idle, Ordering::SeqCst);
        if idle {
            self.disarm()
        } else if self.contended.load(Ordering::SeqCst) {
            self.arm_quantum()
        } else {
            Ok(())
        }
    }

    /// Tells the preemption engine whether runnable work waits for this
    /// worker ("tick only when someone waits"). A quantum only matters when
    /// another task waits: while `false`, a busy worker's quantum timer is
    /// left disarmed and its running task takes no signal (a timer signal
    /// costs 12-14 µs of the loop's time in delivery alone); `true` (the
    /// default) arms it, and the running task's quantum starts then (it ran
    /// uncontended until now: a waiting task waits at most one quantum).
    /// Targeted requests ([`crate::request_preempt`]: stop-the-world, due
    /// timers) are not affected.
    ///
    /// `false` is lazy: it makes no system call (it only clears the flag);
    /// the next tick finds the flag clear and leaves the timer disarmed, so a
    /// worker takes at most one more signal after it became uncontended, and
    /// a worker whose contention flips on every task switch (a ping-pong)
    /// makes no system call for it. `true` makes one (`timer_settime`) only
    /// if the timer is not armed; when the flag is already set it is one
    /// load.
    ///
    /// Callable from any thread, async-signal-safe. The one call a scheduler
    /// makes, at two kinds of places:
    /// * the worker, each time it picks its next task (before `switch_in`):
    ///   `slot.set_contended(work_waits)`, where `work_waits` is whether its
    ///   own queues, the global queue, or a steal target that has no idle
    ///   worker hold runnable tasks. Clearing races with wakers: after
    ///   `set_contended(false)` the worker issues a SeqCst fence and looks at
    ///   its queues again, setting it back if work appeared (a waker
    ///   publishes its task, then a SeqCst fence or RMW, then calls
    ///   `set_contended(true)`, which reads the flag: one of the two sees the
    ///   other);
    /// * whoever makes a task runnable (spawn, wake, timer expiry) while no
    ///   worker is idle: `slot.set_contended(true)` on the running workers
    ///   (at least on the one expected to run it).
    ///
    /// When loops equal workers, no signal is then sent at all.
    pub fn set_contended(&self, contended: bool) -> Result<(), Error> {
        if !contended {
            if self.contended.load(Ordering::Relaxed) {
                self.contended.swap(false, Ordering::SeqCst);
            }
            return Ok(());
        }
        // Already set: whoever set it armed the timer (if busy), or the
        // handler re-arms it (it re-reads the flag after clearing `armed`).
        if self.contended.load(Ordering::SeqCst) || self.contended.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if !self.has_timer.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.busy.load(Ordering::SeqCst) {
            self.arm_quantum()?;
            // The worker may have gone idle meanwhile (set_idle(true) read
            // armed before we set it): do not leave an idle worker ticking.
            if !self.busy.load(Ordering::SeqCst) {
                self.disarm()?;
            }
        }
        Ok(())
    }

    /// Called by `checkpoint()` on the worker thread right before a yield
    /// that a refused tick asked for: the next task's quantum starts now.
    /// Records the time and the switch count (the next tick that sees two
    /// more switches starts that task's quantum at this time, not at the
    /// tick), and re-arms the timer for the quantum's end (it was armed for
    /// the refused task's retry). One clock read and one `timer_settime`
    /// per such yield, none on the switch path.
    pub(crate) fn note_cooperative_yield(&self) {
        if crate::signal::OLD_RETRY_POLICY.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ns();
        self.coop_yield_sw.store(self.switches.load(Ordering::Relaxed), Ordering::Relaxed);
        self.coop_yield_at.store(now, Ordering::Relaxed);
        // The handler runs on this thread: order the stores before the
        // re-arm as it sees them.
        compiler_fence(Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) && self.contended.load(Ordering::Relaxed) {
            let _ = self.arm_at(now.saturating_add(self.quantum_ns.load(Ordering::Relaxed)));
        }
    }

    /// Called by the handler on a quantum tick of an uncontended worker
    /// (the lazy half of `set_contended(false)`): the timer (one-shot, so
    /// not running now) is marked disarmed and not re-armed. A
    /// `set_contended(true)` racing with this either ran before the clear
    /// of `armed` (then the re-read of the flag below sees it set, and this
    /// re-arms) or after it (then it sees `armed` clear and arms itself).
    /// Async-signal-safe.
    pub(crate) fn tick_uncontended(&self) {
        self.armed.store(false, Ordering::SeqCst);
        if self.contended.load(Ordering::SeqCst) && self.busy.load(Ordering::SeqCst) {
            let _ = self.arm_quantum();
        }
    }

    /// Whether runnable work waits for this worker (see
    /// [`WorkerSlot::set_contended`]).
    #[inline]
    pub fn is_contended(&self) -> bool {
        self.contended.load(Ordering::Relaxed)
    }

    fn disarm(&self) -> Result<(), Error> {
        if self.armed.swap(false, Ordering::SeqCst) && self.arm_at(0) != 0 {
            return Err(Error::Os("timer_settime", last_errno()));
        }
        Ok(())
    }

    /// Arms the timer one quantum from now if it is not armed; the running
    /// task's quantum starts now.
    fn arm_quantum(&self) -> Result<(), Error> {
        if !self.armed.swap(true, Ordering::SeqCst) {
            let q = self.quantum_ns.load(Ordering::Relaxed);
            let now = now_ns();
            self.switched_at.store(now, Ordering::Relaxed);
            // If the worker is between tasks, the next one switched in
            // starts its quantum now too (one more switch to come); if a
            // task runs, its quantum starts now.
            let sw = self.switches.load(Ordering::Relaxed);
            let seen = if self.running.load(Ordering::Acquire) { sw } else { sw.wrapping_add(1) };
            self.seen_switches.store(seen, Ordering::Relaxed);
            if self.arm_at(now.saturating_add(q)) != 0 {
                return Err(Error::Os("timer_settime", last_errno()));
            }
        }
        Ok(())
    }

    /// Whether the worker's timer is armed.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// The quantum.
    pub fn quantum(&self) -> Duration {
        Duration::from_nanos(self.quantum_ns.load(Ordering::Relaxed))
    }

    /// Changes the quantum (re-arms the timer if it is armed).
    pub fn set_quantum(&self, quantum: Duration) -> Result<(), Error> {
        if quantum < MIN_QUANTUM {
            return Err(Error::InvalidQuantum(quantum));
        }
        let ns = quantum.as_nanos().min(u64::MAX as u128 / 2) as u64;
        self.quantum_ns.store(ns, Ordering::Relaxed);
        if self.armed.load(Ordering::Acquire) && self.arm_at(now_ns().saturating_add(ns)) != 0 {
            return Err(Error::Os("timer_settime", last_errno()));
        }
        Ok(())
    }

    /// Arms the one-shot timer for the absolute CLOCK_MONOTONIC time
    /// `deadline_ns` (0 disarms). Async-signal-safe (the handler re-arms the
    /// timer from here); returns timer_settime's result.
    pub(crate) fn arm_at(&self, deadline_ns: u64) -> i32 {
        if !self.has_timer.load(Ordering::Acquire) {
            return 0;
        }
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let at = libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as _,
            tv_nsec: (deadline_ns % 1_000_000_000) as _,
        };
        let spec = libc::itimerspec { it_interval: zero, it_value: at };
        // SAFETY: the timer id was returned by timer_create and is not deleted
        // while has_timer is set (teardown clears has_timer first).
        unsafe { libc::timer_settime(self.timer.load(Ordering::Acquire), libc::TIMER_ABSTIME, &spec, core::ptr::null_mut()) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call; async-signal-safe).
#[inline]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The alternate signal stack size: the kernel's minimum for this CPU's
/// signal frame (AT_MINSIGSTKSZ grows with AVX-512/AMX state) plus headroom.
pub fn altstack_size() -> usize {
    // SAFETY: getauxval has no preconditions; 0 means "unknown".
    let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    let page = page_size();
    let n = min.max(libc::SIGSTKSZ) + ALTSTACK_HEADROOM;
    n.div_ceil(page) * page
}

/// Registers `slot` as the calling thread's worker slot: installs the signal
/// handler if needed ([`crate::init`]), an alternate signal stack (pre-faulted,
/// with a guard page), and a POSIX timer that signals this thread every
/// quantum once armed. The worker starts idle (timer disarmed): call
/// `slot.set_idle(false)` when it starts running tasks.
pub fn register_worker(slot: &'static WorkerSlot, quantum: Duration) -> Result<(), Error> {
    crate::signal::init()?;
    register(slot, quantum, true)
}

/// [`register_worker`] without signals, for a runtime whose asynchronous
/// preemption is off (`USURP_DEBUG=asyncpreemptoff=1`, a debugger or
/// valgrind that must see no signal; or the builder's choice): no signal
/// handler, alternate stack or timer. The slot carries its checkpoint flag
/// only: [`crate::request_preempt`] sets it without sending a signal, and
/// [`crate::checkpoint`] (and the scheduler's other cooperative points)
/// honour it, so that a stop, or a quantum's end that the scheduler's
/// monitor asks for, reaches code that polls. Before, such a runtime
/// registered no slot at all, and a task that called `checkpoint()` held
/// up every collection for ever (new-user probe 112).
pub fn register_worker_cooperative(slot: &'static WorkerSlot, quantum: Duration) -> Result<(), Error> {
    register(slot, quantum, false)
}

/// Whether `slot` was registered without signals
/// ([`register_worker_cooperative`]).
impl WorkerSlot {
    #[inline]
    pub fn is_cooperative_only(&self) -> bool {
        self.cooperative_only.load(Ordering::Acquire)
    }
}

fn register(slot: &'static WorkerSlot, quantum: Duration, signals: bool) -> Result<(), Error> {
    if quantum < MIN_QUANTUM {
        return Err(Error::InvalidQuantum(quantum));
    }
    if !current_ptr().is_null() {
        return Err(Error::AlreadyRegistered);
    }
    if slot.registered.swap(true, Ordering::AcqRel) {
        return Err(Error::AlreadyRegistered);
    }
    let r = (|| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        slot.cooperative_only.store(!signals, Ordering::Release);
        if signals {
            install_altstack(slot)?;
        }
        slot.set_quantum(quantum)?;
        if signals {
            create_timer(slot, tid)?;
        }
        publish(slot)?;
        slot.pending.store(0, Ordering::Release);
        // A pooled slot starts contended, like a fresh one (the scheduler
        // clears it when it finds no waiting work).
        slot.contended.store(true, Ordering::SeqCst);
        // A pooled slot starts without a request, like a fresh one: a late
        // request to its last registration may have landed after that
        // one's `unregister_worker` (`request_preempt` withdraws such a
        // request itself once it sees the tid change; this covers the time
        // in between).
        slot.take_request();
        slot.refusal_request.store(false, Ordering::Relaxed);
        CURRENT.with(|c| c.set(slot));
        // Publish the tid last: request_preempt sends nothing before it is
        // set, so every request signal finds CURRENT set on this thread.
        slot.tid.store(tid, Ordering::Release);
        Ok(())
    })();
    if r.is_err() {
        teardown(slot);
        slot.registered.store(false, Ordering::Release);
    }
    r
}

/// Undoes [`register_worker`] on the calling (worker) thread: deletes the
/// timer, restores the previous alternate signal stack and frees ours, and
/// clears any outstanding request (a pooled slot registered again later must
/// not start with its checkpoint flag set, which would keep every
/// [`crate::checkpoint`] in the process on its slow path). The slot keeps its
/// counters (and stays visible in [`crate::stats`]).
pub fn unregister_worker() -> Result<(), Error> {
    let p = current_ptr();
    // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
    let Some(slot) = (unsafe { p.as_ref() }) else { return Err(Error::NotAWorker) };
    slot.running.store(false, Ordering::Release);
    // No new requests from now on. A request signal already sent and not yet
    // delivered is recognised by its payload (the slot address, a known
    // slot) and dropped, whenever it arrives.
    slot.tid.store(0, Ordering::SeqCst);
    CURRENT.with(|c| c.set(core::ptr::null()));
    teardown(slot);
    slot.pending.store(0, Ordering::Release);
    // Dekker's handshake with `request_preempt` (a fence on each side,
    // between its write and its read): either we see a request posted by
    // a requester that read the old tid, and clear it here, or that
    // requester sees the tid change after posting, and withdraws it.
    core::sync::atomic::fence(Ordering::SeqCst);
    slot.take_request();
    slot.registered.store(false, Ordering::Release);
    Ok(())
}

fn publish(slot: &'static WorkerSlot) -> Result<(), Error> {
    let _g = ALL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let p = slot as *const WorkerSlot as *mut WorkerSlot;
    let n = ALL_LEN.load(Ordering::Relaxed);
    if ALL.iter().take(n).any(|s| s.load(Ordering::Relaxed) == p) {
        return Ok(());
    }
    let e = ALL.get(n).ok_or(Error::TableFull("worker"))?;
    e.store(p, Ordering::Release);
    ALL_LEN.store(n + 1, Ordering::Release);
    Ok(())
}

fn install_altstack(slot: &WorkerSlot) -> Result<(), Error> {
    let page = page_size();
    let size = altstack_size();
    let total = size + page;
    // SAFETY: anonymous private mapping; checked below.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Error::Os("mmap (signal stack)", last_errno()));
    }
    let base = base as usize;
    // SAFETY: the lowest page of our own mapping becomes the guard page.
    unsafe { libc::mprotect(base as *mut libc::c_void, page, libc::PROT_NONE) };
    let lo = base + page;
    // Pre-fault every page: Linux 5.2–5.4 could corrupt AVX state when a
    // signal frame was written to a not-yet-present page (golang/go#35777).
    let mut p = lo;
    while p < lo + size {
        // SAFETY: [lo, lo+size) is mapped read/write.
        unsafe { core::ptr::write_volatile(p as *mut u8, 0) };
        p += page;
    }
    let ss = libc::stack_t { ss_sp: lo as *mut libc::c_void, ss_flags: 0, ss_size: size };
    // SAFETY: zeroed stack_t is a valid out-parameter.
    let mut old: libc::stack_t = unsafe { core::mem::zeroed() };
    // SAFETY: both pointers are valid; the new stack stays mapped until
    // teardown restores the old one.
    if unsafe { libc::sigaltstack(&ss, &mut old) } != 0 {
        let e = last_errno();
        // SAFETY: unmapping what we mapped above.
        unsafe { libc::munmap(base as *mut libc::c_void, total) };
        return Err(Error::Os("sigaltstack", e));
    }
    *slot.old_ss.lock().unwrap_or_else(|p| p.into_inner()) = Some((old.ss_sp as usize, old.ss_size, old.ss_flags));
    slot.altstack.store(base, Ordering::Release);
    slot.altstack_len.store(total, Ordering::Release);
    Ok(())
}

fn create_timer(slot: &'static WorkerSlot, tid: i32) -> Result<(), Error> {
    // SAFETY: sigevent is plain data; zero is a valid starting point.
    let mut sev: libc::sigevent = unsafe { core::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = crate::signal::signal();
    sev.sigev_notify_thread_id = tid;
    sev.sigev_value = libc::sigval { sival_ptr: slot as *const WorkerSlot as *mut libc::c_void };
    let mut timer: libc::timer_t = core::ptr::null_mut();
    // SAFETY: valid pointers to a sigevent and an out-parameter.
    if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) } != 0 {
        return Err(Error::Os("timer_create", last_errno()));
    }
    slot.timer.store(timer, Ordering::Release);
    slot.armed.store(false, Ordering::Release);
    slot.has_timer.store(true, Ordering::Release);
    Ok(())
}

fn teardown(slot: &WorkerSlot) {
    if slot.has_timer.swap(false, Ordering::AcqRel) {
        slot.armed.store(false, Ordering::Release);
        // SAFETY: the timer was created by create_timer and is deleted once.
        unsafe { libc::timer_delete(slot.timer.load(Ordering::Acquire)) };
    }
    let base = slot.altstack.swap(0, Ordering::AcqRel);
    if base != 0 {
        let old = slot.old_ss.lock().unwrap_or_else(|p| p.into_inner()).take();
        let ss = match old {
            Some((sp, size, flags)) if flags & libc::SS_DISABLE == 0 && sp != 0 => {
                libc::stack_t { ss_sp: sp as *mut libc::c_void, ss_flags: 0, ss_size: size }
            }
            _ => libc::stack_t { ss_sp: core::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 },
        };
        // SAFETY: restoring the thread's previous alternate stack (or none);
        // we are not running on ours (this is normal thread context).
        unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) };
        let len = slot.altstack_len.swap(0, Ordering::AcqRel);
        // SAFETY: unmapping the region install_altstack mapped.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::NoPreempt;

    /// A slot with the `'static` lifetime registration needs (leaked: a
    /// test's slots live as long as the process, as the pool's do).
    fn leaked_slot() -> &'static WorkerSlot {
        Box::leak(Box::new(WorkerSlot::new()))
    }

    /// Runs `f` on a fresh thread (each registration needs its own thread:
    /// one worker per thread) and returns its result; a panic inside fails
    /// the test.
    fn on_new_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::spawn(f).join().unwrap()
    }

    /// Waits (20 s watchdog) until the handler of `a` has acknowledged a
    /// request sent after it had acknowledged `acks`.
    fn wait_for_ack_after(a: &WorkerSlot, acks: u64) {
        let t0 = std::time::Instant::now();
        while a.acks() == acks {
            assert!(t0.elapsed() < Duration::from_secs(20), "request never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn no_switch_guard_counts_on_the_slot_it_began_on() {
        // (SAFETY of each `NoPreemptNoSwitch::new` below: every guard is
        // dropped on the thread that made it, and nothing switches tasks.)
        // Outside a worker: nothing to count, nothing to restore.
        // SAFETY: see above.
        drop(unsafe { crate::guard::NoPreemptNoSwitch::new() });
        let a = leaked_slot();
        on_new_thread(move || {
            register_worker(a, Duration::from_millis(10)).unwrap();
            a.switch_in(0x1000, 0x2000, TaskPreemptState::default());
            // SAFETY: see above.
            let g1 = unsafe { crate::guard::NoPreemptNoSwitch::new() };
            assert_eq!(a.no_preempt_depth(), 1);
            // Nests with the plain guard, in either order of drops.
            let g2 = NoPreempt::new();
            // SAFETY: see above.
            let g3 = unsafe { crate::guard::NoPreemptNoSwitch::new() };
            assert_eq!(a.no_preempt_depth(), 3);
            drop(g2);
            assert_eq!(a.no_preempt_depth(), 2);
            drop(g3);
            assert_eq!(a.no_preempt_depth(), 1);
            drop(g1);
            assert_eq!(a.no_preempt_depth(), 0);
            a.switch_out();
            unregister_worker().unwrap();
        });
    }

    #[test]
    fn no_preempt_depth_travels_with_the_task_across_workers() {
        let a = leaked_slot();
        let b = leaked_slot();
        // Worker A: the task enters two nested sections and is switched out
        // (a cooperative switch inside the section).
        let st = on_new_thread(move || {
            register_worker(a, Duration::from_millis(10)).unwrap();
            assert!(core::ptr::eq(current_worker().unwrap(), a));
            a.switch_in(0x1000, 0x2000, TaskPreemptState::default());
            assert!(a.is_running());
            let s0 = a.switches();
            let g1 = NoPreempt::new();
            let g2 = NoPreempt::new();
            assert_eq!(a.no_preempt_depth(), 2);
            drop(g2);
            assert_eq!(a.no_preempt_depth(), 1);
            // The guard's section continues on another worker: forget it here.
            core::mem::forget(g1);
            let st = a.switch_out();
            assert!(!a.is_running());
            assert_eq!(a.switches(), s0 + 1);
            assert_eq!(a.no_preempt_depth(), 0);
            unregister_worker().unwrap();
            st
        });
        assert_eq!(st.no_preempt_depth(), 1);
        // Worker B resumes the task: the depth comes back, and the guard's
        // drop (modelled by a fresh guard's drop after forgetting its
        // increment) ends the section there.
        on_new_thread(move || {
            register_worker(b, Duration::from_millis(10)).unwrap();
            b.switch_in(0x1000, 0x2000, st);
            assert_eq!(b.no_preempt_depth(), 1);
            let g = NoPreempt::new();
            assert_eq!(b.no_preempt_depth(), 2);
            drop(g);
            // What dropping the original guard on this worker does:
            drop(NoPreempt { _not_send: core::marker::PhantomData });
            assert_eq!(b.no_preempt_depth(), 0);
            b.switch_out();
            unregister_worker().unwrap();
        });
    }

    #[test]
    fn registration_errors_and_idle_transitions() {
        let a = leaked_slot();
        on_new_thread(move || {
            assert_eq!(unregister_worker(), Err(Error::NotAWorker));
            assert!(matches!(register_worker(a, Duration::from_micros(10)), Err(Error::InvalidQuantum(_))));
            register_worker(a, Duration::from_millis(5)).unwrap();
            assert_eq!(register_worker(a, Duration::from_millis(5)), Err(Error::AlreadyRegistered));
            assert!(a.tid() > 0);
            assert!(!a.is_armed());
            a.set_idle(false).unwrap();
            assert!(a.is_armed());
            a.set_idle(false).unwrap();
            a.set_quantum(Duration::from_millis(2)).unwrap();
            assert_eq!(a.quantum(), Duration::from_millis(2));
            a.set_idle(true).unwrap();
            assert!(!a.is_armed());
            unregister_worker().unwrap();
            assert_eq!(a.tid(), 0);
            assert!(current_worker().is_none());
            assert_eq!(crate::request_preempt(a), Err(Error::NotAWorker));
            // A slot can be registered again (e.g. a restarted worker).
            register_worker(a, Duration::from_millis(5)).unwrap();
            unregister_worker().unwrap();
        });
        assert!(altstack_size() >= libc::SIGSTKSZ);
    }

    #[test]
    fn going_idle_clears_an_outstanding_request() {
        let a = leaked_slot();
        on_new_thread(move || {
            register_worker(a, Duration::from_millis(5)).unwrap();
            a.set_idle(false).unwrap();
            // A request between tasks (not running): refused, and the flag
            // stays set (nothing else clears it: the control).
            let acks = a.acks();
            assert_eq!(crate::request_preempt(a), Ok(true));
            wait_for_ack_after(a, acks);
            std::thread::sleep(Duration::from_millis(2));
            assert!(a.is_requested());
            assert!(crate::guard::any_checkpoint_request());
            // The worker goes to sleep (or parks for the stop): the request
            // was for no task, and must not keep every poll on its slow path.
            a.set_idle(true).unwrap();
            assert!(!a.is_requested());
            unregister_worker().unwrap();
        });
    }

    #[test]
    fn registering_clears_a_request_left_on_a_pooled_slot() {
        let a = leaked_slot();
        on_new_thread(move || {
            register_worker(a, Duration::from_millis(5)).unwrap();
            unregister_worker().unwrap();
            // A late request (its requester read the tid before the
            // unregistration, and posts after it; it withdraws it once it
            // re-checks the tid, but not yet): the control, the flag is set.
            a.set_request();
            assert!(a.is_requested());
            register_worker(a, Duration::from_millis(5)).unwrap();
            assert!(!a.is_requested(), "a pooled slot registered again starts with a stale request");
            unregister_worker().unwrap();
        });
    }

    #[test]
    fn withdraw_request_clears_the_flag_once() {
        let a = leaked_slot();
        a.set_request();
        assert!(a.is_requested());
        assert!(a.withdraw_request());
        assert!(!a.is_requested());
        assert!(!a.withdraw_request());
    }

    #[test]
    fn a_posted_request_sets_the_flag_without_a_signal() {
        let a: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
        // Not registered: refused, no flag left behind.
        assert_eq!(crate::internals::post_checkpoint_request(a), Err(Error::NotAWorker));
        assert!(!a.is_requested());
        std::thread::spawn(move || {
            register_worker(a, Duration::from_millis(5)).unwrap();
            let sent = a.stats().requests_sent;
            assert_eq!(crate::internals::post_checkpoint_request(a), Ok(()));
            assert!(a.is_requested());
            assert!(crate::checkpoint_requested(), "the worker's poll does not see the posted request");
            assert!(!a.is_pending(), "a posted request marked a signal pending");
            assert_eq!(a.stats().requests_sent, sent, "a posted request sent a signal");
            assert!(a.take_request());
            unregister_worker().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn unregister_clears_an_outstanding_request() {
        let a = leaked_slot();
        on_new_thread(move || {
            register_worker(a, Duration::from_millis(5)).unwrap();
            // A request to an idle worker: the handler refuses (not running)
            // but the checkpoint flag stays set for cooperative code.
            let acks = a.acks();
            assert_eq!(crate::request_preempt(a), Ok(true));
            wait_for_ack_after(a, acks);
            assert!(a.is_requested());
            unregister_worker().unwrap();
            assert!(!a.is_requested(), "a pooled slot keeps forcing checkpoint() onto its slow path");
            register_worker(a, Duration::from_millis(5)).unwrap();
            assert!(!a.is_requested());
            unregister_worker().unwrap();
        });
    }
}
