//! Handles to heap objects: raw [`GcRef`], typed [`Gc<T>`] and the pointer
//! field type [`Member<T>`].
//!
//! An object is `[header: &'static Descriptor][payload words...]`, or, with
//! the compact layout (see `descriptor.rs`), just `[payload words...]`, its
//! descriptor being its block's; a handle points at the object's first byte
//! (the header, or a compact object's payload word 0). Handles need no rooting while they live on a task's
//! stack or in its registers (scanned conservatively); anywhere else (Rust
//! heap, other threads' data) use [`Root`](crate::Root) or
//! [`RootedVec`](crate::RootedVec). Stores of GC pointers into heap objects go
//! through the write barrier ([`GcRef::set_ptr`], [`Member::set`]).
//!
//! Safe accessors check that the handle names a live object of some usurp
//! heap and panic clearly otherwise (a stale handle must not read freed
//! memory: issue 10 item 8; see `refcheck.rs`); `unsafe` `*_unchecked`
//! variants skip that check (bounds checks stay).
//!
//! **Objects of Rust types** ([`gc_type!`](crate::gc_type), a descriptor
//! marked [`Descriptor::rust_type`]) are written only through their type
//! (the untyped writes panic) and read untyped only at their pointer and
//! value slots: any other word is a Rust field whose bytes an integer load
//! may not touch (padding, a lock's data, a smaller atomic), so
//! [`GcRef::word`] / [`GcRef::ptr`] panic there too.
//!
//! **Who may touch the heap.** Safe accessors (reads, writes, `Gc<T>`
//! deref, `Member::set`) also panic on a thread that has no mutator, i.e.
//! that the heap's World does not stop: a plain thread next to a runtime, or
//! a task inside `blocking()` (its mutator is taken away). Such a thread
//! could move a pointer from a slot the marker has not scanned yet to one it
//! has (the marker runs with the world stopped and no write barrier) and the
//! object would be freed while reachable; and a collection could free an
//! object between its check and the access. Code the collector runs in its
//! pause (root scanners) may read objects. The `extern "C"` write barrier
//! for JIT code ([`crate::barrier`]) and the `*_unchecked` variants do not
//! check: calling them only from stopped threads is the caller's contract. An array's length word
//! (payload word 0) is read-only for safe code (issue 10 item 1).
//!
//! **`Gc<T>` deref is a cooperative point** (issue 9: time-to-safepoint).
//! Code that only walks objects (binary-trees' `check`, an interpreter
//! reading its data) allocates nothing, so allocation's poll never runs;
//! outside `preemptible!` code every stop request and quantum tick it gets
//! is refused, and a stop waited for the end of the walk (binary-trees 21:
//! stops of 40-56 ms). So `deref` first tests one process-wide counter
//! (`usurp_preempt::internals::any_checkpoint_request`: a Relaxed load and
//! a branch, no thread-local access, nothing else inlined, so it may be
//! inlined into `preemptible!` guest code) and, only while some worker has
//! a checkpoint request outstanding, calls `read_poll_slow` (cold, out of
//! line, not generic), which calls `usurp_preempt::checkpoint()` where
//! a task may yield: only on a thread that has a mutator (not inside
//! `blocking`, not on a plain thread, not in the collector's pause, whose
//! root scanners run with the mutator taken away), and `checkpoint()`
//! itself does nothing inside a no-preemption section (the GC's own lock
//! holders, a task that holds the world stopped), on a thread that is not
//! a worker, or while the worker runs no task. The poll comes before the
//! liveness check: the `&T` handed out is checked after any yield (during
//! which a collection may run and the task may move to another thread, as
//! at an allocation; nothing moves objects, so a `&T` held across a later
//! yield stays valid as long as the object is reachable). The GC's own
//! code never derefs a `Gc<T>` (marking, sweeping and the verifier read
//! words raw; finalizers run outside any GC lock, in
//! `Heap::run_pending_finalizers`). The `GcRef` accessors and
//! `Member::get` do not poll (in binary-trees every node visit is a deref
//! already).

use crate::barrier::{usurp_gc_write_barrier, usurp_gc_write_barrier_value};
use crate::descriptor::{Descriptor, GcType, SlotKind};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An untyped pointer to a heap object (its header word). `Copy`, `Send`: it is
/// just an address; keeping the object alive is the holder's business (a
/// stale handle makes the safe accessors panic, see the module docs).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GcRef(NonNull<usize>);

// SAFETY: a GcRef is an address; safe accessors check that it names a live
// object before dereferencing it, the others are unsafe.
unsafe impl Send for GcRef {}
// SAFETY: as above.
unsafe impl Sync for GcRef {}

impl std::fmt::Debug for GcRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GcRef({:#x})", self.addr())
    }
}

impl GcRef {
    /// A handle from an address (`None` for 0). For a checked conversion use
    /// [`Heap::object_at`](crate::Heap::object_at).
    ///
    /// # Safety
    /// `addr` must be 0 or the start of a live object (the accessors read its
    /// header and payload).
    #[inline(always)]
    pub unsafe fn from_addr(addr: usize) -> Option<GcRef> {
        Self::from_heap_addr(addr)
    }

