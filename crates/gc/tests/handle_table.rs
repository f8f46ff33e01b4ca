//! The handle-check table's first try (`refcheck::FIRST`): the entry of
//! slot 0, or an empty entry while slot 0 is empty (never null, so that
//! the deref fast path needs no null test). It must follow slot 0 when a
//! heap registers there and when it goes away: a stale first try would
//! send every handle check of an address in the dropped heap's old range
//! to its unmapped side tables. One test in its own process: it needs slot
//! 0 for itself.

mod common;
use common::*;
use usurp_gc::{handle_table_slot_0_for_tests, Gc, GcRef, Member};

#[test]
fn the_first_entry_tried_follows_slot_0() {
    assert_eq!(handle_table_slot_0_for_tests(), (0, 0), "no heap yet");
    let h = heap(16 << 20);
    let (slot0, first) = handle_table_slot_0_for_tests();
    assert!(slot0 != 0 && first == slot0, "heap in slot 0 at {slot0:#x}, first try {first:#x}");
    let addr = {
        let _g = h.attach_thread().unwrap();
        let n = Gc::new(CVal { next: Member::null(), a: 1, b: 2 });
        assert!(usurp_gc::deref_fast_path_for_tests::<CVal>(n.raw()), "the fast path missed a live object");
        assert_eq!(n.a + n.b, 3);
        n.raw().addr()
    };
    assert!((slot0..slot0 + (16 << 20)).contains(&addr));
    drop(h);
    assert_eq!(handle_table_slot_0_for_tests(), (0, 0), "the heap was dropped: slot 0 is empty and the first try too");
    // A handle into the dropped heap's range: no heap holds it (with a
    // stale first try, the check would read the unmapped side tables).
    // SAFETY: only handed to the check.
    let stale = unsafe { GcRef::from_addr(addr) }.unwrap();
    assert!(!stale.is_live(), "a handle into a dropped heap passed the check");
    // A second heap takes slot 0 again.
    let h2 = heap(16 << 20);
    let (slot0, first) = handle_table_slot_0_for_tests();
    assert!(slot0 != 0 && first == slot0, "second heap in slot 0 at {slot0:#x}, first try {first:#x}");
    drop(h2);
    assert_eq!(handle_table_slot_0_for_tests(), (0, 0));
}
