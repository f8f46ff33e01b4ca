//! Value encodings: how a VM's one-word tagged values name heap objects
//! (issue 14).
//!
//! Most dynamic-language VMs keep a value in one word: small integers and
//! other immediates beside pointers, told apart by a tag — in the low bits
//! (V8, Ruby, OCaml, most Schemes) or in the high bits of a NaN (NaN-boxing:
//! JavaScriptCore, SpiderMonkey, LuaJIT). A heap-wide [`ValueEncoding`]
//! (`HeapConfig::value_encoding`) says which words are pointers and how to
//! get the address out of them; descriptors mark *value slots*
//! ([`DescriptorBuilder::value_at`](crate::DescriptorBuilder::value_at)) that
//! the marker decodes with it.
//!
//! **One representation for every preset.** An encoding is three numbers:
//! `tag_mask` (the tag bits), up to four pointer tags, and `addr_mask`. A word
//! `w` is a pointer iff `w & tag_mask` equals one of the pointer tags; its
//! object is then `w & addr_mask` (0 = null). Unused tag entries repeat the
//! first one, so the test is four compares with no loop and no count, and the
//! marker keeps all six numbers in registers for a whole object.
//! * `untagged()`: `tag_mask = 0`, tag 0, `addr_mask = !0`: every word is a
//!   pointer (a value slot then behaves like a pointer slot).
//! * `low_bits(m, t)`: pointer iff `w & m == t`, address `w & !m`.
//! * `nan_box(shift, tags)`: the tag is `w >> shift` (the high bits), the
//!   address the low `shift` bits.
//! * `custom(tag_mask, tags, addr_mask)`: anything else of this shape (e.g.
//!   JavaScriptCore: pointer iff the top 16 bits and bit 1 are clear).
//!
//! **Consistency** ([`ValueEncoding::check`], run by `HeapConfig::validate`):
//! 1 to 4 pointer tags, each inside `tag_mask`; `tag_mask` and `addr_mask`
//! disjoint; `addr_mask` keeps bits 3..=46 (every 8-byte aligned address
//! below 2^47), so that `encode(a) = a | tag` decodes back to `a`.
//! `Heap::new` also checks that the heap's actual reservation survives the
//! round trip: x86-64 user space lies below 2^47, but arm64 Linux with
//! 48-bit virtual addresses may map the heap above 2^47, and a 47-bit
//! NaN-box (`nan_box(47, ..)`) is then refused with a clear error (use a
//! shift of 48).
//!
//! **Conservative roots.** A low-bit tagged word points inside its object's
//! first word, so the ordinary interior-pointer rule keeps the object alive.
//! A pointer tag with bits above bit 2 (NaN-boxing) puts the word outside the
//! heap's range: the conservative scan then decodes words outside the heap
//! ([`ValueEncoding::decodes_conservatively`]), so a NaN-boxed pointer held
//! only in a register or a stack slot keeps its object alive.

/// How tagged one-word values name heap objects; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueEncoding {
    tag_mask: usize,
    /// Pointer tags; entries past `ntags` repeat entry 0.
    tags: [usize; MAX_PTR_TAGS],
    /// Tags the constructor was given (validation rejects 0 or > 4).
    ntags: usize,
    addr_mask: usize,
    /// Some pointer tag has bits above bit 2: encoded pointers lie outside
    /// the heap range and conservative scanning must decode.
    high: bool,
}

/// At most this many pointer tags.
pub const MAX_PTR_TAGS: usize = 4;

/// Address bits every encoding must keep: 8-byte aligned addresses below 2^47.
const REQUIRED_ADDR_BITS: usize = ((1usize << 47) - 1) & !7;

impl Default for ValueEncoding {
    fn default() -> Self {
        ValueEncoding::untagged()
    }
}

impl ValueEncoding {
    /// Every word is a pointer or null (the default).
    pub const fn untagged() -> ValueEncoding {
        ValueEncoding { tag_mask: 0, tags: [0; MAX_PTR_TAGS], ntags: 1, addr_mask: !0, high: false }
    }

    /// Low-bit tags: `w` is a pointer iff `w & tag_mask == ptr_tag`, and its
    /// object is `w & !tag_mask`. OCaml / most Schemes: `low_bits(1, 0)` (or
    /// `(7, 0)`); V8: `low_bits(1, 1)`.
    pub const fn low_bits(tag_mask: usize, ptr_tag: usize) -> ValueEncoding {
        ValueEncoding::custom_const(tag_mask, [ptr_tag; MAX_PTR_TAGS], 1, !tag_mask)
    }

