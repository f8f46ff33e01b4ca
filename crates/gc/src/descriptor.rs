//! Type descriptors: the precise layout of every heap object.
//!
//! An object normally starts with a header word holding a `&'static
//! Descriptor`. The descriptor gives the object's size and a bitmap of which
//! payload words are GC pointers, so marking is a loop over bits — no
//! per-object virtual call.
//!
//! **Compact objects** (issue 9: binary-trees' RSS). A fixed-size
//! descriptor may opt in to the *compact layout* ([`Descriptor::compact`],
//! [`DescriptorBuilder::compact`], `gc_type!(compact T { .. })`): its
//! objects have no header word, their payload starts at the object's first
//! byte ([`Descriptor::payload_offset`] is 0, 8 for headered objects), and
//! their descriptor lives in the metadata of their block (a *typed block*,
//! holding objects of that one descriptor only; `Space::block_desc`). Every
//! place that needs an object's descriptor or payload address goes through
//! `object_layout` (block descriptor word + object address). Only fixed
//! descriptors whose object fits a small size class (payload <=
//! `MAX_SMALL` bytes) can be compact: an array, or a larger object, is a
//! const-evaluation error for [`Descriptor::compact`] and a
//! [`DescriptorError`] for the builder. What compact objects do not get:
//! the checkrefs quarantine (a freed compact object is freed at once; a
//! stale handle into its block is still refused once the block is free or
//! typed for another descriptor, and a stale `Gc<T>` still never yields a
//! `&T` over another type). Each compact descriptor carries a
//! [`CompactId`]: a small process-wide number given at its first
//! allocation, which indexes the mutators' per-descriptor allocation caches.
//!
//! **Slot kinds** (issue 14). A payload word is *raw* (never looked at by
//! the collector), a *pointer* slot (null or an object start; anything else
//! is a bad pointer, counted and ignored) or a *value* slot: a one-word
//! tagged value that marking decodes with the heap's
//! [`ValueEncoding`](crate::ValueEncoding) — an immediate is skipped, a
//! pointer-tagged word must decode to null or an object start (else it is a
//! bad value, counted and never followed). Pointer and value slots have a
//! bitmap each (`bitmap`/`vbitmap`, per element `elem_bitmap`/`elem_vbitmap`
//! for arrays), so objects without value slots are marked exactly as before.
//! A word is never both (the builders refuse it).
//!
//! Two shapes exist:
//! * **fixed**: `size_words` payload words, pointer bits in `bitmap`;
//! * **array**: payload word 0 holds the element count `len`, followed by
//!   `len * elem_words` words; pointer bits of one element in `elem_bitmap`.
//!   Byte strings are pointer-free arrays with `elem_words == 1`.
//!
//! Descriptors are `'static`: Rust types get a `static` through
//! [`gc_type!`](crate::gc_type); guest layouts built at run time with
//! [`Descriptor::builder`] are leaked (a VM defines a bounded number of classes,
//! and a descriptor must outlive every object that names it).

/// Marker stored in every descriptor; the heap verifier checks it.
pub(crate) const DESCRIPTOR_MAGIC: u64 = 0x5553_5552_5044_4553; // "USURPDES"

/// Flag: the object holds no GC pointer and is never scanned.
pub const FLAG_POINTER_FREE: u32 = 1;
/// Flag: the object has value slots (marking takes the decoding path).
pub const FLAG_HAS_VALUES: u32 = 2;
/// Flag: compact layout (no header word; the descriptor is its block's).
pub const FLAG_COMPACT: u32 = 4;
/// Flag: the descriptor describes a Rust type ([`Descriptor::rust_type`];
/// every [`gc_type!`](crate::gc_type) descriptor): its objects are made by
/// [`Gc::new`](crate::Gc::new) only, and the untyped writes refuse them.
pub const FLAG_RUST_TYPE: u32 = 8;

/// The largest payload (bytes) of a compact object: the largest small size
/// class (`internals::MAX_SMALL`).
pub const MAX_COMPACT_BYTES: usize = crate::sizeclass::MAX_SMALL;

/// The largest heap (`HeapConfig::max_heap`, bytes), hence the bound on
/// any object's size (header included): [`DescriptorBuilder::build`]
/// refuses a larger fixed object, allocation a larger array.
pub const MAX_HEAP_BYTES: usize = 1 << 46;

/// Where a compact descriptor keeps its process-wide number (see the module
/// docs): a `static` beside a `static` descriptor (`gc_type!` declares one),
/// leaked for a built one. 0 until the descriptor's first allocation; then
/// fixed. Written once, under the registry's lock; read (Relaxed) by the
/// allocation fast path.
#[derive(Debug)]
pub struct CompactId(std::sync::atomic::AtomicU32);

impl CompactId {
    /// A fresh, unassigned id.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> CompactId {
        CompactId(std::sync::atomic::AtomicU32::new(0))
    }
    /// The id, 0 if not assigned yet.
    #[inline(always)]
    pub(crate) fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed) as usize
    }
}

/// Registry of compact descriptors: index = id (entry 0 unused).
static COMPACT_REGISTRY: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// The compact id of `d` (a compact descriptor), assigned now if it has
/// none yet; panics if its `CompactId` already numbers another descriptor
/// (two descriptors given one id would share one typed allocation cache).
/// Allocation slow path only (a refill: once per block, so the lock is
/// cheap).
pub(crate) fn compact_id_assign(d: &'static Descriptor) -> usize {
    let cid = d.compact.expect("a compact descriptor");
    let mut r = COMPACT_REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let id = cid.get();
    if id != 0 {
        let owner = r[id];
        if owner != d as *const Descriptor as usize {
            drop(r);
            // SAFETY: registry entries are the `&'static Descriptor`s that
            // were given their ids here.
            let first = unsafe { &*(owner as *const Descriptor) };
            panic!(
                "usurp: compact descriptors `{}` and `{}` share one CompactId: each compact \
                 descriptor needs a `static CompactId` of its own (`Descriptor::compact(&ID)`)",
                first.name(),
                d.name()
            );
        }
        return id;
    }
    if r.is_empty() {
        r.push(0);
    }
    let id = r.len();
    assert!(id < u32::MAX as usize, "too many compact descriptors");
    r.push(d as *const Descriptor as usize);
    cid.0.store(id as u32, std::sync::atomic::Ordering::Relaxed);
    id
}

