//! The per-descriptor (typed) allocation caches of compact objects at cycle
//! boundaries, and a `CompactId` shared by two descriptors (written by the
//! review of the compact layout; each test failed under the mutation it
//! names).
//!
//! The typed caches are given up at a cycle's sweep start
//! (`Mutator::flush_caches`): a compact object allocated right after a
//! collection, before the lazy sweep reached the block the mutator was
//! allocating in, survives that sweep (fails if `flush_caches` skips the
//! typed caches). Marking in the pause (`stw_marking`), so that no
//! concurrent mark's start stop releases the caches before the sweep
//! start does.

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::descriptor::CompactId;
use usurp_gc::{alloc, Descriptor, Gc, Member};

#[test]
fn compact_objects_allocated_after_a_collection_survive_its_lazy_sweep() {
    let h = heap_with(usurp_gc::HeapConfig { stw_marking: true, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    // The mutator's typed cache holds a partly used block.
    let mut head: Option<Gc<CVal>> = None;
    for i in 0..100 {
        head = Some(Gc::new(CVal { next: Member::new(head), a: i, b: !i }));
    }
    h.collect(); // leaves every block unswept for the new mark
    // Allocated now: must not land in the (unswept) block the cache held.
    let mut fresh: Vec<Gc<CVal>> = Vec::new();
    for i in 0..100 {
        fresh.push(Gc::new(CVal { next: Member::null(), a: 1000 + i, b: 7 }));
    }
    let keep = h.add_root(Some(fresh[0].raw()));
    let kept: Vec<_> = fresh.iter().map(|g| h.add_root(Some(g.raw()))).collect();
    h.finish_sweep();
    for (i, g) in fresh.iter().enumerate() {
        assert!(g.raw().is_live(), "compact object {i} allocated after the collection was swept away");
        assert_eq!((g.a, g.b), (1000 + i, 7));
    }
    black_box((head, &fresh, keep, kept));
}

/// Black allocation through the typed caches: a concurrent mark's start
/// takes every typed cache away (`Mutator::release_all`), so that a compact
/// object allocated during the mark is black even when the mutator held a
/// typed block from before the mark. The object is held by no root (only
/// an xored address): black, it survives the cycle's sweep. (Passes on the
/// branch; fails if `release_all` skips the typed caches.)
#[test]
fn compact_objects_allocated_during_a_mark_are_black() {
    const X: usize = 0x5a5a;
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    h.collect();
    h.finish_sweep();
    // The typed cache now holds a block taken before the mark.
    let warm = Gc::new(CVal { next: Member::null(), a: 1, b: 1 });
    let warm_root = h.add_root(Some(warm.raw()));
    h.debug_begin_marking();
    let hidden: Vec<usize> =
        (0..50).map(|i| Gc::new(CVal { next: Member::null(), a: i, b: 9 }).raw().addr() ^ X).collect();
    while !h.debug_mark_steps(64) {}
    h.debug_finish_marking();
    h.finish_sweep();
    for (i, &a) in hidden.iter().enumerate() {
        assert!(
            h.object_at(black_box(a) ^ X).is_some(),
            "compact object {i} allocated during the mark was not black"
        );
    }
    black_box((warm_root, &hidden));
}

static SHARED_ID: CompactId = CompactId::new();
/// 16-byte class.
static SMALL: Descriptor = Descriptor::fixed("small", 2, &[0b11]).compact(&SHARED_ID);
/// 32-byte class, the same id (the misuse).
static BIG: Descriptor = Descriptor::fixed("big", 4, &[]).compact(&SHARED_ID);

/// Two compact descriptors given one `CompactId` (safe code can write
/// it) would share one typed allocation cache, and the fast path carved
/// one's objects out of the other's block with its own stride: two live
/// allocations at one address (the review's finding). Now the second
/// descriptor's allocation panics with a message that names both, and the
/// first one's objects are untouched.
#[test]
fn two_compact_descriptors_sharing_an_id_panic_clearly_instead_of_overlapping() {
    let h = heap(64 << 20);
    let _g = h.attach_thread().unwrap();
    let first: Vec<usurp_gc::GcRef> = (0..10).map(|_| alloc(&SMALL)).collect();
    let err = std::panic::catch_unwind(|| alloc(&BIG)).expect_err("the second descriptor of one CompactId allocated");
    let msg = err.downcast_ref::<String>().map(String::as_str).unwrap_or("");
    assert!(msg.contains("`small` and `big` share one CompactId"), "unclear message: {msg:?}");
    // The first descriptor still allocates, into distinct slots.
    let mut all: Vec<usize> = first.iter().chain([alloc(&SMALL)].iter()).map(|r| r.addr()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 11);
    assert!(all.windows(2).all(|w| w[0] + 16 <= w[1]));
    black_box(&first);
}
