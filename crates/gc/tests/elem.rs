//! `GcRef::elem(j, k)`: the element accessor for arrays (issue 13 item 9),
//! which replaces the `1 + j * elem_words + k` arithmetic VMs wrote by hand.

mod common;
use common::*;
use usurp_gc::{alloc, alloc_array, Descriptor};

static LEAF: Descriptor = Descriptor::fixed("leaf", 1, &[]);
static POINT: Descriptor = Descriptor::fixed("point", 2, &[]);

#[test]
fn elem_addresses_each_word_of_each_element() {
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    // Elements of 3 words: a pointer, two raw words.
    let d = Descriptor::array_builder(3).pointer_at(0).name("triples").build().unwrap();
    let a = alloc_array(d, 4);
    assert_eq!(a.elem(0, 0), 1, "word 0 is the length");
    assert_eq!(a.elem(2, 1), 1 + 2 * 3 + 1);
    assert_eq!(a.elem(3, 2), a.payload_words() - 1, "the last element's last word ends the object");
    for j in 0..4 {
        assert!(a.is_pointer_slot(a.elem(j, 0)), "element {j}: word 0 is its pointer");
        assert!(!a.is_pointer_slot(a.elem(j, 1)));
        let l = alloc(&LEAF);
        a.set_ptr(a.elem(j, 0), Some(l));
        a.set_word(a.elem(j, 1), 10 * j);
        a.set_word(a.elem(j, 2), 10 * j + 1);
    }
    h.collect();
    for j in 0..4 {
        assert!(a.ptr(a.elem(j, 0)).is_some_and(|l| l.is_live()));
        assert_eq!((a.word(a.elem(j, 1)), a.word(a.elem(j, 2))), (10 * j, 10 * j + 1));
    }
    assert_eq!(a.len(), 4, "no element write touched the length");
}

#[test]
fn elem_rejects_bad_indices_and_non_arrays() {
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    let d = Descriptor::array_builder(2).name("pairs").build().unwrap();
    let a = alloc_array(d, 3);
    let e = std::panic::catch_unwind(|| a.elem(3, 0)).expect_err("element 3 of 3 accepted");
    let msg = panic_message(e);
    assert!(msg.contains("out of bounds") && msg.contains("`pairs` has 3 elements of 2 words"), "{msg}");
    let e = std::panic::catch_unwind(|| a.elem(0, 2)).expect_err("word 2 of a 2-word element accepted");
    assert!(panic_message(e).contains("out of bounds"));
    let empty = alloc_array(d, 0);
    assert!(std::panic::catch_unwind(|| empty.elem(0, 0)).is_err(), "element of an empty array accepted");
    let p = alloc(&POINT);
    let e = std::panic::catch_unwind(|| p.elem(0, 0)).expect_err("elem on a fixed object accepted");
    assert!(panic_message(e).contains("`point`, which is not an array"));
}
