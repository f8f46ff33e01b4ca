//! A cheap cycle counter for per-task CPU time (issue 15), and where the
//! frame records sit in the two kinds of saved contexts (for task dumps).
//!
//! [`cycles`] is `rdtsc` when the CPU states an invariant TSC
//! (CPUID.80000007H:EDX[8]: constant rate, runs in every C-state, the same
//! on every core; all x86-64 CPUs since ~2008, and VMs whose hypervisor
//! passes the bit through): no system call, about 20 cycles. The scheduler
//! reads it once per task switch and converts sums of deltas to time off the
//! hot path, with a rate it calibrates against the monotonic clock
//! ([`cycle_hz`] is `None` then: x86-64 has no architectural way to read the
//! TSC rate from user mode everywhere).
//!
//! Without the bit (old CPUs, hypervisors that hide it), TSC deltas may
//! stop in deep C-states, change rate with the frequency or differ between
//! cores, so [`cycles`] reads `CLOCK_MONOTONIC` instead, in ns ([`cycle_hz`]
//! is then 1 GHz). That goes through the vDSO (no system call where the
//! kernel's clocksource allows it): about 20-50 ns instead of rdtsc's
//! ~10-20, paid twice per task switch, or a real system call (~100s of ns)
//! where the kernel itself distrusts the TSC and uses another clocksource.
//! The choice is made once per process, on the first read ([`source`]); a
//! relaxed load of it is all the fast path adds.

use core::sync::atomic::{AtomicU8, Ordering};

/// What [`cycles`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleSource {
    /// The time-stamp counter (invariant TSC stated by CPUID).
    Tsc,
    /// `CLOCK_MONOTONIC`, in ns (no invariant TSC).
    Monotonic,
}

/// The chosen source: 0 not chosen yet, 1 TSC, 2 monotonic clock. Written
/// (the same value by any thread that races) on the first read.
static SOURCE: AtomicU8 = AtomicU8::new(0);

/// The selection rule: the TSC only if extended leaf 0x80000007 exists
/// (`max_ext_leaf`, EAX of leaf 0x80000000) and its EDX bit 8 (invariant
/// TSC) is set.
pub fn select_source(max_ext_leaf: u32, edx_80000007: u32) -> CycleSource {
    if max_ext_leaf >= 0x8000_0007 && edx_80000007 & (1 << 8) != 0 {
        CycleSource::Tsc
    } else {
        CycleSource::Monotonic
    }
}

/// The source [`cycles`] reads (chosen on first use from CPUID).
pub fn source() -> CycleSource {
    match SOURCE.load(Ordering::Relaxed) {
        1 => CycleSource::Tsc,
        2 => CycleSource::Monotonic,
        _ => choose(),
    }
}

#[cold]
#[inline(never)]
fn choose() -> CycleSource {
    // SAFETY: cpuid is available on every x86-64 CPU and touches no memory
    // (an `unsafe fn` in older toolchains).
    #[allow(unused_unsafe)]
    let (max_ext, edx) = unsafe {
        let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        let edx = if max_ext >= 0x8000_0007 { core::arch::x86_64::__cpuid(0x8000_0007).edx } else { 0 };
        (max_ext, edx)
    };
    let s = select_source(max_ext, edx);
    SOURCE.store(if s == CycleSource::Tsc { 1 } else { 2 }, Ordering::Relaxed);
    s
}

/// The cycle counter: the TSC (`rdtsc`, not serialising: it may be read a
/// few instructions early or late, which is noise at the scale of a
/// switch), or the monotonic clock in ns without an invariant TSC (see the
/// module docs).
#[inline(always)]
pub fn cycles() -> u64 {
    if SOURCE.load(Ordering::Relaxed) == 1 {
        // SAFETY: rdtsc reads a counter; it is allowed in user mode on Linux
        // (CR4.TSD is clear) and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    } else {
        cycles_slow()
    }
}

#[cold]
#[inline(never)]
fn cycles_slow() -> u64 {
    match source() {
        // SAFETY: as in `cycles`.
        CycleSource::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
        CycleSource::Monotonic => monotonic_ns(),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_MONOTONIC is
    // always available. Async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The rate of [`cycles`] if it is known: 1 GHz when it reads the
/// monotonic clock; `None` for the TSC (the caller calibrates against the
/// clock).
pub fn cycle_hz() -> Option<u64> {
    match source() {
        CycleSource::Tsc => None,
        CycleSource::Monotonic => Some(1_000_000_000),
    }
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
    fn the_tsc_only_when_cpuid_states_it_invariant() {
        assert_eq!(select_source(0x8000_0008, 1 << 8), CycleSource::Tsc);
        assert_eq!(select_source(0x8000_0007, 0xffff_ffff), CycleSource::Tsc);
        // Bit 8 clear (other power-management bits set): the clock.
        assert_eq!(select_source(0x8000_0008, 0xffff_feff), CycleSource::Monotonic);
        // Leaf 0x80000007 not implemented: whatever EDX says is not read.
        assert_eq!(select_source(0x8000_0006, 1 << 8), CycleSource::Monotonic);
        // The choice is stable and says what cycle_hz says.
        let s = source();
        assert_eq!(source(), s);
        assert_eq!(cycle_hz().is_none(), s == CycleSource::Tsc);
    }

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
