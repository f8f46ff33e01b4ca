//! Marking: object lookup for conservative and precise pointers, and the
//! parallel transitive closure.
//!
//! **Conservative lookup.** A word is a root if it points anywhere inside a
//! live object: heap range check, block kind, slot = offset / class size,
//! then [`BlockMeta::is_live`](crate::block::BlockMeta::is_live): the
//! object-start bit, and in a block not yet swept since the last mark also
//! that mark's bit. Sweeping is lazy (after the pause, by allocation and a
//! background sweeper), so a dead object keeps its start bit until its block
//! is swept; the lookup treats it as free from the end of the mark that
//! found it dead, so a stray word can never revive it while its children,
//! in blocks already swept, may be freed (pitfall 2). Every block is swept
//! before the next mark begins. The bit is published after the header is
//! written (pitfall 1).
//!
//! **One-past-the-end pointers** (pitfall 3). What Rust code really holds
//! one past an object is the end pointer of a slice over the object's tail:
//! a slice iterator over an array's elements (`[ptr, end)`), or the base of a
//! loop that LLVM's loop-strength reduction rewrote to index `end[-n..0]`,
//! in which case `end` can be the only register that still refers to the
//! object while the loop reads it. Such a pointer equals the object's
//! *exact* end: header + payload words per its descriptor (for an array:
//! length word + `len * elem_words`), not the end of its size-class slot.
//! So a conservative word `w` that is an object start, or hits no object,
//! also marks the object containing `w - 1` only if that object is an
//! *array* whose exact end is `w` (its header and length are read; it is a
//! published object). Only arrays: a slice over a fixed-size object's words
//! is not something safe code builds (its fields are read through the
//! handle), while nearly every small fixed object (a cons cell, a 2- or
//! 3-word node) fills its size-class slot exactly, so that its exact end is
//! its successor's start and every root to the successor would pin it. An
//! exact end inside the slot (the object is smaller than its class) is an
//! interior pointer of the slot and keeps the object alive by the interior
//! rule. History: before issue 10 item 3 every word that pointed at an
//! object start also marked its memory predecessor and all that predecessor
//! reached; the first narrowing (exact end of any object) still let exactly
//! fitting fixed objects be pinned (review of issue 10, defect 3). What is
//! left: a root to an object whose predecessor is an array filling its slot
//! exactly still retains that array, because its end pointer and the root
//! are the same word.
//!
//! **Compact objects** (no header, see `descriptor.rs`): lookups are the
//! same (kind, slot, start bit); the block's span class byte carries a
//! `SC_TYPED` flag (bit 7), which the lookup reads anyway, and a compact object
//! goes on a grey stack tagged (bit 0; `refcheck::shade` tags the grey
//! list's entries likewise). `Marker::next` takes a tagged object's
//! descriptor from its typed block's side-table word instead of its header
//! (`descriptor::object_layout`), and the scan reads pointer bits from
//! payload offset 0. No block is freed while a mark runs, so the word read
//! for a marked object is its block's. A compact object is never an array,
//! so it never takes part in the exact-end rule below.
//!
//! **Precise pointers** (object fields, handles, scanner callbacks) must be null
//! or an object start; anything else is counted as a bad pointer and ignored.
//! A marker checks that with the object-start bit alone
//! (`find_exact_marking`: during a mark every block is swept and none is
//! freed), not with the lazy-sweep rule the other lookups need.
//!
//! **Cost per object** (issue 9). Binary-trees' 24-byte node took ~200
//! instructions per marked object (callgrind on `benches/mark.rs`'s `tree`
//! case), then ~108 (session 6): a fixed object with pointer slots only,
//! all in payload words 0..64, is scanned from bits kept in its
//! descriptor (`Descriptor::small_pointer_bits`; no shape tests, no bitmap
//! slices, no copy of the value encoding), every other shape by
//! `scan_object_general`; the precise lookup reads the block's kind, a
//! span-class table (size and reciprocal, no bounds check) and the start
//! bit (the mark bit is tested with a plain load first). Since then the
//! compact layout's grey-entry tag, the look-ahead ring's checks (off by
//! default: about 6 instructions per object) and the batched mark bits
//! brought it to ~120 instructions, with less CPU per object (figures
//! below: the atomic RMW and the cache misses cost more than the
//! instructions).
//!
//! **Batched mark bits** (issue 9). Setting a mark bit with an atomic RMW
//! (`lock or` on x86-64, a full barrier) for every newly marked object
//! cost ~18% of the mark loop on a tree marked in memory order (see the
//! figures below). Concurrent markers (the collector's, the assists, the
//! barrier's `refcheck::shade`, black allocation) set bits of the same
//! words, so a plain store could erase another thread's bit. Instead a
//! non-exclusive marker collects the bits it sets in one word
//! (`Marker::pend_word`/`pend_bits`, `mark_batched`) and ORs them into
//! the word at once (`store_pending`) when its next mark falls in another
//! word, when a draining method returns, and in `flush`, `live_bytes` and
//! `drop`. An object counts as marked if its bit is in the word or in the
//! batch; one marked now is counted and pushed at once. Two threads may
//! then both mark an object (each saw its bit clear before the other
//! stored it). Why that is harmless:
//! * *Marking*: the object is pushed twice and scanned twice; a scan only
//!   marks children, which is idempotent (they are marked once, or twice
//!   by the same argument), and reads nothing it writes.
//! * *Counts* (live objects and bytes, hence the pacer's progress and the
//!   heap's live figure): the two ORs into the word are ordered (RMWs of
//!   one location), and the later one returns the earlier one's bit: that
//!   thread takes its count back (`pend_size`: all slots of a word have
//!   one size). `refcheck::shade` sets bits with `try_mark` (an RMW that
//!   counts only if it set the bit) and so is one of the two parties
//!   either way. A marker's counts are only published by `flush`, after
//!   its batch is stored, and `live_bytes` stores it first, so each
//!   figure read is exact; tests/mark_batch.rs checks it with three
//!   markers racing on a shared graph, and its negative control (the
//!   correction switched off) counts objects twice.
//! * *Visibility*: bits reach the word before the marker's work can be
//!   seen as done (every draining method stores the batch before it
//!   returns or waits for work), so the termination stop, the weak-reference
//!   and finalizer passes and the sweep see every mark. Readers of the
//!   current buffer during the mark (`shade`, `debug_is_marked`) may miss
//!   a batched bit: `shade` then marks the object too (above).
//! * What can double: a bad pointer in an object scanned twice is counted
//!   twice (`bad_pointers`/`bad_values`; a diagnostic).
//!
//! Exclusive markers (in stops) keep their plain read and write;
//! [`set_batched_marks_for_tests`] turns batching off (one RMW per object).
//! `cargo bench -p usurp-gc --bench mark -- tree 20 [post]`: a tree marked
//! in memory order (`post`, as binary-trees lays its trees out) 8.1-8.4
//! ns/object with an RMW per object, 6.6-6.7 batched; a tree whose right
//! children lie far away (parent first) 27 against 31-32 (the batch rarely
//! holds more than one bit there, and its OR comes later); with the
//! look-ahead below, 16 either way. On binary-trees 20 (per-thread CPU of
//! 3 interleaved pairs, load ~6 on 2 cores) the collector thread's CPU
//! went from 1.43-1.58 s to 1.32-1.48 s (a second set: 1.75-2.08 to
//! 1.58-2.00 s; workers 10.2-12.6 to 9.7-11.8 s). Instructions per object
//! (callgrind, `tree 18`, either layout): 108 before issue 9's look-ahead
//! and batching, 114 now with an RMW per object, 120 batched: fewer
//! stalls, not fewer instructions.
//!
//! **Look-ahead with prefetch** (issue 9; *off by default*, see below).
//! What is left per object after that is mostly memory: the grey object's
//! first line (header and the fields the scan reads) may be a cache miss,
//! and with one object popped and scanned at a time each miss stalls the
//! loop in turn. With the look-ahead on, an object popped [`NEAR`] bytes or
//! more from the one popped before enters a small ring (`Marker::ahead`),
//! its first line prefetched (`arch::prefetch_read`: `prefetcht0` /
//! `prfm pldl1keep`), and the ring's oldest entry is scanned once the ring
//! holds [`AHEAD`]: up to `AHEAD` misses are in flight together. (A ring
//! that *loaded* the headers ahead made marking slower: a load blocks
//! where a prefetch does not.) An object near the one popped before is
//! scanned at once: its line is likely cached or fetched by the hardware
//! prefetchers, and the ring would only cost instructions there. The ring
//! is part of the marker's grey set: a draining loop that returns before
//! the grey set is empty (`drain_budget`) first puts the ring's entries
//! back on the stack (`park_ahead`), so `stack` alone is the grey set
//! whenever a caller looks at it or takes it, and the next drain of the
//! same marker takes them back (`unpark`); the loops that run to
//! exhaustion (`drain_local`, `drain_shared_paced`) end with the ring
//! empty. The order of scanning changes, which marking does not depend on.
//!
//! Figures (`cargo bench -p usurp-gc --bench mark -- tree 20 [post]`: 2M
//! two-pointer nodes, thread CPU of the stepped mark's drain per object,
//! median of 7, off and on interleaved; a 2-core machine shared with other
//! builds, load 4-7): a tree allocated parent first (a right child far
//! from its parent) 26-29 ns off, 16-18 ns on; allocated children first,
//! as binary-trees allocates (the depth-first mark walks memory downwards,
//! which the hardware prefetchers already follow) 8.0-8.4 ns off, 8.7-8.9
//! ns on. On binary-trees itself (`benches/binarytrees.rs 20`, per-thread
//! CPU, 3 pairs) the look-ahead cost ~20% more CPU on the collector thread
//! and ~25% on the workers (assists): once the ring is full, every pop is
//! compared with a far object that went into the ring, the near test
//! fails for the rest of the walk, and objects that were cached get
//! delayed behind the ring. Hence off by default
//! ([`set_mark_lookahead_for_tests`] turns it on, for measurements) until
//! a policy wins on both layouts. Instructions per object (callgrind,
//! `tree 18`): 108 without the ring, 123 with it (a first version: every
//! object through the ring). For comparison, a plain
//! (non-atomic) mark-bit store instead of the locked RMW saves 1.4-1.5 ns
//! of 8 on the children-first tree (18%), 2-2.5 of 17 with the look-ahead
//! on the parent-first one: what a lock-free marking scheme could gain.
//!
//! **Value slots** (issue 14) hold one-word tagged values: `decode_value`
//! (shared with the verifier) applies the heap's [`ValueEncoding`]: an immediate or a null pointer is
//! skipped, a pointer-tagged word must decode to an object start, else it is
//! a *bad value*: counted per slot, the first one named in the stats, never
//! followed. The marker copies the encoding's masks and tags into locals
//! once per object, so a value slot costs an AND and a compare (up to four
//! for an immediate) more than a pointer slot: 1.04-1.10x per pair in
//! `benches/mark.rs`.
//!
//! **NaN-boxed conservative words.** Where the encoding puts pointer tags
//! above bit 2, a tagged pointer lies outside the heap range; the
//! conservative scan then decodes each word outside the heap that carries a
//! pointer tag and treats the decoded address as a conservative word, so a
//! NaN-boxed pointer held only in a register or a stack slot keeps its
//! object alive. (Low-bit tags need nothing: the word points inside the
//! object's header word.)
//!
//! **Parallelism.** Each marker has a private stack; a shared pool of chunks
//! (mutex + condvar) balances work. A marker with a long stack donates half of
//! it when others wait. Termination: the pool is empty and no marker is busy
//! (holds work it might donate). Markers that start late find nothing and
//! return, so any degree of concurrency of `World::run_parallel` is correct.

