//! The allocation fast path.
//!
//! A [`Mutator`] is one thread's allocation cache: for every span class
//! (size class × scanned/pointer-free, see [`crate::sizeclass`]) the
//! block it currently allocates from (marked `owned`, so sweeping neither
//! frees it nor lists it as partial) and a 64-bit word of free slots taken
//! from the block's object-start bits. Allocating is: take the lowest free
//! bit, zero the object, write the header, publish the object-start bit with a
//! Release store (load + store, no read-modify-write: only the owner writes the
//! bits of an owned block outside the pause). Only when the block is used up
//! does the slow path take a lock (the class's partial-block list or the
//! block pool) and possibly trigger a collection.
//!
//! **Compact objects** (see `descriptor.rs`) have a cache per compact
//! descriptor instead (`Mutator::typed`, indexed by the descriptor's
//! compact id, which the slow path assigns at its first allocation; entry
//! 0 stays empty, so an unassigned id falls to the slow path): the fast
//! path's only extra work is the compact flag test on the descriptor's
//! flags word, which it reads anyway (pointer-free test), and for a
//! compact one an indexed load (each layout has its own copy of the fast
//! path, `fast_in`: the headered one is the code it was before typed
//! blocks). Their blocks are *typed*: a refill takes a
//! partial block from the descriptor's own list (checking the block's
//! descriptor word) or a fresh block, whose descriptor word it sets before
//! publishing the block's kind; the object is its zeroed payload, no header.
//!
//! **Lazy sweeping.** A mutator only ever owns a block swept since the last
//! mark (an unswept block's object-start bits still include dead objects).
//! Each pause takes every mutator's cached blocks away
//! ([`Mutator::flush_caches`]); the slow path then takes a swept block from
//! the partial list, or sweeps blocks itself from the shared cursor until one
//! of its class has room (at most [`SWEEP_BUDGET`] blocks), or takes a fresh
//! block; only when no fresh block is left does it finish the whole sweep
//! (which frees every empty block) before it reports exhaustion.
//!
//! The fast path must not be interrupted by an asynchronous preemption (a
//! collection's pause takes the cached blocks away, and lazy sweepers
//! rewrite the object-start words of blocks no mutator owns; a preemption
//! between our load and store of such a word would write back stale bits
//! into a block that is no longer ours). It lives in `alloc_fast`, an `#[inline(never)]` function in
//! ordinary `.text`: `usurp-preempt` only preempts code in the
//! `usurp_preemptible` section or in registered JIT regions and refuses every
//! other PC, so the fast path is a no-preemption section by placement, which
//! costs nothing (the `no_preempt` guard costs two thread-local accesses, ~15%
//! of an allocation). The slow path (locks, block refill, collection trigger)
//! runs under an explicit `no_preempt` as well. A VM that inlines allocation
//! into JIT code must register that sequence with `register_unsafe_range`.
//! The object-start bit is published last (pitfall 1).
//!
//! The scheduler finds the current thread's mutator through a thread-local
//! pointer set by [`Heap::attach_thread`](crate::Heap::attach_thread), read by
//! an `#[inline(never)]` accessor (tasks migrate; LLVM may cache TLS addresses).
//! Only threads the World stops and scans get one (`World::may_attach`);
//! [`forbid_allocation`] takes it away for a while (a task inside `blocking`
//! counts as stopped). The fast path already branches on a null mutator, so
//! neither costs it anything; the slow path says why allocation is refused.
//!
//! Exhaustion is reported only after a full collection that the failing
//! allocation waited for could not make room: the allocation is retried in
//! that collection's pause, right after the sweep (see [`alloc_slow`]).
//!
//! **Allocation is a cooperative point** (issue 11). VM runtime code that
//! allocates runs in ordinary `.text`, where asynchronous preemption is
//! refused; a refused quantum tick (or a stop-the-world request) sets the
//! worker's checkpoint flag. The slow path (a block refill every block's
//! worth of small objects, every large object) calls
//! `usurp_preempt::checkpoint()` on entry, and while the allocating
//! worker has a request outstanding (`usurp_preempt::checkpoint_requested()`
//! in `alloc_fast`: one load of a global word and a branch when no worker
//! has one) every allocation takes the slow path, so such code yields at its
//! next allocation, not a block's worth of objects later (issue 9 item 1:
//! in binary-trees with `preemptible!` guest code, most stop requests land
//! in the allocation code and are refused; the stop then waited for the
//! next block refill, tens to hundreds of microseconds). Another worker's
//! request costs the fast path one more out-of-line read of its own slot. That point holds no GC lock and no
//! reference to the mutator (the fast path's died when it returned; the
//! slow path reads the mutator afresh after it, and after every collection:
//! the task may resume on another thread). Inside a no-preemption section
//! (the GC's own, or the caller's) it does nothing.

