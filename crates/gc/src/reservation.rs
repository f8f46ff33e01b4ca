//! The heap's address reservation, and the quarantine of dropped ones.
//!
//! A dropped heap's address range is not handed straight back to the
//! kernel. Handles outlive their heap: a `Gc<T>` returned by `block_on`, or
//! left in a channel, survives its runtime's drop. Their check (`refcheck`)
//! asks which registered heap holds the address; once the heap is dropped,
//! none does, and the handle is refused as stale. But the kernel gives the
//! next mapping of the same size the same addresses (its top-down search
//! finds the hole just left), so a later runtime's heap used to sit exactly
//! where the dropped one was: the old handle then passed the check and named
//! the new heap's object at its address (red-team finding, session 14: a
//! handle from a dropped runtime read `(999, 888)`, another runtime's
//! objects). So a dropped range is replaced by an inaccessible reservation
//! (`PROT_NONE`, `MAP_NORESERVE`: no memory, no swap, the pages are freed)
//! kept in a small FIFO: the next heaps are mapped elsewhere, and an old
//! handle's address stays outside every heap until its range leaves the
//! FIFO.
//!
//! Bounds: [`QUARANTINE_RANGES`] ranges and [`QUARANTINE_BYTES`] of address
//! space; the oldest is unmapped first. None at all where the address space
//! is limited (`RLIMIT_AS` finite): a reservation would count against the
//! limit and could make any other mapping of the process fail. It is a mitigation, not a proof: a
//! handle older than the FIFO may still meet a heap mapped over its range
//! later (then it reads that object, as any stale handle whose memory was
//! reused; see the README's "Stale handles"). Where address space is
//! scarce (`RLIMIT_AS`), a heap whose reservation fails is retried once
//! after the quarantine is released.
//!
//! Rejected: a generation tag in every handle (would catch every reuse, but
//! widens `Gc<T>` or steals pointer bits that the conservative scan and the
//! guest's value encodings rely on); never unmapping (address space grows
//! with every heap a process makes: tests and REPLs make hundreds).

use memmap2::{MmapMut, MmapOptions};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Most dropped heap ranges kept reserved at once.
pub(crate) const QUARANTINE_RANGES: usize = 4;
/// Most address space kept reserved by the quarantine (address space only:
/// the ranges hold no memory).
pub(crate) const QUARANTINE_BYTES: usize = 256 << 30;

/// Test-only switch (negative control), set through
/// `internals::set_heap_quarantine_for_tests`: `false`: a dropped heap's
/// range is unmapped at once, as before.
pub(crate) static QUARANTINE_ON: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of the quarantine): `false`: a
/// dropped heap's range is unmapped at once, as before. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_heap_quarantine_for_tests(on: bool) {
    QUARANTINE_ON.store(on, Ordering::Relaxed);
}

/// The quarantined ranges, oldest first, and their total length. Under its
/// mutex, by whoever drops a heap or fails to reserve one.
struct Quarantine {
    ranges: VecDeque<(usize, usize)>,
    bytes: usize,
}

static QUARANTINE: Mutex<Quarantine> = Mutex::new(Quarantine { ranges: VecDeque::new(), bytes: 0 });

fn quarantine() -> std::sync::MutexGuard<'static, Quarantine> {
    QUARANTINE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unmaps `[addr, addr + len)`, a quarantined range.
fn release(addr: usize, len: usize) {
    // SAFETY: the range is a PROT_NONE reservation this module made over a
    // dropped heap's mapping and owns alone (it left every other owner when
    // the heap was dropped); nothing reads it.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Whether the process's address space is limited (`RLIMIT_AS` finite):
/// then no range is quarantined, since a reservation counts against the
/// limit although it holds no memory, and would take address space from
/// every other mapping of the process (a `Vec` growing, a thread stack), not
/// only from the next heap, which alone retries (review of session 14: with
/// a limit of usage + 6 GiB, a dropped 3 GiB heap made a 3 GiB allocation
/// fail). Asked at each heap drop (the limit may change meanwhile).
fn address_space_limited() -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    !ok || r.rlim_cur != libc::RLIM_INFINITY
}

/// The heap's mapping: `len` bytes, read-write, `MAP_NORESERVE`.
pub(crate) struct HeapReservation(Option<MmapMut>);

impl HeapReservation {
    /// Reserves `len` bytes. If the kernel refuses (address space exhausted,
    /// `RLIMIT_AS`) while ranges are quarantined, releases them and tries
    /// once more.
    pub(crate) fn new(len: usize) -> std::io::Result<HeapReservation> {
        match MmapOptions::new().len(len).no_reserve_swap().map_anon() {
            Ok(m) => Ok(HeapReservation(Some(m))),
            Err(e) => {
                let drained: Vec<(usize, usize)> = {
                    let mut q = quarantine();
                    q.bytes = 0;
                    q.ranges.drain(..).collect()
                };
                if drained.is_empty() {
                    return Err(e);
                }
                for (a, l) in drained {
                    release(a, l);
                }
                Ok(HeapReservation(Some(MmapOptions::new().len(len).no_reserve_swap().map_anon()?)))
            }
        }
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.as_ref().map_or(std::ptr::null(), |m| m.as_ptr())
    }

    /// The mapping's length.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
}

impl Drop for HeapReservation {
    /// Runs after the heap left the handle-check table (`Space` declares its
    /// registration first) and its readers unpinned: replaces the mapping
    /// by an inaccessible reservation in the quarantine, or unmaps it (the
    /// switch off, a range beyond the byte bound, or the kernel refusing).
    fn drop(&mut self) {
        let Some(m) = self.0.take() else { return };
        let (addr, len) = (m.as_ptr() as usize, m.len());
        if !QUARANTINE_ON.load(Ordering::Relaxed) || len > QUARANTINE_BYTES || address_space_limited() {
            return; // `m` unmaps
        }
        // SAFETY: `[addr, addr + len)` is `m`'s own mapping, which nobody
        // uses any more (see above); MAP_FIXED replaces it in place (its
        // pages are freed) with a PROT_NONE reservation, which we own from
        // here on (`m` is forgotten, not unmapped).
        let r = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return; // `m` unmaps
        }
        std::mem::forget(m);
        let evicted: Vec<(usize, usize)> = {
            let mut q = quarantine();
            q.ranges.push_back((addr, len));
            q.bytes += len;
            let mut out = Vec::new();
            while q.ranges.len() > QUARANTINE_RANGES || q.bytes > QUARANTINE_BYTES {
                let Some((a, l)) = q.ranges.pop_front() else { break };
                q.bytes -= l;
                out.push((a, l));
            }
            out
        };
        for (a, l) in evicted {
            release(a, l);
        }
    }
}
