//! The runtime: configuration, the state shared by all workers (global queue,
//! idle bookkeeping, timers, task pool and registry, spare threads), start-up
//! and shutdown.

use crate::error::{Error, MAX_BLOCKING_THREADS, MAX_STACK_SIZE, MAX_WORKERS, MIN_STACK_SIZE};
use crate::join::JoinHandle;
use crate::queue::TaskList;
use crate::spin::SpinLock;
use crate::sys::{futex_wait, futex_wake, page_size};
use crate::tcb::{state, Task};
use crate::timer::Timers;
use crate::worker::{self, Machine, Worker};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::gc_world::RuntimeWorld;
use crate::preempt_glue::{PreemptConfig, DEFAULT_QUANTUM, MAX_QUANTUM, MIN_QUANTUM};
use usurp_gc::{Heap, HeapConfig};

/// Default usable size of a task stack: 256 KiB.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Default bound on extra threads used by [`crate::blocking`].
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 64;
/// Task structs (with their stacks) kept in the shared pool.
const POOL_MAX: usize = 256;

/// Configures and builds a [`Runtime`]. Obtain one with [`Runtime::builder`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    stack_size: usize,
    max_blocking_threads: usize,
    thread_name: String,
    quantum: Duration,
    preempt_signal: Option<libc::c_int>,
    async_preemption: Option<bool>,
    heap_config: Option<HeapConfig>,
    heap_limit: Option<usize>,
    gogc: Option<Option<u32>>,
    dump_signal: Option<libc::c_int>,
}

impl RuntimeBuilder {
    /// A builder with the defaults: one worker per available CPU, 256 KiB
    /// stacks, up to 64 spare threads for `blocking`.
    pub fn new() -> RuntimeBuilder {
        RuntimeBuilder {
            workers: None,
            stack_size: DEFAULT_STACK_SIZE,
            max_blocking_threads: DEFAULT_MAX_BLOCKING_THREADS,
            thread_name: "usurp-worker".into(),
            quantum: DEFAULT_QUANTUM,
            preempt_signal: None,
            async_preemption: None,
            heap_config: None,
            heap_limit: None,
            gogc: None,
            dump_signal: None,
        }
    }

    /// Prints a task dump ([`Runtime::dump_tasks`]) to stderr whenever the
    /// process receives `sig` (e.g. `libc::SIGQUIT`), without stopping the
    /// process; `USURP_DEBUG=dumpsignal=SIGQUIT` does the same for every
    /// runtime built while it is set. The handler only flags the request; a
    /// runtime thread takes the dump. Refused by `build`
    /// ([`Error::InvalidDumpSignal`]): SIGKILL, SIGSTOP, the fault signals
    /// and the preemption signal. A handler installed before for `sig` is
    /// still called (chained).
    pub fn dump_signal(mut self, sig: libc::c_int) -> RuntimeBuilder {
        self.dump_signal = Some(sig);
        self
    }

    /// The preemption quantum: a task running longer than this without a
    /// switch is preempted (asynchronously if its PC is in preemptible code,
    /// else at its next `checkpoint()`). Default 10 ms; allowed
    /// [`crate::MIN_QUANTUM`] (100 µs) to [`crate::MAX_QUANTUM`] (10 s).
    pub fn quantum(mut self, d: Duration) -> RuntimeBuilder {
        self.quantum = d;
        self
    }

    /// The signal used for preemption (default SIGURG). Process-wide: it can
    /// only be chosen before the first runtime (or preemption user) starts;
    /// a different choice afterwards makes `build` fail with
    /// [`Error::Preempt`].
    pub fn preempt_signal(mut self, sig: libc::c_int) -> RuntimeBuilder {
        self.preempt_signal = Some(sig);
        self
    }

    /// Whether tasks are preempted asynchronously by timer signals (default
    /// true, unless `USURP_DEBUG=asyncpreemptoff=1`). With `false` the
    /// runtime's threads get no signals at all: scheduling and
    /// stop-the-world are cooperative (yields, blocking calls, and
    /// nothing else: `checkpoint()` does nothing then).
    pub fn async_preemption(mut self, on: bool) -> RuntimeBuilder {
        self.async_preemption = Some(on);
        self
    }