use crate::block::{BlockMeta, KIND_SMALL};
use crate::descriptor::Descriptor;
use crate::heap::{HeapInner, Need, Swept, SweptFor};
use crate::object::GcRef;
use crate::preempt_glue::no_preempt;
use crate::sizeclass::{class_of, slots_of, span_class, split_span_class, CLASS_SIZES, MAX_SMALL, NUM_SPAN_CLASSES};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The current thread has no mutator: it is not a thread of the runtime
    /// (or of the `World`) that owns a heap.
    NotAttached,
    /// Allocation is refused on this thread for now: the reason (e.g.
    /// "inside blocking()"), set by the `World` with [`forbid_allocation`].
    Forbidden(&'static str),
    /// The heap limit is exhausted even after a full collection.
    HeapExhausted { limit: usize, requested: usize },
    /// The requested size overflows.
    TooLarge,
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocError::NotAttached => write!(
                f,
                "usurp heap: allocation from a thread outside the runtime (this thread has no heap mutator): \
                 allocate from a task of the runtime (Runtime::spawn, Runtime::block_on). A thread that the \
                 heap's World does not stop and scan must not allocate: a collection would sweep under it and \
                 never see its pointers (Heap::attach_thread only admits the threads the World accepts)"
            ),
            AllocError::Forbidden(why) => write!(f, "usurp heap: allocation {why}"),
            AllocError::HeapExhausted { limit, requested } => write!(
                f,
                "usurp heap limit of {} MiB exhausted: {requested} bytes requested after a full collection",
                limit >> 20
            ),
            AllocError::TooLarge => write!(f, "usurp heap: object size overflows"),
        }
    }
}
impl std::error::Error for AllocError {}

/// Most blocks one refill sweeps looking for room in its class before it
/// takes a fresh block (bounds the latency of an allocation; the background
/// sweeper does the rest).
pub(crate) const SWEEP_BUDGET: usize = 64;

struct ClassCache {
    meta: *const BlockMeta,
    base: usize,
    word: usize,
    free: u64,
    nwords: usize,
    last_mask: u64,
    /// Allocate black: while the heap marks concurrently, the mark buffer
    /// of the cycle in progress (its words are set with an atomic RMW, as
    /// markers set them); null otherwise. Set when the block is taken: the
    /// start and termination stops flush every cache, so a cache taken
    /// during marking never outlives it and one taken outside never sees it.
    black: *const std::sync::atomic::AtomicU64,
    /// For a typed cache (`Mutator::typed`): the compact descriptor whose
    /// id indexes it (set by `refill` with the block, after
    /// `compact_id_assign` checked that the id is that descriptor's); 0 for
    /// span-class caches and empty ones. The compact
    /// fast path allocates only for this descriptor: another one that was
    /// given the same `CompactId` (a safe mistake: two `static`s naming one
    /// id) goes to the slow path, whose `compact_id_assign` panics, instead
    /// of carving its objects out of this block with its own stride
    /// (overlapping objects: review of the compact layout).
    owner: usize,
}

impl ClassCache {
    const EMPTY: ClassCache = ClassCache {
        meta: std::ptr::null(),
        base: 0,
        word: 0,
        free: 0,
        nwords: 0,
        last_mask: 0,
        black: std::ptr::null(),
        owner: 0,
    };

    /// Move to the next bitmap word with a free slot; false if the block is used up.
    #[inline]
    fn advance(&mut self) -> bool {
        if self.meta.is_null() {
            return false;
        }
        while self.word + 1 < self.nwords {
            self.word += 1;
            // SAFETY: meta points to the owned block's metadata (lives as long as the heap).
            let a = unsafe { (*self.meta).alloc[self.word].load(Ordering::Relaxed) };
            let mut f = !a;
            if self.word + 1 == self.nwords {
                f &= self.last_mask;
            }
            if f != 0 {
                self.free = f;
                return true;
            }
        }
        false
    }
}

/// One thread's allocation cache. Owned by one thread at a time.
pub struct Mutator {
    pub(crate) heap: Arc<HeapInner>,
    /// `heap`'s handle-check entry (`refcheck::Registration::entry`): this
    /// thread's safe accessors accept objects of this heap only
    /// (`refcheck::check_for`, `is_live_as`). Immutable.
    pub(crate) entry: &'static crate::refcheck::Entry,
    caches: [ClassCache; NUM_SPAN_CLASSES],
    /// Per compact descriptor (indexed by its compact id; entry 0, for
    /// "no id yet", stays empty): the typed block it allocates from.
    typed: Vec<ClassCache>,
    /// Bytes taken during a concurrent mark not yet paid for with mark
    /// work (see `pacer.rs`). Only this mutator's thread touches it.
    assist_debt: usize,
}

