//! Issue 11, "preempted loops migrate": an asynchronously preempted task is
//! pinned to its worker's thread only if its code may hold a thread-local
//! address (the runtime decodes each `preemptible!` function once). The loops
//! here touch no TLS, so a worker that runs out of work takes a preempted
//! loop from the other worker's queue. Before, every preempted task was
//! pinned until its next cooperative switch, which a call-free loop never
//! makes: a worker whose loops finished idled while the other still had
//! several (the 30-loop program used 1.5 of 2 cores).
//!
//! (Pinning is decided per function: sched_migrate_tls.rs runs the same
//! scenario beside TLS-touching functions.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{preemptible, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{sample_placement, within};

preemptible! {
    /// A call-free loop until `stop` is set.
    fn spin_until(stop: &AtomicBool) -> u64 {
        let mut x = 0u64;
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } == 0 {
            x = x.wrapping_add(1);
        }
        x
    }
}

const LOOPS: usize = 4;

/// Runs 4 loops on 2 workers, stops those on the less loaded worker, and
/// reports whether a loop of the other worker then ran on it.
fn a_loop_migrates() -> bool {
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    let f = spin_until as fn(&AtomicBool) -> u64 as usize;
    assert_eq!(hooks::preemptible_fn_touches_tls(f), Some(false), "spin_until touches TLS");
    let stops: Arc<Vec<AtomicBool>> = Arc::new((0..LOOPS).map(|_| AtomicBool::new(false)).collect());
    let addrs: Arc<Vec<AtomicUsize>> = Arc::new((0..LOOPS).map(|_| AtomicUsize::new(0)).collect());
    let mut hs = Vec::new();
    for k in 0..LOOPS {
        let (stops, addrs, rt2) = (stops.clone(), addrs.clone(), rt.clone());
        hs.push(rt.spawn(move || {
            // Our task's address, as the scheduler's hook reports it.
            let w = hooks::current_worker_index().unwrap();
            addrs[k].store(hooks::worker_running_task(&rt2, w), Ordering::SeqCst);
            drop(rt2);
            spin_until(&stops[k])
        }));
    }
    while addrs.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let loop_of = |t: usize| addrs.iter().position(|a| a.load(Ordering::SeqCst) == t);
    // Where is each loop? Sample the workers for a while.
    let on = sample_placement(2, LOOPS, Duration::from_millis(200), Duration::from_secs(20), |w| {
        loop_of(hooks::worker_running_task(&rt, w))
    });
    // Preempted loops that wait go through the global queue and rotate over
    // both workers (`tests/sched_loop_balance.rs`): a loop seen on both has
    // migrated already (each ran on one thread, then on the other).
    let moved = on[0].intersection(&on[1]).count() > 0;
    // Else stop the loops seen on the less loaded worker `x` (and only there):
    // `x` runs out of work while the other worker still has loops queued.
    let x = if on[0].len() <= on[1].len() { 0 } else { 1 };
    let keep: Vec<usize> = (0..LOOPS).filter(|k| !on[x].contains(k)).collect();
    for &k in on[x].iter() {
        if !on[1 - x].contains(&k) {
            stops[k].store(true, Ordering::SeqCst);
        }
    }
    // Does one of the remaining loops now run on `x`?
    let mut migrated = moved;
    let t0 = Instant::now();
    while !migrated && t0.elapsed() < Duration::from_secs(5) {
        if let Some(k) = loop_of(hooks::worker_running_task(&rt, x)) {
            migrated = keep.contains(&k);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for s in stops.iter() {
        s.store(true, Ordering::SeqCst);
    }
    for h in hs {
        h.join().unwrap();
    }
    migrated
}

#[test]
fn preempted_loops_migrate_to_an_idle_worker() {
    assert!(within(60, "loop migration", a_loop_migrates), "no preempted loop moved to the worker that ran out of work");
}
