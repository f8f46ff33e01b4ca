//! The preemption path end to end on whichever arch crate this target uses
//! (x86-64 natively, aarch64 under qemu in CI): a task in a preemptible
//! Rust loop on a mini worker is preempted by timer ticks and targeted
//! requests, parked, resumed, and computes the right results (on the
//! shared one-thread harness, `usurp_testsupport::miniworker`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use usurp_preempt::preemptible;
use usurp_testsupport::miniworker::{run_until, RunConfig};
use usurp_testsupport::scale_factor as scale;

preemptible! {
    fn mix(n: u64, seed: u64) -> u64 {
        let mut x = seed;
        for i in 0..n {
            x = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}

static BAD_FRAMES: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);

#[test]
fn a_preemptible_loop_is_preempted_and_resumes_correctly() {
    let want = mix(20_000, 7);
    let need = ((200.0 * scale()) as u64).max(20);
    let cfg = RunConfig { quantum: Duration::from_micros(200), stack_bytes: 256 * 1024, ..RunConfig::default() };
    let (parks, st) = run_until(
        cfg,
        move |stop| {
            while !stop.load(Ordering::Relaxed) {
                if mix(20_000, 7) != want {
                    WRONG.fetch_add(1, Ordering::Relaxed);
                }
                ROUNDS.fetch_add(1, Ordering::Relaxed);
            }
        },
        Some(Box::new(|f, _| {
            let (lo, hi) = f.saved_range();
            if !(lo < hi && hi <= f.sp()) || f.gprs().is_empty() || f.pc() == 0 {
                BAD_FRAMES.fetch_add(1, Ordering::Relaxed);
            }
        })),
        |s| s.accepted >= need,
        Duration::from_secs(60),
    );
    eprintln!("{st:?}, rounds {}", ROUNDS.load(Ordering::Relaxed));
    assert_eq!(WRONG.load(Ordering::Relaxed), 0);
    assert_eq!(BAD_FRAMES.load(Ordering::Relaxed), 0);
    assert!(st.accepted >= need, "{st:?}");
    assert_eq!(parks, st.accepted);
    assert!(ROUNDS.load(Ordering::Relaxed) > 0);
}