thread_local! {
    static CURRENT: Cell<*mut Mutator> = const { Cell::new(std::ptr::null_mut()) };
    /// Why allocation is refused on this thread right now (see
    /// [`forbid_allocation`]); read only on the slow path.
    static FORBIDDEN: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// While alive, allocation on the current thread fails with
/// [`AllocError::Forbidden`] (and `alloc` panics with `reason`). Created by
/// [`forbid_allocation`]; restores the thread's mutator when dropped, on the
/// same thread (it is not `Send`). Guards nest: dropping one while a guard
/// taken after it is still alive aborts the process with a message.
#[must_use = "allocation is allowed again when the guard is dropped"]
pub struct AllocationForbidden {
    /// The mutator to restore (installed by an enclosing guard). `*mut` also
    /// makes the guard `!Send`.
    prev: *mut Mutator,
    prev_reason: Option<&'static str>,
}

impl Drop for AllocationForbidden {
    fn drop(&mut self) {
        // Guards nest (LIFO). Dropped out of order (a `MutatorGuard` taken
        // or dropped inside this one's lifetime), `prev` may be a freed
        // mutator: reinstalling it would be a use after free, so abort.
        if !current_mutator().is_null() {
            guard_order_abort("forbid_allocation's guard");
        }
        FORBIDDEN.with(|c| c.set(self.prev_reason));
        set_current_mutator(self.prev);
    }
}

impl AllocationForbidden {
    /// The mutator this guard took away (restored when it drops).
    pub(crate) fn saved_mutator(&self) -> *mut Mutator {
        self.prev
    }
}

/// Aborts: `what` was dropped while another thread-mutator guard taken after
/// it is still alive (or one it saved was dropped first). Restoring its saved
/// mutator could reinstall a freed one, and unwinding would leave the thread
/// with a dangling current mutator, so there is nothing safe left to do.
#[cold]
#[inline(never)]
pub(crate) fn guard_order_abort(what: &str) -> ! {
    eprintln!(
        "usurp gc: fatal: {what} dropped out of order: the thread's current mutator is not the one this guard \
         installed (MutatorGuard and AllocationForbidden guards must be dropped in reverse order of creation, \
         on the thread that created them: a task must not hold one across a yield, a sleep, a channel or lock \
         wait or a join, after which it may resume on another worker's thread, and other tasks on its thread \
         would meanwhile run without a mutator); restoring the saved mutator could reinstall a freed one: \
         aborting"
    );
    std::process::abort()
}

/// Refuses allocation on the current thread until the guard drops: the
/// thread's mutator is taken away (so the fast path, which already tests for
/// a null mutator, costs nothing more) and the slow path reports `reason`,
/// which completes the sentence "usurp heap: allocation ..." (e.g. "inside
/// blocking(): ..."). For `World` implementations: the scheduler uses it
/// while a task runs a `blocking` closure, during which the task counts as
/// stopped and a collection may run.
///
/// The guard belongs to the OS thread: in a usurp task, drop it before the
/// task can switch (a yield, a sleep, a channel or lock wait, a join), or
/// the other tasks of that worker run without a mutator meanwhile (their
/// allocations fail with `reason`) and, if the task resumes on another
/// worker, dropping the guard there aborts the process.
pub fn forbid_allocation(reason: &'static str) -> AllocationForbidden {
    let prev_reason = FORBIDDEN.with(|c| c.replace(Some(reason)));
    let prev = set_current_mutator(std::ptr::null_mut());
    AllocationForbidden { prev, prev_reason }
}

/// A safe heap accessor was called on a thread without a mutator (the
/// World does not stop it). Allowed only inside a collection's pause on the
/// collecting thread (root scanners may read objects: the world is stopped);
/// panics otherwise, saying why.
#[cold]
#[inline(never)]
pub(crate) fn access_without_mutator(addr: usize) {
    if crate::heap::in_pause() {
        return;
    }
    match FORBIDDEN.with(|c| c.get()) {
        Some(why) => panic!(
            "usurp heap: access to the heap object at {addr:#x} refused: this thread's mutator is taken away \
             (allocation {why}); only threads the heap's World stops may read or write heap objects"
        ),
        None => panic!(
            "usurp heap: access to the heap object at {addr:#x} from a thread outside the runtime (this thread \
             has no heap mutator): only tasks of the runtime (Runtime::spawn, Runtime::block_on) or threads \
             attached with Heap::attach_thread may read or write heap objects, because a collection neither \
             stops nor scans any other thread; hand the work to a task"
        ),
    }
}

#[cold]
fn not_attached() -> AllocError {
    match FORBIDDEN.with(|c| c.get()) {
        Some(why) => AllocError::Forbidden(why),
        None => AllocError::NotAttached,
    }
}

/// The current thread's mutator (null if none). Never inlined: a task may
/// migrate between threads across a switch, and LLVM may cache a TLS address.
#[inline(never)]
pub fn current_mutator() -> *mut Mutator {
    CURRENT.with(|c| c.get())
}

/// The handle-check entry of the current thread's mutator's heap (null
/// without a mutator). Never inlined, like `current_mutator`: a task
/// preempted in the code that inlined a dereference may resume on another
/// thread. Entries are leaked, so the pointer stays valid wherever it is
/// used; and every worker of a runtime has the same heap, so it is the
/// right one after a migration too.
#[inline(never)]
pub(crate) fn current_entry() -> *const crate::refcheck::Entry {
    let m = CURRENT.with(|c| c.get());
    // SAFETY: a non-null current mutator is this thread's, alive while it
    // is installed (we only read its immutable `entry`).
    if m.is_null() { std::ptr::null() } else { unsafe { (*m).entry } }
}

/// Whether the calling thread's mutator is of the heap whose handle-check
/// entry is `e` (that heap's stops stop this thread). `false` without a
/// mutator.
#[inline]
pub(crate) fn current_is_of(e: &'static crate::refcheck::Entry) -> bool {
    std::ptr::eq(current_entry(), e)
}

#[inline(never)]
pub(crate) fn set_current_mutator(m: *mut Mutator) -> *mut Mutator {
    CURRENT.with(|c| c.replace(m))
}

/// Zero a compact object (no header: its descriptor is its block's; fixed
/// size, so no length word either); the caller publishes it.
///
/// # Safety
/// `[addr, addr + max(bytes, 16))` is free heap memory owned by the caller
/// (a slot of a size class: 16 bytes at least).
#[inline(always)]
unsafe fn init_compact(addr: usize, bytes: usize) {
    let p = addr as *mut usize;
    let words = bytes / 8;
    // SAFETY: the caller owns the object's memory.
    unsafe {
        if words <= 8 {
            // Volatile, as in `init_object`: no memset call for a few words.
            // Every size class holds at least two words (16 bytes): those
            // two are stored outright, without the loop's test per word.
            p.write_volatile(0);
            p.add(1).write_volatile(0);
            let mut i = 2;
            while i < words {
                p.add(i).write_volatile(0);
                i += 1;
            }
        } else {
            std::ptr::write_bytes(p, 0, words);
        }
    }
}

/// Write the zeroed object with its header; the caller publishes it.
///
/// # Safety
/// `[addr, addr + max(bytes, 16))` is free heap memory owned by the caller
/// (a slot of a size class: 16 bytes at least).
#[inline(always)]
unsafe fn init_object(addr: usize, desc: &'static Descriptor, bytes: usize, len: Option<usize>) {
    let p = addr as *mut usize;
    let words = bytes / 8;
    // SAFETY: the caller owns the object's memory.
    unsafe {
        if words <= 8 {
            // Volatile: otherwise LLVM turns this loop into a memset call,
            // which costs more than the few stores for small objects. Word
            // 1 exists in every size class (16 bytes at least).
            p.add(1).write_volatile(0);
            let mut i = 2;
            while i < words {
                p.add(i).write_volatile(0);
                i += 1;
            }
        } else {
            std::ptr::write_bytes(p.add(1), 0, words - 1);
        }
        if let Some(n) = len {
            p.add(1).write(n);
        }
        p.write(desc as *const Descriptor as usize);
    }
}

// The zeroing above stores two words outright.
const _: () = assert!(CLASS_SIZES[0] >= 16, "every size class holds two words");

/// The fast path proper on one cache (`COMPACT`: `c` is a typed block's
/// cache and `desc` compact; see [`Mutator::fast`]).
#[inline(always)]
fn fast_in<const COMPACT: bool>(
    c: &mut ClassCache,
    class: usize,
    desc: &'static Descriptor,
    bytes: usize,
    len: Option<usize>,
) -> Option<GcRef> {
    if c.free == 0 && !c.advance() {
        return None;
    }
    let bit = c.free.trailing_zeros() as usize;
    c.free &= c.free - 1;
    let addr = c.base + (c.word * 64 + bit) * CLASS_SIZES[class];
    // SAFETY: the slot is free (its start bit is clear) in a block this
    // mutator owns; nobody else allocates there.
    unsafe {
        if COMPACT {
            init_compact(addr, bytes)
        } else {
            init_object(addr, desc, bytes, len)
        }
    };
    if !c.black.is_null() {
        // Allocate black (concurrent marking): the mark bit before the
        // object-start bit, so whoever sees the object sees it marked.
        // An atomic RMW: markers and the barrier set bits of this word.
        // SAFETY: black points at the owned block's current mark buffer.
        unsafe { (*c.black.add(c.word)).fetch_or(1 << bit, Ordering::Relaxed) };
    }
    // SAFETY: meta is the owned block's metadata.
    let w = unsafe { &(*c.meta).alloc[c.word] };
    // Publish after the header (Release): pitfall 1.
    w.store(w.load(Ordering::Relaxed) | 1 << bit, Ordering::Release);
    GcRef::from_heap_addr(addr)
}

impl Mutator {
    pub(crate) fn new(heap: Arc<HeapInner>) -> Mutator {
        let entry = heap.space.handle_entry();
        Mutator {
            heap,
            entry,
            caches: [const { ClassCache::EMPTY }; NUM_SPAN_CLASSES],
            typed: vec![ClassCache::EMPTY],
            assist_debt: 0,
        }
    }

    /// Fast path: allocate from the current block of span class `sc` (of
    /// `desc`'s typed block, for a compact descriptor). The compact test
    /// comes first and each layout has its own copy of the code
    /// ([`fast_in`]), so a headered allocation runs exactly the code it ran
    /// before typed blocks, after one test of a flag in the descriptor word
    /// it reads anyway.
    #[inline(always)]
    fn fast(&mut self, sc: usize, desc: &'static Descriptor, bytes: usize, len: Option<usize>) -> Option<GcRef> {
        let class = split_span_class(sc).0;
        if desc.is_compact() {
            // (Id 0, not assigned yet, is the empty entry 0.)
            let c = self.typed.get_mut(desc.compact_id())?;
            if c.owner != desc as *const Descriptor as usize {
                return None; // see `ClassCache::owner`
            }
            fast_in::<true>(c, class, desc, bytes, len)
        } else {
            fast_in::<false>(&mut self.caches[sc], class, desc, bytes, len)
        }
    }

    /// Allocate `bytes` (header included) described by `desc`, without
    /// collecting: `Err(Need::..)` asks the caller to collect (and then to
    /// re-read the current mutator) or to fail. `may_trigger`: the pacer may
    /// ask for a collection.
    #[inline(always)]
    fn alloc(&mut self, desc: &'static Descriptor, bytes: usize, len: Option<usize>, may_trigger: bool) -> Result<GcRef, Need> {
        if bytes <= MAX_SMALL {
            let sc = span_class(class_of(bytes), desc.is_pointer_free());
            // Not preemptible: see the module docs (alloc_fast's placement).
            if let Some(r) = self.fast(sc, desc, bytes, len) {
                return Ok(r);
            }
        }
        self.slow(desc, bytes, len, may_trigger)
    }

    #[cold]
    #[inline(never)]
    fn slow(&mut self, desc: &'static Descriptor, bytes: usize, len: Option<usize>, may_trigger: bool) -> Result<GcRef, Need> {
        if bytes > MAX_SMALL {
            let r = no_preempt(|| self.heap.alloc_large(desc, bytes, len, may_trigger));
            if r.is_ok() && self.heap.alloc_black.load(Ordering::Relaxed) {
                self.assist_debt += bytes.div_ceil(crate::block::BLOCK_SIZE) * crate::block::BLOCK_SIZE;
            }
            r
        } else {
            let sc = span_class(class_of(bytes), desc.is_pointer_free());
            no_preempt(|| {
                self.refill(sc, desc, may_trigger)?;
                Ok(self.fast(sc, desc, bytes, len).expect("a refilled block has a free slot"))
            })
        }
    }

    /// Drop the current block of span class `sc` and take another one with
    /// free slots. For a compact `desc`: the block is typed with `desc`
    /// (a partial block of `desc`'s list, or a fresh block, whose
    /// descriptor word is set before its kind is published).
    fn refill(&mut self, sc: usize, desc: &'static Descriptor, may_trigger: bool) -> Result<(), Need> {
        let class = split_span_class(sc).0;
        // Typed blocks: the descriptor's id (given now at its first
        // allocation) and the word its blocks carry; 0 for untyped blocks.
        let (typed_id, want_desc) = if desc.is_compact() {
            let id = crate::descriptor::compact_id_assign(desc);
            if self.typed.len() <= id {
                self.typed.resize_with(id + 1, || ClassCache::EMPTY);
            }
            (id, desc as *const Descriptor as usize)
        } else {
            (0, 0)
        };
        let c = if typed_id != 0 { &mut self.typed[typed_id] } else { &mut self.caches[sc] };
        if !c.meta.is_null() {
            // SAFETY: meta is the owned block's metadata.
            unsafe { (*c.meta).owned.store(false, Ordering::Release) };
            *c = ClassCache::EMPTY;
        }
        if may_trigger && self.heap.over_goal(0) {
            return Err(Need::Collect);
        }
        let heap = &*self.heap;
        let size = CLASS_SIZES[class];
        let slots = slots_of(class);
        let nwords = slots.div_ceil(64);
        let last_mask = if slots % 64 == 0 { !0 } else { (1u64 << (slots % 64)) - 1 };
        let mut swept_for_room = false;
        let mut left_for_request = false;
        let mut finished = false;
        'retry: loop {
            loop {
                let b = heap.pop_partial(sc, typed_id);
                let Some(b) = b else {
                    // Sweep by allocation: look for room in unswept blocks.
                    if !swept_for_room {
                        swept_for_room = true;
                        let target = if typed_id != 0 { Swept::Typed(typed_id) } else { Swept::Partial(sc) };
                        match heap.sweep_for(target, SWEEP_BUDGET) {
                            SweptFor::Room => continue,
                            // A stop waits: its cooperative point first,
                            // then sweep on (not a fresh block: pacer.rs).
                            SweptFor::LeftForRequest if crate::pacer::checkpoint_before_fresh_block() => {
                                return Err(Need::Checkpoint);
                            }
                            SweptFor::LeftForRequest => left_for_request = true,
                            SweptFor::Nothing => {}
                        }
                    }
                    break;
                };
                let b = b as usize;
                let m = heap.space.meta(b);
                let gen = heap.space.gen.load(Ordering::Acquire);
                if heap.space.kind(b) != (KIND_SMALL, sc)
                    || (heap.space.block_desc(b) != want_desc && crate::heap::typed_lists())
                    || m.owned.swap(true, Ordering::AcqRel)
                {
                    continue; // stale entry
                }
                while m.swept.load(Ordering::Acquire) == 2 * gen + 1 {
                    // Its sweeper listed it before it finished (cannot happen:
                    // the state is published first); wait, it never blocks.
                    std::thread::yield_now();
                }
                if m.swept.load(Ordering::Acquire) != 2 * gen {
                    // Listed before the last mark (cannot happen: the pause
                    // empties the lists): never allocate in an unswept block.
                    m.owned.store(false, Ordering::Release);
                    continue;
                }
                let nfree = slots - m.allocated_count(slots);
                heap.allocated.fetch_add(nfree * size, Ordering::Relaxed);
                let a = m.alloc[0].load(Ordering::Relaxed);
                let free = !a & if nwords == 1 { last_mask } else { !0 };
                let black = heap.black_buffer(m);
                if !black.is_null() {
                    self.assist_debt += nfree * size;
                }
                *c = ClassCache { meta: m, base: heap.space.block_start(b), word: 0, free, nwords, last_mask, black, owner: want_desc };
                if c.free != 0 || c.advance() {
                    return Ok(());
                }
                // Full after all (cannot happen for a listed block): drop it.
                m.owned.store(false, Ordering::Release);
                *c = ClassCache::EMPTY;
            }
            let run = match heap.space.alloc_blocks(1) {
                Some(r) => r,
                None if !finished => {
                    // No fresh block: sweep everything (frees empty blocks and
                    // lists partial ones), then look again.
                    finished = true;
                    heap.finish_sweep();
                    continue 'retry;
                }
                None => return Err(Need::Exhausted),
            };
            if left_for_request {
                crate::pacer::count_fresh_block_after_exit();
            }
            let m = heap.space.meta(run.first);
            m.clear_tables();
            m.link.store(0, Ordering::Relaxed);
            m.owned.store(true, Ordering::Relaxed);
            // Swept for the current mark (nothing to sweep), published before
            // the kind (Release) so that sweepers that see the kind see this.
            m.swept.store(2 * heap.space.gen.load(Ordering::Acquire), Ordering::Release);
            // Typed or not, its descriptor word before its kind (Release
            // both): a lookup that sees the kind (or a start bit) sees the
            // word (see `refcheck::is_object_start`).
            heap.space.set_block_desc(run.first, want_desc);
            let typed = if want_desc != 0 { crate::sizeclass::SC_TYPED } else { 0 };
            heap.space.set_kind(run.first, KIND_SMALL, sc | typed);
            heap.allocated.fetch_add(slots * size, Ordering::Relaxed);
            let black = heap.black_buffer(m);
            if !black.is_null() {
                self.assist_debt += slots * size;
            }
            *c = ClassCache {
                meta: m,
                base: heap.space.block_start(run.first),
                word: 0,
                free: if nwords == 1 { last_mask } else { !0 },
                nwords,
                last_mask,
                black,
                owner: want_desc,
            };
            return Ok(());
        }
    }

    /// Give up every cached block without listing it (a pause's sweep
    /// start: the blocks are unswept now, and sweepers list them). Called by
    /// the collector, in the pause, while this mutator's thread is stopped
    /// outside allocation.
    pub(crate) fn flush_caches(&mut self) {
        for c in self.caches.iter_mut().chain(self.typed.iter_mut()) {
            if !c.meta.is_null() {
                // SAFETY: meta is the owned block's metadata.
                unsafe { (*c.meta).owned.store(false, Ordering::Release) };
                *c = ClassCache::EMPTY;
            }
        }
    }

    /// Give every cached block back (thread detaching; a concurrent mark's
    /// start stop, so that blocks are taken again with black allocation).
    /// Called with the heap's collection lock held.
    pub(crate) fn release_all(&mut self) {
        let caches = self.caches.iter_mut().enumerate().chain(
            // Typed caches: keyed `NUM_SPAN_CLASSES + id` here.
            self.typed.iter_mut().enumerate().map(|(id, c)| (NUM_SPAN_CLASSES + id, c)),
        );
        for (key, c) in caches {
            if c.meta.is_null() {
                continue;
            }
            // SAFETY: meta is the owned block's metadata.
            let m = unsafe { &*c.meta };
            let b = self.heap.space.block_index(c.base);
            m.owned.store(false, Ordering::Release);
            let typed_id = key.saturating_sub(NUM_SPAN_CLASSES);
            let sc = self.heap.space.kind(b).1;
            let class = split_span_class(sc).0;
            let free = slots_of(class) - m.allocated_count(slots_of(class));
            // Its free slots were counted as handed out when the block was
            // taken: they are not (whoever takes it next counts them).
            let _ = self.heap.allocated.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_sub(free * CLASS_SIZES[class]))
            });
            if free > 0 {
                self.heap.push_partial(sc, typed_id, b);
            }
            *c = ClassCache::EMPTY;
        }
    }
}

