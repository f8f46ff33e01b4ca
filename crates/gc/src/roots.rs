//! Precise roots and weak references.
//!
//! A [`Root`] is an RAII handle to a slot the collector treats as a precise
//! root (for pointers held outside scanned stacks: Rust heap data, globals).
//! A [`WeakRef`] is a slot the collector clears when its target is found
//! unreachable (before finalization and sweeping). Both are `Arc<AtomicUsize>`
//! slots in a table; dropping the handle makes the table forget the slot at
//! the next collection.
//!
//! A [`RootedVec`] is a growable array whose elements are precise roots (an
//! interpreter's operand stack, values in flight between Rust data
//! structures). Its buffer sits behind a mutex that the methods hold
//! briefly, never across a safe point (they are out-of-line runtime code,
//! which asynchronous preemption refuses, and they neither allocate in the
//! GC heap nor block), so a scan never waits for a stopped task. The heap
//! lists every buffer in a [`VecTable`]: a stop-the-world cycle scans them
//! in its pause, a concurrent cycle with the world running, a chunk of
//! elements per lock, like the `Root` table.
//!
//! **Why the tables need no stop.** A concurrent cycle visits a table
//! after its start stop, while tasks run whose stacks are already black
//! (scanned, or new). A value the table held at the mark's start must not
//! leave it for such a stack unseen: so every way a value leaves a table
//! while a heap marks shades it (the deletion half of the barrier:
//! `Root::set` and `Root`'s drop; `RootedVec::set`, `pop`, `truncate`
//! and its drop), and every value put in is shaded (the insertion half:
//! `Root::set`, `Heap::add_root`, `RootedVec::push` and `set`). Values
//! never move inside a table (a `RootedVec` has no insert or remove in the
//! middle), so a scan by index sees each value that stays. Rejected: a
//! read barrier on `Root::get` / `RootedVec::get` (a shade on every read
//! of a mark instead of on each removal), and rescanning the tables in
//! the termination stop (O(n) again).

