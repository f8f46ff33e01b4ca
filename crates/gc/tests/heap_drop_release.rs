//! The drop of a heap's last handle returns after the heap is gone
//! (unregistered from the handle table, its range unmapped), although its
//! background sweeper and collector threads take strong references for
//! the time of a sweep or a cycle (session 12, G1 part 2): that drop closes
//! their access and waits for the references they hold. A runtime's drop
//! relies on it (`tests/gc_runtime_drop_release.rs` at the root).
//!
//! Each round makes the background sweeper hold the heap (a collection
//! wakes it; a test switch makes it sleep 20 ms holding its reference
//! before it sweeps), waits until it holds it, and drops the heap's last
//! handle. Negative control: with the wait off
//! (`set_release_background_for_tests(false)`), the heap is still
//! registered when the drop returns (the sweeper lets go of it later).
mod common;

use std::time::{Duration, Instant};
use usurp_gc::{internals, Heap, HeapConfig};

fn live_heaps() -> usize {
    internals::live_heaps_for_tests().0
}

/// One heap: garbage, a collection (which wakes the sweeper), the drop
/// once the sweeper holds the heap. Returns the registered heaps right
/// after the drop.
fn round() -> usize {
    let h = Heap::new(HeapConfig { max_heap: 64 << 20, gogc: None, ..HeapConfig::default() }).unwrap();
    {
        let _g = h.attach_thread().unwrap();
        for i in 0..10_000 {
            std::hint::black_box(common::node(i, None, None));
        }
        h.collect();
    }
    let t0 = Instant::now();
    while h.debug_background_refs() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the background sweeper never took the heap");
        std::thread::yield_now();
    }
    drop(h);
    live_heaps()
}

fn wait_released(before: usize) {
    let t0 = Instant::now();
    while live_heaps() != before {
        assert!(t0.elapsed() < Duration::from_secs(10), "a dropped heap was never released");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_last_handles_drop_waits_for_the_background_threads() {
    let before = live_heaps();
    internals::set_sweeper_stall_for_tests(20);
    let stayed: Vec<usize> = (0..20).filter(|_| round() != before).collect();
    assert!(stayed.is_empty(), "the heap was still registered right after its drop in rounds {stayed:?} of 20");

    internals::set_release_background_for_tests(false);
    let stayed = (0..20)
        .filter(|_| {
            let n = round();
            wait_released(before);
            n != before
        })
        .count();
    internals::set_release_background_for_tests(true);
    internals::set_sweeper_stall_for_tests(0);
    assert_eq!(stayed, 20, "without the wait some heaps were gone when their drop returned");
}