/// The descriptor and payload address of the published object at `obj`
/// whose block's descriptor word (`Space::block_desc`) is `block_desc`: a
/// compact object's descriptor is its block's and its payload starts at
/// `obj`; any other object's descriptor is its header word and its payload
/// follows it. **The** one place that knows both layouts.
///
/// # Safety
/// `obj` is a published object (start bit read with Acquire, or found
/// during a mark) and `block_desc` was read for its block while it held it.
#[inline(always)]
pub(crate) unsafe fn object_layout(obj: usize, block_desc: usize) -> (&'static Descriptor, usize) {
    if block_desc != 0 {
        // SAFETY: as compact_layout's (a typed block's word).
        unsafe { compact_layout(obj, block_desc) }
    } else {
        // SAFETY: as headered_layout's (an untyped block).
        unsafe { headered_layout(obj) }
    }
}

/// [`object_layout`] of a compact object (`block_desc != 0`): for a caller
/// that already knows which layout it has (the markers' tagged entries).
///
/// # Safety
/// As [`object_layout`], `block_desc` non-zero.
#[inline(always)]
pub(crate) unsafe fn compact_layout(obj: usize, block_desc: usize) -> (&'static Descriptor, usize) {
    // SAFETY: a typed block's word is a &'static compact Descriptor.
    (unsafe { &*(block_desc as *const Descriptor) }, obj)
}

/// [`object_layout`] of a headered object (its block's word is 0).
///
/// # Safety
/// As [`object_layout`], for an object of an untyped block.
#[inline(always)]
pub(crate) unsafe fn headered_layout(obj: usize) -> (&'static Descriptor, usize) {
    // SAFETY: a headered published object's first word is its &'static
    // Descriptor, written before publication.
    (unsafe { &*((obj as *const usize).read() as *const Descriptor) }, obj + 8)
}

/// The layout of one kind of heap object. See the module docs.
#[repr(C)]
#[derive(Debug)]
pub struct Descriptor {
    magic: u64,
    /// The marking fast path (issue 9): for a fixed object whose pointer
    /// slots all lie in payload words 0..64 and that has no value slot,
    /// its pointer bits (`bitmap[0]`, held here, in the word after `magic`,
    /// so the marker reads them from the same line as the magic word it
    /// checks, and skips the shape tests and the bitmap slices); 0 for
    /// every other shape.
    small_ptrs: u64,
    size_words: usize,
    elem_words: usize,
    elem_bitmap: u64,
    flags: u32,
    bitmap: &'static [u64],
    name: &'static str,
    /// Value slots (issue 14): of one element for arrays.
    elem_vbitmap: u64,
    /// Value slots of a fixed object, trimmed like `bitmap`.
    vbitmap: &'static [u64],
    /// Compact layout (`FLAG_COMPACT`): where its id lives.
    compact: Option<&'static CompactId>,
}

/// Errors from [`DescriptorBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    /// A pointer bit names a word outside the object's payload.
    PointerOutOfRange { index: usize, size_words: usize },
    /// Array elements are limited to 64 words.
    ElementTooLarge(usize),
    /// A word declared both a pointer slot and a value slot.
    SlotKindConflict { index: usize },
    /// A compact descriptor's payload exceeds [`MAX_COMPACT_BYTES`].
    CompactTooLarge { size_words: usize },
    /// The object (payload and header) would exceed the largest heap
    /// ([`MAX_HEAP_BYTES`]), or its slot bitmaps could not be allocated.
    TooLarge { size_words: usize },
}

impl std::fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DescriptorError::PointerOutOfRange { index, size_words } => write!(
                f,
                "descriptor: pointer word {index} is outside the payload of {size_words} words"
            ),
            DescriptorError::ElementTooLarge(w) => {
                write!(f, "descriptor: array elements are limited to 64 words, got {w}")
            }
            DescriptorError::SlotKindConflict { index } => {
                write!(f, "descriptor: word {index} is declared both a pointer slot and a value slot")
            }
            DescriptorError::CompactTooLarge { size_words } => write!(
                f,
                "descriptor: a compact object must fit a small size class ({MAX_COMPACT_BYTES} bytes); \
                 {size_words} words do not"
            ),
            DescriptorError::TooLarge { size_words } => write!(
                f,
                "descriptor: a payload of {size_words} words is too large: an object must fit the largest heap \
                 ({MAX_HEAP_BYTES} bytes, header included) and its slot bitmaps must fit in memory"
            ),
        }
    }
}
impl std::error::Error for DescriptorError {}

impl Descriptor {
    /// A fixed-size descriptor for a `static` (used by [`gc_type!`](crate::gc_type)).
    /// `bitmap` bit `i` (word `i / 64`, bit `i % 64`) marks payload word `i` as a pointer.
    pub const fn fixed(name: &'static str, size_words: usize, bitmap: &'static [u64]) -> Descriptor {
        Descriptor::fixed_with_values(name, size_words, bitmap, &[])
    }

    /// [`fixed`](Descriptor::fixed) with value slots: `values` bit `i` marks
    /// payload word `i` as a value slot (decoded with the heap's
    /// [`ValueEncoding`](crate::ValueEncoding)). A word may not be both.
    pub const fn fixed_with_values(
        name: &'static str,
        size_words: usize,
        bitmap: &'static [u64],
        values: &'static [u64],
    ) -> Descriptor {
        let n = trimmed_len(bitmap, size_words);
        let nv = trimmed_len(values, size_words);
        let mut i = 0;
        while i < bitmap.len() && i < values.len() {
            assert!(bitmap[i] & values[i] == 0, "a word is both a pointer slot and a value slot");
            i += 1;
        }
        Descriptor {
            magic: DESCRIPTOR_MAGIC,
            size_words,
            elem_words: 0,
            elem_bitmap: 0,
            flags: if n > 0 || nv > 0 { 0 } else { FLAG_POINTER_FREE } | if nv > 0 { FLAG_HAS_VALUES } else { 0 },
            bitmap: bitmap.split_at(n).0,
            name,
            elem_vbitmap: 0,
            vbitmap: values.split_at(nv).0,
            small_ptrs: if n == 1 && nv == 0 { bitmap[0] } else { 0 },
            compact: None,
        }
    }