    /// `from_addr` for addresses the crate itself read from the heap, a root
    /// slot or its own allocator (0 or object starts by construction).
    #[inline(always)]
    pub(crate) fn from_heap_addr(addr: usize) -> Option<GcRef> {
        NonNull::new(addr as *mut usize).map(GcRef)
    }
    /// The object's address.
    #[inline(always)]
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }
    /// Check that this handle names a live object of this thread's heap and
    /// return its descriptor; panics ("stale or foreign GcRef ...") otherwise.
    /// Every safe accessor below runs this check once (see [`crate::refcheck`]
    /// in the crate docs: range check, block table, object-start bit, header).
    ///
    /// First, the thread must be one the World stops (it has a mutator: a
    /// task outside `blocking`, an attached thread), else this panics too:
    /// on any other thread a collection could mark while this thread moves
    /// pointers (hiding objects from the marker) or free the object between
    /// the check and the access (review of issue 10, defect 1). The mutator
    /// test is one more non-inlined TLS read (see `benches/refs.rs`).
    ///
    /// And the object must be of that mutator's heap (another heap's
    /// collections neither stop nor scan this thread): an object of another
    /// heap panics ("another usurp heap"). Inside a collection's pause, on
    /// the collecting thread (no mutator), any heap's object is accepted.
    #[inline]
    fn live_descriptor(self) -> &'static Descriptor {
        // The mutator's heap, or in a collection's pause the collected
        // heap (`own_entry`); no other thread gets past `access_without_mutator`.
        let checked = match crate::refcheck::own_entry() {
            Some(own) => crate::refcheck::check_for(self.addr(), own),
            None => {
                crate::mutator::access_without_mutator(self.addr());
                crate::refcheck::check(self.addr())
            }
        };
        match checked {
            Ok(d) => d,
            Err(bad) => crate::refcheck::bad_ref(self.addr(), bad),
        }
    }

    /// Whether this handle currently names the start of a published object
    /// of some usurp heap (what the safe accessors check). A stale handle
    /// whose memory was reused by a new object also passes.
    #[inline]
    pub fn is_live(self) -> bool {
        crate::refcheck::check(self.addr()).is_ok()
    }

    /// The object's descriptor. Panics if the handle is stale or foreign.
    #[inline]
    pub fn descriptor(self) -> &'static Descriptor {
        self.live_descriptor()
    }
    /// [`descriptor`](GcRef::descriptor) without the liveness check.
    ///
    /// # Safety
    /// `self` is a live object (published, not freed).
    #[inline(always)]
    pub unsafe fn descriptor_unchecked(self) -> &'static Descriptor {
        // SAFETY: a GcRef to a live object: its header (or its typed
        // block's descriptor word) holds its &'static Descriptor.
        unsafe { crate::refcheck::layout_of(self.addr()).0 }
    }
    /// Pointer to payload word 0: the object's address plus its
    /// descriptor's [`payload_offset`](Descriptor::payload_offset) (0 for a
    /// compact object, found from its block's side table; 8 otherwise). No
    /// liveness check and no access to the object itself (only to side
    /// tables of the heap holding the address): dereferencing it is the
    /// caller's unsafe business.
    #[inline]
    pub fn payload(self) -> *mut usize {
        let off = if crate::refcheck::block_desc_of_pinned(self.addr()) != 0 { 0 } else { 8 };
        self.0.as_ptr().wrapping_byte_add(off)
    }
    /// Payload word 0 of this object, whose descriptor is `d`.
    #[inline(always)]
    fn payload_in(self, d: &Descriptor) -> *mut usize {
        self.0.as_ptr().wrapping_byte_add(d.payload_offset())
    }
    /// Element count of a live array (`d` is its descriptor); 0 for fixed.
    #[inline(always)]
    fn len_of(self, d: &Descriptor) -> usize {
        if d.is_array() {
            // SAFETY: arrays store their length in payload word 0; the caller
            // checked (or guarantees) that the object is live.
            unsafe { self.payload_in(d).read() }
        } else {
            0
        }
    }
    /// Payload words of a live object with descriptor `d`.
    #[inline(always)]
    fn payload_words_of(self, d: &Descriptor) -> usize {
        if d.is_array() {
            1 + self.len_of(d) * d.elem_words()
        } else {
            d.size_words()
        }
    }
    /// Element count of an array object (payload word 0); 0 for fixed objects.
    /// Panics if the handle is stale or foreign.
    #[inline]
    pub fn len(self) -> usize {
        self.len_of(self.live_descriptor())
    }
    /// [`len`](GcRef::len) without the liveness check.
    ///
    /// # Safety
    /// `self` is a live object.
    #[inline(always)]
    pub unsafe fn len_unchecked(self) -> usize {
        // SAFETY: the caller guarantees a live object.
        self.len_of(unsafe { self.descriptor_unchecked() })
    }
    /// The payload word index of word `k` of element `j` of an array object:
    /// `1 + j * elem_words + k` (payload word 0 holds the length, elements
    /// follow in order, each `Descriptor::elem_words` words). Pass it to
    /// [`word`](GcRef::word), [`ptr`](GcRef::ptr), [`value`](GcRef::value)
    /// or their setters instead of writing the arithmetic (forgetting the
    /// `1 +` would address the length word, which the setters refuse).
    ///
    /// ```
    /// use usurp_gc::{alloc_array, Descriptor, Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() }).unwrap();
    /// let _attached = heap.attach_thread().unwrap();
    /// // Pairs (key: pointer, count: raw word): an array of 2-word elements.
    /// let pairs = Descriptor::array_builder(2).pointer_at(0).name("pairs").build().unwrap();
    /// let (arr, key) = (alloc_array(pairs, 3), alloc_array(pairs, 0));
    /// let j = 2;
    /// arr.set_ptr(arr.elem(j, 0), Some(key));
    /// arr.set_word(arr.elem(j, 1), 42);
    /// assert_eq!(arr.word(1 + j * 2 + 1), 42);
    /// ```
    ///
    /// # Panics
    /// If the object is not an array, if `j >= len()` or
    /// `k >= elem_words`, or if the handle is stale or foreign.
    #[inline]
    pub fn elem(self, j: usize, k: usize) -> usize {
        let d = self.live_descriptor();
        if !d.is_array() {
            panic!("GcRef::elem({j}, {k}) on `{}`, which is not an array", d.name());
        }
        let (len, ew) = (self.len_of(d), d.elem_words());
        if j >= len || k >= ew {
            panic!(
                "GcRef::elem({j}, {k}) out of bounds: array `{}` has {len} elements of {ew} words",
                d.name()
            );
        }
        1 + j * ew + k
    }
    /// Whether an array object has no elements (true for fixed objects).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
    /// Payload words of this object (for bounds checks). Panics if the
    /// handle is stale or foreign.
    #[inline]
    pub fn payload_words(self) -> usize {
        self.payload_words_of(self.live_descriptor())
    }
    /// Read payload word `i` (panics if out of bounds, or if the handle is
    /// stale or foreign).
    ///
    /// On an object of a Rust type (a [`gc_type!`](crate::gc_type) struct,
    /// [`Descriptor::is_rust_type`]) only its pointer slots and value slots
    /// may be read untyped (the words the collector itself reads: one-word
    /// fields written only atomically, `Member`, or never after `Gc::new`,
    /// `Gc<_>`/`GcRef`; see [`GcType`]); any other word panics, since it is
    /// a Rust field whose bytes an integer load may not touch: it may cover
    /// padding (uninitialised bytes), the data of a lock or `OnceLock`
    /// written non-atomically by another task (a data race), or a smaller
    /// atomic (a mixed-size access). Read such fields through the Rust type
    /// (`Gc<T>` deref).
    #[inline]
    pub fn word(self, i: usize) -> usize {
        let d = self.live_descriptor();
        if d.is_rust_type() {
            rust_type_read_check(self, d, i, "word");
        }
        // SAFETY: just checked live (and, for a Rust type, that word `i` is
        // a pointer or value slot, or out of bounds, which panics).
        unsafe { self.word_in(d, i) }
    }
    /// [`word`](GcRef::word) without the liveness check; the bounds check
    /// stays, the Rust-type check does not.
    ///
    /// # Safety
    /// `self` is a live object. If it is of a Rust type
    /// ([`Descriptor::is_rust_type`]), word `i` is one that may be read as
    /// an atomic word while tasks run: a pointer or value slot, or a word
    /// the type keeps fully initialised (no padding), never writes
    /// non-atomically after `Gc::new` (no lock's data) and never overlaps
    /// a smaller atomic (the safe version refuses every word but the
    /// slots; this one does not check).
    #[inline(always)]
    pub unsafe fn word_unchecked(self, i: usize) -> usize {
        // SAFETY: the caller guarantees a live object.
        unsafe { self.word_in(self.descriptor_unchecked(), i) }
    }
    /// # Safety
    /// `self` is a live object with descriptor `d`.
    #[inline(always)]
    unsafe fn word_in(self, d: &Descriptor, i: usize) -> usize {
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        // SAFETY: in bounds of a live object (aligned); payload words are
        // accessed atomically (Relaxed) so racing tasks are no data race.
        unsafe { (*(self.payload_in(d).add(i) as *const AtomicUsize)).load(Ordering::Relaxed) }
    }
    /// Write a raw payload word `i` (panics if out of bounds, if the word is
    /// a pointer slot — use `set_ptr` — or a value slot — use `set_value` —
    /// or an array's length word, or if the handle is stale or foreign).
    ///
    /// Panics also if the object is of a Rust type (a
    /// [`gc_type!`](crate::gc_type) struct, [`Descriptor::is_rust_type`]):
    /// its words are Rust fields whose validity (a `bool`, a reference)
    /// untyped bits would break; write through the Rust type instead.
    #[inline]
    pub fn set_word(self, i: usize, v: usize) {
        let d = self.live_descriptor();
        if d.is_rust_type() {
            rust_type_write_refused(self, d, "set_word");
        }
        // SAFETY: just checked live.
        unsafe { self.set_word_in(d, i, v) }
    }
    /// [`set_word`](GcRef::set_word) without the liveness check; the bounds,
    /// pointer-slot and length-word checks stay.
    ///
    /// # Safety
    /// `self` is a live object. If it is of a Rust type
    /// ([`Descriptor::is_rust_type`]), the write keeps that type's fields
    /// valid (the safe version refuses such objects; this one does not check).
    #[inline(always)]
    pub unsafe fn set_word_unchecked(self, i: usize, v: usize) {
        // SAFETY: the caller guarantees a live object.
        unsafe { self.set_word_in(self.descriptor_unchecked(), i, v) }
    }
    /// # Safety
    /// `self` is a live object with descriptor `d`.
    #[inline(always)]
    unsafe fn set_word_in(self, d: &Descriptor, i: usize, v: usize) {
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        if i == 0 && d.is_array() {
            length_write_refused(self, d, "set_word");
        }
        match d.slot_kind(i) {
            SlotKind::Raw => {}
            SlotKind::Pointer => panic!("payload word {i} of `{}` is a pointer slot: use set_ptr", d.name()),
            SlotKind::Value => panic!("payload word {i} of `{}` is a value slot: use set_value", d.name()),
        }
        // SAFETY: in bounds of a live object.
        unsafe { (*(self.payload_in(d).add(i) as *const AtomicUsize)).store(v, Ordering::Relaxed) }
    }
    /// Whether payload word `i` is a pointer slot according to the descriptor.
    /// Panics if the handle is stale or foreign.
    pub fn is_pointer_slot(self, i: usize) -> bool {
        self.is_pointer_slot_in(self.live_descriptor(), i)
    }
    #[inline]
    fn is_pointer_slot_in(self, d: &Descriptor, i: usize) -> bool {
        d.slot_kind(i) == SlotKind::Pointer
    }
    /// Whether payload word `i` is a value slot (a tagged word decoded with
    /// the heap's [`ValueEncoding`](crate::ValueEncoding)). Panics if the
    /// handle is stale or foreign.
    pub fn is_value_slot(self, i: usize) -> bool {
        self.live_descriptor().slot_kind(i) == SlotKind::Value
    }
    /// Read pointer slot `i` (panics like [`word`](GcRef::word), including
    /// on a word of a Rust type's object that is neither a pointer nor a
    /// value slot).
    #[inline]
    pub fn ptr(self, i: usize) -> Option<GcRef> {
        let d = self.live_descriptor();
        if d.is_rust_type() {
            rust_type_read_check(self, d, i, "ptr");
        }
        // SAFETY: as in `word`.
        GcRef::from_heap_addr(unsafe { self.word_in(d, i) })
    }
    /// [`ptr`](GcRef::ptr) without the liveness check.
    ///
    /// # Safety
    /// As [`word_unchecked`](GcRef::word_unchecked).
    #[inline(always)]
    pub unsafe fn ptr_unchecked(self, i: usize) -> Option<GcRef> {
        // SAFETY: the caller guarantees a live object.
        GcRef::from_heap_addr(unsafe { self.word_unchecked(i) })
    }
    /// Store a GC pointer into pointer slot `i` through the write barrier
    /// (panics if out of bounds, not a pointer slot, or if `self` or `v` is a
    /// stale or foreign handle).
    ///
    /// Panics also if the object is of a Rust type
    /// ([`Descriptor::is_rust_type`]): its pointer slots are typed fields
    /// (a `Member<A>` must hold an `A`), which an untyped store cannot
    /// check; use `Member::set`.
    #[inline]
    pub fn set_ptr(self, i: usize, v: Option<GcRef>) {
        let d = self.live_descriptor();
        if d.is_rust_type() {
            rust_type_write_refused(self, d, "set_ptr");
        }
        if let Some(v) = v {
            v.live_descriptor();
        }
        // SAFETY: just checked live.
        unsafe { self.set_ptr_in(d, i, v) }
    }
    /// [`set_ptr`](GcRef::set_ptr) without the liveness checks (of `self`
    /// and `v`); the bounds and pointer-slot checks stay.
    ///
    /// # Safety
    /// `self` is a live object; `v` is `None` or a live object. If it is of a Rust type
    /// ([`Descriptor::is_rust_type`]), the write keeps that type's fields
    /// valid (the safe version refuses such objects; this one does not check).
    #[inline(always)]
    pub unsafe fn set_ptr_unchecked(self, i: usize, v: Option<GcRef>) {
        // SAFETY: the caller guarantees live objects.
        unsafe { self.set_ptr_in(self.descriptor_unchecked(), i, v) }
    }
    /// # Safety
    /// `self` is a live object with descriptor `d`.
    #[inline(always)]
    unsafe fn set_ptr_in(self, d: &Descriptor, i: usize, v: Option<GcRef>) {
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        if i == 0 && d.is_array() {
            length_write_refused(self, d, "set_ptr");
        }
        assert!(self.is_pointer_slot_in(d, i), "payload word {i} is not a pointer slot");
        let v = v.map_or(0, |r| r.addr());
        // SAFETY: slot i is inside the live object; the barrier performs the store.
        unsafe { usurp_gc_write_barrier(self.addr() as *mut u8, self.payload_in(d).add(i), v) }
    }
    /// Read value slot `i`: the tagged word as stored (panics if out of
    /// bounds, if the word is not a value slot, or if the handle is stale or
    /// foreign).
    #[inline]
    pub fn value(self, i: usize) -> usize {
        let d = self.live_descriptor();
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        value_slot_check(self, d, i);
        // SAFETY: just checked live.
        unsafe { self.word_in(d, i) }
    }
    /// [`value`](GcRef::value) without the liveness check; the bounds check
    /// stays (the slot-kind check does not: any payload word may be read).
    ///
    /// # Safety
    /// As [`word_unchecked`](GcRef::word_unchecked) (on a Rust type's
    /// object, a word that is not a pointer or value slot is the caller's
    /// to vouch for).
    #[inline(always)]
    pub unsafe fn value_unchecked(self, i: usize) -> usize {
        // SAFETY: the caller guarantees a live object.
        unsafe { self.word_unchecked(i) }
    }
    /// The object value slot `i` points to, decoded with the heap's
    /// [`ValueEncoding`](crate::ValueEncoding): `None` for an immediate or
    /// a null pointer. Panics like [`value`](GcRef::value), and if the
    /// pointer-tagged word does not decode to a live object (a bad value).
    #[inline]
    pub fn value_ref(self, i: usize) -> Option<GcRef> {
        let w = self.value(i);
        let a = encoding_of(self).decode(w)?;
        if let Err(bad) = crate::refcheck::check_own(a) {
            bad_value(self, i, w, a, bad);
        }
        GcRef::from_heap_addr(a)
    }
    /// Store the tagged value `w` into value slot `i` through the value write
    /// barrier ([`usurp_gc_write_barrier_value`]). Panics if out of bounds,
    /// if the word is not a value slot, if `self` is stale or foreign, or if
    /// `w` is pointer-tagged (per the heap's encoding) but does not decode to
    /// a live object. Panics also if the object is of a Rust type
    /// ([`Descriptor::is_rust_type`]; write through the Rust type).
    #[inline]
    pub fn set_value(self, i: usize, w: usize) {
        let d = self.live_descriptor();
        if d.is_rust_type() {
            rust_type_write_refused(self, d, "set_value");
        }
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        value_slot_check(self, d, i);
        if let Some(a) = encoding_of(self).decode(w) {
            if let Err(bad) = crate::refcheck::check_own(a) {
                bad_value(self, i, w, a, bad);
            }
        }
        // SAFETY: just checked live.
        unsafe { self.set_value_in(d, i, w) }
    }
    /// [`set_value`](GcRef::set_value) without the liveness checks (of
    /// `self` and of the object `w` names); the bounds and slot-kind checks
    /// stay.
    ///
    /// # Safety
    /// `self` is a live object. If it is of a Rust type
    /// ([`Descriptor::is_rust_type`]), the write keeps that type's fields
    /// valid (the safe version refuses such objects; this one does not check). (A pointer-tagged `w` that names no live
    /// object is a VM bug but not undefined behaviour: marking counts it as a
    /// bad value and never follows it, the verifier reports it, and
    /// `value_ref` panics on it.)
    #[inline(always)]
    pub unsafe fn set_value_unchecked(self, i: usize, w: usize) {
        // SAFETY: the caller guarantees live objects.
        unsafe { self.set_value_in(self.descriptor_unchecked(), i, w) }
    }
    /// # Safety
    /// `self` is a live object with descriptor `d`.
    #[inline(always)]
    unsafe fn set_value_in(self, d: &Descriptor, i: usize, w: usize) {
        let n = self.payload_words_of(d);
        if i >= n {
            out_of_bounds(self, d, i, n);
        }
        value_slot_check(self, d, i);
        // SAFETY: slot i is inside the live object; the barrier performs the store.
        unsafe { usurp_gc_write_barrier_value(self.addr() as *mut u8, self.payload_in(d).add(i), w) }
    }
    /// Bytes of an array's elements (for pointer-free byte arrays / strings).
    /// The slice starts after the length word (payload word 0), which stays
    /// out of reach. Panics if the handle is stale or foreign.
    ///
    /// # Safety
    /// The slice must not be used after the object dies, nor across a store
    /// to the same object by another thread.
    pub unsafe fn array_bytes_mut<'a>(self) -> &'a mut [u8] {
        let d = self.live_descriptor();
        assert!(d.is_array() && d.is_pointer_free(), "array_bytes_mut needs a pointer-free array");
        let n = self.len_of(d) * d.elem_words() * 8;
        // SAFETY: the elements follow the length word inside the live object;
        // the caller guarantees exclusivity and lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.payload_in(d).add(1) as *mut u8, n) }
    }
}

