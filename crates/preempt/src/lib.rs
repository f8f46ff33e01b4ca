//! # usurp-preempt: asynchronous preemption
//!
//! A task stuck in a loop that never calls into the runtime must not starve
//! the other tasks of its worker nor hold up a stop-the-world. Cooperative
//! yields cannot guarantee that, so usurp, like Go since 1.14, interrupts the
//! worker thread with a signal and, when the interrupted instruction is a
//! safe point, makes the thread leave the signal handler into a routine that
//! saves the task's whole register state on its own stack and parks it.
//!
//! ## Who sends signals
//!
//! * **Quantum ticks.** Every worker has a POSIX timer (`timer_create` with
//!   `SIGEV_THREAD_ID`, so the signal lands on that worker and not on an
//!   arbitrary thread as with `setitimer`), armed while the worker runs tasks
//!   and another task waits for it, disarmed while it is idle or blocked
//!   ([`WorkerSlot::set_idle`]: at once) or while no other task waits for it
//!   ([`WorkerSlot::set_contended`]: lazily, at its next tick, which then
//!   attempts nothing); a system call only on those transitions. On every switch into a task the
//!   scheduler calls `switch_in`, which bumps a per-worker switch counter
//!   (no clock read: a vDSO `clock_gettime` costs as much as a whole task
//!   switch). The timer is one-shot. When it fires, the handler checks — as
//!   Go's sysmon does with `schedtick`, but without a periodic scan — whether
//!   the counter moved since its last look: if so, the running task's
//!   quantum starts now and the timer is re-armed one quantum later;
//!   otherwise the task has run a whole quantum and the handler tries to
//!   preempt it. After an accepted preemption the handler knows the next
//!   task switches in at once (two switches: out and in) and starts its
//!   quantum right away, so tight loops rotate exactly every quantum; a task
//!   that switched in cooperatively gets between one and two quanta. A
//!   worker takes about one signal per quantum. A refused attempt is retried
//!   a whole quantum later, then with a doubling delay up to one quantum or
//!   1 ms, whichever is longer, while the same task keeps being refused (the
//!   refusal set the checkpoint flag already: re-signalling a task stuck in
//!   non-preemptible code only burns CPU); a task known to be cooperative
//!   (it last left its worker at a [`checkpoint`] yield that a refusal asked
//!   for, [`TaskPreemptState::is_cooperative`]) is retried straight at that
//!   cap. That yield reads the clock and re-arms the timer for the end of
//!   the next task's quantum, which starts there (the next tick sees the two
//!   switches and takes the yield's time as the quantum's start): a
//!   cooperative quantum costs one signal, the refused one;
//!   [`PreemptStats::yields_after_refusal`] counts the cooperative yields at
//!   [`checkpoint`] such refusals caused.
//! * **Targeted requests** ([`request_preempt`], for stop-the-world): the
//!   sender sets the worker's `pending` flag with a CAS 0→1 and only then
//!   sends the signal with `rt_tgsigqueueinfo`, carrying `SI_QUEUE`, our pid
//!   and the slot's address; the handler clears the flag and bumps an
//!   acknowledgement counter whether it accepted or refused. At most one
//!   request signal is in flight per worker, and the sender can wait for the
//!   ack instead of resending in a loop (Go issue 37741 livelocked without
//!   this). Standard signals do not queue: a request arriving while a tick of
//!   the same signal is still pending is merged into it, so every one of our
//!   deliveries (tick or request) consumes a pending request; a request
//!   signal that arrives after a tick already served it is recognised by its
//!   payload and dropped.
//!
//! ## Telling our signals from others'
//!
//! The preemption signal (SIGURG by default, [`set_signal`] before [`init`])
//! is installed with `sigaction(SA_SIGINFO | SA_ONSTACK | SA_RESTART)` and a
//! full mask, keeping the previous action. A delivery is ours if it is
//! `SI_TIMER` carrying the current worker's slot pointer as its `sigval`, or
//! `SI_QUEUE` from our own pid carrying it (a request), or either carrying the
//! address of another of our slots (a late signal for a worker that has
//! unregistered: dropped). Everything else (a `kill -URG` from outside, the
//! host's own `pthread_kill`/`raise`, which are `SI_TKILL`) is passed to the
//! previous action as the kernel would have delivered it: with that action's
//! own `sa_mask` and flags (`SA_NODEFER`, `SA_RESETHAND`), or its default
//! action (see `signal.rs`, `chain`: a stop signal stops the process and
//! leaves our handler installed).
//! The handler saves and restores errno, allocates nothing, takes no lock and
//! cannot panic. It runs on a per-worker alternate signal stack sized from
//! `AT_MINSIGSTKSZ` plus headroom and pre-faulted.
//!
//! ## The safe-point check (in the handler)
//!
//! Refused, and counted per reason ([`Refusal`], [`stats`]), when: the worker
//! is not running a task; the task is in a [`no_preempt`] section; async
//! preemption is off (`USURP_DEBUG=asyncpreemptoff=1`, for debuggers that
//! stop on every signal); the PC is outside registered preemptible code (the
//! `usurp_preemptible` linker section filled by [`preemptible!`], and JIT
//! regions from [`register_code`]) — so never inside libc, the vDSO, the
//! allocator or the runtime itself; the PC is inside an unsafe range
//! ([`register_unsafe_range`], e.g. the GC's write barrier) unless that range
//! is restartable, in which case the PC is backed up to its start; the arch
//! classifier (iced-x86 on x86-64) sees a half-built or torn-down frame, a
//! system call or undecodable bytes; the task's stack lacks room below SP
//! for the red zone, the spill frame and the park path; the handler is not
//! running on an alternate signal stack (its ucontext lies on the task's
//! stack, where the injection writes); a user shadow stack is active (x86-64
//! CET SHSTK, aarch64 GCS); or, on aarch64, register state the spill frame
//! cannot carry is live (SME streaming mode, ZA/ZT0). A refused attempt
//! also sets the worker's checkpoint flag, so cooperative code polling
//! [`checkpoint`] yields soon; the next tick tries again.
//!
//! ## Redirect, spill, park
//!
//! When the check passes, the handler rewrites the ucontext (`inject_spill`)
//! so that returning from the signal "calls" the arch spill routine, skipping
//! the x86-64 red zone. The routine saves all GPRs, flags and the full XSAVE
//! state, links a frame record into the frame-pointer chain, and calls our
//! spill hook, which calls the scheduler's park hook ([`set_park_hook`]) with
//! the [`SpillFrame`]. The scheduler switches away; when it resumes the task
//! (on the same OS thread if its registers may hold addresses derived from
//! thread-local storage: the scheduler asks the per-function table,
//! [`fn_table`], which `preemptible!` records and this crate decodes once),
//! the hook returns and the routine restores every register and returns to
//! the interrupted PC with SP exactly as before.
//!
//! ## What the scheduler does
//!
//! * Once: [`set_park_hook`] (and [`set_yield_hook`] for [`checkpoint`]);
//!   optionally [`set_signal`] before anything else.
//! * On each worker thread at start: [`register_worker`] with a `'static`
//!   [`WorkerSlot`] and the quantum (installs the handler on first use, the
//!   alternate signal stack and the timer); [`unregister_worker`] before the
//!   thread exits.
//! * `slot.set_idle(false)` when the worker starts running tasks,
//!   `set_idle(true)` before it sleeps or blocks in a system call (no signals
//!   then; it also clears an outstanding checkpoint request, which would
//!   otherwise keep every poll in the process on its slow path: see
//!   [`WorkerSlot::set_idle`] and [`WorkerSlot::withdraw_request`]). Targeted requests can still interrupt a blocked worker: system
//!   calls that SA_RESTART does not restart (epoll_wait, nanosleep, …) return
//!   EINTR and must be retried.
//! * "Tick only when someone waits" (a slot starts contended, i.e. ticking
//!   whenever the worker is busy, until the scheduler says otherwise):
//!   `slot.set_contended(work_waits)` each time the worker picks its next
//!   task, and `set_contended(true)` on the running workers from whoever
//!   makes a task runnable while no worker is idle (spawn, wake, timer
//!   expiry). `false` makes no system call; the next tick finds it, attempts
//!   nothing and leaves the timer disarmed, so an uncontended busy worker
//!   takes at most one more signal: when loops equal workers no signal is
//!   sent at all. See [`WorkerSlot::set_contended`] (and the fence the
//!   clearing side needs). usurp-sched wires it (`worker.rs`,
//!   `update_contention`).
//! * Right before switching into a task: `slot.switch_in(stack_lo,
//!   stack_hi, saved_state)` (`stack_lo` = lowest usable byte above the
//!   guard). Right after switching back out of it: `let saved_state =
//!   slot.switch_out()`, kept in the task.
//! * The park hook runs on the preempted task's stack with the
//!   [`SpillFrame`]: it records that the task was preempted asynchronously
//!   (it must later be resumed on this same OS thread if the interrupted
//!   function, or a preemptible caller, touches thread-locals:
//!   [`fn_table`]`().lookup(pc)`), switches to the
//!   worker's scheduler context with the arch `switch`, and returns when
//!   resumed. While the task is parked, a conservative scan of its stack
//!   from the SP saved by that `switch` up to its top covers the spill frame,
//!   the saved registers (also `SpillFrame::saved_range`) and the red zone.
//! * Stop-the-world: [`request_preempt`] on each worker running a task, then
//!   wait for `slot.acks()` to advance and for the task to switch out. A
//!   refused request sets the worker's checkpoint flag; it is not retried by
//!   itself (the worker's timer, if armed, retries with the refused-tick
//!   backoff: a quantum, then longer): send another request once the
//!   previous one was acknowledged.
#![deny(unsafe_op_in_unsafe_fn)]

