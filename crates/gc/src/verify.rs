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

use crate::block::{KIND_LARGE_HEAD, KIND_SMALL};
use crate::descriptor::Descriptor;
use crate::mark::{decode_value, find_exact};
use crate::refcheck::is_quarantined;
use crate::sizeclass::{slots_of, split_span_class, CLASS_SIZES};
use crate::space::Space;
use std::sync::atomic::Ordering;

/// Readable address ranges of this process, from /proc/self/maps.
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
    v
}

const MAX_REPORTS: usize = 10;

/// Verify the heap after a cycle (world stopped); returns the number of failures.
pub fn verify(space: &Space) -> usize {
    let readable = readable_ranges();
    let desc_ok = |h: usize| {
        let n = std::mem::size_of::<Descriptor>();
        h % 8 == 0
            && !space.contains(h)
            && readable.iter().any(|&(a, b)| a <= h && h + n <= b)
            // SAFETY: h is aligned and [h, h+n) lies in a readable mapping.
            && unsafe { &*(h as *const Descriptor) }.magic_ok()
    };
    let gen = space.gen.load(std::sync::atomic::Ordering::Acquire);
    let mut failures = 0;
    let mut report = |msg: String| {
        if failures < MAX_REPORTS {
            eprintln!("usurp gcverify: {msg}");
        }
        failures += 1;
    };
    for b in 0..space.high_water() {
        let m = space.meta(b);
        let (kind, sc) = space.kind(b);
        let (objs, cap): (Vec<usize>, usize) = match kind {
            KIND_SMALL => {
                let (c, _) = split_span_class(sc);
                let start = space.block_start(b);
                let slots = slots_of(c);
                let v = (0..slots).filter(|&i| m.is_live(i, gen)).map(|i| start + i * CLASS_SIZES[c]).collect();
                (v, CLASS_SIZES[c])
            }
            KIND_LARGE_HEAD if m.is_live(0, gen) => {
                (vec![space.block_start(b)], m.large_bytes.load(Ordering::Relaxed))
            }
            _ => continue,
        };
        // A typed block (compact objects): its descriptor word, checked once.
        let typed = space.block_desc(b);
        if typed != 0 {
            if kind != KIND_SMALL || !desc_ok(typed) {
                report(format!("block {b}: descriptor word {typed:#x} is not a descriptor of a small block"));
                continue;
            }
            // SAFETY: desc_ok checked the descriptor is readable and valid.
            if !unsafe { &*(typed as *const Descriptor) }.is_compact() {
                report(format!("block {b}: typed with a descriptor that is not compact"));
                continue;
            }
        }
        for obj in objs {
            let h = if typed != 0 {
                typed
            } else {
                // SAFETY: obj is an allocated object's start inside the heap.
                unsafe { (obj as *const usize).read() }
            };
            if typed == 0 && h == &crate::refcheck::QUARANTINED as *const Descriptor as usize {
                continue; // checkrefs: a freed object a stray word marked
            }
            if !desc_ok(h) {
                report(format!("object {obj:#x}: header {h:#x} is not a descriptor"));
                continue;
            }
            // SAFETY: desc_ok checked the descriptor is readable and valid;
            // `object_layout` gives the payload (a compact object's at obj).
            let (d, payload) = unsafe { crate::descriptor::object_layout(obj, typed) };
            let p = payload as *const usize;
            if typed == 0 && d.is_compact() {
                report(format!("object {obj:#x} ({}): a compact descriptor in a header", d.name()));
                continue;
            }
            if (sc & 1 != 0) != d.is_pointer_free() {
                report(format!("object {obj:#x} ({}): pointer-free flag disagrees with its block", d.name()));
            }
            // SAFETY: arrays keep their length in payload word 0.
            let len = if d.is_array() { unsafe { p.read() } } else { 0 };
            match d.object_bytes(len) {
                Some(n) if n <= cap => {}
                _ => {
                    report(format!("object {obj:#x} ({}): size for len {len} exceeds its slot of {cap} bytes", d.name()));
                    continue;
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
                let decoded = if a == v { String::new() } else { format!(" (decoded {a:#x})") };
                match find_exact(space, a) {
                    // SAFETY: find_exact found a published object, world stopped.
                    Some(l) if unsafe { is_quarantined(l.addr) } => report(format!(
                        "object {obj:#x} ({}) {what} {i}: {v:#x}{decoded} was freed (quarantined by checkrefs)",
                        d.name()
                    )),
                    Some(_) => {}
                    None => report(format!(
                        "object {obj:#x} ({}) {what} {i}: {v:#x}{decoded} is not an object (freed, or never one)",
                        d.name()
                    )),
                }
            });
        }
    }
    failures
}
