//! `Builder::build` rejects a task stack smaller than a preemption needs on
//! this CPU (issue 12, finding 2): on an AMX machine the XSAVE area alone is
//! ~11 KB, and a 16 KiB stack made every attempt fail with `stack_room`, so a
//! loop in such a task held up a stop-the-world for ever. This machine's
//! number comes from CPUID; an AMX-sized one is simulated with the
//! `#[doc(hidden)]` test switch. Alone in its binary: the switch is global.

use usurp::{Error, Runtime};

#[test]
fn a_stack_too_small_for_a_preemption_is_rejected_with_the_number() {
    let here = usurp::preempt::min_task_stack();
    eprintln!("a preemption needs a {here}-byte task stack on this CPU");
    // AMX tiles add 8 KiB of TILEDATA (+64 bytes TILECFG) to the XSAVE area.
    usurp_preempt::simulate_larger_spill_frame_for_tests(8192 + 64);
    let needed = usurp::preempt::min_task_stack();
    assert!(needed > usurp::MIN_STACK_SIZE, "{needed}");
    let e = Runtime::builder().workers(1).stack_size(usurp::MIN_STACK_SIZE).build().unwrap_err();
    match e {
        Error::StackTooSmallForPreemption { given, needed: n } => {
            assert_eq!(given, usurp::MIN_STACK_SIZE);
            assert_eq!(n, needed);
        }
        other => panic!("expected StackTooSmallForPreemption, got {other:?}"),
    }
    let msg = e_to_string(usurp::MIN_STACK_SIZE);
    assert!(msg.contains(&needed.to_string()), "the message must give the number: {msg}");
    // Exactly the number is enough; without async preemption no room is needed.
    let rt = Runtime::builder().workers(1).stack_size(needed).build().unwrap();
    assert!(rt.stack_size() >= needed);
    drop(rt);
    let rt = Runtime::builder().workers(1).async_preemption(false).stack_size(usurp::MIN_STACK_SIZE).build().unwrap();
    drop(rt);
    usurp_preempt::simulate_larger_spill_frame_for_tests(0);
    // On this CPU the minimum stack (16 KiB) is enough unless its XSAVE area
    // is large (AMX).
    let r = Runtime::builder().workers(1).stack_size(usurp::MIN_STACK_SIZE).build();
    assert_eq!(r.is_ok(), here <= usurp::MIN_STACK_SIZE, "{:?}", r.err());
}

fn e_to_string(size: usize) -> String {
    Runtime::builder().workers(1).stack_size(size).build().unwrap_err().to_string()
}
