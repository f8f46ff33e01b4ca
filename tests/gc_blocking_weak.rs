//! Through the runtime: a task inside `usurp::blocking` (it counts as
//! stopped and keeps running) reads a `WeakRef` while the collector is in
//! the termination stop (review finding 1). Before the fix the read shaded
//! the target W after the stop's last drain: W was kept (marked, weak
//! reference not cleared) while its child C, never marked, was freed. With
//! the shading gate the read waits for the stop's end and finds the weak
//! reference cleared, or comes before the last drain and keeps W with C.
//! The negative control switches the gate off and sees C freed under a kept W.
//!
//! The window: a spinner task stops ticking while the world is stopped;
//! the blocking closure reads the weak reference once it sees the ticks
//! stall for 3 ms during the collection, which a long weak-clearing loop
//! (many weak references to a rooted object) makes the termination stop.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{Heap, WeakRef};
use usurp_gc::set_shading_gate_for_tests;
use usurp_testsupport::scale as test_scale;
use usurp_testsupport::{serial, within};
use usurp_testsupport_gc::{manual, node, runtime};

const X: usize = 0x5a5a_5a5a;

#[inline(never)]
fn make_w(heap: &Heap) -> (WeakRef, usize, usize) {
    let c = node(2, None, None);
    let w = node(1, Some(c), None);
    (heap.weak(w.raw()), w.raw().addr() ^ X, c.raw().addr() ^ X)
}

#[derive(Debug, Default)]
struct Tally {
    /// Attempts whose read came during a stall of the world.
    reads_in_stall: usize,
    /// Attempts that kept W while freeing C (the defect).
    lost: usize,
    /// Attempts that kept W (with C).
    kept: usize,
}

/// Runs up to `attempts` collections, each with a blocking-closure read of
/// a fresh W's weak reference during a stall; stops early at the first loss
/// if `stop_at_loss`.
fn run(attempts: usize, stop_at_loss: bool) -> Tally {
    let rt = runtime(2, manual(512 << 20, false));
    rt.block_on(move || {
        let heap = Heap::current().unwrap();
        heap.set_background_sweeping(false);
        let d = node(0, None, None);
        let _rd = heap.add_root(Some(d.raw()));
        let fillers: Vec<WeakRef> = (0..test_scale(1_000_000)).map(|_| heap.weak(d.raw())).collect();
        let mut t = Tally::default();
        for attempt in 0..attempts {
            let (weak_w, wx, cx) = make_w(&heap);
            let weak_w = Arc::new(weak_w);
            let ticks = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let started = Arc::new(AtomicBool::new(false));
            let armed = Arc::new(AtomicBool::new(false));
            let spinner = {
                let (ticks, stop) = (ticks.clone(), stop.clone());
                usurp::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        ticks.fetch_add(1, Ordering::Relaxed);
                        usurp::yield_now();
                    }
                })
            };
            let reader = {
                let (ticks, weak_w, stop, started, armed) =
                    (ticks.clone(), weak_w.clone(), stop.clone(), started.clone(), armed.clone());
                usurp::spawn(move || {
                    usurp::blocking(move || {
                        started.store(true, Ordering::SeqCst);
                        let (mut last, mut t) = (ticks.load(Ordering::Relaxed), Instant::now());
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                            let v = ticks.load(Ordering::Relaxed);
                            if v != last {
                                (last, t) = (v, Instant::now());
                            } else if armed.load(Ordering::SeqCst) && t.elapsed() > Duration::from_millis(3) {
                                return Some(weak_w.get().map_or(0, |r| r.addr() ^ X));
                            }
                        }
                        None
                    })
                })
            };
            while !started.load(Ordering::SeqCst) {
                usurp::yield_now();
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(10) {
                usurp::yield_now();
            }
            armed.store(true, Ordering::SeqCst);
            heap.collect();
            stop.store(true, Ordering::Relaxed);
            let got = reader.join().unwrap();
            spinner.join().unwrap();
            heap.finish_sweep();
            let (w, c) = (std::hint::black_box(wx) ^ X, std::hint::black_box(cx) ^ X);
            let (w_live, c_live) = (heap.object_at(w).is_some(), heap.object_at(c).is_some());
            let weak_kept = weak_w.get().is_some();
            eprintln!("attempt {attempt}: read {got:?}, W live {w_live}, C live {c_live}, weak kept {weak_kept}");
            assert_eq!(weak_kept, w_live, "attempt {attempt}: the weak ref is kept iff W lives");
            if got.is_some() {
                t.reads_in_stall += 1;
            }
            if w_live {
                t.kept += 1;
                if !c_live {
                    t.lost += 1;
                    if stop_at_loss {
                        break;
                    }
                }
            }
            heap.collect(); // W (if kept) dies now that nobody reads it
        }
        drop(fillers);
        t
    })
}

#[test]
fn weak_get_inside_blocking_during_termination_never_keeps_a_target_without_its_child() {
    // The tests flip a process-wide switch: one at a time.
    let _s = serial();
    let t = within(300, "the scenario", || run(8, false));
    eprintln!("{t:?}");
    assert_eq!(t.lost, 0, "W kept by its weak ref while its child C was freed: {t:?}");
    assert!(t.reads_in_stall > 0, "the read never came during a stop: inconclusive: {t:?}");
}

#[test]
fn negative_control_without_the_shading_gate_a_blocking_weak_get_frees_a_kept_targets_child() {
    // The tests flip a process-wide switch: one at a time.
    let _s = serial();
    set_shading_gate_for_tests(false);
    let t = within(300, "the scenario", || run(10, true));
    set_shading_gate_for_tests(true);
    eprintln!("{t:?}");
    assert!(t.lost > 0, "without the gate, no read in the termination stop kept W without C: {t:?}");
}
