//! Issue 9 item 7: the deterministic incremental-marking model test. A mark
//! is driven a step at a time (`debug_begin_marking`, `debug_mark_steps`,
//! `debug_finish_marking`: the start stop, a few grey objects scanned, the
//! termination) while random mutations run between the steps: pointer
//! stores through the write barrier (`Member::set`), root changes, new
//! objects. After each mark, every object reachable from the roots must be
//! live. The negative control turns the barrier's shading off (test-only
//! switch): a black object then gains the only reference to a white one,
//! whose old path is cut, and the object is lost; the control asserts that
//! it is. One test function, run on and then off in sequence: the switch
//! and the barrier's flag are process-wide.
//!
//! The value-slot variant (issue 14 on top of issue 9) runs the same model
//! on objects whose links are *value slots* holding tagged values, stored
//! through the value barrier (`GcRef::set_value`), under a low-bit (V8)
//! and a NaN-boxing encoding: chains end in immediates, items carry
//! immediates or tagged pointers to fresh leaves that random stores
//! overwrite. It loses nothing with the value barrier's shading, and loses
//! a reachable object with the shading switched off. Beside it: the value
//! barrier alone (what it shades and what it ignores), and a tagged pointer
//! moved into an object allocated black (never scanned by the mark in
//! progress), kept only by the value barrier. The test functions take
//! `serial()` (the switch is process-wide).

