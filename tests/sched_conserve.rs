//! Work conservation (issue 11): a runnable task never waits while a worker
//! idles. Spawning or waking a task wakes an idle worker (Go's `wakep`), and
//! an idle worker steals a task that sits in a busy worker's `runnext` slot
//! after a short grace period (Go's runnext stealing).
//!
//! Each scenario keeps one worker busy in ordinary Rust code that never
//! reaches a cooperative point (no yield, no allocation, not `preemptible!`)
//! while a task it made runnable sits in its `runnext` slot. Without both
//! mechanisms that task never runs until the busy code ends. The busy code
//! spins until it sees the other task make progress, bounded by a generous
//! cap: the assertions check behaviour (progress happened, in parallel, on
//! the other worker), not speed; the cap only turns "never" into a failure.
//! Negative controls (checked when the mechanisms landed): without the
//! runnext stealing all four tests fail; without the wake-up on spawn/wake
//! the sleeper and fork-join tests fail (the idle worker sleeps on).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{sleep, spawn, Mutex, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{scale, within};

/// The longest the busy task waits for the other to make progress.
const CAP: Duration = Duration::from_secs(10);

/// Spins (no runtime call of any kind) until `done()` or `CAP` elapsed;
/// returns whether `done()` became true.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > CAP {
            return false;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
    true
}

/// The first report: the main task is busy in ordinary code; a task
/// it spawned sleeps 1 ms in a loop. Before: zero wake-ups (the sleeper sat
/// in the busy worker's runnext slot and the idle worker slept).
#[test]
fn spawned_sleeper_runs_while_spawner_is_busy() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let want = scale(40);
    let (sleeps, worker_ok) = within(60, "spawned sleeper", move || {
        rt.block_on(move || {
            let count = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let other_worker = Arc::new(AtomicBool::new(true));
            let main_worker = hooks::current_worker_index().unwrap();
            let (c, s, o) = (count.clone(), stop.clone(), other_worker.clone());
            let h = spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    sleep(Duration::from_millis(1));
                    if hooks::current_worker_index() == Some(main_worker) {
                        o.store(false, Ordering::Relaxed);
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
            // The main task keeps its worker (it cannot be preempted here).
            spin_until(|| count.load(Ordering::Relaxed) >= want);
            let seen = count.load(Ordering::Relaxed);
            let ok = other_worker.load(Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
            (seen, ok)
        })
    });
    assert!(sleeps >= want, "the sleeper completed {sleeps} of {want} sleeps while the spawner was busy");
    assert!(worker_ok, "the sleeper ran on the busy spawner's worker");
}

/// Fork-join: `let h = spawn(work); work(); h.join()` on 2 workers runs both
/// halves at the same time, on different workers and OS threads.
#[test]
fn fork_join_halves_run_in_parallel() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (a, b) = within(60, "fork-join", move || {
        rt.block_on(|| {
            let inside = Arc::new(AtomicUsize::new(0));
            // Each half enters, then works until it has seen the other half
            // inside at the same time (or the cap elapses).
            let work = |inside: Arc<AtomicUsize>| {
                move || {
                    inside.fetch_add(1, Ordering::SeqCst);
                    let overlapped = spin_until(|| inside.load(Ordering::SeqCst) >= 2);
                    (overlapped, hooks::current_worker_index().unwrap(), std::thread::current().id())
                }
            };
            let h = spawn(work(inside.clone()));
            let mine = work(inside)();
            (mine, h.join().unwrap())
        })
    });
    assert!(a.0 && b.0, "the halves did not overlap: parent {a:?}, child {b:?}");
    assert_ne!(a.1, b.1, "both halves ran on worker {}", a.1);
    assert_ne!(a.2, b.2, "both halves ran on the same OS thread");
}

/// A Mutex unlocked by a busy task is handed to the waiter, which is woken
/// into the unlocker's runnext slot: it must still get to run (on the idle
/// worker) while the unlocker stays busy.
#[test]
fn mutex_handed_to_runnext_waiter_does_not_stall() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (got, ran_elsewhere) = within(60, "mutex handoff", move || {
        rt.block_on(|| {
            let m = Arc::new(Mutex::new(0u32));
            let acquired = Arc::new(AtomicBool::new(false));
            let guard = m.lock();
            let (m2, a2) = (m.clone(), acquired.clone());
            let h = spawn(move || {
                let mut g = m2.lock();
                *g += 1;
                a2.store(true, Ordering::SeqCst);
                hooks::current_worker_index().unwrap()
            });
            // Let the waiter run and park on the lock (a cooperative wait:
            // nothing here depends on how long it takes).
            sleep(Duration::from_millis(50));
            let me = hooks::current_worker_index().unwrap();
            drop(guard); // hands the lock over; the waiter goes to our runnext
            let got = spin_until(|| acquired.load(Ordering::SeqCst));
            let there = h.join().unwrap();
            assert_eq!(*m.lock(), 1);
            (got, there != me)
        })
    });
    assert!(got, "the waiter given the lock never ran while the unlocker was busy");
    assert!(ran_elsewhere, "the waiter ran on the unlocker's worker");
}

/// Many tasks made runnable by one busy task (more than its ring holds, so
/// batches overflow to the global queue) all get run by the other worker
/// while the spawner stays busy.
#[test]
fn overflowing_spawns_run_while_spawner_is_busy() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = 600;
    let done = within(60, "overflow", move || {
        rt.block_on(move || {
            let count = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    let c = count.clone();
                    spawn(move || {
                        c.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            spin_until(|| count.load(Ordering::SeqCst) >= n);
            let seen = count.load(Ordering::SeqCst);
            for h in hs {
                h.join().unwrap();
            }
            seen
        })
    });
    assert_eq!(done, n, "only {done} of {n} spawned tasks ran while the spawner was busy");
}
