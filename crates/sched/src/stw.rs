//! Stop-the-world.
//!
//! A *stopper* (a task, or any other thread) calls [`stop_the_world`]; it
//! returns when every worker of the runtime other than the caller's own is
//! *stopped*, and [`start_the_world`] lets them go again. A worker is stopped
//! when:
//!
//! * **parked** (`PARKED`): its driving thread is in its scheduler loop (no task
//!   on its CPU) and waits in [`park_worker`] until the world restarts. Tasks
//!   at cooperative points (yield, park, channel/mutex waits, exit) get there
//!   at once: while the stop flag is set, `next_fast` hands no task to a
//!   direct task-to-task switch, so every switch goes to the scheduler loop,
//!   and `find_runnable` parks before it looks for work.
//! * **idle** (`Worker::idle` set): its driving thread sleeps in
//!   `idle_sleep` (or is about to) with no task on its CPU. It is *not*
//!   woken for the stop (issue 9 item 6): it counts as stopped as it is. The
//!   handshake is Dekker's, all SeqCst: the worker clears `idle` (its own
//!   CAS, or a waker's) and then, after a SeqCst fence, reads `stop` before
//!   it looks for work; the stopper sets `stop` and then reads `idle`. So
//!   either the stopper sees the worker not idle (and waits for it to park
//!   like any running worker), or the worker sees the stop and parks before
//!   it takes a task. While asleep it runs nothing that touches the heap.
//! * **safe** (`SAFE`): its driving thread runs a blocking closure in place
//!   (the `blocking` fallback when the worker cannot be handed off, and the
//!   GC's `World::blocking`). The task's registers were spilled on its stack
//!   and its SP recorded before; it may not leave the closure's section while
//!   the world is stopped ([`exit_safe`]).
//!
//! A worker running a task in a tight loop is asked with
//! `usurp_preempt::request_preempt` (at most one signal in flight; re-sent every
//! [`FAST_RETRY`] for the first [`FAST_RETRY_FOR`] of the stop, then every
//! [`RETRY`], until the worker parks). If the PC is in preemptible code, the
//! task is async-preempted, parked pinned to its worker, and the worker's
//! next scheduling decision parks it. Otherwise the refused request sets the
//! worker's checkpoint flag: the task stops at its next `checkpoint()` or
//! cooperative call. **A tight loop outside preemptible code that never calls
//! `checkpoint()` or the runtime delays the stop until it does** — that is the
//! contract (as for Go before 1.14). The GC's own no-preemption sections
//! that run long (mark assists, allocation's lazy sweep for room) leave
//! when the flag shows (`usurp-gc` `pacer.rs`, "Leaving for a stop").
//!
//! **A stopper from another runtime** (red-team RT-sched finding 3). A task
//! of runtime A stopping B's world waits in a safe region of A
//! ([`safe_region`]: its worker counts as stopped for A) from its request to
//! the end of its wait, unless it holds A's world stopped itself. Without
//! it, a task of A stopping B while a task of B stopped A waited for ever,
//! each holding a worker the other waited for. Leaving the safe region waits
//! for A's world to start; if a stop of A is on when the stop of B
//! completes, its stopper may be the crossed one, waiting for B: the stop
//! of B is withdrawn, and tried again after a pause that differs between
//! tasks and doubles per round (no lock-step retries). The check and the
//! task's return to running are one step under A's stw lock: a stop of A
//! found on the way out withdraws the stop of B before the task waits for
//! A's restart (`safe_region_withdrawing`; review 107: the holder of B
//! waited for A while A's stopper went on to stop B). **Holding** B's stop,
//! the task is treated as A's stopper at its switches
//! (`Task::held_stops`, read by [`task_holds_stop`]) and runs in a
//! no-preemption section until it starts B: a stop or the shutdown of A
//! waits for it rather than park or abandon it with B stopped (review 107:
//! a plain thread stopping A then B waited for ever; a dropped A left B
//! stopped for good), `yield_now` panics, a park aborts, and a task that
//! exits holding B restarts it with a message.
//!
//! **How the stopper waits** (issue 9 item 1). For the first [`SPIN_FOR`]
//! (60 µs) it spins: re-checks the workers' states (atomics) with a CPU
//! pause between reads, without the stw lock, and re-sends every
//! [`FAST_RETRY`]; then it sleeps on `stopped_cv`, which only a worker
//! whose stop state changes (parks, enters a safe section, exits)
//! notifies, so a parking worker wakes the stopper alone. The stop trace
//! (`USURP_DEBUG=stoptrace=1`, `stw/trace.rs`) showed why: a stopper
//! asleep on the shared condvar (with every parked worker and marker
//! thread) was seen woken 20-60 µs after the last worker parked, on this
//! 2-vCPU VM most of a 60-130 µs stop; spinning, it sees the park within
//! a microsecond or two. The spin never yields (a yield on a shared CPU
//! lost the stopper a whole OS slice, milliseconds) and ends for the
//! rest of the stop when it finds it was descheduled ([`DESCHEDULED`]):
//! on a contended machine the stopper sleeps, and a worker that needs its
//! CPU to reach its safe point gets it. `StwStats::stopper_sleeps` and
//! `stops_within_spin` count what the waits did.
//!
//! **No spin on a full machine** (issue 9, the GC's start stop). The
//! stopper does not spin at all while it and the workers it still waits
//! for outnumber the process's CPUs (`available_parallelism`): it sleeps
//! at once, and spins again once enough workers parked. The GC's cycles
//! are run by its collector thread, a thread beside the workers: on 2
//! cores with 2 busy workers (binary-trees) it had taken one worker's CPU
//! when it woke for the cycle, and then held it through its spin. The
//! stop trace (`rq`: run-queue wait) showed such stops' workers waiting
//! for a CPU through most of the stop, then taking the request and
//! parking within a few µs once they got one; the start stop's p50 was
//! 150-200 µs against 25-35 µs for termination stops, most of which find
//! the workers already stopped (in an assist's wait at the goal, a safe
//! section); termination stops that found two running workers cost as
//! much as start stops. Sleeping costs the stopper the OS's wake-up
//! (20-40 µs, seen as `parked@` to `seen@` in the trace) but gives the
//! worker the CPU at once: in alternating runs of binary-trees 21 at load
//! 3.8, start stops' p50 was 167-189 µs with the spin and 102-112 µs with
//! a stopper that never spun and re-sent every 100 µs (what this policy
//! does in those stops; the tails were the loaded machine's). Likewise a
//! stopper whose every unstopped worker still has the signal of an
//! *earlier* pass undelivered (`WorkerSlot::is_pending`, read before the
//! pass re-sends: at most one is in flight, a re-send does nothing)
//! sleeps [`RETRY`] rather than [`FAST_RETRY`]: each early wake-up could
//! take the CPU such a worker waits for, and its park notifies the
//! stopper anyway. A signal sent in this pass does not count (it is
//! always still pending right after the send), so a refused signal is
//! re-sent after [`FAST_RETRY`] in the stop's first millisecond.
//! `StwStats::oversubscribed_sleeps` counts the spins skipped;
//! `hooks::set_stopper_spin_when_oversubscribed_for_tests` restores the
//! spin (the negative control, `tests/sched_stop_spin.rs`).
//!
//! **A park frees a CPU** (session 15). The spin's budget counts from the
//! stop's start, and again from each wake-up by a worker's notification:
//! a worker that parks (or enters a safe section) gives its CPU back, so
//! the stopper, woken, re-checks whether the workers it still waits for
//! fit beside it, and if so spins [`SPIN_FOR`] again rather than sleeping
//! until the next park's notification. The stop trace of binary-trees 21
//! showed the pattern in 22% of the stops over 100 µs: the first park
//! seen ~40 µs late, the stopper asleep again, the second park seen late
//! again. `StwStats::respins` counts such spins;
//! `hooks::set_stopper_respin_for_tests(false)` restores the budget from
//! the start only (the negative control, `tests/sched_stop_spin.rs`).
//!
//! **Flags first.** Before its first signal, the stopper sets every busy
//! worker's checkpoint flag without a signal
//! (`usurp_preempt::internals::post_checkpoint_request`): a signal is a
//! system call of 10-20 µs on a VM, and the second worker's used to go
//! out 15-25 µs into the stop; a worker that polls (allocation, `Gc<T>`
//! deref) now stops at its next poll whatever the signals do. The flag is
//! the same request as `request_preempt`'s (same withdrawal when the
//! worker changed, same clearing at the park), only without the signal.
//!
//! Tasks inside `blocking` whose worker was handed to another thread are not
//! on any worker: the worker itself parks on its new thread, and the blocking
//! thread waits at the exit of `blocking` ([`wait_until_started`]) before the
//! task touches anything. The caller of `stop_the_world`, if a task, counts
//! as stopped and is excluded; between `stop_the_world` and
//! `start_the_world` it must not yield, park or block on other tasks (its own
//! worker would park under it).
//!
//! **The stopper** (issue 11 item 2). Its identity (task, or thread if not
//! a task) is recorded in `Stw::stopper` for the duration of the stop, and:
//! * a task stopper runs in a no-preemption section from its stop to its
//!   start (`Inner::no_preempt`): its `checkpoint()` does nothing;
//!   `ask_to_stop` skips its worker and the timer monitor sends no request
//!   while a stop is on (`sysmon.rs`); and its worker's quantum timer is
//!   disarmed for the stop (`Inner::quiet_slot`, issue 12): every tick would
//!   be refused (`no_preempt`) and nothing else can run on the stopped
//!   world anyway. With the GC's pauses (and the heap verifier's stops) that
//!   was most of the refused signals of a stress run: 72,552 of 108,996 in
//!   60 s of `usurp-stress --quantum 100us`, the world being stopped 72% of
//!   the time. The quantum restarts when the world does. So a task
//!   looping on stops (`Heap::collect`, `task::dump`) would never be
//!   preempted: those end with a cooperative point after the restart
//!   (`worker::after_stop`: due timers, waiting tasks, shutdown);
//! * what would wait for the stopper itself is detected, never a hang:
//!   `stop_the_world` by the stopper (a second stop, or a collection, which
//!   stops the world) panics; `safe_region` by the stopper (a wait that
//!   counts as stopped) panics; `yield_now` panics; parking aborts with a
//!   message (its wait node is already queued on the stack, so unwinding
//!   would be unsound); `blocking` runs its closure in place; exiting
//!   restarts the world (with a message); a task that stops the world
//!   inside a `blocking` closure and leaves it still stopped aborts with a
//!   message (`stopper_left_blocking`);
//! * a stopper without a worker (a plain thread, or a task inside
//!   `blocking`) is recorded in a thread-local ([`THREAD_STOPS`]): such a
//!   thread's `JoinHandle::join` of an unfinished task, and so
//!   `Runtime::block_on`, panics before it queues anything
//!   ([`thread_about_to_wait`]: what it waits for is a task, which cannot
//!   run until the world starts). Its waits on channels, `Mutex`, `Condvar`
//!   and `Select` are not refused: the other side may be another plain
//!   thread, which a stop does not stop, or the wait may have a deadline
//!   (the first version refused them all; its review showed both). A plain
//!   thread that exits holding the stop restarts the world (with a
//!   message), as an exiting task does;
//! * only the stopper may `start_the_world` (others panic);
//! * a collection's pause (the GC's `World::stop_the_world`,
//!   [`stop_for_collection`]) is marked as the collector's: a root scanner
//!   runs on its stopper, and `Runtime::start_the_world` there panics, a
//!   `drop(Runtime)` there defers its shutdown to the pause's end, and
//!   `yield_now` there panics naming the GC pause (RT-gc item 2).
//!
//! While parked, workers serve [`run_parallel`] jobs posted by the stopper
//! (parallel GC marking): the stopper takes indices too, so a job completes
//! even when no worker helps. Posting a job wakes the helpers once; a helper
//! finishing an index wakes nobody, except the one that finishes the last
//! index, which wakes the stopper alone (`Stw::job_done`). Idle (sleeping)
//! workers do not help: they are not woken for a stop.
//!
//! Time-to-safepoint (request → all stopped) is recorded per stop. A stop
//! that waits [`HOLDUP_REPORT`] (1 ms) or more also records which worker,
//! and which task on it, it waited for longest (`StwStats::last_holdup`; the
//! GC prints it in `gctrace` through `World::last_stop_holdup`): the task is
//! described while it still runs, once per worker per stop. The description
//! ends with what the stop's requests met on that worker (issue 9 item 1):
//! `[requests N, acks N, accepted N, ticks N, refused <reason> N, ...,
//! run-queue wait X ms, stopper's longest gap X ms]`. The run-queue wait is
//! the growth of the worker thread's `run_delay` in
//! `/proc/self/task/<tid>/schedstat` from the 1 ms mark to the end of the
//! stop (read only for such stops): time the thread was ready but given no
//! CPU by the OS. The kernel adds a wait when the thread gets a CPU back,
//! so a wait that began before the stop counts whole (the figure can exceed
//! the stop). The stopper's gap is its own lateness between two checks. On binary-trees 21 with `preemptible!`
//! guest code on a loaded 2-core machine, almost every stop of 1 ms or more
//! showed a run-queue wait as long as the stop and one or two refused
//! requests (`NotPreemptibleCode`: allocation fast path), i.e. the time was
//! the OS's, not the runtime's.
//!
//! **Reading a stack dump of a hung process.** A worker thread in
//! [`park_worker`] while no thread is inside `stop_the_world` is not by
//! itself a stuck stop: a GC cycle's stopper runs its pause (marking, the
//! sweep start, the heap verifier's second stop) between `stop_the_world`
//! and `start_the_world`, and under `usurp-stress` that happens hundreds of
//! times a second. A stuck stop has `stop` set for good and a stopper that
//! makes no progress; check that a second dump differs (the GC cycle count
//! in the stress run's progress line keeps growing otherwise). The hang of
//! `usurp-stress --seconds 2 --workers 2 --tasks 20` with the first version
//! of the woken FIFO (2 runs in 61) looked like a stuck stop this way, but
//! its stops all completed: the run's main task, woken from its 2 s sleep
//! by a timer fired in the scheduler loop, waited forever in worker 0's
//! woken FIFO because boosted picks took `runnext` first and a ping-pong
//! pair refilled `runnext` before every pick (the other worker, busy too,
//! never stole it), so the stop flag of the run was never set. The
//! interleaving and the fix are described at `Worker::take_boosted`
//! (`worker/`); the regression test is `tests/sched_fairness.rs`
//! `woken_fifo_not_starved_by_runnext`.
//!
//! **What cannot be stopped, and what is reported** (issue 10 item 5a). A
//! task blocked in the kernel outside `blocking` (a `std::sync::Mutex`, a
//! `read`, a `std::thread::sleep`) is on its worker's CPU as far as the
//! scheduler knows and cannot reach a safe point until the kernel returns;
//! if that needs the stopper (the task collecting holds the mutex), the stop
//! never completes. That is a contract, not a bug that can be fixed here:
//! use `usurp::Mutex` (tasks park, the worker stays free) or wrap
//! kernel-blocking calls in `blocking()`, and call `checkpoint()` in long
//! loops outside preemptible code. What is detected: when a stop has waited
//! [`REPORT_AFTER`] (1 s), and every [`REPORT_EVERY`] (5 s) after that, the
//! stopper prints to stderr each worker that has not stopped, its OS thread
//! id, and the id and name of the task on it (as Go's runtime reports a
//! goroutine that does not stop). The stopper is not aborted: a kernel call
//! that is merely slow still completes.

