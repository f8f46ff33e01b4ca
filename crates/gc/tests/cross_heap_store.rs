//! Stores of another heap's object into this heap's objects are refused
//! (`set_ptr`, `set_value`, `Member::set`): that heap would not see the
//! reference and could free its target. Before the heap-identity change
//! `set_value` stored it (found by its review).
mod common;
use common::with_foreign;
use usurp_gc::{alloc, gc_type, Descriptor, Gc, Heap, HeapConfig, Member};

#[repr(C)]
struct Link {
    next: Member<Link>,
}
gc_type!(Link { next });

#[test]
fn set_value_refuses_another_heaps_object_like_set_ptr() {
    let cfg = || HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() };
    let a = Heap::new(cfg()).unwrap();
    let b = Heap::new(cfg()).unwrap();
    let d = Descriptor::builder(2).pointer_at(0).value_at(1).name("rev").build().unwrap();
    let a2 = a.clone();
    let (x, _root) = std::thread::spawn(move || {
        let _g = a2.attach_thread().unwrap();
        let r = alloc(d);
        (r, a2.add_root(Some(r)))
    })
    .join()
    .unwrap();
    let _g = b.attach_thread().unwrap();
    let y = alloc(d);
    let _ry = b.add_root(Some(y));
    let ptr = std::panic::catch_unwind(|| y.set_ptr(0, Some(x))).is_err();
    let val = std::panic::catch_unwind(|| y.set_value(1, x.addr())).is_err();
    assert!(ptr, "set_ptr stored heap a's object into heap b's");
    assert!(val, "set_value stored heap a's object into heap b's (set_ptr refuses it)");
}

#[test]
fn member_set_refuses_another_heaps_object() {
    let (_a, b, x, _root) = with_foreign(|| Link { next: Member::null() });
    let _g = b.attach_thread().unwrap();
    let y = Gc::new(Link { next: Member::null() });
    let _ry = b.add_root(Some(y.raw()));
    let same = Gc::new(Link { next: Member::null() });
    y.next.set(Some(same)); // this heap's object: fine
    assert_eq!(y.next.get(), Some(same));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.next.set(Some(x))));
    let msg = r.err().and_then(|p| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(msg.contains("another usurp heap"), "Member::set stored heap a's object into heap b's: {msg:?}");
    assert_eq!(y.next.get(), Some(same), "the refused store changed the field");
}

/// `Gc::new` of a value whose `Member` field holds another heap's object is
/// refused at construction (it used to be stored, and only a later read of
/// the field panicked), naming the type and the word; this heap's own
/// objects in fields are fine.
#[test]
fn gc_new_refuses_another_heaps_object_in_a_field() {
    let (_a, b, x, _root) = with_foreign(|| Link { next: Member::null() });
    let _g = b.attach_thread().unwrap();
    let same = Gc::new(Link { next: Member::null() });
    let ok = Gc::new(Link { next: Member::new(Some(same)) });
    assert_eq!(ok.next.get(), Some(same));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Gc::new(Link { next: Member::new(Some(x)) })));
    let msg = r.err().and_then(|p| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(
        msg.contains("another usurp heap") && msg.contains("Link") && msg.contains("payload word 0"),
        "Gc::new stored heap a's object in a field of heap b's: {msg:?}"
    );
}

/// A type with a value slot, by hand (`gc_type!` lists pointer fields only).
#[repr(C)]
struct Tagged {
    v: std::sync::atomic::AtomicUsize,
}
// SAFETY: one word, a value slot, as the descriptor says; headered layout
// (the default payload offset); marked as a Rust type.
unsafe impl usurp_gc::GcType for Tagged {
    fn descriptor() -> &'static Descriptor {
        static D: std::sync::OnceLock<&'static Descriptor> = std::sync::OnceLock::new();
        D.get_or_init(|| Box::leak(Box::new(Descriptor::builder(1).value_at(0).name("Tagged").rust_type().build().unwrap())))
    }
}

/// The same for a value slot, decoded with the heap's encoding (the default:
/// untagged): another heap's object is refused; this heap's object and a
/// word outside every heap are left as before (the latter is refused only
/// when read, with one heap or several alike).
#[test]
fn gc_new_refuses_another_heaps_object_in_a_value_slot() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_a, b, x, _root) = with_foreign(|| Link { next: Member::null() });
    let _g = b.attach_thread().unwrap();
    let same = Gc::new(Link { next: Member::null() });
    let ok = Gc::new(Tagged { v: AtomicUsize::new(same.raw().addr()) });
    assert_eq!(ok.v.load(Ordering::Relaxed), same.raw().addr());
    let outside = Gc::new(Tagged { v: AtomicUsize::new(0x1000) });
    assert_eq!(outside.v.load(Ordering::Relaxed), 0x1000);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Gc::new(Tagged { v: AtomicUsize::new(x.raw().addr()) })
    }));
    let msg = r.err().and_then(|p| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(
        msg.contains("another usurp heap") && msg.contains("Tagged"),
        "Gc::new stored heap a's object in a value slot of heap b's: {msg:?}"
    );
}

#[repr(C)]
struct Two {
    a: Member<Two>,
    b: Member<Two>,
}
gc_type!(Two { a, b });

/// A refused `Gc::new` clears every foreign field of the object it had
/// allocated (garbage, but `object_at` or a conservative word can still
/// find it), not only the first (found by the review of the refusal: the
/// second field kept heap a's address).
#[test]
fn gc_new_refusal_clears_every_foreign_field() {
    let (_ha, hb, x, _root) = with_foreign(|| Two { a: Member::null(), b: Member::null() });
    let _g = hb.attach_thread().unwrap();
    let probe = Gc::new(Two { a: Member::null(), b: Member::null() });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Gc::new(Two { a: Member::new(Some(x)), b: Member::new(Some(x)) })
    }));
    assert!(r.is_err(), "Gc::new stored heap a's object");
    // The refused object: the next slot after `probe` in its block.
    let o = (8..=128)
        .step_by(8)
        .find_map(|off| hb.object_at(probe.raw().addr() + off))
        .expect("the refused object next to the probe");
    // SAFETY: a live object of this thread's heap (just found by object_at).
    let (w0, w1) = unsafe { (o.word_unchecked(0), o.word_unchecked(1)) };
    assert_eq!((w0, w1), (0, 0), "a foreign field of the refused object was kept (x = {:#x})", x.raw().addr());
}
