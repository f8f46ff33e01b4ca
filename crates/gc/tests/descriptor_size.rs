//! `DescriptorBuilder::build` with a huge payload returns an error (or a
//! descriptor whose allocation fails with an `AllocError`) instead of
//! aborting the process: it allocated a slot bitmap of `size_words / 64`
//! words before any check, so `Descriptor::builder(1 << 40).build()` died
//! with "memory allocation of ... failed" (red-team finding F9, session 11:
//! `arr deschuge`).
mod common;
use common::*;
use usurp_gc::descriptor::MAX_HEAP_BYTES;
use usurp_gc::{try_alloc, Descriptor, DescriptorError};

#[test]
fn a_payload_larger_than_the_largest_heap_is_refused() {
    for size_words in [MAX_HEAP_BYTES / 8, MAX_HEAP_BYTES / 8 + 1, 1 << 50, usize::MAX] {
        let e = Descriptor::builder(size_words).build().unwrap_err();
        assert_eq!(e, DescriptorError::TooLarge { size_words });
        assert!(e.to_string().contains("too large"), "{e}");
        let e = Descriptor::builder(size_words).pointer_at(size_words - 1).build().unwrap_err();
        assert_eq!(e, DescriptorError::TooLarge { size_words });
    }
    // The largest that fits: header word + payload = MAX_HEAP_BYTES.
    let d = Descriptor::builder(MAX_HEAP_BYTES / 8 - 1).build().unwrap();
    assert_eq!(d.object_bytes(0), Some(MAX_HEAP_BYTES));
}

#[test]
fn a_huge_payload_that_fits_a_heap_builds_without_a_payload_sized_bitmap() {
    let n = 1usize << 40;
    let d = Descriptor::builder(n).build().unwrap();
    assert_eq!(d.size_words(), n);
    assert!(d.is_pointer_free());
    let d = Descriptor::builder(n).pointer_at(5).value_at(200).name("huge").build().unwrap();
    assert!(d.is_pointer(5) && d.is_value(200) && !d.is_pointer(6) && !d.is_value(5));
    assert!(!d.is_pointer(n - 1) && !d.is_value(n - 1));
    // Slot indices are checked before anything is allocated.
    assert_eq!(
        Descriptor::builder(n).pointer_at(n).build().unwrap_err(),
        DescriptorError::PointerOutOfRange { index: n, size_words: n }
    );
    assert_eq!(
        Descriptor::builder(n).value_at(3).pointer_at(3).build().unwrap_err(),
        DescriptorError::SlotKindConflict { index: 3 }
    );
    // Allocating such an object fails with an error, not an abort.
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    assert!(try_alloc(d).is_err());
}
