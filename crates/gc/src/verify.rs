//! The heap verifier (`USURP_DEBUG=gcverify=1`), run in a stop of its own
//! right after a cycle's pause (so that its cost is not a GC pause figure).
//!
//! It checks the heap after the cycle: for every live object (object-start
//! bit set, and in a block the lazy sweep has not reached yet also marked by
//! the last mark: `BlockMeta::is_live`), its header (for a typed block of
//! compact objects: the block's descriptor word, which must name a compact
//! descriptor) must be a valid descriptor (inside a readable mapping
//! outside the heap, with the right magic, describing an object that fits in
//! its slot), every pointer field must be null or the start of a live
//! object that is not quarantined, and every value slot must hold an
//! immediate or a pointer-tagged word that decodes (with the heap's
//! encoding, `mark::decode_value`) to null or such an object ("a bad value"). The live objects are exactly the ones
//! marked (plus objects allocated since), so this is the mark-time check "a
//! marked object's children are marked" seen after the fact: an object the
//! mark lost is dead (or already freed), and its referrer points at it (or,
//! if its slot was already swept and reused by an allocation between the two
//! stops, at a new object: a lost object can then go unseen; checkrefs'
//! quarantine prevents that reuse). Lazy sweepers may run meanwhile (they
//! are not stopped): they only rewrite dead objects and bits of dead slots. A freed
//! object quarantined by checkrefs is skipped; a published object pointing
//! at one is a failure. Failures are printed (the first few) and counted in
//! `GcStats::verify_failures`.
//!
//! It runs on every thread the World offers (`World::run_parallel`, the
//! stopped workers), each claiming chunks of blocks from one atomic
//! cursor, so its stop shrinks with the workers (in `usurp-stress` it was
//! a fifth to two fifths of the wall time, and a sleeper whose deadline
//! fell in it woke late by the rest of it). A header is checked against
//! the readable mappings once per verifier thread (a small memo of
//! descriptors already found valid), and the mappings are searched by
//! bisection: before, every object's header was compared with every
//! mapping (one per task stack).

use crate::block::{KIND_LARGE_HEAD, KIND_SMALL};
use crate::descriptor::Descriptor;
use crate::mark::{decode_value, find_exact};
use crate::refcheck::is_quarantined;
use crate::sizeclass::{slots_of, split_span_class, CLASS_SIZES};
use crate::space::Space;
use crate::world::World;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Readable address ranges of this process, from /proc/self/maps, sorted
/// by start (the kernel lists them so; sorted again to be sure).
fn readable_ranges() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut v = Vec::new();
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else { continue };
        if !perms.starts_with('r') {
            continue;
        }
        if let Some((a, b)) = range.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                v.push((a, b));
            }
        }
    }
    v.sort_unstable();
    v
}

const MAX_REPORTS: usize = 10;
/// Blocks claimed at a time by one verifier thread.
const CHUNK: usize = 16;
/// Descriptors remembered as valid by one verifier thread.
const MEMO: usize = 16;

/// What the verifier threads share.
struct Shared<'a> {
    /// The heap (world stopped; lazy sweepers may run, see the module docs).
    space: &'a Space,
    /// Readable mappings, sorted by start: written once before the threads
    /// start, read-only after.
    readable: Vec<(usize, usize)>,
    /// The space's mark generation, read once before the threads start.
    gen: u64,
    /// Failures found: incremented (Relaxed) by any verifier thread; the
    /// first `MAX_REPORTS` increments print their message. Read after
    /// `run_parallel` returned (every job done).
    failures: AtomicUsize,
    /// The next block to claim: each verifier thread takes `CHUNK` blocks at
    /// a time with a Relaxed fetch_add (blocks are disjoint, so the claim
    /// publishes nothing).
    cursor: AtomicUsize,
}

impl Shared<'_> {
    fn report(&self, msg: impl FnOnce() -> String) {
        if self.failures.fetch_add(1, Ordering::Relaxed) < MAX_REPORTS {
            eprintln!("usurp gcverify: {}", msg());
        }
    }

    /// Whether `[h, h + n)` lies in one readable mapping.
    fn readable(&self, h: usize, n: usize) -> bool {
        let i = self.readable.partition_point(|&(a, _)| a <= h);
        i > 0 && {
            let (_, b) = self.readable[i - 1];
            h.checked_add(n).is_some_and(|e| e <= b)
        }
    }
}

/// One verifier thread's state: the descriptors it found valid.
struct Local {
    memo: [usize; MEMO],
    next: usize,
}

impl Local {
    /// Whether `h` is a valid descriptor address: aligned, outside the
    /// heap, inside a readable mapping, with the right magic.
    fn desc_ok(&mut self, sh: &Shared, h: usize) -> bool {
        if h != 0 && self.memo.contains(&h) {
            return true;
        }
        let n = std::mem::size_of::<Descriptor>();
        let ok = h % 8 == 0
            && h != 0
            && !sh.space.contains(h)
            && sh.readable(h, n)
            // SAFETY: h is aligned and [h, h+n) lies in a readable mapping.
            && unsafe { &*(h as *const Descriptor) }.magic_ok();
        if ok {
            self.memo[self.next % MEMO] = h;
            self.next += 1;
        }
        ok
    }
}