    /// An array descriptor for a `static`: elements of `elem_words` words with
    /// pointer bits `elem_bitmap`. `elem_words` must be in 1..=64.
    pub const fn array(name: &'static str, elem_words: usize, elem_bitmap: u64) -> Descriptor {
        Descriptor::array_with_values(name, elem_words, elem_bitmap, 0)
    }

    /// [`array`](Descriptor::array) with value slots: `elem_values` bit `i`
    /// marks word `i` of each element as a value slot.
    pub const fn array_with_values(name: &'static str, elem_words: usize, elem_bitmap: u64, elem_values: u64) -> Descriptor {
        assert!(elem_words >= 1 && elem_words <= 64, "array element must be 1..=64 words");
        assert!(elem_bitmap & elem_values == 0, "a word is both a pointer slot and a value slot");
        assert!(
            elem_words == 64 || (elem_bitmap | elem_values) >> elem_words == 0,
            "slot bit beyond the element"
        );
        Descriptor {
            magic: DESCRIPTOR_MAGIC,
            size_words: 0,
            elem_words,
            elem_bitmap,
            flags: if elem_bitmap == 0 && elem_values == 0 { FLAG_POINTER_FREE } else { 0 }
                | if elem_values != 0 { FLAG_HAS_VALUES } else { 0 },
            bitmap: &[],
            name,
            elem_vbitmap: elem_values,
            vbitmap: &[],
            small_ptrs: 0,
            compact: None,
        }
    }

    /// This fixed descriptor with the **compact layout** (see the module
    /// docs): its objects have no header word and live in blocks typed
    /// with this descriptor; `id` is where its process-wide number is kept
    /// (a `static CompactId` of its own). For a `static`:
    ///
    /// ```
    /// use usurp_gc::descriptor::{CompactId, Descriptor};
    /// static PAIR_ID: CompactId = CompactId::new();
    /// static PAIR: Descriptor = Descriptor::fixed("pair", 2, &[0b11]).compact(&PAIR_ID);
    /// assert!(PAIR.is_compact() && PAIR.payload_offset() == 0);
    /// assert_eq!(PAIR.object_bytes(0), Some(16));
    /// ```
    ///
    /// Refused (a const-evaluation error in a `static`, a panic at run time)
    /// for an array descriptor and for a payload larger than
    /// [`MAX_COMPACT_BYTES`]:
    ///
    /// ```compile_fail
    /// use usurp_gc::descriptor::{CompactId, Descriptor};
    /// static ID: CompactId = CompactId::new();
    /// static BAD: Descriptor = Descriptor::array("bytes", 1, 0).compact(&ID);
    /// ```
    pub const fn compact(mut self, id: &'static CompactId) -> Descriptor {
        assert!(self.elem_words == 0, "an array descriptor cannot be compact (only fixed-size objects can)");
        assert!(
            self.size_words <= MAX_COMPACT_BYTES / 8,
            "a compact object must fit a small size class (payload <= MAX_SMALL bytes)"
        );
        self.flags |= FLAG_COMPACT;
        self.compact = Some(id);
        self
    }

    /// This descriptor marked as describing a **Rust type** (the
    /// descriptor of a [`GcType`]): [`gc_type!`](crate::gc_type) does it,
    /// and a hand-written `unsafe impl GcType` must (see its `# Safety`).
    /// The payload of such an object is a Rust value whose fields have
    /// validity invariants (a `bool`, a `&'static str`, the type of a
    /// `Member<A>`) that untyped words cannot keep, so the safe untyped API
    /// refuses these objects with a panic: [`GcRef::set_word`],
    /// [`GcRef::set_ptr`], [`GcRef::set_value`] (write through the Rust
    /// type instead: `Member::set`, atomics), and [`alloc`](crate::alloc) /
    /// [`try_alloc`](crate::try_alloc) (only [`Gc::new`](crate::Gc::new)
    /// constructs one). Reads (`word`, `ptr`, `value`) stay allowed.
    ///
    /// ```
    /// use usurp_gc::Descriptor;
    /// static PAIR: Descriptor = Descriptor::fixed("Pair", 2, &[0b01]).rust_type();
    /// assert!(PAIR.is_rust_type());
    /// ```
    ///
    /// [`GcRef::set_word`]: crate::GcRef::set_word
    /// [`GcRef::set_ptr`]: crate::GcRef::set_ptr
    /// [`GcRef::set_value`]: crate::GcRef::set_value
    pub const fn rust_type(mut self) -> Descriptor {
        self.flags |= FLAG_RUST_TYPE;
        self
    }

    /// Whether this descriptor describes a Rust type ([`Descriptor::rust_type`]).
    #[inline(always)]
    pub const fn is_rust_type(&self) -> bool {
        self.flags & FLAG_RUST_TYPE != 0
    }

    /// Whether objects of this kind have the compact layout (no header).
    #[inline(always)]
    pub const fn is_compact(&self) -> bool {
        self.flags & FLAG_COMPACT != 0
    }

    /// Bytes from an object's address (what a handle holds) to its payload
    /// word 0: 0 for a compact object, 8 (the header word) otherwise. For
    /// JIT authors: payload word `i` of an object `o` is at
    /// `o + payload_offset() + 8 * i`.
    #[inline(always)]
    pub const fn payload_offset(&self) -> usize {
        if self.is_compact() {
            0
        } else {
            8
        }
    }

    /// The compact id (0: not compact, or not allocated yet).
    #[inline(always)]
    pub(crate) fn compact_id(&self) -> usize {
        match self.compact {
            Some(c) => c.get(),
            None => 0,
        }
    }

    /// Start building a fixed-size descriptor at run time (for guest layouts).
    pub fn builder(size_words: usize) -> DescriptorBuilder {
        DescriptorBuilder { size_words, ptrs: Vec::new(), values: Vec::new(), name: None, compact: false, rust_type: false }
    }

    /// Start building an array descriptor at run time.
    pub fn array_builder(elem_words: usize) -> ArrayDescriptorBuilder {
        ArrayDescriptorBuilder { elem_words, ptrs: 0, values: 0, name: None }
    }

