//! The preemption signal: installation, the handler, chaining, targeted
//! requests, and the asynchronous safe-point check.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use libc::{c_int, c_void, siginfo_t};

use crate::archif;
use crate::error::{last_errno, Error};
use crate::registry::{self, CodeLookup};
use crate::slot::{current_ptr, is_known_slot, now_ns, WorkerSlot, NO_COOP_YIELD};
use crate::stats::{Counters, Refusal};

static SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGURG);
static PID: AtomicI32 = AtomicI32::new(0);
/// The real uid at init (the `si_uid` of our request signals).
static UID: AtomicU32 = AtomicU32::new(0);
static ASYNC_OFF: AtomicBool = AtomicBool::new(false);
static STACK_NEEDED: AtomicUsize = AtomicUsize::new(usize::MAX);
static INIT: OnceLock<Result<(), Error>> = OnceLock::new();
static CHAINED: AtomicU64 = AtomicU64::new(0);

/// The previous action for our signal; written once, before our handler is
/// installed, and only read by the handler afterwards.
struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once before publication (PREV_SET, Release), read-only after.
unsafe impl Sync for PrevAction {}
static PREV: PrevAction = PrevAction(UnsafeCell::new(MaybeUninit::uninit()));
static PREV_SET: AtomicBool = AtomicBool::new(false);

/// Test-only: retry every refused tick after a quarter quantum, as before
/// the backoff (the negative control of the backoff test).
static BACKOFF_OFF: AtomicBool = AtomicBool::new(false);

/// Test-only: turns the refused-tick backoff off (`true`) or on again.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn disable_refusal_backoff_for_tests(off: bool) {
    BACKOFF_OFF.store(off, Ordering::Relaxed);
}

/// Test-only: `[start, end)` outside which every preemption is refused
/// (as not preemptible code), so that a test can make a preemption land
/// inside a given instruction range (retried until it does); empty (the
/// default) means no restriction. Checked after the unsafe-range lookup, so
/// an unsafe range inside the window still refuses.
static TEST_WINDOW: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Test-only: accept preemptions only at PCs in `[start, end)` (`(0, 0)`:
/// no restriction, the default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_preempt_window_for_tests(start: usize, end: usize) {
    TEST_WINDOW[0].store(start, Ordering::SeqCst);
    TEST_WINDOW[1].store(end, Ordering::SeqCst);
}

/// The scheduler's park hook, called on the task's stack from the spill
/// routine (stored as a raw pointer so the handler can test it atomically).
static PARK_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Test-only bytes added to what [`preempt_stack_needed`] reports (to
/// simulate a CPU with a larger XSAVE area, e.g. AMX tiles).
static EXTRA_NEEDED_FOR_TESTS: AtomicUsize = AtomicUsize::new(0);

/// Bytes a preemption needs below the interrupted SP on this CPU: the red
/// zone (x86-64), the spill frame with the whole extended-state area
/// (x86-64: the XSAVE size CPUID reports for the features the OS enabled,
/// ~1 KB with AVX, ~2.7 KB with AVX-512, ~11 KB with AMX tiles; aarch64: the
/// 4688-byte rt_sigframe), and 8 KiB for the park path. The safe-point check
/// refuses (`Refusal::StackRoom`) when the task's stack has less room than
/// this below SP, so a task stack must be larger than this by whatever the
/// task itself uses; see [`min_task_stack`].
pub fn preempt_stack_needed() -> usize {
    archif::spill_stack_needed().saturating_add(EXTRA_NEEDED_FOR_TESTS.load(Ordering::Relaxed))
}

/// Headroom [`min_task_stack`] adds for the task's own frames.
pub const TASK_FRAMES_HEADROOM: usize = 4 * 1024;

/// The smallest task stack on which a preemption can succeed on this CPU:
/// [`preempt_stack_needed`] plus [`TASK_FRAMES_HEADROOM`] (4 KiB) for the
/// task's own frames. A scheduler should reject smaller stacks when async
/// preemption is on: every attempt on them would be refused with
/// `stack_room`, so a loop in such a task would hold up a stop-the-world
/// for ever.
pub fn min_task_stack() -> usize {
    preempt_stack_needed().saturating_add(TASK_FRAMES_HEADROOM)
}

/// Test-only: pretends this CPU's spill frame is `bytes` larger (only what
/// [`preempt_stack_needed`] reports changes).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn simulate_larger_spill_frame_for_tests(bytes: usize) {
    EXTRA_NEEDED_FOR_TESTS.store(bytes, Ordering::Relaxed);
}

/// The preemption signal (default SIGURG).
pub fn signal() -> c_int {
    SIGNAL.load(Ordering::Relaxed)
}

