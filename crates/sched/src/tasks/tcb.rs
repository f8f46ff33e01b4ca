//! The task struct and its life cycle.
//!
//! A `Task` owns its stack and is recycled with it: when a task exits, the
//! context that runs next puts the struct on its worker's free cache (no
//! atomics, no syscall), from which the next spawn on that worker takes it.
//! Overflowing caches spill to a bounded shared pool (stack pages kept up
//! to a resident budget, released with `madvise` beyond it: `stack.rs`),
//! and beyond that tasks are unmapped and freed.
//!
//! Every `Task` ever allocated by a runtime is listed in its registry (a
//! vector touched only when a struct is allocated or freed, never on the hot
//! path), which lets the runtime enumerate task stacks for the GC and find the
//! tasks it must abandon at shutdown.

use crate::tasks::local::LocalMap;
use crate::shared::Shared;
use crate::stack::Stack;
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// `Task::state` values.
pub(crate) mod state {
    /// In a free cache or the pool: no task lives in it.
    pub(crate) const FREE: u8 = 0;
    /// In a run queue (or just spawned).
    pub(crate) const RUNNABLE: u8 = 1;
    /// On a CPU.
    pub(crate) const RUNNING: u8 = 2;
    /// Suspended until someone unparks it.
    pub(crate) const PARKED: u8 = 3;
    /// Inside `blocking(f)`, on a thread that handed its worker off.
    pub(crate) const BLOCKING: u8 = 4;
    /// Never finished before its runtime shut down; leaked on purpose.
    pub(crate) const ABANDONED: u8 = 5;
}

/// `Task::park` values: a one-token parking state.
pub(crate) mod park {
    pub(crate) const EMPTY: u8 = 0;
    pub(crate) const PARKED: u8 = 1;
    pub(crate) const NOTIFIED: u8 = 2;
}

/// `Task::wait_kind` values: what a PARKED task waits for (task dumps).
/// The argument (`Task::wait_arg`) is said beside each.
pub(crate) mod wait_kind {
    /// Nothing recorded (a park through another path).
    pub(crate) const NONE: u8 = 0;
    /// Sending on a full channel; arg: the channel's address.
    pub(crate) const CHAN_SEND: u8 = 1;
    /// Receiving on an empty channel; arg: the channel's address.
    pub(crate) const CHAN_RECV: u8 = 2;
    /// Locking a `Mutex`; arg: its address.
    pub(crate) const MUTEX: u8 = 3;
    /// Waiting on a `Condvar`; arg: its address.
    pub(crate) const CONDVAR: u8 = 4;
    /// `sleep`; arg: the deadline (monotonic ns, `sys::now_ns`).
    pub(crate) const SLEEP: u8 = 5;
    /// `JoinHandle::join`; arg: the id of the joined task.
    pub(crate) const JOIN: u8 = 6;
    /// `Select::wait`; arg: the number of cases.
    pub(crate) const SELECT: u8 = 7;
}

/// `pinned_worker` value of a task that may run anywhere.
pub(crate) const NO_PIN: usize = usize::MAX;

/// What a task runs: a type-erased packet (closure, result slot and join
/// state in one allocation; see `join.rs`).
pub(crate) trait Body: Send + Sync + crate::tasks::packet::Counted {
    /// Runs the closure, catching any panic, and stores its result.
    fn run(&self);
    /// Completes the join state (after `run` and the task-local
    /// destructors: a joiner then sees the task entirely finished).
    fn finish(&self);
    /// Completes the join state without a result (runtime shut down).
    fn abandon(&self);
    /// `[lo, hi)` of the closure while the task has not taken it yet
    /// (empty afterwards, or for a closure capturing nothing): scanned by
    /// the GC (`heap_roots::for_each_spawn_closure`).
    ///
    /// # Safety
    /// The task is not running (nobody takes the closure meanwhile).
    unsafe fn closure_range(&self) -> (usize, usize);
    /// Where the join handle reads the task's CPU time (`join.rs`).
    fn cpu_link(&self) -> &crate::tasks::cpu_link::CpuLink;
}