    /// NaN-boxing: the tag is `w >> tag_shift`, and `w` is a pointer iff its
    /// tag is one of `ptr_tags` (1 to 4); its object is the low `tag_shift`
    /// bits. SpiderMonkey: `nan_box(47, &[0x1fffc /* object */, 0x1fff6 /* string */])`;
    /// LuaJIT GC64 likewise with its `itype`s. `tag_shift` must be 47..=63.
    pub fn nan_box(tag_shift: u32, ptr_tags: &[usize]) -> ValueEncoding {
        let shift = tag_shift.min(63);
        let tags: Vec<usize> = ptr_tags.iter().map(|&t| t.checked_shl(shift).filter(|s| s >> shift == t).unwrap_or(usize::MAX)).collect();
        let mut e = ValueEncoding::custom(!((1usize << shift) - 1), &tags, (1usize << shift) - 1);
        if tag_shift != shift || tag_shift < 47 {
            e.addr_mask = 0; // rejected by `check` (addresses need 47 bits)
        }
        e
    }

    /// The general form: `w` is a pointer iff `w & tag_mask` is one of
    /// `ptr_tags` (1 to 4, given as bits in place), object `w & addr_mask`.
    pub fn custom(tag_mask: usize, ptr_tags: &[usize], addr_mask: usize) -> ValueEncoding {
        let mut tags = [ptr_tags.first().copied().unwrap_or(0); MAX_PTR_TAGS];
        for (i, &t) in ptr_tags.iter().take(MAX_PTR_TAGS).enumerate() {
            tags[i] = t;
        }
        ValueEncoding::custom_const(tag_mask, tags, ptr_tags.len(), addr_mask)
    }

    const fn custom_const(tag_mask: usize, tags: [usize; MAX_PTR_TAGS], ntags: usize, addr_mask: usize) -> ValueEncoding {
        let mut high = false;
        let mut i = 0;
        while i < MAX_PTR_TAGS {
            high |= tags[i] & !7 != 0;
            i += 1;
        }
        ValueEncoding { tag_mask, tags, ntags, addr_mask, high }
    }

    /// Check the encoding for consistency (see the module docs).
    pub fn check(&self) -> Result<(), String> {
        if self.ntags == 0 || self.ntags > MAX_PTR_TAGS {
            return Err(format!("{} pointer tags given: 1 to {MAX_PTR_TAGS} are supported", self.ntags));
        }
        for &t in &self.tags[..self.ntags] {
            if t & !self.tag_mask != 0 {
                return Err(format!(
                    "pointer tag {t:#x} has bits outside the tag mask {:#x} (a NaN-box tag must fit in the bits above the shift)",
                    self.tag_mask
                ));
            }
        }
        if self.tag_mask & self.addr_mask != 0 {
            return Err(format!(
                "tag mask {:#x} and address mask {:#x} overlap",
                self.tag_mask, self.addr_mask
            ));
        }
        if REQUIRED_ADDR_BITS & !self.addr_mask != 0 {
            return Err(format!(
                "address mask {:#x} drops address bits {:#x}: heap objects are 8-byte aligned and may lie anywhere \
                 below 2^47, so the tag may use only bits 0..=2 and 47..=63",
                self.addr_mask,
                REQUIRED_ADDR_BITS & !self.addr_mask
            ));
        }
        Ok(())
    }

    /// Whether every address of `[lo, hi)` (8-byte aligned) survives
    /// encoding and decoding.
    pub fn covers(&self, lo: usize, hi: usize) -> bool {
        let x = lo | if hi > lo { hi - 1 } else { lo };
        let top = usize::BITS - x.leading_zeros();
        let bits = if top >= usize::BITS { !0 } else { (1usize << top) - 1 } & !7;
        bits & self.tag_mask == 0 && bits & !self.addr_mask == 0
    }

    /// The object `w` names: `None` for an immediate or a null pointer.
    #[inline(always)]
    pub fn decode(&self, w: usize) -> Option<usize> {
        let t = w & self.tag_mask;
        if t != self.tags[0] && t != self.tags[1] && t != self.tags[2] && t != self.tags[3] {
            return None;
        }
        let a = w & self.addr_mask;
        (a != 0).then_some(a)
    }

