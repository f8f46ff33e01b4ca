//! Liveness checks for handles (issue 10 item 8): the process-wide table of
//! heap reservations, the check that safe [`GcRef`](crate::GcRef) /
//! [`Gc<T>`](crate::Gc) accessors run, and the `USURP_DEBUG=checkrefs=1`
//! quarantine of freed objects.
//!
//! **Why.** A `GcRef` is `Copy` and does not know its heap. One kept only in
//! Rust heap memory (a `Vec`, a `HashMap`) is invisible to the collector; its
//! object can be freed and its memory reused, and a safe accessor would then
//! read freed memory or another object's words, or take whatever header now
//! sits there for a descriptor. Safe accessors therefore first check that the
//! address is the start of a published object of the accessing thread's heap
//! (`check_for`, against its mutator's entry; another heap neither stops nor
//! scans the thread, so could free the object under the access), and panic
//! with "stale or foreign GcRef 0x…: not a live object of any usurp heap"
//! (or "another usurp heap") otherwise. `unsafe` `*_unchecked` variants skip the check for hot paths.
//!
//! **The table.** Every [`Space`](crate::space::Space) registers its
//! reservation here when it is created and unregisters before its mappings go
//! away. An entry is immutable once published (a leaked `Entry`, about 40
//! bytes per heap ever created) and a slot holds a pointer to it, so a reader
//! never sees a torn entry. Lookup walks the slots in use (usually one).
//! Limit: [`MAX_HEAPS`] heaps alive at once (`Heap::new` fails beyond).
//!
//! **The check** is what `mark::find_exact` does, on the entry's raw tables:
//! range check, block kind and class, slot boundary, and liveness
//! ([`BlockMeta::is_live`]: the object-start bit, read with Acquire so that
//! it pairs with the allocator's Release publish and the header read next is
//! initialised, and in a block not swept since the last mark its mark bit of
//! that cycle: a dead object awaiting the lazy sweep fails the check), then
//! the kind again (a lazy sweep may free the block and another thread hand
//! it out for another class meanwhile: the bit read would then belong to
//! another layout, and the "header" to another object's payload). Between the check and the access no collection can
//! free the object: the safe accessors first require the calling thread to
//! have a mutator (`GcRef::live_descriptor`: a thread the World stops — a
//! task outside `blocking()`, an attached thread — or the collector in its
//! own pause), a collection stops every such thread at a safe point, and a
//! thread that just checked a handle holds it in a register or on its stack,
//! which the collection scans conservatively; the object is kept. (This
//! table lookup itself, `GcRef::is_live`, runs on any thread: it reads only
//! side tables and a header word.)
//!
//! What the check cannot see: a stale handle whose slot was already reused by
//! a new object passes (it reads that object's words, within its bounds: no
//! undefined behaviour, but wrong data); `Gc<T>` additionally compares the
//! descriptor, so it never yields a `&T` over another type. The debug mode
//! below makes such reuse visible.
//!
//! **checkrefs** (`USURP_DEBUG=checkrefs=1`, [`HeapConfig::check_refs`](crate::HeapConfig::check_refs)):
//! the sweep does not free a dead object; it *quarantines* it: the header is
//! replaced by the [`QUARANTINED`] descriptor (pointer-free, so the marker
//! never scans it), payload word 0 keeps the original descriptor (for the
//! report) and every other word is filled with [`POISON`]. The object-start
//! bit stays set, so the slot is not reused and the check above finds the
//! object and reports "stale GcRef 0x…: its `Name` object was freed by a
//! collection". The quarantine is a FIFO bounded by a quarter of the heap
//! limit (evicted objects are freed for real at the start of a later sweep)
//! and is emptied by a collection that runs because the heap limit was
//! reached (quarantining is done by the lazy sweep, eviction in the pause;
//! under checkrefs a collection finishes the sweep before it returns, so
//! everything it found dead is quarantined by then), so checkrefs never makes an allocation fail that would succeed
//! without it. Not yet evicted objects count as allocated memory, not live
//! (`heap_alloc` includes them, `heap_live` does not); the pacer's goal
//! grows by as much, so checkrefs does not change how often it collects.
//!
//! **A heap's final drop.** A thread may hold a handle of a heap it does
//! not keep alive (`Gc<T>` is `Send`; a plain thread may ask `is_live` or
//! `payload`; roots and weak references are shaded from any thread), and
//! that heap may be dropped meanwhile, its side tables and reservation
//! unmapped: such a read once segfaulted from safe code. Every read of a
//! heap the calling thread does not keep alive pins the heap's entry
//! ([`with_pinned`]: a reader count beside a `registered` flag), and the
//! drop clears the flag and waits for the pins before the maps go; the
//! thread's own heap (its mutator's, or the heap its pause collects) needs
//! no pin. Entries are leaked, never reused, so a pin never lands on a
//! later heap at the same addresses. Alternatives rejected: leaving the
//! maps of dropped heaps mapped (address space and side-table memory for
//! every heap a process ever made), and pinning on every check (two locked
//! instructions on every dereference).

use crate::block::{BlockMeta, BLOCK_SHIFT, BLOCK_SIZE, KIND_LARGE_HEAD, KIND_SMALL};
use crate::descriptor::Descriptor;
use crate::sizeclass::{class_of_const, slot_index, span_class, split_span_class, CLASS_SIZES, SC_TYPED};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, AtomicU64, AtomicUsize, Ordering};

/// How many heaps may be alive at once.
pub const MAX_HEAPS: usize = 256;

/// The descriptor of a quarantined (freed) object under checkrefs.
pub static QUARANTINED: Descriptor = Descriptor::fixed("<freed object quarantined by usurp checkrefs>", 0, &[]);

/// The word written over a quarantined object's payload.
pub const POISON: usize = 0xdead_f1ee_dead_f1ee;

pub(crate) struct Entry {
    lo: usize,
    /// The reservation's length (`hi - lo`): it holds `[lo, lo + len)`.
    len: usize,
    kinds: *const AtomicU16,
    meta: *const BlockMeta,
    /// Per block: a typed block's descriptor (`Space::block_desc`).
    descs: *const AtomicUsize,
    /// The heap's mark generation (`Space::gen`): lives here, in the leaked
    /// entry, so that its address stays valid for a reader racing the
    /// heap's drop.
    gen: AtomicU64,
    /// The heap's value encoding (for `GcRef::value_ref` / `set_value`).
    encoding: crate::encoding::ValueEncoding,
    /// The heap's marking state as the write barrier sees it (see
    /// [`MarkShared`]); in the leaked entry for the same reason.
    mark: MarkShared,
    /// Whether the heap is registered: set by [`register`], cleared
    /// (SeqCst) by `Registration::drop` before it waits for `readers`.
    registered: AtomicBool,
    /// Threads inside [`with_pinned`] on this entry now (any thread that
    /// reads a heap it does not keep alive). Incremented (SeqCst) before a
    /// reader re-checks `registered`, decremented (Release) after its
    /// reads; the heap's drop waits for 0 after clearing `registered`
    /// (Acquire), before the maps are unmapped. On a line of its own: the
    /// fields above are read by every dereference's fast path.
    readers: ReaderCount,
}

/// [`Entry::readers`], alone on its cache line.
#[repr(align(64))]
struct ReaderCount(AtomicUsize);

// SAFETY: an entry is immutable once published; its table pointers name
// atomics (kinds, metadata, descriptor words) that any thread may read, and
// `MarkShared` is all atomics and a mutex.
unsafe impl Sync for Entry {}

/// What [`FIRST`] holds while slot 0 is empty: an empty reservation
/// (`len == 0`), which holds no address, so the fast path's range check
/// fails and the lookup goes on to the other slots.
static NO_HEAP: Entry = Entry {
    lo: 0,
    len: 0,
    kinds: std::ptr::null(),
    meta: std::ptr::null(),
    descs: std::ptr::null(),
    gen: AtomicU64::new(0),
    encoding: crate::encoding::ValueEncoding::untagged(),
    mark: MarkShared::NEW,
    registered: AtomicBool::new(false),
    readers: ReaderCount(AtomicUsize::new(0)),
};

/// Slot 0's entry, or [`NO_HEAP`] while slot 0 is empty: never null, so
/// that [`entry_holding`]'s first try (every handle check, most processes
/// having one heap) is a load and a range check, without a null test.
/// Written under `REGISTER` together with `SLOTS[0]`.
static FIRST: AtomicPtr<Entry> = AtomicPtr::new(&NO_HEAP as *const Entry as *mut Entry);

impl Entry {
    /// `addr`'s offset in this entry's reservation, if it lies there.
    #[inline(always)]
    fn offset_of(&self, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.lo);
        (off < self.len).then_some(off)
    }

    /// Whether `addr` lies in this entry's reservation.
    #[inline(always)]
    pub(crate) fn holds(&self, addr: usize) -> bool {
        self.offset_of(addr).is_some()
    }

    /// Whether this entry's heap is still registered: false from the start
    /// of its final drop on, forever (an entry is never reused, so a later
    /// heap mapped at the same addresses has an entry of its own). Relaxed:
    /// a thread that could hold another heap's object at these addresses
    /// got it through synchronisation after that heap registered, which
    /// happens after this entry's drop cleared the flag (both under
    /// `REGISTER`), so it cannot read `true` here.
    #[inline(always)]
    pub(crate) fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// Block `off >> BLOCK_SHIFT`'s kind word, metadata and descriptor
    /// word, for an offset `off < len` (as `entry_holding` returns it).
    #[inline(always)]
    fn block_tables(&self, off: usize) -> (&AtomicU16, &BlockMeta, &AtomicUsize) {
        debug_assert!(off < self.len);
        let b = off >> BLOCK_SHIFT;
        // SAFETY: off < len, so b < nblocks: the kind, meta and desc
        // maps hold nblocks entries and stay mapped while the entry is
        // registered.
        unsafe { (&*self.kinds.add(b), &*self.meta.add(b), &*self.descs.add(b)) }
    }
}

