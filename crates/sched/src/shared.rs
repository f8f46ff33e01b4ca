//! The shared hub: the state every worker of one runtime reaches through
//! `Arc<Shared>` (global queue, idle bookkeeping, timers, task pool and
//! registry, spare threads, shutdown), and the operations on it that do not
//! belong to one worker (pushing to the global queue, waking an idle
//! worker, handing a worker to a spare thread, abandoning tasks at
//! shutdown).
//!
//! Floor 3 of the crate (see the crate docs): it imports the floors below
//! (primitives, tasks, queues, timers, the stop state) and its sibling
//! `worker`; nothing below imports it except through `Task::shared` /
//! `Worker::shared`, which only name the type.
//!
//! Every field says who writes it and under which lock or ordering. A field
//! written only while the `Arc` is being built is "immutable".

use crate::error::Error;
use crate::worker::thread::PreemptConfig;
use crate::queue::TaskList;
use crate::spin::SpinLock;
use crate::sys::{futex_wait, futex_wake};
use crate::tasks::tcb::{state, Task, TaskRef};
use crate::timer::Timers;
use crate::worker::{self, Machine, Worker};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use usurp_gc::Heap;

/// Task structs (with their stacks) kept in the shared pool: each costs two
/// kernel mappings (`stack.rs`), and its resident pages up to
/// [`POOL_RESIDENT_MAX`] for the whole pool.
const POOL_MAX: usize = 1024;

/// Resident stack memory the shared pool keeps without releasing it (see
/// `stack.rs`): a stack that would exceed it has its pages released
/// (`madvise`) before it joins the pool.
const POOL_RESIDENT_MAX: usize = 16 << 20;

/// The shared pool of free task structs: each with the resident bytes of
/// its stack when it joined (0 once released), and their sum.
#[derive(Default)]
pub(crate) struct TaskPool {
    tasks: Vec<(*mut Task, usize)>,
    resident: usize,
    /// Stacks released (`madvise`) on their way into the pool, for tests.
    releases: u64,
}

/// Test-only: the pool's resident budget in bytes, `usize::MAX` for
/// [`POOL_RESIDENT_MAX`]; 0 releases every pooled stack, as before the
/// budget (the negative control). Process-wide.
pub(crate) static POOL_BUDGET_FOR_TESTS: AtomicUsize = AtomicUsize::new(usize::MAX);

fn pool_resident_max() -> usize {
    match POOL_BUDGET_FOR_TESTS.load(Ordering::Relaxed) {
        usize::MAX => POOL_RESIDENT_MAX,
        b => b,
    }
}

/// Thread handles `Shared::keep_thread` keeps before it joins the finished
/// ones among them.
const KEEP_THREADS_BEFORE_REAPING: usize = 256;

