//! A GC handle of one runtime's heap is refused by the safe accessors of a
//! task of another runtime (a clear panic naming the cause), by the deref
//! fast path and the general check alike. Before, any thread with *a*
//! mutator passed the check for an object of *any* registered heap: but
//! the object's heap neither stops nor scans the other runtime's threads,
//! so its collections could free the object (or drop the heap and unmap
//! its tables) between the check and the access. `Gc<T>` is `Send`, so
//! such a handle is one channel away.

use usurp::gc::{gc_type, Gc, GcRef, Member};
use usurp_testsupport::within;

#[repr(C)]
struct Cell {
    next: Member<Cell>,
    val: u64,
}
gc_type!(compact Cell { next });

#[repr(C)]
struct Big {
    val: u64,
    pad: [u64; 8000], // a large object: no fast path
}
gc_type!(Big {});

fn panic_message(r: std::thread::Result<u64>) -> String {
    match r {
        Ok(v) => format!("no panic (read {v})"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_else(|| format!("{p:?}")),
    }
}

#[test]
fn a_handle_of_another_runtimes_heap_is_refused() {
    within(60, "cross-heap handles", || {
        let a = usurp::Runtime::builder().workers(1).build().expect("runtime a");
        let b = usurp::Runtime::builder().workers(1).build().expect("runtime b");
        let (cell, big, _roots) = a.block_on(|| {
            let c = Gc::new(Cell { next: Member::null(), val: 7 });
            let big = Gc::new(Big { val: 9, pad: [0; 8000] });
            // Kept alive by roots of heap a for the rest of the test.
            let heap = usurp::gc::Heap::current().expect("a task has a heap");
            (c, big, [heap.add_root(Some(c.raw())), heap.add_root(Some(big.raw()))])
        });
        let msgs = b.block_on(move || {
            let fast = usurp_gc::deref_fast_path_for_tests::<Cell>(cell.raw());
            let deref = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cell.val)));
            let large = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| big.val)));
            let raw: GcRef = cell.raw();
            let untyped = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raw.descriptor().size_words() as u64)));
            let typed = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Gc::<Cell>::from_ref(raw).map_or(0, |_| 1))));
            (fast, [deref, large, untyped, typed])
        });
        assert!(!msgs.0, "the deref fast path accepted an object of another heap");
        for (what, m) in ["deref", "large deref", "GcRef::descriptor", "Gc::from_ref"].iter().zip(&msgs.1) {
            assert!(m.contains("another usurp heap"), "{what} in runtime b of runtime a's object: {m}");
        }
        // Runtime a's own tasks still read them, on both paths.
        let (v, w, fast) = a.block_on(move || (cell.val, big.val, usurp_gc::deref_fast_path_for_tests::<Cell>(cell.raw())));
        assert_eq!((v, w, fast), (7, 9, true));
    });
}
