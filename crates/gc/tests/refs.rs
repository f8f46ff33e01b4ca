//! Handle safety: what safe calls on `GcRef` / `Gc<T>` may and may not do
//! (issue 10 items 1 and 8).

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::{alloc_array, Descriptor};

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    match e.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default(),
    }
}

/// Issue 10 item 1: the length word of an array is not writable through any
/// safe call, and the heap stays sound after the attempt.
#[test]
fn an_arrays_length_word_cannot_be_forged() {
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    let words = Descriptor::array_builder(1).name("words").build().unwrap();
    let ptrs = Descriptor::array_builder(2).pointer_at(1).name("pairs").build().unwrap();
    let a = alloc_array(words, 4);
    let p = alloc_array(ptrs, 3);
    // What a VM that forgets the `+1` on an element index would do.
    let e = std::panic::catch_unwind(|| a.set_word(0, 1 << 20)).expect_err("set_word(0) on an array was accepted");
    let msg = panic_message(e);
    assert!(msg.contains("payload word 0 of array `words` is its length"), "{msg}");
    let e = std::panic::catch_unwind(|| p.set_word(0, 1 << 20)).expect_err("set_word(0) on a pointer array was accepted");
    assert!(panic_message(e).contains("is its length"));
    let e = std::panic::catch_unwind(|| p.set_ptr(0, Some(a))).expect_err("set_ptr(0) on an array was accepted");
    assert!(panic_message(e).contains("is its length"));
    // Nothing changed: the length and the bounds are the real ones.
    assert_eq!((a.len(), p.len()), (4, 3));
    assert_eq!(a.payload_words(), 5);
    assert!(std::panic::catch_unwind(|| a.word(5)).is_err(), "read past the object");
    // SAFETY: `a` is a live pointer-free array owned by this test.
    assert_eq!(unsafe { a.array_bytes_mut() }.len(), 4 * 8, "the byte view excludes the length word");
    // Element words are writable as before.
    a.set_word(1, 7);
    a.set_word(4, 9);
    p.set_ptr(2, Some(a));
    black_box((a, p));
    h.collect();
    assert_eq!((a.len(), a.word(1), a.word(4), p.ptr(2)), (4, 7, 9, Some(a)));
    let st = h.stats();
    assert_eq!(st.verify_failures, 0, "the verifier found a damaged heap");
    assert_eq!(st.bad_pointers, 0);
    black_box((a, p));
}
