//! The switch protocol: `switch_to` (the outgoing task's half: bookkeeping,
//! then `arch::switch` with an action word) and `finish_switch` (the
//! incoming context's half: queue, park, recycle or hand over the outgoing
//! task once its registers are saved), the entry points that switch the
//! current task away (`park_current`, `yield_current`, `preempt_current`,
//! the task's exit), the park token (`unpark`), a new task's entry, and the
//! scheduler loop every thread returns to when nothing is ready locally.

use crate::arch;
use crate::shared::Shared;
use crate::sys::futex_wake;
use crate::tasks::tcb::{park, state, Task, NO_PIN};
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use super::machine::{current_cpu_cycles, Current, Machine, Worker, FREE_CACHE, MACHINE};
use crate::tasks::tcb::TaskRef;
use super::policy::{make_runnable, preempted_goes_global, FAIR_TICKS};

// Actions passed in the low bits of the switch argument.
pub(super) const A_YIELD: usize = 1;
pub(super) const A_PARK: usize = 2;
pub(super) const A_EXIT: usize = 3;
pub(super) const A_REQUEUE: usize = 4;
pub(super) const A_PREEMPT: usize = 5;
/// The outgoing task calls `blocking` and moves to the spare thread in
/// `Worker::adopt_to` (see `blocking_dyn`).
pub(super) const A_ADOPT: usize = 6;
/// Async preemption while another task waits: the outgoing task goes to
/// the global queue (see [`preempted_goes_global`]).
pub(super) const A_PREEMPT_GLOBAL: usize = 7;
pub(super) const A_MASK: usize = 7;

/// Switches from `cur` to `next` (or to this thread's scheduler loop when
/// `next` is `None`), telling the next context to apply `action` to `cur`.
/// Returns when `cur` is resumed.
///
/// Takes the [`Current`] guard by value: nothing borrowed from this
/// thread's machine or worker is usable after the switch (the task may
/// resume on another thread). A forced-inline shim over [`switch_raw`], so
/// that the guard (three words, which the Rust ABI would pass through
/// memory) never crosses a call and the callers keep their tail call.
///
/// # Safety
/// `next` is `None` or a runnable task claimed for `c`'s worker.
#[inline(always)]
pub(super) unsafe fn switch_to(c: Current, next: Option<TaskRef>, action: usize) {
    // SAFETY: `c` is the running task with its machine and worker (the
    // guard's invariant); `next` per the contract.
    unsafe { switch_raw(c.machine(), c.worker(), c.task().as_ptr(), TaskRef::ptr_or_null(next), action) }
}

/// [`switch_to`]'s body, on the guard's parts.
///
/// # Safety
/// `cur` is the task running on this thread (`m.current`), `w` its worker
/// (as a [`Current`] guard vouches), `next` null or a runnable task claimed
/// for `w`; `m` and `w` are not used by the caller after the call.
#[inline]
unsafe fn switch_raw(m: &Machine, w: &Worker, cur: *mut Task, next: *mut Task, action: usize) {
    // SAFETY: `cur` is the running task (per the contract).
    w.charge(unsafe { TaskRef::new(cur) });
    let target = if next.is_null() {
        m.current.set(ptr::null_mut());
        w.running_task.store(0, Ordering::Relaxed);
        // SAFETY: the scheduler loop's SP was saved when it switched to a task.
        unsafe { *m.sched_sp.get() }
    } else {
        m.current.set(next);
        w.running_task.store(next as usize, Ordering::Relaxed);
        // Hook (stack_scan.rs): scanned for the GC's epoch before it runs.
        // SAFETY: `next` is a runnable task we own (non-null here).
        crate::stack_scan::before_resume(w.shared(), unsafe { TaskRef::new(next) });
        // SAFETY: `next` is a runnable task we own; its SP was saved.
        unsafe {
            (*next).state.store(state::RUNNING, Ordering::Relaxed);
            *(*next).sp.get()
        }
    };
    w.bump_switch();
    // Preemption bookkeeping (no system call): the outgoing task keeps its
    // no-preempt depth; the incoming one gets its stack bounds and depth.
    let slot = w.slot.load(Ordering::Relaxed);
    if !slot.is_null() {
        // SAFETY: slots are `'static`; `cur` and `next` are ours.
        unsafe {
            let slot = &*slot;
            (*cur).preempt_state.set(slot.switch_out());
            if !next.is_null() {
                w.raise_contention(slot, action == A_YIELD || action == A_PREEMPT || action == A_PREEMPT_GLOBAL);
                slot.switch_in((*next).stack.lo(), (*next).stack.hi(), (*next).preempt_state.get());
            }
        }
    }
    // The incoming context runs on this thread, which drives `w`: hand it the
    // worker (64-byte aligned, so the action fits in the low bits) and leave
    // the outgoing task in `w.prev`; it needs no thread-local lookup then.
    w.prev.set(cur);
    // SAFETY: `cur.sp` is writable; `target` is a suspended context whose
    // stack is mapped. `m` and `w` are not used after the switch: this task
    // may resume on another thread.
    let r = unsafe { arch::switch((*cur).sp.get(), target, w as *const Worker as usize | action) };
    finish_switch(r);
}

