//! The per-thread machine and the worker's state (the worker floor's base:
//! `policy.rs`, `switch.rs` and `blocking.rs` build on it).
//!
//! A *machine* (Go's M) is an OS thread; `machine_main` is its body: it
//! drives a worker's scheduler loop, or waits as a spare thread. A
//! *worker* (Go's P) owns the scheduling state; its fields say who touches
//! them. The accessors here (`machine`, `Current::get`, `current_task`)
//! re-read the thread pointer on every call: tasks migrate between threads,
//! and the compiler must not cache a thread-local address across a switch.

use crate::arch;
use crate::queue::{CachePadded, LocalQueue, TaskList};
use crate::shared::Shared;
use crate::tasks::tcb::{Task, TaskRef};
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Tasks kept in a worker's free cache.
pub(crate) const FREE_CACHE: usize = 64;

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
    pub(super) static MACHINE: Cell<*mut Machine> = const { Cell::new(ptr::null_mut()) };
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

/// The running task with the machine and worker of the thread it runs on,
/// for a task that holds a worker (not inside `blocking`).
///
/// The machine and worker belong to the OS thread, and a task may resume
/// on another thread after any switch, so references to them must not
/// outlive one: the guard is neither `Send` nor `Clone`, its references
/// borrow from it, and the functions that switch the task away
/// (`switch_to`, and through it `yield_current`) take it by value, so the
/// compiler rejects a use of them after the switch. Obtain one right
/// before use ([`Current::get`]) and do not keep it across a call that may
/// switch (`park_current`, `yield_now`, `blocking`, a channel or mutex
/// wait): those obtain their own.
pub(crate) struct Current {
    m: ptr::NonNull<Machine>,
    w: ptr::NonNull<Worker>,
    task: TaskRef,
    /// Not `Send`/`Sync`: bound to the thread that made it.
    _thread: std::marker::PhantomData<*mut ()>,
}

impl Current {
    /// The current task, its machine and worker, or `None` outside a task
    /// or inside `blocking` (no worker). Re-reads the thread pointer
    /// ([`machine`] is never inlined).
    #[inline]
    pub(crate) fn get() -> Option<Current> {
        let m = ptr::NonNull::new(machine())?;
        // SAFETY: a machine lives as long as its thread; we are on that
        // thread.
        let mr = unsafe { m.as_ref() };
        let cur = mr.current.get();
        let w = ptr::NonNull::new(mr.worker.get() as *mut Worker)?;
        if cur.is_null() {
            return None;
        }
        // SAFETY: `cur` is the task running on this thread: valid while it
        // runs, and it runs as long as this guard is usable (see above).
        Some(Current { m, w, task: unsafe { TaskRef::new(cur) }, _thread: std::marker::PhantomData })
    }

    /// This thread's machine.
    #[inline]
    pub(crate) fn machine(&self) -> &Machine {
        // SAFETY: a machine lives as long as its thread, and the guard does
        // not outlive the task's stay on this thread.
        unsafe { self.m.as_ref() }
    }

    /// The worker this thread drives.
    #[inline]
    pub(crate) fn worker(&self) -> &Worker {
        // SAFETY: the worker is owned by this thread while it is set in the
        // machine, which only this thread (running the task) changes.
        unsafe { self.w.as_ref() }
    }

    /// The running task (valid across switches: the task is the same).
    #[inline]
    pub(crate) fn task(&self) -> TaskRef {
        self.task
    }
}

/// The current task as a handle (also inside `blocking`), or `None`.
#[inline]
pub(crate) fn current_task_ref() -> Option<TaskRef> {
    let t = current_task();
    // SAFETY: the task running on this thread is valid while it runs.
    (!t.is_null()).then(|| unsafe { TaskRef::new(t) })
}

/// The current task (also inside `blocking`), or null.
#[inline]
pub(crate) fn current_task() -> *mut Task {
    let m = machine();
    if m.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: as in `Current::get`.
    unsafe { (*m).current.get() }
}