use crate::object::{Gc, GcRef};
use crate::{GcType, Heap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Slots [`SlotTable::scan_concurrently`] looks at per lock.
const SCAN_CHUNK: usize = 4096;

#[derive(Default)]
pub(crate) struct SlotTable {
    slots: Mutex<Vec<Arc<AtomicUsize>>>,
}

impl SlotTable {
    pub fn add(&self, v: usize) -> Arc<AtomicUsize> {
        let s = Arc::new(AtomicUsize::new(v));
        self.slots.lock().unwrap().push(s.clone());
        s
    }

    /// The table's part of a concurrent mark, with the world running:
    /// passes every live slot's value to `f` and forgets the slots whose
    /// handle was dropped. Together with `Root::set`, which shades the
    /// value it replaces and the one it stores while a heap marks,
    /// `Heap::add_root`, which shades what it roots, and `Root`'s drop,
    /// which shades its last value while a heap marks (a root dropped
    /// during the mark was a root at its start), every value a slot held at
    /// the mark's start reaches `f` or was shaded: the table behaves like
    /// heap slots behind the write barrier, and needs no stop
    /// (new-user probe 112: 1M `Root`s made every start stop 13 ms long).
    /// The lock is held for [`SCAN_CHUNK`] slots at a time, so that a
    /// thread making or dropping a root waits for one chunk at most.
    pub fn scan_concurrently(&self, mut f: impl FnMut(usize)) {
        let mut i = 0;
        loop {
            let mut v = self.slots.lock().unwrap();
            if i >= v.len() {
                return;
            }
            for _ in 0..SCAN_CHUNK {
                let Some(s) = v.get(i) else { break };
                if Arc::strong_count(s) == 1 {
                    // Dropped: before the mark (garbage now, as a stop's
                    // scan would find it), or during it, and then `Root`'s
                    // drop shaded its value. The last slot moves here: not
                    // looked at yet (it was beyond `i`), it is next.
                    v.swap_remove(i);
                } else {
                    f(s.load(Ordering::Acquire));
                    i += 1;
                }
            }
        }
    }

    /// Slots in the table (test support).
    #[cfg(feature = "test-hooks")]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Visit every live slot, forgetting slots whose handle was dropped and
    /// those `f` answers `false` for (a slot that will never name an object
    /// again: a cleared weak reference).
    pub fn retain(&self, mut f: impl FnMut(&AtomicUsize) -> bool) {
        let mut v = self.slots.lock().unwrap();
        v.retain(|s| Arc::strong_count(s) != 1 && f(s));
    }

    /// Visit every live slot, forgetting slots whose handle was dropped.
    pub fn for_each(&self, mut f: impl FnMut(&AtomicUsize)) {
        self.retain(|s| {
            f(s);
            true
        });
    }
}

/// The element buffer of one [`RootedVec`] (shared with its heap's
/// [`VecTable`]).
pub(crate) type VecSlots = Arc<Mutex<Vec<usize>>>;

/// Every [`RootedVec`] buffer of a heap, for the collector's scan (see the
/// module docs). A buffer whose container was dropped (the table holds the
/// only reference) is forgotten at the next scan.
#[derive(Default)]
pub(crate) struct VecTable {
    vecs: Mutex<VecList>,
}

#[derive(Default)]
struct VecList {
    vecs: Vec<VecSlots>,
    /// `add` forgets dropped buffers when the list reaches this length:
    /// twice what was left after the last time (at least 64), so the
    /// forgetting costs O(1) per `add` amortised (review 116: at a power of
    /// two, a program holding 2^k - 1 containers and making and dropping
    /// one paid a whole pass per `RootedVec::new`).
    prune_at: usize,
}

impl VecTable {
    /// A new, listed buffer with room for `n` elements. Forgets the
    /// dropped containers' buffers when the list has doubled since the
    /// last time (so a heap that never collects does not keep them all).
    pub fn add(&self, n: usize) -> VecSlots {
        let v = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let mut t = self.vecs.lock().unwrap();
        if t.vecs.len() >= t.prune_at {
            t.forget_dropped();
        }
        t.vecs.push(v.clone());
        v
    }

    /// The buffers still in use (forgetting the others).
    fn live(&self) -> Vec<VecSlots> {
        let mut t = self.vecs.lock().unwrap();
        t.forget_dropped();
        t.vecs.clone()
    }

    /// Pass every element of every buffer to `f`, with the world running:
    /// each buffer's lock is held for [`SCAN_CHUNK`] elements at a time, so
    /// that a task pushing or popping waits for one chunk at most. Sound
    /// because of the barrier halves listed in the module docs: an element
    /// present at the mark's start is either still at its index when the
    /// scan gets there, or was shaded when it left; one put in meanwhile
    /// was shaded then.
    pub fn scan_concurrently(&self, mut f: impl FnMut(usize)) {
        for v in self.live() {
            let mut i = 0;
            loop {
                let g = lock_slots(&v);
                let Some(chunk) = g.get(i..g.len().min(i + SCAN_CHUNK)).filter(|c| !c.is_empty()) else {
                    break;
                };
                chunk.iter().for_each(|&a| f(a));
                i += chunk.len();
            }
        }
    }

    /// Pass every element of every buffer to `f` (the world stopped).
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        for v in self.live() {
            lock_slots(&v).iter().for_each(|&a| f(a));
        }
    }

    /// Buffers listed (test support).
    #[cfg(feature = "test-hooks")]
    pub fn len(&self) -> usize {
        self.live().len()
    }
}

impl VecList {
    fn forget_dropped(&mut self) {
        self.vecs.retain(|v| Arc::strong_count(v) != 1);
        self.prune_at = (2 * self.vecs.len()).max(64);
    }
}

/// Test switch (negative control of the tables' deletion half): `false`
/// makes `RootedVec::pop`, `truncate` and its drop shade nothing.
static VEC_DELETION_SHADING: AtomicBool = AtomicBool::new(true);

/// Test support: whether `RootedVec::pop`, `truncate` and its drop shade
/// what they remove while a heap marks (default `true`). Off only for
/// negative controls. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_rooted_vec_deletion_shading_for_tests(on: bool) {
    VEC_DELETION_SHADING.store(on, Ordering::SeqCst);
}

