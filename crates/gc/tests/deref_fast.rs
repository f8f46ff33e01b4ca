//! `Gc<T>::deref`'s fast path (`refcheck::is_live_as`): it accepts a live
//! object of its type in every sweep state of its block (so dereferences
//! take it: it is not dead code), and it accepts nothing the general check
//! refuses (a dead object, unswept or swept; a reused slot; another type).
//! Headered and compact layouts; large objects take the general check.

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::{deref_fast_path_for_tests, gc_type, Descriptor, Gc, GcRef, GcType, HeapConfig, Member};

/// A second headered type, of `Node`'s size class: a `Node` handle must
/// not pass for it (the header comparison).
#[repr(C)]
struct Twin {
    a: usize,
    next: Member<Twin>,
    b: usize,
}
gc_type!(Twin { next });

/// Pointer-free types (noscan blocks), headered and compact: they take the
/// fast path too (its kind comparison ignores the noscan bit).
#[repr(C)]
struct Plain {
    a: usize,
    b: usize,
}
gc_type!(Plain {});
#[repr(C)]
struct CPlain {
    a: usize,
    b: usize,
}
gc_type!(compact CPlain {});

/// Too large for a size class: a large object, never on the fast path.
#[repr(C)]
struct Big {
    next: Member<Big>,
    words: [usize; 5000],
}
gc_type!(Big { next });

/// Whether the fast path accepts `r` as an object of `d` (one of the
/// four test types).
fn fast(r: GcRef, d: &'static Descriptor) -> bool {
    if std::ptr::eq(d, Node::descriptor()) {
        deref_fast_path_for_tests::<Node>(r)
    } else if std::ptr::eq(d, Twin::descriptor()) {
        deref_fast_path_for_tests::<Twin>(r)
    } else if std::ptr::eq(d, CVal::descriptor()) {
        deref_fast_path_for_tests::<CVal>(r)
    } else {
        assert!(std::ptr::eq(d, COther::descriptor()));
        deref_fast_path_for_tests::<COther>(r)
    }
}

/// What the general check says of `r` as a `d` object.
fn general(r: GcRef, d: &'static Descriptor) -> bool {
    r.is_live() && std::ptr::eq(r.descriptor(), d)
}

