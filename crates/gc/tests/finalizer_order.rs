//! Finalizers ordered as Go orders them (issue 9 item 5): the referents of a
//! finalizable object are marked every cycle (not the object itself), so if
//! `a` references `b` and both have finalizers, `a`'s finalizer runs first,
//! with `b` and everything else `a` references intact, and `b` is found
//! dead only by a later cycle; a finalizable object its referents reach
//! (a cycle, finalizable or through plain objects, or a self-reference) is
//! never finalized (a documented leak, as in Go); and the registered
//! records are found by the sweep of their block, so no stop of a
//! concurrent cycle visits them (a stats counter says how many records
//! were visited with the world stopped).
//!
//! Objects are made on threads that exit and collections run on fresh
//! threads (`collect_elsewhere`), so that only heap references keep
//! anything alive (see `common`).

mod common;
use common::*;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use usurp_gc::{Gc, Heap, HeapConfig, WeakRef};

const LEN: usize = 64;

/// Allocates (and drops) nodes on a thread that exits, so that freed slots
/// of the node class get overwritten.
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

/// What the finalizers of the A -> B scenario saw.
#[derive(Default, Debug)]
struct Seen {
    /// Finalizers run, in order ("a", "b").
    order: Vec<&'static str>,
    /// When `a`'s finalizer ran: `b` and `c` (its plain child) intact, and
    /// `b` not finalized yet.
    a_saw_b_intact: Option<bool>,
    a_saw_c_intact: Option<bool>,
}

struct Scenario {
    h: Heap,
    seen: Arc<Mutex<Seen>>,
    b: usize,
    c: usize,
    weak_a: WeakRef,
    weak_b: WeakRef,
}

/// `a` (finalizable) references `b` (a list head, finalizable) and `c` (a
/// list without finalizer); nothing else references them.
fn a_reaches_b(referents: bool) -> Scenario {
    let h = heap(64 << 20);
    h.set_finalizer_referent_marking(referents);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (s_a, s_b) = (seen.clone(), seen.clone());
    let (b, c, weak_a, weak_b) = on_other_thread(&h, move |h| {
        let b = list(LEN).unwrap();
        let c = list(LEN).unwrap();
        let a = node(1, Some(b), Some(c));
        h.set_finalizer(b.raw(), move |_| s_b.lock().unwrap().order.push("b"));
        let h2 = h.clone();
        h.set_finalizer(a.raw(), move |a| {
            let a: Gc<Node> = Gc::from_ref(a).unwrap();
            let (b, c) = (a.left.get().unwrap(), a.right.get().unwrap());
            let mut s = s_a.lock().unwrap();
            s.a_saw_b_intact = Some(intact(&h2, b.raw().addr()) && !s.order.contains(&"b"));
            s.a_saw_c_intact = Some(intact(&h2, c.raw().addr()));
            s.order.push("a");
        });
        (b.raw().addr(), c.raw().addr(), h.weak(a.raw()), h.weak(b.raw()))
    });
    Scenario { h, seen, b, c, weak_a, weak_b }
}

/// A -> B, both finalizable: the cycle that finds `a` dead queues only
/// `a`'s finalizer, clears the weak reference to `a` but not to `b`, and
/// keeps `b` and `c` intact; `a`'s finalizer sees them intact; `b` is
/// finalized by the next cycle. Control (referents not marked): both are
/// queued by the same cycle and `c` is freed while `a`'s finalizer is
/// pending (before the fix, `b` was queued with `a` in the same cycle).
#[test]
fn a_reaching_b_is_finalized_first_and_b_later() {
    let s = a_reaches_b(true);
    let h = &s.h;
    let _g = h.attach_thread().unwrap();
    collect_elsewhere(h);
    churn(h);
    assert_eq!(h.stats().finalizers_pending, 1, "only a's finalizer is queued by the first cycle");
    assert_eq!(s.weak_a.get(), None, "the weak reference to a (found dead) is cleared");
    assert!(s.weak_b.get().is_some(), "b, kept for a's finalizer, is not found dead: its weak reference stays");
    assert!(intact(h, s.b) && intact(h, s.c), "a's referents damaged while its finalizer is pending");
    // Another cycle before the finalizer runs: still only `a` queued.
    collect_elsewhere(h);
    churn(h);
    assert_eq!(h.stats().finalizers_pending, 1);
    assert!(intact(h, s.b) && intact(h, s.c));
    assert_eq!(on_other_thread(h, |h| h.run_pending_finalizers()), 1);
    {
        let seen = s.seen.lock().unwrap();
        assert_eq!(seen.order, vec!["a"]);
        assert_eq!(seen.a_saw_b_intact, Some(true), "a's finalizer saw b damaged or already finalized");
        assert_eq!(seen.a_saw_c_intact, Some(true), "a's finalizer saw its plain child damaged");
    }
    // `a` is gone; `b` is unreachable now: found dead by the next cycle.
    collect_elsewhere(h);
    assert_eq!(h.stats().finalizers_pending, 1, "b's finalizer is queued by the cycle after a's ran");
    assert_eq!(s.weak_b.get(), None);
    assert_eq!(on_other_thread(h, |h| h.run_pending_finalizers()), 1);
    assert_eq!(s.seen.lock().unwrap().order, vec!["a", "b"]);
    collect_elsewhere(h);
    assert_eq!(h.find_object(s.b), None, "b leaked after its finalizer ran");
    let st = h.stats();
    assert_eq!(st.finalizers_registered, 0);
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
    assert_eq!(st.finalizer_records_in_stops, 0);
}

