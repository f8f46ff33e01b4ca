//! Issue 9 (time-to-safepoint): a `Gc<T>` deref is a cooperative point.
//!
//! A task that walks a tree with `Gc<T>` derefs only (no allocation, plain
//! code: not `preemptible!`) gets every stop request refused
//! (`NotPreemptibleCode`); before the deref polled, a collection's stop
//! waited until the walk ended (binary-trees' `check`: stops of 40-56 ms).
//! Now the refused request's checkpoint flag is seen at the next deref.
//!
//! * `a_walk_does_not_hold_up_collections`: one task walks a tree for
//!   about 800 ms, another forces collections meanwhile; every cycle's
//!   time-to-safepoint stays under 20 ms. OS scheduling can only lengthen
//!   a stop (the machine may be loaded): the bound must hold in one of
//!   three runs. Negative control (`set_read_poll_for_tests(false)`): the
//!   first collection then waits for the end of the walk (>= 200 ms),
//!   asserted (in one of three runs: a collector thread the OS keeps off
//!   the CPU until the walk ends sees a short stop). The collector is a
//!   plain thread: as a task it could be starved behind the walker.
//! * `no_yield_where_yielding_is_not_allowed`: with a checkpoint request
//!   outstanding, a deref inside `no_preempt` does not yield (the request
//!   stays set, the worker's switch count and checkpoint yields do not
//!   move), while a deref right after the section yields (the positive
//!   control: that slot's checkpoint yields count it); a deref inside
//!   a `blocking` closure panics with the access-refused message (no
//!   yield, no crash); a deref on a plain thread attached to its own heap
//!   takes the poll's slow path and returns the right values.
//! * `the_stopper_does_not_yield_at_a_deref`: a task holding the world
//!   stopped derefs with its own request set and does not yield (a yield
//!   would panic there); after it restarts the world, its next deref does.
//! * `blocking_honours_an_outstanding_request_first`: a task with its own
//!   request outstanding yields at the entry of `blocking` (the slot's
//!   checkpoint yields count it); without that checkpoint (the control,
//!   checked by hand: the line removed from `blocking_dyn`, the assertion
//!   fails) the request was dropped at the hand-off, or kept raised for
//!   the whole closure when it ran in place.
//!
//! The switch is process-wide: the tests of this file hold a lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{Gc, Heap, HeapConfig, Member};
use usurp::Runtime;
use usurp_preempt::internals as preempt;
use usurp_testsupport::{scale_factor, serial, wait_until, within};
use usurp_testsupport_gc::{tree, Node};

/// Restores the deref poll when dropped (also when a test fails).
struct PollOn;
impl Drop for PollOn {
    fn drop(&mut self) {
        usurp_gc::internals::set_read_poll_for_tests(true);
    }
}

/// Ordinary code (never inlined into anything preemptible), no
/// allocation, no `checkpoint()`: only derefs. Counts the nodes.
#[inline(never)]
fn walk(n: Gc<Node>) -> usize {
    match (n.left.get(), n.right.get()) {
        (Some(l), Some(r)) => 1 + walk(l) + walk(r),
        _ => 1,
    }
}

const WALK: Duration = Duration::from_millis(800);

/// The time-to-safepoint of every collection that started while a task
/// walked a tree (for `WALK`, without allocating).
fn ttsp_of_collections_during_a_walk() -> Vec<Duration> {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let walking = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    // Depth 17 (128 Ki nodes, a few ms a walk natively); smaller under qemu.
    let depth = if scale_factor() < 1.0 { 14 } else { 17 };
    let (w, d) = (walking.clone(), done.clone());
    let walker = rt.spawn(move || {
        let tree = tree(depth);
        let expect = (1usize << (depth + 1)) - 1;
        w.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let mut walks = 0;
        while t.elapsed() < WALK {
            assert_eq!(walk(tree), expect);
            walks += 1;
        }
        d.store(true, Ordering::SeqCst);
        walks
    });
    let heap = rt.heap().clone();
    let (w, d) = (walking.clone(), done.clone());
    // The collector is a plain thread (a stop's stopper can be any thread)
    // sleeping with std::thread::sleep. As a task, with the poll off, its
    // `usurp::sleep` sometimes returned only after the walk had ended (the
    // task starved behind the walker, which never yields), and the
    // negative control saw no collection at all (about 1 run in 5 under
    // load).
    let collector = std::thread::spawn(move || {
        while !w.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the walk start on its worker.
        std::thread::sleep(Duration::from_millis(10));
        let mut ttsp = Vec::new();
        while !d.load(Ordering::SeqCst) {
            heap.collect();
            let last = heap.stats().last.expect("a cycle just completed");
            if let Some(h) = &last.ttsp_holdup {
                eprintln!("  cycle {}: ttsp {:?}, held up by {h}", last.cycle, last.time_to_safepoint);
            }
            ttsp.push(last.time_to_safepoint);
            std::thread::sleep(Duration::from_millis(30));
        }
        ttsp
    });
    let walks = walker.join().unwrap();
    let ttsp = collector.join().unwrap();
    assert!(walks >= 1);
    ttsp
}