#[cold]
#[inline(never)]
fn rust_type_write_refused(r: GcRef, d: &Descriptor, op: &str) -> ! {
    panic!(
        "GcRef::{op} on {r:?}, an object of the Rust type `{}` (made by gc_type!): untyped writes could break \
         its fields' types; write through the Rust type (Gc<T> deref: Member::set, atomics) instead",
        d.name()
    )
}

/// An untyped read (`op`) of payload word `i` of `r`, an object of the
/// Rust type `d`: returns if `i` is a pointer or value slot (one-word
/// fields the collector reads too, see [`GcType`]) or out of bounds (the
/// bounds check panics then), panics otherwise (see [`GcRef::word`]).
/// Out of line: the untyped reads of guest objects pay one flag test.
#[cold]
#[inline(never)]
fn rust_type_read_check(r: GcRef, d: &Descriptor, i: usize, op: &str) {
    if i >= r.payload_words_of(d) || d.slot_kind(i) != SlotKind::Raw || !RUST_TYPE_READ_CHECK.load(Ordering::Relaxed)
    {
        return;
    }
    panic!(
        "GcRef::{op}({i}) on {r:?}, an object of the Rust type `{}` (made by gc_type!): payload word {i} is \
         not a pointer or value slot but a plain Rust field, which an untyped read may not touch (it may \
         cover padding, a lock's data or a smaller atomic); read it through the Rust type (Gc<T> deref) \
         instead (only its pointer slots, the Member fields, and value slots are readable untyped)",
        d.name()
    )
}