/// Chooses the preemption signal. Must be called before [`init`] (or before
/// the first worker registers). SIGURG is the default because, like Go
/// observed, programs rarely use it and its default action is "ignore".
pub fn set_signal(sig: c_int) -> Result<(), Error> {
    let forbidden = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGSYS,
    ];
    if sig <= 0 || sig > libc::SIGRTMAX() || forbidden.contains(&sig) {
        return Err(Error::InvalidSignal(sig));
    }
    if INIT.get().is_some() {
        return Err(Error::AlreadyInitialized);
    }
    SIGNAL.store(sig, Ordering::Relaxed);
    Ok(())
}

/// Whether `USURP_DEBUG=asyncpreemptoff=1` is set: read once per process,
/// by the first call of this or of [`init`], whichever comes first (a
/// runtime's builder asks before it calls `init`, so reading it only in
/// `init` left the first runtime of a process preemptible).
pub fn async_preempt_off() -> bool {
    read_debug_env();
    ASYNC_OFF.load(Ordering::Relaxed)
}

/// Reads `USURP_DEBUG` into `ASYNC_OFF`, once per process (never from the
/// signal handler, which only loads `ASYNC_OFF`: the handler can run only
/// after `init`, which has read it).
fn read_debug_env() {
    static READ: std::sync::Once = std::sync::Once::new();
    READ.call_once(|| {
        if let Ok(v) = std::env::var("USURP_DEBUG") {
            ASYNC_OFF.store(parse_debug(&v), Ordering::Relaxed);
        }
    });
}

/// Number of deliveries of the preemption signal that were not ours and were
/// passed to the previously installed handler (or its default action).
pub fn chained_signals() -> u64 {
    CHAINED.load(Ordering::Relaxed)
}

fn parse_debug(v: &str) -> bool {
    // Comma-separated key=value pairs, like GODEBUG; the last setting wins.
    let mut off = false;
    for kv in v.split(',') {
        if let Some(val) = kv.trim().strip_prefix("asyncpreemptoff=") {
            off = val.trim() == "1";
        }
    }
    off
}

/// Installs the preemption signal handler (once; later calls return the
/// first result): reads `USURP_DEBUG`, saves the previously installed action
/// for chaining, and installs the spill hook in the arch crate. Called by
/// [`crate::register_worker`]; may be called earlier.
pub fn init() -> Result<(), Error> {
    INIT.get_or_init(do_init).clone()
}

fn do_init() -> Result<(), Error> {
    // Once per process (INIT): the frame-pointer flags a RUSTFLAGS variable
    // may have replaced (see `rustflags`).
    if let Some(w) = crate::rustflags::warning() {
        eprintln!("{w}");
    }
    read_debug_env();
    // SAFETY: getpid and getuid have no preconditions.
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    // SAFETY: as above.
    UID.store(unsafe { libc::getuid() }, Ordering::Relaxed);
    STACK_NEEDED.store(archif::spill_stack_needed(), Ordering::Relaxed);
    // SAFETY: `spill_hook` only calls the park hook, whose contract
    // (`set_park_hook`'s # Safety) is the arch hook's: it keeps the frame,
    // parks and returns once resumed, rebinding the frame on a new thread;
    // it cannot unwind (`extern "C"`).
    unsafe { archif::set_spill_hook(spill_hook) };
    let sig = signal();
    // SAFETY: building a sigaction from zeroed plain data, then filling it.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        // Read the previous action first, then install ours atomically with
        // respect to it: PREV must be valid before our handler can run.
        let prev = (*PREV.0.get()).as_mut_ptr();
        if libc::sigaction(sig, core::ptr::null(), prev) != 0 {
            return Err(Error::Os("sigaction", last_errno()));
        }
        PREV_SET.store(true, Ordering::Release);
        let mut prev2: libc::sigaction = core::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut prev2) != 0 {
            return Err(Error::Os("sigaction", last_errno()));
        }
    }
    Ok(())
}

/// Installs the scheduler's park hook. It is called on the preempted task's
/// own stack, after every register was saved, with the [`SpillFrame`]
/// describing the saved state; it must park the task (save its context with
/// the arch `switch` and switch to the worker's scheduler context) and return
/// when the task is resumed — on the same OS thread. Returning immediately is
/// allowed (the task just continues).
///
/// # Safety
/// The spill routine's assembly depends on the hook: it runs on the
/// interrupted task's stack, below the spill frame, with every register of
/// the task saved only in that frame. The hook must not unwind (the
/// `extern "C"` frame above it aborts the process), must leave the
/// [`SpillFrame`] and everything above the stack pointer it was called with
/// untouched, and must return (if it parks the task) only once the task is
/// resumed: the spill routine then restores the registers and returns to the
/// interrupted instruction on whichever thread it finds itself. If that is
/// not the thread the task was interrupted on, the hook must first call
/// [`SpillFrame::rebind_to_current_thread`](crate::SpillFrame::rebind_to_current_thread), and the interrupted code must
/// hold no address of the old thread's thread-locals (the scheduler decides
/// that from the interrupted PC).
///
/// Installing a hook outside `unsafe` does not compile:
///
/// ```compile_fail,E0133
/// unsafe fn park(_frame: *mut usurp_preempt::SpillFrame) {}
/// usurp_preempt::internals::set_park_hook(park);
/// ```
///
/// [`SpillFrame`]: crate::SpillFrame
pub unsafe fn set_park_hook(hook: unsafe fn(*mut archif::SpillFrame)) {
    PARK_HOOK.store(hook as *mut (), Ordering::Release);
}