use crate::block::{KIND_LARGE_HEAD, KIND_LARGE_TAIL, KIND_SMALL};
use crate::descriptor::Descriptor;
use crate::encoding::ValueEncoding;
use crate::stats::BadSlot;
use crate::sizeclass::{slot_index, span_size_and_slot, split_span_class, CLASS_SIZES, SC_TYPED};
use crate::space::Space;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Where an object lives: block index and slot (0 for large objects), and
/// whether it is pointer-free (then it is never scanned, not even read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjLoc {
    pub block: usize,
    pub slot: usize,
    pub addr: usize,
    pub noscan: bool,
    /// Bytes the object occupies: its size class, or a large object's blocks.
    pub size: usize,
    /// 1 for a compact object in a typed block (its descriptor is the
    /// block's), 0 otherwise: the tag of its grey-stack entry.
    pub tag: usize,
}

/// The allocated object containing `a`, if any (interior pointers included).
#[inline]
pub fn find_containing(space: &Space, a: usize) -> Option<ObjLoc> {
    if !space.contains(a) {
        return None;
    }
    let b = space.block_index(a);
    let v = space.kind_raw(b);
    let (kind, sc) = (v as u8, (v >> 8) as usize & !SC_TYPED);
    match kind {
        KIND_SMALL => {
            let (c, noscan) = split_span_class(sc);
            let size = CLASS_SIZES[c];
            let start = space.block_start(b);
            let slot = slot_index(c, a - start);
            // (slot < MAX_SLOTS always; object-start bits past the block's
            // last slot are never set, so the tail of a block is rejected by
            // the bit test alone.)
            if !space.meta(b).is_live(slot, space.gen.load(Ordering::Acquire)) || space.kind_raw(b) != v {
                // (Kind read again: the block may have been freed and reused
                // for another class meanwhile, see `BlockMeta::is_live`.)
                return None;
            }
            Some(ObjLoc { block: b, slot, addr: start + slot * size, noscan, size, tag: (v >> 15) as usize })
        }
        KIND_LARGE_HEAD | KIND_LARGE_TAIL => {
            let head = if kind == KIND_LARGE_HEAD { b } else { space.meta(b).link.load(Ordering::Relaxed) as usize };
            if head >= space.nblocks {
                return None;
            }
            let (hk, noscan) = space.kind(head);
            if hk != KIND_LARGE_HEAD {
                return None;
            }
            let hm = space.meta(head);
            if !hm.is_live(0, space.gen.load(Ordering::Acquire)) || space.kind(head) != (hk, noscan) {
                return None;
            }
            let start = space.block_start(head);
            if a >= start + hm.large_bytes.load(Ordering::Relaxed) {
                return None;
            }
            let size = hm.link.load(Ordering::Relaxed) as usize * crate::block::BLOCK_SIZE;
            Some(ObjLoc { block: head, slot: 0, addr: start, noscan: noscan != 0, size, tag: 0 })
        }
        _ => None,
    }
}