/// Allocate a fixed-size object described by `desc` on the current thread's
/// heap: zeroed, header set. Panics with a clear message if the thread is not
/// attached or the heap limit is exhausted after a full collection, and for
/// the descriptor of a Rust type (see [`try_alloc`]).
#[inline]
pub fn alloc(desc: &'static Descriptor) -> GcRef {
    match try_alloc(desc) {
        Ok(r) => r,
        Err(e) => alloc_failed(e),
    }
}

#[cold]
#[inline(never)]
fn alloc_failed(e: AllocError) -> ! {
    panic!("{e}")
}

/// Like [`alloc`], returning an error instead of panicking.
///
/// Panics (as [`alloc`] does) for the descriptor of a Rust type
/// ([`Descriptor::is_rust_type`], every `gc_type!` type): its zeroed
/// payload is no valid value of the type (a null reference); use
/// [`Gc::new`](crate::Gc::new).
#[inline]
pub fn try_alloc(desc: &'static Descriptor) -> Result<GcRef, AllocError> {
    if desc.is_rust_type() {
        rust_type_alloc_refused(desc);
    }
    try_alloc_fixed(desc)
}

#[cold]
#[inline(never)]
fn rust_type_alloc_refused(desc: &Descriptor) -> ! {
    panic!(
        "alloc of `{}`, the descriptor of a Rust type (gc_type!): its zeroed payload is no valid value of the \
         type; use Gc::new",
        desc.name()
    )
}

