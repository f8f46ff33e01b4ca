//! Spawning and joining.
//!
//! A spawn allocates one `Packet` holding the closure, the result slot and
//! the join state; the task holds it as `PacketRc<dyn Body>`, the
//! `JoinHandle` as `PacketRc<dyn Joinable<T>>` (an `Arc` with the count in
//! the packet and its memory recycled per thread: `tasks/packet.rs`). The task runs the closure under `catch_unwind` at
//! its root (a panic never unwinds across a context switch), stores the
//! result, runs the task-local destructors, and only then wakes the joiner
//! (as std's join returns after thread-local destructors), who may be a task
//! (parked) or a thread (blocked).
//!
//! **GC values in a packet** (see `heap_roots.rs`). The closure, until the
//! task takes it, is scanned through the task (`Body::closure_range`). The
//! result, from the moment the task stores it until it is joined or the
//! packet is dropped, is registered in `heap_roots::REGISTRY` (if it is at
//! least a word in size, or a panic payload): it is stored, taken and
//! unregistered under the registry lock, so the scan never sees it half
//! written or half moved, and dropping the packet unregisters it (its first
//! field, `roots`) before the result is dropped and the memory freed.

use crate::error::Error;
use crate::glue::heap_roots::{self, RangeFn, Slot};
use crate::shared::Shared;
use crate::tasks::cpu_link::CpuLink;
use crate::tasks::tcb::{Body, Task, TaskRef};
use crate::tasks::wait::{wait_until, Waker};
use crate::worker;
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use crate::tasks::packet::{Counted, PacketRc};
use std::ptr::NonNull;
use std::sync::atomic::AtomicUsize;

const RUNNING: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;

/// A snapshot of a task's accounting (issue 15): from
/// [`JoinHandle::stats`] and [`crate::task::current`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskStats {
    /// The task's id.
    pub id: u64,
    /// CPU time the task used on workers: accounted at every switch in and
    /// out with the CPU's cycle counter (rdtsc / cntvct_el0), so it counts
    /// the time the task held a worker, including involuntary waits for the
    /// OS (page faults, the OS preempting the worker thread) but not the
    /// time inside a `blocking` closure whose worker was handed off. For the
    /// calling task (`task::current`) it is exact to now; for another
    /// running task, up to its last switch. Zero if the task's runtime was
    /// built with [`crate::RuntimeBuilder::task_cpu_time`] `(false)` (see
    /// `cpu_time_on`).
    pub cpu_time: Duration,
    /// Whether the task's runtime measures CPU time
    /// ([`crate::RuntimeBuilder::task_cpu_time`], default true). False:
    /// `cpu_time` is zero because nothing was measured, not because the
    /// task used no CPU.
    pub cpu_time_on: bool,
    /// Whether the task has finished.
    pub finished: bool,
}

#[repr(C)]
struct Packet<T, F> {
    /// Owners: the task and the join handle (`PacketRc`). First field
    /// (`Counted`).
    refs: AtomicUsize,
    /// Registration of `result` as a GC root (see the module docs).
    /// Declared before `result`: dropped (unregistered) before it.
    roots: Slot,
    cpu: CpuLink,
    state: AtomicU8,
    waiter: UnsafeCell<Option<Waker>>,
    f: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<std::thread::Result<T>>>,
}

pub(crate) use crate::stack_scan::may_hold_pointer;

/// The registry's scan function of a packet's result.
///
/// # Safety
/// `p` is a registered `Packet<T, F>`; the registry lock is held.
unsafe fn scan_result<T, F>(p: *const (), f: RangeFn<'_>) {
    // SAFETY: per the contract; the result is only written under the lock.
    let p = unsafe { &*(p as *const Packet<T, F>) };
    // SAFETY: as above.
    match unsafe { &*p.result.get() } {
        Some(Ok(v)) => {
            let lo = v as *const T as usize;
            f(lo, lo + std::mem::size_of::<T>());
        }
        Some(Err(payload)) => {
            let d: &(dyn Any + Send) = &**payload;
            let lo = d as *const (dyn Any + Send) as *const u8 as usize;
            f(lo, lo + std::mem::size_of_val(d));
        }
        None => {}
    }
}

// SAFETY: `f` is taken once by the task (or, for a task that never started,
// by `abandon` once no worker runs), `result` written once by the task
// before DONE (release) and read by the joiner after DONE (acquire), `waiter`
// written by the joiner before WAITING (release) and taken by the task after
// seeing WAITING (acquire).
unsafe impl<T: Send, F: Send> Sync for Packet<T, F> {}
// SAFETY: as above.
unsafe impl<T: Send, F: Send> Send for Packet<T, F> {}