/// Runs in the context that was just switched to: applies the outgoing
/// context's action to it (see the module comment). `arg` is
/// `worker | action` (the outgoing task is in `worker.prev`), except for
/// `A_REQUEUE`, which comes from a thread without a worker: `task | A_REQUEUE`.
///
/// Every switch runs it, so it is kept frameless: each action ends in at
/// most one call, in tail position (the ring's overflow, recycling, the
/// adoption hand-over and the global queue are out of line), so the
/// compiler saves no callee-saved register for it (it did, for the inlined
/// overflow path and the free cache's growth: ~13 instructions per switch).
#[inline]
pub(crate) fn finish_switch(arg: usize) {
    if arg == 0 {
        return;
    }
    let action = arg & A_MASK;
    // SAFETY: `prev` is a task that just switched away from this thread; its
    // context is saved and nobody else can reach it until we queue it. `w` is
    // the worker this thread drives.
    unsafe {
        if action == A_REQUEUE {
            let prev = TaskRef::new((arg & !A_MASK) as *mut Task);
            requeue_after_blocking(prev.shared(), prev);
            return;
        }
        let w = &*((arg & !A_MASK) as *const Worker);
        let prev = w.prev.get();
        match action {
            A_YIELD | A_PREEMPT => {
                (*prev).state.store(state::RUNNABLE, Ordering::Relaxed);
                if !w.queue.try_push(TaskRef::new(prev)) {
                    push_local_full(w, TaskRef::new(prev));
                }
            }
            A_PREEMPT_GLOBAL => requeue_global(w.shared(), TaskRef::new(prev)),
            A_PARK => {
                (*prev).state.store(state::PARKED, Ordering::Relaxed);
                if (*prev)
                    .park
                    .compare_exchange(park::EMPTY, park::PARKED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Unparked while switching out: run it again.
                    (*prev).park.store(park::EMPTY, Ordering::Relaxed);
                    make_runnable(TaskRef::new(prev), true);
                }
            }
            A_EXIT => recycle(w, prev),
            A_ADOPT => hand_to_spare(w, prev),
            _ => {}
        }
    }
}

/// `finish_switch`'s `A_YIELD` / `A_PREEMPT` when `w`'s ring was full:
/// [`Worker::push_local`] (half the ring to the global queue). Out of line
/// (see `finish_switch`).
#[cold]
#[inline(never)]
fn push_local_full(w: &Worker, t: TaskRef) {
    w.push_local(t);
}

/// `finish_switch`'s `A_ADOPT`: `prev` is saved: record the spill frame as
/// its SP (the frames above it stay frozen while the closure runs on the
/// spare thread; a collection scans them from there), count it as
/// blocking, then give it to the spare in `w.adopt_to`. Out of line (see
/// `finish_switch`).
///
/// # Safety
/// As `finish_switch`'s: `prev` just switched away from this thread, which
/// drives `w`; `w.adopt_to` was set by `prev` right before its switch.
#[cold]
#[inline(never)]
unsafe fn hand_to_spare(w: &Worker, prev: *mut Task) {
    // SAFETY: per the contract; the spare waits for exactly this task.
    unsafe {
        let s = &*w.adopt_to.replace(ptr::null());
        s.adopt_resume.store(*(*prev).sp.get(), Ordering::Relaxed);
        *(*prev).sp.get() = s.adopt_sp.load(Ordering::Relaxed);
        (*prev).state.store(state::BLOCKING, Ordering::SeqCst);
        s.adopt.store(prev, Ordering::Release);
        s.spare_word.store(1, Ordering::SeqCst);
        futex_wake(&s.spare_word, 1);
    }
}

