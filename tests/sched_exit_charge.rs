//! The exit charge (issue 11 switch costs): a task whose body returned a
//! value without a destructor charges its CPU time at its end, and its exit
//! switch reads no cycle counter (`Task::exit_clocked`); the task that runs
//! next on the worker is charged from that point. Checked on one worker
//! without async preemption: a child spins 60 ms while its parent yields
//! until the child has finished (the child's exit switches to the parent);
//! the child's final CPU time covers the spin, and the parent's CPU time
//! across the wait stays far below it.
//!
//! Negative control (`hooks::set_exit_charge_for_tests(false)`): the exit
//! switch still skips its read but the end charge is not made, so the parent
//! is charged from the child's switch-in, spin included; the same check must
//! see the parent's CPU time jump by the spin.
use std::time::{Duration, Instant};
use usurp::{task, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::within;

const SPIN: Duration = Duration::from_millis(60);

/// (the parent's CPU time across the child's run, the child's final CPU
/// time).
fn parent_and_child_cpu() -> (Duration, Duration) {
    let rt = Runtime::builder().workers(1).async_preemption(false).build().unwrap();
    rt.block_on(|| {
        let before = task::current().unwrap().cpu_time;
        let h = usurp::spawn(|| {
            let t = Instant::now();
            while t.elapsed() < SPIN {
                std::hint::spin_loop();
            }
        });
        // The child runs when the parent yields, to its end (nothing
        // preempts it); its exit switches back here.
        while !h.is_finished() {
            usurp::yield_now();
        }
        let after = task::current().unwrap().cpu_time;
        let child = h.cpu_time();
        h.join().unwrap();
        (after - before, child)
    })
}

#[test]
fn exit_charge_counts_the_child_not_its_successor() {
    within(120, "exit charge", || {
        let (parent, child) = parent_and_child_cpu();
        eprintln!("with the exit charge: parent {parent:?}, child {child:?}");
        assert!(child >= SPIN * 3 / 4, "the child's final CPU time {child:?} misses its {SPIN:?} spin");
        assert!(parent < SPIN / 2, "the parent was charged {parent:?} across a {SPIN:?} child run");

        hooks::set_exit_charge_for_tests(false);
        let (parent, child) = parent_and_child_cpu();
        hooks::set_exit_charge_for_tests(true);
        eprintln!("negative control (no end charge): parent {parent:?}, child {child:?}");
        assert!(
            parent >= SPIN * 3 / 4,
            "without the end charge the parent should carry the child's spin, but it was charged {parent:?}"
        );
    });
}