/// The fast path never accepts what the general check refuses.
fn assert_agrees(rs: &[GcRef], ds: &[&'static Descriptor], when: &str) {
    for &r in rs {
        for &d in ds {
            if fast(r, d) {
                assert!(general(r, d), "{when}: the fast path accepted {r:?} as a `{}`, the general check refuses", d.name());
            }
        }
    }
}

/// Object `i` of the test: the four types in turn.
fn new_object(i: usize) -> GcRef {
    match i % 4 {
        0 => Gc::new(Node { left: Member::null(), right: Member::null(), val: i }).raw(),
        1 => Gc::new(Twin { a: i, next: Member::null(), b: i }).raw(),
        2 => Gc::new(CVal { next: Member::null(), a: i, b: i }).raw(),
        _ => Gc::new(COther { x: i, next: Member::null(), y: i }).raw(),
    }
}

#[test]
fn the_deref_fast_path_accepts_exactly_live_objects_of_its_type() {
    // (No collection but the one below: the config's `gogc` is `None`.)
    let h = heap_with(HeapConfig { verify: false, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let (node, cval, cother) = (Node::descriptor(), CVal::descriptor(), COther::descriptor());
    let ds = [node, Twin::descriptor(), cval, cother];
    // Half of each kind rooted, half dead; built on another thread so that
    // no stale word on this stack keeps the dead ones.
    let (live, dead): (Vec<GcRef>, Vec<GcRef>) = on_other_thread(&h, |h| {
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for i in 0..800 {
            let r = new_object(i);
            if (i / 4) % 2 == 0 {
                std::mem::forget(h.add_root(Some(r)));
                live.push(r);
            } else {
                dead.push(r);
            }
        }
        (live, dead)
    });
    let own = |r: GcRef| ds[ds.iter().position(|d| std::ptr::eq(r.descriptor(), *d)).unwrap()];

    // Fresh blocks (swept for the current generation): every object is
    // live and taken by the fast path under its own type only.
    for &r in live.iter().chain(&dead) {
        let d = own(r);
        assert!(fast(r, d), "fresh block: the fast path refused a live `{}`", d.name());
        for &o in &ds {
            assert!(std::ptr::eq(o, d) || !fast(r, o), "accepted a `{}` as a `{}`", d.name(), o.name());
        }
    }

    // After a collection, before any sweep: the rooted objects are marked
    // (fast path), the dead ones unswept with their start bits still set
    // (refused by both paths).
    collect_elsewhere(&h);
    let st = h.stats();
    assert_eq!(st.blocks_swept_background + st.blocks_swept_by_allocation, 0, "nothing swept yet");
    for &r in &live {
        assert!(fast(r, own(r)), "unswept block: the fast path refused a marked object");
    }
    for &r in &dead {
        assert!(!r.is_live(), "a dead unswept object passed the general check");
    }
    assert_agrees(&live, &ds, "unswept");
    assert_agrees(&dead, &ds, "unswept");

    // Swept: the live ones still pass by their start bit; the dead slots,
    // once reused by new objects of the other compact type or headered
    // ones, pass only as what now lives there.
    h.finish_sweep();
    for &r in &live {
        assert!(fast(r, own(r)), "swept block: the fast path refused a live object");
    }
    assert_agrees(&dead, &ds, "swept, not reused");
    let fresh: Vec<GcRef> = (0..2000)
        .map(new_object)
        .collect();
    let reused = dead.iter().filter(|r| r.is_live()).count();
    assert!(reused > 100, "only {reused} dead slots were reused");
    assert_agrees(&dead, &ds, "reused");
    assert_agrees(&fresh, &ds, "fresh after a sweep");
    for &r in &fresh {
        assert!(fast(r, own(r)), "an object allocated after the sweep is refused by the fast path");
    }

    // Pointer-free objects (noscan blocks) take the fast path too.
    let plain = Gc::new(Plain { a: 1, b: 2 });
    let cplain = Gc::new(CPlain { a: 3, b: 4 });
    assert!(deref_fast_path_for_tests::<Plain>(plain.raw()), "a pointer-free headered object missed the fast path");
    assert!(deref_fast_path_for_tests::<CPlain>(cplain.raw()), "a pointer-free compact object missed the fast path");
    assert!(!deref_fast_path_for_tests::<Plain>(cplain.raw()) && !deref_fast_path_for_tests::<CPlain>(plain.raw()));
    assert_eq!((plain.a, plain.b, cplain.a, cplain.b), (1, 2, 3, 4));
    // Inside a compact object of a power-of-two class (16 bytes: a mask and
    // a shift find the slot), where no header comparison follows: only the
    // slot-boundary test refuses these (review: without it, `cplain + 8`
    // passed as a `CPlain`).
    for delta in [4, 8, 12] {
        // SAFETY: only handed to the check, never dereferenced.
        let inside = unsafe { GcRef::from_addr(cplain.raw().addr() + delta) }.unwrap();
        assert!(!deref_fast_path_for_tests::<CPlain>(inside), "the fast path accepted a `CPlain` + {delta}");
    }

    // Addresses inside a live object, 4, 8 and 16 bytes in (the test
    // types' slots are of 24 and 32 bytes): the fast path has no `addr %
    // 8` test, its slot-boundary test refuses them.
    for &r in &live {
        for delta in [4, 8, 16] {
            // SAFETY: only handed to the checks, never dereferenced.
            let inside = unsafe { GcRef::from_addr(r.addr() + delta) }.unwrap();
            for &d in &ds {
                assert!(!fast(inside, d), "the fast path accepted {r:?} + {delta} as a `{}`", d.name());
            }
        }
    }

    // Large objects, arrays and foreign addresses go to the general check.
    let big = Gc::new(Big { next: Member::null(), words: [7; 5000] });
    assert!(big.raw().is_live() && !deref_fast_path_for_tests::<Big>(big.raw()), "a large object took the fast path");
    assert_eq!(big.words[4999], 7);
    let arr = Descriptor::array_builder(1).name("Words").build().unwrap();
    let a = usurp_gc::alloc_array(arr, 4);
    assert!(a.is_live() && ds.iter().all(|&d| !fast(a, d)), "an array passed for a fixed type");
    let x = Box::new([0usize; 4]);
    // SAFETY: only handed to the check, never dereferenced.
    let foreign = unsafe { GcRef::from_addr(x.as_ptr() as usize) }.unwrap();
    assert!(!fast(foreign, node));
    black_box((live, fresh, plain, cplain, big, a, x));
}
