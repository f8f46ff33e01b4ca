//! The heap: configuration, collection cycle, sweeping, pacing, finalizers.

use crate::block::{BLOCK_SIZE, KIND_FREE, KIND_LARGE_HEAD, KIND_LARGE_TAIL, KIND_SMALL};
use crate::config::{ConfigError, HeapConfig};
use crate::descriptor::Descriptor;
use crate::mark::{find_exact, MarkCounters, Marker, WorkPool};
use crate::mutator::{set_current_mutator, Mutator};
use crate::object::GcRef;
use crate::preempt_glue::no_preempt;
use crate::refcheck::{is_quarantined, Quarantine};
use crate::roots::{Root, RootScanner, ScannerId, SlotTable, VecTable, WeakRef};
use crate::sizeclass::{slots_of, split_span_class, CLASS_SIZES, NUM_SPAN_CLASSES};
use crate::space::Space;
use crate::stack::with_registers_spilled;
use crate::stats::{trace_line, CycleStats, GcStats, StatsAcc};
use crate::world::{SoloWorld, World};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Objects the termination stop scans at most before it gives up, lets the
/// world run and marks concurrently again (Go's mark termination retries
/// likewise): bounds the stop to about 0.1 ms of marking.
const TERMINATION_BUDGET: usize = 5_000;

/// Termination stops after which the last one drains everything left,
/// however long it takes (marking must end).
const TERMINATION_ROUNDS: usize = 4;

/// Outcome of an allocation slow path that needs the caller to act.
#[derive(Debug)]
pub(crate) enum Need {
    /// The pacer wants a collection before more memory is handed out.
    Collect,
    /// No block left in the reservation.
    Exhausted,
    /// The lazy sweep for room left for this worker's outstanding
    /// checkpoint request (a stop waits): pass the cooperative point, then
    /// retry, rather than take a fresh block (`pacer.rs`, "Leaving for a
    /// stop").
    Checkpoint,
}

/// What [`HeapInner::sweep_for`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SweptFor {
    /// A block of the span class landed on its partial list.
    Room,
    /// Budget spent, or nothing left to sweep: take a fresh block.
    Nothing,
    /// Left after a block for an outstanding checkpoint request.
    LeftForRequest,
}

/// A registered finalizer. Not a plain `Box<dyn FnOnce>`: calling one of
/// those runs the closure in place, in its box, where the GC would not see
/// the values it captured once the box has left the scanned lists; `call`
/// moves the closure onto the running thread's stack first (see
/// [`Heap::run_pending_finalizers`]).
/// `HeapInner::finalizers_to_run`'s record: `fin_started` at the end of
/// the last cycle, and how many cycle ends in a row found finalizers
/// pending and none started since the previous one.
#[derive(Default)]
struct FinalizerWatch {
    seen: u64,
    idle_cycles: u32,
}

trait FinalizerFn: Send {
    fn call(self: Box<Self>, obj: GcRef);
}

struct FinalizerBox<F>(F);

impl<F: FnOnce(GcRef) + Send> FinalizerFn for FinalizerBox<F> {
    fn call(self: Box<Self>, obj: GcRef) {
        // `unbox` frees the box before returning, so from here on the
        // captured values exist only in this frame (on the scanned stack or
        // in registers the stack scan covers), never in freed memory the
        // compiler could still read them from.
        let FinalizerBox(f) = unbox(self);
        f(obj)
    }
}

// The point is the box: it is freed here, after its contents were moved out.
#[allow(clippy::boxed_local)]
#[inline(never)]
fn unbox<T>(b: Box<T>) -> T {
    *b
}

type Finalizer = Box<dyn FinalizerFn>;

/// The registered finalizers of a heap, by the block holding their object
/// (a large object's: its first block), as Go keeps finalizers in "special"
/// records on their object's span: the sweeper of a block finds the records
/// of that block's dead objects without a walk over every record, and no
/// stop of a concurrent cycle visits them (the stop-the-world mark, at the
/// hard limit or with `stw_marking`, does; see
/// `HeapInner::scan_finalizer_records` and
/// `HeapInner::queue_dead_finalizable`). A block's records leave the table
/// only when their object is found dead (queued), so a record's object is
/// allocated for as long as the record is here.
#[derive(Default)]
struct FinalizerTable {
    by_block: std::collections::HashMap<u32, Vec<(usize, Finalizer)>>,
    /// Records in `by_block`.
    len: usize,
}

/// `[lo, hi)` of the bytes of a boxed finalizer closure (empty for a closure
/// that captures nothing).
fn finalizer_range(f: &Finalizer) -> (usize, usize) {
    let lo = &**f as *const dyn FinalizerFn as *const u8 as usize;
    (lo, lo + std::mem::size_of_val(&**f))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct HeapInner {
    pub space: Space,
    pub config: HeapConfig,
    world: RwLock<Arc<dyn World>>,
    /// Per span class: blocks with free slots that no mutator owns.
    pub partial: Vec<Mutex<Vec<u32>>>,
    /// Per compact descriptor (indexed by its compact id): its typed blocks
    /// with free slots that no mutator owns (reused only for that
    /// descriptor). Grown on demand; emptied in the pause like `partial`.
    typed_partial: Mutex<Vec<Vec<u32>>>,
    collect_lock: Mutex<()>,
    pub cycle: AtomicU64,
    pub live: AtomicUsize,
    pub allocated: AtomicUsize,
    pub goal: AtomicUsize,
    roots: SlotTable,
    weaks: SlotTable,
    /// The element buffers of this heap's `RootedVec`s (scanned where the
    /// `Root` table is: `mark_precise_roots` or `scan_root_table`).
    rooted_vecs: VecTable,
    scanners: Mutex<Vec<(u64, Arc<RootScanner>)>>,
    /// Counts this heap in `refcheck::CHECK_REFS_HEAPS` under checkrefs
    /// (`Gc::new` then refuses stale fields).
    _check_refs: crate::refcheck::CheckRefsHeap,
    /// Registered finalizers, kept per block (see [`FinalizerTable`]).
    /// Locked with preemption off (registration, the collector's scan of
    /// the records, the sweep of a block that has some); lock order:
    /// `finalizers` before `pending`.
    finalizers: Mutex<FinalizerTable>,
    /// Blocks with registered finalizer records, one bit per block (Go's
    /// span "specials" flag): the sweeper of a block looks at its records
    /// only if its bit is set. Set by `set_finalizer` and cleared by the
    /// sweep that queues a block's last record, both under `finalizers`;
    /// read without the lock by `sweep_block` (a record registered while
    /// its block is being swept is on a marked object, which that sweep
    /// would not queue anyway).
    fin_blocks: Vec<AtomicU64>,
    /// Finalizers queued so far (by sweeps), to tell a cycle whether it
    /// queued any. Written by sweepers under `finalizers`.
    fin_queued: AtomicU64,
    /// Finalizer records visited while `world_stopped` so far (the
    /// stop-the-world mark's scan of the records, sweeps run in a pause);
    /// a concurrent cycle visits none there. Stats only.
    fin_visited_in_stops: AtomicU64,
    /// Test-only switch (negative control of finalizer ordering): when
    /// false, the referents of finalizable objects are not marked (see
    /// `Heap::set_finalizer_referent_marking`).
    fin_referents: std::sync::atomic::AtomicBool,
    /// Test-only switch (negative control): when false, `set_finalizer`
    /// during a mark does not shade (see
    /// `Heap::set_finalizer_registration_shading`).
    fin_shading: std::sync::atomic::AtomicBool,
    /// The collector has the world stopped: set right after each
    /// `World::stop_the_world` returns, cleared right before each
    /// `World::start_the_world` (`stop_world`, `restart_world`; written by
    /// the collector under `collect_lock`). Finalizer records visited while
    /// it is set count in `fin_visited_in_stops` (stats only), whoever the
    /// caller: the count follows the world's state, not a caller's claim.
    world_stopped: std::sync::atomic::AtomicBool,
    pending: Mutex<VecDeque<(usize, Finalizer)>>,
    /// Finalizers taken off `pending` to run so far (by any runner).
    fin_started: AtomicU64,
    /// What the end of the last cycle saw of the runners (see
    /// `finalizers_to_run`).
    fin_watch: Mutex<FinalizerWatch>,
    /// Test-only switch (negative control): when false, a cycle asks for a
    /// finalizer runner only when it queued finalizers (see
    /// `Heap::set_stuck_finalizer_runner_kick_for_tests`).
    fin_stuck_kick: std::sync::atomic::AtomicBool,
    stats: Mutex<StatsAcc>,
    start: Instant,
    /// checkrefs: objects freed but not yet reusable. Pushed to by lazy
    /// sweepers, evicted in the pause.
    quarantine: Mutex<Quarantine>,
    /// Whether the sweep of the current mark quarantines dead objects
    /// (checkrefs, except after a collection forced by the heap limit).
    /// Written in the pause before the mark generation is published.
    quarantining: std::sync::atomic::AtomicBool,
    /// Next block index for lazy sweepers to claim (allocation and the
    /// background sweeper). Reset in the pause; claims past the high-water
    /// mark find nothing. A block skipped by the cursor is still swept by
    /// `finish_sweep` before the next mark.
    sweep_cursor: AtomicUsize,
    /// Every attached thread's mutator (`*mut Mutator` as usize): the pause
    /// takes their cached blocks away so that nobody allocates in a block
    /// before it is swept. Pushed by `attach_thread`, removed by the guard's
    /// drop under `collect_lock`.
    mutators: Mutex<Vec<usize>>,
    /// The background sweeper's wake-up: the generation it was asked to
    /// sweep for (written in the pause), with its condvar.
    sweeper: Arc<(Mutex<u64>, std::sync::Condvar)>,
    /// The strong references the background threads (collector, sweeper)
    /// hold for a while; see `Heap`'s drop.
    bg_hold: Arc<BgHold>,
    /// Calls of `sweep_block` in progress (any thread). `finish_sweep`
    /// waits for zero, so that a sweep's last steps (kind, pool, partial
    /// list) never overlap the next mark's generation change.
    sweepers_in_flight: AtomicUsize,
    /// Test-only: whether the background sweeper sweeps (see
    /// `Heap::set_background_sweeping`).
    background_sweeping: std::sync::atomic::AtomicBool,
    /// Blocks swept by the background sweeper, by allocation, by the
    /// collector before a mark (`finish_sweep`), and by the collector after
    /// a mark for their finalizer records (`sweep_finalizer_blocks`), for
    /// the stats.
    swept_by: [AtomicU64; 4],
    /// Record blocks `sweep_finalizer_blocks` waited for (claimed by
    /// another sweeper) so far. Written by the collector; stats only.
    fin_waited: AtomicU64,
    /// With a [`World::single_thread`] world: the thread attached to this
    /// heap, if any. Written by `attach_thread` and `MutatorGuard::drop`
    /// while holding `collect_lock` (so no collection runs while it changes);
    /// read by `collect_with` under `collect_lock` and by `set_world`.
    solo_owner: Mutex<Option<std::thread::ThreadId>>,
    /// Allocate black: from a concurrent mark's start stop to its
    /// termination stop (written only there, world stopped, under
    /// `collect_lock`); read by allocation when it takes a block.
    pub(crate) alloc_black: std::sync::atomic::AtomicBool,
    /// The number of the last cycle whose start stop has begun scanning
    /// roots (written in that stop; read by `Heap::collect` to share a cycle).
    started: AtomicU64,
    /// Notified (under its mutex) right after `started` moves in a start
    /// stop: the start hand-off's waiters (`collect_for_alloc`) sleep on
    /// it instead of polling (each 20 µs poll slept 60-90 µs on the VM it
    /// was measured on, 6-8 of them per cycle: review of the hand-off).
    started_cv: (Mutex<()>, Condvar),
    /// The step API's mark in progress (test support, see
    /// `Heap::debug_begin_marking`).
    #[cfg(feature = "test-hooks")]
    step: Mutex<Option<StepMark>>,
    /// Test support: called by `attach_thread` between reading the World
    /// (and `may_attach`) and taking the collection lock (see
    /// `Heap::set_attach_pause_for_tests`).
    #[cfg(feature = "test-hooks")]
    attach_pause: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// The background collector's requests (written by allocating threads
    /// and by the collector under its mutex) and its wake-up.
    background: Arc<(Mutex<BackgroundState>, std::sync::Condvar)>,
    /// The pacer: trigger and mutator assists (see `pacer.rs`; each
    /// field says who writes it).
    pub(crate) pacer: crate::pacer::Pacer,
}

/// See `HeapInner::background`.
#[derive(Default)]
struct BackgroundState {
    /// A cycle is asked for and not yet started.
    requested: bool,
    /// The background collector's thread was started.
    started: bool,
    /// Cycles the collector lost so far: abandoned by a panic (in the
    /// World's `stop_the_world`, a root scanner, ...), or never to run
    /// because its thread is gone. An allocation waiting at the goal that
    /// sees this move runs the cycle itself (`goal_wait_stalled`).
    failures: u64,
    /// What the last loss was (for the panic of an allocation whose own
    /// cycle then fails too).
    last_failure: Option<String>,
    /// The collector's thread is gone (it panicked outside a cycle, or
    /// could not be spawned): allocations run their cycles themselves.
    gone: bool,
    /// The collector's OS thread id (0 until its thread runs), for the
    /// start hand-off's placement (`place_collector_here`).
    tid: libc::pid_t,
    /// The collector's affinity mask before the hand-off pinned it to the
    /// handing allocation's CPU (`place_collector_here`), or `None` when
    /// not pinned; restored by `unpin_collector`.
    saved: Option<libc::cpu_set_t>,
    /// The collector is running a cycle (set when it takes a request,
    /// cleared after the cycle, under this lock): not to be pinned.
    busy: bool,
}

/// A mark driven step by step (test support): the markers' stack and counters.
#[cfg(feature = "test-hooks")]
struct StepMark {
    stack: Vec<usize>,
    counters: MarkCounters,
}

/// Who swept a block (index into `HeapInner::swept_by`).
#[derive(Clone, Copy)]
pub(crate) enum Sweeper {
    Background = 0,
    Allocation = 1,
    Finish = 2,
    Finalizers = 3,
}

/// What sweeping one block did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Swept {
    /// Nothing: not a block to sweep, already swept, or claimed by another.
    No,
    /// Swept; it has free slots and went onto the partial list of this span class.
    Partial(usize),
    /// Swept; a typed block with free slots, now on the partial list of the
    /// compact descriptor with this id.
    Typed(usize),
    /// Swept: full, freed, or a large object.
    Yes,
}

/// A garbage-collected heap. Cloning gives another handle to the same heap.
///
/// The heap (its address range, its registration in the process-wide
/// handle table) goes with the last reference: the last `Heap` handle, a
/// thread's [`MutatorGuard`], or the background collector and sweeper
/// threads, which hold the heap for the time of a cycle or a sweep. The drop
/// of the last handle (no guard left either) closes those threads' access
/// and waits for their work in progress (as a blocking section of the
/// heap's World), so that the heap is gone when that drop returns (a
/// runtime's drop relies on it). (Two handles dropped at the same moment
/// on two threads may both see the other and not wait: the heap then goes
/// when the background threads let go of it, within a sweep or a cycle.)
#[derive(Clone)]
pub struct Heap {
    pub(crate) inner: Arc<HeapInner>,
}

impl Drop for Heap {
    fn drop(&mut self) {
        // (At most two background references: the collector's, the
        // sweeper's. More references: not the last handle; no lock.)
        if Arc::strong_count(&self.inner) > 3 {
            return;
        }
        let hold = &self.inner.bg_hold;
        {
            let mut g = lock(&hold.m);
            // Under the lock no background thread takes a new reference:
            // if all the others are theirs, this handle is the last one.
            // (Not on a background thread: it would wait for itself, e.g.
            // a handle dropped by a World hook the collector calls.)
            if g.closed
                || Arc::strong_count(&self.inner) != g.busy + 1
                || !RELEASE_BACKGROUND.load(Ordering::Relaxed)
                || BACKGROUND_THREAD.with(|b| b.get())
            {
                return;
            }
            g.closed = true;
            if g.busy == 0 {
                return;
            }
        }
        // A cycle may need this thread stopped (or to be let through):
        // wait as a blocking section.
        let world = self.inner.world();
        world.blocking(&mut || {
            let mut g = lock(&hold.m);
            while g.busy > 0 {
                g = hold.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        });
    }
}

/// Ends the World's [`World::background_marking`] when dropped: after the
/// cycle's last stop, or when the cycle unwinds in between.
struct BackgroundMarking<'a>(Option<&'a dyn World>);

impl Drop for BackgroundMarking<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.background_marking(false);
        }
    }
}

std::thread_local! {
    /// This thread is a heap's background collector or sweeper.
    static BACKGROUND_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test-only switch (negative control of "the last handle's drop waits for
/// the background threads' references"): `false` makes `Heap`'s drop do
/// nothing, as before.
static RELEASE_BACKGROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turns the wait of the last `Heap` handle's drop for the
/// background threads off (`false`) or on again (the default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_release_background_for_tests(on: bool) {
    RELEASE_BACKGROUND.store(on, Ordering::Relaxed);
}

/// Test-only: the background sweeper sleeps this long (ms) holding its
/// reference before each sweep (0: not at all, the default).
static SWEEPER_STALL_MS: AtomicU64 = AtomicU64::new(0);

/// Test-only: makes the background sweeper of every heap sleep `ms`
/// milliseconds holding its reference to the heap before each sweep (0: no
/// sleep, the default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_sweeper_stall_for_tests(ms: u64) {
    SWEEPER_STALL_MS.store(ms, Ordering::Relaxed);
}

/// The background threads' strong references to a heap (see `Heap`'s
/// drop): they take one only through [`BgHold::upgrade`], counted in
/// `busy`, and none once `closed`.
#[derive(Default)]
pub(crate) struct BgHold {
    m: Mutex<BgHoldState>,
    cv: Condvar,
}

#[derive(Default)]
struct BgHoldState {
    /// The last `Heap` handle was dropped: no new references.
    closed: bool,
    /// References held by background threads now.
    busy: usize,
}