#[repr(C, align(64))]
///
/// Who touches what: "owner" is the thread currently driving the worker
/// (handed over with release/acquire in `Shared::handoff`); the rest say
/// their lock or ordering.
///
/// Field order is the layout (`repr(C)`): fields are grouped by who
/// writes them how often, with cache-line breaks ([`LineBreak`]) between
/// the groups (issue 11 switch costs, workers(2)).
pub(crate) struct Worker {
    // Read-mostly (immutable, or changed when a thread takes the worker
    // over): shared by every thread's cache.
    /// Its position in `Shared::workers`. Immutable.
    pub(crate) index: usize,
    /// The runtime it belongs to (which owns it). Immutable.
    pub(crate) shared: *const Shared,
    /// The runtime has this one worker: nobody steals from `runnext` and
    /// there is no idle worker to wake, so its owner uses plain loads and
    /// stores on it (no locked read-modify-write on the wake path).
    pub(super) solo: bool,
    /// Per-task CPU time is on (`RuntimeBuilder::task_cpu_time`, default
    /// on): [`Worker::charge`] and the scheduler loop read the cycle
    /// counter at every switch. Off, nothing reads it: `run_since` and
    /// every task's `cpu` stay 0. Immutable (copied from `Shared`).
    pub(super) cpu_time: bool,
    /// Preemption slot of the thread driving this worker (null if that
    /// thread has none: async preemption off). See `preempt_glue.rs`.
    pub(crate) slot: AtomicPtr<usurp_preempt::WorkerSlot>,
    /// Per other worker, for runnext stealing: (its `switch_count` when
    /// this worker last looked, when it first saw that value). Touched only
    /// by the thread driving this worker (in `steal_runnext`).
    pub(super) watch: Box<[Cell<(u64, u64)>]>,
    /// The 256-slot ring: pushed by the owner, popped by the owner and
    /// thieves with a CAS (`queue.rs`).
    pub(crate) queue: LocalQueue,
    /// The task to run next (LIFO slot for tasks spawned or woken by the
    /// running task). Written by the owner (swap in `make_runnable`, swap to
    /// null in `next_local`); an idle worker may take it with a CAS from
    /// non-null to null after a grace period (`steal_runnext`). Whoever
    /// swaps/CASes a task out of the slot owns it. On its own cache line:
    /// idle workers read it while the owner switches.
    pub(crate) runnext: CachePadded<AtomicPtr<Task>>,
    // Line break: the owner's per-switch state below shares no cache
    // line with what other workers poll (their reads would pull the line
    // away from the owner on every switch while they search for work).
    _owner: LineBreak,
    /// The outgoing task of the switch in progress (see `switch_to`).
    /// Owner only.
    pub(super) prev: Cell<*mut Task>,
    /// Schedules so far (the global queue and timers come first every
    /// `FAIR_TICKS`). Owner only.
    pub(super) tick: Cell<u32>,
    /// Boosted picks in a row (bounded by `RUNNEXT_STREAK`). Owner only.
    pub(super) streak: Cell<u32>,
    /// Xorshift state for the steal order. Owner only.
    pub(super) rng: Cell<u32>,
    /// `arch::cycles()` when the running task was switched in (per-task CPU
    /// time, issue 15; see [`Worker::charge`]). Touched only by the thread
    /// driving the worker.
    pub(super) run_since: Cell<u64>,
    /// Free task structs of this runtime (at most `FREE_CACHE`). Owner only.
    pub(crate) free: UnsafeCell<Vec<*mut Task>>,
    /// Tasks pinned here (queued or running) that have not switched
    /// cooperatively since; while nonzero, `blocking` does not hand off the
    /// worker (it moves the calling task to a spare thread instead).
    pub(super) pinned: Cell<usize>,
    /// The spare thread the outgoing task moves to (`A_ADOPT`); set by the
    /// running task right before its switch, taken by `finish_switch` on
    /// the same thread.
    pub(super) adopt_to: Cell<*const Machine>,
    // Line break: read by searching, waking and stopping workers; written
    // by the owner only when tasks are queued here or it idles.
    _polled: LineBreak,
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
    /// Tasks pinned to this worker that other workers found in their
    /// queues: pushed by any thread (`Shared::claim_for`), drained by the
    /// owner, under the spin lock.
    pub(crate) inbox: crate::spin::SpinLock<TaskList>,
    /// `inbox.len()`, stored (SeqCst) under the `inbox` lock; read without
    /// it for idle and contention checks.
    pub(crate) inbox_len: AtomicUsize,
    /// Registered idle (counted in `Shared::nidle`): set (SeqCst) by the
    /// owner before it sleeps, cleared with a SeqCst CAS by whoever wakes
    /// it (or by itself).
    pub(crate) idle: AtomicBool,
    /// Futex word the idle owner sleeps on: set to 1 (SeqCst) by wakers
    /// (`wake_worker_word`), reset by the owner.
    pub(crate) sleep_word: AtomicU32,
    /// In a spinning nap's futex wait (`policy.rs` `Worker::nap`): set
    /// (SeqCst) by the owner before it checks for a stop and waits, cleared
    /// after; read by the stopper (`stw.rs` `ask_to_stop`), which wakes a
    /// napping worker so that it parks for the stop at once instead of
    /// when its nap times out.
    pub(crate) napping: AtomicBool,
    // Line break: written by the owner on every switch and read by other
    // workers (runnext stealing's grace period, stops, dumps): alone on
    // their line.
    _published: LineBreak,
    /// Incremented on every task switch on this worker (preemption hook).
    /// Not a duplicate of `WorkerSlot::switches`: that one counts per OS
    /// thread (a worker changes threads at a `blocking` handoff) and exists
    /// only with async preemption on; this one counts per worker, always
    /// (runnext stealing and the hooks read it).
    pub(crate) switch_count: AtomicU64,
    /// Address of the task on this worker's CPU, or 0 (preemption hook).
    pub(crate) running_task: AtomicUsize,
    // Line break: nothing after this shares the line above.
    _end: LineBreak,
}

