//! Runtimes dropped from tasks of other runtimes (red-team RT-sched finding
//! 2, `xdrop.rs`): runtimes A and B, each dropped from a task of the other
//! at about the same time, used to deadlock: each `Runtime::drop` waited for
//! the other runtime's workers to stop while holding a worker of its own
//! runtime, which the other drop waited for. A drop from a task of another
//! runtime now waits off its worker, as `blocking` does (and leaves the
//! worker even when its own runtime is shutting down), so both finish.
//!
//! Checked by reverting the fix (the `blocking_leave_worker` call in
//! `Runtime::drop`, replaced by a plain wait): `runtimes_dropped_by_each_other`
//! and `drop_from_task_of_runtime_shutting_down` then hang (their watchdog
//! fails them after 60 s); with `blocking_dyn` (plain `blocking`) in its
//! place, `drop_from_task_of_runtime_shutting_down` still hangs.

use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;
use usurp_testsupport::within;

/// One round: a task of A drops B while a task of B drops A, A's task
/// `a_delay` after B's (to let B's begin A's shutdown first). Both tasks are
/// abandoned by the drop of their own runtime (it happens while they wait),
/// so their joins return errors; what matters is that they return.
fn cross_drop(a: usurp::Runtime, b: usurp::Runtime, a_delay: Duration) {
    let bar = Arc::new(Barrier::new(2));
    let (b1, b2) = (bar.clone(), bar);
    let (txa, rxa) = mpsc::channel::<usurp::Runtime>();
    let (txb, rxb) = mpsc::channel::<usurp::Runtime>();
    // (The std receives and the barrier block the worker: nothing else
    // runs on these runtimes.)
    let ha = a.spawn(move || {
        let rb = rxb.recv().unwrap();
        b1.wait();
        if !a_delay.is_zero() {
            std::thread::sleep(a_delay);
        }
        drop(rb);
    });
    let hb = b.spawn(move || {
        let ra = rxa.recv().unwrap();
        b2.wait();
        drop(ra);
    });
    txa.send(a).unwrap();
    txb.send(b).unwrap();
    let _ = ha.join();
    let _ = hb.join();
}

/// [`cross_drop`] of two runtimes of `workers` workers, at once.
fn cross_drop_round(workers: usize) {
    let a = usurp::Runtime::builder().workers(workers).build().unwrap();
    let b = usurp::Runtime::builder().workers(workers).build().unwrap();
    cross_drop(a, b, Duration::ZERO);
}

#[test]
fn runtimes_dropped_by_each_other() {
    within(60, "runtimes A and B dropped from each other's tasks", || {
        for w in [1, 2] {
            for _ in 0..20 {
                cross_drop_round(w);
            }
        }
    });
}

/// One direction only: a task of A drops B (B busy with sleepers), A lives
/// on and the task goes on running (the drop returns to it).
#[test]
fn runtime_dropped_from_another_runtimes_task() {
    within(60, "runtime B dropped from a task of A", || {
        let a = usurp::Runtime::builder().workers(1).build().unwrap();
        for _ in 0..20 {
            let b = usurp::Runtime::builder().workers(2).build().unwrap();
            for _ in 0..4 {
                b.spawn(|| loop {
                    usurp::sleep(Duration::from_micros(100));
                });
            }
            let r = a.block_on(move || {
                drop(b);
                usurp::yield_now();
                7
            });
            assert_eq!(r, 7);
        }
    });
}

/// The case `blocking` alone does not cover: the dropping task's own
/// runtime is already shutting down when it drops the other. No blocking
/// threads may be started (`max_blocking_threads(0)`), so B's task waits
/// for A in place on B's worker; A's task (its runtime shutting down) then
/// drops B: it must leave A's worker (to a thread beyond the limit, which
/// stops it) rather than wait in place, or neither drop ever returns.
/// With `blocking`'s own rule (in place at shutdown) instead of
/// `blocking_leave_worker`, this test hangs in every round.
#[test]
fn drop_from_task_of_runtime_shutting_down() {
    within(60, "drop from a task of a runtime that is shutting down", || {
        for _ in 0..5 {
            let a = usurp::Runtime::builder().workers(1).max_blocking_threads(0).build().unwrap();
            let b = usurp::Runtime::builder().workers(1).max_blocking_threads(0).build().unwrap();
            // Let B's task begin A's shutdown first.
            cross_drop(a, b, Duration::from_millis(50));
        }
    });
}
