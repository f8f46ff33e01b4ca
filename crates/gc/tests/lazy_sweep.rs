//! Lazy sweeping (issue 9 item 3): blocks are swept after the pause, by
//! allocation and a background sweeper, and until a block is swept its live
//! set is `alloc & mark(last cycle)`: a stray word equal to a dead, unswept
//! object's address finds nothing, although the dead object's start bit is
//! still set and its children may already be freed. The negative control
//! (the same scenario with the lookup trusting the start bit alone) is in
//! `lazy_sweep_control.rs`, a binary of its own (its switch is process-wide).

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::{GcRef, Heap, HeapConfig};

fn lazy_heap() -> Heap {
    let h = heap_with(HeapConfig { verify: false, ..config(64 << 20) });
    h.set_background_sweeping(false);
    h
}

#[test]
fn a_stray_word_to_a_dead_unswept_object_finds_nothing() {
    let h = lazy_heap();
    let _g = h.attach_thread().unwrap();
    let (p, _c, reuse) = lazy_sweep_scenario(&h);
    // The parent is dead and unswept: its start bit is still set, but
    // every lookup treats it as free.
    assert_eq!(h.find_object(p), None, "find_object revived a dead, unswept object");
    assert_eq!(h.find_object(p + 8), None, "an interior stray word revived a dead, unswept object");
    assert_eq!(h.object_at(p), None, "object_at revived a dead, unswept object");
    // SAFETY: only the checked accessor below reads through it.
    let r = std::panic::catch_unwind(|| unsafe { GcRef::from_addr(p) }.map(|g| g.payload_words()));
    assert!(r.is_err(), "a handle check accepted a dead, unswept object");
    // A stray word on the stack in the next collection keeps nothing alive
    // either (every block is swept before the next mark).
    let stray = black_box(p);
    h.collect();
    black_box(stray);
    assert_eq!(h.find_object(p), None);
    black_box(reuse);
}

#[test]
fn sweeping_is_done_by_allocation_by_the_background_sweeper_and_before_a_mark() {
    let h = lazy_heap();
    let _g = h.attach_thread().unwrap();
    let keep = tree(10);
    for _ in 0..test_n(50) {
        black_box(tree(8));
    }
    h.collect();
    let s0 = h.stats();
    assert_eq!(s0.blocks_swept_background, 0);
    // The next collection sweeps what is left before it marks.
    h.collect();
    let s1 = h.stats();
    assert!(s1.blocks_swept_before_mark > s0.blocks_swept_before_mark, "{s1:?}");
    assert_eq!(count(keep), (1 << 11) - 1);
    // Allocation sweeps.
    for _ in 0..test_n(50) {
        black_box(tree(8));
    }
    let s2 = h.stats();
    assert!(s2.blocks_swept_by_allocation > s1.blocks_swept_by_allocation, "{s2:?}");
    // The background sweeper sweeps what allocation left.
    h.set_background_sweeping(true);
    for _ in 0..test_n(50) {
        black_box(tree(8));
    }
    h.collect();
    let t0 = std::time::Instant::now();
    while h.stats().blocks_swept_background == 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the background sweeper never swept");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(count(keep), (1 << 11) - 1);
    black_box(keep);
}

fn test_n(n: usize) -> usize {
    usurp_testsupport::scale(n)
}
