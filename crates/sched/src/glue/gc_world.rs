//! The GC's [`World`] for a runtime: stop-the-world, conservative roots,
//! parallel marking and finalizers, in terms of tasks and workers.
//!
//! **Conservative ranges.** With the world stopped, every task except the
//! caller is suspended, and its stack from its saved SP up to its top holds
//! everything it may keep in registers:
//! * *cooperatively switched* tasks: `arch::switch` pushed the callee-saved
//!   registers (x86-64: rbx, rbp, r12–r15; aarch64: x19–x29, lr, d8–d15)
//!   on the task's stack before saving SP; caller-saved registers are dead
//!   at a call by the ABI;
//! * *async-preempted* tasks: the spill routine saved every GPR, the flags and
//!   the vector state (XSAVE area / q0–q31) in a `SpillFrame` on the task's
//!   stack below the interrupted SP (x86-64: also below the 128-byte red
//!   zone, which the range covers too), then the park path switched away
//!   with `arch::switch` further down; the saved SP is below all of it;
//! * tasks *inside `blocking`* (or in the GC's `World::blocking`): the SP
//!   recorded is the one `arch::with_registers_spilled` returned after pushing
//!   the callee-saved registers (see `worker::blocking_dyn` and
//!   `stw::safe_region`); the closure's own frames below it are not scanned
//!   (it must not hold the only reference to a heap object, as documented on
//!   `blocking`).
//!
//! The range is `[saved_sp - arch::RED_ZONE, stack_hi)` (RED_ZONE = 128 on
//! x86-64, 0 on aarch64), clipped to the stack's mapping.
//!
//! **In a concurrent cycle the stacks are not reported in the stop**
//! (`begin_concurrent_stack_scan`, issue 9 item 2): each task's range is
//! scanned once after the start stop, by the collector
//! (`scan_task_stacks`) or by whoever resumes the task first, under a
//! per-task claim; see `stack_scan.rs`. The stop-the-world mark (and any
//! other stop) still gets them from `for_each_conservative_range`. Worker threads'
//! own stacks (their scheduler loops) are not scanned: they run no code that
//! holds heap pointers (marking jobs get their work from the GC's queues).
//! The caller's own stack is scanned by the GC from
//! [`World::current_stack_bounds`].
//!
//! **Rust heap memory the runtime owns** (`heap_roots.rs`). Besides the
//! stacks, the ranges reported are: the closure of every task that has not
//! started yet (its captured values; from `spawn` until the task takes the
//! closure onto its own stack), every join result (or panic payload) not
//! yet joined, and the values buffered in every channel (`usurp::channel`,
//! `sync_channel`) not yet received. A concurrent cycle's start stop
//! leaves the channel buffers out: the collector walks them with the world
//! running (`for_each_deferred_range`, `heap_roots::for_each_deferred`),
//! while receives on tasks shade what they take out; and it leaves out the
//! spawn closures, which are scanned with their tasks' stacks
//! (`stack_scan::closure_of`): such a stop visits no task at all. Only the values' own bytes are
//! reported, not memory they own (a `Vec<GcRef>` sent, returned or
//! captured is not scanned element by element).
//!
//! **Not reported** (an object referenced only from there is not kept
//! alive; use a `Root` or a root scanner): task-locals (`task_local!`: a
//! task inside `blocking` may change its map on another thread while the
//! world is stopped, so the map cannot be read safely in the pause),
//! `static`s and thread-locals, any other Rust heap memory (the user's own
//! `Vec`, `Box`, `std::sync::mpsc` queues, ...), the frames of a closure
//! given to `blocking`, and the stacks of OS threads that are not running a
//! task (e.g. a thread in `Runtime::block_on`). Finalizer closures are
//! scanned by the GC itself.
//!
//! **Parallel marking** runs on the parked workers and `workers - 1` marker
//! threads owned by the runtime (see `stw::run_parallel`, `stw::start_markers`).
//!
//! **Finalizers**: `finalizers_pending` spawns a task that runs
//! `Heap::run_pending_finalizers`.

