//! Size classes for small objects.
//!
//! A small object (header included) is rounded up to one of `CLASS_SIZES`; a
//! block holds objects of one class only, so an address's object start is
//! `block_start + (offset / size) * size`. Objects above [`MAX_SMALL`] bytes get
//! their own span of whole blocks.

use crate::block::BLOCK_SIZE;

/// Object sizes in bytes (multiples of 8, header included).
/// Up to 8 KiB the step is at most 25%; above, classes fill a block with 6,
/// 5, 4, 3 or 2 objects (21840 = the largest multiple of 8 with 3 per block).
pub const CLASS_SIZES: [usize; 39] = [
    16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896,
    1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
    14336, 16384, 21840, 32768,
];
/// Number of size classes.
pub const NUM_CLASSES: usize = CLASS_SIZES.len();
/// Number of span classes: every size class comes in a scanned and a
/// pointer-free ("noscan") variant, kept in separate blocks so that marking a
/// pointer-free object never touches the object itself (span class
/// `2 * class + noscan`, as Go does).
pub const NUM_SPAN_CLASSES: usize = 2 * NUM_CLASSES;

/// Flag in a small block's span class byte (`Space::kind_raw`): a typed
/// block of compact objects (its descriptor is `Space::block_desc`).
/// `Space::kind` masks it off; the markers read it (bit 7 of the byte;
/// `SPAN_INFO` answers for it as for the plain span class) to tag compact
/// objects on their stacks (see `mark.rs`).
pub const SC_TYPED: usize = 0x80;
const _: () = assert!(NUM_SPAN_CLASSES <= SC_TYPED, "span classes must leave the typed bit free");

/// The span class of size class `c`.
#[inline(always)]
pub const fn span_class(c: usize, noscan: bool) -> usize {
    2 * c + noscan as usize
}

/// Size class and noscan flag of span class `sc`.
#[inline(always)]
pub const fn split_span_class(sc: usize) -> (usize, bool) {
    (sc >> 1, sc & 1 != 0)
}
/// Largest small-object size; bigger objects are "large".
pub const MAX_SMALL: usize = 32768;

/// `SIZE_TO_CLASS[words]` for `words` in 0..=MAX_SMALL/8.
static SIZE_TO_CLASS: [u8; MAX_SMALL / 8 + 1] = {
    let mut t = [0u8; MAX_SMALL / 8 + 1];
    let mut w = 0;
    let mut c = 0;
    while w <= MAX_SMALL / 8 {
        while CLASS_SIZES[c] < w * 8 {
            c += 1;
        }
        t[w] = c as u8;
        w += 1;
    }
    t
};

/// The class for an object of `bytes` bytes (multiple of 8, <= MAX_SMALL).
#[inline(always)]
pub fn class_of(bytes: usize) -> usize {
    debug_assert!(bytes <= MAX_SMALL && bytes % 8 == 0);
    SIZE_TO_CLASS[bytes / 8] as usize
}

/// [`class_of`] at compile time: the class of an object of `bytes` bytes
/// (header included), `None` above [`MAX_SMALL`].
pub const fn class_of_const(bytes: usize) -> Option<usize> {
    let mut c = 0;
    while c < NUM_CLASSES {
        if CLASS_SIZES[c] >= bytes {
            return Some(c);
        }
        c += 1;
    }
    None
}

/// `RECIP[c] = 2^32 / size + 1`: `(off * RECIP[c]) >> 32 == off / size`
/// exactly for every in-block offset (off < 2^16, size <= 2^15: exact
/// while `off * size < 2^32`), which
/// spares marking a division per pointer.
static RECIP: [u64; NUM_CLASSES] = {
    let mut r = [0u64; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        r[c] = (1u64 << 32) / CLASS_SIZES[c] as u64 + 1;
        c += 1;
    }
    r
};