/// Test-only switch (negative control of the Rust-type read check): `false`
/// lets the safe untyped reads touch every word of a Rust type's object,
/// as before. Read on the cold path only.
static RUST_TYPE_READ_CHECK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turns the refusal of untyped reads of a Rust type's plain
/// fields off (`false`) or on again (the default). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_rust_type_read_check_for_tests(on: bool) {
    RUST_TYPE_READ_CHECK.store(on, Ordering::Relaxed);
}

#[cold]
#[inline(never)]
fn out_of_bounds(r: GcRef, d: &Descriptor, i: usize, n: usize) -> ! {
    panic!("payload word {i} out of bounds: {r:?} (`{}`) has {n} payload words", d.name())
}

/// The value encoding of the heap holding `r` (a checked, live object).
#[inline]
fn encoding_of(r: GcRef) -> crate::ValueEncoding {
    crate::refcheck::encoding_of(r.addr()).unwrap_or_default()
}

#[inline(always)]
fn value_slot_check(r: GcRef, d: &Descriptor, i: usize) {
    if d.slot_kind(i) != SlotKind::Value {
        not_a_value_slot(r, d, i)
    }
}

#[cold]
#[inline(never)]
fn not_a_value_slot(r: GcRef, d: &Descriptor, i: usize) -> ! {
    panic!("payload word {i} of {r:?} (`{}`) is not a value slot ({:?})", d.name(), d.slot_kind(i))
}

