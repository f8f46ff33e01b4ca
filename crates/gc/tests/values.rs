//! Tagged values in GC slots (issue 14): for each preset encoding, an object
//! reachable only through a tagged value in a heap slot (fixed field or
//! array element) or only through a tagged word on the collecting thread's
//! stack survives repeated collections; immediates that look like addresses
//! keep nothing alive; a value slot whose pointer tag decodes to garbage is
//! counted (per slot, first one named), flagged by the verifier and never
//! followed; `validate` rejects bad encodings. Controls: the same slot
//! declared raw loses the object; the same NaN-boxed stack word on a heap
//! whose encoding does not decode it loses the object. The collections are
//! concurrent (checked): value slots are decoded by the concurrent marker,
//! stack words in the start stop.

mod common;

use common::{collect_elsewhere, config, fresh_stack_size, on_other_thread};
use std::hint::black_box;
use usurp_gc::{alloc, alloc_array, ConfigError, Descriptor, GcRef, Heap, HeapConfig, ValueEncoding};

const X: usize = 0x5a5a_5a5a_5a5a;
const MAGIC: usize = 0x0123_4567_89ab_cdef;
const JSC_NOT_CELL: usize = 0xffff_0000_0000_0002;

/// The presets a VM would reach for.
fn presets() -> Vec<(&'static str, ValueEncoding)> {
    vec![
        ("untagged", ValueEncoding::untagged()),
        ("low_bits(1, 1) (V8)", ValueEncoding::low_bits(1, 1)),
        ("low_bits(7, 0) (Scheme)", ValueEncoding::low_bits(7, 0)),
        ("nan_box(48, [0xfffc, 0xfffd])", ValueEncoding::nan_box(48, &[0xfffc, 0xfffd])),
        ("nan_box(47, [0x1fff1]) (SpiderMonkey-like)", ValueEncoding::nan_box(47, &[0x1fff1])),
        // JavaScriptCore: a cell pointer has the top 16 bits and bit 1 clear.
        ("custom (JSC)", ValueEncoding::custom(JSC_NOT_CELL, &[0], !JSC_NOT_CELL)),
    ]
}

/// An immediate that looks like `addr` but whose tag says "not a pointer"
/// (`None` for `untagged`, where every word is a pointer).
fn lookalike_immediate(enc: &ValueEncoding, addr: usize) -> Option<usize> {
    [addr, addr | 1, addr | 2, addr | 4, addr | (0x7ff8 << 48)].into_iter().find(|&w| enc.decode(w).is_none())
}