/// [`try_alloc`] for any fixed descriptor, a Rust type's included
/// (`Gc::try_new`, which writes the `T` before the object is seen).
#[inline(always)]
pub(crate) fn try_alloc_fixed(desc: &'static Descriptor) -> Result<GcRef, AllocError> {
    assert!(!desc.is_array(), "try_alloc: {} is an array descriptor; use try_alloc_array", desc.name());
    // Header included (none for a compact object).
    let bytes = desc.size_words() * 8 + desc.payload_offset();
    alloc_entry(desc, bytes, None)
}

/// Allocate an array of `len` elements (length stored in payload word 0).
pub fn alloc_array(desc: &'static Descriptor, len: usize) -> GcRef {
    match try_alloc_array(desc, len) {
        Ok(r) => r,
        Err(e) => alloc_failed(e),
    }
}

/// Like [`alloc_array`], returning an error instead of panicking. Panics
/// for the descriptor of a Rust type, as [`try_alloc`].
pub fn try_alloc_array(desc: &'static Descriptor, len: usize) -> Result<GcRef, AllocError> {
    if desc.is_rust_type() {
        rust_type_alloc_refused(desc);
    }
    assert!(desc.is_array(), "try_alloc_array: {} is not an array descriptor", desc.name());
    let bytes = desc.object_bytes(len).ok_or(AllocError::TooLarge)?;
    if bytes > crate::descriptor::MAX_HEAP_BYTES {
        return Err(AllocError::TooLarge);
    }
    alloc_entry(desc, bytes, Some(len))
}

