//! The heap reservation and the pool of free blocks.
//!
//! One anonymous mapping of `max_heap` bytes (rounded to blocks, reserved with
//! MAP_NORESERVE so untouched pages cost nothing) holds every object, so "is
//! this word in the heap?" is one range check. A second mapping holds the
//! `BlockMeta` array. Blocks are handed out from a high-water mark or from the
//! free bitmap; a block that stays free for `DECOMMIT_DELAY` cycles has its
//! memory returned to the OS with `madvise(MADV_DONTNEED)` (which also zeroes it).
//!
//! A third side table holds one word per block: the block's descriptor if
//! it is a *typed* block of compact objects (see `descriptor.rs`), 0
//! otherwise ([`Space::block_desc`]).

use crate::block::{BlockMeta, BLOCK_SHIFT, BLOCK_SIZE};
use crate::bits::Bitmap;
use memmap2::{MmapMut, MmapOptions};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Cycles a block must stay free before its memory goes back to the OS.
pub const DECOMMIT_DELAY: u64 = 2;

/// The reservation and its block metadata.
pub struct Space {
    /// Membership in the handle-check table (`refcheck`); declared first so
    /// that it is dropped (unregistered) before the maps are unmapped.
    _registration: crate::refcheck::Registration,
    /// The objects' range; a dropped one is quarantined (`reservation.rs`).
    _heap_map: crate::reservation::HeapReservation,
    _meta_map: MmapMut,
    _kind_map: MmapMut,
    _desc_map: MmapMut,
    /// First heap byte (block aligned).
    pub lo: usize,
    /// One past the last heap byte.
    pub hi: usize,
    /// Number of blocks in the reservation.
    pub nblocks: usize,
    meta: *const BlockMeta,
    /// Per block: kind (low byte, `KIND_*`) and size class (high byte).
    kinds: *const AtomicU16,
    /// Per block: the `&'static Descriptor` of a typed block (compact
    /// objects of that one descriptor), 0 for any other block. Written by
    /// whoever hands the block out (Release, before its kind is published)
    /// and by the sweep that frees a typed block (after the kind says
    /// free); read (Acquire) by lookups and the markers.
    descs: *const AtomicUsize,
    /// `descs` biased by the heap's first block number (`lo >> 16`): the
    /// word of the block holding `addr` is at `descs_by_addr + (addr >>
    /// 16)` (one shift, no subtraction: the markers' `Space::block_desc_at`).
    descs_by_addr: *const AtomicUsize,
    pool: Mutex<Pool>,
    /// The number of the last completed mark (0 before the first): its
    /// marks are in buffer `gen % 2`, and a block whose `swept` is below
    /// `2 * gen` is not swept yet (see `BlockMeta::is_live`). Written only
    /// in a pause, under the heap's collection lock (Release), at the end of
    /// the mark. Lives in the handle-check table's entry (`refcheck`).
    pub gen: &'static AtomicU64,
    /// The heap's value encoding (`HeapConfig::value_encoding`), fixed at
    /// creation; markers copy it into locals.
    pub encoding: crate::encoding::ValueEncoding,
    /// The marking state the write barrier reads (lives in the handle-check
    /// table's entry, see `refcheck::MarkShared`).
    pub(crate) mark: &'static crate::refcheck::MarkShared,
}

/// Test-only switch (negative control of the lazy-sweep lookup rule): when
/// set, [`BlockMeta::is_live`] trusts the object-start bit of an unswept
/// block alone, as an eager-sweep design may, so a stray word revives a dead,
/// unswept object. Process-wide: only for a test binary of its own.
#[doc(hidden)]
pub static LOOKUP_IGNORES_SWEEP_STATE: AtomicBool = AtomicBool::new(false);

#[inline(always)]
pub(crate) fn lookup_ignores_sweep_state() -> bool {
    LOOKUP_IGNORES_SWEEP_STATE.load(Ordering::Relaxed)
}

// SAFETY: `meta`, `kinds` and `descs` point into maps owned by the Space and never
// moved; BlockMeta and the kinds are all atomics.
unsafe impl Send for Space {}
// SAFETY: as above; all shared mutation goes through atomics or the pool mutex.
unsafe impl Sync for Space {}

struct Pool {
    hwm: usize,
    /// Bit i: block i (< hwm) is free.
    free: Bitmap,
    /// Bit i: block i's memory was returned to the OS (reads as zero).
    decommitted: Bitmap,
    /// Cycle in which block i became free.
    freed_at: Vec<u64>,
    nfree: usize,
    hint: usize,
}

