//! # usurp-sched: the M:N scheduler
//!
//! Tasks (green threads with their own stacks) run on N worker threads.
//!
//! ## DESIGN notes
//!
//! **Tasks and stacks** (`tasks/tcb.rs`, `stack.rs`). A task is a heap struct that
//! owns an mmap'd stack (default 256 KiB, committed lazily, one PROT_NONE
//! guard page below it: two kernel mappings per stack, so 30,000 tasks fit
//! under the default `vm.max_map_count` of 65530). Finished tasks are recycled
//! with their stack: a per-worker cache (64), then a shared pool (1024; their
//! stack pages kept up to 16 MiB resident in all, released with
//! `madvise(MADV_DONTNEED)` beyond it), then `munmap`. When the kernel
//! refuses a stack, `try_spawn` returns `Error::StackMap` saying why (from the
//! errno and the figures at the failure: `vm.max_map_count` reached, the
//! address-space limit `RLIMIT_AS` reached, or memory) and what to raise;
//! `spawn` panics with that message.
//!
//! **Switching** (`worker/switch.rs`). The arch crate's `switch(save, to, arg)` saves
//! callee-saved registers on the current stack and resumes another. usurp
//! switches *directly* from task to task when the worker has one ready; the
//! `arg` carries an action word (outgoing task | yield/park/exit/requeue/
//! preempt) that the incoming context applies in `finish_switch` — queueing
//! or recycling the outgoing task only once its registers are saved, so no
//! other worker can resume a half-saved task. Panics are caught at the task's
//! root (`join.rs`); nothing ever unwinds across a switch.
//!
//! **Panic messages** (`panic_hook.rs`, issue 15). The first runtime built
//! installs a panic hook once per process, chaining to the one set before
//! it: a panic in a task (also in its `blocking` closure) prints
//! `task 'guest-1' (id 7) panicked at FILE:LINE:COL:` (`task <unnamed>
//! (id 7)` without a name), the message and, per `RUST_BACKTRACE` as std
//! does, a backtrace or std's note, and does not call the previous hook
//! (which would print the thread line); a panic outside tasks goes to the
//! previous hook (std's `thread '…' panicked`, or the user's). A hook the
//! user sets later replaces this one (std's semantics); calling it from
//! theirs (`take_hook`) keeps the task names. The task is read through the
//! never-inlined `worker::current_task()`.
//!
//! **Task dumps and CPU time** (`glue/dump.rs`, `glue/dumpsig.rs`, issue 15).
//! `Runtime::dump_tasks` / `task::dump` stop the world (the collector's
//! machinery, with a deadline: past it the dump reports each worker's
//! running task instead), copy every live task's state, wait reason
//! (`Task::wait_kind`, written by the task before it parks) and raw
//! frame-pointer chain (from its saved context's frame record, or from the
//! spill frame of an async preemption: interrupted PC first), restart the
//! world, then symbolize. A dump signal (`USURP_DEBUG=dumpsignal=SIGQUIT`,
//! `RuntimeBuilder::dump_signal`) only flags the request; the `usurp-dumper`
//! thread takes the dump. CPU time: one cycle-counter read per switch
//! (`Worker::charge`), converted to time only when read; none with
//! `RuntimeBuilder::task_cpu_time(false)` (readers then report zero and
//! say it is off: `TaskStats::cpu_time_on`, `TaskDump::cpu_time_on`).
//!
//! **Queues** (`queue.rs`; the policy in `worker/policy.rs`). Each worker has a 256-slot ring (single producer,
//! CAS consumers, thieves take half, overflow moves half to the global
//! queue) plus a LIFO `runnext` slot for tasks just spawned or woken by the
//! running task (or woken by the scheduler loop, e.g. by a timer).
//! **Latency fairness** (issue 11): a task made runnable by a wake (timer,
//! channel, mutex, condvar, join) runs ahead of tasks that used up their
//! quantum or yielded, which go to the back of the ring. A woken task
//! displaced from `runnext` by a later wake or spawn goes to the worker's
//! *woken* FIFO (spin-locked intrusive list), so `runnext` holds the newest
//! task and the FIFO the older woken ones in wake order; boosted picks take
//! the FIFO's front first, then `runnext` (oldest wake first: taking
//! `runnext` first starved the FIFO forever beside a ping-pong pair that
//! refilled the slot before every pick), all before the ring. An idle
//! worker takes a woken task from a busy worker's FIFO before stealing from
//! rings, so the boost holds across stealing. The boost is bounded: at most
//! 32 boosted picks in a row, then one ring task runs, so tasks that keep
//! waking each other cannot starve the ring. Spawned tasks displaced from
//! `runnext` go to the ring as before. An idle worker that
//! finds every ring empty takes the task in another worker's `runnext` if
//! that worker made no switch for 5 µs (as Go's runnext stealing): the task
//! that filled it keeps the CPU in code that reaches no switch point. A
//! spin-locked intrusive global queue takes tasks from outside the runtime
//! and overflow. Every 61 schedules a worker checks the global queue, its
//! inbox and timers first (fairness, as in Go).
//!
//! **Idle and wakeups (work conservation).** A worker with nothing to do
//! spins briefly (counted in `nspinning`), then registers as idle and sleeps
//! on its own futex word, with a timeout equal to the time to the next
//! timer. Whoever makes work available (spawn, wake into `runnext` or the
//! ring, overflow batches, batches taken from the global queue) calls
//! `notify`, which wakes one idle worker unless one is already searching
//! (Go's `wakep`; SeqCst on both sides, and the idle worker re-checks every
//! queue and `runnext` after registering, so no lost wakeups). A searching
//! worker that finds a task wakes an idle worker in turn (Go's
//! `resetspinning`): wakers woke nobody while it searched, and more tasks
//! may wait than it took (with three or more workers, a second task woken
//! meanwhile would otherwise wait on a busy worker). A runnable
//! task therefore never waits while a worker sleeps. An idle runtime uses no
//! CPU.
//!
//! **Tick only when someone waits** (issue 12). A quantum only matters when
//! another task waits, and a timer signal costs a loop 12-14 µs here, so a
//! busy worker's quantum timer runs only while work waits for it
//! (`usurp_preempt::WorkerSlot::set_contended`; `worker/policy.rs`). Each time the
//! scheduler loop picks a task, the worker marks its slot contended if its
//! ring, `runnext`, woken FIFO, inbox or the global queue holds a task, uncontended
//! otherwise (a SeqCst swap, a fence and a second look at those queues, so
//! a waker racing with the clear is never missed). A direct task-to-task
//! switch only raises the flag (the outgoing task is requeued, or work
//! waits): a stale flag costs at most one tick, since the next preemption
//! goes through the scheduler loop (and so does every 61st schedule).
//! Wakers raise it too: a running task that makes a task runnable on its
//! own worker (spawn, wake, a timer fired in the park path) marks its own
//! worker; a push to the global queue with no worker idle or searching
//! marks every worker (`Shared::notify_global`); a pinned task forwarded to
//! another worker's inbox marks that worker. Clearing is lazy in the
//! preemption crate (no system call: the next tick leaves the timer
//! disarmed), so a flag flipping on every switch costs no `timer_settime`.
//! After a quantum ends (preemption, or a yield at `checkpoint()`) with
//! nothing ready locally, a task in the global queue runs next instead of
//! the preempted one, so a task spawned from outside while every worker
//! loops runs about a quantum later. When loops equal workers, no signal is
//! sent at all. Not covered: tasks queued on *another* busy worker's ring
//! do not make this worker contended (that worker ticks for them itself;
//! with no idle worker, an uneven split of loops, e.g. 3 and 1 on 2
//! workers, is not rebalanced). Stop-the-world and due timers use targeted
//! requests, which do not depend on the quantum timer.
//!
//! **Parking** (`tasks/wait.rs`). Each task has a one-token park state
//! (EMPTY/PARKED/NOTIFIED). Every blocking primitive enqueues a wait node on
//! the waiter's stack; exactly one waker dequeues and wakes it exactly once,
//! and the waiter parks until that token arrives, so nodes and task structs
//! are never touched after their owner moves on. Timed waits
//! (`recv_timeout`, `Condvar::wait_timeout`) give their node a *claim* on
//! the waiter's stack: the timer and a waker race for it with one
//! compare-exchange (WAITING → TIMED_OUT or WON), and only the winner wakes
//! the waiter, so it is woken exactly once; the loser skips the node (a
//! value or notification goes to the next waiter). The waiter unlinks its
//! node or cancels its timer entry before leaving (see `tasks/wait.rs`). A
//! `Select` queues one node per case sharing one claim (`sync/select.rs`).
//!
//! **Timers** (`timer.rs`): one ordered map per runtime (sleeps and timed
//! waits; cancellable); due timers fire in scheduler loops; idle workers
//! sleep with futex timeouts. With `RuntimeBuilder::timer_spin(d)` (opt-in)
//! one idle worker (it holds `Shared::timer_spinner`) sleeps only until `d`
//! before the earliest timer and spins the rest, leaving the spin at once
//! when woken for work (`wake_one_idle` wakes it first), at a stop or
//! shutdown. The other idle workers are backups: they sleep until 100 µs
//! after the deadline (`TIMER_BACKUP_SLACK_NS`), because one woken at the
//! deadline itself took the spinner's CPU there.
//!
//! **Blocking** (`blocking`, `worker/blocking.rs`): like Go's entersyscall/handoff: the worker is
//! handed to a spare thread (bounded pool, `max_blocking_threads`) which runs
//! its queues; the calling thread runs the closure on the task's stack, then
//! queues the task globally and becomes a spare itself. When the worker
//! holds tasks pinned to its thread, it stays, and the calling task moves
//! to a spare thread instead (switch away with `A_ADOPT`; the spare resumes
//! it, runs the closure, queues it globally).
//!
//! **Thread-local state.** Tasks migrate between threads. The runtime reads
//! its per-thread state only through `worker::machine()` (and the
//! `worker::Current` guard built on it), a never-inlined
//! accessor with an asm barrier, so no TLS address is cached across a switch
//! (LLVM may otherwise keep one in a register across a call:
//! llvm-project#98479). **Users must not hold references to `thread_local!`
//! data (or anything derived from the OS thread's identity) across a yield, a
//! blocking call, or any other switch point**: the task may resume on another
//! thread. Use [`task_local!`] for per-task state.
//!
//! **Hook points for preemption and GC** (`hooks.rs`): each worker (allocated
//! once) has `switch_count: AtomicU64`, bumped on every switch, and
//! `running_task`. An async-preempted task goes back in a run queue from
//! the spill hook (`glue::preempt_glue::park_hook`), *pinned* to that
//! worker (`Task::pinned_worker`, honoured by stealing and the global queue
//! by forwarding to the worker's inbox, and by `blocking`, which will not
//! hand a worker with pinned tasks to another thread but moves the calling
//! task to a spare thread instead) only if the interrupted code may hold a
//! thread-local address (`glue::preempt_glue::must_pin`, per function: the
//! interrupted `preemptible!` function or a preemptible caller on its
//! frame-pointer chain touches TLS, per the table usurp-preempt decodes
//! once, `usurp_preempt::fn_table`; unknown and JIT code always pins); the
//! pin clears at the task's next cooperative switch.
//! Other preempted tasks, e.g. call-free loops, migrate freely: one
//! preempted while another task waits for its worker, and while another
//! worker has nothing queued, goes to the global queue (Go's
//! `gopreempt_m`), so an uneven split of loops (3 on one worker, 1 on the
//! other) rotates over every worker (`preempted_goes_global`, `worker/policy.rs`).
//! `hooks::park_current_and_reschedule()` (for other spill hooks) always
//! pins.
//! `hooks::for_each_task_stack` enumerates (saved SP, stack lo, stack hi) of
//! all non-running tasks while the world is stopped; the GC scans
//! `[saved_sp - RED_ZONE, hi)` conservatively. In a concurrent GC cycle
//! the stop omits them: each task's range is scanned once after the start
//! stop, by the collector or by whoever resumes the task first, under a
//! per-task claim (`stack_scan.rs`, issue 9 item 2).
//!
//! **Integration** (`glue/preempt_glue.rs`, `worker/thread.rs`, `stw.rs`,
//! `glue/gc_world.rs`, `sysmon.rs`). Every runtime thread registers a `usurp_preempt::WorkerSlot`
//! (timer, alternate signal stack) and attaches to the runtime's GC heap;
//! `switch_to` and the scheduler loop call `switch_out`/`switch_in` (no
//! system call, no clock read); idle sleeps, stop-the-world parking and
//! `blocking` disarm the thread's timer (`blocking` run in place blocks the
//! preemption signal instead, keeping the task's quantum), and so does the
//! absence of waiting work (above). An async-preempted
//! task parks (pinned to its worker's thread if its function touches TLS; the
//! park path fires due timers); `checkpoint()` yields, and so does the GC's
//! allocation slow path (it calls `checkpoint()`: allocation is a
//! cooperative point for VM runtime code outside `preemptible!`). Stop-the-world sends preemption requests to busy workers and
//! parks every worker at its next scheduling decision (see `stw.rs` for the
//! contract: a non-preemptible loop without `checkpoint()` delays it).
//! `glue/gc_world.rs` implements the GC's `World` (conservative ranges of stopped
//! tasks and of the GC values the runtime keeps in Rust heap memory — spawn
//! closures not started, join results not joined, channel buffers, see
//! `glue/heap_roots.rs` — marking on parked workers, finalizer tasks). While the GC's
//! background collector marks, one worker stands aside where the workers and the collector
//! outnumber the CPUs, so that the OS never runs one thread more than it has CPUs and a stop
//! finds every worker it waits for on a CPU (`World::background_marking`,
//! `worker/stand_aside.rs`). `sysmon.rs` makes a
//! busy worker look at due timers when nobody else would. Workers and the
//! sysmon run with a timer slack of [`TIMER_SLACK_NS`] (1 ns, not Linux's
//! 50 µs), so their timed waits, and so sleeps, end on time.
//!
//! **Layers** (issue 13 item 4; DESIGN.md draws the same). The crate is
//! built in floors; **a module imports only from its own floor or the floors
//! below, and the adapters (`glue/`) are imported by nobody below them**
//! (where a lower floor must reach one, the public API installs a hook: a
//! `fn` pointer in `Shared` or `RuntimeWorld`). `tests/sched_layers.rs`
//! checks this on the sources.
//!
//! ```text
//!   5  public API    lib.rs, runtime.rs, join.rs, sync/, hooks.rs, panic_hook.rs
//!   4  adapters      glue/: preempt_glue, gc_world, heap_roots, dump, dumpsig
//!   3  hub, worker   shared.rs, stw.rs, timer.rs, sysmon.rs, stack_scan.rs,
//!                    worker/: machine, policy, switch, blocking, stand_aside, thread, guard
//!   2  queues        queue.rs
//!   1  tasks         tasks/: tcb (Task, TaskRef), wait, local, cpu_link
//!   0  primitives    sys.rs, spin.rs, stack.rs, error.rs, fpcheck.rs
//! ```
//!
//! Two sanctioned exceptions go up: the task floor calls the scheduler's
//! entry points (`worker::{current_task, Current, park_current, unpark}`),
//! and `Task` names the hub's type (`Shared`) in its back-pointer. Safe
//! functions that dereference a task take a `TaskRef` (validity argued once,
//! where it is made), and so do the run queues, which hand tasks out as
//! `TaskRef`s again (raw pointers stay inside the ring's slots, `runnext`
//! and the lists' links); the running task's machine and worker are reached
//! through the `worker::Current` guard, whose references borrow from it and
//! which `switch_to` consumes, so none is used after a switch.
//!
//! **Shutdown.** Dropping a [`Runtime`] stops each worker when it next
//! reaches its scheduler loop. So that every worker gets there: the drop
//! sends each busy worker a preemption request and marks it contended (its
//! quantum timer ticks until it stops: `Shared::preempt_for_shutdown`); a
//! task preempted or yielding after the shutdown began switches to the
//! scheduler loop, never to another task (`preempt_current`, `yield_raw`);
//! `blocking` run in place at shutdown yields after its closure; and a
//! collection or task dump run by a task ends with a cooperative point
//! (`worker::after_stop`: a task looping on them holds every stop itself,
//! with its quantum off, and the timer monitor sends nothing during a
//! stop). Only a loop in non-preemptible code that reaches no switch point
//! and no `checkpoint()` keeps its worker (and the drop waits for it).
//! Tasks that have not finished are abandoned:
//! their joiners get an error, their stacks are leaked, never unwound, and
//! the shared state stays alive for late wake-ups. Dropped from inside one
//! of its own tasks, a reaper thread does the same once the workers stopped.
//! Abandoned tasks, and parked tasks of a runtime whose shutdown has begun,
//! are skipped by wakers (`WaitQueue::pop_live`, `WaitNode::is_abandoned`):
//! a Mutex unlock or `notify_one` goes to a live waiter, a value sent
//! goes to a live receiver or the buffer (the `Receiver` may be shared; the
//! channel disconnects only when it is dropped), and the closures of tasks
//! that never started are dropped (releasing e.g. their `Sender`s). What an
//! abandoned task holds (a `MutexGuard`, a `Sender`, a `Receiver`) is never
//! released, since its stack is not unwound: see the `Runtime` docs.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The ISA's crate, as usurp-preempt chose it (its `archif.rs`: the one place).
use usurp_preempt::arch;