/// What the write barrier (and the other shading paths: `Root::set`,
/// `WeakRef::get`, `Heap::add_root`, `object_at`) needs of a heap while it
/// marks concurrently: whether it marks, and where shaded objects go.
pub(crate) struct MarkShared {
    /// The heap is marking (from its start stop to its termination stop):
    /// shade. Written only by the collector with the world stopped, under
    /// the collection lock; read by any mutator (the stop and start of the
    /// world order the accesses) and, inside a [`shading_section`], by
    /// threads the World does not stop (the gate orders the accesses).
    pub marking: std::sync::atomic::AtomicBool,
    /// Objects shaded (marked) by mutators that still need scanning: the
    /// grey objects the barrier found. Pushed by any mutator (in the
    /// barrier's slow path, never across a safe point), taken by the
    /// collector's markers.
    pub grey: std::sync::Mutex<Vec<usize>>,
    /// Bytes of the objects the mutators shaded in the cycle in progress
    /// (they count as live). Added by shaders, reset by the collector in the
    /// start stop.
    pub shaded_bytes: AtomicUsize,
    /// Bad pointers (conservative words into the heap naming no object)
    /// found by `Heap::shade_conservative_range` (a scheduler's resumer-side
    /// stack scans) in the cycle in progress; added to the cycle's
    /// `bad_pointers`. Added by shaders, reset by the collector in the
    /// start stop.
    pub shaded_bad_pointers: AtomicUsize,
    /// Whether this heap's collector holds the shading gate closed (see
    /// [`shading_section`]). Written only by the collector, under its
    /// collection lock.
    gate_closed: std::sync::atomic::AtomicBool,
}

/// The shading gate: threads the World does not stop enter it around their
/// shading (and around the read that found what they shade); a collector
/// closes it for the stops in which it marks. Low 32 bits: shaders inside;
/// high bits: collectors holding it closed (one count per heap, heaps
/// collect independently). Process-wide because a `Root` or `WeakRef` does
/// not know its heap and the values it shades may come from any heap.
static GATE: AtomicUsize = AtomicUsize::new(0);
const GATE_CLOSED: usize = 1 << 32;
const GATE_INSIDE: usize = GATE_CLOSED - 1;

impl MarkShared {
    /// Not marking, nothing shaded (a new heap's state, and `NO_HEAP`'s).
    #[allow(clippy::declare_interior_mutable_const)] // a fresh value at each use
    const NEW: MarkShared = MarkShared {
        marking: std::sync::atomic::AtomicBool::new(false),
        grey: std::sync::Mutex::new(Vec::new()),
        shaded_bytes: AtomicUsize::new(0),
        shaded_bad_pointers: AtomicUsize::new(0),
        gate_closed: std::sync::atomic::AtomicBool::new(false),
    };

    /// The collector, right after stopping the world for a stop in which it
    /// marks (start stop, termination stop): close the gate and wait until
    /// every shader inside has left (a shader inside never blocks on anything
    /// but a grey-list or root-table mutex, which the collector does not
    /// hold here). From then until [`MarkShared::open_gate`] no thread sets a
    /// mark bit or pushes a grey object but the collector: its exclusive
    /// (non-atomic) marking, its final drain, the weak-reference clearing
    /// and the generation flip see a heap nobody else shades. Idempotent.
    pub(crate) fn close_gate(&self) {
        if self.gate_closed.swap(true, Ordering::Relaxed) {
            return;
        }
        GATE.fetch_add(GATE_CLOSED, Ordering::SeqCst);
        let mut n = 0u32;
        while GATE.load(Ordering::Acquire) & GATE_INSIDE != 0 {
            backoff(&mut n);
        }
    }

    /// The collector, before it restarts the world (after the generation
    /// flip for the final termination stop): let shaders in again; they
    /// then see the new marking state and generation (Release, paired
    /// with their entry's read of the gate). Idempotent.
    pub(crate) fn open_gate(&self) {
        if self.gate_closed.swap(false, Ordering::Relaxed) {
            GATE.fetch_sub(GATE_CLOSED, Ordering::Release);
        }
    }
}

/// Test-only switch (negative controls): with `false`, threads outside the
/// World shade without entering the gate (the pre-fix behaviour).
static SHADING_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test support: whether threads the World does not stop go through the
/// shading gate (default `true`). Off, only for negative controls.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_shading_gate_for_tests(on: bool) {
    SHADING_GATE.store(on, Ordering::Relaxed);
}

/// Spin a little, then yield, then sleep briefly (waits for a stop's end or
/// for a shader's few instructions).
#[cold]
fn backoff(n: &mut u32) {
    *n += 1;
    if *n < 64 {
        std::hint::spin_loop();
    } else if *n < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// Runs `f` (which reads a root, weak or object table and shades what it
/// hands out or stores) so that it is atomic with respect to the
/// collector's stops, whatever the calling thread:
///
/// * A thread the World stops (it has a mutator) never is inside `f` during
///   a stop (`f` is runtime code, never preempted, with no safe point), and
///   the stop and the restart of the world order its reads of the marking
///   state (the World's contract): `f` runs directly.
/// * The collecting thread in its own pause (a root scanner, the allocation
///   retried in the pause) runs directly too: it is the only marker then.
/// * Any other thread (a plain thread, a task inside `blocking`: neither is
///   stopped) enters the gate first. If a collector holds it closed (a stop
///   in which it marks), the thread waits for the stop's end — it is not a
///   stopped thread, so it may block — and `f` then runs against the state
///   the stop left (marking on after a start stop; marking off, weak
///   references cleared and the generation flipped after a final
///   termination stop). So no such shade lands after the termination's last
///   drain (it would mark an object whose children are never scanned), no
///   atomic mark-bit set races the collector's exclusive non-atomic marking,
///   no shade spans a generation flip (it would set a bit in the next
///   cycle's buffer), and a weak reference read inside `f` is never one the
///   termination is about to clear: its target was either reached by the
///   mark or shaded before the last drain.
///
/// Cost outside a stop: a non-inlined TLS read (two in the rare case), and
/// for threads outside the World two atomic RMWs on one shared word.
///
/// A mutator vouches only for its own heap (another heap's stops do not
/// stop its thread), and `f` may touch any heap (a root, weak reference or
/// object of another runtime's heap): so a thread with a mutator runs `f`
/// directly only while one heap is registered; with several, it takes the
/// gate too (it cannot be inside `f` when its own heap's collector closes
/// the gate: that collector has stopped it, and `f` has no safe point).
/// The collecting thread in its pause still runs directly (it holds the
/// gate closed itself); the accessors refuse it other heaps' objects.
#[inline(never)]
pub(crate) fn shading_section<R>(f: impl FnOnce() -> R) -> R {
    if (!crate::mutator::current_mutator().is_null() && LIVE_HEAPS.load(Ordering::SeqCst) <= 1)
        || crate::heap::in_pause()
        || !SHADING_GATE.load(Ordering::Relaxed)
    {
        return f();
    }
    if IN_SECTION.with(|c| c.get()) {
        // Nested (a section that shades inside an outer one): already
        // inside; entering again could wait for a collector that waits
        // for us.
        return f();
    }
    let mut n = 0u32;
    loop {
        if GATE.fetch_add(1, Ordering::SeqCst) < GATE_CLOSED {
            break;
        }
        GATE.fetch_sub(1, Ordering::SeqCst);
        while GATE.load(Ordering::Acquire) >= GATE_CLOSED {
            backoff(&mut n);
        }
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_SECTION.with(|c| c.set(false));
            GATE.fetch_sub(1, Ordering::Release);
        }
    }
    let _leave = Leave;
    IN_SECTION.with(|c| c.set(true));
    f()
}

thread_local! {
    /// Whether this thread is inside the gate (`shading_section`): nested
    /// sections run directly. Written only by its thread.
    static IN_SECTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test support: the first heap address of slot 0's entry and of the entry
/// the lookups try first (`FIRST`), read together under the registration
/// lock; 0 for an empty slot and for `NO_HEAP`. Equal, always.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn handle_table_slot_0_for_tests() -> (usize, usize) {
    let _g = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: as in `entry_holding` and `entries`.
    let slot0 = unsafe { SLOTS[0].load(Ordering::Acquire).as_ref() }.map_or(0, |e| e.lo);
    // SAFETY: as in `entry_holding`.
    (slot0, unsafe { &*FIRST.load(Ordering::Acquire) }.lo)
}