mod archif;
mod error;
mod fntable;
mod guard;
mod registry;
mod rustflags;
mod signal;
mod slot;
mod stats;

/// The arch crate of this target (`usurp-arch-x86_64` or
/// `usurp-arch-aarch64`), chosen in one place (`archif.rs`) for the whole
/// workspace: the scheduler, the collector, the stress binary and the tests
/// reach the ISA through it. Internal wiring, not an embedder's API.
#[doc(hidden)]
pub use archif::arch;
/// Whether the first runtime's start-up printed the warning about missing
/// frame-pointer flags (`rustflags`): the scheduler's own check of the
/// compiled code (`usurp_sched`'s `fpcheck`) then stays silent, so that a
/// build without the flags prints one warning, not two. Internal wiring.
#[doc(hidden)]
pub fn build_flags_warned() -> bool {
    rustflags::warning().is_some()
}
// The API for code that runs in tasks and for JIT compilers: safe points,
// code registration, the signal's identity, counters.
pub use archif::SpillFrame;
pub use error::Error;
#[doc(hidden)]
pub use fntable::FnStart;
pub use fntable::{fn_table, preemptible_fn_starts, FnInfo, FnTable, PREEMPTIBLE_FN_SECTION};
pub use guard::{checkpoint, no_preempt, NoPreempt};
#[doc(hidden)]
pub use guard::NoPreemptNoSwitch;
pub use registry::{
    pc_status, preemptible_code, register_code, register_unsafe_range, CodeHandle, PcStatus, RangeHandle, MAX_CODE_REGIONS,
    MAX_UNSAFE_RANGES, PREEMPTIBLE_SECTION,
};
pub use signal::{
    async_preempt_off, chained_signals, min_task_stack, preempt_stack_needed, set_signal, signal, TASK_FRAMES_HEADROOM,
};
pub use stats::{PreemptStats, Refusal};

