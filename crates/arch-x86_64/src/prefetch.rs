//! A software prefetch for the collector's mark loop (issue 9): the marker
//! pops grey objects a few entries ahead of scanning them and prefetches
//! each one's first cache line (its header and first payload words), so
//! that the cache misses of several objects overlap instead of each
//! stalling the scan in turn (see `usurp-gc`'s `mark.rs`).
//!
//! `prefetcht0`: into every cache level. A prefetch is a hint: it never
//! faults (an unmapped or otherwise bad address is dropped by the CPU),
//! changes no architectural state and is not ordered with other memory
//! operations, so any address is fine and the function is safe.

/// Hint the CPU to bring the cache line holding `addr` into the caches
/// (for a read soon). Any address: a hint never faults.
#[inline(always)]
pub fn prefetch_read(addr: usize) {
    // SAFETY: `prefetcht0` (SSE, part of the x86-64 baseline) only hints
    // the cache: it cannot fault, reads nothing into a register and writes
    // nothing, whatever the address.
    unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8) }
}

#[cfg(test)]
mod tests {
    use super::prefetch_read;

    #[test]
    fn prefetch_never_faults() {
        let v = [1u64, 2, 3];
        prefetch_read(v.as_ptr() as usize);
        // Null, unmapped and non-canonical addresses: dropped hints.
        for a in [0usize, 8, 0x1000, 0x0000_7fff_ffff_f000, 0xdead_0000_0000_0000, usize::MAX] {
            prefetch_read(a);
        }
        assert_eq!(v.iter().sum::<u64>(), 6);
    }
}
