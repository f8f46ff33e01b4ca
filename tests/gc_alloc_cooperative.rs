//! Issue 11, "allocation is a cooperative point": a task that only
//! allocates in ordinary Rust code (not `preemptible!`, no `checkpoint()`)
//! lets another task of its single worker run: its quantum tick is refused
//! (the PC is not preemptible code), which sets the checkpoint flag, and the
//! GC's allocation slow path (block refills) acts on it.
//!
//! Negative control: with the slow path's checkpoint switched off (a
//! test-only switch), the second task never runs while the allocator loops.
//! A deadline bounds the allocator's loop, so a starved task is a failure,
//! never a hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{gc_type, Gc, Member};
use usurp::Runtime;

#[repr(C)]
struct Node {
    next: Member<Node>,
    val: u64,
}
gc_type!(Node { next });

/// Allocates (keeping a short list alive) until `flag` is set or `wait`
/// passes. Ordinary code: never inlined into anything preemptible, and no
/// explicit cooperative point.
#[inline(never)]
fn allocate_until(flag: &AtomicBool, wait: Duration) -> (bool, u64) {
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut head: Option<Gc<Node>> = None;
    while !flag.load(Ordering::Relaxed) && t0.elapsed() < wait {
        let node = Gc::new(Node { next: Member::new(if n % 1000 == 0 { None } else { head }), val: n });
        head = Some(node);
        n += 1;
    }
    std::hint::black_box(head);
    (flag.load(Ordering::Relaxed), n)
}

/// On a 1-worker runtime: an allocating task, then a second task (spawned
/// from outside) that sets the flag. Returns whether the allocator saw it
/// within `wait`.
fn second_task_runs(wait: Duration) -> bool {
    let rt = Runtime::builder().workers(1).quantum(Duration::from_millis(1)).build().unwrap();
    assert!(rt.async_preemption());
    let flag = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (f, s) = (flag.clone(), started.clone());
    let alloc = rt.spawn(move || {
        s.store(true, Ordering::SeqCst);
        allocate_until(&f, wait)
    });
    let t0 = Instant::now();
    while !started.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the allocating task never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let f2 = flag.clone();
    let other = rt.spawn(move || f2.store(true, Ordering::SeqCst));
    let (saw, n) = alloc.join().unwrap();
    other.join().unwrap();
    eprintln!("allocator: {n} objects, saw the second task: {saw}");
    saw
}

#[test]
fn allocating_task_lets_another_task_run() {
    // Negative control first: without the slow path's checkpoint the
    // second task does not run while the allocator loops.
    usurp_gc::set_alloc_checkpoint_for_tests(false);
    let ran = second_task_runs(Duration::from_millis(500));
    usurp_gc::set_alloc_checkpoint_for_tests(true);
    assert!(!ran, "the control: the second task ran although allocation was not a cooperative point");
    // With it: the second task runs (the deadline is a watchdog only).
    assert!(second_task_runs(Duration::from_secs(120)), "an allocating task never let the other task run");
}
