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
    let rounds = usurp_gc::test_scale(40).max(10);
    for seed in [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_1234_5678, 42] {
        assert_eq!(run(seed, rounds), 0, "seed {seed:#x}: a reachable object was lost with the barrier on");
    }
    // Negative control: the same runs with the barrier's shading off lose
    // reachable objects (a black object gained the only reference to a
    // white one, whose old path was cut before the marker reached it).
    usurp_gc::barrier::set_barrier_shading_for_tests(false);
    let lost: usize = [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_1234_5678, 42].iter().map(|&s| run(s, 40)).sum();
    usurp_gc::barrier::set_barrier_shading_for_tests(true);
    assert!(lost > 0, "the control (barrier shading off) lost nothing: the test cannot see a missing barrier");
}