pub(crate) struct Task {
    /// Saved stack pointer while the task is not running.
    pub(crate) sp: UnsafeCell<usize>,
    /// Link for intrusive lists (global queue, inboxes).
    pub(crate) next: Cell<*mut Task>,
    pub(crate) park: AtomicU8,
    pub(crate) state: AtomicU8,
    /// Worker index this task must resume on (after an async preemption), or
    /// `NO_PIN`.
    pub(crate) pinned_worker: Cell<usize>,
    pub(crate) id: Cell<u64>,
    pub(crate) name: UnsafeCell<Option<Box<str>>>,
    pub(crate) body: UnsafeCell<Option<crate::tasks::packet::PacketRc<dyn Body>>>,
    pub(crate) locals: UnsafeCell<LocalMap>,
    pub(crate) shared: *const Shared,
    pub(crate) registry_index: Cell<usize>,
    pub(crate) stack: Stack,
    /// Preemption state (no-preempt depth) kept while switched out.
    pub(crate) preempt_state: Cell<usurp_preempt::TaskPreemptState>,
    /// Whether the task was last made runnable by a wake (timer, channel,
    /// mutex, join...), not a spawn: a woken task displaced from a worker's
    /// `runnext` slot keeps its latency boost (the woken FIFO), a spawned
    /// one goes to the ring. Written by whoever makes the task runnable
    /// (`worker::make_runnable`, which owns it then), before it is published
    /// in `runnext`; read by whoever takes it out of the slot again (the
    /// swap hands the task over with it).
    pub(crate) woken: Cell<bool>,
    /// How many runtimes' worlds this task holds stopped: its own
    /// (`Runtime::stop_the_world` or a collection from this task, while it
    /// holds its worker) and other runtimes' (from this task). While
    /// non-zero it is a stopper at its switches (`stw::task_holds_stop`):
    /// not preempted, no yield, no park, and at exit those worlds are
    /// restarted. Written only by the task itself (`stw::stop_inner`, the
    /// cross-runtime path of `stw::stop_the_world_until`, and
    /// `stw::start_the_world`).
    pub(crate) held_stops: Cell<u32>,
    /// CPU time used, in `arch::cycles()` ticks, up to the task's last
    /// switch out (issue 15). Written only by the thread running the task
    /// (plain load + store in `Worker::charge`, no locked RMW), read by
    /// anyone (dumps, `JoinHandle::stats`).
    pub(crate) cpu: AtomicU64,
    /// What the task waits for while PARKED ([`wait_kind`]) and its
    /// argument. Written only by the task itself, right before it waits
    /// (`worker::note_wait`) and cleared after; read by dumps with the world
    /// stopped (Relaxed: the task's switch out and its worker's park under
    /// the stop lock order them before the read).
    pub(crate) wait_kind: AtomicU8,
    pub(crate) wait_arg: AtomicU64,
    /// While the task is switched out by an asynchronous preemption: the
    /// address of its spill frame's frame record (`SpillFrame::
    /// frame_record`, on the task's stack: {interrupted FP, interrupted
    /// PC}); 0 otherwise. Written only by the task (the park hook, before
    /// and after it parks); read by dumps with the world stopped.
    pub(crate) preempt_record: AtomicUsize,
    /// Per-task stack scan claim for the GC's current scan epoch
    /// (`stack_scan.rs`): `e << 1` scanned, `e << 1 | 1` being scanned.
    /// CAS by the collector and by whoever resumes the task; stored by
    /// `prepare` (the owner) before the task is published.
    pub(crate) scan: AtomicU64,
}

// SAFETY: a task is touched by one thread at a time (whoever runs it or holds
// it in a queue, handed over with release/acquire); the atomics are the only
// fields accessed concurrently.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Task ids are handed out to each thread in batches of this many (as Go's
/// goid cache): one locked RMW on the global counter per batch instead of
/// per spawn. Ids stay unique within the process; they follow spawn order
/// per thread only.
const ID_BATCH: u64 = 64;

