//! The runtime (public API, floor 5): configuration (`RuntimeBuilder`),
//! start-up, the `Runtime` handle and shutdown. The state shared by all
//! workers is `shared.rs` (floor 3).

use crate::error::{
    Error, DEFAULT_TIMER_SPIN, MAX_BLOCKING_THREADS, MAX_STACK_SIZE, MAX_TIMER_SPIN, MAX_WORKERS, MIN_STACK_SIZE,
};
use crate::join::JoinHandle;
use crate::shared::Shared;
use crate::sys::page_size;
use crate::worker;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::glue::gc_world::RuntimeWorld;
use crate::error::{DEFAULT_QUANTUM, MAX_QUANTUM, MIN_QUANTUM};
use crate::worker::thread::PreemptConfig;
use usurp_gc::{Heap, HeapConfig};

/// Default usable size of a task stack: 256 KiB.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Default bound on extra threads used by [`crate::blocking`].
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 64;

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
    timer_spin: Duration,
    task_cpu_time: bool,
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
            timer_spin: DEFAULT_TIMER_SPIN,
            task_cpu_time: true,
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

    /// Timer spin (default [`crate::DEFAULT_TIMER_SPIN`], 100 µs;
    /// `Duration::ZERO` turns it off): the idle worker that waits for the
    /// earliest timer sleeps until `spin` before it is due, then spins (a
    /// CPU pause loop, reading the clock) until it is due, instead of
    /// sleeping until the deadline itself. The OS wakes a sleeping thread
    /// tens of microseconds late (on a VM ~100 µs at the 99th percentile,
    /// even with usurp's 1 ns timer slack); a spinning one sees the
    /// deadline within a clock read, so `sleep` and timed waits on an
    /// otherwise idle runtime end that much closer to on time. Choose
    /// `spin` a little above your machine's wake-up lateness (`cargo bench
    /// -p usurp --bench conserve -- --idle` prints it beside the
    /// runtime's).
    ///
    /// **CPU cost:** each time the earliest timer comes due while a
    /// worker is idle, that worker burns up to `spin` of CPU (one worker:
    /// the others sleep), and never more than 1/9 of the time between two
    /// spins (with timers due every few microseconds it spins a little
    /// before each, not all the time). A task that sleeps 1 ms in a loop on
    /// an otherwise idle runtime costs about 0.2 ms of CPU per sleep with
    /// the default spin (about 0.1 ms without it); while every worker runs
    /// tasks nothing spins. On a machine whose CPUs are all taken a
    /// spinning thread is preempted by the OS in the middle of its spin,
    /// for a whole time slice, while a sleeping one is favoured when it
    /// wakes: a spin that sees it lost its CPU turns spinning off for
    /// 100 ms (plain timed sleeps meanwhile). A timer due while the spinning worker runs a
    /// task is fired by another idle worker up to 100 µs late; with no
    /// other idle worker, as without the spin (the timer monitor preempts
    /// a busy one). Work that arrives during a spin (a spawn, a wake-up)
    /// is not delayed: wakers pick the spinning worker first, and it
    /// leaves the spin at once.
    ///
    /// Allowed `Duration::ZERO` (off) to [`crate::MAX_TIMER_SPIN`] (1 ms);
    /// more makes `build` fail with [`Error::InvalidTimerSpin`].
    pub fn timer_spin(mut self, spin: Duration) -> RuntimeBuilder {
        self.timer_spin = spin;
        self
    }

    /// Per-task CPU time (default on): every task switch reads the CPU's
    /// cycle counter (rdtsc / cntvct_el0) and charges the outgoing task
    /// ([`crate::task::TaskStats::cpu_time`], [`crate::JoinHandle::cpu_time`],
    /// task dumps). That read is a sizeable part of a switch on some
    /// machines (a VM where rdtsc costs ~10 ns: about a fifth of a yield).
    /// With `false` no switch reads the counter, and nothing is measured:
    /// `cpu_time()` is [`Duration::ZERO`] for every task of this runtime,
    /// [`crate::task::TaskStats::cpu_time_on`] is false (so a zero is not
    /// mistaken for an idle task), and a dump prints `cpu off` (its
    /// `TaskInfo::cpu_time` is zero too; [`crate::TaskDump::cpu_time_on`] says why).
    pub fn task_cpu_time(mut self, on: bool) -> RuntimeBuilder {
        self.task_cpu_time = on;
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

    /// Name prefix of the runtime's threads (default `usurp-worker`). A
    /// name containing a NUL byte makes [`RuntimeBuilder::build`] return
    /// [`Error::InvalidThreadName`].
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
        if self.timer_spin > MAX_TIMER_SPIN {
            return Err(Error::InvalidTimerSpin { given: self.timer_spin });
        }
        if self.thread_name.contains('\0') {
            // std::thread::Builder::spawn would panic on it (worker threads
            // are named "<prefix>-<n>").
            return Err(Error::InvalidThreadName { given: self.thread_name });
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
            crate::glue::preempt_glue::init_hooks();
        } else {
            crate::glue::preempt_glue::init_yield_hook();
        }
        if let Some(sig) = self.dump_signal {
            crate::glue::dumpsig::check_signal(sig).map_err(|reason| Error::InvalidDumpSignal { given: sig, reason })?;
        }
        // From the environment, a refused signal is reported and ignored.
        let dump_signal = self.dump_signal.or_else(|| {
            let sig = crate::glue::dumpsig::from_env()?;
            match crate::glue::dumpsig::check_signal(sig) {
                Ok(()) => Some(sig),
                Err(reason) => {
                    eprintln!("usurp: USURP_DEBUG: dumpsignal={sig}: {reason}; ignored");
                    None
                }
            }
        });
        crate::glue::dump::init_clock();
        let ps = page_size();
        let stack_size = self.stack_size.div_ceil(ps) * ps;
        crate::worker::guard::install();
        crate::panic_hook::install();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            heap.set_world(Arc::new(RuntimeWorld { shared: weak.clone(), spawn_finalizers }));
            Shared::new(
                weak,
                workers,
                heap.clone(),
                PreemptConfig { enabled: preempt_on, quantum: self.quantum },
                self.max_blocking_threads,
                stack_size,
                self.thread_name.clone(),
                crate::glue::gc_world::attach_thread,
                self.timer_spin.as_nanos() as u64,
                self.task_cpu_time,
            )
        });
        // With or without async preemption: without it, the monitor's
        // requests reach the tasks' cooperative points (`sysmon::retake`).
        crate::sysmon::start(&shared);
        crate::stw::start_markers(&shared, workers - 1);
        for i in 0..workers {
            if let Err(e) = shared.start_thread(&shared.workers[i]) {
                // Stop whatever started.
                shared.begin_shutdown();
                shared.count_unstarted(workers - i);
                shared.wait_stopped();
                return Err(Error::ThreadSpawn(e));
            }
        }
        if let Some(sig) = dump_signal {
            if let Err(reason) = crate::glue::dumpsig::register(sig, Arc::downgrade(&shared)) {
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
/// joining them returns an error, and the closures of those that never
/// started are dropped. From the moment the drop begins, nothing handed out
/// (a [`Mutex`](crate::Mutex) unlock, a [`Condvar`](crate::Condvar)
/// notification, a sent value) goes to a task of this runtime that is
/// parked waiting for it: it goes to the next live waiter (a plain thread,
/// a task of another runtime) or stays available (the mutex unlocked, the
/// value in the channel for its `Receiver`). A task that got it before the
/// drop began keeps it. A task of this runtime inside `blocking` waits as
/// a thread and is still served; if the runtime is gone when its closure
/// returns, the task never resumes and keeps what it got (a lock stays
/// locked).
///
/// Since abandoned stacks are never unwound, what an abandoned task holds
/// is never released: a `MutexGuard` it holds keeps the mutex locked (a
/// later `lock` waits for ever, `try_lock` fails), a `Sender` or
/// `SyncSender` it holds (on its stack, in its closure) keeps the channel
/// connected (a `recv` waits for ever once the buffer is empty instead of
/// returning `RecvError`). A `Receiver` it owns (moved into it, so on its
/// stack) is found dead by a send that meets its parked receive: that send
/// and all later ones return an error, as if it had been dropped; if it
/// was not parked in a receive, sends succeed into the buffer (on a
/// bounded channel, until it is full: then a send waits for ever). A
/// `Receiver` shared through an `Arc` stays open for its other holders.
/// The same holds for
/// anything it borrowed or owns (std locks, `Arc`s, files). Tasks that
/// share such objects with threads or other runtimes should finish (be
/// joined) before the runtime is dropped.
///
/// Dropping it from inside one of its own
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
    /// If called from a usurp task on its worker (it would block the worker's
    /// thread; use [`crate::spawn`] and [`JoinHandle::join`] there; inside
    /// [`crate::blocking`] it is allowed: the thread may block; but a
    /// `blocking` closure that runs in place, on the task's own worker
    /// (no thread to hand the worker to: `max_blocking_threads(0)`, or
    /// tasks pinned to the worker), holds that worker, so a `block_on` of
    /// the same runtime there waits for ever if no other worker can run
    /// the new task, as a `JoinHandle::join` there would), by a thread
    /// that holds a world stopped ([`Runtime::stop_the_world`]: the task
    /// could not run), or if the task cannot be created (see
    /// [`Runtime::try_spawn`]).
    pub fn block_on<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Inside `blocking` the task has left its worker (or counts as
        // stopped on it): its thread may block here, as a plain thread.
        if worker::Current::get().is_some() {
            panic!(
                "usurp: Runtime::block_on called from a usurp task on a worker (it would block the worker's \
                 thread); use spawn(..).join() instead, or call it inside usurp::blocking(..)"
            );
        }
        // Before the spawn: a thread holding a stop would wait for ever.
        crate::stw::thread_about_to_wait();
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
    /// A plain thread that stops the world must not wait for a task either:
    /// `block_on` and `JoinHandle::join` of an unfinished task panic on it
    /// while it holds the stop, before they wait. Its waits on channels,
    /// `Mutex`, `Condvar` and `Select` are allowed (another plain thread
    /// may complete them, or they time out), but one that only a task can
    /// complete never ends. A plain thread that exits while it holds the
    /// stop restarts the world, with a message on stderr.
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
    /// restarts it), or inside a collection's pause (from a root scanner:
    /// the collection holds the world stopped until its pause ends).
    pub fn start_the_world(&self) {
        crate::stw::start_the_world_public(&self.shared)
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
        crate::glue::dump::dump(&self.shared, crate::DUMP_STOP_TIMEOUT)
    }

    /// [`Runtime::dump_tasks`] with another limit on the wait for the stop.
    pub fn dump_tasks_timeout(&self, stop_timeout: Duration) -> crate::TaskDump {
        crate::glue::dump::dump(&self.shared, stop_timeout)
    }

    /// Whether this runtime measures per-task CPU time (see
    /// [`RuntimeBuilder::task_cpu_time`]).
    pub fn task_cpu_time(&self) -> bool {
        self.shared.cpu_time
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
        if crate::stw::defer_drop_to_pause_end(sh) {
            // Dropped by a root scanner inside a collection's pause (on the
            // collector): restarting the world here would let tasks run in
            // the middle of the collection, and waiting for the workers
            // would wait for the pause's end. The shutdown begins when the
            // collector restarts the world (`RuntimeWorld::start_the_world`),
            // finished by a reaper thread as below.
            return;
        }
        if crate::stw::caller_is_stopper(sh) {
            // Dropped (perhaps while a panic unwinds) by the task or thread
            // that holds the world stopped: workers parked for the stop
            // would never see the shutdown, and nobody else may restart it.
            crate::stw::start_the_world(sh);
        }
        let t = worker::current_task();
        // SAFETY: a current task is valid while it runs.
        let own = !t.is_null() && unsafe { (*t).shared } == Arc::as_ptr(sh);
        if own {
            // It runs on after its drop (`Shared::shutting_down_for`).
            sh.dropper.store(t as usize, std::sync::atomic::Ordering::SeqCst);
        }
        sh.begin_shutdown();
        // If dropped from one of our own tasks, we cannot wait for our own
        // worker to stop (it runs us). A reaper thread owns a reference to
        // the shared state and finishes the shutdown once every worker has
        // stopped, exactly as below: tasks still parked are abandoned (their
        // joiners get an error) and keep the shared state alive for late
        // wake-ups from other threads (issue 11 item 6: it used to be freed
        // under them).
        if own {
            sh.spawn_reaper();
            return;
        }
        if !t.is_null() {
            // Dropped from a task of another runtime: wait off that task's
            // worker, as `blocking` does, so that its own runtime can stop
            // meanwhile (even if it is shutting down: the worker then goes
            // to a thread that stops it). Runtimes A and B, each dropped
            // from a task of the other, used to deadlock here, each wait
            // holding a worker of the runtime the other waited for
            // (red-team RT-sched finding 2).
            worker::blocking_leave_worker(&mut || self.finish_drop());
            return;
        }
        self.finish_drop();
    }
}

impl Runtime {
    /// The end of `drop` (not from a task of this runtime): waits for every
    /// worker to stop, then abandons the unfinished tasks or joins the
    /// runtime's threads.
    fn finish_drop(&self) {
        let sh = &self.shared;
        sh.wait_stopped();
        // With tasks abandoned, the state (and the heap) is leaked on
        // purpose, and a thread may still run a `blocking` closure: no join.
        // Otherwise every runtime thread exits now; joined, none of them
        // holds the state any more, so the `Arc` dropped after this body is
        // the last (unless the embedder keeps a `Heap` clone or a
        // `RuntimeWorld`), and the heap is unregistered and unmapped when
        // `drop` returns (it used to linger up to ~100 ms, held by a marker
        // thread waiting for jobs). The GC's own background threads hold
        // the heap weakly; see `Heap`'s drop.
        if !sh.abandon_remaining() && crate::shared::RELEASE_ON_DROP.load(std::sync::atomic::Ordering::Relaxed) {
            sh.join_threads();
        }
    }
}

/// Runs the heap's pending finalizers in a detached task (installed in
/// `glue::gc_world::RuntimeWorld` as a hook: the adapter does not import
/// the public API's `join.rs`). Errors (shutting down) leave the finalizers
/// queued for a later call.
fn spawn_finalizers(sh: &Shared) {
    let heap = sh.heap.clone();
    let _ = crate::join::spawn_in(sh, Some("usurp-finalizers".into()), move || {
        heap.run_pending_finalizers();
    });
}
