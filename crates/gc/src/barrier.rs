//! The write barrier.
//!
//! Every store of a GC pointer into a heap object goes through
//! [`usurp_gc_write_barrier`], which performs the store itself, so that "check
//! the GC phase" and "store" are one piece of code in which asynchronous
//! preemption is refused (pitfall 7: no safe point between the check and the
//! store).
//!
//! **Go's hybrid barrier** (Yuasa deletion + Dijkstra insertion): while any
//! heap marks (`MARKING` is non-zero), the barrier shades both the value
//! it overwrites and the value it stores (`refcheck::shade`: atomic mark,
//! then the heap's grey list), then stores. Fast path (no heap marking):
//! one load of `MARKING`, a predicted branch, the store. The deletion half
//! is what keeps the snapshot taken at the start stop complete (an object
//! reachable when marking started is marked even if the only heap reference
//! to it is overwritten after a task loaded it into a register or a stack
//! slot already scanned); the insertion half keeps a black object from
//! gaining the only reference to a white one for stacks not scanned at the
//! start (per-task stack scanning). Rejected: pure Dijkstra (needs every
//! stack rescanned with the world stopped at the end), pure SATB/Yuasa
//! (needs every stack scanned at the start; it would do for the current
//! start stop, but not once stacks are scanned one task at a time). See the
//! crate docs, "Concurrent marking".
//!
//! Tagged one-word values (issue 14) are stored through
//! [`usurp_gc_write_barrier_value`], beside it in the same section, with the
//! same fast path; its slow path decodes the old and the new value with the
//! encoding of the object's heap before shading them (an immediate names
//! nothing and is not shaded).
//!
//! The barrier's code lives in its own linker section `usurp_barrier`; the
//! linker defines `__start_usurp_barrier` / `__stop_usurp_barrier` around it,
//! and [`barrier_code_range`] registers those bounds with the preemption
//! engine as an unsafe (non-restartable) range when the first heap is created.
//!
//! **JIT code** calls [`usurp_gc_write_barrier`] (an out-of-line call): the
//! flag (`MARKING`, crate-private, so that the fast path needs no GOT load)
//! and the slow path are not exported, so there is no supported way to
//! inline the barrier into generated code. The compiled barrier is never
//! preemptible code, so in a program the unsafe range guards only a copy of
//! it registered as preemptible (what `tests/gc_barrier_range.rs` does to
//! show that the registration is load-bearing).
//!
//! **Ordering (aarch64).** The barrier stores the pointer with a Relaxed
//! store (a plain `str`). A concurrent marker that reads the field may see
//! the new value before the new object's object-start bit (published with
//! Release by the allocating thread) or its block's kind; it then finds no
//! object there and counts a bad pointer (`GcStats::bad_pointers`) without
//! marking anything. Nothing is lost: an object allocated during a mark is
//! already black, and one allocated before it was published before the
//! start stop. So a few spurious bad pointers may be counted on aarch64
//! during concurrent marks; making the store Release (`stlr`) would avoid
//! them at a cost on the hot path that was not measured, so it is not done.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Number of heaps marking concurrently right now: the barrier's flag (one
/// load on the fast path). Changed only by a collector with its world
/// stopped (start and termination stops), so a mutator running between
/// them sees the value of the last stop (the stop/start handshake orders
/// it).
pub(crate) static MARKING: AtomicUsize = AtomicUsize::new(0);

/// `MARKING` plus the number of heaps registered: above 1 while a heap
/// marks or several heaps exist, when a new object's initialisation
/// (`Gc::new`) has work beyond its store (shade its fields; refuse fields
/// naming another heap's objects). One load on the allocation path for
/// both. Changed next to `MARKING` (same stops) and by heap registration
/// (`refcheck::register` and `Registration::drop`, under `REGISTER`).
pub(crate) static NEW_OBJECT_WORK: AtomicUsize = AtomicUsize::new(0);

/// Test-only switch (negative control of the barrier): when false, the
/// slow paths (pointer and value barrier) shade nothing (the store still
/// happens).
static SHADING: AtomicBool = AtomicBool::new(true);

/// Test-only: turn the barrier's shading off (`false`) or on again (the
/// default), to show a test loses an object without it. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_barrier_shading_for_tests(on: bool) {
    SHADING.store(on, Ordering::SeqCst);
}

/// Test-only switch: when false, [`register_barrier_range`] does not
/// register the barrier as an unsafe range (the negative control of the
/// check-then-store rule). Must be set before the first heap is created.
static REGISTER_RANGE: AtomicBool = AtomicBool::new(true);

/// Test-only: do not register the barrier's code as an unsafe range
/// (`false`); must be called before the first heap of the process is
/// created. Process-wide: only for a test binary of its own.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_barrier_range_registration_for_tests(on: bool) {
    REGISTER_RANGE.store(on, Ordering::SeqCst);
}

