//! Where preemption may happen: the preemptible linker section, JIT code
//! regions, and unsafe (optionally restartable) ranges.
//!
//! The signal handler reads these tables; it can take no lock and must not
//! spin on a writer that it may itself have interrupted. Each table is a fixed
//! array of entries guarded by a per-entry sequence counter (a seqlock):
//! writers, serialised by a normal `Mutex`, make the counter odd, write the
//! fields, then make it even; the handler reads counter, fields, counter, and
//! if the counter was odd or changed it does not wait: it reports the table as
//! busy and the safe-point check refuses this time (the next tick retries).

use core::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Error;

// ---- the linker section -----------------------------------------------------

/// The linker section that [`crate::preemptible!`] places functions in. Its
/// name is a valid C identifier, so the linker defines `__start_`/`__stop_`
/// symbols for it.
pub const PREEMPTIBLE_SECTION: &str = "usurp_preemptible";

// The section's anchor (one trapping instruction placed in it by the arch
// crate) guarantees the section exists, and so do its __start/__stop
// symbols, even in a program without any preemptible function. Taking its
// address in `preemptible_code` keeps it alive under --gc-sections.
extern "C" {
    static __start_usurp_preemptible: u8;
    static __stop_usurp_preemptible: u8;
}

/// `[start, end)` of the preemptible linker section.
#[inline]
pub fn preemptible_code() -> (usize, usize) {
    // SAFETY: only the addresses of linker-defined symbols are taken, nothing
    // is read (recent compilers consider this safe; older ones need unsafe).
    #[allow(unused_unsafe)]
    let (s, e) = unsafe {
        (
            core::ptr::addr_of!(__start_usurp_preemptible) as usize,
            core::ptr::addr_of!(__stop_usurp_preemptible) as usize,
        )
    };
    let anchor = crate::archif::preemptible_section_anchor();
    // The anchor is inside the section by construction (a unit test checks
    // it); using its address keeps it, and so the section, alive under
    // --gc-sections. No assertion here: the signal handler calls this.
    core::hint::black_box(anchor);
    (s, e)
}

/// What the registries say about a code address (a query for tests and
/// tools; the signal handler uses the same lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcStatus {
    /// Preemptible code; `restart_at` is set when a restartable range covers
    /// the address (a preemption there resumes at that address).
    Preemptible { restart_at: Option<usize> },
    /// Outside the preemptible section and every registered JIT region.
    NotPreemptible,
    /// Inside a (non-restartable) unsafe range.
    Unsafe,
    /// A registry entry was being updated; ask again.
    Busy,
}

/// Looks `pc` up in the preemptible section, the JIT regions and the unsafe
/// ranges.
pub fn pc_status(pc: usize) -> PcStatus {
    match lookup(pc) {
        CodeLookup::Preemptible { restart, .. } => PcStatus::Preemptible { restart_at: restart },
        CodeLookup::NotPreemptible => PcStatus::NotPreemptible,
        CodeLookup::Unsafe => PcStatus::Unsafe,
        CodeLookup::Busy => PcStatus::Busy,
    }
}