/// Allocation: the fast path, then (rarely) the slow path.
#[inline(always)]
fn alloc_entry(desc: &'static Descriptor, bytes: usize, len: Option<usize>) -> Result<GcRef, AllocError> {
    match alloc_fast(desc, bytes, len) {
        Some(r) => Ok(r),
        None => alloc_slow(desc, bytes, len),
    }
}

/// The fast path. Never inlined, so that its code stays outside the
/// preemptible section (see the module docs); small, so that it needs no
/// frame worth speaking of, and returns a single register.
#[inline(never)]
fn alloc_fast(desc: &'static Descriptor, bytes: usize, len: Option<usize>) -> Option<GcRef> {
    // While this worker has a checkpoint request outstanding (a stop
    // request or quantum tick the allocation code refused), take the slow
    // path, whose entry is a cooperative point (see the module docs).
    if usurp_preempt::checkpoint_requested() && ALLOC_POLL.load(Ordering::Relaxed) {
        return None;
    }
    let m = current_mutator();
    if m.is_null() || bytes > MAX_SMALL {
        return None;
    }
    // SAFETY: the pointer was set by attach_thread on this thread and stays
    // valid until the guard (which is !Send) is dropped on this thread; no
    // other reference to the mutator exists while we allocate (allocation is
    // not reentrant: finalizers and scanners never run inside it).
    unsafe { &mut *m }.fast(span_class(class_of(bytes), desc.is_pointer_free()), desc, bytes, len)
}