// The floors (see "Layers" above and DESIGN.md): a module imports only
// from its own floor or the floors below; `glue` is imported by nobody below.
// Floor 0: primitives.
mod error;
mod fpcheck;
mod spin;
mod stack;
mod sys;
// Floor 1: tasks (control block, parking and wait queues, task-locals).
mod tasks;
// Floor 2: queues, timers, the stop state.
mod queue;
mod stw;
mod timer;
// Floor 3: the shared hub, the sysmon, the worker split by job, the GC's
// per-task stack scan.
mod shared;
mod stack_scan;
mod sysmon;
mod worker;
// Floor 4: adapters to usurp-preempt and usurp-gc, dumps.
mod glue;
// Floor 5: the public API.
#[doc(hidden)]
pub mod hooks;
mod join;
mod panic_hook;
mod runtime;
pub mod sync;

pub use glue::dump::{Frame, TaskDump, TaskInfo, TaskState, WaitOn, DUMP_STOP_TIMEOUT, MAX_FRAMES};
pub use error::{
    Error, DEFAULT_QUANTUM, DEFAULT_TIMER_SPIN, MAX_BLOCKING_THREADS, MAX_QUANTUM, MAX_STACK_SIZE, MAX_TIMER_SPIN, MAX_WORKERS, MIN_QUANTUM,
    MIN_STACK_SIZE,
};
pub use join::{spawn, try_spawn, JoinHandle, TaskStats};
pub use tasks::local::{AccessError, LocalKey};
pub use runtime::{Runtime, RuntimeBuilder, RuntimeStats, DEFAULT_MAX_BLOCKING_THREADS, DEFAULT_STACK_SIZE};
/// The runtime's builder under its old name; the task builder is
/// [`task::Builder`].
#[deprecated(note = "renamed RuntimeBuilder (the task builder is task::Builder)")]
pub type Builder = RuntimeBuilder;
pub use stw::StwStats;
pub use sync::{channel, sync_channel, Condvar, Mutex, MutexGuard, Receiver, Sender, SyncSender};
pub use sys::TIMER_SLACK_NS;
pub use timer::sleep;

