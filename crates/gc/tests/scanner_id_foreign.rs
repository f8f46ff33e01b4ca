//! A `ScannerId` of one heap given to another heap's `remove_root_scanner`
//! removes nothing there and returns false (red-team RT-gc item 4,
//! session 14: ids were numbered per heap, from 1, so heap b's
//! `remove_root_scanner(id of heap a's first scanner)` removed b's own first
//! scanner, e.g. a `RootedVec`'s, and its elements were then freed while
//! reachable). Fails without the fix (checked by reverting
//! `Heap::add_root_scanner` to the per-heap counter: both ids are 1 and
//! the `assert_ne` fails; past it, b's `remove_root_scanner(id_a)` would
//! return true and remove b's own scanner).
mod common;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn another_heaps_scanner_id_removes_nothing() {
    let a = common::heap(8 << 20);
    let b = common::heap(8 << 20);
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    // Each heap's first scanner (both were number 1 with per-heap ids).
    let id_b = b.add_root_scanner(Box::new(move |_| {
        r2.fetch_add(1, Ordering::SeqCst);
    }));
    let id_a = a.add_root_scanner(Box::new(|_| {}));
    assert_ne!(id_a, id_b, "two heaps' scanners have the same id");
    assert!(!b.remove_root_scanner(id_a), "heap b removed a scanner for heap a's id");
    // b's own scanner is still registered and runs in b's collections.
    let _g = b.attach_thread().unwrap();
    b.collect();
    assert!(runs.load(Ordering::SeqCst) >= 1, "heap b's scanner did not run");
    assert!(b.remove_root_scanner(id_b));
    assert!(!b.remove_root_scanner(id_b), "removed twice");
    assert!(a.remove_root_scanner(id_a));
}
