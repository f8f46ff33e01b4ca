//! Wiring of asynchronous preemption (`usurp-preempt`) into the scheduler.
//!
//! * **Once per process** ([`init_hooks`]): the park hook (an async-preempted
//!   task parks on its worker, pinned to it only if the `preemptible!` code
//!   may hold a thread-local address: [`must_pin`], decided by decoding the
//!   section once) and the yield hook that `checkpoint()` calls
//!   ([`crate::yield_now`]).
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

/// Whether the code of the `preemptible!` section may hold a thread-local
/// address in a register at a preemption: 0 not yet known, 1 no, 2 yes.
/// Computed once per process (`init_hooks`).
static SECTION_TLS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Test-only switch (negative controls): 0 decide by the code, 1 pin every
/// async-preempted task (as before preempted loops could migrate), 2 never
/// pin.
#[doc(hidden)]
pub(crate) static PIN_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether the `preemptible!` section was found to touch TLS (tests).
pub(crate) fn section_tls_known() -> Option<bool> {
    match SECTION_TLS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        v => Some(v == 2),
    }
}

/// Decides whether the `preemptible!` section may touch TLS: the arch crate
/// scans its machine code once (x86-64: FS/GS-relative operands, rdfsbase,
/// general-dynamic sequences; aarch64: `mrs tpidr_el0`). Code outside the
/// main executable counts as touching TLS (on x86-64 the local-dynamic model
/// of shared objects leaves no trace in the caller).
fn section_touches_tls() -> bool {
    let (s, e) = usurp_preempt::preemptible_code();
    if s == 0 || e <= s {
        return false;
    }
    // SAFETY: dladdr/getauxval only read loader data; `info` is plain data
    // written by dladdr.
    let in_main = unsafe {
        let mut a: libc::Dl_info = std::mem::zeroed();
        let mut b: libc::Dl_info = std::mem::zeroed();
        let entry = libc::getauxval(libc::AT_ENTRY) as usize;
        libc::dladdr(s as *const libc::c_void, &mut a) != 0
            && libc::dladdr(entry as *const libc::c_void, &mut b) != 0
            && a.dli_fbase == b.dli_fbase
    };
    if !in_main {
        return true;
    }
    // SAFETY: the linker section [s, e) is mapped readable and executable for
    // the life of the process and never written.
    let code = unsafe { std::slice::from_raw_parts(s as *const u8, e - s) };
    crate::arch::code_touches_tls(code, s as u64)
}

/// Whether a task async-preempted at `pc` must resume on the same OS thread
/// (issue 11, "preempted loops migrate"): code that may hold a thread-local
/// address in a register must not migrate. The `preemptible!` section is
/// decoded once as a whole (the macro records no per-function bounds, so
/// one function touching TLS pins every preempted task of the section); JIT
/// regions registered with `register_code` are unknown code and always pin.
pub(crate) fn must_pin(pc: usize) -> bool {
    match PIN_POLICY.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let (s, e) = usurp_preempt::preemptible_code();
    if pc < s || pc >= e {
        return true;
    }
    match SECTION_TLS.load(std::sync::atomic::Ordering::Relaxed) {
        1 => false,
        0 => true, // not decoded yet (cannot happen after init_hooks)
        _ => true,
    }
}

/// Installs the park and yield hooks (once per process).
pub(crate) fn init_hooks() {
    HOOKS.call_once(|| {
        let v = if section_touches_tls() { 2 } else { 1 };
        SECTION_TLS.store(v, std::sync::atomic::Ordering::Relaxed);
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
    let before = crate::worker::machine();
    crate::worker::preempt_current(must_pin(pc));
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
        Some(c) => crate::worker::yield_current(c),
        None if !crate::worker::current_task().is_null() => std::thread::yield_now(),
        None => {}
    }
}