/// Task-related items: spawning with options, and the current task's identity.
pub mod task {
    pub use crate::join::{spawn, try_spawn, Builder, JoinHandle, TaskStats};
    pub use crate::timer::sleep;
    pub use crate::{blocking, yield_now};

    /// The id of the current task, or `None` outside a task.
    pub fn id() -> Option<u64> {
        let t = crate::worker::current_task();
        // SAFETY: the current task is valid while it runs.
        (!t.is_null()).then(|| unsafe { (*t).id.get() })
    }

    /// The current task's accounting (id, CPU time so far, exact to now),
    /// or `None` outside a task. Also inside a `blocking` closure.
    #[inline(never)]
    pub fn current() -> Option<TaskStats> {
        let t = crate::worker::current_task_ref()?;
        let id = t.id.get();
        let cpu = crate::worker::current_cpu_cycles(t);
        let cpu_time_on = t.shared().cpu_time;
        Some(TaskStats { id, cpu_time: crate::glue::dump::cycles_to_duration(cpu), cpu_time_on, finished: false })
    }

    /// A dump of every live task of the current task's runtime (see
    /// [`crate::Runtime::dump_tasks`]); the calling task appears as running.
    ///
    /// Called by the task that holds the world stopped
    /// (`Runtime::stop_the_world`), it dumps within that stop. Otherwise it
    /// is a switch point: after its stop it fires due timers and lets
    /// waiting tasks of its worker run (a task looping on dumps would
    /// starve them: its quantum is off during its own stops).
    ///
    /// # Panics
    /// If called outside a usurp task.
    #[inline(never)]
    pub fn dump() -> crate::TaskDump {
        let t = crate::worker::current_task();
        if t.is_null() {
            panic!("usurp::task::dump called outside a usurp task; use Runtime::dump_tasks from other threads");
        }
        // SAFETY: the current task is valid while it runs; its runtime
        // outlives it.
        let sh = unsafe { (*t).shared() };
        let d = crate::glue::dump::dump(sh, crate::DUMP_STOP_TIMEOUT);
        // A cooperative point after the stop (a task looping on dumps held
        // every stop itself; see `worker::after_stop`).
        crate::worker::after_stop();
        d
    }