mod trace;

use crate::shared::Shared;
use crate::worker::Worker;
use std::cell::RefCell;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What `usurp_gc::alloc` reports inside a `blocking` closure.
pub(crate) const INSIDE_BLOCKING: &str = "inside blocking(): the task counts as stopped while its closure runs, so a \
    collection may sweep the blocks this thread allocates from and never scans the closure's frames; allocate \
    before or after blocking(), not inside it";

/// Worker driven normally (possibly running a task).
const RUNNING: u32 = 0;
/// Worker parked in its scheduler loop for a stop.
const PARKED: u32 = 1;
/// Worker's thread inside a safe blocking section.
const SAFE: u32 = 2;

/// How often a stopper re-sends preemption requests to workers that have not
/// stopped yet, once the stop has waited [`FAST_RETRY_FOR`].
pub(crate) const RETRY: Duration = Duration::from_micros(100);

/// How often it re-sends them before that (issue 9 item 1). A request that
/// lands outside preemptible code (the allocation fast path, `Gc::new`'s
/// initialising stores, the barrier: about half of binary-trees' time) is
/// refused; the refusal sets the checkpoint flag, which the task honours at
/// its next cooperative point: its next `Gc<T>` deref or allocation slow
/// path (both poll the flag; a task that allocates without reading objects
/// may go a block's worth of objects, tens to a few hundred microseconds),
/// but a new request that lands in preemptible code stops it sooner. No backoff during a stop: a
/// signal costs the target 2-5 µs and the stopper a futex wake per retry,
/// for a stop that holds every other worker.
pub(crate) const FAST_RETRY: Duration = Duration::from_micros(20);

/// How long into a stop the stopper re-sends every [`FAST_RETRY`]; after
/// that the holder is likely descheduled by the OS or in a long
/// non-preemptible section, where more signals do not help.
pub(crate) const FAST_RETRY_FOR: Duration = Duration::from_millis(1);

/// How long into a stop the stopper waits by spinning (re-checking the
/// workers' states with a CPU pause between reads, re-sending every
/// [`FAST_RETRY`]) rather than sleeping on its condvar (issue 9 item 1).
/// Measured with `USURP_DEBUG=stoptrace=1` on 2 vCPUs: a stopper asleep on
/// a futex was seen woken 20-60 µs after the last worker parked and
/// notified it (the idle CPU's wake-up, or the OS's wake-up preemption),
/// most of a stop's 60-130 µs; spinning sees the park within a microsecond
/// or two.
///
/// The spin never yields the CPU: a first version re-checked between
/// `sched_yield`s for 250 µs, and on a shared CPU (EEVDF, kernel 6.x) a
/// yield gave the CPU away for a whole slice: stops whose workers had all
/// parked within 25 µs were seen 4-10 ms later (review, stop trace). So
/// the budget is short, and a spin that finds it lost the CPU anyway (two
/// reads of the clock [`DESCHEDULED`] apart) gives up for the rest of the
/// stop and sleeps: the machine is contended, and a worker may need the
/// stopper's CPU to reach its safe point (the GC's background collector is
/// a thread beside the workers). A stop still not done after the spin (a
/// task refused outside preemptible code that does not poll, an OS that
/// keeps a worker off the CPU) sleeps as before.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(60);

/// A gap this long between two reads of the clock in the stopper's spin
/// means the OS took the CPU from it: the spin ends (see [`SPIN_FOR`]).
pub(crate) const DESCHEDULED: Duration = Duration::from_micros(15);

/// Test-only switch (negative control of the spinning wait): when cleared,
/// the stopper sleeps on its condvar from the start, as it used to. Set
/// through `hooks::set_stopper_spin_for_tests`.
pub(crate) static STOPPER_SPIN: AtomicBool = AtomicBool::new(true);

/// Test-only: the spin's budget and its descheduling threshold in µs, 0
/// for [`SPIN_FOR`] and [`DESCHEDULED`] (under qemu, or on a loaded
/// machine, a stop of preemptible loops takes longer than the production
/// budget and the clock jumps often). Set through
/// `hooks::set_stopper_spin_budget_for_tests`.
pub(crate) static SPIN_BUDGET_US: AtomicU64 = AtomicU64::new(0);
pub(crate) static DESCHEDULED_US: AtomicU64 = AtomicU64::new(0);

/// The spin's budget and descheduling threshold (see [`SPIN_FOR`]).
fn spin_budget() -> (Duration, Duration) {
    let us = |a: &AtomicU64, d: Duration| match a.load(Ordering::Relaxed) {
        0 => d,
        us => Duration::from_micros(us),
    };
    (us(&SPIN_BUDGET_US, SPIN_FOR), us(&DESCHEDULED_US, DESCHEDULED))
}

/// Test-only switch (negative control of "no spin on a full machine"):
/// when set, the stopper spins whether or not it and the workers it waits
/// for outnumber the CPUs, as it used to. Set through
/// `hooks::set_stopper_spin_when_oversubscribed_for_tests`.
pub(crate) static SPIN_WHEN_OVERSUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Test-only switch (negative control of "a park frees a CPU"): when
/// cleared, the spin's budget counts from the stop's start only, as it
/// used to. Set through `hooks::set_stopper_respin_for_tests`.
pub(crate) static RESPIN: AtomicBool = AtomicBool::new(true);

/// Test-only: the CPU count the stopper's spin policy assumes (0: the
/// process's, `std::thread::available_parallelism`). Set through
/// `hooks::set_stopper_cpus_for_tests`.
pub(crate) static CPUS_FOR_TESTS: AtomicUsize = AtomicUsize::new(0);

/// The CPUs this process may run on (`sys::process_cpus`), or the tests'
/// figure.
fn cpus() -> usize {
    match CPUS_FOR_TESTS.load(Ordering::Relaxed) {
        0 => crate::sys::process_cpus(),
        n => n,
    }
}

/// Whether a stopper that waits for `unstopped` workers would hold a CPU
/// one of them needs if it spun: it and they outnumber the CPUs (see
/// "How the stopper waits" in the module docs).
fn oversubscribed(unstopped: usize) -> bool {
    unstopped + 1 > cpus()
}

/// Test-only switch (negative control of the stopper's quiet quantum, issue
/// 12): when set, a task stopper's quantum timer keeps ticking through its
/// stop (each tick refused: `no_preempt`), as it used to. Set through
/// `hooks::set_stopper_ticks_for_tests`.
pub(crate) static STOPPER_TICKS: AtomicBool = AtomicBool::new(false);

/// Time-to-safepoint samples kept.
const TTSP_HISTORY: usize = 1024;

