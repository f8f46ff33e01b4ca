//! The short search of an idle worker when no work can come from inside
//! the runtime (session 14, `worker/policy.rs` `LONE_SPIN_ROUNDS`).
//!
//! An idle worker searches (spins) before it sleeps, and naps while other
//! workers keep switching, because a busy worker may hand it work at any
//! moment. When every other worker is idle or searching and no task is in
//! a handed-off `blocking` call, nothing inside the runtime can: the next
//! task comes from a timer (fired by the worker that waits for it) or from
//! a thread outside (which wakes an idle worker). The long search was then
//! pure cost: an idle runtime whose task slept 1 ms in a loop used ~300 µs
//! of CPU per sleep. Now such a search stops after a few rounds and the
//! worker sleeps.
//!
//! Checked by what the search does, not by time: on an idle runtime the
//! searches end short and no worker naps (negative control: with the short
//! search off, the lone worker naps after each sleep's wake-up); while a
//! task runs a loop on another worker, or a task is in a `blocking` call,
//! no search ends short (the idle worker keeps looking, as before).
//! The `blocking` case was checked by removing `in_blocking` from
//! `Worker::others_run`: it then fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::within;

/// Serialises the tests (the counters and the switch are process-wide).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Short searches and naps while a task of an otherwise idle runtime with
/// `workers` workers sleeps 1 ms `n` times.
fn idle_sleeper(workers: usize, n: usize) -> (usize, usize) {
    let rt = Runtime::builder().workers(workers).build().unwrap();
    rt.block_on(move || {
        usurp::sleep(Duration::from_millis(5)); // settle
        let (lone, naps) = (hooks::lone_spins_for_tests(), hooks::spin_naps_for_tests());
        for _ in 0..n {
            usurp::sleep(Duration::from_millis(1));
        }
        (hooks::lone_spins_for_tests() - lone, hooks::spin_naps_for_tests() - naps)
    })
}

#[test]
fn an_idle_runtime_searches_briefly_and_does_not_nap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for workers in [1, 2] {
        let (lone, naps) = within(120, "idle sleeper", move || idle_sleeper(workers, 30));
        eprintln!("workers({workers}): {lone} short searches, {naps} naps in 30 sleeps");
        assert!(lone >= 15, "workers({workers}): only {lone} short searches in 30 idle sleeps");
        if workers == 1 {
            // (With two, the worker that did not fire the timer may see the
            // other run the woken task, and search as beside a busy one.)
            assert_eq!(naps, 0, "an idle runtime's only worker napped {naps} times in 30 sleeps");
        }
    }
}

#[test]
fn negative_control_without_the_short_search_the_lone_worker_naps() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lone, naps) = within(120, "idle sleeper, long search", || {
        hooks::set_lone_spin_for_tests(false);
        let r = idle_sleeper(1, 30);
        hooks::set_lone_spin_for_tests(true);
        r
    });
    eprintln!("short search off: {lone} short searches, {naps} naps in 30 sleeps");
    assert_eq!(lone, 0);
    assert!(naps >= 15, "the short search was off, yet the lone worker napped only {naps} times in 30 sleeps");
}

#[test]
fn a_worker_beside_a_busy_one_searches_as_long_as_before() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lone = within(120, "idle worker beside a loop", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        rt.block_on(|| {
            usurp::sleep(Duration::from_millis(5)); // settle
            let before = hooks::lone_spins_for_tests();
            // A loop that makes no switch for 30 ms: this worker is busy,
            // the other one idles beside it (its searches see it run).
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            assert!(x > 0);
            hooks::lone_spins_for_tests() - before
        })
    });
    assert_eq!(lone, 0, "a search beside a busy worker ended short {lone} times");
}

#[test]
fn a_task_in_a_blocking_call_keeps_the_idle_worker_searching() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lone, returned) = within(120, "blocking calls", || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        rt.block_on(|| {
            usurp::sleep(Duration::from_millis(5)); // settle
            let before = hooks::lone_spins_for_tests();
            let returned = Arc::new(AtomicBool::new(false));
            // The worker goes to a spare thread while the closure runs and
            // finds nothing to do: the call's return is the work to come.
            for _ in 0..10 {
                let r = returned.clone();
                usurp::blocking(move || {
                    std::thread::sleep(Duration::from_micros(300));
                    r.store(true, Ordering::SeqCst);
                });
            }
            (hooks::lone_spins_for_tests() - before, returned.load(Ordering::SeqCst))
        })
    });
    assert!(returned);
    assert_eq!(lone, 0, "searches during blocking calls ended short {lone} times");
}