/// The deletion half for values leaving a [`RootedVec`] (see the module
/// docs): shades each of `removed` while a heap marks. Called inside
/// [`RootedVec::removal`], after the removal: no marking stop of the
/// container's heap falls between the two.
#[inline(always)]
fn shade_removed(removed: &[usize]) {
    if !removed.is_empty() && crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
        shade_removed_slow(removed);
    }
}

#[cold]
#[inline(never)]
fn shade_removed_slow(removed: &[usize]) {
    if VEC_DELETION_SHADING.load(Ordering::Relaxed) {
        removed.iter().for_each(|&a| crate::refcheck::shade(a));
    }
}

/// A precise root: keeps its object (if any) alive until dropped or reset.
/// `Send + Sync`: it may live anywhere. It roots objects of the heap that
/// made it ([`Heap::add_root`]) only: [`Root::set`] refuses another heap's
/// object, and a stale handle.
///
/// A `Root` does not keep its heap alive (a [`RootedVec`] does). Once that
/// heap is dropped (its runtime dropped, and every `Heap` clone), the root
/// names nothing: [`get`](Root::get) panics ("the heap of this Root was
/// dropped"), [`try_get`](Root::try_get) answers `Err(HeapDropped)`,
/// [`set`](Root::set) of an object panics while `set(None)` and dropping
/// the root are fine (a VM's globals may outlive its runtime).
/// [`heap_is_alive`](Root::heap_is_alive) says whether the heap exists, but
/// another thread may drop it just after: `try_get` is the race-free
/// question. (Before this check, a root kept
/// past its heap answered with whatever object a later heap, mapped at the
/// same addresses, had put there.)
pub struct Root {
    slot: Arc<AtomicUsize>,
    /// The handle-check entry of the heap whose root table holds `slot`
    /// (leaked, never freed, never reused for another heap): `set` accepts
    /// that heap's live objects only, and `get`/`set` refuse to work once
    /// it is unregistered (its heap dropped).
    heap: &'static crate::refcheck::Entry,
}

/// Test switches (negative controls): with `false`, a `Root`/`WeakRef`
/// whose heap was dropped answers from its slot as before
/// (`set_root_heap_check_for_tests`), and `Heap::add_root`, `Root::set`
/// and `Heap::weak` accept a stale handle (`set_root_liveness_check_for_tests`).
static HEAP_CHECK: AtomicBool = AtomicBool::new(true);
static LIVENESS_CHECK: AtomicBool = AtomicBool::new(true);

/// Test support: whether `Root::get`/`set` and `WeakRef::get` check that
/// their heap still exists (default `true`). Off only for negative controls.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_root_heap_check_for_tests(on: bool) {
    HEAP_CHECK.store(on, Ordering::SeqCst);
}

/// Test support: whether `Heap::add_root`, `Root::set` and `Heap::weak`
/// refuse a stale handle (default `true`). Off only for negative controls.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_root_liveness_check_for_tests(on: bool) {
    LIVENESS_CHECK.store(on, Ordering::SeqCst);
}

/// Whether `e`'s heap is gone for a root or weak reference of it (its
/// entry unregistered; always `false` with the check off).
#[inline(always)]
fn heap_gone(e: &crate::refcheck::Entry) -> bool {
    !e.is_registered() && HEAP_CHECK.load(Ordering::Relaxed)
}

/// The refusal of `Root::get`/`set` once the root's heap was dropped.
#[cold]
#[inline(never)]
#[track_caller]
fn heap_dropped(what: &str) -> ! {
    panic!(
        "{what}: the heap of this Root was dropped (its runtime is gone): the root names no object any \
         more; drop it, or use Root::try_get where the heap may be gone"
    )
}

/// The answer of [`Root::try_get`] once the root's heap was dropped (its
/// runtime is gone): the root names no object any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapDropped;

impl std::fmt::Display for HeapDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the heap of this Root was dropped")
    }
}

impl std::error::Error for HeapDropped {}

