//! Refused quantum ticks back off (issue 12, "tick only when someone
//! waits"): a task that stays in non-preemptible code is re-signalled a
//! quantum after the first refusal, then with a doubling delay up to
//! max(quantum, 1 ms), not every quarter quantum; and the cooperative yields at
//! `checkpoint()` that a refusal caused are counted.
//!
//! The bound checked is an upper bound on signals (a loaded machine only
//! delivers timer signals later, never earlier), so it cannot fail because
//! the machine is slow; on an idle machine a 200-quantum window without the
//! backoff takes ~800 refused ticks, far above it, but on a loaded one
//! (signals reach a thread only while it runs) it may not. The negative
//! control that does not depend on load is the `backed_off` counter: with
//! the backoff switched off (`#[doc(hidden)]` switch) it stays 0 and the test
//! fails. The delay sequence itself is unit-tested in `signal.rs`.


use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usurp_testsupport::miniworker::*;
use usurp_preempt::Refusal;

/// A loop outside preemptible code (every tick landing here is refused
/// with `not_preemptible_code`).
#[inline(never)]
fn busy(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i));
    }
    x
}

#[test]
fn refused_ticks_back_off_and_yields_after_refusal_are_counted() {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static WINDOW_NS: AtomicU64 = AtomicU64::new(0);
    static YIELDS: AtomicU64 = AtomicU64::new(0);
    static BACKED_OFF: AtomicU64 = AtomicU64::new(0);
    let quantum = Duration::from_millis(1);
    let quanta = 200u32;
    let slot = new_slot();
    let worker = spawn_mini_worker(
        slot,
        RunConfig { quantum, ..RunConfig::default() },
        Box::new(move || {
            let slot = usurp_preempt::current_worker().expect("on a worker");
            let before = slot.stats();
            let t0 = Instant::now();
            while t0.elapsed() < quantum * quanta {
                busy(2_000);
                // Cooperative code polls: a refusal set the flag.
                usurp_preempt::checkpoint();
            }
            let after = slot.stats();
            WINDOW_NS.store(t0.elapsed().as_nanos() as u64, Ordering::SeqCst);
            REFUSED.store(
                after.refused(Refusal::NotPreemptibleCode) - before.refused(Refusal::NotPreemptibleCode),
                Ordering::SeqCst,
            );
            YIELDS.store(after.yields_after_refusal - before.yields_after_refusal, Ordering::SeqCst);
            BACKED_OFF.store(after.backed_off - before.backed_off, Ordering::SeqCst);
        }),
        None,
    );
    let parks = worker.join().expect("worker");
    let st = slot.stats();
    let window_q = WINDOW_NS.load(Ordering::SeqCst) as f64 / quantum.as_nanos() as f64;
    let refused = REFUSED.load(Ordering::SeqCst);
    eprintln!(
        "window {window_q:.0} quanta: refused ticks {refused}, yields after refusal {}, backed off {}; {st:?}",
        YIELDS.load(Ordering::SeqCst),
        BACKED_OFF.load(Ordering::SeqCst)
    );
    assert_eq!(parks, 0);
    assert!(refused >= 1, "no tick was refused: {st:?}");
    // With the backoff: at most about one refused tick per quantum (plus the
    // first few shorter retries). Without it: four per quantum.
    let bound = (1.5 * window_q) as u64 + 6;
    assert!(refused <= bound, "{refused} refused ticks in {window_q:.0} quanta (bound {bound}): no backoff");
    assert!(BACKED_OFF.load(Ordering::SeqCst) >= 1, "{st:?}");
    // Every refusal set the checkpoint flag and the task polled it.
    let y = YIELDS.load(Ordering::SeqCst);
    assert!(y >= 1 && y <= refused, "yields after refusal {y}, refused {refused}");
    assert!(st.checkpoint_yields >= y);
}