std::thread_local! {
    /// This thread's unused ids: `[next, end)`. Const-initialised, no
    /// destructor. Written only by its thread, in `next_task_id`.
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A new task id. Never inlined and not generic: reached from the generic
/// spawn functions (which may be inlined into `preemptible!` code), it keeps
/// the thread-local access in the runtime's own code.
#[inline(never)]
fn next_task_id() -> u64 {
    IDS.with(|c| {
        let (next, end) = c.get();
        if next != end {
            c.set((next + 1, end));
            return next;
        }
        let first = NEXT_ID.fetch_add(ID_BATCH, Ordering::Relaxed);
        c.set((first + 1, first + ID_BATCH));
        first
    })
}

impl Task {
    /// Allocates a new task struct with a fresh stack and registers it.
    pub(crate) fn alloc(shared: &Shared) -> Result<*mut Task, crate::Error> {
        let stack = Stack::new(shared.stack_size)?;
        let t = Box::into_raw(Box::new(Task {
            sp: UnsafeCell::new(0),
            next: Cell::new(ptr::null_mut()),
            park: AtomicU8::new(park::EMPTY),
            state: AtomicU8::new(state::FREE),
            pinned_worker: Cell::new(NO_PIN),
            id: Cell::new(0),
            name: UnsafeCell::new(None),
            body: UnsafeCell::new(None),
            locals: UnsafeCell::new(LocalMap::new()),
            shared,
            registry_index: Cell::new(0),
            stack,
            preempt_state: Cell::new(Default::default()),
            woken: Cell::new(false),
            held_stops: Cell::new(0),
            cpu: AtomicU64::new(0),
            wait_kind: AtomicU8::new(wait_kind::NONE),
            wait_arg: AtomicU64::new(0),
            preempt_record: AtomicUsize::new(0),
            scan: AtomicU64::new(0),
        }));
        let mut reg = shared.registry.lock();
        // SAFETY: `t` was just allocated and is not shared yet.
        unsafe { (*t).registry_index.set(reg.len()) };
        reg.push(t);
        Ok(t)
    }

    /// Unregisters and frees a task struct and unmaps its stack.
    ///
    /// # Safety
    /// `t` is a FREE task of `shared` that no queue or context refers to.
    pub(crate) unsafe fn destroy(shared: &Shared, t: *mut Task) {
        {
            let mut reg = shared.registry.lock();
            // SAFETY: `t` is registered; the moved entry is a live task.
            unsafe {
                let i = (*t).registry_index.get();
                reg.swap_remove(i);
                if let Some(&moved) = reg.get(i) {
                    (*moved).registry_index.set(i);
                }
            }
        }
        // SAFETY: allocated by `alloc` with Box::into_raw, now unreachable.
        drop(unsafe { Box::from_raw(t) });
    }

    /// Prepares a FREE task to run `body`: new id, name, initial frame
    /// whose first call is `entry(t, 0)` (the scheduler's task entry,
    /// `worker::task_entry`, passed in by the caller so that this floor does
    /// not import the worker).
    ///
    /// # Safety
    /// `t` is a FREE task owned by the caller; `entry` never returns and
    /// ends the task by switching away for good.
    pub(crate) unsafe fn prepare(
        t: *mut Task,
        body: crate::tasks::packet::PacketRc<dyn Body>,
        name: Option<Box<str>>,
        entry: unsafe extern "C" fn(usize, usize) -> !,
    ) -> u64 {
        let id = next_task_id();
        // SAFETY: the caller owns `t` exclusively; the stack is unused.
        unsafe {
            let task = &*t;
            task.id.set(id);
            *task.name.get() = name;
            *task.body.get() = Some(body);
            task.park.store(park::EMPTY, Ordering::Relaxed);
            task.pinned_worker.set(NO_PIN);
            task.preempt_state.set(Default::default());
            task.cpu.store(0, Ordering::Relaxed);
            task.wait_kind.store(wait_kind::NONE, Ordering::Relaxed);
            task.preempt_record.store(0, Ordering::Relaxed);
            // A task created during a mark starts with a black stack
            // (`stack_scan.rs`; its closure is shaded by `spawn_in`).
            task.scan.store((*task.shared).stack_scan.epoch.load(Ordering::Relaxed) << 1, Ordering::Relaxed);
            // Colour the stack top: start each incarnation 0..31 cache-line
            // pairs below the top, so that tasks switching back and forth do
            // not save and restore their contexts at the same offset modulo
            // 4 KiB (stacks are equally spaced), which stalls loads behind
            // unrelated stores (4K aliasing).
            let colour = ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize) * 128;
            *task.sp.get() = crate::arch::init_stack(task.stack.hi() - colour, entry, t as usize);
            // Release: a GC scan that sees the task not FREE (acquire) sees
            // its body (`heap_roots::for_each_spawn_closure`) and its saved
            // SP (stored above: a stack scan reads it).
            task.state.store(state::RUNNABLE, Ordering::Release);
        }
        id
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: a task never outlives its runtime's shared state (abandoned
        // tasks keep it alive by leaking a reference; see runtime.rs).
        unsafe { &*self.shared }
    }
}