/// The state shared by all workers and threads of one runtime.
pub(crate) struct Shared {
    /// The workers (Go's Ps), indexed by `Worker::index`. Immutable (each
    /// worker's own fields document their writers: `worker/machine.rs`).
    pub(crate) workers: Box<[Worker]>,
    /// Stop-the-world state; its own locks and atomics (`stw.rs`).
    pub(crate) stw: crate::stw::Stw,
    /// The worker lent to the GC's background collector while it marks;
    /// its own atomics (`worker/stand_aside.rs`).
    pub(crate) lend: crate::worker::Lend,
    /// The runtime's GC heap. Immutable handle.
    pub(crate) heap: Heap,
    /// Whether async preemption is on, and the quantum. Immutable.
    pub(crate) preempt: PreemptConfig,
    /// Attaches a runtime thread to the GC heap (`glue::gc_world::
    /// attach_thread`, installed by `runtime.rs`: a hook, so that the
    /// worker floor calls the GC adapter without importing it). Immutable.
    pub(crate) attach_thread: fn(&Shared) -> Option<usurp_gc::MutatorGuard>,
    /// The sysmon thread's state; its own atomics (`sysmon.rs`).
    pub(crate) sysmon: crate::sysmon::Sysmon,
    /// The global run queue (tasks from outside the runtime, overflow
    /// batches of full rings, returns from `blocking`, preempted tasks that
    /// go global). Pushed and popped by any thread under its spin lock.
    pub(crate) global: SpinLock<TaskList>,
    /// `global.len()`: stored (Release) under the `global` lock by whoever
    /// changed the queue; read without it (Acquire or SeqCst) to skip the
    /// lock when empty and in idle/contention checks.
    pub(crate) global_len: AtomicUsize,
    /// Idle (sleeping or about to sleep) workers: SeqCst increments by the
    /// worker going idle (`idle_sleep`), SeqCst decrements by whoever
    /// clears its `idle` flag (the worker itself, `wake_one_idle`,
    /// `wake_worker`). Read by `notify*` (the wakep protocol).
    pub(crate) nidle: AtomicUsize,
    /// Workers searching for work (spinning): SeqCst increments and
    /// decrements by the searching worker only (`find_runnable`).
    pub(crate) nspinning: AtomicUsize,
    /// Tasks in a handed-off `blocking` call (their return will queue
    /// them): Relaxed increments by the task's thread before it leaves its
    /// worker (`blocking_dyn`), decrements once it is queued again
    /// (`requeue_after_blocking`) or when the handoff failed; read
    /// (Relaxed) by idle workers as a hint to keep searching
    /// (`Worker::others_run`). No protocol depends on it.
    pub(crate) in_blocking: AtomicUsize,
    /// Round-robin start of `wake_one_idle`'s scan. Relaxed counter, any
    /// thread.
    wake_cursor: AtomicUsize,
    /// Sleeps and timed waits (`timer.rs`): under its spin lock, any thread.
    pub(crate) timers: SpinLock<Timers>,
    /// Deadline of the earliest timer (ns, `u64::MAX` when none): stored
    /// (SeqCst) under the `timers` lock by whoever changed the map; read
    /// without it by idle workers, `has_work` and the sysmon.
    pub(crate) next_timer: AtomicU64,
    /// `RuntimeBuilder::timer_spin` in ns (0: off): how long before the
    /// earliest timer is due its idle waiter stops sleeping and spins
    /// (`Worker::idle_sleep`). Immutable.
    pub(crate) timer_spin_ns: u64,
    /// The worker that spins for the earliest timer (its index + 1), or 0:
    /// at most one idle worker spins. Claimed with a SeqCst CAS from 0 by
    /// the idle worker about to wait for a timer, cleared (Release) by the
    /// same worker when its wait ends; read (SeqCst, see
    /// `Worker::idle_sleep`) by `wake_one_idle`, which wakes that worker
    /// first (it takes work at once, without a futex wake-up's delay).
    pub(crate) timer_spinner: AtomicUsize,
    /// When the last timer spin ended (ns, `now_ns`; 0: none yet): stored
    /// (Relaxed) by the spinning worker (the `timer_spinner` claim holder:
    /// one at a time), read by the next one to bound its spin
    /// (`TIMER_SPIN_DUTY`). A heuristic: no protocol depends on it.
    pub(crate) timer_spin_end: AtomicU64,
    /// Until when (ns, `now_ns`) timer spins are off because one lost its
    /// CPU (`TIMER_SPIN_BACKOFF_NS`): stored (Relaxed) by the spinning
    /// worker, read by the next one. A heuristic: no protocol depends on it.
    pub(crate) timer_spin_off_until: AtomicU64,
    /// Free task structs with their stacks, at most `POOL_MAX`, their
    /// resident stack pages at most `POOL_RESIDENT_MAX`: under its spin
    /// lock, any thread (`release_task`, `get_task`). No system call is
    /// made with the lock held.
    pub(crate) pool: SpinLock<TaskPool>,
    /// Per-task stack scanning for the GC (`stack_scan.rs`): the cycle's
    /// scan epoch, written only by the collector in a start stop (with the
    /// world stopped); the per-task claims live in `Task::scan`
    /// (compare-and-swap by the collector or a resumer).
    pub(crate) stack_scan: crate::stack_scan::StackScan,
    /// Every task struct allocated by this runtime, free or not: under its
    /// spin lock (`Task::alloc`/`destroy`; read by stop-the-world scans,
    /// dumps and shutdown).
    pub(crate) registry: SpinLock<Vec<*mut Task>>,
    /// Threads without a worker waiting to be handed one (or a task to
    /// adopt): pushed by the spare itself (`wait_as_spare`), popped by
    /// `handoff`/`take_spare`, scanned by `begin_shutdown`; under its spin
    /// lock. A machine stays valid while listed.
    spares: SpinLock<Vec<*const Machine>>,
    /// Runtime threads started and not yet exited: AcqRel increments by
    /// `start_thread`, decrements by the exiting thread (`machine_main`).
    pub(crate) threads: AtomicUsize,
    /// Bound on `threads`: workers + `max_blocking_threads`. Immutable.
    max_threads: usize,
    /// Set once (SeqCst) by `begin_shutdown`; read by everyone.
    pub(crate) shutdown: AtomicBool,
    /// The task that dropped this runtime from inside it (its address), 0
    /// if none: stored (SeqCst) by `Runtime`'s drop before it begins the
    /// shutdown; read (Relaxed, after seeing `shutdown`) by that task's own
    /// switches ([`Shared::shutting_down_for`]), which let it run on.
    pub(crate) dropper: AtomicUsize,
    /// Workers stopped after shutdown: under the std mutex, incremented by
    /// each stopping worker (`worker_stopped`) or by a failed start;
    /// `stopped_cv` is signalled at each increment.
    stopped: std::sync::Mutex<usize>,
    stopped_cv: std::sync::Condvar,
    /// Usable task stack size (whole pages). Immutable.
    pub(crate) stack_size: usize,
    /// Per-task CPU time on (`RuntimeBuilder::task_cpu_time`; each worker
    /// keeps a copy, `Worker::cpu_time`). Immutable.
    pub(crate) cpu_time: bool,
    /// Prefix of the runtime threads' names. Immutable.
    thread_name: String,
    /// Weak self-reference (for threads started later, and to leak the
    /// state on purpose at shutdown). Immutable.
    pub(crate) me: Weak<Shared>,
    /// Join handles of the runtime's own threads that hold a strong
    /// reference to this state while they run (machines, the monitor, the
    /// marker threads): pushed by whoever starts one, taken by
    /// `join_threads` (`Runtime`'s drop), so that the last reference, and
    /// with it the heap, is dropped before `drop` returns. Handles of
    /// threads that already exited are pruned at each push.
    threads_to_join: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long `drop(Runtime)` waits for its workers before it says on
/// stderr what holds them up ([`Shared::wait_stopped`]).
pub(crate) const DROP_REPORT_AFTER: Duration = Duration::from_secs(1);

/// Test-only switch (negative control of "a dropped runtime's heap is gone
/// when `drop` returns"): `false` makes `Runtime`'s drop return without
/// waking the monitor and marker threads nor joining the runtime's
/// threads, as before (the heap then goes when the last of them lets go of
/// the runtime, up to ~100 ms later).
pub(crate) static RELEASE_ON_DROP: AtomicBool = AtomicBool::new(true);

// SAFETY: raw task and machine pointers are handed between threads under the
// locks and atomics of the scheduling protocol.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The state of a new runtime with `workers` workers; `me` is the `Arc`
    /// being built (`Arc::new_cyclic`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: &Weak<Shared>,
        workers: usize,
        heap: Heap,
        preempt: PreemptConfig,
        max_blocking_threads: usize,
        stack_size: usize,
        thread_name: String,
        attach_thread: fn(&Shared) -> Option<usurp_gc::MutatorGuard>,
        timer_spin_ns: u64,
        cpu_time: bool,
    ) -> Shared {
        let sp = me.as_ptr();
        Shared {
            stw: crate::stw::Stw::new(workers),
            lend: crate::worker::Lend::new(workers),
            heap,
            preempt,
            attach_thread,
            sysmon: Default::default(),
            workers: (0..workers).map(|i| Worker::new(i, workers, sp, cpu_time)).collect(),
            global: SpinLock::new(TaskList::new()),
            global_len: AtomicUsize::new(0),
            nidle: AtomicUsize::new(0),
            nspinning: AtomicUsize::new(0),
            in_blocking: AtomicUsize::new(0),
            dropper: AtomicUsize::new(0),
            wake_cursor: AtomicUsize::new(0),
            timers: SpinLock::new(Timers::new()),
            next_timer: AtomicU64::new(u64::MAX),
            timer_spin_ns,
            timer_spinner: AtomicUsize::new(0),
            timer_spin_end: AtomicU64::new(0),
            timer_spin_off_until: AtomicU64::new(0),
            pool: SpinLock::new(TaskPool::default()),
            stack_scan: crate::stack_scan::StackScan::new(),
            registry: SpinLock::new(Vec::new()),
            spares: SpinLock::new(Vec::new()),
            threads: AtomicUsize::new(0),
            max_threads: workers + max_blocking_threads,
            shutdown: AtomicBool::new(false),
            stopped: std::sync::Mutex::new(0),
            stopped_cv: std::sync::Condvar::new(),
            stack_size,
            cpu_time,
            thread_name,
            me: me.clone(),
            threads_to_join: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Keeps `h` (a thread that holds a strong reference to this state while
    /// it runs) for `join_threads`.
    pub(crate) fn keep_thread(&self, h: std::thread::JoinHandle<()>) {
        let finished = {
            let mut v = self.threads_to_join.lock().unwrap_or_else(|e| e.into_inner());
            v.push(h);
            if v.len() < KEEP_THREADS_BEFORE_REAPING {
                return;
            }
            let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *v).into_iter().partition(|h| h.is_finished());
            *v = running;
            done
        };
        // Finished handles are kept for `join_threads`, not dropped:
        // `is_finished` turns true when the thread's main function
        // returns, before its thread-local destructors (a task's value in
        // a std `thread_local!` of a worker thread) have run, and a dropped
        // handle would let them run after the runtime's drop returned (the
        // review of session 12's drop). Only a long list is reaped: its
        // finished threads are joined here, outside the lock (by then
        // their destructors are long done in practice; the join waits for
        // them otherwise).
        for h in finished {
            let _ = h.join();
        }
    }

    /// After shutdown, every worker stopped and no task left (`Runtime`'s
    /// drop): joins the runtime's threads (machines, spares, the monitor,
    /// the marker threads; all exit promptly then), so that none of them
    /// holds a reference to this state, or a mutator of its heap, any more.
    /// The calling thread is skipped should it be one of them.
    pub(crate) fn join_threads(&self) {
        let me = std::thread::current().id();
        loop {
            let v = std::mem::take(&mut *self.threads_to_join.lock().unwrap_or_else(|e| e.into_inner()));
            if v.is_empty() {
                return;
            }
            for h in v {
                if h.thread().id() != me {
                    let _ = h.join();
                }
            }
        }
    }

    /// Counts `n` workers that will never start as stopped (a failed
    /// start-up), so that `wait_stopped` returns.
    pub(crate) fn count_unstarted(&self, n: usize) {
        *self.stopped.lock().unwrap() += n;
    }

    pub(crate) fn start_thread(&self, w: *const Worker) -> std::io::Result<()> {
        let me = self.me.upgrade().expect("runtime alive");
        let n = self.threads.fetch_add(1, Ordering::AcqRel);
        let wp = w as usize;
        let r = std::thread::Builder::new()
            .name(format!("{}-{}", self.thread_name, n))
            .spawn(move || worker::machine_main(me, wp as *const Worker));
        match r {
            Err(e) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
            Ok(h) => {
                self.keep_thread(h);
                Ok(())
            }
        }
    }

    pub(crate) fn push_global_one(&self, t: TaskRef) {
        let mut g = self.global.lock();
        g.push_back(t);
        self.global_len.store(g.len(), Ordering::Release);
    }

    pub(crate) fn push_global_list(&self, list: TaskList) {
        let mut g = self.global.lock();
        g.append(list);
        self.global_len.store(g.len(), Ordering::Release);
    }

    /// Takes a batch from the global queue into `w`'s ring; returns one task
    /// to run.
    pub(crate) fn take_global(&self, w: &Worker) -> Option<TaskRef> {
        if self.global_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut batch = TaskList::new();
        {
            let mut g = self.global.lock();
            let n = (g.len() / self.workers.len() + 1).min(g.len()).min(crate::queue::RING as usize / 2);
            for _ in 0..n {
                if let Some(t) = g.pop_front() {
                    batch.push_back(t);
                }
            }
            self.global_len.store(g.len(), Ordering::Release);
        }
        let first = batch.pop_front()?;
        let more = batch.len() > 0;
        while let Some(t) = batch.pop_front() {
            w.push_local(t);
        }
        if more {
            // `w` runs one; the rest wait in its ring: an idle worker can
            // steal them.
            self.notify();
        }
        // Pinned tasks found here go to their worker.
        if self.claim_for(w, first) {
            Some(first)
        } else {
            None
        }
    }

    /// True if `t` (just taken out of a queue by `w`) may run on `w`;
    /// otherwise forwards it to the inbox of the worker it is pinned to.
    /// `t` was just taken out of a queue by the thread driving `w`: that
    /// thread owns it (the handle's role).
    #[inline]
    pub(crate) fn claim_for(&self, w: &Worker, t: TaskRef) -> bool {
        let p = t.pinned_worker.get();
        if p == crate::tasks::tcb::NO_PIN || p == w.index {
            return true;
        }
        let target = &self.workers[p];
        {
            let mut inbox = target.inbox.lock();
            inbox.push_back(t);
            target.inbox_len.store(inbox.len(), Ordering::SeqCst);
        }
        // The task can only run on `target`: if that worker is busy, its
        // quantum must tick (the SeqCst store above, then the flag's SeqCst
        // read in `set_contended`: see `Worker::update_contention`).
        // SAFETY: slots are `'static`.
        if let Some(s) = unsafe { target.slot.load(Ordering::Acquire).as_ref() } {
            if worker::wakers_contend() {
                let _ = s.set_contended(true);
            }
        }
        self.wake_worker(p);
        false
    }

    /// Called after making work available: wakes an idle worker unless one
    /// is already searching.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.nidle.load(Ordering::Relaxed) == 0 || self.nspinning.load(Ordering::Relaxed) != 0 {
            self.notify_aside();
            return;
        }
        self.wake_one_idle();
    }

    /// `notify`'s (and `notify_after_seqcst`'s) case of nobody idle, or a
    /// worker searching: if nobody searches, the workers standing aside for
    /// the GC's collector look instead (`worker/stand_aside.rs`; Dekker
    /// with the count's increment before their look at the queues).
    #[inline]
    fn notify_aside(&self) {
        if self.lend.aside_count.load(Ordering::Relaxed) != 0 && self.nspinning.load(Ordering::Relaxed) == 0 {
            crate::worker::stand_aside_wake(self);
        }
    }

    /// `notify` after a push to the global queue: wakes an idle worker;
    /// when none is idle nor searching, marks every worker contended
    /// ([`Shared::contend_busy`]) so that their quanta tick and the task
    /// runs within about a quantum ("tick only when someone waits").
    pub(crate) fn notify_global(&self) {
        fence(Ordering::SeqCst);
        if self.nspinning.load(Ordering::Relaxed) != 0 {
            return;
        }
        if self.nidle.load(Ordering::Relaxed) == 0 {
            self.contend_busy();
            return;
        }
        self.wake_one_idle();
    }

    /// Marks every worker's preemption slot contended (a no-op for those
    /// already marked: one load each). Every worker, not only those running
    /// a task: one between tasks may have looked at the global queue just
    /// before the push (its `update_contention` then saw nothing) and be
    /// about to run a task; the caller's fence after publishing, against
    /// the fence in `update_contention` after clearing the flag, makes one
    /// of the two see the other. A worker that is not busy only gets the
    /// flag (its timer is armed when it starts running tasks).
    #[cold]
    pub(crate) fn contend_busy(&self) {
        if !worker::wakers_contend() {
            return;
        }
        for w in self.workers.iter() {
            // SAFETY: slots are `'static`.
            if let Some(s) = unsafe { w.slot.load(Ordering::SeqCst).as_ref() } {
                let _ = s.set_contended(true);
            }
        }
    }

    /// `notify` for callers whose publication of the work was itself a
    /// SeqCst read-modify-write (the `runnext` swap in `make_runnable`): that
    /// RMW and the SeqCst loads here, against the idle worker's SeqCst
    /// `nidle` increment and SeqCst re-check in `has_work`, forbid the
    /// lost-wakeup interleaving without a separate fence (cheaper on the
    /// spawn and wake paths).
    #[inline]
    pub(crate) fn notify_after_seqcst(&self) {
        if self.nidle.load(Ordering::SeqCst) == 0 || self.nspinning.load(Ordering::SeqCst) != 0 {
            self.notify_aside();
            return;
        }
        self.wake_one_idle();
    }

    #[cold]
    pub(crate) fn wake_one_idle(&self) {
        crate::worker::IDLE_WAKE_CALLS.fetch_add(1, Ordering::Relaxed);
        let n = self.workers.len();
        // The worker spinning for a timer, if any, first: it is awake, so
        // it runs the work within a few loads (a sleeping one only after
        // the kernel's wake-up).
        // SeqCst: against the claim and `next_timer` re-read in
        // `Worker::idle_sleep` (a timer's adder stores `next_timer` SeqCst
        // before it calls here).
        let s = self.timer_spinner.load(Ordering::SeqCst);
        if s != 0 {
            let w = &self.workers[s - 1];
            if w.idle.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                self.nidle.fetch_sub(1, Ordering::SeqCst);
                worker::wake_worker_word(w);
                return;
            }
        }
        let start = self.wake_cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let w = &self.workers[(start + i) % n];
            if w.idle.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                self.nidle.fetch_sub(1, Ordering::SeqCst);
                worker::wake_worker_word(w);
                return;
            }
        }
    }

    /// Wakes worker `i` specifically (it has work in its inbox).
    pub(crate) fn wake_worker(&self, i: usize) {
        let w = &self.workers[i];
        if w.idle.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.nidle.fetch_sub(1, Ordering::SeqCst);
        }
        worker::wake_worker_word(w);
    }

    /// Whether an idle worker `w` should not sleep after all.
    pub(crate) fn has_work(&self, w: &Worker) -> bool {
        if self.shutdown.load(Ordering::SeqCst)
            || self.global_len.load(Ordering::SeqCst) > 0
            || w.inbox_len.load(Ordering::SeqCst) > 0
        {
            return true;
        }
        if self.workers.iter().any(|v| {
            v.queue.len() > 0 || !v.runnext.0.load(Ordering::SeqCst).is_null() || v.woken_len.load(Ordering::SeqCst) > 0
        }) {
            return true;
        }
        self.next_timer.load(Ordering::SeqCst) <= crate::sys::now_ns()
    }

    /// Takes a task struct for a new task: this worker's cache, the pool, or
    /// a fresh allocation.
    pub(crate) fn get_task(&self) -> Result<*mut Task, Error> {
        if let Some(c) = worker::Current::get() {
            let w = c.worker();
            if std::ptr::eq(w.shared, self) {
                // SAFETY: this thread drives `w`.
                if let Some(t) = unsafe { (*w.free.get()).pop() } {
                    return Ok(t);
                }
            }
        }
        let pooled = {
            let mut pool = self.pool.lock();
            let e = pool.tasks.pop();
            if let Some((_, resident)) = e {
                pool.resident -= resident;
            }
            e
        };
        if let Some((t, _)) = pooled {
            return Ok(t);
        }
        Task::alloc(self)
    }

    /// `(tasks in the pool, their resident stack bytes, stacks released on
    /// their way in so far)`, for tests.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn pool_counts(&self) -> (usize, usize, u64) {
        let p = self.pool.lock();
        (p.tasks.len(), p.resident, p.releases)
    }

    /// Returns a FREE task whose worker cache is full to the pool: as it is
    /// while the pool's resident stack pages stay within
    /// `POOL_RESIDENT_MAX`, else with its pages released; or frees it when
    /// the pool is full. The system calls (`mincore`, `madvise`, `munmap`)
    /// run without the pool's lock: a `madvise` flushes the TLB of every
    /// CPU, and made every spawn spin on the lock meanwhile (see
    /// `stack.rs`).
    ///
    /// # Safety
    /// `t` is a FREE task of this runtime that nothing refers to.
    pub(crate) unsafe fn release_task(&self, t: *mut Task) {
        // SAFETY: `t` is ours and unused (per the contract).
        let stack = unsafe { &(*t).stack };
        let resident = stack.pool_charge();
        let full = {
            let mut pool = self.pool.lock();
            if pool.tasks.len() < POOL_MAX && pool.resident + resident <= pool_resident_max() {
                pool.resident += resident;
                pool.tasks.push((t, resident));
                return;
            }
            pool.tasks.len() >= POOL_MAX
        };
        // A full pool: no `madvise` before the `munmap` (two TLB flushes
        // where one does; review 114).
        if full {
            // SAFETY: per the contract.
            unsafe { Task::destroy(self, t) };
            return;
        }
        if resident != 0 {
            stack.release();
        }
        {
            let mut pool = self.pool.lock();
            pool.releases += u64::from(resident != 0);
            if pool.tasks.len() < POOL_MAX {
                pool.tasks.push((t, 0));
                return;
            }
        }
        // SAFETY: per the contract.
        unsafe { Task::destroy(self, t) };
    }

    /// Hands worker `w` to a spare thread (or a new one); false if none can
    /// be had.
    pub(crate) fn handoff(&self, w: &Worker, at_shutdown: bool) -> bool {
        let shutdown = self.shutdown.load(Ordering::SeqCst);
        if shutdown && !at_shutdown {
            return false;
        }
        if let Some(s) = self.spares.lock().pop() {
            // SAFETY: a spare machine stays valid while it waits in the list
            // (it only leaves after seeing a handoff or shutdown).
            let s = unsafe { &*s };
            s.handoff.store(w as *const Worker as *mut Worker, Ordering::Release);
            s.spare_word.store(1, Ordering::SeqCst);
            futex_wake(&s.spare_word, 1);
            return true;
        }
        // At shutdown (`worker::blocking_leave_worker`) the new thread only
        // stops the worker and exits: not bounded by `max_blocking_threads`.
        if !shutdown && self.threads.load(Ordering::Acquire) >= self.max_threads {
            return false;
        }
        self.start_thread(w).is_ok()
    }

    /// Pops a spare thread for a task that moves off its worker in
    /// `blocking` (`worker::blocking_dyn`), starting one if none waits and
    /// `max_blocking_threads` allows; null if none can be had. The spare
    /// waits until it is given the task.
    pub(crate) fn take_spare(&self) -> *const Machine {
        if let Some(s) = self.spares.lock().pop() {
            return s;
        }
        if self.shutdown.load(Ordering::SeqCst) || self.threads.load(Ordering::Acquire) >= self.max_threads {
            return std::ptr::null();
        }
        if self.start_thread(std::ptr::null()).is_err() {
            return std::ptr::null();
        }
        // The new thread lists itself as a spare once started (another
        // caller may take it first: then give up and run in place).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.spares.lock().pop() {
                return s;
            }
            std::thread::yield_now();
        }
        std::ptr::null()
    }

    /// A thread without a worker waits here to be handed one (or a task to
    /// adopt: `take_spare`). Returns false when the thread should exit
    /// (shutdown).
    pub(crate) fn wait_as_spare(&self, m: &Machine) -> bool {
        m.spare_word.store(0, Ordering::SeqCst);
        m.handoff.store(std::ptr::null_mut(), Ordering::SeqCst);
        self.spares.lock().push(m as *const Machine);
        loop {
            let h = m.handoff.load(Ordering::Acquire);
            if !h.is_null() {
                m.worker.set(h);
                return true;
            }
            if !m.adopt.load(Ordering::Acquire).is_null() {
                return true; // machine_main runs the adopted task
            }
            if self.shutdown.load(Ordering::SeqCst) {
                let mut spares = self.spares.lock();
                if let Some(i) = spares.iter().position(|&p| std::ptr::eq(p, m)) {
                    spares.swap_remove(i);
                    return false;
                }
                // Popped by a handoff (or adoption) that raced with
                // shutdown: take it.
                drop(spares);
                while m.handoff.load(Ordering::Acquire).is_null() && m.adopt.load(Ordering::Acquire).is_null() {
                    std::hint::spin_loop();
                }
                continue;
            }
            futex_wait(&m.spare_word, 0, None);
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for w in self.workers.iter() {
            self.wake_worker(w.index);
        }
        self.preempt_for_shutdown();
        if RELEASE_ON_DROP.load(Ordering::Relaxed) {
            // The monitor and the marker threads exit at their next look at
            // `shutdown`; wake them now (they sleep holding a reference to
            // this state: up to 10 ms and 100 ms).
            crate::sysmon::shutdown(self);
            crate::stw::wake_markers(self);
        }
        for &s in self.spares.lock().iter() {
            // SAFETY: spares in the list are valid (see `handoff`).
            let s = unsafe { &*s };
            s.spare_word.store(1, Ordering::SeqCst);
            futex_wake(&s.spare_word, 1);
        }
    }

    /// Finishes a shutdown already begun without waiting for it: a reaper
    /// thread waits for every worker to stop and abandons the tasks left
    /// (`Runtime`'s drop from one of its own tasks, which cannot wait for
    /// the worker that runs it). Here the heap goes when the reaper and the
    /// runtime's threads are done.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) {
        let reaper = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("usurp-reaper".into()).spawn(move || {
            reaper.wait_stopped_reporting(false);
            reaper.abandon_remaining();
        });
        if spawned.is_err() {
            // No thread: never free the shared state (leak it).
            std::mem::forget(Arc::clone(self));
        }
    }

    /// A `drop(Runtime)` deferred to the end of a collection's pause (by a
    /// root scanner, `stw::defer_drop_to_pause_end`): begins the shutdown
    /// and finishes it in the background ([`Shared::spawn_reaper`]).
    pub(crate) fn shutdown_detached(self: &Arc<Self>) {
        self.begin_shutdown();
        self.spawn_reaper();
    }

    /// Whether task `t`'s switches should go to the scheduler loop (which
    /// stops the worker) because the runtime shuts down: yes for every task
    /// but the one that dropped the runtime from inside it, which runs on
    /// as it did before the shutdown (its drop returned; a reaper finishes
    /// the shutdown once it parks or ends).
    #[inline]
    pub(crate) fn shutting_down_for(&self, t: *const crate::tasks::tcb::Task) -> bool {
        self.shutdown.load(Ordering::Relaxed) && self.dropper.load(Ordering::Relaxed) != t as usize
    }

    /// Whether the runtime shuts down and `t` is the task that dropped it
    /// from inside it: its yields and preemptions keep it running (a switch
    /// would queue it, and the next visit of the scheduler loop stop the
    /// worker and abandon it), and its `blocking` runs in place.
    #[inline]
    pub(crate) fn runs_on_at_shutdown(&self, t: *const crate::tasks::tcb::Task) -> bool {
        self.shutdown.load(Ordering::Relaxed) && self.dropper.load(Ordering::Relaxed) == t as usize
    }

    /// Shutdown (after `shutdown` was set, SeqCst): every busy worker is
    /// asked to get off its task, as a stop asks (`stw::request_task_preempt`),
    /// and marked contended, so that its quantum timer ticks until it
    /// reaches its scheduler loop (which then stops it): a task switched in
    /// directly after this scan (not through the scheduler loop) is
    /// preempted at its quantum's end. Without this, a lone runaway loop
    /// (`preemptible!`, or cooperative with `checkpoint()`) on an
    /// uncontended worker took no tick and kept its worker for ever:
    /// `Runtime::drop` never returned (red-team finding droploop, session
    /// 14). The preempted task goes to the scheduler loop, not to another
    /// task (`worker::preempt_current` and `yield_raw` check `shutdown`).
    /// A loop in non-preemptible code without checkpoints still keeps its
    /// worker (README "Shutdown"). The caller's own worker is left alone
    /// (a runtime dropped from one of its tasks: that task runs on).
    fn preempt_for_shutdown(&self) {
        let me = crate::worker::current_task() as usize;
        for w in self.workers.iter() {
            // SAFETY: slots are `'static`.
            let Some(s) = (unsafe { w.slot.load(Ordering::Acquire).as_ref() }) else { continue };
            let running = w.running_task.load(Ordering::SeqCst);
            if me != 0 && running == me {
                continue;
            }
            let _ = s.set_contended(true);
            if running != 0 {
                let _ = crate::stw::request_task_preempt(w, s);
            }
        }
    }

    pub(crate) fn worker_stopped(&self) {
        *self.stopped.lock().unwrap() += 1;
        self.stopped_cv.notify_all();
    }

    /// Waits until every worker stopped (after [`Shared::begin_shutdown`]).
    /// After [`DROP_REPORT_AFTER`] still waiting, prints one line to stderr
    /// saying why, and waits on: the world held stopped by another task or
    /// thread (`Runtime::stop_the_world`: its workers are parked for that
    /// stop and see the shutdown only when it restarts the world; named by
    /// `stw::stop_holder`), or workers that have not reached their
    /// scheduler (a task that does not yield). It used to wait silently
    /// (RT-gc item 8, session 14).
    pub(crate) fn wait_stopped(&self) {
        self.wait_stopped_reporting(true)
    }

    /// [`Shared::wait_stopped`]; `report`: print the 1 s diagnostic (the
    /// drop's own wait does; a reaper's does not: its drop returned long
    /// ago, and a task that dropped its own runtime may run on for seconds).
    pub(crate) fn wait_stopped_reporting(&self, report: bool) {
        let t0 = std::time::Instant::now();
        let mut reported = !report;
        let mut n = self.stopped.lock().unwrap();
        while *n < self.workers.len() {
            if reported {
                n = self.stopped_cv.wait(n).unwrap();
                continue;
            }
            let left = DROP_REPORT_AFTER.saturating_sub(t0.elapsed());
            if !left.is_zero() {
                n = self.stopped_cv.wait_timeout(n, left).unwrap().0;
                continue;
            }
            reported = true;
            let running = self.workers.len() - *n;
            drop(n);
            let line = match crate::stw::stop_holder(self) {
                Some(who) => format!(
                    "usurp: dropping the Runtime has waited {:.1} s for its workers: the world is held stopped \
                     ({who}); the workers see the shutdown only when that stopper restarts the world \
                     (Runtime::start_the_world) or exits; still waiting\n",
                    t0.elapsed().as_secs_f64()
                ),
                None => format!(
                    "usurp: dropping the Runtime has waited {:.1} s for its workers: {running} of them still run a \
                     task that has not reached its scheduler (one that does not yield keeps its worker); still \
                     waiting\n",
                    t0.elapsed().as_secs_f64()
                ),
            };
            crate::sys::write_stderr(line.as_bytes());
            n = self.stopped.lock().unwrap();
        }
    }

    /// After all workers stopped: tasks that never finished are abandoned
    /// (their joiners get an error) and leaked, since their stacks may still
    /// be referenced (wait queues, other threads). Free structs are freed.
    /// Returns whether tasks were abandoned (the state is then leaked).
    pub(crate) fn abandon_remaining(&self) -> bool {
        let live: Vec<*mut Task> = self
            .registry
            .lock()
            .iter()
            .copied()
            // SAFETY: registered tasks are valid until destroyed.
            .filter(|&t| unsafe { (*t).state.load(Ordering::Acquire) } != state::FREE)
            .collect();
        if live.is_empty() {
            return false;
        }
        for &t in &live {
            // SAFETY: no worker runs any more; `t` is suspended or blocking.
            unsafe {
                (*t).state.store(state::ABANDONED, Ordering::Release);
                if let Some(body) = (*(*t).body.get()).as_ref() {
                    body.abandon();
                }
            }
        }
        // Keep the shared state (and with it the leaked tasks) alive forever:
        // a late unpark from another thread must find valid memory.
        if let Some(me) = self.me.upgrade() {
            std::mem::forget(me);
        }
        true
    }

    /// Calls `f(sp, lo, hi)` for every live task that is not running.
    ///
    /// # Safety
    /// The world must be stopped (no task switches concurrently).
    pub(crate) unsafe fn for_each_task_stack(&self, f: &mut dyn FnMut(usize, usize, usize)) {
        let reg = self.registry.lock();
        for &t in reg.iter() {
            // SAFETY: registered tasks are valid; with the world stopped their
            // saved SPs are stable.
            unsafe {
                let s = (*t).state.load(Ordering::Acquire);
                if s == state::FREE || s == state::RUNNING {
                    continue;
                }
                f(*(*t).sp.get(), (*t).stack.lo(), (*t).stack.hi());
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Normally every task is FREE here (abandoned ones keep the runtime
        // alive). If the runtime was dropped from one of its own tasks, some
        // may not be: leak those, their stacks may still be referenced.
        let reg = std::mem::take(&mut *self.registry.lock());
        for t in reg {
            // SAFETY: the last reference to the runtime is gone; a FREE task
            // is unreachable.
            unsafe {
                if (*t).state.load(Ordering::Acquire) == state::FREE {
                    drop(Box::from_raw(t));
                }
            }
        }
    }
}