/// The allocated object starting exactly at `a`, if any.
#[inline(always)]
pub fn find_exact(space: &Space, a: usize) -> Option<ObjLoc> {
    if !space.contains(a) || a % 8 != 0 {
        return None;
    }
    let b = space.block_index(a);
    let v = space.kind_raw(b);
    let (kind, sc) = (v as u8, (v >> 8) as usize & !SC_TYPED);
    match kind {
        KIND_SMALL => {
            let (c, noscan) = split_span_class(sc);
            let size = CLASS_SIZES[c];
            let off = a - space.block_start(b);
            let slot = slot_index(c, off);
            if slot * size != off
                || !space.meta(b).is_live(slot, space.gen.load(Ordering::Acquire))
                || space.kind_raw(b) != v
            {
                return None;
            }
            Some(ObjLoc { block: b, slot, addr: a, noscan, size, tag: (v >> 15) as usize })
        }
        KIND_LARGE_HEAD => {
            let m = space.meta(b);
            if a != space.block_start(b)
                || !m.is_live(0, space.gen.load(Ordering::Acquire))
                || space.kind_raw(b) != v
            {
                return None;
            }
            let size = m.link.load(Ordering::Relaxed) as usize * crate::block::BLOCK_SIZE;
            Some(ObjLoc { block: b, slot: 0, addr: a, noscan: sc != 0, size, tag: 0 })
        }
        _ => None,
    }
}