    /// Payload words of a fixed object (0 for arrays).
    pub fn size_words(&self) -> usize {
        self.size_words
    }
    /// Words per element (0 for fixed objects).
    pub fn elem_words(&self) -> usize {
        self.elem_words
    }
    /// Whether this is an array descriptor.
    pub fn is_array(&self) -> bool {
        self.elem_words != 0
    }
    /// Whether objects of this kind contain no pointer slot and no value slot.
    pub fn is_pointer_free(&self) -> bool {
        self.flags & FLAG_POINTER_FREE != 0
    }
    /// The name given at construction (for diagnostics).
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub(crate) fn magic_ok(&self) -> bool {
        self.magic == DESCRIPTOR_MAGIC
    }

    /// Whether payload word `i` of a fixed object is a pointer.
    pub fn is_pointer(&self, i: usize) -> bool {
        self.bitmap.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
    }
    /// Whether payload word `i` of a fixed object is a value slot.
    pub fn is_value(&self, i: usize) -> bool {
        self.vbitmap.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
    }
    /// Pointer-slot bitmap of a fixed object (trimmed; empty for arrays).
    #[inline(always)]
    pub(crate) fn pointer_bits(&self) -> &'static [u64] {
        self.bitmap
    }
    /// Value-slot bitmap of a fixed object (trimmed; empty for arrays).
    #[inline(always)]
    pub(crate) fn value_bits(&self) -> &'static [u64] {
        self.vbitmap
    }
    /// The marking fast path's pointer bits: for a fixed object without
    /// value slots whose pointer slots are all among payload words 0..64,
    /// those slots (bit `i`: word `i`); 0 for any other shape (then the
    /// marker takes the general path).
    #[inline(always)]
    pub(crate) fn small_pointer_bits(&self) -> u64 {
        self.small_ptrs
    }
    /// Pointer and value bits of one array element (0 for fixed objects).
    #[inline(always)]
    pub(crate) fn elem_bits(&self) -> (u64, u64) {
        (self.elem_bitmap, self.elem_vbitmap)
    }
    /// Whether the object has value slots.
    #[inline(always)]
    pub fn has_values(&self) -> bool {
        self.flags & FLAG_HAS_VALUES != 0
    }
    /// The slot kind of payload word `i` of an object of this kind (for an
    /// array: payload word 0 is its length, a raw word).
    pub fn slot_kind(&self, i: usize) -> SlotKind {
        let (p, v) = if self.is_array() {
            if i == 0 {
                (false, false)
            } else {
                // (No division for the common one-word elements.)
                let w = if self.elem_words == 1 { 0 } else { (i - 1) % self.elem_words };
                (self.elem_bitmap >> w & 1 != 0, self.elem_vbitmap >> w & 1 != 0)
            }
        } else {
            (self.is_pointer(i), self.is_value(i))
        };
        if p {
            SlotKind::Pointer
        } else if v {
            SlotKind::Value
        } else {
            SlotKind::Raw
        }
    }

    /// Total object size in bytes including the header (none for a
    /// compact object), for `len` elements (ignored for fixed objects).
    /// `None` on overflow.
    pub fn object_bytes(&self, len: usize) -> Option<usize> {
        let words = if self.is_array() {
            len.checked_mul(self.elem_words)?.checked_add(2)?
        } else if self.is_compact() {
            self.size_words
        } else {
            self.size_words.checked_add(1)?
        };
        words.checked_mul(8)
    }

    /// Call `f(word_index, is_value)` for every pointer word and every value
    /// word of an object of this kind (word index relative to the payload; for
    /// arrays `len` is read from payload word 0 by the caller and passed in).
    /// Used off the marking hot path (the shading of a new object's fields
    /// while a heap marks); the markers have their own loops (`mark.rs`).
    pub(crate) fn for_each_reference_word(&self, len: usize, mut f: impl FnMut(usize, bool)) {
        if self.is_pointer_free() && !self.has_values() {
            return;
        }
        let mut each_bit = |mut bits: u64, base: usize, value: bool| {
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(base + b, value);
            }
        };
        if self.is_array() {
            let ew = self.elem_words;
            for e in 0..len {
                each_bit(self.elem_bitmap, 1 + e * ew, false);
                each_bit(self.elem_vbitmap, 1 + e * ew, true);
            }
        } else {
            for (wi, &w) in self.bitmap.iter().enumerate() {
                each_bit(w, wi * 64, false);
            }
            for (wi, &w) in self.vbitmap.iter().enumerate() {
                each_bit(w, wi * 64, true);
            }
        }
    }

    /// Call `f(word_index)` for every pointer word of the object whose payload
    /// starts at `payload` (word index relative to the payload). For arrays
    /// `len` is read from payload word 0 by the caller and passed in.
    #[cfg(test)]
    pub(crate) fn for_each_pointer_word(&self, len: usize, mut f: impl FnMut(usize)) {
        if self.is_pointer_free() {
            return;
        }
        if self.is_array() {
            let ew = self.elem_words;
            for e in 0..len {
                let mut bits = self.elem_bitmap;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(1 + e * ew + b);
                }
            }
        } else {
            // Construction guarantees every bit names a payload word and the
            // last bitmap word is non-zero.
            for (wi, &w) in self.bitmap.iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(wi * 64 + b);
                }
            }
        }
    }
}

impl Descriptor {
    /// Call `f(word_index, false)` for every pointer slot and
    /// `f(word_index, true)` for every value slot of the object (word indices
    /// relative to the payload; for arrays `len` is read from payload word 0
    /// by the caller). One pass: for an array, each element's pointer slots,
    /// then its value slots. (One closure with a constant flag per call site,
    /// so that after inlining each site is its own straight-line code.)
    #[inline(always)]
    pub(crate) fn for_each_slot(&self, len: usize, mut f: impl FnMut(usize, bool)) {
        if self.is_pointer_free() {
            return;
        }
        if self.is_array() {
            let ew = self.elem_words;
            let (pb, vb) = (self.elem_bitmap, self.elem_vbitmap);
            for e in 0..len {
                let base = 1 + e * ew;
                let mut bits = pb;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(base + b, false);
                }
                let mut bits = vb;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(base + b, true);
                }
            }
        } else {
            for (wi, &w) in self.bitmap.iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(wi * 64 + b, false);
                }
            }
            for (wi, &w) in self.vbitmap.iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(wi * 64 + b, true);
                }
            }
        }
    }
}