    /// The GC heap configuration (default `HeapConfig::default()`, which
    /// reads `USURP_GOGC` and `USURP_DEBUG`). [`RuntimeBuilder::heap_limit`] and
    /// [`RuntimeBuilder::gogc`] override its fields.
    pub fn heap_config(mut self, c: HeapConfig) -> RuntimeBuilder {
        self.heap_config = Some(c);
        self
    }

    /// Hard limit of the GC heap in bytes (see `HeapConfig::max_heap`).
    pub fn heap_limit(mut self, bytes: usize) -> RuntimeBuilder {
        self.heap_limit = Some(bytes);
        self
    }

    /// GC pacing: collect when the heap grew by this percent since the last
    /// mark; `None` collects only at the limit or on request.
    pub fn gogc(mut self, percent: Option<u32>) -> RuntimeBuilder {
        self.gogc = Some(percent);
        self
    }

    /// Number of workers (OS threads running tasks in parallel), 1 to
    /// [`crate::MAX_WORKERS`]. Default: `std::thread::available_parallelism()`.
    pub fn workers(mut self, n: usize) -> RuntimeBuilder {
        self.workers = Some(n);
        self
    }

    /// Usable size of each task stack in bytes, [`crate::MIN_STACK_SIZE`]
    /// (16 KiB) to [`crate::MAX_STACK_SIZE`] (1 GiB), rounded up to whole
    /// pages. A guard page sits below every stack; running into it ends the
    /// process with a message naming the task. Memory is committed lazily.
    /// With async preemption on, `build` also rejects a size below
    /// [`usurp_preempt::min_task_stack`] ([`Error::StackTooSmallForPreemption`],
    /// with the number): the room a preemption needs below SP on this CPU
    /// (about 15 KiB with AVX-512, 23 KiB with AMX tiles enabled).
    pub fn stack_size(mut self, bytes: usize) -> RuntimeBuilder {
        self.stack_size = bytes;
        self
    }

    /// Maximum number of extra OS threads that [`crate::blocking`] may start
    /// to keep workers running while tasks block (0 to
    /// [`crate::MAX_BLOCKING_THREADS`]; default 64). When all are busy,
    /// `blocking` runs its closure in place.
    pub fn max_blocking_threads(mut self, n: usize) -> RuntimeBuilder {
        self.max_blocking_threads = n;
        self
    }

    /// Name prefix of the runtime's threads (default `usurp-worker`).
    pub fn thread_name(mut self, name: impl Into<String>) -> RuntimeBuilder {
        self.thread_name = name.into();
        self
    }

