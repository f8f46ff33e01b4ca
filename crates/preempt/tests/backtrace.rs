//! DWARF unwinding through an asynchronous preemption (issue 12, "debuggers
//! and profilers see through a preemption"): a backtrace taken in the park
//! hook with `std::backtrace` (libgcc's `_Unwind_Backtrace`, the DWARF CFI
//! gdb and perf use too) walks from the hook through the spill routine into
//! the interrupted function and on to its callers. Runs natively and under
//! qemu-aarch64; `tests/gdb_backtrace.rs` checks gdb itself on x86-64.


use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_preempt::SpillFrame;

usurp_preempt::preemptible! {
    /// The interrupted function: a tight loop without calls.
    pub fn bt_interrupted_leaf(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}

/// Its caller (outside preemptible code; only its frame matters).
#[inline(never)]
fn bt_calling_function(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut acc = 0u64;
    while !stop.load(Ordering::Relaxed) {
        acc = acc.wrapping_add(std::hint::black_box(bt_interrupted_leaf(std::hint::black_box(50_000))));
    }
    acc
}

#[test]
fn dwarf_backtrace_walks_from_the_park_hook_to_the_interrupted_callers() {
    static TRACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let leaf = bt_interrupted_leaf as *const () as usize;
    let (parks, st) = run_until(
        RunConfig { quantum: Duration::from_millis(1), ..RunConfig::default() },
        |stop| {
            std::hint::black_box(bt_calling_function(stop));
        },
        Some(Box::new(move |f: &SpillFrame, _c: &Ctx| {
            // Only preemptions inside the leaf (not in the caller's loop).
            let mut t = TRACES.lock().unwrap();
            if f.pc() >= leaf && f.pc() < leaf + 4096 && t.len() < 3 {
                t.push(std::backtrace::Backtrace::force_capture().to_string());
            }
        })),
        |_| TRACES.lock().unwrap().len() >= 3,
        Duration::from_secs(60),
    );
    let traces = TRACES.lock().unwrap();
    assert!(!traces.is_empty(), "never preempted inside the leaf: {st:?}");
    assert_eq!(parks, st.accepted);
    let spill = if cfg!(target_arch = "x86_64") { "usurp_x86_64_spill" } else { "usurp_aarch64_spill" };
    for t in traces.iter() {
        let pos = |name: &str| t.find(name).unwrap_or_else(|| panic!("{name} missing from the backtrace:\n{t}"));
        let (s, l, c) = (pos(spill), pos("bt_interrupted_leaf"), pos("bt_calling_function"));
        assert!(s < l && l < c, "frames out of order (spill {s}, leaf {l}, caller {c}):\n{t}");
        // And on past the caller, to the task body (the test's closure).
        assert!(t[c..].contains("backtrace::dwarf_backtrace"), "the walk stopped at the caller:\n{t}");
    }
}
