//! The `World`: how the GC stops the program and finds its conservative roots.
//!
//! The scheduler implements [`World`]; `gc` does not depend on it. Two
//! implementations live here: [`SoloWorld`] (one thread uses the heap: nothing
//! to stop) and [`ThreadWorld`] (plain OS threads that poll
//! [`ThreadWorld::safepoint`]), used by the tests and by programs that use the
//! heap without the scheduler.

pub use crate::mutator::{forbid_allocation, AllocationForbidden};
use crate::stack::{os_thread_stack_bounds, with_registers_spilled};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::ThreadId;

/// Stop-the-world and root enumeration, implemented by the scheduler.
///
/// # Safety
///
/// The collector frees every object it does not reach from the roots a World
/// reports and reads every range it reports, so a wrong World makes the
/// collector free live objects or read unmapped memory: implementing it is
/// `unsafe`, and an implementation guarantees all of the following.
///
/// * Every thread that allocates in or holds pointers into the heap is either
///   the calling (collecting) thread or is stopped by `stop_the_world`, at a
///   safe point outside allocation (allocation runs in a no-preemption section)
///   or inside [`World::blocking`].
/// * `stop_the_world` is called with the calling thread counted as stopped: it
///   must not wait for the caller itself (the caller may be a task).
/// * Memory ordering: everything the collector did before `stop_the_world`
///   returned to it happens-after every stopped thread's last action before
///   it stopped, and everything it did before calling `start_the_world`
///   happens-before every resumed thread's next action (e.g. the stop is a
///   handshake through an Acquire/Release flag or a mutex, as the
///   scheduler's is). The write barrier's fast path reads the "a heap marks"
///   flag with a Relaxed load and relies on this edge to see the value the
///   collector set in its last stop; so do the allocation fast path's
///   black-allocation state and the `Root`/`WeakRef` shading paths on
///   stopped threads (threads outside the World order theirs through the
///   shading gate instead).
/// * `for_each_conservative_range` reports, for every stopped task and thread
///   except the caller, its stack from the saved SP (minus 128 bytes red zone on
///   x86-64) to its top, and its saved/spilled register areas. Ranges must be
///   readable memory. The GC scans the caller itself (see
///   [`current_stack_bounds`](World::current_stack_bounds), which must return
///   the bounds of the stack the caller runs on).
///   It may also report other memory the world owns that can hold GC values
///   (the scheduler reports spawn closures not started yet, join results not
///   yet joined and channel buffers): such ranges too must be readable and
///   not be written while the world is stopped.
/// * `run_parallel(n, f)` runs `f(0) .. f(n-1)`, each exactly once, returning
///   when all have returned; any degree of concurrency (including sequential)
///   is correct. The closures never allocate in the GC heap and never
///   unwind (the GC aborts the process with a message if a marking,
///   sweeping or verifying job panics).
/// * Only threads the World stops (and scans) allocate or touch the heap:
///   `may_attach` refuses the others, and while a thread counts as stopped
///   but keeps running (`blocking`), the World takes its mutator away with
///   [`forbid_allocation`] (the safe heap accessors then refuse too).
/// * `blocking(f)` records the caller's stack and spilled registers as
///   conservative roots while `f` runs and does not return while the world
///   is stopped by someone else.
/// * If [`background_collection`](World::background_collection) says true,
///   every method above may also be called from a thread that is none of
///   the World's and holds no mutator (the heap's background collector):
///   `stop_the_world` then stops every thread of the World (the caller
///   being none of them), `for_each_conservative_range` reports every one
///   of them, and `blocking` just runs its closure (waiting out a stop by
///   someone else before returning).
/// * A World that stops nothing says so with
///   [`single_thread`](World::single_thread) (then the heap admits one
///   attached thread at a time and only it collects), unless it is used by
///   one thread only.
///
/// * If [`begin_concurrent_stack_scan`](World::begin_concurrent_stack_scan)
///   returns `true`, then from that start stop until the first
///   [`scan_task_stacks`](World::scan_task_stacks) call that returns `true`,
///   every task's stack and saved registers (what `for_each_conservative_range`
///   would have reported for it in the stop) must be scanned once at a
///   moment it is not running: reported to a `scan_task_stacks` callback
///   (the range must stay readable and unchanged while the callback runs:
///   the task cannot resume meanwhile), or passed to
///   [`Heap::shade_conservative_range`](crate::Heap::shade_conservative_range)
///   before it resumes; and every task that runs during that time must have
///   been scanned before it resumed. Tasks created after the start stop
///   need no scan (black stack), but GC values that reach memory the World
///   owns from a stack not yet scanned (a spawn closure, a join result, a
///   channel's value) must be shaded with `shade_conservative_range` while
///   the heap marks: no stop rescans those places. `true` from
///   `scan_task_stacks` must mean every such scan has completed (its shades
///   published on the heap's grey list) before the call returned.
///
/// Not required for soundness: the GC never calls `stop_the_world` twice
/// without `start_the_world` from the same thread; a World that can detect
/// its stopper calling it again (the scheduler's does) should panic rather
/// than wait for itself. A panic in `stop_the_world` is resumed as is (the
/// GC assumes nothing was stopped); a panic later in the pause makes the GC
/// restart the world and resume the panic in the collecting caller.
///
/// A safe impl does not compile:
///
/// ```compile_fail
/// struct Bogus;
/// impl usurp_gc::World for Bogus {
///     fn stop_the_world(&self) {}
///     fn start_the_world(&self) {}
///     fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize)) {
///         f(0x1000, 0x2000) // unmapped: the collector would fault
///     }
/// }
/// ```
pub unsafe trait World: Send + Sync {
    /// Return when every other task/thread is parked at a safe point.
    fn stop_the_world(&self);
    /// Resume everything stopped by `stop_the_world`.
    fn start_the_world(&self);
    /// Call `f(lo, hi)` for every conservative root range (see the trait docs).
    fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize));
    /// Run `f(i)` for `i` in `0..n` on up to `n` threads (parallel marking).
    fn run_parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        for i in 0..n {
            f(i)
        }
    }
    /// How many marking threads to use.
    fn parallelism(&self) -> usize {
        1
    }
    /// `[lo, hi)` of the stack the calling code runs on (a task's stack or an
    /// OS thread's). The GC scans `[sp, hi)` of the collecting thread after
    /// spilling its registers. Default: the OS thread's stack.
    fn current_stack_bounds(&self) -> (usize, usize) {
        os_thread_stack_bounds()
    }
    /// Run `f` while the caller counts as stopped at a safe point (like a task
    /// in `blocking`): used while the GC waits for another thread's collection.
    /// `f` never touches the heap. The implementation must record the caller's
    /// stack and spilled registers as conservative roots while `f` runs, and
    /// must not return while the world is stopped by someone else.
    fn blocking(&self, f: &mut dyn FnMut()) {
        f()
    }
    /// Whether the calling thread may attach to a heap of this world
    /// ([`Heap::attach_thread`](crate::Heap::attach_thread)). Only a thread
    /// that `stop_the_world` stops and whose stack the World reports (or the
    /// collector itself) may allocate: any other thread would allocate while
    /// the sweep rewrites the same block's bits, and its pointers would never
    /// be scanned. `Err(why)` refuses, with a sentence saying why. Default:
    /// every thread (for [`SoloWorld`] the heap then admits one at a time,
    /// see [`single_thread`](World::single_thread)).
    fn may_attach(&self) -> Result<(), &'static str> {
        Ok(())
    }
    /// Called by the stopper right after `stop_the_world` returned: if that
    /// stop waited noticeably (the scheduler's World: 1 ms), which worker
    /// and task stopped last, in words (reported in `gctrace` and
    /// `CycleStats::ttsp_holdup`). Default: `None`.
    fn last_stop_holdup(&self) -> Option<String> {
        None
    }
    /// Whether this World stops nothing (like [`SoloWorld`]): the heap then
    /// admits one attached thread at a time ([`Heap::attach_thread`](crate::Heap::attach_thread)
    /// refuses others while one is attached) and refuses a collection from
    /// another thread while one is attached (its stack would not be scanned).
    /// Default: false.
    fn single_thread(&self) -> bool {
        false
    }
    /// Whether the heap may run the cycles its pacer asks for on a
    /// background thread of its own (see the trait's `# Safety`), instead
    /// of on the allocating task, whose worker a concurrent mark would
    /// otherwise occupy. Default: false (a World that stops nothing, or one
    /// that only its own threads may stop). A World that answers true and
    /// lets a thread hold it stopped (`stop_the_world` outside a
    /// collection) must also answer [`World::caller_holds_stop`] for that
    /// thread, or an allocation of it at the pacer's trigger waits for a
    /// start stop that waits for it (the heap then panics rather than
    /// hang).
    fn background_collection(&self) -> bool {
        false
    }
    /// The heap's background collector (see
    /// [`background_collection`](World::background_collection)) marks
    /// with the world running from now on (`on`: called right after the
    /// cycle's start stop restarts the world) or no longer (`!on`: called
    /// after the cycle's last stop restarts it, before the sweep). Called
    /// on the collector's own thread, which is not a thread of this World,
    /// once each per concurrent cycle that thread runs, in that order,
    /// never nested. A World whose threads fill every CPU may take one of
    /// them off the CPU meanwhile (the collector then runs in its place
    /// instead of beside it, and a stop finds every thread it waits for on
    /// a CPU). Default: nothing.
    fn background_marking(&self, on: bool) {
        let _ = on;
    }
    /// Whether the calling thread holds this World stopped (it called
    /// `stop_the_world` and has not restarted it): it must then not wait
    /// for a collection, whose start stop would wait for it. The heap asks
    /// before an allocation at the pacer's trigger hands its CPU to the
    /// background collector (`HeapInner::collect_for_alloc`). Default:
    /// false.
    fn caller_holds_stop(&self) -> bool {
        false
    }
    /// Called (with the world running) after a cycle queued finalizers, or
    /// found queued ones that no runner took over the last two intervals
    /// between cycles (a runner blocked in a finalizer): the scheduler
    /// should make a task
    /// call [`Heap::run_pending_finalizers`](crate::Heap::run_pending_finalizers)
    /// (another one than a runner that may be blocked).
    fn finalizers_pending(&self) {}
    /// Per-task stack scanning (issue 9 item 2). Called by the collector in
    /// the start stop of a concurrent cycle (world stopped, on the
    /// collecting thread, after the barrier and black allocation were
    /// turned on and before [`for_each_conservative_range`](World::for_each_conservative_range)).
    /// `true` means: this World scans its tasks' stacks one task at a time
    /// while the world runs, so the `for_each_conservative_range` call of
    /// this stop omits them (it still reports every other range), and the
    /// collector then calls [`scan_task_stacks`](World::scan_task_stacks)
    /// until it returns `true` before its termination stop. The task that
    /// collects, if any, counts as scanned (the collector scans its stack
    /// in the stop). Default: `false` (stacks are reported in the stop).
    fn begin_concurrent_stack_scan(&self) -> bool {
        false
    }
    /// Ranges of World-owned memory scanned with the world running instead
    /// of in the start stop (a channel's buffered values: issue 9, 1M of
    /// them made every start stop 18 ms long). Called once in each
    /// concurrent cycle whose
    /// [`begin_concurrent_stack_scan`](World::begin_concurrent_stack_scan)
    /// returned `true`, by the collecting thread with the world running
    /// (inside [`blocking`](World::blocking) when that thread is a task),
    /// after the start stop and before the termination stop; `f(lo, hi)`
    /// conservatively, each range readable and unchanged while `f` runs
    /// on it. The World may leave out of that cycle's start-stop
    /// `for_each_conservative_range` whatever it reports here, provided
    /// it keeps the deletion half of the barrier for it: a value such a
    /// range held at the start stop that leaves it, before this call has
    /// reported it, for anything the GC does not scan later in the cycle
    /// (a black stack) is shaded
    /// ([`Heap::shade_conservative_range`](crate::Heap::shade_conservative_range))
    /// by whoever takes it out, while the heap marks and before any safe
    /// point of theirs. Default: nothing (every range in the stop).
    fn for_each_deferred_range(&self, f: &mut dyn FnMut(usize, usize)) {
        let _ = f;
    }
    /// Non-blocking: scan what can be claimed now (call `scan(lo, hi)` for
    /// the conservative range of every task of this cycle that is not
    /// running and not yet scanned), make sure the rest will be scanned
    /// (e.g. by whoever resumes them, or by asking them to stop), and say
    /// whether every task of this cycle has been scanned by now (by this
    /// call, an earlier one, or the World itself). Called by the collecting
    /// thread with the world running (inside [`blocking`](World::blocking)
    /// when that thread is a task), only after
    /// [`begin_concurrent_stack_scan`](World::begin_concurrent_stack_scan)
    /// returned `true` in this cycle, repeatedly until it returns `true`.
    /// Default: `true` (nothing to scan).
    fn scan_task_stacks(&self, scan: &mut dyn FnMut(usize, usize)) -> bool {
        let _ = scan;
        true
    }
    /// Called by [`Heap::attach_thread`](crate::Heap::attach_thread) on the
    /// attaching thread, after [`may_attach`](World::may_attach) admitted it
    /// and right before the attach returns its guard (the thread allocates
    /// from then on), with the world running or with this thread parked
    /// nowhere (it is a running participant). Every call is paired with one
    /// [`thread_detached`](World::thread_detached) on the same thread and
    /// the same World object when that `MutatorGuard` drops; the pairs nest
    /// (a thread whose mutator [`forbid_allocation`] took away may attach
    /// again meanwhile, to this heap or another of this World). A World
    /// that lets its threads leave on their own (e.g. [`ThreadWorld`]'s
    /// registrations) uses the count to keep an attached thread a
    /// participant; a World wrapping another must forward both calls.
    /// Default: nothing.
    fn thread_attached(&self) {}
    /// Called by the `MutatorGuard`'s drop on the thread that attached
    /// (possibly during that thread's thread-local destruction), after its
    /// mutator is gone (the thread allocates in that heap no more), once
    /// per [`thread_attached`](World::thread_attached). The World may make
    /// the thread leave here (waiting out a stop in progress, like a safe
    /// point: the thread holds no mutator). Default: nothing.
    fn thread_detached(&self) {}
    /// Called at the end of [`Heap::collect`](crate::Heap::collect), on the
    /// caller's thread, with the world running and no lock of the heap
    /// held: a cooperative point for a scheduler whose task collected (a
    /// task looping on collections holds each stop itself, so a scheduler
    /// that preempts at a quantum's end or fires timers between tasks may
    /// never get to it otherwise). Default: nothing.
    fn after_collect(&self) {}
}

