//! The stopper's spinning wait (issue 9 item 1; `crates/sched/src/stw.rs`,
//! `SPIN_FOR`): for the first 60 µs of a stop the stopper re-checks the
//! workers with a CPU pause between reads instead of sleeping on its condvar, so
//! it sees the last worker park at once instead of after an OS wake-up
//! (20-60 µs on the 2-vCPU VM where it was measured with
//! `USURP_DEBUG=stoptrace=1`). Asserted through the stopper's counts
//! (`StwStats::stops_within_spin`, `stopper_sleeps`), not through
//! timing: stops of two workers each running a call-free `preemptible!`
//! loop (stopped by async preemption, tens of microseconds) complete
//! within the spin; with the spin off (the negative control,
//! `hooks::set_stopper_spin_for_tests(false)`) none does, and the
//! stopper sleeps at least once in every stop (none finds the loops
//! stopped at its first check).
//!
//! The spin-on bound is loose on purpose (some stop within the spin, not
//! all): a worker the OS keeps off its CPU (a loaded machine, qemu) can
//! hold a stop past the spin, which then sleeps as before (at load 6 on
//! 2 vCPUs some stops took milliseconds that way). The test gives the spin
//! a 2 ms budget and ends it as descheduled only after a 1 ms clock gap
//! (`hooks::set_stopper_spin_budget_for_tests`): the mechanism is under
//! test, not the production figures (60 µs and 15 µs, which a stop under
//! qemu or on a loaded machine does not fit in: at load 4, 0-16 of 40
//! stops ended within them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::Runtime;
use usurp_testsupport::within;


usurp::preemptible! {
    fn spin(stop: &AtomicBool) -> u64 {
        let mut x = 0u64;
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } == 0 {
            x = x.wrapping_add(1);
        }
        x
    }
}

/// `(stops, stopper sleeps, stops within the spin)` of `n` stops from a plain thread while two
/// loops keep both workers busy.
fn stops(spin_on: bool, n: u64) -> (u64, u64, u64) {
    within(120, "stops of spinning loops", move || {
        usurp_sched::hooks::set_stopper_spin_for_tests(spin_on);
        usurp_sched::hooks::set_stopper_spin_budget_for_tests(2000, 1000);
        let rt = Runtime::builder().workers(2).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let loops: Vec<_> = (0..2)
            .map(|_| {
                let s = stop.clone();
                rt.spawn(move || spin(&s))
            })
            .collect();
        // Both loops on a CPU before the first stop.
        std::thread::sleep(Duration::from_millis(20));
        let before = rt.stats().stw;
        for _ in 0..n {
            rt.stop_the_world();
            rt.start_the_world();
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = rt.stats().stw;
        stop.store(true, Ordering::SeqCst);
        for h in loops {
            h.join().unwrap();
        }
        usurp_sched::hooks::set_stopper_spin_for_tests(true);
        usurp_sched::hooks::set_stopper_spin_budget_for_tests(0, 0);
        (
            after.stops - before.stops,
            after.stopper_sleeps - before.stopper_sleeps,
            after.stops_within_spin - before.stops_within_spin,
        )
    })
}

#[test]
fn a_stop_of_preemptible_loops_completes_within_the_stoppers_spin() {
    let _g = usurp_testsupport::serial();
    let (stops, sleeps, spun) = stops(true, 40);
    eprintln!("spin on: {stops} stops, {spun} within the spin, {sleeps} stopper sleeps");
    assert_eq!(stops, 40);
    assert!(spun > 0, "no stop completed within the stopper's spin ({sleeps} sleeps in {stops} stops)");
}

#[test]
fn negative_control_without_the_spin_every_stop_sleeps() {
    let _g = usurp_testsupport::serial();
    let (stops, sleeps, spun) = stops(false, 40);
    eprintln!("spin off: {stops} stops, {spun} within the spin, {sleeps} stopper sleeps");
    assert_eq!(stops, 40);
    assert!(sleeps >= stops, "without the spin the stopper slept only {sleeps} times in {stops} stops");
}