/// What the collector does with a payload word (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// Never looked at.
    Raw,
    /// Null or an object start.
    Pointer,
    /// A tagged value, decoded with the heap's encoding.
    Value,
}

/// The number of leading words of `bits` up to the last one with a bit set
/// (checking that no bit lies beyond `size_words`).
const fn trimmed_len(bits: &[u64], size_words: usize) -> usize {
    // Keep the bitmap up to its last word with a bit inside the payload:
    // marking then loops over the words that matter only. Bits beyond the
    // payload must not exist.
    let mut n = 0;
    let mut i = 0;
    while i < bits.len() {
        if bits[i] != 0 {
            assert!(i * 64 < size_words, "pointer bit beyond the payload");
            if (i + 1) * 64 > size_words && size_words % 64 != 0 {
                assert!(bits[i] >> (size_words % 64) == 0, "pointer bit beyond the payload");
            }
            n = i + 1;
        }
        i += 1;
    }
    n
}

/// Builder for run-time fixed-size descriptors; see [`Descriptor::builder`].
pub struct DescriptorBuilder {
    size_words: usize,
    ptrs: Vec<usize>,
    values: Vec<usize>,
    name: Option<String>,
    compact: bool,
    rust_type: bool,
}

impl DescriptorBuilder {
    /// Mark payload word `i` as a GC pointer.
    pub fn pointer_at(mut self, i: usize) -> Self {
        self.ptrs.push(i);
        self
    }
    /// Mark payload word `i` as a value slot: a tagged word decoded with the
    /// heap's [`ValueEncoding`](crate::ValueEncoding).
    pub fn value_at(mut self, i: usize) -> Self {
        self.values.push(i);
        self
    }
    /// Give the descriptor a name for diagnostics.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// Give the objects the compact layout (no header word; see
    /// [`Descriptor::compact`]). `build` fails with
    /// [`DescriptorError::CompactTooLarge`] if the payload exceeds
    /// [`MAX_COMPACT_BYTES`].
    pub fn compact(mut self) -> Self {
        self.compact = true;
        self
    }
    /// Mark the descriptor as describing a Rust type (see
    /// [`Descriptor::rust_type`]): for the descriptor of a hand-written
    /// `unsafe impl GcType` built at run time.
    pub fn rust_type(mut self) -> Self {
        self.rust_type = true;
        self
    }
    /// Build and leak the descriptor (it must outlive every object naming it).
    ///
    /// Fails with [`DescriptorError::TooLarge`] if an object of this size
    /// cannot fit the largest heap ([`MAX_HEAP_BYTES`]), or if the memory
    /// for its slot bitmaps cannot be had, before allocating anything.
    pub fn build(self) -> Result<&'static Descriptor, DescriptorError> {
        // The object's bytes (payload and header word) must fit a heap:
        // checked first, so that a huge size is an error rather than an
        // abort of the bitmap's allocation.
        if self.size_words >= MAX_HEAP_BYTES / 8 {
            return Err(DescriptorError::TooLarge { size_words: self.size_words });
        }
        for &i in self.ptrs.iter().chain(&self.values) {
            if i >= self.size_words {
                return Err(DescriptorError::PointerOutOfRange { index: i, size_words: self.size_words });
            }
        }
        // Each bitmap up to its highest slot only (what the trimming below
        // keeps anyway), and allocated fallibly: a slot declared far into a
        // huge payload needs that many bitmap words.
        let bitmap_for = |slots: &[usize]| -> Result<Vec<u64>, DescriptorError> {
            let words = slots.iter().max().map_or(0, |&i| i / 64 + 1);
            let mut v = Vec::new();
            v.try_reserve_exact(words).map_err(|_| DescriptorError::TooLarge { size_words: self.size_words })?;
            v.resize(words, 0u64);
            Ok(v)
        };
        let mut bitmap = bitmap_for(&self.ptrs)?;
        for &i in &self.ptrs {
            bitmap[i / 64] |= 1 << (i % 64);
        }
        let mut vbitmap = bitmap_for(&self.values)?;
        for &i in &self.values {
            if bitmap.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0) {
                return Err(DescriptorError::SlotKindConflict { index: i });
            }
            vbitmap[i / 64] |= 1 << (i % 64);
        }
        while bitmap.last() == Some(&0) {
            bitmap.pop();
        }
        while vbitmap.last() == Some(&0) {
            vbitmap.pop();
        }
        let any = !bitmap.is_empty() || !vbitmap.is_empty();
        let small_ptrs = if bitmap.len() == 1 && vbitmap.is_empty() { bitmap[0] } else { 0 };
        let name: &'static str = Box::leak(self.name.unwrap_or_else(|| "<runtime>".into()).into_boxed_str());
        let mut d = Descriptor {
            magic: DESCRIPTOR_MAGIC,
            size_words: self.size_words,
            elem_words: 0,
            elem_bitmap: 0,
            flags: if any { 0 } else { FLAG_POINTER_FREE }
                | if vbitmap.is_empty() { 0 } else { FLAG_HAS_VALUES }
                | if self.rust_type { FLAG_RUST_TYPE } else { 0 },
            bitmap: Box::leak(bitmap.into_boxed_slice()),
            name,
            elem_vbitmap: 0,
            vbitmap: Box::leak(vbitmap.into_boxed_slice()),
            small_ptrs,
            compact: None,
        };
        if self.compact {
            if self.size_words > MAX_COMPACT_BYTES / 8 {
                return Err(DescriptorError::CompactTooLarge { size_words: self.size_words });
            }
            d.flags |= FLAG_COMPACT;
            d.compact = Some(Box::leak(Box::new(CompactId::new())));
        }
        Ok(Box::leak(Box::new(d)))
    }
}

/// Builder for run-time array descriptors; see [`Descriptor::array_builder`].
pub struct ArrayDescriptorBuilder {
    elem_words: usize,
    ptrs: u64,
    values: u64,
    name: Option<String>,
}

