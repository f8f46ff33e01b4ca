//! The safe untyped reads refuse the plain fields of Rust types' objects
//! (session 12, G1): a payload word of a `gc_type!` object may cover
//! padding (uninitialised bytes read as an integer), the data of a lock
//! written non-atomically by another task (a data race with the atomic
//! load) or a smaller atomic (a mixed-size access): all undefined behaviour
//! from safe code. `GcRef::word` / `ptr` / `value` accept on such objects
//! only the pointer slots and value slots (one-word fields the collector
//! reads too); guest objects keep the untyped reads of every word.
mod common;

use common::{catch, quiet_panics};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use usurp_gc::{alloc, gc_type, internals, Descriptor, Gc, GcRef, GcType, Heap, HeapConfig, Member};

/// One object with every kind of word: pointer slots (a `Member`, an
/// immutable `Option<GcRef>`), a byte and its padding, a plain `u64`, a
/// `bool` beside an `AtomicU32`, a `Mutex`.
#[repr(C)]
struct Mixed {
    next: Member<Mixed>,   // word 0: pointer slot (atomic)
    small: u8,             // word 1: 1 byte + 7 bytes of padding
    big: u64,              // word 2: plain, immutable
    flag: bool,            // word 3: bool, padding,
    counter: AtomicU32,    //         and a 4-byte atomic
    lock: Mutex<u64>,      // words 4-5: futex, poison flag, padding, data
    owner: Option<GcRef>,  // word 6: pointer slot (never written after Gc::new)
    plain: u64,            // word 7: plain, immutable
}
gc_type!(Mixed { next, owner });

/// The plain (non-slot) words of `Mixed`.
const PLAIN_WORDS: [usize; 6] = [1, 2, 3, 4, 5, 7];

/// A hand-written `GcType` with a value slot and a plain word.
#[repr(C)]
struct Tagged {
    v: AtomicUsize, // word 0: value slot
    b: u8,          // word 1: a byte and padding
}
static TAGGED: Descriptor = Descriptor::fixed_with_values("Tagged", 2, &[], &[1]).rust_type();
// SAFETY: two words, word 0 a value slot (an AtomicUsize: written only
// atomically), no pointer slot, as TAGGED says; marked as a Rust type.
unsafe impl GcType for Tagged {
    fn descriptor() -> &'static Descriptor {
        &TAGGED
    }
}

/// The tests that rely on the read check being on, and the one that turns
/// it off, run one at a time (the switch is process-wide).
static SWITCH: Mutex<()> = Mutex::new(());

fn heap() -> Heap {
    quiet_panics(&["Rust type", "not a value slot", "out of bounds"]);
    Heap::new(HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() }).unwrap()
}

fn mixed(next: Option<Gc<Mixed>>, owner: Option<GcRef>) -> Gc<Mixed> {
    Gc::new(Mixed {
        next: Member::new(next),
        small: 7,
        big: 0x0102_0304_0506_0708,
        flag: true,
        counter: AtomicU32::new(3),
        lock: Mutex::new(11),
        owner,
        plain: 0x1111_2222_3333_4444,
    })
}

/// An untyped read of payload word `i`.
type Read = fn(GcRef, usize) -> usize;

/// Every plain word of `g` refuses `word` and `ptr` with the message, and
/// `value` (not a value slot); the fields are intact afterwards.
fn assert_plain_reads_refused(g: Gc<Mixed>) {
    for i in PLAIN_WORDS {
        let reads: [(&str, Read); 2] =
            [("word", GcRef::word), ("ptr", |r, i| r.ptr(i).map_or(0, |p| p.addr()))];
        for (op, f) in reads {
            let e = catch(|| f(g.raw(), i)).expect_err(&format!("GcRef::{op}({i}) read a plain field of `Mixed`"));
            assert!(
                e.contains(&format!("GcRef::{op}({i})"))
                    && e.contains("Rust type `Mixed`")
                    && e.contains("read it through the Rust type"),
                "{e}"
            );
        }
        let e = catch(|| g.raw().value(i)).expect_err("value read a plain field");
        assert!(e.contains("not a value slot"), "{e}");
    }
    assert_eq!((g.small, g.big, g.flag, g.plain), (7, 0x0102_0304_0506_0708, true, 0x1111_2222_3333_4444));
    assert_eq!((g.counter.load(Ordering::Relaxed), *g.lock.lock().unwrap()), (3, 11));
}