/// The world of a heap used by one thread at a time: nothing to stop. The
/// heap admits one attached thread at a time; while one is attached, no
/// other thread may attach or collect ([`World::single_thread`]).
pub struct SoloWorld;

// SAFETY: single_thread() is true, so the heap lets only one thread use it at
// a time (one attached thread, and only it collects while attached; a thread
// that collects while none is attached scans its own stack): there is nobody
// to stop or scan, and no range is reported.
unsafe impl World for SoloWorld {
    fn stop_the_world(&self) {}
    fn start_the_world(&self) {}
    fn for_each_conservative_range(&self, _f: &mut dyn FnMut(usize, usize)) {}
    fn single_thread(&self) -> bool {
        true
    }
}

/// A [`World`] of plain OS threads that call [`ThreadWorld::safepoint`].
///
/// Each participating thread calls [`ThreadWorld::register`] and keeps the
/// guard; at a safe point it spills its registers, publishes `[sp, stack top)`
/// and waits until the world restarts. Marking runs on `parallelism` scoped
/// threads.
///
/// Membership rules (what the World stops and scans must cover every thread
/// that uses a heap of it):
///
/// * A thread may [`register`](ThreadWorld::register) more than once: the
///   registrations are counted, and the thread leaves the world when its
///   last [`Registration`] drops.
/// * The world counts each thread's attachments to its heaps itself
///   ([`World::thread_attached`], called by
///   [`Heap::attach_thread`](crate::Heap::attach_thread), and
///   [`World::thread_detached`], called when the `MutatorGuard` drops): a
///   thread with an attachment never leaves. The count sees a mutator
///   taken away by [`forbid_allocation`] (it comes back when the forbid
///   guard drops) and every attachment, nested ones included. (A World
///   wrapping a `ThreadWorld` must forward both calls.)
/// * Dropping the last `Registration` while the thread is attached to a
///   heap of this world (the guard still alive) panics: the thread would
///   keep allocating while no stop waited for it and no collection scanned
///   its stack. Drop the `MutatorGuard` first. After that panic (or if the
///   drop happens while the thread already unwinds, where a panic would
///   abort) the thread stays a participant, which must keep polling
///   `safepoint`, until its last attachment ends; it leaves then.
/// * A thread that exits with a registration outstanding (a leaked or
///   `mem::forget`ten `Registration`, or one kept in a thread-local) leaves
///   the world at its exit (from a thread-local destructor), so later stops
///   do not wait for it. If it is still attached then (its `MutatorGuard`
///   lives in a thread-local destroyed later, whose neighbours' destructors
///   may still allocate), it stays a participant, marked exiting, and
///   leaves when that guard drops; a `Registration` dropped meanwhile (at
///   exit) neither panics nor makes it leave. A thread that exits with its
///   `MutatorGuard` leaked (`mem::forget`) never detaches: it stays marked
///   exiting after its OS thread is gone. A stop of the world that waits for
///   such a thread checks (every millisecond, only while an exiting
///   participant has not parked) whether its OS thread still exists, and
///   once it is gone removes it and prints one line to stderr: a dead thread
///   touches no heap any more, so there is nothing to wait for or scan. A
///   stop that has waited 10 ms for any other participant checks it the
///   same way: a thread that registered during its exit (from a
///   thread-local destructor that runs after the world's own, or from a
///   pthread-key destructor) and leaked its guard or its `Registration`
///   leaves no trace of its exit otherwise. (Its
///   leaked mutator and the heap it holds stay allocated, a leak; a
///   collection only gives that mutator's cached blocks back.) Do not leak a
///   `MutatorGuard`: drop it before the thread exits.
/// * Several heaps may share one `ThreadWorld`, and their threads may
///   collect at the same time: a registered thread that waits for another
///   thread's stop to end before it stops the world itself counts as parked
///   meanwhile (its stack published and scanned like at a safe point).
pub struct ThreadWorld {
    stop_requested: AtomicBool,
    state: Mutex<WorldState>,
    cv: Condvar,
    parallelism: usize,
}

