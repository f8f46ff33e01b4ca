//! The untyped API refuses the objects of Rust types (red-team F0a): the
//! payload of a `gc_type!` object is a Rust value whose fields have validity
//! invariants (a `bool`, a `&'static str`, the type a `Member<A>` names),
//! which `GcRef::set_word` / `set_ptr` / `set_value` and `alloc` of its
//! descriptor could break from safe code (a `bool` holding 2, a dangling
//! `&str`, a `Member<A>` naming a `B`, a never-constructed `T` with a null
//! reference). Guest objects (descriptors not marked `rust_type`) keep the
//! untyped API.
mod common;

use common::{catch, quiet_panics};
use usurp_gc::{alloc, alloc_array, gc_type, try_alloc, Descriptor, Gc, GcType, Heap, HeapConfig, Member};

#[repr(C)]
struct Named {
    name: &'static str,
    flag: bool,
}
gc_type!(Named {});

#[repr(C)]
struct A {
    v: usize,
}
gc_type!(A {});
#[repr(C)]
struct B {
    w: usize,
}
gc_type!(B {});
#[repr(C)]
struct Holder {
    a: Member<A>,
}
gc_type!(Holder { a });
#[repr(C)]
struct CHolder {
    a: Member<A>,
    n: usize,
}
gc_type!(compact CHolder { a });

/// A hand-written `GcType` with a value slot (as `gc_type!` cannot list one).
#[repr(C)]
struct Tagged {
    v: std::sync::atomic::AtomicUsize,
}
static TAGGED: Descriptor = Descriptor::fixed_with_values("Tagged", 1, &[], &[1]).rust_type();
// SAFETY: one word, a value slot, as TAGGED says; marked as a Rust type.
unsafe impl GcType for Tagged {
    fn descriptor() -> &'static Descriptor {
        &TAGGED
    }
}

/// A hand-written `GcType` whose descriptor lacks the Rust-type mark.
#[repr(C)]
struct Unmarked {
    v: usize,
}
static UNMARKED: Descriptor = Descriptor::fixed("Unmarked", 1, &[]);
// SAFETY: deliberately breaks the contract's Rust-type mark (the size and
// slots are right): Gc::new and Gc::from_ref must refuse it.
unsafe impl GcType for Unmarked {
    fn descriptor() -> &'static Descriptor {
        &UNMARKED
    }
}

fn heap() -> Heap {
    quiet_panics(&["Rust type", "gc_type!"]);
    Heap::new(HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() }).unwrap()
}

#[test]
fn gc_type_descriptors_are_marked_rust_types() {
    assert!(Named::descriptor().is_rust_type());
    assert!(CHolder::descriptor().is_rust_type() && CHolder::descriptor().is_compact());
    assert!(!Descriptor::builder(2).build().unwrap().is_rust_type());
    assert!(Descriptor::builder(2).rust_type().build().unwrap().is_rust_type());
}

#[test]
fn set_word_refuses_a_gc_type_object() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let g = Gc::new(Named { name: "usurp", flag: true });
    let e = catch(|| g.raw().set_word(2, 2)).expect_err("set_word wrote a bool field");
    assert!(e.contains("set_word") && e.contains("Rust type `Named`"), "{e}");
    let e = catch(|| g.raw().set_word(0, 0x4141_4141_0000)).expect_err("set_word wrote a &str field");
    assert!(e.contains("set_word"), "{e}");
    assert!(g.flag && g.name == "usurp", "the fields changed");
    // (Untyped reads of its plain fields are refused too: rust_type_reads.rs.)
}

#[test]
fn set_ptr_refuses_a_gc_type_object() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    for compact in [false, true] {
        let a = Gc::new(A { v: 1 });
        let b = Gc::new(B { w: 7 });
        let (raw, field): (_, Box<dyn Fn() -> Option<Gc<A>>>) = if compact {
            let c = Gc::new(CHolder { a: Member::new(Some(a)), n: 0 });
            (c.raw(), Box::new(move || c.a.get()))
        } else {
            let c = Gc::new(Holder { a: Member::new(Some(a)) });
            (c.raw(), Box::new(move || c.a.get()))
        };
        let e = catch(|| raw.set_ptr(0, Some(b.raw()))).expect_err("set_ptr stored a B into a Member<A>");
        assert!(e.contains("set_ptr") && e.contains("Rust type"), "{e}");
        // Even a store of the right type or null goes through Member::set.
        let e = catch(|| raw.set_ptr(0, None)).expect_err("set_ptr wrote a Member");
        assert!(e.contains("set_ptr"), "{e}");
        assert_eq!(field(), Some(a), "the field changed");
        assert_eq!(field().unwrap().v, 1);
    }
}

#[test]
fn set_value_refuses_a_rust_type_object() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let t = Gc::new(Tagged { v: 40.into() });
    let e = catch(|| t.raw().set_value(0, 41)).expect_err("set_value wrote a Rust field");
    assert!(e.contains("set_value") && e.contains("Rust type `Tagged`"), "{e}");
    assert_eq!(t.v.load(std::sync::atomic::Ordering::Relaxed), 40);
    assert_eq!(t.raw().value(0), 40);
}

#[test]
fn alloc_refuses_a_rust_types_descriptor() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let e = catch(|| alloc(Named::descriptor())).expect_err("alloc made a Named no value was written to");
    assert!(e.contains("Rust type") && e.contains("Gc::new") && e.contains("`Named`"), "{e}");
    let e = catch(|| try_alloc(CHolder::descriptor())).expect_err("try_alloc made a compact CHolder");
    assert!(e.contains("Gc::new"), "{e}");
    static ARR: Descriptor = Descriptor::array("RustArr", 1, 0).rust_type();
    let e = catch(|| alloc_array(&ARR, 3)).expect_err("alloc_array of a Rust type's descriptor");
    assert!(e.contains("Gc::new"), "{e}");
}

#[test]
fn a_hand_written_gc_type_must_mark_its_descriptor() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let e = catch(|| Gc::new(Unmarked { v: 1 })).expect_err("Gc::new of an unmarked descriptor");
    assert!(e.contains("not marked as a Rust type"), "{e}");
    let r = alloc(&UNMARKED); // a guest object of that layout: allowed
    r.set_word(0, 5);
    let e = catch(|| Gc::<Unmarked>::from_ref(r)).expect_err("Gc::from_ref of an unmarked descriptor");
    assert!(e.contains("not marked as a Rust type"), "{e}");
}

#[test]
fn guest_objects_keep_the_untyped_api() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let d = Descriptor::builder(3).pointer_at(0).value_at(1).name("guest").build().unwrap();
    let x = alloc(d);
    let y = alloc(d);
    x.set_ptr(0, Some(y));
    x.set_value(1, y.addr()); // (untagged encoding: a pointer)
    x.set_word(2, 44);
    assert_eq!((x.ptr(0), x.value(1), x.word(2)), (Some(y), y.addr(), 44));
    let arr = alloc_array(Box::leak(Box::new(Descriptor::array("garr", 1, 0))), 2);
    arr.set_word(1, 9);
    assert_eq!(arr.word(1), 9);
}
