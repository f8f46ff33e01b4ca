//! Stop-the-world across runtimes (red-team RT-sched finding 3, `xstw.rs`,
//! `xstw1.rs`): a task of A stopping B's world while a task of B stops A's
//! used to wait for ever (each stopper held a worker the other waited for),
//! and the 1 s diagnostic blamed "a task blocked in the kernel". A task that
//! stops another runtime's world now counts as stopped for its own runtime
//! while it waits (a safe region), and withdraws and retries if its own
//! world is stopped when its stop completes (the crossed case).
//!
//! Checked by reverting the fix (the `other_runtime_of_caller` branch in
//! `stw::stop_the_world_until`): `crossed_stops_finish` then hangs in its
//! first rounds (the watchdog fails it); so does it with the safe region
//! but without the withdrawal (an instrumented run saw ~150 withdrawals per
//! run of this test, at most one retry each). `one_direction_keeps_working`
//! (xstw1) passes either way.

use std::sync::{Arc, Barrier};
use std::time::Duration;
use usurp_testsupport::within;

#[test]
fn crossed_stops_finish() {
    within(60, "task of A stops B while task of B stops A", || {
        for workers in [1, 2] {
            let a = Arc::new(usurp::Runtime::builder().workers(workers).build().unwrap());
            let b = Arc::new(usurp::Runtime::builder().workers(workers).build().unwrap());
            for _ in 0..100 {
                let bar = Arc::new(Barrier::new(2));
                let (b1, b2) = (bar.clone(), bar);
                let (ra, rb) = (a.clone(), b.clone());
                let ha = a.spawn(move || {
                    b1.wait();
                    let d = rb.stop_the_world();
                    rb.start_the_world();
                    d
                });
                let hb = b.spawn(move || {
                    b2.wait();
                    let d = ra.stop_the_world();
                    ra.start_the_world();
                    d
                });
                ha.join().unwrap();
                hb.join().unwrap();
            }
        }
    });
}

/// One direction, repeatedly, while B's tasks sleep and wake (xstw1).
#[test]
fn one_direction_keeps_working() {
    within(60, "task of A stops B repeatedly", || {
        let a = usurp::Runtime::builder().workers(2).build().unwrap();
        let b = Arc::new(usurp::Runtime::builder().workers(2).build().unwrap());
        for _ in 0..4 {
            b.spawn(|| loop {
                usurp::sleep(Duration::from_micros(100));
            });
        }
        let rb = b.clone();
        let max = a.block_on(move || {
            let mut m = Duration::ZERO;
            for _ in 0..2000 {
                let d = rb.stop_the_world();
                rb.start_the_world();
                m = m.max(d);
            }
            m
        });
        assert!(max < Duration::from_secs(1), "max ttsp {max:?}");
    });
}
