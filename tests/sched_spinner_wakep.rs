//! Work conservation with three or more workers (issue 11, review item): a
//! spinning worker that finds work wakes an idle worker, as Go's
//! `resetspinning` calls `wakep`.
//!
//! Wakers (`spawn`, a channel send, an unlock...) wake an idle worker only
//! when no worker is searching (`Shared::notify`): a searching worker is
//! expected to find the work. If two tasks become runnable while one worker
//! searches, that worker takes one and the other waits on the busy worker
//! that made it runnable, while a third worker sleeps, unless the searcher
//! wakes someone when it stops searching.
//!
//! Scenario (3 workers, no async preemption, so a task keeps its worker
//! until it switches): the main task L keeps worker A busy in ordinary Rust
//! code. It waits until one worker B searches (spinning) and one sleeps,
//! then wakes two parked tasks T1 and T2 back to back (both go to A:
//! `runnext`, the woken FIFO). B takes one of them; every task then spins
//! until all three have run at the same time (or a cap). Without the
//! searcher's wake-up the other task stays on A, and the sleeping worker is
//! never woken: the cap expires (negative control below, through
//! `hooks::set_spinner_wakep_for_tests(false)`: in 2 of 5 rounds when
//! checked, depending on whether B took its task before the second wake;
//! the control runs batches of 20 rounds, up to 5, and asserts at least
//! one stranded task).

use usurp_testsupport::within;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usurp::{channel, task, Runtime};
use usurp_sched::hooks;

/// Serialises the tests of this file (the switch is process-wide).
static SWITCH: Mutex<()> = Mutex::new(());

/// Turns the spinner wakep switch off for a negative control and back on when
/// dropped, also when the control panics or times out (the switch is
/// process-wide: left off, it would break the other tests of this binary).
struct SwitchOff;
impl SwitchOff {
    fn new() -> SwitchOff {
        hooks::set_spinner_wakep_for_tests(false);
        SwitchOff
    }
}
impl Drop for SwitchOff {
    fn drop(&mut self) {
        hooks::set_spinner_wakep_for_tests(true);
    }
}

/// Spins (no runtime call) until `done()` or `cap` elapsed; whether `done()`.
fn spin_until(cap: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > cap {
            return false;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
    true
}

/// Whether every task in `names` is parked (a dump, which stops the world:
/// the wakes below must find them parked, not on their way there).
fn all_parked(names: &[&str]) -> bool {
    let dump = task::dump();
    names.iter().all(|n| {
        dump.tasks
            .iter()
            .any(|t| t.name.as_deref() == Some(*n) && matches!(t.state, usurp::TaskState::Parked(_)))
    })
}

/// Outcome of one round.
#[derive(Debug)]
struct Round {
    /// A worker was seen searching while another slept when the wakes were
    /// sent (the situation under test).
    setup_seen: bool,
    /// All three tasks ran at the same time within the cap.
    all_ran: bool,
}

/// One round of the scenario; `cap` bounds every wait.
fn round(rt: &Arc<Runtime>, cap: Duration) -> Round {
    let rt2 = rt.clone();
    rt.block_on(move || {
        let inside = Arc::new(AtomicUsize::new(0));
        let (tx1, rx1) = channel::<()>();
        let (tx2, rx2) = channel::<()>();
        let spawn_waiter = |name: &str, rx: usurp::Receiver<()>, inside: Arc<AtomicUsize>| {
            task::Builder::new()
                .name(name)
                .spawn(move || {
                    rx.recv().unwrap();
                    inside.fetch_add(1, Ordering::SeqCst);
                    spin_until(cap, || inside.load(Ordering::SeqCst) >= 3)
                })
                .unwrap()
        };
        let t1 = spawn_waiter("wakep-t1", rx1, inside.clone());
        let t2 = spawn_waiter("wakep-t2", rx2, inside.clone());
        let t0 = Instant::now();
        while !all_parked(&["wakep-t1", "wakep-t2"]) {
            assert!(t0.elapsed() < Duration::from_secs(30), "the waiters never parked");
            usurp::sleep(Duration::from_millis(1));
        }
        // Get one worker searching and one asleep: a no-op task spawned
        // into this worker's runnext wakes one idle worker, which searches
        // (its first look at runnext only starts the grace period), takes
        // it, runs it, and searches again before it sleeps.
        let mut setup_seen = false;
        for _ in 0..50 {
            let noop = usurp::spawn(|| ());
            // No switch on this worker from here until the wakes.
            setup_seen = spin_until(Duration::from_millis(20), || {
                let (spinning, idle) = hooks::spinning_and_idle_workers_for_tests(&rt2);
                spinning >= 1 && idle >= 1
            });
            if setup_seen {
                tx1.send(()).unwrap(); // T1 into runnext
                tx2.send(()).unwrap(); // T2 into runnext, T1 to the woken FIFO
                drop(noop);
                break;
            }
            noop.join().unwrap();
            usurp::sleep(Duration::from_millis(2));
        }
        if !setup_seen {
            tx1.send(()).unwrap();
            tx2.send(()).unwrap();
        }
        // This task keeps worker A: the others must run on B and C.
        inside.fetch_add(1, Ordering::SeqCst);
        let all_ran = spin_until(cap, || inside.load(Ordering::SeqCst) >= 3);
        t1.join().unwrap();
        t2.join().unwrap();
        Round { setup_seen, all_ran }
    })
}

fn rounds(n: usize, cap: Duration) -> Vec<Round> {
    let rt = Arc::new(Runtime::builder().workers(3).async_preemption(false).build().unwrap());
    let out = (0..n).map(|_| round(&rt, cap)).collect();
    drop(rt);
    out
}

#[test]
fn spinner_that_finds_work_wakes_an_idle_worker() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let rs = within(180, "spinner wakep", || rounds(5, Duration::from_secs(10)));
    assert!(rs.iter().any(|r| r.setup_seen), "never saw a worker searching beside a sleeping one: {rs:?}");
    for r in &rs {
        assert!(r.all_ran, "a woken task waited on the busy worker while another worker slept: {rs:?}");
    }
}

#[test]
fn negative_control_without_the_spinner_wakep_a_task_waits() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let _off = SwitchOff::new(); // back on when dropped (before `_g`)
    // Up to 5 batches of 20 rounds, until one strands a task: under qemu
    // a single batch caught none about 1 run in 5.
    let (stranded, rs) = within(600, "spinner wakep off", || {
        let mut last = Vec::new();
        for _ in 0..5 {
            let rs = rounds(20, Duration::from_millis(300));
            let stranded = rs.iter().filter(|r| r.setup_seen && !r.all_ran).count();
            if stranded >= 1 {
                return (stranded, rs);
            }
            last = rs;
        }
        (0, last)
    });
    assert!(stranded >= 1, "negative control: without the searcher's wake-up a woken task should wait: {rs:?}");
}

