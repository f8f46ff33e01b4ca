//! In heap a's pause (the collecting thread, no mutator), the safe
//! accessors refuse an object of heap b, whose World is not stopped (they
//! accepted it before the review of the heap-identity change: read 77).
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use usurp_gc::{alloc, Descriptor, Heap, HeapConfig};

#[test]
fn a_pause_of_heap_a_refuses_an_object_of_heap_b() {
    let cfg = || HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() };
    let a = Heap::new(cfg()).unwrap();
    let b = Heap::new(cfg()).unwrap();
    let d = Descriptor::builder(2).name("rev").build().unwrap();
    let b2 = b.clone();
    let (r, _root) = std::thread::spawn(move || {
        let _g = b2.attach_thread().unwrap();
        let r = alloc(d);
        r.set_word(0, 77);
        (r, b2.add_root(Some(r)))
    })
    .join()
    .unwrap();
    let _g = a.attach_thread().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    a.add_root_scanner(Box::new(move |_report| {
        let v = std::panic::catch_unwind(|| r.word(0)).unwrap_or(1);
        s2.store(v, SeqCst);
    }));
    a.collect();
    assert_eq!(seen.load(SeqCst), 1, "heap a's root scanner (in a's pause) read heap b's object");
}
