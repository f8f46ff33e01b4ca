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

use std::sync::Mutex;
use std::time::Duration;
use usurp::gc::{gc_type, Gc, HeapConfig, Member};
use usurp::Runtime;

static SERIAL: Mutex<()> = Mutex::new(());

#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(Node { left, right });

#[inline(never)]
fn list(n: usize) -> Gc<Node> {
    let mut head = Gc::new(Node { left: Member::new(None), right: Member::new(None) });
    for _ in 1..n {
        head = Gc::new(Node { left: Member::new(Some(head)), right: Member::new(None) });
    }
    head
}

#[inline(never)]
fn tree(d: u32) -> Gc<Node> {
    let (l, r) = if d == 0 { (None, None) } else { (Some(tree(d - 1)), Some(tree(d - 1))) };
    Gc::new(Node { left: Member::new(l), right: Member::new(r) })
}

/// (cycles seen, bytes marked by assists, assist waits)
fn scenario(markers: Option<usize>, workers: usize) -> (u64, u64, u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = HeapConfig {
            max_heap: 2 << 30,
            gogc: Some(100),
            min_heap: 4 << 20,
            mark_workers: markers,
            ..HeapConfig::default()
        };
        let rt = Runtime::builder().workers(workers).heap_config(cfg).build().unwrap();
        let r = rt.block_on(|| {
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
        });
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(300)).expect("hung (watchdog 300 s)")
}

#[test]
fn one_marker_assists() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (c, marked, waits) = scenario(Some(1), 2);
    eprintln!("1 marker: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "one marker: assists marked nothing");
}

#[test]
fn two_markers_assist_too() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (c, marked, waits) = scenario(Some(2), 2);
    eprintln!("2 markers: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "two markers: assists marked nothing (no donation in drain_shared)");
}

/// The default configuration on 4 workers (2 concurrent markers).
#[test]
fn four_workers_default_markers_assist() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (c, marked, waits) = scenario(None, 4);
    eprintln!("4 workers, default markers: cycles {c}, assist-marked {marked}, waits {waits}");
    assert!(marked > 0, "4 workers (default 2 markers): assists marked nothing");
}