mod common;
use common::*;
use usurp_gc::{Gc, GcRef, Heap, HeapConfig, Root};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Holder `i` of the spines (two roots, each a list of holders linked by
/// `right`; each holder's `left` is a chain of items linked by `left`).
fn holder(roots: &[Root], i: usize) -> Gc<Node> {
    let mut h = roots[i % 2].get_as::<Node>().unwrap();
    for _ in 0..i / 2 {
        h = h.right.get().unwrap();
    }
    h
}

const HOLDERS: usize = 32;

/// Object addresses reachable from the roots, read without liveness checks
/// (a lost object is dead but not swept yet: its memory is intact).
fn reachable(roots: &[Root]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<GcRef> = roots.iter().filter_map(|r| r.get()).collect();
    while let Some(r) = todo.pop() {
        if !seen.insert(r.addr()) {
            continue;
        }
        for i in 0..2 {
            // SAFETY: a published object, not swept (background sweeping
            // is off and nothing allocates between the mark and this walk).
            if let Some(c) = unsafe { r.ptr_unchecked(i) } {
                todo.push(c);
            }
        }
    }
    seen.into_iter().collect()
}

/// Runs `rounds` stepped marks with random mutations between the steps;
/// returns how many reachable objects were found dead after a mark (0 if
/// the barrier works), stopping at the first round that lost any.
///
/// The mutations move items between the holders' chains: take the head
/// `b` of holder `y`'s chain (`y.left = b.left`) and push it on holder
/// `x`'s (`b.left = x.left; x.left = b`): `x` (often black: the spines are
/// scanned early) gains the only reference to `b` (often white: deep in a
/// chain) while `y`'s path to it is cut. Every store goes through the
/// write barrier (`Member::set`). Reachability is preserved exactly (no
/// cycles, nothing dropped), plus new objects (allocated black) pushed on
/// chains and root swaps (`Root::set`).
fn run(seed: u64, rounds: usize) -> usize {
    let h: Heap = heap_with(HeapConfig { verify: false, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let mut rng = Rng(seed);
    let roots: Vec<Root> = (0..2).map(|_| h.add_root(None)).collect();
    for i in (0..HOLDERS).rev() {
        let chain = list(1 + rng.below(20));
        let n = node(i, chain, roots[i % 2].get_as::<Node>());
        roots[i % 2].set(Some(n.raw()));
    }
    let mut next_val = 1000;
    for round in 0..rounds {
        h.debug_begin_marking();
        for _ in 0..400 {
            match rng.below(100) {
                0..=69 => {
                    let (x, y) = (holder(&roots, rng.below(HOLDERS)), holder(&roots, rng.below(HOLDERS)));
                    if let Some(b) = y.left.get() {
                        y.left.set(b.left.get());
                        b.left.set(x.left.get());
                        x.left.set(Some(b));
                    }
                }
                // The roots swap their spines (each holder index moves
                // from one spine to the other: fine, all stay reachable).
                70..=71 => {
                    let (a, b) = (roots[0].get(), roots[1].get());
                    roots[0].set(b);
                    roots[1].set(a);
                }
                // A new object (allocated black) pushed on a chain.
                72..=79 => {
                    let x = holder(&roots, rng.below(HOLDERS));
                    next_val += 1;
                    let n = node(next_val, x.left.get(), None);
                    x.left.set(Some(n));
                }
                // A few steps of marking.
                _ => {
                    h.debug_mark_steps(1 + rng.below(2));
                }
            }
        }
        h.debug_finish_marking();
        let live = reachable(&roots);
        assert!(live.len() > HOLDERS, "the model's graph lost its holders ({} reachable objects)", live.len());
        let lost = live.iter().filter(|&&a| h.object_at(a).is_none()).count();
        if lost > 0 {
            eprintln!("seed {seed:#x} round {round}: {lost} of {} reachable objects lost", live.len());
            return lost;
        }
        // Sweep before the next round (it frees what the mark found dead).
        h.finish_sweep();
    }
    0
}

#[test]
fn stepped_marking_with_mutations_between_steps_loses_nothing_and_does_without_the_barrier() {
    let _serial = serial();
    let rounds = usurp_testsupport::scale(40).max(10);
    for seed in [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_1234_5678, 42] {
        assert_eq!(run(seed, rounds), 0, "seed {seed:#x}: a reachable object was lost with the barrier on");
    }
    // Negative control: the same runs with the barrier's shading off lose
    // reachable objects (a black object gained the only reference to a
    // white one, whose old path was cut before the marker reached it).
    usurp_gc::internals::set_barrier_shading_for_tests(false);
    let lost: usize = [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_1234_5678, 42].iter().map(|&s| run(s, 40)).sum();
    usurp_gc::internals::set_barrier_shading_for_tests(true);
    assert!(lost > 0, "the control (barrier shading off) lost nothing: the test cannot see a missing barrier");
}

// ---- The value-slot variant -------------------------------------------------

use usurp_gc::{alloc, Descriptor, ValueEncoding};
use usurp_testsupport::serial;

/// A node with two value slots (0: `left`, 1: `right`) and a raw word.
fn vnode_desc() -> &'static Descriptor {
    static D: std::sync::OnceLock<&'static Descriptor> = std::sync::OnceLock::new();
    D.get_or_init(|| Descriptor::builder(3).value_at(0).value_at(1).name("VNode").build().unwrap())
}

/// A pointer-free leaf, referenced only from an item's `right` value.
fn leaf_desc() -> &'static Descriptor {
    static D: std::sync::OnceLock<&'static Descriptor> = std::sync::OnceLock::new();
    D.get_or_init(|| Descriptor::builder(1).name("Leaf").build().unwrap())
}

/// An immediate of `enc` carrying `k` (never decodes to an object).
fn imm(enc: &ValueEncoding, k: usize) -> usize {
    let w = [k << 3, (k << 3) | 2, (k << 3) | 1].into_iter().find(|&w| enc.decode(w).is_none());
    w.expect("the encoding has an immediate")
}

fn vnode(val: usize, left: usize, right: usize) -> GcRef {
    let n = alloc(vnode_desc());
    n.set_word(2, val);
    n.set_value(0, left);
    n.set_value(1, right);
    n
}

/// Holder `i` of the value spines (linked by the `right` values).
fn vholder(roots: &[Root], i: usize) -> GcRef {
    let mut h = roots[i % 2].get().unwrap();
    for _ in 0..i / 2 {
        h = h.value_ref(1).expect("a spine link");
    }
    h
}

/// Objects reachable from the roots through decoded value slots, read
/// without liveness checks (as `reachable`).
fn vreachable(enc: &ValueEncoding, roots: &[Root]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<usize> = roots.iter().filter_map(|r| r.get()).map(|r| r.addr()).collect();
    while let Some(a) = todo.pop() {
        if !seen.insert(a) {
            continue;
        }
        // SAFETY: a published object, not swept (as in `reachable`); its
        // header says whether it has value slots.
        let (r, d) = unsafe {
            let r = GcRef::from_addr(a).unwrap();
            (r, r.descriptor_unchecked())
        };
        if std::ptr::eq(d, vnode_desc()) {
            for i in 0..2 {
                // SAFETY: as above; slot i < 3 payload words.
                if let Some(c) = enc.decode(unsafe { r.value_unchecked(i) }) {
                    todo.push(c);
                }
            }
        }
    }
    seen.into_iter().collect()
}

/// [`run`] on value slots: the same moves between the holders' chains, as
/// tagged values stored through `GcRef::set_value` (the value barrier),
/// plus stores of immediates and of tagged pointers to new leaves into the
/// items' `right` slots (overwriting either). Returns the objects lost by
/// the first round that lost any (0 if none).
fn run_values(enc: ValueEncoding, seed: u64, rounds: usize) -> usize {
    let h: Heap = heap_with(HeapConfig { verify: false, value_encoding: enc, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let mut rng = Rng(seed);
    let roots: Vec<Root> = (0..2).map(|_| h.add_root(None)).collect();
    let mut next_val = 1;
    for i in (0..HOLDERS).rev() {
        let mut chain = imm(&enc, 0);
        for _ in 0..1 + rng.below(20) {
            next_val += 1;
            chain = enc.encode(vnode(next_val, chain, imm(&enc, next_val)).addr());
        }
        let next = roots[i % 2].get().map_or(imm(&enc, 0), |r| enc.encode(r.addr()));
        let n = vnode(i, chain, next);
        roots[i % 2].set(Some(n));
    }
    for round in 0..rounds {
        h.debug_begin_marking();
        for _ in 0..400 {
            match rng.below(100) {
                // Move the head `b` of holder y's chain onto holder x's.
                0..=64 => {
                    let (x, y) = (vholder(&roots, rng.below(HOLDERS)), vholder(&roots, rng.below(HOLDERS)));
                    if let Some(b) = y.value_ref(0) {
                        y.set_value(0, b.value(0));
                        b.set_value(0, x.value(0));
                        x.set_value(0, enc.encode(b.addr()));
                    }
                }
                // An item's `right`: an immediate, or a tagged pointer to
                // a new leaf (what it held before becomes garbage).
                65..=69 => {
                    let x = vholder(&roots, rng.below(HOLDERS));
                    if let Some(b) = x.value_ref(0) {
                        if rng.below(2) == 0 {
                            b.set_value(1, imm(&enc, rng.below(1 << 20)));
                        } else {
                            b.set_value(1, enc.encode(alloc(leaf_desc()).addr()));
                        }
                    }
                }
                70..=71 => {
                    let (a, b) = (roots[0].get(), roots[1].get());
                    roots[0].set(b);
                    roots[1].set(a);
                }
                // A new item (allocated black) pushed on a chain.
                72..=79 => {
                    let x = vholder(&roots, rng.below(HOLDERS));
                    next_val += 1;
                    let n = vnode(next_val, x.value(0), imm(&enc, next_val));
                    x.set_value(0, enc.encode(n.addr()));
                }
                _ => {
                    h.debug_mark_steps(1 + rng.below(2));
                }
            }
        }
        h.debug_finish_marking();
        let live = vreachable(&enc, &roots);
        assert!(live.len() > HOLDERS, "the model's graph lost its holders ({} reachable objects)", live.len());
        let lost = live.iter().filter(|&&a| h.object_at(a).is_none()).count();
        if lost > 0 {
            eprintln!("{enc:?} seed {seed:#x} round {round}: {lost} of {} reachable objects lost", live.len());
            return lost;
        }
        h.finish_sweep();
    }
    0
}

#[test]
fn stepped_marking_with_value_slot_mutations_loses_nothing_and_does_without_the_value_barrier() {
    let _serial = serial();
    let rounds = usurp_testsupport::scale(40).max(10);
    let seeds = [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_1234_5678, 42];
    let encodings = [ValueEncoding::low_bits(1, 1), ValueEncoding::nan_box(48, &[0xfffc, 0xfffd])];
    for enc in encodings {
        for seed in seeds {
            assert_eq!(
                run_values(enc, seed, rounds),
                0,
                "{enc:?} seed {seed:#x}: a reachable object was lost with the value barrier on"
            );
        }
    }
    // Negative control: the value barrier's shading off (the same switch
    // as the pointer barrier's) loses a reachable object under each
    // encoding.
    usurp_gc::internals::set_barrier_shading_for_tests(false);
    let lost: Vec<usize> = encodings.iter().map(|&e| seeds.iter().map(|&s| run_values(e, s, 40)).sum()).collect();
    usurp_gc::internals::set_barrier_shading_for_tests(true);
    for (enc, lost) in encodings.iter().zip(lost) {
        assert!(lost > 0, "{enc:?}: the control (value barrier shading off) lost nothing: the test cannot see it");
    }
}

/// The value barrier's marking path on its own: while a stepped mark runs,
/// a value store shades the object the overwritten value names and the one
/// the stored value names, decoded with the heap's encoding; it shades
/// nothing for an immediate that looks like an object's address or a
/// pointer-tagged word naming no object start (an interior address); and a
/// value word outside every heap (JIT code passing a null `obj`) is decoded
/// with the marking heap's encoding.
#[test]
fn the_value_barrier_shades_what_old_and_new_values_decode_to_and_nothing_else() {
    let _serial = serial();
    for enc in [ValueEncoding::low_bits(1, 1), ValueEncoding::nan_box(48, &[0xfffc, 0xfffd])] {
        let h: Heap = heap_with(HeapConfig { verify: false, value_encoding: enc, ..config(64 << 20) });
        h.set_background_sweeping(false);
        let _g = h.attach_thread().unwrap();
        // White objects: allocated before the mark, referenced from nothing
        // it scans (the test thread's stack is not scanned by a stepped mark).
        let t: Vec<GcRef> = (0..4).map(|_| alloc(leaf_desc())).collect();
        let holder = vnode(1, enc.encode(t[0].addr()), imm(&enc, 0));
        let lookalike = t[2].addr();
        assert_eq!(enc.decode(lookalike), None, "the raw address is an immediate under {enc:?}");
        h.debug_begin_marking();
        assert!(t.iter().all(|o| !h.debug_is_marked(o.addr())), "{enc:?}: white before the stores");
        holder.set_value(0, enc.encode(t[1].addr()));
        assert!(h.debug_is_marked(t[0].addr()), "{enc:?}: the overwritten value's object was not shaded");
        assert!(h.debug_is_marked(t[1].addr()), "{enc:?}: the stored value's object was not shaded");
        holder.set_value(1, lookalike);
        // SAFETY: slot 1 of the live holder; a pointer-tagged word naming
        // no object start is a bad value, not undefined behaviour.
        unsafe {
            let slot = holder.payload().add(1);
            usurp_gc::usurp_gc_write_barrier_value(holder.addr() as *mut u8, slot, enc.encode(t[2].addr() + 8))
        };
        assert!(!h.debug_is_marked(t[2].addr()), "{enc:?}: an immediate or an interior address shaded an object");
        let mut word = imm(&enc, 7);
        // SAFETY: a valid local word outside every heap.
        unsafe { usurp_gc::usurp_gc_write_barrier_value(std::ptr::null_mut(), &mut word, enc.encode(t[3].addr())) };
        assert_eq!(word, enc.encode(t[3].addr()));
        assert!(h.debug_is_marked(t[3].addr()), "{enc:?}: a value stored outside the heap was not shaded");
        // Put a good value back before the termination (the verifier is
        // off, but keep the heap consistent).
        holder.set_value(1, imm(&enc, 0));
        h.debug_finish_marking();
        h.finish_sweep();
    }
}

/// Black allocation and value slots: an object allocated during a mark is
/// black and never scanned by it, so the tagged pointer copied into its
/// value slot is kept only by the value barrier. A holder `h` (rooted,
/// grey: not scanned yet) names `w` in a value slot; a new object `b`
/// (black, rooted) gets a copy of that tagged value and `h`'s slot is
/// overwritten with an immediate before the marker reaches `h`. `w` must
/// survive; with the barrier's shading off it is lost (asserted).
#[test]
fn a_tagged_pointer_moved_into_a_black_object_survives_and_does_without_the_value_barrier() {
    let _serial = serial();
    for shading in [true, false] {
        for enc in [ValueEncoding::low_bits(1, 1), ValueEncoding::nan_box(48, &[0xfffc, 0xfffd])] {
            let h: Heap = heap_with(HeapConfig { verify: false, value_encoding: enc, ..config(64 << 20) });
            h.set_background_sweeping(false);
            let _g = h.attach_thread().unwrap();
            let w = vnode(7, imm(&enc, 0), imm(&enc, 0));
            let holder = vnode(1, enc.encode(w.addr()), imm(&enc, 0));
            let (rh, rb) = (h.add_root(Some(holder)), h.add_root(None));
            let w = w.addr();
            h.debug_begin_marking();
            usurp_gc::internals::set_barrier_shading_for_tests(shading);
            let b = vnode(2, imm(&enc, 0), imm(&enc, 0));
            assert!(h.debug_is_marked(b.addr()), "{enc:?}: allocated black");
            rb.set(Some(b));
            b.set_value(0, holder.value(0));
            holder.set_value(0, imm(&enc, 1));
            usurp_gc::internals::set_barrier_shading_for_tests(true);
            h.debug_finish_marking();
            assert_eq!(enc.decode(b.value(0)), Some(w));
            if shading {
                let o = h.object_at(w).unwrap_or_else(|| panic!("{enc:?}: the object moved into a black one was lost"));
                assert_eq!(o.word(2), 7);
            } else {
                assert!(h.object_at(w).is_none(), "{enc:?}: the control kept the object without the value barrier");
            }
            drop((rh, rb));
            h.finish_sweep();
        }
    }
}
