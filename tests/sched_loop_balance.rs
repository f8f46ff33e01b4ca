//! Uneven loop splits are rebalanced (issue 11): an async-preempted task
//! that may migrate goes to the global queue (Go's `gopreempt_m`), so
//! call-free loops rotate over every worker instead of staying where the
//! split left them.
//!
//! Three loops on two workers split 2+1: the worker running one loop alone
//! has nothing waiting for it (empty ring, empty global queue), so before
//! the change its quantum never ticked and it ran its loop to the end while
//! the other worker rotated two. The test records, per loop, which workers
//! ran it while all three loops were still unfinished, and asserts each
//! ran on both. Behaviour, not speed: the loops are long enough for a few
//! dozen quanta, and the cap only turns "never" into a failure. Negative
//! control through `hooks::set_preempted_to_global_for_tests(false)`.


use usurp_testsupport::{scale, within};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use usurp_sched::hooks;
use usurp::{preemptible, Runtime};

static SWITCH: Mutex<()> = Mutex::new(());

/// Turns the preempted-to-global switch off for a negative control and
/// back on when dropped, also when the control panics or times out (the
/// switch is process-wide: left off, it would break the other tests of
/// this binary).
struct SwitchOff;
impl SwitchOff {
    fn new() -> SwitchOff {
        hooks::set_preempted_to_global_for_tests(false);
        SwitchOff
    }
}
impl Drop for SwitchOff {
    fn drop(&mut self) {
        hooks::set_preempted_to_global_for_tests(true);
    }
}

preemptible! {
    /// A call-free chunk of work (no cooperative point inside).
    fn chunk(n: u64) -> u64 {
        let mut x = 0u64;
        let mut i = 0u64;
        while i < n {
            x = x.wrapping_add(i);
            // SAFETY: an empty asm statement; it only keeps LLVM from folding the loop.
            unsafe { std::arch::asm!("/* {0} */", inout(reg) x, options(nomem, nostack, preserves_flags)) };
            i += 1;
        }
        x
    }
}

/// Per loop, the bit set of workers that ran one of its chunks while no
/// loop had finished yet.
fn run_loops() -> Vec<usize> {
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    // About 0.3 ms a chunk natively; a loop is a few hundred quanta.
    let (chunks, per_chunk) = (scale(800) as u64, 1_000_000u64);
    let seen = rt.block_on(move || {
        let finished = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let finished = finished.clone();
                usurp::spawn(move || {
                    let mut workers = 0usize;
                    let mut sum = 0u64;
                    for _ in 0..chunks {
                        sum = sum.wrapping_add(chunk(per_chunk));
                        // Ordinary code between chunks: no switch here.
                        if finished.load(Ordering::SeqCst) == 0 {
                            workers |= 1 << hooks::current_worker_index().unwrap();
                        }
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    std::hint::black_box(sum);
                    workers
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<usize>>()
    });
    assert!(rt.stats().preempt.accepted > 0, "no loop was ever preempted");
    seen
}

#[test]
fn preempted_loops_rotate_over_all_workers() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seen = within(300, "loop balance", run_loops);
    let f = chunk as fn(u64) -> u64 as usize;
    assert_eq!(hooks::preemptible_fn_touches_tls(f), Some(false), "the loops would be pinned");
    assert!(
        seen.iter().all(|&w| w == 0b11),
        "a loop ran on one worker only while all three were unfinished (worker bit sets {seen:?})"
    );
}

#[test]
fn negative_control_preempted_loops_kept_local_stay_split() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let _off = SwitchOff::new(); // back on when dropped (before `_g`)
    let seen = within(300, "loop balance (kept local)", run_loops);
    assert!(
        seen.iter().any(|&w| w.count_ones() == 1),
        "negative control: with preempted loops kept local one loop should stay on one worker (bit sets {seen:?})"
    );
}
