//! Finalizer closures are roots (issue 10, item 6): what a finalizer captures
//! stays alive until it has run and while it runs; a finalizer capturing its
//! own object is refused; chains of finalizers run in order.
//!
//! Objects are made on threads that exit (their stacks are not scanned) and
//! collections run on fresh threads (`collect_elsewhere`), so the only
//! reference left to a captured object is the one inside the closure's box.
//! After each collection, garbage of the same size class is allocated to
//! reuse any freed slot, and the captured lists are checked value by value.

mod common;
use common::*;
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use usurp_gc::{Gc, Heap};

const LEN: usize = 64;

/// Allocates (and drops) many nodes with other values on a thread that
/// exits, so that freed slots of the node class get overwritten.
fn churn(h: &Heap) {
    on_other_thread(h, |_| {
        for _ in 0..usurp_testsupport::scale(40) {
            let mut head: Option<Gc<Node>> = None;
            for i in 0..500 {
                head = Some(node(usize::MAX - i, head, None));
            }
            black_box(head);
        }
    });
}

/// The list starting at `addr` is still the list `list(LEN)` built.
fn intact(h: &Heap, addr: usize) -> bool {
    intact_list(h, addr, LEN)
}

/// A finalizer of `a` that captures the only reference to a list `b` keeps
/// `b` alive (intact) through collections while `a` is reachable, while the
/// finalizer is pending, and when it runs; afterwards `b` is collected.
#[test]
fn a_finalizer_keeps_what_it_captures_alive_until_it_ran() {
    let h = heap(64 << 20);
    // Reading objects needs a mutator (TestWorld admits several threads).
    let _g = h.attach_thread().unwrap();
    let seen = Arc::new(Mutex::new(None::<bool>));
    let seen2 = seen.clone();
    let (root_a, b_addr) = on_other_thread(&h, move |h| {
        let a = node(7, None, None);
        let b = list(LEN).unwrap().raw();
        let root = h.add_root(Some(a.raw()));
        let h2 = h.clone();
        h.set_finalizer(a.raw(), move |_| {
            // `b` is only referenced from here.
            *seen2.lock().unwrap() = Some(intact(&h2, b.addr()));
        });
        (root, b.addr())
    });
    // `a` reachable (rooted): its finalizer is registered, `b` only in it.
    for _ in 0..3 {
        collect_elsewhere(&h);
        churn(&h);
        assert!(intact(&h, b_addr), "an object captured by a registered finalizer was freed");
    }
    drop(root_a);
    // `a` unreachable: queued, then still pending for a few cycles.
    for _ in 0..3 {
        collect_elsewhere(&h);
        churn(&h);
        assert!(intact(&h, b_addr), "an object captured by a pending finalizer was freed");
    }
    assert_eq!(h.stats().finalizers_pending, 1);
    let ran = on_other_thread(&h, |h| h.run_pending_finalizers());
    assert_eq!(ran, 1);
    assert_eq!(*seen.lock().unwrap(), Some(true), "the finalizer saw its captured list damaged");
    // The finalizer is gone, and with it the last reference to `b`.
    collect_elsewhere(&h);
    assert_eq!(h.find_object(b_addr), None, "the captured object leaked after its finalizer ran");
    let st = h.stats();
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
}

/// While a finalizer runs, what it captured is on the running thread's stack:
/// collections inside the finalizer keep it (the closure is moved out of its
/// box before it is called; its box is no longer in any scanned list).
#[test]
fn captures_stay_alive_while_the_finalizer_runs() {
    let h = heap(64 << 20);
    let checked = Arc::new(AtomicUsize::new(0));
    let c2 = checked.clone();
    on_other_thread(&h, move |h| {
        let a = node(7, None, None);
        let lists: [usize; 8] = std::array::from_fn(|_| list(LEN).unwrap().raw().addr());
        let h2 = h.clone();
        h.set_finalizer(a.raw(), move |_| {
            for round in 0..3 {
                // Collect on this thread (its own stack is scanned), then
                // reuse freed slots from another thread.
                h2.collect();
                churn(&h2);
                for &l in lists.iter() {
                    let ok = intact(&h2, black_box(l));
                    assert!(ok, "round {round}: a captured list was freed while its finalizer ran");
                }
            }
            c2.fetch_add(lists.len(), Ordering::SeqCst);
        });
    });
    collect_elsewhere(&h);
    assert_eq!(h.stats().finalizers_pending, 1);
    assert_eq!(on_other_thread(&h, |h| h.run_pending_finalizers()), 1);
    assert_eq!(checked.load(Ordering::SeqCst), 8);
    assert_eq!(h.stats().verify_failures, 0);
}

