//! The collector's plain bitmaps: the block pool's free and decommitted
//! maps (`space.rs`, behind the pool mutex) and counting the set bits of a
//! block's atomic side tables (`block.rs`).
//!
//! Written here instead of depending on `bitvec` (issue 13 item 8): these
//! few word loops are all the collector needs, and `bitvec`'s dependencies
//! (`tap`, `wyz`) implement traits for every type, which rustdoc then lists
//! under "Blanket Implementations" on every type of `usurp`'s documentation.
//!
//! Bits are numbered from the least significant bit of word 0; bits at or
//! above `len` stay clear. No internal synchronisation: a [`Bitmap`] is
//! owned by whoever holds it (the pool's mutex).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-length bitmap.
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    /// `len` clear bits.
    pub(crate) fn new(len: usize) -> Bitmap {
        Bitmap { words: vec![0; len.div_ceil(64)], len }
    }

    /// Bit `i` (false at or beyond the length).
    pub(crate) fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 != 0
    }

    /// Sets every bit of `r` (clipped to the length) to `v`.
    pub(crate) fn fill(&mut self, r: Range<usize>, v: bool) {
        for i in r.start..r.end.min(self.len) {
            let (w, m) = (i / 64, 1u64 << (i % 64));
            if v {
                self.words[w] |= m;
            } else {
                self.words[w] &= !m;
            }
        }
    }

    /// The first index in `r` whose bit equals `one`.
    fn find(&self, r: Range<usize>, one: bool) -> Option<usize> {
        let end = r.end.min(self.len);
        let mut i = r.start;
        while i < end {
            let w = i / 64;
            let word = if one { self.words[w] } else { !self.words[w] };
            let word = word & (!0u64 << (i % 64));
            if word != 0 {
                let b = w * 64 + word.trailing_zeros() as usize;
                return (b < end).then_some(b);
            }
            i = (w + 1) * 64;
        }
        None
    }

    /// The first set bit in `r` (an absolute index).
    pub(crate) fn first_one(&self, r: Range<usize>) -> Option<usize> {
        self.find(r, true)
    }

    /// The first clear bit in `r` (an absolute index).
    pub(crate) fn first_zero(&self, r: Range<usize>) -> Option<usize> {
        self.find(r, false)
    }

    /// Whether every bit of `r` is set.
    pub(crate) fn all(&self, r: Range<usize>) -> bool {
        self.first_zero(r).is_none()
    }

    /// Whether no bit of `r` is set.
    pub(crate) fn not_any(&self, r: Range<usize>) -> bool {
        self.first_one(r).is_none()
    }

    /// Number of set bits.
    pub(crate) fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Number of set bits among the first `n` bits of `words` (bit `i` is bit
/// `i % 64` of word `i / 64`), each word read once with a relaxed load.
pub(crate) fn count_ones_atomic(words: &[AtomicU64], n: usize) -> usize {
    let mut c = 0;
    for (w, word) in words.iter().enumerate().take(n.div_ceil(64)) {
        let mut v = word.load(Ordering::Relaxed);
        let rest = n - w * 64;
        if rest < 64 {
            v &= (1u64 << rest) - 1;
        }
        c += v.count_ones() as usize;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_finds_fills_and_counts() {
        let mut b = Bitmap::new(200);
        assert_eq!(b.first_one(0..200), None);
        assert_eq!(b.first_zero(0..200), Some(0));
        assert!(b.not_any(0..200) && !b.all(0..1));
        b.fill(60..130, true);
        assert!(b.get(60) && b.get(129) && !b.get(59) && !b.get(130));
        assert_eq!(b.count_ones(), 70);
        assert_eq!(b.first_one(0..200), Some(60));
        assert_eq!(b.first_one(61..200), Some(61));
        assert_eq!(b.first_one(130..200), None);
        assert_eq!(b.first_one(0..60), None);
        assert_eq!(b.first_zero(60..200), Some(130));
        assert_eq!(b.first_zero(60..130), None);
        assert!(b.all(60..130) && !b.all(59..130) && !b.not_any(100..101));
        b.fill(64..128, false);
        assert_eq!(b.count_ones(), 6);
        assert_eq!(b.first_one(62..200), Some(62));
        assert_eq!(b.first_one(64..200), Some(128));
        assert_eq!(b.first_zero(60..64), None);
        // Clipped to the length; nothing at or beyond it.
        b.fill(190..300, true);
        assert_eq!(b.count_ones(), 16);
        assert!(!b.get(200) && !b.get(1000));
        assert_eq!(b.first_zero(190..300), None);
        assert_eq!(b.first_one(200..300), None);
        assert!(Bitmap::new(0).first_zero(0..10).is_none());
    }

    #[test]
    fn atomic_count_stops_at_n() {
        let w = [AtomicU64::new(!0), AtomicU64::new(0b1011), AtomicU64::new(!0)];
        assert_eq!(count_ones_atomic(&w, 0), 0);
        assert_eq!(count_ones_atomic(&w, 10), 10);
        assert_eq!(count_ones_atomic(&w, 64), 64);
        assert_eq!(count_ones_atomic(&w, 66), 66);
        assert_eq!(count_ones_atomic(&w, 128), 67);
        assert_eq!(count_ones_atomic(&w, 129), 68);
        assert_eq!(count_ones_atomic(&w, 192), 131);
    }
}