/// [`find_exact`] for a marker, while a mark is in progress (its precise
/// pointers: object fields, roots, scanner callbacks): the object starting
/// exactly at `a`, if its object-start bit is set.
///
/// Why the start bit alone suffices here, where `find_exact` needs
/// [`BlockMeta::is_live`](crate::block::BlockMeta::is_live) and a second
/// read of the block's kind: a mark begins only after sweep termination
/// (`HeapInner::collect` calls `finish_sweep`, which also waits for
/// sweepers in flight), and no sweep starts until the mark publishes its
/// generation at its end (`sweep_start`). So for the whole mark every
/// block is swept since the last mark: its object-start bits are exactly
/// its published objects (`is_live`'s swept case, whose answer is that
/// bit), and no block is freed, so no block changes layout under the
/// lookup (blocks are freed only by sweeps; a fresh block handed out
/// during the mark publishes its kind before any start bit, and a lookup
/// that read the old kind `KIND_FREE` fails anyway). Debug builds assert
/// the sweep state. (Conservative lookups keep the full rule: they also
/// run outside marks.)
#[inline(always)]
fn find_exact_marking(space: &Space, a: usize, gen: u64) -> Option<ObjLoc> {
    if !space.contains(a) {
        return None;
    }
    let b = space.block_index(a);
    // (The span class byte keeps its `SC_TYPED` bit: `span_size_and_slot`
    // answers for it, the noscan bit is bit 0 either way, and bit 7 is the
    // grey-stack tag.)
    let v = space.kind_raw(b);
    let (kind, sc) = (v as u8, (v >> 8) as usize);
    match kind {
        KIND_SMALL => {
            let off = a - space.block_start(b);
            let (size, slot) = span_size_and_slot(sc as u8, off);
            let noscan = sc & 1 != 0;
            // (An unaligned `a` fails here: every class size is a multiple
            // of 8.)
            if slot * size != off {
                return None;
            }
            let m = space.meta(b);
            debug_assert_eq!(m.swept.load(Ordering::Relaxed), 2 * gen, "a block not swept during a mark");
            if !m.is_allocated(slot) {
                return None;
            }
            Some(ObjLoc { block: b, slot, addr: a, noscan, size, tag: sc >> 7 })
        }
        KIND_LARGE_HEAD => {
            let m = space.meta(b);
            if a != space.block_start(b) {
                return None;
            }
            debug_assert_eq!(m.swept.load(Ordering::Relaxed), 2 * gen, "a block not swept during a mark");
            if !m.is_allocated(0) {
                return None;
            }
            let size = m.link.load(Ordering::Relaxed) as usize * crate::block::BLOCK_SIZE;
            Some(ObjLoc { block: b, slot: 0, addr: a, noscan: sc != 0, size, tag: 0 })
        }
        _ => None,
    }
}

/// One past the last byte of the object at `obj` per its descriptor (header
/// unless compact, payload words, and for an array its length word and
/// elements), which may lie before the end of its size-class slot.
///
/// # Safety
/// `obj` is a published object of `space` (its object-start bit is set,
/// outside a sweep, its block not freed meanwhile), so its header (or its
/// block's descriptor word) and length word are initialised.
#[inline]
pub(crate) unsafe fn object_end(space: &Space, obj: usize) -> usize {
    // SAFETY: the caller guarantees a published object.
    let (d, payload) = unsafe { space.object_layout(obj) };
    let words = if d.is_array() {
        // SAFETY: payload word 0 of an array is its length, written before
        // publication and read-only afterwards (issue 10 item 1).
        1 + unsafe { (payload as *const usize).read() } * d.elem_words()
    } else {
        d.size_words()
    };
    payload + words * 8
}

/// Whether the published object `obj` is an array whose exact end is `w`.
///
/// # Safety
/// As [`object_end`].
#[inline]
unsafe fn is_array_ending_at(space: &Space, obj: usize, w: usize) -> bool {
    // SAFETY: the caller guarantees a published object (header initialised).
    let (d, _) = unsafe { space.object_layout(obj) };
    // SAFETY: as above.
    d.is_array() && unsafe { object_end(space, obj) } == w
}

/// The object a value-slot word names under `enc`: `None` for an immediate
/// or a null pointer. The caller checks that it is an object start (a bad
/// value otherwise). Shared by marking and the verifier.
#[inline(always)]
pub(crate) fn decode_value(enc: &ValueEncoding, w: usize) -> Option<usize> {
    enc.decode(w)
}

/// The shared work pool.
pub struct WorkPool {
    inner: Mutex<PoolInner>,
    cv: Condvar,
    waiting: AtomicUsize,
}

struct PoolInner {
    chunks: Vec<Vec<usize>>,
    busy: usize,
}

impl WorkPool {
    pub fn new(initial: Vec<Vec<usize>>) -> WorkPool {
        WorkPool { inner: Mutex::new(PoolInner { chunks: initial, busy: 0 }), cv: Condvar::new(), waiting: AtomicUsize::new(0) }
    }
}

/// Per-cycle counters shared by the markers.
#[derive(Default)]
pub struct MarkCounters {
    pub bad_pointers: AtomicUsize,
    /// Value slots whose pointer-tagged word was not an object start.
    pub bad_values: AtomicUsize,
    /// The first bad slot published by a marker.
    pub first_bad: Mutex<Option<BadSlot>>,
    pub live_objects: AtomicUsize,
    /// Bytes of the objects marked (slot sizes; a large object's blocks).
    pub live_bytes: AtomicUsize,
}

/// One marking thread's state.
pub struct Marker<'a> {
    pub space: &'a Space,
    pub stack: Vec<usize>,
    pub counters: &'a MarkCounters,
    bad: usize,
    bad_values: usize,
    first_bad: Option<BadSlot>,
    /// The heap's value encoding (a copy: the marker's own).
    enc: ValueEncoding,
    live: usize,
    live_bytes: usize,
    /// `Space::gen` when this marker was made (the number of the last
    /// completed mark: constant while a mark is in progress).
    gen: u64,
    /// The mark buffer of the cycle in progress (`(gen + 1) % 2`).
    buf: usize,
    busy: bool,
    /// The only marker of this cycle: mark bits may be set without RMW.
    pub exclusive: bool,
    /// Grey objects popped off `stack` ahead of their scan, their first
    /// line prefetched (see the module docs): a ring of `ahead_len`
    /// entries from `ahead_head`. Private to this marker; empty whenever a
    /// draining method returns.
    ahead: [usize; AHEAD],
    ahead_head: usize,
    ahead_len: usize,
    /// The address last popped off `stack` (the look-ahead's [`NEAR`]
    /// test).
    last_popped: usize,
    /// The batch of mark bits (see the module docs): bits of the mark word
    /// `pend_word` this marker set for objects it counted and pushed, not
    /// stored yet; `pend_size` the slot size of that word's block. Stored
    /// (`store_pending`) when the next mark is in another word, at the end
    /// of every draining method, by `flush`, `live_bytes` and on drop.
    pend_word: Option<&'a AtomicU64>,
    pend_bits: u64,
    pend_size: usize,
    /// Look-ahead on (off: each object is scanned as it is popped; the
    /// test switch, read when the marker is made).
    lookahead: bool,
    /// How many entries on top of `stack` the last bounded drain parked
    /// there from the ring (a hint, see `unpark`).
    parked: usize,
}

