//! Wiring of asynchronous preemption (`usurp-preempt`) into the scheduler.
//!
//! * **Once per process** ([`init_hooks`]): the park hook (an async-preempted
//!   task parks on its worker, pinned to it only if the interrupted
//!   `preemptible!` function or a preemptible caller may hold a thread-local
//!   address: [`must_pin`], from the per-function table usurp-preempt
//!   decodes once, `usurp_preempt::fn_table`) and the yield hook that
//!   `checkpoint()` calls ([`crate::yield_now`]).
//! * **One `WorkerSlot` per OS thread that drives workers** (worker threads
//!   and spare threads that take over a worker during `blocking`): each
//!   runtime thread registers a slot when it starts (`worker::thread::ThreadInit`) and
//!   unregisters it before it exits. Slots must be `'static` and the preempt
//!   crate keeps a process-wide table of at most `usurp_preempt::MAX_WORKERS`
//!   of them, so slots are leaked once and recycled through a pool.
//! * The thread driving a worker publishes its slot in `Worker::slot`; the
//!   switch path calls `switch_out` (saving the outgoing task's no-preempt
//!   depth in `Task::preempt_state`) and `switch_in` (the incoming task's
//!   stack bounds and depth) right before `arch::switch`, in the one function
//!   every task switch goes through (`worker::switch_to`) and in the scheduler
//!   loop. No system call and no clock read there (`switch_in` only counts
//!   the switch; the switch path stamps `arch::cycles()`, rdtsc / cntvct_el0,
//!   for per-task CPU time).
//! * `set_idle(true/false)` around idle sleeps, stop-the-world parking and
//!   `blocking` (no timer signals to a thread that runs no task); `blocking`
//!   run in place keeps the timer but blocks the signal while its closure
//!   runs (`worker::thread::MaskPreemptSignal`: no EINTR storms in its system calls).
//! * `set_contended` ("tick only when someone waits", issue 12): the
//!   scheduler loop sets it from whether work waits for the worker each time
//!   it picks a task, direct switches and wakers only raise it (see
//!   `worker/policy.rs`, `Worker::update_contention`): a busy worker whose task
//!   nobody waits for takes no timer signal.
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

use std::sync::Once;


static HOOKS: Once = Once::new();

/// Test-only switch (negative controls): 0 decide per function (the
/// default), 1 pin every async-preempted task (as before preempted loops
/// could migrate), 2 never pin, 3 decide by the whole section (the rule
/// before functions were told apart: one TLS-touching function pins every
/// task preempted anywhere in the section), 4 decide by the interrupted
/// function alone (its preemptible callers ignored).
#[doc(hidden)]
pub(crate) static PIN_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub(crate) const PIN_BY_SECTION: u8 = 3;
pub(crate) const PIN_WITHOUT_CALLERS: u8 = 4;

/// Whether the `preemptible!` section touches TLS anywhere (tests); `None`
/// before the first runtime decoded it.
pub(crate) fn section_tls_known() -> Option<bool> {
    usurp_preempt::internals::fn_table_if_built().map(|t| t.section_touches_tls())
}

/// Whether the `preemptible!` function holding `pc` touches TLS (tests);
/// `None` if unknown or not decoded yet.
pub(crate) fn function_tls_known(pc: usize) -> Option<bool> {
    usurp_preempt::internals::fn_table_if_built()?.lookup(pc).map(|f| f.touches_tls)
}

/// Whether code at `pc` may hold a thread-local address: per function of
/// the `preemptible!` section (decoded once, `usurp_preempt::fn_table`);
/// unknown code (JIT regions, the section outside the main executable, its
/// unrecorded head, a table not built) counts as touching TLS.
fn code_may_hold_tls(table: Option<&usurp_preempt::FnTable>, pc: usize) -> bool {
    match table.and_then(|t| t.lookup(pc)) {
        Some(f) => f.touches_tls,
        None => true,
    }
}

/// Whether this build links frame records (`fpcheck`), so that `must_pin`
/// can find the preemptible callers of the interrupted function. Written
/// once by `init_hooks`; without it the whole section's answer is used.
static FP_CHAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How many frame records `must_pin` follows above the interrupted one.
const MAX_CALLER_FRAMES: usize = 64;

