//! Issue 9 item 7: the write barrier's unsafe-range registration is
//! load-bearing. A preemption accepted between the barrier's "is marking
//! on?" check and its store lets a collection start in between; the store
//! then overwrites a heap reference without shading it, and an object that
//! a task loaded from that slot after the start stop (its stack already
//! scanned) is freed under it.
//!
//! The barrier lives in ordinary (non-preemptible) code, where no
//! preemption ever lands; a VM whose JIT inlines the barrier sequence into
//! its code registers that sequence as an unsafe range, which is what
//! refuses preemption there. The test plays that VM: it registers the
//! barrier's section as JIT code (`register_code`), so that only the unsafe
//! range stands between a tick and the middle of the barrier, and it uses
//! a test-only hook of the preemption engine that refuses every preemption
//! outside the barrier's code, so that the one accepted lands inside it
//! (retried every quarter quantum until it does). Two child processes:
//!
//! * range **not** registered (test-only switch): task A calls the barrier
//!   in a loop, storing null into a slot of a rooted holder; a plain thread
//!   D keeps writing a fresh object O there (O is referenced by nothing
//!   else: A never loads it, D is no task and nobody scans it). When A is
//!   preempted inside the barrier, the driver task C (one worker: C runs
//!   exactly when A is preempted) pauses D, and if the slot holds O, starts
//!   a stepped mark (the start stop: the holder is a root, A's stack is
//!   scanned; C's own stack is not, as if scanned before), loads O into a
//!   local, and lets A finish its store. If A had passed the check before
//!   the start, it stores without shading O: the mark never reaches O,
//!   which is then dead although C holds it. The child asserts that this
//!   happens within a bounded number of rounds (a round where A was
//!   preempted before its check shades O and loses nothing; it is retried).
//! * range registered (the default): every tick that lands in the barrier
//!   is refused as an unsafe range; A is never preempted there, runs its
//!   bounded loop to the end, and nothing is lost. The child asserts that
//!   ticks did land in the barrier and were refused.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{gc_type, Gc, Heap, HeapConfig, Member};
use usurp::Runtime;
use usurp_testsupport::run_child_env;

#[repr(C)]
struct Holder {
    slot: Member<Holder>,
    val: usize,
}
gc_type!(Holder { slot });

const VAR: &str = "USURP_CHILD_BARRIER_RANGE";
const MODE: &str = "USURP_CHILD_BARRIER_RANGE_MODE";

/// Task A's loop: null stores through the barrier into `slot` until `stop`
/// or `deadline`. Counts its calls.
#[inline(never)]
fn store_loop(holder: usize, slot: usize, stop: &AtomicBool, calls: &AtomicU64, deadline: Instant) {
    loop {
        for _ in 0..4096 {
            // SAFETY: `slot` is a pointer slot of the rooted holder; null
            // is a valid value.
            unsafe { usurp::gc::usurp_gc_write_barrier(holder as *mut u8, slot as *mut usize, 0) };
        }
        calls.fetch_add(4096, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return;
        }
    }
}

