//! The owner's take from `runnext` without a locked instruction (issue 11,
//! workers(2) switch costs): the owner loads the task, stores null and
//! checks a steal lock and count; a thief takes the lock, runs
//! `membarrier` and only then CASes the slot (`worker/policy.rs`,
//! `take_runnext`). The race is made likely with a test-only delay between
//! the owner's load and store (500 µs: the idle worker's grace period for
//! a `runnext` task is 5 µs, so it steals the task during the delay).
//! Checked: with the check, every spawned task runs exactly once and some
//! takes did lose their task to the thief (the race happened and was
//! resolved). Negative control (`hooks::set_runnext_take_for_tests` with
//! `unchecked`, in a child process): without the check the owner runs a
//! task the thief also took, and the child fails (a task runs twice: a
//! wrong count, a crash, or its watchdog). Where `membarrier` is not
//! available (the take then uses the locked swap) the tests say so and
//! check nothing more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usurp::{spawn, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{run_child, serial, within};

const DELAY_NS: u64 = 500_000;
const CHILD_VAR: &str = "USURP_RUNNEXT_TAKE_UNCHECKED_CHILD";

/// `n` rounds of spawn + join from a task (the child lands in `runnext`,
/// the idle worker is woken); returns how many times the children ran.
fn spawn_join_rounds(rt: &Runtime, n: usize) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    rt.block_on(move || {
        for _ in 0..n {
            let r = r.clone();
            spawn(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .join()
            .unwrap();
        }
    });
    runs.load(Ordering::SeqCst)
}

fn runtime() -> Option<Runtime> {
    let rt = Runtime::builder().workers(2).build().unwrap();
    if !hooks::runnext_take_for_tests(&rt).0 {
        eprintln!("skipped: membarrier is not available here; runnext takes use the locked swap");
        return None;
    }
    Some(rt)
}

#[test]
fn a_plain_take_gives_up_a_task_the_thief_took() {
    let _g = serial();
    let Some(rt) = runtime() else { return };
    let lost_before = hooks::runnext_take_for_tests(&rt).1;
    hooks::set_runnext_take_for_tests(false, false, DELAY_NS);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(300, "spawn+join with a delayed runnext take", move || {
            let n = 200;
            let runs = spawn_join_rounds(&rt, n);
            (n, runs, hooks::runnext_take_for_tests(&rt).1)
        })
    }));
    hooks::set_runnext_take_for_tests(false, false, 0);
    let (n, runs, lost_after) = r.unwrap_or_else(|p| std::panic::resume_unwind(p));
    eprintln!("{n} spawn+join rounds: children ran {runs} times; {} takes lost their task to the thief", lost_after - lost_before);
    assert_eq!(runs, n, "a child ran more or less than once");
    assert!(lost_after > lost_before, "the thief never stole during a delayed take: the race was not exercised");
}

#[test]
fn negative_control_an_unchecked_plain_take_runs_a_stolen_task_twice() {
    if std::env::var_os(CHILD_VAR).is_some() {
        // The child: no check against thieves.
        let Some(rt) = runtime() else { return };
        hooks::set_runnext_take_for_tests(false, true, DELAY_NS);
        let runs = within(60, "unchecked runnext take", move || spawn_join_rounds(&rt, 200));
        assert_eq!(runs, 200, "a child ran more or less than once");
        return;
    }
    let _g = serial();
    if runtime().is_none() {
        return;
    }
    let (out, _) = run_child("negative_control_an_unchecked_plain_take_runs_a_stolen_task_twice", CHILD_VAR);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("child: {:?}, stderr tail: {}", out.status, &stderr[stderr.len().saturating_sub(600)..]);
    assert!(
        !out.status.success(),
        "without the check against thieves the child still ran every task exactly once"
    );
}