/// A stop that takes longer than this prints which workers and tasks hold
/// it up (as Go's runtime does), then again every [`REPORT_EVERY`].
const REPORT_AFTER: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Stop-the-world state of one runtime.
pub(crate) struct Stw {
    /// Set while a stop is requested or in force: read on the switch path.
    pub(crate) stop: AtomicBool,
    /// The generation of the lend the GC's background collector offers
    /// and no worker took yet, or 0 (`worker/stand_aside.rs`): read by the
    /// preemption and checkpoint paths, which then go to the scheduler
    /// loop, and by the scheduler loop.
    /// Stored by the collector (`stand_aside::begin`), cleared by it
    /// (`end`) or by the claiming worker's CAS.
    pub(crate) lend_offer: AtomicU32,
    /// Who stopped the world ([`caller_id`]), 0 if nobody. Written under
    /// `inner`'s lock by the stopper when its stop begins and ends; read
    /// without the lock only to compare with the reader's own id (a reader
    /// can only find its own id there if it wrote it itself).
    stopper: AtomicUsize,
    /// Set while the stop in force is a collection's pause (taken by the
    /// GC through `RuntimeWorld::stop_the_world`): written only by the
    /// stopper, after its stop began and before it ends, and read for the
    /// stopper checks (a reader finds it meaningful only when it is the
    /// stopper itself). Root scanners run on the stopper inside that
    /// pause: `Runtime::start_the_world` there panics, and a
    /// `drop(Runtime)` there is deferred to the pause's end (RT-gc item 2,
    /// session 14: both used to restart the world mid-collection).
    gc_pause: AtomicBool,
    /// A `drop(Runtime)` by the stopper inside a collection's pause: the
    /// shutdown begins when the collector restarts the world
    /// ([`start_after_collection`]). Written and read by the stopper.
    drop_after_pause: AtomicBool,
    wstate: Box<[AtomicU32]>,
    /// When each worker last parked for a stop (CLOCK_MONOTONIC ns):
    /// written by the worker in [`park_worker`], read by a traced stop's
    /// stopper (`trace.rs`).
    parked_ns: Box<[AtomicU64]>,
    inner: Mutex<Inner>,
    /// Waited on (with `inner`) by parked workers, marker threads, threads
    /// waiting for the world to restart and the stopper while it stops the
    /// world; notified on every state change and when a job is posted.
    cv: Condvar,
    /// Waited on (with `inner`) only by the stopper in [`run_parallel`];
    /// notified when the last index of the posted job completes.
    job_done: Condvar,
    /// Waited on (with `inner`) only by the stopper while it stops the
    /// world (after its spin, [`SPIN_FOR`]); notified when a worker's
    /// stop state changes (it parks, enters a safe section, or exits).
    /// Apart from `cv` so that a parking worker wakes the stopper alone,
    /// not every parked worker and marker thread.
    stopped_cv: Condvar,
    /// Test-only switch (negative control of "idle workers are not woken"):
    /// when set, a stop wakes every idle worker first, as it used to. Set
    /// only by the scheduler's unit tests.
    pub(crate) wake_idle_for_test: AtomicBool,
}

struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: usize,
    done: usize,
}

#[derive(Default)]
struct Inner {
    active: bool,
    /// The stopper task's no-preemption section, held from its stop to its
    /// start (a task stopper must not be preempted: it would park on its own
    /// worker, which parks for the stop it holds).
    no_preempt: Option<usurp_preempt::NoPreempt>,
    /// The task stopper's preemption slot, its quantum timer disarmed
    /// (`set_idle(true)`) from its stop to its start; re-armed by
    /// `start_the_world`. Null when the stopper is not a task holding a
    /// worker (or async preemption is off). Written by the stopper.
    quiet_slot: usize,
    /// The OS thread id of a stopper that is not a task on a worker (a
    /// plain thread, a task inside `blocking`), 0 otherwise: named by
    /// [`stop_holder`] (a `drop(Runtime)` that waits for such a stop).
    stopper_tid: i32,
    /// The task that holds this world stopped (its own task holding its
    /// worker, or a task of another runtime; its `Task::held_stops` counts
    /// this stop), 0 otherwise. Written by that task, in its stop and its
    /// start.
    holder_task: usize,
    job: Option<Job>,
    stops: u64,
    /// Times a stopper went to sleep on `stopped_cv` while stopping the
    /// world (after its spin), over all stops.
    stopper_sleeps: u64,
    /// Stops that waited for some worker and completed without sleeping,
    /// within the spin's budget.
    stops_within_spin: u64,
    /// Times the stopper slept instead of spinning because it and the
    /// workers it waited for outnumbered the CPUs, over all stops.
    oversubscribed_sleeps: u64,
    /// Times the stopper spun although they did (only with the test
    /// switch `SPIN_WHEN_OVERSUBSCRIBED`).
    oversubscribed_spins: u64,
    /// Spins begun right after a worker's notification woke the stopper
    /// (see "A park frees a CPU"), over all stops.
    respins: u64,
    ttsp: Vec<Duration>,
    ttsp_pos: usize,
    /// The last stop that waited at least [`HOLDUP_REPORT`]: which worker
    /// (and task) stopped last, and the time-to-safepoint. Written by the
    /// stopper at the end of `stop_the_world`.
    last_holdup: Option<(String, Duration)>,
}

/// A stop that waits this long records which worker and task held it up
/// (issue 9 item 8; `StwStats::last_holdup`, and the GC's `gctrace`).
pub(crate) const HOLDUP_REPORT: Duration = Duration::from_millis(1);

// SAFETY: the job pointer is only dereferenced while the stopper that posted
// it waits in `run_parallel` for every taken index to complete. The
// `NoPreempt` guard is created and dropped by the stopper on its own thread
// (the stopper neither switches nor migrates during its stop, and only it
// may start the world).
unsafe impl Send for Inner {}

/// Stop-the-world statistics of a runtime.
#[derive(Debug, Clone, Default)]
pub struct StwStats {
    /// Completed stops.
    pub stops: u64,
    /// Times a stopper slept (on a condvar) waiting for workers to stop,
    /// over all stops: only stops still waiting after the spin
    /// (`stw::SPIN_FOR`, 60 µs, or less if the OS took the stopper's CPU
    /// meanwhile) sleep.
    pub stopper_sleeps: u64,
    /// Stops that had to wait for some worker (not all stopped at the
    /// first check) and completed without the stopper sleeping: within
    /// its spin.
    pub stops_within_spin: u64,
    /// Times a stopper slept at once instead of spinning, because it and
    /// the workers it waited for outnumbered the CPUs (a spin would have
    /// held a CPU one of them needed to reach its safe point), over all
    /// stops.
    pub oversubscribed_sleeps: u64,
    /// Times a stopper spun although it and the workers it waited for
    /// outnumbered the CPUs: always 0, except with the test switch that
    /// restores the old policy (the negative control).
    pub oversubscribed_spins: u64,
    /// Spins a stopper began right after a worker's park (or safe
    /// section) woke it, with a fresh budget: the parked worker's CPU is
    /// free, and the workers still running fit beside the stopper, which
    /// then sees their parks at once instead of after another OS wake-up.
    pub respins: u64,
    /// Time-to-safepoint of the last stop.
    pub ttsp_last: Duration,
    /// Median time-to-safepoint over the recent stops (up to 1024).
    pub ttsp_p50: Duration,
    /// 99th percentile time-to-safepoint over the recent stops.
    pub ttsp_p99: Duration,
    /// Largest recent time-to-safepoint.
    pub ttsp_max: Duration,
    /// The recent samples, oldest first is not guaranteed.
    pub ttsp_samples: Vec<Duration>,
    /// The last stop whose time-to-safepoint reached 1 ms: the worker (and
    /// the task on it) that stopped last, e.g. `worker 1: task 7 "sort"`,
    /// followed by what the stop's requests met there (`[requests 3, acks
    /// 3, accepted 0, ticks 0, refused NotPreemptibleCode 3, ...]`, see the
    /// module docs), with that time-to-safepoint.
    pub last_holdup: Option<(String, Duration)>,
}