/// A zero-sized field aligned to a cache line: in a `repr(C)` struct, the
/// next field starts on a new line (the padding goes before it).
#[repr(align(64))]
pub(crate) struct LineBreak;

// SAFETY: the Cells and UnsafeCells are touched only by the thread currently
// driving the worker (handed over with release/acquire in `handoff`); the rest
// are atomics or locks.
unsafe impl Sync for Worker {}
// SAFETY: as above.
unsafe impl Send for Worker {}

impl Worker {
    pub(crate) fn new(index: usize, nworkers: usize, shared: *const Shared, cpu_time: bool) -> Worker {
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
            cpu_time,
            idle: AtomicBool::new(false),
            sleep_word: AtomicU32::new(0),
            napping: AtomicBool::new(false),
            switch_count: AtomicU64::new(0),
            running_task: AtomicUsize::new(0),
            slot: AtomicPtr::new(ptr::null_mut()),
            run_since: Cell::new(0),
            _owner: LineBreak,
            _polled: LineBreak,
            _published: LineBreak,
            _end: LineBreak,
        }
    }

    /// Adds the CPU time `t` used since it was switched in to `t.cpu`, and
    /// restarts the count (for the next task, or for `t` if it goes on
    /// running). One cycle-counter read, no system call, no locked RMW:
    /// only the thread running `t` writes `t.cpu`. Nothing with per-task
    /// CPU time off (no counter read: [`Worker::cpu_time`]).
    #[inline]
    pub(super) fn charge(&self, t: TaskRef) {
        if !self.cpu_time {
            return;
        }
        let now = arch::cycles();
        let cpu = &t.cpu;
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
    pub(super) fn bump_switch(&self) {
        // Only the driving thread writes: a plain load+store, no locked RMW.
        let c = self.switch_count.load(Ordering::Relaxed);
        self.switch_count.store(c.wrapping_add(1), Ordering::Relaxed);
    }

}


/// CPU time of task `t` in cycles: what was charged at its switches, plus,
/// if `t` is the task running on the calling thread's worker, the time since
/// it was switched in. Always 0 with per-task CPU time off (nothing is
/// charged, and `run_since` is never stamped).
pub(crate) fn current_cpu_cycles(t: TaskRef) -> u64 {
    let base = t.cpu.load(Ordering::Relaxed);
    match Current::get() {
        Some(c) if c.task() == t && c.worker().cpu_time => base.wrapping_add(arch::cycles().saturating_sub(c.worker().run_since.get())),
        _ => base,
    }
}

