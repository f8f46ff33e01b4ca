//! `USURP_DEBUG=asyncpreemptoff=1`: no asynchronous preemption at all, and
//! the refused ticks turn into cooperative requests that `checkpoint()` serves.


use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::{checkpoint, set_yield_hook, Refusal};

static YIELDS: AtomicU64 = AtomicU64::new(0);

fn on_yield() {
    YIELDS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn asyncpreemptoff_refuses_and_checkpoint_yields() {
    std::env::set_var("USURP_DEBUG", "gctrace=0,asyncpreemptoff=1");
    usurp_preempt::init().unwrap();
    assert!(usurp_preempt::async_preempt_off());
    set_yield_hook(on_yield);
    let need = ((50.0 * scale()) as u64).max(5);
    let (parks, st) = run_until(
        RunConfig::default(),
        |stop| {
            while !stop.load(Ordering::Relaxed) {
                spin(5_000);
                checkpoint();
            }
        },
        None,
        |s| s.refused(Refusal::AsyncOff) >= need && YIELDS.load(Ordering::SeqCst) >= need,
        Duration::from_secs(60),
    );
    assert_eq!(st.accepted, 0, "{st:?}");
    assert_eq!(parks, 0);
    assert!(st.refused(Refusal::AsyncOff) >= need, "{st:?}");
    assert!(YIELDS.load(Ordering::SeqCst) >= need, "checkpoint never yielded");
    // Outside a worker, checkpoint does nothing (and does not crash).
    checkpoint();
}