impl ArrayDescriptorBuilder {
    /// Mark word `i` of each element as a GC pointer.
    pub fn pointer_at(mut self, i: usize) -> Self {
        if i < 64 {
            self.ptrs |= 1 << i;
        } else {
            self.ptrs |= 1 << 63; // rejected in build (i >= elem_words <= 64)
            self.elem_words = self.elem_words.max(65);
        }
        self
    }
    /// Mark word `i` of each element as a value slot (decoded with the
    /// heap's [`ValueEncoding`](crate::ValueEncoding)).
    pub fn value_at(mut self, i: usize) -> Self {
        if i < 64 {
            self.values |= 1 << i;
        } else {
            self.values |= 1 << 63; // rejected in build (i >= elem_words <= 64)
            self.elem_words = self.elem_words.max(65);
        }
        self
    }
    /// Give the descriptor a name for diagnostics.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// Build and leak the descriptor.
    pub fn build(self) -> Result<&'static Descriptor, DescriptorError> {
        if self.elem_words == 0 || self.elem_words > 64 {
            return Err(DescriptorError::ElementTooLarge(self.elem_words));
        }
        let all = self.ptrs | self.values;
        if self.elem_words < 64 && all >> self.elem_words != 0 {
            let index = 63 - all.leading_zeros() as usize;
            return Err(DescriptorError::PointerOutOfRange { index, size_words: self.elem_words });
        }
        if self.ptrs & self.values != 0 {
            return Err(DescriptorError::SlotKindConflict { index: (self.ptrs & self.values).trailing_zeros() as usize });
        }
        let name: &'static str = Box::leak(self.name.unwrap_or_else(|| "<runtime array>".into()).into_boxed_str());
        Ok(Box::leak(Box::new(Descriptor {
            magic: DESCRIPTOR_MAGIC,
            size_words: 0,
            elem_words: self.elem_words,
            elem_bitmap: self.ptrs,
            flags: if all == 0 { FLAG_POINTER_FREE } else { 0 } | if self.values != 0 { FLAG_HAS_VALUES } else { 0 },
            bitmap: &[],
            name,
            elem_vbitmap: self.values,
            vbitmap: &[],
            small_ptrs: 0,
            compact: None,
        })))
    }
}

/// A Rust type that can live in the GC heap.
///
/// # Safety
/// `DESCRIPTOR` must describe `Self` exactly: `size_words * 8 >= size_of::<Self>()`,
/// `align_of::<Self>() <= 8`, and every field that holds a GC pointer
/// ([`Member`](crate::Member), [`GcRef`](crate::GcRef), `Gc<_>`) has its word
/// marked; no other word may be marked unless it always holds null or a GC
/// pointer. The GC never runs `Drop` for heap objects. Use [`gc_type!`](crate::gc_type).
///
/// Every marked word (pointer slot, and value slot of a hand-written
/// descriptor) is one whole, aligned word of `Self` that is written only
/// atomically (a [`Member`](crate::Member), an `AtomicUsize`) or never
/// after [`Gc::new`](crate::Gc::new) (a `Gc<_>` or `GcRef` field): the
/// collector reads these words while tasks run (a concurrent mark), and the
/// safe untyped reads ([`GcRef::word`](crate::GcRef::word), `ptr`, `value`)
/// of a Rust type's object accept exactly these words (any other word
/// panics: it may be padding, a lock's data or a smaller atomic).
///
/// `PAYLOAD_OFFSET` must equal `Self::descriptor().payload_offset()` (0 for
/// a compact descriptor); `Gc<T>` uses it as a compile-time constant (and
/// `Gc::new` / `Gc::from_ref` check it).
///
/// The descriptor must be marked as a Rust type ([`Descriptor::rust_type`],
/// as `gc_type!` does; `Gc::new` / `Gc::from_ref` panic otherwise) and be
/// used by no other type and by no guest object: that mark is what makes
/// the safe untyped writes ([`GcRef::set_word`](crate::GcRef::set_word),
/// `set_ptr`, `set_value`) and [`alloc`](crate::alloc) refuse its objects,
/// which would otherwise break `Self`'s field invariants from safe code.
/// The `unsafe` untyped writes (`set_word_unchecked` etc.) do not check it:
/// their caller must keep every field of `Self` valid.
///
/// **`Sync`** (a supertrait, checked by the compiler): a heap object is
/// shared by every task that reaches it, and tasks run on several threads
/// at once; a `GcRef` is `Send` and [`Gc::from_ref`](crate::Gc::from_ref)
/// is safe, so any thread may hold a `&Self` to any object. A type with
/// unsynchronised interior mutability (`Cell`, `RefCell`, `Rc`) would let
/// safe code race on it; use atomics or a lock (`Member` fields are
/// atomic words):
///
/// ```compile_fail,E0277
/// use usurp_gc::gc_type;
/// #[repr(C)]
/// struct Counter { n: std::cell::Cell<u64> } // not Sync: refused
/// gc_type!(Counter {});
/// ```
/// ```
/// use usurp_gc::gc_type;
/// #[repr(C)]
/// struct Counter { n: std::sync::atomic::AtomicU64 } // Sync: accepted
/// gc_type!(Counter {});
/// ```
pub unsafe trait GcType: Sized + Sync {
    /// Bytes from an object's address to its payload (see
    /// [`Descriptor::payload_offset`]).
    const PAYLOAD_OFFSET: usize = 8;
    /// The descriptor of `Self` (a `static`, so its address is stable).
    fn descriptor() -> &'static Descriptor;
}

