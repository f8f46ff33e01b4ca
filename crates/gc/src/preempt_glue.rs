//! The GC's only contact with `usurp-preempt`: no-preemption sections around
//! allocation and the registration of the write barrier as an unsafe range.
//!
//! State: `usurp-preempt` does not export `no_preempt` / `register_unsafe_range`
//! yet, so this module provides the fallbacks below. The no-preemption fallback
//! runs the closure directly; this is sound as long as nothing preempts tasks
//! asynchronously (true until the preempt crate lands, which is also when these
//! functions switch to the real ones). The range registry fallback records the
//! ranges locally so that tests can check the bounds.

use std::sync::Mutex;

/// Run `f` with asynchronous preemption of the current task disabled.
#[inline(always)]
pub fn no_preempt<R>(f: impl FnOnce() -> R) -> R {
    f()
}

static UNSAFE_RANGES: Mutex<Vec<(usize, usize, bool)>> = Mutex::new(Vec::new());

/// Declare `[start, end)` as code where asynchronous preemption is refused.
pub fn register_unsafe_range(start: usize, end: usize, restartable: bool) {
    UNSAFE_RANGES.lock().unwrap().push((start, end, restartable));
}

/// Whether `pc` lies in a range registered through this module.
#[cfg_attr(not(test), allow(dead_code))]
pub fn is_unsafe_pc(pc: usize) -> bool {
    UNSAFE_RANGES.lock().unwrap().iter().any(|&(s, e, _)| s <= pc && pc < e)
}