/// Negative control: with the referents of finalizable objects not marked
/// (test-only switch), the first cycle queues `a` and `b` together (`b`
/// would be finalized in the same cycle, possibly before `a`) and frees
/// `c`, which `a`'s finalizer would read. Its finalizers are not run (they
/// would read freed memory).
#[test]
fn control_without_referent_marking_finalizes_b_with_a_and_frees_c() {
    let s = a_reaches_b(false);
    let h = &s.h;
    let _g = h.attach_thread().unwrap();
    collect_elsewhere(h);
    churn(h);
    assert_eq!(h.stats().finalizers_pending, 2, "control: b was not queued with a");
    assert_eq!(s.weak_b.get(), None, "control: b's weak reference survived");
    assert!(!intact(h, s.c), "control: a's plain child survived without referent marking");
    assert!(s.seen.lock().unwrap().order.is_empty());
}

/// A cycle of finalizable objects (`a` <-> `b`) and an object referencing
/// itself, made on a thread that exits; `referents`: see
/// `Heap::set_finalizer_referent_marking`. Four cycles, running the
/// finalizers after each; returns the finalizers that ran and whether each
/// weak reference is still set.
fn finalizable_cycle(referents: bool) -> (Vec<&'static str>, [bool; 3], usurp_gc::GcStats) {
    let h = heap(64 << 20);
    h.set_finalizer_referent_marking(referents);
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let r = ran.clone();
    let weaks = on_other_thread(&h, move |h| {
        let a = node(1, None, None);
        let b = node(2, Some(a), None);
        a.left.set(Some(b));
        let c = node(3, None, None);
        c.left.set(Some(c));
        for (o, name) in [(a, "a"), (b, "b"), (c, "self")] {
            let r = r.clone();
            // Records only: the closures read nothing of the object.
            h.set_finalizer(o.raw(), move |_| r.lock().unwrap().push(name));
        }
        [h.weak(a.raw()), h.weak(b.raw()), h.weak(c.raw())]
    });
    for _ in 0..4 {
        collect_elsewhere(&h);
        on_other_thread(&h, |h| h.run_pending_finalizers());
    }
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    (ran, weaks.each_ref().map(|w| w.get().is_some()), h.stats())
}

/// A cycle of finalizable objects (`a` <-> `b`) and an object referencing
/// itself are never finalized: each is marked as a referent of a
/// finalizable object every cycle (Go's documented leak). Before issue 9
/// item 5 all three were finalized. Control: without referent marking
/// (test-only switch), all three are found dead and finalized by the first
/// cycle, and their weak references cleared.
#[test]
fn a_cycle_of_finalizable_objects_is_never_finalized() {
    let (ran, weaks, st) = finalizable_cycle(true);
    assert!(ran.is_empty(), "finalized: {ran:?}");
    assert_eq!(st.finalizers_registered, 3);
    assert_eq!(st.finalizers_pending, 0);
    assert_eq!(weaks, [true; 3], "a leaked finalizable cycle keeps its weak references");
    assert_eq!(st.verify_failures, 0);
    let (ran, weaks, st) = finalizable_cycle(false);
    assert_eq!(ran, vec!["a", "b", "self"], "control: the cycle was not finalized without referent marking");
    assert_eq!(weaks, [false; 3], "control: weak references to the dead cycle stayed");
    assert_eq!(st.finalizers_registered, 0);
}

