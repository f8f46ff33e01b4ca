//! The heap verifier runs on every thread the World offers (each claims
//! chunks of blocks from one cursor): every block is checked exactly once,
//! whichever thread claims it. A list spread over some hundred blocks gets a
//! corrupt pointer field in objects at its start, middle and end; a World
//! with 4 threads must report each exactly once (a chunk skipped would miss
//! one, a chunk taken twice would count one twice).

mod common;

use common::{config, node, Node};
use std::hint::black_box;
use std::sync::Arc;
use usurp_gc::{Gc, Heap, ThreadWorld, World};

/// Object `i` of the list that starts at `head` (linked through `left`).
fn nth(head: Gc<Node>, i: usize) -> Gc<Node> {
    let mut n = head;
    for _ in 0..i {
        n = n.left.get().expect("list long enough");
    }
    n
}

#[test]
fn a_parallel_verifier_reports_each_bad_field_once() {
    let w = ThreadWorld::new(4);
    let h = Heap::with_world(config(256 << 20), w.clone() as Arc<dyn World>).unwrap();
    let _r = w.register();
    let _g = h.attach_thread().unwrap();
    let len = 200_000;
    let mut head = node(0, None, None);
    for i in 1..len {
        head = node(i, Some(head), None);
    }
    let head = black_box(head);
    h.collect();
    assert_eq!(h.stats().verify_failures, 0, "a sound heap failed verification");
    let bad = [0, 1, len / 3, len / 2, len - 2];
    let target = nth(head, 7);
    for &i in &bad {
        // A pointer field holding an interior address (not an object),
        // written past `Member::set`'s checks.
        // SAFETY: payload word 1 (`right`) of a live Node.
        unsafe { nth(head, i).raw().payload().add(1).write(target.raw().addr() + 8) };
    }
    h.collect();
    let failures = h.stats().verify_failures;
    for &i in &bad {
        // Repaired, so that the heap is sound again.
        nth(head, i).right.set(None);
    }
    h.collect();
    assert_eq!(
        failures,
        bad.len() as u64,
        "a 4-thread verifier reported {failures} bad fields for {} corrupt objects",
        bad.len()
    );
    assert_eq!(h.stats().verify_failures, failures, "the repaired heap failed verification");
    black_box(head);
}