#[derive(Default)]
struct WorldState {
    threads: HashMap<ThreadId, Participant>,
    stopper: Option<ThreadId>,
}

#[derive(Clone, Copy, Default)]
struct Participant {
    parked: bool,
    range: (usize, usize),
    /// Live `Registration`s of the thread. 0: the thread dropped its last
    /// one while attached to a heap of this world (the drop panicked, or it
    /// ran during thread exit) and stays until it detaches.
    regs: usize,
    /// Live attachments of the thread to heaps of this world
    /// (`World::thread_attached` minus `thread_detached`): while non-zero
    /// the thread may allocate, so it never leaves.
    attached: usize,
    /// The thread's exit began (its `Memberships` destructor ran) while it
    /// was attached: it leaves when its last attachment ends (a
    /// `MutatorGuard` dropped by a later thread-local destructor).
    exiting: bool,
    /// The OS thread id (`gettid`), recorded by the thread itself in
    /// `register`: `stop_the_world` checks whether a thread that does not
    /// park still exists (a leaked `MutatorGuard` or `Registration`).
    tid: libc::pid_t,
}

/// Whether `stop_the_world` removes participants whose OS thread is gone
/// (the default); `false` only for a negative control
/// ([`set_exited_thread_check_for_tests`]): such a stop then waits for ever,
/// as before the check.
static EXITED_THREAD_CHECK: AtomicBool = AtomicBool::new(true);

