//! The hybrid barrier's insertion half for the stores that bypass
//! `usurp_gc_write_barrier` (review finding 2): `Gc::new`'s initialising
//! store (a `Member::new(Some(x))` inside the value) and `RootedVec::push` /
//! `set`. The mark is stepped (`debug_begin_marking` does not scan the
//! caller's stack: what per-task stack scanning does to a task whose stack
//! is scanned before it stores), and `x` is held only by that unscanned
//! stack when it is stored into a new (black) object or a root container
//! scanned before. Each path must keep `x`; `Member::set` (the barrier) is
//! the positive control, and with the barrier's shading switched off
//! (`set_barrier_shading_for_tests(false)`, which also turns these paths'
//! shading off) every path loses `x` — the pre-fix behaviour of `Gc::new`
//! and `RootedVec`.

mod common;
use common::*;
use usurp_gc::internals::set_barrier_shading_for_tests;
use usurp_gc::{Descriptor, GcType, HeapConfig, Root, RootedVec, ValueEncoding};
use usurp_testsupport::serial;

/// A hand-written `GcType` whose one field is a value slot (issue 14): a
/// low-bit-tagged word (`low_bits(7, 1)`: pointer iff the low 3 bits are
/// 001). `Gc::new` initialises it with no barrier, so its insertion shade
/// must decode it with the heap's encoding.
#[repr(C)]
struct Boxed {
    v: usize,
}
static BOXED_VALUES: [u64; 1] = [1];
static BOXED: Descriptor = Descriptor::fixed_with_values("Boxed", 1, &[], &BOXED_VALUES).rust_type();
// SAFETY: one word, declared as a value slot by BOXED's value bitmap; BOXED
// is marked as a Rust type.
unsafe impl GcType for Boxed {
    fn descriptor() -> &'static Descriptor {
        &BOXED
    }
}

const X: usize = 0x5a5a_5a5a;

#[derive(Clone, Copy, Debug)]
enum Via {
    MemberSet,
    GcNew,
    RootedVecPush,
    RootedVecSet,
    /// `Gc::new` of an object whose value slot holds `x`, tagged.
    GcNewValue,
}

/// Whether `x`, stored during the stepped mark through `via`, survives.
#[inline(never)]
fn x_survives(via: Via) -> bool {
    let h = heap_with(HeapConfig { verify: false, value_encoding: ValueEncoding::low_bits(7, 1), ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let holder = node(0, None, None);
    let root: Root = h.add_root(Some(holder.raw()));
    let mut rv = RootedVec::new(&h);
    rv.push(None);
    let x = node(5, None, None); // only on this (unscanned) stack
    h.debug_begin_marking();
    // Everything reachable so far is marked and scanned (holder black).
    while !h.debug_mark_steps(10) {}
    match via {
        Via::MemberSet => holder.left.set(Some(x)),
        Via::GcNew => {
            let p = node(6, Some(x), None); // black; x written by its initialisation
            holder.left.set(Some(p));
        }
        Via::RootedVecPush => rv.push(Some(x.raw())),
        Via::RootedVecSet => rv.set(0, Some(x.raw())),
        Via::GcNewValue => {
            let b = usurp_gc::Gc::new(Boxed { v: x.raw().addr() | 1 }); // black; x only as a tagged word
            rv.set(0, Some(b.raw()));
        }
    }
    while !h.debug_mark_steps(10) {}
    h.debug_finish_marking();
    let xa = std::hint::black_box(x.raw().addr() ^ X) ^ X;
    h.finish_sweep();
    let alive = h.object_at(xa).is_some();
    drop(rv);
    drop(root);
    alive
}

#[test]
fn values_stored_by_gc_new_and_rootedvec_during_a_mark_are_shaded() {
    // The switch is process-wide: one test at a time.
    let _s = serial();
    for via in [Via::MemberSet, Via::GcNew, Via::RootedVecPush, Via::RootedVecSet, Via::GcNewValue] {
        assert!(x_survives(via), "{via:?}: x, reachable from a root, was freed (stored with no insertion barrier)");
    }
}

#[test]
fn negative_control_without_shading_each_path_loses_the_value() {
    // The switch is process-wide: one test at a time.
    let _s = serial();
    set_barrier_shading_for_tests(false);
    let lost: Vec<(Via, bool)> =
        [Via::MemberSet, Via::GcNew, Via::RootedVecPush, Via::RootedVecSet, Via::GcNewValue]
            .map(|v| (v, !x_survives(v)))
            .to_vec();
    set_barrier_shading_for_tests(true);
    assert!(lost.iter().all(|&(_, l)| l), "without the insertion half, x should be freed on every path: {lost:?}");
}
