//! `Member::set` refuses a stale handle (an object a collection freed), as
//! `GcRef::set_ptr`, `Root::set`, `Heap::add_root` and `RootedVec::push`
//! do; under checkrefs, `Gc::new` refuses a `Member::new` field holding one
//! (red-team RT-gc item 7, session 14: both accepted it, only a range check,
//! and the field then named whatever object took the freed slot). Without
//! checkrefs `Gc::new`'s fields are not checked for staleness (a check per
//! field on every allocation; README "Stale handles"). Both tests fail
//! without the fix (checked by reverting `Member::set`'s liveness check and
//! `refcheck::refuse_stale_fields`: "a stale handle was accepted").
mod common;
use common::{catch, collect_elsewhere};
use usurp_gc::{gc_type, Gc, HeapConfig, Member};

#[repr(C)]
struct Cell {
    next: Member<Cell>,
    v: usize,
}
gc_type!(Cell { next });

/// A heap with `cfg`, this thread attached, a rooted holder, and a stale
/// `Gc<Cell>` (its object freed by a collection on another thread, which
/// the tests' World scans instead of this one).
fn stale(cfg: HeapConfig) -> (usurp_gc::Heap, usurp_gc::MutatorGuard, Gc<Cell>, usurp_gc::Root, Gc<Cell>) {
    common::quiet_panics(&["Gc::new of a"]);
    let h = common::heap_with(cfg);
    let g = h.attach_thread().unwrap();
    let holder = Gc::new(Cell { next: Member::null(), v: 1 });
    let keep = h.add_root(Some(holder.raw()));
    // (`holder.next`: made before the collection, since an allocation after
    // it could reuse the freed slot, and the stale handle name that.)
    holder.next.set(Some(Gc::new(Cell { next: Member::null(), v: 2 })));
    let x = Gc::new(Cell { next: Member::null(), v: 42 });
    collect_elsewhere(&h);
    let m = catch(|| x.raw().descriptor()).expect_err("the handle should be stale after the collection");
    assert!(m.contains("stale"), "{m:?}");
    (h, g, holder, keep, x)
}

#[test]
fn member_set_refuses_a_stale_handle() {
    let (_h, _g, holder, _keep, x) = stale(common::config(8 << 20));
    let live = holder.next.get().unwrap();
    holder.next.set(Some(live));
    let m = catch(|| holder.next.set(Some(x))).expect_err("a stale handle was accepted by Member::set");
    assert!(m.contains("stale"), "{m:?}");
    assert_eq!(holder.next.get(), Some(live), "the refused set changed the field");
    holder.next.set(None);
}

#[test]
fn gc_new_refuses_a_stale_field_under_checkrefs() {
    let (_h, _g, holder, _keep, x) = stale(HeapConfig { check_refs: true, ..common::config(8 << 20) });
    let m = catch(|| Gc::new(Cell { next: Member::new(Some(x)), v: 3 }))
        .expect_err("a stale handle was accepted by Gc::new (Member::new field) under checkrefs");
    assert!(m.contains("Gc::new of a `Cell`") && m.contains("stale handle"), "{m:?}");
    // Live fields are accepted (`holder`, and `holder.next`, rooted).
    let y = Gc::new(Cell { next: Member::new(Some(holder)), v: 4 });
    assert_eq!(y.next.get(), Some(holder));
    assert_eq!(holder.next.get().unwrap().v, 2);
}