#[cold]
#[inline(never)]
fn bad_value(r: GcRef, i: usize, w: usize, a: usize, bad: crate::refcheck::Bad) -> ! {
    let why = match bad {
        crate::refcheck::Bad::NotLive => "not a live object of any usurp heap".to_string(),
        crate::refcheck::Bad::OtherHeap => "an object of another usurp heap".to_string(),
        crate::refcheck::Bad::Freed(d) => format!("a freed `{}` object (checkrefs)", d.name()),
    };
    panic!("value slot {i} of {r:?}: {w:#x} is pointer-tagged but decodes to {a:#x}, {why}")
}

#[cold]
#[inline(never)]
fn length_write_refused(r: GcRef, d: &Descriptor, what: &str) -> ! {
    panic!(
        "{what}(0, ..) on {r:?}: payload word 0 of array `{}` is its length ({} elements), which is \
         read-only; element words start at payload word 1",
        d.name(),
        r.len()
    )
}

/// `Gc::try_new`'s work beyond the store (see `barrier::NEW_OBJECT_WORK`).
///
/// # Safety
/// `r` is an object of this thread's heap with descriptor `d` and payload
/// `payload`, just written and not yet shared.
#[cold]
#[inline(never)]
unsafe fn new_object_work(r: GcRef, d: &Descriptor, payload: *mut usize) {
    if crate::refcheck::several_heaps() && !d.is_array() {
        // SAFETY: per the contract.
        unsafe { crate::refcheck::refuse_foreign_fields(payload, d) };
    }
    if crate::refcheck::CHECK_REFS_HEAPS.load(Ordering::Relaxed) != 0 && !d.is_array() {
        // SAFETY: per the contract.
        unsafe { crate::refcheck::refuse_stale_fields(payload, d) };
    }
    if crate::barrier::MARKING.load(Ordering::Relaxed) != 0 {
        crate::barrier::shade_new_object_fields(r.addr());
    }
}