/// Places the given functions in the preemptible linker section and marks
/// them `#[inline(never)]` (inlined into a caller, their code would leave the
/// section). The asynchronous safe-point check accepts PCs only inside this
/// section and inside JIT regions registered with [`crate::register_code`].
///
/// Only the function bodies themselves are placed: closures defined inside
/// them and functions they call are not preemptible unless marked too. Such
/// functions must not hold locks, call into libc, or otherwise do anything
/// that may not be suspended at an arbitrary instruction; while parked their
/// registers and stack are scanned conservatively.
///
/// The macro also records each function's start address (a static in the
/// `usurp_preemptible_fns` section, see [`crate::preemptible_fn_starts`]), so
/// that the runtime can decode each function on its own: a task preempted
/// in a function that touches no thread-local may resume on another thread
/// (one whose code, or a preemptible caller's, does is pinned to its thread).
/// Accepted items: functions (`pub`, `unsafe`, `extern "C"`, attributes such
/// as `#[cfg]` and doc comments allowed, several per block; no inner
/// attributes `#![...]` in their bodies). Generic functions are placed
/// but not recorded (their address needs type arguments): their bytes count
/// for the recorded function before them, which is only more conservative.
///
/// ```ignore
/// usurp_preempt::preemptible! {
///     pub fn spin(n: u64) -> u64 { (0..n).fold(0, |a, b| a ^ b) }
/// }
/// ```
#[macro_export]
macro_rules! preemptible {
    () => {};
    // The common shapes (attributes, visibility, `unsafe` and/or `extern
    // "ABI"`, no generics, no where clause) in one step each, so that the
    // expansion depth grows by one per function, not per token.
    ($(#[$m:meta])* $vis:vis fn $name:ident ($($args:tt)*) $(-> $ret:ty)? { $($body:tt)* } $($rest:tt)*) => {
        $crate::preemptible! { @emit [$(#[$m])* $vis fn $name ($($args)*) $(-> $ret)?] [$name] { $($body)* } }
        $crate::preemptible! { $($rest)* }
    };
    ($(#[$m:meta])* $vis:vis unsafe fn $name:ident ($($args:tt)*) $(-> $ret:ty)? { $($body:tt)* } $($rest:tt)*) => {
        $crate::preemptible! { @emit [$(#[$m])* $vis unsafe fn $name ($($args)*) $(-> $ret)?] [$name] { $($body)* } }
        $crate::preemptible! { $($rest)* }
    };
    ($(#[$m:meta])* $vis:vis extern $abi:literal fn $name:ident ($($args:tt)*) $(-> $ret:ty)? { $($body:tt)* }
        $($rest:tt)*) => {
        $crate::preemptible! { @emit [$(#[$m])* $vis extern $abi fn $name ($($args)*) $(-> $ret)?] [$name] { $($body)* } }
        $crate::preemptible! { $($rest)* }
    };
    ($(#[$m:meta])* $vis:vis unsafe extern $abi:literal fn $name:ident ($($args:tt)*) $(-> $ret:ty)?
        { $($body:tt)* } $($rest:tt)*) => {
        $crate::preemptible! {
            @emit [$(#[$m])* $vis unsafe extern $abi fn $name ($($args)*) $(-> $ret)?] [$name] { $($body)* }
        }
        $crate::preemptible! { $($rest)* }
    };
    // Placement, plus the start record as an item inside the body (a
    // `#[cfg]` on the function removes it too; it adds no code).
    (@emit [$($sig:tt)*] [$($name:ident)?] { $($body:tt)* }) => {
        #[link_section = "usurp_preemptible"]
        #[inline(never)]
        $($sig)* {
            $(
                const _: () = {
                    #[used]
                    #[link_section = "usurp_preemptible_fns"]
                    static START: $crate::FnStart = $crate::FnStart($name as *const ());
                };
            )?
            $($body)*
        }
    };
    // Anything else (generics, where clauses): collect the leading tokens up
    // to `fn name` (a `<` after the name: generic, not recorded), then the
    // signature up to the body (the first top-level braces).
    (@head [$($acc:tt)*] fn $name:ident < $($rest:tt)*) => {
        $crate::preemptible! { @sig [$($acc)* fn $name <] [] $($rest)* }
    };
    (@head [$($acc:tt)*] fn $name:ident $($rest:tt)*) => {
        $crate::preemptible! { @sig [$($acc)* fn $name] [$name] $($rest)* }
    };
    (@head [$($acc:tt)*] $t:tt $($rest:tt)*) => {
        $crate::preemptible! { @head [$($acc)* $t] $($rest)* }
    };
    (@sig [$($acc:tt)*] [$($name:ident)?] { $($body:tt)* } $($rest:tt)*) => {
        $crate::preemptible! { @emit [$($acc)*] [$($name)?] { $($body)* } }
        $crate::preemptible! { $($rest)* }
    };
    (@sig [$($acc:tt)*] [$($name:ident)?] $t:tt $($rest:tt)*) => {
        $crate::preemptible! { @sig [$($acc)* $t] [$($name)?] $($rest)* }
    };
    ($($t:tt)+) => {
        $crate::preemptible! { @head [] $($t)* }
    };
}

// ---- range tables --------------------------------------------------------------

/// Capacity of the JIT code-region table.
pub const MAX_CODE_REGIONS: usize = 256;
/// Capacity of the unsafe-range table.
pub const MAX_UNSAFE_RANGES: usize = 256;

struct Entry {
    seq: AtomicU32,
    start: AtomicUsize,
    end: AtomicUsize,
    flags: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    seq: AtomicU32::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    flags: AtomicUsize::new(0),
};

pub(crate) struct RangeTable<const N: usize> {
    entries: [Entry; N],
    /// One past the highest index ever used: bounds the handler's scan.
    high: AtomicUsize,
    used: Mutex<[bool; N]>,
    name: &'static str,
}

/// Result of a lookup from the handler.
pub(crate) enum Lookup {
    Found { start: usize, end: usize, flags: usize },
    NotFound,
    Busy,
}

impl<const N: usize> RangeTable<N> {
    pub(crate) const fn new(name: &'static str) -> Self {
        RangeTable { entries: [EMPTY; N], high: AtomicUsize::new(0), used: Mutex::new([false; N]), name }
    }

    fn write(&self, i: usize, start: usize, end: usize, flags: usize) {
        let Some(e) = self.entries.get(i) else { return };
        let s = e.seq.load(Ordering::Relaxed);
        e.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        e.start.store(start, Ordering::Relaxed);
        e.end.store(end, Ordering::Relaxed);
        e.flags.store(flags, Ordering::Relaxed);
        e.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    pub(crate) fn insert(&self, start: usize, end: usize, flags: usize) -> Result<usize, Error> {
        if start == 0 || start >= end {
            return Err(Error::InvalidRange { start, end });
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let i = used.iter().position(|u| !u).ok_or(Error::TableFull(self.name))?;
        used[i] = true;
        self.write(i, start, end, flags);
        self.high.fetch_max(i + 1, Ordering::Release);
        Ok(i)
    }

    pub(crate) fn remove(&self, i: usize) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(i) {
            if *u {
                self.write(i, 0, 0, 0);
                *u = false;
            }
        }
    }

    /// Async-signal-safe lookup: no lock, no waiting, no panic.
    pub(crate) fn lookup(&self, pc: usize) -> Lookup {
        let high = self.high.load(Ordering::Acquire).min(N);
        let mut busy = false;
        for e in self.entries.iter().take(high) {
            let s1 = e.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                busy = true;
                continue;
            }
            let start = e.start.load(Ordering::Relaxed);
            let end = e.end.load(Ordering::Relaxed);
            let flags = e.flags.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if e.seq.load(Ordering::Relaxed) != s1 {
                busy = true;
                continue;
            }
            if start <= pc && pc < end {
                return Lookup::Found { start, end, flags };
            }
        }
        if busy {
            Lookup::Busy
        } else {
            Lookup::NotFound
        }
    }
}

pub(crate) static CODE: RangeTable<MAX_CODE_REGIONS> = RangeTable::new("code region");
pub(crate) static UNSAFE: RangeTable<MAX_UNSAFE_RANGES> = RangeTable::new("unsafe range");

const RESTARTABLE: usize = 1;

/// A registered JIT code region; unregisters on drop.
#[derive(Debug)]
#[must_use = "dropping the handle unregisters the region"]
pub struct CodeHandle {
    idx: usize,
}

impl CodeHandle {
    /// Keeps the region registered for the rest of the process.
    pub fn keep(self) {
        core::mem::forget(self)
    }
}

impl Drop for CodeHandle {
    fn drop(&mut self) {
        CODE.remove(self.idx)
    }
}

/// A registered unsafe range; unregisters on drop.
#[derive(Debug)]
#[must_use = "dropping the handle unregisters the range"]
pub struct RangeHandle {
    idx: usize,
}

impl RangeHandle {
    /// Keeps the range registered for the rest of the process.
    pub fn keep(self) {
        core::mem::forget(self)
    }
}

impl Drop for RangeHandle {
    fn drop(&mut self) {
        UNSAFE.remove(self.idx)
    }
}

/// Registers `[start, end)` as preemptible code (e.g. a JIT's output). The
/// code must follow the frame-pointer convention of the platform (a frame
/// record linked through RBP / x29 everywhere except in prologues and
/// epilogues), keep no live state in a red zone beyond the ABI's, and contain
/// no sequence that must not be suspended unless it is also registered with
/// [`register_unsafe_range`]. Unregister it (drop the handle) before the
/// memory is freed.
///
/// # Safety
/// Nothing of this is checked (the registry only records the addresses),
/// and a preemption inside code that breaks it is undefined behaviour: the
/// task is suspended and scanned with a wrong frame chain, or in the middle
/// of a sequence that must not be interrupted. The caller guarantees that
/// every instruction in `[start, end)` is code as described above (not
/// ordinary compiled Rust or C code: use [`crate::preemptible!`] for that),
/// and that the handle is dropped before the region is unmapped or reused.
///
/// Calling it from safe code does not compile:
///
/// ```compile_fail,E0133
/// let _h = usurp_preempt::register_code(0x1000, 0x2000);
/// ```
pub unsafe fn register_code(start: usize, end: usize) -> Result<CodeHandle, Error> {
    CODE.insert(start, end, 0).map(|idx| CodeHandle { idx })
}

/// Declares `[start, end)` as a range of instructions at which a task must
/// not be preempted (e.g. a write barrier's check-then-store, a JIT's inline
/// allocation). With `restartable`, a preemption inside the range is not
/// refused but resumes at `start`.
///
/// A range may be restartable only if re-executing it from `start` with the
/// register and stack state found at any PC inside it has the same effect as
/// finishing it: the instructions before the PC have no side effect outside
/// registers that the range recomputes from inputs it does not overwrite, the
/// stack pointer does not change inside the range, and at most its last
/// instruction commits (a single store), like Linux restartable sequences.
///
/// # Safety
/// With `restartable`, the caller guarantees the condition above for every
/// PC in `[start, end)` (it is not checked: an ordinary loop registered as
/// restartable is rewound at each preemption, repeating its side effects),
/// that no other restartable range covers those PCs, and that the handle is
/// dropped before the code is unmapped or reused. A non-restartable range
/// only refuses preemptions; the function is `unsafe` for the restartable
/// case, as one entry point.
///
/// Calling it from safe code does not compile:
///
/// ```compile_fail,E0133
/// let _h = usurp_preempt::register_unsafe_range(0x1000, 0x2000, true);
/// ```
pub unsafe fn register_unsafe_range(start: usize, end: usize, restartable: bool) -> Result<RangeHandle, Error> {
    UNSAFE.insert(start, end, if restartable { RESTARTABLE } else { 0 }).map(|idx| RangeHandle { idx })
}

/// Where a PC stands, for the handler.
pub(crate) enum CodeLookup {
    /// Preemptible, in the region `[start, end)`; `restart` is the PC to
    /// resume at if a restartable range covers it.
    Preemptible { start: usize, end: usize, restart: Option<usize> },
    NotPreemptible,
    Unsafe,
    Busy,
}

/// Async-signal-safe classification of a PC against all registries.
pub(crate) fn lookup(pc: usize) -> CodeLookup {
    let (s, e) = preemptible_code();
    let (start, end) = if s <= pc && pc < e {
        (s, e)
    } else {
        match CODE.lookup(pc) {
            Lookup::Found { start, end, .. } => (start, end),
            Lookup::NotFound => return CodeLookup::NotPreemptible,
            Lookup::Busy => return CodeLookup::Busy,
        }
    };
    match UNSAFE.lookup(pc) {
        Lookup::NotFound => CodeLookup::Preemptible { start, end, restart: None },
        Lookup::Busy => CodeLookup::Busy,
        Lookup::Found { start: rs, flags, .. } => {
            if flags & RESTARTABLE != 0 && start <= rs && rs <= pc {
                CodeLookup::Preemptible { start, end, restart: Some(rs) }
            } else {
                CodeLookup::Unsafe
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_insert_lookup_remove() {
        let t: RangeTable<4> = RangeTable::new("test");
        assert!(matches!(t.lookup(5), Lookup::NotFound));
        let a = t.insert(0x1000, 0x2000, 1).unwrap();
        let b = t.insert(0x3000, 0x3100, 0).unwrap();
        assert!(matches!(t.lookup(0x1000), Lookup::Found { start: 0x1000, end: 0x2000, flags: 1 }));
        assert!(matches!(t.lookup(0x1fff), Lookup::Found { .. }));
        assert!(matches!(t.lookup(0x2000), Lookup::NotFound));
        assert!(matches!(t.lookup(0x30ff), Lookup::Found { start: 0x3000, .. }));
        t.remove(a);
        assert!(matches!(t.lookup(0x1800), Lookup::NotFound));
        assert!(matches!(t.lookup(0x3000), Lookup::Found { .. }));
        t.remove(b);
        // Capacity and validation.
        for i in 0..4 {
            t.insert(0x10_000 * (i + 1), 0x10_000 * (i + 1) + 1, 0).unwrap();
        }
        assert_eq!(t.insert(0x90_000, 0x90_001, 0), Err(Error::TableFull("test")));
        assert!(matches!(t.insert(5, 5, 0), Err(Error::InvalidRange { .. })));
        assert!(matches!(t.insert(0, 5, 0), Err(Error::InvalidRange { .. })));
    }

    #[test]
    fn an_odd_sequence_counter_reads_as_busy() {
        let t: RangeTable<2> = RangeTable::new("test");
        t.insert(0x1000, 0x2000, 0).unwrap();
        // Simulate a writer interrupted half-way (as the handler would see it
        // when it interrupts its own thread inside `write`).
        t.entries[0].seq.fetch_add(1, Ordering::Relaxed);
        assert!(matches!(t.lookup(0x1000), Lookup::Busy));
        assert!(matches!(t.lookup(0x9000), Lookup::Busy));
        t.entries[0].seq.fetch_add(1, Ordering::Relaxed);
        assert!(matches!(t.lookup(0x1000), Lookup::Found { .. }));
    }

    crate::preemptible! {
        fn marked(x: u64) -> u64 {
            x.wrapping_mul(3).rotate_left(7)
        }
    }

    #[test]
    fn the_macro_places_functions_in_the_section() {
        let (s, e) = preemptible_code();
        assert!(s < e);
        let a = crate::archif::preemptible_section_anchor();
        assert!(s <= a && a < e, "anchor {a:#x} outside {s:#x}..{e:#x}");
        let f = marked as fn(u64) -> u64 as usize;
        assert!(s <= f && f < e, "{f:#x} not in {s:#x}..{e:#x}");
        assert_eq!(marked(1), 3u64.rotate_left(7));
        let not = the_macro_places_functions_in_the_section as fn() as usize;
        assert!(!(s <= not && not < e));
        match lookup(f) {
            CodeLookup::Preemptible { start, end, restart } => {
                assert_eq!((start, end, restart), (s, e, None));
            }
            _ => panic!("marked fn not preemptible"),
        }
        assert!(matches!(lookup(not), CodeLookup::NotPreemptible));
        assert_eq!(pc_status(f), PcStatus::Preemptible { restart_at: None });
        assert_eq!(pc_status(not), PcStatus::NotPreemptible);
    }

    #[test]
    fn unsafe_and_restartable_ranges_inside_jit_code() {
        // Addresses only; nothing is executed.
        // SAFETY: no code is mapped at 0x5000_0000 in this test process (no
        // task runs there), so no preemption can land in these ranges; the
        // handles are dropped below.
        let code = unsafe { register_code(0x5000_0000, 0x5000_1000) }.unwrap();
        assert!(matches!(lookup(0x5000_0800), CodeLookup::Preemptible { restart: None, .. }));
        // SAFETY: as above.
        let u = unsafe { register_unsafe_range(0x5000_0100, 0x5000_0200, false) }.unwrap();
        assert!(matches!(lookup(0x5000_0180), CodeLookup::Unsafe));
        // SAFETY: as above.
        let r = unsafe { register_unsafe_range(0x5000_0300, 0x5000_0340, true) }.unwrap();
        match lookup(0x5000_0310) {
            CodeLookup::Preemptible { restart, .. } => assert_eq!(restart, Some(0x5000_0300)),
            _ => panic!("restartable range not restartable"),
        }
        drop(u);
        drop(r);
        assert!(matches!(lookup(0x5000_0180), CodeLookup::Preemptible { restart: None, .. }));
        drop(code);
        assert!(matches!(lookup(0x5000_0800), CodeLookup::NotPreemptible));
    }
}