impl BgHold {
    /// A background thread's strong reference to `heap`, counted; `None`
    /// if the heap is gone or its last handle was dropped.
    fn upgrade(self: &Arc<Self>, heap: &std::sync::Weak<HeapInner>) -> Option<BgRef> {
        let mut g = lock(&self.m);
        if g.closed {
            return None;
        }
        let h = heap.upgrade()?;
        g.busy += 1;
        Some(BgRef { h: Some(h), hold: self.clone() })
    }
}

/// See [`BgHold::upgrade`]: the reference is dropped before `busy` counts
/// it out.
struct BgRef {
    h: Option<Arc<HeapInner>>,
    hold: Arc<BgHold>,
}

impl std::ops::Deref for BgRef {
    type Target = Arc<HeapInner>;
    fn deref(&self) -> &Arc<HeapInner> {
        self.h.as_ref().expect("held until dropped")
    }
}

impl Drop for BgRef {
    fn drop(&mut self) {
        drop(self.h.take());
        let mut g = lock(&self.hold.m);
        g.busy -= 1;
        if g.busy == 0 {
            self.hold.cv.notify_all();
        }
    }
}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Heap({:#x}..{:#x})", self.inner.space.lo, self.inner.space.hi)
    }
}

/// The current thread's attachment to a heap; detaches on drop. Not `Send`.
/// Dropping it while a [`forbid_allocation`](crate::forbid_allocation) guard
/// taken after it is alive aborts the process (guards nest).
pub struct MutatorGuard {
    mutator: Box<Mutator>,
    prev: *mut Mutator,
    /// This thread is the heap's `solo_owner` (single-thread World).
    solo: bool,
    /// The World that admitted the attach and was told
    /// (`World::thread_attached`); told again when the guard drops.
    world: Arc<dyn World>,
}

/// Why `attach_thread` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// This thread already has a mutator.
    AlreadyAttached,
    /// The heap's [`World`] does not stop and scan this thread, so it may not
    /// allocate (e.g. a plain thread and a runtime's heap): the reason.
    Refused(&'static str),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::AlreadyAttached => write!(f, "usurp heap: this thread is already attached to a heap"),
            AttachError::Refused(why) => write!(
                f,
                "usurp heap: this thread may not attach to the heap (allocation from a thread outside the runtime): {why}"
            ),
        }
    }
}
impl std::error::Error for AttachError {}

impl Drop for MutatorGuard {
    fn drop(&mut self) {
        // Guards nest (LIFO): if the current mutator is not ours, a guard
        // taken after this one (forbid_allocation's) is still alive and would
        // later reinstall our mutator after we free it. Abort instead.
        if !std::ptr::eq(crate::mutator::current_mutator(), &*self.mutator) {
            crate::mutator::guard_order_abort("a MutatorGuard (Heap::attach_thread)");
        }
        let heap = self.mutator.heap.clone();
        let world = heap.world();
        // Giving blocks back must not race with a sweep: hold the collection lock
        // (waiting for it counts as a safe point).
        let mut g = None;
        world.blocking(&mut || g = Some(lock(&heap.collect_lock)));
        self.mutator.release_all();
        let me = &mut *self.mutator as *mut Mutator as usize;
        lock(&heap.mutators).retain(|&m| m != me);
        if self.solo {
            *lock(&heap.solo_owner) = None;
        }
        drop(g);
        set_current_mutator(self.prev);
        // The thread allocates in this heap no more: the World may let it
        // leave now (ThreadWorld: a thread exiting, or whose last
        // Registration dropped while attached).
        self.world.thread_detached();
    }
}

impl Heap {
    /// A heap with `config`, used by one thread at a time (its World is
    /// [`SoloWorld`]: one attached thread at a time, and while one is
    /// attached only it collects; see [`Heap::with_world`]).
    pub fn new(config: HeapConfig) -> Result<Heap, ConfigError> {
        Heap::with_world(config, Arc::new(SoloWorld))
    }

    /// A heap whose collections stop `world`.
    pub fn with_world(config: HeapConfig, world: Arc<dyn World>) -> Result<Heap, ConfigError> {
        config.validate()?;
        let space = Space::with_encoding(config.max_heap, config.value_encoding)
            .map_err(|e| ConfigError::Reserve(e.to_string()))?;
        if !config.value_encoding.covers(space.lo, space.hi) {
            return Err(ConfigError::ValueEncoding(format!(
                "the heap's reservation {:#x}..{:#x} does not survive encoding with {:?}",
                space.lo, space.hi, config.value_encoding
            )));
        }
        crate::barrier::register_barrier_range();
        let goal = config.min_heap.max(BLOCK_SIZE);
        let fin_words = space.nblocks.div_ceil(64);
        Ok(Heap {
            inner: Arc::new(HeapInner {
                space,
                world: RwLock::new(world),
                partial: (0..NUM_SPAN_CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
                typed_partial: Mutex::new(Vec::new()),
                collect_lock: Mutex::new(()),
                cycle: AtomicU64::new(0),
                live: AtomicUsize::new(0),
                allocated: AtomicUsize::new(0),
                goal: AtomicUsize::new(goal),
                _check_refs: crate::refcheck::CheckRefsHeap::new(config.check_refs),
                roots: SlotTable::default(),
                weaks: SlotTable::default(),
                rooted_vecs: VecTable::default(),
                scanners: Mutex::new(Vec::new()),
                finalizers: Mutex::new(FinalizerTable::default()),
                fin_blocks: (0..fin_words).map(|_| AtomicU64::new(0)).collect(),
                fin_queued: AtomicU64::new(0),
                fin_visited_in_stops: AtomicU64::new(0),
                fin_referents: std::sync::atomic::AtomicBool::new(true),
                world_stopped: std::sync::atomic::AtomicBool::new(false),
                fin_shading: std::sync::atomic::AtomicBool::new(true),
                pending: Mutex::new(VecDeque::new()),
                fin_started: AtomicU64::new(0),
                fin_watch: Mutex::new(FinalizerWatch::default()),
                fin_stuck_kick: std::sync::atomic::AtomicBool::new(true),
                stats: Mutex::new(StatsAcc::default()),
                start: Instant::now(),
                quarantine: Mutex::new(Quarantine::default()),
                quarantining: std::sync::atomic::AtomicBool::new(false),
                sweep_cursor: AtomicUsize::new(usize::MAX),
                mutators: Mutex::new(Vec::new()),
                sweeper: Arc::new((Mutex::new(0), std::sync::Condvar::new())),
                bg_hold: Arc::new(BgHold::default()),
                background_sweeping: std::sync::atomic::AtomicBool::new(true),
                sweepers_in_flight: AtomicUsize::new(0),
                swept_by: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
                fin_waited: AtomicU64::new(0),
                solo_owner: Mutex::new(None),
                alloc_black: std::sync::atomic::AtomicBool::new(false),
                started: AtomicU64::new(0),
                started_cv: (Mutex::new(()), Condvar::new()),
                #[cfg(feature = "test-hooks")]
                step: Mutex::new(None),
                #[cfg(feature = "test-hooks")]
                attach_pause: Mutex::new(None),
                background: Arc::new((Mutex::new(BackgroundState::default()), std::sync::Condvar::new())),
                pacer: crate::pacer::Pacer::default(),
                config,
            }),
        })
        .inspect(|h| h.inner.pacer.trigger.store(crate::pacer::next_trigger(0, goal, 0), Ordering::Relaxed))
        .inspect(|h| {
            start_background_sweeper(Arc::downgrade(&h.inner), h.inner.bg_hold.clone(), h.inner.sweeper.clone())
        })
    }

    /// Give a heap created with a single-thread World ([`Heap::new`]) its
    /// real World (e.g. when the scheduler starts). Waits for a collection
    /// in progress. Panics if the heap already has a World that stops
    /// threads (a runtime's heap, or one from [`Heap::with_world`]):
    /// replacing it could admit threads that World does not stop; and panics
    /// if a thread is attached (it was admitted by the old World). An
    /// [`attach_thread`](Heap::attach_thread) racing this call is decided
    /// under the collection lock this call swaps the World under: it either
    /// attached first (this call panics) or is judged by the new World's
    /// [`may_attach`](World::may_attach).
    pub fn set_world(&self, world: Arc<dyn World>) {
        let _g = lock(&self.inner.collect_lock);
        let mut w = self.inner.world.write().unwrap_or_else(|p| p.into_inner());
        assert!(
            w.single_thread(),
            "Heap::set_world: this heap already has a World that stops threads (a runtime's heap, or \
             Heap::with_world); replacing it could admit threads that World does not stop and scan"
        );
        assert!(
            lock(&self.inner.solo_owner).is_none(),
            "Heap::set_world: a thread is attached to this heap (detach it first)"
        );
        *w = world;
    }

    /// The configuration in force.
    pub fn config(&self) -> &HeapConfig {
        &self.inner.config
    }

    /// The heap's value encoding (`HeapConfig::value_encoding`).
    pub fn value_encoding(&self) -> crate::ValueEncoding {
        self.inner.space.encoding
    }

    /// Attach the current thread: allocation functions ([`crate::alloc`],
    /// `Gc::new`, ...) on this thread use this heap until the guard drops.
    /// The scheduler calls this once per worker thread when it starts.
    ///
    /// Only threads the heap's [`World`] stops and scans may attach
    /// ([`World::may_attach`]): a runtime's heap refuses every thread but the
    /// runtime's own (allocate from a task instead), a [`ThreadWorld`](crate::ThreadWorld)
    /// heap every thread not registered with it ([`AttachError::Refused`]).
    pub fn attach_thread(&self) -> Result<MutatorGuard, AttachError> {
        if in_pause() {
            in_pause_panic("attaching a thread (Heap::attach_thread)");
        }
        if !crate::mutator::current_mutator().is_null() {
            return Err(AttachError::AlreadyAttached);
        }
        let (solo, world) = loop {
            let world = self.inner.world();
            world.may_attach().map_err(AttachError::Refused)?;
            if !world.single_thread() {
                // A World that stops threads is never replaced (set_world
                // refuses): its answer stands.
                break (false, world);
            }
            #[cfg(feature = "test-hooks")]
            if let Some(pause) = lock(&self.inner.attach_pause).clone() {
                pause();
            }
            // Under the collection lock: no collection runs while the owner
            // changes (waiting for it counts as a safe point).
            let mut g = None;
            world.blocking(&mut || g = Some(lock(&self.inner.collect_lock)));
            // `set_world` swaps the World under the collection lock: if it
            // did since we read it, the World that admitted us is not the
            // heap's any more (the new one may not stop this thread): ask
            // the new one. Holding the lock from here on, the World cannot
            // change until we are the recorded owner, which `set_world`
            // then refuses.
            if !std::ptr::addr_eq(Arc::as_ptr(&self.inner.world()), Arc::as_ptr(&world)) {
                continue;
            }
            let mut owner = lock(&self.inner.solo_owner);
            if owner.is_some() {
                return Err(AttachError::Refused(
                    "the heap's World stops no thread (SoloWorld: Heap::new) and another thread is attached: it \
                     admits one thread at a time (use a Runtime, or Heap::with_world and a ThreadWorld, for \
                     several threads)",
                ));
            }
            *owner = Some(std::thread::current().id());
            break (true, world);
        };
        let mut mutator = Box::new(Mutator::new(self.inner.clone()));
        no_preempt(|| lock(&self.inner.mutators).push(&mut *mutator as *mut Mutator as usize));
        // Before the thread can allocate: the World that admitted it counts
        // it attached (a ThreadWorld then keeps it a participant until the
        // guard drops; a World that stops threads is never replaced, and a
        // single-thread one not while we are its recorded owner).
        world.thread_attached();
        let prev = set_current_mutator(&mut *mutator);
        Ok(MutatorGuard { mutator, prev, solo, world })
    }

    /// The heap the current thread is attached to, if any.
    pub fn current() -> Option<Heap> {
        let m = crate::mutator::current_mutator();
        // SAFETY: a non-null current mutator is alive until its guard drops on
        // this thread; we only clone its heap handle.
        (!m.is_null()).then(|| Heap { inner: unsafe { (*m).heap.clone() } })
    }

    /// Run a full collection now: returns after a cycle that started after
    /// this call has completed. Callers that overlap share one cycle (each
    /// waits for the one in progress, if any, and then for one started
    /// after its call, which the first of them runs). It ends with the
    /// World's cooperative point ([`World::after_collect`]): in a usurp
    /// task, a switch point (due timers fire, waiting tasks of its worker
    /// run, the task stops there if its runtime shuts down).
    pub fn collect(&self) {
        let s = self.inner.started.load(Ordering::Acquire);
        self.inner.collect("explicit", Some(s + 1));
        // A cooperative point (`World::after_collect`), outside every lock.
        self.inner.world().after_collect();
    }

    /// Whether `addr` lies in this heap's reservation.
    pub fn contains(&self, addr: usize) -> bool {
        self.inner.space.contains(addr)
    }

    /// The allocated object containing `addr` (interior pointers included), as
    /// the conservative scan would find it: an object live when looked up
    /// (a dead object awaiting the lazy sweep is not found). Valid at any
    /// time, also while a collection marks concurrently: the object handed
    /// out is then shaded (with all it references), and the lookup and the
    /// shade never fall inside a stop in which the collector marks (see
    /// `WeakRef::get`). Like any handle, the result keeps its object alive
    /// only while it is on a scanned stack or in a root.
    #[inline(never)]
    pub fn find_object(&self, addr: usize) -> Option<GcRef> {
        crate::refcheck::shading_section(|| {
            let r = crate::mark::find_containing(&self.inner.space, addr)
                // SAFETY: find_containing found a published object.
                .filter(|l| !unsafe { is_quarantined(l.addr) })
                .and_then(|l| GcRef::from_heap_addr(l.addr));
            // Handing out an object the mark may not have reached: shade it
            // (as `WeakRef::get` does).
            if let (Some(r), true) = (r, crate::barrier::MARKING.load(Ordering::Relaxed) != 0) {
                crate::refcheck::shade(r.addr());
            }
            r
        })
    }

    /// The object starting exactly at `addr`, if `addr` is the start of an
    /// allocated object of this heap (the checked way to turn an address a
    /// VM kept as an integer back into a handle). Valid at any time, also
    /// while a collection marks concurrently (it then shades the object it
    /// hands out), as [`Heap::find_object`].
    #[inline(never)]
    pub fn object_at(&self, addr: usize) -> Option<GcRef> {
        crate::refcheck::shading_section(|| {
            let r = find_exact(&self.inner.space, addr)
                // SAFETY: find_exact found a published object.
                .filter(|l| !unsafe { is_quarantined(l.addr) })
                .and_then(|l| GcRef::from_heap_addr(l.addr));
            // As in `find_object`.
            if let (Some(r), true) = (r, crate::barrier::MARKING.load(Ordering::Relaxed) != 0) {
                crate::refcheck::shade(r.addr());
            }
            r
        })
    }

    /// Shade every object a word of `[lo, hi)` points into (the
    /// conservative rule of stack scanning, see `mark.rs`) if this heap is
    /// marking; nothing otherwise (cost then: one load of the process-wide
    /// "a heap marks" flag). For a World that scans task stacks one task at
    /// a time ([`World::scan_task_stacks`](crate::World::scan_task_stacks)):
    /// the scheduler scans a task's stack with it when the task is about to
    /// resume before the collector reached it, and shades with it the bytes
    /// of values that move between tasks through memory it owns without a
    /// barrier (channel sends, spawn closures, join results) while a heap
    /// marks. Objects shaded are marked and queued on the heap's grey list
    /// (counted as live like the barrier's). Callable from any thread: one
    /// the World does not stop goes through the shading gate (it waits out
    /// a stop in which the collector marks).
    ///
    /// # Safety
    /// `[lo, hi)` is readable memory for the duration of the call.
    #[doc(hidden)]
    pub unsafe fn shade_conservative_range(&self, lo: usize, hi: usize) {
        if crate::barrier::MARKING.load(Ordering::Relaxed) == 0 || lo >= hi {
            return;
        }
        shade_range_slow(&self.inner, lo, hi);
    }

    /// Test support (the incremental-marking model test): whether the
    /// object at `addr` is marked by the mark in progress, without shading
    /// it (unlike `object_at`).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_is_marked(&self, addr: usize) -> bool {
        self.inner.is_marked(addr)
    }

