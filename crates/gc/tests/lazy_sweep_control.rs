//! Negative control of the lazy-sweep lookup rule (see lazy_sweep.rs): with
//! the test-only switch `LOOKUP_IGNORES_SWEEP_STATE` set, lookups trust an
//! unswept block's object-start bits alone, and the same stray word revives
//! the dead parent, whose pointer field now leads to whatever reuses its
//! freed child's slot. A binary of its own: the switch is process-wide.

mod common;
use common::*;
use std::sync::atomic::Ordering;
use usurp_gc::HeapConfig;

#[test]
fn without_the_rule_a_stray_word_revives_a_dead_unswept_object() {
    usurp_gc::internals::LOOKUP_IGNORES_SWEEP_STATE.store(true, Ordering::SeqCst);
    let h = heap_with(HeapConfig { verify: false, ..config(64 << 20) });
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let (p, _c, reused) = lazy_sweep_scenario(&h);
    let revived = h.find_object(p).expect("without the rule, the dead parent is found");
    // Its field leads to the object that took its dead child's slot.
    assert_eq!(revived.ptr(0).map(|r| r.addr()), Some(reused.addr()));
    usurp_gc::internals::LOOKUP_IGNORES_SWEEP_STATE.store(false, Ordering::SeqCst);
}
