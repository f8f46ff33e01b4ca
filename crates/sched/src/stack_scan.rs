//! Task stacks scanned one task at a time, outside the stops (issue 9 item 2).
//!
//! The GC's start stop turns the write barrier on and scans everything but
//! the task stacks ([`usurp_gc::World::begin_concurrent_stack_scan`]); each
//! task's stack and saved registers are then scanned once, at a moment the
//! task is not running, while the other tasks run. The barrier shades both
//! the overwritten and the stored value of every heap store while a heap
//! marks (Go's hybrid barrier), so one scan per task at any moment of the
//! mark is enough: what a task loads from the heap after its scan was
//! reachable from a grey object or was shaded when its heap copy was
//! overwritten.
//!
//! **The claim.** Every task has a scan word (`Task::scan`): `e << 1` when
//! its stack is scanned for epoch `e`, `e << 1 | 1` while someone scans it
//! for `e`. The runtime's epoch ([`StackScan::epoch`]) is bumped by the
//! collector in each start stop that scans stacks this way, so every live
//! task is then *unscanned*. Whoever gets an unscanned task first scans it,
//! by a CAS to "scanning":
//! * the **collector** ([`scan_task_stacks`]), for a task that is runnable,
//!   parked, preempted (its spill frame is on its stack, above the saved SP)
//!   or inside `blocking` (the frames above its recorded SP are frozen while
//!   its closure runs); the range is `[saved SP - red zone, stack top)`,
//!   exactly what a stop would have scanned;
//! * the **resumer** ([`before_resume`]): a worker about to switch to the
//!   task (`switch_to`, the scheduler loop), or the task itself leaving
//!   `blocking` (before it writes above its recorded SP again). It scans
//!   the range through `Heap::shade_conservative_range` before the task
//!   runs. A resumer that finds "scanning" waits for "scanned" (a scan is
//!   microseconds).
//!
//! Hence **no running task is ever unscanned**: the start stop switched
//! every task out (or it was in `blocking`), and every way back onto a CPU
//! goes through a claim. So the collector never has to stop a running task
//! for its scan: the targeted stop of Go's `suspendG` is not needed here,
//! and a task that spins in plain Rust code without a safe point holds up
//! no stack scan (only the cycle's termination stop, as any stop). Fast
//! path of a resume outside a cycle (and after the task's scan): two loads
//! and a compare.
//!
//! **New tasks** start scanned (black: `Task::prepare` stores the current
//! epoch's "scanned"); their closure is shaded at spawn while a heap marks
//! (`join::spawn_in`). A task that exits was scanned when it resumed.
//! **Values moving through runtime memory** (channel and `sync_channel`
//! sends, select's send case, spawn closures; [`publish`]): a task running
//! on its worker needs no shading, its stack being black (scanned before
//! it resumed, or new), so what it sends came from a scanned stack, from
//! the heap (reachable from a grey object or shaded by the barrier when
//! overwritten) or was allocated black. Only a thread without a mutator (a
//! task inside `blocking`, whose frames below the recorded SP no scan
//! reads) must shade, and there the check "a heap marks?", the shading and
//! the publication (the channel push, the spawn) are one step against the
//! start stop: they run inside the GC's shading gate, which the collector
//! closes, waiting for those inside, right after stopping the world and
//! before it scans roots (review finding 1: with a Relaxed check before
//! the push, a whole start stop could run between the two and the value,
//! white, reach a task already scanned). Cost outside a mark: a running
//! task pays one non-inlined TLS read per send of a pointer-sized value.
//! Join results and panic payloads are shaded when stored (`Packet::run`;
//! redundant by the same argument, kept as it is cheap).
//!
//! **What `blocking` closures may not do**: move a GC reference out of the
//! task's frozen frames by other means than a channel/select send or a
//! spawn (e.g. into a global, a `Mutex`, or a result returned by the
//! closure): such a move is not shaded, and the task's frames above the
//! recorded SP may already have been scanned, so the value can be lost.
//! Also unsupported (as before this change): a send from `blocking` that
//! blocks (full channel, or a rendezvous) across a start stop (the value
//! then waits in the sender's frame below the recorded SP, which no scan
//! reads), and GC references that live only in the closure's own frames
//! or captures (the wrapper's writes of the closure and its result above
//! the recorded SP are not scanned atomically with it). Keep GC references
//! a `blocking` closure uses reachable from the task's own frames until it
//! returns.
//!
//! **Who writes what.** `StackScan::epoch`: the collector, in the start
//! stop (world stopped); read by anyone (workers read it outside stops,
//! which order it; a thread leaving `blocking` waits out a stop first).
//! `Task::scan`: CAS by the claimers above; stored by `prepare` (the owner)
//! before the task is published.
//!
//! Hook points in other files:
//! `worker/switch.rs` `switch_to` and `schedule_loop` ([`before_resume`]),
//! `worker/blocking.rs` `blocking_dyn` and `stw.rs` `safe_region` (leaving
//! `blocking`: [`before_resume`]), `tasks/tcb.rs` (`Task::scan`, `prepare`),
//! `join.rs` (`spawn_in`: [`publish`]; `Packet::run`: [`shade_range`]),
//! `sync/mpsc.rs` `Chan::send` and `sync/select.rs` send case
//! ([`publish`]), `glue/gc_world.rs` (the World methods), `shared.rs`
//! (`Shared::stack_scan`).