    /// `addr` as a value with pointer tag number `tag` (0-based; panics if
    /// out of range).
    pub fn encode_with(&self, addr: usize, tag: usize) -> usize {
        assert!(tag < self.ntags.min(MAX_PTR_TAGS), "pointer tag {tag} of {}", self.ntags);
        addr | self.tags[tag]
    }

    /// `addr` as a value with the first pointer tag.
    #[inline]
    pub fn encode(&self, addr: usize) -> usize {
        addr | self.tags[0]
    }

    /// Whether the conservative scan decodes words outside the heap range
    /// (some pointer tag lies outside bits 0..=2, e.g. NaN-boxing).
    #[inline(always)]
    pub fn decodes_conservatively(&self) -> bool {
        self.high
    }

    /// The tag bits.
    pub fn tag_mask(&self) -> usize {
        self.tag_mask
    }
    /// The address bits.
    pub fn addr_mask(&self) -> usize {
        self.addr_mask
    }
    /// The pointer tags (bits in place).
    pub fn ptr_tags(&self) -> &[usize] {
        &self.tags[..self.ntags.min(MAX_PTR_TAGS)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_decode() {
        let u = ValueEncoding::untagged();
        assert!(u.check().is_ok());
        assert_eq!(u.decode(0x1000), Some(0x1000));
        assert_eq!(u.decode(0), None);
        assert!(!u.decodes_conservatively());

        let l = ValueEncoding::low_bits(7, 0);
        assert!(l.check().is_ok());
        assert_eq!(l.decode(0x1000), Some(0x1000));
        assert_eq!(l.decode(0x1001), None);
        assert_eq!(l.decode(0x1004), None);
        let v8 = ValueEncoding::low_bits(1, 1);
        assert!(v8.check().is_ok());
        assert_eq!(v8.decode(0x1001), Some(0x1000));
        assert_eq!(v8.decode(0x1000), None);
        assert_eq!(v8.encode(0x2000), 0x2001);

        let n = ValueEncoding::nan_box(48, &[0xfffc, 0xfffd]);
        assert!(n.check().is_ok(), "{:?}", n.check());
        assert!(n.decodes_conservatively());
        assert_eq!(n.decode(0xfffc_0000_0000_1000), Some(0x1000));
        assert_eq!(n.decode(0xfffd_0000_0000_1000), Some(0x1000));
        assert_eq!(n.decode(0xfffe_0000_0000_1000), None);
        assert_eq!(n.decode(0x0000_0000_0000_1000), None);
        assert_eq!(n.encode_with(0x1000, 1), 0xfffd_0000_0000_1000);
        let sm = ValueEncoding::nan_box(47, &[0x1fffc]);
        assert!(sm.check().is_ok());
        assert_eq!(sm.decode((0x1fffc << 47) | 0x7f00_0000_1000), Some(0x7f00_0000_1000));
    }

    #[test]
    fn inconsistent_encodings_are_rejected() {
        // Tag bits that overlap object addresses (objects are only 8-aligned).
        let e = ValueEncoding::low_bits(0xf, 0).check().unwrap_err();
        assert!(e.contains("drops address bits 0x8"), "{e}");
        // Pointer tag outside the mask.
        let e = ValueEncoding::low_bits(1, 2).check().unwrap_err();
        assert!(e.contains("outside the tag mask"), "{e}");
        // Too many / no tags.
        assert!(ValueEncoding::nan_box(48, &[1, 2, 3, 4, 5]).check().unwrap_err().contains("5 pointer tags"));
        assert!(ValueEncoding::nan_box(48, &[]).check().unwrap_err().contains("0 pointer tags"));
        // A tag that does not fit above the shift, and a shift that eats addresses.
        assert!(ValueEncoding::nan_box(48, &[0x1_0000]).check().is_err());
        assert!(ValueEncoding::nan_box(40, &[1]).check().unwrap_err().contains("drops address bits"));
        // Overlapping masks.
        assert!(ValueEncoding::custom(0x3, &[1], !0).check().unwrap_err().contains("overlap"));
    }

    #[test]
    fn coverage_of_a_range() {
        let n = ValueEncoding::nan_box(47, &[0x1fffc]);
        assert!(n.covers(0x7f00_0000_0000, 0x7f00_1000_0000));
        assert!(!n.covers(0xff00_0000_0000, 0xff00_1000_0000));
        assert!(ValueEncoding::untagged().covers(0xff00_0000_0000, 0xff00_1000_0000));
    }
}