/// What a child saw: (rounds where A was preempted inside the barrier with
/// O in the slot, objects lost, barrier calls of A, refusals as unsafe
/// range).
fn scenario(registered: bool) -> (usize, usize, u64, u64) {
    if !registered {
        usurp_gc::internals::set_barrier_range_registration_for_tests(false);
    }
    usurp_preempt::disable_refusal_backoff_for_tests(true);
    let cfg = HeapConfig { gogc: None, verify: false, max_heap: 64 << 20, ..HeapConfig::default() };
    let rt = Runtime::builder().workers(1).quantum(Duration::from_micros(100)).heap_config(cfg).build().unwrap();
    let (bs, be) = usurp_gc::internals::barrier_code_range();
    // The barrier as a JIT would have it: preemptible code, unless an
    // unsafe range covers it.
    // SAFETY: the barrier is compiled Rust, not JIT code: registered so that
    // a preemption may land inside it (the test's point), which is sound only
    // because it is also an unsafe range (refused there) in the registered
    // run; the unregistered run is the negative control, in a child process
    // whose only effect is the observation. The barrier's section is
    // static, never unmapped.
    let _code = unsafe { usurp::preempt::register_code(bs, be) }.expect("register the barrier as code");
    let rounds_budget = usurp_testsupport::scale(400).max(100);
    let status = usurp::preempt::pc_status(bs);
    assert_eq!(
        matches!(status, usurp::preempt::PcStatus::Unsafe),
        registered,
        "the barrier's code is {status:?} (registered: {registered})"
    );
    rt.block_on(move || {
        let heap = Heap::current().unwrap();
        let holder = Gc::new(Holder { slot: Member::null(), val: 7 });
        let _root = heap.add_root(Some(holder.raw()));
        let holder_addr = holder.raw().addr();
        let slot = holder_addr + 8; // payload word 0
        // D: a plain thread writing `o` into the slot while it is set and
        // D is not paused.
        let o = Arc::new(AtomicUsize::new(0));
        let pause = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let quit = Arc::new(AtomicBool::new(false));
        let d = {
            let (o, pause, paused, quit) = (o.clone(), pause.clone(), paused.clone(), quit.clone());
            std::thread::spawn(move || {
                while !quit.load(Ordering::Relaxed) {
                    if pause.load(Ordering::Acquire) {
                        paused.store(true, Ordering::Release);
                        std::hint::spin_loop();
                        continue;
                    }
                    paused.store(false, Ordering::Release);
                    let v = o.load(Ordering::Relaxed);
                    if v != 0 {
                        // SAFETY: the holder is rooted; its slot is a word.
                        unsafe { (*(slot as *const AtomicUsize)).store(v, Ordering::Relaxed) };
                    }
                }
            })
        };
        // Only preemptions inside the barrier's code are accepted.
        usurp_preempt::set_preempt_window_for_tests(bs, be);
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(if registered { 2 } else { 20 });
        let a_done = Arc::new(AtomicBool::new(false));
        let a = {
            let (stop, calls, a_done) = (stop.clone(), calls.clone(), a_done.clone());
            usurp::spawn(move || {
                store_loop(holder_addr, slot, &stop, &calls, deadline);
                a_done.store(true, Ordering::Release);
            })
        };
        let (mut rounds, mut lost) = (0, 0);
        let wait_d_paused = || {
            pause.store(true, Ordering::Release);
            while !paused.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        };
        // One worker: C runs only while A is parked (preempted inside the
        // barrier: every other preemption is refused) or done.
        while lost == 0 && rounds < rounds_budget && Instant::now() < deadline {
            // A fresh O, referenced only by the slot (D writes it there).
            let fresh = Gc::new(Holder { slot: Member::null(), val: 42 }).raw().addr();
            o.store(fresh, Ordering::Relaxed);
            pause.store(false, Ordering::Release);
            usurp::yield_now(); // A runs until it is preempted inside the barrier
            if a_done.load(Ordering::Acquire) {
                break; // A ran to its deadline without being preempted
            }
            wait_d_paused();
            o.store(0, Ordering::Relaxed);
            // SAFETY: the holder is rooted.
            let v = unsafe { (*(slot as *const AtomicUsize)).load(Ordering::Relaxed) };
            if v != fresh {
                continue; // A's store came last: nothing to lose this round
            }
            rounds += 1;
            heap.debug_begin_marking();
            // Loaded after the start stop, kept only on this (unscanned,
            // i.e. black) stack.
            let kept = std::hint::black_box(v);
            usurp::yield_now(); // A finishes its store, perhaps unshaded
            // Wait until A has stored (its pending store, or, if A is
            // already done, nothing to wait for).
            // SAFETY: as above.
            while unsafe { (*(slot as *const AtomicUsize)).load(Ordering::Relaxed) } != 0 {
                assert!(!a_done.load(Ordering::Acquire), "A finished without storing");
                usurp::yield_now();
            }
            heap.debug_finish_marking();
            if heap.object_at(kept).is_none() {
                lost += 1;
                eprintln!("child: round {rounds}: O {kept:#x}, loaded after the start stop, was not marked");
            }
            heap.finish_sweep();
        }
        stop.store(true, Ordering::Relaxed);
        usurp_preempt::set_preempt_window_for_tests(0, 0);
        a.join().unwrap();
        quit.store(true, Ordering::Relaxed);
        d.join().unwrap();
        std::hint::black_box(holder);
        (rounds, lost, calls.load(Ordering::Relaxed), usurp::preempt::stats().refused(usurp::preempt::Refusal::UnsafeRange))
    })
}

#[test]
fn barrier_range_is_load_bearing() {
    if std::env::var(VAR).is_ok() {
        let mode = std::env::var(MODE).unwrap_or_default();
        usurp_testsupport::child_watchdog(120, "child watchdog: the scenario hung", 99);
        let registered = mode == "registered";
        let (rounds, lost, calls, unsafe_refusals) = scenario(registered);
        println!("RESULT rounds={rounds} lost={lost} calls={calls} unsafe_refusals={unsafe_refusals}");
        std::process::exit(0);
    }
    let parse = |out: &std::process::Output| -> (usize, usize, u64, u64) {
        let s = String::from_utf8_lossy(&out.stdout);
        let line = s.lines().find_map(|l| l.find("RESULT ").map(|i| &l[i..])).unwrap_or_else(|| {
            panic!("child gave no result: {s}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        let num = |k: &str| -> u64 {
            line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap()
        };
        (num("rounds=") as usize, num("lost=") as usize, num("calls="), num("unsafe_refusals="))
    };
    // Negative control: without the registration, a preemption lands
    // between the check and the store, and an object is lost.
    let (out, _) = run_child_env("barrier_range_is_load_bearing", VAR, &[(MODE, Some("unregistered"))]);
    let (rounds, lost, calls, _) = parse(&out);
    eprintln!("unregistered: {rounds} rounds, {lost} lost, {calls} barrier calls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lost > 0, "without the unsafe range, no object was lost in {rounds} rounds ({calls} barrier calls)");
    // With the registration: never preempted inside the barrier.
    let (out, _) = run_child_env("barrier_range_is_load_bearing", VAR, &[(MODE, Some("registered"))]);
    let (rounds, lost, calls, unsafe_refusals) = parse(&out);
    eprintln!("registered: {rounds} rounds, {lost} lost, {calls} barrier calls, {unsafe_refusals} refused as unsafe range");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((rounds, lost), (0, 0), "a preemption landed inside the registered barrier");
    assert!(calls > 0);
    assert!(unsafe_refusals > 0, "no tick landed in the barrier: the registered run shows nothing");
}
