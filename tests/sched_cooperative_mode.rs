//! A runtime without async preemption (`USURP_DEBUG=asyncpreemptoff=1`,
//! `async_preemption(false)`: for debuggers and valgrind, which must see no
//! signal) still answers at cooperative points (new-user probe 112): its
//! workers register signal-free slots, whose checkpoint flag stops and the
//! timer monitor set (`worker/thread.rs`, `sysmon.rs` `retake`). Before, it
//! registered none: a task that polled `checkpoint()` held up every
//! collection for ever (the stop waited), sleepers beside such tasks
//! starved, and of two such tasks on one worker only the first ran.
//!
//! Each scenario is run with the slots (the fix) and without them
//! (`hooks::set_cooperative_slots_for_tests(false)`, the negative control,
//! the old behaviour). Every loop here ends by itself after a bound, so
//! that the control's stuck collection completes at the end and no thread
//! is left spinning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::{serial, within};

/// Ordinary Rust that polls `checkpoint()` every 1024 iterations, counting
/// its rounds in `n`, until `stop` or `limit` passed.
#[inline(never)]
fn poll_loop(stop: &AtomicBool, n: &AtomicU64, limit: Duration) {
    let t = Instant::now();
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) && t.elapsed() < limit {
        for _ in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        n.fetch_add(1, Ordering::Relaxed);
        usurp::checkpoint();
    }
}

/// Spawns `n` polling loops on `rt` (each on its own counter, ending at
/// `stop` or after 3 s) and waits, from this plain thread, until all of
/// them run.
fn start_loops(rt: &Runtime, n: usize, stop: &Arc<AtomicBool>) -> (Vec<usurp::JoinHandle<()>>, Vec<Arc<AtomicU64>>) {
    let counts: Vec<_> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let hs = counts
        .iter()
        .map(|c| {
            let (s, c) = (stop.clone(), c.clone());
            rt.spawn(move || poll_loop(&s, &c, Duration::from_secs(3)))
        })
        .collect();
    (hs, counts)
}

/// Waits on this plain thread (never a task of the runtime, which the
/// loops may starve) until `cond` or `bound`; whether `cond` held.
fn wait_for(bound: Duration, cond: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while !cond() && t.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

fn finish(stop: &AtomicBool, hs: Vec<usurp::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join().unwrap();
    }
}

struct Outcome {
    /// A collection asked for by a task beside two polling loops that hold
    /// both workers completed within 1 s.
    collected: bool,
    /// 1 ms sleeps a task completed beside them in 500 ms.
    sleeps: u64,
    /// On a one-worker runtime, the second of two polling loops ran within
    /// 300 ms (the first loops for 3 s).
    second_ran: bool,
}

fn scenario(slots: bool) -> Outcome {
    let _s = serial();
    hooks::set_cooperative_slots_for_tests(slots);
    let out = within(120, "cooperative mode", || {
        let builder = |n| Runtime::builder().workers(n).async_preemption(false).build().unwrap();
        let rt = builder(2);
        let stop = Arc::new(AtomicBool::new(false));
        let (mut loops, counts) = start_loops(&rt, 2, &stop);
        assert!(wait_for(Duration::from_secs(10), || counts.iter().all(|c| c.load(Ordering::SeqCst) > 0)));
        // A collection asked for by a task.
        let done = Arc::new(AtomicBool::new(false));
        let (d2, heap) = (done.clone(), rt.heap().clone());
        let collector = rt.spawn(move || {
            heap.collect();
            d2.store(true, Ordering::SeqCst);
        });
        let collected = wait_for(Duration::from_secs(1), || done.load(Ordering::SeqCst));
        // A sleeper.
        let slept = Arc::new(AtomicU64::new(0));
        let (n2, s2) = (slept.clone(), stop.clone());
        let sleeper = rt.spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                usurp::sleep(Duration::from_millis(1));
                n2.fetch_add(1, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let sleeps = slept.load(Ordering::SeqCst);
        loops.push(collector);
        loops.push(sleeper);
        finish(&stop, loops);
        drop(rt);
        // Two loops on one worker.
        let rt = builder(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (loops, counts) = start_loops(&rt, 2, &stop);
        let second_ran = wait_for(Duration::from_millis(300), || counts.iter().all(|c| c.load(Ordering::SeqCst) > 0));
        finish(&stop, loops);
        Outcome { collected, sleeps, second_ran }
    });
    hooks::set_cooperative_slots_for_tests(true);
    out
}

#[test]
fn without_async_preemption_cooperative_points_answer_stops_timers_and_quanta() {
    let o = scenario(true);
    eprintln!("slots: collected {}, {} sleeps in 500 ms, second loop ran {}", o.collected, o.sleeps, o.second_ran);
    assert!(o.collected, "a collection beside tasks polling checkpoint() did not complete within 2 s");
    assert!(o.sleeps >= 50, "the sleeper woke only {} times in 500 ms beside tasks polling checkpoint()", o.sleeps);
    assert!(o.second_ran, "of two tasks polling checkpoint() on one worker, the second never ran");
}

#[test]
fn negative_control_without_the_cooperative_slots_nothing_answers() {
    let o = scenario(false);
    eprintln!("no slots: collected {}, {} sleeps in 500 ms, second loop ran {}", o.collected, o.sleeps, o.second_ran);
    assert!(!o.collected, "the collection completed without the slots: the control shows nothing");
    assert!(o.sleeps < 10, "{} sleeps without the slots: the control shows nothing", o.sleeps);
    assert!(!o.second_ran, "the second loop ran without the slots: the control shows nothing");
}
