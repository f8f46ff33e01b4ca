//! The blocking handoff (`crate::blocking`): the worker goes to a spare
//! thread while the calling thread runs the closure on the task's stack, or
//! (when the worker holds tasks pinned to its thread) the calling task moves
//! to a spare thread; when neither is possible the closure runs in place.
//! After the runtime's shutdown began it runs in place, and the task then
//! switches to its scheduler loop (which stops the worker): a task looping
//! on `blocking` would otherwise never get there, and `Runtime::drop`
//! waited for it for ever (red-team finding blockloop, session 14).
//! `blocking_leave_worker` (a `Runtime::drop` from a task of another
//! runtime) hands the worker off even then, so that the runtime can stop
//! while the closure waits.

use crate::arch;
use crate::tasks::tcb::state;
use std::ptr;
use std::sync::atomic::Ordering;
use super::machine::{machine, Current, Machine};
use super::switch::{finish_switch, switch_to, A_ADOPT, A_REQUEUE};

/// Runs `f` with this task's worker handed to another thread (see
/// `crate::blocking`).
///
/// Non-generic and never inlined (issue 11 item 3): `crate::blocking` is
/// generic, so it is instantiated in the user's crate and can be inlined
/// into a `preemptible!` function; everything that touches the worker (the
/// pinned counter's read-modify-write, switches) must stay here, in the
/// runtime's own non-preemptible code. The generic shim only moves the
/// closure and its result through its own locals.
#[inline(never)]
pub(crate) fn blocking_dyn(f: &mut dyn FnMut()) {
    blocking_impl(f, false)
}

/// [`blocking_dyn`] for a wait that may need this task's own runtime to
/// finish its shutdown first: `Runtime::drop` of another runtime, called
/// from a task of this one (red-team RT-sched finding 2: runtimes A and B,
/// each dropped from a task of the other, used to deadlock, each drop
/// holding a worker of the runtime the other waits for). Unlike
/// `blocking`, it also leaves the worker once this runtime is shutting
/// down: the worker goes to a thread of its own (a spare, or a new one
/// beyond `max_blocking_threads`), which sees the shutdown and stops it,
/// so this runtime's shutdown completes while `f` waits (the task is then
/// abandoned like any other unfinished task: when `f` returns, it is queued
/// on the stopped runtime and never resumes). Tasks pinned to this worker
/// do not hold it here: a stopping worker runs no task.
#[inline(never)]
pub(crate) fn blocking_leave_worker(f: &mut dyn FnMut()) {
    blocking_impl(f, true)
}

