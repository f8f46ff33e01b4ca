//! Wiring of asynchronous preemption (`usurp-preempt`) into the scheduler.
//!
//! * **Once per process** ([`init_hooks`]): the park hook (an async-preempted
//!   task parks pinned to its worker: [`crate::hooks::park_current_and_reschedule`])
//!   and the yield hook that `checkpoint()` calls ([`crate::yield_now`]).
//! * **One [`WorkerSlot`] per OS thread that drives workers** (worker threads
//!   and spare threads that take over a worker during `blocking`): each
//!   runtime thread registers a slot when it starts ([`ThreadInit`]) and
//!   unregisters it before it exits. Slots must be `'static` and the preempt
//!   crate keeps a process-wide table of at most `usurp_preempt::MAX_WORKERS`
//!   of them, so slots are leaked once and recycled through a pool.
//! * The thread driving a worker publishes its slot in `Worker::slot`; the
//!   switch path calls `switch_out` (saving the outgoing task's no-preempt
//!   depth in `Task::preempt_state`) and `switch_in` (the incoming task's
//!   stack bounds and depth) right before `arch::switch`, in the one function
//!   every task switch goes through (`worker::switch_to`) and in the scheduler
//!   loop. No system call there (`switch_in` reads the vDSO clock).
//! * `set_idle(true/false)` around idle sleeps, stop-the-world parking and
//!   `blocking` (no timer signals to a thread that runs no task).
//!
//! **Why the runtime's own code needs no `no_preempt`**: the safe-point check
//! refuses any PC outside registered preemptible code, and the scheduler is
//! compiled into ordinary `.text`. The risk is *inlining*: generic or
//! `#[inline]` runtime code inlined into a user's `preemptible!` function
//! lands in the preemptible section. The scheduler's worker-state
//! manipulations (queues, `runnext`, switch) live in non-generic,
//! non-`#[inline]` functions (`yield_now`, `park_current`, `make_runnable`,
//! `switch_to`'s callers), which are not inlined across crates (no LTO; and
//! `yield_now` is `#[inline(never)]`); the generic parts that can be inlined
//! (channels, mutexes) only touch their own state under spin locks, and
//! every spin-lock guard holds a `NoPreempt`, so no task is ever parked by a
//! preemption while holding one (others could spin on it forever).
//!
//! **EINTR**: preemption signals use `SA_RESTART`, and targeted requests can
//! interrupt a thread blocked in the kernel. The scheduler's futex waits are
//! loops that re-check their condition (a return on EINTR is a spurious
//! wakeup); `sleep` in a task parks on the timer heap, not in `nanosleep`.

use crate::runtime::Shared;
use std::sync::{Mutex, Once};
use std::time::Duration;
use usurp_preempt::WorkerSlot;

/// Smallest quantum accepted by the builder.
pub const MIN_QUANTUM: Duration = Duration::from_micros(100);
/// Largest quantum accepted by the builder.
pub const MAX_QUANTUM: Duration = Duration::from_secs(10);
/// Default quantum (as Go).
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(10);

static HOOKS: Once = Once::new();

/// Installs the park and yield hooks (once per process).
pub(crate) fn init_hooks() {
    HOOKS.call_once(|| {
        usurp_preempt::set_park_hook(park_hook);
        usurp_preempt::set_yield_hook(yield_hook);
    });
}

/// Called by the spill routine, on the preempted task's stack, with every
/// register saved below.
unsafe fn park_hook(frame: *mut usurp_preempt::SpillFrame) {
    let obs = OBSERVER.load(std::sync::atomic::Ordering::Acquire);
    if !obs.is_null() {
        // SAFETY: only `fn(&SpillFrame)` pointers are stored; the frame was
        // built by the spill routine on this stack and is valid for the call.
        unsafe {
            let f: fn(&usurp_preempt::SpillFrame) = std::mem::transmute(obs);
            f(&*frame);
        }
    }
    crate::hooks::park_current_and_reschedule();
}

static OBSERVER: std::sync::atomic::AtomicPtr<()> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Installs (or with `None` removes) a function called with the spill frame
/// of every accepted async preemption, before the task parks (tests and
/// profilers: e.g. walking the frame-pointer chain of the preempted task).
pub(crate) fn set_preempt_observer(f: Option<fn(&usurp_preempt::SpillFrame)>) {
    let p = f.map_or(std::ptr::null_mut(), |f| f as *mut ());
    OBSERVER.store(p, std::sync::atomic::Ordering::Release);
}

fn yield_hook() {
    if !crate::worker::current_task().is_null() {
        crate::yield_now();
    }
}

static POOL: Mutex<Vec<&'static WorkerSlot>> = Mutex::new(Vec::new());

fn take_slot() -> &'static WorkerSlot {
    if let Some(s) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return s;
    }
    Box::leak(Box::new(WorkerSlot::new()))
}

/// Per-thread integration state of a runtime thread: its registered
/// preemption slot and its GC mutator. Dropped on the thread before it exits.
pub(crate) struct ThreadInit {
    slot: Option<&'static WorkerSlot>,
    _mutator: Option<usurp_gc::MutatorGuard>,
}

impl ThreadInit {
    /// Registers a slot (if the runtime uses async preemption) and attaches
    /// the thread to the runtime's heap.
    pub(crate) fn new(sh: &Shared) -> ThreadInit {
        let mut slot = None;
        if sh.preempt.enabled {
            let s = take_slot();
            match usurp_preempt::register_worker(s, sh.preempt.quantum) {
                Ok(()) => slot = Some(s),
                Err(e) => {
                    // The runtime still works cooperatively; say why once.
                    POOL.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                    let mut b = crate::sys::RawBuf::<256>::new();
                    b.push(b"usurp: async preemption unavailable on a worker thread: ");
                    b.push(e.to_string().as_bytes()).push(b"\n");
                    crate::sys::write_stderr(b.as_bytes());
                }
            }
        }
        let mutator = crate::gc_world::attach_thread(sh);
        ThreadInit { slot, _mutator: mutator }
    }
}

impl Drop for ThreadInit {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            let _ = s.set_idle(true);
            if usurp_preempt::unregister_worker().is_ok() {
                POOL.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }
    }
}

/// Per-runtime preemption settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreemptConfig {
    pub(crate) enabled: bool,
    pub(crate) quantum: Duration,
}

/// The calling thread's registered slot (null if none).
#[inline(never)]
pub(crate) fn thread_slot() -> *mut WorkerSlot {
    usurp_preempt::current_worker().map_or(std::ptr::null_mut(), |s| s as *const WorkerSlot as *mut WorkerSlot)
}
