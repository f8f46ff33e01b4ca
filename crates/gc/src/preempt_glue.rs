//! The GC's only contact with `usurp-preempt`: no-preemption sections around
//! allocation and lock-taking mutator calls, and the registration of the
//! write barrier as an unsafe range.
//!
//! Both are the real `usurp-preempt` functions. `usurp-preempt` has no public
//! "is this PC unsafe?" query, so the ranges registered through here are also
//! recorded locally for the tests.

use std::sync::Mutex;

pub use usurp_preempt::no_preempt;

static UNSAFE_RANGES: Mutex<Vec<(usize, usize, bool)>> = Mutex::new(Vec::new());

/// Declare `[start, end)` as code where asynchronous preemption is refused
/// (for the rest of the process).
///
/// # Safety
/// As `usurp_preempt::register_unsafe_range`: with `restartable`, the range
/// must be safe to re-run from `start`; `[start, end)` stays mapped for the
/// rest of the process.
pub unsafe fn register_unsafe_range(start: usize, end: usize, restartable: bool) {
    // SAFETY: per this function's contract.
    match unsafe { usurp_preempt::register_unsafe_range(start, end, restartable) } {
        Ok(h) => h.keep(),
        // Only a full table or an empty range can fail; the barrier is
        // registered once per process, so this is a bug worth shouting about.
        Err(e) => panic!("usurp-gc: cannot register the write barrier as an unsafe range: {e}"),
    }
    UNSAFE_RANGES.lock().unwrap().push((start, end, restartable));
}

/// Whether `pc` lies in a range registered through this module.
#[cfg_attr(not(test), allow(dead_code))]
pub fn is_unsafe_pc(pc: usize) -> bool {
    UNSAFE_RANGES.lock().unwrap().iter().any(|&(s, e, _)| s <= pc && pc < e)
}