/// The arch spill routine calls this after saving everything. A panic in the
/// park hook cannot unwind through the assembly frame: `extern "C"` aborts.
unsafe extern "C" fn spill_hook(frame: *mut archif::SpillFrame) {
    let h = PARK_HOOK.load(Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: only `unsafe fn(*mut SpillFrame)` pointers are stored.
        let f: unsafe fn(*mut archif::SpillFrame) = unsafe { core::mem::transmute(h) };
        // SAFETY: the frame was built by the spill routine on this stack.
        unsafe { f(frame) }
    }
}

/// Sends a targeted preemption request to `slot`'s worker (e.g. for
/// stop-the-world): sets the worker's checkpoint flag, and unless a request
/// signal is already pending for it, marks one pending and sends the signal
/// with `rt_tgsigqueueinfo` (see [`request_siginfo`]). Returns `Ok(true)` if
/// a signal was sent, `Ok(false)` if one was already in flight, or if the
/// slot takes no signals ([`crate::register_worker_cooperative`]: the flag
/// alone is the request). Wait for `slot.acks()` to advance to know that
/// the handler has run (accepted or refused); a cooperative slot never
/// acknowledges.
pub fn request_preempt(slot: &WorkerSlot) -> Result<bool, Error> {
    let tid = post_request(slot)?;
    // Read after the thread id (`post_request`'s Acquire load), which the
    // registration publishes after the mode: a slot that went back to the
    // pool and was registered again without signals is never signalled on
    // the strength of its previous registration's mode (review 114).
    if slot.is_cooperative_only() {
        // No signal (`register_worker_cooperative`): the flag is the request.
        return Ok(false);
    }
    init()?;
    if slot.pending.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Ok(false);
    }
    Counters::bump(&slot.counters.requests_sent);
    let mut info = request_siginfo(slot);
    // SAFETY: rt_tgsigqueueinfo reads the siginfo we pass and nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            PID.load(Ordering::Relaxed) as libc::c_long,
            tid as libc::c_long,
            signal() as libc::c_long,
            &mut info as *mut siginfo_t,
        )
    };
    if r != 0 {
        let e = last_errno();
        slot.pending.store(0, Ordering::Release);
        return Err(Error::Os("rt_tgsigqueueinfo", e));
    }
    Ok(true)
}

/// Sets `slot`'s checkpoint flag without a signal: its worker stops at its
/// next poll (allocation, `Gc<T>` deref, `checkpoint()`), with no signal
/// delivery in between. A stopper posts the flag to every worker first and
/// then signals them one by one (each signal is a system call of 10-20 µs
/// on a VM), so that a worker that polls does not wait for the signals
/// sent before its own (issue 9). Same handshake with
/// `unregister_worker` as [`request_preempt`].
pub fn post_checkpoint_request(slot: &WorkerSlot) -> Result<(), Error> {
    post_request(slot).map(|_| ())
}

/// The flag half of [`request_preempt`]: sets the checkpoint flag of a
/// registered slot and returns its thread id.
fn post_request(slot: &WorkerSlot) -> Result<i32, Error> {
    let tid = slot.tid.load(Ordering::Acquire);
    if tid == 0 || !slot.registered.load(Ordering::Acquire) {
        return Err(Error::NotAWorker);
    }
    slot.set_request();
    // The worker may have unregistered since we read its tid (then its
    // `unregister_worker` may have cleared the flag before we set it, and
    // nobody else would: the pooled slot would keep every poll of the
    // process on its slow path). Dekker's handshake with `unregister_worker`
    // (its tid store, a fence, its clearing): after our fence, either we
    // see the tid change and withdraw the request, or it sees our request
    // and clears it. A request withdrawn from a slot registered again
    // meanwhile is lost until its requester re-sends (stops and the timer
    // monitor do).
    core::sync::atomic::fence(Ordering::SeqCst);
    if slot.tid.load(Ordering::Relaxed) != tid || !slot.registered.load(Ordering::Relaxed) {
        slot.take_request();
        return Err(Error::NotAWorker);
    }
    Ok(tid)
}

