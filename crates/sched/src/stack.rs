//! Task stacks: one anonymous mapping per stack, the lowest page of it made
//! inaccessible (PROT_NONE) as a guard. The kernel commits pages lazily, on
//! first touch, so a 256 KiB stack of a task that uses 4 KiB costs 4 KiB of
//! memory. Each stack costs two kernel mappings (the usable part and the
//! guard), which is what `vm.max_map_count` (65530 by default) limits.
//!
//! Stacks are recycled together with their task struct (see `tasks/tcb.rs`):
//! a small per-worker cache keeps them hot; a bounded shared pool keeps more,
//! with their pages as they are up to a budget of resident bytes (measured
//! with `mincore`), released (`madvise(MADV_DONTNEED)`) beyond it; beyond
//! the pool's length they are unmapped. Why a budget rather than releasing
//! every pooled stack: on a multi-core machine a `madvise` or `munmap`
//! flushes the TLB of every CPU running a thread of the process (an
//! inter-processor interrupt each), and fork-join with more tasks in flight
//! than the worker caches hold released (and, with the lock held, made
//! every spawn wait for) one stack per task: 200 tasks per round ran 13x
//! slower than Go (new-user probe 112).

use crate::error::{address_space, address_space_limit, mappings, max_map_count, Error};
use crate::sys::{errno, page_size};
use memmap2::{MmapMut, MmapOptions};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The top of a stack whose residency the task pool charges without
/// measuring it ([`Stack::pool_charge`]): a task that stays within it.
pub(crate) const SHALLOW: usize = 16 * 1024;

/// Task stacks currently mapped in this process (for error messages).
static LIVE_STACKS: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct Stack {
    map: MmapMut,
    guard: usize,
}

