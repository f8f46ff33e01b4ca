//! Issue 12 (refused signals): a task that stops the world runs in a
//! no-preemption section until it restarts it, so every quantum tick it took
//! meanwhile was refused (`no_preempt`), and nothing else could run on the
//! stopped world anyway. Its worker's quantum timer is now disarmed from
//! `stop_the_world` to `start_the_world` (`stw.rs`, `Inner::quiet_slot`).
//! In a stress run (GC pauses and verifier stops hold the world stopped most
//! of the time) these ticks were two thirds of all refused signals.
//!
//! The test holds the world stopped from a task, busy (20 ms per stop), with
//! the worker marked contended at every pick (the test-only tick policy
//! "always"), so that its quantum timer is armed when it stops; it counts
//! the `no_preempt` refusals. Negative control through the test-only switch
//! `hooks::set_stopper_ticks_for_tests(true)` (the old behaviour): the
//! stopper's ticks go on and are refused every quantum.
//! Both switches are process-wide: this file holds one test.

use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::preempt::Refusal;
use usurp_sched::hooks;
use usurp::Runtime;
use usurp_testsupport::within;

/// Stops the world `stops` times from a task, staying busy `hold` inside
/// each stop; returns the `no_preempt` refusals counted inside the stops
/// (read right after each stop began and right before it ends).
fn no_preempt_refusals_during_stops(stops: usize, hold: Duration) -> u64 {
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    let r = rt.clone();
    rt.block_on(move || {
        let mut n = 0;
        for _ in 0..stops {
            r.stop_the_world();
            let before = r.stats().preempt.refused(Refusal::NoPreempt);
            let t0 = Instant::now();
            while t0.elapsed() < hold {
                usurp::checkpoint(); // does nothing for the stopper
                std::hint::spin_loop();
            }
            n += r.stats().preempt.refused(Refusal::NoPreempt) - before;
            r.start_the_world();
            usurp::yield_now();
        }
        n
    })
}

#[test]
fn stopper_quantum_does_not_tick_during_its_stop() {
    hooks::set_tick_policy_for_tests(Some(true));
    // Not scaled under emulation: 8 stops of 20 ms.
    let stops = 8;
    let hold = Duration::from_millis(20);
    let quiet = within(120, "stops held by a task", move || no_preempt_refusals_during_stops(stops, hold));
    // At most a tick already in flight when a stop began, per stop.
    assert!(quiet <= stops as u64, "{quiet} no_preempt refusals in {stops} stops of {hold:?} (expected <= {stops})");

    // Negative control: the stopper's quantum keeps ticking (1 ms quantum,
    // retries every 1 ms): about 19 refusals per stop.
    hooks::set_stopper_ticks_for_tests(true);
    let ticking = within(120, "stops held by a task (stopper ticks)", move || {
        no_preempt_refusals_during_stops(stops, hold)
    });
    hooks::set_stopper_ticks_for_tests(false);
    hooks::set_tick_policy_for_tests(None);
    eprintln!("no_preempt refusals in {stops} stops: {quiet} (quiet stopper), {ticking} (stopper ticks)");
    assert!(
        ticking >= 5 * stops as u64,
        "negative control: with the stopper's ticks on, expected >= {} no_preempt refusals, saw {ticking}",
        5 * stops
    );
}