/// The siginfo of a request signal for `slot`: `si_code = SI_QUEUE`,
/// `si_pid` = our pid, `si_value` = the slot's address, sent with
/// `rt_tgsigqueueinfo(pid, tid, signal(), &info)` (a process may send itself
/// any `si_code`). The handler recognises a request by its payload, not by
/// counting signals: a plain tgkill carries nothing, so telling ours from the
/// host's `pthread_kill`/`raise` (both `SI_TKILL` from our pid) needed a
/// count of our signals in flight, and a standard signal merged into a
/// pending tick never arrived to decrement it (issue 12, finding 3).
#[doc(hidden)]
pub fn request_siginfo(slot: &WorkerSlot) -> siginfo_t {
    // The generic Linux siginfo layout (x86-64 and aarch64): si_signo,
    // si_errno, si_code at 0/4/8; the union at 16: si_pid at 16, si_uid at
    // 20, si_value at 24.
    let mut w = [0u64; 16];
    w[0] = signal() as u32 as u64;
    w[1] = libc::SI_QUEUE as u32 as u64;
    let uid = UID.load(Ordering::Relaxed);
    w[2] = (PID.load(Ordering::Relaxed) as u32 as u64) | ((uid as u64) << 32);
    w[3] = slot as *const WorkerSlot as u64;
    const _: () = assert!(core::mem::size_of::<siginfo_t>() == 128);
    // SAFETY: siginfo_t is 128 bytes of plain data; every bit pattern is valid.
    unsafe { core::mem::transmute::<[u64; 16], siginfo_t>(w) }
}

