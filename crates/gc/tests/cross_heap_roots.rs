//! `Heap::add_root`, `Root::set` and `Heap::weak` refuse another heap's
//! object, as `RootedVec::push` does: the heap whose table would hold the
//! slot neither keeps that object alive nor clears the slot, so the root
//! (or weak reference) would later name whatever object took its place.
//! Before the check all three accepted it (red-team finding F3, session 11:
//! `misc root_other_heap`, `tl weak_other_heap`).
use usurp_gc::{gc_type, Gc, GcRef, Heap, HeapConfig, Member};

#[repr(C)]
struct Link {
    next: Member<Link>,
}
gc_type!(Link { next });

/// The panic message of `f`, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    r.err().map(|p| p.downcast_ref::<String>().cloned().unwrap_or_default())
}

#[test]
fn roots_and_weak_refs_refuse_another_heaps_object() {
    let cfg = || HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() };
    let a = Heap::new(cfg()).unwrap();
    let b = Heap::new(cfg()).unwrap();
    let a2 = a.clone();
    let (x, _rx) = std::thread::spawn(move || {
        let _g = a2.attach_thread().unwrap();
        let x = Gc::new(Link { next: Member::null() }).raw();
        (x, a2.add_root(Some(x)))
    })
    .join()
    .unwrap();
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
