//! Handle-check micro-benchmark (issue 10 item 8): ns per safe (checked)
//! accessor call against its `unsafe` unchecked variant, `Gc<T>` deref
//! against `get_unchecked`, and a `RootedVec` push + pop; and the write
//! barrier's fast path (no heap marking) against a plain out-of-line store
//! (what the barrier was before concurrent marking gave it a check), and
//! `Member::set` (its value's checks and the barrier).
//!
//! `cargo bench -p usurp-gc --bench refs`. 4096 live objects are visited in
//! allocation order, 2000 rounds; no collection runs (pacing off).

use std::hint::black_box;
use std::time::Instant;
use usurp_gc::{gc_type, Descriptor, Gc, GcRef, Heap, HeapConfig, Member, RootedVec};

#[repr(C)]
struct Node {
    left: Member<Node>,
    val: usize,
}
gc_type!(Node { left });

const N: usize = 4096;

/// The barrier as it was before concurrent marking: an out-of-line store.
#[inline(never)]
unsafe extern "C" fn store_only(_obj: *mut u8, slot: *mut usize, value: usize) {
    // SAFETY: the caller passes a valid word.
    unsafe { (*(slot as *const std::sync::atomic::AtomicUsize)).store(value, std::sync::atomic::Ordering::Relaxed) }
}
const ROUNDS: usize = 2000;

/// `ROUNDS`, or `REFS_ROUNDS` from the environment (a few for callgrind:
/// the difference of instruction counts between two builds, divided by
/// `(rounds + 1) * N`, is the per-call cost of what changed).
fn rounds() -> usize {
    std::env::var("REFS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(ROUNDS)
}

fn time(name: &str, mut f: impl FnMut() -> usize) -> f64 {
    black_box(f()); // warm up
    let rounds = rounds();
    let t = Instant::now();
    let mut s: usize = 0;
    for _ in 0..rounds {
        s = s.wrapping_add(f());
    }
    let ns = t.elapsed().as_nanos() as f64 / (rounds * N) as f64;
    black_box(s);
    println!("{name:<40} {ns:6.2} ns/op");
    ns
}

fn main() {
    let heap = Heap::new(HeapConfig { max_heap: 1 << 30, gogc: None, verify: false, trace: false, ..HeapConfig::default() })
        .expect("heap");
    let _g = heap.attach_thread().unwrap();
    let d = Descriptor::builder(3).name("Point").build().unwrap();
    let refs: Vec<GcRef> = (0..N).map(|i| {
        let r = usurp_gc::alloc(d);
        r.set_word(1, i);
        r
    }).collect();
    let nodes: Vec<Gc<Node>> = (0..N).map(|i| Gc::new(Node { left: Member::null(), val: i })).collect();
    let refs = black_box(refs);
    let nodes = black_box(nodes);

    let a = time("GcRef::word (checked)", || refs.iter().map(|r| black_box(*r).word(1)).sum());
    // SAFETY: every object in `refs` is alive (held by this stack frame and
    // no collection runs).
    let b = time("GcRef::word_unchecked", || refs.iter().map(|r| unsafe { black_box(*r).word_unchecked(1) }).sum());
    let c = time("GcRef::set_word (checked)", || {
        refs.iter().for_each(|r| black_box(*r).set_word(2, 1));
        0
    });
    let e = time("GcRef::set_word_unchecked", || {
        // SAFETY: as above.
        refs.iter().for_each(|r| unsafe { black_box(*r).set_word_unchecked(2, 1) });
        0
    });
    let f = time("Gc<T> deref (checked)", || nodes.iter().map(|g| black_box(*g).val).sum());
    // SAFETY: as above.
    let g = time("Gc<T>::get_unchecked", || nodes.iter().map(|g| unsafe { black_box(*g).get_unchecked() }.val).sum());
    // Member::set of a live value (its liveness checked since RT-gc item 7).
    let ms = time("Member::set (checked)", || {
        for (i, n) in nodes.iter().enumerate() {
            black_box(*n).left.set(Some(nodes[(i + 1) % N]));
        }
        0
    });
    let mut rv = RootedVec::with_capacity(&heap, 16);
    let h = time("RootedVec push + pop", || {
        for r in refs.iter() {
            rv.push(Some(*r));
            black_box(rv.pop());
        }
        0
    });
    let slots: Vec<usize> = vec![0; N];
    let targets: Vec<usize> = nodes.iter().map(|g| g.raw().addr()).collect();
    let bar = time("usurp_gc_write_barrier (not marking)", || {
        for (i, t) in targets.iter().enumerate() {
            // SAFETY: a valid word of `slots`; the value is an object.
            unsafe { usurp_gc::usurp_gc_write_barrier(std::ptr::null_mut(), black_box(&slots[i] as *const usize as *mut usize), *t) };
        }
        0
    });
    let plain = time("out-of-line plain store (old barrier)", || {
        for (i, t) in targets.iter().enumerate() {
            // SAFETY: as above.
            unsafe { store_only(std::ptr::null_mut(), black_box(&slots[i] as *const usize as *mut usize), *t) };
        }
        0
    });
    println!("barrier fast path: +{:.2} ns over a plain out-of-line store", bar - plain);
    println!("Member::set: {ms:.2} ns (barrier fast path alone {bar:.2} ns)");
    println!(
        "check cost: word +{:.2} ns, set_word +{:.2} ns, deref +{:.2} ns; RootedVec push+pop {:.1} ns",
        a - b,
        c - e,
        f - g,
        h
    );
}
