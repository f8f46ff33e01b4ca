//! Unit tests of the scheduler core (integration tests live in the root
//! package's tests/sched_*.rs).

use crate::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use usurp_testsupport::scale;

#[test]
fn block_on_returns_value() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    assert_eq!(rt.block_on(|| 6 * 7), 42);
}

#[test]
fn spawn_join_many_on_one_worker() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let n = scale(2000);
    let sum = rt.block_on(move || {
        let hs: Vec<_> = (0..n).map(|i| spawn(move || i * 2)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert_eq!(sum, n * (n - 1));
}

#[test]
fn yields_interleave_on_one_worker() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let log = rt.block_on(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..2)
            .map(|k| {
                let log = log.clone();
                spawn(move || {
                    for i in 0..3 {
                        log.lock().push((k, i));
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let v = log.lock().clone();
        v
    });
    // With one worker and FIFO yields, the two tasks alternate (the one
    // spawned last starts first: it sits in the LIFO runnext slot).
    assert_eq!(log, vec![(1, 0), (0, 0), (1, 1), (0, 1), (1, 2), (0, 2)]);
}

#[test]
fn tasks_recycle_their_structs() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let n = scale(500);
    rt.block_on(move || {
        for _ in 0..n {
            spawn(|| ()).join().unwrap();
        }
    });
    // One root task + one child at a time: very few structs were ever mapped.
    assert!(rt.shared().registry.lock().len() <= 4, "{}", rt.shared().registry.lock().len());
}

#[test]
fn panics_reach_join_and_block_on() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let err = rt.block_on(|| {
        spawn(|| {
            let n = std::hint::black_box(7);
            panic!("boom {n}")
        })
        .join()
        .unwrap_err()
    });
    assert_eq!(err.downcast_ref::<String>().map(String::as_str), Some("boom 7"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(|| panic!("root"))));
    assert_eq!(*r.unwrap_err().downcast_ref::<&str>().unwrap(), "root");
    // The runtime still works afterwards.
    assert_eq!(rt.block_on(|| 1), 1);
}

#[test]
fn join_from_plain_thread() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let h = rt.spawn(|| {
        sleep(std::time::Duration::from_millis(5));
        "done"
    });
    assert_eq!(std::thread::spawn(move || h.join().unwrap()).join().unwrap(), "done");
}

#[test]
fn switch_counter_advances_and_running_task_clears() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let before = hooks::worker_switch_count(&rt, 0);
    rt.block_on(|| {
        for _ in 0..10 {
            spawn(yield_now).join().unwrap();
        }
    });
    assert!(hooks::worker_switch_count(&rt, 0) >= before + 20);
}

#[test]
fn preempt_hook_requeues_pinned_and_task_continues() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let rounds = scale(300);
    let (moved_while_pinned, unpinned_after_yield) = rt.block_on(move || {
        // Other tasks keep both workers busy and stealing.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let stop = stop.clone();
                spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        yield_now();
                    }
                })
            })
            .collect();
        let t = crate::worker::current_task();
        let mut moved = 0;
        let mut unpinned = true;
        for _ in 0..rounds {
            let w0 = hooks::current_worker_index().unwrap();
            // What an async-preempted task does from its spill hook, twice
            // in a row (preempted again before any cooperative switch).
            hooks::park_current_and_reschedule();
            hooks::park_current_and_reschedule();
            // SAFETY: the current task.
            let pinned = unsafe { (*t).pinned_worker.get() };
            if hooks::current_worker_index() != Some(w0) || pinned != w0 {
                moved += 1;
            }
            yield_now(); // cooperative: the pin clears, migration allowed again
            // SAFETY: as above.
            unpinned &= unsafe { (*t).pinned_worker.get() } == crate::tasks::tcb::NO_PIN;
        }
        stop.store(true, Ordering::Relaxed);
        for h in busy {
            h.join().unwrap();
        }
        (moved, unpinned)
    });
    assert_eq!(moved_while_pinned, 0, "a pinned task resumed on another worker");
    assert!(unpinned_after_yield);
}

