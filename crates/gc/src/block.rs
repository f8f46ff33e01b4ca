//! Blocks and their side tables.
//!
//! The heap is one reservation cut into `BLOCK_SIZE` blocks. A block is free,
//! holds small objects of one size class, or is part of a large object's span
//! (head or tail). Each block has a `BlockMeta` in a separate, lazily committed
//! reservation indexed by block number, so object memory holds objects only.
//!
//! Side tables per block: `alloc` (object-start bits: slot `i` holds a published,
//! fully initialised object) and `mark` (set during marking). A large object uses
//! bit 0 of its head block's tables.

use bitvec::prelude::*;
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
    /// Object-start bits: set (Release) only after the header is written.
    pub alloc: [AtomicU64; BITMAP_WORDS],
    /// Mark bits of the current cycle; all clear outside a collection.
    pub mark: [AtomicU64; BITMAP_WORDS],
}

impl BlockMeta {
    /// View of the object-start bits.
    pub fn alloc_bits(&self) -> &BitSlice<AtomicU64, Lsb0> {
        self.alloc.view_bits::<Lsb0>()
    }
    /// View of the mark bits.
    pub fn mark_bits(&self) -> &BitSlice<AtomicU64, Lsb0> {
        self.mark.view_bits::<Lsb0>()
    }
    /// Whether slot `i` holds a published object.
    #[inline(always)]
    pub fn is_allocated(&self, i: usize) -> bool {
        self.alloc[i / 64].load(Ordering::Acquire) >> (i % 64) & 1 != 0
    }
    /// Set the mark bit of slot `i`; true if this call set it.
    #[inline(always)]
    pub fn try_mark(&self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        let w = &self.mark[i / 64];
        // Cheap read first: most re-marks in a dense graph find the bit set.
        if w.load(Ordering::Relaxed) & bit != 0 {
            return false;
        }
        w.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }
    /// Like `try_mark`, for a marker that runs alone (no other thread touches
    /// mark bits): a plain load and store instead of a locked RMW.
    #[inline(always)]
    pub fn try_mark_exclusive(&self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        let w = &self.mark[i / 64];
        let v = w.load(Ordering::Relaxed);
        if v & bit != 0 {
            return false;
        }
        w.store(v | bit, Ordering::Relaxed);
        true
    }
    /// Whether slot `i` is marked.
    #[inline(always)]
    pub fn is_marked(&self, i: usize) -> bool {
        self.mark[i / 64].load(Ordering::Acquire) >> (i % 64) & 1 != 0
    }
    /// Reset the tables (block being handed out or freed).
    pub fn clear_tables(&self) {
        for w in self.alloc.iter().chain(self.mark.iter()) {
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
        assert!(m.try_mark(4095));
        assert!(!m.try_mark(4095));
        assert!(m.is_marked(4095));
        assert_eq!(m.mark_bits().count_ones(), 1);
        assert_eq!(m.alloc_bits().iter_ones().collect::<Vec<_>>(), vec![100]);
        m.clear_tables();
        assert_eq!(m.alloc_bits().count_ones() + m.mark_bits().count_ones(), 0);
    }
}