/// `finish_switch`'s rare action `A_REQUEUE`: a task back from a
/// handed-off `blocking` call (`prev`, ours to queue) goes to the global
/// queue of `sh`; then it no longer counts in `Shared::in_blocking`.
#[cold]
#[inline(never)]
fn requeue_after_blocking(sh: &Shared, prev: TaskRef) {
    requeue_global(sh, prev);
    sh.in_blocking.fetch_sub(1, Ordering::Relaxed);
}

/// `finish_switch`'s rare actions `A_REQUEUE` (through
/// [`requeue_after_blocking`]) and `A_PREEMPT_GLOBAL`: `prev` (just
/// switched away from, ours to queue) goes to the global queue of `sh`.
/// Out of line: the global queue's lock, inlined, cost every switch
/// register saves in `finish_switch`.
#[cold]
#[inline(never)]
fn requeue_global(sh: &Shared, prev: TaskRef) {
    prev.state.store(state::RUNNABLE, Ordering::Relaxed);
    sh.push_global_one(prev);
    sh.notify_global();
}

/// Returns a finished task's struct and stack to `w`'s free cache, or to the
/// pool.
///
/// Not inlined: `finish_switch` calls it in tail position (see there).
///
/// # Safety
/// `t` is a task that has exited; its stack is no longer in use; this thread
/// drives `w`.
#[inline(never)]
pub(super) unsafe fn recycle(w: &Worker, t: *mut Task) {
    // SAFETY: per the contract we own `t` and `w`'s cache.
    unsafe {
        let task = &*t;
        task.state.store(state::FREE, Ordering::Relaxed);
        // The name stays until the struct is prepared again (`Task::prepare`
        // replaces it): a stalled stop-the-world reads the name of a task
        // that may be exiting (`stw::report_stragglers`).
        let free = &mut *w.free.get();
        if w.shared == task.shared && free.len() < FREE_CACHE {
            free.push(t);
            return;
        }
        task.shared().release_task(t);
    }
}

/// Gives `t` its park token; if it was parked, makes it runnable.
///
/// `t` is a task that cannot exit before this unpark: it waits for exactly
/// this token (argued where the handle is made, `TaskRef::new`).
pub(crate) fn unpark(t: TaskRef) {
    if t.park.swap(park::NOTIFIED, Ordering::AcqRel) == park::PARKED {
        t.park.store(park::EMPTY, Ordering::Relaxed);
        if t.state.load(Ordering::Acquire) == state::ABANDONED {
            return; // its runtime is gone: it stays abandoned, never queued
        }
        make_runnable(t, true);
    }
}

/// Parks the current task until its token is given with [`unpark`].
///
/// # Safety contract (internal)
/// Must be called from a task holding a worker; every park is matched by
/// exactly one unpark from whoever the task registered with.
pub(crate) fn park_current() {
    let c = Current::get().expect("park_current outside a task");
    let (w, cur) = (c.worker(), c.task());
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        // The caller already queued a wait node on its stack: unwinding
        // would free it under the waker. Parking would wait for a wake-up
        // that needs the world running, which only this task can restart.
        crate::sys::write_stderr(
            b"usurp: fatal: the task that holds the world stopped parked (sleep, join, a channel or mutex wait): \
              nothing could ever wake it, since only it can restart the world; aborting. Either it called \
              Runtime::stop_the_world and waited before Runtime::start_the_world, or it is running a garbage \
              collection whose root scanner, finalizer registration or World callback waited (a root scanner \
              must not take a lock a task may hold)\n",
        );
        std::process::abort();
    }
    // The token already given: consume it and keep running. A plain load
    // first (no locked instruction on the usual way into a park): a token
    // given after it is seen by `finish_switch`'s `A_PARK` exchange, which
    // then requeues the task.
    if cur.park.load(Ordering::Relaxed) == park::NOTIFIED
        && cur.park.compare_exchange(park::NOTIFIED, park::EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok()
    {
        return;
    }
    w.clear_pin(cur);
    let next = w.next_fast();
    // SAFETY: `next_fast` returns `None` or a task claimed for `w`.
    unsafe { switch_to(c, next, A_PARK) };
}

/// Yields the current task (see `crate::yield_now`). A forced-inline shim
/// over [`yield_raw`], as [`switch_to`] over [`switch_raw`]: the guard
/// (three words, passed through memory by the Rust ABI) does not cross the
/// call; its parts go in registers.
#[inline(always)]
pub(crate) fn yield_current(c: Current) {
    // SAFETY: `c` is the running task with its machine and worker (the
    // guard's invariant), and is consumed here.
    unsafe { yield_raw(c.machine(), c.worker(), c.task()) }
}