#[test]
fn for_each_task_stack_sees_parked_tasks() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = sync_channel::<()>(0);
    let parked = Arc::new(AtomicUsize::new(0));
    let p2 = parked.clone();
    let h = rt.spawn(move || {
        p2.store(1, Ordering::SeqCst);
        rx.recv().unwrap();
    });
    while parked.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // Wait until the task really is parked (a fixed 20 ms sleep was not
    // always enough under qemu in a loaded CI run): a dump stops the world
    // and reads its state. Watchdog: 30 s.
    let t0 = std::time::Instant::now();
    while !rt.dump_tasks().tasks.iter().any(|t| matches!(t.state, crate::TaskState::Parked(_))) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the task never parked in recv");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut seen = Vec::new();
    // SAFETY: the only task is parked in recv (nothing else runs) for the
    // duration of the call; this is a test of the enumeration only.
    unsafe { hooks::for_each_task_stack(&rt, &mut |sp, lo, hi| seen.push((sp, lo, hi))) };
    assert_eq!(seen.len(), 1);
    let (sp, lo, hi) = seen[0];
    assert!(lo < sp && sp < hi, "{lo:x} {sp:x} {hi:x}");
    assert_eq!(hi - lo, rt.stack_size());
    tx.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn global_queue_is_not_starved_by_local_yielders() {
    // Two tasks yield to each other forever through the local ring unless a
    // task that only exists in the global queue runs and sets the flag.
    let rt = Runtime::builder().workers(1).build().unwrap();
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f1, f2) = (flag.clone(), flag.clone());
    let yielders = rt.spawn(move || {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let f = f1.clone();
                spawn(move || {
                    while !f.load(Ordering::SeqCst) {
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    // Let the yielders get going, then inject through the global queue.
    std::thread::sleep(std::time::Duration::from_millis(20));
    rt.spawn(move || f2.store(true, Ordering::SeqCst));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(yielders.join().is_ok()));
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(60)), Ok(true), "global task starved");
}

#[test]
fn blocking_task_stack_range_covers_its_live_values() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (in_blocking_tx, in_blocking_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    const MARK: usize = 0x5eed_cafe_f00d_1234;
    let h = rt.spawn(move || {
        // A value live across the blocking call (in a register or a slot of
        // a frame above it).
        let v = std::hint::black_box(MARK);
        blocking(move || {
            in_blocking_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        std::hint::black_box(v) == MARK
    });
    in_blocking_rx.recv().unwrap();
    let mut found = false;
    let mut ranges = 0;
    // SAFETY: the only task is inside `blocking`, its upper frames frozen;
    // the worker runs nothing else. Reads stay inside the task's stack.
    unsafe {
        hooks::for_each_task_stack(&rt, &mut |sp, lo, hi| {
            ranges += 1;
            assert!(lo <= sp && sp < hi);
            let mut a = sp & !7;
            while a < hi {
                found |= *(a as *const usize) == MARK;
                a += 8;
            }
        })
    };
    release_tx.send(()).unwrap();
    assert!(h.join().unwrap());
    assert_eq!(ranges, 1);
    assert!(found, "a value live across blocking() is not in the scanned range");
}

/// Runs `f` on a child thread and fails if it does not finish in `secs`.
fn with_watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    usurp_testsupport::within(secs, "watchdog: the scenario", f)
}

/// Waits until every worker of `rt` sleeps idle.
fn wait_all_idle(rt: &Runtime) {
    let t0 = std::time::Instant::now();
    while !rt.shared().workers.iter().all(|w| w.idle.load(Ordering::SeqCst)) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "workers never went idle");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Let them reach the futex.
    std::thread::sleep(std::time::Duration::from_millis(20));
}

/// With every worker idle, stops the world from this (non-task) thread and
/// returns whether each worker was still idle (not woken) during the stop.
fn idle_during_stop(wake_idle: bool) -> Vec<bool> {
    let rt = Runtime::builder().workers(3).build().unwrap();
    rt.shared().stw.wake_idle_for_test.store(wake_idle, Ordering::Relaxed);
    wait_all_idle(&rt);
    rt.stop_the_world();
    let idle = rt.shared().workers.iter().map(|w| w.idle.load(Ordering::SeqCst)).collect();
    rt.start_the_world();
    idle
}

// Issue 9 item 6: sleeping workers count as stopped without being woken.
#[test]
fn idle_workers_count_as_stopped_without_being_woken() {
    with_watchdog(60, || {
        assert_eq!(idle_during_stop(false), vec![true; 3], "a stop woke idle workers");
    });
}

// Negative control: with the old wake-everyone behaviour switched back on,
// the same observation fails (the test can tell the two apart).
#[test]
fn negative_control_a_stop_that_wakes_idle_workers_is_detected() {
    with_watchdog(60, || {
        assert_eq!(idle_during_stop(true), vec![false; 3]);
    });
}

// An idle worker woken during a stop (work was queued) parks before it runs
// anything: a task spawned while the world is stopped runs only after it
// restarts, although every worker counted as stopped while asleep.
#[test]
fn an_idle_worker_woken_during_a_stop_runs_nothing_until_the_restart() {
    with_watchdog(60, || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        for _ in 0..scale(20) {
            wait_all_idle(&rt);
            rt.stop_the_world();
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let r = ran.clone();
            let h = rt.spawn(move || r.store(true, Ordering::SeqCst));
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(!ran.load(Ordering::SeqCst), "a task ran while the world was stopped");
            rt.start_the_world();
            h.join().unwrap();
            assert!(ran.load(Ordering::SeqCst));
        }
    });
}

