//! Issue 9: the mark loop's look-ahead ring (a marker pops grey objects
//! ahead of scanning them and prefetches their first line; see `mark.rs`;
//! off by default, turned on here by its test switch). The ring is part of
//! a marker's grey set, so a bounded drain must put its entries back on
//! the grey stack when it stops (`Marker::park_ahead`).
//!
//! * A stepped mark in steps of a few objects (each step a bounded drain
//!   that stops with the ring full) marks every node of a tree, exactly as
//!   many live bytes as a mark without look-ahead; the negative control
//!   (test-only switch: the bounded drain drops the ring's entries instead
//!   of parking them) leaves reachable nodes unmarked, asserted.
//! * Concurrent marking marks exactly the reachable objects (live objects
//!   and bytes) of many rooted trees with the look-ahead on: three markers
//!   sharing work (each with its ring), and one marker draining in slices
//!   (its ring parked and taken back at every slice); and with it off.
//!
//! The switches are process-wide: the tests take `serial()`.

mod common;
use common::*;
use usurp_gc::internals::{set_mark_lookahead_for_tests, set_park_ahead_for_tests};
use usurp_gc::{Gc, Heap, HeapConfig};
use usurp_testsupport::{serial, within};

/// Addresses of every node of the tree `t` (walked before any mark starts).
fn addresses(t: Gc<Node>) -> Vec<usize> {
    let mut out = vec![];
    let mut todo = vec![t];
    while let Some(n) = todo.pop() {
        out.push(n.raw().addr());
        todo.extend(n.left.get());
        todo.extend(n.right.get());
    }
    out
}

/// A stepped mark of a rooted tree of `depth` in steps of `k` objects,
/// with the look-ahead `on` and the ring parked (`park`) or dropped at the
/// end of each step. Returns (nodes, nodes the mark left unmarked before
/// its termination, live bytes the mark counted).
fn stepped_mark(depth: usize, k: usize, on: bool, park: bool) -> (usize, usize, usize) {
    let h: Heap = heap_with(HeapConfig { verify: false, ..config(256 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let t = tree(depth);
    let nodes = addresses(t);
    let root = h.add_root(Some(t.raw()));
    set_mark_lookahead_for_tests(on);
    h.debug_begin_marking();
    set_park_ahead_for_tests(park);
    let mut steps = 0;
    while !h.debug_mark_steps(k) {
        steps += 1;
        assert!(steps <= 2 * nodes.len(), "the stepped mark does not end");
    }
    set_park_ahead_for_tests(true);
    set_mark_lookahead_for_tests(false);
    let unmarked = nodes.iter().filter(|&&a| !h.debug_is_marked(a)).count();
    h.debug_finish_marking();
    let live = h.stats().heap_live;
    // (With the control, lost nodes are dead now: nothing reads the tree.)
    drop(root);
    h.finish_sweep();
    (nodes.len(), unmarked, live)
}

#[test]
fn bounded_drains_park_their_lookahead_and_lose_objects_without() {
    let _serial = serial();
    within(120, "stepped marks", || {
        let depth = 11;
        let (n, unmarked, live) = stepped_mark(depth, 3, true, true);
        assert_eq!(n, (1 << (depth + 1)) - 1);
        assert_eq!(unmarked, 0, "the stepped mark with look-ahead left reachable nodes unmarked");
        // Node: header + 3 words = 32 bytes (its size class).
        assert_eq!(live, n * 32, "live bytes with look-ahead");
        let (_, unmarked_off, live_off) = stepped_mark(depth, 3, false, true);
        assert_eq!((unmarked_off, live_off), (0, live), "without look-ahead");
        // Steps of more objects than the ring holds, and of one.
        for k in [1, 2, 17, 1000] {
            assert_eq!(stepped_mark(depth, k, true, true).1, 0, "steps of {k}");
        }
        // The control: the ring's entries dropped at the end of each step.
        let (_, lost, live_lost) = stepped_mark(depth, 3, true, false);
        assert!(lost > 0, "the control (ring dropped, not parked) lost nothing");
        assert!(live_lost < live, "the control counted {live_lost} live bytes, as many as the mark ({live})");
    });
}

#[test]
fn parallel_markers_with_lookahead_mark_exactly_the_reachable_objects() {
    let _serial = serial();
    within(300, "parallel marks", || {
        for (on, workers) in [(true, 3), (true, 1), (false, 3)] {
            set_mark_lookahead_for_tests(on);
            let h: Heap = heap_with(HeapConfig { verify: true, mark_workers: Some(workers), ..config(512 << 20) });
            let _g = h.attach_thread().unwrap();
            // Many rooted trees (the start stop's grey objects, split
            // among the markers), garbage trees between them.
            let depth = 9;
            let trees = usurp_testsupport::scale(64).max(4);
            let mut roots = vec![];
            for _ in 0..trees {
                roots.push(h.add_root(Some(tree(depth).raw())));
                let _garbage = tree(4);
            }
            for _ in 0..3 {
                collect_elsewhere(&h);
                let st = h.stats();
                let c = st.last.unwrap();
                let expect = trees * ((1 << (depth + 1)) - 1);
                assert_eq!(c.workers, workers, "markers");
                assert_eq!(c.live_objects, expect, "look-ahead {on}: live objects");
                assert_eq!(st.heap_live, expect * 32, "look-ahead {on}: live bytes");
                assert_eq!(st.verify_failures, 0);
            }
            // Every tree intact.
            let mut count = 0;
            for r in &roots {
                let mut todo = vec![r.get_as::<Node>().unwrap()];
                let mut nodes = 0;
                while let Some(t) = todo.pop() {
                    nodes += 1;
                    todo.extend(t.left.get());
                    todo.extend(t.right.get());
                }
                assert_eq!(nodes, (1 << (depth + 1)) - 1);
                count += 1;
            }
            assert_eq!(count, trees);
        }
        set_mark_lookahead_for_tests(false);
    });
}
