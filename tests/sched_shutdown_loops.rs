//! `Runtime::drop` with a task that never parks (red-team findings of
//! session 14, /work/rt-sched: blockloop, droploop, collectloop). Drop
//! stops each worker when it next reaches its scheduler loop and abandons
//! the tasks left; these tasks never got there, and drop waited for ever:
//! * a task looping on `usurp::blocking` (after shutdown begins the closure
//!   runs in place; the checkpoint after it had no request to act on):
//!   now the task goes to its scheduler loop after the closure;
//! * a lone runaway loop (`preemptible!`, or cooperative with
//!   `checkpoint()`) on an uncontended worker takes no quantum tick: now
//!   `begin_shutdown` sends every busy worker a preemption request and
//!   marks it contended, and a preempted or yielding task goes to the
//!   scheduler loop at shutdown;
//! * a task looping on `Heap::collect()` (or `task::dump()`) holds each
//!   stop itself, its quantum is off during stops and the timer monitor
//!   sends nothing while a stop is on: on one worker a 1 ms sleeper never
//!   woke, and drop hung. Now the end of a collection or dump from a task
//!   is a cooperative point (due timers fired, waiting tasks run, stop at
//!   shutdown).
//!
//! Each test FAILS without its fix (checked by reverting the fix, session
//! 14: blocking.rs's shutdown yield; `Shared::preempt_for_shutdown` and the
//! shutdown checks in `yield_raw`/`preempt_current`; `worker::after_stop`
//! in `Heap::collect`/`task::dump`): the watchdog (`within`) fires.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_testsupport::within;

usurp::preemptible! {
    pub fn guest_loop(c: &AtomicU64) { loop { c.fetch_add(1, Relaxed); } }
}

/// Waits (from the test's thread) until `c` moved: the task runs.
fn wait_running(c: &AtomicU64) {
    let t = Instant::now();
    while c.load(Relaxed) < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the task never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// blockloop: `loop { blocking(sleep 1 ms); spin 3 ms }`, alone on one
/// worker and three on two. Without async preemption (no signals, no
/// requests: only the yield after the in-place closure at shutdown gets
/// the task to its scheduler) it fails without that yield; with it, the
/// shutdown request (droploop's fix) gets the task out too, at the
/// checkpoint that `blocking` starts with.
#[test]
fn drop_returns_with_a_task_looping_on_blocking() {
    for (preempt, workers, tasks) in [(false, 1, 1), (false, 2, 3), (true, 1, 1), (true, 2, 3)] {
        within(20, "drop with a blocking loop", move || {
            let rt = Runtime::builder().workers(workers).async_preemption(preempt).build().unwrap();
            let calls = Arc::new(AtomicU64::new(0));
            for _ in 0..tasks {
                let c = calls.clone();
                rt.spawn(move || loop {
                    usurp::blocking(|| std::thread::sleep(Duration::from_millis(1)));
                    c.fetch_add(1, Relaxed);
                    spin(Duration::from_millis(3));
                });
            }
            wait_running(&calls);
            drop(rt);
        });
    }
}

/// droploop: a lone `preemptible!` loop; fails without the shutdown
/// request (its worker takes no tick: nobody else waits).
#[test]
fn drop_returns_with_a_lone_preemptible_loop() {
    within(20, "drop with a lone preemptible loop", || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let c = Arc::new(AtomicU64::new(0));
        let c1 = c.clone();
        rt.spawn(move || guest_loop(&c1));
        wait_running(&c);
        let t = Instant::now();
        drop(rt);
        eprintln!("lone preemptible loop: drop took {:?}", t.elapsed());
    });
}

/// droploop: a lone loop calling `checkpoint()`; fails without the
/// shutdown request and the shutdown check in `yield_raw` (one yield with
/// nothing else to run would keep going).
#[test]
fn drop_returns_with_a_lone_checkpoint_loop() {
    within(20, "drop with a lone checkpoint loop", || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let c = Arc::new(AtomicU64::new(0));
        let c1 = c.clone();
        rt.spawn(move || loop {
            for _ in 0..1000 {
                c1.fetch_add(1, Relaxed);
            }
            usurp::checkpoint();
        });
        wait_running(&c);
        let t = Instant::now();
        drop(rt);
        eprintln!("lone checkpoint loop: drop took {:?}", t.elapsed());
    });
}

/// collectloop: a task looping on `Heap::collect()` (or `task::dump()`)
/// beside a 1 ms sleeper: the sleeper wakes (on one worker it never did)
/// and drop returns (it hung on one and two workers).
fn collect_loop(workers: usize, dump: bool) {
    within(30, "collect loop: sleeper and drop", move || {
        let rt = Runtime::builder().workers(workers).build().unwrap();
        let (woke, loops) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let l1 = loops.clone();
        rt.spawn(move || loop {
            if dump {
                let _ = usurp::task::dump();
            } else {
                usurp::gc::Heap::current().unwrap().collect();
            }
            l1.fetch_add(1, Relaxed);
        });
        let w1 = woke.clone();
        rt.spawn(move || loop {
            usurp::sleep(Duration::from_millis(1));
            w1.fetch_add(1, Relaxed);
        });
        wait_running(&loops);
        let t = Instant::now();
        while woke.load(Relaxed) < 20 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "workers({workers}) dump={dump}: the 1 ms sleeper woke {} times in 5 s beside a loop of {} stops",
                woke.load(Relaxed),
                loops.load(Relaxed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(rt);
    });
}

#[test]
fn collect_loop_one_worker() {
    collect_loop(1, false);
}

#[test]
fn collect_loop_two_workers() {
    collect_loop(2, false);
}

#[test]
fn dump_loop_one_worker() {
    collect_loop(1, true);
}
