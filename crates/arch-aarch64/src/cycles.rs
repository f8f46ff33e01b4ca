//! A cheap cycle counter for per-task CPU time (issue 15), and where the
//! frame records sit in the two kinds of saved contexts (for task dumps).
//!
//! [`cycles`] reads the generic timer's virtual count `cntvct_el0`: no
//! system call (Linux lets EL0 read it), monotonic, the same on every core,
//! at the rate [`cycle_hz`] reads from `cntfrq_el0` (typically 1 GHz on
//! Armv8.6+ cores, 24-100 MHz before; qemu-user emulates both registers).
//! The scheduler reads it once per task switch and converts sums of deltas
//! to time off the hot path.

/// The virtual counter `cntvct_el0`. Not ordered by an `isb`: it may be read
/// a few instructions early, which is noise at the scale of a switch.
#[inline(always)]
pub fn cycles() -> u64 {
    let v: u64;
    // SAFETY: reads a system register that Linux makes readable at EL0; it
    // touches no memory.
    unsafe { core::arch::asm!("mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The rate of [`cycles`] in Hz (`cntfrq_el0`), or `None` if it reads 0
/// (firmware that did not program it: the caller calibrates).
pub fn cycle_hz() -> Option<u64> {
    let v: u64;
    // SAFETY: as in `cycles`.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    (v != 0).then_some(v)
}

/// Offset from a context's saved SP (as stored by [`crate::switch`]) to its
/// frame record `{x29, x30}` (x30: where `switch` returns): sp+80.
pub const SWITCH_FRAME_RECORD: usize = 80;

/// Offset from the SP that [`crate::with_registers_spilled`] passes to its
/// callback to the frame record it pushed `{x29, x30}`: at the SP itself.
pub const SPILLED_FRAME_RECORD: usize = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_advance_at_the_stated_rate() {
        let hz = cycle_hz().expect("cntfrq_el0 is programmed");
        let a = cycles();
        let t = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = cycles();
        let secs = t.elapsed().as_secs_f64();
        let measured = (b - a) as f64 / secs;
        // Generous: emulators and loaded machines stretch the sleep.
        assert!(measured > hz as f64 * 0.3 && measured < hz as f64 * 3.0, "{measured} Hz vs cntfrq {hz}");
    }

    #[test]
    fn spilled_frame_record_is_where_the_asm_puts_it() {
        let mut ok = false;
        crate::with_registers_spilled(&mut |sp| {
            // SAFETY: [sp, sp+16) is the frame record the routine just pushed
            // on this thread's live stack.
            let (fp, lr) = unsafe {
                (*((sp + SPILLED_FRAME_RECORD) as *const usize), *((sp + SPILLED_FRAME_RECORD + 8) as *const usize))
            };
            ok = fp > sp && lr != 0;
        });
        assert!(ok);
    }
}