    /// Validates the configuration and starts the worker threads. The first
    /// runtime built in a process also installs the panic hook that names
    /// tasks in panic messages (see the crate docs, "Panic messages").
    pub fn build(self) -> Result<Runtime, Error> {
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_WORKERS),
        };
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::InvalidWorkers { given: workers });
        }
        if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&self.stack_size) {
            return Err(Error::InvalidStackSize { given: self.stack_size });
        }
        if self.max_blocking_threads > MAX_BLOCKING_THREADS {
            return Err(Error::InvalidBlockingThreads { given: self.max_blocking_threads });
        }
        if !(MIN_QUANTUM..=MAX_QUANTUM).contains(&self.quantum) {
            return Err(Error::InvalidQuantum { given: self.quantum });
        }
        let mut hc = self.heap_config.clone().unwrap_or_default();
        if let Some(l) = self.heap_limit {
            hc.max_heap = l;
            hc.min_heap = hc.min_heap.min(l);
        }
        if let Some(g) = self.gogc {
            hc.gogc = g;
        }
        let heap = Heap::new(hc).map_err(Error::Heap)?;
        let preempt_on = self.async_preemption.unwrap_or(!usurp_preempt::async_preempt_off());
        if let Some(sig) = self.preempt_signal {
            if sig != usurp_preempt::signal() {
                usurp_preempt::set_signal(sig).map_err(Error::Preempt)?;
            }
        }
        if preempt_on && self.stack_size < usurp_preempt::min_task_stack() {
            let needed = usurp_preempt::min_task_stack();
            return Err(Error::StackTooSmallForPreemption { given: self.stack_size, needed });
        }
        if preempt_on {
            usurp_preempt::init().map_err(Error::Preempt)?;
            crate::preempt_glue::init_hooks();
        }
        if let Some(sig) = self.dump_signal {
            crate::dumpsig::check_signal(sig).map_err(|reason| Error::InvalidDumpSignal { given: sig, reason })?;
        }
        // From the environment, a refused signal is reported and ignored.
        let dump_signal = self.dump_signal.or_else(|| {
            let sig = crate::dumpsig::from_env()?;
            match crate::dumpsig::check_signal(sig) {
                Ok(()) => Some(sig),
                Err(reason) => {
                    eprintln!("usurp: USURP_DEBUG: dumpsignal={sig}: {reason}; ignored");
                    None
                }
            }
        });
        crate::dump::init_clock();
        let ps = page_size();
        let stack_size = self.stack_size.div_ceil(ps) * ps;
        crate::guard::install();
        crate::panic_hook::install();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let sp = weak.as_ptr();
            heap.set_world(Arc::new(RuntimeWorld { shared: weak.clone() }));
            Shared {
                stw: crate::stw::Stw::new(workers),
                heap: heap.clone(),
                preempt: PreemptConfig { enabled: preempt_on, quantum: self.quantum },
                sysmon: Default::default(),
                workers: (0..workers).map(|i| Worker::new(i, workers, sp)).collect(),
                global: SpinLock::new(TaskList::new()),
                global_len: AtomicUsize::new(0),
                nidle: AtomicUsize::new(0),
                nspinning: AtomicUsize::new(0),
                wake_cursor: AtomicUsize::new(0),
                timers: SpinLock::new(Timers::new()),
                next_timer: AtomicU64::new(u64::MAX),
                pool: SpinLock::new(Vec::new()),
                stack_scan: crate::stack_scan::StackScan::new(),
                registry: SpinLock::new(Vec::new()),
                spares: SpinLock::new(Vec::new()),
                threads: AtomicUsize::new(0),
                max_threads: workers + self.max_blocking_threads,
                shutdown: AtomicBool::new(false),
                stopped: std::sync::Mutex::new(0),
                stopped_cv: std::sync::Condvar::new(),
                stack_size,
                thread_name: self.thread_name.clone(),
                me: weak.clone(),
            }
        });
        if preempt_on {
            crate::sysmon::start(&shared);
        }
        crate::stw::start_markers(&shared, workers - 1);
        for i in 0..workers {
            if let Err(e) = shared.start_thread(&shared.workers[i]) {
                // Stop whatever started.
                shared.begin_shutdown();
                *shared.stopped.lock().unwrap() += workers - i;
                shared.wait_stopped();
                return Err(Error::ThreadSpawn(e));
            }
        }
        if let Some(sig) = dump_signal {
            if let Err(reason) = crate::dumpsig::register(sig, Arc::downgrade(&shared)) {
                drop(Runtime { shared }); // the ordinary shutdown
                return Err(Error::InvalidDumpSignal { given: sig, reason });
            }
        }
        Ok(Runtime { shared })
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder::new()
    }
}

/// Statistics of a runtime ([`Runtime::stats`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Asynchronous preemptions and refusals per reason (process-wide).
    pub preempt: usurp_preempt::PreemptStats,
    /// GC cycles, pauses, time-to-safepoint of collections, heap sizes.
    pub gc: usurp_gc::GcStats,
    /// Every stop-the-world of this runtime (collections included).
    pub stw: crate::stw::StwStats,
    /// Number of workers.
    pub workers: usize,
}

