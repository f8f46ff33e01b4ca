//! An active user shadow stack (x86-64 CET SHSTK, aarch64 GCS) is refused
//! with its own counted reason (issue 12, finding 6). No CI machine runs with
//! shadow stacks on, so the refusal is driven through the test-only switch
//! that makes the check see one; the detection itself is tested in the arch
//! crates (x86-64: `rdssp` agrees with `ARCH_SHSTK_STATUS`; aarch64: the GCS
//! record of the signal frame). Alone in its binary: the switch is global.


use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::Refusal;

#[test]
fn an_active_shadow_stack_is_refused_and_counted() {
    static PHASE_TWO: AtomicBool = AtomicBool::new(false);
    let need = ((20.0 * scale()) as u64).max(5);
    usurp_preempt::fake_shadow_stack_for_tests(true);
    let (parks, st) = run_until(
        RunConfig::default(),
        move |stop| {
            let slot = usurp_preempt::current_worker().expect("on a worker");
            while slot.stats().refused(Refusal::ShadowStack) < need && !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
            assert_eq!(slot.stats().accepted, 0, "preempted with a shadow stack active");
            // Shadow stack off again: preemption resumes.
            usurp_preempt::fake_shadow_stack_for_tests(false);
            PHASE_TWO.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
        },
        None,
        |s| s.refused(Refusal::ShadowStack) >= need && s.accepted >= need,
        Duration::from_secs(60),
    );
    assert!(PHASE_TWO.load(Ordering::SeqCst), "{st:?}");
    assert!(st.refused(Refusal::ShadowStack) >= need, "{st:?}");
    assert!(st.accepted >= need, "{st:?}");
    assert_eq!(parks, st.accepted);
}