/// How many grey objects the look-ahead ring holds (a power of two).
/// `benches/mark.rs -- tree 20` (2M objects, thread CPU per object): 4
/// gained little, 16 and 32 most; deeper no more.
pub(crate) const AHEAD: usize = 16;

/// An object popped less than this many bytes from the one popped before
/// skips the look-ahead ring: it is scanned at once (its line is likely
/// cached already, or fetched by the hardware's adjacent-line and stream
/// prefetchers), where the ring would only cost instructions and delay.
/// `benches/mark.rs -- tree 20 post` (binary-trees' layout: a parent right
/// after its subtrees, marked in descending address order): the ring for
/// every object cost 7-13% there, 4-8% with this test, and the
/// parent-first tree (a right child far from its parent) keeps the ring's
/// gain (128 bytes: 256 lost a third of it; comparing with the object
/// scanned last instead, or as well, lost all of it).
pub(crate) const NEAR: usize = 128;

/// Test-only switch: batched mark bits (see the module docs; on by
/// default). Off: one atomic RMW per newly marked object, as before.
static BATCH_MARKS: AtomicBool = AtomicBool::new(true);

/// Test-only: turn batched mark bits off (`false`) or on again (`true`,
/// the default). Process-wide; change it only between marks.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_batched_marks_for_tests(on: bool) {
    BATCH_MARKS.store(on, Ordering::SeqCst);
}

/// Test-only switch (negative control of the batch's count correction):
/// when false, `store_pending` does not take back the counts of objects
/// another thread marked meanwhile.
static UNCOUNT_DUPLICATES: AtomicBool = AtomicBool::new(true);

/// Test-only: stop (`false`) or restore (`true`, the default) the batch's
/// count correction. Process-wide. Breaks the live counts: negative
/// control only.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_uncount_duplicates_for_tests(on: bool) {
    UNCOUNT_DUPLICATES.store(on, Ordering::SeqCst);
}

/// Test-only switch: the mark loop's look-ahead and prefetch (see the
/// module docs; off by default: one object popped and scanned at a time).
/// For measurements and its tests.
static LOOKAHEAD: AtomicBool = AtomicBool::new(false);

/// Test-only switch (negative control of `Marker::park_ahead`): when
/// false, a bounded drain drops its look-ahead ring's entries instead of
/// putting them back on the stack, so grey objects are lost.
static PARK_AHEAD: AtomicBool = AtomicBool::new(true);

/// Test-only: turn the mark loop's look-ahead and prefetch on (`true`) or
/// off again (`false`, the default). Process-wide; read when a marker is
/// made.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_mark_lookahead_for_tests(on: bool) {
    LOOKAHEAD.store(on, Ordering::SeqCst);
}

/// Test-only: make bounded drains drop the look-ahead ring's entries
/// (`false`) instead of putting them back on the grey stack (`true`, the
/// default). Process-wide. Breaks marking: negative control only.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_park_ahead_for_tests(on: bool) {
    PARK_AHEAD.store(on, Ordering::SeqCst);
}

const DONATE_MIN: usize = 2;

