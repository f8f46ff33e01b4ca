//! "Tick only when someone waits": after `WorkerSlot::set_contended(false)`
//! a busy worker's quantum timer stops at its next tick (its running task
//! takes no signal after that),
//! and `set_contended(true)` from another thread (work appeared) arms it
//! again, so the task is preempted once its quantum is over. The scheduler
//! wiring is the integrator's (see `set_contended`'s documentation).


use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usurp_testsupport::miniworker::*;
use usurp_preempt::WorkerSlot;

#[test]
fn an_uncontended_worker_takes_no_ticks_and_work_appearing_arms_it() {
    static QUIET_TICKS: AtomicU64 = AtomicU64::new(u64::MAX);
    static QUIET_QUANTA: AtomicU64 = AtomicU64::new(0);
    let quantum = Duration::from_micros(200);
    let slot: &'static WorkerSlot = new_slot();
    let worker = spawn_mini_worker(
        slot,
        RunConfig { quantum, ..RunConfig::default() },
        Box::new(move || {
            let slot = usurp_preempt::current_worker().expect("on a worker");
            assert!(slot.is_contended() && slot.is_armed(), "default: contended, timer armed while busy");
            // Nobody waits: no system call now (lazy); the next tick, at
            // most a quantum away, finds the flag clear, attempts nothing
            // and leaves the timer disarmed.
            let a0 = slot.stats().accepted;
            slot.set_contended(false).unwrap();
            let t = Instant::now();
            while slot.is_armed() {
                assert!(t.elapsed() < Duration::from_secs(60), "the timer stayed armed while uncontended");
                spin(1_000);
            }
            assert_eq!(slot.stats().accepted, a0, "an uncontended tick preempted the task");
            let t = Instant::now();
            while t.elapsed() < quantum * 2 {
                spin(1_000);
            }
            let ticks = slot.stats().ticks;
            let t0 = Instant::now();
            while t0.elapsed() < quantum * 100 {
                spin(10_000);
            }
            QUIET_QUANTA.store((t0.elapsed().as_nanos() / quantum.as_nanos()) as u64, Ordering::SeqCst);
            QUIET_TICKS.store(slot.stats().ticks - ticks, Ordering::SeqCst);
            // Now another thread says work waits: we must be preempted.
            let a = slot.stats().accepted;
            std::thread::spawn(move || slot.set_contended(true).unwrap()).join().unwrap();
            assert!(slot.is_armed());
            let t1 = Instant::now();
            while slot.stats().accepted < a + 3 {
                assert!(t1.elapsed() < Duration::from_secs(60), "never preempted after set_contended(true)");
                spin(10_000);
            }
        }),
        None,
    );
    let parks = worker.join().expect("worker");
    let st = slot.stats();
    eprintln!(
        "ticks while uncontended: {} in {} quanta; {st:?}",
        QUIET_TICKS.load(Ordering::SeqCst),
        QUIET_QUANTA.load(Ordering::SeqCst)
    );
    assert_eq!(QUIET_TICKS.load(Ordering::SeqCst), 0, "an uncontended worker was signalled");
    assert!(QUIET_QUANTA.load(Ordering::SeqCst) >= 100);
    assert!(st.accepted >= 3);
    assert_eq!(parks, st.accepted);
}

#[test]
fn contention_and_idleness_combine() {
    let slot: &'static WorkerSlot = new_slot();
    std::thread::spawn(move || {
        usurp_preempt::register_worker(slot, Duration::from_millis(5)).unwrap();
        // Idle: contention alone arms nothing.
        slot.set_contended(false).unwrap();
        slot.set_contended(true).unwrap();
        assert!(!slot.is_armed());
        // Busy but uncontended: not armed (the flag was cleared while
        // idle, so nothing was armed to begin with).
        slot.set_contended(false).unwrap();
        slot.set_idle(false).unwrap();
        assert!(!slot.is_armed());
        // Contended while busy: armed; idle again: disarmed.
        slot.set_contended(true).unwrap();
        assert!(slot.is_armed());
        slot.set_idle(true).unwrap();
        assert!(!slot.is_armed());
        // Busy again, still contended: armed as before the API existed.
        slot.set_idle(false).unwrap();
        assert!(slot.is_armed());
        slot.set_idle(true).unwrap();
        usurp_preempt::unregister_worker().unwrap();
    })
    .join()
    .unwrap();
}
