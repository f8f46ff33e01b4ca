//! Assists and allocation's sweeps for room leave for a stop (issue 9 item
//! 1; `crates/gc/src/pacer.rs`, "Leaving for a stop"). Both run in a
//! no-preemption section, so a stop request that lands there is refused
//! and sets the worker's checkpoint flag; they test the flag after every
//! mark slice (256 objects) or swept block and leave, and the task parks
//! at the cooperative point after them. Asserted through the process-wide
//! counters of the exits (`usurp_gc::request_exit_counters`), never
//! through timing: with the exit on, assists and sweeps left for requests
//! and never went on past one; with it off (the negative control) none
//! left and they did go on marking and sweeping while a stop waited.
//!
//!
//! A sweep for room that left does not make its refill take a fresh block
//! (the refill gives up, the slow path passes its cooperative point and
//! sweeps on): asserted through `fresh_blocks_after_sweep_exits` (none with
//! the checkpoint on; some with it off, the negative control, which takes a
//! fresh block per exit as the refill used to).
//!
//! Scenario: a slow concurrent marker (a test-only delay per slice) so
//! that allocation assists a lot, the background sweeper off so that
//! allocation sweeps every block, one task allocating garbage beside a
//! long-lived tree, and a plain thread stopping and starting the world in
//! a loop (besides the collector's own stops), until both kinds of event
//! (an exit with the switch on, work past a request with it off) were
//! seen or a bound of rounds ran out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use usurp::gc::HeapConfig;
use usurp::Runtime;
use usurp_testsupport_gc::pair::{count, list, tree};

/// Counter growth over the scenario: `[assist exits, assist slices past a
/// request, sweep exits, sweep blocks past a request, fresh blocks taken
/// after a sweep exit]`. `checkpoint`: a refill whose sweep left passes
/// the cooperative point first (the default) or takes a fresh block.
fn scenario(leave: bool, checkpoint: bool) -> [u64; 5] {
    usurp_testsupport::within(300, "the scenario", move || {
        usurp_gc::set_leave_for_requests_for_tests(leave);
        usurp_gc::internals::set_sweep_exit_checkpoint_for_tests(checkpoint);
        usurp_gc::set_mark_delay_for_tests(200);
        let cfg = HeapConfig { max_heap: 2 << 30, gogc: Some(50), min_heap: 4 << 20, ..HeapConfig::default() };
        let rt = Runtime::builder().workers(2).heap_config(cfg).build().unwrap();
        rt.heap().set_background_sweeping(false);
        let counters = || {
            let c = usurp_gc::request_exit_counters();
            [c[0], c[1], c[2], c[3], usurp_gc::internals::fresh_blocks_after_sweep_exits()]
        };
        let before = counters();
        let done = AtomicBool::new(false);
        let grew = std::thread::scope(|s| {
            // A second source of stops (the collector's own are few).
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    rt.stop_the_world();
                    rt.start_the_world();
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            let grew = rt.block_on(move || {
                let live = tree(14);
                let want = |c: [u64; 5]| match (leave, checkpoint) {
                    (true, true) => c[0] > 0 && c[2] >= 3,
                    (true, false) => c[2] >= 3 && c[4] > 0,
                    (false, _) => c[1] > 0 && c[3] > 0,
                };
                let mut grew = [0; 5];
                for _ in 0..20_000 {
                    std::hint::black_box(list(4096));
                    let now = counters();
                    grew = [0, 1, 2, 3, 4].map(|i| now[i] - before[i]);
                    if want(grew) {
                        break;
                    }
                }
                assert_eq!(count(live), (1 << 15) - 1, "the long-lived tree lost nodes");
                grew
            });
            done.store(true, Ordering::Relaxed);
            grew
        });
        usurp_gc::set_mark_delay_for_tests(0);
        usurp_gc::set_leave_for_requests_for_tests(true);
        usurp_gc::internals::set_sweep_exit_checkpoint_for_tests(true);
        grew
    })
}

#[test]
fn assists_and_sweeps_leave_for_a_stop_request() {
    let _g = usurp_testsupport::serial();
    let [assist_exits, assist_past, sweep_exits, sweep_past, fresh] = scenario(true, true);
    eprintln!(
        "exit on: assist exits {assist_exits}, past {assist_past}; sweep exits {sweep_exits}, past {sweep_past}; \
         fresh blocks after an exit {fresh}"
    );
    assert!(assist_exits > 0, "no assist left for a stop request (exits {assist_exits}, slices past one {assist_past})");
    assert!(sweep_exits > 0, "no sweep for room left for a stop request (exits {sweep_exits}, blocks past one {sweep_past})");
    assert_eq!(fresh, 0, "refills took fresh blocks after their sweep for room left for a request ({sweep_exits} exits)");
}

#[test]
fn negative_control_without_the_checkpoint_a_sweep_exit_takes_a_fresh_block() {
    let _g = usurp_testsupport::serial();
    let [_, _, sweep_exits, _, fresh] = scenario(true, false);
    eprintln!("checkpoint off: sweep exits {sweep_exits}, fresh blocks after an exit {fresh}");
    assert!(sweep_exits > 0, "no sweep for room left for a stop request: the control did not exercise the exit");
    assert!(fresh > 0, "no refill took a fresh block after its sweep left ({sweep_exits} exits): the control shows nothing");
}

#[test]
fn negative_control_without_the_exit_a_stop_waits_for_the_assist_and_the_sweep() {
    let _g = usurp_testsupport::serial();
    let [assist_exits, assist_past, sweep_exits, sweep_past, _] = scenario(false, true);
    eprintln!("exit off: assist exits {assist_exits}, past {assist_past}; sweep exits {sweep_exits}, past {sweep_past}");
    assert!(assist_past > 0, "no assist ever marked with a request outstanding: the control did not exercise the wait");
    assert!(sweep_past > 0, "no sweep for room ever went on with a request outstanding: the control did not exercise the wait");
}
