//! Assists with more than one concurrent marker (`mark_workers: Some(2)`,
//! the default on 3+ workers): the collector's concurrent loop then takes
//! the parallel `drain_shared_paced` path, whose markers must service
//! `assist_wanted` (donate to the grey list) and publish
//! `collector_marked` as the single marker does. Before that was wired in
//! (a review finding on the pacer), assists there found no work and marked
//! nothing, and allocation at the goal waited for the whole parallel drain;
//! these tests failed. The same scenario with one marker (the default on 2
//! workers) is the control (also tests/gc_assist.rs, with its assists-off
//! negative control).

use usurp::gc::HeapConfig;
use usurp::Runtime;
use usurp_testsupport::{serial, within};
use usurp_testsupport_gc::pair::{list, tree};

/// (cycles seen, bytes marked by assists, assist waits)
fn scenario(markers: Option<usize>, workers: usize) -> (u64, u64, u64) {
    within(300, "the scenario", move || {
        let cfg = HeapConfig {
            max_heap: 2 << 30,
            gogc: Some(100),
            min_heap: 4 << 20,
            mark_workers: markers,
            ..HeapConfig::default()
        };
        let rt = Runtime::builder().workers(workers).heap_config(cfg).build().unwrap();
        rt.block_on(|| {
            let heap = usurp::gc::Heap::current().unwrap();
            let live = tree(17);
            let mut waits = 0;
            let mut last = 0;
            while heap.stats().cycles < 12 {
                std::hint::black_box(list(16_384));
                if let Some(c) = heap.stats().last {
                    if c.cycle != last {
                        last = c.cycle;
                        waits += c.assist_waits;
                    }
                }
            }
            std::hint::black_box(live);
            let s = heap.stats();
            (s.cycles, s.total_assist_marked, waits)
        })
    })
}

#[test]
fn one_marker_assists() {
    let _g = serial();
    let (c, marked, waits) = scenario(Some(1), 2);
    eprintln!("1 marker: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "one marker: assists marked nothing");
}

#[test]
fn two_markers_assist_too() {
    let _g = serial();
    let (c, marked, waits) = scenario(Some(2), 2);
    eprintln!("2 markers: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "two markers: assists marked nothing (no donation in drain_shared)");
}

/// The default configuration on 4 workers (2 concurrent markers).
#[test]
fn four_workers_default_markers_assist() {
    let _g = serial();
    let (c, marked, waits) = scenario(None, 4);
    eprintln!("4 workers, default markers: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "4 workers (default 2 markers): assists marked nothing");
}