/// A typed pointer to a heap object holding a `T` (see [`GcType`]).
#[repr(transparent)]
pub struct Gc<T> {
    raw: GcRef,
    _t: PhantomData<*const T>,
}

// SAFETY: a `Gc<T>` is an address; on any thread its safe accessors
// check that it names a live `T` before handing out a `&T`, which other
// threads may hold at the same time (so `T: Sync`; every `GcType` is).
// Objects are never moved or dropped through a `Gc`, so `T: Send` is not
// needed. This is what `GcRef` + `Gc::from_ref` already allowed, typed.
unsafe impl<T: Sync> Send for Gc<T> {}
// SAFETY: as above: `Gc<T>` is `Copy`, so sharing one is sending a copy.
unsafe impl<T: Sync> Sync for Gc<T> {}

impl<T> Clone for Gc<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Gc<T> {}
impl<T> PartialEq for Gc<T> {
    fn eq(&self, o: &Self) -> bool {
        self.raw == o.raw
    }
}
impl<T> Eq for Gc<T> {}
impl<T> std::fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gc<{}>({:#x})", std::any::type_name::<T>(), self.raw.addr())
    }
}

impl<T: GcType> Gc<T> {
    /// Allocate a `T` on the current thread's heap (panics if the thread is not
    /// attached or the heap limit is exhausted; see [`crate::alloc`]).
    #[inline]
    pub fn new(value: T) -> Gc<T> {
        match Self::try_new(value) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }
    /// Allocate a `T`, or report why not.
    #[inline]
    pub fn try_new(value: T) -> Result<Gc<T>, crate::AllocError> {
        let d = T::descriptor();
        if T::PAYLOAD_OFFSET != d.payload_offset() || !d.is_rust_type() {
            bad_gc_type_descriptor::<T>(d);
        }
        // (Not `crate::try_alloc`, which refuses a Rust type's descriptor:
        // here the payload is written with a `T` before anyone sees it.)
        let r = crate::mutator::try_alloc_fixed(d)?;
        // SAFETY: the new object's payload (at PAYLOAD_OFFSET, checked
        // above) is at least size_of::<T>() bytes (GcType contract),
        // 8-aligned, and not yet visible to anyone else.
        unsafe { (typed_payload::<T>(r) as *mut T).write(value) };
        // Beyond the store (one load and a predicted branch while no heap
        // marks and one heap exists, `barrier::NEW_OBJECT_WORK`): with
        // several heaps, fields naming another heap's objects are refused;
        // under checkrefs, fields holding a stale handle are refused;
        // while a heap marks, the new object is black (never scanned), so
        // its `Member` fields get the barrier's insertion half, so that a
        // value only an unscanned stack held is not lost (the hybrid
        // barrier's rationale; today every stack is scanned in the start
        // stop, which also covers it). Inlined into preemptible guest code,
        // the check and the (out-of-line) shade are not one no-preemption
        // step: a termination stop could fall between them. Harmless while
        // every stack is scanned in the start stop; per-task stack scanning
        // must close that window (e.g. by doing the check inside the
        // allocation's no-preemption section).
        if crate::barrier::NEW_OBJECT_WORK.load(Ordering::Relaxed) > 1 {
            // SAFETY: `r` was just allocated with `d` and its payload
            // written (above); nobody else has it.
            unsafe { new_object_work(r, d, typed_payload::<T>(r)) };
        }
        Ok(Gc { raw: r, _t: PhantomData })
    }
    /// A typed handle from a raw one, checking the descriptor (`None` if it
    /// is not `T`'s; panics if `r` is stale or foreign).
    pub fn from_ref(r: GcRef) -> Option<Gc<T>> {
        let d = T::descriptor();
        if T::PAYLOAD_OFFSET != d.payload_offset() || !d.is_rust_type() {
            bad_gc_type_descriptor::<T>(d);
        }
        std::ptr::eq(r.descriptor(), d).then_some(Gc { raw: r, _t: PhantomData })
    }
}

