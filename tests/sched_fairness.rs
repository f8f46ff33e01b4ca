//! Latency fairness (issue 11): a task made runnable by a wake runs ahead of
//! tasks that used up their quantum or yielded (the `runnext` slot, then a
//! per-worker FIFO of woken tasks, checked before the ring), and the boost
//! is bounded: tasks that keep waking each other cannot starve the ring.
//!
//! Both scenarios run on a one-worker runtime without async preemption, so
//! the order of picks is deterministic. Each test also runs its negative
//! control through the test-only switch `hooks::set_boost_policy_for_tests`
//! (process-wide, so the tests of this file take a lock): without the woken
//! FIFO the first test's woken task runs only after every yielder; without
//! the streak bound the second test's yielders never run. Timing is only a
//! watchdog (`within`) and a generous cap on waiting for progress.

mod sched_util;

use sched_util::{scale, within};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{channel, sched::hooks, yield_now, Runtime};

/// Serialises the tests of this file (the boost switch is process-wide).
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Yielding tasks queued on the ring.
const YIELDERS: usize = 16;

/// One worker, `YIELDERS` tasks yielding in a loop, and two tasks waiting on
/// channels. The main task wakes both (the second wake displaces the first
/// from `runnext`) and then waits. Returns how many yields the ring tasks
/// made between the wake-ups and the first woken task's run.
fn yields_before_woken_runs() -> usize {
    let rt = Runtime::builder().workers(1).async_preemption(false).build().unwrap();
    rt.block_on(|| {
        let progress = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let yielders: Vec<_> = (0..YIELDERS)
            .map(|_| {
                let (p, s) = (progress.clone(), stop.clone());
                usurp::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        p.fetch_add(1, Ordering::Relaxed);
                        yield_now();
                    }
                })
            })
            .collect();
        // Let every yielder run and requeue itself on the ring.
        while progress.load(Ordering::Relaxed) < 4 * YIELDERS {
            yield_now();
        }
        let (tx1, rx1) = channel::<usize>();
        let (tx2, rx2) = channel::<usize>();
        let p1 = progress.clone();
        let w1 = usurp::spawn(move || {
            let base = rx1.recv().unwrap();
            p1.load(Ordering::Relaxed) - base
        });
        let w2 = usurp::spawn(move || {
            rx2.recv().unwrap();
        });
        // Both receivers park (the ring of yielders turns meanwhile).
        while progress.load(Ordering::Relaxed) < 8 * YIELDERS {
            yield_now();
        }
        let base = progress.load(Ordering::Relaxed);
        tx1.send(base).unwrap(); // w1 into runnext
        tx2.send(0).unwrap(); // w2 into runnext, w1 displaced
        let seen = w1.join().unwrap();
        w2.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        for h in yielders {
            h.join().unwrap();
        }
        seen
    })
}

#[test]
fn woken_task_runs_before_yielders() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seen = within(60, "woken before yielders", yields_before_woken_runs);
    // With the boost the woken task runs right after the one in runnext
    // (at most one ring pick if the streak bound fell due just then).
    assert!(seen <= 1, "the woken task ran after {seen} yields of ring tasks (expected 0 or 1)");

    // Negative control: without the woken FIFO it waits behind every yielder.
    hooks::set_boost_policy_for_tests(Some(false));
    let seen_off = within(60, "woken before yielders (boost off)", yields_before_woken_runs);
    hooks::set_boost_policy_for_tests(None);
    assert!(
        seen_off >= YIELDERS,
        "negative control: without the boost the woken task should wait behind all {YIELDERS} yielders, saw {seen_off}"
    );
}

/// One worker: a hub task wakes two workers over channels and waits for
/// both to answer, in a loop; every pick it causes is a boosted one (runnext
/// or the woken FIFO). Meanwhile `YIELDERS` ring tasks yield in a loop. A
/// plain thread watches: returns whether every yielder made progress within
/// a generous cap, then stops everything.
fn yielders_progress_under_wake_storm() -> bool {
    let rt = Runtime::builder().workers(1).async_preemption(false).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..YIELDERS).map(|_| AtomicUsize::new(0)).collect());
    let hub_rounds = Arc::new(AtomicUsize::new(0));
    let (s, r) = (stop.clone(), hub_rounds.clone());
    let hub = rt.spawn(move || {
        let (done_tx, done_rx) = channel::<()>();
        let mut to_workers = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = channel::<bool>();
            let d = done_tx.clone();
            to_workers.push(tx);
            workers.push(usurp::spawn(move || {
                while rx.recv().unwrap() {
                    d.send(()).unwrap();
                }
            }));
        }
        while !s.load(Ordering::Relaxed) {
            for tx in &to_workers {
                tx.send(true).unwrap();
            }
            done_rx.recv().unwrap();
            done_rx.recv().unwrap();
            r.fetch_add(1, Ordering::Relaxed);
        }
        for tx in &to_workers {
            tx.send(false).unwrap();
        }
        for h in workers {
            h.join().unwrap();
        }
    });
    // Wait until the wake storm runs, then start the yielders.
    let start = Instant::now();
    while hub_rounds.load(Ordering::Relaxed) < 100 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let yielders: Vec<_> = (0..YIELDERS)
        .map(|i| {
            let (c, s) = (counts.clone(), stop.clone());
            rt.spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    c[i].fetch_add(1, Ordering::Relaxed);
                    yield_now();
                }
            })
        })
        .collect();
    let target = scale(20);
    let start = Instant::now();
    let all = || counts.iter().all(|c| c.load(Ordering::Relaxed) >= target);
    while !all() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let ok = all();
    // The hub must have kept going too (the storm was real).
    let rounds = hub_rounds.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    hub.join().unwrap();
    for h in yielders {
        h.join().unwrap();
    }
    assert!(rounds >= 100, "the wake storm did not run ({rounds} rounds)");
    ok
}

#[test]
fn wake_storm_does_not_starve_ring() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let ok = within(60, "wake storm, bounded boost", yielders_progress_under_wake_storm);
    assert!(ok, "ring tasks starved by tasks waking each other (boost not bounded)");

    // Negative control: with an unbounded boost the yielders never run.
    hooks::set_boost_policy_for_tests(Some(true));
    let ok_off = within(60, "wake storm, unbounded boost", yielders_progress_under_wake_storm);
    hooks::set_boost_policy_for_tests(None);
    assert!(!ok_off, "negative control: with an unbounded boost the ring tasks should starve");
}
