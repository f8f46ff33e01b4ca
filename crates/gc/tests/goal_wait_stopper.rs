//! A `ThreadWorld` thread that holds the world stopped and allocates past
//! the heap's goal gets a clear panic ("holds the world stopped"), not a
//! hang: the goal wait waited for a start stop that waited for it (found by
//! the review of the goal-wait take-over; a runtime's `blocking` already
//! panicked there). The watchdog is the negative control: before the check
//! the stopper hung (gdb: the stopper in the goal wait, the collector in
//! `ThreadWorld::stop_the_world`).
mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use usurp_gc::{Heap, HeapConfig, ThreadWorld, World};

#[test]
fn a_stopper_allocating_past_the_goal_panics_clearly() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let world = ThreadWorld::new(1);
        let cfg = HeapConfig { gogc: Some(100), min_heap: 2 << 20, verify: false, ..config(1 << 30) };
        let h = Heap::with_world(cfg, world.clone() as Arc<dyn World>).unwrap();
        let _r = world.register();
        let _g = h.attach_thread().unwrap();
        let long = tree(12);
        world.stop_the_world();
        let r = catch(|| {
            for _ in 0..400 {
                let t = tree(10);
                assert_eq!(count(t), 2047);
            }
        });
        world.start_the_world();
        // After the restart, the heap collects as usual.
        for _ in 0..50 {
            assert_eq!(count(tree(10)), 2047);
        }
        let _ = tx.send((r.err(), count(long)));
    });
    let (err, long) = rx.recv_timeout(Duration::from_secs(60)).expect("the stopper hung at the goal (watchdog 60 s)");
    let msg = err.expect("400 trees fit under the goal: the test needs a bigger load");
    assert!(msg.contains("holds the world stopped"), "{msg}");
    assert_eq!(long, 8191, "the long-lived tree");
}
