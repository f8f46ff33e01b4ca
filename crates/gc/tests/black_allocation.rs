//! Objects allocated while a heap marks concurrently are black (issue 9,
//! pitfall 6): an object allocated during a stepped mark and kept only in a
//! root container scanned at the start stop (a `RootedVec`: its scanner ran
//! then) survives the mark, small and large. `RootedVec::push` shades what
//! it stores while a heap marks (the barrier's insertion half), which would
//! keep them too: both runs switch the barrier's shading off, so that only
//! black allocation keeps them. The negative control turns black
//! allocation off too (test-only switch): the same objects are then found
//! dead. One test function (the switches are process-wide).

mod common;
use common::*;
use usurp_gc::{Descriptor, HeapConfig, RootedVec};

static PTRS: Descriptor = Descriptor::array("ptrs", 1, 1);

/// Allocates a small list and a large array during a stepped mark, keeps
/// them only in a `RootedVec`; returns how many of the two survived.
fn survivors() -> usize {
    let h = heap_with(HeapConfig { verify: false, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let mut rv = RootedVec::new(&h);
    h.debug_begin_marking();
    let small = list(10).unwrap().raw();
    let large = usurp_gc::alloc_array(&PTRS, 10_000); // 80 KB: a large object
    rv.push(Some(small));
    rv.push(Some(large));
    while !h.debug_mark_steps(10) {}
    h.debug_finish_marking();
    let (s, l) = (rv.get(0).unwrap().addr(), rv.get(1).unwrap().addr());
    [s, l].iter().filter(|&&a| h.object_at(a).is_some()).count()
}

#[test]
fn objects_allocated_during_a_mark_survive_it_and_do_not_without_black_allocation() {
    usurp_gc::internals::set_barrier_shading_for_tests(false);
    let kept = survivors();
    usurp_gc::set_black_allocation_for_tests(false);
    let n = survivors();
    usurp_gc::set_black_allocation_for_tests(true);
    usurp_gc::internals::set_barrier_shading_for_tests(true);
    assert_eq!(kept, 2, "an object allocated during the mark was freed");
    assert_eq!(n, 0, "without black allocation the objects allocated during the mark should be dead");
}
