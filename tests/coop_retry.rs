//! Issue 12 (refused signals): a refused quantum tick sets the task's
//! checkpoint flag, and a cooperative task (ordinary Rust code polling
//! `checkpoint()`) then yields at its next poll. Three changes keep such a
//! task from being signalled for nothing (`signal.rs`, `on_tick`):
//!
//! * the first retry of a refused tick comes a whole quantum later, not a
//!   quarter quantum (which mostly found a cooperative task still between
//!   two polls, and was refused again);
//! * a task known to be cooperative (it last left its worker at a
//!   checkpoint yield a refusal asked for) is retried only after
//!   max(quantum, 1 ms): at a 100 µs quantum, a task polling every 0.6 ms
//!   was refused about four times per poll (retries after 50, 150, 350 µs);
//! * the checkpoint yield starts the next task's quantum (it reads the clock
//!   and re-arms the quantum timer for that quantum's end): before, the next
//!   tick found the worker switched and only started the quantum there, one
//!   more signal per cooperative quantum.
//!
//! Two cooperative tasks share one worker, each polling `checkpoint()` every
//! 0.6 ms of busy work, at a 1 ms and at a 100 µs quantum. The test counts
//! `refusal_retries`, and signals (ticks), per cooperative yield a refusal
//! caused. Negative control through the test-only switch
//! `old_refusal_retry_for_tests(true)` (the old policy): both ratios rise
//! above their bounds. This file holds one test (the switches are
//! process-wide).

use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::preempt::Refusal;
use usurp_sched::hooks;
use usurp::Runtime;
use usurp_testsupport::within;

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
fn two_cooperative_tasks(quantum: Duration, run: Duration) -> Counts {
    let rt = Arc::new(Runtime::builder().workers(1).quantum(quantum).build().unwrap());
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

/// Runs the scenario at `quantum` with the current policy and with the
/// old one (the negative control); returns both counts.
fn both_policies(quantum: Duration) -> (Counts, Counts) {
    let run = Duration::from_millis(400);
    let now = within(120, "two cooperative tasks", move || two_cooperative_tasks(quantum, run));
    usurp_preempt::old_refusal_retry_for_tests(true);
    let old = within(120, "two cooperative tasks (old retry policy)", move || two_cooperative_tasks(quantum, run));
    usurp_preempt::old_refusal_retry_for_tests(false);
    eprintln!("quantum {quantum:?}, {run:?} of work per task:\n  now: {now:?}\n  old: {old:?}");
    eprintln!(
        "  signals per cooperative yield: {:.2} now, {:.2} old; refused signals {} now, {} old",
        now.ticks as f64 / now.yields_after_refusal.max(1) as f64,
        old.ticks as f64 / old.yields_after_refusal.max(1) as f64,
        now.refused,
        old.refused
    );
    // Both runs must have exercised the mechanism: refusals, then yields.
    assert!(now.yields_after_refusal >= 20, "too few cooperative yields: {now:?}");
    assert!(old.yields_after_refusal >= 20, "too few cooperative yields (control): {old:?}");
    assert!(now.refused >= now.yields_after_refusal, "{now:?}");
    (now, old)
}

fn retries_per_yield(c: &Counts) -> f64 {
    c.retries as f64 / c.yields_after_refusal.max(1) as f64
}

fn signals_per_yield(c: &Counts) -> f64 {
    c.ticks as f64 / c.yields_after_refusal.max(1) as f64
}

#[test]
fn cooperative_tasks_are_not_signalled_again_before_they_poll() {
    // Tick whenever the worker is busy (two tasks on one worker are
    // contended anyway; this rules the contention heuristics out).
    hooks::set_tick_policy_for_tests(Some(true));
    let (now, old) = both_policies(Duration::from_millis(1));
    let (now_short, old_short) = both_policies(Duration::from_micros(100));
    hooks::set_tick_policy_for_tests(None);
    // 1 ms quantum: expected ~0 (a retry only if the thread lost its CPU for
    // >= 0.4 ms between a refusal and the task's next poll). Negative
    // control: ~0.6 (the retry 0.25 ms after the refusal finds the task
    // between polls unless it polled within 0.25 ms).
    assert!(retries_per_yield(&now) <= 0.2, "a cooperative task was re-signalled before it polled: {now:?}");
    assert!(retries_per_yield(&old) >= 0.3, "negative control: quarter-quantum retries should find tasks between polls: {old:?}");
    // 100 µs quantum, polls every 0.6 ms: expected ~0 (only the first
    // refusal of each task, not yet known to be cooperative, is retried
    // after 100 and 300 µs). Negative control: ~3 (50, 150, 350 µs).
    assert!(retries_per_yield(&now_short) <= 0.5, "a known-cooperative task was re-signalled before it polled: {now_short:?}");
    assert!(retries_per_yield(&old_short) >= 1.0, "negative control: retries at 50, 150, 350 us should find tasks between polls: {old_short:?}");
    // Signals per cooperative yield: expected ~1 (the refused tick; the
    // yield starts the next task's quantum and re-arms the timer for its
    // end, so no tick only to start it). Negative control: >= 2 (the
    // refused tick and a later one that only starts the next quantum, plus
    // the retries).
    for c in [&now, &now_short] {
        assert!(signals_per_yield(c) <= 1.6, "more than one signal per cooperative quantum: {c:?}");
    }
    for c in [&old, &old_short] {
        assert!(signals_per_yield(c) >= 1.8, "negative control: expected two signals or more per cooperative quantum: {c:?}");
    }
}