impl<T: Send, F: FnOnce() -> T + Send> Packet<T, F> {
    fn complete(&self) {
        if self.state.swap(DONE, Ordering::AcqRel) == WAITING {
            // SAFETY: the joiner wrote the waiter before WAITING and never
            // touches it again.
            if let Some(w) = unsafe { (*self.waiter.get()).take() } {
                w.wake();
            }
        }
    }
}

// SAFETY: `repr(C)`, the count first.
unsafe impl<T, F> Counted for Packet<T, F> {}

impl<T: Send, F: FnOnce() -> T + Send> Body for Packet<T, F> {
    fn run(&self) {
        // SAFETY: only the task takes `f`, once.
        let f = unsafe { (*self.f.get()).take() };
        if let Some(f) = f {
            let r = catch_unwind(AssertUnwindSafe(f));
            if may_hold_pointer::<T>() || r.is_err() {
                // The result may hold the only reference to a GC object:
                // store and register it in one step (see the module docs).
                let mut reg = heap_roots::lock();
                // SAFETY: written once, before DONE; the packet is in an
                // `Arc` (fixed address) and unregisters when dropped (its
                // `Slot`); the result is only written or taken under the
                // registry lock.
                unsafe {
                    *self.result.get() = Some(r);
                    reg.insert(&self.roots, self as *const Self as *const (), scan_result::<T, F>);
                }
                drop(reg);
                if usurp_gc::internals::any_heap_marking() {
                    // Hook (stack_scan.rs): no stop of this mark rescans the
                    // result: shade it. Only this task touches it before DONE.
                    // SAFETY: the result is stored and stays until joined,
                    // after `complete`.
                    unsafe {
                        scan_result::<T, F>(self as *const Self as *const (), &mut |lo, hi| {
                            crate::stack_scan::shade_range(lo, hi)
                        })
                    };
                }
            } else {
                // SAFETY: written once, before DONE.
                unsafe { *self.result.get() = Some(r) };
            }
        }
    }
    fn finish(&self) {
        self.complete();
    }
    unsafe fn closure_range(&self) -> (usize, usize) {
        // SAFETY: per the trait's contract, nobody takes `f` meanwhile.
        match unsafe { &*self.f.get() } {
            Some(f) => {
                let lo = f as *const F as usize;
                (lo, lo + std::mem::size_of::<F>())
            }
            None => (0, 0),
        }
    }
    fn cpu_link(&self) -> &CpuLink {
        &self.cpu
    }
    fn abandon(&self) {
        // A task that never started: drop its closure now (what it captured,
        // e.g. a channel Sender, is released as if the task had run and
        // returned; issue 11 item 7). Started tasks keep their stacks and
        // everything on them (never unwound).
        // SAFETY: abandonment happens once no worker runs; a task that never
        // started never takes `f` any more.
        drop(unsafe { (*self.f.get()).take() });
        self.complete();
    }
}

trait Joinable<T>: Send + Sync + Counted {
    fn state(&self) -> &AtomicU8;
    fn cpu(&self) -> &CpuLink;
    /// # Safety
    /// Only the join handle, once, before publishing WAITING.
    unsafe fn set_waiter(&self, w: Waker);
    /// # Safety
    /// Only after DONE was observed.
    unsafe fn take_result(&self) -> Option<std::thread::Result<T>>;
}

impl<T: Send, F: FnOnce() -> T + Send> Joinable<T> for Packet<T, F> {
    fn state(&self) -> &AtomicU8 {
        &self.state
    }
    fn cpu(&self) -> &CpuLink {
        &self.cpu
    }
    unsafe fn set_waiter(&self, w: Waker) {
        // SAFETY: per the contract.
        unsafe { *self.waiter.get() = Some(w) };
    }
    unsafe fn take_result(&self) -> Option<std::thread::Result<T>> {
        // The joiner owns the packet's result now (DONE observed): a
        // registered result leaves the registry as it leaves the packet.
        if self.roots.registered() {
            let mut reg = heap_roots::lock();
            reg.remove(&self.roots);
            // SAFETY: per the contract; under the registry lock.
            return unsafe { (*self.result.get()).take() };
        }
        // SAFETY: per the contract.
        unsafe { (*self.result.get()).take() }
    }
}

/// An owned permission to join a task (wait for it to finish and get its
/// result), like `std::thread::JoinHandle`. Dropping it detaches the task.
pub struct JoinHandle<T> {
    packet: PacketRc<dyn Joinable<T>>,
    id: u64,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("task", &self.id).finish()
    }
}