/// A usurp runtime: a set of worker threads running tasks.
///
/// Dropping the runtime stops its workers once they next reach their
/// scheduler (a task that never yields keeps its worker). Tasks that have not
/// finished by then are abandoned: their stacks are leaked (never unwound),
/// joining them returns an error, nothing handed out later (a Mutex, a
/// notification, a sent value) goes to them, and the closures of those that
/// never started are dropped. Dropping it from inside one of its own
/// tasks returns at once; a background thread completes the same shutdown
/// once every worker has stopped (the dropping task's worker stops when
/// that task next switches away).
pub struct Runtime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.shared.workers.len())
            .field("stack_size", &self.shared.stack_size)
            .finish()
    }
}

impl Runtime {
    /// A [`RuntimeBuilder`] with default settings.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// A runtime with default settings.
    pub fn new() -> Result<Runtime, Error> {
        RuntimeBuilder::new().build()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Usable stack size of each task, in bytes (after rounding to pages).
    pub fn stack_size(&self) -> usize {
        self.shared.stack_size
    }

    /// Runs `f` as a task and blocks the calling thread until it finishes,
    /// returning its result. A panic in `f` is resumed on the caller.
    ///
    /// # Panics
    /// If called from inside a usurp task (it would block a worker thread;
    /// use [`crate::spawn`] and [`JoinHandle::join`] there), or if the task
    /// cannot be created (see [`Runtime::try_spawn`]).
    pub fn block_on<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if !worker::current_task().is_null() {
            panic!("usurp: Runtime::block_on called from inside a usurp task; use spawn(..).join() instead");
        }
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Spawns a task on this runtime. Callable from any thread.
    ///
    /// # Panics
    /// If the task cannot be created; the message says why (see
    /// [`Runtime::try_spawn`]).
    pub fn spawn<T, F>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn(f) {
            Ok(h) => h,
            Err(e) => panic!("usurp: cannot spawn a task: {e}"),
        }
    }