/// Slot i: the entry of a live reservation or null. Written under `REGISTER`.
static SLOTS: [AtomicPtr<Entry>; MAX_HEAPS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_HEAPS];
/// Slots ever used (readers scan `0..USED`). Written under `REGISTER`.
static USED: AtomicUsize = AtomicUsize::new(0);
/// Heaps registered now. Written under `REGISTER` (SeqCst), read by
/// `shading_section`: a thread's mutator vouches for one heap only, so
/// with several heaps alive every thread takes the gate.
static LIVE_HEAPS: AtomicUsize = AtomicUsize::new(0);
static REGISTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A reservation's membership in the table; unregisters on drop.
pub struct Registration {
    slot: usize,
    /// The heap's entry (leaked: never freed). A mutator of this heap
    /// keeps it (`Mutator::entry`): its thread's safe accessors accept
    /// objects of this entry only (`check_for`, `is_live_as`).
    pub(crate) entry: &'static Entry,
    /// The entry's mark generation (`Space::gen`).
    pub(crate) gen: &'static AtomicU64,
    /// The entry's marking state (`Space::mark`).
    pub(crate) mark: &'static MarkShared,
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let _g = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
            // New pins fail from here on (see `with_pinned`).
            self.entry.registered.store(false, Ordering::SeqCst);
            // The entry is leaked on purpose: a reader may still hold it.
            SLOTS[self.slot].store(std::ptr::null_mut(), Ordering::Release);
            LIVE_HEAPS.fetch_sub(1, Ordering::SeqCst);
            crate::barrier::NEW_OBJECT_WORK.fetch_sub(1, Ordering::SeqCst);
            if self.slot == 0 {
                FIRST.store(&NO_HEAP as *const Entry as *mut Entry, Ordering::Release);
            }
        }
        // The pins taken while it was registered end before the heap's maps
        // go (the `Space` unmaps them after this drop): their reads are a
        // few loads each, never a wait.
        let mut n = 0;
        while self.entry.readers.0.load(Ordering::SeqCst) != 0 {
            backoff(&mut n);
        }
    }
}

/// Register the reservation `[lo, hi)` with its side tables (which must stay
/// mapped until the returned guard is dropped).
pub(crate) fn register(
    lo: usize,
    hi: usize,
    kinds: *const AtomicU16,
    meta: *const BlockMeta,
    descs: *const AtomicUsize,
    encoding: crate::encoding::ValueEncoding,
) -> std::io::Result<Registration> {
    let _g = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slot) = SLOTS.iter().position(|s| s.load(Ordering::Relaxed).is_null()) else {
        return Err(std::io::Error::other(format!(
            "more than {MAX_HEAPS} usurp heaps alive at once (the handle-check table is full)"
        )));
    };
    let mark = MarkShared::NEW;
    // `is_live_as` relies on it for alignment (no `addr % 8` test).
    assert!(lo % BLOCK_SIZE == 0 && hi >= lo, "a heap reservation [{lo:#x}, {hi:#x}) not block aligned");
    let e = Box::into_raw(Box::new(Entry {
        lo,
        len: hi - lo,
        kinds,
        meta,
        descs,
        gen: AtomicU64::new(0),
        encoding,
        mark,
        registered: AtomicBool::new(true),
        readers: ReaderCount(AtomicUsize::new(0)),
    }));
    SLOTS[slot].store(e, Ordering::Release);
    LIVE_HEAPS.fetch_add(1, Ordering::SeqCst);
    crate::barrier::NEW_OBJECT_WORK.fetch_add(1, Ordering::SeqCst);
    if slot == 0 {
        FIRST.store(e, Ordering::Release);
    }
    if slot >= USED.load(Ordering::Relaxed) {
        USED.store(slot + 1, Ordering::Release);
    }
    // SAFETY: the entry is leaked (never freed).
    Ok(Registration { slot, entry: unsafe { &*e }, gen: unsafe { &(*e).gen }, mark: unsafe { &(*e).mark } })
}

/// Shade `addr` (the write barrier's slow path and the other shading paths,
/// see [`MarkShared`]): if it is a live object of a heap that is marking
/// and the mark in progress has not marked it yet, mark it (an atomic RMW on
/// the mark word: markers and allocation set bits of the same words) and
/// queue it for scanning unless it is pointer-free. Anything else (0, a
/// word outside every heap, a heap not marking) is ignored. Never blocks on
/// anything but the heap's grey list (held for a push or a take, never
/// across a safe point).
#[inline(never)]
pub(crate) fn shade(addr: usize) {
    shade_from(Own::Unknown, addr)
}

/// The caller's own heap for [`shade_from`]: looked up when needed, or
/// already known (`own_entry()`'s answer, for a caller that shades several
/// words: one thread-local read instead of one per word).
#[derive(Clone, Copy)]
pub(crate) enum Own {
    Unknown,
    Known(Option<&'static Entry>),
}

/// The [`Own`] of a thread that just allocated `obj`: the heap holding it
/// (a range check on the first entry, no thread-local read), which the
/// allocating thread's mutator keeps alive.
#[inline]
pub(crate) fn own_of_new_object(obj: usize) -> Own {
    Own::Known(entry_holding(obj).map(|(e, _)| e))
}

/// [`shade`], with the caller's own heap (see [`Own`]).
#[inline]
pub(crate) fn shade_from(own: Own, addr: usize) {
    if addr == 0 {
        return;
    }
    if let Some((e, off)) = entry_holding(addr) {
        if !e.mark.marking.load(Ordering::Acquire) || addr % 8 != 0 {
            return;
        }
        // The block tables are read next: the thread's own heap is mapped
        // while its mutator (or pause) lives; any other heap is pinned
        // (a heap being dropped does not mark: nothing to shade).
        let own = match own {
            Own::Known(o) => o,
            Own::Unknown => own_entry(),
        };
        if own.is_some_and(|own| std::ptr::eq(own, e)) {
            shade_in(e, addr, off);
        } else {
            // The entry whose `marking` was just read (a second look-up
            // could find a newer heap at the same addresses).
            pinned(e, || shade_in(e, addr, off));
        }
    }
}

/// [`shade`]'s work in entry `e` (marking), which holds `addr` at `off`;
/// its heap is mapped for the call (own or pinned).
fn shade_in(e: &Entry, addr: usize, off: usize) {
    let (kind, m, _) = e.block_tables(off);
    let v = kind.load(Ordering::Acquire);
    let boff = off & (BLOCK_SIZE - 1);
    let gen = e.gen.load(Ordering::Acquire);
    let (slot, size, noscan) = match v as u8 {
        KIND_SMALL => {
            let (c, noscan) = split_span_class((v >> 8) as usize & !SC_TYPED);
            let slot = slot_index(c, boff);
            if slot * CLASS_SIZES[c] != boff {
                return;
            }
            (slot, CLASS_SIZES[c], noscan)
        }
        KIND_LARGE_HEAD if boff == 0 => {
            (0, m.link.load(Ordering::Relaxed) as usize * BLOCK_SIZE, (v >> 8) != 0)
        }
        _ => return,
    };
    // While a heap marks, every block is swept for `gen` and none is
    // freed (sweeping waits for the next generation), so the kind read
    // above stays the block's kind.
    if !m.is_live(slot, gen) {
        return;
    }
    if m.try_mark(((gen + 1) % 2) as usize, slot) {
        e.mark.shaded_bytes.fetch_add(size, Ordering::Relaxed);
        if !noscan {
            // Tagged like the markers' own entries (a typed block's
            // object: bit 0, see `mark.rs`).
            let tag = (v >> 15) as usize;
            e.mark.grey.lock().unwrap_or_else(|p| p.into_inner()).push(addr | tag);
        }
    }
}

/// The value barrier's shading (`usurp_gc_write_barrier_value`'s slow
/// path): decode the overwritten value `old` and the stored value `new` of
/// a value slot with the encoding of the heap holding `holder` (the
/// barrier's `obj`, or the slot's own address when the caller passed no
/// object), found in this table as [`shade`] finds a heap, and shade the
/// objects they name. An immediate, a null pointer, or a pointer-tagged
/// word that decodes to no live object is ignored (`shade` ignores it; the
/// marker counts it as a bad value if it stays in a heap slot). A `holder`
/// outside every heap (a value word the JIT keeps elsewhere) is decoded
/// with the encoding of each heap that marks. A heap that does not mark
/// costs no decoding.
#[inline(never)]
pub(crate) fn shade_values(holder: usize, old: usize, new: usize) {
    if let Some((e, _)) = entry_holding(holder) {
        if e.mark.marking.load(Ordering::Acquire) {
            shade_decoded(&e.encoding, old, new);
        }
        return;
    }
    for e in entries() {
        if e.mark.marking.load(Ordering::Acquire) {
            shade_decoded(&e.encoding, old, new);
        }
    }
}

/// [`shade`] what `old` and `new` decode to under `enc`.
fn shade_decoded(enc: &crate::encoding::ValueEncoding, old: usize, new: usize) {
    for w in [old, new] {
        if let Some(a) = enc.decode(w) {
            shade(a);
        }
    }
}

/// Why a handle failed the check.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bad {
    /// Not the start of a published object of any heap.
    NotLive,
    /// An object of another heap than the accessing thread's (`check_for`).
    OtherHeap,
    /// A quarantined (freed) object that had this descriptor.
    Freed(&'static Descriptor),
}

/// The heap whose objects the current thread may access: its mutator's,
/// or, on a collecting thread in its pause, the collected heap's (`None`
/// on any other thread, which may access no heap's objects).
#[inline]
pub(crate) fn own_entry() -> Option<&'static Entry> {
    // SAFETY: null or an entry, which is leaked (never freed).
    unsafe { crate::mutator::current_entry().as_ref() }.or_else(crate::heap::pause_entry)
}