/// [`yield_current`]'s body, on the guard's parts.
///
/// # Safety
/// As [`switch_raw`]'s: `cur` is the task running on this thread, `w` its
/// worker, `m` this thread's machine (as a [`Current`] guard vouches); the
/// caller does not use `m` and `w` after the call.
#[inline(never)]
unsafe fn yield_raw(m: &Machine, w: &Worker, cur: TaskRef) {
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        stopper_yielded(crate::stw::caller_in_collection_pause(w.shared()));
    }
    if w.shared().runs_on_at_shutdown(cur.as_ptr()) {
        dropper_runs_on(w);
        return;
    }
    w.clear_pin(cur);
    // No shutdown check here (it cost ~9 instructions a yield): every
    // `FAIR_TICKS`-th yield goes through the scheduler loop (`next_fast`
    // answers `None`, and "keep going" is skipped), which stops the worker
    // at shutdown, so a task yielding in a loop leaves its worker within 61
    // yields. Preemptions, `blocking` and `after_stop` check at once.
    let mut next = w.next_fast();
    if next.is_none() {
        next = w.take_global_now();
    }
    if next.is_none() && w.tick.get() % FAIR_TICKS != 0 && !w.stopping() {
        let sh = w.shared();
        if sh.global_len.load(Ordering::Relaxed) == 0 && w.inbox_len.load(Ordering::Relaxed) == 0 {
            return; // nothing else to run: keep going
        }
    }
    // SAFETY: `next_fast` and `take_global_now` return `None` or a task
    // claimed for `w`; the rest per the contract.
    unsafe { switch_raw(m, w, cur.as_ptr(), TaskRef::ptr_or_null(next), A_YIELD) };
}

/// The yield of a checkpoint (`usurp_preempt::checkpoint`: a refused
/// quantum tick, or a request such as a stop's or the GC's collector's):
/// [`yield_current`], except that while the collector offers a lend
/// (`stand_aside.rs`) the task is queued and the worker goes to its
/// scheduler loop, which claims it. Only the requests' path reads the
/// offer: the collector asks every busy worker's task to get off its CPU
/// when it posts one (a signal, or this path in code that polls), and
/// idle workers look in `find_runnable`; plain yields, parks and
/// `next_fast` do not pay for it (callgrind, `workers(1)` yield: +6
/// instructions a row when `next_fast` and `yield_raw` read it too).
///
/// It also fires due timers first, as a preemption does: a worker whose
/// tasks poll `checkpoint()` yields here once a quantum and reaches its
/// scheduler loop (which fires them) only every `FAIR_TICKS`-th yield, so
/// a sleeper beside two such loops woke 25 ms late at p50 (new-user probe
/// 112; `yield_now` loops reach the loop no sooner, but go through
/// `next_fast` far more often, and a `preemptible!` loop's preemption
/// fired them). Woken tasks go to `runnext` and run next.
pub(crate) fn yield_at_checkpoint(c: Current) {
    let (w, cur) = (c.worker(), c.task());
    if TIMERS_AT_CHECKPOINT.load(Ordering::Relaxed) {
        w.shared().run_timers();
    }
    if w.lend_pending()
        && !crate::stw::task_holds_stop(cur.as_ptr())
        && !w.shared().runs_on_at_shutdown(cur.as_ptr())
        && !w.shared().shutting_down_for(cur.as_ptr())
    {
        w.clear_pin(cur);
        // SAFETY: `c` is the running task with its machine and worker (the
        // guard's invariant), and is consumed here; `None` sends it to the
        // scheduler loop, which queues it (`finish_switch`, `A_YIELD`).
        unsafe { switch_to(c, None, A_YIELD) };
        return;
    }
    yield_current(c)
}

/// Test-only switch (negative control of "a checkpoint's yield fires due
/// timers"): when cleared, it does not. Set through
/// `hooks::set_timers_at_checkpoint_for_tests`.
pub(crate) static TIMERS_AT_CHECKPOINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The task that dropped this runtime from inside it runs on at its yields
/// and preemptions (it is the one task a shut-down runtime still runs,
/// `Shared::runs_on_at_shutdown`): a switch would queue it, and the next
/// visit of the scheduler loop would stop the worker and abandon it
/// (review 107: its 61st yield did; a switch to another queued task did).
/// A stop of the runtime in force (a collection from a plain thread) is
/// waited out here, counted as stopped (review 108: the stop waited for
/// the dropper to park or end).
#[cold]
#[inline(never)]
fn dropper_runs_on(w: &Worker) {
    if w.stopping() {
        crate::stw::safe_region(w.shared(), &mut || {});
    }
}

