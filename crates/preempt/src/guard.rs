//! No-preemption sections and the cooperative checkpoint.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::slot::{current_ptr, POLL};
use crate::stats::Counters;

/// While alive, the task that created it is not preempted asynchronously
/// (the safe-point check refuses with `Refusal::NoPreempt`). Nestable. The
/// depth lives in the worker slot while the task runs and travels with the
/// task across cooperative switches (`switch_out`/`switch_in`), so a guard
/// may be dropped on another worker than the one it was created on. Outside a
/// worker thread it does nothing.
#[must_use = "the section ends when the guard is dropped"]
pub struct NoPreempt {
    pub(crate) _not_send: PhantomData<*const ()>,
}

/// Enters a no-preemption section: finds the calling thread's worker slot
/// and raises its depth, in one function that is never inlined. Inlined
/// into a caller's `preemptible!` code, the lookup (an out-of-line call)
/// and the increment would be separate steps of preemptible code: a tick
/// between them could move the task to another worker, which would then
/// raise the depth of the worker it left (that worker's other tasks never
/// preempted again) and lower its own on exit (review of the scheduler's
/// spin-lock guard, session 9). Out of line, this code is never a safe
/// point (it is not registered preemptible), and once it returns the depth
/// is already raised on the slot the task runs on. Returns that slot (null
/// outside a worker thread).
/// (The thread-local is read here directly rather than through
/// `current_ptr`: this function never switches tasks, so its own read
/// cannot be a stale cached address, and the section costs one call.)
#[inline(never)]
fn enter_section() -> *const crate::slot::WorkerSlot {
    let slot = crate::slot::current_ptr_here();
    // SAFETY: CURRENT holds only `&'static WorkerSlot`s (or null).
    if let Some(s) = unsafe { slot.as_ref() } {
        // Single writer (this thread); the handler only reads.
        let d = s.no_preempt.load(Ordering::Relaxed);
        s.no_preempt.store(d.saturating_add(1), Ordering::Relaxed);
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    slot
}

impl NoPreempt {
    /// Enters a no-preemption section.
    #[inline]
    pub fn new() -> NoPreempt {
        enter_section();
        NoPreempt { _not_send: PhantomData }
    }
}

impl NoPreempt {
    /// Test-only: the entry as it was before [`enter_section`] (session 9),
    /// inlined into the caller: the slot lookup is an out-of-line call and
    /// the depth is raised in the caller's code after it returns. Inlined
    /// into `preemptible!` code, a preemption between the two can move the
    /// task to another worker, which then raises the depth of the worker it
    /// left and runs its section unprotected (the negative control of
    /// tests/preempt_no_preempt_entry.rs). Never for use outside tests. A
    /// separate constructor rather than a switch in [`NoPreempt::new`]:
    /// that is on every spin lock's path, and the old form must be inlined
    /// into the test's preemptible code to show its window.
    ///
    /// # Safety
    /// Inside `preemptible!` code the section may run unprotected and the
    /// depth of another worker stay raised for good (that worker's tasks are
    /// never preempted again): only for the test that shows it.
    #[doc(hidden)]
    #[inline(always)]
    #[cfg(feature = "test-hooks")]
    pub unsafe fn new_inlined_for_tests() -> NoPreempt {
        // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
        if let Some(slot) = unsafe { current_ptr().as_ref() } {
            let d = slot.no_preempt.load(Ordering::Relaxed);
            slot.no_preempt.store(d.saturating_add(1), Ordering::Relaxed);
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
        }
        NoPreempt { _not_send: PhantomData }
    }
}

impl Default for NoPreempt {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoPreempt {
    #[inline]
    fn drop(&mut self) {
        // Re-read the slot: the task may have moved to another worker.
        // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
        if let Some(slot) = unsafe { current_ptr().as_ref() } {
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            let d = slot.no_preempt.load(Ordering::Relaxed);
            slot.no_preempt.store(d.saturating_sub(1), Ordering::Relaxed);
        }
    }
}

/// A [`NoPreempt`] for a section that never switches tasks: its holder
/// neither yields, parks nor blocks in a task before dropping it (the
/// scheduler's spin locks). A task changes threads only by switching, so
/// the worker slot found on entry is the one to restore on exit: the exit
/// needs no thread-local lookup (one fewer per section on the scheduler's
/// hot paths). Debug builds check on exit that the slot is still the
/// calling thread's. Otherwise it behaves as [`NoPreempt`] (nestable with
/// it; nothing outside a worker thread).
#[doc(hidden)]
#[must_use = "the section ends when the guard is dropped"]
pub struct NoPreemptNoSwitch {
    /// The calling thread's slot at entry (null outside a worker).
    slot: *const crate::slot::WorkerSlot,
}

impl NoPreemptNoSwitch {
    /// Enters a no-preemption section that will be left on this thread.
    ///
    /// # Safety
    /// The caller drops the guard on the thread that created it, without
    /// a task switch in between (no yield, park, block or `blocking` in a
    /// task while it lives): the exit lowers the depth of the slot found
    /// on entry, and on another thread that slot is another task's
    /// (whose no-preemption section, which soundness may rely on, would end
    /// early). Debug builds check it on exit.
    #[inline]
    pub unsafe fn new() -> NoPreemptNoSwitch {
        NoPreemptNoSwitch { slot: enter_section() }
    }
}

impl Drop for NoPreemptNoSwitch {
    #[inline]
    fn drop(&mut self) {
        debug_assert!(
            core::ptr::eq(self.slot, current_ptr()),
            "a NoPreemptNoSwitch section (a scheduler spin lock) switched tasks"
        );
        // SAFETY: `slot` came from CURRENT: a `&'static WorkerSlot` or
        // null, so the reference is valid. (That it is still this thread's
        // slot is `new`'s contract: a correctness condition, checked above
        // in debug builds.)
        if let Some(s) = unsafe { self.slot.as_ref() } {
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            let d = s.no_preempt.load(Ordering::Relaxed);
            s.no_preempt.store(d.saturating_sub(1), Ordering::Relaxed);
        }
    }
}

/// Runs `f` with asynchronous preemption disabled for the current task.
#[inline]
pub fn no_preempt<R>(f: impl FnOnce() -> R) -> R {
    let _g = NoPreempt::new();
    f()
}

static YIELD_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function [`checkpoint`] calls when the current worker has a
/// preemption request (the scheduler's cooperative yield).
pub fn set_yield_hook(hook: fn()) {
    YIELD_HOOK.store(hook as *mut (), Ordering::Release);
}

/// The cooperative poll for code outside preemptible ranges (e.g. an
/// interpreter's back-edge): one load of a global word and a branch when no
/// worker has a request outstanding. If the current worker has one (a quantum
/// expired and the async attempt was refused, or a stop-the-world asked), it
/// is cleared and the scheduler's yield hook runs. Does nothing inside a
/// no-preempt section or outside a worker.
#[inline]
pub fn checkpoint() {
    if POLL.load(Ordering::Relaxed) != 0 {
        checkpoint_slow();
    }
}

/// Whether the calling worker has a checkpoint request outstanding (a
/// refused quantum tick or stop-the-world request that [`checkpoint`] would
/// act on). One load of a global word when no worker has one; otherwise the
/// calling thread's slot is read (out of line). For runtime fast paths
/// that must not yield where they are but can divert to a slow path that
/// calls [`checkpoint`] (the GC's allocation, issue 9 item 1).
#[inline]
pub fn checkpoint_requested() -> bool {
    POLL.load(Ordering::Relaxed) != 0 && requested_here()
}

/// Whether any worker of the process has a checkpoint request outstanding:
/// one Relaxed load of a global counter (maintained where requests are
/// posted and cleared: `WorkerSlot::set_request` / `take_request`), no
/// thread-local access. The fast path of a poll that must be cheap enough
/// to inline into guest code, even into `preemptible!` code (it touches
/// only this atomic): the GC's safe read paths (`Gc::deref`, issue 9) test
/// it and, when it is set, call their out-of-line slow path, which calls
/// [`checkpoint`] (that then reads the calling thread's own slot). Usually
/// false; true for every thread while any worker has a request, so the
/// slow path must stay cheap when the request is another worker's.
#[inline(always)]
pub fn any_checkpoint_request() -> bool {
    POLL.load(Ordering::Relaxed) != 0
}

#[inline(never)]
fn requested_here() -> bool {
    // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
    unsafe { current_ptr().as_ref() }.is_some_and(|s| s.requested.load(Ordering::Relaxed))
}

#[cold]
#[inline(never)]
fn checkpoint_slow() {
    // SAFETY: CURRENT holds only `&'static WorkerSlot`s.
    let Some(slot) = (unsafe { current_ptr().as_ref() }) else { return };
    if slot.no_preempt.load(Ordering::Relaxed) != 0 || !slot.running.load(Ordering::Relaxed) {
        return;
    }
    if slot.take_request() {
        Counters::bump(&slot.counters.checkpoint_yields);
        if slot.refusal_request.swap(false, Ordering::Relaxed) {
            Counters::bump(&slot.counters.yields_after_refusal);
            // The task answered a refused tick here: it is cooperative (its
            // next refusals are not retried soon; see `on_tick`).
            slot.cooperative.store(true, Ordering::Relaxed);
            // The next task's quantum starts at this yield.
            slot.note_cooperative_yield();
        }
        let h = YIELD_HOOK.load(Ordering::Acquire);
        if !h.is_null() {
            // SAFETY: only `fn()` pointers are stored in YIELD_HOOK.
            let f: fn() = unsafe { core::mem::transmute(h) };
            f();
        }
    }
}
