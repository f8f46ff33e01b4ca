//! The start hand-off (issue 9; `crates/gc/src/pacer.rs`, "Start
//! hand-off"): an allocation that finds the heap at the pacer's trigger
//! asks the background collector for a cycle and waits for its start stop
//! inside `World::blocking` (counted as stopped, at most 1 ms), so that the
//! collector thread takes the allocating worker's CPU rather than a
//! running worker's. Asserted through the process-wide count of the
//! allocations that waited (`usurp_gc::internals::start_handoffs`), never
//! through timing: with the hand-off forced on, allocations waited and the
//! long-lived data survived every cycle; with it off (the negative
//! control) none waited. The default (on only where the workers and the
//! collector outnumber the CPUs) is left to the machine.

use usurp::gc::HeapConfig;
use usurp::Runtime;
use usurp_testsupport_gc::pair::churn_trees;

/// `(allocations that waited at the trigger, cycles)` over two tasks
/// building and dropping trees beside a long-lived one.
fn scenario(handoff: bool) -> (u64, u64) {
    usurp_testsupport::within(300, "the scenario", move || {
        usurp_gc::internals::set_start_handoff_for_tests(Some(handoff));
        let cfg = HeapConfig { max_heap: 1 << 30, gogc: Some(100), min_heap: 4 << 20, ..HeapConfig::default() };
        let rt = Runtime::builder().workers(2).heap_config(cfg).build().unwrap();
        let before = usurp_gc::internals::start_handoffs();
        let cycles0 = rt.heap().stats().cycles;
        // Not scaled down under qemu: fewer rounds make too few cycles.
        let rounds = 200;
        rt.block_on(move || churn_trees(rounds));
        let waited = usurp_gc::internals::start_handoffs() - before;
        let cycles = rt.heap().stats().cycles - cycles0;
        usurp_gc::internals::set_start_handoff_for_tests(None);
        (waited, cycles)
    })
}

#[test]
fn an_allocation_at_the_trigger_waits_for_the_start_stop() {
    let _g = usurp_testsupport::serial();
    let (waited, cycles) = scenario(true);
    eprintln!("hand-off on: {waited} allocations waited for the start stop over {cycles} cycles");
    assert!(cycles >= 3, "only {cycles} cycles: the scenario exercised nothing");
    assert!(waited > 0, "no allocation at the trigger waited for the start stop ({cycles} cycles)");
}

#[test]
fn negative_control_without_the_handoff_no_allocation_waits_at_the_trigger() {
    let _g = usurp_testsupport::serial();
    let (waited, cycles) = scenario(false);
    eprintln!("hand-off off: {waited} allocations waited for the start stop over {cycles} cycles");
    assert!(cycles >= 3, "only {cycles} cycles: the scenario exercised nothing");
    assert_eq!(waited, 0);
}