    /// The name of the current task (set with [`Builder::name`]), if any.
    pub fn name() -> Option<String> {
        let t = crate::worker::current_task();
        if t.is_null() {
            return None;
        }
        // SAFETY: the current task is valid while it runs; only it changes
        // its name (never, after spawn).
        unsafe { (*(*t).name.get()).as_deref().map(str::to_owned) }
    }
}

/// Lets other tasks on this worker run; the current task continues after
/// them (at the back of the local queue). Returns at once if nothing else is
/// ready. Inside [`blocking`] it yields the OS thread instead.
///
/// # Panics
/// If called outside a usurp task.
// Never inlined: the scheduler's state must not be manipulated from inside a
// user's `preemptible!` function (see `preempt_glue.rs`).
#[inline(never)]
pub fn yield_now() {
    match worker::Current::get() {
        Some(c) => worker::yield_current(c),
        None if !worker::current_task().is_null() => std::thread::yield_now(),
        None => panic!("usurp::yield_now called outside a usurp task"),
    }
}

/// Runs `f`, which may block its OS thread (a system call, a C library, a
/// `std` lock), without stopping the other tasks of this worker: the worker
/// is handed to a spare thread (like Go's entersyscall/handoff) while this
/// thread runs `f` on the task's stack; afterwards the task is queued to run
/// again on any worker. If this worker holds tasks pinned to its thread
/// after an async preemption, the worker stays and the calling task moves
/// to a spare thread instead, which runs `f`. If no spare thread may be
/// started (`max_blocking_threads` reached), or outside a task, `f` simply
/// runs in place; then
/// the preemption signal is blocked on the thread while `f` runs (its system
/// calls see no EINTR from the runtime) and the task yields afterwards if
/// its quantum ran out meanwhile. A request already outstanding when
/// `blocking` is called (a stop, a refused quantum tick) is honoured first:
/// the task may yield (and move to another worker) before `f` runs.
///
/// `f` must not use the GC heap (allocate, or hold the only reference to an
/// object): the task counts as stopped while `f` runs, so a collection may
/// run meanwhile; only the frames of the caller up to the `blocking` call are
/// scanned (with its registers spilled), not `f`'s own frames.
///
/// Inside `f`, task operations that need a worker fall back to thread
/// behaviour (`yield_now` yields the thread, `sleep` sleeps it, blocking
/// channel and mutex operations block the thread). Panics in `f` propagate.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    // This generic shim may be inlined into a `preemptible!` function: it
    // only touches its own locals; the runtime work is in the non-generic,
    // never-inlined `blocking_dyn` (a preemption cannot split it).
    let mut f = Some(f);
    let mut out: Option<R> = None;
    worker::blocking_dyn(&mut || out = Some((f.take().expect("blocking closure runs once"))()));
    out.expect("blocking closure ran")
}

#[cfg(test)]
mod tests;
