//! `Heap::add_root`, `Root::set` and `Heap::weak` refuse another heap's
//! object, as `RootedVec::push` does: the heap whose table would hold the
//! slot neither keeps that object alive nor clears the slot, so the root
//! (or weak reference) would later name whatever object took its place.
//! Before the check all three accepted it (red-team finding F3, session 11:
//! `misc root_other_heap`, `tl weak_other_heap`).
mod common;
use usurp_gc::{gc_type, Gc, GcRef, Member};

#[repr(C)]
struct Link {
    next: Member<Link>,
}
gc_type!(Link { next });

/// The panic message of `f`, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    common::catch(f).err()
}

#[test]
fn roots_and_weak_refs_refuse_another_heaps_object() {
    let (_a, b, x, _rx) = common::with_foreign(|| Link { next: Member::null() });
    let x = x.raw();
    let _g = b.attach_thread().unwrap();
    let y: GcRef = Gc::new(Link { next: Member::null() }).raw();

    // This heap's object (and none) are accepted.
    let root = b.add_root(Some(y));
    let _w = b.weak(y);
    root.set(None);
    root.set(Some(y));
    assert_eq!(root.get(), Some(y));

    let msg = panic_message(|| drop(b.add_root(Some(x))));
    let msg = msg.expect("Heap::add_root rooted heap a's object in heap b");
    assert!(msg.contains("Heap::add_root") && msg.contains("another heap"), "{msg:?}");

    let msg = panic_message(|| root.set(Some(x)));
    let msg = msg.expect("Root::set rooted heap a's object in heap b's root");
    assert!(msg.contains("Root::set") && msg.contains("another heap"), "{msg:?}");
    assert_eq!(root.get(), Some(y), "the refused Root::set changed the root");

    let msg = panic_message(|| drop(b.weak(x)));
    let msg = msg.expect("Heap::weak made heap b's weak reference to heap a's object");
    assert!(msg.contains("Heap::weak") && msg.contains("another heap"), "{msg:?}");
}
