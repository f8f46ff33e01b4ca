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

/// A [`ThreadWorld`] whose background collection is off for the heap's
/// collector thread (`off`: it asked), on for the others: what a VM that
/// turns it off between an allocation's look and the collector's shows.
struct DecliningWorld {
    inner: Arc<ThreadWorld>,
    off: AtomicBool,
}

// SAFETY: every call is ThreadWorld's, whose contract holds (see its impl);
// `background_collection` answering false is allowed at any time.
unsafe impl World for DecliningWorld {
    fn stop_the_world(&self) {
        self.inner.stop_the_world()
    }
    fn start_the_world(&self) {
        self.inner.start_the_world()
    }
    fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize)) {
        self.inner.for_each_conservative_range(f)
    }
    fn run_parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.inner.run_parallel(n, f)
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn blocking(&self, f: &mut dyn FnMut()) {
        self.inner.blocking(f)
    }
    fn background_collection(&self) -> bool {
        // The collector thread is told no (a VM that turned background
        // collection off just after the allocating thread's own look).
        if std::thread::current().name() == Some("usurp-gc") {
            self.off.store(true, Ordering::SeqCst);
            return false;
        }
        self.inner.background_collection()
    }
    fn caller_holds_stop(&self) -> bool {
        self.inner.caller_holds_stop()
    }
    fn may_attach(&self) -> Result<(), &'static str> {
        self.inner.may_attach()
    }
}

#[test]
fn a_waiter_takes_over_a_cycle_the_collector_declines() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let world = Arc::new(DecliningWorld { inner: ThreadWorld::new(1), off: AtomicBool::new(false) });
        let cfg = HeapConfig { gogc: Some(100), min_heap: 2 << 20, verify: false, ..config(1 << 30) };
        let h = Heap::with_world(cfg, world.clone() as Arc<dyn World>).unwrap();
        let _r = world.inner.register();
        let _g = h.attach_thread().unwrap();
        let long = tree(12);
        for _ in 0..400 {
            assert_eq!(count(tree(10)), 2047);
            world.inner.safepoint();
        }
        let _ = tx.send((count(long), h.stats().cycles, world.off.load(Ordering::SeqCst)));
    });
    let (long, cycles, declined) =
        rx.recv_timeout(Duration::from_secs(60)).expect("the allocating thread hung at the goal (watchdog 60 s)");
    assert_eq!(long, 8191, "the long-lived tree");
    assert!(declined, "the collector thread never asked: the test did not reach the decline");
    assert!(cycles > 0);
}
