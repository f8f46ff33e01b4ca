//! Issue 10 items 2, 4, 5, 7, 9 and issue 11 item 2: who may allocate, what
//! happens when something panics inside a pause, stop-the-world deadlocks
//! that are detected (and the ones that are reported), spurious heap
//! exhaustion, and a stopper that yields or gets preempted during its own
//! stop. Every scenario that could hang runs under a watchdog.

mod sched_util;

use sched_util::{run_child, scale, within};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{gc_type, AllocError, AttachError, Gc, Member};
use usurp::Runtime;

#[repr(C)]
struct Node {
    next: Member<Node>,
    val: usize,
}
gc_type!(Node { next });

fn node(val: usize, next: Option<Gc<Node>>) -> Gc<Node> {
    Gc::new(Node { next: Member::new(next), val })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".into()
    }
}

// ---- issue 10 items 2 and 9: allocation from threads the World does not stop

/// A plain thread cannot attach to a runtime's heap (the World refuses it),
/// and allocating without attaching panics with a message that does not send
/// the user to `attach_thread`.
#[test]
fn plain_thread_cannot_allocate_in_a_runtime_heap() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let heap = rt.heap().clone();
    within(30, "plain thread", move || {
        std::thread::spawn(move || {
            match heap.attach_thread() {
                Err(e @ AttachError::Refused(_)) => {
                    let m = e.to_string();
                    assert!(m.contains("outside the runtime"), "{m}");
                    assert!(m.contains("task"), "{m}");
                }
                Err(e) => panic!("unexpected attach error {e:?}"),
                Ok(_) => panic!("a plain thread attached to the runtime's heap"),
            }
            let p = std::panic::catch_unwind(|| black_box(node(1, None)).val).expect_err("allocation succeeded");
            let m = panic_text(&*p);
            assert!(m.contains("allocation from a thread outside the runtime"), "{m}");
            assert!(!m.contains("call Heap::attach_thread"), "the message still advises attach_thread: {m}");
            assert_eq!(usurp::gc::try_alloc(<Node as usurp::gc::GcType>::descriptor()).err(), Some(AllocError::NotAttached));
        })
        .join()
        .unwrap();
    });
    // The runtime's own tasks still allocate.
    assert_eq!(rt.block_on(|| node(7, Some(node(8, None))).next.get().unwrap().val), 8);
}

fn alloc_inside_blocking(rt: &Runtime) {
    rt.block_on(|| {
        let before = node(1, None);
        let p = std::panic::catch_unwind(|| usurp::blocking(|| black_box(node(2, None)).val))
            .expect_err("allocation inside blocking() succeeded");
        let m = panic_text(&*p);
        assert!(m.contains("inside blocking()"), "{m}");
        let e = usurp::blocking(|| usurp::gc::try_alloc(<Node as usurp::gc::GcType>::descriptor()).err());
        assert!(matches!(e, Some(AllocError::Forbidden(_))), "{e:?}");
        // Allocation works again after blocking(), on whatever thread the
        // task resumed.
        let after = node(3, Some(before));
        assert_eq!(after.next.get().unwrap().val, 1);
    });
}

/// Allocation inside `blocking` (handed-off thread) panics clearly.
#[test]
fn allocation_inside_blocking_is_refused() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(60, "blocking (handoff)", move || alloc_inside_blocking(&rt));
}

/// Same when `blocking` runs its closure in place (no spare thread allowed).
#[test]
fn allocation_inside_in_place_blocking_is_refused() {
    let rt = Runtime::builder().workers(1).max_blocking_threads(0).build().unwrap();
    within(60, "blocking (in place)", move || alloc_inside_blocking(&rt));
}
