//! Issue 11, "preempted loops migrate", the other half: a `preemptible!`
//! loop that touches a thread-local must stay on its OS thread across
//! asynchronous preemptions (its code may hold the thread-local's address in
//! a register), even while another worker runs out of work and steals.
//! The runtime finds the TLS access when it decodes the preemptible code,
//! and pins such tasks. Negative control: with pinning switched off
//! (`set_pin_policy_for_tests(Some(false))`) loops end on another thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::{preemptible, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{sample_placement, within};

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

preemptible! {
    /// A call-free loop that bumps a thread-local until `stop` is set;
    /// returns the address of the thread-local it started with.
    fn tls_loop(stop: &AtomicBool) -> usize {
        let start = COUNT.with(|c| c as *const Cell<u64> as usize);
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } == 0 {
            COUNT.with(|c| c.set(c.get().wrapping_add(1)));
        }
        start
    }
}

const LOOPS: usize = 4;

/// Same scenario as sched_migrate.rs; returns how many loops ended on
/// another thread than they started on.
fn loops_that_moved(pin_policy: Option<bool>) -> usize {
    hooks::set_pin_policy_for_tests(pin_policy);
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    assert_eq!(hooks::preemptible_code_touches_tls(), Some(true), "the TLS access in tls_loop was not found");
    let stops: Arc<Vec<AtomicBool>> = Arc::new((0..LOOPS).map(|_| AtomicBool::new(false)).collect());
    let addrs: Arc<Vec<AtomicUsize>> = Arc::new((0..LOOPS).map(|_| AtomicUsize::new(0)).collect());
    let mut hs = Vec::new();
    for k in 0..LOOPS {
        let (stops, addrs, rt2) = (stops.clone(), addrs.clone(), rt.clone());
        hs.push(rt.spawn(move || {
            let w = hooks::current_worker_index().unwrap();
            addrs[k].store(hooks::worker_running_task(&rt2, w), Ordering::SeqCst);
            drop(rt2);
            let start = tls_loop(&stops[k]);
            // Where are we now (a fresh lookup, outside preemptible code)?
            let end = COUNT.with(|c| c as *const Cell<u64> as usize);
            start != end
        }));
    }
    while addrs.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let loop_of = |t: usize| addrs.iter().position(|a| a.load(Ordering::SeqCst) == t);
    let on = sample_placement(2, LOOPS, Duration::from_millis(200), Duration::from_secs(20), |w| {
        loop_of(hooks::worker_running_task(&rt, w))
    });
    // Stop the loops of the less loaded worker: it runs out of work.
    let x = if on[0].len() <= on[1].len() { 0 } else { 1 };
    for &k in on[x].iter() {
        if !on[1 - x].contains(&k) {
            stops[k].store(true, Ordering::SeqCst);
        }
    }
    // Give the idle worker time to steal (it must not take a pinned loop).
    std::thread::sleep(Duration::from_millis(300));
    for s in stops.iter() {
        s.store(true, Ordering::SeqCst);
    }
    let moved = hs.into_iter().map(|h| h.join().unwrap()).filter(|&m| m).count();
    hooks::set_pin_policy_for_tests(None);
    moved
}

#[test]
fn tls_touching_preempted_loops_stay_on_their_thread() {
    let moved = within(60, "TLS loops", || loops_that_moved(None));
    assert_eq!(moved, 0, "{moved} TLS-touching loops resumed on another thread after a preemption");
}
