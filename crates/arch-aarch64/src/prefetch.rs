//! A software prefetch for the collector's mark loop (issue 9): the marker
//! pops grey objects a few entries ahead of scanning them and prefetches
//! each one's first cache line (its header and first payload words), so
//! that the cache misses of several objects overlap instead of each
//! stalling the scan in turn (see `usurp-gc`'s `mark.rs`).
//!
//! `prfm pldl1keep`: prefetch for load into L1, normal (temporal)
//! retention. (`core::arch::aarch64::_prefetch` is not stable, hence the
//! one-instruction `asm!`.) PRFM is a hint: it never generates a
//! synchronous exception (translation faults and permission faults are
//! ignored, Arm ARM "Prefetch memory"), writes no register and no memory,
//! so any address is fine and the function is safe.

/// Hint the CPU to bring the cache line holding `addr` into the caches
/// (for a read soon). Any address: a hint never faults.
#[inline(always)]
pub fn prefetch_read(addr: usize) {
    // SAFETY: PRFM only hints the memory system: it cannot fault, writes no
    // register, memory or flag, and touches no stack.
    unsafe { core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) addr, options(nostack, readonly, preserves_flags)) }
}

#[cfg(test)]
mod tests {
    use super::prefetch_read;

    #[test]
    fn prefetch_never_faults() {
        let v = [1u64, 2, 3];
        prefetch_read(v.as_ptr() as usize);
        // Null, unmapped and untranslatable addresses: dropped hints.
        for a in [0usize, 8, 0x1000, 0x0000_ffff_ffff_f000, 0xdead_0000_0000_0000, usize::MAX] {
            prefetch_read(a);
        }
        assert_eq!(v.iter().sum::<u64>(), 6);
    }
}
