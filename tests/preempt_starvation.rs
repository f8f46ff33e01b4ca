//! Issue 3's starvation promise through the real scheduler: 2 workers, 4
//! tasks spinning in tight loops (no calls) inside `preemptible!` functions,
//! and a 5th task sleeping 1 ms over and over. The sleeper keeps waking (it
//! completes all its sleeps while the loops still spin: the loops only stop
//! when it is done) and every loop makes progress. No timing assertions: a
//! starved sleeper would hang the test (a generous watchdog fails it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::Runtime;
use usurp_testsupport::scale_u64 as scale;
use usurp_testsupport::preemptible::spin;

fn run(quantum: Duration, sleeps: u64) {
    let rt = Runtime::builder().workers(2).quantum(quantum).build().unwrap();
    assert!(rt.async_preemption() || std::env::var("USURP_DEBUG").unwrap_or_default().contains("asyncpreemptoff=1"));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let before = rt.stats().preempt.accepted;
    let loops: Vec<_> = (0..4)
        .map(|i| {
            let (stop, counts) = (stop.clone(), counts.clone());
            rt.spawn(move || spin(&stop, &counts[i]))
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let sleeper = rt.spawn(move || {
        // At least `sleeps` wake-ups, and at least 100 quanta of run time so
        // that every loop gets its turns (shares are compared below).
        let t0 = std::time::Instant::now();
        let mut woke = 0u64;
        while woke < sleeps || t0.elapsed() < quantum * 100 {
            usurp::sleep(Duration::from_millis(1));
            woke += 1;
        }
        stop2.store(true, Ordering::SeqCst);
        let _ = tx.send(woke);
        woke
    });
    // Watchdog against a hang (not a timing assertion: minutes of slack).
    let woke = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(w) => w,
        Err(_) => {
            stop.store(true, Ordering::SeqCst);
            panic!("the sleeper was starved: it did not finish {sleeps} sleeps");
        }
    };
    assert!(woke >= sleeps);
    assert_eq!(sleeper.join().unwrap(), woke);
    for l in loops {
        l.join().unwrap();
    }
    let c: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: u64 = c.iter().sum();
    for (i, &n) in c.iter().enumerate() {
        assert!(n > 0, "loop {i} made no progress: {c:?}");
        // Each loop's share is at least 1/8 of its fair share (1/4).
        assert!(n * 32 >= total, "loop {i} was starved: {c:?}");
    }
    let accepted = rt.stats().preempt.accepted - before;
    assert!(accepted > 0, "no asynchronous preemption happened");
}

#[test]
fn sleeper_and_tight_loops_all_progress_at_1ms_quantum() {
    run(Duration::from_millis(1), scale(300));
}

#[test]
fn sleeper_and_tight_loops_all_progress_at_default_quantum() {
    run(usurp::DEFAULT_QUANTUM, scale(40));
}