/// A field type that [`gc_type!`](crate::gc_type) accepts in its list of
/// GC-pointer fields: exactly one word, null or an object's address
/// ([`Member<_>`](crate::Member), [`Gc<_>`](crate::Gc), [`GcRef`](crate::GcRef)
/// and their `Option`s). Sealed: the macro marks one word per listed field,
/// so a wider field (an array of `Member`s, a struct holding several)
/// would have its other words untraced.
#[diagnostic::on_unimplemented(
    message = "gc_type!: a listed field of type `{Self}` is not one GC-pointer word",
    label = "a listed field's type is not a GcPointerField",
    note = "gc_type! traces one word per listed field: list only Member<_>, Gc<_>, GcRef, Option<Gc<_>> or \
            Option<GcRef> fields (an array's elements as separate fields, or use an array object)"
)]
pub trait GcPointerField: sealed::Sealed {}
mod sealed {
    pub trait Sealed {}
}
impl<T> sealed::Sealed for crate::Member<T> {}
impl<T> GcPointerField for crate::Member<T> {}
impl<T> sealed::Sealed for crate::Gc<T> {}
impl<T> GcPointerField for crate::Gc<T> {}
impl<T> sealed::Sealed for Option<crate::Gc<T>> {}
impl<T> GcPointerField for Option<crate::Gc<T>> {}
impl sealed::Sealed for crate::GcRef {}
impl GcPointerField for crate::GcRef {}
impl sealed::Sealed for Option<crate::GcRef> {}
impl GcPointerField for Option<crate::GcRef> {}
const _: () = {
    assert!(std::mem::size_of::<crate::Member<u8>>() == 8);
    assert!(std::mem::size_of::<crate::Gc<u8>>() == 8);
    assert!(std::mem::size_of::<Option<crate::Gc<u8>>>() == 8);
    assert!(std::mem::size_of::<crate::GcRef>() == 8);
    assert!(std::mem::size_of::<Option<crate::GcRef>>() == 8);
};

/// `gc_type!`'s per-field check: compiles only for a [`GcPointerField`].
#[doc(hidden)]
#[inline(always)]
pub fn gc_pointer_field<F: GcPointerField>(_: &F) {}

