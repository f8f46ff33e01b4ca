//! Per-function facts about the `preemptible!` section (issue 11,
//! "preempted loops migrate"): where each preemptible function starts and
//! whether its machine code touches thread-local storage.
//!
//! **Recording.** [`crate::preemptible!`] emits, inside each non-generic
//! function it places in the `usurp_preemptible` section, a `#[used]` static
//! [`FnStart`] holding the function's address in a second linker section,
//! `usurp_preemptible_fns` (data, a C identifier: the linker defines
//! `__start_`/`__stop_` symbols for it and collects the records of every
//! crate of the program, the user's, its tests', this workspace's). This
//! crate places one null record there itself, so that the section and its
//! bounds exist in every program; null records are skipped.
//!
//! **The table** ([`fn_table`], built once, on first use, never from a signal
//! handler): the recorded starts inside the section, sorted and deduplicated;
//! function `i` covers `[start_i, start_{i+1})`, the last one up to the
//! section's end. Each range is decoded once by the arch crate's
//! `code_touches_tls` (x86-64: FS/GS-relative operands, `rdfsbase`, the
//! general-dynamic sequence; aarch64: `mrs tpidr_el0`). The ranges tile the
//! section from the first recorded start to its end, so bytes the macro did
//! not record (a generic function, padding) count for the function whose
//! range holds them: a TLS access anywhere in the section is seen by the
//! range that contains it. Inlined callees are part of their caller's bytes.
//! `[section start, first recorded start)` (the section's anchor, maybe
//! unrecorded code) is *unknown*, and so is everything when the section is
//! not part of the main executable (the local-dynamic TLS model of a shared
//! object leaves no trace in its code on x86-64): callers pin there.
//!
//! **Lookups** ([`FnTable::lookup`]) are a binary search over the immutable
//! table: no lock, no allocation, no panic; the table is published through
//! a `OnceLock` (one acquire load once built), so the scheduler's park path
//! may call it. Nothing here is written after the build.

use std::sync::OnceLock;

/// The linker section where [`crate::preemptible!`] records the start of
/// each function it places.
pub const PREEMPTIBLE_FN_SECTION: &str = "usurp_preemptible_fns";

/// One record of the `usurp_preemptible_fns` section: the address of a
/// preemptible function (macro plumbing, not an API).
#[doc(hidden)]
#[repr(transparent)]
pub struct FnStart(pub *const ());

// SAFETY: a record is an immutable code address, never dereferenced through
// the record; sharing it between threads shares a number.
unsafe impl Sync for FnStart {}

/// The null record that makes the section (and its `__start_`/`__stop_`
/// symbols) exist in every program; `recorded_starts` takes its address,
/// which keeps it alive under --gc-sections.
#[used]
#[link_section = "usurp_preemptible_fns"]
static FN_SECTION_ANCHOR: FnStart = FnStart(core::ptr::null());

extern "C" {
    static __start_usurp_preemptible_fns: FnStart;
    static __stop_usurp_preemptible_fns: FnStart;
}

/// Every record of the section (null ones included), as addresses.
fn recorded_starts() -> Vec<usize> {
    // SAFETY: only the addresses of linker-defined symbols are taken.
    #[allow(unused_unsafe)]
    let (s, e) = unsafe {
        (
            core::ptr::addr_of!(__start_usurp_preemptible_fns) as usize,
            core::ptr::addr_of!(__stop_usurp_preemptible_fns) as usize,
        )
    };
    core::hint::black_box(&FN_SECTION_ANCHOR);
    let size = core::mem::size_of::<FnStart>();
    if e <= s || s % core::mem::align_of::<FnStart>() != 0 {
        return Vec::new();
    }
    (0..(e - s) / size)
        // SAFETY: `[s, e)` is the linker-collected array of `FnStart`
        // statics (each of size and alignment of a pointer, so packed
        // without gaps), mapped and initialised for the whole process.
        .map(|i| unsafe { (*((s + i * size) as *const FnStart)).0 as usize })
        .collect()
}