/// The cooperative point at the end of a collection or task dump a task
/// ran (`Heap::collect`, `task::dump`; red-team finding collectloop,
/// session 14). Its worker's quantum timer is off from each stop to its
/// restart, and the timer monitor sends no request while a stop is on, so
/// a task looping on collections was never preempted: a sleeper on its
/// worker never woke, and a shutdown never reached its worker. Here it
/// honours a pending request (`checkpoint`), fires due timers (woken tasks
/// go to `runnext`), and yields if anything else waits for its worker, or
/// to the scheduler loop at shutdown (which stops the worker). Nothing
/// outside a task (or inside `blocking`), in a no-preemption section, or
/// while the caller still holds a stop (`Runtime::stop_the_world`).
#[inline(never)]
pub(crate) fn after_stop() {
    usurp_preempt::checkpoint();
    let Some(c) = Current::get() else { return };
    let (w, cur) = (c.worker(), c.task());
    let sh = w.shared();
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        return;
    }
    if usurp_preempt::current_worker().is_some_and(|s| s.no_preempt_depth() != 0) {
        return;
    }
    sh.run_timers();
    yield_current(c);
}

#[cold]
#[inline(never)]
pub(super) fn stopper_yielded(in_collection_pause: bool) -> ! {
    if in_collection_pause {
        // A root scanner (or another GC callback) on the collecting task:
        // the collection's stop is not the caller's to end.
        panic!(
            "usurp: yield_now called inside a GC pause (by a root scanner or another callback of the collection, \
             on the collecting task): its worker would park for the stop and never resume it; a root scanner \
             must not yield (the world restarts when the collection's pause ends)"
        )
    }
    panic!(
        "usurp: yield_now called by the task that holds the world stopped (Runtime::stop_the_world): its worker \
         would park for the stop and never resume it; call Runtime::start_the_world first"
    )
}

/// Puts the current (async-preempted) task back in a run queue, pinned to
/// this worker if `pin` (its interrupted code may hold a thread-local
/// address: `preempt_glue::must_pin`; then its worker's ring), else the
/// global queue (see [`preempted_goes_global`]), and runs something else.
/// See the preemption hooks in the crate docs.
pub(crate) fn preempt_current(pin: bool) {
    let Some(c) = Current::get() else { return };
    let (w, cur) = (c.worker(), c.task());
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        // Cannot happen (the stopper runs in a no-preemption section); if it
        // did, parking would deadlock: keep running.
        return;
    }
    if w.shared().runs_on_at_shutdown(cur.as_ptr()) {
        dropper_runs_on(w);
        return;
    }
    if pin && cur.pinned_worker.get() == NO_PIN {
        cur.pinned_worker.set(w.index);
        w.pinned.set(w.pinned.get() + 1);
    }
    // A worker saturated by tight loops only reaches its scheduler loop now
    // and then (a direct switch follows every preemption): fire due timers
    // here, once per quantum, so that sleepers wake within a quantum. Woken
    // tasks go to `runnext` (this task is still current) and run next.
    w.shared().run_timers();
    // At shutdown, straight to the scheduler loop, which stops the worker
    // (see `yield_raw`).
    let down = w.shared().shutting_down_for(cur.as_ptr());
    // The GC's collector offers a lend (`stand_aside.rs`): to the
    // scheduler loop, which claims it (this task is queued first).
    let to_loop = down || w.lend_pending();
    let mut next = if to_loop { None } else { w.next_fast() };
    if next.is_none() && !to_loop {
        next = w.take_global_now();
    }
    let action = if next.is_some() && preempted_goes_global(w, cur) { A_PREEMPT_GLOBAL } else { A_PREEMPT };
    // SAFETY: as in `yield_current`.
    unsafe { switch_to(c, next, action) };
}

/// Entry point of every task (called by the arch trampoline on the task's
/// fresh stack). Never returns: the task ends by switching away for good.
pub(crate) unsafe extern "C" fn task_entry(task: usize, arg: usize) -> ! {
    finish_switch(arg);
    // SAFETY: the trampoline passes the task whose fresh stack this is: the
    // task now running.
    run_body(unsafe { TaskRef::new(task as *mut Task) });
    exit_current()
}