    /// Spawns a task on this runtime, or returns why it cannot: the kernel
    /// refused its stack ([`Error::StackMap`]) or the runtime is shutting down.
    pub fn try_spawn<T, F>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::join::spawn_in(&self.shared, None, f)
    }

    /// The runtime's GC heap. Tasks allocate in it (`usurp_gc::alloc`,
    /// `Gc::new`, ...); `rt.heap().collect()` stops the world. Only the
    /// runtime's own threads allocate in it: other threads cannot attach
    /// (`attach_thread` returns `AttachError::Refused`), allocation on them
    /// panics ("allocation from a thread outside the runtime"), and so does
    /// allocation inside a `blocking` closure ("allocation inside
    /// blocking()"): such threads are not stopped and scanned for
    /// collections.
    pub fn heap(&self) -> &Heap {
        &self.shared.heap
    }

    /// Stops every task of this runtime at a safe point (cooperative point,
    /// async preemption, or inside `blocking`) and returns the
    /// time-to-safepoint. Callable from a task of this runtime (which keeps
    /// running and counts as stopped) or from any other thread. Until
    /// [`Runtime::start_the_world`], the caller must not yield, park, or wait
    /// for other tasks of this runtime. A task in a tight loop outside
    /// preemptible code delays the stop until its next `checkpoint()` or
    /// runtime call.
    ///
    /// A task that stops the world is not preempted until it restarts it
    /// (its `checkpoint()` does nothing meanwhile, and `blocking` runs its
    /// closure in place). What would wait for the stopper itself is
    /// detected: stopping again or collecting (`Heap::collect`, or an
    /// allocation that needs a collection) panics, and so does `yield_now`;
    /// parking (sleep, join, a channel or mutex wait) aborts the process
    /// with a message (a wait node is already queued, unwinding would free
    /// it). A task exiting while it holds the stop restarts the world.
    ///
    /// # Panics
    /// If the caller already holds the world stopped.
    pub fn stop_the_world(&self) -> Duration {
        crate::stw::stop_the_world(&self.shared)
    }

    /// Restarts the world stopped by [`Runtime::stop_the_world`]. Does
    /// nothing if the world is not stopped.
    ///
    /// # Panics
    /// If the world is stopped by another task or thread (only the stopper
    /// restarts it).
    pub fn start_the_world(&self) {
        crate::stw::start_the_world(&self.shared)
    }

    /// A dump of every live task: id, name, state (running, runnable,
    /// preempted at a PC, parked on what, in a blocking call), CPU time and
    /// a symbolized backtrace (see [`crate::TaskDump`]). Stops the world
    /// briefly (the dump says how long) with the same machinery as a
    /// collection; safe while tasks are preempted, parked, in `blocking`, or
    /// while a collection runs (it waits for it). If the world cannot be
    /// stopped within [`crate::DUMP_STOP_TIMEOUT`] (2 s), the dump says so
    /// and holds each worker's state and running task instead. From any
    /// thread, or a task (which appears as running); from the task that
    /// holds the world stopped, within its stop.
    pub fn dump_tasks(&self) -> crate::TaskDump {
        crate::dump::dump(&self.shared, crate::DUMP_STOP_TIMEOUT)
    }

    /// [`Runtime::dump_tasks`] with another limit on the wait for the stop.
    pub fn dump_tasks_timeout(&self, stop_timeout: Duration) -> crate::TaskDump {
        crate::dump::dump(&self.shared, stop_timeout)
    }

    /// Whether tasks of this runtime are preempted asynchronously.
    pub fn async_preemption(&self) -> bool {
        self.shared.preempt.enabled
    }

    /// The preemption quantum.
    pub fn quantum(&self) -> Duration {
        self.shared.preempt.quantum
    }

    /// Counters of the runtime: preemption (process-wide: the preemption
    /// machinery is shared by all runtimes of the process), GC and
    /// stop-the-world.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            preempt: usurp_preempt::stats(),
            gc: self.shared.heap.stats(),
            stw: self.shared.stw.stats(),
            workers: self.shared.workers.len(),
        }
    }

    /// The shared state (hooks for the preemption and GC crates).
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.begin_shutdown();
        // If dropped from one of our own tasks, we cannot wait for our own
        // worker to stop (it runs us). A reaper thread owns a reference to
        // the shared state and finishes the shutdown once every worker has
        // stopped, exactly as below: tasks still parked are abandoned (their
        // joiners get an error) and keep the shared state alive for late
        // wake-ups from other threads (issue 11 item 6: it used to be freed
        // under them).
        let t = worker::current_task();
        // SAFETY: a current task is valid while it runs.
        if !t.is_null() && unsafe { (*t).shared } == Arc::as_ptr(sh) {
            let reaper = Arc::clone(sh);
            let spawned = std::thread::Builder::new().name("usurp-reaper".into()).spawn(move || {
                reaper.wait_stopped();
                reaper.abandon_remaining();
            });
            if spawned.is_err() {
                // No thread: never free the shared state (leak it).
                std::mem::forget(Arc::clone(sh));
            }
            return;
        }
        sh.wait_stopped();
        sh.abandon_remaining();
    }
}

pub(crate) struct Shared {
    pub(crate) workers: Box<[Worker]>,
    pub(crate) stw: crate::stw::Stw,
    pub(crate) heap: Heap,
    pub(crate) preempt: PreemptConfig,
    pub(crate) sysmon: crate::sysmon::Sysmon,
    pub(crate) global: SpinLock<TaskList>,
    pub(crate) global_len: AtomicUsize,
    pub(crate) nidle: AtomicUsize,
    pub(crate) nspinning: AtomicUsize,
    wake_cursor: AtomicUsize,
    pub(crate) timers: SpinLock<Timers>,
    pub(crate) next_timer: AtomicU64,
    pub(crate) pool: SpinLock<Vec<*mut Task>>,
    /// Per-task stack scanning for the GC (`stack_scan.rs`).
    pub(crate) stack_scan: crate::stack_scan::StackScan,
    pub(crate) registry: SpinLock<Vec<*mut Task>>,
    spares: SpinLock<Vec<*const Machine>>,
    pub(crate) threads: AtomicUsize,
    max_threads: usize,
    pub(crate) shutdown: AtomicBool,
    stopped: std::sync::Mutex<usize>,
    stopped_cv: std::sync::Condvar,
    pub(crate) stack_size: usize,
    thread_name: String,
    me: Weak<Shared>,
}