impl Stack {
    /// Maps a stack with `size` usable bytes (a multiple of the page size)
    /// above one guard page.
    pub(crate) fn new(size: usize) -> Result<Stack, Error> {
        let guard = page_size();
        let fail = |op, errno| Error::StackMap {
            op,
            stack_size: size,
            errno,
            live_stacks: LIVE_STACKS.load(Ordering::Relaxed),
            max_map_count: max_map_count(),
            mappings: mappings(),
            address_space: address_space(),
            address_space_limit: address_space_limit(),
        };
        let map = MmapOptions::new()
            .len(size + guard)
            .stack()
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| fail("mmap", e.raw_os_error().unwrap_or(0)))?;
        // SAFETY: the first page of a mapping we own and nobody uses yet.
        let rc = unsafe { libc::mprotect(map.as_ptr() as *mut libc::c_void, guard, libc::PROT_NONE) };
        if rc != 0 {
            return Err(fail("mprotect", errno()));
        }
        LIVE_STACKS.fetch_add(1, Ordering::Relaxed);
        Ok(Stack { map, guard })
    }

    /// Lowest address of the guard page.
    #[inline]
    pub(crate) fn guard_lo(&self) -> usize {
        self.map.as_ptr() as usize
    }
    /// Lowest usable address (just above the guard page).
    #[inline]
    pub(crate) fn lo(&self) -> usize {
        self.guard_lo() + self.guard
    }
    /// One past the highest usable address: the initial stack pointer.
    #[inline]
    pub(crate) fn hi(&self) -> usize {
        self.guard_lo() + self.map.len()
    }
    /// Usable size in bytes.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.map.len() - self.guard
    }

    /// Bytes of the usable part that are resident (`mincore`): what keeping
    /// the stack unreleased costs. The whole usable size if the kernel
    /// cannot say.
    pub(crate) fn resident_bytes(&self) -> usize {
        let page = page_size();
        let mut buf = [0u8; 512];
        let (mut at, end, mut resident) = (self.lo(), self.hi(), 0);
        while at < end {
            let len = (end - at).min(buf.len() * page);
            // SAFETY: `[at, at + len)` is page aligned (the mapping and the
            // guard page are) and lies in our own mapping; `buf` holds one
            // byte per page of it (len / page <= buf.len()).
            let rc = unsafe { libc::mincore(at as *mut libc::c_void, len, buf.as_mut_ptr()) };
            if rc != 0 {
                return self.size();
            }
            resident += buf[..len / page].iter().filter(|&&b| b & 1 != 0).count() * page;
            at += len;
        }
        resident
    }

    /// What keeping the stack unreleased costs, for the task pool's budget,
    /// cheaply: [`SHALLOW`] if the page just below the stack's top
    /// `SHALLOW` bytes is not resident, else [`resident_bytes`] (a
    /// `mincore` of the whole stack: 23% of a fork-join's CPU when done
    /// for every stack, new-user probe 112). A task's stack pages are
    /// touched from the top down without gaps (Rust's stack probes touch
    /// every page of a large frame in order), so a stack whose page at
    /// that depth was never touched has at most its top `SHALLOW` bytes
    /// resident.
    ///
    /// [`resident_bytes`]: Stack::resident_bytes
    pub(crate) fn pool_charge(&self) -> usize {
        let page = page_size();
        if self.size() <= SHALLOW + page {
            return self.resident_bytes();
        }
        let probe = (self.hi() - SHALLOW - 1) & !(page - 1);
        let mut b = 0u8;
        // SAFETY: one page of our own mapping (`probe` is page aligned and
        // at least a page above `lo`); `b` holds its one byte.
        let rc = unsafe { libc::mincore(probe as *mut libc::c_void, page, &mut b) };
        if rc == 0 && b & 1 == 0 {
            SHALLOW
        } else {
            self.resident_bytes()
        }
    }

    /// Gives the stack's memory back to the kernel; the mapping stays and the
    /// pages read as zero when touched again.
    pub(crate) fn release(&self) {
        // SAFETY: the usable part of our own mapping, which no task uses now.
        unsafe { libc::madvise(self.lo() as *mut libc::c_void, self.size(), libc::MADV_DONTNEED) };
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        LIVE_STACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_charge_measures_only_a_stack_touched_below_its_shallow_top() {
        let s = Stack::new(256 * 1024).unwrap();
        let page = page_size();
        // SAFETY: inside the usable range of our own mapping.
        unsafe { *((s.hi() - 8) as *mut u64) = 1 };
        assert_eq!(s.pool_charge(), SHALLOW, "a shallow stack is charged its shallow top");
        // Touched from the top down to 64 KiB, as a task's frames and
        // stack probes touch it.
        let mut at = s.hi() - page;
        while at >= s.hi() - 64 * 1024 {
            // SAFETY: as above.
            unsafe { *(at as *mut u8) = 1 };
            at -= page;
        }
        assert_eq!(s.pool_charge(), s.resident_bytes());
        assert_eq!(s.pool_charge(), 64 * 1024, "a deep stack is measured");
        s.release();
        assert_eq!(s.pool_charge(), SHALLOW);
    }

    #[test]
    fn stack_has_guard_below_usable_range() {
        let s = Stack::new(64 * 1024).unwrap();
        assert_eq!(s.size(), 64 * 1024);
        assert_eq!(s.lo() - s.guard_lo(), page_size());
        assert_eq!(s.hi() - s.lo(), 64 * 1024);
        // The usable part is writable.
        // SAFETY: inside the usable range of our own mapping.
        unsafe {
            *((s.hi() - 8) as *mut u64) = 7;
            *(s.lo() as *mut u64) = 9;
            assert_eq!(*((s.hi() - 8) as *const u64), 7);
        }
        // The two pages written are resident; nothing else was touched.
        assert_eq!(s.resident_bytes(), 2 * page_size());
        s.release();
        assert_eq!(s.resident_bytes(), 0);
        // SAFETY: as above; MADV_DONTNEED makes the page read as zero.
        unsafe { assert_eq!(*((s.hi() - 8) as *const u64), 0) };
        // The guard page is PROT_NONE: check through /proc/self/maps.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.starts_with(&format!("{:x}-", s.guard_lo())))
            .expect("guard mapping listed");
        assert!(line.split_whitespace().nth(1).unwrap().starts_with("---p"), "{line}");
    }
}