/// Whether a task async-preempted at `pc` must resume on the same OS thread
/// (issue 11, "preempted loops migrate"): code that may hold a thread-local
/// address in a register must not migrate. Decided per function: the
/// interrupted one, and every `preemptible!` (or JIT) caller on the
/// frame-pointer chain from `fp` (the interrupted FP), since a caller may
/// keep a TLS address in a callee-saved register or its frame across the
/// call (LLVM treats the thread pointer as fixed within a function). Callers
/// in ordinary code are not examined: for them a call into preemptible code
/// is a switch point like `yield_now`, across which no thread-local
/// reference may be held (README). A build without frame records (see
/// `fpcheck`) cannot find the callers: then the whole section's answer
/// decides, as before functions were told apart. `[lo, hi)` bounds the
/// task's stack; the walk reads only 8-byte-aligned records inside it,
/// going up. No lock, no allocation (park path).
pub(crate) fn must_pin(pc: usize, fp: usize, lo: usize, hi: usize) -> bool {
    let policy = PIN_POLICY.load(std::sync::atomic::Ordering::Relaxed);
    match policy {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let table = usurp_preempt::internals::fn_table_if_built();
    let (s, e) = usurp_preempt::preemptible_code();
    if pc < s || pc >= e {
        return true; // JIT code
    }
    if policy == PIN_BY_SECTION || !FP_CHAIN.load(std::sync::atomic::Ordering::Relaxed) {
        return table.map_or(true, |t| t.section_touches_tls());
    }
    if code_may_hold_tls(table, pc) {
        return true;
    }
    if policy == PIN_WITHOUT_CALLERS {
        return false;
    }
    let mut rec = fp;
    for _ in 0..MAX_CALLER_FRAMES {
        if rec < lo || rec & 7 != 0 || rec.saturating_add(16) > hi {
            break;
        }
        // SAFETY: `[rec, rec + 16)` lies inside the task's mapped stack
        // (checked above) and is aligned; a frame record is {caller's FP,
        // return address} on both ISAs. Garbage (a frame that is not a
        // record) only yields addresses that the checks here bound.
        let (next, ret) =
            unsafe { (std::ptr::read_volatile(rec as *const usize), std::ptr::read_volatile((rec + 8) as *const usize)) };
        // The call instruction ends before `ret`.
        let site = ret.wrapping_sub(1);
        if s <= site && site < e {
            if code_may_hold_tls(table, site) {
                return true;
            }
        } else if !matches!(usurp_preempt::pc_status(site), usurp_preempt::PcStatus::NotPreemptible) {
            return true; // a JIT caller (or a registry being updated)
        }
        if next <= rec {
            break;
        }
        rec = next;
    }
    false
}

/// Installs the park and yield hooks (once per process).
/// Installs the yield hook alone, for a runtime without async preemption:
/// its workers' cooperative slots (`worker::thread::ThreadInit`) take
/// requests that `checkpoint()` answers through it. Idempotent.
pub(crate) fn init_yield_hook() {
    usurp_preempt::set_yield_hook(yield_hook);
}

pub(crate) fn init_hooks() {
    HOOKS.call_once(|| {
        // Decode the preemptible functions now, off the park path.
        let _ = usurp_preempt::fn_table();
        FP_CHAIN.store(crate::fpcheck::build_has_frame_pointers(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `park_hook` (below) leaves the spill frame alone, parks
        // the task and returns only once a worker resumes it; the task
        // migrates only if `must_pin` found no thread-local access at its
        // PC, and then the hook rebinds the frame to the new thread. It
        // panics on no path (runtime code).
        unsafe { usurp_preempt::set_park_hook(park_hook) };
        usurp_preempt::set_yield_hook(yield_hook);
        crate::fpcheck::warn_without_frame_pointers();
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
    // SAFETY: as above.
    let pc = unsafe { (*frame).pc() };
    // Task dumps walk a preempted task's stack from its interrupted PC
    // (`dump.rs`): record where the spill frame's frame record is.
    let cur = crate::worker::current_task();
    // SAFETY: the frame is valid for the call (above); `cur`, if any, is the
    // task running on this thread, and only it writes `preempt_record`.
    unsafe {
        if !cur.is_null() {
            (*cur).preempt_record.store((*frame).frame_record(), std::sync::atomic::Ordering::Relaxed);
        }
    }
    // SAFETY: as above.
    let fp = unsafe { (*frame).fp() };
    let (lo, hi) = if cur.is_null() {
        (0, 0)
    } else {
        // SAFETY: `cur` is the running task (above); its stack is mapped
        // while it runs.
        unsafe { ((*cur).stack.lo(), (*cur).stack.hi()) }
    };
    let before = crate::worker::machine();
    crate::worker::preempt_current(must_pin(pc, fp, lo, hi));
    if !cur.is_null() {
        // SAFETY: resumed: `cur` runs again (on this thread, whichever it is).
        unsafe { (*cur).preempt_record.store(0, std::sync::atomic::Ordering::Relaxed) };
    }
    if crate::worker::machine() != before {
        // Resumed on another thread: the frame must not carry the old
        // thread's state back (aarch64: its alternate signal stack).
        // SAFETY: the frame is on this task's stack, ours again.
        unsafe { (*frame).rebind_to_current_thread() };
    }
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
    // As `crate::yield_now` in a task (this floor does not call up to the
    // public API); inside `blocking` the thread yields.
    match crate::worker::Current::get() {
        Some(c) => crate::worker::yield_at_checkpoint(c),
        None if !crate::worker::current_task().is_null() => std::thread::yield_now(),
        None => {}
    }
}