/// The insertion half for stores that do not go through the barrier: the
/// initialising store of `Gc::new` (its `Member` fields) and the values
/// `RootedVec::push` / `set` put in (and take out of) a root container.
/// Shades `value` if a heap marks; nothing otherwise. Called only after an
/// inlined `MARKING` check, so it costs nothing outside a mark. Honours
/// [`set_barrier_shading_for_tests`] (its negative controls).
#[cold]
#[inline(never)]
pub(crate) fn shade_insertion(value: usize) {
    if SHADING.load(Ordering::Relaxed) {
        crate::refcheck::shade(value);
    }
}

/// `Gc::new`'s insertion half: the new object `obj` (black if allocated
/// during a mark, so never scanned) was just initialised with a value that
/// may hold pointers no barrier saw; shade every pointer field. Called
/// while a heap marks (`Gc::new`'s `new_object_work`), by the thread that
/// allocated `obj`.
#[cold]
#[inline(never)]
pub(crate) fn shade_new_object_fields(obj: usize) {
    if !SHADING.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: `obj` is an object this thread just allocated and initialised
    // (its header, or its typed block's word, holds its descriptor; it is
    // not yet visible to others).
    let (d, payload) = unsafe { crate::refcheck::layout_of(obj) };
    let p = payload as *const usize;
    let own = crate::refcheck::own_of_new_object(obj);
    // SAFETY: payload word 0 of an array is its length.
    let len = if d.is_array() { unsafe { p.read() } } else { 0 };
    d.for_each_reference_word(len, |i, value| {
        // SAFETY: i is a payload word of this object per its descriptor.
        let w = unsafe { p.add(i).read() };
        if value {
            // A value slot (issue 14): decoded with the heap's encoding; an
            // immediate shades nothing.
            crate::refcheck::shade_values(obj, 0, w);
        } else {
            crate::refcheck::shade_from(own, w);
        }
    });
}

/// The slow path: shade the overwritten value and the new one, then store.
/// In the barrier's section too (the store stays inside the unsafe range);
/// the fast path tail-calls it, so that it needs no frame of its own.
#[cold]
#[inline(never)]
#[link_section = "usurp_barrier"]
unsafe extern "C" fn barrier_slow(slot: *mut usize, value: usize) {
    if SHADING.load(Ordering::Relaxed) {
        // SAFETY: the barrier's caller guarantees slot is a valid word.
        let old = unsafe { (*(slot as *const AtomicUsize)).load(Ordering::Relaxed) };
        let own = crate::refcheck::Own::Known(crate::refcheck::own_entry());
        crate::refcheck::shade_from(own, old);
        crate::refcheck::shade_from(own, value);
    }
    // SAFETY: as in `usurp_gc_write_barrier`.
    unsafe { (*(slot as *const AtomicUsize)).store(value, Ordering::Relaxed) }
}

/// Store `value` into `*slot`, a GC-pointer slot of object `obj` (which may
/// be null when the caller does not know it).
///
/// # Safety
/// `slot` must be a valid, aligned, writable word inside a live heap object (or
/// any valid word when used outside the heap); `value` must be 0 or a GC object.
/// The calling thread must be one the heap's World stops (a task outside
/// `blocking()`, an attached thread): a store from any other thread can race
/// the marker and hide a reachable object from it. Unlike the safe accessors
/// ([`GcRef::set_ptr`](crate::GcRef::set_ptr), [`Member::set`](crate::Member::set)),
/// the barrier does not check this (it is JIT code's hot path).
#[no_mangle]
#[inline(never)]
#[link_section = "usurp_barrier"]
pub unsafe extern "C" fn usurp_gc_write_barrier(obj: *mut u8, slot: *mut usize, value: usize) {
    let _ = obj;
    // Check and store are one step: this code (and the slow path's) is an
    // unsafe range, so no safe point lies between the load of MARKING and
    // the store.
    if MARKING.load(Ordering::Relaxed) != 0 {
        // SAFETY: the caller's guarantees, passed on.
        return unsafe { barrier_slow(slot, value) };
    }
    // SAFETY: the caller guarantees slot is a valid, aligned, writable word.
    // An atomic (Relaxed, a plain store on both ISAs) so that racing readers
    // on other threads are not a data race.
    unsafe { (*(slot as *const AtomicUsize)).store(value, Ordering::Relaxed) }
}