/// Test-only: turn off (`false`) or on again (the default) the removal of
/// participants whose OS thread exited without leaving (a leaked
/// `MutatorGuard` or `Registration`) from `ThreadWorld` stops, to show a
/// collection then waits for ever without it. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_exited_thread_check_for_tests(on: bool) {
    EXITED_THREAD_CHECK.store(on, Ordering::SeqCst);
}

/// How often a stop that waits for an exiting participant checks whether
/// its OS thread still exists (a dying thread notifies nobody).
const EXITED_THREAD_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// How long a stop waits for a participant that is not exiting before it
/// checks, every [`EXITED_THREAD_POLL`], whether that participant's OS
/// thread still exists: a thread that left no trace of its exit (it
/// registered too late in its exit to be seen leaving, or leaked its
/// `Registration` where no destructor ran) is gone without a word. Long
/// beside an ordinary stop (a participant parks at its next `safepoint`),
/// so that ordinary stops make no system call.
const DEAD_CHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether OS thread `tid` of this process is gone: `tgkill` with signal 0
/// (which sends nothing, only checks) fails with `ESRCH`. A tid reused by a
/// new thread of the process counts as alive (the caller then waits on, as
/// it did before this check existed).
fn os_thread_gone(tid: libc::pid_t) -> bool {
    // SAFETY: plain system calls; signal 0 sends no signal (existence and
    // permission check only).
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The worlds the current thread is a participant of, left when the thread
/// exits (the thread-local's destructor): a `Registration` that is never
/// dropped must not make every later stop wait for a thread that is gone.
/// A world the thread is still attached to is not left but marked exiting
/// (its `MutatorGuard`, dropped by a later thread-local destructor, makes
/// the thread leave in `World::thread_detached`).
struct Memberships {
    /// The thread's id, recorded while `std::thread::current` still works
    /// (it may not during thread-local destruction).
    me: std::cell::Cell<Option<ThreadId>>,
    worlds: std::cell::RefCell<Vec<Weak<ThreadWorld>>>,
}

impl Drop for Memberships {
    fn drop(&mut self) {
        let Some(me) = self.me.get() else { return };
        for w in self.worlds.get_mut().drain(..) {
            if let Some(w) = w.upgrade() {
                // Thread-locals first touched before `register` are
                // destroyed after this one: one may still hold the
                // thread's `MutatorGuard` and allocate. An attached thread
                // stays (marked exiting); its guard's drop makes it leave.
                {
                    let mut st = w.state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = st.threads.get_mut(&me).filter(|p| p.attached > 0) {
                        p.exiting = true;
                        continue;
                    }
                }
                w.leave(me);
            }
        }
    }
}

thread_local! {
    static MEMBERSHIPS: Memberships = const {
        Memberships { me: std::cell::Cell::new(None), worlds: std::cell::RefCell::new(Vec::new()) }
    };
    /// The thread's id, cached: no destructor, so it stays readable during
    /// thread-local destruction (where `std::thread::current` may not work),
    /// when a `MutatorGuard` or `Registration` kept in a thread-local drops.
    static MY_ID: std::cell::Cell<Option<ThreadId>> = const { std::cell::Cell::new(None) };
}

/// The calling thread's id (see `MY_ID`).
fn my_id() -> ThreadId {
    MY_ID.with(|c| match c.get() {
        Some(id) => id,
        None => {
            let id = std::thread::current().id();
            c.set(Some(id));
            id
        }
    })
}

/// Membership of the current thread in a [`ThreadWorld`]; the thread leaves
/// when its last registration drops (see [`ThreadWorld`] for the rules:
/// dropping the last one while attached to a heap of the world panics).
pub struct Registration {
    world: Arc<ThreadWorld>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let me = my_id();
        {
            let mut st = self.world.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = st.threads.get_mut(&me) else {
                // Already left (the thread-local destructor ran first: this
                // Registration lives in a thread-local destroyed after it).
                return;
            };
            if p.regs > 1 {
                p.regs -= 1;
                return;
            }
            // The World's own count (`thread_attached`), not the current
            // mutator: one taken away by `forbid_allocation` comes back.
            if p.attached > 0 {
                // Keep the thread a participant (it still allocates); it
                // leaves when its last attachment ends.
                p.regs = 0;
                if p.exiting {
                    // Thread exit (a thread-local destructor): nothing to
                    // report, and a panic here would abort.
                    return;
                }
                drop(st);
                if !std::thread::panicking() {
                    panic!(
                        "usurp gc: the last ThreadWorld Registration of this thread dropped while the thread is \
                         attached to a heap of that ThreadWorld (its MutatorGuard is alive): the world would \
                         neither stop nor scan this thread; drop the MutatorGuard first. The thread stays \
                         registered (it must keep polling ThreadWorld::safepoint) until that guard drops"
                    );
                }
                return;
            }
        }
        let world = Arc::as_ptr(&self.world);
        // The thread-local may be gone already (a Registration dropped by
        // another thread-local's destructor): then there is nothing to prune.
        let _ = MEMBERSHIPS.try_with(|m| m.worlds.borrow_mut().retain(|w| w.strong_count() > 0 && w.as_ptr() != world));
        self.world.leave(me);
    }
}

