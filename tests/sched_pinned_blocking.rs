//! Issue 11 item 1: a task pinned to its worker by an asynchronous
//! preemption, plus `blocking()` on that worker. `blocking` cannot hand a
//! worker with pinned tasks to another thread (they must resume on this
//! one), and it used to run the closure in place: when the closure waited
//! for a pinned task, nothing could ever run that task again. Now the
//! calling task moves to a spare thread instead (the worker stays with its
//! pinned tasks on this thread).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::{blocking, preemptible, spawn, yield_now, Runtime};
use usurp_testsupport::within;

preemptible! {
    /// A call-free loop until `flag` is set: it can only leave its worker
    /// through an asynchronous preemption.
    fn spin_until_set(flag: &AtomicBool) {
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(flag as *const AtomicBool as *const u8) } == 0 {}
    }
}

#[test]
fn blocking_that_waits_for_a_pinned_task_does_not_deadlock() {
    // P must be pinned by its preemption: its loop touches no TLS, so it
    // would migrate freely otherwise (see tests/sched_migrate.rs).
    usurp_sched::hooks::set_pin_policy_for_tests(Some(true));
    let rt = Runtime::builder().workers(1).quantum(Duration::from_millis(1)).build().unwrap();
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    let got = within(30, "pinned task + blocking", move || {
        rt.block_on(|| {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            let started = Arc::new(AtomicBool::new(false));
            let go = Arc::new(AtomicBool::new(false));
            let (s2, g2) = (started.clone(), go.clone());
            // P: spins in preemptible code until `go`, then sends.
            let p = spawn(move || {
                s2.store(true, Ordering::SeqCst);
                spin_until_set(&g2);
                tx.send(7).unwrap();
            });
            // On one worker, this task resumes after P started only once P
            // was preempted asynchronously (P never yields): P is pinned.
            while !started.load(Ordering::SeqCst) {
                yield_now();
            }
            go.store(true, Ordering::SeqCst);
            // B: waits in `blocking` for what P sends; P must get to run.
            let v = blocking(move || rx.recv().unwrap());
            p.join().unwrap();
            v
        })
    });
    assert_eq!(got, 7);
}
