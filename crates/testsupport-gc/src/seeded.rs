//! Seeded lists (the Rust-heap-roots and select-roots tests): [`LEN`]
//! [`Link`]s whose values derive from a seed, held only where a test puts
//! the head (a closure, a channel, a Rust-heap root), collected over with
//! garbage in between that reuses freed slots ([`collect_and_churn`]), then
//! checked by address ([`checksum`] against [`expected`]): a list freed
//! too early is gone or overwritten by then. Each helper runs in a frame of
//! its own (never inlined), so no copy of a head stays in the caller's.

use crate::Link;
use std::hint::black_box;
use usurp_gc::{Gc, GcRef, Heap, Member};
use usurp_sched::Runtime;

/// Nodes per list.
pub const LEN: usize = 200;
/// Collections in [`collect_and_churn`] (besides its last one).
pub const ROUNDS: usize = 4;

/// A list of [`LEN`] nodes whose values derive from `seed`.
#[inline(never)]
pub fn make_list(seed: usize) -> GcRef {
    let mut head: Option<Gc<Link>> = None;
    for i in 0..LEN {
        head = Some(Gc::new(Link { next: Member::new(head), val: seed.wrapping_mul(1000).wrapping_add(i) }));
    }
    head.unwrap().raw()
}

/// The checksum of an intact list made from `seed`.
pub fn expected(seed: usize) -> usize {
    (0..LEN).map(|i| seed.wrapping_mul(1000).wrapping_add(i)).fold(0, usize::wrapping_add)
}

/// Checksum of the list at `r`, or `None` if any node is no longer an
/// object or the list has the wrong length (it was freed and reused).
#[inline(never)]
pub fn checksum(r: GcRef) -> Option<usize> {
    let heap = Heap::current().expect("tasks are attached");
    let mut cur = heap.object_at(r.addr()).and_then(Gc::<Link>::from_ref);
    let (mut sum, mut n) = (0usize, 0usize);
    while let Some(c) = cur {
        n += 1;
        if n > LEN {
            return None;
        }
        sum = sum.wrapping_add(c.val);
        cur = match c.next.get() {
            None => None,
            Some(next) => Some(heap.object_at(next.raw().addr()).and_then(Gc::<Link>::from_ref)?),
        };
    }
    (n == LEN).then_some(sum)
}

/// [`ROUNDS`] collections with garbage in between that reuses freed node
/// slots, then one more.
#[inline(never)]
pub fn collect_and_churn() {
    let heap = Heap::current().unwrap();
    for _ in 0..ROUNDS {
        heap.collect();
        for k in 0..8 {
            black_box(make_list(usize::MAX - k));
        }
    }
    heap.collect();
}

/// The heap of `rt` ran more than [`ROUNDS`] collections, and its verifier
/// found nothing wrong.
pub fn check_heap(rt: &Runtime) {
    let st = rt.stats().gc;
    assert!(st.cycles as usize > ROUNDS);
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
}

/// The runtime of these tests: one worker, the verifier on, collections
/// only when asked.
pub fn runtime() -> Runtime {
    crate::runtime(1, crate::verified_manual(128 << 20))
}

/// The harness of the deletion-barrier hazard tests (`tests/gc_rooted_vec.rs`,
/// `tests/sched_channel_buffers.rs`): a task collects in a loop while
/// `round(k)` runs for k = 0, 1, ... and returns the lists it found lost;
/// the total is returned. With the mechanism under test on (`all`), all
/// `rounds` run; for its negative control (`all` false), until the first
/// loss, at most 20000 rounds (at any scale: the hazard is a matter of
/// timing, and under qemu a fixed count once saw none). Call from a task.
pub fn hazard_rounds(all: bool, rounds: usize, mut round: impl FnMut(usize) -> usize) -> usize {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let collector = usurp_sched::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            Heap::current().unwrap().collect();
            usurp_sched::yield_now();
        }
    });
    let mut lost = 0;
    for k in 0..if all { rounds } else { 20_000 } {
        if !all && lost > 0 {
            break;
        }
        lost += round(k);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    collector.join().unwrap();
    lost
}

/// Yields for 200 µs: the window, in a hazard round, for a start stop to
/// fall in before the round reads its lists back (the scan that would
/// find them is behind a large table, a few ms long).
pub fn hazard_window() {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_micros(200) {
        usurp_sched::yield_now();
    }
}
