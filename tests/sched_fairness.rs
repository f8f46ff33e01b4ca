//! Latency fairness (issue 11): a task made runnable by a wake runs ahead of
//! tasks that used up their quantum or yielded (a per-worker FIFO of woken
//! tasks, then the `runnext` slot, checked before the ring), also when an
//! idle worker steals it, and the boost is bounded: tasks that keep waking
//! each other cannot starve the ring, and a task in the woken FIFO cannot
//! be starved by `runnext`.
//!
//! The scenarios run without async preemption, on one worker or with hog
//! tasks that keep a worker without switching, so the order of picks is
//! deterministic. Each test also runs its negative control through the
//! test-only switches `hooks::set_boost_policy_for_tests` and
//! `hooks::set_boost_first_version_for_tests` (process-wide, so the tests of
//! this file take a lock): without the woken FIFO a woken task runs only
//! after the yielders (also when stolen); without the streak bound the
//! yielders never run; with the first version of the FIFO (runnext picked
//! first) a sleeper beside a ping-pong pair never runs again (the hang of
//! `usurp-stress --workers 2 --tasks 20`). Timing is only a watchdog
//! (`within`) and a generous cap on waiting for progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{channel, yield_now, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{scale, within};

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

/// One worker, no async preemption: a ping-pong pair keeps the `runnext`
/// slot filled (each wakes the other into it and parks), while a task sleeps
/// 1 ms `rounds` times. Its timer fires in the scheduler loop (every 61
/// picks), where the wake takes `runnext` and displaces the ping-pong task
/// waiting there into the woken FIFO (the first version put the sleeper
/// itself in the FIFO). A plain thread waits until the sleeper is done or
/// `cap` has passed, then stops the pair. Returns the sleeps completed by
/// then.
///
/// Regression test of the hang of `usurp-stress --workers 2 --tasks 20`
/// with the first version of the woken FIFO: boosted picks took `runnext`
/// first, so a task in the FIFO waited for as long as `runnext` was refilled
/// before each pick, i.e. forever beside a ping-pong pair (the stress run's
/// main task, woken from its 2 s sleep, never ran again).
fn sleeps_beside_ping_pong(rounds: usize, cap: Duration) -> usize {
    let rt = Runtime::builder().workers(1).async_preemption(false).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicUsize::new(0));
    let slept = Arc::new(AtomicUsize::new(0));
    let (st, x, sl) = (stop.clone(), exchanges.clone(), slept.clone());
    let main = rt.spawn(move || {
        let (tx_ab, rx_ab) = channel::<u64>();
        let (tx_ba, rx_ba) = channel::<u64>();
        let (s, x2) = (st.clone(), x.clone());
        let ping = usurp::spawn(move || {
            let mut v = 0;
            while !s.load(Ordering::Relaxed) {
                tx_ab.send(v).unwrap();
                v = rx_ba.recv().unwrap() + 1;
                x2.fetch_add(1, Ordering::Relaxed);
            }
            drop(tx_ab); // pong's recv fails: it ends
        });
        let pong = usurp::spawn(move || {
            while let Ok(v) = rx_ab.recv() {
                if tx_ba.send(v).is_err() {
                    break;
                }
            }
        });
        // The pair runs (and fills runnext) before the first sleep.
        while x.load(Ordering::Relaxed) < 100 {
            yield_now();
        }
        for _ in 0..rounds {
            usurp::sleep(Duration::from_millis(1));
            sl.fetch_add(1, Ordering::Relaxed);
        }
        st.store(true, Ordering::Relaxed);
        ping.join().unwrap();
        pong.join().unwrap();
    });
    let start = Instant::now();
    while slept.load(Ordering::Relaxed) < rounds && start.elapsed() < cap {
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = slept.load(Ordering::Relaxed);
    // Once the pair stops, `runnext` empties and the sleeper finishes.
    stop.store(true, Ordering::Relaxed);
    main.join().unwrap();
    assert_eq!(slept.load(Ordering::Relaxed), rounds);
    assert!(exchanges.load(Ordering::Relaxed) >= 100, "the ping-pong pair did not run");
    done
}