/// The panic of a task joining its own handle ([`JoinHandle::join`]).
#[cold]
#[inline(never)]
fn joins_itself(id: u64) -> ! {
    panic!(
        "usurp: task {id} called JoinHandle::join on its own handle: it would wait for itself forever \
         (a deadlock; std reports EDEADLK for a thread joining itself)"
    )
}

#[cfg(test)]
impl<T> JoinHandle<T> {
    /// The packet's address, as registered in `heap_roots` (tests).
    pub(crate) fn packet_addr(&self) -> *const () {
        self.packet.as_ptr() as *const ()
    }
}

impl<T> JoinHandle<T> {
    /// The id of the task (unique within the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the task has finished.
    ///
    /// When it has not, a pending checkpoint request of the caller's worker
    /// (its quantum is up, or a stop-the-world waits) is honoured first, as
    /// `checkpoint()` does: a task polling `is_finished` in a loop
    /// then lets the others (the one it waits for) run, even on a single
    /// worker. One load of a global word when no request is pending.
    pub fn is_finished(&self) -> bool {
        let done = self.packet.state().load(Ordering::Acquire) == DONE;
        if !done {
            usurp_preempt::checkpoint();
        }
        done
    }

    /// The task's CPU time so far (see [`TaskStats::cpu_time`]): up to its
    /// last switch while it runs, its total once it finished.
    /// [`Duration::ZERO`] if its runtime does not measure CPU time
    /// ([`crate::RuntimeBuilder::task_cpu_time`]`(false)`; [`TaskStats::cpu_time_on`]
    /// tells the two apart).
    pub fn cpu_time(&self) -> Duration {
        let link = self.packet.cpu();
        if !link.on {
            return Duration::ZERO;
        }
        crate::glue::dump::cycles_to_duration(link.cycles())
    }

    /// A snapshot of the task's accounting (id, CPU time, finished).
    pub fn stats(&self) -> TaskStats {
        // Not `is_finished`: a snapshot is no polling point (no checkpoint).
        let finished = self.packet.state().load(Ordering::Acquire) == DONE;
        TaskStats { id: self.id, cpu_time: self.cpu_time(), cpu_time_on: self.packet.cpu().on, finished }
    }

    /// Waits for the task to finish and returns its result, or the payload
    /// of its panic. From a task this parks the task (its worker runs other
    /// tasks); from a plain thread it blocks the thread.
    ///
    /// If the runtime was dropped before the task finished, returns an error
    /// whose payload is a `&'static str` saying so.
    ///
    /// # Panics
    /// If called by the task itself (its own handle, also inside
    /// `blocking`): it would wait for itself for ever (`std` reports
    /// `EDEADLK` for a thread joining itself).
    pub fn join(self) -> Result<T, Box<dyn Any + Send + 'static>> {
        let st = self.packet.state();
        if st.load(Ordering::Acquire) != DONE {
            if crate::worker::Current::get().is_none() {
                // A thread holding the world stopped would wait for a task
                // that cannot run until it starts the world: a panic, before
                // anything is queued.
                crate::stw::thread_about_to_wait();
            }
            let waker = Waker::current();
            // A task joining its own handle would wait for itself for ever:
            // checked on the task the waker names (no second look-up of the
            // current task on the common path: spawn+join runs +15
            // instructions with one), or, for a thread, whether it is a task
            // inside `blocking`.
            let task = match waker {
                Waker::Task(t) => {
                    if t.id.get() == self.id {
                        joins_itself(self.id);
                    }
                    Some(t)
                }
                Waker::Thread(_) => {
                    if crate::worker::current_task_ref().is_some_and(|t| t.id.get() == self.id) {
                        joins_itself(self.id);
                    }
                    None
                }
            };
            // SAFETY: we are the only join handle; the task reads the waiter
            // only after seeing WAITING.
            unsafe { self.packet.set_waiter(waker) };
            if st.compare_exchange(RUNNING, WAITING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // Exactly one wake will come, from `complete`.
                if let Some(t) = task {
                    crate::tasks::wait::note_wait_of(t, crate::tasks::tcb::wait_kind::JOIN, self.id);
                }
                wait_until(task, || st.load(Ordering::Acquire) == DONE);
            }
        }
        // SAFETY: DONE observed above (acquire).
        match unsafe { self.packet.take_result() } {
            Some(r) => r,
            None => Err(Box::new("usurp: the runtime shut down before this task finished")),
        }
    }
}

