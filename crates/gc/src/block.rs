//! Blocks and their side tables.
//!
//! The heap is one reservation cut into `BLOCK_SIZE` blocks. A block is free,
//! holds small objects of one size class, or is part of a large object's span
//! (head or tail). Each block has a `BlockMeta` in a separate, lazily committed
//! reservation indexed by block number, so object memory holds objects only.
//!
//! Side tables per block: `alloc` (object-start bits: slot `i` holds a published,
//! fully initialised object, or a dead one not yet swept) and two buffers of
//! mark bits: cycle `n` marks into buffer `n % 2`, so that the marks of the
//! last cycle stay readable while its blocks are swept lazily (see
//! [`BlockMeta::is_live`]) and the buffer the next cycle marks into is
//! cleared block by block by the sweep, never in a pause. `swept` says
//! whether the block has been swept since the last mark. A large object uses
//! bit 0 of its head block's tables.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// log2 of the block size.
pub const BLOCK_SHIFT: usize = 16;
/// Block size: 64 KiB.
pub const BLOCK_SIZE: usize = 1 << BLOCK_SHIFT;
/// Most slots a block can have (16-byte class).
pub const MAX_SLOTS: usize = BLOCK_SIZE / 16;
/// Words of one side-table bitmap.
pub const BITMAP_WORDS: usize = MAX_SLOTS / 64;

pub const KIND_FREE: u8 = 0;
pub const KIND_SMALL: u8 = 1;
pub const KIND_LARGE_HEAD: u8 = 2;
pub const KIND_LARGE_TAIL: u8 = 3;

/// Per-block metadata. All-zero bytes are a valid free block. (The block's
/// kind and size class live in a dense array of their own, see
/// `Space::kind`: marking reads them for every pointer, and 2 bytes per block
/// stay in cache where this 1 KiB record would not.)
#[repr(C)]
pub struct BlockMeta {
    /// A mutator's allocation cache owns this block: sweep must neither free it
    /// nor put it on a partial list.
    pub owned: AtomicBool,
    /// Large head: number of blocks of the span. Large tail: head block index.
    pub link: AtomicU32,
    /// Large head: object size in bytes.
    pub large_bytes: AtomicUsize,
    /// Sweep state against `Space::gen` (`s`, the number of the last
    /// completed mark): `2 * s` swept since that mark (the object-start bits
    /// are exactly the published objects); `2 * s + 1` being swept; less:
    /// not swept yet (live objects are `alloc & marks[s % 2]`). Written with
    /// Release by the sweeper that claimed the block (CAS) and by whoever
    /// hands a fresh block out; read with Acquire by lookups.
    pub swept: AtomicU64,
    /// Object-start bits: set (Release) only after the header is written.
    pub alloc: [AtomicU64; BITMAP_WORDS],
    /// Mark bits, double-buffered: cycle `n` marks into `marks[n % 2]`.
    /// The buffer of the cycle in progress is clear when it starts (the
    /// sweep that followed the cycle before cleared it).
    pub marks: [[AtomicU64; BITMAP_WORDS]; 2],
}

/// The bitmap word of slot `i` (`i < MAX_SLOTS`, checked in debug
/// builds): masked rather than bounds-checked, as these lookups run for
/// every pointer the marker follows (issue 9); a slot index is always in
/// range (a size class's slot of an in-block offset, or 0).
#[inline(always)]
fn word_of(i: usize) -> usize {
    debug_assert!(i < MAX_SLOTS, "slot {i} out of range");
    (i / 64) % BITMAP_WORDS
}

/// A mark buffer index (0 or 1, checked in debug builds), masked as
/// [`word_of`].
#[inline(always)]
fn buf_of(buf: usize) -> usize {
    debug_assert!(buf < 2, "mark buffer {buf}");
    buf % 2
}

