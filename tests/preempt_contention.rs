//! Issue 12, "tick only when someone waits": a busy worker's quantum timer
//! runs only while runnable work waits for it.
//!
//! * 2 loops on 2 workers: no tick is delivered at all once they run (the
//!   negative control, the test switch that makes every worker report
//!   itself contended as before, gets a tick per quantum per worker);
//! * a task spawned from outside while both workers run loops, and a task
//!   spawned by a busy task, arm the running workers' quanta and run (the
//!   negative control, wakers that mark no worker contended, leaves them
//!   waiting: nothing would ever run them);
//! * a sleeper still wakes, and stop-the-world still stops uncontended
//!   workers (timer expiry and stops go through targeted requests).
//!
//! No timing assertions: watchdogs turn hangs into failures. The preemption
//! counters and the test switch are process-wide, so the tests of this file
//! run one at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_testsupport::preemptible::spin;
use usurp_testsupport::serial;

/// Restores the normal policy even if the test panics.
struct Policy;
impl Policy {
    fn set(p: Option<bool>) -> Policy {
        usurp_sched::hooks::set_tick_policy_for_tests(p);
        Policy
    }
}
impl Drop for Policy {
    fn drop(&mut self) {
        usurp_sched::hooks::set_tick_policy_for_tests(None);
    }
}

const WATCHDOG: Duration = Duration::from_secs(120);

struct Loops {
    stop: Arc<AtomicBool>,
    handles: Vec<usurp::JoinHandle<()>>,
}

impl Loops {
    /// Spawns `n` loops and waits until each has counted.
    fn start(rt: &Runtime, n: usize) -> Loops {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let handles = (0..n)
            .map(|i| {
                let (s, c) = (stop.clone(), counts.clone());
                rt.spawn(move || spin(&s, &c[i]))
            })
            .collect();
        let l = Loops { stop, handles };
        let t0 = Instant::now();
        while counts.iter().any(|c| c.load(Ordering::Relaxed) == 0) {
            if t0.elapsed() > WATCHDOG {
                l.stop.store(true, Ordering::SeqCst);
                panic!("the loops did not all start");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        l
    }

    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().unwrap();
        }
    }
}

fn ticks() -> u64 {
    usurp::preempt::stats().ticks
}

/// Waits until no tick is delivered for 50 ms (the workers' last stale
/// ticks after start-up); false if that never happens within a few seconds.
fn quiesce() -> bool {
    let t0 = Instant::now();
    let mut last = ticks();
    while t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        let now = ticks();
        if now == last {
            return true;
        }
        last = now;
    }
    false
}

/// Ticks delivered over 200 quanta of 2 loops on 2 workers.
fn ticks_with_two_loops(policy: Option<bool>) -> u64 {
    let _p = Policy::set(policy);
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    assert!(rt.async_preemption());
    let loops = Loops::start(&rt, 2);
    // Start-up: the spawns made the workers contended for a while (a stale
    // flag clears at the next preemption).
    if policy.is_none() {
        if !quiesce() {
            loops.stop.store(true, Ordering::SeqCst);
            panic!("ticks never stopped with 2 loops on 2 workers");
        }
    } else {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = ticks();
    std::thread::sleep(Duration::from_millis(200));
    let mut n = ticks() - t0;
    if policy == Some(true) {
        // The negative control needs the ticks of 200 quanta, not 200 ms of
        // wall time: on a loaded machine the loops' threads may get a
        // fraction of a CPU. Wait (bounded) until they have had enough.
        let t1 = std::time::Instant::now();
        while n < ALWAYS_MIN && t1.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            n = ticks() - t0;
        }
    }
    loops.finish();
    n
}

/// Ticks the negative control must see (2 workers x 200 quanta would give
/// about 400 on an idle machine).
const ALWAYS_MIN: u64 = 40;

#[test]
fn loops_equal_to_workers_take_no_tick() {
    let _s = serial();
    let quiet = ticks_with_two_loops(None);
    let always = ticks_with_two_loops(Some(true));
    eprintln!("ticks over 200 quanta: {quiet} (tick only when someone waits), {always} (always)");
    // Negative control: the counter does see the ticks of busy workers.
    assert!(always >= ALWAYS_MIN, "with every worker contended, 2 workers x 200 quanta should take ticks: {always}");
    assert!(quiet <= 4, "2 loops on 2 workers: nobody waits, yet {quiet} ticks were delivered");
}