/// Per-task CPU time off (`RuntimeBuilder::task_cpu_time(false)`): after
/// thousands of switches (yields against a partner, a `blocking` call whose
/// worker is handed off, the scheduler loop starting the task) the task was
/// never charged (`Task::cpu` 0), its worker never stamped `run_since`, and
/// every reader reports the documented zero and says it is off
/// (`TaskStats::cpu_time_on`, `TaskDump::cpu_time_on`, `cpu off` in the
/// printed dump). The same scenario with it on is the control: there each
/// of these observations sees the charges (so the off run's zeros are not
/// an artefact of the scenario). Removing any of the guards (in `charge`,
/// the scheduler loop's stamp, `current_cpu_cycles`) fails the off run.
#[cfg(test)]
mod cpu_time_tests {
    use super::*;
    use crate::{Runtime, TaskStats};
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    use usurp_testsupport::within;

    struct Seen {
        /// `Task::cpu` of the task after its switches.
        charged: u64,
        /// Its worker's `run_since` then.
        run_since: u64,
        /// `current_cpu_cycles` of itself.
        own_cycles: u64,
        /// `task::current()`.
        own: TaskStats,
        /// Its join handle's stats once it finished.
        joined: TaskStats,
        /// A dump taken by the task, printed, and its flag.
        dump: String,
        dump_on: bool,
    }

    fn scenario(on: bool) -> Seen {
        let rt = Runtime::builder().workers(1).task_cpu_time(on).build().unwrap();
        assert_eq!(rt.task_cpu_time(), on);
        let stop = Arc::new(AtomicBool::new(false));
        let partner = {
            let stop = stop.clone();
            rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    crate::yield_now();
                }
            })
        };
        let h = rt.spawn(move || {
            let spin = |d: Duration| {
                let t0 = Instant::now();
                while t0.elapsed() < d {
                    crate::yield_now();
                }
            };
            spin(Duration::from_millis(20));
            // A handoff (one worker, no pinned task: a spare thread takes
            // the worker over) charges at the handoff.
            crate::blocking(|| std::thread::sleep(Duration::from_millis(1)));
            spin(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            let (charged, run_since, own_cycles) = {
                // The guard is not kept across the dump below (it may switch).
                let c = Current::get().expect("a task");
                (c.task().cpu.load(Ordering::Relaxed), c.worker().run_since.get(), current_cpu_cycles(c.task()))
            };
            let own = crate::task::current().expect("a task");
            let dump = crate::task::dump();
            (charged, run_since, own_cycles, own, dump.to_string(), dump.cpu_time_on)
        });
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let joined = h.stats();
        let (charged, run_since, own_cycles, own, dump, dump_on) = h.join().unwrap();
        partner.join().unwrap();
        Seen { charged, run_since, own_cycles, own, joined, dump, dump_on }
    }

    #[test]
    fn with_cpu_time_off_nothing_is_charged_and_readers_say_off() {
        let s = within(60, "cpu time off", || scenario(false));
        assert_eq!(s.charged, 0, "a task was charged with CPU time off");
        assert_eq!(s.run_since, 0, "the worker read the cycle counter with CPU time off");
        assert_eq!(s.own_cycles, 0);
        assert_eq!((s.own.cpu_time, s.own.cpu_time_on), (Duration::ZERO, false));
        assert_eq!((s.joined.cpu_time, s.joined.cpu_time_on, s.joined.finished), (Duration::ZERO, false, true));
        assert!(!s.dump_on);
        assert!(s.dump.contains(", cpu off"), "dump without 'cpu off':\n{}", s.dump);
    }

    #[test]
    fn control_with_cpu_time_on_the_same_scenario_is_charged() {
        let s = within(60, "cpu time on", || scenario(true));
        assert!(s.charged > 0, "no charge in 40 ms of yields");
        assert!(s.run_since > 0);
        assert!(s.own_cycles >= s.charged);
        assert!(s.own.cpu_time > Duration::ZERO && s.own.cpu_time_on);
        assert!(s.joined.cpu_time >= s.own.cpu_time && s.joined.cpu_time_on && s.joined.finished);
        assert!(s.dump_on);
        assert!(!s.dump.contains("cpu off") && s.dump.contains(", cpu "), "dump:\n{}", s.dump);
    }
}
