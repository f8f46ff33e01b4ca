//! The write barrier.
//!
//! Every store of a GC pointer into a heap object goes through
//! [`usurp_gc_write_barrier`], which performs the store itself, so that "check
//! the GC phase" and "store" are one piece of code in which asynchronous
//! preemption is refused (pitfall 7: no safe point between the check and the
//! store). While marking stops the world (this collector) the barrier has
//! nothing to record; concurrent marking will add its slow path here.
//!
//! Tagged one-word values (issue 14) are stored through
//! [`usurp_gc_write_barrier_value`], beside it in the same section; only its
//! marking path (not yet: marking stops the world) will decode values.
//!
//! The barrier's code lives in its own linker section `usurp_barrier`; the
//! linker defines `__start_usurp_barrier` / `__stop_usurp_barrier` around it,
//! and [`barrier_code_range`] registers those bounds with the preemption
//! engine as an unsafe (non-restartable) range when the first heap is created.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

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
/// Today marking stops the world, so this only stores, like
/// [`usurp_gc_write_barrier`]. When marking runs concurrently, its marking
/// path must decode the old value of `*slot` and `value` with the heap's
/// encoding and shade the objects they point to (immediates decode to
/// nothing); the fast path (not marking) must stay decode-free.
///
/// # Safety
/// As [`usurp_gc_write_barrier`], with `value` a value as above.
#[no_mangle]
#[inline(never)]
#[link_section = "usurp_barrier"]
pub unsafe extern "C" fn usurp_gc_write_barrier_value(obj: *mut u8, slot: *mut usize, value: usize) {
    let _ = obj;
    // SAFETY: the caller guarantees slot is a valid, aligned, writable word
    // (Relaxed atomic store: a plain store on both ISAs, no data race).
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
        let (s, e) = barrier_code_range();
        crate::preempt_glue::register_unsafe_range(s, e, false);
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
        // SAFETY: w is a valid local word.
        unsafe { usurp_gc_write_barrier_value(std::ptr::null_mut(), &mut w, 43) };
        assert_eq!(w, 43);
    }
}