/// Payload word 0 of a `T` object: a compile-time offset (`GcType::PAYLOAD_OFFSET`).
#[inline(always)]
fn typed_payload<T: GcType>(r: GcRef) -> *mut usize {
    r.0.as_ptr().wrapping_byte_add(T::PAYLOAD_OFFSET)
}

#[cold]
#[inline(never)]
fn bad_gc_type_descriptor<T>(d: &Descriptor) -> ! {
    if !d.is_rust_type() {
        panic!(
            "GcType for {}: its descriptor `{}` is not marked as a Rust type (Descriptor::rust_type): use gc_type!",
            std::any::type_name::<T>(),
            d.name()
        )
    }
    panic!(
        "GcType for {}: PAYLOAD_OFFSET disagrees with its descriptor `{}` (payload_offset {}): use gc_type!",
        std::any::type_name::<T>(),
        d.name(),
        d.payload_offset()
    )
}

impl<T> Gc<T> {
    /// The raw handle.
    #[inline(always)]
    pub fn raw(self) -> GcRef {
        self.raw
    }
    /// A typed handle from a raw one without checking.
    ///
    /// # Safety
    /// `r` must point at a live object whose payload is a `T`.
    pub unsafe fn from_ref_unchecked(r: GcRef) -> Gc<T> {
        Gc { raw: r, _t: PhantomData }
    }
    /// Whether two handles name the same object.
    pub fn ptr_eq(a: Gc<T>, b: Gc<T>) -> bool {
        a.raw == b.raw
    }
}

/// The deref fast path's constants for `T` (`None`: a large `T`), from its
/// size and layout: a compile-time constant per `T`.
#[inline(always)]
pub(crate) const fn fast_shape_of<T: GcType>() -> Option<crate::refcheck::FastShape> {
    Shape::<T>::FAST
}

struct Shape<T>(PhantomData<T>);

impl<T: GcType> Shape<T> {
    /// `T`'s object size: its payload rounded up to words (as `gc_type!`
    /// sizes its descriptor) plus the header, if any.
    const FAST: Option<crate::refcheck::FastShape> = crate::refcheck::fast_shape(
        T::PAYLOAD_OFFSET + std::mem::size_of::<T>().div_ceil(8) * 8,
        T::PAYLOAD_OFFSET == 0,
    );
}

/// `checked_payload`'s general check: returns if `raw` is a live `T` on a
/// thread with a mutator (a `T` the fast path does not cover: a large
/// object, an array, a `T` whose descriptor is of another size class than
/// its size), panics otherwise.
#[cold]
#[inline(never)]
fn checked_payload_slow<T: GcType>(raw: GcRef) {
    let d = raw.live_descriptor();
    if !std::ptr::eq(d, T::descriptor()) {
        wrong_type(raw, d, std::any::type_name::<T>());
    }
}

/// Deref checks (decision for issue 10 item 8): a `Gc<T>` is `Copy` like
/// `GcRef`, so a stale one kept in Rust heap memory could otherwise hand out
/// a `&T` over freed or reused memory — undefined behaviour from safe code
/// for any `T` with invalid bit patterns. `deref` therefore checks that the
/// handle names a live object whose descriptor is `T`'s, and panics like the
/// `GcRef` accessors otherwise. The cost is one lookup per deref (see
/// `cargo bench -p usurp-gc --bench refs`); hot paths that know the object
/// is alive use [`Gc::get_unchecked`].
///
/// A deref is also a cooperative point (issue 9, see the module docs): the
/// task may yield there while some worker has a checkpoint request
/// outstanding (a stop of the world, a refused quantum tick), so that a
/// walk over objects that allocates nothing does not hold up a stop.
/// `get_unchecked` does not poll.
impl<T: GcType> std::ops::Deref for Gc<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // A cooperative point (see the module docs): one load and a branch
        // unless some worker has a checkpoint request outstanding. Small
        // enough to be inlined into the caller, with the handle passed by
        // value to the check.
        read_poll();
        checked_payload(self.raw)
    }
}

/// The payload of `raw` as a `T`, after `deref`'s liveness and type check.
/// The lifetime is the caller's borrow of the handle.
///
/// Two paths: the common case (a small `T` of this thread's mutator's heap)
/// is `refcheck::is_live_as_type` (`is_live_as` with `T`'s size-class
/// constants, [`fast_shape_of`], against the mutator's heap only); anything
/// else, and every failure, goes to the general check
/// (`GcRef::live_descriptor`), which gives the answer and the panic.
#[inline]
fn checked_payload<'a, T: GcType>(raw: GcRef) -> &'a T {
    let own = crate::mutator::current_entry();
    // SAFETY: `own` is null (not dereferenced: `||`) or an entry, which is
    // leaked (never freed); the current thread's mutator's when read
    // (non-inlined), the same for every worker of a runtime should the
    // task migrate.
    let fast = !own.is_null() && crate::refcheck::is_live_as_type::<T>(raw.addr(), unsafe { &*own });
    if !fast {
        checked_payload_slow::<T>(raw);
    }
    // SAFETY: `raw` is a live object whose descriptor is
    // `T::descriptor()`: `is_live_as` answered true (only where the general
    // check answers `Ok(T::descriptor())`), or `checked_payload_slow`
    // returned (it panics otherwise); the object is of the heap of this
    // thread's mutator (both checks refuse other heaps), which stops and
    // scans this thread, so no collection frees it while the caller borrows
    // the handle (or, without a mutator, this is the collecting thread in
    // its pause, the world stopped). Its payload
    // (at T's PAYLOAD_OFFSET, which Gc::new / from_ref checked against the
    // descriptor) is a valid T; mutation of GC pointer fields goes through
    // Member's UnsafeCell.
    unsafe { &*(typed_payload::<T>(raw) as *const T) }
}