#[inline(never)]
pub(super) fn run_body(t: TaskRef) {
    // The body stays in the task while it runs, so that a runtime shutting
    // down can still complete (abandon) the join state of a suspended task.
    // SAFETY: `t` is the running task; the body is only touched by it, or by
    // the shutdown path once no worker runs.
    unsafe {
        if let Some(body) = (*t.body.get()).as_ref() {
            body.run();
        }
        // Task-local destructors run before the joiner is woken (issue 11
        // item 8): a join that returned sees the task entirely finished.
        crate::tasks::local::drop_locals(t.as_ptr());
        if let Some(body) = (*t.body.get()).as_ref() {
            // Its CPU time so far stays readable through the join handle.
            body.cpu_link().retire(current_cpu_cycles(t));
            body.finish();
        }
        // Out of the task first, then dropped: dropping the packet may run
        // user code (the result's destructor) that reaches a switch point,
        // and a GC scan must then not find a half-dropped body in the task.
        let body = (*t.body.get()).take();
        drop(body);
    }
}

pub(super) fn exit_current() -> ! {
    let Some(c) = Current::get() else {
        // Cannot happen: `blocking` re-attaches before returning.
        crate::sys::write_stderr(b"usurp: internal error: task exiting without a worker\n");
        std::process::abort();
    };
    let (w, cur) = (c.worker(), c.task());
    if crate::stw::task_holds_stop(cur.as_ptr()) {
        // Other runtimes' worlds, which only this task could restart.
        crate::stw::restart_foreign_stops_at_exit();
        if crate::stw::caller_is_stopper(w.shared()) {
            // It would switch to its scheduler loop, which parks for the
            // stop: nobody could restart the world. Restart it (the task
            // is gone).
            crate::sys::write_stderr(
                b"usurp: a task exited while it held the world stopped (Runtime::stop_the_world without \
                  start_the_world): restarting the world\n",
            );
            crate::stw::start_the_world(w.shared());
        }
        cur.held_stops.set(0);
    }
    w.clear_pin(cur);
    let next = w.next_fast();
    // SAFETY: `next_fast` returns `None` or a task claimed for `w`; an exited
    // task is never resumed.
    unsafe { switch_to(c, next, A_EXIT) };
    crate::sys::write_stderr(b"usurp: internal error: exited task resumed\n");
    std::process::abort();
}

pub(super) fn schedule_loop(m: &Machine) {
    loop {
        let w = m.worker.get();
        if w.is_null() {
            return;
        }
        // SAFETY: this thread drives `w` while it is set in `m`.
        let w = unsafe { &*w };
        let slot = super::thread::thread_slot();
        if w.slot.load(Ordering::Relaxed) != slot {
            // This thread (just) took the worker over.
            w.slot.store(slot, Ordering::Release);
            // Orders the store before this worker's reads of the queues
            // (`update_contention`) against wakers that publish work and
            // then read `slot` (`Shared::contend_busy`).
            std::sync::atomic::fence(Ordering::SeqCst);
            // SAFETY: slots are `'static`.
            if let Some(s) = unsafe { slot.as_ref() } {
                let _ = s.set_idle(false);
            }
        }
        let Some(t) = w.find_runnable() else {
            // Shutdown: this worker stops; whatever is still queued is
            // abandoned by the runtime.
            m.worker.set(ptr::null());
            crate::stw::worker_exited(w);
            w.shared().worker_stopped();
            return;
        };
        w.update_contention();
        // Hook (stack_scan.rs): scanned for the GC's epoch before it runs.
        crate::stack_scan::before_resume(w.shared(), t);
        m.current.set(t.as_ptr());
        w.running_task.store(t.as_ptr() as usize, Ordering::Relaxed);
        w.bump_switch();
        if w.cpu_time {
            w.run_since.set(arch::cycles());
        }
        // SAFETY: `t` is a runnable task claimed for `w`; its SP was saved.
        let r = unsafe {
            if let Some(s) = slot.as_ref() {
                s.switch_in(t.stack.lo(), t.stack.hi(), t.preempt_state.get());
            }
            t.state.store(state::RUNNING, Ordering::Relaxed);
            arch::switch(m.sched_sp.get(), *t.sp.get(), 0)
        };
        finish_switch(r);
    }
}

