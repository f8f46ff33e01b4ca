//! A checkpoint's yield fires due timers (new-user probe 112): a worker
//! whose tasks run ordinary (not `preemptible!`) code that polls
//! `usurp::checkpoint()` yields there once a quantum, and reached its
//! scheduler loop, which fires timers, only every 61st yield: a 1 ms
//! sleeper beside two such loops woke 25 ms late at p50. The yield now
//! fires them, as a preemption does.
//!
//! Asserted through counts, not timing: the sleeper's completed 1 ms sleeps
//! while the loops run 600 ms, with the fix (about one per 1-2 quanta) and
//! without it (`hooks::set_timers_at_checkpoint_for_tests(false)`, the
//! negative control: about one per 61 quanta).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::{serial, within};

/// Ordinary Rust that polls `checkpoint()` every 1024 iterations.
#[inline(never)]
fn spin_polling(mut x: u64, n: u64) -> u64 {
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x & 0x3ff == 0 {
            usurp::checkpoint();
        }
    }
    x
}

/// Sleeps of 1 ms completed beside `loops` polling loops (one worker, 1 ms
/// quantum) while they run for 600 ms.
fn sleeps_beside_polling_loops(timers_at_checkpoint: bool) -> u64 {
    let _s = serial();
    hooks::set_timers_at_checkpoint_for_tests(timers_at_checkpoint);
    let n = within(120, "a sleeper beside polling loops", || {
        let rt = Runtime::builder().workers(1).quantum(Duration::from_millis(1)).build().unwrap();
        rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let slept = Arc::new(AtomicU64::new(0));
            let (s2, n2) = (stop.clone(), slept.clone());
            let sleeper = usurp::spawn(move || {
                while !s2.load(Ordering::SeqCst) {
                    usurp::sleep(Duration::from_millis(1));
                    n2.fetch_add(1, Ordering::SeqCst);
                }
            });
            let loops: Vec<_> = (0..2u64)
                .map(|k| {
                    usurp::spawn(move || {
                        let t = Instant::now();
                        let mut x = k + 1;
                        while t.elapsed() < Duration::from_millis(600) {
                            x = spin_polling(x, 10_000);
                        }
                        x
                    })
                })
                .collect();
            for l in loops {
                std::hint::black_box(l.join().unwrap());
            }
            let n = slept.load(Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            sleeper.join().unwrap();
            n
        })
    });
    hooks::set_timers_at_checkpoint_for_tests(true);
    n
}

#[test]
fn a_checkpoints_yield_fires_due_timers() {
    let n = sleeps_beside_polling_loops(true);
    eprintln!("timers at checkpoints: {n} sleeps of 1 ms in 600 ms");
    // About 300 (a sleep and up to a quantum); 61 quanta per sleep would
    // give about 10.
    assert!(n >= 60, "the sleeper woke only {n} times in 600 ms beside loops polling checkpoint()");
}

#[test]
fn negative_control_without_timers_at_checkpoints_the_sleeper_waits_for_the_scheduler_loop() {
    let n = sleeps_beside_polling_loops(false);
    eprintln!("no timers at checkpoints: {n} sleeps of 1 ms in 600 ms");
    assert!(n < 40, "{n} sleeps: the control shows nothing (timers fired elsewhere)");
}