/// Whether more than one heap is registered now. Relaxed: a handle of
/// another heap reached this thread through some synchronisation after
/// that heap registered, which orders the increment before this load.
#[inline(always)]
pub(crate) fn several_heaps() -> bool {
    LIVE_HEAPS.load(Ordering::Relaxed) > 1
}

/// Test support: heaps registered now, and `barrier::NEW_OBJECT_WORK`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn live_heaps_for_tests() -> (usize, usize) {
    (LIVE_HEAPS.load(Ordering::SeqCst), crate::barrier::NEW_OBJECT_WORK.load(Ordering::SeqCst))
}

/// With several heaps alive (see [`several_heaps`]): refuse a new object
/// of this thread's heap (`Gc::new`, right after its value was written)
/// whose reference fields name another heap's objects, as `Member::set`
/// and `set_value` refuse such stores. That heap would not see the
/// reference and could free its target, and this heap's marking never
/// follows it: without this, the first read of the field would be the
/// first to notice. Every offending word is cleared before the panic (the
/// object is garbage then: its handle never reaches the caller). Only the
/// heap identity is checked (a stale handle, or a word outside every heap,
/// is refused when it is read).
///
/// # Safety
/// `payload` is the payload of an object of this thread's heap with
/// descriptor `d` (not an array), just written and not yet shared.
#[cold]
#[inline(never)]
pub(crate) unsafe fn refuse_foreign_fields(payload: *mut usize, d: &Descriptor) {
    // No mutator: the allocation would have failed.
    let Some(e) = own_entry() else { return };
    // Another heap's reservation only: a word outside every heap is what
    // it was before (marking counts it as bad, a read refuses it), with one
    // heap or several alike.
    // SAFETY: per the contract.
    if let Some((i, a)) = unsafe { clear_fields_where(payload, d, e, |a| !e.holds(a) && entry_holding(a).is_some()) } {
        foreign_field(d, i, a);
    }
}

/// The reference words (pointer slots, and value slots decoded with the
/// heap's encoding) of a new object's payload, per its descriptor `d`:
/// every one holding an address `a` (not null) with `bad(a)` is cleared;
/// returns the first of them (its word index and address). The walk of
/// [`refuse_foreign_fields`] and [`refuse_stale_fields`].
///
/// # Safety
/// As [`refuse_foreign_fields`]; `e` is this thread's heap's entry.
unsafe fn clear_fields_where(
    payload: *mut usize,
    d: &Descriptor,
    e: &Entry,
    bad: impl Fn(usize) -> bool,
) -> Option<(usize, usize)> {
    let mut first = None;
    d.for_each_reference_word(0, |i, value| {
        // SAFETY: i is a payload word of the object (its descriptor's).
        let slot = unsafe { &*(payload.add(i) as *const AtomicUsize) };
        let w = slot.load(Ordering::Relaxed);
        let a = if value {
            match e.encoding.decode(w) {
                Some(a) => a,
                None => return,
            }
        } else {
            w
        };
        if a != 0 && bad(a) {
            slot.store(0, Ordering::Relaxed);
            first.get_or_insert((i, a));
        }
    });
    first
}

/// Heaps alive with `checkrefs` (`HeapConfig::check_refs`): while any is,
/// `Gc::new` also refuses fields holding a stale handle of the thread's
/// heap ([`refuse_stale_fields`]). Each such heap adds 1 to
/// `barrier::NEW_OBJECT_WORK` too, so that `Gc::new` takes its slow path
/// (the default costs nothing more: the same load and branch).
pub(crate) static CHECK_REFS_HEAPS: AtomicUsize = AtomicUsize::new(0);

/// Held by a heap with `checkrefs` for its lifetime: counts it in
/// [`CHECK_REFS_HEAPS`] and `NEW_OBJECT_WORK`.
pub(crate) struct CheckRefsHeap(bool);

impl CheckRefsHeap {
    pub(crate) fn new(on: bool) -> CheckRefsHeap {
        if on {
            CHECK_REFS_HEAPS.fetch_add(1, Ordering::SeqCst);
            crate::barrier::NEW_OBJECT_WORK.fetch_add(1, Ordering::SeqCst);
        }
        CheckRefsHeap(on)
    }
}

