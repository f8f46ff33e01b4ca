//! A second runtime built with another `preempt_signal` than the one in
//! force (red-team RT-sched, `sig.rs second`) got "the preemption signal
//! must be chosen before init()", which named neither the signal in force
//! nor the way out. The error now names both. Its own test binary: the
//! signal is process-wide.
//!
//! Checked by reverting the fix (the `AlreadyInitialized` message in
//! `usurp-preempt`'s `error.rs`): `second_runtime_with_another_signal` fails
//! on the message.

#[test]
fn second_runtime_with_another_signal() {
    let _a = usurp::Runtime::builder().build().unwrap();
    if !_a.async_preemption() {
        // No init() (USURP_DEBUG=asyncpreemptoff=1): no signal in force.
        return;
    }
    let in_force = usurp::preempt::signal();
    let other = if in_force == 40 { 41 } else { 40 };
    let Err(e) = usurp::Runtime::builder().preempt_signal(other).build() else {
        panic!("another signal must be refused");
    };
    let msg = e.to_string();
    assert!(msg.contains(&format!("already {in_force}")), "does not name the signal in force: {msg}");
    assert!(msg.contains(&format!("preempt_signal({in_force})")), "does not name the fix: {msg}");
    // The same signal is accepted.
    usurp::Runtime::builder().preempt_signal(in_force).build().unwrap();
}