    /// Test support: begin a mark driven step by step (the start stop of a
    /// concurrent cycle: barrier and black allocation on, precise roots,
    /// root scanners, finalizer closures and the World's ranges scanned;
    /// *not* the calling thread's stack, so a test controls its roots
    /// exactly). Then [`debug_mark_steps`](Heap::debug_mark_steps) and
    /// [`debug_finish_marking`](Heap::debug_finish_marking). Single-threaded
    /// tests only; no other collection may run meanwhile.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_begin_marking(&self) {
        let inner = &*self.inner;
        let world = inner.world();
        let _g = lock(&inner.collect_lock);
        assert!(lock(&inner.step).is_none(), "debug_begin_marking: a stepped mark is already in progress");
        no_preempt(|| inner.finish_sweep());
        inner.stop_world(&*world);
        inner.started.store(inner.cycle.load(Ordering::Relaxed) + 1, Ordering::Release);
        inner.begin_marking();
        let counters = MarkCounters::default();
        let mut m = Marker::new(&inner.space, &counters);
        m.exclusive = true;
        world.for_each_conservative_range(&mut |lo, hi| {
            m.scan_range(lo, hi);
        });
        let concurrent_table = ROOT_TABLE_CONCURRENT.load(Ordering::Relaxed);
        inner.mark_precise_roots(&mut m, &std::cell::Cell::new(Phase::Marking), !concurrent_table);
        let stack = std::mem::take(&mut m.stack);
        m.flush();
        inner.restart_world(&*world);
        // The `Root` table and the finalizer records, world running (as a
        // concurrent cycle).
        let mut fm = Marker::new(&inner.space, &counters);
        fm.stack = stack;
        if concurrent_table {
            inner.scan_root_table(&mut fm);
        }
        inner.scan_finalizer_records(&mut fm);
        let stack = std::mem::take(&mut fm.stack);
        fm.flush();
        drop((m, fm));
        *lock(&inner.step) = Some(StepMark { stack, counters });
    }

    /// Test support: scan at most `k` grey objects of the stepped mark
    /// (taking what the barrier shaded first); returns whether nothing is
    /// left grey.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_mark_steps(&self, k: usize) -> bool {
        let inner = &*self.inner;
        let mut g = lock(&inner.step);
        let StepMark { stack, counters, .. } = g.as_mut().expect("debug_mark_steps: no stepped mark in progress");
        stack.extend(lock(&inner.space.mark.grey).drain(..));
        let mut m = Marker::new(&inner.space, counters);
        m.stack = std::mem::take(stack);
        m.drain_budget(k);
        *stack = std::mem::take(&mut m.stack);
        m.flush();
        stack.is_empty() && lock(&inner.space.mark.grey).is_empty()
    }

    /// Test support: finish the stepped mark as a termination stop does
    /// (drain everything grey, weak references, finalizers, publish the
    /// generation: lazy sweeping follows).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_finish_marking(&self) {
        let inner = &*self.inner;
        let world = inner.world();
        let _g = lock(&inner.collect_lock);
        let StepMark { stack, counters } =
            lock(&inner.step).take().expect("debug_finish_marking: no stepped mark in progress");
        inner.stop_world(&*world);
        let cycle = inner.cycle.load(Ordering::Relaxed) + 1;
        let mut m = Marker::new(&inner.space, &counters);
        m.exclusive = true;
        m.stack = stack;
        m.stack.extend(lock(&inner.space.mark.grey).drain(..));
        m.drain_local();
        let weak_cleared = inner.mark_termination();
        m.flush();
        let live =
            counters.live_bytes.load(Ordering::Relaxed) + inner.space.mark.shaded_bytes.load(Ordering::Relaxed);
        inner.end_marking();
        let fin_queued_before = inner.fin_queued.load(Ordering::Relaxed);
        inner.sweep_start(cycle, "steps", live, 0);
        inner.restart_world(&*world);
        inner.wake_sweeper(cycle);
        no_preempt(|| inner.sweep_finalizer_blocks());
        let queued = inner.fin_queued.load(Ordering::Relaxed) - fin_queued_before;
        lock(&inner.stats).weak_cleared += weak_cleared;
        if inner.finalizers_to_run(queued > 0) {
            world.finalizers_pending();
        }
    }

    /// Root `obj` precisely until the returned handle is dropped.
    ///
    /// Panics if `obj` is an object of another heap (this heap's collector
    /// would not keep it alive) or a stale handle (not a live object: the
    /// check of the safe accessors, as `RootedVec::push` runs it; from a
    /// thread the World does not stop, a snapshot): the root would keep
    /// and later name whatever object takes its place.
    #[track_caller]
    pub fn add_root(&self, obj: Option<GcRef>) -> Root {
        if let Some(r) = obj {
            if !self.contains(r.addr()) {
                crate::roots::other_heap("Heap::add_root", "this one", r);
            }
        }
        let entry = self.inner.space.handle_entry();
        // Locks taken by mutators are taken with preemption off, so that no
        // task is ever parked for a collection while holding one.
        let made = no_preempt(|| {
            let a = obj.map_or(0, |r| r.addr());
            // A root added while the heap marks: shaded, like a barrier's
            // new value (the start stop scanned the root table before);
            // the liveness check, the insertion and the shade in one
            // shading section (see `Root::set`).
            crate::refcheck::shading_section(|| {
                if let Some(why) = obj.and_then(|r| crate::roots::refusal(entry, r)) {
                    return Err(why);
                }
                let r = Root::new(self.inner.roots.add(a), entry);
                if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
                    crate::refcheck::shade(a);
                }
                Ok(r)
            })
        });
        match (made, obj) {
            (Ok(r), _) => r,
            (Err(why), Some(r)) => crate::roots::refuse("Heap::add_root", "this", r, why),
            (Err(_), None) => unreachable!("a refusal without an object"),
        }
    }

    /// A weak reference to `obj`.
    ///
    /// Panics if `obj` is an object of another heap (this heap's collector
    /// would never clear the reference: it would name whatever takes the
    /// object's place once its own heap frees it) or a stale handle (as
    /// [`add_root`](Heap::add_root)).
    #[track_caller]
    pub fn weak(&self, obj: GcRef) -> WeakRef {
        if !self.contains(obj.addr()) {
            crate::roots::other_heap("Heap::weak", "this one", obj);
        }
        let entry = self.inner.space.handle_entry();
        // The check and the insertion in one shading section (a stop in
        // which the collector marks, or clears weak references, falls
        // before or after both).
        let made = no_preempt(|| {
            crate::refcheck::shading_section(|| match crate::roots::refusal(entry, obj) {
                Some(why) => Err(why),
                None => Ok(WeakRef::new(self.inner.weaks.add(obj.addr()), entry)),
            })
        });
        made.unwrap_or_else(|why| crate::roots::refuse("Heap::weak", "this", obj, why))
    }

    /// Register a callback that reports precise roots in every pause (e.g. an
    /// interpreter's operand stack). It runs with the world stopped: it must
    /// not take locks a stopped task may hold; allocating, collecting or
    /// attaching a thread in it panics ("... inside a collection's pause"),
    /// and the collection is then abandoned (nothing freed) and that panic
    /// resumed in the collecting caller. In a runtime's heap the scanner
    /// runs on the task or thread that holds the pause's stop: it may not
    /// end it (`Runtime::start_the_world` panics there, and a drop of the
    /// runtime there begins its shutdown only when the pause ends).
    ///
    /// The id is unique in the process (not per heap): given to another
    /// heap's [`Heap::remove_root_scanner`], it removes nothing there.
    pub fn add_root_scanner(&self, f: RootScanner) -> ScannerId {
        // Process-wide (it used to count per heap, and an id of one heap
        // removed another heap's scanner with the same number, e.g. a
        // RootedVec's: its elements were then freed while reachable).
        static NEXT_SCANNER: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_SCANNER.fetch_add(1, Ordering::Relaxed);
        no_preempt(|| lock(&self.inner.scanners).push((id, Arc::new(f))));
        ScannerId(id)
    }

    /// Unregister a root scanner; false if unknown to this heap (never
    /// registered here, already removed, or registered with another heap).
    pub fn remove_root_scanner(&self, id: ScannerId) -> bool {
        no_preempt(|| {
            let mut v = lock(&self.inner.scanners);
            let n = v.len();
            v.retain(|(i, _)| *i != id.0);
            v.len() != n
        })
    }

    /// Run `f(obj)` once after `obj` is found unreachable.
    ///
    /// Rules: the finalizer runs later, outside allocation and outside the
    /// pause, when someone calls [`Heap::run_pending_finalizers`]. From the
    /// cycle that finds `obj` unreachable until the finalizer has run, `obj`
    /// and everything it references stay alive (the pending queue is a root).
    /// Weak references to `obj` are cleared in that cycle, before the
    /// finalizer runs (Go's weak pointers likewise). The finalizer may
    /// store `obj` somewhere reachable (resurrection): the object then
    /// lives on as a normal object, its weak references stay cleared, its
    /// finalizer is not re-registered (call `set_finalizer` again to get
    /// another one). Registering several finalizers on one object runs each.
    ///
    /// **Panics and blocking.** A finalizer that panics is reported on
    /// stderr (with `obj`'s descriptor name and the panic's message) and
    /// the other queued finalizers run on; the panic goes no further. A
    /// finalizer that blocks holds up the task that runs it, not the
    /// queue: a collection that finds finalizers still pending and none
    /// taken over the two intervals between the last three collections
    /// asks for another runner (so finalizers may run concurrently on
    /// several tasks). A finalizer
    /// that never returns keeps its task, and what its frame holds, alive
    /// for good: do not block in finalizers, hand long work to a task.
    ///
    /// **Order (Go's).** While `obj` has a registered finalizer, every
    /// collection marks what `obj` references (not `obj` itself): those
    /// objects stay alive, finalizable or not, for as long as `obj` may
    /// still be finalized. So if `a` references `b` and both have
    /// finalizers, `a`'s finalizer runs first, with `b` intact, and `b` is
    /// found unreachable at the earliest by the collection after `a`'s
    /// finalizer ran (a chain of n finalizable objects takes n cycles).
    /// **A finalizable object that its own referents reach is never
    /// finalized**: one that references itself, a cycle of finalizable
    /// objects, or a cycle through plain objects (`a` -> `p` -> `a`, `p`
    /// without finalizer: a parent pointer, a doubly linked list); marking
    /// `a`'s referents marks `a`. They leak, as in Go; keep finalizers
    /// on objects outside cycles (e.g. on a small wrapper that the cyclic
    /// structure does not reference).
    ///
    /// Cost: the records are kept per heap block; a collection scans them
    /// while the world runs and the sweep of a block finds its dead
    /// finalizable objects, so no stop of a concurrent collection visits
    /// them; the stop-the-world mark (a collection at the hard limit,
    /// `HeapConfig::stw_marking`) scans them in its stop (stats:
    /// `finalizer_records_in_stops`). Only pending finalizers (found dead,
    /// not yet run) are scanned in the start stop.
    ///
    /// **What the closure captures is a root.** The closure's own bytes (its
    /// captured values: `GcRef`s, `Gc<T>`s, structs and arrays of them) are
    /// scanned conservatively in every collection until it has run, and
    /// while it runs they are on the running thread's stack: an object `b`
    /// captured by the finalizer of `a` stays alive at least until that
    /// finalizer has finished (memory the closure owns through a `Box` or a
    /// `Vec` is *not* scanned; hold such objects with [`Root`]s).
    ///
    /// **Never capture `obj` itself** (use the `GcRef` argument): as in Go,
    /// an object reachable from its own finalizer never becomes unreachable,
    /// so the finalizer would never run and the object would leak. A closure
    /// that holds `obj` directly (a word pointing into it) is refused with a
    /// panic; one that reaches `obj` through other objects (it captures `b`,
    /// and `b` references `obj`) cannot be detected here: `obj` then stays
    /// alive, unfinalized, for as long as that path exists. The same holds
    /// for cycles of finalizers (`a`'s captures `b`, `b`'s captures `a`):
    /// neither runs. A chain (`a`'s captures `b`, `b` has its own finalizer)
    /// is fine and ordered: `b` becomes unreachable, and is finalized, only
    /// after `a`'s finalizer has run.
    ///
    /// Panics if `obj` is not the start of an object of this heap, or if the
    /// closure captures a pointer into `obj`.
    pub fn set_finalizer(&self, obj: GcRef, f: impl FnOnce(GcRef) + Send + 'static) {
        assert!(
            self.object_at(obj.addr()).is_some(),
            "set_finalizer: {obj:?} is not an object of this heap"
        );
        let f: Finalizer = Box::new(FinalizerBox(f));
        let (lo, hi) = finalizer_range(&f);
        let mut p = (lo + 7) & !7;
        while p + 8 <= hi {
            // SAFETY: inside the closure's box, which we own; a plain read of
            // its bytes as the collector's conservative scan reads them.
            let w = unsafe { (p as *const usize).read_volatile() };
            if crate::mark::find_containing(&self.inner.space, w).is_some_and(|l| l.addr == obj.addr()) {
                panic!(
                    "set_finalizer: the finalizer of {obj:?} captures a pointer to that object, so the object \
                     would never become unreachable and the finalizer would never run; use the GcRef the \
                     finalizer receives as its argument instead"
                );
            }
            p += 8;
        }
        let block = find_exact(&self.inner.space, obj.addr()).expect("checked above").block;
        no_preempt(|| {
            crate::refcheck::shading_section(|| {
                let inner = &*self.inner;
                let mut t = lock(&inner.finalizers);
                t.by_block.entry(block as u32).or_default().push((obj.addr(), f));
                t.len += 1;
                inner.fin_blocks[block / 64].fetch_or(1 << (block % 64), Ordering::Relaxed);
                // Registered while the heap marks (Go's `addfinalizer`
                // likewise): the collector's scan of the records may have
                // passed this block. `obj` is shaded (so this mark does not
                // find it dead, and its referents are marked when it is
                // scanned), and so is what the closure captures (values
                // that moved from a stack into the closure's box, which no
                // stack scan covers). Under the table's lock: the box
                // cannot leave the table meanwhile.
                if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 && inner.fin_shading.load(Ordering::Relaxed) {
                    crate::refcheck::shade(obj.addr());
                    let mut p = (lo + 7) & !7;
                    while p + 8 <= hi {
                        // SAFETY: inside the closure's box, owned by the
                        // table whose lock we hold.
                        let w = unsafe { (p as *const usize).read_volatile() };
                        if let Some(l) = crate::mark::find_containing(&inner.space, w) {
                            crate::refcheck::shade(l.addr);
                        }
                        p += 8;
                    }
                }
            })
        });
    }

    /// Run the finalizers queued by past collections, on the calling thread
    /// (which must be attached or otherwise a scanned mutator, since each
    /// object is only referenced from its stack while its finalizer runs).
    /// Returns how many ran (a finalizer that panicked counts: it is
    /// reported on stderr and the others run on, see
    /// [`Heap::set_finalizer`]). The scheduler calls this from a task after
    /// [`World::finalizers_pending`].
    ///
    /// Panics if the calling thread is not attached to this heap (a task of
    /// its runtime, a thread attached with [`Heap::attach_thread`]): on any
    /// other thread the objects a finalizer holds would live only on a stack
    /// no collection scans.
    pub fn run_pending_finalizers(&self) -> usize {
        let m = crate::mutator::current_mutator();
        // SAFETY: a non-null current mutator is alive until its guard drops
        // on this thread; we only compare its heap.
        if m.is_null() || !Arc::ptr_eq(unsafe { &(*m).heap }, &self.inner) {
            panic!(
                "Heap::run_pending_finalizers: the calling thread is not attached to this heap (call it from a \
                 task of the heap's runtime, or a thread attached with Heap::attach_thread): the objects a \
                 finalizer holds would be on a stack no collection scans"
            );
        }
        let mut n = 0;
        loop {
            let next = no_preempt(|| lock(&self.inner.pending).pop_front());
            let Some((obj, f)) = next else { break };
            self.inner.fin_started.fetch_add(1, Ordering::Relaxed);
            let r = GcRef::from_heap_addr(obj).expect("finalizable objects are non-null");
            // Moves the closure out of its box onto this stack, then runs
            // it. Each call isolated: a panicking finalizer is reported and
            // the queue goes on (it would otherwise unwind out of this
            // loop, stranding the rest until another cycle queued more).
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(r)));
            std::hint::black_box(r);
            if let Err(p) = ran {
                // `r` is still on this stack: the object is alive.
                eprintln!(
                    "usurp gc: the finalizer of a `{}` object ({:#x}) panicked ({}); the other finalizers run on",
                    r.descriptor().name(),
                    obj,
                    panic_message(&*p)
                );
            }
            n += 1;
            no_preempt(|| lock(&self.inner.stats).finalizers_run += 1);
        }
        n
    }

    /// Test support (negative control): with `false`, a cycle asks the
    /// world for a finalizer runner only when it queued finalizers, not
    /// when earlier ones wait behind a runner stuck in a blocking
    /// finalizer (`true` is the default). Wrong, for tests only.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn set_stuck_finalizer_runner_kick_for_tests(&self, on: bool) {
        self.inner.fin_stuck_kick.store(on, Ordering::SeqCst);
    }

    /// Test support (negative control of finalizer ordering): with `false`,
    /// the marks of this heap no longer mark the referents of finalizable
    /// objects (`true` is the default). Then an unreachable finalizable
    /// object and the finalizable objects it references are found dead in
    /// the same cycle, and what it references without a finalizer is freed
    /// while its finalizer is pending: wrong, for tests only.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn set_finalizer_referent_marking(&self, on: bool) {
        self.inner.fin_referents.store(on, Ordering::SeqCst);
    }

    /// Test support (negative control): with `false`, `set_finalizer`
    /// called while this heap marks no longer shades the object and the
    /// closure's captures (`true` is the default): a value that moved from
    /// a stack into the closure after the mark scanned the records is then
    /// freed by that mark. Wrong, for tests only.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn set_finalizer_registration_shading(&self, on: bool) {
        self.inner.fin_shading.store(on, Ordering::SeqCst);
    }

    /// Test support: turn the background sweeper off (`false`) or on, so a
    /// test can keep blocks unswept after a collection (allocation and the
    /// next collection still sweep them).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn set_background_sweeping(&self, on: bool) {
        self.inner.background_sweeping.store(on, Ordering::SeqCst);
    }

    /// Test support (the `set_world` / `attach_thread` race, tests/world_registration.rs):
    /// `attach_thread` on a single-thread World calls `f` after reading the
    /// World and asking `may_attach`, before taking the collection lock
    /// (under which `set_world` swaps the World). `None` removes it.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn set_attach_pause_for_tests(&self, f: Option<Arc<dyn Fn() + Send + Sync>>) {
        *lock(&self.inner.attach_pause) = f;
    }

    /// Test support: the weak-reference slots the collector still walks in
    /// each termination stop (live handles to uncleared targets, and
    /// dropped handles not yet forgotten).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_weak_slots(&self) -> usize {
        self.inner.weaks.len()
    }

    /// Test support: the `RootedVec` buffers this heap's collector scans
    /// (those of live containers).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_rooted_vecs(&self) -> usize {
        self.inner.rooted_vecs.len()
    }

    /// The table `RootedVec::new` lists its buffer in.
    pub(crate) fn rooted_vecs(&self) -> &VecTable {
        &self.inner.rooted_vecs
    }

    /// This heap's handle-check entry (that of its mutators).
    pub(crate) fn handle_entry(&self) -> &'static crate::refcheck::Entry {
        self.inner.space.handle_entry()
    }

    /// Test support: the strong references the background collector and
    /// sweeper hold now.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_background_refs(&self) -> usize {
        lock(&self.inner.bg_hold.m).busy
    }

    /// Test support (finalizer sweeping): with `true`, counts one more
    /// sweeper in flight, as if another thread were sweeping a block
    /// without finalizer records and never finished; `false` ends it.
    /// Anything that waits for every sweeper (`finish_sweep`, so the next
    /// collection's start) waits until then; a cycle's sweep of its
    /// finalizer blocks must not. Calls must pair; single tests only.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn debug_hold_sweeper(&self, on: bool) {
        if on {
            self.inner.sweepers_in_flight.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.sweepers_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Test support: sweep every block not swept yet since the last mark (as
    /// the next collection does before it marks).
    #[doc(hidden)]
    pub fn finish_sweep(&self) {
        no_preempt(|| self.inner.finish_sweep());
    }

    /// Statistics so far.
    pub fn stats(&self) -> GcStats {
        no_preempt(|| self.inner.stats())
    }
}

impl HeapInner {
    pub(crate) fn world(&self) -> Arc<dyn World> {
        self.world.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether handing out `extra` more bytes crosses the goal (pacing on).
    ///
    /// Concurrent marking (the pacer, see `pacer.rs`): a cycle is
    /// triggered when the heap's use reaches the pacer's trigger (late in
    /// the growth allowance); while a mark runs, allocation never asks for
    /// a collection: mutator assists pace it (an allocation marks in
    /// proportion to what it takes, more so the closer the heap is to its
    /// goal) and nobody waits for the cycle. With `stw_marking`, the
    /// trigger is the goal.
    pub(crate) fn over_goal(&self, extra: usize) -> bool {
        if self.config.gogc.is_none() {
            return false;
        }
        let live = self.live.load(Ordering::Relaxed);
        let used = live + self.allocated.load(Ordering::Relaxed) + extra;
        if self.config.stw_marking {
            used >= self.goal.load(Ordering::Relaxed)
        } else if self.alloc_black.load(Ordering::Relaxed) {
            false
        } else {
            used >= self.pacer.trigger.load(Ordering::Relaxed)
        }
    }

    /// Whether a concurrent mark is in progress (with assists on) and the
    /// heap has reached its goal: an assist without work then waits.
    pub(crate) fn over_goal_while_marking(&self) -> bool {
        crate::pacer::assists_on()
            && self.alloc_black.load(Ordering::Acquire)
            && self.space.mark.marking.load(Ordering::Acquire)
            && self.live.load(Ordering::Relaxed) + self.allocated.load(Ordering::Relaxed)
                >= self.goal.load(Ordering::Relaxed)
    }

    /// An assist at the goal that found no mark work waits for some (see
    /// `pacer.rs`, "Waiting for mark work"): until a notification (a
    /// donation, a give-back, the mark's end) or the re-check bound. Runs
    /// inside `World::blocking`.
    pub(crate) fn wait_for_mark_work(&self) {
        let p = &self.pacer;
        let bound = crate::pacer::assist_wait_recheck();
        p.assist_waiters.fetch_add(1, Ordering::SeqCst);
        // Ask for a donation again: another waiter's request may have been
        // the one served (one flag for all of them).
        p.assist_wanted.store(true, Ordering::Relaxed);
        let (m, cv) = &p.assist_wait;
        let mut g = lock(m);
        let gen0 = *g;
        let t0 = Instant::now();
        // Work published before we registered was seen here (the waker's
        // fence), work published after notifies us: no wake-up is lost.
        if lock(&self.space.mark.grey).is_empty() && self.over_goal_while_marking() {
            p.assist_waits.fetch_add(1, Ordering::Relaxed);
            while *g == gen0 {
                let Some(left) = bound.checked_sub(t0.elapsed()) else {
                    break;
                };
                g = cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            crate::pacer::count_assist_wait(g.wrapping_sub(gen0));
        }
        drop(g);
        p.assist_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Mutator assist (see `pacer.rs`): called by a mutator leaving the
    /// allocation slow path with `debt` bytes taken during a concurrent
    /// mark; marks in proportion and lowers the debt by what was paid
    /// (zero outside a mark). Never at a safe point: a stop waits for it,
    /// one `SLICE` at most (it leaves when its worker has a checkpoint
    /// request outstanding, see `pacer.rs`).
    pub(crate) fn assist(&self, debt: &mut usize) {
        use crate::pacer::{ASSIST_MAX_OBJECTS, ASSIST_TAKE, SLICE};
        let used = self.live.load(Ordering::Relaxed) + self.allocated.load(Ordering::Relaxed);
        if !self.alloc_black.load(Ordering::Acquire) || !self.space.mark.marking.load(Ordering::Acquire) {
            *debt = 0;
            return;
        }
        let p = &self.pacer;
        p.peak_during_mark.fetch_max(used, Ordering::Relaxed);
        if !crate::pacer::assists_on() {
            *debt = 0;
            return;
        }
        let goal = self.goal.load(Ordering::Relaxed);
        let work = p.assist_work(*debt, p.expected_live.load(Ordering::Relaxed), used, goal);
        if work == 0 {
            *debt = 0;
            return;
        }
        let t0 = Instant::now();
        let space = &self.space;
        let mut busy = false;
        let mut m = Marker::new(space, &p.assist_counters);
        let (mut objects, mut marked) = (0, 0);
        while marked < work && objects < ASSIST_MAX_OBJECTS {
            if m.stack.is_empty() {
                // Grey objects from the list (counted busy while held: the
                // collector's loop does not end meanwhile); if it is empty,
                // ask the collector's marker to donate (it does within one
                // slice) and leave the rest of the debt for the next slow
                // path.
                let mut g = lock(&space.mark.grey);
                let n = g.len().min(ASSIST_TAKE);
                if n == 0 {
                    drop(g);
                    p.assist_wanted.store(true, Ordering::Relaxed);
                    break;
                }
                if !busy {
                    busy = true;
                    p.assists_busy.fetch_add(1, Ordering::AcqRel);
                }
                let at = g.len() - n;
                m.stack.extend(g.drain(at..));
            }
            let before = m.live_bytes();
            m.drain_budget(SLICE.min(ASSIST_MAX_OBJECTS - objects));
            objects += SLICE;
            marked += m.live_bytes() - before;
            if crate::pacer::leave_for_request(true) {
                // A stop (or tick) waits: leave, the rest stays as debt.
                break;
            }
        }
        if !m.stack.is_empty() {
            lock(&space.mark.grey).append(&mut m.stack);
            p.wake_assist_waiters(false);
        }
        m.flush();
        if busy {
            p.assists_busy.fetch_sub(1, Ordering::AcqRel);
        }
        // Paid in proportion to the work done; the rest is carried over
        // (the caller calls again, or waits at the goal, or leaves it to
        // its next slow path).
        *debt = if marked >= work { 0 } else { (*debt as u128 * (work - marked) as u128 / work as u128) as usize };
        if marked > 0 {
            p.assist_calls.fetch_add(1, Ordering::Relaxed);
        }
        p.assist_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn stats(&self) -> GcStats {
        // (Each lock taken and released alone: lock order `finalizers`
        // before `pending`, see `finalizers`.)
        let registered = lock(&self.finalizers).len;
        let pending = lock(&self.pending).len();
        let s = lock(&self.stats);
        let live = self.live.load(Ordering::Relaxed);
        GcStats {
            cycles: self.cycle.load(Ordering::Acquire),
            last: s.last.clone(),
            heap_live: live,
            heap_alloc: live + self.allocated.load(Ordering::Relaxed),
            heap_goal: self.goal.load(Ordering::Relaxed),
            heap_committed: self.space.committed_bytes(),
            heap_limit: self.space.nblocks * BLOCK_SIZE,
            total_pause: s.total_pause,
            total_concurrent_mark: s.total_concurrent_mark,
            total_assist: s.total_assist,
            total_assist_marked: s.total_assist_marked,
            total_verify_pause: s.total_verify_pause,
            total_ttsp: s.total_ttsp,
            total_root_scan: s.total_root_scan,
            total_mark: s.total_mark,
            total_sweep: s.total_sweep,
            pauses: s.pauses.iter().copied().collect(),
            ttsp: s.ttsp.iter().copied().collect(),
            verify_failures: s.verify_failures,
            bad_pointers: s.bad_pointers,
            bad_values: s.bad_values,
            first_bad: s.first_bad,
            finalizers_run: s.finalizers_run,
            finalizers_pending: pending,
            finalizers_registered: registered,
            finalizer_records_in_stops: self.fin_visited_in_stops.load(Ordering::Relaxed),
            weak_cleared: s.weak_cleared,
            blocks_decommitted: s.blocks_decommitted,
            blocks_swept_background: self.swept_by[Sweeper::Background as usize].load(Ordering::Relaxed),
            blocks_swept_by_allocation: self.swept_by[Sweeper::Allocation as usize].load(Ordering::Relaxed),
            blocks_swept_before_mark: self.swept_by[Sweeper::Finish as usize].load(Ordering::Relaxed),
            blocks_swept_for_finalizers: self.swept_by[Sweeper::Finalizers as usize].load(Ordering::Relaxed),
            finalizer_blocks_waited: self.fin_waited.load(Ordering::Relaxed),
        }
    }

    /// A partial block for span class `sc` (`typed_id` 0), or a typed one
    /// of the compact descriptor `typed_id`; may be stale (the caller checks
    /// kind and descriptor word).
    pub(crate) fn pop_partial(&self, sc: usize, typed_id: usize) -> Option<u32> {
        if typed_id == 0 || !typed_lists() {
            lock(&self.partial[sc]).pop()
        } else {
            lock(&self.typed_partial).get_mut(typed_id).and_then(|v| v.pop())
        }
    }

    /// List block `b` as partial, for span class `sc` (`typed_id` 0) or on
    /// the list of the compact descriptor `typed_id`.
    pub(crate) fn push_partial(&self, sc: usize, typed_id: usize, b: usize) {
        if typed_id == 0 || !typed_lists() {
            lock(&self.partial[sc]).push(b as u32);
        } else {
            let mut t = lock(&self.typed_partial);
            if t.len() <= typed_id {
                t.resize_with(typed_id + 1, Vec::new);
            }
            t[typed_id].push(b as u32);
        }
    }

    /// Large-object slow path (its own span of blocks).
    pub(crate) fn alloc_large(
        &self,
        desc: &'static Descriptor,
        bytes: usize,
        len: Option<usize>,
        may_trigger: bool,
    ) -> Result<GcRef, Need> {
        let n = bytes.div_ceil(BLOCK_SIZE);
        if may_trigger && self.over_goal(n * BLOCK_SIZE) {
            return Err(Need::Collect);
        }
        let run = match self.space.alloc_blocks(n) {
            Some(r) => r,
            None => {
                // Dead spans and empty blocks are freed by the lazy sweep:
                // finish it before giving up.
                self.finish_sweep();
                self.space.alloc_blocks(n).ok_or(Need::Exhausted)?
            }
        };
        let first = run.first;
        for i in first + 1..first + n {
            let m = self.space.meta(i);
            m.link.store(first as u32, Ordering::Relaxed);
            self.space.set_kind(i, KIND_LARGE_TAIL, 0);
        }
        let m = self.space.meta(first);
        m.clear_tables();
        m.link.store(n as u32, Ordering::Relaxed);
        m.large_bytes.store(bytes, Ordering::Relaxed);
        // Swept for the current mark; published before the kind (Release).
        m.swept.store(2 * self.space.gen.load(Ordering::Acquire), Ordering::Release);
        // Untyped (a freed typed block forgot its descriptor already; this
        // keeps the rule "set by whoever hands the block out").
        self.space.set_block_desc(first, 0);
        self.space.set_kind(first, KIND_LARGE_HEAD, desc.is_pointer_free() as usize);
        let addr = self.space.block_start(first);
        let p = addr as *mut usize;
        // SAFETY: the run is ours; the object fits in it (n blocks >= bytes).
        unsafe {
            if !run.zeroed {
                std::ptr::write_bytes(p.add(1), 0, bytes / 8 - 1);
            }
            if let Some(l) = len {
                p.add(1).write(l);
            }
            p.write(desc as *const Descriptor as usize);
        }
        let black = self.black_buffer(m);
        if !black.is_null() {
            // Allocate black (see `Mutator::fast`).
            // SAFETY: black points at this block's mark buffer.
            unsafe { (*black).fetch_or(1, Ordering::Relaxed) };
        }
        // Publish after the header (pitfall 1).
        m.alloc[0].store(1, Ordering::Release);
        self.allocated.fetch_add(n * BLOCK_SIZE, Ordering::Relaxed);
        Ok(GcRef::from_heap_addr(addr).expect("heap addresses are non-null"))
    }

    /// Collect because the pacer asks for it (skipped if another thread
    /// collected while we waited for the lock). If a concurrent mark began
    /// since the pacer asked (the pacer asks for none during a mark: assists
    /// pace allocation then), this waits for that cycle to end. Otherwise, with a World that allows it
    /// ([`World::background_collection`]), the cycle is handed to the heap's
    /// background collector and the allocation goes on, after waiting for
    /// the start stop where the workers and the collector outnumber the
    /// CPUs (`pacer.rs`, "Start hand-off"); else the allocating thread runs
    /// the cycle.
    pub(crate) fn collect_for_alloc(self: &Arc<Self>, reason: &'static str) {
        let seen = self.cycle.load(Ordering::Acquire);
        if !self.alloc_black.load(Ordering::Acquire)
            && self.world().background_collection()
            && !lock(&self.background.0).gone
        {
            let started = self.started.load(Ordering::Acquire);
            // The start hand-off (pacer.rs): wait for the start stop off the
            // CPU, counted as stopped, so that the collector thread takes
            // this CPU rather than a running worker's. The request is made
            // inside the wait: the woken collector often takes this CPU at
            // once (the OS's wake-up preemption), and this worker must
            // count as stopped by then, not sit preempted in its slow path.
            let world = self.world();
            if !crate::pacer::start_handoff_on(world.parallelism()) || world.caller_holds_stop() {
                self.request_background_cycle();
            } else {
                let t0 = Instant::now();
                let mut waits = 0;
                world.blocking(&mut || {
                    self.place_collector_here();
                    self.request_background_cycle();
                    // `started` is stored before the notifier takes the
                    // mutex and read here under it: no wake-up is lost.
                    let (m, cv) = &self.started_cv;
                    let mut g = lock(m);
                    while self.started.load(Ordering::Acquire) == started && self.over_goal(0) {
                        let Some(left) = crate::pacer::START_HANDOFF_MAX.checked_sub(t0.elapsed()) else { break };
                        g = cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
                        waits += 1;
                    }
                });
                if self.started.load(Ordering::Acquire) == started {
                    // The wait ended before the start stop (timed out, or
                    // someone else collected): this allocation goes on, on
                    // the CPU the collector may be pinned to.
                    self.unpin_collector();
                }
                if waits > 0 {
                    crate::pacer::count_start_handoff();
                    self.pacer.start_waits.fetch_add(waits, Ordering::Relaxed);
                }
            }
            // At the goal already (the collector has not started the cycle
            // asked for at the trigger): wait until its start stop, after
            // which assists pace allocation, counted as stopped
            // (`World::blocking`), so the start stop never waits for this
            // thread. The wait is on `started_cv`, which the start stop
            // notifies (`pacer.rs`, "Waiting at the goal"), re-checked every
            // `GOAL_WAIT_RECHECK` at most.
            if crate::pacer::assists_on() {
                let at_goal = || {
                    self.started.load(Ordering::Acquire) == started
                        && !self.alloc_black.load(Ordering::Acquire)
                        && self.live.load(Ordering::Relaxed) + self.allocated.load(Ordering::Relaxed)
                            >= self.goal.load(Ordering::Relaxed)
                };
                if at_goal() {
                    let world = self.world();
                    if world.caller_holds_stop() {
                        // The start stop would wait for this thread, which
                        // would wait for it (a `ThreadWorld` stopper hung
                        // here; a runtime's `blocking` panicked instead).
                        stopper_at_goal();
                    }
                    let mut waits = 0;
                    // The collector's losses so far: one more during the
                    // wait means the cycle waited for will not start.
                    let failures0 = lock(&self.background.0).failures;
                    let mut lost = false;
                    if crate::pacer::goal_wait_on_cv() {
                        world.blocking(&mut || {
                            // As in the hand-off: `started` is stored before
                            // the start stop takes the mutex to notify, and
                            // read here under it: no wake-up is lost.
                            let (m, cv) = &self.started_cv;
                            let mut g = lock(m);
                            let recheck = crate::pacer::goal_wait_recheck();
                            while at_goal() {
                                g = cv.wait_timeout(g, recheck).unwrap_or_else(|p| p.into_inner()).0;
                                waits += 1;
                                let still = at_goal();
                                crate::pacer::count_goal_wake(still);
                                if still {
                                    // Not under the mutex: the look may
                                    // ask for the cycle again, and a
                                    // failed spawn then notifies it. No
                                    // wake-up is lost: the loop re-checks
                                    // under the mutex before it waits.
                                    drop(g);
                                    let stalled = self.goal_wait_stalled(failures0);
                                    g = lock(m);
                                    if stalled {
                                        lost = true;
                                        break;
                                    }
                                }
                            }
                        });
                    } else {
                        // The negative control: 20 µs sleeps, as before.
                        while at_goal() {
                            world.blocking(&mut || std::thread::sleep(Duration::from_micros(20)));
                            waits += 1;
                            let still = at_goal();
                            crate::pacer::count_goal_wake(still);
                            if still && self.goal_wait_stalled(failures0) {
                                lost = true;
                                break;
                            }
                        }
                    }
                    self.pacer.start_waits.fetch_add(waits, Ordering::Relaxed);
                    if lost {
                        crate::pacer::count_goal_wait_takeover();
                        self.run_lost_cycle(reason, seen);
                    }
                }
            }
            return;
        }
        self.collect_with(reason, Some(seen + 1), None);
    }

    /// The start hand-off (`pacer.rs`): this allocation gives its CPU to
    /// the collector, so the collector is pinned to it before it is woken
    /// (the OS tends to wake it on the CPU it last ran on, where a worker
    /// runs: that worker then waited for a CPU through the start stop while
    /// this one idled). It restores its affinity after the start stop
    /// (`unpin_collector`).
    fn place_collector_here(&self) {
        if !PLACE_COLLECTOR.load(Ordering::Relaxed) {
            return;
        }
        let mut g = lock(&self.background.0);
        // Only a collector waiting for a request: one in a cycle would run
        // the rest of it pinned (an allocation in `World::blocking` counts
        // as stopped, so it may get here in the middle of a pause).
        if g.tid == 0 || g.gone || g.requested || g.busy || g.saved.is_some() {
            return;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 || cpu as usize >= libc::CPU_SETSIZE as usize {
            return;
        }
        // The collector's mask now (a `taskset` since its start included),
        // restored by `unpin_collector`; no pin without it.
        // SAFETY: zeroed cpu_set_t are valid empty sets; the calls read or
        // write at most their size; CPU_SET writes inside (cpu checked).
        unsafe {
            let mut saved: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(g.tid, std::mem::size_of::<libc::cpu_set_t>(), &mut saved) != 0
                || !libc::CPU_ISSET(cpu as usize, &saved)
            {
                return;
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            if libc::sched_setaffinity(g.tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                g.saved = Some(saved);
                PLACEMENTS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Restores the collector's affinity if the hand-off pinned it
    /// (`place_collector_here`): called by the collector once its start
    /// stop holds the world (the pin has done its job; its pause, and any
    /// thread it starts, must not stay on one CPU), after each cycle, and
    /// by a hand-off whose wait timed out (the allocation goes on, on the
    /// CPU the collector is pinned to). If the saved mask is refused (a
    /// cpuset changed meanwhile), every CPU is asked for, which the kernel
    /// clamps to what the thread may use.
    fn unpin_collector(&self) {
        let mut g = lock(&self.background.0);
        let Some(saved) = g.saved.take() else { return };
        let tid = g.tid;
        drop(g);
        if tid == 0 {
            return;
        }
        // SAFETY: `saved` is a mask read by sched_getaffinity; a set with
        // every bit on is a valid mask; the calls read their size.
        unsafe {
            if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &saved) != 0 {
                let mut all: libc::cpu_set_t = std::mem::zeroed();
                for c in 0..libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(c, &mut all);
                }
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &all);
            }
        }
    }

    /// Ask the background collector for a cycle (starting its thread the
    /// first time). Cheap when a request is already pending. If the thread
    /// cannot be spawned, the collector is gone (allocations collect
    /// themselves, see `BackgroundState::gone`).
    fn request_background_cycle(self: &Arc<Self>) {
        let (m, cv) = &*self.background;
        let mut g = lock(m);
        if g.requested || g.gone {
            return;
        }
        g.requested = true;
        if !g.started {
            g.started = true;
            if let Err(e) = start_background_collector(Arc::downgrade(self), self.bg_hold.clone(), self.background.clone())
            {
                drop(g);
                eprintln!(
                    "usurp gc: the background collector's thread could not be started ({e}); allocations will run \
                     the cycles themselves"
                );
                self.collector_lost(format!("its thread could not be started: {e}"), true);
                return;
            }
        }
        cv.notify_one();
    }

    /// The background collector lost a cycle (`why`), or its thread
    /// (`gone`): counted where the allocations waiting at the goal look
    /// (`goal_wait_stalled`), and those are woken to look now.
    fn collector_lost(&self, why: String, gone: bool) {
        {
            let mut g = lock(&self.background.0);
            g.failures += 1;
            g.last_failure = Some(why);
            if gone {
                g.gone = true;
                g.requested = false;
            }
        }
        let _l = lock(&self.started_cv.0);
        self.started_cv.1.notify_all();
    }

    /// An allocation waiting at the goal re-checked and the cycle has not
    /// started (`pacer.rs`, "Waiting at the goal"): whether it waits in vain
    /// (the collector lost a cycle since the wait began, `failures0`, or its
    /// thread is gone), in which case it runs the cycle itself. Else, with
    /// no request pending, asks the collector again (a request taken and
    /// then abandoned, or declined, is not retried by anyone else).
    fn goal_wait_stalled(self: &Arc<Self>, failures0: u64) -> bool {
        if !crate::pacer::goal_wait_takeover_on() {
            return false; // the negative control: wait as before
        }
        let g = lock(&self.background.0);
        if g.gone || g.failures != failures0 {
            return true;
        }
        let pending = g.requested;
        drop(g);
        if !pending {
            self.request_background_cycle();
        }
        false
    }

    /// The cycle an allocation at the goal waited for was lost by the
    /// background collector: run it here (skipped if one completed since
    /// the allocation began, `seen`). If it fails too, panic naming both
    /// failures: nobody can collect this heap.
    #[cold]
    #[inline(never)]
    fn run_lost_cycle(&self, reason: &'static str, seen: u64) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.collect_with(reason, Some(seen + 1), None);
        }));
        if let Err(p) = r {
            let why = lock(&self.background.0).last_failure.clone().unwrap_or_default();
            panic!(
                "usurp gc: the heap is at its goal and the background collector lost its cycle ({why}); the \
                 allocation that ran the cycle instead failed too: {}",
                panic_message(&*p)
            );
        }
    }

    /// The background collector's cycle (its own thread, not a mutator):
    /// runs one if the pacer still wants it once the collection lock is
    /// held. A panic in it (a root scanner) abandons the cycle as in a
    /// collecting task, and is reported on stderr (there is no caller to
    /// resume it in).
    fn background_cycle(&self) {
        let world = self.world();
        let guard = lock(&self.collect_lock);
        lock(&self.background.0).requested = false;
        if !world.background_collection() {
            // The World declines (a VM turned background collection off
            // after an allocation asked): a cycle lost for the allocations
            // waiting at the goal, which run it themselves.
            if self.over_goal(0) {
                self.collector_lost("the World declined background collection".to_string(), false);
            }
            return;
        }
        if !self.over_goal(0) {
            return; // someone collected meanwhile
        }
        if let Some(d) = crate::pacer::collector_start_delay() {
            std::thread::sleep(d); // test-only: a collector slow to start
        }
        self.finish_sweep();
        let mut outcome = Ok(false);
        with_registers_spilled(&mut |_sp| outcome = self.guarded_cycle(&*world, 0, "goal", None));
        let queued = match outcome {
            Ok(q) => q,
            Err(e) => {
                let (what, msg) = (e.what.describe(), panic_message(&*e.payload));
                eprintln!(
                    "usurp gc: {what} panicked during a background collection ({msg}); the cycle was abandoned \
                     (nothing freed)"
                );
                self.collector_lost(format!("{what} panicked during a background collection: {msg}"), false);
                false
            }
        };
        let dec = self.space.decommit_idle(self.cycle.load(Ordering::Acquire));
        lock(&self.stats).blocks_decommitted += dec as u64;
        drop(guard);
        if self.finalizers_to_run(queued) {
            world.finalizers_pending();
        }
    }

    /// Whether the cycle that just ended (world running, collection lock
    /// released) should call `World::finalizers_pending`: it `queued`
    /// finalizers, or finalizers are pending and no runner has taken one
    /// over the last two intervals between cycles since the previous
    /// call. The latter is a runner stuck in a finalizer that blocks (or
    /// one whose task never started): without a new runner the rest of the
    /// queue would wait for a cycle that queues more. Two intervals, so
    /// that a runner just asked for has a whole interval to start. A
    /// runner that only got slow may thus get company: finalizers may run
    /// concurrently on several tasks.
    fn finalizers_to_run(&self, queued: bool) -> bool {
        let started = self.fin_started.load(Ordering::Relaxed);
        let mut w = lock(&self.fin_watch);
        let idle = started == w.seen;
        w.seen = started;
        if queued || !idle {
            w.idle_cycles = 0;
            return queued;
        }
        if !self.fin_stuck_kick.load(Ordering::Relaxed) || no_preempt(|| lock(&self.pending).is_empty()) {
            w.idle_cycles = 0;
            return false;
        }
        w.idle_cycles += 1;
        if w.idle_cycles < 2 {
            return false;
        }
        w.idle_cycles = 0;
        true
    }

    /// Collect because an allocation found no room, then retry it with
    /// `retry` inside the pause, right after the sweep (before any other
    /// thread can take the freed memory). The collection is skipped if one
    /// numbered `skip_at` or later has completed meanwhile: such a cycle
    /// started after the allocation failed, and the caller retries outside.
    /// Returns `None` if skipped, else whether `retry` succeeded.
    pub(crate) fn collect_and_retry(&self, skip_at: Option<u64>, retry: &mut dyn FnMut() -> bool) -> Option<bool> {
        let mut ok = false;
        let ran = self.collect_with("limit", skip_at, Some(&mut || ok = retry()));
        ran.then_some(ok)
    }

    pub(crate) fn collect(&self, reason: &'static str, skip_at: Option<u64>) {
        self.collect_with(reason, skip_at, None);
    }

    /// Runs a cycle unless one numbered `skip_at` or later has completed by
    /// the time we hold the collection lock; returns whether it ran.
    /// `in_pause` runs after the sweep, with the world still stopped.
    fn collect_with(&self, reason: &'static str, skip_at: Option<u64>, in_pause: Option<&mut dyn FnMut()>) -> bool {
        if IN_PAUSE.with(|c| c.get()) {
            in_pause_panic("a collection (Heap::collect, or an allocation that needs one)");
        }
        let world = self.world();
        let mut guard = self.collect_lock.try_lock().ok();
        if guard.is_none() {
            world.blocking(&mut || guard = Some(lock(&self.collect_lock)));
        }
        if world.single_thread() {
            // A World that stops nothing: only the attached thread (if any)
            // may collect; another thread's collection would not scan it.
            let owner = *lock(&self.solo_owner);
            if owner.is_some_and(|t| t != std::thread::current().id()) {
                drop(guard);
                panic!(
                    "usurp gc: collection from a thread other than the one attached to this heap: its World stops \
                     no thread (SoloWorld: Heap::new), so the attached thread would be neither stopped nor \
                     scanned (collect from the attached thread, or use a Runtime or a ThreadWorld)"
                );
            }
        }
        if let Some(c) = skip_at {
            if self.cycle.load(Ordering::Acquire) >= c {
                return false; // someone else collected meanwhile
            }
        }
        let mut outcome = Ok(false);
        // Sweep termination, with the world running: every block swept
        // since the last mark, so that the mark about to start sees exact
        // object-start bits and writes into a clear mark buffer.
        no_preempt(|| self.finish_sweep());
        // In the pause, this thread neither collects nor allocates (a root
        // scanner or World callback that tries gets a clear panic instead of
        // a deadlock on `collect_lock` or an object the sweep frees at once):
        // the flag makes `collect_with` and `attach_thread` refuse, and the
        // mutator is taken away as in `forbid_allocation` (so the allocation
        // fast path costs nothing more); it is given back only for the
        // allocation retried after the sweep (`in_pause`).
        let pause = PauseFlag::set(self.space.handle_entry());
        let no_alloc = crate::mutator::forbid_allocation(IN_PAUSE_REASON);
        let mine = no_alloc.saved_mutator();
        let mut retry = in_pause.map(|f| {
            move || {
                set_current_mutator(mine);
                f();
                set_current_mutator(std::ptr::null_mut());
            }
        });
        let mut in_pause = retry.as_mut().map(|f| f as &mut dyn FnMut());
        // Nothing may unwind through the spill routine's frame: the cycle
        // catches every panic (see `guarded_cycle`).
        with_registers_spilled(&mut |sp| outcome = self.guarded_cycle(&*world, sp, reason, in_pause.take()));
        drop(no_alloc);
        drop(pause);
        let queued_finalizers = match outcome {
            Ok(q) => q,
            Err(e) => {
                drop(guard);
                e.resume();
            }
        };
        if self.config.check_refs {
            // checkrefs (a debug mode): the collection returns with every
            // dead object quarantined, as an eager sweep would leave it, so
            // that a stale access right after it is reported with its
            // object's descriptor (a dead object in a block not swept yet
            // is only "not a live object").
            no_preempt(|| self.finish_sweep());
        }
        let cycle = self.cycle.load(Ordering::Acquire);
        let dec = self.space.decommit_idle(cycle);
        lock(&self.stats).blocks_decommitted += dec as u64;
        drop(guard);
        if self.finalizers_to_run(queued_finalizers) {
            world.finalizers_pending();
        }
        true
    }

    /// Runs one cycle, catching a panic anywhere in it (a root scanner, a
    /// poisoned lock, the World): a panic while stopping leaves nothing to
    /// undo; one before the sweep is undone (mark bits cleared: nothing was
    /// freed) and the world restarted, and the caller then panics with a
    /// message naming what panicked; one during the sweep or the restart
    /// leaves the heap or the world in an unknown state: the process aborts
    /// with a message. Never unwinds.
    fn guarded_cycle(
        &self,
        world: &dyn World,
        sp: usize,
        reason: &'static str,
        in_pause: Option<&mut dyn FnMut()>,
    ) -> Result<bool, PausePanic> {
        let phase = std::cell::Cell::new(Phase::Stopping);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.cycle_body(world, sp, reason, &phase, in_pause)
        }));
        let payload = match r {
            Ok(q) => return Ok(q),
            Err(p) => p,
        };
        let what = phase.get();
        match what {
            Phase::Stopping | Phase::VerifyStopping => Err(PausePanic { what, payload, restarted: false }),
            Phase::Sweeping
            | Phase::AllocInPause
            | Phase::Restarting
            | Phase::VerifyRestarting
            | Phase::ConcurrentMarking
            | Phase::TerminationStopping => pause_abort(what.describe(), &payload),
            Phase::Verifying => {
                // The cycle completed; only the verifier's stop is undone.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.restart_world(world))).is_err() {
                    pause_abort("restarting the world after a panic in the heap verifier", &payload);
                }
                Err(PausePanic { what, payload, restarted: true })
            }
            _ => {
                // Nothing was freed or published yet: forget the marks (a
                // later cycle assumes clear mark bits) and let everyone go.
                // A concurrent mark's barrier and black allocation are
                // turned off first (the world is stopped: nobody shades).
                if self.alloc_black.load(Ordering::Relaxed) {
                    self.end_marking();
                    self.release_caches();
                }
                self.clear_marks();
                // Threads outside the World waiting to shade may go on
                // (marking is off now: they shade nothing).
                space_gate(self).open_gate();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.restart_world(world))).is_err() {
                    pause_abort("restarting the world after a panic in the pause", &payload);
                }
                Err(PausePanic { what, payload, restarted: true })
            }
        }
    }

    /// Clears every mark bit (a cycle abandoned before its sweep).
    fn clear_marks(&self) {
        let buf = ((self.space.gen.load(Ordering::Relaxed) + 1) % 2) as usize;
        for b in 0..self.space.high_water() {
            let m = self.space.meta(b);
            match self.space.kind(b).0 {
                KIND_SMALL | KIND_LARGE_HEAD => {
                    for w in m.marks[buf].iter() {
                        w.store(0, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
    }

    /// One cycle: the start stop, concurrent marking with the world running,
    /// the termination stop (retried while much is left to mark), then lazy
    /// sweeping. With `HeapConfig::stw_marking` the whole mark runs in one
    /// stop (the old collector). Returns whether finalizers were queued.
    /// `phase` tells [`HeapInner::guarded_cycle`] where a panic came from.
    fn cycle_body(
        &self,
        world: &dyn World,
        sp: usize,
        reason: &'static str,
        phase: &std::cell::Cell<Phase>,
        in_pause: Option<&mut dyn FnMut()>,
    ) -> bool {
        // This cycle runs on the heap's background collector thread.
        let background = BACKGROUND_THREAD.with(|b| b.get());
        let t0 = Instant::now();
        phase.set(Phase::Stopping);
        self.stop_world(world);
        if background {
            // The start hand-off's pin has done its job (`pacer.rs`,
            // "Placement"): the pause, and the threads it may start, must
            // not stay on one CPU.
            self.unpin_collector();
        }
        // Threads the World does not stop shade only outside the stops in
        // which the collector marks (`refcheck::shading_section`).
        space_gate(self).close_gate();
        phase.set(Phase::ConservativeRoots);
        let t_stopped = Instant::now();
        // Who held up the cycle's longest stop to wait for (issue 9 item
        // 8): the start stop's holder, replaced by a termination stop's if
        // that one waited longer.
        let mut ttsp_holdup = world.last_stop_holdup();
        let mut holdup_wait = t_stopped - t0;
        let cycle = self.cycle.load(Ordering::Relaxed) + 1;
        self.started.store(cycle, Ordering::Release);
        {
            // Wake the start hand-off's waiters (they return to their
            // worker once the world runs again: `World::blocking`).
            let _l = lock(&self.started_cv.0);
            self.started_cv.1.notify_all();
        }
        let heap_before = self.live.load(Ordering::Relaxed) + self.allocated.load(Ordering::Relaxed);
        let mark_goal = self.goal.load(Ordering::Relaxed);
        let start_waits = self.pacer.start_waits.swap(0, Ordering::Relaxed);
        // A collection at the hard limit ("limit": an allocation failed
        // after the pacer's cycles) marks with the world stopped: during a
        // concurrent mark the other tasks' allocations are black and
        // survive it (floating garbage), so a heap at its limit could fail
        // an allocation whose working set fits (issue 10 item 7:
        // tests/gc_pause.rs racing_tasks_near_the_limit_never_fail_spuriously,
        // which failed under qemu with the concurrent mark here).
        let concurrent = !self.config.stw_marking && reason != "limit";
        // Concurrent marking leaves the other workers to the tasks: half of
        // the World's parallelism by default (Go dedicates a quarter).
        let workers = self
            .config
            .mark_workers
            .unwrap_or_else(|| if concurrent { world.parallelism().div_ceil(2) } else { world.parallelism() })
            .max(1);
        let counters = MarkCounters::default();
        let space = &self.space;
        if concurrent {
            self.begin_marking();
            // The pacer: this mark's figures, and how late the start stop
            // came after the trigger (corrects the next trigger).
            self.pacer.begin(heap_before, self.live.load(Ordering::Relaxed));
            let lag = heap_before.saturating_sub(self.pacer.trigger.load(Ordering::Relaxed));
            self.pacer.start_lag.store(if reason == "goal" { lag } else { 0 }, Ordering::Relaxed);
        }
        let allocated_at_start = self.allocated.load(Ordering::Relaxed);

        // Roots. The coordinator marks alone in the stops (nobody else
        // sets mark bits then: the world is stopped, markers have returned).
        let mut m = Marker::new(space, &counters);
        m.exclusive = true;
        let mut words = 0;
        let (lo, hi) = world.current_stack_bounds();
        // (sp 0: the heap's background collector, whose stack holds no
        // object a task needs and whose stale slots would only retain garbage.)
        if sp != 0 && lo <= sp && sp < hi {
            words += m.scan_range(sp, hi);
        }
        // Per-task stack scanning (issue 9 item 2): with a World that scans
        // its tasks' stacks one at a time after the restart, this stop
        // reports only the other ranges (no stop scans every stack).
        let stacks_later = concurrent && world.begin_concurrent_stack_scan();
        world.for_each_conservative_range(&mut |lo, hi| words += m.scan_range(lo, hi));
        phase.set(Phase::Marking);
        // Read once per cycle (a test switch): the table is scanned in
        // exactly one of the two places.
        let table_later = concurrent && ROOT_TABLE_CONCURRENT.load(Ordering::Relaxed);
        words += self.mark_precise_roots(&mut m, phase, !table_later);
        if !concurrent {
            // The stop-the-world mark visits the finalizer records in its stop.
            words += self.scan_finalizer_records(&mut m);
        }
        // Every block is swept for the last mark: no finalizer is queued
        // until this mark's generation is published.
        let fin_queued_before = self.fin_queued.load(Ordering::Relaxed);
        let t_roots = Instant::now();

        let mut stops = Vec::new();
        let mut ttsp = t_stopped - t0;
        let (mut concurrent_mark, mut term_mark) = (Duration::ZERO, Duration::ZERO);
        let (mut stack_scan, mut stacks_scanned) = (Duration::ZERO, 0usize);
        let mut t_term = t_roots;
        let mut last_stop_start = t0;
        let mut marking = BackgroundMarking(None);
        if concurrent {
            // Restart the world; mark while tasks run (the collecting task
            // counts as stopped meanwhile: `World::blocking`).
            phase.set(Phase::Restarting);
            space_gate(self).open_gate();
            // A stop ends when the restart is issued (see `STOP_END`).
            let t_started = Instant::now();
            stops.push(t_started - t0);
            self.restart_world(world);
            if background {
                // The World may take a thread of its own off the CPU while
                // this one marks (`World::background_marking`); ended by
                // the guard's drop after the last stop, or if the cycle
                // unwinds (`guarded_cycle` undoes it and the collector
                // lives on: the World must not stay lent).
                world.background_marking(true);
                marking.0 = Some(world);
            }
            let mut stack = std::mem::take(&mut m.stack);
            if stacks_later {
                // The tasks' stacks, one at a time, with the world running:
                // ask the World for what it can claim now, mark from what
                // it found while the rest comes free, until every task of
                // this cycle is scanned (by us, or by whoever resumed it).
                let s0 = Instant::now();
                phase.set(Phase::ConcurrentMarking);
                world.blocking(&mut || {
                    never_unwind("scanning task stacks", || {
                        let mut sm = Marker::new(space, &counters);
                        let mut spins = 0u32;
                        loop {
                            let done = world.scan_task_stacks(&mut |lo, hi| {
                                words += sm.scan_range(lo, hi);
                                stacks_scanned += 1;
                            });
                            if done {
                                break;
                            }
                            // Mark meanwhile (bounded, so the next pass comes
                            // soon); with nothing to mark, wait a little for
                            // the tasks being scanned by their resumers.
                            if sm.drain_budget(crate::pacer::SLICE) {
                                spins += 1;
                                if spins < 64 {
                                    std::thread::yield_now();
                                } else {
                                    std::thread::sleep(Duration::from_micros(50));
                                }
                            }
                        }
                        stack.append(&mut sm.stack);
                        sm.flush();
                    })
                });
                stack_scan = s0.elapsed();
                concurrent_mark += stack_scan;
            }
            // The finalizer records, the `Root` table and `RootedVec`s, and
            // the World's deferred ranges, with the world running (no stop
            // of this cycle visits them).
            let c0 = Instant::now();
            phase.set(Phase::ConcurrentMarking);
            world.blocking(&mut || {
                never_unwind("scanning finalizer records", || {
                    let mut fm = Marker::new(space, &counters);
                    if table_later {
                        self.scan_root_table(&mut fm);
                    }
                    if stacks_later {
                        world.for_each_deferred_range(&mut |lo, hi| words += fm.scan_range(lo, hi));
                    }
                    words += self.scan_finalizer_records(&mut fm);
                    stack.append(&mut fm.stack);
                    fm.flush();
                })
            });
            concurrent_mark += c0.elapsed();
            let mut rounds = 0;
            loop {
                rounds += 1;
                let c0 = Instant::now();
                phase.set(Phase::ConcurrentMarking);
                world.blocking(&mut || {
                    never_unwind("concurrent marking", || self.mark_concurrently(&mut stack, &counters, workers))
                });
                concurrent_mark += c0.elapsed();
                // Termination: with the world stopped, drain what the
                // barrier shaded meanwhile; if much is left, let the world
                // run again and mark concurrently once more (as Go does),
                // up to a few rounds, then finish in the stop.
                let s0 = Instant::now();
                last_stop_start = s0;
                phase.set(Phase::TerminationStopping);
                self.stop_world(world);
                // From here to the generation flip (or this round's
                // restart) nobody else shades: the drain below is the last
                // word on what the mutators shaded.
                space_gate(self).close_gate();
                phase.set(Phase::Marking);
                t_term = Instant::now();
                ttsp += t_term - s0;
                if t_term - s0 > holdup_wait || ttsp_holdup.is_none() {
                    if let Some(h) = world.last_stop_holdup() {
                        holdup_wait = t_term - s0;
                        ttsp_holdup = Some(format!("{h} (termination stop)"));
                    }
                }
                m.stack = std::mem::take(&mut stack);
                m.stack.extend(lock(&space.mark.grey).drain(..));
                let done = if rounds >= TERMINATION_ROUNDS {
                    m.drain_local();
                    true
                } else {
                    m.drain_budget(TERMINATION_BUDGET)
                };
                if done {
                    break;
                }
                stack = std::mem::take(&mut m.stack);
                term_mark += t_term.elapsed();
                phase.set(Phase::Restarting);
                space_gate(self).open_gate();
                stops.push(s0.elapsed()); // (ends at the restart's issue)
                self.restart_world(world);
            }
        } else if workers <= 1 || m.stack.len() < 2 {
            m.drain_local();
        } else {
            // Transitive closure in the stop, in parallel (stw_marking).
            let stack = std::mem::take(&mut m.stack);
            let per = stack.len().div_ceil(workers);
            let chunks: Vec<Vec<usize>> = stack.chunks(per).map(|c| c.to_vec()).collect();
            let pool = WorkPool::new(chunks);
            world.run_parallel(workers, &|_| {
                never_unwind("a GC marking job", || {
                    if FAIL_MARKING_JOB.load(Ordering::Relaxed) && FAIL_MARKING_JOB.swap(false, Ordering::Relaxed) {
                        panic!("injected marking-job failure (usurp_gc::fail_next_marking_job)");
                    }
                    Marker::new(space, &counters).drain_shared(&pool)
                })
            });
        }

        // Mark termination (world stopped): weak references (finalizable
        // objects found dead are queued by their blocks' sweeps).
        let weak_cleared = self.mark_termination();
        m.flush();
        let t_marked = Instant::now();
        term_mark += t_marked - t_term;

        // Checkrefs: free the oldest quarantined objects for real (their
        // start bits cleared: the lazy sweep then frees the slots). Every
        // block is swept for the previous mark here, so nobody sweeps
        // concurrently.
        if self.config.check_refs {
            let budget = if reason == "limit" { 0 } else { space.nblocks * BLOCK_SIZE / 4 };
            lock(&self.quarantine).evict(budget, |a| self.unquarantine(a));
        }

        phase.set(Phase::Sweeping);
        let (mut assist, mut assist_calls, mut assist_marked, mut heap_peak) = (Duration::ZERO, 0, 0, 0);
        let mut assist_waits = 0;
        if concurrent {
            // What the assists marked (world stopped: none in flight).
            let (p, a) = (&self.pacer, &self.pacer.assist_counters);
            assist_marked = a.live_bytes.load(Ordering::Relaxed);
            counters.live_bytes.fetch_add(assist_marked, Ordering::Relaxed);
            counters.live_objects.fetch_add(a.live_objects.load(Ordering::Relaxed), Ordering::Relaxed);
            counters.bad_pointers.fetch_add(a.bad_pointers.load(Ordering::Relaxed), Ordering::Relaxed);
            counters.bad_values.fetch_add(a.bad_values.load(Ordering::Relaxed), Ordering::Relaxed);
            let first = *lock(&a.first_bad);
            if let Some(b) = first {
                lock(&counters.first_bad).get_or_insert(b);
            }
            assist = Duration::from_nanos(p.assist_ns.load(Ordering::Relaxed));
            assist_calls = p.assist_calls.load(Ordering::Relaxed);
            assist_waits = p.assist_waits.load(Ordering::Relaxed);
            heap_peak = p
                .peak_during_mark
                .load(Ordering::Relaxed)
                .max(self.live.load(Ordering::Relaxed) + self.allocated.load(Ordering::Relaxed));
        }
        let mut live = counters.live_bytes.load(Ordering::Relaxed);
        if concurrent {
            // Objects the mutators shaded are live too. Objects allocated
            // black during the mark are not in `live` (the next mark's
            // work: most are garbage by then in allocation-heavy
            // programs); the goal counts them (see below).
            live += space.mark.shaded_bytes.load(Ordering::Relaxed);
            self.end_marking();
        }
        // Memory handed out during the mark (allocated black, surviving
        // this cycle: the heap the sweep leaves is `live + black`) counts
        // as allocated since the mark, and as marked for the next goal, as
        // in Go (`pacer.rs`, "Goal").
        let black = if concurrent { self.allocated.load(Ordering::Relaxed).saturating_sub(allocated_at_start) } else { 0 };
        let goal = self.sweep_start(cycle, reason, live, black);
        // Marking is off and the new generation published: shaders that
        // waited re-evaluate against them.
        space_gate(self).open_gate();
        let t_swept = Instant::now();
        if let Some(f) = in_pause {
            // The allocation that asked for this cycle, before anyone else
            // can take what the sweep freed (issue 10 item 7).
            phase.set(Phase::AllocInPause);
            f();
        }
        phase.set(Phase::Restarting);
        // STOP_END: a stop's figure ends when the collector issues the
        // restart, as Go's gctrace figures do (its restart's time is read
        // before it wakes other threads). The restart itself clears the
        // stop flag within a microsecond, but the futex wake that follows
        // lets the woken workers take the CPU from the collector's thread:
        // on a 2-core machine the call then returned 1-5 ms later while the
        // tasks already ran (measured on binary-trees 18), which the stop
        // figures used to count as stopped time.
        let t_end = Instant::now();
        stops.push(t_end - last_stop_start);
        self.restart_world(world);
        drop(marking);
        self.wake_sweeper(cycle);
        // The blocks with finalizer records swept now (world running), so
        // that this cycle's dead finalizable objects are queued when it
        // returns.
        phase.set(Phase::Sweeping);
        no_preempt(|| self.sweep_finalizer_blocks());
        let queued = self.fin_queued.load(Ordering::Relaxed) - fin_queued_before;
        phase.set(Phase::Done);

        // The verifier (gcverify) in a stop of its own, reported apart from
        // the cycle's pause: it checks the heap (every live
        // object's pointer fields hold null or a published object), which
        // is what the mark-time check implied, so a lost object shows up as
        // a pointer to a freed slot.
        let (mut verify, mut verify_pause, mut verify_failures) = (Default::default(), Default::default(), 0);
        if self.config.verify {
            let v0 = Instant::now();
            phase.set(Phase::VerifyStopping);
            self.stop_world(world);
            phase.set(Phase::Verifying);
            let v1 = Instant::now();
            verify_failures = crate::verify::verify(space, world);
            verify = v1.elapsed();
            phase.set(Phase::VerifyRestarting);
            verify_pause = v0.elapsed(); // (ends at the restart's issue)
            self.restart_world(world);
            phase.set(Phase::Done);
        }

        let c = CycleStats {
            cycle,
            heap_before,
            heap_after: live,
            heap_goal: goal,
            time_to_safepoint: ttsp,
            ttsp_holdup,
            pause: stops.iter().sum(),
            root_scan: t_roots - t_stopped,
            mark: if concurrent { term_mark } else { t_marked - t_roots },
            sweep: t_swept - t_marked,
            concurrent_mark,
            stack_scan,
            stacks_scanned,
            assist,
            assist_calls,
            assist_waits,
            start_waits,
            assist_marked,
            allocated_during_mark: black,
            heap_peak,
            mark_goal,
            stops,
            verify,
            verify_pause,
            workers,
            conservative_words: words,
            live_objects: counters.live_objects.load(Ordering::Relaxed),
            reason,
            // With the resumer-side stack scans' (no shading is left after
            // the termination stop turned marking off).
            bad_pointers: counters.bad_pointers.load(Ordering::Relaxed)
                + self.space.mark.shaded_bad_pointers.load(Ordering::Relaxed),
            bad_values: counters.bad_values.load(Ordering::Relaxed),
            first_bad: *lock(&counters.first_bad),
        };
        {
            let mut s = lock(&self.stats);
            s.record(&c);
            s.verify_failures += verify_failures as u64;
            s.weak_cleared += weak_cleared;
        }
        if self.config.trace {
            eprintln!("{}", trace_line(&c, t0 - self.start, self.config.verify));
        }
        queued > 0
    }

    /// Start stop: turn the barrier and black allocation on. Every
    /// mutator's cached blocks are given back (listed if they have room),
    /// so that the blocks taken from now on allocate black.
    fn begin_marking(&self) {
        self.space.mark.shaded_bytes.store(0, Ordering::Relaxed);
        self.space.mark.shaded_bad_pointers.store(0, Ordering::Relaxed);
        lock(&self.space.mark.grey).clear();
        self.space.mark.marking.store(true, Ordering::Release);
        crate::barrier::MARKING.fetch_add(1, Ordering::SeqCst);
        crate::barrier::NEW_OBJECT_WORK.fetch_add(1, Ordering::SeqCst);
        self.alloc_black.store(true, Ordering::Release);
        for &m in lock(&self.mutators).iter() {
            // SAFETY: registered mutators are alive (the guard's drop
            // removes them under `collect_lock`, which we hold) and their
            // threads are stopped at a safe point, outside allocation (the
            // World's contract), so nothing else touches them now.
            unsafe { (*(m as *mut Mutator)).release_all() };
        }
    }

    /// Termination stop: the barrier and black allocation off (the caller
    /// then flushes the caches, which still point at the mark buffer).
    fn end_marking(&self) {
        if self.space.mark.marking.swap(false, Ordering::AcqRel) {
            crate::barrier::MARKING.fetch_sub(1, Ordering::SeqCst);
            crate::barrier::NEW_OBJECT_WORK.fetch_sub(1, Ordering::SeqCst);
        }
        self.alloc_black.store(false, Ordering::Release);
        lock(&self.space.mark.grey).clear();
        // Assists waiting for mark work at the goal leave (they return to
        // their worker once the world runs again).
        self.pacer.wake_assist_waiters(true);
    }

    /// The mutators' caches after an abandoned concurrent mark (world
    /// stopped): given back, so that no cache keeps allocating black.
    fn release_caches(&self) {
        for &m in lock(&self.mutators).iter() {
            // SAFETY: as in `begin_marking`.
            unsafe { (*(m as *mut Mutator)).release_all() };
        }
    }

    /// The mark buffer a block taken by allocation now must mark new
    /// objects in (allocate black), or null outside a concurrent mark.
    pub(crate) fn black_buffer(&self, m: &crate::block::BlockMeta) -> *const AtomicU64 {
        if self.alloc_black.load(Ordering::Acquire) && BLACK_ALLOCATION.load(Ordering::Relaxed) {
            m.marks[((self.space.gen.load(Ordering::Acquire) + 1) % 2) as usize].as_ptr()
        } else {
            std::ptr::null()
        }
    }

    /// Precise roots, root scanners and finalizer closures (world
    /// stopped). The `Root` table only if `root_table`: a concurrent cycle
    /// scans it with the world running (`scan_root_table`). Returns the
    /// conservative words scanned.
    fn mark_precise_roots(&self, m: &mut Marker<'_>, phase: &std::cell::Cell<Phase>, root_table: bool) -> usize {
        let mut words = 0;
        if root_table {
            self.roots.for_each(|s| m.mark_precise(s.load(Ordering::Acquire)));
            self.rooted_vecs.for_each(|v| m.mark_precise(v));
            ROOTS_VISITED_IN_STOPS.fetch_add(1, Ordering::Relaxed);
        }
        phase.set(Phase::RootScanner);
        // The scanners are cloned out: a panicking scanner must not poison
        // (or hold) the list's lock.
        let scanners: Vec<Arc<RootScanner>> = lock(&self.scanners).iter().map(|(_, s)| s.clone()).collect();
        for s in scanners {
            s(&mut |r| m.mark_precise(r.addr()));
        }
        phase.set(Phase::Marking);
        // Pending finalizers (objects found dead, waiting to be finalized)
        // are roots, with their closures scanned conservatively: what they
        // capture stays alive until they have run. (They are scanned here,
        // not concurrently: `run_pending_finalizers` takes them off the
        // queue without a barrier. Their number is what died with a
        // finalizer since the last `run_pending_finalizers`, not what is
        // registered.) The registered finalizers' closures and referents
        // are scanned by `scan_finalizer_records`, outside the stops.
        for (obj, f) in lock(&self.pending).iter() {
            m.mark_precise(*obj);
            let (lo, hi) = finalizer_range(f);
            words += m.scan_range(lo, hi);
        }
        words
    }

    /// The `Root` table's and the `RootedVec`s' part of a concurrent
    /// cycle, with the world running, before its first concurrent drain
    /// (see `roots.rs` for why no stop needs them).
    fn scan_root_table(&self, m: &mut Marker<'_>) {
        self.roots.scan_concurrently(|v| m.mark_precise(v));
        self.rooted_vecs.scan_concurrently(|v| m.mark_precise(v));
    }

    /// Concurrent marking, world running, on the collecting thread and
    /// `workers - 1` marker threads of this heap (scoped to the call):
    /// drains `stack` and what the barrier shades meanwhile, until both are
    /// empty. The termination stop drains what is shaded after that.
    fn mark_concurrently(&self, stack: &mut Vec<usize>, counters: &MarkCounters, workers: usize) {
        let space = &self.space;
        let p = &self.pacer;
        loop {
            let mut work = std::mem::take(stack);
            work.extend(lock(&space.mark.grey).drain(..));
            if work.is_empty() {
                if p.assists_busy.load(Ordering::Acquire) == 0 {
                    return;
                }
                // An assist holds grey objects: it gives back what it does
                // not scan within one bounded call.
                std::thread::yield_now();
                continue;
            }
            if workers <= 1 || work.len() < 2 {
                never_unwind("a GC marking job", || {
                    if FAIL_MARKING_JOB.load(Ordering::Relaxed) && FAIL_MARKING_JOB.swap(false, Ordering::Relaxed) {
                        panic!("injected marking-job failure (usurp_gc::fail_next_marking_job)");
                    }
                    let mut m = Marker::new(space, counters);
                    m.stack = work;
                    // In slices: publish progress for the assists' ratio,
                    // and donate half of the stack to the grey list when an
                    // assist found nothing to do (see `pacer.rs`).
                    let delay = crate::pacer::mark_delay();
                    while !m.drain_budget(crate::pacer::SLICE) {
                        self.concurrent_mark_tick(&mut m, delay);
                    }
                    m.flush();
                    p.collector_marked.fetch_max(counters.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                });
            } else {
                let per = work.len().div_ceil(workers);
                let pool = WorkPool::new(work.chunks(per).map(|c| c.to_vec()).collect());
                std::thread::scope(|s| {
                    // Every marker paces itself as the single one does:
                    // progress for the assists' ratio, donation when an
                    // assist found the grey list empty, the test delay.
                    let delay = crate::pacer::mark_delay();
                    let slice = crate::pacer::SLICE;
                    for _ in 1..workers {
                        let pool = &pool;
                        let _ = std::thread::Builder::new().name("usurp-gc-marker".into()).spawn_scoped(s, move || {
                            never_unwind("a GC marking job", || {
                                let mut m = Marker::new(space, counters);
                                m.drain_shared_paced(pool, slice, |m| self.concurrent_mark_tick(m, delay));
                                p.collector_marked.fetch_max(counters.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                            })
                        });
                    }
                    never_unwind("a GC marking job", || {
                        if FAIL_MARKING_JOB.load(Ordering::Relaxed) && FAIL_MARKING_JOB.swap(false, Ordering::Relaxed) {
                            panic!("injected marking-job failure (usurp_gc::fail_next_marking_job)");
                        }
                        let mut m = Marker::new(space, counters);
                        m.drain_shared_paced(&pool, slice, |m| self.concurrent_mark_tick(m, delay));
                        p.collector_marked.fetch_max(counters.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                    });
                });
            }
        }
    }

    /// A concurrent marker's pacing step, every [`crate::pacer::SLICE`]
    /// objects (the single marker and each parallel one): publish what it
    /// marked (`collector_marked`, the assists' ratio), donate the bottom
    /// half of its stack to the grey list when an assist found it empty
    /// (`assist_wanted`; the donated entries are drained by an assist or by
    /// the next round of `mark_concurrently`), and apply the test-only
    /// mark delay.
    fn concurrent_mark_tick(&self, m: &mut Marker<'_>, delay: Option<std::time::Duration>) {
        let p = &self.pacer;
        m.flush();
        p.collector_marked.fetch_max(m.counters.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        if p.assist_wanted.load(Ordering::Relaxed) && m.stack.len() >= 2 && p.assist_wanted.swap(false, Ordering::Relaxed) {
            let top = m.stack.split_off(m.stack.len() / 2);
            let bottom = std::mem::replace(&mut m.stack, top);
            lock(&self.space.mark.grey).extend(bottom);
            p.wake_assist_waiters(false);
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
    }

    /// The registered finalizer records, every mark (Go's `markrootSpans`):
    /// each closure's captured values are scanned conservatively (what a
    /// finalizer captures stays alive until it has run: Go's rule, so a
    /// closure that reaches its own object keeps it alive forever; see
    /// `Heap::set_finalizer`), and each finalizable object's *referents*
    /// are marked, not the object itself. So when the mark ends, an
    /// unmarked finalizable object is unreachable, and everything it
    /// references is marked: its sweep queues its finalizer and keeps the
    /// object (`queue_dead_finalizable`) without marking anything more.
    /// Consequences (Go's): if `a` references `b` and both have finalizers,
    /// `b` is marked while `a` awaits finalization, so `a`'s finalizer runs
    /// first and `b` is found dead at the earliest by the cycle after it
    /// ran; a cycle of finalizable objects (or one that references itself)
    /// is never found dead and never finalized, it leaks.
    ///
    /// A concurrent cycle calls this with the world running, before its
    /// first concurrent drain: records registered after it passed their
    /// block are on objects `set_finalizer` shaded. The stop-the-world mark
    /// calls it in its stop. Records visited while the world is stopped
    /// (`world_stopped`) are counted in `fin_visited_in_stops`. The table
    /// is locked one block at a time (registration on other blocks goes on
    /// meanwhile).
    fn scan_finalizer_records(&self, m: &mut Marker<'_>) -> usize {
        let referents = self.fin_referents.load(Ordering::Relaxed);
        let blocks: Vec<u32> = no_preempt(|| lock(&self.finalizers).by_block.keys().copied().collect());
        let (mut words, mut visited) = (0, 0);
        for b in blocks {
            no_preempt(|| {
                let t = lock(&self.finalizers);
                let Some(recs) = t.by_block.get(&b) else { return };
                for (obj, f) in recs {
                    visited += 1;
                    let (lo, hi) = finalizer_range(f);
                    words += m.scan_range(lo, hi);
                    if referents {
                        // SAFETY: a registered record's object is allocated
                        // until a sweep queues the record (see
                        // `FinalizerTable`); no sweep runs during a mark.
                        unsafe { m.scan_children(*obj) };
                    }
                }
            });
        }
        if self.world_stopped.load(Ordering::Relaxed) {
            self.fin_visited_in_stops.fetch_add(visited, Ordering::Relaxed);
        }
        words
    }

    /// The sweep of block `b` (claimed, for the mark whose bits are in
    /// `buf`), before it reads the marks: each registered finalizable
    /// object of `b` found dead (allocated, unmarked) has its records moved
    /// to the pending queue and is marked, so that this sweep keeps it
    /// (Go's sweep of a span's finalizer specials). What it references was
    /// marked by `scan_finalizer_records`. The object stays unmarked, and
    /// so not live for lookups, from the end of the mark to this sweep:
    /// nobody references it.
    fn queue_dead_finalizable(&self, b: usize, buf: usize) {
        let bit = 1u64 << (b % 64);
        if self.fin_blocks[b / 64].load(Ordering::Relaxed) & bit == 0 {
            return;
        }
        let m = self.space.meta(b);
        let mut t = lock(&self.finalizers);
        let Some(recs) = t.by_block.get_mut(&(b as u32)) else { return };
        let base = self.space.block_start(b);
        let (kind, sc) = self.space.kind(b);
        let size = if kind == KIND_SMALL { CLASS_SIZES[split_span_class(sc).0] } else { BLOCK_SIZE };
        let visited = recs.len();
        let mut moved = Vec::new();
        let mut i = 0;
        while i < recs.len() {
            let slot = if kind == KIND_SMALL { (recs[i].0 - base) / size } else { 0 };
            if m.is_allocated(slot) && !m.is_marked(buf, slot) {
                moved.push(recs.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Kept by this sweep (marked before it reads the marks).
        for (obj, _) in &moved {
            let slot = if kind == KIND_SMALL { (obj - base) / size } else { 0 };
            m.try_mark(buf, slot);
        }
        if recs.is_empty() {
            t.by_block.remove(&(b as u32));
            self.fin_blocks[b / 64].fetch_and(!bit, Ordering::Relaxed);
        }
        t.len -= moved.len();
        if self.world_stopped.load(Ordering::Relaxed) {
            self.fin_visited_in_stops.fetch_add(visited as u64, Ordering::Relaxed);
        }
        if !moved.is_empty() {
            self.fin_queued.fetch_add(moved.len() as u64, Ordering::Relaxed);
            lock(&self.pending).extend(moved);
        }
    }

    /// After a mark (world running): sweeps every block with finalizer
    /// records now, so that the finalizers of the objects this mark found
    /// dead are queued when the cycle returns (`Heap::collect` then
    /// `run_pending_finalizers` runs them, and the World is told). Visits
    /// the blocks with records only, and waits only for those: a record
    /// block another sweeper claimed is waited for until that block is
    /// swept for this generation (its queueing included); sweeps of blocks
    /// without records (the background sweeper's whole lazy sweep) are not
    /// waited for, so a cycle with no record block waits for nothing.
    /// Returns the record blocks it waited for (stats).
    fn sweep_finalizer_blocks(&self) -> u64 {
        let hwm = self.space.high_water();
        let gen = self.space.gen.load(Ordering::Acquire);
        let mut waited = 0;
        for (wi, w) in self.fin_blocks.iter().enumerate() {
            if wi * 64 >= hwm {
                break;
            }
            let mut bits = w.load(Ordering::Relaxed);
            while bits != 0 {
                let b = wi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if self.sweep_block(b, Sweeper::Finalizers) != Swept::No {
                    continue;
                }
                // Already swept, not a block in use, or claimed by another
                // sweeper (`2 * gen + 1`, until its `swept` store, which
                // comes after its queueing): wait for that one.
                let m = self.space.meta(b);
                if m.swept.load(Ordering::Acquire) == 2 * gen + 1 {
                    waited += 1;
                    while m.swept.load(Ordering::Acquire) == 2 * gen + 1 {
                        std::thread::yield_now();
                    }
                }
            }
        }
        // A sweeper that cleared a block's bit before the loop above read
        // it did so holding `finalizers`, and queues that block's records
        // before releasing it: taking the lock once orders this return
        // after its queueing (a bit read as clear was cleared by a critical
        // section that precedes ours).
        drop(lock(&self.finalizers));
        self.fin_waited.fetch_add(waited, Ordering::Relaxed);
        waited
    }

    /// Mark termination (world stopped, marking done): clears weak
    /// references to unmarked objects (Go's weak pointers likewise: cleared
    /// as soon as the collector finds their target unreachable, before a
    /// finalizer can make it reachable again; so a weak reference to a
    /// finalizable object is cleared in the cycle that finds it dead, and
    /// stays cleared if the finalizer resurrects it, while one to an object
    /// only a pending finalizable object references, which the mark kept
    /// (`scan_finalizer_records`), is not). Unreachable finalizable objects
    /// are found by the sweep, not here. Returns the weak references
    /// cleared.
    fn mark_termination(&self) -> u64 {
        // Weak references: cleared if their target was not reached from
        // roots. A cleared one (0) never names an object again (`WeakRef`
        // has no setter): it leaves the table, so that later stops do not
        // walk it (new-user probe 112: 1M cleared weak references cost
        // every termination stop 1.7-1.9 ms while their handles lived).
        let mut weak_cleared = 0;
        self.weaks.retain(|s| {
            let v = s.load(Ordering::Acquire);
            if v != 0 && !self.is_marked(v) {
                s.store(0, Ordering::Release);
                weak_cleared += 1;
                return false;
            }
            v != 0
        });
        weak_cleared
    }

    /// Sweep start (lazy sweeping, world stopped): no sweep here. Every
    /// mutator's cached blocks are taken away (nobody may allocate in a
    /// block before it is swept), the partial lists emptied (their blocks
    /// are unswept now), then the new mark generation published: from then
    /// on lookups see `alloc & mark` in unswept blocks, and sweepers may
    /// claim them. Sets the pacer's figures (`live` marked bytes; `black`
    /// bytes handed out during a concurrent mark start the next cycle's
    /// allocation count and, as in Go, count as marked for the goal and the
    /// trigger: `pacer.rs`, "Goal"); returns the new goal.
    fn sweep_start(&self, cycle: u64, reason: &'static str, live: usize, black: usize) -> usize {
        let space = &self.space;
        for &m in lock(&self.mutators).iter() {
            // SAFETY: as in `begin_marking`.
            unsafe { (*(m as *mut Mutator)).flush_caches() };
        }
        for p in self.partial.iter() {
            lock(p).clear();
        }
        for p in lock(&self.typed_partial).iter_mut() {
            p.clear();
        }
        self.quarantining.store(self.config.check_refs && reason != "limit", Ordering::Relaxed);
        self.space.gen.store(cycle, Ordering::Release);
        self.sweep_cursor.store(0, Ordering::Release);

        // checkrefs: quarantined objects still occupy their slots: they
        // count as allocated (not live) memory, and the goal grows by as
        // much, so that checkrefs does not change how often the pacer
        // collects (the quarantine is bounded by a quarter of the limit).
        let quarantined = if self.config.check_refs { lock(&self.quarantine).bytes() } else { 0 };
        let marked = if crate::pacer::black_counts_as_marked() { live + black } else { live };
        let goal = match self.config.gogc {
            Some(g) => marked.saturating_mul(100 + g as usize) / 100,
            None => usize::MAX,
        }
        .max(self.config.min_heap)
        .saturating_add(quarantined)
        .min(space.nblocks * BLOCK_SIZE);
        self.live.store(live, Ordering::Relaxed);
        self.allocated.store(quarantined + black, Ordering::Relaxed);
        self.goal.store(goal, Ordering::Relaxed);
        let lag = self.pacer.start_lag.load(Ordering::Relaxed);
        self.pacer.trigger.store(crate::pacer::next_trigger(marked, goal, lag), Ordering::Relaxed);
        self.cycle.store(cycle, Ordering::Release);
        goal
    }

    /// Wake the background sweeper for generation `cycle`.
    fn wake_sweeper(&self, cycle: u64) {
        let (m, cv) = &*self.sweeper;
        *lock(m) = cycle;
        cv.notify_one();
    }

    /// Whether the object at `addr` is marked by the mark in progress.
    fn is_marked(&self, addr: usize) -> bool {
        let buf = ((self.space.gen.load(Ordering::Relaxed) + 1) % 2) as usize;
        find_exact(&self.space, addr).is_some_and(|l| self.space.meta(l.block).is_marked(buf, l.slot))
    }

    /// `world.stop_the_world()`, then notes the world stopped
    /// (`world_stopped`).
    fn stop_world(&self, world: &dyn World) {
        world.stop_the_world();
        self.world_stopped.store(true, Ordering::Relaxed);
    }

    /// Notes the world running (`world_stopped`), then
    /// `world.start_the_world()`.
    fn restart_world(&self, world: &dyn World) {
        self.world_stopped.store(false, Ordering::Relaxed);
        world.start_the_world();
    }

    /// Sweep termination: sweeps every block not yet swept since the last
    /// mark, and waits for blocks other sweepers are sweeping. Called with
    /// the world running (before a mark), and by an allocation that found no
    /// block left.
    pub(crate) fn finish_sweep(&self) {
        let hwm = self.space.high_water();
        for b in 0..hwm {
            self.sweep_block(b, Sweeper::Finish);
        }
        // Other sweepers (the background thread, or an allocation on another
        // thread: neither waits for anything, and a thread stopped by the
        // World is never inside one, allocation being a no-preemption
        // section) finish what they claimed, including its last steps. New
        // ones find every block swept for this generation until the next
        // mark publishes a new one, which needs the collection lock.
        while self.sweepers_in_flight.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Lazy sweeping by allocation: sweeps blocks from the shared cursor
    /// until one lands on the partial list `target` names (`Partial(sc)`:
    /// span class `sc`'s; `Typed(id)`: the compact descriptor's), at most
    /// `budget` blocks. Leaves early, after a block, when the worker has a
    /// checkpoint request outstanding (see `pacer.rs`): the caller then
    /// passes its cooperative point and sweeps on afterwards.
    pub(crate) fn sweep_for(&self, target: Swept, budget: usize) -> SweptFor {
        let hwm = self.space.high_water();
        for _ in 0..budget {
            let b = self.sweep_cursor.fetch_add(1, Ordering::AcqRel);
            if b >= hwm {
                return SweptFor::Nothing;
            }
            if self.sweep_block(b, Sweeper::Allocation) == target {
                return SweptFor::Room;
            }
            if crate::pacer::leave_for_request(false) {
                return SweptFor::LeftForRequest;
            }
        }
        SweptFor::Nothing
    }

    /// Sweep block `b` for the last mark if it is an unswept block of
    /// objects and this call wins the claim (a CAS on its sweep state): its
    /// object-start bits become `alloc & mark` (checkrefs: dead objects are
    /// poisoned and quarantined instead, see `refcheck`), the next cycle's
    /// mark buffer is cleared, and then the state says swept (Release, see
    /// `BlockMeta::is_live`). An empty block goes back to the pool, one with
    /// free slots onto its class's partial list; a dead large object's span
    /// is freed. Runs concurrently with mutators, other sweepers and lookups;
    /// never in a pause's mark (all blocks are swept before a mark starts,
    /// and claims need a block unswept for the current generation).
    pub(crate) fn sweep_block(&self, b: usize, who: Sweeper) -> Swept {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.sweepers_in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.sweepers_in_flight);
        let (kind, sc) = self.space.kind(b);
        if kind != KIND_SMALL && kind != KIND_LARGE_HEAD {
            return Swept::No;
        }
        let gen = self.space.gen.load(Ordering::Acquire);
        let m = self.space.meta(b);
        let st = m.swept.load(Ordering::Acquire);
        if st >= 2 * gen || m.swept.compare_exchange(st, 2 * gen + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Swept::No;
        }
        // Claimed: the block was in use and unswept (a free block is never
        // unswept-and-in-use: blocks are handed out with their state set to
        // swept before their kind is published), so its kind is as read.
        debug_assert!(!m.owned.load(Ordering::Relaxed), "an owned block is always swept");
        self.swept_by[who as usize].fetch_add(1, Ordering::Relaxed);
        let buf = (gen % 2) as usize;
        // Dead finalizable objects: queued and kept (before the marks are read).
        self.queue_dead_finalizable(b, buf);
        let next = 1 - buf;
        let quarantining = self.quarantining.load(Ordering::Relaxed);
        let cycle = self.cycle.load(Ordering::Relaxed);
        match kind {
            KIND_SMALL => {
                let class = split_span_class(sc).0;
                let size = CLASS_SIZES[class];
                let slots = slots_of(class);
                let mut allocated = 0;
                let mut quarantined = Vec::new();
                // A typed block (compact objects) is not quarantined: its
                // objects have no header to poison (see `descriptor.rs`).
                let typed = self.space.block_desc(b);
                let quarantining = quarantining && typed == 0;
                for w in 0..slots.div_ceil(64) {
                    let alloc = m.alloc[w].load(Ordering::Relaxed);
                    let a = alloc & m.marks[buf][w].load(Ordering::Relaxed);
                    let mut keep = a;
                    if quarantining {
                        let mut dead = alloc & !a;
                        while dead != 0 {
                            let addr = self.space.block_start(b) + (w * 64 + dead.trailing_zeros() as usize) * size;
                            dead &= dead - 1;
                            // SAFETY: a dead, published object: unreachable
                            // (only stale handles, a user bug the
                            // quarantine exists to report, can read it).
                            if unsafe { Quarantine::poison(addr, size) } {
                                quarantined.push((addr, size));
                            }
                        }
                        keep = alloc;
                    }
                    m.alloc[w].store(keep, Ordering::Relaxed);
                    m.marks[next][w].store(0, Ordering::Relaxed);
                    allocated += keep.count_ones() as usize;
                }
                m.swept.store(2 * gen, Ordering::Release);
                if !quarantined.is_empty() {
                    self.count_quarantined(quarantined.len() * size);
                    lock(&self.quarantine).push(quarantined);
                }
                if allocated == 0 {
                    self.space.set_kind(b, KIND_FREE, 0);
                    // A typed block forgets its descriptor (after the kind
                    // says free: see `refcheck::is_object_start`).
                    if typed != 0 {
                        self.space.set_block_desc(b, 0);
                    }
                    self.space.free_blocks_run(b, 1, cycle);
                    Swept::Yes
                } else if allocated < slots {
                    if typed != 0 {
                        // SAFETY: a typed block's word is a &'static Descriptor.
                        let id = unsafe { &*(typed as *const Descriptor) }.compact_id();
                        self.push_partial(sc, id, b);
                        Swept::Typed(id)
                    } else {
                        lock(&self.partial[sc]).push(b as u32);
                        Swept::Partial(sc)
                    }
                } else {
                    Swept::Yes
                }
            }
            _ => {
                let n = m.link.load(Ordering::Relaxed) as usize;
                if m.is_marked(buf, 0) {
                    m.marks[next][0].store(0, Ordering::Relaxed);
                    m.swept.store(2 * gen, Ordering::Release);
                } else if quarantining && m.is_allocated(0) {
                    let addr = self.space.block_start(b);
                    let bytes = m.large_bytes.load(Ordering::Relaxed);
                    // Poisoned before the state says swept: a lookup that
                    // sees the state (and so the start bit as live) must see
                    // the quarantine header, never a half-poisoned object.
                    // SAFETY: a dead, published object (as above).
                    let fresh = unsafe { Quarantine::poison(addr, bytes) };
                    m.marks[next][0].store(0, Ordering::Relaxed);
                    m.swept.store(2 * gen, Ordering::Release);
                    if fresh {
                        self.count_quarantined(bytes);
                        lock(&self.quarantine).push([(addr, bytes)]);
                    }
                } else {
                    m.clear_tables();
                    m.swept.store(2 * gen, Ordering::Release);
                    for i in b + 1..b + n {
                        self.space.meta(i).link.store(0, Ordering::Relaxed);
                        self.space.set_kind(i, KIND_FREE, 0);
                    }
                    m.link.store(0, Ordering::Relaxed);
                    self.space.set_kind(b, KIND_FREE, 0);
                    self.space.free_blocks_run(b, n, cycle);
                }
                Swept::Yes
            }
        }
    }

    /// checkrefs: objects quarantined by a lazy sweep after the pause still
    /// occupy their slots: they count as allocated (not live) memory from
    /// now on, and the goal grows by as much (as the pause does for the
    /// quarantine it keeps), so that checkrefs does not change how often the
    /// pacer collects.
    fn count_quarantined(&self, bytes: usize) {
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
        self.goal.fetch_add(bytes, Ordering::Relaxed);
    }

    /// checkrefs: free a quarantined object for real (clear its object-start
    /// bit; the sweep that follows frees its slot or span). In the pause.
    fn unquarantine(&self, addr: usize) {
        let Some(l) = find_exact(&self.space, addr) else { return };
        let m = self.space.meta(l.block);
        m.alloc[l.slot / 64].fetch_and(!(1u64 << (l.slot % 64)), Ordering::Relaxed);
    }
}

/// Test-only switch (negative control of "a typed block holds objects of
/// one compact descriptor only"): `false` lists typed blocks with free
/// slots by span class, as untyped ones, and lets a refill take any block
/// of its class (the descriptor word is not compared): objects of one
/// compact descriptor then land in a block typed with another, and read as
/// the wrong type. Read on the allocation slow path and by sweeps only.
static TYPED_LISTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[inline]
pub(crate) fn typed_lists() -> bool {
    TYPED_LISTS.load(Ordering::Relaxed)
}

/// Test-only: turns the per-descriptor lists of typed blocks off (`false`,
/// see `TYPED_LISTS`) or on again (the default). Process-wide: only for a
/// test binary of its own.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_typed_block_lists_for_tests(on: bool) {
    TYPED_LISTS.store(on, Ordering::Relaxed);
}

/// Where in a cycle a panic happened (see [`HeapInner::guarded_cycle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stopping,
    ConservativeRoots,
    Marking,
    /// Marking with the world running (a panic there aborts).
    ConcurrentMarking,
    /// Stopping the world for mark termination (marking is on: a panic
    /// there aborts).
    TerminationStopping,
    RootScanner,
    Sweeping,
    AllocInPause,
    Restarting,
    /// Stopping the world again for the verifier (the cycle is complete).
    VerifyStopping,
    Verifying,
    VerifyRestarting,
    Done,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Stopping => "stopping the world (World::stop_the_world)",
            Phase::ConservativeRoots => "scanning conservative roots (World::for_each_conservative_range)",
            Phase::Marking => "marking",
            Phase::ConcurrentMarking => "concurrent marking (world running)",
            Phase::TerminationStopping => "stopping the world for mark termination (World::stop_the_world)",
            Phase::RootScanner => "a root scanner (Heap::add_root_scanner)",
            Phase::Sweeping => "sweeping",
            Phase::AllocInPause => "the allocation retried in the pause",
            Phase::Restarting => "restarting the world (World::start_the_world)",
            Phase::VerifyStopping => "stopping the world for the heap verifier (World::stop_the_world)",
            Phase::Verifying => "the heap verifier",
            Phase::VerifyRestarting => "restarting the world after the heap verifier (World::start_the_world)",
            Phase::Done => "finishing the cycle",
        }
    }
}

/// A panic caught inside a collection's pause, to be resumed by the
/// collecting caller once the collection lock is released.
struct PausePanic {
    what: Phase,
    payload: Box<dyn std::any::Any + Send>,
    /// The world was stopped and has been restarted (else it never stopped).
    restarted: bool,
}

impl PausePanic {
    fn resume(self) -> ! {
        if !self.restarted {
            // Nothing happened yet (e.g. the stopper check): keep the
            // World's own message.
            std::panic::resume_unwind(self.payload);
        }
        if self.what == Phase::Verifying {
            panic!(
                "usurp gc: {} panicked in its own pause after a completed cycle: {}; the world restarted",
                self.what.describe(),
                panic_message(&*self.payload)
            )
        }
        panic!(
            "usurp gc: {} panicked during a collection's pause: {}; the cycle was abandoned (nothing freed) and the \
             world restarted",
            self.what.describe(),
            panic_message(&*self.payload)
        )
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<String>() {
        s
    } else if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else {
        "(a non-string panic payload)"
    }
}

/// A panic where the heap or the world cannot be put back in order: say
/// what panicked, then abort (never unwind through the pause, never hang).
#[cold]
fn pause_abort(what: &str, payload: &(dyn std::any::Any + Send)) -> ! {
    eprintln!(
        "usurp gc: fatal: {what} panicked during a collection's pause ({}); the heap or the world cannot be \
         restored: aborting",
        panic_message(payload)
    );
    std::process::abort()
}

thread_local! {
    /// Whether this thread is running a collection's pause (set by
    /// `collect_with` between its lock and the end of the cycle). Written
    /// only by its own thread.
    static IN_PAUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The handle-check entry of the heap whose pause this thread runs
    /// (null outside one): the safe accessors accept that heap's objects
    /// only (`refcheck::own_entry`). Written only by its own thread.
    static PAUSE_ENTRY: std::cell::Cell<*const crate::refcheck::Entry> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// The entry of the heap whose pause the current thread runs, if any.
#[inline(never)]
pub(crate) fn pause_entry() -> Option<&'static crate::refcheck::Entry> {
    // SAFETY: null or an entry (leaked, never freed) set by `PauseFlag`.
    PAUSE_ENTRY.with(|c| unsafe { c.get().as_ref() })
}

/// What an allocation in the pause reports ("usurp heap: allocation ...").
const IN_PAUSE_REASON: &str = "inside a collection's pause (a root scanner, a World callback or other code run by \
     the collector while the world is stopped must not allocate)";

/// Sets [`IN_PAUSE`] for its lifetime.
struct PauseFlag;

impl PauseFlag {
    fn set(entry: &'static crate::refcheck::Entry) -> PauseFlag {
        IN_PAUSE.with(|c| c.set(true));
        PAUSE_ENTRY.with(|c| c.set(entry));
        PauseFlag
    }
}

impl Drop for PauseFlag {
    fn drop(&mut self) {
        IN_PAUSE.with(|c| c.set(false));
        PAUSE_ENTRY.with(|c| c.set(std::ptr::null()));
    }
}

/// The heap's side of the shading gate (`refcheck::shading_section`).
/// [`Heap::shade_conservative_range`]'s work: a concurrent (atomic) marker
/// over the range, its finds pushed on the grey list and counted as shaded.
///
/// A thread whose mutator is of this heap shades without the gate: this
/// heap's stops stop it, so none falls inside the shading, and only this
/// heap's objects are shaded (`shading_section` takes the gate for such a
/// thread too when several heaps exist, for callers that may touch another
/// heap). Review 115: with the gate, a task receiving from a channel (which
/// shades under the channel's lock) waited at a gate another runtime's
/// collector had closed, and that collector's stop waited for the
/// channel's lock.
#[cold]
#[inline(never)]
fn shade_range_slow(h: &HeapInner, lo: usize, hi: usize) {
    if crate::mutator::current_is_of(h.space.handle_entry()) {
        shade_range_marking(h, lo, hi);
    } else {
        crate::refcheck::shading_section(|| shade_range_marking(h, lo, hi));
    }
}

/// [`shade_range_slow`]'s work, where no marking stop of `h` can fall.
fn shade_range_marking(h: &HeapInner, lo: usize, hi: usize) {
    let space = &h.space;
    if !space.mark.marking.load(Ordering::Acquire) {
        return;
    }
    let counters = MarkCounters::default();
    let mut m = Marker::new_small(space, &counters);
    m.scan_range(lo, hi);
    let bytes = m.live_bytes();
    if bytes != 0 {
        space.mark.shaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    let bad = counters.bad_pointers.load(Ordering::Relaxed);
    if bad != 0 {
        space.mark.shaded_bad_pointers.fetch_add(bad, Ordering::Relaxed);
    }
    if !m.stack.is_empty() {
        lock(&space.mark.grey).append(&mut m.stack);
    }
}

fn space_gate(h: &HeapInner) -> &crate::refcheck::MarkShared {
    h.space.mark
}

/// Whether the current thread is inside a collection's pause.
pub(crate) fn in_pause() -> bool {
    IN_PAUSE.with(|c| c.get())
}

/// An allocation at the goal by the thread that holds its World stopped.
#[cold]
#[inline(never)]
fn stopper_at_goal() -> ! {
    panic!(
        "usurp heap: an allocation at the heap's goal by the thread or task that holds the world stopped: the \
         collection it must wait for cannot stop the world, so it would wait for itself forever. Restart the \
         world before allocating this much"
    )
}

#[cold]
#[inline(never)]
fn in_pause_panic(what: &str) -> ! {
    panic!(
        "usurp gc: {what} requested inside a collection's pause (from a root scanner, a World callback or \
         other code the collector runs while the world is stopped): it would wait for the pause it runs in"
    )
}

/// Whether a concurrent cycle scans the `Root` table with the world
/// running (the default) or in its start stop (`false`: as before; the
/// negative control, `set_root_table_in_stop_for_tests`).
static ROOT_TABLE_CONCURRENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Scans of the `Root` table made while the world was stopped, process-wide
/// (a stop-the-world cycle's pause, or a concurrent cycle's start stop with
/// the switch above off).
static ROOTS_VISITED_IN_STOPS: AtomicU64 = AtomicU64::new(0);

/// Test-only: `true` makes a concurrent cycle scan the `Root` table in its
/// start stop, as before (the negative control); `false` (the default)
/// scans it with the world running. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_root_table_in_stop_for_tests(in_stop: bool) {
    ROOT_TABLE_CONCURRENT.store(!in_stop, Ordering::SeqCst);
}

/// Test-only: scans of the `Root` table made in a stop so far in this
/// process.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn root_table_scans_in_stops_for_tests() -> u64 {
    ROOTS_VISITED_IN_STOPS.load(Ordering::Relaxed)
}

/// Test-only switch (negative control of black allocation): when false,
/// objects allocated during a concurrent mark are not marked.
static BLACK_ALLOCATION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turn black allocation off (`false`) or on again (the
/// default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_black_allocation_for_tests(on: bool) {
    BLACK_ALLOCATION.store(on, Ordering::SeqCst);
}

/// Test switch: the next parallel marking job panics (see
/// [`fail_next_marking_job`]).
static FAIL_MARKING_JOB: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test-only fault injection: makes the next parallel marking job panic, to
/// check that a panic on a marking thread aborts with a message instead of
/// hanging the collection. Not for use outside tests.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn fail_next_marking_job() {
    FAIL_MARKING_JOB.store(true, Ordering::SeqCst);
}

/// Runs `f`, aborting the process with a message if it panics: for code that
/// runs on the World's threads in a pause (marking and sweeping jobs), where
/// an unwind would leave the other jobs (and the stopper waiting for them)
/// with a half-done shared state.
pub(crate) fn never_unwind(what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        pause_abort(what, &*p);
    }
}

/// The background collector of a heap (with a World that allows it, see
/// [`World::background_collection`]): a thread that runs the cycles the
/// pacer asks for, so that no task's worker is taken for a concurrent mark;
/// it exits once the heap is dropped. It is no mutator: it never allocates
/// and holds no object across cycles (its own stack is not scanned).
///
/// A panic that escapes a cycle (one outside `guarded_cycle`'s guard: a
/// World call such as `background_collection` or `finalizers_pending`)
/// ends the thread: the collector is then gone, reported on stderr, and
/// allocations run the cycles themselves (`BackgroundState::gone`), among
/// them any waiting at the goal (`HeapInner::goal_wait_stalled`).
fn start_background_collector(
    heap: std::sync::Weak<HeapInner>,
    hold: Arc<BgHold>,
    wake: Arc<(Mutex<BackgroundState>, std::sync::Condvar)>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("usurp-gc".into())
        .spawn(move || {
            BACKGROUND_THREAD.with(|b| b.set(true));
            // SAFETY: gettid has no preconditions.
            lock(&wake.0).tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
            loop {
            {
                let (m, cv) = &*wake;
                let g = lock(m);
                if !g.requested {
                    let _ = cv.wait_timeout(g, std::time::Duration::from_millis(100));
                }
            }
            let Some(h) = hold.upgrade(&heap) else {
                lock(&wake.0).tid = 0;
                return;
            };
            let go = {
                let mut g = lock(&h.background.0);
                g.busy = g.requested;
                g.requested
            };
            if go {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.background_cycle()));
                // (A cycle that skipped its start stop leaves no pin.)
                h.unpin_collector();
                lock(&h.background.0).busy = false;
                if let Err(p) = r {
                    let msg = panic_message(&*p);
                    eprintln!(
                        "usurp gc: the background collector's thread panicked outside a cycle ({msg}); allocations \
                         will run the cycles themselves"
                    );
                    lock(&wake.0).tid = 0;
                    h.collector_lost(format!("its thread panicked: {msg}"), true);
                    return;
                }
            }
            }
        })
        .map(|_| ())
}

/// Test-only switch (negative control of the collector's placement): when
/// cleared, the start hand-off wakes the collector wherever the OS puts
/// it, as before. Set through [`set_collector_placement_for_tests`].
static PLACE_COLLECTOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Placements of a collector on its handing allocation's CPU
/// (`place_collector_here`), process-wide: read by tests through
/// [`collector_placements_for_tests`].
static PLACEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Test-only: the start hand-off's placements of a collector so far,
/// process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn collector_placements_for_tests() -> u64 {
    PLACEMENTS.load(Ordering::Relaxed)
}

/// Test-only: turns the start hand-off's placement of the collector on its
/// CPU off (`false`) or on again (the default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_collector_placement_for_tests(on: bool) {
    PLACE_COLLECTOR.store(on, Ordering::Relaxed);
}

/// The background sweeper of a heap: a thread that sweeps the blocks left
/// unswept by the last mark (claiming them from the shared cursor, as
/// allocation does), woken at the end of each pause; it exits once the heap
/// is dropped. It is no mutator (it never allocates nor holds objects) and
/// the World does not stop it: sweeping is safe concurrently with mutators
/// and lookups (see `HeapInner::sweep_block`).
fn start_background_sweeper(
    heap: std::sync::Weak<HeapInner>,
    hold: Arc<BgHold>,
    wake: Arc<(Mutex<u64>, std::sync::Condvar)>,
) {
    let _ = std::thread::Builder::new().name("usurp-gc-sweeper".into()).spawn(move || {
        BACKGROUND_THREAD.with(|b| b.set(true));
        let mut seen = 0;
        loop {
            {
                // Waits without a strong reference: the heap may be dropped
                // meanwhile (then the thread exits within 100 ms).
                let (m, cv) = &*wake;
                let g = lock(m);
                let g = if *g == seen {
                    cv.wait_timeout(g, std::time::Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0
                } else {
                    g
                };
                seen = *g;
            }
            let Some(h) = hold.upgrade(&heap) else { return };
            if !h.background_sweeping.load(Ordering::SeqCst) {
                continue;
            }
            let stall = SWEEPER_STALL_MS.load(Ordering::Relaxed);
            if stall != 0 {
                std::thread::sleep(Duration::from_millis(stall));
            }
            let hwm = h.space.high_water();
            loop {
                let b = h.sweep_cursor.fetch_add(1, Ordering::AcqRel);
                if b >= hwm {
                    break;
                }
                h.sweep_block(b, Sweeper::Background);
            }
        }
    });
}
