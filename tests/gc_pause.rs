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

// ---- issue 10 item 4: a panic inside a pause

/// Builds garbage and checks a list in a loop until `stop`; returns rounds.
fn churn(stop: &AtomicBool) -> usize {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut head = None;
        for i in 0..200 {
            head = Some(node(i, head));
        }
        let mut n = 0;
        let mut p = head;
        while let Some(x) = p {
            n += 1;
            p = x.next.get();
        }
        assert_eq!(n, 200);
        rounds += 1;
        usurp::yield_now();
    }
    rounds
}

fn verify_config() -> usurp::gc::HeapConfig {
    usurp::gc::HeapConfig { verify: true, gogc: Some(100), ..usurp::gc::HeapConfig::default() }
}

/// A root scanner that panics (here: by locking a poisoned std mutex with
/// `unwrap`, the poisoned-lock case) in a runtime with tasks running: the
/// collecting task gets a clear panic naming the scanner, the world runs
/// again (the other tasks make progress), and later collections work and
/// verify clean.
fn scanner_panics(poisoned: bool) {
    let rt = Arc::new(Runtime::builder().workers(2).heap_config(verify_config()).build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|_| {
            let s = stop.clone();
            rt.spawn(move || churn(&s))
        })
        .collect();
    let lock = Arc::new(std::sync::Mutex::new(0usize));
    if poisoned {
        let l = lock.clone();
        let _ = std::thread::spawn(move || {
            let _g = l.lock().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(lock.is_poisoned());
    }
    let armed = Arc::new(AtomicBool::new(true));
    let (a2, l2) = (armed.clone(), lock.clone());
    let id = rt.heap().add_root_scanner(Box::new(move |_mark: &mut dyn FnMut(usurp::gc::GcRef)| {
        if a2.swap(false, Ordering::SeqCst) {
            if poisoned {
                *l2.lock().unwrap() += 1; // panics: poisoned
            }
            panic!("the VM's root scanner failed");
        }
    }));
    let heap = rt.heap().clone();
    let collector = rt.spawn(move || {
        let keep = node(42, None);
        let r = std::panic::catch_unwind(|| heap.collect());
        black_box(&keep);
        (r.map_err(|p| panic_text(&*p)), keep.val)
    });
    let (r, v) = collector.join().unwrap();
    let msg = r.expect_err("the collection did not report the scanner's panic");
    assert!(msg.contains("root scanner"), "{msg}");
    assert!(msg.contains(if poisoned { "PoisonError" } else { "the VM's root scanner failed" }), "{msg}");
    assert!(msg.contains("world restarted"), "{msg}");
    assert_eq!(v, 42);
    assert!(!armed.load(Ordering::SeqCst));
    // The world runs: the churners finish; more collections (scanner still
    // registered, now quiet) complete and verify clean.
    let heap = rt.heap().clone();
    rt.block_on(move || {
        for _ in 0..3 {
            heap.collect();
        }
    });
    stop.store(true, Ordering::SeqCst);
    for c in churners {
        c.join().unwrap();
    }
    assert!(rt.heap().remove_root_scanner(id));
    rt.heap().collect();
    let st = rt.stats().gc;
    assert!(st.cycles >= 4, "{}", st.cycles);
    assert_eq!(st.verify_failures, 0);
}

#[test]
fn panicking_root_scanner_restarts_the_world() {
    within(60, "panicking root scanner", || scanner_panics(false));
}

#[test]
fn poisoned_lock_in_a_root_scanner_restarts_the_world() {
    within(60, "poisoned lock in a root scanner", || scanner_panics(true));
}
