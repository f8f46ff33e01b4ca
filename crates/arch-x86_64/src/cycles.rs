//! A cheap cycle counter for per-task CPU time (issue 15), and where the
//! frame records sit in the two kinds of saved contexts (for task dumps).
//!
//! [`cycles`] is `rdtsc`: no system call, about 20 cycles, monotonic and at
//! a constant rate across cores on every x86-64 CPU with an invariant TSC
//! (all of them since ~2008; in a VM the hypervisor keeps it so). The
//! scheduler reads it once per task switch and converts sums of deltas to
//! time off the hot path, with a rate it calibrates once against the
//! monotonic clock ([`cycle_hz`] is `None` here: x86-64 has no
//! architectural way to read the TSC rate from user mode everywhere).

/// The time-stamp counter (`rdtsc`). Not serialising: it may be read a few
/// instructions early or late, which is noise at the scale of a switch.
#[inline(always)]
pub fn cycles() -> u64 {
    // SAFETY: rdtsc reads a counter; it is allowed in user mode on Linux
    // (CR4.TSD is clear) and touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The rate of [`cycles`] if the architecture states it: never on x86-64
/// (the caller calibrates against the clock).
pub fn cycle_hz() -> Option<u64> {
    None
}

/// Offset from a context's saved SP (as stored by [`crate::switch`]) to its
/// frame record `{caller's rbp, return address}`: rbp at sp+48, the return
/// address into the function that called `switch` at sp+56.
pub const SWITCH_FRAME_RECORD: usize = 48;

/// Offset from the SP that [`crate::with_registers_spilled`] passes to its
/// callback to the frame record it pushed `{caller's rbp, return address}`
/// (pad and five registers below it).
pub const SPILLED_FRAME_RECORD: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_advance() {
        let a = cycles();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = cycles();
        assert!(b > a, "rdtsc did not advance over 2 ms: {a} -> {b}");
    }

    #[test]
    fn spilled_frame_record_is_where_the_asm_puts_it() {
        let mut ok = false;
        crate::with_registers_spilled(&mut |sp| {
            // SAFETY: [sp, sp+64) is the frame the routine just pushed on
            // this thread's live stack.
            let (fp, ret) = unsafe {
                (*((sp + SPILLED_FRAME_RECORD) as *const usize), *((sp + SPILLED_FRAME_RECORD + 8) as *const usize))
            };
            // The saved rbp is a frame of ours, above the record; the return
            // address is code.
            ok = fp > sp + SPILLED_FRAME_RECORD && ret != 0;
        });
        assert!(ok);
    }
}