/// The recorded start addresses of the `preemptible!` functions of this
/// program that lie in the preemptible section, sorted, without duplicates.
pub fn preemptible_fn_starts() -> Vec<usize> {
    let (s, e) = crate::registry::preemptible_code();
    let mut v: Vec<usize> = recorded_starts().into_iter().filter(|&a| s <= a && a < e).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// What the table knows about a code address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FnInfo {
    /// The recorded start of the function whose range holds the address.
    pub start: usize,
    /// The next recorded start, or the section's end.
    pub end: usize,
    /// Whether `[start, end)` may compute or use a thread-local address.
    pub touches_tls: bool,
}

/// The decoded per-function table of the preemptible section.
#[derive(Debug)]
pub struct FnTable {
    /// Recorded starts, sorted, distinct, inside the section.
    starts: Box<[usize]>,
    /// `touches[i]`: the range starting at `starts[i]` touches TLS.
    touches: Box<[bool]>,
    /// The section's end.
    end: usize,
    /// Whether the section is part of the main executable (else every
    /// lookup is unknown).
    in_main: bool,
    /// Whether `[section start, first recorded start)` touches TLS.
    prefix_touches: bool,
}

impl FnTable {
    /// The function whose range holds `pc`; `None` when unknown: outside
    /// the section, before its first recorded function, or the section is
    /// outside the main executable. Async-signal-safe.
    pub fn lookup(&self, pc: usize) -> Option<FnInfo> {
        if !self.in_main || pc >= self.end {
            return None;
        }
        // Number of starts <= pc.
        let i = self.starts.partition_point(|&s| s <= pc);
        if i == 0 {
            return None;
        }
        let start = self.starts[i - 1];
        let end = self.starts.get(i).copied().unwrap_or(self.end);
        Some(FnInfo { start, end, touches_tls: self.touches[i - 1] })
    }

    /// Number of recorded functions in the table.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True if no function was recorded.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Whether any byte of the section may touch TLS (the whole-section
    /// answer the runtime used before it knew functions apart); `true` when
    /// the section is outside the main executable.
    pub fn section_touches_tls(&self) -> bool {
        !self.in_main || self.prefix_touches || self.touches.iter().any(|&t| t)
    }

    fn build() -> FnTable {
        let (s, e) = crate::registry::preemptible_code();
        let starts = preemptible_fn_starts().into_boxed_slice();
        let in_main = s < e && in_main_executable(s);
        let decode = |a: usize, b: usize| {
            if !in_main || b <= a {
                return false;
            }
            // SAFETY: `[a, b)` lies in the preemptible section, mapped
            // readable and executable for the life of the process and never
            // written.
            let code = unsafe { std::slice::from_raw_parts(a as *const u8, b - a) };
            crate::archif::arch::code_touches_tls(code, a as u64)
        };
        let touches: Box<[bool]> = (0..starts.len())
            .map(|i| decode(starts[i], starts.get(i + 1).copied().unwrap_or(e)))
            .collect();
        let prefix_touches = decode(s, starts.first().copied().unwrap_or(e));
        FnTable { starts, touches, end: e, in_main, prefix_touches }
    }
}

/// Whether `addr` lies in the main executable (the object holding the
/// program's entry point).
fn in_main_executable(addr: usize) -> bool {
    // SAFETY: dladdr/getauxval only read loader data; `a`/`b` are plain
    // data written by dladdr.
    unsafe {
        let mut a: libc::Dl_info = std::mem::zeroed();
        let mut b: libc::Dl_info = std::mem::zeroed();
        let entry = libc::getauxval(libc::AT_ENTRY) as usize;
        libc::dladdr(addr as *const libc::c_void, &mut a) != 0
            && libc::dladdr(entry as *const libc::c_void, &mut b) != 0
            && a.dli_fbase == b.dli_fbase
    }
}

static TABLE: OnceLock<FnTable> = OnceLock::new();

/// The per-function table, decoded on the first call (which allocates and
/// may take a few milliseconds for a large section: call it at start-up,
/// not from a signal handler).
pub fn fn_table() -> &'static FnTable {
    TABLE.get_or_init(FnTable::build)
}