impl<T: GcType> Gc<T> {
    /// The object without the liveness and type check of `deref`.
    ///
    /// # Safety
    /// `self` names a live object whose payload is a `T`.
    #[inline(always)]
    pub unsafe fn get_unchecked(&self) -> &T {
        // SAFETY: the caller guarantees a live T object.
        unsafe { &*(typed_payload::<T>(self.raw) as *const T) }
    }
}

/// The safe read path's poll (see the module docs): the inlined part, one
/// Relaxed load of a process-wide counter and a branch.
#[inline(always)]
fn read_poll() {
    if usurp_preempt::internals::any_checkpoint_request() {
        read_poll_slow();
    }
}

/// Some worker has a checkpoint request outstanding (maybe not this one's):
/// a cooperative point where a task may yield, unless this thread has no
/// mutator (a `blocking` closure, a plain thread, the collector's pause:
/// such a thread keeps the request for its next real cooperative point,
/// as at allocation). `checkpoint()` reads this thread's own slot and does
/// nothing inside a no-preemption section or off a worker. Runtime code:
/// out of line, so never part of a `preemptible!` section.
#[cold]
#[inline(never)]
fn read_poll_slow() {
    if READ_POLL.load(Ordering::Relaxed) && !crate::mutator::current_mutator().is_null() {
        usurp_preempt::checkpoint();
    }
}

/// Test-only switch (negative control of "a `Gc<T>` deref is a cooperative
/// point", issue 9): `false` makes the poll's slow path do nothing, as
/// before. Read on the slow path only.
static READ_POLL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test-only: turns the deref poll off (`false`) or on again (the default).
/// Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_read_poll_for_tests(on: bool) {
    READ_POLL.store(on, Ordering::Relaxed);
}

#[cold]
#[inline(never)]
fn wrong_type(r: GcRef, d: &Descriptor, t: &str) -> ! {
    panic!("stale Gc<{t}> {r:?}: the object there now is a `{}` (its memory was freed and reused)", d.name())
}

/// A GC-pointer field of a [`GcType`] struct: one word, null or an object.
/// Reads are plain loads; stores go through the write barrier.
#[repr(transparent)]
pub struct Member<T> {
    v: UnsafeCell<usize>,
    _t: PhantomData<*const T>,
}

impl<T> Member<T> {
    /// A field initialised to `v` (for building a value passed to `Gc::new`,
    /// which shades `v` while a heap marks, as the barrier's insertion half
    /// would; a `Member` is never stored into a heap object otherwise).
    /// `v` is not checked here: `Gc::new` refuses another heap's object,
    /// and a stale handle only under checkrefs (`HeapConfig::check_refs`;
    /// a check per field on every allocation otherwise): pass live handles.
    pub fn new(v: Option<Gc<T>>) -> Member<T> {
        Member { v: UnsafeCell::new(v.map_or(0, |g| g.raw.addr())), _t: PhantomData }
    }
    /// A null field.
    pub const fn null() -> Member<T> {
        Member { v: UnsafeCell::new(0), _t: PhantomData }
    }
    /// The current value.
    #[inline(always)]
    pub fn get(&self) -> Option<Gc<T>> {
        // SAFETY: the cell holds an aligned word; read atomically to pair with
        // the barrier's atomic store.
        let a = unsafe { (*(self.v.get() as *const AtomicUsize)).load(Ordering::Relaxed) };
        GcRef::from_heap_addr(a).map(|raw| Gc { raw, _t: PhantomData })
    }
}

impl<T: GcType> Member<T> {
    /// Store through the write barrier. The field must be inside a heap object
    /// (a `Member` in a Rust local is not scanned precisely).
    ///
    /// Panics on a thread that the World does not stop (no mutator: a plain
    /// thread, a `blocking` closure), like the `GcRef` accessors.
    ///
    /// Panics if `v` is an object of another heap than this thread's (as
    /// the accessors do): that heap would not see the reference and could
    /// free its target, and its barrier would shade from a thread its
    /// collector does not stop. Panics if `v` is stale (not a live object:
    /// its object was freed), as `GcRef::set_ptr`, `Root::set` and
    /// `Heap::add_root` do: stored, it would name whatever object is later
    /// put at that address (RT-gc item 7, session 14). A stale handle whose
    /// memory already holds a new object passes (it names that object).
    #[inline]
    pub fn set(&self, v: Option<Gc<T>>) {
        let own = crate::refcheck::own_entry();
        if own.is_none() {
            crate::mutator::access_without_mutator(self.v.get() as usize);
        }
        if let Some(g) = v {
            // `deref`'s check: the fast path (a live `T` of this thread's
            // heap, with `T`'s compile-time shape), else the general check,
            // which panics for a stale, foreign or mistyped handle.
            if !own.is_some_and(|e| crate::refcheck::is_live_as_type::<T>(g.raw.addr(), e)) {
                checked_payload_slow::<T>(g.raw);
            }
        }
        // SAFETY: the slot is this cell; the barrier performs the store. The
        // containing object is not known here: obj = null is allowed.
        unsafe { usurp_gc_write_barrier(std::ptr::null_mut(), self.v.get(), v.map_or(0, |g| g.raw.addr())) }
    }
}

// SAFETY: a `Member` is one word read and written only atomically (`get`
// an atomic load, `set` the barrier's atomic store), so sharing it between
// threads races on nothing; the `Gc<T>` it yields needs `T: Sync` to move
// between threads (above), hence the bound.
unsafe impl<T: Sync> Sync for Member<T> {}
// SAFETY: as above; a `Member` owns nothing but the word.
unsafe impl<T: Sync> Send for Member<T> {}

impl<T> Default for Member<T> {
    fn default() -> Self {
        Member::null()
    }
}