#[test]
fn a_walk_does_not_hold_up_collections() {
    let _s = serial();
    let _restore = PollOn;
    // Negative control first: without the poll, the first collection's
    // stop waits for the walk to end. OS scheduling can hide that (a
    // collector thread kept off the CPU until the walk is nearly over
    // stops the world after it: seen once in 8 runs with a workspace build
    // on both cores), so, as for the bound below, one run in three must
    // show it.
    usurp_gc::internals::set_read_poll_for_tests(false);
    let mut controls = Vec::new();
    for _ in 0..3 {
        let without = within(300, "collections during a walk, no deref poll", ttsp_of_collections_during_a_walk);
        eprintln!("without the deref poll: time-to-safepoint per cycle {without:?}");
        let shown = without.first().is_some_and(|first| *first >= Duration::from_millis(200));
        controls.push(without);
        if shown {
            break;
        }
    }
    usurp_gc::internals::set_read_poll_for_tests(true);
    assert!(
        controls.last().and_then(|c| c.first()).is_some_and(|first| *first >= Duration::from_millis(200)),
        "negative control: without the deref poll the first collection should wait for the walk (~{WALK:?}) in one \
         of three runs; time-to-safepoint per cycle in each run: {controls:?}"
    );
    let bound = Duration::from_millis(20);
    let mut runs = Vec::new();
    for _ in 0..3 {
        let with = within(300, "collections during a walk", ttsp_of_collections_during_a_walk);
        eprintln!("with the deref poll: time-to-safepoint per cycle {with:?}");
        // Under load a run may fit fewer than 3 collections in the walk
        // (seen once at load 9): such a run shows nothing and is retried.
        let ok = with.len() >= 3 && with.iter().all(|t| *t < bound);
        runs.push(with);
        if ok {
            return;
        }
    }
    panic!(
        "in each of three runs a collection's time-to-safepoint reached {bound:?} or fewer than 3 collections ran \
         during the walk: {runs:?}"
    );
}

#[test]
fn no_yield_where_yielding_is_not_allowed() {
    let _s = serial();
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "derefs inside no_preempt and blocking", move || {
        rt.block_on(|| {
            let n = Gc::new(Node { left: Member::null(), right: Member::null(), val: 7 });
            let slot = preempt::current_worker().expect("a task runs on a registered worker");
            // Post a request to our own worker: the signal is handled on
            // this thread at once and refused (plain code), the flag stays.
            preempt::request_preempt(slot).unwrap();
            wait_until(Duration::from_secs(60), "own request acknowledged", || !slot.is_pending());
            assert!(slot.is_requested());
            let (switches, yields) = (slot.switches(), slot.stats().checkpoint_yields);
            let sum = usurp::no_preempt(|| (0..1000).map(|_| n.val).sum::<usize>());
            assert_eq!(sum, 7000);
            assert!(slot.is_requested(), "a deref inside no_preempt took the request");
            assert_eq!(slot.switches(), switches, "a deref inside no_preempt switched the task out");
            assert_eq!(slot.stats().checkpoint_yields, yields);
            // Positive control: the next deref outside the section yields.
            assert_eq!(n.val, 7);
            // (A yield with nothing else to run may not switch.)
            assert!(slot.stats().checkpoint_yields > yields, "a deref with a request outstanding did not yield");
            assert!(!slot.is_requested());

            // Inside blocking the thread has no mutator: the deref is
            // refused with a panic (no yield, no crash).
            let r = usurp::blocking(move || {
                let here = preempt::current_worker();
                if let Some(s) = here {
                    // The flag is set at once; the signal may be blocked here.
                    let _ = preempt::request_preempt(s);
                }
                let yields = here.map(|s| s.stats().checkpoint_yields);
                let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n.val)).expect_err("a deref inside blocking succeeded");
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                assert!(m.contains("refused"), "unexpected panic: {m}");
                assert_eq!(here.map(|s| s.stats().checkpoint_yields), yields, "a deref inside blocking yielded");
                m
            });
            assert!(r.contains("inside blocking"), "{r}");
            std::hint::black_box(n);
        })
    });
}

