//! Issue 12 (refused signals): a refused quantum tick sets the task's
//! checkpoint flag, and a cooperative task (ordinary Rust code polling
//! `checkpoint()`) then yields at its next poll. The retry of a refused tick
//! used to come a quarter quantum later: a cooperative task still between two
//! polls was signalled and refused again, for nothing (a third of a stress
//! run's refused signals). The first retry now comes a whole quantum later
//! (`signal.rs`, `next_backoff`): the task has yielded by then, and the tick
//! only starts the next task's quantum.
//!
//! Two cooperative tasks share one worker (1 ms quantum), each polling
//! `checkpoint()` every 0.6 ms of busy work: a quarter-quantum retry finds
//! the task between polls more than half the time; a whole-quantum retry
//! only when the thread lost its CPU for 0.4 ms or more (a loaded machine).
//! The test counts `refusal_retries` per cooperative yield caused by a
//! refusal. Negative control through the test-only switch
//! `short_first_refusal_retry_for_tests(true)` (the old first retry): the
//! ratio rises above the bound. This file holds one test (the switches are
//! process-wide).

mod sched_util;

use sched_util::within;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::preempt::Refusal;
use usurp::sched::hooks;
use usurp::Runtime;

const QUANTUM: Duration = Duration::from_millis(1);
const POLL_EVERY: Duration = Duration::from_micros(600);

/// Busy work outside preemptible code until `d` has passed.
#[inline(never)]
fn busy_for(d: Duration) {
    let t0 = Instant::now();
    let mut x = 1u64;
    while t0.elapsed() < d {
        for i in 0..64 {
            x = std::hint::black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i));
        }
    }
}

#[derive(Debug)]
struct Counts {
    yields_after_refusal: u64,
    retries: u64,
    refused: u64,
    ticks: u64,
}

/// Runs two cooperative tasks on one worker for `run`; returns the counter
/// deltas over the run.
fn two_cooperative_tasks(run: Duration) -> Counts {
    let rt = Arc::new(Runtime::builder().workers(1).quantum(QUANTUM).build().unwrap());
    let before = rt.stats().preempt;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            rt.spawn(move || {
                let t0 = Instant::now();
                while t0.elapsed() < run {
                    busy_for(POLL_EVERY);
                    usurp::checkpoint();
                }
            })
        })
        .collect();
    for t in tasks {
        t.join().unwrap();
    }
    let after = rt.stats().preempt;
    Counts {
        yields_after_refusal: after.yields_after_refusal - before.yields_after_refusal,
        retries: after.refusal_retries - before.refusal_retries,
        refused: after.refused(Refusal::NotPreemptibleCode) - before.refused(Refusal::NotPreemptibleCode),
        ticks: after.ticks - before.ticks,
    }
}

#[test]
fn cooperative_tasks_are_not_signalled_again_before_they_poll() {
    // Tick whenever the worker is busy (two tasks on one worker are
    // contended anyway; this rules the contention heuristics out).
    hooks::set_tick_policy_for_tests(Some(true));
    let run = Duration::from_millis(400);
    let now = within(120, "two cooperative tasks", move || two_cooperative_tasks(run));
    usurp::preempt::short_first_refusal_retry_for_tests(true);
    let old = within(120, "two cooperative tasks (quarter-quantum first retry)", move || two_cooperative_tasks(run));
    usurp::preempt::short_first_refusal_retry_for_tests(false);
    hooks::set_tick_policy_for_tests(None);
    eprintln!("whole-quantum first retry: {now:?}\nquarter-quantum first retry: {old:?}");
    eprintln!(
        "signals per cooperative yield: {:.2} vs {:.2}; refused signals {} vs {} in the same {run:?} of work",
        now.ticks as f64 / now.yields_after_refusal.max(1) as f64,
        old.ticks as f64 / old.yields_after_refusal.max(1) as f64,
        now.refused,
        old.refused
    );
    let ratio = |c: &Counts| c.retries as f64 / c.yields_after_refusal.max(1) as f64;
    // Both runs must have exercised the mechanism: refusals, then yields.
    assert!(now.yields_after_refusal >= 20, "too few cooperative yields: {now:?}");
    assert!(old.yields_after_refusal >= 20, "too few cooperative yields (control): {old:?}");
    assert!(now.refused >= now.yields_after_refusal, "{now:?}");
    // Expected ~0 (a retry only if the thread lost its CPU for >= 0.4 ms
    // between a refusal and the task's next poll).
    assert!(ratio(&now) <= 0.2, "a cooperative task was re-signalled before it polled: {now:?}");
    // Negative control: expected ~0.6 (the retry 0.25 ms after the refusal
    // finds the task between polls unless it polled within 0.25 ms).
    assert!(ratio(&old) >= 0.3, "negative control: quarter-quantum retries should find tasks between polls: {old:?}");
}