/// `off / CLASS_SIZES[c]` for an offset inside a block.
#[inline(always)]
pub fn slot_index(c: usize, off: usize) -> usize {
    debug_assert!(off < BLOCK_SIZE);
    ((off as u64 * RECIP[c]) >> 32) as usize
}

/// Object size and `RECIP` entry of each span class, indexed by the span
/// class byte of a block's kind word (`Space::kind_raw`): 256 entries, so
/// an index read from a `u8` needs no bounds check on the marking path
/// (issue 9); a typed block's byte (`SC_TYPED` set) gives its span class's
/// entry; other entries past the last span class are zero (never read: a
/// small block's span class is valid).
static SPAN_INFO: [(u64, u64); 256] = {
    let mut t = [(0u64, 0u64); 256];
    let mut sc = 0;
    while sc < NUM_SPAN_CLASSES {
        let c = split_span_class(sc).0;
        t[sc] = (CLASS_SIZES[c] as u64, RECIP[c]);
        t[sc | SC_TYPED] = t[sc];
        sc += 1;
    }
    t
};

/// Object size of span class `sc` and the slot of an in-block offset `off`
/// in a block of that class: `(size, off / size)`, as [`CLASS_SIZES`] and
/// [`slot_index`] give them.
#[inline(always)]
pub fn span_size_and_slot(sc: u8, off: usize) -> (usize, usize) {
    debug_assert!((sc as usize & !SC_TYPED) < NUM_SPAN_CLASSES && off < BLOCK_SIZE);
    let (size, recip) = SPAN_INFO[sc as usize];
    (size as usize, ((off as u64 * recip) >> 32) as usize)
}

static SLOTS: [u16; NUM_CLASSES] = {
    let mut r = [0u16; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        r[c] = (BLOCK_SIZE / CLASS_SIZES[c]) as u16;
        c += 1;
    }
    r
};

/// Slots of class `c` in one block (a table: no division on the marking path).
#[inline(always)]
pub fn slots_of(c: usize) -> usize {
    SLOTS[c] as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_all_sizes_tightly() {
        for bytes in (8..=MAX_SMALL).step_by(8) {
            let c = class_of(bytes);
            assert!(CLASS_SIZES[c] >= bytes, "class too small for {bytes}");
            if c > 0 {
                assert!(CLASS_SIZES[c - 1] < bytes, "class not the smallest fit for {bytes}");
            }
            // Waste is bounded: at most 25% up to 8 KiB (50% for the 16->24
            // step), a third up to 16 KiB, a half above.
            if bytes > 16 && bytes <= 8192 {
                assert!(CLASS_SIZES[c] * 4 <= bytes * 5 + 64, "{bytes}");
            } else if bytes > 8192 && bytes <= 16384 {
                assert!(CLASS_SIZES[c] * 3 <= bytes * 4 + 64, "{bytes}");
            } else if bytes > 16384 {
                assert!(CLASS_SIZES[c] * 2 <= bytes * 3 + 64, "{bytes}");
            }
        }
        assert!(CLASS_SIZES.windows(2).all(|w| w[0] < w[1] && w[1] % 8 == 0));
        assert!(slots_of(0) <= crate::block::MAX_SLOTS);
    }

    #[test]
    fn span_info_matches_the_class_tables() {
        for sc in 0..NUM_SPAN_CLASSES {
            let c = split_span_class(sc).0;
            for off in [0, 8, 16, 24, CLASS_SIZES[c] - 8, CLASS_SIZES[c], BLOCK_SIZE - 8] {
                assert_eq!(span_size_and_slot(sc as u8, off), (CLASS_SIZES[c], slot_index(c, off)), "sc {sc} off {off}");
            }
        }
    }

    #[test]
    fn reciprocal_division_is_exact() {
        for (c, &size) in CLASS_SIZES.iter().enumerate() {
            for off in 0..BLOCK_SIZE {
                assert_eq!(slot_index(c, off), off / size, "class {c} off {off}");
            }
        }
    }
}