/// Why `Heap::add_root`, `Root::set` or `Heap::weak` refuses `r` for the
/// heap whose entry is `e` (`None`: accepted): another heap's object,
/// `e`'s heap dropped, or a stale handle (`refcheck::check_in_heap`, the
/// check of the safe accessors against that heap). Run inside the
/// caller's `shading_section`, just before its store, so that on a thread
/// the World stops nothing frees the object in between (no safe point).
pub(crate) fn refusal(e: &'static crate::refcheck::Entry, r: GcRef) -> Option<Refusal> {
    if !e.holds(r.addr()) {
        return Some(Refusal::OtherHeap);
    }
    if !LIVENESS_CHECK.load(Ordering::Relaxed) {
        return None;
    }
    match crate::refcheck::check_in_heap(e, r.addr()) {
        None => Some(Refusal::HeapDropped),
        Some(Ok(_)) => None,
        Some(Err(crate::refcheck::Bad::OtherHeap)) => Some(Refusal::OtherHeap),
        Some(Err(crate::refcheck::Bad::Freed(d))) => Some(Refusal::Stale(Some(d))),
        Some(Err(crate::refcheck::Bad::NotLive)) => Some(Refusal::Stale(None)),
    }
}

/// See [`refusal`].
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    OtherHeap,
    HeapDropped,
    /// A stale handle (with checkrefs, the freed object's descriptor).
    Stale(Option<&'static crate::Descriptor>),
}

/// Panic for `refusal`'s answer about `r` in `what` (`whose`: whose heap).
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn refuse(what: &str, whose: &str, r: GcRef, why: Refusal) -> ! {
    match why {
        Refusal::OtherHeap => other_heap(what, whose, r),
        Refusal::HeapDropped => heap_dropped(what),
        Refusal::Stale(freed) => {
            let was = freed.map_or(String::new(), |d| format!(" (its `{}` object was freed by a collection)", d.name()));
            panic!(
                "{what}: stale GcRef {r:?}: not a live object of {whose} heap{was}; it would be kept, and would \
                 later name whatever object takes its place (keep the object reachable: on a task's stack, in \
                 a Root or a RootedVec, until it is rooted)"
            )
        }
    }
}

/// The refusal of `Heap::add_root`, `Root::set` and `Heap::weak` (as
/// `RootedVec::check`'s): `r` lies outside the heap whose table would hold
/// it, so that heap's collector would neither keep it alive nor clear it.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn other_heap(what: &str, whose: &str, r: GcRef) -> ! {
    panic!(
        "{what}: {r:?} is an object of another heap than {whose} (it would not be kept alive, and the handle \
         would later name whatever object takes its place)"
    )
}