#[test]
fn woken_fifo_not_starved_by_runnext() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let rounds = scale(20);
    // Generous: the sleeps take `rounds` ms.
    let cap = Duration::from_secs(10);
    let done = within(60, "sleeps beside a ping-pong pair", move || sleeps_beside_ping_pong(rounds, cap));
    assert_eq!(done, rounds, "a woken task waited in the woken FIFO while a ping-pong pair refilled runnext");

    // Negative control: the first version (runnext taken before the FIFO,
    // scheduler-loop wakes straight to the FIFO): the sleeper never runs
    // again while the pair runs.
    hooks::set_boost_first_version_for_tests(true);
    let cap = Duration::from_secs(1);
    let done_off = within(60, "sleeps beside a ping-pong pair (first version)", move || {
        sleeps_beside_ping_pong(rounds, cap)
    });
    hooks::set_boost_first_version_for_tests(false);
    assert!(
        done_off <= 1,
        "negative control: under the first version the sleeper should starve, it slept {done_off} times"
    );
}

/// Two workers, no async preemption (a task keeps its worker until it
/// switches). A hog task H0 on worker X queues `YIELDERS` yielders on X's
/// ring (its spawns), then wakes two parked tasks W1 and W2 back to back
/// (W2 displaces W1 from `runnext`), while a second hog H1 keeps the other
/// worker Y busy. Then H1 ends: Y, idle, steals. Returns how many yields the
/// yielders had made when W1 started (H0 keeps X busy throughout, so W1
/// runs only if Y takes it).
fn yields_before_stolen_woken_runs() -> usize {
    let rt = Runtime::builder().workers(2).async_preemption(false).build().unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(usize::MAX));
    let (p, sn) = (progress.clone(), seen.clone());
    let h0 = rt.spawn(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let parked = Arc::new(AtomicUsize::new(0));
        let (tx1, rx1) = channel::<()>();
        let (tx2, rx2) = channel::<()>();
        let (pk, p1, s1) = (parked.clone(), p.clone(), sn.clone());
        let w1 = usurp::spawn(move || {
            pk.fetch_add(1, Ordering::SeqCst);
            rx1.recv().unwrap();
            s1.store(p1.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        let pk = parked.clone();
        let w2 = usurp::spawn(move || {
            pk.fetch_add(1, Ordering::SeqCst);
            rx2.recv().unwrap();
        });
        while parked.load(Ordering::SeqCst) < 2 {
            yield_now();
        }
        // Both are parked in `recv` by then (the wakes below must be real).
        usurp::sleep(Duration::from_millis(50));
        // H1 hogs the other worker: spawned into this worker's runnext,
        // stolen from there by the idle worker after its grace period.
        let (started, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (st, rl) = (started.clone(), release.clone());
        let h1 = usurp::spawn(move || {
            st.store(true, Ordering::SeqCst);
            while !rl.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
        let t0 = Instant::now();
        while !started.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(20), "the idle worker never took H1");
            std::hint::spin_loop();
        }
        // From here on this task does not switch until W1 ran (or the cap):
        // its worker X runs nothing else. Yielders on X's ring.
        let yielders: Vec<_> = (0..YIELDERS)
            .map(|_| {
                let (p, s) = (p.clone(), stop.clone());
                usurp::spawn(move || {
                    while !s.load(Ordering::SeqCst) {
                        p.fetch_add(1, Ordering::SeqCst);
                        yield_now();
                    }
                })
            })
            .collect();
        tx1.send(()).unwrap(); // W1 into runnext (the last yielder to the ring)
        tx2.send(()).unwrap(); // W2 into runnext, W1 displaced
        release.store(true, Ordering::SeqCst); // H1 ends: worker Y steals
        let t0 = Instant::now();
        while sn.load(Ordering::SeqCst) == usize::MAX && t0.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
        stop.store(true, Ordering::SeqCst);
        for h in yielders {
            h.join().unwrap();
        }
        h1.join().unwrap();
        w1.join().unwrap();
        w2.join().unwrap();
    });
    h0.join().unwrap();
    let s = seen.load(Ordering::SeqCst);
    assert_ne!(s, usize::MAX, "W1 never ran");
    s
}

#[test]
fn stolen_woken_task_keeps_its_boost() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seen = within(60, "stolen woken task", yields_before_stolen_woken_runs);
    // The idle worker takes W1 from X's woken FIFO before stealing ring
    // tasks: no yielder has run yet.
    assert_eq!(seen, 0, "the stolen woken task ran after {seen} yields of ring tasks");

    // Negative control: without the woken FIFO, W1 is at the back of X's
    // ring; the thief steals the front half (yielders) and runs them.
    hooks::set_boost_policy_for_tests(Some(false));
    let seen_off = within(60, "stolen woken task (boost off)", yields_before_stolen_woken_runs);
    hooks::set_boost_policy_for_tests(None);
    assert!(
        seen_off >= YIELDERS,
        "negative control: without the boost the thief should run yielders first, saw {seen_off}"
    );
}