use crate::shared::Shared;
use crate::tasks::tcb::{state, Task, TaskRef};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Whether a value of type `T` may hold a pointer (GC values are words).
pub(crate) const fn may_hold_pointer<T>() -> bool {
    std::mem::size_of::<T>() >= std::mem::size_of::<usize>()
}

/// Per-runtime state of the per-task stack scan.
pub(crate) struct StackScan {
    /// The current scan epoch. Written only by the collector in a start
    /// stop (`begin`), read by claimers.
    pub(crate) epoch: AtomicU64,
    /// Set by `begin` in the start stop, consumed by the same stop's
    /// `for_each_conservative_range` (which then omits the task stacks).
    omit_stacks: AtomicBool,
    /// Set by the start stop that omitted the channel buffers (`defer_buffers`),
    /// consumed by the same cycle's `World::for_each_deferred_range`, which
    /// then walks them.
    buffers_deferred: AtomicBool,
}

impl StackScan {
    pub(crate) const fn new() -> StackScan {
        StackScan { epoch: AtomicU64::new(0), omit_stacks: AtomicBool::new(false), buffers_deferred: AtomicBool::new(false) }
    }
}

/// Test-only switch (negative control of the resume-side claim): when
/// false, resumers neither claim nor scan, and the collector counts a
/// running unscanned task as scanned (it may not read a running stack).
static RESUME_CLAIM: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative control of the send-side shading).
static SEND_SHADING: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative control of the receive-side shading of the
/// deferred channel-buffer scan, `shade_received`).
static RECV_SHADING: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative control of review finding 1): when false,
/// threads without a mutator check "a heap marks" outside the shading gate
/// before publishing (the pre-fix order).
static GATED_PUBLISH: AtomicBool = AtomicBool::new(true);
/// Test-only: a delay (ms) between the marking check and the publication
/// on threads without a mutator (0: none), and its signal.
static PUBLISH_DELAY_MS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PUBLISH_DELAYED: AtomicBool = AtomicBool::new(false);
/// Test-only switch (negative control of the per-task scan as a whole):
/// when true, the collector claims tasks without scanning them, and
/// resumers skip the scan (see `claim_slow`).
static COLLECTOR_SKIPS_SCAN: AtomicBool = AtomicBool::new(false);
/// Test-only: the id of a task the collector must not claim (0: none).
static HELD: AtomicU64 = AtomicU64::new(0);
/// Stacks scanned by collectors, and by resumers (process-wide, all
/// runtimes; statistics for tests).
pub(crate) static BY_COLLECTOR: AtomicUsize = AtomicUsize::new(0);
pub(crate) static BY_RESUMER: AtomicUsize = AtomicUsize::new(0);