impl<'a> Marker<'a> {
    pub fn new(space: &'a Space, counters: &'a MarkCounters) -> Marker<'a> {
        let mut m = Marker::new_small(space, counters);
        m.stack.reserve(1024);
        m
    }

    /// A marker whose grey stack starts empty (no allocation until it finds
    /// something): for one-off shading of a few words.
    pub fn new_small(space: &'a Space, counters: &'a MarkCounters) -> Marker<'a> {
        let gen = space.gen.load(Ordering::Acquire);
        let buf = ((gen + 1) % 2) as usize;
        Marker {
            space,
            stack: Vec::new(),
            counters,
            bad: 0,
            bad_values: 0,
            first_bad: None,
            enc: space.encoding,
            live: 0,
            live_bytes: 0,
            gen,
            buf,
            busy: false,
            exclusive: false,
            ahead: [0; AHEAD],
            ahead_head: 0,
            ahead_len: 0,
            last_popped: 0,
            lookahead: LOOKAHEAD.load(Ordering::Relaxed),
            parked: 0,
            pend_word: None,
            pend_bits: 0,
            pend_size: 0,
        }
    }

    /// Mark the object at `loc`; push it for scanning if newly marked and not
    /// in a pointer-free block. Its header is not read here (that would be a
    /// cache miss per object on the critical path).
    #[inline(always)]
    pub fn mark_loc(&mut self, loc: ObjLoc) {
        let m = self.space.meta(loc.block);
        let newly = if self.exclusive {
            m.try_mark_exclusive(self.buf, loc.slot)
        } else if BATCH_MARKS.load(Ordering::Relaxed) {
            self.mark_batched(m, loc)
        } else {
            m.try_mark(self.buf, loc.slot)
        };
        if newly {
            self.live += 1;
            self.live_bytes += loc.size;
            if !loc.noscan {
                // A compact object is pushed tagged (bit 0): `next` then
                // takes its descriptor from its block, and an untagged
                // entry's from its header, without a table read.
                self.stack.push(loc.addr | loc.tag);
            }
        }
    }

    /// Mark `loc` (in `m`) in this marker's batch of mark bits (see the
    /// module docs, "Batched mark bits"): true if neither the shared word
    /// nor the batch has its bit (the object is counted and pushed now; if
    /// another thread sets the bit before the batch is stored, the store
    /// finds it and takes the count back).
    #[inline(always)]
    fn mark_batched(&mut self, m: &'a crate::block::BlockMeta, loc: ObjLoc) -> bool {
        let (w, bit) = m.mark_word(self.buf, loc.slot);
        let shared = w.load(Ordering::Relaxed);
        if !self.pend_word.is_some_and(|p| std::ptr::eq(p, w)) {
            if shared & bit != 0 {
                return false;
            }
            self.store_pending();
            self.pend_word = Some(w);
            self.pend_size = loc.size;
            self.pend_bits = bit;
            return true;
        }
        if (self.pend_bits | shared) & bit != 0 {
            return false;
        }
        self.pend_bits |= bit;
        true
    }

    /// Store the batch of mark bits (one atomic OR). Bits some other
    /// thread set meanwhile (the OR's old value has them) are objects it
    /// marked and counted too: this marker takes its counts back, so each
    /// object is counted once (the OR orders the two stores: exactly one
    /// finds the other's bit). The object was pushed by both and may be
    /// scanned twice, which marks nothing twice (see the module docs).
    #[inline]
    fn store_pending(&mut self) {
        if self.pend_bits == 0 {
            return;
        }
        if let Some(w) = self.pend_word {
            let old = w.fetch_or(self.pend_bits, Ordering::AcqRel);
            let dup = old & self.pend_bits;
            if dup != 0 && UNCOUNT_DUPLICATES.load(Ordering::Relaxed) {
                let n = dup.count_ones() as usize;
                self.live -= n;
                self.live_bytes -= n * self.pend_size;
            }
        }
        self.pend_bits = 0;
    }

    /// Treat `w` as a conservative root. A word outside the heap that the
    /// heap's encoding decodes to a pointer (NaN-boxing) is treated as the
    /// decoded address (see the module docs).
    #[inline]
    pub fn mark_conservative(&mut self, w: usize) {
        if !self.space.contains(w) && !self.space.contains(w.wrapping_sub(1)) {
            if self.enc.decodes_conservatively() {
                if let Some(a) = decode_value(&self.enc, w) {
                    if self.space.contains(a) {
                        self.mark_conservative_addr(a);
                    }
                }
            }
            return;
        }
        self.mark_conservative_addr(w)
    }

    /// [`mark_conservative`](Marker::mark_conservative) for a word near the heap.
    #[inline]
    fn mark_conservative_addr(&mut self, w: usize) {
        if let Some(loc) = find_containing(self.space, w) {
            self.mark_loc(loc);
            if loc.addr != w {
                return;
            }
        }
        // w is an object start or points at no object: the exact end of the
        // preceding object (see the module docs)?
        // Only an array's (review of issue 10, defect 3): a fixed-size
        // object that fills its slot exactly (a 24-byte cons cell) would
        // otherwise be pinned by every root to its successor.
        if let Some(prev) = find_containing(self.space, w.wrapping_sub(1)) {
            // SAFETY: find_containing found prev's object-start bit set.
            if unsafe { is_array_ending_at(self.space, prev.addr, w) } {
                self.mark_loc(prev);
            }
        }
    }

    /// Scan `[lo, hi)` word by word as conservative roots; returns words scanned.
    pub fn scan_range(&mut self, lo: usize, hi: usize) -> usize {
        let lo = (lo + 7) & !7;
        let mut n = 0;
        let mut p = lo;
        while p + 8 <= hi {
            // SAFETY: the World guarantees the range is readable; volatile so
            // the compiler does not assume anything about racing stack memory.
            let w = unsafe { (p as *const usize).read_volatile() };
            self.mark_conservative(w);
            p += 8;
            n += 1;
        }
        n
    }

    /// Treat `v` as a precise root (null or an object start).
    #[inline(always)]
    pub fn mark_precise(&mut self, v: usize) {
        if v == 0 {
            return;
        }
        match find_exact_marking(self.space, v, self.gen) {
            Some(loc) => self.mark_loc(loc),
            None => self.note_bad(BadSlot { object: 0, descriptor: "<root>", slot: 0, word: v, value_slot: false }),
        }
    }

    /// Mark what the published object `obj` references, not `obj` itself
    /// (Go's `scanobject` on a finalizable object's specials record: its
    /// referents stay alive while its finalizer may still run, see
    /// `HeapInner::scan_finalizer_records`). Newly marked children are
    /// pushed for scanning as usual.
    ///
    /// # Safety
    /// `obj` must be a published object of this marker's heap that cannot
    /// be freed during the call (its header is read).
    pub unsafe fn scan_children(&mut self, obj: usize) {
        // SAFETY: the caller guarantees a published, allocated object: its
        // header (or its typed block's word) holds its descriptor.
        let (d, payload) = unsafe { self.space.object_layout(obj) };
        self.scan_object(payload, d);
    }

    /// Count a bad slot and remember the first one.
    #[cold]
    #[inline(never)]
    fn note_bad(&mut self, b: BadSlot) {
        if b.value_slot {
            self.bad_values += 1;
        } else {
            self.bad += 1;
        }
        if self.first_bad.is_none() {
            self.first_bad = Some(b);
        }
    }

    /// Scan one object's pointer fields, given its payload address and
    /// descriptor (`descriptor::object_layout`: after its header, or at the
    /// object's first byte for a compact object; a bad slot names the
    /// object as `payload - payload_offset`).
    #[inline(always)]
    fn scan_object(&mut self, payload: usize, d: &'static Descriptor) {
        // Fast path (issue 9): a fixed object with pointer slots only, all
        // in payload words 0..64 (a cons cell, a tree node, most guest
        // records): its pointer bits sit in the word after the
        // descriptor's magic; no shape tests, no bitmap slices, no encoding
        // copy.
        let small = d.small_pointer_bits();
        if small != 0 {
            let mut bits = small;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.visit_pointer(payload, d, b);
            }
            return;
        }
        self.scan_object_general(payload, d);
    }

    /// [`scan_object`](Marker::scan_object) for every other shape: arrays,
    /// objects with value slots or with pointer slots past word 63.
    #[inline(never)]
    fn scan_object_general(&mut self, payload: usize, d: &'static Descriptor) {
        if d.is_pointer_free() {
            return;
        }
        // SAFETY: payload word 0 of an array is its length.
        let len = if d.is_array() { unsafe { (payload as *const usize).read() } } else { 0 };
        // Explicit loops rather than a closure per slot (a closure called
        // from several sites was not inlined: a call per slot), with the
        // slot kind a const parameter of `visit`. The encoding is copied to
        // a local once per object: its masks and tags stay in registers.
        let enc = self.enc;
        if d.is_array() {
            let (pb, vb) = d.elem_bits();
            let ew = d.elem_words();
            for e in 0..len {
                let base = 1 + e * ew;
                let mut bits = pb;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.visit::<false>(payload, d, base + b, &enc);
                }
                let mut bits = vb;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.visit::<true>(payload, d, base + b, &enc);
                }
            }
        } else {
            // Construction guarantees every bit names a payload word.
            for (wi, &w) in d.pointer_bits().iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.visit::<false>(payload, d, wi * 64 + b, &enc);
                }
            }
            for (wi, &w) in d.value_bits().iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.visit::<true>(payload, d, wi * 64 + b, &enc);
                }
            }
        }
    }

    /// Visit pointer slot `i` of `obj` (the fast path's
    /// [`visit`](Marker::visit) without an encoding).
    #[inline(always)]
    fn visit_pointer(&mut self, payload: usize, d: &'static Descriptor, i: usize) {
        // SAFETY: i is a payload word of the published object obj per its
        // descriptor; read atomically (racing stores are no data race).
        let v = unsafe { (*((payload as *const usize).add(i) as *const AtomicUsize)).load(Ordering::Relaxed) };
        if v == 0 {
            return;
        }
        match find_exact_marking(self.space, v, self.gen) {
            Some(loc) => self.mark_loc(loc),
            None => self.note_bad(BadSlot { object: payload - d.payload_offset(), descriptor: d.name(), slot: i, word: v, value_slot: false }),
        }
    }

    /// Visit payload word `i` of `obj` (descriptor `d`): a pointer slot
    /// (`VALUE = false`: null or an object start) or a value slot (decoded
    /// with `enc` by [`decode_value`]); a word that is not an object start is
    /// counted as bad and not followed.
    #[inline(always)]
    fn visit<const VALUE: bool>(&mut self, payload: usize, d: &'static Descriptor, i: usize, enc: &ValueEncoding) {
        // SAFETY: i is a payload word of the published object obj per its
        // descriptor; read atomically (racing stores are no data race).
        let v = unsafe { (*((payload as *const usize).add(i) as *const AtomicUsize)).load(Ordering::Relaxed) };
        let a = if VALUE {
            match decode_value(enc, v) {
                Some(a) => a,
                None => return,
            }
        } else if v == 0 {
            return;
        } else {
            v
        };
        match find_exact_marking(self.space, a, self.gen) {
            Some(loc) => self.mark_loc(loc),
            None => self.note_bad(BadSlot { object: payload - d.payload_offset(), descriptor: d.name(), slot: i, word: v, value_slot: VALUE }),
        }
    }

    /// The payload address and descriptor of a popped grey entry (its
    /// block's descriptor word for a compact object, else its header:
    /// `descriptor::object_layout`).
    ///
    /// Entries are tagged (bit 0, objects being 8-aligned) when they are
    /// compact objects (`mark_loc` and `refcheck::shade` tag them from the
    /// block's `SC_TYPED` flag, which the lookup read anyway), so a
    /// headered object costs a bit test more than before typed blocks,
    /// and a compact one a read of its block's descriptor word instead of
    /// its header.
    #[inline(always)]
    fn entry_layout(&self, e: usize) -> (usize, &'static Descriptor) {
        if e & 1 != 0 {
            let o = e - 1;
            let bd = self.space.block_desc_at(o);
            debug_assert!(bd != 0, "a tagged entry outside a typed block");
            // SAFETY: o is a marked, published compact object (no block is
            // freed during a mark): its block's word is its descriptor.
            let (d, payload) = unsafe { crate::descriptor::compact_layout(o, bd) };
            (payload, d)
        } else {
            debug_assert_eq!(self.space.block_desc(self.space.block_index(e)), 0, "an untagged compact object");
            // SAFETY: e is a marked, published headered object: its header
            // holds its descriptor.
            let (d, payload) = unsafe { crate::descriptor::headered_layout(e) };
            (payload, d)
        }
    }

    /// The next grey entry to scan (tagged if compact: `entry_layout`
    /// decodes it). An object popped within
    /// [`NEAR`] bytes of the one popped before is scanned at once; any other
    /// enters the look-ahead ring (prefetched) and the ring's oldest entry
    /// is scanned once the ring is full (see the module docs).
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        let o = loop {
            if let Some(o) = self.stack.pop() {
                if !self.lookahead {
                    break o;
                }
                let near = o.wrapping_sub(self.last_popped).wrapping_add(NEAR) < 2 * NEAR;
                self.last_popped = o;
                if near {
                    break o;
                }
                crate::arch::prefetch_read(o & !1);
                if self.ahead_len == AHEAD {
                    // Full: the new entry takes the oldest one's slot,
                    // becoming the newest.
                    let h = self.ahead_head % AHEAD;
                    self.ahead_head = (h + 1) % AHEAD;
                    break std::mem::replace(&mut self.ahead[h], o);
                }
                self.ahead[(self.ahead_head + self.ahead_len) % AHEAD] = o;
                self.ahead_len += 1;
                continue;
            }
            // The stack is empty: the ring's entries, oldest first.
            if self.ahead_len == 0 {
                return None;
            }
            let h = self.ahead_head % AHEAD;
            self.ahead_head = (h + 1) % AHEAD;
            self.ahead_len -= 1;
            break self.ahead[h];
        };
        Some(o)
    }

    /// Put the look-ahead ring's entries back on the stack (a drain that
    /// stops before the grey set is empty), so that `stack` is the whole
    /// grey set again: newest first, so that the oldest is on top, and
    /// remembered (`parked`) so that the next drain of this marker takes
    /// them back into the ring as they were (`unpark`).
    fn park_ahead(&mut self) {
        let park = PARK_AHEAD.load(Ordering::Relaxed);
        self.parked = if park { self.ahead_len } else { 0 };
        while self.ahead_len > 0 {
            self.ahead_len -= 1;
            if park {
                self.stack.push(self.ahead[(self.ahead_head + self.ahead_len) % AHEAD]);
            }
        }
    }

    /// Take the entries the last bounded drain parked back into the ring
    /// (oldest first), without counting them as pops: the object popped
    /// next is compared with the one popped last before the park, as if
    /// the drain had not stopped. (Without this, each slice of a
    /// concurrent mark began by scanning a parked entry, far from where
    /// the depth-first walk had been: on a tree laid out as binary-trees
    /// lays it out, marking in slices of 256 objects cost 1.6x.) The hint
    /// may be stale (the caller moved entries since, e.g. donated some):
    /// whatever the top entries are, they are grey objects, and the ring
    /// holds grey objects.
    #[inline]
    fn unpark(&mut self) {
        while self.parked > 0 && self.ahead_len < AHEAD {
            self.parked -= 1;
            let Some(o) = self.stack.pop() else { break };
            crate::arch::prefetch_read(o & !1);
            self.ahead[(self.ahead_head + self.ahead_len) % AHEAD] = o;
            self.ahead_len += 1;
        }
        self.parked = 0;
    }

    /// Scan until the local stack is empty (no sharing).
    pub fn drain_local(&mut self) {
        self.unpark();
        while let Some(e) = self.next() {
            let (p, d) = self.entry_layout(e);
            self.scan_object(p, d);
        }
        debug_assert_eq!(self.ahead_len, 0);
        self.store_pending();
    }

    /// Scan at most `budget` objects; returns whether the local stack is
    /// empty (the termination stop's bounded drain, and the step API).
    pub fn drain_budget(&mut self, budget: usize) -> bool {
        self.unpark();
        for _ in 0..budget {
            match self.next() {
                Some(e) => {
                    let (p, d) = self.entry_layout(e);
                    self.scan_object(p, d)
                }
                None => {
                    self.store_pending();
                    return true;
                }
            }
        }
        self.park_ahead();
        self.store_pending();
        self.stack.is_empty()
    }

    /// Take part in the parallel closure over `pool` until it terminates.
    pub fn drain_shared(&mut self, pool: &WorkPool) {
        self.drain_shared_paced(pool, usize::MAX, |_| {})
    }

    /// [`Marker::drain_shared`], calling `tick` with this marker after
    /// every `slice` objects it scans (the concurrent mark's hook: publish
    /// progress for the pacer, donate to the heap's grey list when an
    /// assist asked for work; see `pacer.rs`). `tick` may move entries off
    /// the stack (they must stay reachable by some marker or the grey list).
    pub fn drain_shared_paced(&mut self, pool: &WorkPool, slice: usize, mut tick: impl FnMut(&mut Marker<'a>)) {
        let mut scanned = 0usize;
        self.unpark();
        loop {
            while let Some(e) = self.next() {
                let (p, d) = self.entry_layout(e);
                self.scan_object(p, d);
                scanned += 1;
                if scanned >= slice {
                    scanned = 0;
                    tick(self);
                }
                if self.stack.len() >= DONATE_MIN && pool.waiting.load(Ordering::Relaxed) > 0 {
                    // Donate the bottom half: the oldest entries are the roots
                    // of the largest unexplored subgraphs (a tree's DFS stack
                    // is only as deep as the tree).
                    let top = self.stack.split_off(self.stack.len() / 2);
                    let bottom = std::mem::replace(&mut self.stack, top);
                    pool.inner.lock().unwrap().chunks.push(bottom);
                    pool.cv.notify_one();
                }
            }
            // Out of local work: store the batch of mark bits, then get a
            // chunk, or finish.
            self.store_pending();
            let mut g = pool.inner.lock().unwrap();
            // A marker is busy from taking a chunk until its stack empties.
            if std::mem::take(&mut self.busy) {
                g.busy -= 1;
            }
            loop {
                if let Some(c) = g.chunks.pop() {
                    g.busy += 1;
                    self.busy = true;
                    self.stack = c;
                    break;
                }
                if g.busy == 0 {
                    pool.cv.notify_all();
                    self.flush();
                    return;
                }
                pool.waiting.fetch_add(1, Ordering::Relaxed);
                g = pool.cv.wait(g).unwrap();
                pool.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Bytes of the objects this marker marked since its last `flush`.
    /// (Stores the batch of mark bits first: the figure is then exact.)
    pub fn live_bytes(&mut self) -> usize {
        self.store_pending();
        self.live_bytes
    }

    /// Publish this marker's counters (after storing its batch of mark
    /// bits, whose counts are then exact).
    pub fn flush(&mut self) {
        self.store_pending();
        self.counters.bad_pointers.fetch_add(std::mem::take(&mut self.bad), Ordering::Relaxed);
        self.counters.bad_values.fetch_add(std::mem::take(&mut self.bad_values), Ordering::Relaxed);
        if let Some(b) = self.first_bad.take() {
            let mut f = self.counters.first_bad.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some(b);
            }
        }
        self.counters.live_objects.fetch_add(std::mem::take(&mut self.live), Ordering::Relaxed);
        self.counters.live_bytes.fetch_add(std::mem::take(&mut self.live_bytes), Ordering::Relaxed);
    }
}

impl Drop for Marker<'_> {
    /// The batch of mark bits must reach the shared word: a marker dropped
    /// without `flush` (its counts unpublished) still leaves its objects
    /// marked.
    fn drop(&mut self) {
        self.store_pending();
    }
}