/// A spare thread runs task `t`, handed to it by `finish_switch(A_ADOPT)`,
/// until it leaves its `blocking` closure (it then switches back here with
/// `A_REQUEUE`, which queues it globally).
pub(super) fn run_adopted(m: &Machine, t: *mut Task) {
    m.current.set(t);
    let resume = m.adopt_resume.load(Ordering::Relaxed);
    // SAFETY: `t` was saved at `resume` on its old thread and handed to us
    // alone (acquire on `adopt`); this thread has no worker, so nothing else
    // runs here meanwhile.
    let r = unsafe { arch::switch(m.sched_sp.get(), resume, 0) };
    finish_switch(r);
}

/// The body of every runtime thread: drive a worker's scheduler loop; when
/// the worker is handed away, wait as a spare until given one.
pub(crate) fn machine_main(shared: Arc<Shared>, worker: *const Worker) {
    // Idle workers wait for the next timer with a futex timeout: no slack.
    crate::sys::set_timer_slack();
    let _alt = super::guard::AltStack::install();
    // Preemption slot and GC mutator of this thread (dropped before `_alt`).
    let _integ = super::thread::ThreadInit::new(&shared);
    let m = Box::new(Machine {
        sched_sp: UnsafeCell::new(0),
        worker: Cell::new(worker),
        current: Cell::new(ptr::null_mut()),
        shared,
        spare_word: AtomicU32::new(0),
        handoff: AtomicPtr::new(ptr::null_mut()),
        adopt: AtomicPtr::new(ptr::null_mut()),
        adopt_resume: AtomicUsize::new(0),
        adopt_sp: AtomicUsize::new(0),
    });
    let mp = &*m as *const Machine as *mut Machine;
    MACHINE.with(|c| c.set(mp));
    loop {
        if !m.worker.get().is_null() {
            schedule_loop(&m);
        }
        let t = m.adopt.swap(ptr::null_mut(), Ordering::Acquire);
        if !t.is_null() {
            run_adopted(&m, t);
            continue;
        }
        if !m.shared.wait_as_spare(&m) {
            break;
        }
    }
    MACHINE.with(|c| c.set(ptr::null_mut()));
    m.shared.threads.fetch_sub(1, Ordering::AcqRel);
}

/// Unit tests of the park token ([`park_current`] / [`unpark`], completed
/// by `finish_switch`'s `A_PARK`): a task parks and is unparked round after
/// round by a plain thread or by another task, each unpark racing the
/// task's way into its park (before `park_current`, between its fast-path
/// check and the switch out, or after it is parked: pseudo-random spins on
/// both sides move the race across these windows). A lost wake-up is a
/// task left PARKED with its token given: the checker waits for that state
/// to persist (5 s: a hang, not a speed check), then releases the task and
/// reports the round. The negative control unparks with a mutant that reads
/// the token and then stores it (instead of one swap): the task parking in
/// between is never queued, and the checker must report it.
#[cfg(test)]
mod park_token_tests {
    use super::*;
    use crate::Runtime;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use usurp_testsupport::{scale, within};

    /// `(park, state)` of a task that cannot exit meanwhile (racy snapshot).
    fn token(t: TaskRef) -> (u8, u8) {
        (t.park.load(Ordering::Acquire), t.state.load(Ordering::Acquire))
    }

    /// The negative control's unpark: a load and a store where [`unpark`]
    /// swaps, with a spin between them (widening the window in which the
    /// task parks: it then never sees the token, and nobody queues it).
    fn unpark_load_then_store(t: TaskRef) {
        let task = &*t;
        if task.park.load(Ordering::Acquire) == park::PARKED {
            task.park.store(park::EMPTY, Ordering::Relaxed);
            make_runnable(t, true);
        } else {
            spin(20_000); // as long as the longest jitter (see `jitter`)
            task.park.store(park::NOTIFIED, Ordering::Release);
        }
    }