/// Runs `f` on the runtime and waits for `flag` (set by `f`) for up to
/// `wait`; whether it was set.
fn ran_within(rt: &Runtime, wait: Duration) -> (Arc<AtomicBool>, usurp::JoinHandle<()>, bool) {
    let flag = Arc::new(AtomicBool::new(false));
    let f2 = flag.clone();
    let h = rt.spawn(move || f2.store(true, Ordering::SeqCst));
    let t0 = Instant::now();
    while !flag.load(Ordering::SeqCst) && t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ran = flag.load(Ordering::SeqCst);
    (flag, h, ran)
}

#[test]
fn task_spawned_while_all_workers_loop_runs() {
    let _s = serial();
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    let loops = Loops::start(&rt, 2);
    assert!(quiesce(), "ticks never stopped with 2 loops on 2 workers");
    // Negative control: if spawning marked no worker contended, nothing
    // would ever run the new task (no tick, no idle worker, no switch).
    let p = Policy::set(Some(false));
    let (_f1, h1, ran1) = ran_within(&rt, Duration::from_millis(300));
    drop(p);
    assert!(!ran1, "the control ran a task although no worker was contended (is something else ticking?)");
    // With the mechanism: the next spawn arms the workers' quanta; both
    // waiting tasks run (a preemption each, about a quantum later).
    let acc0 = rt.stats().preempt.accepted;
    let (f1b, h2, ran2) = ran_within(&rt, WATCHDOG);
    if !ran2 {
        loops.stop.store(true, Ordering::SeqCst);
        panic!("a task spawned while both workers ran loops never ran");
    }
    let t0 = Instant::now();
    while !_f1.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < WATCHDOG, "the earlier waiting task never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(f1b);
    h1.join().unwrap();
    h2.join().unwrap();
    assert!(rt.stats().preempt.accepted > acc0, "the loops were never preempted for the waiting tasks");
    // A sleeper wakes while both workers loop (timer expiry: targeted
    // requests, not ticks).
    let sleeper = rt.spawn(|| {
        for _ in 0..20 {
            usurp::sleep(Duration::from_millis(2));
        }
    });
    let t0 = Instant::now();
    while !sleeper.is_finished() {
        assert!(t0.elapsed() < WATCHDOG, "a sleeper never finished while 2 loops ran on 2 workers");
        std::thread::sleep(Duration::from_millis(1));
    }
    sleeper.join().unwrap();
    loops.finish();
}

/// A busy task (ordinary code polling `checkpoint()`) spawns a task while
/// the other worker runs a loop: the child waits in the spawner's
/// `runnext`, so the spawner's quantum must tick (its refusal sets the
/// checkpoint flag) for the child to run. Returns whether the child ran
/// within `wait`.
fn child_of_busy_task_runs(rt: &Runtime, wait: Duration) -> bool {
    let h = rt.spawn(move || {
        let ran = Arc::new(AtomicBool::new(false));
        let r2 = ran.clone();
        let child = usurp::spawn(move || r2.store(true, Ordering::SeqCst));
        let t0 = Instant::now();
        while !ran.load(Ordering::SeqCst) && t0.elapsed() < wait {
            usurp::checkpoint();
            std::hint::spin_loop();
        }
        let r = ran.load(Ordering::SeqCst);
        // Let the child finish either way (a yield runs it now).
        while !ran.load(Ordering::SeqCst) {
            usurp::yield_now();
        }
        child.join().unwrap();
        r
    });
    h.join().unwrap()
}

#[test]
fn task_spawned_by_busy_task_runs() {
    let _s = serial();
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    let loops = Loops::start(&rt, 1);
    {
        let _p = Policy::set(Some(false));
        assert!(
            !child_of_busy_task_runs(&rt, Duration::from_millis(300)),
            "the control ran the child although its spawner's worker was not contended"
        );
    }
    assert!(child_of_busy_task_runs(&rt, WATCHDOG), "the child of a busy task never ran");
    loops.finish();
}

/// Stop-the-world sends targeted requests, not ticks: it still stops
/// workers whose timers are off because nobody waits for them.
#[test]
fn stop_the_world_reaches_uncontended_workers() {
    let _s = serial();
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    let loops = Loops::start(&rt, 2);
    assert!(quiesce(), "ticks never stopped with 2 loops on 2 workers");
    let acks0 = usurp::preempt::stats().acks;
    let (tx, rx) = std::sync::mpsc::channel();
    let rt2 = rt.clone();
    std::thread::spawn(move || {
        for _ in 0..5 {
            rt2.stop_the_world();
            rt2.start_the_world();
        }
        rt2.heap().collect();
        let _ = tx.send(());
    });
    if rx.recv_timeout(WATCHDOG).is_err() {
        loops.stop.store(true, Ordering::SeqCst);
        panic!("stop-the-world never completed while 2 uncontended loops ran");
    }
    assert!(usurp::preempt::stats().acks > acks0, "the stops sent no request");
    loops.finish();
}
