//! Stop-the-world.
//!
//! A *stopper* (a task, or any other thread) calls [`stop_the_world`]; it
//! returns when every worker of the runtime other than the caller's own is
//! *stopped*, and [`start_the_world`] lets them go again. A worker is stopped
//! when:
//!
//! * **parked** (`PARKED`): its driving thread is in its scheduler loop (no task
//!   on its CPU) and waits in [`park_worker`] until the world restarts. Tasks
//!   at cooperative points (yield, park, channel/mutex waits, exit) get there
//!   at once: while the stop flag is set, `next_fast` hands no task to a
//!   direct task-to-task switch, so every switch goes to the scheduler loop,
//!   and `find_runnable` parks before it looks for work. Idle workers are
//!   woken so that they park too (and cannot pick up work while stopped).
//! * **safe** (`SAFE`): its driving thread runs a blocking closure in place
//!   (the `blocking` fallback when the worker cannot be handed off, and the
//!   GC's `World::blocking`). The task's registers were spilled on its stack
//!   and its SP recorded before; it may not leave the closure's section while
//!   the world is stopped ([`exit_safe`]).
//!
//! A worker running a task in a tight loop is asked with
//! `usurp_preempt::request_preempt` (at most one signal in flight; re-sent every
//! [`RETRY`] until the worker parks). If the PC is in preemptible code, the
//! task is async-preempted, parked pinned to its worker, and the worker's
//! next scheduling decision parks it. Otherwise the refused request sets the
//! worker's checkpoint flag: the task stops at its next `checkpoint()` or
//! cooperative call. **A tight loop outside preemptible code that never calls
//! `checkpoint()` or the runtime delays the stop until it does** — that is the
//! contract (as for Go before 1.14).
//!
//! Tasks inside `blocking` whose worker was handed to another thread are not
//! on any worker: the worker itself parks on its new thread, and the blocking
//! thread waits at the exit of `blocking` ([`wait_until_started`]) before the
//! task touches anything. The caller of `stop_the_world`, if a task, counts
//! as stopped and is excluded; between `stop_the_world` and
//! `start_the_world` it must not yield, park or block on other tasks (its own
//! worker would park under it).
//!
//! While parked, workers serve [`run_parallel`] jobs posted by the stopper
//! (parallel GC marking): the stopper takes indices too, so a job completes
//! even when no worker helps.
//!
//! Time-to-safepoint (request → all stopped) is recorded per stop.

use crate::runtime::Shared;
use crate::worker::Worker;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Worker driven normally (possibly running a task).
const RUNNING: u32 = 0;
/// Worker parked in its scheduler loop for a stop.
const PARKED: u32 = 1;
/// Worker's thread inside a safe blocking section.
const SAFE: u32 = 2;

/// How often a stopper re-sends preemption requests to workers that have not
/// stopped yet.
pub(crate) const RETRY: Duration = Duration::from_micros(100);

/// Time-to-safepoint samples kept.
const TTSP_HISTORY: usize = 1024;

/// Stop-the-world state of one runtime.
pub(crate) struct Stw {
    /// Set while a stop is requested or in force: read on the switch path.
    pub(crate) stop: AtomicBool,
    wstate: Box<[AtomicU32]>,
    inner: Mutex<Inner>,
    cv: Condvar,
}

struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: usize,
    done: usize,
}

#[derive(Default)]
struct Inner {
    active: bool,
    job: Option<Job>,
    stops: u64,
    ttsp: Vec<Duration>,
    ttsp_pos: usize,
}

// SAFETY: the job pointer is only dereferenced while the stopper that posted
// it waits in `run_parallel` for every taken index to complete.
unsafe impl Send for Inner {}

/// Stop-the-world statistics of a runtime.
#[derive(Debug, Clone, Default)]
pub struct StwStats {
    /// Completed stops.
    pub stops: u64,
    /// Time-to-safepoint of the last stop.
    pub ttsp_last: Duration,
    /// Median time-to-safepoint over the recent stops (up to 1024).
    pub ttsp_p50: Duration,
    /// 99th percentile time-to-safepoint over the recent stops.
    pub ttsp_p99: Duration,
    /// Largest recent time-to-safepoint.
    pub ttsp_max: Duration,
    /// The recent samples, oldest first is not guaranteed.
    pub ttsp_samples: Vec<Duration>,
}