/// Implement [`GcType`] for a struct, listing its GC-pointer fields:
///
/// ```
/// use usurp_gc::{gc_type, Member};
/// #[repr(C)]
/// struct Node { left: Member<Node>, right: Member<Node>, value: i64 }
/// gc_type!(Node { left, right });
/// ```
/// Each listed field must be one word holding null or an object (a
/// `Member<_>`, `Gc<_>`, `GcRef`, or an `Option` of the last two: the
/// sealed [`GcPointerField`](crate::descriptor::GcPointerField)); any other field type is a compile error,
/// an array of `Member`s among them (only its first word would be traced):
///
/// ```compile_fail,E0277
/// use usurp_gc::{gc_type, Member};
/// #[repr(C)]
/// struct Node { kids: [Member<Node>; 2], value: i64 }
/// gc_type!(Node { kids });
/// ```
/// ```compile_fail,E0277
/// use usurp_gc::gc_type;
/// #[repr(C)]
/// struct Word { w: usize }
/// gc_type!(Word { w });
/// ```
/// List each element instead (`struct Node { left: Member<Node>, right:
/// Member<Node> }`) or use an array object ([`Descriptor::array`]).
/// Accepted:
///
/// ```
/// use usurp_gc::{gc_type, Gc, GcRef, Member};
/// #[repr(C)]
/// struct Any { m: Member<Any>, g: Option<Gc<Any>>, r: Option<GcRef>, n: u64 }
/// gc_type!(Any { m, g, r });
/// ```
/// Pointer fields must lie in the first 256 words of the struct.
///
/// `gc_type!(compact T { .. })` gives `T` the compact layout (no header
/// word, see [`Descriptor::compact`]): for small, numerous records (tree
/// nodes, cons cells). `T` must then fit a small size class:
///
/// ```
/// use usurp_gc::{gc_type, Member};
/// #[repr(C)]
/// struct Node { left: Member<Node>, right: Member<Node> }
/// gc_type!(compact Node { left, right });
/// # use usurp_gc::GcType;
/// assert_eq!(Node::descriptor().object_bytes(0), Some(16));
/// ```
#[macro_export]
macro_rules! gc_type {
    // Both forms' pointer bitmap: one bit per listed field's word, with
    // the checks every field needs (internal arm).
    (@bitmap $t:ty { $($field:ident),* }) => {{
        let mut b = [0u64; 4];
        $(
            let off = ::core::mem::offset_of!($t, $field);
            assert!(off % 8 == 0, "GC pointer field must be word aligned");
            let w = off / 8;
            assert!(w < 256, "GC pointer fields must lie in the first 256 words");
            b[w / 64] |= 1u64 << (w % 64);
        )*
        b
    }};
    (compact $t:ty { $($field:ident),* $(,)? }) => {
        // SAFETY: as in the headered form; PAYLOAD_OFFSET is 0, as the
        // compact descriptor's payload_offset().
        unsafe impl $crate::GcType for $t {
            const PAYLOAD_OFFSET: usize = 0;
            #[inline(always)]
            fn descriptor() -> &'static $crate::Descriptor {
                // Each listed field is one GC-pointer word (a type check
                // only; never called).
                #[allow(dead_code)]
                fn listed_fields_are_gc_pointers(_v: &$t) {
                    $( $crate::descriptor::gc_pointer_field(&_v.$field); )*
                }
                const WORDS: usize = ::core::mem::size_of::<$t>().div_ceil(8);
                const BITMAP: [u64; 4] = $crate::gc_type!(@bitmap $t { $($field),* });
                const _: () = assert!(::core::mem::align_of::<$t>() <= 8, "GC types need alignment <= 8");
                static ID: $crate::descriptor::CompactId = $crate::descriptor::CompactId::new();
                static DESC: $crate::Descriptor =
                    $crate::Descriptor::fixed(stringify!($t), WORDS, &BITMAP).compact(&ID).rust_type();
                &DESC
            }
        }
    };
    ($t:ty { $($field:ident),* $(,)? }) => {
        // SAFETY: the bitmap below is computed from the offsets of exactly the
        // listed fields; the const asserts check size, alignment and word size.
        unsafe impl $crate::GcType for $t {
            #[inline(always)]
            fn descriptor() -> &'static $crate::Descriptor {
                // Each listed field is one GC-pointer word (a type check
                // only; never called).
                #[allow(dead_code)]
                fn listed_fields_are_gc_pointers(_v: &$t) {
                    $( $crate::descriptor::gc_pointer_field(&_v.$field); )*
                }
                const WORDS: usize = ::core::mem::size_of::<$t>().div_ceil(8);
                const BITMAP: [u64; 4] = $crate::gc_type!(@bitmap $t { $($field),* });
                const _: () = assert!(::core::mem::align_of::<$t>() <= 8, "GC types need alignment <= 8");
                static DESC: $crate::Descriptor =
                    $crate::Descriptor::fixed(stringify!($t), WORDS, &BITMAP).rust_type();
                &DESC
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_bitmap_and_sizes() {
        let d = Descriptor::builder(70).pointer_at(0).pointer_at(65).name("T").build().unwrap();
        assert!(d.is_pointer(0) && d.is_pointer(65) && !d.is_pointer(1) && !d.is_pointer(64));
        assert!(!d.is_pointer_free());
        assert_eq!(d.object_bytes(0), Some(71 * 8));
        let mut seen = vec![];
        d.for_each_pointer_word(0, |i| seen.push(i));
        assert_eq!(seen, vec![0, 65]);
        assert_eq!(d.name(), "T");
    }

    #[test]
    fn static_descriptors_trim_their_bitmap() {
        static B: [u64; 4] = [0b101, 0, 0, 0];
        static D: Descriptor = Descriptor::fixed("S", 3, &B);
        assert_eq!(D.bitmap.len(), 1);
        assert!(D.is_pointer(0) && D.is_pointer(2) && !D.is_pointer(1));
        static E: Descriptor = Descriptor::fixed("E", 3, &[0, 0]);
        assert!(E.is_pointer_free() && E.bitmap.is_empty());
    }

    #[test]
    fn small_pointer_bits_only_for_fixed_pointer_only_objects_within_64_words() {
        // The marking fast path's shape (issue 9): fixed, pointer slots only,
        // all in words 0..64.
        let d = Descriptor::builder(3).pointer_at(0).pointer_at(2).build().unwrap();
        assert_eq!(d.small_pointer_bits(), 0b101);
        assert_eq!(Descriptor::builder(64).pointer_at(63).build().unwrap().small_pointer_bits(), 1 << 63);
        static B: [u64; 2] = [0b11, 0];
        static S: Descriptor = Descriptor::fixed("S", 2, &B);
        assert_eq!(S.small_pointer_bits(), 0b11);
        // Everything else takes the general path.
        assert_eq!(Descriptor::builder(70).pointer_at(0).pointer_at(65).build().unwrap().small_pointer_bits(), 0);
        assert_eq!(Descriptor::builder(70).pointer_at(65).build().unwrap().small_pointer_bits(), 0);
        assert_eq!(Descriptor::builder(2).pointer_at(0).value_at(1).build().unwrap().small_pointer_bits(), 0);
        assert_eq!(Descriptor::builder(2).value_at(1).build().unwrap().small_pointer_bits(), 0);
        assert_eq!(Descriptor::builder(2).build().unwrap().small_pointer_bits(), 0);
        assert_eq!(Descriptor::array_builder(2).pointer_at(0).build().unwrap().small_pointer_bits(), 0);
        static V: Descriptor = Descriptor::fixed_with_values("V", 2, &[0b01], &[0b10]);
        assert_eq!(V.small_pointer_bits(), 0);
        static A: Descriptor = Descriptor::array("A", 1, 1);
        assert_eq!(A.small_pointer_bits(), 0);
    }

    #[test]
    fn builder_rejects_out_of_range() {
        assert_eq!(
            Descriptor::builder(2).pointer_at(2).build().unwrap_err(),
            DescriptorError::PointerOutOfRange { index: 2, size_words: 2 }
        );
        assert!(Descriptor::array_builder(0).build().is_err());
        assert!(Descriptor::array_builder(2).pointer_at(3).build().is_err());
    }

    #[test]
    fn value_slots() {
        let d = Descriptor::builder(3).pointer_at(0).value_at(2).name("V").build().unwrap();
        assert!(d.is_pointer(0) && d.is_value(2) && !d.is_value(0) && !d.is_pointer(2) && d.has_values());
        assert_eq!([d.slot_kind(0), d.slot_kind(1), d.slot_kind(2)], [SlotKind::Pointer, SlotKind::Raw, SlotKind::Value]);
        let (mut p, mut v) = (vec![], vec![]);
        d.for_each_slot(0, |i, val| if val { v.push(i) } else { p.push(i) });
        assert_eq!((p, v), (vec![0], vec![2]));
        // Value slots alone make an object scanned.
        assert!(!Descriptor::builder(2).value_at(1).build().unwrap().is_pointer_free());
        let a = Descriptor::array_builder(2).value_at(0).build().unwrap();
        assert!(!a.is_pointer_free() && a.has_values());
        assert_eq!(a.slot_kind(0), SlotKind::Raw);
        assert_eq!(a.slot_kind(3), SlotKind::Value);
        let (mut p, mut v) = (vec![], vec![]);
        a.for_each_slot(3, |i, val| if val { v.push(i) } else { p.push(i) });
        assert_eq!((p, v), (vec![], vec![1, 3, 5]));
        assert_eq!(
            Descriptor::builder(2).pointer_at(1).value_at(1).build().unwrap_err(),
            DescriptorError::SlotKindConflict { index: 1 }
        );
        assert!(Descriptor::builder(2).value_at(2).build().is_err());
        assert!(Descriptor::array_builder(2).pointer_at(1).value_at(1).build().is_err());
        assert!(Descriptor::array_builder(2).value_at(2).build().is_err());
        static B: [u64; 1] = [0b001];
        static VB: [u64; 1] = [0b100];
        static S: Descriptor = Descriptor::fixed_with_values("S", 3, &B, &VB);
        assert!(S.is_pointer(0) && S.is_value(2));
        static A: Descriptor = Descriptor::array_with_values("A", 2, 0, 0b10);
        assert_eq!(A.slot_kind(2), SlotKind::Value);
    }

    #[test]
    fn pointer_free_and_arrays() {
        let s = Descriptor::builder(3).build().unwrap();
        assert!(s.is_pointer_free());
        let a = Descriptor::array_builder(2).pointer_at(1).build().unwrap();
        assert!(a.is_array() && !a.is_pointer_free());
        assert_eq!(a.object_bytes(3), Some((2 + 6) * 8));
        let mut seen = vec![];
        a.for_each_pointer_word(3, |i| seen.push(i));
        assert_eq!(seen, vec![2, 4, 6]);
        assert_eq!(a.object_bytes(usize::MAX), None);
    }
}