/// The table if it was built already (async-signal-safe: one load).
pub fn fn_table_if_built() -> Option<&'static FnTable> {
    TABLE.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static T: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    }

    crate::preemptible! {
        /// No thread-local.
        fn plain_fn(x: u64) -> u64 {
            x.wrapping_mul(5).rotate_left(3)
        }

        /// Reads and writes a thread-local.
        pub(crate) fn tls_fn(x: u64) -> u64 {
            T.with(|t| {
                t.set(t.get().wrapping_add(x));
                t.get()
            })
        }

        /// Generic: placed, but not recorded (its bytes belong to whatever
        /// range holds them).
        fn generic_fn<T: Copy + Into<u64>>(x: T) -> u64 {
            x.into().wrapping_add(1)
        }

        /// Compiled out: neither placed nor recorded.
        #[cfg(any())]
        fn cfg_out(x: u64) -> u64 {
            x
        }

        unsafe fn unsafe_fn(p: *const u64) -> u64 {
            // SAFETY: the caller passes a valid pointer.
            unsafe { p.read() }
        }

        /// A where clause (the macro's token-by-token path), not generic:
        /// recorded.
        fn where_fn(x: u64) -> u64
        where
            u64: Copy,
        {
            x
        }

        extern "C" fn c_fn(x: u64) -> u64 {
            x ^ 1
        }
    }

    // Many functions in one block, with doc comments: the expansion depth
    // grows by one per function (the recursion limit is 128).
    crate::preemptible! {
        /// Doc line one.
        /// Doc line two.
        fn m00() -> u64 {
            0
        }
        /// Doc line one.
        /// Doc line two.
        fn m01() -> u64 {
            1
        }
        /// Doc line one.
        /// Doc line two.
        fn m02() -> u64 {
            2
        }
        /// Doc line one.
        /// Doc line two.
        fn m03() -> u64 {
            3
        }
        /// Doc line one.
        /// Doc line two.
        fn m04() -> u64 {
            4
        }
        /// Doc line one.
        /// Doc line two.
        fn m05() -> u64 {
            5
        }
        /// Doc line one.
        /// Doc line two.
        fn m06() -> u64 {
            6
        }
        /// Doc line one.
        /// Doc line two.
        fn m07() -> u64 {
            7
        }
        /// Doc line one.
        /// Doc line two.
        fn m08() -> u64 {
            8
        }
        /// Doc line one.
        /// Doc line two.
        fn m09() -> u64 {
            9
        }
        /// Doc line one.
        /// Doc line two.
        fn m10() -> u64 {
            10
        }
        /// Doc line one.
        /// Doc line two.
        fn m11() -> u64 {
            11
        }
        /// Doc line one.
        /// Doc line two.
        fn m12() -> u64 {
            12
        }
        /// Doc line one.
        /// Doc line two.
        fn m13() -> u64 {
            13
        }
        /// Doc line one.
        /// Doc line two.
        fn m14() -> u64 {
            14
        }
        /// Doc line one.
        /// Doc line two.
        fn m15() -> u64 {
            15
        }
        /// Doc line one.
        /// Doc line two.
        fn m16() -> u64 {
            16
        }
        /// Doc line one.
        /// Doc line two.
        fn m17() -> u64 {
            17
        }
        /// Doc line one.
        /// Doc line two.
        fn m18() -> u64 {
            18
        }
        /// Doc line one.
        /// Doc line two.
        fn m19() -> u64 {
            19
        }
        /// Doc line one.
        /// Doc line two.
        fn m20() -> u64 {
            20
        }
        /// Doc line one.
        /// Doc line two.
        fn m21() -> u64 {
            21
        }
        /// Doc line one.
        /// Doc line two.
        fn m22() -> u64 {
            22
        }
        /// Doc line one.
        /// Doc line two.
        fn m23() -> u64 {
            23
        }
        /// Doc line one.
        /// Doc line two.
        fn m24() -> u64 {
            24
        }
        /// Doc line one.
        /// Doc line two.
        fn m25() -> u64 {
            25
        }
        /// Doc line one.
        /// Doc line two.
        fn m26() -> u64 {
            26
        }
        /// Doc line one.
        /// Doc line two.
        fn m27() -> u64 {
            27
        }
        /// Doc line one.
        /// Doc line two.
        fn m28() -> u64 {
            28
        }
        /// Doc line one.
        /// Doc line two.
        fn m29() -> u64 {
            29
        }
        /// Doc line one.
        /// Doc line two.
        fn m30() -> u64 {
            30
        }
        /// Doc line one.
        /// Doc line two.
        fn m31() -> u64 {
            31
        }
        /// Doc line one.
        /// Doc line two.
        fn m32() -> u64 {
            32
        }
        /// Doc line one.
        /// Doc line two.
        fn m33() -> u64 {
            33
        }
        /// Doc line one.
        /// Doc line two.
        fn m34() -> u64 {
            34
        }
        /// Doc line one.
        /// Doc line two.
        fn m35() -> u64 {
            35
        }
        /// Doc line one.
        /// Doc line two.
        fn m36() -> u64 {
            36
        }
        /// Doc line one.
        /// Doc line two.
        fn m37() -> u64 {
            37
        }
        /// Doc line one.
        /// Doc line two.
        fn m38() -> u64 {
            38
        }
        /// Doc line one.
        /// Doc line two.
        fn m39() -> u64 {
            39
        }
    }

    #[test]
    fn the_macro_records_each_function() {
        assert_eq!(plain_fn(1), 5u64.rotate_left(3));
        assert_eq!(tls_fn(2), 2);
        assert_eq!(generic_fn(3u32), 4);
        // SAFETY: a valid pointer.
        assert_eq!(unsafe { unsafe_fn(&7) }, 7);
        let starts = preemptible_fn_starts();
        let (s, e) = crate::registry::preemptible_code();
        for f in [plain_fn as fn(u64) -> u64 as usize, tls_fn as fn(u64) -> u64 as usize, unsafe_fn as unsafe fn(*const u64) -> u64 as usize]
        {
            assert!(s <= f && f < e);
            assert!(starts.contains(&f), "{f:#x} not recorded in {starts:x?}");
        }
        assert!(!starts.contains(&(generic_fn::<u32> as fn(u32) -> u64 as usize)));
        assert_eq!(c_fn(2), 3);
        assert!(starts.contains(&(c_fn as extern "C" fn(u64) -> u64 as usize)));
        assert_eq!(where_fn(5), 5);
        assert!(starts.contains(&(where_fn as fn(u64) -> u64 as usize)));
        assert_eq!(m00() + m39(), 39);
        for f in [m00 as fn() -> u64, m01, m17, m38, m39] {
            assert!(starts.contains(&(f as usize)));
        }
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_table_tells_tls_functions_apart() {
        let t = fn_table();
        assert!(t.len() >= 3);
        let plain = plain_fn as fn(u64) -> u64 as usize;
        let tls = tls_fn as fn(u64) -> u64 as usize;
        let p = t.lookup(plain).expect("plain_fn unknown");
        assert_eq!((p.start, p.touches_tls), (plain, false), "{p:x?}");
        assert!(p.end > p.start);
        // Inside the function too (its last byte before the next start).
        assert_eq!(t.lookup(p.end - 1), Some(p));
        let q = t.lookup(tls).expect("tls_fn unknown");
        assert_eq!((q.start, q.touches_tls), (tls, true), "{q:x?}");
        assert!(t.section_touches_tls());
        // Unknown: outside the section, and before its first recorded
        // function (where the linker may have put the section's anchor).
        let (s, e) = crate::registry::preemptible_code();
        assert_eq!(t.lookup(e), None);
        assert_eq!(t.lookup(the_table_tells_tls_functions_apart as fn() as usize), None);
        let first = preemptible_fn_starts()[0];
        if s < first {
            assert_eq!(t.lookup(first - 1), None);
        }
        assert!(std::ptr::eq(fn_table_if_built().unwrap(), t));
    }
}