impl Root {
    pub(crate) fn new(slot: Arc<AtomicUsize>, heap: &'static crate::refcheck::Entry) -> Root {
        Root { slot, heap }
    }
    /// The rooted object.
    ///
    /// Panics if this root's heap was dropped (see [`Root`]): its slot
    /// names no object of any live heap, and a heap made since may sit at
    /// the same addresses.
    #[track_caller]
    pub fn get(&self) -> Option<GcRef> {
        match self.try_get() {
            Ok(r) => r,
            Err(HeapDropped) => heap_dropped("Root::get"),
        }
    }
    /// The rooted object, or `Err(HeapDropped)` if this root's heap was
    /// dropped. One check, then the read: unlike `heap_is_alive()`
    /// followed by `get()`, no drop on another thread can come between
    /// the answer and a panic.
    pub fn try_get(&self) -> Result<Option<GcRef>, HeapDropped> {
        if heap_gone(self.heap) {
            return Err(HeapDropped);
        }
        Ok(GcRef::from_heap_addr(self.slot.load(Ordering::Acquire)))
    }
    /// The rooted object as a `Gc<T>` if its descriptor is `T`'s (panics
    /// as [`get`](Root::get) does once the heap was dropped).
    #[track_caller]
    pub fn get_as<T: GcType>(&self) -> Option<Gc<T>> {
        self.get().and_then(Gc::from_ref)
    }
    /// Whether this root's heap still exists (`false` once it was dropped:
    /// `get` and `set` of an object then panic). Another thread may drop
    /// the heap right after a `true`: use [`try_get`](Root::try_get) to read
    /// without that race.
    pub fn heap_is_alive(&self) -> bool {
        !heap_gone(self.heap)
    }
    /// Root another object (or none). While a heap marks concurrently, the
    /// object it rooted and the new one are shaded, as the write barrier
    /// does for heap slots (a concurrent cycle scans the root table with
    /// the world running: `SlotTable::scan_concurrently`).
    /// The store comes first and the marking state is read after it: both
    /// happen inside one `refcheck::shading_section`, so a collector's stop
    /// falls entirely before or after them (on a thread the World stops:
    /// runtime code, out of line, never preempted; on any other thread:
    /// the shading gate), and the order between the two inside does not
    /// matter.
    ///
    /// Panics if `v` is an object of another heap than the one that made
    /// this root (that heap's collector does not scan this root: it would
    /// free the object, and the root would later name whatever takes its
    /// place), if `v` is a stale handle (not a live object: the check of
    /// the safe accessors, as `RootedVec::push` runs it; from a thread the
    /// World does not stop, a snapshot), or if this root's heap was dropped
    /// (see [`Root`]) and `v` is an object. The root is unchanged then.
    /// `set(None)` once the heap was dropped does nothing (the root names
    /// nothing already): a VM may clear its globals after its runtime.
    #[inline(never)]
    #[track_caller]
    pub fn set(&self, v: Option<GcRef>) {
        if heap_gone(self.heap) {
            if v.is_none() {
                return;
            }
            heap_dropped("Root::set");
        }
        if let Some(r) = v {
            if !self.heap.holds(r.addr()) {
                other_heap("Root::set", "this Root's", r);
            }
        }
        let new = v.map_or(0, |r| r.addr());
        // The check and the store in one section: on a thread the World
        // stops no collection comes in between (no safe point); on any
        // other, no marking stop does.
        let refused = crate::refcheck::shading_section(|| {
            if let Some(why) = v.and_then(|r| refusal(self.heap, r)) {
                return Some(why);
            }
            let old = self.slot.swap(new, Ordering::AcqRel);
            if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
                crate::refcheck::shade(old);
                crate::refcheck::shade(new);
            }
            None
        });
        if let (Some(why), Some(r)) = (refused, v) {
            refuse("Root::set", "this Root's", r, why);
        }
    }
}

/// The deletion half of the barrier for a root table that a concurrent
/// mark scans with the world running (`SlotTable::scan_concurrently`):
/// while a heap marks, the dropped root's value is shaded, as
/// `set(None)` would. In one `refcheck::shading_section`, as `set`.
impl Drop for Root {
    fn drop(&mut self) {
        if heap_gone(self.heap) || crate::barrier::MARKING.load(Ordering::Relaxed) == 0 {
            return;
        }
        let slot = &self.slot;
        crate::refcheck::shading_section(|| {
            if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
                crate::refcheck::shade(slot.load(Ordering::Acquire));
            }
        });
    }
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One check (`try_get`): a drop on another thread between a
        // `heap_is_alive` and a `get` would make `get` panic.
        match self.try_get() {
            Ok(r) => write!(f, "Root({r:?})"),
            Err(HeapDropped) => write!(f, "Root(<heap dropped>)"),
        }
    }
}

/// A weak reference: `get()` returns the target until the collector finds it
/// unreachable, then `None` forever (even if a finalizer resurrects it).
/// These are Go's weak-pointer rules (a "short" weak reference): cleared in
/// the cycle that finds a finalizable target dead, before its finalizer is
/// queued. An object that only a finalizable object references is not
/// found unreachable while that object may still be finalized (the
/// collector marks the referents of finalizable objects, see
/// [`Heap::set_finalizer`](crate::Heap::set_finalizer)): its weak
/// references stay set until a cycle after that finalizer ran.
///
/// A `WeakRef` does not keep its heap alive: once that heap is dropped,
/// `get()` returns `None` forever (its target went with the heap).
pub struct WeakRef {
    slot: Arc<AtomicUsize>,
    /// The handle-check entry of the heap whose weak table holds `slot`
    /// (leaked, never reused): `get` answers `None` once it is
    /// unregistered (a later heap may sit at the same addresses).
    heap: &'static crate::refcheck::Entry,
}