impl ThreadWorld {
    /// A world whose marking uses `parallelism` threads (at least 1).
    pub fn new(parallelism: usize) -> Arc<ThreadWorld> {
        Arc::new(ThreadWorld {
            stop_requested: AtomicBool::new(false),
            state: Mutex::new(WorldState::default()),
            cv: Condvar::new(),
            parallelism: parallelism.max(1),
        })
    }

    /// Make the current thread a participant (it must then poll `safepoint`).
    /// A thread already registered gets another registration (counted: it
    /// leaves when the last one drops).
    pub fn register(self: &Arc<Self>) -> Registration {
        let me = my_id();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = st.threads.get_mut(&me) {
            // Already a participant (the stopper, if any, waits for it to
            // park): nothing to wait for.
            p.regs += 1;
        } else {
            // Joining while stopped would let the new thread run during the pause.
            while st.stopper.is_some() {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            // SAFETY: gettid has no preconditions; it is this thread's own
            // id (the thread registers itself).
            let tid = unsafe { libc::gettid() };
            st.threads.insert(me, Participant { regs: 1, tid, ..Participant::default() });
            drop(st);
            // Leave at thread exit even if the Registration is never dropped.
            // A thread whose thread-locals are being destroyed (a destructor
            // that registers after `MEMBERSHIPS` is gone) or that registers
            // from a pthread-key destructor (`MEMBERSHIPS` then initialised
            // but never destroyed) cannot record that: if it exits without
            // leaving, a stop that waits for it finds its OS thread gone
            // (`stop_the_world`, "dead participants").
            let weak = Arc::downgrade(self);
            let _ = MEMBERSHIPS.try_with(move |m| {
                m.me.set(Some(me));
                let mut worlds = m.worlds.borrow_mut();
                worlds.retain(|w| w.strong_count() > 0);
                worlds.push(weak);
            });
        }
        Registration { world: self.clone(), _not_send: std::marker::PhantomData }
    }

    /// Remove thread `me` (the calling thread, possibly during its
    /// thread-local destruction) from the world. Leaving counts as a safe
    /// point: wait out a stop in progress, parked with an empty range (the
    /// thread is about to leave and must not hold heap pointers it still
    /// needs).
    fn leave(&self, me: ThreadId) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.threads.contains_key(&me) {
            return;
        }
        while st.stopper.is_some() && st.stopper != Some(me) {
            if let Some(p) = st.threads.get_mut(&me) {
                p.parked = true;
                p.range = (0, 0);
            }
            self.cv.notify_all();
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.threads.remove(&me);
        self.cv.notify_all();
    }

    /// Poll for a stop request; if there is one, park until the world restarts.
    #[inline]
    pub fn safepoint(&self) {
        if self.stop_requested.load(Ordering::Acquire) {
            self.park(&mut || {});
        }
    }

    /// Park the current thread (registers spilled, stack published) while
    /// running `f`, then wait for any stop in progress to end.
    #[inline(never)]
    fn park(&self, f: &mut dyn FnMut()) {
        let me = my_id();
        with_registers_spilled(&mut |sp| {
            let top = os_thread_stack_bounds().1;
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let Some(p) = st.threads.get_mut(&me) else {
                    drop(st);
                    f();
                    return;
                };
                p.parked = true;
                p.range = (sp, top);
                self.cv.notify_all();
            }
            f();
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            while st.stopper.is_some() && st.stopper != Some(me) {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if let Some(p) = st.threads.get_mut(&me) {
                p.parked = false;
                p.range = (0, 0);
            }
        });
    }
}

// SAFETY: only registered threads attach (may_attach), and a registered
// thread cannot leave while attached: the world counts its attachments
// (thread_attached/thread_detached, called by Heap::attach_thread and
// MutatorGuard::drop on that thread), and neither Registration::drop nor
// the thread-exit destructor removes a thread whose count is non-zero (it
// leaves in thread_detached, once it has no mutator of this world); stop_the_world
// (from any thread, registered or not: background_collection) returns when
// every other registered thread is parked in `park` (a registered thread
// waiting to stop the world itself parks too), with its
// registers spilled and [sp, stack top) of its own OS stack published, which
// for_each_conservative_range reports; `blocking` parks likewise and waits
// out a stop before returning; run_parallel runs each index once on scoped
// threads and returns when all have finished.
// One attached thread is removed without detaching: stop_the_world drops a
// participant that is exiting (its Memberships destructor ran), attached
// (its MutatorGuard was leaked, e.g. mem::forget), not parked, and whose OS
// thread no longer exists (tgkill(getpid(), tid, 0) fails with ESRCH; the
// tid is the one the thread recorded itself in `register`). Such a thread
// runs no code any more: it allocates nothing and holds no pointer the
// collector must see except in memory the collector reads anyway (heap
// objects, roots); its stack is never reported (only parked participants'
// ranges are) and nobody will read it again. Its leaked mutator stays in
// the heap's registry as allocated memory (the leaked guard owns it), so
// the pause's `release_all`/`flush_caches` on it reads live memory, and no
// thread races with that (the owner is dead). Ordering: the kernel releases
// the tid after the thread's last user-space instruction, with full
// barriers in between (its exit path, e.g. the futex wake of the tid word
// pthread_join waits on), and stop_the_world issues a SeqCst fence after
// seeing ESRCH (message passing with barriers on both sides), so the
// collector sees that thread's last heap writes (an argument about Linux's
// thread exit, not about the Rust memory model). A tid that still exists
// counts as alive: a thread still in its thread-local destructors (it may
// allocate) and one whose tid a new thread of the process got (the stop
// then waits on, as it did before the check) are both waited for; a thread
// is never removed while it can run.
unsafe impl World for ThreadWorld {
    fn stop_the_world(&self) {
        let me = my_id();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.stopper == Some(me) {
            drop(st);
            panic!("usurp gc: ThreadWorld::stop_the_world called by the thread that holds the world stopped: it would wait for itself forever");
        }
        while st.stopper.is_some() {
            if st.threads.contains_key(&me) {
                // A participant waiting for another stopper (another heap of
                // this world collects) counts as parked meanwhile: that
                // stopper waits for it, and scans its stack (the caller's
                // frames hold its heap pointers). `park` returns once that
                // stop has ended; another waiter may have taken the world
                // since, so check again.
                drop(st);
                self.park(&mut || {});
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            } else {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        st.stopper = Some(me);
        self.stop_requested.store(true, Ordering::Release);
        let mut gone = Vec::new();
        let t0 = std::time::Instant::now();
        loop {
            let mut waiting = false;
            let mut exiting = false;
            for (id, p) in st.threads.iter() {
                if *id != me && !p.parked {
                    waiting = true;
                    exiting |= p.exiting && p.attached > 0;
                }
            }
            if !waiting {
                break;
            }
            let waited = t0.elapsed();
            if !EXITED_THREAD_CHECK.load(Ordering::Relaxed) {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if !exiting && waited < DEAD_CHECK_AFTER {
                // The common case: every participant we wait for parks (or
                // leaves) and notifies, long before the bound.
                st = self.cv.wait_timeout(st, DEAD_CHECK_AFTER - waited).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            // Dead participants. An exiting participant that has not parked
            // is still in its thread-local destructors (it may allocate:
            // wait), or its OS thread exited with its MutatorGuard leaked
            // (it never parks nor detaches). Any other participant we have
            // waited `DEAD_CHECK_AFTER` for may be a thread that exited
            // without leaving: it registered from a thread-local destructor
            // that ran after the world's own (`MEMBERSHIPS`), or from a
            // pthread-key destructor (where `MEMBERSHIPS`'s destructor never
            // runs), and leaked its guard or its Registration (review 113).
            // Nobody notifies when a thread dies: check every millisecond
            // meanwhile. A thread whose tid still exists (busy, destructors
            // not done, or a new thread of the process that got its tid)
            // counts as alive: we wait on.
            let dead: Vec<(ThreadId, libc::pid_t, bool)> = st
                .threads
                .iter()
                .filter(|(id, p)| **id != me && !p.parked && os_thread_gone(p.tid))
                .map(|(id, p)| (*id, p.tid, p.attached > 0))
                .collect();
            if dead.is_empty() {
                st = self.cv.wait_timeout(st, EXITED_THREAD_POLL).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            // The thread ran its last instruction before the kernel
            // released its tid, with full barriers in between on the
            // kernel's exit path (e.g. the futex wake of the tid word that
            // pthread_join waits on); this fence pairs with them (message
            // passing), so the collector sees the thread's last heap
            // writes. See the SAFETY comment of this impl.
            std::sync::atomic::fence(Ordering::SeqCst);
            for (id, tid, attached) in dead {
                st.threads.remove(&id);
                gone.push((tid, attached));
            }
        }
        drop(st);
        for (tid, attached) in gone {
            if attached {
                eprintln!(
                    "usurp gc: thread {tid} exited while attached to a heap of this ThreadWorld (its MutatorGuard \
                     was leaked, e.g. mem::forget); it no longer counts as a participant. Drop MutatorGuards \
                     before a thread exits."
                );
            } else {
                eprintln!(
                    "usurp gc: thread {tid} exited while registered with this ThreadWorld without leaving it (its \
                     Registration was leaked, or made during the thread's exit where no destructor ran); it no \
                     longer counts as a participant. Drop Registrations before a thread exits."
                );
            }
        }
    }

    fn start_the_world(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stopper = None;
        self.stop_requested.store(false, Ordering::Release);
        self.cv.notify_all();
    }

    fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize)) {
        let me = my_id();
        let ranges: Vec<(usize, usize)> = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.threads.iter().filter(|(id, p)| **id != me && p.parked).map(|(_, p)| p.range).collect()
        };
        for (lo, hi) in ranges {
            if lo < hi {
                f(lo, hi);
            }
        }
    }

    fn run_parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in 1..n {
                s.spawn(move || f(i));
            }
            if n > 0 {
                f(0);
            }
        });
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn blocking(&self, f: &mut dyn FnMut()) {
        self.park(f);
    }