#[inline(never)]
fn blocking_impl(f: &mut dyn FnMut(), leave_at_shutdown: bool) {
    // A request outstanding (a refused tick, a stop) is honoured first: run
    // in place below (no spare thread), the closure would otherwise keep it,
    // and with it the process-wide request count (every allocation's and
    // `Gc<T>` deref's poll on its slow path), raised until it returns. The
    // checkpoint may move this task to another worker: it comes before the
    // worker is read. Not for `blocking_leave_worker` (a drop of another
    // runtime): it always hands the worker off (nothing is held while `f`
    // runs), and at its own runtime's shutdown the checkpoint would switch
    // to the scheduler loop, which stops the worker, and the task would
    // never run the drop it is in: with runtimes A and B dropped from each
    // other's tasks, both tasks were abandoned before either drop waited,
    // and no one finished either shutdown (their joiners waited for ever).
    if !leave_at_shutdown {
        usurp_preempt::checkpoint();
    }
    let Some(c) = Current::get() else { return f() };
    // The task and its runtime stay valid across the switches below; the
    // machine and worker are borrowed from `c` only until the task leaves
    // them (`switch_to` consumes `c`).
    let cur = c.task();
    let sh = cur.shared();
    let w = c.worker();
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        // The stopper keeps running through its stop: blocking in place is
        // harmless (and handing off or counting as stopped would wait for
        // the start only it can give).
        return f();
    }
    w.clear_pin(cur);
    // SeqCst: a drop of another runtime from here (`leave_at_shutdown`)
    // must see a concurrent drop of this one, as that drop's hand-off does
    // (review 107: on aarch64 a Relaxed load could miss it, and two crossed
    // drops both ran in place).
    let shutdown = sh.shutdown.load(Ordering::SeqCst);
    // Leaving a shutting-down runtime's worker (`blocking_leave_worker`):
    // handed off even to a thread beyond the limit, pinned tasks or not (a
    // worker that sees the shutdown stops at once and runs nothing).
    // Not the task that dropped this runtime (it runs on, on this worker:
    // handed off, the worker would stop and the task be abandoned when the
    // closure returns; review 107): it runs `f` in place below.
    let leave = leave_at_shutdown && sh.shutting_down_for(cur.as_ptr());
    // Tasks pinned here must resume on this thread, so the worker cannot be
    // handed off. Move this task to a spare thread instead (issue 11 item
    // 1: running `f` in place would deadlock if it waits for a pinned task).
    let adopt: *const Machine = if w.pinned.get() > 0 && !shutdown { sh.take_spare() } else { ptr::null() };
    // No spare thread to be had for a move: `f` runs in place (below).
    let in_place = !leave && ((w.pinned.get() > 0 && adopt.is_null()) || shutdown);
    let mut res: Option<std::thread::Result<()>> = None;
    let mut handed = false;
    let mut guard = Some(c);
    // Run everything below a frame holding all callee-saved registers, and
    // record that frame's SP as the task's saved SP: while `f` runs, the
    // frames above it are frozen, and a conservative scan of
    // [sp - RED_ZONE, stack top) sees every value they hold, registers
    // included. The closure must not panic (it runs under an assembly
    // frame): `f`'s panics are caught and resumed afterwards.
    let mut leave = |sp: usize| {
        let Some(c) = guard.take() else { return };
        // Counted from before the task leaves its worker until it is queued
        // again (`requeue_after_blocking`): an idle worker keeps searching
        // for its return meanwhile (`Worker::others_run`).
        sh.in_blocking.fetch_add(1, Ordering::Relaxed);
        if !adopt.is_null() {
            let w = c.worker();
            // SAFETY: we popped `adopt` from the spare list: it waits for
            // exactly this (see `Shared::take_spare`).
            unsafe { (*adopt).adopt_sp.store(sp, Ordering::Relaxed) };
            w.adopt_to.set(adopt);
            let next = w.next_fast();
            // SAFETY: `next_fast` returns `None` or a task claimed for `w`.
            // `finish_switch(A_ADOPT)` on this thread hands this task to the
            // spare, on which it resumes here, with no worker.
            unsafe { switch_to(c, next, A_ADOPT) };
        } else {
            let (m, w) = (c.machine(), c.worker());
            // Its time in the handed-off closure is not CPU time on a
            // worker (see `dump.rs`): charge what it used up to here.
            w.charge(cur);
            // SAFETY: `cur` is the running task, owned by this thread.
            unsafe { *cur.sp.get() = sp };
            cur.state.store(state::BLOCKING, Ordering::SeqCst);
            // The task leaves its worker: this thread gets no preemption
            // signals while it blocks; the thread taking `w` over installs
            // its own slot.
            let slot = w.slot.swap(ptr::null_mut(), Ordering::AcqRel);
            w.running_task.store(0, Ordering::Relaxed);
            m.worker.set(ptr::null());
            if !sh.handoff(w, leave_at_shutdown) {
                // No spare thread: undo, and run in place below (the guard
                // is dropped: the in-place path needs no worker reference).
                // Hook (stack_scan.rs): a collector may have claimed it
                // as BLOCKING meanwhile.
                crate::stack_scan::before_resume(sh, cur);
                m.worker.set(w);
                cur.state.store(state::RUNNING, Ordering::SeqCst);
                w.running_task.store(cur.as_ptr() as usize, Ordering::Relaxed);
                w.slot.store(slot, Ordering::Release);
                sh.in_blocking.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            // SAFETY: slots are `'static`.
            if let Some(s) = unsafe { slot.as_ref() } {
                cur.preempt_state.set(s.switch_out());
                let _ = s.set_idle(true);
            }
        }
        handed = true;
        // The task counts as stopped: no allocation in `f` (the GC's slow
        // path reports why); the thread's mutator is back right after `f`.
        let no_alloc = usurp_gc::forbid_allocation(crate::stw::INSIDE_BLOCKING);
        res = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f)));
        // A stopped world must not see this task move: wait here.
        crate::stw::wait_until_started(sh);
        crate::stw::check_left_blocking_without_stops();
        // Hook (stack_scan.rs): the frames above `sp` are written again
        // from here on: scanned for the GC's epoch first. Still without a
        // mutator, so a scan it does goes through the shading gate (a stop
        // may begin after the wait above: its marking is exclusive).
        crate::stack_scan::before_resume(sh, cur);
        drop(no_alloc);
        // Back from the blocking call: queue ourselves globally via this
        // thread's scheduler context (which then becomes a spare thread).
        let m = machine();
        // SAFETY: still on the same thread since the closure started (an
        // adopted task runs it entirely on the spare); its machine.
        unsafe {
            (*m).current.set(ptr::null_mut());
            let r = arch::switch(cur.sp.get(), *(*m).sched_sp.get(), cur.as_ptr() as usize | A_REQUEUE);
            finish_switch(r);
        }
    };
    if !in_place {
        arch::with_registers_spilled(&mut leave);
    }
    if !handed {
        // The in-place fallback (the only one): no spare thread could be
        // had, either up front or when the handoff found none. The thread
        // counts as stopped while `f` runs.
        crate::stw::safe_region(sh, f);
        crate::stw::check_left_blocking_without_stops();
        if sh.shutting_down_for(cur.as_ptr()) {
            // The runtime shuts down (it did already if that is why `f` ran
            // in place): the task goes to its scheduler loop, which stops
            // the worker, and is abandoned like the others. A checkpoint
            // would find no request, and a task looping on `blocking`
            // never reached its scheduler: `Runtime::drop` waited for ever
            // (red-team finding blockloop, session 14).
            if let Some(c) = Current::get() {
                super::switch::yield_current(c);
            }
            return;
        }
        // Ran in place on this worker: if the quantum ran out meanwhile (a
        // refused tick set the checkpoint flag), let the others run now.
        usurp_preempt::checkpoint();
        return;
    }
    if let Err(p) = res.expect("blocking closure ran") {
        std::panic::resume_unwind(p);
    }
}
