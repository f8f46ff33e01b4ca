//! A preemption signal other than SIGURG, chosen before init.


use std::sync::atomic::Ordering;
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::{set_signal, signal, Error};

#[test]
fn a_realtime_signal_can_replace_sigurg() {
    let sig = libc::SIGRTMIN() + 2;
    set_signal(sig).unwrap();
    usurp_preempt::init().unwrap();
    assert_eq!(signal(), sig);
    assert_eq!(set_signal(libc::SIGUSR1), Err(Error::AlreadyInitialized));
    let need = ((50.0 * scale()) as u64).max(5);
    let (parks, st) = run_until(
        RunConfig::default(),
        |stop| {
            while !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
        },
        None,
        |s| s.accepted >= need && s.ticks >= need,
        Duration::from_secs(60),
    );
    assert!(st.accepted >= need, "{st:?}");
    assert!(st.ticks >= need, "{st:?}");
    assert_eq!(parks, st.accepted);
}