impl Drop for CheckRefsHeap {
    fn drop(&mut self) {
        if self.0 {
            crate::barrier::NEW_OBJECT_WORK.fetch_sub(1, Ordering::SeqCst);
            CHECK_REFS_HEAPS.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// `Gc::new` under `checkrefs` ([`CHECK_REFS_HEAPS`]): refuses a field
/// (pointer or value word) holding a stale handle of this thread's heap,
/// i.e. an address in its reservation that is no live object (its object
/// was freed; under checkrefs a freed object stays quarantined, so this is
/// reliable), as `Member::set` and the rooting calls do: stored, the field
/// would name whatever object is later put there. The field is cleared
/// first (the new object is garbage then). Without checkrefs the fields of
/// a new object are not checked for staleness (one check per field on
/// every allocation; see README "Stale handles").
///
/// # Safety
/// As [`refuse_foreign_fields`].
#[cold]
#[inline(never)]
pub(crate) unsafe fn refuse_stale_fields(payload: *mut usize, d: &Descriptor) {
    let Some(e) = own_entry() else { return };
    // An address in this heap's reservation that is no live object.
    let stale = |a: usize| e.offset_of(a).is_some_and(|off| check_in(e, a, off).is_err());
    // SAFETY: per the contract; `e` is this thread's heap's entry.
    if let Some((i, a)) = unsafe { clear_fields_where(payload, d, e, stale) } {
        stale_field(d, i, a);
    }
}

#[cold]
#[inline(never)]
fn stale_field(d: &Descriptor, i: usize, a: usize) -> ! {
    panic!(
        "Gc::new of a `{}`: payload word {i} holds {a:#x}, a stale handle (not a live object of this heap: its \
         object was freed); stored, it would name whatever object is put there later",
        d.name()
    )
}

#[cold]
#[inline(never)]
fn foreign_field(d: &Descriptor, i: usize, a: usize) -> ! {
    panic!(
        "Gc::new of a `{}`: payload word {i} holds {a:#x}, an object of another usurp heap than this \
         thread's: a GC handle must not cross runtimes (that heap neither sees the reference nor stops \
         this thread); copy the data instead",
        d.name()
    )
}

/// [`check_for`] against [`own_entry`] (the general check where it has
/// none: the caller has refused such threads already).
pub(crate) fn check_own(addr: usize) -> Result<&'static Descriptor, Bad> {
    match own_entry() {
        Some(own) => check_for(addr, own),
        None => check(addr),
    }
}

/// [`check`] for an access by a thread with a mutator of the heap whose
/// entry is `own`: an object of any other heap is refused
/// ([`Bad::OtherHeap`]). That heap's collections neither stop nor scan
/// this thread, so nothing would keep it from freeing the object (or the
/// whole heap, its side tables unmapped) between the check and the
/// access; `own` stays registered and mapped while the mutator lives.
#[inline]
pub(crate) fn check_for(addr: usize, own: &'static Entry) -> Result<&'static Descriptor, Bad> {
    match own.offset_of(addr) {
        Some(off) => check_in(own, addr, off),
        None if entry_holding(addr).is_some() => Err(Bad::OtherHeap),
        None => Err(Bad::NotLive),
    }
}

/// The descriptor of the live object starting at `addr`, or why there is none.
/// Any heap's object, from any thread: the thread's own heap as it is,
/// another heap pinned (a heap being dropped holds nothing). Never inlined
/// (see [`with_pinned`]).
#[inline(never)]
pub(crate) fn check(addr: usize) -> Result<&'static Descriptor, Bad> {
    if let Some(own) = own_entry() {
        if let Some(off) = own.offset_of(addr) {
            return check_in(own, addr, off);
        }
    }
    with_pinned(addr, |e, off| check_in(e, addr, off)).unwrap_or(Err(Bad::NotLive))
}

/// The check of a handle given to the root and weak-reference APIs
/// (`Heap::add_root`, `Root::set`, `Heap::weak`) against the one heap whose
/// table would hold the slot, entry `e`: `None` if that heap was dropped
/// (or is being dropped), `Some(Err(OtherHeap))` if `addr` lies outside its
/// reservation, else [`check_in`]'s answer (a stale handle: `NotLive` or
/// `Freed`). From any thread: `e` as it is if it is the thread's own heap,
/// pinned otherwise. On a thread the World does not stop the answer is a
/// snapshot (nothing keeps the object from being freed right after), as
/// for [`check`]; the callers run it inside their `shading_section`, so it
/// never reads the tables in the middle of a marking stop.
#[inline(never)]
pub(crate) fn check_in_heap(e: &'static Entry, addr: usize) -> Option<Result<&'static Descriptor, Bad>> {
    let Some(off) = e.offset_of(addr) else {
        return Some(Err(Bad::OtherHeap));
    };
    if own_entry().is_some_and(|own| std::ptr::eq(own, e)) {
        return Some(check_in(e, addr, off));
    }
    pinned(e, || check_in(e, addr, off))
}

/// [`check`] in entry `e`, which holds `addr` at offset `off`.
#[inline]
fn check_in(e: &Entry, addr: usize, off: usize) -> Result<&'static Descriptor, Bad> {
    match is_object_start(e, addr, off) {
        // A typed block's object: its block's descriptor (compact objects
        // have no header, and are never quarantined).
        // SAFETY: a typed block's word is a &'static Descriptor.
        Some(bd) if bd != 0 => Ok(unsafe { &*(bd as *const Descriptor) }),
        Some(_) => header(addr),
        None => Err(Bad::NotLive),
    }
}

/// What the deref fast path ([`is_live_as`]) expects of an object of a
/// given size and layout: its block's kind word (noscan bit cleared: a
/// `Gc<T>` does not know whether `T`'s descriptor is pointer-free, and
/// either block holds valid objects of the class) and the class's slot size
/// and reciprocal. Computed at compile time per `T` (`object.rs`,
/// `Shape::<T>::FAST`), so none of them is loaded at run time.
#[derive(Clone, Copy)]
pub(crate) struct FastShape {
    kind: u16,
    size: u64,
    recip: u64,
    /// `log2(size)` if `size` is a power of two (the slot index is then a
    /// shift and the boundary test a mask), else 0 (a multiplication by
    /// `recip`).
    shift: u32,
}

impl FastShape {
    /// The slot starting at offset `off` of a reservation (`off % BLOCK_SIZE`
    /// into its block) in a block of this shape's class; `None` if `off` is
    /// not a slot boundary.
    #[inline(always)]
    fn slot_at(self, off: usize) -> Option<usize> {
        let boff = off & (BLOCK_SIZE - 1);
        if self.shift != 0 {
            // A power-of-two slot size (and a block-aligned block): a mask
            // and a shift.
            (off & (self.size as usize - 1) == 0).then_some(boff >> self.shift)
        } else {
            let slot = ((boff as u64 * self.recip) >> 32) as usize;
            (slot * self.size as usize == boff).then_some(slot)
        }
    }
}

/// The kind word's noscan bit (span class `2 * class + noscan`, shifted).
const KIND_NOSCAN: u16 = 1 << 8;

/// The [`FastShape`] of objects of `bytes` bytes (header included; none for
/// a compact object) of a compact or headered layout; `None` for large
/// objects (they take the general check).
pub(crate) const fn fast_shape(bytes: usize, compact: bool) -> Option<FastShape> {
    let Some(c) = class_of_const(bytes) else {
        return None;
    };
    let sc = span_class(c, false) | if compact { SC_TYPED } else { 0 };
    let size = CLASS_SIZES[c] as u64;
    // `is_live_as` relies on it for alignment (no `addr % 8` test).
    assert!(size % 8 == 0 && size >= 8);
    let shift = if size.is_power_of_two() { size.trailing_zeros() } else { 0 };
    Some(FastShape { kind: KIND_SMALL as u16 | (sc as u16) << 8, size, recip: (1u64 << 32) / size + 1, shift })
}

/// Whether `check(addr)` would answer `Ok(d)`, on a shorter path (`Gc<T>`
/// dereferences, issue 9: the check was about 30% of binary-trees' CPU, and
/// a safe walk over a linked list ran 10x slower than Go's). `check`
/// decodes the block's kind word into a size class and then loads that
/// class's slot size and reciprocal: a chain of dependent loads and about
/// 70 instructions on every dereference. Here the kind word, slot size and
/// reciprocal are constants of `T` (`shape`), the bitmap word's address
/// follows from `addr` alone, and the object's identity is one comparison
/// with `d`'s address.
///
/// `true` only where `check` answers `Ok(d)`, with the same reads (the
/// liveness bits in another order): kind and descriptor word; slot
/// boundary; liveness (by
/// [`BlockMeta::is_live_fast`], which reads the sweep state first and then
/// one bitmap word where the block was swept since the last mark, as it
/// usually is); the kind and descriptor word again; then the typed block's
/// descriptor word or the header, which must be `d`. A block whose kind
/// matches `shape` has the class `shape` was computed for, so the slot
/// geometry is the block's own; `d`'s identity is checked exactly, so the
/// cleared noscan bit admits nothing more. If `shape` is not `d`'s (a
/// hand-written `GcType` whose descriptor is of a larger size class than
/// the type), the kind does not match: `false`; within the same class the
/// geometry is the block's own and the identity check decides, as in
/// `check`. (`d` is never `QUARANTINED`, which is private to this module.)
///
/// Only objects of `own`'s heap (the accessing thread's mutator's, as
/// `check_for`): the range check is against `own` alone, so no table of
/// heaps is read either.
///
/// `false` says nothing: another kind of block, a stale or foreign handle,
/// an object of another heap, a quarantined object (its header is
/// `QUARANTINED`). The caller then runs `check_for` for the answer (and
/// its panic message).
#[inline(always)]
pub(crate) fn is_live_as(addr: usize, d: &'static Descriptor, shape: FastShape, own: &'static Entry) -> bool {
    let e = own;
    let Some(off) = e.offset_of(addr) else {
        return false;
    };
    // (No `addr % 8` test: the slot-boundary test below implies it. `lo`
    // is block aligned (`register` asserts it) and every class size is a
    // multiple of 8 (`fast_shape` asserts it), so an offset that is a
    // whole number of slots into its block is a multiple of 8, and so is
    // `addr`: the header read at the end is aligned.)
    let (kind, m, desc) = e.block_tables(off);
    let v = kind.load(Ordering::Acquire);
    let bd = desc.load(Ordering::Acquire);
    let d_addr = d as *const Descriptor as usize;
    let typed = shape.kind & (SC_TYPED as u16) << 8 != 0;
    // The block's descriptor word for a `d` object: `d` in a typed block
    // (compact objects), 0 in an untyped one (headered objects).
    let want_bd = if typed { d_addr } else { 0 };
    if v | KIND_NOSCAN != shape.kind | KIND_NOSCAN || bd != want_bd {
        return false;
    }
    let Some(slot) = shape.slot_at(off) else {
        return false;
    };
    if !m.is_live_fast(slot, e.gen.load(Ordering::Acquire)) {
        return false;
    }
    // The re-reads of `is_object_start` (a lazy sweep may have freed the
    // block and another thread handed it out again meanwhile). The
    // descriptor word was `want_bd` on the first read.
    if kind.load(Ordering::Acquire) != v || (desc.load(Ordering::Acquire) != want_bd && !desc_recheck_off()) {
        return false;
    }
    // A typed block's descriptor word was `d`, twice: a `d` object. Else
    // the header decides.
    // SAFETY: as in `header`: a published object (its start bit was read
    // with Acquire), so its first word is initialised; `addr` is aligned
    // (above). A quarantined object's header is `QUARANTINED`, never `d`.
    typed || unsafe { (addr as *const usize).read() } == d_addr
}

/// Whether `addr` is a live `T` of `own`'s heap by [`is_live_as`] with
/// `T`'s compile-time shape (`Gc<T>::deref`'s fast path); `false` (the
/// general check decides) for a `T` without one (a large object).
#[inline(always)]
pub(crate) fn is_live_as_type<T: crate::GcType>(addr: usize, own: &'static Entry) -> bool {
    match crate::object::fast_shape_of::<T>() {
        Some(shape) => is_live_as(addr, T::descriptor(), shape, own),
        None => false,
    }
}

/// Test support: whether `Gc<T>::deref`'s fast path accepts `r` as a live
/// `T` (`is_live_as` with the current thread's mutator's heap; `false` on
/// a thread without a mutator, and wherever it sends a dereference to the
/// general check).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn deref_fast_path_for_tests<T: crate::GcType>(r: crate::GcRef) -> bool {
    // SAFETY: null or an entry, which is leaked (never freed).
    unsafe { crate::mutator::current_entry().as_ref() }.is_some_and(|e| is_live_as_type::<T>(r.addr(), e))
}

/// The descriptor and payload address of the object at `addr`, read from
/// the side tables of the heap holding it (a typed block's descriptor) or
/// its header, without any liveness check (`GcRef::payload`,
/// `descriptor_unchecked`, the barrier's shading of a new object). An
/// address outside every heap is taken for a headered object.
///
/// # Safety
/// `addr` is a live object (the header of a headered one is read).
#[inline]
pub(crate) unsafe fn layout_of(addr: usize) -> (&'static Descriptor, usize) {
    let bd = block_desc_of(addr);
    // SAFETY: the caller guarantees a live object; bd is its block's word.
    unsafe { crate::descriptor::object_layout(addr, bd) }
}

/// The descriptor word of the block holding `addr` (0 outside every heap
/// and for untyped blocks). Reads side tables only, unpinned: for callers
/// whose heap stays mapped (a live object's, per their contract).
#[inline]
pub(crate) fn block_desc_of(addr: usize) -> usize {
    entry_holding(addr).map_or(0, |(e, off)| block_desc_in(e, off))
}

/// [`block_desc_of`] for any address from any thread: pinned (0 for a heap
/// being dropped).
#[inline(never)]
pub(crate) fn block_desc_of_pinned(addr: usize) -> usize {
    with_pinned(addr, block_desc_in).unwrap_or(0)
}

/// The descriptor word of the block at offset `off` of `e`.
#[inline(always)]
fn block_desc_in(e: &Entry, off: usize) -> usize {
    // SAFETY: off < len, so the block index is < nblocks (see
    // `is_object_start`).
    unsafe { &*e.descs.add(off >> BLOCK_SHIFT) }.load(Ordering::Acquire)
}

/// Test support: the start of the block holding `addr` and its typed
/// descriptor (`None` for an untyped block), if `addr` is in a heap.
#[inline(never)]
pub(crate) fn block_info(addr: usize) -> Option<(usize, Option<&'static Descriptor>)> {
    with_pinned(addr, |e, off| {
        let bd = block_desc_in(e, off);
        // SAFETY: a typed block's word is a &'static Descriptor.
        (e.lo + (off & !(BLOCK_SIZE - 1)), (bd != 0).then(|| unsafe { &*(bd as *const Descriptor) }))
    })
}

/// The value encoding of the heap whose reservation holds `addr`.
#[inline]
pub(crate) fn encoding_of(addr: usize) -> Option<crate::encoding::ValueEncoding> {
    entry_holding(addr).map(|(e, _)| e.encoding)
}

/// Every published entry (the table's registered heaps).
#[inline(always)]
fn entries() -> impl Iterator<Item = &'static Entry> {
    let used = USED.load(Ordering::Acquire);
    SLOTS[..used].iter().filter_map(|s| {
        // SAFETY: published entries are immutable and never freed (a slot
        // is only cleared, never its entry deallocated).
        unsafe { s.load(Ordering::Acquire).as_ref() }
    })
}