/// A task that holds the world stopped runs in a no-preemption section:
/// its derefs do not yield (a yield there would panic: "yield_now by the
/// task that holds the world stopped"), even with its own worker's request
/// set; after `start_the_world` its next deref does.
#[test]
fn the_stopper_does_not_yield_at_a_deref() {
    let _s = serial();
    let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let rt2 = rt.clone();
    let v = within(120, "a stopper's derefs", move || {
        rt.block_on(move || {
            let n = Gc::new(Node { left: Member::null(), right: Member::null(), val: 5 });
            rt2.stop_the_world();
            let slot = preempt::current_worker().expect("a task runs on a registered worker");
            let yields = slot.stats().checkpoint_yields;
            preempt::request_preempt(slot).unwrap();
            wait_until(Duration::from_secs(60), "own request acknowledged", || !slot.is_pending());
            assert!(preempt::any_checkpoint_request());
            let v: usize = (0..100).map(|_| n.val).sum();
            assert_eq!(slot.stats().checkpoint_yields, yields, "the stopper yielded at a deref");
            assert!(slot.is_requested());
            rt2.start_the_world();
            // Positive control: outside the stop the request is honoured.
            let w = n.val;
            assert!(slot.stats().checkpoint_yields > yields, "a deref after the stop did not yield");
            v + w
        })
    });
    assert_eq!(v, 505);
}

#[test]
fn deref_on_a_plain_thread_with_requests_outstanding() {
    let _s = serial();
    within(120, "plain-thread derefs", || {
        // A registered worker slot with no task: a request to it is refused
        // (not running) and its flag stays set, so every deref in the
        // process takes the poll's slow path.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let idle = std::thread::spawn(move || {
            let slot: &'static preempt::WorkerSlot = Box::leak(Box::new(preempt::WorkerSlot::new()));
            preempt::register_worker(slot, Duration::from_millis(10)).unwrap();
            preempt::request_preempt(slot).unwrap();
            tx.send(slot).unwrap();
            stop_rx.recv().unwrap();
            preempt::unregister_worker().unwrap();
        });
        let slot = rx.recv().unwrap();
        wait_until(Duration::from_secs(60), "request acknowledged", || !slot.is_pending());
        assert!(slot.is_requested());
        assert!(preempt::any_checkpoint_request());
        let heap = Heap::new(HeapConfig { max_heap: 64 << 20, ..HeapConfig::default() }).unwrap();
        let _attached = heap.attach_thread().unwrap();
        let tree = tree(10);
        let mut sum = 0;
        for _ in 0..100 {
            sum += walk(tree);
        }
        assert_eq!(sum, 100 * ((1 << 11) - 1));
        assert!(preempt::any_checkpoint_request(), "the plain thread took another worker's request");
        stop_tx.send(()).unwrap();
        idle.join().unwrap();
    });
}

/// `blocking` honours a request already outstanding before its closure
/// runs (the task yields at its entry): run in place, the closure would
/// otherwise keep the request, and with it every poll of the process on
/// its slow path, until it returns. Without that checkpoint the hand-off
/// dropped the request without a yield (the count below stays put).
#[test]
fn blocking_honours_an_outstanding_request_first() {
    let _s = serial();
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "a request before blocking", move || {
        rt.block_on(|| {
            let slot = preempt::current_worker().expect("a task runs on a registered worker");
            preempt::request_preempt(slot).unwrap();
            wait_until(Duration::from_secs(60), "own request acknowledged", || !slot.is_pending());
            assert!(slot.is_requested());
            let yields = slot.stats().checkpoint_yields;
            let inside = usurp::blocking(|| 42);
            assert_eq!(inside, 42);
            assert!(slot.stats().checkpoint_yields > yields, "blocking did not honour the outstanding request");
            assert!(!slot.is_requested());
        })
    });
}