/// Marks a request pending without sending the signal, for a caller that
/// sends it itself (the benchmarks send it with a raw `rt_tgsigqueueinfo`
/// from inside preemptible code, with the siginfo from
/// [`request_siginfo`]). Returns false if one is already pending.
#[doc(hidden)]
pub fn mark_request_pending(slot: &WorkerSlot) -> bool {
    slot.pending.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// The process id cached at init (the first argument of the request signal).
#[doc(hidden)]
pub fn cached_pid() -> i32 {
    PID.load(Ordering::Relaxed)
}

// ---- the handler ---------------------------------------------------------------

fn errno_ptr() -> *mut c_int {
    // SAFETY: __errno_location is async-signal-safe and never fails.
    unsafe { libc::__errno_location() }
}

/// The signal handler. No allocation, no lock, no panic: only atomics,
/// preallocated per-worker state, and system calls that are
/// async-signal-safe.
extern "C" fn handler(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) {
    let ep = errno_ptr();
    // SAFETY: errno is thread-local and valid.
    let saved = unsafe { ep.read() };
    // SAFETY: the kernel passes valid info/uc pointers to SA_SIGINFO handlers.
    let ours = unsafe { dispatch(info, uc) };
    if !ours {
        Counters::bump(&CHAINED);
        // SAFETY: same pointers, forwarded.
        unsafe { chain(sig, info, uc) };
    }
    // SAFETY: as above.
    unsafe { ep.write(saved) };
}

/// Decides whether this delivery is ours and acts on it. Returns false for a
/// foreign signal.
unsafe fn dispatch(info: *mut siginfo_t, uc: *mut c_void) -> bool {
    if info.is_null() {
        return false;
    }
    let slot_p = current_ptr();
    // SAFETY: info is valid (checked non-null; kernel-provided).
    let code = unsafe { (*info).si_code };
    if code == libc::SI_TIMER {
        // SAFETY: for SI_TIMER the kernel fills the timer fields, including
        // the sigval we gave to timer_create.
        let v = unsafe { (*info).si_value().sival_ptr } as usize;
        if !slot_p.is_null() && v == slot_p as usize {
            // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
            let slot = unsafe { &*slot_p };
            // A request's tgkill may have been merged into this pending tick
            // (standard signals do not queue): serve it now.
            let request = slot.pending.swap(0, Ordering::AcqRel) == 1;
            // SAFETY: uc is the handler's ucontext.
            unsafe { on_tick(slot, uc, request) };
            return true;
        }
        // A late tick of one of our timers (its worker unregistered): drop it.
        return is_known_slot(v);
    }
    if code == libc::SI_QUEUE {
        // SAFETY: for SI_QUEUE the kernel copies the sender's si_pid and
        // si_value.
        let (pid, v) = unsafe { ((*info).si_pid(), (*info).si_value().sival_ptr as usize) };
        if pid != PID.load(Ordering::Relaxed) {
            return false;
        }
        if !slot_p.is_null() && v == slot_p as usize {
            // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
            let slot = unsafe { &*slot_p };
            // A signal meant for this slot's previous registration, which
            // took signals, arriving after a signal-free registration
            // (`register_worker_cooperative`) took it: ours, but the
            // runtime asked for no asynchronous preemption; the request's
            // flag alone stands (review 114).
            if slot.is_cooperative_only() {
                return true;
            }
            // A tick may have served the request already (it overtook this
            // signal): then there is nothing left to do.
            if slot.pending.swap(0, Ordering::AcqRel) == 1 {
                // SAFETY: uc is the handler's ucontext.
                let r = unsafe { attempt(slot, uc) };
                slot.note_request_served(r);
                slot.counters.acks.fetch_add(1, Ordering::Release);
            }
            return true;
        }
        // A late request for a slot that no longer runs on this thread
        // (its worker unregistered): ours, drop it.
        return is_known_slot(v);
    }
    false
}

/// A quantum tick. The timer is one-shot, armed for the moment the running
/// task's quantum ends (`switched_at + quantum`); each tick re-arms it. If
/// the worker switched since the last tick (the switch counter moved), the
/// running task's quantum starts now and the tick only moves the deadline;
/// otherwise the task has run a whole quantum and is preempted.
///
/// A refused attempt is retried with a backoff: a whole quantum (at least
/// 50 µs) after the first refusal, then twice as long after each further
/// refusal of the same task, up to one quantum or 1 ms, whichever is longer
/// ([`MAX_REFUSAL_BACKOFF_NS`]). The refusal already set the
/// checkpoint flag, so a task that polls [`crate::checkpoint`] yields without
/// another signal; one that stays in non-preemptible code (libc, a
/// no-preempt section, a loop without checkpoints) costs a signal per
/// quantum (or per 1 ms) instead of four. A task known to be cooperative
/// (it last left its worker at a checkpoint yield a refusal asked for, and
/// was not preempted asynchronously since: [`crate::TaskPreemptState`]) is
/// retried straight at the cap, max(quantum, 1 ms): it yields at its next
/// poll anyway, and a retry before that would only be refused again. That
/// yield reads the clock and re-arms the timer for the next task's quantum
/// end (`WorkerSlot::note_cooperative_yield`); the first tick after it,
/// seeing exactly the yield's two switches, takes the yield's time as that
/// quantum's start instead of its own. So a cooperative quantum costs one
/// signal, the refused tick. The backoff restarts with the next task (the
/// switch counter moved) and after an accepted preemption. Targeted
/// requests (stop-the-world, due timers) are not delayed by it: their
/// senders re-send them.
///
/// A tick that finds the worker uncontended (no task waits for it:
/// [`WorkerSlot::set_contended`]`(false)`) attempts nothing and leaves the
/// timer disarmed. A request merged into a tick is served either way.
unsafe fn on_tick(slot: &WorkerSlot, uc: *mut c_void, request: bool) {
    Counters::bump(&slot.counters.ticks);
    // A checkpoint yield's time serves only the first tick after it (the one
    // it armed): if another tick came between (the worker sat idle or in a
    // stopped world before its next task), that task did not start then.
    let coop_yield_sw = slot.coop_yield_sw.load(Ordering::Relaxed);
    slot.coop_yield_sw.store(NO_COOP_YIELD, Ordering::Relaxed);
    if !request && !slot.is_contended() {
        // Nobody waits for this worker (`set_contended(false)`, which makes
        // no system call itself): no attempt, and the timer stays disarmed
        // until work appears (`set_contended(true)` re-arms it).
        slot.tick_uncontended();
        return;
    }
    let q = slot.quantum_ns.load(Ordering::Relaxed);
    let now = now_ns();
    let retry = (q / 4).max(50_000);
    let sw = slot.switches.load(Ordering::Relaxed);
    if sw != slot.seen_switches.load(Ordering::Relaxed) {
        // Another task (or none): its refusals start a fresh backoff.
        slot.backoff_ns.store(0, Ordering::Relaxed);
    }
    let due = if request {
        true
    } else if slot.running.load(Ordering::Acquire) && sw != slot.seen_switches.load(Ordering::Relaxed) {
        // The worker switched since the last tick (switch_in reads no
        // clock): the running task's quantum starts now, unless it was
        // switched in by a checkpoint yield a refusal asked for (one switch
        // out, one in since): that yield read the clock, and its quantum
        // started then (the yield re-armed the timer for its end).
        let start = if !OLD_RETRY_POLICY.load(Ordering::Relaxed) && sw == coop_yield_sw.wrapping_add(2) {
            slot.coop_yield_at.load(Ordering::Relaxed).min(now)
        } else {
            now
        };
        slot.seen_switches.store(sw, Ordering::Relaxed);
        slot.switched_at.store(start, Ordering::Relaxed);
        now.saturating_add((q / 10).min(50_000)) >= start.saturating_add(q)
    } else if slot.running.load(Ordering::Acquire) {
        let deadline = slot.switched_at.load(Ordering::Relaxed).saturating_add(q);
        // A little slack: the next task's switch-in follows a preemption by
        // a few microseconds, which should not cost it a whole extra tick.
        now.saturating_add((q / 10).min(50_000)) >= deadline
    } else {
        false
    };
    let next = if due {
        // SAFETY: forwarded.
        let r = unsafe { attempt(slot, uc) };
        if request {
            slot.note_request_served(r);
            slot.counters.acks.fetch_add(1, Ordering::Release);
        }
        if r.is_ok() {
            // The task parks right away: its switch_out and the next task's
            // switch_in count two switches, and that task's quantum starts now.
            slot.seen_switches.store(sw.wrapping_add(2), Ordering::Relaxed);
            slot.switched_at.store(now, Ordering::Relaxed);
        }
        // With async preemption off (or no park hook) ticks only feed
        // checkpoint; a refusal is retried with the backoff (see above).
        now.saturating_add(match r {
            Ok(()) | Err(Refusal::AsyncOff) | Err(Refusal::NoParkHook) => {
                slot.backoff_ns.store(0, Ordering::Relaxed);
                q
            }
            Err(_) => {
                let prev = slot.backoff_ns.load(Ordering::Relaxed);
                let delay = if BACKOFF_OFF.load(Ordering::Relaxed) || (prev == 0 && OLD_RETRY_POLICY.load(Ordering::Relaxed)) {
                    retry
                } else if prev == 0 && slot.cooperative.load(Ordering::Relaxed) {
                    // Known to yield at its checkpoints: the refusal set its
                    // flag, and a retry before it polls would only be
                    // refused again. Retry at the backoff's cap.
                    q.max(MAX_REFUSAL_BACKOFF_NS)
                } else {
                    next_backoff(prev, q)
                };
                if prev != 0 {
                    Counters::bump(&slot.counters.refusal_retries);
                    if delay > retry {
                        Counters::bump(&slot.counters.backed_off);
                    }
                }
                slot.backoff_ns.store(delay, Ordering::Relaxed);
                delay
            }
        })
    } else if slot.running.load(Ordering::Acquire) {
        slot.switched_at.load(Ordering::Relaxed).saturating_add(q).max(now.saturating_add(retry / 4))
    } else {
        now.saturating_add(q)
    };
    if slot.is_armed() {
        slot.arm_at(next);
    }
}

/// Test-only: the old retry policy (the negative control of the
/// cooperative-retry test): the first retry after a refused tick comes a
/// quarter quantum (at least 50 µs) later, whether or not the task is known
/// to be cooperative, and a checkpoint yield does not start the next task's
/// quantum (the next tick does).
pub(crate) static OLD_RETRY_POLICY: AtomicBool = AtomicBool::new(false);

/// Test-only: `true` restores the old retry policy (first retry of a
/// refused tick after a quarter quantum; the next task's quantum starts at
/// the next tick, not at the checkpoint yield); `false` restores the current
/// one.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn old_refusal_retry_for_tests(on: bool) {
    OLD_RETRY_POLICY.store(on, Ordering::Relaxed);
}