// run_parallel in a stop: every index runs exactly once, the stopper
// returns (it is woken by the last index only), jobs can follow each other.
#[test]
fn run_parallel_runs_each_index_once_and_returns() {
    with_watchdog(60, || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        for round in 0..scale(200) {
            rt.stop_the_world();
            let n = 1 + round % 17;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            crate::stw::run_parallel(rt.shared(), n, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
                if i % 3 == 0 {
                    std::thread::yield_now();
                }
            });
            rt.start_the_world();
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1), "round {round}");
        }
    });
}

// Issue 9 item 8: a stop held up by a task that does not reach a safe point
// (ordinary Rust code, checkpoint() only every 30 ms) names that task and
// its worker in the stats.
#[test]
fn a_stop_held_up_by_a_task_names_it() {
    with_watchdog(60, || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // When the hog's current lap began (µs since `epoch`, 0: none yet).
        let epoch = std::time::Instant::now();
        let lap_start = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, st) = (stop.clone(), lap_start.clone());
        let hog = crate::join::spawn_in(rt.shared(), Some("the-hog".into()), move || {
            while !s.load(Ordering::Relaxed) {
                // A lap begins: the hog runs on its worker.
                st.store(epoch.elapsed().as_micros() as u64 + 1, Ordering::SeqCst);
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_millis(30) {
                    std::hint::spin_loop();
                }
                usurp_preempt::checkpoint();
            }
        })
        .unwrap();
        while lap_start.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The other worker may still be searching (the spinner that took
        // the hog wakes an idle worker, which searches before it sleeps):
        // a stop would then wait for it too, and under emulation on a
        // loaded machine it can be the one named. Wait until it sleeps.
        let t0 = std::time::Instant::now();
        while !rt.shared().workers.iter().any(|w| w.idle.load(Ordering::SeqCst)) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the other worker never went idle");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut named = None;
        // (60 tries: under qemu in a full parallel CI run, 20 once ended
        // without a named stop; the tries skipped and the short stops are
        // counted for the message.)
        let (mut skipped, mut short, mut unnamed) = (0, 0, 0);
        for _ in 0..60 {
            // Stop while the hog runs, early in a lap: not while it waits
            // to be resumed after the previous start (a stop then finds its
            // worker idle and ends at once: under qemu in a full parallel
            // run, all 5 stops once did), nor when this thread saw the lap
            // begin so late that it is about to end (all 5 once did, under
            // qemu again): such a try is skipped.
            lap_start.store(0, Ordering::SeqCst);
            let t0 = std::time::Instant::now();
            while lap_start.load(Ordering::SeqCst) == 0 {
                assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the hog never began a lap");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let lap_age_us = (epoch.elapsed().as_micros() as u64).saturating_sub(lap_start.load(Ordering::SeqCst) - 1);
            if lap_age_us > 10_000 {
                skipped += 1;
                continue;
            }
            let ttsp = rt.stop_the_world();
            rt.start_the_world();
            if ttsp >= crate::stw::HOLDUP_REPORT {
                // A long stop that names no task waited for a worker between
                // tasks (under qemu in a full CI run, once, on the first
                // try): try again; a holdup mechanism that never names the
                // hog still fails below.
                named = rt.stats().stw.last_holdup;
                if named.is_some() {
                    break;
                }
                unnamed += 1;
                continue;
            }
            short += 1;
        }
        stop.store(true, Ordering::SeqCst);
        hog.join().unwrap();
        let (who, ttsp) = named.unwrap_or_else(|| {
            panic!(
                "no stop waited 1 ms for a task that checks in every 30 ms ({skipped} tries skipped: lap seen \
                 late; {short} stops shorter; {unnamed} long stops named no task)"
            )
        });
        assert!(who.contains("\"the-hog\"") && who.starts_with("worker "), "{who}");
        assert!(ttsp >= crate::stw::HOLDUP_REPORT);
        // What the stop's requests met on that worker (issue 9 item 1): at
        // least one request, refused because the hog's PC is in ordinary
        // (not preemptible) code, and the stopper's own lateness.
        assert!(who.contains("refused NotPreemptibleCode"), "{who}");
        let requests: u64 = who
            .split("[requests ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in {who}"));
        assert!(requests >= 1, "{who}");
        assert!(who.contains("stopper's longest gap"), "{who}");
    });
}