impl WeakRef {
    pub(crate) fn new(slot: Arc<AtomicUsize>, heap: &'static crate::refcheck::Entry) -> WeakRef {
        WeakRef { slot, heap }
    }
    /// The target, if still alive. The returned handle keeps it alive while it
    /// is on a scanned stack or in a root. While its heap marks concurrently
    /// the target is shaded first (as Go does for weak pointers): otherwise
    /// a task could take an object the mark has not reached, keep it only on
    /// a stack already scanned, and the termination would clear the weak
    /// reference and free the object under it.
    ///
    /// On any thread, including one the World does not stop (a plain
    /// thread, a task inside `blocking`): the read and the shade are one
    /// `refcheck::shading_section`, so they never fall inside a stop in
    /// which the collector marks (such a thread waits for the stop's end
    /// and reads again). Hence the target returned was live when read, and
    /// is never one the ongoing termination is about to free: it was either
    /// reached by the mark or shaded before the termination's last drain
    /// (with all it references). On a thread the World does not stop, the
    /// handle is no root afterwards: put it in a [`Root`] to keep it.
    ///
    /// `None` once the heap of this weak reference was dropped.
    #[inline(never)]
    pub fn get(&self) -> Option<GcRef> {
        crate::refcheck::shading_section(|| {
            if heap_gone(self.heap) {
                return None;
            }
            let a = self.slot.load(Ordering::Acquire);
            if a != 0 && crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
                crate::refcheck::shade(a);
            }
            GcRef::from_heap_addr(a)
        })
    }
}

impl std::fmt::Debug for WeakRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeakRef({:?})", self.get())
    }
}

/// Identifies a root scanner registered with [`Heap::add_root_scanner`](crate::Heap::add_root_scanner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannerId(pub(crate) u64);

/// A root-scanning callback: called in the pause with a function to report
/// each root (null-free object starts). It must not allocate or block on
/// anything a stopped task may hold.
pub type RootScanner = Box<dyn Fn(&mut dyn FnMut(GcRef)) + Send + Sync>;

/// A `Vec`-like container of GC references that are precise roots: every
/// element (null or an object) is reported to the collector in every pause,
/// wherever the `RootedVec` itself lives (Rust heap, another thread's data,
/// a global). For a VM's operand stack or for values in flight that Rust heap
/// memory holds (a plain `Vec<GcRef>` there is not scanned). `Send + Sync`.
///
/// A concurrent cycle scans the elements with the world running (no stop
/// grows with them: 1M elements cost every start stop 9 ms when the start
/// stop scanned them). While a heap marks, `push` and `set` shade what they
/// store, and `set`, `pop`, `truncate` and the drop shade what they remove,
/// as the write barrier does for heap slots: a value read out with `get`
/// before its element is removed is not lost.
///
/// Each method takes a mutex for a few instructions (the collector takes it
/// to scan, a few thousand elements at a time); `push` and `set` check that
/// the handle is live like the `GcRef` accessors do (so they too must run
/// on a thread the World stops) and that it is an object of this
/// container's heap. `get`, `pop`, `len` work on any thread. Dropping the
/// container unregisters it.
pub struct RootedVec {
    heap: Heap,
    slots: VecSlots,
}

