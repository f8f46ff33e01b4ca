//! Issue 9: batched mark bits (`mark.rs`, "Batched mark bits"). A marker
//! keeps the bits it sets in one bitmap word and stores them with one
//! atomic OR when it moves to another word; two threads may then both mark
//! an object (each saw its bit clear), and the one whose OR finds the
//! other's bit takes its count back, so live objects and bytes stay exact.
//!
//! Several markers (three concurrent marking threads) on a shared graph:
//! six rooted arrays that all point at the same leaves, in the same order,
//! so that the markers scanning them set bits of the same words at the same
//! time. Every collection must count exactly the reachable objects and
//! bytes (those of a collection with atomic per-object marking), keep every
//! leaf, and pass the verifier. The negative control turns the count
//! correction off (test-only switch): the counts then exceed the reachable
//! set in some collection (asserted; the markers race for real, so the
//! control runs collections until it sees one, up to a bound).

mod common;
use common::*;
use usurp_gc::internals::{set_batched_marks_for_tests, set_uncount_duplicates_for_tests};
use usurp_gc::{alloc_array, Descriptor, Gc, Heap, HeapConfig, Root};
use usurp_testsupport::{serial, within};

const PARENTS: usize = 6;

/// The shared graph: `PARENTS` rooted arrays, each pointing at all `n`
/// leaves (nodes with values 0..n).
fn shared_graph(h: &Heap, n: usize) -> Vec<Root> {
    let leaves: Vec<_> = (0..n).map(|i| node(i, None, None)).collect();
    let arr = Descriptor::array_builder(1).name("parent").pointer_at(0).build().unwrap();
    (0..PARENTS)
        .map(|_| {
            let a = alloc_array(arr, n);
            for (i, l) in leaves.iter().enumerate() {
                a.set_ptr(1 + i, Some(l.raw()));
            }
            h.add_root(Some(a))
        })
        .collect()
}

/// (live objects, live bytes) of a collection from a fresh thread.
fn collect_counts(h: &Heap) -> (usize, usize) {
    collect_elsewhere(h);
    let st = h.stats();
    assert_eq!(st.verify_failures, 0, "verifier");
    let c = st.last.unwrap();
    assert_eq!(c.workers, 3, "markers");
    (c.live_objects, st.heap_live)
}

fn check_leaves(roots: &[Root], n: usize) {
    for r in roots {
        let a = r.get().unwrap();
        for i in (0..n).step_by(97) {
            let l = Gc::<Node>::from_ref(a.ptr(1 + i).unwrap()).expect("a leaf is a Node");
            assert_eq!(l.val, i, "leaf {i} corrupted (freed while reachable?)");
        }
    }
}

#[test]
fn several_markers_on_a_shared_graph_count_exactly_and_overcount_without_the_correction() {
    let _serial = serial();
    within(600, "batched marks", || {
        let h: Heap = heap_with(HeapConfig { verify: true, mark_workers: Some(3), ..config(1 << 30) });
        let _g = h.attach_thread().unwrap();
        let n = usurp_testsupport::scale(200_000).max(20_000);
        let roots = shared_graph(&h, n);
        // The reference: atomic marking, one RMW per object.
        set_batched_marks_for_tests(false);
        let (objects, bytes) = collect_counts(&h);
        set_batched_marks_for_tests(true);
        assert_eq!(objects, PARENTS + n, "reachable objects");
        assert!(bytes >= PARENTS * (n + 2) * 8 + n * 32, "{bytes} live bytes");
        for _ in 0..5 {
            assert_eq!(collect_counts(&h), (objects, bytes), "batched marks counted other live figures");
            check_leaves(&roots, n);
        }
        // The control: duplicates keep their counts.
        set_uncount_duplicates_for_tests(false);
        let mut over = None;
        for round in 0..60 {
            let c = collect_counts(&h);
            assert!(c.0 >= objects && c.1 >= bytes, "fewer than reachable: {c:?}");
            if c.0 > objects {
                over = Some((round, c));
                break;
            }
        }
        set_uncount_duplicates_for_tests(true);
        check_leaves(&roots, n);
        let (round, c) = over.expect("the control (no count correction) never counted an object twice");
        assert!(c.1 > bytes, "round {round}: {c:?} objects over, bytes not");
        eprintln!("control: round {round} counted {} objects for {objects}", c.0);
        assert_eq!(collect_counts(&h), (objects, bytes), "after the control");
    });
}