impl Stw {
    pub(crate) fn new(workers: usize) -> Stw {
        Stw {
            stop: AtomicBool::new(false),
            lend_offer: AtomicU32::new(0),
            stopper: AtomicUsize::new(0),
            gc_pause: AtomicBool::new(false),
            drop_after_pause: AtomicBool::new(false),
            wstate: (0..workers).map(|_| AtomicU32::new(RUNNING)).collect(),
            parked_ns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            inner: Mutex::new(Inner::default()),
            cv: Condvar::new(),
            job_done: Condvar::new(),
            stopped_cv: Condvar::new(),
            wake_idle_for_test: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Helps with the posted marking job ([`run_parallel`]): claims and runs
    /// its indices one at a time (the lock is released while each runs) until
    /// none is left unclaimed, then returns the re-taken guard.
    fn serve_jobs<'a>(&'a self, mut g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        while let Some(job) = g.job.as_mut() {
            if job.next >= job.n {
                break;
            }
            let i = job.next;
            job.next += 1;
            let f = job.f;
            drop(g);
            // SAFETY: the stopper waits for this index to complete before
            // its closure goes away.
            unsafe { (*f)(i) };
            g = self.lock();
            if let Some(job) = g.job.as_mut() {
                job.done += 1;
                if job.done == job.n {
                    // Only the stopper waits for completion.
                    self.job_done.notify_one();
                }
            }
        }
        g
    }

    /// Whether worker `w` counts as stopped: parked or safe, or idle (its
    /// thread sleeps or is about to, with no task; see the module docs for
    /// the handshake that makes reading `idle` here sound).
    fn counts_as_stopped(&self, w: &Worker) -> bool {
        self.wstate[w.index].load(Ordering::SeqCst) != RUNNING || w.idle.load(Ordering::SeqCst)
    }

    pub(crate) fn stats(&self) -> StwStats {
        let g = self.lock();
        let mut v = g.ttsp.clone();
        v.sort();
        let pct = |p: f64| -> Duration {
            if v.is_empty() {
                return Duration::ZERO;
            }
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        let last = if g.ttsp.is_empty() {
            Duration::ZERO
        } else {
            g.ttsp[(g.ttsp_pos + g.ttsp.len() - 1) % g.ttsp.len()]
        };
        StwStats {
            stops: g.stops,
            stopper_sleeps: g.stopper_sleeps,
            stops_within_spin: g.stops_within_spin,
            oversubscribed_sleeps: g.oversubscribed_sleeps,
            oversubscribed_spins: g.oversubscribed_spins,
            respins: g.respins,
            ttsp_last: last,
            ttsp_p50: pct(0.5),
            ttsp_p99: pct(0.99),
            ttsp_max: v.last().copied().unwrap_or_default(),
            ttsp_samples: g.ttsp.clone(),
            last_holdup: g.last_holdup.clone(),
        }
    }
}

/// The worker index driven by the calling thread, if it belongs to `sh`.
pub(crate) fn my_worker(sh: &Shared) -> Option<usize> {
    let m = crate::worker::machine();
    if m.is_null() {
        return None;
    }
    // SAFETY: a machine lives as long as its thread; we are on that thread.
    let w = unsafe { (*m).worker.get() };
    if w.is_null() {
        return None;
    }
    // SAFETY: the worker is owned by this thread while set in its machine.
    let w = unsafe { &*w };
    std::ptr::eq(w.shared, sh).then_some(w.index)
}

thread_local! {
    /// Its address identifies a thread that is not running a task.
    static THREAD_MARK: u8 = const { 0 };
}

/// Identity of the caller for the stopper checks: its task (also inside
/// `blocking`), or its thread. Never 0.
fn caller_id() -> usize {
    let t = crate::worker::current_task();
    if !t.is_null() {
        return t as usize;
    }
    THREAD_MARK.with(|m| m as *const u8 as usize) | 1
}

/// Whether the caller is the task or thread that holds `sh`'s world stopped.
#[inline]
pub(crate) fn caller_is_stopper(sh: &Shared) -> bool {
    sh.stw.stop.load(Ordering::Relaxed) && sh.stw.stopper.load(Ordering::SeqCst) == caller_id()
}

/// Whether task `t` holds some runtime's world stopped (its own, or another
/// one's: `Task::held_stops`); one load of the task's own line.
#[inline]
pub(crate) fn task_holds_stop(t: *mut crate::tasks::tcb::Task) -> bool {
    // SAFETY: `t` is the caller's running task (every caller passes the
    // task current on its thread), valid while it runs; the count is
    // written only by that task.
    unsafe { (*t).held_stops.get() != 0 }
}

/// The runtimes whose world the calling thread holds stopped while it runs
/// no task on a worker: a plain thread, or a task inside `blocking` (it
/// stays on this thread until `blocking` returns, and must start the world
/// before that). A task on a worker is checked at its switches instead
/// (`worker/switch.rs`). Pushed by [`stop_the_world_until`], removed by
/// [`start_the_world`]; at thread exit the destructor restarts the worlds
/// still stopped.
struct ThreadStops(RefCell<Vec<Weak<Shared>>>);

thread_local! {
    static THREAD_STOPS: ThreadStops = const { ThreadStops(RefCell::new(Vec::new())) };
}

impl Drop for ThreadStops {
    fn drop(&mut self) {
        restart_stops(
            std::mem::take(self.0.get_mut()),
            b"usurp: a thread exited while it held the world stopped (Runtime::stop_the_world without \
              start_the_world): restarting the world\n",
        );
    }
}

/// Restarts (with `message`) each of `stops` the caller still holds:
/// nobody else may start them, they would stay stopped for ever.
fn restart_stops(stops: Vec<Weak<Shared>>, message: &[u8]) {
    for weak in stops {
        let Some(sh) = weak.upgrade() else { continue };
        if caller_is_stopper(&sh) {
            crate::sys::write_stderr(message);
            start_the_world(&sh);
        }
    }
}

/// A task exits holding other runtimes' worlds stopped
/// (`Task::held_stops`; it noted them as its thread's, which it did not
/// leave since): restart them, with a message.
pub(crate) fn restart_foreign_stops_at_exit() {
    // Only the stops this task holds: the thread's other records (if any)
    // stay for their own exit.
    let held = |w: &Weak<Shared>| w.upgrade().is_some_and(|sh| caller_is_stopper(&sh));
    let stops = THREAD_STOPS
        .try_with(|s| {
            let mut all = s.0.borrow_mut();
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *all).into_iter().partition(held);
            *all = rest;
            mine
        })
        .unwrap_or_default();
    restart_stops(
        stops,
        b"usurp: a task exited while it held another runtime's world stopped (Runtime::stop_the_world without \
          start_the_world): restarting that world\n",
    );
}

/// Records that the calling thread (no task on a worker) stopped `sh`
/// (not during the thread-local's destruction, where no wait can follow).
fn note_thread_stop(sh: &Shared) {
    let _ = THREAD_STOPS.try_with(|s| s.0.borrow_mut().push(sh.me.clone()));
}

/// Forgets [`note_thread_stop`]'s record of `sh` (absent: nothing). During
/// the thread-local's own destruction (its destructor restarting a world)
/// there is nothing left to forget.
fn forget_thread_stop(sh: &Shared) {
    let _ = THREAD_STOPS.try_with(|s| s.0.borrow_mut().retain(|w| !std::ptr::eq(w.as_ptr(), sh)));
}

/// Whether the calling thread (no task on a worker) holds some runtime's
/// world stopped.
pub(crate) fn thread_holds_stop() -> bool {
    // A copy (empty: no allocation), so that no borrow is held while a
    // runtime's last reference, upgraded here, may be dropped.
    let stops = THREAD_STOPS.try_with(|s| s.0.borrow().clone()).unwrap_or_default();
    !stops.is_empty() && stops.iter().any(|w| w.upgrade().is_some_and(|sh| caller_is_stopper(&sh)))
}

/// Called by a plain thread (or a task inside `blocking`) about to wait for
/// a task (`JoinHandle::join`, `Runtime::block_on`), before it queues
/// anything: panics if the thread holds some runtime's world stopped,
/// under which no task runs. One thread-local read when the thread holds
/// no stop.
#[inline]
pub(crate) fn thread_about_to_wait() {
    if thread_holds_stop() {
        thread_stopper_waits();
    }
}

/// The panic of [`thread_about_to_wait`].
#[cold]
#[inline(never)]
pub(crate) fn thread_stopper_waits() -> ! {
    stopper_waits_for_itself(
        "a wait for a task (JoinHandle::join, Runtime::block_on) was started",
    )
}

#[cold]
#[inline(never)]
fn stopper_waits_for_itself(what: &str) -> ! {
    panic!(
        "usurp: {what} by the task or thread that holds the world stopped (Runtime::stop_the_world): it would wait \
         for itself forever. Between Runtime::stop_the_world and Runtime::start_the_world, do not collect \
         (Heap::collect, or an allocation that needs a collection), stop the world again, yield, park, sleep, \
         join or wait for other tasks"
    )
}

/// A task stopped the world inside a `blocking` closure (where it counts as
/// stopped) and leaves the closure with the world still stopped: it would
/// wait for its own start. We are under the register-spill frame, where
/// nothing may unwind: abort with a message.
#[cold]
#[inline(never)]
fn stopper_left_blocking() -> ! {
    crate::sys::write_stderr(
        b"usurp: fatal: a task stopped the world (Runtime::stop_the_world) inside blocking() and left the \
          closure before Runtime::start_the_world: it would wait for itself forever; aborting\n",
    );
    std::process::abort()
}

/// Called by a task leaving `blocking` (its closure done, its own
/// runtime's stop checked already): aborts if the thread still holds some
/// runtime's world stopped, taken inside the closure (review 108: the
/// task went back to its worker holding it uncounted, so it could be
/// preempted or park with that world stopped, and exit without
/// restarting it). A task holding a stop before the call never gets
/// here (its `blocking` runs the closure directly).
pub(crate) fn check_left_blocking_without_stops() {
    if thread_holds_stop() {
        crate::sys::write_stderr(
            b"usurp: fatal: a task stopped another runtime's world (Runtime::stop_the_world) inside blocking() \
              and left the closure before Runtime::start_the_world: it would run on its worker holding that \
              stop, unseen by its own runtime; aborting\n",
        );
        std::process::abort()
    }
}

/// Stops every worker of `sh` except the caller's (see the module docs).
/// Returns the time-to-safepoint.
pub(crate) fn stop_the_world(sh: &Shared) -> Duration {
    match stop_the_world_until(sh, None) {
        Ok(d) => d,
        Err(_) => unreachable!("a stop without a deadline does not time out"),
    }
}

/// [`stop_the_world`] that gives up at `deadline` (task dumps, issue 15):
/// `Err` if another stop held the world past it, or if some worker had not
/// stopped by then: the request is then withdrawn (workers that parked go
/// on, as after [`start_the_world`]), nothing is recorded in the stats, and
/// the error holds what every worker was doing when it gave up
/// ([`describe_workers_unstopped`]).
pub(crate) fn stop_the_world_until(sh: &Shared, deadline: Option<Instant>) -> Result<Duration, Vec<String>> {
    if caller_is_stopper(sh) {
        stopper_waits_for_itself("stop_the_world (or a collection) called");
    }
    let Some(own) = other_runtime_of_caller(sh) else {
        // A task of another runtime that holds its own runtime's world
        // stopped (it cannot count as stopped there) stops this one
        // directly: it holds this stop too (review 108).
        let foreign = crate::worker::Current::get().is_some_and(|c| !std::ptr::eq(c.worker().shared(), sh));
        let r = stop_inner(sh, deadline, crate::worker::Current::get().is_some());
        if r.is_ok() && foreign {
            hold_foreign(sh);
        }
        return r;
    };
    // A task of another runtime (`own`) stops this one: it counts as
    // stopped for its own runtime while it waits (red-team RT-sched finding
    // 3: a task of A stopping B while a task of B stopped A waited for
    // ever, each holding a worker the other waited for). Leaving the safe
    // region waits for `own`'s world to start; if a stop of `own` is on at
    // that point, its stopper may be waiting for ours (the crossed case),
    // so ours is withdrawn first and tried again after a pause.
    // SAFETY: `own` is the runtime of the worker this thread drives; it
    // outlives its workers, and this task runs on one (and returns to it).
    let own = unsafe { &*own };
    let mut round = 0u32;
    // A pause that differs between the tasks and grows, so that two
    // crossed stoppers do not withdraw in step for ever.
    let back_off = |round: u32| {
        let jitter = (caller_id() >> 6) as u32 % 16;
        std::thread::sleep(Duration::from_micros(u64::from((jitter + 1) << round.min(6))));
    };
    loop {
        let mut res = None;
        let (held, withdrawn) = (std::cell::Cell::new(false), std::cell::Cell::new(false));
        safe_region_withdrawing(
            own,
            &mut || {
                let r = stop_inner(sh, deadline, true);
                if r.is_ok() && own.stw.stop.load(Ordering::SeqCst) {
                    start_the_world(sh);
                    back_off(round);
                    return;
                }
                held.set(r.is_ok());
                res = Some(r);
            },
            // A stop of `own` began after the check above (review 107: the
            // holder then waited for `own`'s restart while holding ours,
            // and `own`'s stopper, once it stopped `sh` too, for ever):
            // withdraw before waiting, retry after.
            &mut || {
                if held.replace(false) {
                    start_the_world(sh);
                    withdrawn.set(true);
                }
            },
        );
        if withdrawn.get() {
            res = None;
        }
        match res {
            Some(Ok(t)) => {
                // Held, the task running on `own`'s worker again (`own`
                // not stopped: checked under its lock as the task left the
                // safe region).
                hold_foreign(sh);
                return Ok(t);
            }
            Some(Err(e)) => return Err(e),
            None => round += 1,
        }
    }
}

/// Records the caller, a task on a worker of another runtime that just
/// stopped `sh`'s world, as its holder: until it starts `sh`'s world it is
/// a stopper at its switches (`task_holds_stop`): not preempted (a stop or
/// the shutdown of its own runtime would otherwise park or abandon it with
/// `sh` stopped: review 107), no yield, no park; and `sh` is noted as its
/// thread's stop (it does not leave the thread meanwhile), restarted if
/// the task exits holding it.
fn hold_foreign(sh: &Shared) {
    let cur = crate::worker::current_task();
    let mut g = sh.stw.lock();
    g.no_preempt = Some(usurp_preempt::NoPreempt::new());
    g.holder_task = cur as usize;
    drop(g);
    // SAFETY: the caller is a task on a worker (both callers check
    // `Current`), running.
    unsafe { (*cur).held_stops.set((*cur).held_stops.get() + 1) };
    note_thread_stop(sh);
}

/// The runtime whose worker the calling thread drives, if it is not `sh`
/// and the caller does not hold its world stopped (a stopper cannot count
/// as stopped: only it may start its world).
fn other_runtime_of_caller(sh: &Shared) -> Option<*const Shared> {
    let c = crate::worker::Current::get()?;
    let own = c.worker().shared();
    if std::ptr::eq(own, sh) || caller_is_stopper(own) {
        return None;
    }
    Some(own as *const Shared)
}

/// [`stop_the_world_until`]'s body. `on_worker`: the caller is a task on a
/// worker (then its stop is checked at its switches; otherwise it is noted
/// for its thread), also when it waits in a safe region of its own runtime.
fn stop_inner(sh: &Shared, deadline: Option<Instant>, on_worker: bool) -> Result<Duration, Vec<String>> {
    let stw = &sh.stw;
    let me = my_worker(sh);
    // One stopper at a time; a waiting stopper counts as stopped itself (its
    // registers spilled and SP recorded, like a task in `blocking`).
    let mut unstopped: Option<Vec<String>> = None;
    // Traced: the workers' run-queue waits so far (read before the flag is
    // set, so that the reads do not delay the stop).
    // The workers' threads, then the stopper's own (its run-queue wait is
    // part of a stop too: a stopper woken late sees the parks late). Only
    // read with the stop trace on.
    let worker_tids = || {
        // SAFETY: gettid has no preconditions.
        let my_tid = unsafe { libc::gettid() };
        sh.workers
            .iter()
            .map(|w| {
                // SAFETY: slots are `'static`.
                unsafe { w.slot.load(Ordering::Acquire).as_ref() }.map(|s| s.tid())
            })
            .chain(std::iter::once(Some(my_tid)))
    };
    let rq0 = if trace::enabled() { trace::run_delays(worker_tids()) } else { Vec::new() };
    loop {
        if let Some(desc) = unstopped.take() {
            return Err(desc);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(describe_workers_unstopped(sh, me));
        }
        let mut g = stw.lock();
        if !g.active {
            g.active = true;
            stw.gc_pause.store(false, Ordering::SeqCst);
            stw.stopper.store(caller_id(), Ordering::SeqCst);
            stw.stop.store(true, Ordering::SeqCst);
            if !on_worker {
                note_thread_stop(sh);
                // SAFETY: gettid has no preconditions.
                g.stopper_tid = unsafe { libc::gettid() };
            } else {
                g.stopper_tid = 0;
            }
            if me.is_some() {
                // A task holding a worker: not preemptible until it starts
                // the world (its checkpoint() does nothing meanwhile), and
                // a stopper at its switches (`task_holds_stop`).
                g.no_preempt = Some(usurp_preempt::NoPreempt::new());
                let cur = crate::worker::current_task();
                g.holder_task = cur as usize;
                // SAFETY: `me` is Some: the caller is the task running on
                // one of our workers.
                unsafe { (*cur).held_stops.set((*cur).held_stops.get() + 1) };
                if !STOPPER_TICKS.load(Ordering::Relaxed) {
                    g.quiet_slot = crate::worker::thread::thread_slot() as usize;
                    // SAFETY: slots are `'static`.
                    if let Some(s) = unsafe { (g.quiet_slot as *const usurp_preempt::WorkerSlot).as_ref() } {
                        // No quantum ticks during the stop (see the module
                        // docs); targeted requests are not affected (none
                        // is sent to the stopper).
                        let _ = s.set_idle(true);
                    }
                }
            }
            break;
        }
        drop(g);
        if deadline.is_some() && me.is_none() && crate::worker::current_task().is_null() {
            // A plain thread with a deadline (a dump from the signal dumper
            // or a watchdog thread): it runs no task, so it just waits, and
            // gives up at the deadline even if the stop it waits for never
            // ends (`safe_region` would wait for the start on its way out).
            let mut g = stw.lock();
            while g.active {
                let now = Instant::now();
                let d = deadline.unwrap_or(now);
                if now >= d {
                    drop(g);
                    return Err(describe_workers_unstopped(sh, me));
                }
                g = stw.cv.wait_timeout(g, d - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            continue;
        }
        safe_region(sh, &mut || {
            let mut g = stw.lock();
            while g.active {
                match deadline {
                    None => g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            // Another stop holds the world (its flag is
                            // set while `active`): describe the workers
                            // under it. (A task leaves `safe_region` only
                            // once that stop ends: its worker counts as
                            // stopped until then.)
                            drop(g);
                            unstopped = Some(describe_workers_unstopped(sh, me));
                            return;
                        }
                        g = stw.cv.wait_timeout(g, d - now).unwrap_or_else(|p| p.into_inner()).0;
                    }
                }
            }
        });
    }
    let t0 = Instant::now();
    let mut next_report = REPORT_AFTER;
    let mut tr = trace::enabled().then(|| {
        trace::StopTrace::new(crate::sys::now_ns(), sh.workers.len(), &rq0, |i| {
            let w = &sh.workers[i];
            if Some(i) == me {
                return None;
            }
            // SAFETY: slots are `'static`.
            let acks = unsafe { w.slot.load(Ordering::Acquire).as_ref() }.map_or(0, |s| s.acks());
            let what = match stw.wstate[i].load(Ordering::SeqCst) {
                PARKED => "parked",
                SAFE if sh.lend.is_aside(i) => "aside",
                SAFE => "safe",
                _ if w.idle.load(Ordering::SeqCst) => "idle",
                _ if w.running_task.load(Ordering::SeqCst) == 0 => "sched",
                _ => "task",
            };
            Some((what, acks))
        })
    });
    // Idle workers are not woken: they count as stopped while they sleep,
    // and one that wakes sees `stop` and parks before it takes work.
    if stw.wake_idle_for_test.load(Ordering::Relaxed) {
        for w in sh.workers.iter() {
            if Some(w.index) != me {
                sh.wake_worker(w.index);
            }
        }
    }
    // Preemption counters of every worker at the request, so that a stop
    // that waits HOLDUP_REPORT can say what its requests met (accepted,
    // refused and why, ticks) on the worker that held it up.
    let pre: Vec<Option<usurp_preempt::PreemptStats>> = sh
        .workers
        .iter()
        .map(|w| {
            // SAFETY: slots are `'static`.
            unsafe { w.slot.load(Ordering::Acquire).as_ref() }.map(|s| s.stats())
        })
        .collect();
    let mut last_iter = t0;
    let mut max_gap = Duration::ZERO;
    let mut g = stw.lock();
    // Once the stop has waited HOLDUP_REPORT: each worker still running,
    // described when first seen then (while its task still runs), and how
    // long into the stop it was last seen running. The one seen running
    // latest held the stop up longest.
    let mut holdups: Vec<(usize, String, Duration, Option<u64>)> = Vec::new();
    let (mut waited_for_some, mut slept) = (false, false);
    let ((budget, descheduled), mut spin_over) = (spin_budget(), false);
    // Where the spin's budget counts from: the stop's start, or the last
    // wake-up by a worker's notification (see "A park frees a CPU").
    let mut spin_from = t0;
    let mut woken_by_park = false;
    // Every running worker's checkpoint flag first, then the signals (in
    // the loop): a worker that polls (allocation, `Gc<T>` deref) stops at
    // once, not after the signals sent before its own (a signal is a
    // system call of 10-20 µs on a VM; the second worker's used to go out
    // 15-25 µs into the stop). Under the stw lock, as every request of a
    // stop (see `park_worker`).
    for w in sh.workers.iter() {
        if Some(w.index) != me && !stw.counts_as_stopped(w) {
            post_stop_flag(w);
        }
    }
    loop {
        let mut all = true;
        // Workers not stopped yet, and whether each has its last request
        // still in flight (no use re-sending then: at most one signal is).
        let (mut unstopped, mut all_in_flight) = (0usize, true);
        let now = Instant::now();
        let waited = now - t0;
        max_gap = max_gap.max(now - last_iter);
        last_iter = now;
        let mut describe = Vec::new();
        if let Some(t) = tr.as_mut() {
            t.iteration(crate::sys::now_ns());
        }
        for w in sh.workers.iter() {
            if Some(w.index) == me {
                continue;
            }
            if let Some(t) = tr.as_mut() {
                // SAFETY: slots are `'static`.
                if let Some(s) = unsafe { w.slot.load(Ordering::Acquire).as_ref() } {
                    let acks = s.acks();
                    let (at, r) = s.last_request();
                    t.acked(w.index, acks, at, r);
                }
            }
            if stw.counts_as_stopped(w) {
                if let Some(t) = tr.as_mut() {
                    t.stopped(w.index, crate::sys::now_ns(), stw.parked_ns[w.index].load(Ordering::Relaxed));
                }
                continue;
            }
            all = false;
            unstopped += 1;
            // In flight = sent in an earlier pass and still undelivered,
            // read before this pass's (re-)send: a signal sent just now is
            // always still pending when read right after, and counting it
            // made every wait on a full machine the long one, so a refused
            // first signal was re-sent only after RETRY (review of the
            // oversubscribed wait: re-sends at 88, 269, 452 ... µs).
            // SAFETY: slots are `'static`.
            if !unsafe { w.slot.load(Ordering::Acquire).as_ref() }.is_some_and(|s| s.is_pending()) {
                all_in_flight = false;
            }
            if ask_to_stop(w) {
                if let Some(t) = tr.as_mut() {
                    t.sent(w.index, crate::sys::now_ns());
                }
            }
            if waited >= HOLDUP_REPORT {
                match holdups.iter_mut().find(|h| h.0 == w.index) {
                    Some(h) => h.2 = waited,
                    None => describe.push(w),
                }
            }
        }
        if all {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Withdraw the request: as a start, by the stopper (us). What
            // the workers do is read first, while the stop flag still holds
            // tasks from being recycled (see `running_task_info`).
            drop(g);
            let desc = describe_workers_unstopped(sh, me);
            start_the_world(sh);
            return Err(desc);
        }
        if !describe.is_empty() {
            drop(g);
            for w in describe {
                holdups.push((w.index, describe_worker(sh, w), waited, run_delay(w)));
            }
            g = stw.lock();
        }
        if waited >= next_report {
            drop(g);
            report_stragglers(sh, me, waited);
            next_report += REPORT_EVERY;
            g = stw.lock();
            continue;
        }
        let mut retry = if waited < FAST_RETRY_FOR { FAST_RETRY } else { RETRY };
        let full = oversubscribed(unstopped);
        let spin_anyway = SPIN_WHEN_OVERSUBSCRIBED.load(Ordering::Relaxed);
        let spun_for = now.saturating_duration_since(spin_from);
        if !spin_over && spun_for < budget && STOPPER_SPIN.load(Ordering::Relaxed) && (!full || spin_anyway) {
            if full {
                g.oversubscribed_spins += 1;
            }
            if std::mem::replace(&mut woken_by_park, false) {
                g.respins += 1;
            }
            // Spin (see SPIN_FOR) until every worker counts as stopped or
            // the next re-send is due; the states are atomics, re-read
            // under the lock at the top of the loop. No yield: a pause
            // between reads, and the spin ends for good if the clock shows
            // the OS took the CPU away.
            drop(g);
            let until = now + retry.min(budget - spun_for);
            let mut spins = 0u32;
            let mut last = Instant::now();
            loop {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                spins += 1;
                if all_stopped(sh, me) {
                    break;
                }
                let t = Instant::now();
                if t - last >= descheduled {
                    spin_over = true;
                    break;
                }
                if t >= until {
                    break;
                }
                last = t;
            }
            if let Some(t) = tr.as_mut() {
                t.spun(spins);
            }
            waited_for_some = true;
            g = stw.lock();
            continue;
        }
        if full && !spin_over && spun_for < budget && STOPPER_SPIN.load(Ordering::Relaxed) {
            g.oversubscribed_sleeps += 1;
        }
        if all_in_flight {
            // Every worker we wait for has its signal still undelivered
            // (most likely it waits for a CPU): a re-send would do
            // nothing, and each early wake-up of ours could take the CPU
            // it waits for. Its park (or a safe section) notifies us.
            retry = RETRY;
        }
        (waited_for_some, slept) = (true, true);
        g.stopper_sleeps += 1;
        let w0 = tr.is_some().then(crate::sys::now_ns);
        let (g2, res) = stw.stopped_cv.wait_timeout(g, retry).unwrap_or_else(|p| p.into_inner());
        g = g2;
        woken_by_park = false;
        if !res.timed_out() && RESPIN.load(Ordering::Relaxed) {
            // A worker's stop state changed (it parked, or entered a safe
            // section): its CPU is free, and the loop re-checks whether the
            // rest fit beside us. A new spin budget from here.
            spin_from = Instant::now();
            woken_by_park = true;
        }
        if let (Some(t), Some(w0)) = (tr.as_mut(), w0) {
            t.waited(retry.as_nanos() as u64, crate::sys::now_ns() - w0, res.timed_out());
        }
    }
    let ttsp = t0.elapsed();
    if let Some(t) = tr.take() {
        t.finish(ttsp.as_nanos() as u64, &trace::run_delays(worker_tids()));
    }
    if let Some((wi, mut h, _, rd0)) = holdups.into_iter().max_by_key(|h| h.2) {
        drop(g);
        h.push_str(&holdup_detail(sh, wi, pre[wi].as_ref(), rd0, max_gap));
        g = stw.lock();
        g.last_holdup = Some((h, ttsp));
    }
    g.stops += 1;
    if waited_for_some && !slept && ttsp <= budget {
        g.stops_within_spin += 1;
    }
    if g.ttsp.len() < TTSP_HISTORY {
        g.ttsp.push(ttsp);
    } else {
        let p = g.ttsp_pos;
        g.ttsp[p] = ttsp;
        g.ttsp_pos = (p + 1) % TTSP_HISTORY;
    }
    Ok(ttsp)
}

/// Whether every worker of `sh` but `me` counts as stopped (read without
/// the stw lock: the stopper's spin; it re-checks under the lock).
fn all_stopped(sh: &Shared, me: Option<usize>) -> bool {
    sh.workers.iter().all(|w| Some(w.index) == me || sh.stw.counts_as_stopped(w))
}

/// Prints to stderr which workers (and which of their tasks) have not
/// stopped after `waited`, and what usually causes it. Called by the stopper
/// without the stw lock.
#[cold]
#[inline(never)]
fn report_stragglers(sh: &Shared, me: Option<usize>, waited: Duration) {
    use std::fmt::Write;
    let mut out = String::new();
    // Who waits (the caller is the stopper): a task of this runtime, a task
    // of another runtime, or a thread outside any runtime.
    let t = crate::worker::current_task();
    let by = if t.is_null() {
        "by a thread that runs no task".to_string()
    } else {
        // SAFETY: the current task is valid while it runs; its id was written
        // before it ran.
        let (id, ours) = unsafe { ((*t).id.get(), std::ptr::eq((*t).shared, sh)) };
        if ours {
            format!("by task {id} of this runtime")
        } else {
            format!("by task {id} of another runtime")
        }
    };
    let _ = write!(
        out,
        "usurp: stop-the-world ({by}) has waited {:.1} s for these workers to reach a safe point:",
        waited.as_secs_f64()
    );
    for w in sh.workers.iter() {
        if Some(w.index) == me || sh.stw.counts_as_stopped(w) {
            continue;
        }
        let slot = w.slot.load(Ordering::Acquire);
        // SAFETY: slots are `'static`.
        let tid = unsafe { slot.as_ref() }.map_or(0, |s| s.tid());
        let _ = write!(out, "
  worker {} (thread {tid}): ", w.index);
        match running_task_info(sh, w) {
            Some((id, Some(name))) => {
                let _ = write!(out, "task {id} \"{name}\" has not reached a safe point");
            }
            Some((id, None)) => {
                let _ = write!(out, "task {id} (unnamed) has not reached a safe point");
            }
            None => out.push_str("between tasks"),
        }
    }
    out.push_str(
        "\nusurp: such a task is usually blocked in the kernel outside blocking() (e.g. on a std::sync::Mutex \
         whose holder is the task collecting, or waiting for another runtime or thread that waits for this stop) \
         or looping outside preemptible code without checkpoint(); it holds up every collection: use usurp::Mutex, \
         wrap kernel-blocking calls in usurp::blocking(), and call usurp::checkpoint() in long non-preemptible \
         loops\n",
    );
    eprint!("{out}");
}

/// `worker N (thread T): task I "name"` for the task on `w`'s CPU (or
/// "between tasks"). Called by the stopper without the stw lock.
fn describe_worker(sh: &Shared, w: &Worker) -> String {
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static`.
    let tid = unsafe { slot.as_ref() }.map_or(0, |s| s.tid());
    match running_task_info(sh, w) {
        Some((id, Some(name))) => format!("worker {} (thread {tid}): task {id} \"{name}\"", w.index),
        Some((id, None)) => format!("worker {} (thread {tid}): task {id} (unnamed)", w.index),
        None => format!("worker {} (thread {tid}): between tasks", w.index),
    }
}

/// The time (ns) worker `w`'s thread has waited on run queues (ready but
/// not running: the OS gave the CPU to other threads), as accounted so far
/// (`run_delay` in `/proc/self/task/<tid>/schedstat`); `None` if
/// unreadable. Read only for stops that already waited [`HOLDUP_REPORT`].
fn run_delay(w: &Worker) -> Option<u64> {
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static`.
    let tid = unsafe { slot.as_ref() }?.tid();
    thread_run_delay(tid)
}

fn thread_run_delay(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

/// What the requests of a long stop met on worker `wi`, the one that held it
/// up (issue 9 items 1 and 8): ` [requests N, acks N, accepted N, ticks N,
/// refused <reason> N, ..., run-queue wait X ms, stopper's longest gap X
/// ms]` (see the module docs). Called by the stopper after its stop
/// completed, without the stw lock.
fn holdup_detail(
    sh: &Shared,
    wi: usize,
    pre: Option<&usurp_preempt::PreemptStats>,
    rd0: Option<u64>,
    max_gap: Duration,
) -> String {
    use std::fmt::Write;
    let w = &sh.workers[wi];
    let mut out = String::new();
    // SAFETY: slots are `'static`.
    if let (Some(a), Some(slot)) = (pre, unsafe { w.slot.load(Ordering::Acquire).as_ref() }) {
        let b = slot.stats();
        let _ = write!(
            out,
            " [requests {}, acks {}, accepted {}, ticks {}",
            b.requests_sent - a.requests_sent,
            b.acks - a.acks,
            b.accepted - a.accepted,
            b.ticks - a.ticks
        );
        for r in usurp_preempt::Refusal::ALL {
            let n = b.refused(r) - a.refused(r);
            if n != 0 {
                let _ = write!(out, ", refused {r:?} {n}");
            }
        }
        if let (Some(r0), Some(r1)) = (rd0, run_delay(w)) {
            let _ = write!(out, ", run-queue wait {:.3} ms", r1.saturating_sub(r0) as f64 / 1e6);
        }
        let _ = write!(out, ", stopper's longest gap {:.3} ms]", max_gap.as_secs_f64() * 1e3);
    }
    out
}

/// The last stop that waited at least [`HOLDUP_REPORT`], if the last stop
/// did: who held it up (for the GC's `World::last_stop_holdup`).
pub(crate) fn last_stop_holdup(sh: &Shared) -> Option<String> {
    let g = sh.stw.lock();
    let last = if g.ttsp.is_empty() { Duration::ZERO } else { g.ttsp[(g.ttsp_pos + g.ttsp.len() - 1) % g.ttsp.len()] };
    g.last_holdup.as_ref().filter(|(_, t)| *t == last && last >= HOLDUP_REPORT).map(|(h, _)| h.clone())
}

/// The id and name of the task on `w`'s CPU, if any (for the report).
fn running_task_info(sh: &Shared, w: &Worker) -> Option<(u64, Option<String>)> {
    // Holding the registry lock, no task struct is freed (`Task::destroy`);
    // holding the pool lock, no struct in the pool is taken and prepared.
    let reg = sh.registry.lock();
    let _pool = sh.pool.lock();
    let t = w.running_task.load(Ordering::SeqCst) as *mut crate::tasks::tcb::Task;
    if t.is_null() || !reg.contains(&t) {
        return None;
    }
    // SAFETY: `t` is registered, so allocated until `reg` is released. Its
    // id and name are written only by `Task::prepare`, on a FREE struct
    // taken from a worker's free cache (by that worker's own thread) or from
    // the pool (locked here). `t` is RUNNING on `w` (checked below): it
    // becomes FREE only when it exits, and then, with the stop flag set, its
    // worker recycles it into its own cache or the pool (locked) and parks
    // before running anything that could prepare it again. So nothing writes
    // these fields while we read them. (`recycle` leaves the name in place
    // for this reason.) Ordering: `prepare` wrote them before the task was
    // queued (Release), and `w` took it from a queue (Acquire) before storing
    // `running_task`, a Relaxed store (the switch path keeps it cheap), so
    // our load is not formally a synchronizing read of those writes; they
    // precede it by at least `REPORT_AFTER` (or, for a task dump whose stop
    // timed out, by its deadline: `describe_workers_unstopped`), and nothing
    // writes them since. The stop flag must stay set while we read: callers
    // are the stopper itself (the stop ends only when it starts the world)
    // or `describe_workers_unstopped`, which holds the stw lock (under which
    // alone a stop ends) across its sample of the flag and this read.
    unsafe {
        if (*t).state.load(Ordering::Acquire) != crate::tasks::tcb::state::RUNNING {
            return None;
        }
        let id = (*t).id.get();
        let name = (*(*t).name.get()).as_deref().map(str::to_owned);
        Some((id, name))
    }
}

/// What can be said about every worker without a stop (task dumps whose
/// stop timed out, issue 15): `worker N (thread T): <state>` per worker.
/// Reads the id and name of a running task only while a stop is requested
/// (the argument of [`running_task_info`] needs the stop flag); with no stop
/// in force, only the worker states.
///
/// Holds the stw lock throughout: `stop` and `stopper` are written only
/// under it (a stop's begin and `start_the_world`), so the stop sampled here
/// stays in force, with the same stopper, while the tasks' names are read
/// (without the lock a stop could end between the sample and the read, and
/// the task read could exit, be recycled and re-prepared meanwhile). The
/// caller does not hold it. Lock order: stw, then registry, then pool
/// (nothing holding the registry or the pool takes the stw lock).
pub(crate) fn describe_workers_unstopped(sh: &Shared, me: Option<usize>) -> Vec<String> {
    let g = sh.stw.lock();
    let stop_on = sh.stw.stop.load(Ordering::SeqCst);
    let mut lines = Vec::new();
    if stop_on {
        lines.push(describe_stopper(sh, &g));
    }
    let workers = sh
        .workers
        .iter()
        .map(|w| {
            let slot = w.slot.load(Ordering::Acquire);
            // SAFETY: slots are `'static`.
            let tid = unsafe { slot.as_ref() }.map_or(0, |s| s.tid());
            let st = sh.stw.wstate[w.index].load(Ordering::SeqCst);
            let what = if Some(w.index) == me {
                "runs the dumping task".to_string()
            } else if st == PARKED {
                "parked for the stop".to_string()
            } else if st == SAFE && sh.lend.is_aside(w.index) {
                "standing aside while the GC's collector marks (counts as stopped)".to_string()
            } else if st == SAFE {
                "in a blocking section (counts as stopped)".to_string()
            } else if w.idle.load(Ordering::SeqCst) {
                "idle".to_string()
            } else if !stop_on {
                "running (no stop in force: task not read)".to_string()
            } else {
                match running_task_info(sh, w) {
                    Some((id, Some(name))) => format!("running task {id} \"{name}\": has not reached a safe point"),
                    Some((id, None)) => format!("running task {id} (unnamed): has not reached a safe point"),
                    None => "between tasks: has not stopped".to_string(),
                }
            };
            format!("worker {} (thread {tid}): {what}", w.index)
        });
    lines.extend(workers);
    drop(g);
    lines
}

/// Who holds the stop in force (for dumps whose stop timed out): the dump
/// itself, a task (by id and name), or a thread. Called with the stw lock
/// held (`_locked`): the stopper cannot end its stop meanwhile (issue 15
/// review: read without it, the stopper could restart the world, exit, and
/// its struct be recycled and re-prepared, its name replaced, while we
/// read it).
fn describe_stopper(sh: &Shared, _locked: &MutexGuard<'_, Inner>) -> String {
    let who = sh.stw.stopper.load(Ordering::SeqCst);
    if who == caller_id() {
        return "the stop in force is this dump's own (being withdrawn)".to_string();
    }
    if who == 0 {
        return "a stop is requested (its stopper is between its request and its record)".to_string();
    }
    if who & 1 == 1 {
        return "a stop is in force, requested by a thread that is not a task (e.g. a collection from a plain \
                thread)"
            .to_string();
    }
    let reg = sh.registry.lock();
    let t = who as *mut crate::tasks::tcb::Task;
    if !reg.contains(&t) {
        return "a stop is in force, requested by a task of another runtime".to_string();
    }
    // SAFETY: `t` is registered (allocated while `reg` is held). It is the
    // stopper recorded now, and stays so while we hold the stw lock
    // (`_locked`): only `start_the_world`, under that lock, clears it. The
    // stopper cannot exit without restarting the world first
    // (`exit_current`), so it is neither recycled nor re-prepared (which
    // replaces the name) while we read; its id and name were written before
    // it ran.
    let (id, name) = unsafe { ((*t).id.get(), (*(*t).name.get()).as_deref().map(str::to_owned)) };
    match name {
        Some(n) => format!("a stop is in force, requested by task {id} \"{n}\""),
        None => format!("a stop is in force, requested by task {id} (unnamed)"),
    }
}

/// What holds `sh`'s world stopped, in words (`None` if no stop is in
/// force): the stopper task, or the stopper thread's OS id and name (from
/// `/proc/self/task/<tid>/comm`). For `drop(Runtime)`'s report after it
/// waited [`crate::shared::DROP_REPORT_AFTER`] for its workers (RT-gc
/// item 8).
pub(crate) fn stop_holder(sh: &Shared) -> Option<String> {
    let g = sh.stw.lock();
    if !g.active {
        return None;
    }
    let mut who = describe_stopper(sh, &g);
    if g.stopper_tid != 0 {
        let tid = g.stopper_tid;
        let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        let name = name.trim_end();
        if name.is_empty() {
            who.push_str(&format!(": OS thread {tid}"));
        } else {
            who.push_str(&format!(": OS thread {tid} \"{name}\""));
        }
    }
    Some(who)
}

/// Asks the task on `w`'s CPU (if any) to get off it. True if a signal
/// was sent (none is while one is in flight).
fn ask_to_stop(w: &Worker) -> bool {
    if w.running_task.load(Ordering::SeqCst) == 0 {
        // In its scheduler loop: it parks by itself, at once unless it
        // naps (a spinning worker's nap, up to 50 µs on its futex word:
        // wake it; the review of session 12's nap measured a napping
        // worker's park at p50 30 µs into a stop, 2 µs once idle).
        if crate::worker::STOP_WAKES_NAPPERS.load(Ordering::Relaxed) {
            w.wake_if_napping();
        }
        return false;
    }
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static` (pooled, never freed).
    if let Some(slot) = unsafe { slot.as_ref() } {
        // At most one signal in flight; a request that fails (the thread
        // just unregistered) is harmless: it stops anyway.
        return request_task_preempt(w, slot);
    }
    false
}

/// Sets the checkpoint flag of the task on `w`'s CPU (if any) without a
/// signal (`usurp_preempt::internals::post_checkpoint_request`), withdrawn
/// as in [`request_task_preempt`] if `w` no longer runs a task on that slot.
fn post_stop_flag(w: &Worker) {
    if w.running_task.load(Ordering::SeqCst) == 0 {
        return;
    }
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static` (pooled, never freed).
    if let Some(slot) = unsafe { slot.as_ref() } {
        if usurp_preempt::internals::post_checkpoint_request(slot).is_ok() {
            std::sync::atomic::fence(Ordering::SeqCst);
            if w.running_task.load(Ordering::Relaxed) == 0 || !std::ptr::eq(w.slot.load(Ordering::Relaxed), slot) {
                slot.withdraw_request();
            }
        }
    }
}

/// Sends a preemption request for the task on `w`'s CPU to `slot`, read
/// from `w.slot` (the stopper, and the timer monitor in `sysmon.rs`), and
/// withdraws it if `w` no longer runs a task on that slot once it is
/// posted. Since we read `w.slot`, `w` may have finished its task and gone
/// to sleep, or a `blocking` call may have handed it to another thread
/// (then the old thread's slot runs no task), or run its closure in place:
/// the slot went quiet (`set_idle(true)` cleared its request, maybe before
/// we set it). Left there, the request would raise the process-wide
/// request count, and with it every allocation's and `Gc<T>` deref's poll
/// on its slow path, until the slot's next task. Dekker's handshake with
/// the worker (`running_task` or `w.slot` changed, then a SeqCst fence in
/// `set_idle(true)`, then its clearing): after our fence, either we see
/// the change and withdraw the request, or the worker clears it. A
/// request withdrawn because the worker was between two tasks is lost;
/// both callers re-send. True if a signal was sent.
pub(crate) fn request_task_preempt(w: &Worker, slot: &usurp_preempt::WorkerSlot) -> bool {
    let r = usurp_preempt::request_preempt(slot);
    if r.is_ok() {
        std::sync::atomic::fence(Ordering::SeqCst);
        if w.running_task.load(Ordering::Relaxed) == 0 || !std::ptr::eq(w.slot.load(Ordering::Relaxed), slot) {
            slot.withdraw_request();
        }
    }
    matches!(r, Ok(true))
}

/// Stops the world for a collection's pause (the GC's
/// `World::stop_the_world`): [`stop_the_world`], then marks the stop as the
/// collector's, so that a root scanner (which runs on the stopper inside
/// the pause) cannot end it: see [`start_the_world_public`].
pub(crate) fn stop_for_collection(sh: &Shared) {
    stop_the_world(sh);
    sh.stw.drop_after_pause.store(false, Ordering::Relaxed);
    sh.stw.gc_pause.store(true, Ordering::SeqCst);
}

/// Ends a collection's pause (the GC's `World::start_the_world`). Returns
/// whether the runtime was dropped inside it (by a root scanner): the
/// caller then begins the shutdown that drop deferred.
pub(crate) fn start_after_collection(sh: &Shared) -> bool {
    let mine = caller_is_stopper(sh);
    // Taken while the world is still ours: once it restarts, another stop
    // for a collection may begin and reset the flag (`stop_for_collection`),
    // and the deferred drop would be lost (review of session 14).
    let dropped = mine && sh.stw.drop_after_pause.swap(false, Ordering::SeqCst);
    // (Clears `gc_pause` under the stw lock.)
    start_the_world(sh);
    dropped
}

/// Whether the caller holds `sh`'s world stopped for a collection's pause
/// (it is the collector: a root scanner or another callback of the GC runs
/// on it).
#[inline]
pub(crate) fn caller_in_collection_pause(sh: &Shared) -> bool {
    caller_is_stopper(sh) && sh.stw.gc_pause.load(Ordering::SeqCst)
}

/// Records a `drop(Runtime)` by the collector inside its pause (a root
/// scanner): the shutdown begins when the pause ends. Returns false (and
/// records nothing) if the caller is not in a collection's pause.
pub(crate) fn defer_drop_to_pause_end(sh: &Shared) -> bool {
    if !caller_in_collection_pause(sh) {
        return false;
    }
    sh.stw.drop_after_pause.store(true, Ordering::Relaxed);
    true
}

/// `Runtime::start_the_world`: [`start_the_world`], except inside a
/// collection's pause, where it panics (a root scanner that restarted the
/// world let tasks run, and store pointers the collector never saw, in the
/// middle of its marking: reachable objects were freed).
pub(crate) fn start_the_world_public(sh: &Shared) {
    if caller_in_collection_pause(sh) {
        panic!(
            "usurp: Runtime::start_the_world called inside a GC pause: a root scanner may not restart the world \
             (the collection holds it stopped, and restarts it when the pause ends)"
        );
    }
    start_the_world(sh);
}

/// Restarts the world stopped by [`stop_the_world`]. Only the stopper may;
/// without a stop in force it does nothing.
pub(crate) fn start_the_world(sh: &Shared) {
    let stw = &sh.stw;
    let mut g = stw.lock();
    if !g.active {
        return;
    }
    if stw.stopper.load(Ordering::SeqCst) != caller_id() {
        drop(g);
        panic!(
            "usurp: start_the_world called by a task or thread that did not stop the world (only the caller of \
             Runtime::stop_the_world restarts it)"
        );
    }
    g.active = false;
    g.job = None;
    g.stopper_tid = 0;
    let holder = std::mem::replace(&mut g.holder_task, 0) as *const crate::tasks::tcb::Task;
    // SAFETY: the holder is the caller (checked above: only the stopper
    // starts the world), a running task.
    if let Some(t) = unsafe { holder.as_ref() } {
        t.held_stops.set(t.held_stops.get().saturating_sub(1));
    }
    stw.gc_pause.store(false, Ordering::SeqCst);
    forget_thread_stop(sh);
    let np = g.no_preempt.take();
    let quiet = std::mem::replace(&mut g.quiet_slot, 0) as *const usurp_preempt::WorkerSlot;
    stw.stopper.store(0, Ordering::SeqCst);
    stw.stop.store(false, Ordering::SeqCst);
    drop(g);
    stw.cv.notify_all();
    // SAFETY: slots are `'static`; the stopper did not leave its thread
    // (it neither switches nor migrates during its stop).
    if let Some(s) = unsafe { quiet.as_ref() } {
        // Busy again: its quantum timer is re-armed (from now) if work waits.
        let _ = s.set_idle(false);
    }
    drop(np);
}

/// Called by worker `w`'s scheduler loop when the stop flag is set: parks
/// (counted as stopped) until the world restarts, serving marking jobs.
#[cold]
pub(crate) fn park_worker(w: &Worker) {
    let sh = w.shared();
    let stw = &sh.stw;
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static`.
    let slot = unsafe { slot.as_ref() };
    let mut g = stw.lock();
    stw.parked_ns[w.index].store(crate::sys::now_ns(), Ordering::Relaxed);
    stw.wstate[w.index].store(PARKED, Ordering::SeqCst);
    // Quiet from now on (no ticks), and without the request (if any) that
    // the stopper posted before it saw us park: the stopper posts requests
    // only under the stw lock and only to workers it does not count as
    // stopped, so, done here (locked, after PARKED), no request is left
    // raising the process-wide count (every poll's slow path) for the stop.
    if let Some(s) = slot {
        let _ = s.set_idle(true);
    }
    stw.stopped_cv.notify_all();
    while stw.stop.load(Ordering::SeqCst) {
        g = stw.serve_jobs(g);
        if !stw.stop.load(Ordering::SeqCst) {
            break;
        }
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    stw.wstate[w.index].store(RUNNING, Ordering::SeqCst);
    drop(g);
    if let Some(s) = slot {
        let _ = s.set_idle(false);
    }
}

/// A worker that stopped for good (shutdown) counts as stopped from now on.
pub(crate) fn worker_exited(w: &Worker) {
    let stw = &w.shared().stw;
    let _g = stw.lock();
    stw.wstate[w.index].store(PARKED, Ordering::SeqCst);
    stw.stopped_cv.notify_all();
}

/// Runs `f(0..n)` on the stopper and the parked workers (world stopped).
pub(crate) fn run_parallel(sh: &Shared, n: usize, f: &(dyn Fn(usize) + Sync)) {
    let stw = &sh.stw;
    if n <= 1 || !stw.stop.load(Ordering::SeqCst) {
        for i in 0..n {
            f(i);
        }
        return;
    }
    // SAFETY: only the lifetime is erased; we do not return before every
    // index taken by a worker has completed, and the job is removed then.
    let fp: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let mut g = stw.lock();
    g.job = Some(Job { f: fp, n, next: 0, done: 0 });
    stw.cv.notify_all();
    loop {
        let job = g.job.as_mut().expect("job present while running");
        if job.next < job.n {
            let i = job.next;
            job.next += 1;
            drop(g);
            f(i);
            g = stw.lock();
            g.job.as_mut().expect("job present while running").done += 1;
            continue;
        }
        if job.done == job.n {
            break;
        }
        g = stw.job_done.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    g.job = None;
}

/// Starts `n` marker threads for `sh`: they serve [`run_parallel`] jobs
/// (parallel marking) besides the parked workers. Workers that wait in a
/// safe region (e.g. a task whose allocation waits for the collection in
/// progress) cannot mark, so without these a collection often marks alone.
/// They run no task and hold no heap pointers of their own (their stacks are
/// not scanned); they exit when the runtime shuts down.
pub(crate) fn start_markers(sh: &std::sync::Arc<Shared>, n: usize) {
    for k in 0..n {
        let weak = std::sync::Arc::downgrade(sh);
        if let Ok(h) = std::thread::Builder::new().name(format!("usurp-marker-{k}")).spawn(move || marker_main(weak)) {
            sh.keep_thread(h);
        }
    }
}

/// Shutdown (after `shutdown` was set, SeqCst): wakes the marker threads,
/// which then exit instead of waiting on (holding a reference to the
/// runtime, up to 100 ms). Under the lock: a marker checks `shutdown` under
/// it before it waits.
pub(crate) fn wake_markers(sh: &Shared) {
    let _g = sh.stw.lock();
    sh.stw.cv.notify_all();
}

fn marker_main(weak: std::sync::Weak<Shared>) {
    loop {
        let Some(sh) = weak.upgrade() else { return };
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        let stw = &sh.stw;
        let g = stw.serve_jobs(stw.lock());
        if sh.shutdown.load(Ordering::SeqCst) {
            return; // (`wake_markers` may have notified before we waited)
        }
        let _ = stw.cv.wait_timeout(g, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner());
    }
}

/// Marks the calling thread's worker (index `i`) as stopped-safe: its thread
/// is about to block in a closure that does not touch the heap.
pub(crate) fn enter_safe(sh: &Shared, i: usize) {
    let stw = &sh.stw;
    let _g = stw.lock();
    stw.wstate[i].store(SAFE, Ordering::SeqCst);
    stw.stopped_cv.notify_all();
}

/// Leaves a safe section: waits while the world is stopped, then marks the
/// worker running again.
/// `withdraw` is called (without the lock) first if the world is stopped
/// when the caller would leave (see [`safe_region_withdrawing`]). The
/// caller becomes running under the lock, with no stop in force: a stop
/// that begins after that waits for it like any running worker.
fn exit_safe(sh: &Shared, i: usize, withdraw: &mut dyn FnMut()) {
    if caller_is_stopper(sh) {
        stopper_left_blocking();
    }
    let stw = &sh.stw;
    let mut g = stw.lock();
    if g.active {
        drop(g);
        withdraw();
        g = stw.lock();
    }
    while g.active {
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    stw.wstate[i].store(RUNNING, Ordering::SeqCst);
}

/// Leaves a safe section entered with [`enter_safe`] by a worker in its
/// scheduler loop (no task, nothing to withdraw): waits while the world is
/// stopped, then marks the worker running.
pub(crate) fn leave_safe(sh: &Shared, i: usize) {
    exit_safe(sh, i, &mut || {});
}

/// For threads without a worker (leaving `blocking` after a handoff, or any
/// other thread): waits while the world is stopped.
pub(crate) fn wait_until_started(sh: &Shared) {
    if caller_is_stopper(sh) {
        stopper_left_blocking();
    }
    let stw = &sh.stw;
    if !stw.stop.load(Ordering::SeqCst) {
        // A stop that begins after this check sees this task in its blocking
        // state and the worker it left parked; fine either way.
        return;
    }
    let mut g = stw.lock();
    while g.active {
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
}

/// Runs `f` with the caller counted as stopped (the GC's `World::blocking`,
/// and `blocking` when the worker cannot be handed off). The caller's
/// registers are spilled onto its stack and, for a task, the SP recorded, so
/// that a collection in the meantime scans them.
pub(crate) fn safe_region(sh: &Shared, f: &mut dyn FnMut()) {
    safe_region_withdrawing(sh, f, &mut || {});
}

/// [`safe_region`], with `withdraw` called (without `sh`'s stw lock) if the
/// caller, about to leave the region, finds `sh`'s world stopped: before it
/// waits for the restart (a task of `sh` holding another runtime's world
/// stopped must release it before it waits: see `stop_the_world_until`).
pub(crate) fn safe_region_withdrawing(sh: &Shared, f: &mut dyn FnMut(), withdraw: &mut dyn FnMut()) {
    if caller_is_stopper(sh) {
        // Counting as stopped and waiting for the world to start: only the
        // caller could start it.
        stopper_waits_for_itself("a wait for another collection (or thread exit) began");
    }
    let me = my_worker(sh);
    let cur = crate::worker::current_task();
    // The caller counts as stopped: it must not allocate (the slow path says
    // why). Restored on this thread when `f` is done.
    let _no_alloc = usurp_gc::forbid_allocation(INSIDE_BLOCKING);
    crate::arch::with_registers_spilled(&mut |sp| {
        // A panic must not unwind through the spill routine's frame.
        let r = match me {
            None => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f));
                wait_until_started(sh);
                r
            }
            Some(i) => {
                // SAFETY: `cur` is the running task of this thread (we hold
                // worker `i`); the frames above `sp` stay untouched while `f`
                // runs.
                let (m, w) = unsafe {
                    *(*cur).sp.get() = sp;
                    (*cur).state.store(crate::tasks::tcb::state::BLOCKING, Ordering::SeqCst);
                    let m = &*crate::worker::machine();
                    (m, &*m.worker.get())
                };
                // Detach the worker while `f` runs: a yield inside `f` then
                // yields the thread, never switches tasks (the worker counts
                // as stopped). The preemption slot is left as it is: the
                // task's quantum keeps running, so a task calling `blocking`
                // in a loop cannot hog its worker by restarting its quantum
                // on every call; but the signal is blocked while `f` runs (no
                // EINTR in its system calls): a tick due meanwhile is handled
                // after `f`, refused, and sets the checkpoint flag, which
                // `blocking` then honours.
                w.running_task.store(0, Ordering::Relaxed);
                m.worker.set(std::ptr::null());
                enter_safe(sh, i);
                let mask = crate::worker::thread::MaskPreemptSignal::new(sh);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f));
                exit_safe(sh, i, withdraw);
                // Hook (stack_scan.rs): the frames above `sp` are written
                // again from here on: scanned for the GC's epoch first.
                // SAFETY: as above (`cur` is the running task).
                crate::stack_scan::before_resume(sh, unsafe { crate::tasks::tcb::TaskRef::new(cur) });
                drop(mask);
                m.worker.set(w);
                w.running_task.store(cur as usize, Ordering::Relaxed);
                // SAFETY: as above.
                unsafe { (*cur).state.store(crate::tasks::tcb::state::RUNNING, Ordering::SeqCst) };
                r
            }
        };
        if let Err(p) = r {
            SAFE_PANIC.with(|c| c.set(Some(p)));
        }
    });
    if let Some(p) = SAFE_PANIC.with(|c| c.take()) {
        std::panic::resume_unwind(p);
    }
}

thread_local! {
    static SAFE_PANIC: std::cell::Cell<Option<Box<dyn std::any::Any + Send>>> = const { std::cell::Cell::new(None) };
}