/// A cycle's sweep of the blocks with finalizer records waits only for
/// those blocks, never for sweepers of other blocks: with a sweeper held
/// "in flight" forever (test-only switch: as the background sweeper busy
/// with a long lazy sweep), a stepped mark's finish (the world-running
/// half of a cycle: termination, then that sweep) still returns, with the
/// dead finalizable object's finalizer queued. Before the fix it spun
/// until no sweeper was in flight (here: forever, caught by the 30 s
/// watchdog); with 2000 record blocks on a 228 MB heap it waited 5 ms for
/// the background sweeper, preemption off, every cycle.
#[test]
fn the_finalizer_sweep_does_not_wait_for_sweepers_of_other_blocks() {
    let h = heap(64 << 20);
    // The held sweeper stands in for the background sweeper; the real one
    // stays off, or it may sweep the record block first (the bit cleared,
    // nothing swept or waited for by the finalizer sweep: the count below
    // is then 0, as CI once saw).
    h.set_background_sweeping(false);
    let (dead, live) = on_other_thread(&h, |h| {
        let dead = node(1, None, None);
        let live = node(2, None, None);
        h.set_finalizer(dead.raw(), |_| {});
        h.set_finalizer(live.raw(), |_| {});
        (h.weak(dead.raw()), h.add_root(Some(live.raw())))
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let h2 = h.clone();
    std::thread::spawn(move || {
        let _g = h2.attach_thread().unwrap();
        h2.debug_begin_marking();
        while !h2.debug_mark_steps(1000) {}
        h2.debug_hold_sweeper(true);
        h2.debug_finish_marking();
        tx.send(()).unwrap();
    });
    let done = rx.recv_timeout(std::time::Duration::from_secs(30));
    h.debug_hold_sweeper(false);
    done.expect("watchdog: the finalizer sweep waited for a sweeper of a block without records");
    let st = h.stats();
    assert_eq!(st.finalizers_pending, 1, "the dead object's finalizer was not queued when the cycle returned");
    assert_eq!(st.finalizers_registered, 1);
    assert!(
        st.blocks_swept_for_finalizers >= 1,
        "the record block was not swept by the cycle's finalizer sweep: {st:?}"
    );
    assert_eq!(dead.get(), None);
    assert!(live.get().is_some());
}

/// `blocks_swept_before_mark` counts the sweep that finishes the previous
/// cycle's before a mark, not the sweep of the record blocks right after
/// it (`blocks_swept_for_finalizers`): with every block swept and the
/// background sweeper off, a collection sweeps nothing before its mark
/// and the record blocks after it. (The latter once counted as the
/// former.)
#[test]
fn the_sweep_of_record_blocks_is_not_counted_as_before_the_mark() {
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    on_other_thread(&h, |h| {
        for i in 0..3000 {
            // Records on many blocks (a block's worth of nodes apart).
            let o = node(i, None, None);
            if i % 500 == 0 {
                h.set_finalizer(o.raw(), |_| {});
            }
        }
    });
    h.finish_sweep();
    let s0 = h.stats();
    collect_elsewhere(&h);
    let s1 = h.stats();
    assert_eq!(s1.blocks_swept_before_mark, s0.blocks_swept_before_mark, "nothing was left to sweep before the mark");
    assert!(
        s1.blocks_swept_for_finalizers > s0.blocks_swept_for_finalizers,
        "the record blocks were not swept (and counted) after the mark"
    );
    assert_eq!(s1.finalizers_registered, 0);
    assert_eq!(s1.finalizers_pending, 6);
}

const MANY: usize = 100_000;

/// 100k finalizers registered on live objects (a rooted list), three
/// collections, then the list dropped and one more. Returns the stats.
fn many_finalizers(cfg: HeapConfig) -> usurp_gc::GcStats {
    let h = heap_with(cfg);
    let _g = h.attach_thread().unwrap();
    let root = on_other_thread(&h, |h| {
        let mut head: Option<Gc<Node>> = None;
        for i in 0..MANY {
            head = Some(node(i, head, None));
            h.set_finalizer(head.unwrap().raw(), |o| {
                black_box(o);
            });
        }
        h.add_root(head.map(|n| n.raw()))
    });
    for _ in 0..3 {
        collect_elsewhere(&h);
        let st = h.stats();
        assert_eq!(st.finalizers_registered, MANY);
        assert_eq!(st.finalizers_pending, 0, "a finalizer of a live object was queued");
    }
    // Still intact.
    let mut cur = root.get().and_then(Gc::<Node>::from_ref);
    let mut n = MANY;
    while let Some(x) = cur {
        n -= 1;
        assert_eq!(x.val, n);
        cur = x.left.get();
    }
    assert_eq!(n, 0);
    drop(root);
    // Dead: the head is found dead first (it references the rest).
    collect_elsewhere(&h);
    let st = h.stats();
    assert_eq!(st.finalizers_pending, 1, "only the head of a chain of finalizable objects is queued first");
    assert_eq!(st.finalizers_registered, MANY - 1);
    assert_eq!(st.verify_failures, 0);
    st
}

/// Many registered finalizers on live objects: no stop visits their records
/// (a concurrent cycle scans them with the world running; the sweep finds
/// the dead ones). The counter follows the world's actual state (records
/// visited between the collector's `stop_the_world` and `start_the_world`
/// calls), not a flag its callers pass. Control: the stop-the-world mark
/// visits each in each of its stops, which the counter shows.
#[test]
fn registered_finalizers_are_not_visited_in_the_stops() {
    let st = many_finalizers(config(256 << 20));
    assert_eq!(st.finalizer_records_in_stops, 0, "a stop visited finalizer records");
    let st = many_finalizers(HeapConfig { stw_marking: true, ..config(256 << 20) });
    assert_eq!(
        st.finalizer_records_in_stops,
        4 * MANY as u64,
        "control: the stop-the-world mark's counter does not count the records it visits"
    );
}

/// A finalizer registered while the heap marks, after the mark scanned the
/// records (the stepped mark's begin scans them), whose closure captures
/// the only reference to a list `y` that the mark has not reached (it was
/// on a stack the stepped mark does not scan): `set_finalizer` shades the
/// captures (Go's `addfinalizer`), so `y` survives the mark. Returns
/// whether `y` is intact after the mark and its sweep.
fn registered_during_a_mark(shading: bool) -> bool {
    let h = heap(64 << 20);
    h.set_finalizer_registration_shading(shading);
    on_other_thread(&h, |h| {
        let x = node(1, None, None);
        let root = h.add_root(Some(x.raw()));
        let y = list(LEN).unwrap().raw();
        let ya = y.addr();
        h.debug_begin_marking();
        h.set_finalizer(x.raw(), move |_| {
            black_box(y);
        });
        while !h.debug_mark_steps(1000) {}
        h.debug_finish_marking();
        h.finish_sweep();
        black_box(root);
        intact(h, ya)
    })
}

/// See `registered_during_a_mark`; control: without the shading, `y` is
/// freed by the mark while the registered closure still holds it.
#[test]
fn a_finalizer_registered_during_a_mark_keeps_its_captures() {
    assert!(registered_during_a_mark(true), "a finalizer's capture registered during a mark was freed");
    assert!(!registered_during_a_mark(false), "control: the capture survived without the registration's shading");
}

/// `stats()` while sweeps queue finalizers: the sweep takes the finalizer
/// table's lock, then the pending queue's; `stats()` once held the pending
/// queue's lock while taking the table's (a lock-order inversion: this
/// test then hung until its watchdog; 2 s with the fix). Watchdog: 60 s.
#[test]
fn stats_while_sweeps_queue_finalizers_does_not_deadlock() {
    let h = heap(64 << 20);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (h2, stop2) = (h.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    n += h2.stats().finalizers_registered as u64;
                }
                n
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let h3 = h.clone();
    std::thread::spawn(move || {
        for _ in 0..usurp_testsupport::scale(200) {
            on_other_thread(&h3, |h| {
                for i in 0..2000 {
                    // One object a block's worth apart: many blocks with records.
                    let o = node(i, None, None);
                    for _ in 0..(i % 4) * 50 {
                        black_box(node(0, None, None));
                    }
                    h.set_finalizer(o.raw(), |o| {
                        black_box(o);
                    });
                }
            });
            collect_elsewhere(&h3);
            on_other_thread(&h3, |h| h.run_pending_finalizers());
        }
        tx.send(()).unwrap();
    });
    let done = rx.recv_timeout(std::time::Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    done.expect("watchdog: a collection or stats() hung (lock-order inversion?)");
    for r in readers {
        r.join().unwrap();
    }
    assert!(h.stats().finalizers_run > 0);
}

/// A finalizable object on a cycle through *plain* objects (`a`
/// finalizable -> `p` plain -> `a`, e.g. a parent pointer or a doubly
/// linked list) is never finalized either (Go's rule: its referents are
/// marked, and they reach it); the README and `Heap::set_finalizer` say
/// so. (From the review of the finalizer work, which found the README
/// naming only finalizable cycles and self-references.) Its negative
/// control is `a_cycle_of_finalizable_objects_is_never_finalized`'s: the
/// same marking switched off finalizes cycles.
#[test]
fn a_finalizable_object_on_a_cycle_through_a_plain_object_leaks() {
    let h = heap(64 << 20);
    let ran: Arc<Mutex<usize>> = Arc::default();
    let r = ran.clone();
    let w = on_other_thread(&h, move |h| {
        let a = node(1, None, None);
        let p = node(2, Some(a), None);
        a.left.set(Some(p));
        h.set_finalizer(a.raw(), move |_| *r.lock().unwrap() += 1);
        h.weak(a.raw())
    });
    for _ in 0..4 {
        collect_elsewhere(&h);
        on_other_thread(&h, |h| h.run_pending_finalizers());
    }
    assert_eq!(*ran.lock().unwrap(), 0);
    assert!(w.get().is_some(), "a, on a cycle through a plain object, leaks");
}