/// Test-only switch (negative control of "every allocation polls for a
/// checkpoint request", issue 9 item 1): `false` makes the fast path ignore
/// outstanding requests (only a block refill polls, as before).
static ALLOC_POLL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turns the allocation fast path's poll of checkpoint requests
/// off (`false`) or on again (the default).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_alloc_poll_for_tests(on: bool) {
    ALLOC_POLL.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of "allocation is a cooperative
/// point"): `false` makes the slow path skip its checkpoint.
static ALLOC_CHECKPOINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turns the allocation slow path's checkpoint off (`false`) or
/// on again (the default).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_alloc_checkpoint_for_tests(on: bool) {
    ALLOC_CHECKPOINT.store(on, Ordering::Relaxed);
}

/// Mark assist (see `pacer.rs`): pay for `debt` bytes a slow path took
/// during a concurrent mark, in bounded calls with a cooperative point
/// between them (a stop waits for one call at most; the task may move to
/// another thread there, so the mutator is re-read at the end, where an
/// unpaid rest is put back). The object the slow path just allocated is
/// black and lives in the caller's frame, scanned if a stop comes.
///
/// At or past the goal, an assist that finds no grey object waits for
/// the collector's marker to donate some (or for the mark to end): it
/// waits inside [`World::blocking`](crate::World::blocking) (counted as
/// stopped: a stop never waits for it) until a donation, a give-back or
/// the mark's end notifies it (at most 200 µs: `pacer.rs`, "Waiting for
/// mark work"), so that allocation
/// cannot outrun the mark past the goal; below the goal it goes on and
/// pays the rest later.
#[inline(never)]
fn pay_assist_debt(heap: &HeapInner, mut debt: usize) {
    loop {
        let before = debt;
        no_preempt(|| heap.assist(&mut debt));
        if debt == 0 {
            break;
        }
        if debt == before {
            // No mark work to be had right now.
            if !heap.over_goal_while_marking() {
                break;
            }
            heap.world().blocking(&mut || heap.wait_for_mark_work());
            continue;
        }
        if ALLOC_CHECKPOINT.load(Ordering::Relaxed) {
            usurp_preempt::checkpoint();
        }
    }
    let m = current_mutator();
    if debt > 0 && !m.is_null() {
        // SAFETY: as in alloc_fast; no other reference to it is alive.
        let m = unsafe { &mut *m };
        if std::ptr::eq(&*m.heap, heap) {
            m.assist_debt += debt;
        }
    }
}

