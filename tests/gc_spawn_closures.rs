//! A concurrent cycle scans the spawn closure of a task that has not
//! started with the task's stack (by the collector's per-task scan, or by
//! whoever resumes the task first), instead of visiting every task in its
//! start stop (10k parked tasks made that stop 0.1 ms long:
//! `stack_scan::closure_of`).
//!
//! Asserted: lists that only the closures of tasks not yet started hold
//! survive collections, with the verifier on, and no stop of a concurrent
//! cycle reports a closure (the control, `set_runtime_roots_in_stop_for_tests(true)`,
//! reports them in the start stop as before); with the closures left out
//! of the per-task scan (`set_closures_with_stacks_for_tests(false)`, the
//! negative control) lists are lost.

use usurp::gc::GcRef;
use usurp_sched::hooks;
use usurp_testsupport::{serial, within};
use usurp_testsupport_gc::seeded::{checksum, expected, make_list};
use usurp_testsupport_gc::{runtime, verified_manual};

const TASKS: usize = 500;

/// One worker: the main task spawns `TASKS` tasks, each capturing a list
/// only its closure holds, and collects three times before it lets them
/// run (they are queued behind it). Returns the closures reported in
/// stops meanwhile and the lists the tasks found intact.
fn closures(in_stop: bool, with_stacks: bool) -> (usize, usize) {
    let _s = serial();
    hooks::set_runtime_roots_in_stop_for_tests(in_stop);
    hooks::set_closures_with_stacks_for_tests(with_stacks);
    let r = within(120, "spawn closures", move || {
        let rt = runtime(1, verified_manual(256 << 20));
        let r = rt.block_on(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|s| {
                    let list: (GcRef, usize) = (make_list(s), s);
                    usurp::spawn(move || checksum(list.0) == Some(expected(list.1)))
                })
                .collect();
            let s0 = hooks::runtime_roots_in_stops_for_tests();
            let heap = usurp::gc::Heap::current().unwrap();
            for _ in 0..3 {
                heap.collect();
            }
            let in_stops = hooks::runtime_roots_in_stops_for_tests() - s0;
            (in_stops, handles.into_iter().map(|h| h.join().unwrap()).filter(|&ok| ok).count())
        });
        if with_stacks {
            let st = rt.stats().gc;
            assert_eq!((st.verify_failures, st.bad_pointers), (0, 0));
        }
        r
    });
    hooks::set_runtime_roots_in_stop_for_tests(false);
    hooks::set_closures_with_stacks_for_tests(true);
    r
}

#[test]
fn closures_of_tasks_not_started_are_scanned_with_their_stacks() {
    let (in_stops, intact) = closures(false, true);
    assert_eq!(in_stops, 0, "a stop of a concurrent cycle reported spawn closures");
    assert_eq!(intact, TASKS, "a list only a closure of a task not started held was freed");
}

#[test]
fn negative_control_the_old_start_stop_reports_the_closures() {
    let (in_stops, intact) = closures(true, true);
    assert!(in_stops >= TASKS, "the stops reported {in_stops} closures: the control shows nothing");
    assert_eq!(intact, TASKS);
}

#[test]
fn negative_control_closures_left_out_of_the_task_scan_lose_lists() {
    let (_, intact) = closures(false, false);
    assert!(intact < TASKS, "every list survived without the closures scanned: the test does not reach the hazard");
}
