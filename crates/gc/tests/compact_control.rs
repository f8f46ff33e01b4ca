//! Negative control of "a typed block holds compact objects of one
//! descriptor only" (`tests/compact.rs`): with the per-descriptor lists of
//! typed blocks off (`internals::set_typed_block_lists_for_tests(false)`,
//! process-wide, hence a test binary of its own), a refill for one compact
//! type takes a partial block typed with another of the same size class,
//! and its new objects read as the other type. With the lists on (the same
//! scenario first) that never happens.

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::internals::{block_of, set_typed_block_lists_for_tests};
use usurp_gc::{Descriptor, Gc, GcType, Member};

/// Leaves partial blocks typed `CVal` (every other object rooted), then
/// allocates `COther` objects; returns how many of them read as `CVal`
/// objects (their block typed `CVal`).
fn confused_objects() -> usize {
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    let roots = on_other_thread(&h, |h| {
        (0..6000)
            .map(|i| Gc::new(CVal { next: Member::null(), a: i, b: i }))
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, g)| h.add_root(Some(g.raw())))
            .collect::<Vec<_>>()
    });
    collect_elsewhere(&h);
    h.finish_sweep();
    let _g = h.attach_thread().unwrap();
    let mut confused = 0;
    let mut others = Vec::new();
    for _ in 0..4000 {
        let o = Gc::new(COther { x: 1, next: Member::null(), y: 2 });
        let typed = block_of(o.raw().addr()).unwrap().1.map(|d| d as *const Descriptor);
        if std::ptr::eq(o.raw().descriptor(), CVal::descriptor()) {
            assert_eq!(typed, Some(CVal::descriptor() as *const Descriptor));
            confused += 1;
        } else {
            assert_eq!(typed, Some(COther::descriptor() as *const Descriptor));
            assert_eq!((o.x, o.y), (1, 2));
        }
        others.push(o);
    }
    black_box(&others);
    drop(roots);
    confused
}

#[test]
fn without_per_descriptor_lists_compact_types_share_blocks_and_read_as_each_other() {
    assert_eq!(confused_objects(), 0, "with the lists on, no object lands in another type's block");
    set_typed_block_lists_for_tests(false);
    let confused = confused_objects();
    set_typed_block_lists_for_tests(true);
    assert!(confused > 0, "the control did not take another type's typed block");
}