/// The slow path: a new block, a large object, a collection, or an error.
/// It starts with a cooperative point (`usurp_preempt::checkpoint()`).
///
/// A collection may switch the calling task to another thread (waiting for
/// another collection counts as blocking): the mutator is re-read after
/// every collection, never used across one.
///
/// Exhaustion (issue 10 item 7) is reported only after a full collection
/// that started after this allocation failed could not make room: when the
/// heap has no block left, the allocation waits for a collection and is
/// retried *inside that collection's pause*, right after the sweep, before
/// any other thread can take the freed memory; only if that retry fails is
/// the heap exhausted. One shortcut: if another thread's collection that
/// surely started after the failure (numbered two past the count read after
/// it: the one in progress at the failure, if any, is number one) completed
/// while we waited, the allocation first retries normally; if that fails,
/// it runs its own collection as above.
#[cold]
#[inline(never)]
fn alloc_slow(desc: &'static Descriptor, bytes: usize, len: Option<usize>) -> Result<GcRef, AllocError> {
    // A cooperative point (see the module docs): no GC lock is held and no
    // mutator reference is alive here; the loop below reads the mutator
    // after this (possible) switch. Only where allocation is allowed (a
    // thread whose allocation is forbidden, e.g. inside `blocking`, keeps
    // the request for its next real cooperative point).
    if ALLOC_CHECKPOINT.load(Ordering::Relaxed) && !current_mutator().is_null() {
        usurp_preempt::checkpoint();
    }
    let mut may_trigger = true;
    let mut rounds = 0;
    loop {
        let m = current_mutator();
        if m.is_null() {
            return Err(not_attached());
        }
        // SAFETY: as in alloc_fast. The reference dies before any collection
        // below.
        let m = unsafe { &mut *m };
        let need = match m.alloc(desc, bytes, len, may_trigger) {
            Ok(r) => {
                if m.assist_debt > 0 {
                    let debt = std::mem::take(&mut m.assist_debt);
                    let heap = m.heap.clone();
                    pay_assist_debt(&heap, debt);
                }
                return Ok(r);
            }
            Err(need) => need,
        };
        let heap = m.heap.clone();
        // The pacer asks at most once per allocation.
        may_trigger = false;
        match need {
            Need::Collect => heap.collect_for_alloc("goal"),
            Need::Checkpoint => {
                // The refill's sweep left for a request (no GC lock is
                // held, no mutator reference alive): pass the cooperative
                // point, then retry (`pacer.rs`, "Leaving for a stop").
                if ALLOC_CHECKPOINT.load(Ordering::Relaxed) {
                    usurp_preempt::checkpoint();
                }
            }
            Need::Exhausted => {
                let failed_at = heap.cycle.load(Ordering::Acquire);
                let skip_at = (rounds == 0).then_some(failed_at + 2);
                rounds += 1;
                let mut got = None;
                let ran = heap.collect_and_retry(skip_at, &mut || {
                    // On the collecting thread, in the pause: its mutator.
                    let m = current_mutator();
                    // SAFETY: as in alloc_fast; no other reference to the
                    // mutator is alive (the one above died before collecting).
                    got = (!m.is_null()).then(|| unsafe { &mut *m }.alloc(desc, bytes, len, false).ok()).flatten();
                    got.is_some()
                });
                match ran {
                    None => continue, // a fresh cycle by someone else: retry
                    Some(true) => return Ok(got.expect("the retry succeeded")),
                    Some(false) => {
                        return Err(AllocError::HeapExhausted {
                            limit: heap.space.nblocks * crate::block::BLOCK_SIZE,
                            requested: bytes,
                        })
                    }
                }
            }
        }
    }
}
