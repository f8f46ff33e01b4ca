//! GC test fixtures shared by the facade's integration tests (`tests/`;
//! a dev-dependency only, never published), written once here instead of
//! in every test file (issue 13):
//! * [`Node`] (`left`, `right`, `val`) with [`node`], [`tree`], [`count`],
//!   [`list`] and [`intact`]: binary trees and `left`-linked lists;
//! * [`Link`] (`next`, `val`) with [`link`]: singly linked lists, and
//!   [`seeded`]: lists whose values derive from a seed, checked after
//!   collections (found by address, so a freed and reused list shows);
//! * [`pair`]: two-word nodes without a value, their lists and trees;
//! * [`manual`] / [`verified_manual`]: heap configurations without the
//!   pacer (collections only when a test asks), and [`runtime`]: a
//!   runtime with `workers` workers and a heap configuration;
//! * [`scrub`]: overwrite a stretch of the caller's stack below it, so that
//!   a stale copy of a reference left there by earlier calls does not keep
//!   an object alive through the conservative stack scan.
//!
//! Layering: depends on `usurp-gc` and `usurp-sched` (the facade's types are
//! theirs, re-exported), so it cannot live in `usurp-testsupport`, which the
//! scheduler's and the GC's own tests use and which must not link a second
//! copy of the crate under test. The types here are plain test data: the
//! object layouts are fixed (`repr(C)`, three or two words), since the tests
//! size heaps and counts by them.

use std::hint::black_box;
use usurp_gc::{gc_type, Gc, HeapConfig, Member};
use usurp_sched::Runtime;

pub mod pair;
pub mod seeded;

/// A binary tree or `left`-linked list node: two traced references and a
/// value (three words).
#[repr(C)]
pub struct Node {
    pub left: Member<Node>,
    pub right: Member<Node>,
    pub val: usize,
}
gc_type!(Node { left, right });

/// A new [`Node`] on the current heap.
#[inline]
pub fn node(val: usize, left: Option<Gc<Node>>, right: Option<Gc<Node>>) -> Gc<Node> {
    Gc::new(Node { left: Member::new(left), right: Member::new(right), val })
}

/// A complete binary tree of `depth` levels below its root (`2^(depth+1) -
/// 1` nodes; an inner node's value is its height, a leaf's is 1), built in
/// frames of its own (never inlined: no copy of the inner nodes stays in
/// the caller's frame).
#[inline(never)]
pub fn tree(depth: usize) -> Gc<Node> {
    if depth == 0 {
        node(1, None, None)
    } else {
        node(depth, Some(tree(depth - 1)), Some(tree(depth - 1)))
    }
}

/// The number of nodes reachable from `t` (through `left` and `right`).
pub fn count(t: Gc<Node>) -> usize {
    1 + t.left.get().map_or(0, count) + t.right.get().map_or(0, count)
}

/// A list of `n` nodes linked through `left` (`right` empty), values
/// `n - 1` (the head) down to 0.
pub fn list(n: usize) -> Gc<Node> {
    let mut head = node(0, None, None);
    for i in 1..n {
        head = node(i, Some(head), None);
    }
    head
}

/// Whether `cur` is a whole list of `len` nodes as [`list`] makes them
/// (values `len - 1` down to 0), `None` counting as empty.
pub fn intact(mut cur: Option<Gc<Node>>, len: usize) -> bool {
    let mut expect = len;
    while let Some(n) = cur {
        if expect == 0 || n.val != expect - 1 {
            return false;
        }
        expect -= 1;
        cur = n.left.get();
    }
    expect == 0
}

/// A singly linked list node: one traced reference and a value (two words).
#[repr(C)]
pub struct Link {
    pub next: Member<Link>,
    pub val: usize,
}
gc_type!(Link { next });

/// A new [`Link`] on the current heap.
#[inline]
pub fn link(val: usize, next: Option<Gc<Link>>) -> Gc<Link> {
    Gc::new(Link { next: Member::new(next), val })
}

/// A heap without the pacer (`gogc: None`: collections only when asked),
/// of at most `max_heap` bytes, verifying after each collection if
/// `verify`.
pub fn manual(max_heap: usize, verify: bool) -> HeapConfig {
    HeapConfig { gogc: None, verify, max_heap, ..HeapConfig::default() }
}

/// [`manual`] with the verifier on and a 1 MiB minimum heap.
pub fn verified_manual(max_heap: usize) -> HeapConfig {
    HeapConfig { max_heap, gogc: None, min_heap: 1 << 20, verify: true, ..HeapConfig::default() }
}

/// A runtime with `workers` workers and heap configuration `cfg`.
pub fn runtime(workers: usize, cfg: HeapConfig) -> Runtime {
    Runtime::builder().workers(workers).heap_config(cfg).build().unwrap()
}

/// Writes zeros over `WORDS` words of the stack below the caller's frame
/// (never inlined: the array is in a frame of its own).
#[inline(never)]
pub fn scrub<const WORDS: usize>() {
    let mut a = [0usize; WORDS];
    black_box(&mut a);
}
