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

/// How a task of A takes B's world stopped in the scenarios below: by the
/// cross-runtime path, or while it holds A's own stop (then directly;
/// A is restarted right after).
#[derive(Clone, Copy)]
enum TakeB {
    Cross,
    UnderOwnStop,
}

impl TakeB {
    fn take(self, a: &usurp::Runtime, b: &usurp::Runtime) {
        match self {
            TakeB::Cross => {
                b.stop_the_world();
            }
            TakeB::UnderOwnStop => {
                a.stop_the_world();
                b.stop_the_world();
                a.start_the_world();
            }
        }
    }
}

/// A task of A takes B (`how`) and exits holding it: B must be restarted
/// (its `block_on` returns).
fn exit_holding_b(how: TakeB) {
    within(60, "exit holding another runtime's stop", move || {
        let a = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let b = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let (ra, rb) = (a.clone(), b.clone());
        a.spawn(move || how.take(&ra, &rb)).join().unwrap();
        assert_eq!(b.block_on(|| 2), 2);
    });
}

/// A task of A takes B (`how`) and loops on `checkpoint()` holding it
/// while a plain thread stops A, then B: the task must not park for A's
/// stop (the thread would wait for B for ever); A's stop waits for it to
/// start B.
fn stop_of_a_then_b_while_a_task_holds_b(how: TakeB) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    within(60, "a stop of A, then of B, while a task of A holds B", move || {
        let a = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let b = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let (held_tx, held_rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let (ra, rb, d2) = (a.clone(), b.clone(), done.clone());
        let holder = a.spawn(move || {
            how.take(&ra, &rb);
            held_tx.send(()).unwrap();
            while !d2.load(Ordering::Relaxed) {
                usurp::checkpoint();
            }
            rb.start_the_world();
        });
        held_rx.recv().unwrap();
        let (ra, rb) = (a.clone(), b.clone());
        let stopper = std::thread::spawn(move || {
            ra.stop_the_world();
            rb.stop_the_world();
            rb.start_the_world();
            ra.start_the_world();
        });
        // The stop of A waits for the holder (it runs on until it starts B).
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        stopper.join().unwrap();
        holder.join().unwrap();
    });
}

/// A task of A that holds B's world stopped is treated as A's stopper at
/// its switches until it starts B (review 107 of the cross-runtime stop):
/// it is not parked by a stop of A (here a plain thread stops A, then B:
/// the task used to park for A's stop at its next `checkpoint()`, and the
/// thread then waited for B for ever), and a drop of A does not abandon
/// it with B stopped (B's `block_on` used to never return). Negative
/// control: without the held stop in `Task::held_stops` (`stw::task_holds_stop`; and
/// the no-preemption section the holder takes), the first scenario hangs
/// (its watchdog fails it; checked by hand).
#[test]
fn a_task_holding_another_runtimes_stop_is_not_parked_by_its_own_runtime() {
    use std::sync::mpsc;
    stop_of_a_then_b_while_a_task_holds_b(TakeB::Cross);
    within(60, "A dropped while a task of A holds B", || {
        let a = usurp::Runtime::builder().workers(1).build().unwrap();
        let b = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let (held_tx, held_rx) = mpsc::channel();
        let rb = b.clone();
        let _holder = a.spawn(move || {
            rb.stop_the_world();
            held_tx.send(()).unwrap();
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_millis(300) {
                usurp::checkpoint();
            }
            rb.start_the_world();
        });
        held_rx.recv().unwrap();
        drop(a);
        assert_eq!(b.block_on(|| 1), 1);
    });
}

/// A task that exits holding another runtime's world stopped restarts it
/// (with a message), as a task exiting with its own runtime's stop does:
/// nobody else may start it. Negative control: without
/// `stw::restart_foreign_stops_at_exit` in `exit_current`, B's `block_on`
/// hangs (the watchdog fails it; checked by hand).
#[test]
fn a_task_exiting_with_another_runtimes_stop_restarts_it() {
    exit_holding_b(TakeB::Cross);
}

/// A task of A that holds A's world stopped and then stops B takes B
/// directly (it cannot count as stopped for A): it holds B as the cross
/// path's holders do (review 108: it held B uncounted, so B was never
/// restarted at its exit, and with A restarted it parked for the next stop
/// of A while holding B). Negative control: without `hold_foreign` in
/// that branch of `stw::stop_the_world_until`, both scenarios hang (their
/// watchdogs fail them; found by the review's reproducers).
#[test]
fn a_stop_of_another_runtime_taken_under_its_own_stop_is_held() {
    exit_holding_b(TakeB::UnderOwnStop);
    stop_of_a_then_b_while_a_task_holds_b(TakeB::UnderOwnStop);
}

/// A task that stops another runtime's world inside `blocking` and leaves
/// the closure still holding it aborts with a message (review 108: it went
/// back to its worker holding the stop uncounted, could be preempted or
/// park with that world stopped, and exited without restarting it), as a
/// task leaving `blocking` with its own runtime's stop does (child
/// process; handed off and in place).
#[test]
fn leaving_blocking_holding_another_runtimes_stop_aborts_with_a_message() {
    if std::env::var("USURP_CHILD_FOREIGN_STOP_IN_BLOCKING").is_ok() {
        let mode = std::env::var("USURP_CHILD_FOREIGN_STOP_MODE").unwrap_or_default();
        usurp_testsupport::child_watchdog(30, "child watchdog: leaving blocking hung", 99);
        let in_place = mode == "in-place";
        let a = usurp::Runtime::builder().workers(1).max_blocking_threads(if in_place { 0 } else { 4 }).build().unwrap();
        let b = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let rb = b.clone();
        a.block_on(move || {
            usurp::blocking(|| {
                rb.stop_the_world();
            });
        });
        eprintln!("child: blocking returned");
        std::process::exit(0);
    }
    for mode in ["handoff", "in-place"] {
        let (out, _) = usurp_testsupport::run_child_env(
            "leaving_blocking_holding_another_runtimes_stop_aborts_with_a_message",
            "USURP_CHILD_FOREIGN_STOP_IN_BLOCKING",
            &[("USURP_CHILD_FOREIGN_STOP_MODE", Some(mode))],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode}: {err}");
        assert!(err.contains("stopped another runtime's world (Runtime::stop_the_world) inside blocking()"), "{mode}: {err}");
    }
}