use crate::shared::Shared;
use std::cell::Cell;
use std::sync::Weak;
use usurp_gc::World;

thread_local! {
    /// The runtime whose thread is attaching right now (see [`attach_thread`]).
    static ATTACHING: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// Attaches the calling runtime thread (a worker or spare thread of `sh`,
/// which stop-the-world stops and whose tasks' stacks it scans) to the
/// runtime's heap. Every other thread is refused by `may_attach`.
pub(crate) fn attach_thread(sh: &Shared) -> Option<usurp_gc::MutatorGuard> {
    ATTACHING.with(|c| c.set(sh));
    let g = sh.heap.attach_thread().ok();
    ATTACHING.with(|c| c.set(std::ptr::null()));
    g
}

pub(crate) struct RuntimeWorld {
    pub(crate) shared: Weak<Shared>,
    /// Spawns the finalizer task (`runtime::spawn_finalizers`; a hook, so
    /// that this adapter does not import the public API).
    pub(crate) spawn_finalizers: fn(&Shared),
}

impl RuntimeWorld {
    fn with<R>(&self, f: impl FnOnce(&Shared) -> R) -> Option<R> {
        self.shared.upgrade().map(|sh| f(&sh))
    }
}

// SAFETY: stop_the_world (stw.rs) returns when every task of the runtime is
// parked at a safe point (switched out, preempted in preemptible code, or
// inside blocking() with its mutator taken away by forbid_allocation) and
// never waits for the caller; for_each_conservative_range reports every
// parked task's stack from its saved SP (minus the red zone) to its top,
// which holds its saved registers, plus the runtime's spawn closures, join
// results and channel buffers, all readable and unwritten while stopped;
// current_stack_bounds is the running task's stack (or the OS thread's);
// blocking() is stw::safe_region (the caller's frames are scanned, it waits
// out a stop before returning); run_parallel runs each index once and
// returns when all finished; may_attach admits only the runtime's own
// threads, which stop_the_world stops. single_thread() is false.
// begin_concurrent_stack_scan / scan_task_stacks (stack_scan.rs): a new
// epoch in the start stop makes every task unscanned; every way a task gets
// back onto a CPU (switch_to, the scheduler loop, leaving blocking) claims
// and scans it first unless scanned, so no running task is unscanned; the
// collector claims (CAS) the others, which then cannot resume until their
// scan is done; scan_task_stacks says true only when no live task is
// unscanned or being scanned; new tasks start scanned, and values moved
// through runtime memory (channel sends, spawn closures, join results) are
// shaded while a heap marks. for_each_deferred_range: the buffers the
// same cycle's start stop left out (`stack_scan::defer_buffers`), walked
// under the registry and channel locks a chunk at a time; a receive on a
// task shades what it takes out of a buffer while a heap marks, under the
// channel's lock (before any safe point), and values never move inside a
// buffer but from its front, which `State::popped` counts.
// background_collection: stop_the_world works from a thread that is no
// worker (it stops every worker, the caller holding none), the ranges are
// every parked task's whatever thread asks, and safe_region runs the closure
// in place on a thread without a worker and waits out a stop.
unsafe impl World for RuntimeWorld {
    fn stop_the_world(&self) {
        // Marked as the collector's stop: a root scanner cannot end it.
        self.with(crate::stw::stop_for_collection);
    }

    fn start_the_world(&self) {
        if let Some(sh) = self.shared.upgrade() {
            if crate::stw::start_after_collection(&sh) {
                // The runtime was dropped inside the pause (by a root
                // scanner): its shutdown begins now, finished by a reaper
                // thread as for a drop from one of its own tasks.
                sh.shutdown_detached();
            }
        }
    }

    fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize)) {
        self.with(|sh| {
            // SAFETY: called by the GC with the world stopped.
            unsafe {
                // (Omitted when this stop's cycle scans them one task at a
                // time afterwards: `stack_scan.rs`.)
                // (Not even visited then: a walk over every task made the
                // start stop O(tasks), 0.2 ms with 30k parked ones.)
                let omit = crate::stack_scan::omit_stacks_now(sh);
                if !omit {
                    sh.for_each_task_stack(&mut |sp, lo, hi| {
                        if lo <= sp && sp <= hi {
                            let from = sp.saturating_sub(crate::arch::RED_ZONE).max(lo);
                            if from < hi {
                                f(from, hi);
                            }
                        }
                    });
                }
                // GC values the runtime holds in Rust heap memory (see
                // `heap_roots.rs`): join results not yet joined, blocked
                // senders' offers, select storage; and, unless this cycle
                // scans them later, the closures of tasks not started yet
                // (with their stacks, `stack_scan::closure_of`) and the
                // values buffered in channels (with the world running,
                // `for_each_deferred_range`).
                let later = crate::stack_scan::defer_buffers(sh, omit);
                if !later {
                    crate::glue::heap_roots::for_each_spawn_closure(sh, &mut *f);
                }
                crate::glue::heap_roots::for_each_registered(&mut *f, later);
            }
        });
    }

    fn last_stop_holdup(&self) -> Option<String> {
        self.with(crate::stw::last_stop_holdup).flatten()
    }

    fn run_parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        match self.shared.upgrade() {
            Some(sh) => crate::stw::run_parallel(&sh, n, f),
            None => (0..n).for_each(f),
        }
    }

    fn parallelism(&self) -> usize {
        self.with(|sh| sh.workers.len()).unwrap_or(1)
    }

    fn current_stack_bounds(&self) -> (usize, usize) {
        let t = crate::worker::current_task();
        if t.is_null() {
            return usurp_gc::internals::os_thread_stack_bounds();
        }
        // SAFETY: the current task is valid while it runs.
        unsafe { ((*t).stack.lo(), (*t).stack.hi()) }
    }

    fn blocking(&self, f: &mut dyn FnMut()) {
        match self.shared.upgrade() {
            Some(sh) => crate::stw::safe_region(&sh, f),
            None => f(),
        }
    }

    fn may_attach(&self) -> Result<(), &'static str> {
        if ATTACHING.with(|c| std::ptr::eq(c.get(), self.shared.as_ptr())) {
            Ok(())
        } else {
            Err("only the runtime's own threads allocate in its heap (they are stopped and scanned for every \
                 collection); allocate from a task (Runtime::spawn, Runtime::block_on) instead")
        }
    }

    fn background_collection(&self) -> bool {
        true
    }

    fn background_marking(&self, on: bool) {
        // A worker stands aside while the collector marks (`worker/stand_aside.rs`).
        let _ = self.with(|sh| if on { crate::worker::stand_aside_begin(sh) } else { crate::worker::stand_aside_end(sh) });
    }

    fn caller_holds_stop(&self) -> bool {
        self.shared.upgrade().is_some_and(|sh| crate::stw::caller_is_stopper(&sh))
    }

    fn begin_concurrent_stack_scan(&self) -> bool {
        self.with(crate::stack_scan::begin).unwrap_or(false)
    }

    fn for_each_deferred_range(&self, f: &mut dyn FnMut(usize, usize)) {
        if self.with(crate::stack_scan::take_deferred_buffers) == Some(true) {
            crate::glue::heap_roots::for_each_deferred(f);
        }
    }

    fn scan_task_stacks(&self, scan: &mut dyn FnMut(usize, usize)) -> bool {
        self.with(|sh| crate::stack_scan::scan_task_stacks(sh, scan)).unwrap_or(true)
    }

    fn finalizers_pending(&self) {
        self.with(|sh| (self.spawn_finalizers)(sh));
    }

    fn after_collect(&self) {
        // From a task of this runtime: honour a request, fire due timers,
        // let waiting tasks run, stop at shutdown (`worker::after_stop`).
        let t = crate::worker::current_task();
        // SAFETY: the current task is valid while it runs.
        if !t.is_null() && std::ptr::eq(unsafe { (*t).shared() }, self.shared.as_ptr()) {
            crate::worker::after_stop();
        }
    }
}