fn lock_slots(m: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RootedVec {
    /// An empty container whose elements are roots of `heap`.
    #[inline(never)]
    pub fn new(heap: &Heap) -> RootedVec {
        RootedVec::with_capacity(heap, 0)
    }
    /// An empty container with room for `n` elements.
    #[inline(never)]
    pub fn with_capacity(heap: &Heap, n: usize) -> RootedVec {
        let slots = heap.rooted_vecs().add(n);
        RootedVec { heap: heap.clone(), slots }
    }
    /// Number of elements.
    #[inline(never)]
    pub fn len(&self) -> usize {
        lock_slots(&self.slots).len()
    }
    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The checks of `push` and `set`: `r` is live (the accessors' check,
    /// which also requires a thread the World stops) and an object of this
    /// container's heap (another heap's collector would not keep it alive).
    fn check(&self, r: GcRef) {
        r.descriptor(); // the liveness check
        assert!(
            self.heap.contains(r.addr()),
            "RootedVec: {r:?} is an object of another heap than this RootedVec's (it would not be kept alive)"
        );
    }
    /// Append `v` (panics if `v` is a stale or foreign handle, or an object
    /// of another heap).
    #[inline(never)]
    pub fn push(&mut self, v: Option<GcRef>) {
        if let Some(r) = v {
            self.check(r);
        }
        let a = v.map_or(0, |r| r.addr());
        lock_slots(&self.slots).push(a);
        // The container was scanned in the start stop: the barrier's
        // insertion half while a heap marks (see `RootedVec`).
        if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
            crate::barrier::shade_insertion(a);
        }
    }
    /// Remove and return the last element (`None` if empty).
    #[inline(never)]
    pub fn pop(&mut self) -> Option<Option<GcRef>> {
        let a = self.removal(|| {
            let a = lock_slots(&self.slots).pop()?;
            shade_removed(&[a]);
            Some(a)
        })?;
        Some(GcRef::from_heap_addr(a))
    }
    /// Runs `f`, a removal of elements and its shading
    /// ([`shade_removed`]), where no marking stop of this container's heap
    /// can fall between the two: directly on a thread whose mutator is of
    /// that heap (its stops stop this thread, and `f` has no safe point),
    /// inside the shading gate on any other (review 115: a plain thread
    /// that popped, then lost its CPU before its check, could find the
    /// mark over and shade nothing while a task kept the value it had read
    /// with `get`).
    #[inline(always)]
    fn removal<R>(&self, f: impl FnOnce() -> R) -> R {
        if crate::mutator::current_is_of(self.heap.handle_entry()) {
            f()
        } else {
            crate::refcheck::shading_section(f)
        }
    }
    /// Element `i` (panics if `i >= len`).
    #[inline(never)]
    pub fn get(&self, i: usize) -> Option<GcRef> {
        let v = lock_slots(&self.slots);
        match v.get(i) {
            Some(&a) => GcRef::from_heap_addr(a),
            None => panic!("RootedVec::get({i}): index out of bounds (len {})", v.len()),
        }
    }
    /// Replace element `i` (panics if `i >= len`, or `v` is stale, foreign
    /// or an object of another heap).
    #[inline(never)]
    pub fn set(&mut self, i: usize, v: Option<GcRef>) {
        if let Some(r) = v {
            self.check(r);
        }
        let a = v.map_or(0, |r| r.addr());
        // (A removal of the old value: `set(i, None)` works on any thread.)
        self.removal(|| {
            let old = {
                let mut s = lock_slots(&self.slots);
                let n = s.len();
                match s.get_mut(i) {
                    Some(slot) => std::mem::replace(slot, a),
                    None => panic!("RootedVec::set({i}): index out of bounds (len {n})"),
                }
            };
            // As the barrier does for a heap slot (see `push`).
            if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
                crate::barrier::shade_insertion(old);
                crate::barrier::shade_insertion(a);
            }
        })
    }
    /// Keep the first `n` elements.
    #[inline(never)]
    pub fn truncate(&mut self, n: usize) {
        self.removal(|| {
            let mut s = lock_slots(&self.slots);
            if n < s.len() {
                shade_removed(&s[n..]);
                s.truncate(n);
            }
        })
    }
    /// Remove every element.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
    /// A copy of the elements (the copies are roots only while they stay on
    /// a scanned stack).
    #[inline(never)]
    pub fn to_vec(&self) -> Vec<Option<GcRef>> {
        lock_slots(&self.slots).iter().map(|&a| GcRef::from_heap_addr(a)).collect()
    }
}

/// Frees the elements after shading them while a heap marks (the deletion
/// half); the heap's table forgets the emptied buffer at its next scan, or
/// when a `RootedVec::new` finds its list doubled.
impl Drop for RootedVec {
    fn drop(&mut self) {
        self.removal(|| {
            let mut s = lock_slots(&self.slots);
            shade_removed(&s);
            *s = Vec::new();
        })
    }
}

impl std::fmt::Debug for RootedVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}