    /// A pseudo-random spin length for round `i` (0..20000): the task spins
    /// that long before it parks, the unparker a quarter of its own draw
    /// before it unparks, so that unparks land before, during and after the
    /// way into the park (most after it: the unparker also has to see the
    /// previous round's end), natively and under qemu.
    fn jitter(i: usize, side: u64) -> usize {
        let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(side.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        ((x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 40) as usize % 20_000
    }

    fn spin(n: usize) {
        for _ in 0..n {
            std::hint::spin_loop();
        }
    }

    struct Outcome {
        /// The first round whose wake-up was lost, if any.
        lost: Option<usize>,
        /// Unparks that found the task fully parked (the rest raced its
        /// way in).
        found_parked: usize,
    }

    /// `rounds` park/unpark handshakes between a task and an unparker (a
    /// plain thread, or a task if `from_task`) using `unpark_fn`; stops at
    /// the first lost wake-up.
    fn handshakes(rounds: usize, unpark_fn: fn(TaskRef), from_task: bool) -> Outcome {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let tp = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let parker = {
            let (tp, done, quit) = (tp.clone(), done.clone(), quit.clone());
            rt.spawn(move || {
                let me = Current::get().expect("a task").task();
                tp.store(me.as_ptr() as usize, Ordering::Release);
                for i in 0..rounds {
                    // A varying delay on each side moves the unpark across
                    // the task's way into the park.
                    spin(jitter(i, 1));
                    park_current();
                    done.store(i + 1, Ordering::Release);
                    if quit.load(Ordering::Acquire) {
                        break;
                    }
                }
            })
        };
        let unparker = move || {
            let pause = || if from_task { crate::yield_now() } else { std::thread::yield_now() };
            while tp.load(Ordering::Acquire) == 0 {
                pause();
            }
            // SAFETY: the parker task cannot finish before its last round
            // (each round waits for this unparker), nor while it is stuck.
            let t = unsafe { TaskRef::new(tp.load(Ordering::Acquire) as *mut Task) };
            let mut found_parked = 0;
            for i in 0..rounds {
                // Round i: the task finished round i - 1 and is on its way
                // to park (or parked already).
                spin(jitter(i, 2) / 4);
                if token(t).0 == park::PARKED {
                    found_parked += 1;
                }
                unpark_fn(t);
                let mut stuck_since: Option<Instant> = None;
                while done.load(Ordering::Acquire) <= i {
                    if token(t) == (park::NOTIFIED, state::PARKED) {
                        let since = *stuck_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(5) {
                            // Lost: release the task (give it a token it
                            // will see) and let it finish.
                            quit.store(true, Ordering::Release);
                            // The task is parked for good; only we
                            // touch its token now.
                            t.park.store(park::PARKED, Ordering::Release);
                            unpark(t);
                            return Outcome { lost: Some(i), found_parked };
                        }
                    } else {
                        stuck_since = None;
                    }
                    pause();
                }
            }
            Outcome { lost: None, found_parked }
        };
        let out = if from_task { rt.spawn(unparker).join().unwrap() } else { std::thread::spawn(unparker).join().unwrap() };
        parker.join().unwrap();
        out
    }

    #[test]
    fn no_wake_up_is_lost_unparking_from_a_thread() {
        let n = scale(10_000);
        let out = within(300, "park/unpark from a thread", move || handshakes(n, unpark, false));
        assert_eq!(out.lost, None, "a wake-up was lost (round {:?} of {n})", out.lost);
        eprintln!("{n} rounds; the unpark found the task parked in {}", out.found_parked);
    }

    #[test]
    fn no_wake_up_is_lost_unparking_from_a_task() {
        let n = scale(10_000);
        let out = within(300, "park/unpark from a task", move || handshakes(n, unpark, true));
        assert_eq!(out.lost, None, "a wake-up was lost (round {:?} of {n})", out.lost);
        eprintln!("{n} rounds; the unpark found the task parked in {}", out.found_parked);
    }

    #[test]
    fn negative_control_an_unpark_that_loads_then_stores_loses_a_wake_up() {
        // Unparked from a task first (under qemu a thread's unparks almost
        // always find the task parked already: too few races), then from a
        // thread; each run stops at the first loss, so the round count is
        // not scaled down under qemu (a loss takes longer to hit there).
        // Batches are repeated (for up to 2 minutes) until one catches the
        // loss: under qemu one batch of each kind missed it about 1 run in
        // 12.
        let n = 10_000;
        let caught = within(300, "mutant unpark", move || {
            let t0 = std::time::Instant::now();
            loop {
                let c = [true, false].into_iter().find_map(|from_task| {
                    handshakes(n, unpark_load_then_store, from_task).lost.map(|round| (from_task, round))
                });
                if c.is_some() || t0.elapsed() > std::time::Duration::from_secs(120) {
                    return c;
                }
            }
        });
        let (from_task, round) = caught.expect("the checker never caught the mutant unpark's lost wake-up");
        eprintln!("mutant unpark lost the wake-up of round {round} (unparked from a {})", if from_task { "task" } else { "thread" });
    }
}