/// A run of blocks handed out by [`Space::alloc_blocks`].
pub struct Run {
    pub first: usize,
    /// Every byte of the run is known to be zero.
    pub zeroed: bool,
}

impl Space {
    /// This heap's handle-check entry (see `refcheck::check_for`).
    pub(crate) fn handle_entry(&self) -> &'static crate::refcheck::Entry {
        self._registration.entry
    }

    /// Reserve `max_heap` bytes (rounded up to whole blocks), plus alignment
    /// slack and an unused guard block below and above the heap proper.
    ///
    /// The guards matter for conservative scanning: the kernel places other
    /// mappings (e.g. thread stacks) right next to ours, and their own bounds
    /// (a stack's top, which its thread stores on the stack) would otherwise
    /// equal the heap's first address or one past its last object, and keep
    /// those objects alive forever.
    #[cfg(test)]
    pub fn new(max_heap: usize) -> std::io::Result<Space> {
        Space::with_encoding(max_heap, crate::encoding::ValueEncoding::untagged())
    }

    /// [`Space::new`] for a heap whose value slots use `encoding`.
    pub fn with_encoding(max_heap: usize, encoding: crate::encoding::ValueEncoding) -> std::io::Result<Space> {
        let nblocks = max_heap.div_ceil(BLOCK_SIZE).max(1);
        let len = (nblocks + 3) * BLOCK_SIZE;
        let heap_map = crate::reservation::HeapReservation::new(len)?;
        let base = heap_map.as_ptr() as usize;
        let lo = ((base + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)) + BLOCK_SIZE;
        let meta_len = nblocks * std::mem::size_of::<BlockMeta>();
        let meta_map = MmapOptions::new().len(meta_len).no_reserve_swap().map_anon()?;
        let meta = meta_map.as_ptr() as *const BlockMeta;
        let kind_map = MmapOptions::new().len(nblocks * 2).no_reserve_swap().map_anon()?;
        let kinds = kind_map.as_ptr() as *const AtomicU16;
        let desc_map = MmapOptions::new().len(nblocks * 8).no_reserve_swap().map_anon()?;
        let descs = desc_map.as_ptr() as *const AtomicUsize;
        let hi = lo + nblocks * BLOCK_SIZE;
        let _registration = crate::refcheck::register(lo, hi, kinds, meta, descs, encoding)?;
        let gen = _registration.gen;
        let mark = _registration.mark;
        Ok(Space {
            gen,
            encoding,
            mark,
            _registration,
            _heap_map: heap_map,
            _meta_map: meta_map,
            _kind_map: kind_map,
            _desc_map: desc_map,
            kinds,
            descs,
            descs_by_addr: descs.wrapping_sub(lo >> BLOCK_SHIFT),
            lo,
            hi,
            nblocks,
            meta,
            pool: Mutex::new(Pool {
                hwm: 0,
                free: Bitmap::new(nblocks),
                decommitted: Bitmap::new(nblocks),
                freed_at: vec![0; nblocks],
                nfree: 0,
                hint: 0,
            }),
        })
    }

    /// Whether `addr` lies in the reservation.
    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.lo) < self.hi - self.lo
    }

    /// Block index of a heap address (caller checked `contains`).
    #[inline(always)]
    pub fn block_index(&self, addr: usize) -> usize {
        (addr - self.lo) >> BLOCK_SHIFT
    }

    /// Start address of block `i`.
    #[inline(always)]
    pub fn block_start(&self, i: usize) -> usize {
        self.lo + (i << BLOCK_SHIFT)
    }

    /// Metadata of block `i` (`i < nblocks`).
    #[inline(always)]
    pub fn meta(&self, i: usize) -> &BlockMeta {
        debug_assert!(i < self.nblocks);
        // SAFETY: i < nblocks, the meta map holds nblocks zero-initialised
        // (hence valid) BlockMeta values and lives as long as self.
        unsafe { &*self.meta.add(i) }
    }

    /// Kind (`KIND_*`) and span class of block `i` (`i < nblocks`), the
    /// typed flag (`sizeclass::SC_TYPED`) masked off. For small blocks the
    /// span class is `2 * size class + noscan`; for a large head it is just
    /// the noscan flag.
    #[inline(always)]
    pub fn kind(&self, i: usize) -> (u8, usize) {
        let v = self.kind_raw(i);
        (v as u8, (v >> 8) as usize & !crate::sizeclass::SC_TYPED)
    }

    /// The whole kind word of block `i`: kind byte, and span class byte
    /// with `SC_TYPED` for a typed block.
    #[inline(always)]
    pub fn kind_raw(&self, i: usize) -> u16 {
        debug_assert!(i < self.nblocks);
        // SAFETY: i < nblocks; the kind map holds nblocks zero-initialised
        // AtomicU16 and lives as long as self.
        unsafe { &*self.kinds.add(i) }.load(Ordering::Acquire)
    }

    /// Set the kind and span class of block `i` (Release: the block's
    /// metadata written before is visible to whoever reads the kind).
    #[inline]
    pub fn set_kind(&self, i: usize, kind: u8, span_class: usize) {
        assert!(i < self.nblocks && span_class < 256);
        // SAFETY: as in `kind`.
        unsafe { &*self.kinds.add(i) }.store(kind as u16 | (span_class as u16) << 8, Ordering::Release);
    }

    /// The descriptor word of block `i` (`i < nblocks`): a typed block's
    /// `&'static Descriptor` as an address, 0 for any other block.
    #[inline(always)]
    pub fn block_desc(&self, i: usize) -> usize {
        debug_assert!(i < self.nblocks);
        // SAFETY: i < nblocks; the desc map holds nblocks zero-initialised
        // AtomicUsize and lives as long as self.
        unsafe { &*self.descs.add(i) }.load(Ordering::Acquire)
    }

    /// The descriptor word of the block holding heap address `addr` (the
    /// caller checked `contains(addr)`): [`Space::block_desc`] of its block,
    /// from the biased table (the markers' hot path).
    #[inline(always)]
    pub fn block_desc_at(&self, addr: usize) -> usize {
        debug_assert!(self.contains(addr));
        // SAFETY: addr is in the heap, so addr >> BLOCK_SHIFT is a block
        // number in lo >> BLOCK_SHIFT .. + nblocks, and the biased pointer
        // plus it lands on that block's entry of the desc map.
        unsafe { &*self.descs_by_addr.wrapping_add(addr >> BLOCK_SHIFT) }.load(Ordering::Acquire)
    }

    /// Set the descriptor word of block `i` (Release).
    #[inline]
    pub fn set_block_desc(&self, i: usize, d: usize) {
        assert!(i < self.nblocks);
        // SAFETY: as in `block_desc`.
        unsafe { &*self.descs.add(i) }.store(d, Ordering::Release);
    }

    /// The descriptor and payload address of the published object at
    /// `obj` (`descriptor::object_layout` with its block's descriptor
    /// word).
    ///
    /// # Safety
    /// `obj` is a published object of this space whose block is not freed
    /// meanwhile (during a mark, or in a pause).
    #[inline(always)]
    pub unsafe fn object_layout(&self, obj: usize) -> (&'static crate::descriptor::Descriptor, usize) {
        let bd = self.block_desc(self.block_index(obj));
        // SAFETY: the caller guarantees a published object; bd is its block's.
        unsafe { crate::descriptor::object_layout(obj, bd) }
    }

    /// Blocks ever handed out (the high-water mark): blocks >= this are untouched.
    pub fn high_water(&self) -> usize {
        self.pool.lock().unwrap().hwm
    }

    /// Blocks currently free (below the high-water mark).
    #[cfg(test)]
    pub fn free_blocks(&self) -> usize {
        self.pool.lock().unwrap().nfree
    }

    /// Bytes of blocks whose memory is currently committed (in use or free but
    /// not yet returned to the OS).
    pub fn committed_bytes(&self) -> usize {
        let p = self.pool.lock().unwrap();
        (p.hwm - p.decommitted.count_ones()) * BLOCK_SIZE
    }

    /// Take `n` contiguous blocks; `None` when the reservation is exhausted.
    pub fn alloc_blocks(&self, n: usize) -> Option<Run> {
        let mut p = self.pool.lock().unwrap();
        let p = &mut *p;
        let mut found = None;
        if p.nfree >= n {
            if n == 1 {
                let hint = p.hint.min(p.hwm);
                found = p.free.first_one(hint..p.hwm);
                if found.is_none() {
                    found = p.free.first_one(0..hint);
                }
            } else {
                let mut start = 0;
                while start + n <= p.hwm {
                    match p.free.first_one(start..p.hwm) {
                        None => break,
                        Some(s) => {
                            if s + n > p.hwm {
                                break;
                            }
                            match p.free.first_zero(s..s + n) {
                                None => {
                                    found = Some(s);
                                    break;
                                }
                                Some(z) => start = z + 1,
                            }
                        }
                    }
                }
            }
        }
        if let Some(first) = found {
            let zeroed = p.decommitted.all(first..first + n);
            p.free.fill(first..first + n, false);
            p.decommitted.fill(first..first + n, false);
            p.nfree -= n;
            if n == 1 {
                p.hint = first + 1;
            }
            return Some(Run { first, zeroed });
        }
        // Extend the high-water mark; a free run ending at hwm could be reused
        // in part, but keeping it simple: fresh blocks are zero.
        if p.hwm + n <= self.nblocks {
            let first = p.hwm;
            p.hwm += n;
            return Some(Run { first, zeroed: true });
        }
        None
    }

    /// Return `n` blocks starting at `first` to the pool (freed in `cycle`).
    /// The caller has reset their metadata to free.
    pub fn free_blocks_run(&self, first: usize, n: usize, cycle: u64) {
        let mut p = self.pool.lock().unwrap();
        debug_assert!(p.free.not_any(first..first + n));
        p.free.fill(first..first + n, true);
        for i in first..first + n {
            p.freed_at[i] = cycle;
        }
        p.nfree += n;
        p.hint = p.hint.min(first);
    }

    /// Return the memory of blocks free since `cycle - DECOMMIT_DELAY` or
    /// earlier to the OS. Returns the number of blocks decommitted.
    pub fn decommit_idle(&self, cycle: u64) -> usize {
        let mut p = self.pool.lock().unwrap();
        let p = &mut *p;
        let mut count = 0;
        let mut i = 0;
        while i < p.hwm {
            let eligible = |p: &Pool, i: usize| {
                p.free.get(i) && !p.decommitted.get(i) && p.freed_at[i] + DECOMMIT_DELAY <= cycle
            };
            if !eligible(p, i) {
                i += 1;
                continue;
            }
            let s = i;
            while i < p.hwm && eligible(p, i) {
                i += 1;
            }
            // SAFETY: [s, i) are free blocks inside our private anonymous
            // mapping; nobody holds pointers into free blocks (the pool lock is
            // held, so none can be handed out meanwhile). MADV_DONTNEED on
            // private anonymous memory drops the pages; later reads see zeros.
            let rc = unsafe {
                libc::madvise(
                    self.block_start(s) as *mut libc::c_void,
                    (i - s) * BLOCK_SIZE,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                p.decommitted.fill(s..i, true);
                count += i - s;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_and_runs_are_contiguous() {
        let s = Space::new(16 * BLOCK_SIZE).unwrap();
        assert_eq!(s.lo % BLOCK_SIZE, 0);
        assert!(s.contains(s.lo) && s.contains(s.hi - 1) && !s.contains(s.hi) && !s.contains(s.lo - 1));
        let base = s._heap_map.as_ptr() as usize;
        assert!(s.lo - base >= BLOCK_SIZE && base + s._heap_map.len() - s.hi > BLOCK_SIZE, "guard blocks");
        let a = s.alloc_blocks(1).unwrap();
        let b = s.alloc_blocks(3).unwrap();
        assert!(a.zeroed && b.zeroed);
        assert_eq!((a.first, b.first), (0, 1));
        s.free_blocks_run(1, 3, 1);
        assert_eq!(s.free_blocks(), 3);
        // A 2-block run fits in the hole.
        let c = s.alloc_blocks(2).unwrap();
        assert_eq!(c.first, 1);
        assert!(!c.zeroed);
        let d = s.alloc_blocks(1).unwrap();
        assert_eq!(d.first, 3);
        // Exhaustion.
        assert!(s.alloc_blocks(13).is_none());
        assert!(s.alloc_blocks(12).is_some());
        assert!(s.alloc_blocks(1).is_none());
    }

    #[test]
    fn idle_blocks_are_decommitted_and_read_zero() {
        let s = Space::new(4 * BLOCK_SIZE).unwrap();
        let r = s.alloc_blocks(2).unwrap();
        let p = s.block_start(r.first) as *mut u8;
        // SAFETY: the run is ours and mapped read-write.
        unsafe { p.write(7) };
        s.free_blocks_run(r.first, 2, 5);
        assert_eq!(s.decommit_idle(6), 0, "too early");
        assert_eq!(s.decommit_idle(7), 2);
        assert_eq!(s.committed_bytes(), 0);
        let r2 = s.alloc_blocks(1).unwrap();
        assert!(r2.zeroed);
        // SAFETY: as above.
        assert_eq!(unsafe { (s.block_start(r2.first) as *const u8).read() }, 0);
    }
}
