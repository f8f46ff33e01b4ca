//! Call-free loops in the runtime's preemptible section, shared by the
//! tests that need a task to be preempted asynchronously (a tight loop can
//! leave its worker only through a timer signal) while it holds a value in
//! a register or a stack slot of its frame.
//!
//! They are compiled in this crate with `usurp::preemptible!` (the
//! `usurp_preemptible` link section is collected across every crate of the
//! final binary, so they count as preemptible code in any test that links
//! them). They call nothing inside the loop (the runtime must never run
//! inside preemptible code): the stop flag is read and the counter written
//! with volatile accesses of the atomics' memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

usurp_preempt::preemptible! {
    /// Spins until `stop` is set, publishing its iteration count in `count`
    /// every 4096 iterations and once more at the end.
    pub fn spin(stop: &AtomicBool, count: &AtomicU64) {
        let mut n = 0u64;
        loop {
            // SAFETY: a volatile read of a valid AtomicBool (no call).
            let s = unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) };
            if s != 0 {
                break;
            }
            n = n.wrapping_add(1);
            if n & 0xfff == 0 {
                // SAFETY: a valid, aligned u64 (an AtomicU64 that only this
                // loop writes while it runs).
                unsafe { std::ptr::write_volatile(count.as_ptr(), n) };
            }
        }
        count.store(n, Ordering::Relaxed);
    }

    /// Holds `w` (in a register or a stack slot of this frame) while
    /// spinning until `stop`, publishing the spin count in `spins` like
    /// [`spin`]; returns `w` unchanged (rotated there and back on every
    /// iteration, so that it stays live and opaque to the optimizer).
    pub fn hold_spinning(w: usize, stop: &AtomicBool, spins: &AtomicU64) -> usize {
        let mut n = 0u64;
        let mut x = w;
        loop {
            // SAFETY: a volatile read of a valid AtomicBool (no call).
            if unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } != 0 {
                break;
            }
            n = n.wrapping_add(1);
            x = x.rotate_left(17).rotate_right(17);
            if n & 0xfff == 0 {
                // SAFETY: a valid, aligned u64 (an AtomicU64 that only this
                // loop writes while it runs).
                unsafe { std::ptr::write_volatile(spins.as_ptr(), n) };
            }
        }
        spins.store(n, Ordering::Relaxed);
        x
    }
}