#[cfg(feature = "test-hooks")]
pub(crate) fn set_resume_claim_for_tests(on: bool) {
    RESUME_CLAIM.store(on, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn set_send_shading_for_tests(on: bool) {
    SEND_SHADING.store(on, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn set_recv_shading_for_tests(on: bool) {
    RECV_SHADING.store(on, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn set_gated_publish_for_tests(on: bool) {
    GATED_PUBLISH.store(on, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn set_publish_delay_for_tests(ms: u64) {
    PUBLISH_DELAYED.store(false, Ordering::SeqCst);
    PUBLISH_DELAY_MS.store(ms, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn set_skip_scans_for_tests(on: bool) {
    COLLECTOR_SKIPS_SCAN.store(on, Ordering::SeqCst);
}
#[cfg(feature = "test-hooks")]
pub(crate) fn hold_for_tests(task_id: u64) {
    HELD.store(task_id, Ordering::SeqCst);
}

/// The collector, in a concurrent cycle's start stop (world stopped): a new
/// epoch (every live task unscanned), the collecting task (if it is one of
/// ours) scanned already (the GC scans its own stack), and the stop's
/// conservative ranges without the task stacks.
///
/// The GC scans the collecting thread's stack from its SP only if that SP
/// lies in `current_stack_bounds` (the current task's stack). If the
/// collector runs elsewhere (its frames not on the task's stack), its task
/// would be neither scanned nor claimable (it runs through the cycle), so
/// this cycle keeps the stacks in its stop instead (returns false, epoch
/// unchanged).
pub(crate) fn begin(sh: &Shared) -> bool {
    let cur = crate::worker::current_task();
    // SAFETY: the current task is valid while it runs.
    let ours = !cur.is_null() && std::ptr::eq(unsafe { (*cur).shared }, sh);
    if ours {
        let here = &cur as *const _ as usize;
        // SAFETY: as above.
        let (lo, hi) = unsafe { ((*cur).stack.lo(), (*cur).stack.hi()) };
        if !(lo <= here && here < hi) {
            return false;
        }
    }
    let e = sh.stack_scan.epoch.load(Ordering::Relaxed) + 1;
    sh.stack_scan.epoch.store(e, Ordering::Release);
    if ours {
        // SAFETY: as above.
        unsafe { (*cur).scan.store(e << 1, Ordering::Release) };
    }
    sh.stack_scan.omit_stacks.store(true, Ordering::Relaxed);
    true
}

/// The start stop's `for_each_conservative_range`: whether to omit the task
/// stacks (once per `begin`).
pub(crate) fn omit_stacks_now(sh: &Shared) -> bool {
    sh.stack_scan.omit_stacks.swap(false, Ordering::Relaxed)
}

/// In a stop's `for_each_conservative_range` (`stacks_omitted`: it omits
/// the task stacks, a concurrent cycle's start stop): whether it omits the
/// spawn closures (scanned with the stacks, [`closure_of`]) and the channel
/// buffers too (the cycle then walks them with the world running,
/// `heap_roots::for_each_deferred`); records the answer for
/// [`take_deferred_buffers`]. With stacks omitted, `false` only with the
/// negative control (`hooks::set_runtime_roots_in_stop_for_tests`, which
/// puts both back in the stop).
pub(crate) fn defer_buffers(sh: &Shared, stacks_omitted: bool) -> bool {
    let defer = stacks_omitted && DEFER_BUFFERS.load(Ordering::Relaxed);
    sh.stack_scan.buffers_deferred.store(defer, Ordering::Relaxed);
    defer
}

/// Whether this cycle's start stop left the channel buffers for
/// `World::for_each_deferred_range` (once per cycle).
pub(crate) fn take_deferred_buffers(sh: &Shared) -> bool {
    sh.stack_scan.buffers_deferred.swap(false, Ordering::Relaxed)
}

/// Test-only switch: `false` makes the start stops scan channel buffers,
/// as before (the negative control of the deferred walk).
static DEFER_BUFFERS: AtomicBool = AtomicBool::new(true);

#[cfg(feature = "test-hooks")]
pub(crate) fn set_defer_buffers_for_tests(on: bool) {
    DEFER_BUFFERS.store(on, Ordering::SeqCst);
}

/// `[from, hi)`: what a scan of a switched-out task reads (saved SP minus
/// the red zone up to the stack top), or `None` if the SP is not on it.
///
/// # Safety
/// `t` is a live task that is not running and cannot resume meanwhile.
unsafe fn range_of(t: *mut Task) -> Option<(usize, usize)> {
    // SAFETY: per the contract, the saved SP is stable.
    let (sp, lo, hi) = unsafe { (*(*t).sp.get(), (*t).stack.lo(), (*t).stack.hi()) };
    if lo <= sp && sp <= hi {
        let from = sp.saturating_sub(crate::arch::RED_ZONE).max(lo);
        (from < hi).then_some((from, hi))
    } else {
        None
    }
}

/// The spawn closure of task `t` if it has not started (its captured
/// values, in the task's packet until it takes them onto its stack), or
/// `None`. Scanned with its stack, by the collector or the resumer: so a
/// concurrent cycle's start stop need not visit every task for the
/// closures (`heap_roots::for_each_spawn_closure`; 10k parked tasks made
/// that stop 0.1 ms long), and a task cannot take an unscanned closure
/// onto a black stack. [`set_closures_with_stacks_for_tests`]`(false)`
/// leaves them out (the negative control).
///
/// # Safety
/// As [`range_of`]: `t` is live, not running, and cannot resume meanwhile
/// (nobody takes its closure), and not FREE (its body is set). One
/// exception, as in the stop's walk before: a runtime's shutdown marks its
/// remaining tasks ABANDONED and drops their closures (`Shared::abandon_remaining`)
/// from a thread no stop waits for; a scan racing it reads words of a
/// closure being dropped, conservatively (at worst an object kept one
/// cycle more; review 117).
unsafe fn closure_of(t: *mut Task) -> Option<(usize, usize)> {
    if !CLOSURES_WITH_STACKS.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: per the contract, the body is set and nobody takes the
    // closure meanwhile.
    let (lo, hi) = unsafe { (*(*t).body.get()).as_ref().map_or((0, 0), |b| b.closure_range()) };
    (lo < hi).then_some((lo, hi))
}

/// Test-only switch (negative control of [`closure_of`]).
static CLOSURES_WITH_STACKS: AtomicBool = AtomicBool::new(true);

#[cfg(feature = "test-hooks")]
pub(crate) fn set_closures_with_stacks_for_tests(on: bool) {
    CLOSURES_WITH_STACKS.store(on, Ordering::SeqCst);
}

/// Tasks the collector visits per hold of the registry lock (a spawn that
/// allocates a new task struct waits for it meanwhile).
const CHUNK: usize = 64;

/// The collector (`World::scan_task_stacks`): claim and scan every
/// unscanned task that is not running; true when no task is left unscanned.
///
/// The registry lock keeps every task struct alive while it is held (a
/// struct is freed only after leaving the registry). The pass claims up to
/// [`CHUNK`] tasks per hold of the lock and scans them after dropping it (a
/// claimed task cannot resume, hence cannot exit, so its struct and stack
/// stay). Between chunks the registry may change (a removal moves the last
/// task into the hole, which this pass may then miss), so a pass that found
/// work says "not done", and "done" is only said by a pass that found
/// nothing to do, confirmed by one check of every task under a single hold
/// of the lock (loads only, no scanning).
///
/// ABANDONED tasks (left suspended or in `blocking` by a runtime shut down
/// with tasks alive; review finding 2) are claimed and scanned like parked
/// ones: they never resume, and one still inside `blocking` respects the
/// claim when it leaves it. So objects only their stacks hold survive a
/// collection after the shutdown, as they did when every stop scanned them.
pub(crate) fn scan_task_stacks(sh: &Shared, f: &mut dyn FnMut(usize, usize)) -> bool {
    let want = sh.stack_scan.epoch.load(Ordering::Acquire) << 1;
    let held = HELD.load(Ordering::Relaxed);
    let claim_on = RESUME_CLAIM.load(Ordering::Relaxed);
    let no_scan = COLLECTOR_SKIPS_SCAN.load(Ordering::Relaxed);
    let mut busy = false;
    let mut i = 0;
    let mut claimed = [std::ptr::null_mut::<Task>(); CHUNK];
    loop {
        let mut n = 0;
        {
            let reg = sh.registry.lock();
            if i >= reg.len() {
                break;
            }
            let end = reg.len().min(i + CHUNK);
            for &t in &reg[i..end] {
                // SAFETY: registered tasks are valid while the lock is held.
                let task = unsafe { &*t };
                let s = task.state.load(Ordering::Acquire);
                if s == state::FREE {
                    continue;
                }
                let v = task.scan.load(Ordering::Acquire);
                if v == want {
                    continue;
                }
                busy = true;
                if s == state::RUNNING && !claim_on {
                    // Negative control only: a task resumed without a claim
                    // runs unscanned; its stack cannot be read while it runs.
                    let _ = task.scan.compare_exchange(v, want, Ordering::AcqRel, Ordering::Relaxed);
                    continue;
                }
                if v & 1 == 1 || s == state::RUNNING || (held != 0 && task.id.get() == held) {
                    // Being scanned by its resumer (RUNNING is stored after
                    // the claim), or held by a test: not ours now.
                    continue;
                }
                if task.scan.compare_exchange(v, want | 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    continue; // a resumer won: it scans
                }
                claimed[n] = t;
                n += 1;
            }
            i = end;
        }
        // Scanned with the registry lock dropped (a spawn allocating a task
        // struct does not wait for these scans).
        for &t in &claimed[..n] {
            if !no_scan {
                // SAFETY: we hold the claim: the task cannot resume (a
                // resumer waits for "scanned"), hence not exit or leave the
                // registry, and is not running (it was not RUNNING, and
                // every resume claims first), so its struct, its saved SP
                // and the frames above it are stable and mapped.
                if let Some((lo, hi)) = unsafe { range_of(t) } {
                    f(lo, hi);
                }
                // SAFETY: as above (claimed tasks are not FREE).
                if let Some((lo, hi)) = unsafe { closure_of(t) } {
                    f(lo, hi);
                }
            }
            BY_COLLECTOR.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { (*t).scan.store(want, Ordering::Release) };
        }
    }
    if busy {
        return false;
    }
    let reg = sh.registry.lock();
    reg.iter().all(|&t| {
        // SAFETY: as above.
        let task = unsafe { &*t };
        task.state.load(Ordering::Acquire) == state::FREE || task.scan.load(Ordering::Acquire) == want
    })
}

/// Before task `t` runs again (a worker switching to it, or the task
/// leaving `blocking`): make sure its stack is scanned for the current
/// epoch, scanning it here if nobody has.
#[inline(always)]
pub(crate) fn before_resume(sh: &Shared, t: TaskRef) {
    // `t` is a task owned by the caller (about to run it).
    let v = t.scan.load(Ordering::Acquire);
    if v != sh.stack_scan.epoch.load(Ordering::Relaxed) << 1 {
        claim_slow(sh, t);
    }
}

#[cold]
#[inline(never)]
fn claim_slow(sh: &Shared, t: TaskRef) {
    let task = &*t;
    let mut n = 0u32;
    loop {
        let want = sh.stack_scan.epoch.load(Ordering::Acquire) << 1;
        let v = task.scan.load(Ordering::Acquire);
        if v == want {
            return;
        }
        if v & 1 == 1 {
            // The collector scans it: wait for the end of its scan.
            n += 1;
            if n < 128 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        if !RESUME_CLAIM.load(Ordering::Relaxed) {
            return;
        }
        if task.scan.compare_exchange(v, want | 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let ranges = if COLLECTOR_SKIPS_SCAN.load(Ordering::Relaxed) {
                [None, None] // negative control only: claimed, not scanned
            } else {
                // SAFETY: we own `t` (about to run it) and hold the claim:
                // its saved SP and frames above it are stable and mapped,
                // and its closure, if not yet taken, stays in its packet.
                unsafe { [range_of(t.as_ptr()), closure_of(t.as_ptr())] }
            };
            for (lo, hi) in ranges.into_iter().flatten() {
                // SAFETY: the range is on the task's mapped stack, or its
                // closure in its packet (kept by the task's body).
                unsafe { sh.heap.shade_conservative_range(lo, hi) };
            }
            BY_RESUMER.fetch_add(1, Ordering::Relaxed);
            task.scan.store(want, Ordering::Release);
            return;
        }
    }
}

/// Publish `v` (move it into memory the runtime owns: a channel's buffer,
/// a receiver's slot, a sender's wait node, a select's storage) by
/// `publish(v)`, shading its bytes if a heap marks, atomically with
/// respect to the start stop (review finding 1).
///
/// * On a thread the World stops (a task running on its worker, whose
///   mutator is of its runtime's heap): nothing to shade. Its stack is black (scanned before it resumed in this
///   cycle, or a new task), so `v` came from a scanned stack, from the
///   heap after that scan (then reachable from a grey object or shaded by
///   the barrier when its heap copy is overwritten), or was allocated
///   black; and `publish` runs wholly before a stop or after it.
/// * On any other thread (a task inside `blocking`: no mutator, not
///   stopped, its frames below the recorded SP never scanned): the check
///   "a heap marks?", the shading and `publish` run inside the GC's
///   shading gate ([`usurp_gc::internals::outside_marking_stops`]), which
///   the collector closes right after stopping the world and before it
///   scans roots. So either the value is published before the start stop
///   scans the runtime-owned ranges (a buffer, or the receiver's stack),
///   or the check sees marking on and the value is shaded. `publish` must
///   not block (a full channel's wait comes after it returns). So does a
///   thread whose mutator is of another heap (a `blocking` closure that
///   attached a heap of its own, a task of another runtime): this
///   runtime's stops do not stop it (review 117; it used to take the fast
///   path on having *a* mutator).
#[inline(always)]
pub(crate) fn publish<T, R>(v: T, publish: impl FnOnce(T) -> R) -> R {
    if !may_hold_pointer::<T>() || usurp_gc::internals::has_mutator_of_sole_heap() || stopped_by_own_runtime() {
        return publish(v);
    }
    publish_gated(v, publish)
}

/// [`publish`] for runtime `sh` (a spawn into `sh`, maybe from a task of
/// another runtime).
#[inline(always)]
pub(crate) fn publish_in<T, R>(sh: &Shared, v: T, publish: impl FnOnce(T) -> R) -> R {
    if !may_hold_pointer::<T>() || usurp_gc::internals::is_mutator_of(&sh.heap) {
        return publish(v);
    }
    publish_gated(v, publish)
}

/// Whether the calling thread's mutator is of its runtime's heap (so that
/// runtime's stops stop it). Out of line: a task may migrate between OS
/// threads, so its thread's state is read afresh.
#[inline(never)]
fn stopped_by_own_runtime() -> bool {
    with_own_runtime(|sh| usurp_gc::internals::is_mutator_of(&sh.heap)).unwrap_or(false)
}

/// `f` with the runtime of the calling thread's machine (a worker's, also
/// inside `blocking`); `None` on a thread without one.
fn with_own_runtime<R>(f: impl FnOnce(&Shared) -> R) -> Option<R> {
    let m = crate::worker::machine();
    if m.is_null() {
        return None;
    }
    // SAFETY: a machine lives as long as its thread (we are on it), and
    // keeps its runtime alive.
    Some(f(unsafe { &(*m).shared }))
}

#[cold]
#[inline(never)]
fn publish_gated<T, R>(v: T, publish: impl FnOnce(T) -> R) -> R {
    if !GATED_PUBLISH.load(Ordering::Relaxed) {
        // Negative control only: the pre-fix order (a Relaxed check
        // outside the gate, then the publication).
        shade_value_if_marking(&v);
        publish_delay_for_tests();
        return publish(v);
    }
    usurp_gc::internals::outside_marking_stops(move || {
        shade_value_if_marking(&v);
        publish_delay_for_tests();
        publish(v)
    })
}

/// A task took `v` out of a channel's buffer, which a concurrent cycle
/// scans with the world running (`heap_roots.rs`): while a heap marks,
/// shade its bytes (the deletion half), before the task reaches a safe
/// point (the caller holds the channel's lock). Nothing on a thread
/// without a mutator (a plain thread, a `blocking` closure: its frames
/// are no roots), and nothing for values too small to hold a pointer.
#[inline(always)]
pub(crate) fn shade_received<T>(v: &T) {
    if may_hold_pointer::<T>() && usurp_gc::internals::any_heap_marking() {
        shade_received_slow(v as *const T as usize, std::mem::size_of::<T>());
    }
}

/// [`shade_received`] for values leaving a buffer together (a
/// `Receiver`'s drop empties it: a value's `Drop` may hand its references
/// on, and a send from a task is not shaded).
#[inline(always)]
pub(crate) fn shade_received_all<T>(s: &[T]) {
    if may_hold_pointer::<T>() && !s.is_empty() && usurp_gc::internals::any_heap_marking() {
        shade_received_slow(s.as_ptr() as usize, std::mem::size_of_val(s));
    }
}

/// Only on a thread whose mutator is of its runtime's heap: the shading
/// then takes no gate, which must not be waited for under the channel's
/// lock (review 116: a `blocking` closure that attached a heap of its own
/// went through the gate here, and another runtime's start stop, holding
/// the gate closed, waited for the channel's lock). Any other thread's
/// frames are no roots.
#[cold]
#[inline(never)]
fn shade_received_slow(lo: usize, len: usize) {
    if !RECV_SHADING.load(Ordering::Relaxed) {
        return;
    }
    with_own_runtime(|sh| {
        if usurp_gc::internals::is_mutator_of(&sh.heap) {
            // SAFETY: the caller guarantees the range.
            unsafe { sh.heap.shade_conservative_range(lo, lo + len) };
        }
    });
}

fn shade_value_if_marking<T>(v: &T) {
    if usurp_gc::internals::any_heap_marking() {
        let lo = v as *const T as usize;
        shade_range(lo, lo + std::mem::size_of::<T>());
    }
}

/// Test-only: between the marking check and the publication on a thread
/// without a mutator, signal [`PUBLISH_DELAYED`] and sleep this long (ms).
fn publish_delay_for_tests() {
    let ms = PUBLISH_DELAY_MS.load(Ordering::Relaxed);
    if ms != 0 {
        PUBLISH_DELAYED.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Shade `[lo, hi)` (readable for the duration of the call) with the heap
/// of the calling thread's runtime (a task's, also inside `blocking`);
/// nothing on another thread (its values are no roots anyway). Call only
/// after a cheap `any_heap_marking` check.
#[cold]
#[inline(never)]
pub(crate) fn shade_range(lo: usize, hi: usize) {
    if SEND_SHADING.load(Ordering::Relaxed) {
        // SAFETY: the caller guarantees the range.
        with_own_runtime(|sh| unsafe { sh.heap.shade_conservative_range(lo, hi) });
    }
}

/// [`shade_range`] with the heap of runtime `sh` (a spawn into `sh`).
#[cold]
#[inline(never)]
pub(crate) fn shade_range_in(sh: &Shared, lo: usize, hi: usize) {
    if SEND_SHADING.load(Ordering::Relaxed) {
        // SAFETY: the caller guarantees the range.
        unsafe { sh.heap.shade_conservative_range(lo, hi) };
    }
}