/// The longest delay between retries of refused ticks of one task, for
/// quanta shorter than this: 1 ms. At a 100 µs quantum a task stuck in
/// non-preemptible code would otherwise take 10,000 refused signals a second
/// (12-14 µs of delivery each: over a tenth of its CPU) for nothing: the
/// first refusal already set its checkpoint flag.
pub const MAX_REFUSAL_BACKOFF_NS: u64 = 1_000_000;

/// The retry delay after a refused tick, given the previous one (0 for the
/// first refusal of this task): a whole quantum (at least 50 µs), then
/// doubling, capped at max(quantum, 1 ms).
///
/// Why a whole quantum first: the refusal set the task's checkpoint flag,
/// and a task that polls [`crate::checkpoint`] yields well within a quantum
/// (the retry tick then finds the worker switched, and only starts the next
/// task's quantum); a retry a quarter quantum later mostly found a
/// cooperative task still between two polls and was refused again (issue
/// 12: a third of the refused signals of a stress run were such retries).
fn next_backoff(prev_ns: u64, quantum_ns: u64) -> u64 {
    let first = quantum_ns.max(50_000);
    if prev_ns == 0 {
        first
    } else {
        prev_ns.saturating_mul(2).min(quantum_ns.max(MAX_REFUSAL_BACKOFF_NS))
    }
}

/// Runs the safe-point check and, if it passes, redirects the context into
/// the spill routine. Returns why not, if it did not.
unsafe fn attempt(slot: &WorkerSlot, uc: *mut c_void) -> Result<(), Refusal> {
    // SAFETY: forwarded.
    match unsafe { check(slot, uc) } {
        Ok(restart) => {
            if let Some(pc) = restart {
                // SAFETY: the restartable range's contract makes its start a
                // valid resumption point for the current register state.
                unsafe { archif::set_pc(uc, pc) };
                Counters::bump(&slot.counters.restarted);
            }
            // SAFETY: check() verified the stack room.
            unsafe { archif::inject_spill(uc) };
            Counters::bump(&slot.counters.accepted);
            // Caught in preemptible code: not known to be cooperative any
            // more (its next refusal is retried with the plain backoff).
            slot.cooperative.store(false, Ordering::Relaxed);
            Ok(())
        }
        Err(reason) => {
            slot.counters.refuse(reason);
            if reason != Refusal::NotRunning {
                // Let cooperative code (checkpoint) pick the request up, and
                // count the yield there as one a refusal caused.
                slot.refusal_request.store(true, Ordering::Relaxed);
                slot.set_request();
            }
            Err(reason)
        }
    }
}