/// Verify the heap after a cycle (world stopped), on `world`'s threads;
/// returns the number of failures.
pub fn verify(space: &Space, world: &dyn World) -> usize {
    let sh = Shared {
        space,
        readable: readable_ranges(),
        gen: space.gen.load(Ordering::Acquire),
        failures: AtomicUsize::new(0),
        cursor: AtomicUsize::new(0),
    };
    let high = space.high_water();
    let threads = world.parallelism().clamp(1, high.div_ceil(CHUNK).max(1));
    world.run_parallel(threads, &|_| {
        crate::heap::never_unwind("a heap verifier job", || {
            let mut local = Local { memo: [0; MEMO], next: 0 };
            loop {
                let start = sh.cursor.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= high {
                    break;
                }
                for b in start..(start + CHUNK).min(high) {
                    verify_block(&sh, &mut local, b);
                }
            }
        })
    });
    sh.failures.load(Ordering::Relaxed)
}

/// Checks the live objects of block `b` (see the module docs).
fn verify_block(sh: &Shared, local: &mut Local, b: usize) {
    let space = sh.space;
    let m = space.meta(b);
    let (kind, sc) = space.kind(b);
    let (start, slots, cap) = match kind {
        KIND_SMALL => {
            let (c, _) = split_span_class(sc);
            (space.block_start(b), slots_of(c), CLASS_SIZES[c])
        }
        KIND_LARGE_HEAD if m.is_live(0, sh.gen) => (space.block_start(b), 1, m.large_bytes.load(Ordering::Relaxed)),
        _ => return,
    };
    // A typed block (compact objects): its descriptor word, checked once.
    let typed = space.block_desc(b);
    if typed != 0 {
        if kind != KIND_SMALL || !local.desc_ok(sh, typed) {
            sh.report(|| format!("block {b}: descriptor word {typed:#x} is not a descriptor of a small block"));
            return;
        }
        // SAFETY: desc_ok checked the descriptor is readable and valid.
        if !unsafe { &*(typed as *const Descriptor) }.is_compact() {
            sh.report(|| format!("block {b}: typed with a descriptor that is not compact"));
            return;
        }
    }
    for i in (0..slots).filter(|&i| m.is_live(i, sh.gen)) {
        verify_object(sh, local, start + i * cap, cap, sc, typed);
    }
}

/// Checks one live object at `obj` in a slot of `cap` bytes (`typed`: its
/// block's descriptor word, 0 for headered objects).
fn verify_object(sh: &Shared, local: &mut Local, obj: usize, cap: usize, sc: usize, typed: usize) {
    let space = sh.space;
    let h = if typed != 0 {
        typed
    } else {
        // SAFETY: obj is an allocated object's start inside the heap.
        unsafe { (obj as *const usize).read() }
    };
    if typed == 0 && h == &crate::refcheck::QUARANTINED as *const Descriptor as usize {
        return; // checkrefs: a freed object a stray word marked
    }
    if !local.desc_ok(sh, h) {
        sh.report(|| format!("object {obj:#x}: header {h:#x} is not a descriptor"));
        return;
    }
    // SAFETY: desc_ok checked the descriptor is readable and valid;
    // `object_layout` gives the payload (a compact object's at obj).
    let (d, payload) = unsafe { crate::descriptor::object_layout(obj, typed) };
    let p = payload as *const usize;
    if typed == 0 && d.is_compact() {
        sh.report(|| format!("object {obj:#x} ({}): a compact descriptor in a header", d.name()));
        return;
    }
    if (sc & 1 != 0) != d.is_pointer_free() {
        sh.report(|| format!("object {obj:#x} ({}): pointer-free flag disagrees with its block", d.name()));
    }
    // SAFETY: arrays keep their length in payload word 0.
    let len = if d.is_array() { unsafe { p.read() } } else { 0 };
    match d.object_bytes(len) {
        Some(n) if n <= cap => {}
        _ => {
            sh.report(|| format!("object {obj:#x} ({}): size for len {len} exceeds its slot of {cap} bytes", d.name()));
            return;
        }
    }
    let enc = space.encoding;
    d.for_each_slot(len, |i, value_slot| {
        // SAFETY: i is a payload word within the object's verified size.
        let v = unsafe { p.add(i).read() };
        let (a, what) = if value_slot {
            match decode_value(&enc, v) {
                Some(a) => (a, "value"),
                None => return, // an immediate or null
            }
        } else if v == 0 {
            return;
        } else {
            (v, "word")
        };
        let decoded = || if a == v { String::new() } else { format!(" (decoded {a:#x})") };
        match find_exact(space, a) {
            // SAFETY: find_exact found a published object, world stopped.
            Some(l) if unsafe { is_quarantined(l.addr) } => sh.report(|| {
                format!(
                    "object {obj:#x} ({}) {what} {i}: {v:#x}{} was freed (quarantined by checkrefs)",
                    d.name(),
                    decoded()
                )
            }),
            Some(_) => {}
            None => sh.report(|| {
                format!(
                    "object {obj:#x} ({}) {what} {i}: {v:#x}{} is not an object (freed, or never one)",
                    d.name(),
                    decoded()
                )
            }),
        }
    });
}