/// Store the tagged value `value` into `*slot`, a value slot of object
/// `obj` (which may be null when the caller does not know it): the entry for
/// JIT code storing a one-word tagged value (issue 14). `value` is encoded
/// with the heap's [`ValueEncoding`](crate::ValueEncoding) (an immediate, a
/// null pointer, or a tagged pointer to a live object).
///
/// The same hybrid barrier as [`usurp_gc_write_barrier`], on tagged
/// values: fast path (no heap marking) one load of `MARKING`, a branch, the
/// store, no decoding; while a heap marks, the slow path decodes the value
/// overwritten and the value stored with the encoding of `obj`'s heap (of
/// `slot`'s when `obj` is null) and shades the objects they name
/// (`refcheck::shade_values`; an immediate, a null pointer or a word that
/// decodes to no object is ignored), then stores.
///
/// # Safety
/// As [`usurp_gc_write_barrier`], with `value` a value as above, and `obj`
/// null or the object holding `slot`.
#[no_mangle]
#[inline(never)]
#[link_section = "usurp_barrier"]
pub unsafe extern "C" fn usurp_gc_write_barrier_value(obj: *mut u8, slot: *mut usize, value: usize) {
    // Check and store are one step, as in `usurp_gc_write_barrier`.
    if MARKING.load(Ordering::Relaxed) != 0 {
        // SAFETY: the caller's guarantees, passed on.
        return unsafe { barrier_value_slow(obj, slot, value) };
    }
    // SAFETY: the caller guarantees slot is a valid, aligned, writable word
    // (Relaxed atomic store: a plain store on both ISAs, no data race).
    unsafe { (*(slot as *const AtomicUsize)).store(value, Ordering::Relaxed) }
}

/// The value barrier's slow path: shade what the overwritten and the
/// stored value decode to, then store; in the barrier's section and
/// tail-called, like [`barrier_slow`].
#[cold]
#[inline(never)]
#[link_section = "usurp_barrier"]
unsafe extern "C" fn barrier_value_slow(obj: *mut u8, slot: *mut usize, value: usize) {
    if SHADING.load(Ordering::Relaxed) {
        // SAFETY: the barrier's caller guarantees slot is a valid word.
        let old = unsafe { (*(slot as *const AtomicUsize)).load(Ordering::Relaxed) };
        let holder = if obj.is_null() { slot as usize } else { obj as usize };
        crate::refcheck::shade_values(holder, old, value);
    }
    // SAFETY: as in `usurp_gc_write_barrier_value`.
    unsafe { (*(slot as *const AtomicUsize)).store(value, Ordering::Relaxed) }
}

extern "C" {
    static __start_usurp_barrier: u8;
    static __stop_usurp_barrier: u8;
}

/// `[start, end)` of the barrier code.
pub fn barrier_code_range() -> (usize, usize) {
    // A regular reference to the section's code keeps the section alive under
    // lld's default `-z start-stop-gc` (a section referenced only through
    // __start_/__stop_ would be discarded by --gc-sections, leaving the
    // symbols undefined).
    std::hint::black_box(usurp_gc_write_barrier as *const ());
    std::hint::black_box(usurp_gc_write_barrier_value as *const ());
    // SAFETY: the linker defines both symbols around the section that holds
    // usurp_gc_write_barrier; taking their addresses reads nothing. (The
    // block is needed before Rust 1.82, which made this safe.)
    #[allow(unused_unsafe)]
    unsafe {
        (
            std::ptr::addr_of!(__start_usurp_barrier) as usize,
            std::ptr::addr_of!(__stop_usurp_barrier) as usize,
        )
    }
}

/// Register the barrier's code as an unsafe range (once per process).
pub fn register_barrier_range() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !REGISTER_RANGE.load(Ordering::SeqCst) {
            return;
        }
        let (s, e) = barrier_code_range();
        // SAFETY: non-restartable (preemptions there are only refused); the
        // barrier's linker section is static, mapped for the whole process.
        unsafe { crate::preempt_glue::register_unsafe_range(s, e, false) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_is_inside_its_section_and_registered() {
        let (s, e) = barrier_code_range();
        let f = usurp_gc_write_barrier as *const () as usize;
        assert!(s <= f && f < e, "barrier {f:#x} outside [{s:#x}, {e:#x})");
        register_barrier_range();
        assert!(crate::preempt_glue::is_unsafe_pc(f));
        assert!(crate::preempt_glue::is_unsafe_pc(e - 1));
        assert!(!crate::preempt_glue::is_unsafe_pc(e));
        assert!(!crate::preempt_glue::is_unsafe_pc(barrier_code_range as *const () as usize));
        let mut w = 0usize;
        // SAFETY: w is a valid local word.
        unsafe { usurp_gc_write_barrier(std::ptr::null_mut(), &mut w, 42) };
        assert_eq!(w, 42);
        let v = usurp_gc_write_barrier_value as *const () as usize;
        assert!(s <= v && v < e, "value barrier {v:#x} outside [{s:#x}, {e:#x})");
        assert!(crate::preempt_glue::is_unsafe_pc(v));
        let vs = barrier_value_slow as *const () as usize;
        assert!(s <= vs && vs < e, "value barrier's slow path {vs:#x} outside [{s:#x}, {e:#x})");
        // SAFETY: w is a valid local word.
        unsafe { usurp_gc_write_barrier_value(std::ptr::null_mut(), &mut w, 43) };
        assert_eq!(w, 43);
    }
}