/// The asynchronous safe-point check. Returns the PC to restart at when a
/// restartable range covers the interrupted PC.
unsafe fn check(slot: &WorkerSlot, uc: *mut c_void) -> Result<Option<usize>, Refusal> {
    if !slot.running.load(Ordering::Acquire) {
        return Err(Refusal::NotRunning);
    }
    if slot.no_preempt.load(Ordering::Relaxed) != 0 {
        return Err(Refusal::NoPreempt);
    }
    if ASYNC_OFF.load(Ordering::Relaxed) {
        return Err(Refusal::AsyncOff);
    }
    if PARK_HOOK.load(Ordering::Acquire).is_null() {
        return Err(Refusal::NoParkHook);
    }
    // SAFETY: uc is the handler's ucontext.
    let pc = unsafe { archif::pc(uc) };
    let (start, end, restart) = match registry::lookup(pc) {
        CodeLookup::Preemptible { start, end, restart } => (start, end, restart),
        CodeLookup::NotPreemptible => return Err(Refusal::NotPreemptibleCode),
        CodeLookup::Unsafe => return Err(Refusal::UnsafeRange),
        CodeLookup::Busy => return Err(Refusal::RegistryBusy),
    };
    let (ws, we) = (TEST_WINDOW[0].load(Ordering::Relaxed), TEST_WINDOW[1].load(Ordering::Relaxed));
    if ws != we && !(ws <= pc && pc < we) {
        return Err(Refusal::NotPreemptibleCode);
    }
    let at = restart.unwrap_or(pc);
    // The bytes at `at` (up to the region end) and just before it (from the
    // region start): the classifier sees nothing outside the region.
    let len = (end - at).min(archif::MAX_INSN_LEN);
    let plen = (at - start).min(archif::MAX_LOOKBEHIND);
    // SAFETY: [start, end) is registered code containing `at`, mapped and
    // readable (this thread was executing it).
    let (code, prev) = unsafe {
        (
            core::slice::from_raw_parts(at as *const u8, len),
            core::slice::from_raw_parts((at - plen) as *const u8, plen),
        )
    };
    match archif::classify(prev, code, at) {
        archif::Verdict::Safe => {}
        archif::Verdict::InPrologue => return Err(Refusal::Prologue),
        archif::Verdict::InEpilogue => return Err(Refusal::Epilogue),
        archif::Verdict::Undecodable => return Err(Refusal::Undecodable),
        _ => return Err(Refusal::UnsafeInstruction),
    }
    // SAFETY: uc is the handler's ucontext.
    let sp = unsafe { archif::sp(uc) };
    let lo = slot.stack_lo.load(Ordering::Relaxed);
    let hi = slot.stack_hi.load(Ordering::Relaxed);
    let need = STACK_NEEDED.load(Ordering::Relaxed);
    if lo == 0 || !(lo < sp && sp <= hi) {
        return Err(Refusal::StackRoom);
    }
    match sp.checked_sub(need) {
        Some(bottom) if bottom >= lo => {}
        _ => return Err(Refusal::StackRoom),
    }
    // The handler must run on an alternate signal stack: if its ucontext
    // (the kernel's signal frame) lies on the task's stack, it lies right
    // below SP, where the injection writes (the spill frame on aarch64, the
    // return address on x86-64) before the kernel reads the frame back.
    let ucp = uc as usize;
    if lo <= ucp && ucp < hi {
        return Err(Refusal::HandlerOnTaskStack);
    }
    // SAFETY: uc is the handler's ucontext.
    if let Some(r) = unsafe { archif::unsaveable_state(uc) } {
        return Err(r);
    }
    Ok(restart)
}

/// Set once a chained delivery found the previous action with
/// `SA_RESETHAND`: from then on foreign deliveries get the default action, as
/// the kernel would have reset the host's handler. Written by the handler.
static PREV_RESET: AtomicBool = AtomicBool::new(false);