/// Runs `f` on the entry whose reservation holds `addr` (and `addr`'s
/// offset), pinned: the heap's final drop does not unmap its tables or its
/// reservation before `f` returns (see [`Entry::readers`]). `None` if no
/// registered heap holds `addr`, or its heap is being dropped. For reads
/// by a thread that may not keep that heap alive (a plain thread's query,
/// a root or weak reference shaded from any thread); a mutator's own heap
/// (and the heap a pause collects) needs no pin.
///
/// The protocol: the reader increments `readers`, then loads `registered`
/// (both SeqCst); the drop stores `registered = false`, then loads
/// `readers` (both SeqCst). In the single order of SeqCst operations,
/// either the reader's load comes after the drop's store (it sees false
/// and reads nothing) or its increment comes before the drop's load (the
/// drop waits for its decrement, a Release that the drop's load acquires,
/// so the reads happen before the unmapping). The entry is never reused
/// for another heap (leaked), so a pin cannot land on a successor.
///
/// Its callers are never inlined into the caller's crate (`#[inline(never)]`
/// or only reached from such functions): inlined into a `preemptible!`
/// function, a pin could be held across an asynchronous preemption, and a
/// drop of that heap by another task of the same worker would wait for it
/// forever (found by the review).
#[inline]
fn with_pinned<R>(addr: usize, f: impl FnOnce(&'static Entry, usize) -> R) -> Option<R> {
    let (e, off) = entry_holding(addr)?;
    pinned(e, || f(e, off))
}

/// [`with_pinned`] on an entry already looked up (`None` if its heap is
/// being dropped).
#[inline]
fn pinned<R>(e: &'static Entry, f: impl FnOnce() -> R) -> Option<R> {
    if PIN_OFF.load(Ordering::Relaxed) {
        // Negative control: no pin (the reads race the drop as before).
        slow_reader();
        return Some(f());
    }
    struct Unpin(&'static Entry);
    impl Drop for Unpin {
        fn drop(&mut self) {
            self.0.readers.0.fetch_sub(1, Ordering::Release);
        }
    }
    e.readers.0.fetch_add(1, Ordering::SeqCst);
    let _unpin = Unpin(e);
    if !e.registered.load(Ordering::SeqCst) {
        return None;
    }
    slow_reader();
    Some(f())
}

/// Fault injection (`set_table_pin_for_tests`): a reader slow between its
/// look-up and its reads, until the test releases it
/// (`release_slow_readers_for_tests`, or 10 s), so that a drop comes in
/// between.
#[inline]
fn slow_reader() {
    if PIN_SLOW_READER.load(Ordering::Relaxed) {
        SLOW_READERS.fetch_add(1, Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        while !SLOW_READERS_RELEASED.load(Ordering::SeqCst) && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Set by `release_slow_readers_for_tests`, cleared by
/// `set_table_pin_for_tests`.
static SLOW_READERS_RELEASED: AtomicBool = AtomicBool::new(false);

/// Test support: lets the readers held in the injected delay go on.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn release_slow_readers_for_tests() {
    SLOW_READERS_RELEASED.store(true, Ordering::SeqCst);
}

/// Readers that entered [`slow_reader`]'s sleep so far (test support: the
/// test drops the heap once its reader is inside).
static SLOW_READERS: AtomicUsize = AtomicUsize::new(0);

/// Test support: how many readers entered the injected sleep of
/// `set_table_pin_for_tests(_, true)` (after their look-up and, with the
/// pin on, after pinning).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn slow_readers_for_tests() -> usize {
    SLOW_READERS.load(Ordering::SeqCst)
}

/// Test switches of [`with_pinned`] (`set_table_pin_for_tests`).
static PIN_OFF: AtomicBool = AtomicBool::new(false);
static PIN_SLOW_READER: AtomicBool = AtomicBool::new(false);

/// Test support: `pinned = false` turns the pin of [`with_pinned`] off (the
/// negative control: reads of another thread's heap race its drop again);
/// `slow_reader` holds every such reader between its look-up and its reads
/// until `release_slow_readers_for_tests` (or 10 s), so that a concurrent
/// drop falls in between.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_table_pin_for_tests(pinned: bool, slow_reader: bool) {
    PIN_OFF.store(!pinned, Ordering::SeqCst);
    SLOW_READERS_RELEASED.store(false, Ordering::SeqCst);
    PIN_SLOW_READER.store(slow_reader, Ordering::SeqCst);
}

/// The entry whose reservation holds `addr`, and `addr`'s offset in it.
/// Slot 0 is tried first ([`FIRST`]: no slot count, no null test), as most
/// processes have one heap, registered there, and this runs on every
/// handle check (a `Gc<T>` dereference); then every slot in use (slot 0
/// again).
#[inline(always)]
fn entry_holding(addr: usize) -> Option<(&'static Entry, usize)> {
    let holds = |e: &'static Entry| e.offset_of(addr).map(|off| (e, off));
    // SAFETY: `FIRST` is never null: `NO_HEAP` or slot 0's entry, published
    // (Release, after its fields were written), immutable and never freed.
    if let Some(found) = holds(unsafe { &*FIRST.load(Ordering::Acquire) }) {
        return Some(found);
    }
    entries().find_map(holds)
}

/// `mark::find_exact` on an entry's raw tables: if `addr` is the start of
/// a live object, its block's descriptor word (0: untyped block).
#[inline(always)]
fn is_object_start(e: &Entry, addr: usize, off: usize) -> Option<usize> {
    if addr % 8 != 0 {
        return None;
    }
    let (kind, m, desc) = e.block_tables(off);
    let v = kind.load(Ordering::Acquire);
    let bd = desc.load(Ordering::Acquire);
    let boff = off & (BLOCK_SIZE - 1);
    let live = match v as u8 {
        KIND_SMALL => {
            let c = split_span_class((v >> 8) as usize & !SC_TYPED).0;
            let slot = slot_index(c, boff);
            slot * CLASS_SIZES[c] == boff && m.is_live(slot, e.gen.load(Ordering::Acquire))
        }
        KIND_LARGE_HEAD => boff == 0 && m.is_live(0, e.gen.load(Ordering::Acquire)),
        _ => false,
    };
    // The block may have been freed by a lazy sweep and handed out again
    // (another class) between the kind read and the bit read: then the bit
    // belongs to another layout. See `BlockMeta::is_live` ("Reuse"). Typed
    // blocks (compact objects): the same for the block's descriptor word,
    // which its new owner publishes before the kind: a block reused for
    // another descriptor of the same size class fails here, rather than
    // answering with the old descriptor for a new object (or the new one
    // for an old object's address).
    (live && kind.load(Ordering::Acquire) == v && (desc.load(Ordering::Acquire) == bd || desc_recheck_off()))
        .then_some(bd)
}

/// Unit-test switch (negative control of the descriptor word's second
/// read in [`is_object_start`]); compiled out of the library.
#[cfg(test)]
static DESC_RECHECK_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
fn desc_recheck_off() -> bool {
    DESC_RECHECK_OFF.load(Ordering::Relaxed)
}

#[cfg(not(test))]
#[inline(always)]
fn desc_recheck_off() -> bool {
    false
}

/// The descriptor in the header of the published object at `addr`.
#[inline(always)]
fn header(addr: usize) -> Result<&'static Descriptor, Bad> {
    // SAFETY: `addr` is a published object (its start bit was read with
    // Acquire), so its header holds a &'static Descriptor.
    let h = unsafe { (addr as *const usize).read() };
    if h == &QUARANTINED as *const Descriptor as usize {
        // SAFETY: quarantine keeps the original descriptor in payload word 0
        // (every slot has at least two words).
        return Err(Bad::Freed(unsafe { &*((addr as *const usize).add(1).read() as *const Descriptor) }));
    }
    // SAFETY: as above.
    Ok(unsafe { &*(h as *const Descriptor) })
}

/// Whether the published object at `addr` is quarantined (checkrefs).
///
/// # Safety
/// `addr` is a published object of a heap.
#[inline]
pub(crate) unsafe fn is_quarantined(addr: usize) -> bool {
    // (A compact object, in a typed block, has no header and is never
    // quarantined: its word 0 is payload.)
    // SAFETY: the caller guarantees a published object.
    block_desc_of(addr) == 0 && unsafe { (addr as *const usize).read() == &QUARANTINED as *const Descriptor as usize }
}

#[cold]
#[inline(never)]
pub(crate) fn bad_ref(addr: usize, bad: Bad) -> ! {
    match bad {
        Bad::OtherHeap => panic!(
            "GcRef {addr:#x} names an object of another usurp heap than this thread's (another Runtime's, \
             or another Heap's): a GC handle must not cross runtimes, because that heap neither stops nor \
             scans this thread and could free the object during the access; copy the data instead"
        ),
        Bad::NotLive => panic!(
            "stale or foreign GcRef {addr:#x}: not a live object of any usurp heap (a GC reference kept \
             only in Rust heap memory is not a root: keep it on a task's stack, in a Root or a RootedVec)"
        ),
        Bad::Freed(d) => panic!(
            "stale GcRef {addr:#x}: its `{}` object was freed by a collection (USURP_DEBUG=checkrefs \
             quarantined it; a GC reference kept only in Rust heap memory is not a root: keep it on a \
             task's stack, in a Root or a RootedVec)",
            d.name()
        ),
    }
}

/// The checkrefs quarantine of one heap: freed objects in the order they
/// were freed. Owned by `HeapInner` behind its own mutex: pushed to by the
/// lazy sweepers (allocation, the background sweeper, `finish_sweep`; any
/// thread, any time outside a mark), evicted in the pause (under the heap's
/// collection lock).
#[derive(Default)]
pub(crate) struct Quarantine {
    fifo: VecDeque<(usize, usize)>,
    bytes: usize,
}

impl Quarantine {
    /// Quarantine the dead object at `addr` (`bytes` of slot or span) unless
    /// it already is; returns whether it was newly quarantined.
    ///
    /// # Safety
    /// Called in the sweep: `addr` is an allocated, unmarked object whose
    /// memory nobody else touches.
    pub(crate) unsafe fn poison(addr: usize, bytes: usize) -> bool {
        let p = addr as *mut usize;
        // SAFETY: the caller guarantees the object; a slot has >= 2 words.
        unsafe {
            let h = p.read();
            if h == &QUARANTINED as *const Descriptor as usize {
                return false;
            }
            p.add(1).write(h);
            for i in 2..bytes / 8 {
                p.add(i).write(POISON);
            }
            p.write(&QUARANTINED as *const Descriptor as usize);
        }
        true
    }

    /// Bytes quarantined and not yet evicted.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Record objects quarantined by this sweep.
    pub(crate) fn push(&mut self, objs: impl IntoIterator<Item = (usize, usize)>) {
        for (a, n) in objs {
            self.fifo.push_back((a, n));
            self.bytes += n;
        }
    }

    /// Take the oldest objects until at most `budget` bytes stay quarantined;
    /// the caller frees them (clears their object-start bit before sweeping).
    pub(crate) fn evict(&mut self, budget: usize, mut free: impl FnMut(usize)) {
        while self.bytes > budget {
            let Some((a, n)) = self.fifo.pop_front() else { break };
            self.bytes -= n;
            free(a);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Lookups racing a lazy sweep that frees a block and a new owner that
    //! hands it out for another size class. The race window (between a
    //! lookup's read of the block's kind and its read of the object-start
    //! bit) is made deterministic: the block's metadata page is made
    //! inaccessible, and the fault handler plays the sweep and the new owner
    //! (kind changed from the 16-byte to the 24-byte class, two objects
    //! published) before the lookup's bit read is retried.
    use super::*;
    use crate::block::KIND_SMALL;
    use crate::mark::{find_containing, find_exact};
    use crate::space::Space;
    use std::sync::atomic::AtomicPtr;

    /// The metadata page armed to fault (0: none).
    static FAULT_PAGE: AtomicUsize = AtomicUsize::new(0);
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    static SPACE: AtomicPtr<Space> = AtomicPtr::new(std::ptr::null_mut());
    static REUSED: AtomicUsize = AtomicUsize::new(0);
    /// What the fault handler plays: 0, reuse for another size class; 1,
    /// reuse for another compact descriptor of the same class.
    static MODE: AtomicUsize = AtomicUsize::new(0);
    static TYPED_A: Descriptor = Descriptor::fixed("A", 3, &[]).compact(&ID_A);
    static TYPED_B: Descriptor = Descriptor::fixed("B", 3, &[]).compact(&ID_B);
    static ID_A: crate::descriptor::CompactId = crate::descriptor::CompactId::new();
    static ID_B: crate::descriptor::CompactId = crate::descriptor::CompactId::new();
    /// The SIGSEGV action this test replaced (restored for foreign faults).
    static OLD: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

    // (TYPED_A, TYPED_B and ONE are pointer-free but sit in blocks these
    // tests type as scanned, which no real heap does: the lookups read the
    // kind word the tests set, and the fast path, whose shapes are passed
    // in explicitly, ignores the noscan bit.)
    static REAL: Descriptor = Descriptor::fixed("real", 2, &[]);
    /// A headered object of the 16-byte class, as `arm` types block 0: what
    /// the deref fast path looks for at `lo + 16`.
    static ONE: Descriptor = Descriptor::fixed("one", 1, &[]);
    /// What the reused block holds at the stale address: a payload word of
    /// the new 24-byte object 0, here the address of another descriptor.
    static NOT_A_HEADER: Descriptor = Descriptor::fixed("a payload word, not a header", 0, &[]);

    extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = FAULT_PAGE.load(Ordering::SeqCst);
        let size = PAGE_SIZE.load(Ordering::SeqCst);
        if page != 0 && (page..page + size).contains(&addr) {
            // SAFETY: the page is the test Space's metadata map, which stays
            // mapped; mprotect is async-signal-safe. The Space outlives
            // every armed fault.
            unsafe {
                libc::mprotect(page as *mut libc::c_void, size, libc::PROT_READ | libc::PROT_WRITE);
                FAULT_PAGE.store(0, Ordering::SeqCst);
                let s = &*SPACE.load(Ordering::SeqCst);
                if MODE.load(Ordering::SeqCst) == 1 {
                    // The typed block (24-byte class, descriptor A, slot 0
                    // dead) was freed and typed with B, same class, with a
                    // new object in slot 0.
                    s.set_block_desc(0, &TYPED_B as *const Descriptor as usize);
                    s.set_kind(0, KIND_SMALL, 2 | SC_TYPED);
                    s.meta(0).alloc[0].store(0b1, Ordering::Release);
                } else {
                    // The block was freed and handed out again for the 24-byte
                    // class (span class 2), with objects in slots 0 and 1.
                    s.set_kind(0, KIND_SMALL, 2);
                    s.meta(0).alloc[0].store(0b11, Ordering::Release);
                }
            }
            REUSED.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Not ours: put the previous action back; the access faults again.
        if let Some(old) = OLD.get() {
            // SAFETY: restores a sigaction read from the kernel.
            unsafe { libc::sigaction(libc::SIGSEGV, old, std::ptr::null_mut()) };
        }
    }

    /// Block 0 holds 16-byte objects (none published); arms the fault.
    fn arm(s: &Space) {
        s.set_kind(0, KIND_SMALL, 0);
        s.meta(0).alloc[0].store(0, Ordering::Release);
        arm_fault(s);
    }

    /// Block 0 is typed with compact descriptor A, 24-byte class, its
    /// object in slot 0 dead (start bit clear); arms the fault.
    fn arm_typed(s: &Space) {
        s.set_block_desc(0, &TYPED_A as *const Descriptor as usize);
        s.set_kind(0, KIND_SMALL, 2 | SC_TYPED);
        s.meta(0).alloc[0].store(0, Ordering::Release);
        arm_fault(s);
    }

    fn arm_fault(s: &Space) {
        let page = s.meta(0) as *const BlockMeta as usize;
        FAULT_PAGE.store(page, Ordering::SeqCst);
        let size = PAGE_SIZE.load(Ordering::SeqCst);
        // SAFETY: the page belongs to the Space's metadata map.
        let rc = unsafe { libc::mprotect(page as *mut libc::c_void, size, libc::PROT_NONE) };
        assert_eq!(rc, 0);
    }

    /// The deref fast path's compile-time shapes agree with the tables the
    /// allocator and `check` use, for every small size and both layouts
    /// (review: a wrong class constant only loses speed, silently, and the
    /// other tests see two classes): the class, the kind word the
    /// allocator gives the block (noscan bit aside), the slot size and the
    /// reciprocal.
    #[test]
    fn fast_shapes_agree_with_the_allocators_classes() {
        use crate::sizeclass::{class_of, slot_index, MAX_SMALL};
        for bytes in (8..=MAX_SMALL).step_by(8) {
            let c = class_of(bytes);
            assert_eq!(class_of_const(bytes), Some(c), "{bytes} bytes");
            for compact in [false, true] {
                let shape = fast_shape(bytes, compact).unwrap();
                for noscan in [false, true] {
                    let sc = span_class(c, noscan) | if compact { SC_TYPED } else { 0 };
                    let kind = KIND_SMALL as u16 | (sc as u16) << 8;
                    assert_eq!(kind | KIND_NOSCAN, shape.kind | KIND_NOSCAN, "{bytes} bytes, compact {compact}");
                }
                assert_eq!(shape.size, CLASS_SIZES[c] as u64);
                for off in [0, 8, shape.size as usize, BLOCK_SIZE - 8] {
                    assert_eq!(((off as u64 * shape.recip) >> 32) as usize, slot_index(c, off), "class {c}, offset {off}");
                }
                // `slot_at` (shift or reciprocal): every 4th offset of two
                // blocks, a slot exactly at each multiple of the slot size
                // (also in a block's unused tail, where no object-start
                // bit is ever set, so no object is found there).
                for off in (0..2 * BLOCK_SIZE).step_by(4) {
                    let boff = off % BLOCK_SIZE;
                    let want = (boff % CLASS_SIZES[c] == 0).then_some(boff / CLASS_SIZES[c]);
                    assert_eq!(shape.slot_at(off), want, "class {c}, offset {off}");
                }
                assert_eq!(shape.shift != 0, shape.size.is_power_of_two(), "class {c}");
            }
        }
        assert!(class_of_const(MAX_SMALL + 8).is_none() && fast_shape(MAX_SMALL + 8, false).is_none());
    }

    /// `BlockMeta::is_live_fast` answers from the start bit alone only in
    /// a block swept for the current generation (state `2 * gen`): not
    /// in one not yet swept (`< 2 * gen`) nor in one being swept
    /// (`2 * gen + 1`), where a dead object's start bit is still set
    /// (review: `>=` instead of `==` passed every other test). A dead
    /// object (start bit set, no mark bit) with the header the fast path
    /// looks for, at slot 1 of a 16-byte block.
    #[test]
    fn the_fast_liveness_test_trusts_the_start_bit_only_in_a_swept_block() {
        static SHAPE_OF: Descriptor = Descriptor::fixed("dead", 1, &[]);
        let s = Box::leak(Box::new(Space::new(4 * BLOCK_SIZE).unwrap()));
        let b = 1;
        let base = s.lo + b * BLOCK_SIZE;
        s.set_kind(b, KIND_SMALL, 0);
        // SAFETY: block 1 of the Space is mapped read-write and unused.
        unsafe { ((base + 16) as *mut usize).write(&SHAPE_OF as *const Descriptor as usize) };
        let m = s.meta(b);
        m.alloc[0].store(0b10, Ordering::Release);
        let gen = 1;
        s.gen.store(gen, Ordering::Release);
        let shape = fast_shape(16, false).unwrap();
        for (state, want) in [(0, false), (1, false), (2 * gen, true), (2 * gen + 1, false)] {
            m.swept.store(state, Ordering::Release);
            assert_eq!(m.is_live_fast(1, gen), want, "sweep state {state}");
            assert_eq!(is_live_as(base + 16, &SHAPE_OF, shape, s.handle_entry()), want, "fast path, sweep state {state}");
        }
    }

    /// One test (the handler, the Space and the switch are process-wide):
    /// reuse for another size class, then for another compact descriptor
    /// of the same class (with its negative control).
    #[test]
    fn a_lookup_racing_the_reuse_of_its_block_finds_nothing() {
        // SAFETY: sysconf only reads.
        PAGE_SIZE.store(unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize, Ordering::SeqCst);
        let s = Box::leak(Box::new(Space::new(4 * BLOCK_SIZE).unwrap()));
        SPACE.store(s, Ordering::SeqCst);
        another_class(s);
        another_descriptor(s);
        // SAFETY: puts back the action another_class saved.
        unsafe { libc::sigaction(libc::SIGSEGV, OLD.get().unwrap(), std::ptr::null_mut()) };
    }

    /// A stale handle to a dead compact `A` object whose typed block is
    /// reused for compact `B` objects of the same class between the check's
    /// first reads (kind, descriptor word) and its start-bit read: the
    /// descriptor word's second read refuses it; without that read (the
    /// control) the check answers `A` for what is now a `B` object.
    fn another_descriptor(s: &Space) {
        let stale = s.lo; // slot 0 of the 24-byte class
        MODE.store(1, Ordering::SeqCst);
        let before = REUSED.load(Ordering::SeqCst);
        arm_typed(s);
        let checked = check(stale);
        assert_eq!(REUSED.load(Ordering::SeqCst), before + 1, "the lookup raced the reuse");
        assert!(
            matches!(checked, Err(Bad::NotLive)),
            "the handle check answered {:?} for a block retyped under it",
            checked.ok().map(|d| d.name())
        );
        // After the race: the new object, with the new descriptor.
        assert!(matches!(check(stale), Ok(d) if std::ptr::eq(d, &TYPED_B)));
        // Control: without the second read of the descriptor word.
        DESC_RECHECK_OFF.store(true, Ordering::SeqCst);
        arm_typed(s);
        let checked = check(stale);
        DESC_RECHECK_OFF.store(false, Ordering::SeqCst);
        assert_eq!(REUSED.load(Ordering::SeqCst), before + 2, "the control's lookup raced the reuse");
        assert!(
            matches!(checked, Ok(d) if std::ptr::eq(d, &TYPED_A)),
            "the control did not read the new object with the old descriptor: {:?}",
            checked.map(|d| d.name())
        );
        // The deref fast path (`is_live_as`) on the same race, and its
        // control: it reads the descriptor word again too.
        arm_typed(s);
        let fast = is_live_as(stale, &TYPED_A, fast_shape(24, true).unwrap(), s.handle_entry());
        assert_eq!(REUSED.load(Ordering::SeqCst), before + 3, "the fast path raced the reuse");
        assert!(!fast, "the deref fast path accepted a block retyped under it as its old type");
        DESC_RECHECK_OFF.store(true, Ordering::SeqCst);
        arm_typed(s);
        let fast = is_live_as(stale, &TYPED_A, fast_shape(24, true).unwrap(), s.handle_entry());
        DESC_RECHECK_OFF.store(false, Ordering::SeqCst);
        assert_eq!(REUSED.load(Ordering::SeqCst), before + 4, "the control's fast path raced the reuse");
        assert!(fast, "the control's fast path did not accept the old type for the new object");
        MODE.store(0, Ordering::SeqCst);
    }

    fn another_class(s: &'static Space) {
        let lo = s.lo;
        // The reused block's contents: 24-byte object 0 at lo (its word 2,
        // at lo + 16, looks like a header) and object 1 at lo + 24.
        // SAFETY: block 0 of the Space is mapped read-write and unused.
        unsafe {
            let p = lo as *mut usize;
            p.write(&REAL as *const Descriptor as usize);
            p.add(2).write(&NOT_A_HEADER as *const Descriptor as usize);
            p.add(3).write(&REAL as *const Descriptor as usize);
        }
        let stale = lo + 16; // slot 1 of the 16-byte class; inside object 0 of the 24-byte class
        // SAFETY: installs a SA_SIGINFO handler that only handles faults on
        // the armed page and otherwise restores the previous action.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_segv as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(libc::SIGSEGV, &act, &mut old), 0);
            let _ = OLD.set(old);
        }
        arm(s);
        let checked = check(stale);
        arm(s);
        let exact = find_exact(s, stale);
        arm(s);
        let containing = find_containing(s, stale + 4);
        assert_eq!(REUSED.load(Ordering::SeqCst), 3, "every lookup raced the reuse");
        assert!(
            matches!(checked, Err(Bad::NotLive)),
            "the handle check accepted a stale address inside another object, with descriptor {:?}",
            checked.ok().map(|d| d.name())
        );
        assert_eq!(exact, None, "find_exact returned a slot of the old layout in a reused block");
        assert_eq!(containing, None, "find_containing returned a slot of the old layout in a reused block");
        // After the race, the lookups see the new layout.
        assert_eq!(find_exact(s, lo + 24).map(|l| l.addr), Some(lo + 24));
        assert_eq!(find_exact(s, stale), None);
        assert!(matches!(check(lo + 24), Ok(d) if std::ptr::eq(d, &REAL)));
        // The deref fast path, for a 16-byte headered object at the stale
        // address: its second read of the kind refuses the new layout. The
        // word at the stale address (payload word 1 of the new object 0)
        // is made to look like a `ONE` header, so that only the kind's
        // re-read can refuse it (review: with `NOT_A_HEADER` there, the
        // header comparison refused it whether or not the kind was re-read).
        // SAFETY: block 0 of the Space is mapped read-write; nothing else
        // reads this word.
        unsafe { (stale as *mut usize).write(&ONE as *const Descriptor as usize) };
        arm(s);
        let fast = is_live_as(stale, &ONE, fast_shape(16, false).unwrap(), s.handle_entry());
        assert_eq!(REUSED.load(Ordering::SeqCst), 4, "the fast path raced the reuse");
        assert!(!fast, "the deref fast path accepted a stale address inside another object");
    }
}
