//! Two-word nodes without a value (the assist and pacer tests, which size
//! their heaps and count marked bytes by them): [`Pair`], garbage lists
//! ([`list`]) and long-lived complete trees ([`tree`], [`count`]), each
//! built in frames of its own (never inlined); [`churn_trees`], the
//! pacer tests' workload.

use usurp_gc::{gc_type, Gc, Member};

/// Two traced references, no value (two words).
#[repr(C)]
pub struct Pair {
    pub left: Member<Pair>,
    pub right: Member<Pair>,
}
gc_type!(Pair { left, right });

/// A list of `n` pairs linked through `left` (garbage once dropped).
#[inline(never)]
pub fn list(n: usize) -> Gc<Pair> {
    let mut head = Gc::new(Pair { left: Member::new(None), right: Member::new(None) });
    for _ in 1..n {
        head = Gc::new(Pair { left: Member::new(Some(head)), right: Member::new(None) });
    }
    head
}

/// A complete binary tree of depth `d` (`2^(d+1) - 1` pairs).
#[inline(never)]
pub fn tree(d: u32) -> Gc<Pair> {
    let (l, r) = if d == 0 { (None, None) } else { (Some(tree(d - 1)), Some(tree(d - 1))) };
    Gc::new(Pair { left: Member::new(l), right: Member::new(r) })
}

/// The number of pairs reachable from `n`.
#[inline(never)]
pub fn count(n: Gc<Pair>) -> usize {
    1 + n.left.get().map_or(0, count) + n.right.get().map_or(0, count)
}

/// From a task: a long-lived depth-14 tree beside two tasks that each build
/// and check a depth-10 tree `rounds` times (garbage that drives the
/// pacer's cycles); checks every tree, the long-lived one last.
pub fn churn_trees(rounds: usize) {
    let live = tree(14);
    let hs: Vec<_> = (0..2)
        .map(|_| {
            usurp_sched::spawn(move || {
                for _ in 0..rounds {
                    assert_eq!(count(tree(10)), (1 << 11) - 1);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(count(live), (1 << 15) - 1, "the long-lived tree lost nodes");
}
