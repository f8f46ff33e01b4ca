//! Issue 11, "preempted loops migrate", per function: a task preempted in a
//! `preemptible!` function that touches a thread-local (or called from one
//! that does) stays on its OS thread across asynchronous preemptions (its
//! code may hold the thread-local's address in a register), even while
//! another worker runs out of work and steals; a task preempted in a
//! TLS-free function of the same section migrates. The runtime decodes each
//! preemptible function once (`usurp_preempt::fn_table`) and walks the
//! preempted task's frame-pointer chain for preemptible callers.
//!
//! Scenario (as sched_migrate.rs): 4 loops on 2 workers, quantum 1 ms; the
//! loops seen on the less loaded worker are stopped, so that it runs out of
//! work while the other still has loops queued. A loop that later runs
//! there has migrated (and is stopped there). The hazard is seen two ways:
//! a sample finds a TLS loop running on another worker (thread) than the
//! one it took its thread-local's address on, or the address its code used
//! (returned by the loop) differs from a fresh lookup after the loop,
//! outside preemptible code.
//!
//! Negative controls (process-wide switches, restored by drop guards; the
//! tests of this file run one at a time): with pinning off
//! (`set_pin_policy_for_tests(Some(false))`) a TLS loop migrates and the
//! hazard shows; deciding by the whole section (`set_pin_by_section_for_
//! tests`, the rule before functions were told apart) keeps the TLS-free
//! loops from migrating; ignoring callers (`set_pin_without_callers_for_
//! tests`) lets a TLS-free callee of a TLS-touching function migrate and
//! the caller's cached address go stale.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{preemptible, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{sample_placement, serial, within};

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

    /// A call-free loop that touches no thread-local.
    fn plain_loop(stop: &AtomicBool) -> u64 {
        let mut x = 0u64;
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } == 0 {
            x = x.wrapping_add(1);
        }
        x
    }

    /// Takes a thread-local's address, keeps it across a call of the
    /// TLS-free `plain_loop` (where preemptions land), uses it afterwards;
    /// returns the address it used.
    fn tls_caller(stop: &AtomicBool) -> usize {
        let c = COUNT.with(|c| c as *const Cell<u64>);
        let n = plain_loop(stop);
        // SAFETY: `c` points to this thread's COUNT, if the task is still
        // on the thread that computed it (what the test checks; the write
        // is a plain u64 store either way, into a live thread's TLS block).
        unsafe { (*c).set((*c).get().wrapping_add(n)) };
        c as usize
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Body {
    Tls,
    Plain,
    TlsCaller,
}

const LOOPS: usize = 4;

struct Outcome {
    /// A loop was seen running on a worker it had not run on before.
    migrated: bool,
    /// Loops whose code used another thread's thread-local at the end.
    wrong_thread: usize,
    /// Samples that saw a loop holding a thread-local address (`Tls`,
    /// `TlsCaller`) run on another worker (thread) than the one it took the
    /// address on.
    seen_elsewhere: usize,
    /// Accepted asynchronous preemptions during the run (all workers).
    preemptions: u64,
}

/// One run of the scenario with `body`; after stopping the less loaded
/// worker's loops, waits up to `watch` for a loop to arrive there.
fn scenario(body: Body, watch: Duration) -> Outcome {
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    // The per-function table, as the runtime decoded it.
    assert_eq!(hooks::preemptible_fn_touches_tls(tls_loop as fn(&AtomicBool) -> usize as usize), Some(true));
    assert_eq!(hooks::preemptible_fn_touches_tls(tls_caller as fn(&AtomicBool) -> usize as usize), Some(true));
    assert_eq!(hooks::preemptible_fn_touches_tls(plain_loop as fn(&AtomicBool) -> u64 as usize), Some(false));
    assert_eq!(hooks::preemptible_code_touches_tls(), Some(true));
    let accepted0 = usurp::preempt::stats().accepted;
    let stops: Arc<Vec<AtomicBool>> = Arc::new((0..LOOPS).map(|_| AtomicBool::new(false)).collect());
    let addrs: Arc<Vec<AtomicUsize>> = Arc::new((0..LOOPS).map(|_| AtomicUsize::new(0)).collect());
    let homes: Arc<Vec<AtomicUsize>> = Arc::new((0..LOOPS).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let mut hs = Vec::new();
    for k in 0..LOOPS {
        let (stops, addrs, homes, rt2) = (stops.clone(), addrs.clone(), homes.clone(), rt.clone());
        hs.push(rt.spawn(move || {
            let w = hooks::current_worker_index().unwrap();
            // The worker (so the thread: no `blocking` here) whose
            // thread-local the loop's code will hold.
            homes[k].store(w, Ordering::SeqCst);
            addrs[k].store(hooks::worker_running_task(&rt2, w), Ordering::SeqCst);
            drop(rt2);
            let used = match body {
                Body::Tls => tls_loop(&stops[k]),
                Body::TlsCaller => tls_caller(&stops[k]),
                Body::Plain => {
                    std::hint::black_box(plain_loop(&stops[k]));
                    return false;
                }
            };
            // Where are we now (a fresh lookup, outside preemptible code)?
            used != COUNT.with(|c| c as *const Cell<u64> as usize)
        }));
    }
    while addrs.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen_elsewhere = std::cell::Cell::new(0usize);
    // Which loop runs on worker `w` (and is it away from its home?).
    let loop_on = |w: usize| {
        let t = hooks::worker_running_task(&rt, w);
        let k = addrs.iter().position(|a| a.load(Ordering::SeqCst) == t)?;
        if body != Body::Plain && homes[k].load(Ordering::SeqCst) != w {
            seen_elsewhere.set(seen_elsewhere.get() + 1);
        }
        Some(k)
    };
    let on = sample_placement(2, LOOPS, Duration::from_millis(200), Duration::from_secs(20), loop_on);
    // A loop seen on both workers has migrated already.
    let seen_on_both = on[0].intersection(&on[1]).count() > 0;
    // Stop the loops of the less loaded worker `x`: it runs out of work.
    let x = if on[0].len() <= on[1].len() { 0 } else { 1 };
    let keep: Vec<usize> = (0..LOOPS).filter(|k| !on[x].contains(k)).collect();
    for &k in on[x].iter() {
        if !on[1 - x].contains(&k) {
            stops[k].store(true, Ordering::SeqCst);
        }
    }
    // Does one of the remaining loops now run on `x`? Stop it there at once:
    // it returns on `x`'s thread, where a stale cached address shows.
    let mut migrated = false;
    let t0 = Instant::now();
    while !migrated && t0.elapsed() < watch {
        if let Some(k) = loop_on(x) {
            if keep.contains(&k) {
                stops[k].store(true, Ordering::SeqCst);
                migrated = true;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for s in stops.iter() {
        s.store(true, Ordering::SeqCst);
    }
    let wrong_thread = hs.into_iter().map(|h| h.join().unwrap()).filter(|&m| m).count();
    Outcome { migrated: migrated || seen_on_both, wrong_thread, seen_elsewhere: seen_elsewhere.get(), preemptions: usurp::preempt::stats().accepted - accepted0 }
}

/// Restores the default pinning rule when dropped (also on a failed test).
struct DefaultPinning;
impl Drop for DefaultPinning {
    fn drop(&mut self) {
        hooks::set_pin_policy_for_tests(None);
    }
}

#[test]
fn tls_touching_preempted_loops_stay_on_their_thread() {
    let _s = serial();
    let o = within(60, "TLS loops", || scenario(Body::Tls, Duration::from_millis(500)));
    assert_eq!(o.wrong_thread, 0, "{} TLS-touching loops resumed on another thread after a preemption", o.wrong_thread);
    assert!(!o.migrated, "a TLS-touching loop ran on another worker");
    assert_eq!(o.seen_elsewhere, 0, "a TLS-touching loop was seen away from its thread-local's thread");
    assert!(o.preemptions >= 20, "only {} preemptions: the loops were hardly preempted", o.preemptions);
}

#[test]
fn a_tls_callers_callee_stays_on_its_thread() {
    let _s = serial();
    let o = within(60, "TLS caller", || scenario(Body::TlsCaller, Duration::from_millis(500)));
    assert_eq!(o.wrong_thread, 0, "{} callers used another thread's thread-local after a preemption", o.wrong_thread);
    assert!(!o.migrated, "a callee of a TLS-touching function ran on another worker");
    assert_eq!(o.seen_elsewhere, 0, "a callee of a TLS-touching function was seen away from its caller's thread");
    assert!(o.preemptions >= 20, "only {} preemptions", o.preemptions);
}

#[test]
fn tls_free_loops_migrate_beside_tls_touching_functions() {
    let _s = serial();
    let o = within(60, "plain loops", || scenario(Body::Plain, Duration::from_secs(5)));
    assert!(o.migrated, "no TLS-free preempted loop moved to the worker that ran out of work");
}

/// Runs the scenario up to three times (a migrated loop may be preempted
/// and rotate back to its first thread before it sees its stop flag) until
/// the hazard shows.
fn hazard_shows(body: Body) -> Outcome {
    let mut o = Outcome { migrated: false, wrong_thread: 0, seen_elsewhere: 0, preemptions: 0 };
    for _ in 0..3 {
        o = within(60, "control", move || scenario(body, Duration::from_secs(5)));
        if o.migrated && o.wrong_thread + o.seen_elsewhere > 0 {
            break;
        }
    }
    o
}

#[test]
fn control_without_pinning_tls_loops_use_another_threads_tls() {
    let _s = serial();
    let _g = DefaultPinning;
    hooks::set_pin_policy_for_tests(Some(false));
    let o = hazard_shows(Body::Tls);
    assert!(o.migrated, "control: with pinning off no TLS loop migrated (the scenario tests nothing)");
    assert!(
        o.wrong_thread + o.seen_elsewhere > 0,
        "control: migrated TLS loops were never seen away from their thread-local's thread (the check is blind)"
    );
}

#[test]
fn control_ignoring_callers_lets_the_callees_task_migrate() {
    let _s = serial();
    let _g = DefaultPinning;
    hooks::set_pin_without_callers_for_tests(true);
    let o = hazard_shows(Body::TlsCaller);
    assert!(o.migrated, "control: judged by plain_loop alone, no task migrated");
    assert!(o.wrong_thread + o.seen_elsewhere > 0, "control: the caller's cached TLS address never went stale");
}

#[test]
fn control_pinning_by_section_keeps_tls_free_loops_in_place() {
    let _s = serial();
    let _g = DefaultPinning;
    hooks::set_pin_by_section_for_tests(true);
    let o = within(60, "plain loops, by section", || scenario(Body::Plain, Duration::from_secs(1)));
    assert!(!o.migrated, "control: pinned by the section's TLS use, a TLS-free loop still migrated");
    assert!(o.preemptions >= 20, "only {} preemptions", o.preemptions);
}
