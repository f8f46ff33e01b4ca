//! A dropped runtime's heap is unregistered (and its memory unmapped) when
//! `drop(runtime)` returns (session 12, G1 part 2). It used to stay
//! registered up to ~100 ms: the runtime's background threads (the
//! stop-the-world marker threads, which waited for jobs 100 ms at a time
//! holding a strong reference to the runtime, and the monitor, which slept
//! up to 10 ms holding one too) dropped the last reference after `drop`
//! had returned, and with it the heap.
//!
//! Each round builds a runtime whose heap has run a collection (so the
//! marker threads, the background collector and sweeper exist and have
//! worked), drops it from a plain thread and reads the registry at once
//! (no waiting). The negative control turns the release off
//! (`set_release_on_drop_for_tests(false)`): then some round finds the heap
//! still registered.

use usurp::gc::{Gc, HeapConfig, Member};
use usurp::Runtime;
use usurp_testsupport::within;
use usurp_testsupport_gc::Link;

fn live_heaps() -> usize {
    usurp_gc::internals::live_heaps_for_tests().0
}

/// Builds a runtime, lets it allocate and collect, drops it; returns the
/// registered heaps right after the drop returned.
fn one_round(before: usize) -> usize {
    let rt = Runtime::builder()
        .workers(2)
        .heap_config(HeapConfig { max_heap: 64 << 20, ..HeapConfig::default() })
        .build()
        .unwrap();
    assert_eq!(live_heaps(), before + 1, "the runtime's heap is registered (before: {before})");
    let sum = rt.block_on(|| {
        let mut head: Option<Gc<Link>> = None;
        for i in 0..2000 {
            head = Some(Gc::new(Link { next: Member::new(head), val: i }));
        }
        usurp::gc::Heap::current().unwrap().collect();
        let mut s = 0;
        let mut cur = head;
        while let Some(c) = cur {
            s += c.val;
            cur = c.next.get();
        }
        s
    });
    assert_eq!(sum, 1999 * 2000 / 2);
    drop(rt);
    live_heaps()
}

/// Waits (watchdog: 10 s) until the registered heaps are `before` again.
fn wait_released(before: usize) {
    let t0 = std::time::Instant::now();
    while live_heaps() != before {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "a dropped runtime's heap was never released");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_dropped_runtimes_heap_is_unregistered_when_drop_returns() {
    within(120, "50 runtimes dropped", || {
        let before = live_heaps();
        let stayed: Vec<usize> = (0..50).filter(|_| one_round(before) != before).collect();
        assert!(stayed.is_empty(), "the heap was still registered right after drop(rt) in rounds {stayed:?} of 50");

        // Negative control: without the release, the last reference is
        // dropped by a background thread after `drop` returned.
        usurp_sched::hooks::set_release_on_drop_for_tests(false);
        // (Those heaps go within ~100 ms: waited for before the next round.)
        let stayed = (0..10)
            .filter(|_| {
                let n = one_round(before);
                wait_released(before);
                n != before
            })
            .count();
        usurp_sched::hooks::set_release_on_drop_for_tests(true);
        assert!(stayed > 0, "without the release every heap was gone when drop returned (10 rounds)");
    });
}