/// Spawns a new task on the current runtime (the runtime of the calling
/// task), like `std::thread::spawn`. The task starts soon, usually on this
/// worker right after the caller yields or parks, and may be stolen by
/// another worker.
///
/// GC values: what `f` captures (a `GcRef`, a `Gc<T>`, structs of them)
/// stays alive until the task runs, and what it returns stays alive until
/// it is joined (or the handle dropped): the runtime scans both. Memory they
/// own (the elements of a captured `Vec<GcRef>`) is not scanned.
///
/// # Panics
/// If called outside a usurp task (use [`crate::Runtime::spawn`] there), or
/// if the task's stack cannot be mapped (the message says why and what to
/// change; see [`try_spawn`]).
pub fn spawn<T, F>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match try_spawn(f) {
        Ok(h) => h,
        Err(Error::NoRuntime) => panic!(
            "usurp::spawn called outside a usurp runtime: call it from inside a task, or use \
             Runtime::spawn / Runtime::block_on"
        ),
        Err(e) => panic!("usurp: cannot spawn a task: {e}"),
    }
}

/// Like [`spawn`], but returns an error instead of panicking: [`Error::NoRuntime`]
/// outside a task, [`Error::StackMap`] if the kernel refuses the stack (e.g.
/// `vm.max_map_count` or `ulimit -v` reached), [`Error::ShutDown`] during shutdown.
pub fn try_spawn<T, F>(f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_named(None, f)
}

fn spawn_named<T, F>(name: Option<Box<str>>, f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cur = worker::current_task();
    if cur.is_null() {
        return Err(Error::NoRuntime);
    }
    // SAFETY: the current task is valid while it runs; its runtime outlives it.
    let shared = unsafe { (*cur).shared() };
    spawn_in(shared, name, f)
}

pub(crate) fn spawn_in<T, F>(shared: &Shared, name: Option<Box<str>>, f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if shared.shutdown.load(Ordering::Acquire) {
        return Err(Error::ShutDown);
    }
    let t = shared.get_task()?;
    let packet = PacketRc::new(Packet {
        refs: AtomicUsize::new(1),
        roots: Slot::new(),
        cpu: CpuLink::new(shared.cpu_time),
        state: AtomicU8::new(RUNNING),
        waiter: UnsafeCell::new(None),
        f: UnsafeCell::new(Some(f)),
        result: UnsafeCell::new(None),
    });
    packet.cpu.task.store(t, Ordering::Relaxed);
    // SAFETY: the cast returns the packet's own address, unsized.
    let body: PacketRc<dyn Body> = unsafe { packet.clone_as(|p| p as NonNull<dyn Body>) };
    // SAFETY: as above.
    let packet: PacketRc<dyn Joinable<T>> = unsafe { packet.cast(|p| p as NonNull<dyn Joinable<T>>) };
    // Hook (stack_scan.rs): the new task's stack starts black; what its
    // closure captured is shaded instead while a heap marks. Not needed
    // from a running task (its stack is black: see `stack_scan::publish`);
    // on a thread without a mutator (inside `blocking`) the check, the
    // shading and the publication run as one step against the start stop.
    let id = crate::stack_scan::publish_in(shared, body, |body| {
        if usurp_gc::internals::any_heap_marking() {
            // SAFETY: the task is not published yet: nobody takes the
            // closure.
            let (lo, hi) = unsafe { body.closure_range() };
            if lo < hi {
                crate::stack_scan::shade_range_in(shared, lo, hi);
            }
        }
        // SAFETY: `t` is a FREE task we just took.
        let id = unsafe { Task::prepare(t, body, name, worker::task_entry) };
        // SAFETY: `t` is ours (new): nobody else refers to it yet.
        worker::make_runnable(unsafe { TaskRef::new(t) }, false);
        id
    });
    Ok(JoinHandle { packet, id })
}

/// Builds a task with options, like `std::thread::Builder`.
///
/// ```no_run
/// # let rt = usurp_sched::Runtime::new().unwrap();
/// rt.block_on(|| {
///     let h = usurp_sched::task::Builder::new().name("parser").spawn(|| 6 * 7).unwrap();
///     assert_eq!(h.join().unwrap(), 42);
/// });
/// ```
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
}

impl Builder {
    /// A builder with no options set.
    pub fn new() -> Builder {
        Builder { name: None }
    }

    /// Names the task. The name appears in the stack-overflow message and in
    /// [`crate::task::name`].
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Spawns the task on the current runtime; errors as [`try_spawn`].
    pub fn spawn<T, F>(self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_named(self.name.map(String::into_boxed_str), f)
    }

    /// Spawns the task on `rt` (from any thread).
    pub fn spawn_on<T, F>(self, rt: &crate::Runtime, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_in(rt.shared(), self.name.map(String::into_boxed_str), f)
    }
}
