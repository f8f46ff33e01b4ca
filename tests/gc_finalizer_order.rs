//! Finalizer order on the runtime (issue 9 item 5), adversarially: two
//! workers, the pacer's background cycles and lazy sweepers running while
//! tasks register finalizers (some during marks) on chains `a` -> `b` ->
//! plain list, `a` and `b` both finalizable. Every `a`'s finalizer must see
//! `b` and its plain list intact and run before `b`'s; every `b`'s must see
//! its list intact. The verifier is on. Negative control: with the
//! referents of finalizable objects not marked (test-only switch), `b`s are
//! finalized before their `a`. (The single-threaded ordering tests, with
//! their negative controls, are in `crates/gc/tests/finalizer_order.rs`.)

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{Gc, Heap, HeapConfig};
use usurp_testsupport::{scale, within};
use usurp_testsupport_gc::{intact, list, node, runtime, scrub, Node};

const LEN: usize = 16;

#[derive(Default)]
struct Counts {
    a_ran: AtomicUsize,
    b_ran: AtomicUsize,
    damaged: AtomicUsize,
    out_of_order: AtomicUsize,
}

/// One chain `a` -> (`b` list, plain list), made in a frame of its own so
/// that no copy of them stays in the caller's. `read`: the finalizers read
/// the referents (the control, whose referents may be freed, reads none).
#[inline(never)]
fn make_chain(heap: &Heap, counts: &Arc<Counts>, a_done: Arc<AtomicBool>, read: bool) {
    let b = list(LEN);
    let c = list(LEN);
    let a = node(LEN, Some(b), Some(c));
    let (ca, cb, done2) = (counts.clone(), counts.clone(), a_done.clone());
    heap.set_finalizer(b.raw(), move |b| {
        if !done2.load(Ordering::SeqCst) {
            cb.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
        if read && !intact(Gc::from_ref(b), LEN) {
            cb.damaged.fetch_add(1, Ordering::SeqCst);
        }
        cb.b_ran.fetch_add(1, Ordering::SeqCst);
    });
    heap.set_finalizer(a.raw(), move |a| {
        let a: Gc<Node> = Gc::from_ref(a).unwrap();
        if read && (!intact(a.left.get(), LEN) || !intact(a.right.get(), LEN)) {
            ca.damaged.fetch_add(1, Ordering::SeqCst);
        }
        a_done.store(true, Ordering::SeqCst);
        ca.a_ran.fetch_add(1, Ordering::SeqCst);
    });
}

/// What `chains` observed.
struct Outcome {
    total: usize,
    counts: Arc<Counts>,
    st: usurp::RuntimeStats,
}

/// The scenario; `referents`: see `Heap::set_finalizer_referent_marking`
/// (off: the control, verifier off and finalizers reading no referent).
fn chains(referents: bool) -> Outcome {
    let chains_per_task = scale(400);
    let tasks = 2;
    let total = chains_per_task * tasks;
    let counts = Arc::new(Counts::default());
    let c2 = counts.clone();
    // Watchdog: the scenario on its own thread, failing after 120 s.
    let st = within(120, "the scenario", move || {
        let cfg =
            HeapConfig { max_heap: 256 << 20, gogc: Some(20), min_heap: 1 << 20, verify: referents, ..HeapConfig::default() };
        let rt = runtime(2, cfg);
        rt.block_on(move || {
            Heap::current().unwrap().set_finalizer_referent_marking(referents);
            let hs: Vec<_> = (0..tasks)
                .map(|_| {
                    let counts = c2.clone();
                    usurp::spawn(move || {
                        let heap = Heap::current().unwrap();
                        for i in 0..chains_per_task {
                            make_chain(&heap, &counts, Arc::new(AtomicBool::new(false)), referents);
                            // Garbage, so that the pacer runs cycles meanwhile.
                            for _ in 0..(i % 8) {
                                black_box(list(1000));
                            }
                        }
                        scrub::<1024>();
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            scrub::<1024>();
            let heap = Heap::current().unwrap();
            // A chain needs two cycles after it died (a, then b): collect
            // until (almost) every b ran; conservative scanning may retain
            // a few chains.
            for _ in 0..400 {
                if c2.b_ran.load(Ordering::SeqCst) >= total {
                    break;
                }
                heap.collect();
                usurp::sleep(Duration::from_millis(1));
            }
        });
        rt.stats()
    });
    Outcome { total, counts, st }
}

#[test]
fn chains_are_finalized_in_order_under_concurrent_cycles() {
    let Outcome { total, counts, st } = chains(true);
    let (a, b) = (counts.a_ran.load(Ordering::SeqCst), counts.b_ran.load(Ordering::SeqCst));
    eprintln!("finalized a {a}, b {b} of {total}; {} cycles", st.gc.cycles);
    assert_eq!(counts.damaged.load(Ordering::SeqCst), 0, "a finalizer saw a damaged referent");
    assert_eq!(counts.out_of_order.load(Ordering::SeqCst), 0, "a b was finalized before its a");
    assert!(b <= a);
    assert!(a * 10 >= total * 9 && b * 10 >= total * 9, "finalized a {a}, b {b} of {total}");
    assert_eq!(st.gc.verify_failures, 0);
    assert_eq!(st.gc.bad_pointers, 0);
    assert_eq!(st.gc.finalizer_records_in_stops, 0);
}

/// Negative control: without referent marking, each `b` is found dead in
/// the same cycle as its `a`, and many run first (queued in sweep order,
/// `b` registered before `a` in the same block).
#[test]
fn control_without_referent_marking_finalizes_b_before_a() {
    let Outcome { total, counts, .. } = chains(false);
    let out_of_order = counts.out_of_order.load(Ordering::SeqCst);
    eprintln!("control: {out_of_order} of {total} b finalized before their a");
    assert!(out_of_order > 0, "control: no b was finalized before its a without referent marking");
}
