//! Builder validation of the preemption and heap options, and a runtime with
//! async preemption off (cooperative only: still runs tasks, takes no
//! signals, and stop-the-world / collections still complete at cooperative
//! points).

use std::time::Duration;
use usurp::{Error, Runtime};

#[test]
fn quantum_outside_bounds_is_a_clear_error() {
    for q in [Duration::from_micros(99), Duration::ZERO, Duration::from_secs(11)] {
        let e = Runtime::builder().workers(1).quantum(q).build().unwrap_err();
        assert!(matches!(e, Error::InvalidQuantum { given } if given == q), "{e:?}");
        assert!(e.to_string().contains("quantum"), "{e}");
    }
    let rt = Runtime::builder().workers(1).quantum(usurp::MIN_QUANTUM).build().unwrap();
    assert_eq!(rt.quantum(), usurp::MIN_QUANTUM);
    assert_eq!(Runtime::builder().workers(1).build().unwrap().quantum(), usurp::DEFAULT_QUANTUM);
}

#[test]
fn invalid_heap_limit_and_signal_are_errors() {
    let e = Runtime::builder().workers(1).heap_limit(1024).build().unwrap_err();
    assert!(matches!(e, Error::Heap(_)), "{e:?}");
    assert!(e.to_string().contains("max_heap"), "{e}");
    let e = Runtime::builder().workers(1).preempt_signal(libc::SIGSEGV).build().unwrap_err();
    assert!(matches!(e, Error::Preempt(_)), "{e:?}");
}

#[test]
fn async_preemption_off_runs_cooperatively() {
    let rt = Runtime::builder().workers(2).async_preemption(false).build().unwrap();
    assert!(!rt.async_preemption());
    let r = rt.block_on(|| {
        let hs: Vec<_> = (0..8u64).map(|i| usurp::spawn(move || (0..1000).map(|k| k * i).sum::<u64>())).collect();
        let heap = usurp::gc::Heap::current().unwrap();
        heap.collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(r, (0..8u64).map(|i| (0..1000).map(|k| k * i).sum::<u64>()).sum::<u64>());
    rt.stop_the_world();
    rt.start_the_world();
    let st = rt.stats();
    assert!(st.gc.cycles >= 1);
    // Every stop of every cycle (a concurrent cycle stops the world at its
    // start and at its termination), plus the explicit one.
    assert!(st.gc.pauses.len() as u64 >= 2 * st.gc.cycles);
    assert_eq!(st.stw.stops, st.gc.pauses.len() as u64 + 1);
}