#[test]
fn plain_fields_of_a_gc_type_object_refuse_untyped_reads() {
    let _s = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let g = mixed(None, None);
    assert_plain_reads_refused(g);
    // Also while another thread uses the lock and the small atomic (the
    // races the refusal prevents).
    std::thread::scope(|s| {
        // Safe code may hand the fields (Sync) to a plain thread while
        // this one keeps the object alive on its stack.
        let (lock, counter) = (&g.lock, &g.counter);
        let t = s.spawn(move || {
            for _ in 0..1000 {
                *lock.lock().unwrap() += 1;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        for _ in 0..20 {
            for i in [3, 4, 5] {
                assert!(catch(|| g.raw().word(i)).is_err(), "word({i}) read a racing field");
            }
        }
        t.join().unwrap();
    });
    assert_eq!((g.counter.load(Ordering::Relaxed), *g.lock.lock().unwrap()), (1003, 1011));
}

#[test]
fn pointer_and_value_slots_of_rust_types_stay_readable() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let a = mixed(None, None);
    let b = mixed(Some(a), Some(a.raw()));
    assert_eq!((b.raw().word(0), b.raw().ptr(0)), (a.raw().addr(), Some(a.raw())));
    assert_eq!((b.raw().word(6), b.raw().ptr(6)), (a.raw().addr(), Some(a.raw())));
    assert_eq!((a.raw().ptr(0), a.raw().ptr(6)), (None, None));
    b.next.set(Some(b));
    assert_eq!(b.raw().ptr(0), Some(b.raw()), "the read sees Member::set");
    // Out of bounds stays out of bounds (not a refusal).
    let e = catch(|| b.raw().word(8)).expect_err("word(8) of an 8-word object");
    assert!(e.contains("out of bounds"), "{e}");

    let enc = h.value_encoding();
    let t = Gc::new(Tagged { v: AtomicUsize::new(enc.encode(a.raw().addr())), b: 1 });
    assert_eq!(t.raw().value(0), t.v.load(Ordering::Relaxed));
    assert_eq!(t.raw().value_ref(0), Some(a.raw()));
    assert_eq!(t.raw().word(0), t.v.load(Ordering::Relaxed));
    t.v.store(0, Ordering::Relaxed);
    assert_eq!((t.raw().value(0), t.raw().value_ref(0)), (0, None));
    let _s = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let e = catch(|| t.raw().word(1)).expect_err("word(1) read a byte and its padding");
    assert!(e.contains("Rust type `Tagged`"), "{e}");
    assert_eq!(t.b, 1);
}

#[test]
fn guest_objects_keep_every_untyped_read() {
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let d = Descriptor::builder(3).pointer_at(0).value_at(1).name("guest").build().unwrap();
    let (x, y) = (alloc(d), alloc(d));
    x.set_ptr(0, Some(y));
    x.set_value(1, h.value_encoding().encode(y.addr()));
    x.set_word(2, 44);
    assert_eq!((x.word(0), x.word(1), x.word(2)), (y.addr(), h.value_encoding().encode(y.addr()), 44));
    assert_eq!((x.ptr(0), x.ptr(2).map(|r| r.addr())), (Some(y), Some(44)));
    assert_eq!((x.value(1), x.value_ref(1)), (x.word(1), Some(y)));
}

/// Negative control: with the check off (`set_rust_type_read_check_for_tests`),
/// the refusal test's assertions fail, on the plain, immutable, fully
/// initialised words only (the others would be real undefined behaviour).
#[test]
fn without_the_check_plain_fields_are_read() {
    let _s = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let h = heap();
    let _g = h.attach_thread().unwrap();
    let g = mixed(None, None);
    internals::set_rust_type_read_check_for_tests(false);
    let r = catch(|| (g.raw().word(2), g.raw().word(7), g.raw().ptr(7).map(|p| p.addr())));
    internals::set_rust_type_read_check_for_tests(true);
    assert_eq!(r, Ok((0x0102_0304_0506_0708, 0x1111_2222_3333_4444, Some(0x1111_2222_3333_4444))));
    // And on again: refused.
    assert!(catch(|| g.raw().word(7)).is_err());
}