/// A finalizer that captures its own object would keep it alive forever (it
/// would never run): refused with a clear panic, and nothing is registered.
#[test]
fn a_finalizer_capturing_its_own_object_is_refused() {
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    let a = node(1, None, None).raw();
    let err = catch_unwind(AssertUnwindSafe(|| {
        h.set_finalizer(a, move |_| {
            black_box(a);
        })
    }))
    .expect_err("a self-capturing finalizer was accepted");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("captures a pointer to that object"), "{msg}");
    // An interior pointer counts too.
    let inner = a.addr() + 8;
    let err = catch_unwind(AssertUnwindSafe(|| {
        h.set_finalizer(a, move |_| {
            black_box(inner);
        })
    }));
    assert!(err.is_err(), "a finalizer holding an interior pointer to its object was accepted");
    // Capturing another object, or the heap, is fine.
    let b = node(2, None, None).raw();
    let h2 = h.clone();
    h.set_finalizer(a, move |o| {
        black_box((b, &h2, o));
    });
    black_box(a);
}

/// `a`'s finalizer captures `b`, which has its own finalizer: `b` is
/// finalized only after `a`'s finalizer ran (a chain is ordered), and both
/// run eventually.
#[test]
fn chained_finalizers_run_in_order() {
    let h = heap(16 << 20);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    on_other_thread(&h, move |h| {
        let a = node(1, None, None);
        let b = list(LEN).unwrap().raw();
        let h2 = h.clone();
        h.set_finalizer(b, move |_| o2.lock().unwrap().push("b"));
        h.set_finalizer(a.raw(), move |_| {
            assert!(intact(&h2, b.addr()));
            o1.lock().unwrap().push("a");
        });
    });
    for _ in 0..4 {
        collect_elsewhere(&h);
        on_other_thread(&h, |h| h.run_pending_finalizers());
    }
    assert_eq!(*order.lock().unwrap(), vec!["a", "b"]);
    assert_eq!(h.stats().verify_failures, 0);
}

/// Finalizer of `a` capturing `b`, where `b` was allocated right after `a`.
fn finalizer_capturing_the_next_object(spacer: bool) -> usize {
    let h = heap(16 << 20);
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    on_other_thread(&h, move |h| {
        let a = node(1, None, None);
        if spacer {
            black_box(node(9, None, None));
        }
        let b = node(2, None, None);
        assert_eq!(b.raw().addr(), a.raw().addr() + if spacer { 64 } else { 32 });
        let bb = b.raw();
        h.set_finalizer(a.raw(), move |_| {
            black_box(bb);
            r2.fetch_add(1, Ordering::SeqCst);
        });
    });
    for _ in 0..4 {
        collect_elsewhere(&h);
        on_other_thread(&h, |h| h.run_pending_finalizers());
    }
    ran.load(Ordering::SeqCst)
}

/// Review defect 4 (a consequence of defect 3): `a`'s finalizer captures `b`
/// (the documented chain pattern) and `b` sits right after `a` in an exactly
/// fitting size class (Node: 32 bytes), so the closure's word for `b` is
/// `a`'s exact end. The one-past-the-end rule kept `a` alive forever and its
/// finalizer never ran (ran=0). With a spacer object between them (control)
/// it always ran.
#[test]
fn a_finalizer_capturing_the_next_object_runs() {
    assert_eq!(finalizer_capturing_the_next_object(true), 1, "control (spacer) failed");
    assert_eq!(finalizer_capturing_the_next_object(false), 1, "a's finalizer never ran: its capture of b keeps a alive");
}

/// Review (unconfirmed item): `run_pending_finalizers` ran finalizers on any
/// thread, where the objects they hold are on a stack no collection scans.
/// It now requires a thread attached to this heap; the finalizer stays
/// queued and runs later on one.
#[test]
fn pending_finalizers_run_only_on_an_attached_thread() {
    let h = heap(16 << 20);
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    on_other_thread(&h, move |h| {
        let a = node(1, None, None);
        h.set_finalizer(a.raw(), move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        });
    });
    collect_elsewhere(&h);
    assert_eq!(h.stats().finalizers_pending, 1);
    let e = catch_unwind(AssertUnwindSafe(|| h.run_pending_finalizers())).expect_err("ran on a plain thread");
    let m = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
    assert!(m.contains("not attached to this heap"), "{m}");
    // Attached to another heap: refused too.
    let other = heap(1 << 20);
    let g = other.attach_thread().unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| h.run_pending_finalizers())).is_err());
    drop(g);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(on_other_thread(&h, |h| h.run_pending_finalizers()), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