/// A task struct, by a pointer whose validity was argued once, where the
/// handle was made ([`TaskRef::new`]), instead of at every dereference.
///
/// What a holder may do with it is what its role allows (each `Task`
/// field says who writes it): the running task and the worker that owns
/// it while queued or switching touch everything; wakers touch only the
/// atomics (`park`, `state`). Only an owner queues a task (the run
/// queues' `push` functions, `TaskList::push_back`, `Worker::claim`):
/// a queue writes the task's `next` link and takes it over, and hands it
/// out again as a handle whose role is owner (a task is in one queue at a
/// time, so whoever takes it out owns it). The ring slots, `runnext` and
/// the lists' links keep raw pointers; every such pointer was stored from
/// a handle, which is the argument of [`TaskRef::from_raw`] where they
/// are read back.
///
/// Same size and ABI as a pointer (`repr(transparent)` over `NonNull`),
/// and `Option<TaskRef>` is a nullable pointer: a queue function taking
/// or returning a handle compiles to what it did with `*mut Task`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct TaskRef(NonNull<Task>);

impl TaskRef {
    /// # Safety
    /// `t` is non-null and points to a task struct that stays allocated
    /// for as long as the handle (or a copy) is used: the running task
    /// itself; a task its holder owns (new, taken out of a queue, the
    /// outgoing task of a switch); or a parked task whose park token the
    /// holder is entitled to give (it cannot exit before that `unpark`).
    /// Task structs are recycled, not freed, while their runtime runs.
    #[inline]
    pub(crate) unsafe fn new(t: *mut Task) -> TaskRef {
        debug_assert!(!t.is_null());
        // SAFETY: non-null per the contract.
        TaskRef(unsafe { NonNull::new_unchecked(t) })
    }

    /// `None` for null, else [`TaskRef::new`]: reads a task back out of a
    /// slot that holds a task or null (a ring slot, `runnext`, a link).
    ///
    /// # Safety
    /// `t` is null, or as for [`TaskRef::new`].
    #[inline]
    pub(crate) unsafe fn from_raw(t: *mut Task) -> Option<TaskRef> {
        NonNull::new(t).map(TaskRef)
    }

    /// The raw pointer (for queues, registries and comparisons).
    #[inline]
    pub(crate) fn as_ptr(self) -> *mut Task {
        self.0.as_ptr()
    }

    /// The raw pointer of `t`, or null (for the slots that store either).
    #[inline]
    pub(crate) fn ptr_or_null(t: Option<TaskRef>) -> *mut Task {
        t.map_or(ptr::null_mut(), TaskRef::as_ptr)
    }
}

impl std::ops::Deref for TaskRef {
    type Target = Task;
    #[inline]
    fn deref(&self) -> &Task {
        // SAFETY: valid while the handle is used (`TaskRef::new`'s contract).
        unsafe { self.0.as_ref() }
    }
}