// SAFETY: raw task and machine pointers are handed between threads under the
// locks and atomics of the scheduling protocol.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn start_thread(&self, w: *const Worker) -> std::io::Result<()> {
        let me = self.me.upgrade().expect("runtime alive");
        let n = self.threads.fetch_add(1, Ordering::AcqRel);
        let wp = w as usize;
        let r = std::thread::Builder::new()
            .name(format!("{}-{}", self.thread_name, n))
            .spawn(move || worker::machine_main(me, wp as *const Worker));
        if let Err(e) = r {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    pub(crate) fn push_global_one(&self, t: *mut Task) {
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
    pub(crate) fn take_global(&self, w: &Worker) -> Option<*mut Task> {
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
    #[inline]
    pub(crate) fn claim_for(&self, w: &Worker, t: *mut Task) -> bool {
        // SAFETY: we own `t`, just taken out of a queue.
        let p = unsafe { (*t).pinned_worker.get() };
        if p == crate::tcb::NO_PIN || p == w.index {
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
            return;
        }
        self.wake_one_idle();
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
            return;
        }
        self.wake_one_idle();
    }

    #[cold]
    pub(crate) fn wake_one_idle(&self) {
        let n = self.workers.len();
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
        if let Some((_, w, _)) = worker::current_with_worker() {
            if std::ptr::eq(w.shared, self) {
                // SAFETY: this thread drives `w`.
                if let Some(t) = unsafe { (*w.free.get()).pop() } {
                    return Ok(t);
                }
            }
        }
        if let Some(t) = self.pool.lock().pop() {
            return Ok(t);
        }
        Task::alloc(self)
    }

    /// Returns a FREE task whose worker cache is full to the pool (pages
    /// released), or frees it.
    ///
    /// # Safety
    /// `t` is a FREE task of this runtime that nothing refers to.
    pub(crate) unsafe fn release_task(&self, t: *mut Task) {
        {
            let mut pool = self.pool.lock();
            if pool.len() < POOL_MAX {
                // SAFETY: `t` is ours and unused.
                unsafe { (*t).stack.release() };
                pool.push(t);
                return;
            }
        }
        // SAFETY: per the contract.
        unsafe { Task::destroy(self, t) };
    }

    /// Hands worker `w` to a spare thread (or a new one); false if none can
    /// be had.
    pub(crate) fn handoff(&self, w: &Worker) -> bool {
        if self.shutdown.load(Ordering::SeqCst) {
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
        if self.threads.load(Ordering::Acquire) >= self.max_threads {
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
        for &s in self.spares.lock().iter() {
            // SAFETY: spares in the list are valid (see `handoff`).
            let s = unsafe { &*s };
            s.spare_word.store(1, Ordering::SeqCst);
            futex_wake(&s.spare_word, 1);
        }
    }

    pub(crate) fn worker_stopped(&self) {
        *self.stopped.lock().unwrap() += 1;
        self.stopped_cv.notify_all();
    }

    fn wait_stopped(&self) {
        let mut n = self.stopped.lock().unwrap();
        while *n < self.workers.len() {
            n = self.stopped_cv.wait(n).unwrap();
        }
    }

    /// After all workers stopped: tasks that never finished are abandoned
    /// (their joiners get an error) and leaked, since their stacks may still
    /// be referenced (wait queues, other threads). Free structs are freed.
    fn abandon_remaining(&self) {
        let live: Vec<*mut Task> = self
            .registry
            .lock()
            .iter()
            .copied()
            // SAFETY: registered tasks are valid until destroyed.
            .filter(|&t| unsafe { (*t).state.load(Ordering::Acquire) } != state::FREE)
            .collect();
        if live.is_empty() {
            return;
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