/// The interface a scheduler drives (worker slots, the park and yield hooks,
/// targeted requests) and, with the `test-hooks` feature only, test-only
/// switches: **not part of the API** (no stability promise; `usurp` does
/// not re-export it). `usurp-sched` is its user; see the crate
/// documentation for the contract.
#[doc(hidden)]
pub mod internals {
    pub use crate::fntable::fn_table_if_built;
    pub use crate::guard::{any_checkpoint_request, checkpoint_requested, set_yield_hook};
    pub use crate::signal::{
        cached_pid, init, mark_request_pending, post_checkpoint_request, request_preempt, request_siginfo, set_park_hook,
    };
    // Test-only switches (negative controls, simulated hardware): compiled
    // only with the `test-hooks` feature (the test suites' dev-dependencies).
    #[cfg(feature = "test-hooks")]
    pub use crate::archif::fake_shadow_stack_for_tests;
    #[cfg(feature = "test-hooks")]
    pub use crate::signal::{
        disable_refusal_backoff_for_tests, old_refusal_retry_for_tests, set_preempt_window_for_tests,
        simulate_larger_spill_frame_for_tests,
    };
    pub use crate::slot::{
        altstack_size, current_worker, register_worker, register_worker_cooperative, unregister_worker,
        TaskPreemptState, WorkerSlot,
        MAX_WORKERS as MAX_WORKER_SLOTS, MIN_QUANTUM as MIN_SLOT_QUANTUM,
    };
}
// The same wiring at the crate root, hidden, for this crate's own tests and
// benchmarks (being reorganised in parallel; new code uses `internals`).
#[doc(hidden)]
pub use internals::{
    altstack_size, cached_pid, checkpoint_requested, current_worker, init, mark_request_pending, register_worker,
    register_worker_cooperative, request_preempt, request_siginfo, set_park_hook, set_yield_hook, unregister_worker,
    TaskPreemptState, WorkerSlot,
};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use internals::{
    disable_refusal_backoff_for_tests, fake_shadow_stack_for_tests, old_refusal_retry_for_tests,
    set_preempt_window_for_tests, simulate_larger_spill_frame_for_tests,
};

/// Counters summed over every worker slot ever registered.
pub fn stats() -> PreemptStats {
    let mut s = PreemptStats::default();
    for w in slot::all_slots() {
        s.add(&w.stats());
    }
    s
}

/// Per-worker counters, in registration order: (kernel tid, counters).
pub fn worker_stats() -> Vec<(i32, PreemptStats)> {
    slot::all_slots().map(|w| (w.tid(), w.stats())).collect()
}