/// A heap with `enc`, or `None` (reported) when `enc` is a 47-bit NaN-box
/// and the kernel placed the reservation above 2^47 (arm64 with 48-bit
/// virtual addresses may): `Heap::new` refuses that with a clear error.
fn heap_for(enc: ValueEncoding) -> Option<Heap> {
    let cfg = HeapConfig { value_encoding: enc, ..config(64 << 20) };
    match Heap::with_world(cfg.clone(), std::sync::Arc::new(common::TestWorld)) {
        Ok(h) => Some(h),
        Err(ConfigError::ValueEncoding(m)) if m.contains("does not survive encoding") && enc.addr_mask() >> 47 == 0 => {
            eprintln!("skipped: {m}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn target_desc() -> &'static Descriptor {
    Descriptor::builder(2).name("Target").build().unwrap()
}

/// A rooted holder with one slot (fixed object, or element 5 of an array)
/// holding `word(target)` and a target with `MAGIC`, built on another
/// thread. `value` declares the slot a value slot (else raw: the control).
/// Returns (target, holder) addresses, hidden from the stack with `X`.
fn build(h: &Heap, array: bool, value: bool, word: fn(&ValueEncoding, usize) -> usize) -> (usize, usize) {
    let (t, o) = on_other_thread(h, move |h| {
        let enc = h.value_encoding();
        let t = alloc(target_desc());
        t.set_word(0, MAGIC);
        let w = word(&enc, t.addr());
        let holder = if array {
            let b = Descriptor::array_builder(1).name("Holders");
            let d = if value { b.value_at(0) } else { b }.build().unwrap();
            let a = alloc_array(d, 8);
            if value {
                a.set_value(6, w);
            } else {
                a.set_word(6, w);
            }
            a
        } else {
            let b = Descriptor::builder(3).name("Holder");
            let d = if value { b.value_at(1) } else { b }.build().unwrap();
            let o = alloc(d);
            if value {
                o.set_value(1, w);
            } else {
                o.set_word(1, w);
            }
            o
        };
        std::mem::forget(h.add_root(Some(holder)));
        (t.addr() ^ X, holder.addr() ^ X)
    });
    (black_box(t) ^ X, black_box(o) ^ X)
}

/// Whether the heap's last cycle was a concurrent one (a start stop and a
/// termination stop, marking in between with the world running).
fn concurrent(h: &Heap) -> bool {
    h.stats().last.is_some_and(|c| c.stops.len() >= 2 && !c.concurrent_mark.is_zero())
}

fn slot_of(array: bool) -> usize {
    if array {
        6
    } else {
        1
    }
}

#[test]
fn objects_reachable_only_through_tagged_heap_slots_survive() {
    for (name, enc) in presets() {
        for array in [false, true] {
            let Some(h) = heap_for(enc) else { continue };
            let _g = h.attach_thread().unwrap();
            let (t, o) = build(&h, array, true, |e, a| e.encode(a));
            for _ in 0..4 {
                collect_elsewhere(&h);
            }
            let st = h.stats();
            assert_eq!((st.verify_failures, st.bad_values, st.bad_pointers), (0, 0, 0), "{name}");
            // The holder (a root) was marked in the start stop; its value
            // slot was decoded by the concurrent marker, world running.
            assert!(concurrent(&h), "{name}: the cycles were not concurrent");
            let target = h.object_at(t).unwrap_or_else(|| panic!("{name} (array {array}): target freed"));
            assert_eq!(target.word(0), MAGIC, "{name}");
            let holder = h.object_at(o).unwrap();
            assert_eq!(holder.value_ref(slot_of(array)), Some(target), "{name}");
            assert_eq!(enc.decode(holder.value(slot_of(array))), Some(t), "{name}");
        }
    }
}

/// Control: the same slot, declared raw, does not keep the target.
#[test]
fn control_the_same_slot_declared_raw_loses_the_object() {
    for (name, enc) in presets() {
        for array in [false, true] {
            let Some(h) = heap_for(enc) else { continue };
            let _g = h.attach_thread().unwrap();
            let (t, o) = build(&h, array, false, |e, a| e.encode(a));
            collect_elsewhere(&h);
            assert!(h.object_at(o).is_some(), "{name}: the rooted holder survives");
            assert!(h.object_at(t).is_none(), "{name} (array {array}): a raw slot kept its target");
        }
    }
}

#[test]
fn immediates_that_look_like_addresses_keep_nothing_alive() {
    for (name, enc) in presets() {
        if lookalike_immediate(&enc, 0x10000).is_none() {
            continue; // untagged: no immediates
        }
        for array in [false, true] {
            let Some(h) = heap_for(enc) else { continue };
            let _g = h.attach_thread().unwrap();
            let (t, o) = build(&h, array, true, |e, a| lookalike_immediate(e, a).unwrap());
            collect_elsewhere(&h);
            let st = h.stats();
            assert!(h.object_at(t).is_none(), "{name} (array {array}): an immediate kept an object");
            // Immediates are not bad values.
            assert_eq!((st.bad_values, st.verify_failures), (0, 0), "{name}");
            assert_eq!(h.object_at(o).unwrap().value_ref(slot_of(array)), None, "{name}");
        }
    }
}

/// Collect three times on a fresh thread whose stack holds `word` (and
/// nothing else that names the object).
fn collect_holding(h: &Heap, word: usize) {
    let h = h.clone();
    std::thread::Builder::new()
        .stack_size(fresh_stack_size())
        .spawn(move || {
            let slot = [black_box(word ^ X) ^ X; 1];
            black_box(&slot);
            for _ in 0..3 {
                h.collect();
            }
            black_box(&slot);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A target with `MAGIC` built on another thread; its address (hidden).
fn lone_target(h: &Heap) -> usize {
    let t = on_other_thread(h, |_| {
        let t = alloc(target_desc());
        t.set_word(0, MAGIC);
        t.addr() ^ X
    });
    black_box(t) ^ X
}

#[test]
fn objects_reachable_only_through_a_tagged_stack_word_survive() {
    for (name, enc) in presets() {
        let Some(h) = heap_for(enc) else { continue };
        let _g = h.attach_thread().unwrap();
        let t = lone_target(&h);
        let w = enc.encode(t);
        assert_eq!(enc.decodes_conservatively(), w >> 48 != 0, "{name}");
        collect_holding(&h, w);
        // The collecting thread's stack is scanned (and NaN-boxed words
        // decoded) in the start stop of a concurrent cycle.
        assert!(concurrent(&h), "{name}: the cycles were not concurrent");
        let o = h.object_at(t).unwrap_or_else(|| panic!("{name}: the object of stack word {w:#x} was freed"));
        assert_eq!(o.word(0), MAGIC);
        // Once no stack word names it, it goes.
        collect_elsewhere(&h);
        assert!(h.object_at(t).is_none(), "{name}: retained without a root");
    }
}

/// Control: the same NaN-boxed word on a heap whose encoding does not
/// decode it (untagged) keeps nothing alive; and on a NaN-boxing heap a
/// word with a non-pointer tag keeps nothing either.
#[test]
fn control_a_nan_boxed_stack_word_needs_the_encoding() {
    let nb = ValueEncoding::nan_box(48, &[0xfffc]);
    let h = heap_for(ValueEncoding::untagged()).unwrap();
    let _g = h.attach_thread().unwrap();
    let t = lone_target(&h);
    collect_holding(&h, nb.encode(t));
    assert!(h.object_at(t).is_none(), "an undecoded NaN-boxed word kept its object");
    drop(_g);
    let h = heap_for(nb).unwrap();
    let _g = h.attach_thread().unwrap();
    let t = lone_target(&h);
    collect_holding(&h, t | (0xfffe << 48));
    assert!(h.object_at(t).is_none(), "a word with a non-pointer tag kept its object");
}

/// A value slot whose pointer tag decodes to something that is not an
/// object start: counted once per slot, named in the stats, flagged by the
/// verifier, and never followed (an interior address does not keep the
/// object it points into).
#[test]
fn bad_values_are_counted_named_flagged_and_not_followed() {
    for (name, enc) in presets() {
        for array in [false, true] {
            let Some(h) = heap_for(enc) else { continue };
            let _g = h.attach_thread().unwrap();
            // Interior of the target: pointer-tagged, not an object start.
            let (t, o) = on_other_thread(&h, move |h| {
                let enc = h.value_encoding();
                let t = alloc(target_desc());
                let w = enc.encode(t.addr() + 8);
                let o = if array {
                    let a = alloc_array(Descriptor::array_builder(1).value_at(0).name("BadArr").build().unwrap(), 8);
                    // SAFETY: `a` is live; the stored word is a deliberately bad value.
                    unsafe { a.set_value_unchecked(6, w) };
                    a
                } else {
                    let o = alloc(Descriptor::builder(3).value_at(1).name("Bad").build().unwrap());
                    // SAFETY: as above.
                    unsafe { o.set_value_unchecked(1, w) };
                    o
                };
                std::mem::forget(h.add_root(Some(o)));
                (t.addr() ^ X, o.addr() ^ X)
            });
            let (t, o) = (t ^ X, o ^ X);
            collect_elsewhere(&h);
            collect_elsewhere(&h);
            let st = h.stats();
            let last = st.last.clone().unwrap();
            assert_eq!(last.bad_values, 1, "{name}: one bad slot per mark");
            assert_eq!(st.bad_values, 2, "{name}: summed over the two marks");
            assert_eq!(st.bad_pointers, 0, "{name}");
            let first = st.first_bad.unwrap();
            assert_eq!(
                (first.object, first.descriptor, first.slot, first.word, first.value_slot),
                (o, if array { "BadArr" } else { "Bad" }, slot_of(array), enc.encode(t + 8), true),
                "{name}"
            );
            assert!(first.to_string().contains("value slot"), "{first}");
            assert!(st.verify_failures >= 2, "{name}: the verifier did not flag the bad value");
            assert!(h.object_at(t).is_none(), "{name}: a bad value was followed");
            // The safe accessors refuse it too.
            let holder = h.object_at(o).unwrap();
            let r = std::panic::catch_unwind(|| holder.value_ref(slot_of(array)));
            let msg = *r.unwrap_err().downcast::<String>().unwrap();
            assert!(msg.contains("is pointer-tagged but decodes to"), "{msg}");
        }
    }
}

/// Control for the verifier: the same heaps with an immediate (or null) in
/// the slot have no failures (so the failures above come from the value).
#[test]
fn control_no_bad_value_no_verifier_failure() {
    for (name, enc) in presets() {
        let Some(h) = heap_for(enc) else { continue };
        let _g = h.attach_thread().unwrap();
        on_other_thread(&h, move |h| {
            let o = alloc(Descriptor::builder(3).value_at(1).name("Good").build().unwrap());
            o.set_value(1, lookalike_immediate(&h.value_encoding(), 0x10000).unwrap_or(0));
            std::mem::forget(h.add_root(Some(o)));
        });
        collect_elsewhere(&h);
        let st = h.stats();
        assert_eq!((st.verify_failures, st.bad_values, st.first_bad), (0, 0, None), "{name}");
    }
}

#[test]
fn set_value_checks_slot_kind_and_target() {
    let enc = ValueEncoding::low_bits(1, 1);
    let h = heap_for(enc).unwrap();
    let _g = h.attach_thread().unwrap();
    let d = Descriptor::builder(3).pointer_at(0).value_at(1).name("Mixed").build().unwrap();
    let o = alloc(d);
    let t = alloc(target_desc());
    o.set_value(1, enc.encode(t.addr()));
    o.set_value(1, 42 << 1); // an immediate
    assert_eq!(o.value(1), 84);
    let msg = |f: &dyn Fn()| {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        e.downcast_ref::<String>().cloned().or(e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap()
    };
    assert!(msg(&|| o.set_word(1, 3)).contains("is a value slot: use set_value"));
    assert!(msg(&|| o.set_value(0, 3)).contains("is not a value slot"));
    assert!(msg(&|| o.set_value(2, 3)).contains("is not a value slot"));
    assert!(msg(&|| o.set_ptr(1, None)).contains("not a pointer slot"));
    assert!(msg(&|| o.set_value(1, enc.encode(t.addr() + 16))).contains("decodes to"));
    assert!(msg(&|| o.set_value(9, 0)).contains("out of bounds"));
    black_box((o, t));
}

#[test]
fn validate_rejects_inconsistent_encodings() {
    for (enc, want) in [
        (ValueEncoding::low_bits(0xf, 0), "drops address bits"),
        (ValueEncoding::low_bits(1, 2), "outside the tag mask"),
        (ValueEncoding::nan_box(48, &[]), "0 pointer tags"),
        (ValueEncoding::nan_box(48, &[1, 2, 3, 4, 5]), "5 pointer tags"),
        (ValueEncoding::nan_box(32, &[1]), "drops address bits"),
        (ValueEncoding::custom(0xff, &[0x1], !0), "overlap"),
    ] {
        let e = Heap::new(HeapConfig { value_encoding: enc, ..config(8 << 20) }).unwrap_err();
        assert!(matches!(&e, ConfigError::ValueEncoding(m) if m.contains(want)), "{enc:?}: {e}");
        assert!(e.to_string().contains("invalid value_encoding"), "{e}");
    }
}

/// Bad *pointer* slots are counted per slot too (three in one object, one
/// mark: 3) and the first is named, as a pointer slot.
#[test]
fn bad_pointer_slots_are_counted_per_slot_and_named() {
    let h = heap_for(ValueEncoding::untagged()).unwrap();
    let _g = h.attach_thread().unwrap();
    let (o, t) = on_other_thread(&h, |h| {
        let o = alloc(Descriptor::builder(4).pointer_at(0).pointer_at(2).pointer_at(3).name("BadPtrs").build().unwrap());
        let t = alloc(target_desc());
        for i in [0, 2, 3] {
            // SAFETY: `o` is live; t + 8 is deliberately not an object start
            // (the test is about what marking does with it).
            unsafe { o.set_ptr_unchecked(i, GcRef::from_addr(t.addr() + 8)) };
        }
        std::mem::forget(h.add_root(Some(o)));
        (o.addr() ^ X, t.addr() ^ X)
    });
    let (o, t) = (o ^ X, t ^ X);
    collect_elsewhere(&h);
    let st = h.stats();
    assert_eq!((st.last.as_ref().unwrap().bad_pointers, st.bad_pointers, st.bad_values), (3, 3, 0));
    let b = st.first_bad.unwrap();
    assert_eq!((b.object, b.descriptor, b.slot, b.word, b.value_slot), (o, "BadPtrs", 0, t + 8, false));
    assert!(b.to_string().contains("pointer slot 0"), "{b}");
    assert!(h.object_at(t).is_none(), "a bad pointer was followed");
}

/// The raw entry for JIT code: a tagged word stored with
/// `usurp_gc_write_barrier_value` keeps its object like `set_value`.
#[test]
fn jit_value_barrier_stores_a_tagged_word() {
    for (name, enc) in presets() {
        let Some(h) = heap_for(enc) else { continue };
        let _g = h.attach_thread().unwrap();
        let t = on_other_thread(&h, |h| {
            let enc = h.value_encoding();
            let o = alloc(Descriptor::builder(2).value_at(1).name("JitHolder").build().unwrap());
            let t = alloc(target_desc());
            t.set_word(0, MAGIC);
            // SAFETY: payload word 1 of the live object `o` is a value slot;
            // the value is a tagged pointer to a live object; this thread is
            // attached (stopped by the heap's World).
            unsafe { usurp_gc::usurp_gc_write_barrier_value(o.addr() as *mut u8, o.payload().add(1), enc.encode(t.addr())) };
            assert_eq!(o.value_ref(1), Some(t));
            std::mem::forget(h.add_root(Some(o)));
            t.addr() ^ X
        }) ^ X;
        collect_elsewhere(&h);
        collect_elsewhere(&h);
        assert_eq!(h.object_at(t).map(|r| r.word(0)), Some(MAGIC), "{name}");
    }
}