impl BlockMeta {
    /// How many of the first `slots` object-start bits are set (relaxed
    /// loads).
    pub fn allocated_count(&self, slots: usize) -> usize {
        crate::bits::count_ones_atomic(&self.alloc, slots)
    }
    /// Whether slot `i` holds a published object.
    #[inline(always)]
    pub fn is_allocated(&self, i: usize) -> bool {
        self.alloc[word_of(i)].load(Ordering::Acquire) >> (i % 64) & 1 != 0
    }
    /// Whether slot `i` holds a live (published, not found dead) object,
    /// `gen` being the number of the last completed mark: in a block swept
    /// since, its object-start bit; in a block not swept yet, its
    /// object-start bit and its mark of cycle `gen` (a dead object whose
    /// children may already be freed in swept blocks is not live, pitfall 2).
    ///
    /// Order: the object-start bit is read first (Acquire), then the sweep
    /// state. If the state says swept, the bit is read again: the sweep
    /// stored the swept bits before its Release of the state, so this read
    /// sees them (or a later allocation's). If it says unswept, `alloc &
    /// mark` is the same whether `alloc` was read before or after a
    /// concurrent sweep rewrote it (the sweep stores `alloc & mark`). An
    /// object allocated in the block after its sweep whose start bit the
    /// first read saw was published after the sweep's Release, so the state
    /// read after it says swept.
    ///
    /// Reuse: a lazy sweep may free the block and another thread hand it out
    /// again, possibly for another size class, while a lookup that already
    /// read the old kind (and computed `i` for the old layout) runs this
    /// check: the bit it then sees belongs to the new layout. Lookups that
    /// run outside a pause (`mark::find_exact`, `mark::find_containing`,
    /// `refcheck`) therefore read the block's kind again after this check
    /// and fail if it changed: a new owner publishes the new kind (Release)
    /// before any object-start bit, so a lookup that saw such a bit
    /// (Acquire) sees the new kind on its second read. (The markers'
    /// precise lookup, `mark::find_exact_marking`, needs neither: no block
    /// is swept or freed while a mark runs.)
    #[inline(always)]
    pub fn is_live(&self, i: usize, gen: u64) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if self.alloc[w].load(Ordering::Acquire) & bit == 0 {
            return false;
        }
        if self.marks[(gen % 2) as usize][w].load(Ordering::Acquire) & bit != 0 {
            // Marked in the last cycle: live whether swept or not.
            return true;
        }
        if self.swept.load(Ordering::Acquire) == 2 * gen && !crate::space::lookup_ignores_sweep_state() {
            return self.alloc[w].load(Ordering::Acquire) & bit != 0;
        }
        crate::space::lookup_ignores_sweep_state()
    }
    /// `true` only if [`is_live`](Self::is_live) would answer `true`, with
    /// fewer loads in the common case (the handle check's fast path,
    /// `refcheck::is_live_as`): the sweep state first, and if the block was
    /// swept since the last mark, the object-start bit alone (one bitmap
    /// line, not two); else `alloc & mark`. `false` may be wrong (the caller
    /// then asks `is_live`): an object published after a sweep that ended
    /// between the two reads, an unswept object under the test switch
    /// `LOOKUP_IGNORES_SWEEP_STATE`.
    ///
    /// Order: the state is read first (Acquire). If it says swept, the sweep
    /// stored the bits before its Release of the state, so the bit read next
    /// sees them or a later allocation's (a published object). If it says
    /// unswept, `alloc & mark` is the same whether `alloc` was read before or
    /// after a concurrent sweep rewrote it (the sweep keeps exactly the
    /// marked start bits; under checkrefs it keeps the others too, for
    /// quarantined objects, which `& mark` excludes as before); an object
    /// allocated after that sweep has no mark bit: a false `false`.
    /// Reuse of the block: as for `is_live`, the caller reads the kind again.
    #[inline(always)]
    pub fn is_live_fast(&self, i: usize, gen: u64) -> bool {
        let (w, bit) = (word_of(i), 1u64 << (i % 64));
        if self.swept.load(Ordering::Acquire) == 2 * gen {
            return self.alloc[w].load(Ordering::Acquire) & bit != 0;
        }
        self.alloc[w].load(Ordering::Acquire) & self.marks[(gen % 2) as usize][w].load(Ordering::Acquire) & bit != 0
    }
    /// Set the mark bit of slot `i` in buffer `buf`; true if this call set it.
    #[inline(always)]
    pub fn try_mark(&self, buf: usize, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        let w = &self.marks[buf_of(buf)][word_of(i)];
        // Cheap read first: most re-marks in a dense graph find the bit set.
        // A stale 0 only falls through to the atomic RMW, which decides; a
        // stale 1 cannot be seen: during a mark bits only go from 0 to 1,
        // and the sweep clears this buffer before any marker starts.
        if w.load(Ordering::Relaxed) & bit != 0 {
            return false;
        }
        w.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }
    /// Like `try_mark`, for a marker that runs alone (no other thread touches
    /// mark bits): a plain load and store instead of a locked RMW.
    #[inline(always)]
    pub fn try_mark_exclusive(&self, buf: usize, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        let w = &self.marks[buf_of(buf)][word_of(i)];
        let v = w.load(Ordering::Relaxed);
        if v & bit != 0 {
            return false;
        }
        w.store(v | bit, Ordering::Relaxed);
        true
    }
    /// The word of buffer `buf` holding slot `i`'s mark bit, and the bit
    /// (for a marker that sets bits of one word in a batch, `mark.rs`).
    #[inline(always)]
    pub fn mark_word(&self, buf: usize, i: usize) -> (&AtomicU64, u64) {
        (&self.marks[buf_of(buf)][word_of(i)], 1u64 << (i % 64))
    }
    /// Whether slot `i` is marked in buffer `buf`.
    #[inline(always)]
    pub fn is_marked(&self, buf: usize, i: usize) -> bool {
        self.marks[buf][i / 64].load(Ordering::Acquire) >> (i % 64) & 1 != 0
    }
    /// Reset the tables (block being handed out or freed).
    pub fn clear_tables(&self) {
        for w in self.alloc.iter().chain(self.marks[0].iter()).chain(self.marks[1].iter()) {
            w.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_bits() {
        // SAFETY: BlockMeta is all atomics and integers; all-zero is valid.
        let m: BlockMeta = unsafe { std::mem::zeroed() };
        assert!(!m.is_allocated(100));
        m.alloc[1].store(1 << 36, Ordering::Release);
        assert!(m.is_allocated(100));
        assert!(m.try_mark(1, 4095));
        assert!(!m.try_mark(1, 4095));
        assert!(m.is_marked(1, 4095) && !m.is_marked(0, 4095));
        assert_eq!(crate::bits::count_ones_atomic(&m.marks[1], MAX_SLOTS), 1);
        assert_eq!((0..MAX_SLOTS).filter(|&i| m.is_allocated(i)).collect::<Vec<_>>(), vec![100]);
        assert_eq!(m.allocated_count(MAX_SLOTS), 1);
        assert_eq!(m.allocated_count(100), 0);
        assert_eq!(m.allocated_count(101), 1);
        // Slot 100 is published but unmarked: live once its block is swept
        // for gen 3 (state 6), not before (state 4: swept for gen 2).
        m.swept.store(4, Ordering::Relaxed);
        assert!(!m.is_live(100, 3));
        assert!(m.try_mark(1, 100));
        assert!(m.is_live(100, 3), "marked in cycle 3 (buffer 1): live");
        assert!(!m.is_live(100, 4) || m.swept.load(Ordering::Relaxed) == 8);
        m.marks[1][1].store(0, Ordering::Relaxed);
        m.swept.store(6, Ordering::Relaxed);
        assert!(m.is_live(100, 3), "swept for gen 3: the start bit alone");
        m.clear_tables();
        let count = |w: &[AtomicU64]| crate::bits::count_ones_atomic(w, MAX_SLOTS);
        assert_eq!(count(&m.alloc) + count(&m.marks[0]) + count(&m.marks[1]), 0);
    }
}
