//! An allocation waiting at the heap's goal for the background collector's
//! start stop, when the VM's World says no background collection to the
//! collector's look (the collector then declines the cycle without
//! counting a loss): the waiter takes the cycle over instead of re-asking
//! every millisecond forever (found by the review of the goal-wait
//! take-over: its probe hit a 40 s watchdog). The watchdog is the negative
//! control.
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp_gc::{Heap, HeapConfig, ThreadWorld, World};

/// Background collection off for the heap's collector thread (`off`: it
/// asked), on for the others: what a VM that turns it off between an
/// allocation's look and the collector's shows.
struct Declining {
    off: AtomicBool,
}

impl WorldHooks for Declining {
    fn background_collection(&self, inner: &ThreadWorld) -> bool {
        // The collector thread is told no (a VM that turned background
        // collection off just after the allocating thread's own look).
        if std::thread::current().name() == Some("usurp-gc") {
            self.off.store(true, Ordering::SeqCst);
            return false;
        }
        inner.background_collection()
    }
}

#[test]
fn a_waiter_takes_over_a_cycle_the_collector_declines() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let world = Arc::new(HookedWorld { inner: ThreadWorld::new(1), hooks: Declining { off: AtomicBool::new(false) } });
        let cfg = HeapConfig { gogc: Some(100), min_heap: 2 << 20, verify: false, ..config(1 << 30) };
        let h = Heap::with_world(cfg, world.clone() as Arc<dyn World>).unwrap();
        let _r = world.inner.register();
        let _g = h.attach_thread().unwrap();
        let long = tree(12);
        for _ in 0..400 {
            assert_eq!(count(tree(10)), 2047);
            world.inner.safepoint();
        }
        let _ = tx.send((count(long), h.stats().cycles, world.hooks.off.load(Ordering::SeqCst)));
    });
    let (long, cycles, declined) =
        rx.recv_timeout(Duration::from_secs(60)).expect("the allocating thread hung at the goal (watchdog 60 s)");
    assert_eq!(long, 8191, "the long-lived tree");
    assert!(declined, "the collector thread never asked: the test did not reach the decline");
    assert!(cycles > 0);
}