/// Signals whose default action is to stop the process.
fn stops_by_default(sig: c_int) -> bool {
    matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// Passes a foreign delivery to the previously installed action, the way the
/// kernel would have delivered it had our handler not been installed:
///
/// * a handler runs with the mask at the interruption, plus its own
///   `sa_mask`, plus the signal itself unless it had `SA_NODEFER` (our
///   handler runs with everything blocked; that is not what the host asked
///   for), and with `SA_RESETHAND` the next foreign delivery gets the
///   default action;
/// * `SIG_IGN`, and `SIG_DFL` of a signal ignored by default: nothing;
/// * `SIG_DFL` of a stop signal (SIGTSTP, SIGTTIN, SIGTTOU): the process
///   stops right here (with SIGSTOP: the parent sees `WSTOPSIG == SIGSTOP`),
///   and continues on SIGCONT with our handler still installed (resetting the
///   disposition and re-raising, as for a terminating signal, would leave the
///   preemption signal at SIG_DFL for ever: every later tick would stop the
///   process);
/// * `SIG_DFL` that terminates: reset the disposition and re-raise (the
///   signal is blocked while we run and is delivered on return: the process
///   dies of it, with a core dump if that is its default).
unsafe fn chain(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) {
    if !PREV_SET.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: PREV was fully written before PREV_SET was published.
    let prev = unsafe { (*PREV.0.get()).assume_init_ref() };
    let h = if PREV_RESET.load(Ordering::Acquire) { libc::SIG_DFL } else { prev.sa_sigaction };
    if h == libc::SIG_IGN {
        return;
    }
    if h == libc::SIG_DFL {
        if matches!(sig, libc::SIGURG | libc::SIGCHLD | libc::SIGWINCH | libc::SIGCONT) {
            return; // default action: ignore
        }
        if stops_by_default(sig) {
            // SAFETY: kill/getpid are async-signal-safe; SIGSTOP cannot be
            // blocked, so the group stop happens on the way out of kill().
            unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
            return;
        }
        // SAFETY: sigaction/tgkill/gettid are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, core::ptr::null_mut());
            libc::tgkill(libc::getpid(), libc::gettid(), sig);
        }
        return;
    }
    if prev.sa_flags & libc::SA_RESETHAND != 0 {
        PREV_RESET.store(true, Ordering::Release);
    }
    // The mask the kernel would have given the host's handler.
    // SAFETY: sigset operations on local values; uc is the handler's
    // ucontext (null-checked), whose uc_sigmask is the interrupted mask.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: as above (sigset operations on locals and the null-checked uc).
    let restore = unsafe {
        let mut m: libc::sigset_t = if uc.is_null() {
            let mut cur: libc::sigset_t = core::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, core::ptr::null(), &mut cur);
            cur
        } else {
            (*(uc as *const libc::ucontext_t)).uc_sigmask
        };
        for s in 1..=libc::SIGRTMAX() {
            if libc::sigismember(&prev.sa_mask, s) == 1 {
                libc::sigaddset(&mut m, s);
            }
        }
        if prev.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut m, sig);
        } else {
            libc::sigdelset(&mut m, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &m, &mut old) == 0
    };
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the stored handler has the 3-argument form.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { core::mem::transmute(h) };
        f(sig, info, uc)
    } else {
        // SAFETY: without SA_SIGINFO the stored handler has the 1-argument form.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(h) };
        f(sig)
    }
    if restore {
        // SAFETY: restoring the mask our handler ran with.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usurp_debug_parsing() {
        assert!(parse_debug("asyncpreemptoff=1"));
        assert!(parse_debug("gctrace=1,asyncpreemptoff=1"));
        assert!(!parse_debug("asyncpreemptoff=0"));
        assert!(!parse_debug("asyncpreemptoff=1,asyncpreemptoff=0"));
        assert!(!parse_debug(""));
    }

    #[test]
    fn invalid_signals_are_rejected() {
        assert_eq!(set_signal(libc::SIGKILL), Err(Error::InvalidSignal(libc::SIGKILL)));
        assert_eq!(set_signal(libc::SIGSEGV), Err(Error::InvalidSignal(libc::SIGSEGV)));
        assert_eq!(set_signal(0), Err(Error::InvalidSignal(0)));
        assert_eq!(set_signal(1000), Err(Error::InvalidSignal(1000)));
    }

    #[test]
    fn stack_needed_covers_the_spill_frame_on_this_cpu() {
        let need = preempt_stack_needed();
        #[cfg(target_arch = "x86_64")]
        {
            use crate::archif::arch;
            let xs = arch::xsave_size();
            assert!(need >= arch::RED_ZONE + 144 + xs + arch::SPILL_HOOK_STACK, "{need} vs xsave {xs}");
        }
        #[cfg(target_arch = "aarch64")]
        assert!(need >= crate::archif::arch::SPILL_FRAME_SIZE + crate::archif::arch::SPILL_HOOK_STACK);
        assert_eq!(min_task_stack(), need + TASK_FRAMES_HEADROOM);
        eprintln!("preemption needs {need} bytes below SP here; smallest task stack {}", min_task_stack());
    }

    #[test]
    fn refused_tick_backoff_starts_at_a_quantum_and_doubles_up_to_1ms() {
        let q = 1_000_000;
        let mut d = 0;
        let mut seq = Vec::new();
        for _ in 0..6 {
            d = next_backoff(d, q);
            seq.push(d);
        }
        assert_eq!(seq, [1_000_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000]);
        // Short quanta: from one quantum up to 1 ms.
        let q = 100_000;
        let mut d = 0;
        let mut seq = Vec::new();
        for _ in 0..6 {
            d = next_backoff(d, q);
            seq.push(d);
        }
        assert_eq!(seq, [100_000, 200_000, 400_000, 800_000, 1_000_000, 1_000_000]);
        // The shortest quantum.
        assert_eq!(next_backoff(0, 50_000), 50_000);
        // Long quanta: up to the quantum.
        assert_eq!(next_backoff(4_000_000, 5_000_000), 5_000_000);
    }
}