impl Stw {
    pub(crate) fn new(workers: usize) -> Stw {
        Stw {
            stop: AtomicBool::new(false),
            wstate: (0..workers).map(|_| AtomicU32::new(RUNNING)).collect(),
            inner: Mutex::new(Inner::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Helps with the posted marking job ([`run_parallel`]): claims and runs
    /// its indices one at a time (the lock is released while each runs) until
    /// none is left unclaimed, then returns the re-taken guard.
    fn serve_jobs<'a>(&'a self, mut g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        while let Some(job) = g.job.as_mut() {
            if job.next >= job.n {
                break;
            }
            let i = job.next;
            job.next += 1;
            let f = job.f;
            drop(g);
            // SAFETY: the stopper waits for this index to complete before
            // its closure goes away.
            unsafe { (*f)(i) };
            g = self.lock();
            if let Some(job) = g.job.as_mut() {
                job.done += 1;
            }
            self.cv.notify_all();
        }
        g
    }

    pub(crate) fn stats(&self) -> StwStats {
        let g = self.lock();
        let mut v = g.ttsp.clone();
        v.sort();
        let pct = |p: f64| -> Duration {
            if v.is_empty() {
                return Duration::ZERO;
            }
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        let last = if g.ttsp.is_empty() {
            Duration::ZERO
        } else {
            g.ttsp[(g.ttsp_pos + g.ttsp.len() - 1) % g.ttsp.len()]
        };
        StwStats {
            stops: g.stops,
            ttsp_last: last,
            ttsp_p50: pct(0.5),
            ttsp_p99: pct(0.99),
            ttsp_max: v.last().copied().unwrap_or_default(),
            ttsp_samples: g.ttsp.clone(),
        }
    }
}

/// The worker index driven by the calling thread, if it belongs to `sh`.
fn my_worker(sh: &Shared) -> Option<usize> {
    let m = crate::worker::machine();
    if m.is_null() {
        return None;
    }
    // SAFETY: a machine lives as long as its thread; we are on that thread.
    let w = unsafe { (*m).worker.get() };
    if w.is_null() {
        return None;
    }
    // SAFETY: the worker is owned by this thread while set in its machine.
    let w = unsafe { &*w };
    std::ptr::eq(w.shared, sh).then_some(w.index)
}

/// Stops every worker of `sh` except the caller's (see the module docs).
/// Returns the time-to-safepoint.
pub(crate) fn stop_the_world(sh: &Shared) -> Duration {
    let stw = &sh.stw;
    let me = my_worker(sh);
    // One stopper at a time; a waiting stopper counts as stopped itself (its
    // registers spilled and SP recorded, like a task in `blocking`).
    loop {
        let mut g = stw.lock();
        if !g.active {
            g.active = true;
            stw.stop.store(true, Ordering::SeqCst);
            break;
        }
        drop(g);
        safe_region(sh, &mut || {
            let mut g = stw.lock();
            while g.active {
                g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        });
    }
    let t0 = Instant::now();
    // Idle workers wake up and park (they must not pick up work).
    for w in sh.workers.iter() {
        if Some(w.index) != me {
            sh.wake_worker(w.index);
        }
    }
    let mut g = stw.lock();
    loop {
        let mut all = true;
        for w in sh.workers.iter() {
            if Some(w.index) == me || stw.wstate[w.index].load(Ordering::SeqCst) != RUNNING {
                continue;
            }
            all = false;
            ask_to_stop(w);
        }
        if all {
            break;
        }
        g = stw.cv.wait_timeout(g, RETRY).unwrap_or_else(|p| p.into_inner()).0;
    }
    let ttsp = t0.elapsed();
    g.stops += 1;
    if g.ttsp.len() < TTSP_HISTORY {
        g.ttsp.push(ttsp);
    } else {
        let p = g.ttsp_pos;
        g.ttsp[p] = ttsp;
        g.ttsp_pos = (p + 1) % TTSP_HISTORY;
    }
    ttsp
}

/// Asks the task on `w`'s CPU (if any) to get off it.
fn ask_to_stop(w: &Worker) {
    if w.running_task.load(Ordering::SeqCst) == 0 {
        return; // in its scheduler loop: it parks by itself
    }
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static` (pooled, never freed).
    if let Some(slot) = unsafe { slot.as_ref() } {
        // At most one signal in flight; Ok(false) while one is pending. An
        // error (the thread just unregistered) is harmless: it stops anyway.
        let _ = usurp_preempt::request_preempt(slot);
    }
}

/// Restarts the world stopped by [`stop_the_world`].
pub(crate) fn start_the_world(sh: &Shared) {
    let stw = &sh.stw;
    let mut g = stw.lock();
    g.active = false;
    g.job = None;
    stw.stop.store(false, Ordering::SeqCst);
    drop(g);
    stw.cv.notify_all();
}

/// Called by worker `w`'s scheduler loop when the stop flag is set: parks
/// (counted as stopped) until the world restarts, serving marking jobs.
#[cold]
pub(crate) fn park_worker(w: &Worker) {
    let sh = w.shared();
    let stw = &sh.stw;
    let slot = w.slot.load(Ordering::Acquire);
    // SAFETY: slots are `'static`.
    let slot = unsafe { slot.as_ref() };
    if let Some(s) = slot {
        let _ = s.set_idle(true);
    }
    let mut g = stw.lock();
    stw.wstate[w.index].store(PARKED, Ordering::SeqCst);
    stw.cv.notify_all();
    while stw.stop.load(Ordering::SeqCst) {
        g = stw.serve_jobs(g);
        if !stw.stop.load(Ordering::SeqCst) {
            break;
        }
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    stw.wstate[w.index].store(RUNNING, Ordering::SeqCst);
    drop(g);
    if let Some(s) = slot {
        let _ = s.set_idle(false);
    }
}

/// A worker that stopped for good (shutdown) counts as stopped from now on.
pub(crate) fn worker_exited(w: &Worker) {
    let stw = &w.shared().stw;
    let _g = stw.lock();
    stw.wstate[w.index].store(PARKED, Ordering::SeqCst);
    stw.cv.notify_all();
}

/// Runs `f(0..n)` on the stopper and the parked workers (world stopped).
pub(crate) fn run_parallel(sh: &Shared, n: usize, f: &(dyn Fn(usize) + Sync)) {
    let stw = &sh.stw;
    if n <= 1 || !stw.stop.load(Ordering::SeqCst) {
        for i in 0..n {
            f(i);
        }
        return;
    }
    // SAFETY: only the lifetime is erased; we do not return before every
    // index taken by a worker has completed, and the job is removed then.
    let fp: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let mut g = stw.lock();
    g.job = Some(Job { f: fp, n, next: 0, done: 0 });
    stw.cv.notify_all();
    loop {
        let job = g.job.as_mut().expect("job present while running");
        if job.next < job.n {
            let i = job.next;
            job.next += 1;
            drop(g);
            f(i);
            g = stw.lock();
            g.job.as_mut().expect("job present while running").done += 1;
            continue;
        }
        if job.done == job.n {
            break;
        }
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    g.job = None;
}

/// Starts `n` marker threads for `sh`: they serve [`run_parallel`] jobs
/// (parallel marking) besides the parked workers. Workers that wait in a
/// safe region (e.g. a task whose allocation waits for the collection in
/// progress) cannot mark, so without these a collection often marks alone.
/// They run no task and hold no heap pointers of their own (their stacks are
/// not scanned); they exit when the runtime shuts down.
pub(crate) fn start_markers(sh: &std::sync::Arc<Shared>, n: usize) {
    for k in 0..n {
        let weak = std::sync::Arc::downgrade(sh);
        let _ = std::thread::Builder::new().name(format!("usurp-marker-{k}")).spawn(move || marker_main(weak));
    }
}

fn marker_main(weak: std::sync::Weak<Shared>) {
    loop {
        let Some(sh) = weak.upgrade() else { return };
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        let stw = &sh.stw;
        let g = stw.serve_jobs(stw.lock());
        let _ = stw.cv.wait_timeout(g, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner());
    }
}

/// Marks the calling thread's worker (index `i`) as stopped-safe: its thread
/// is about to block in a closure that does not touch the heap.
pub(crate) fn enter_safe(sh: &Shared, i: usize) {
    let stw = &sh.stw;
    let _g = stw.lock();
    stw.wstate[i].store(SAFE, Ordering::SeqCst);
    stw.cv.notify_all();
}

/// Leaves a safe section: waits while the world is stopped, then marks the
/// worker running again.
pub(crate) fn exit_safe(sh: &Shared, i: usize) {
    let stw = &sh.stw;
    let mut g = stw.lock();
    while g.active {
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    stw.wstate[i].store(RUNNING, Ordering::SeqCst);
}

/// For threads without a worker (leaving `blocking` after a handoff, or any
/// other thread): waits while the world is stopped.
pub(crate) fn wait_until_started(sh: &Shared) {
    let stw = &sh.stw;
    if !stw.stop.load(Ordering::SeqCst) {
        // A stop that begins after this check sees this task in its blocking
        // state and the worker it left parked; fine either way.
        return;
    }
    let mut g = stw.lock();
    while g.active {
        g = stw.cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
}

/// Runs `f` with the caller counted as stopped (the GC's `World::blocking`,
/// and `blocking` when the worker cannot be handed off). The caller's
/// registers are spilled onto its stack and, for a task, the SP recorded, so
/// that a collection in the meantime scans them.
pub(crate) fn safe_region(sh: &Shared, f: &mut dyn FnMut()) {
    let me = my_worker(sh);
    let cur = crate::worker::current_task();
    crate::arch::with_registers_spilled(&mut |sp| {
        // A panic must not unwind through the spill routine's frame.
        let r = match me {
            None => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f));
                wait_until_started(sh);
                r
            }
            Some(i) => {
                // SAFETY: `cur` is the running task of this thread (we hold
                // worker `i`); the frames above `sp` stay untouched while `f`
                // runs.
                let (m, w) = unsafe {
                    *(*cur).sp.get() = sp;
                    (*cur).state.store(crate::tcb::state::BLOCKING, Ordering::SeqCst);
                    let m = &*crate::worker::machine();
                    (m, &*m.worker.get())
                };
                // Detach the worker while `f` runs: a yield inside `f` then
                // yields the thread, never switches tasks (the worker counts
                // as stopped). The preemption slot is left as it is: the
                // task's quantum keeps running, so a task calling `blocking`
                // in a loop cannot hog its worker by restarting its quantum
                // on every call; but the signal is blocked while `f` runs (no
                // EINTR in its system calls): a tick due meanwhile is handled
                // after `f`, refused, and sets the checkpoint flag, which
                // `blocking` then honours.
                w.running_task.store(0, Ordering::Relaxed);
                m.worker.set(std::ptr::null());
                enter_safe(sh, i);
                let mask = crate::preempt_glue::MaskPreemptSignal::new(sh);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *f));
                exit_safe(sh, i);
                drop(mask);
                m.worker.set(w);
                w.running_task.store(cur as usize, Ordering::Relaxed);
                // SAFETY: as above.
                unsafe { (*cur).state.store(crate::tcb::state::RUNNING, Ordering::SeqCst) };
                r
            }
        };
        if let Err(p) = r {
            SAFE_PANIC.with(|c| c.set(Some(p)));
        }
    });
    if let Some(p) = SAFE_PANIC.with(|c| c.take()) {
        std::panic::resume_unwind(p);
    }
}

thread_local! {
    static SAFE_PANIC: std::cell::Cell<Option<Box<dyn std::any::Any + Send>>> = const { std::cell::Cell::new(None) };
}