    fn background_collection(&self) -> bool {
        true
    }

    fn caller_holds_stop(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stopper == Some(my_id())
    }

    fn may_attach(&self) -> Result<(), &'static str> {
        let me = my_id();
        if self.state.lock().unwrap_or_else(|p| p.into_inner()).threads.contains_key(&me) {
            Ok(())
        } else {
            Err("the thread is not registered with the heap's ThreadWorld (call ThreadWorld::register first, and poll ThreadWorld::safepoint)")
        }
    }

    fn thread_attached(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // `may_attach` just admitted the thread, and only the thread itself
        // leaves (its Registration is not Send): it is a participant.
        if let Some(p) = st.threads.get_mut(&my_id()) {
            p.attached += 1;
        }
    }

    fn thread_detached(&self) {
        let me = my_id();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = st.threads.get_mut(&me) else { return };
            p.attached = p.attached.saturating_sub(1);
            // Stay while attached elsewhere in this world, or registered
            // and not exiting.
            if p.attached > 0 || (p.regs > 0 && !p.exiting) {
                return;
            }
        }
        let world = self as *const ThreadWorld;
        // The thread-local may be gone (thread exit): nothing to prune then.
        let _ = MEMBERSHIPS.try_with(|m| m.worlds.borrow_mut().retain(|w| w.strong_count() > 0 && w.as_ptr() != world));
        self.leave(me);
    }
}
