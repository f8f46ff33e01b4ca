//! The classifier property test, shared by the CI test
//! (`tests/classify_property.rs`, 10^5 inputs) and the benchmark-style
//! target (`benches/classify_property.rs`, 10^7 inputs by default; not run
//! by CI). Properties, for random words at random PCs:
//! * `classify` and `classify_with_prev` never panic and never read outside
//!   the slices they are given (flush against PROT_NONE pages);
//! * a misaligned PC or fewer than 4 bytes is `Undecodable`;
//! * the verdict depends on exactly one word at the PC: trailing bytes never
//!   change it;
//! * the predecessor words only decide frame questions (`Safe`,
//!   `InPrologue`, `InEpilogue`: is a store or SP decrement part of a frame
//!   being built, is a branch a tail call after the frame was torn down),
//!   never `Undecodable`/`Syscall`/`VectorExtension`, and only their last
//!   `MAX_LOOKBEHIND` bytes count;
//! * the same call twice agrees; `is_after_call` never panics.
//!
//! Returns how often each verdict came out.
#![allow(dead_code)]
// `%` instead of is_multiple_of: the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

use usurp_arch_aarch64::{classify, classify_with_prev, is_after_call, Verdict, MAX_LOOKBEHIND};

/// A readable page between two PROT_NONE pages: slices placed flush against
/// either end fault if the classifier ever reads outside them.
pub struct Fenced {
    base: *mut u8,
    page: usize,
}

impl Fenced {
    pub fn new() -> Fenced {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: anonymous private mapping of 3 pages; checked below.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as *mut u8;
        // SAFETY: both pages are inside the mapping just created.
        unsafe {
            assert_eq!(libc::mprotect(base as *mut _, page, libc::PROT_NONE), 0);
            assert_eq!(libc::mprotect(base.add(2 * page) as *mut _, page, libc::PROT_NONE), 0);
        }
        Fenced { base, page }
    }
    pub fn page(&self) -> usize {
        self.page
    }
    /// The readable page.
    pub fn mid(&self) -> &[u8] {
        // SAFETY: the middle page is mapped read/write and owned by self.
        unsafe { core::slice::from_raw_parts(self.base.add(self.page), self.page) }
    }
    pub fn mid_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, with exclusive access through &mut self.
        unsafe { core::slice::from_raw_parts_mut(self.base.add(self.page), self.page) }
    }
}

impl Drop for Fenced {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.base as *mut _, 3 * self.page) };
    }
}

/// xorshift64*: a small deterministic PRNG.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Verdict counts: Safe, InPrologue, InEpilogue, Undecodable, Syscall,
/// VectorExtension.
pub type Counts = [u64; 6];

fn index(v: Verdict) -> usize {
    match v {
        Verdict::Safe => 0,
        Verdict::InPrologue => 1,
        Verdict::InEpilogue => 2,
        Verdict::Undecodable => 3,
        Verdict::Syscall => 4,
        Verdict::VectorExtension => 5,
    }
}

/// Runs `rounds` random inputs from `seed`; panics on a violated property.
pub fn run(rounds: u64, seed: u64) -> Counts {
    let mut fence = Fenced::new();
    let page = fence.page();
    let mut rng = Rng(seed | 1);
    let mut seen: Counts = [0; 6];
    // Frame-related encodings (stp/ldp x29, x30; mov x29, sp; sub/add sp;
    // paciasp/autiasp; ret; svc; str/stp of callee-saves): half of the
    // words come from these, with random register and offset fields, so
    // 10^5 inputs reach every verdict; the rest are uniform.
    const HOT: [(u32, u32); 10] = [
        (0xa9bf7bfd, 0x003f8000), // stp x29, x30, [sp, #-N]!
        (0x910003fd, 0x00000000), // mov x29, sp
        (0xd10003ff, 0x003ffc00), // sub sp, sp, #N
        (0x910003ff, 0x003ffc00), // add sp, sp, #N
        (0xa8c17bfd, 0x003f8000), // ldp x29, x30, [sp], #N
        (0xd65f03c0, 0x000003e0), // ret (xN)
        (0xd503233f, 0x00000000), // paciasp
        (0xd4000001, 0x001fffe0), // svc #imm
        (0xa90157f4, 0x003f7fff), // stp x20, x21, [sp, #N]
        (0xf9000bf3, 0x003fffff), // str x19, [sp, #N]
    ];
    let word = |rng: &mut Rng| -> u32 {
        let r = rng.next();
        if r & 1 == 0 {
            let (base, mask) = HOT[(r >> 8) as usize % HOT.len()];
            base ^ ((r >> 32) as u32 & mask)
        } else {
            (r >> 32) as u32
        }
    };
    for _ in 0..rounds {
        let mid = fence.mid_mut();
        for i in (0..96).step_by(4).chain((page - 96..page).step_by(4)) {
            mid[i..i + 4].copy_from_slice(&word(&mut rng).to_le_bytes());
        }
        let len = (rng.next() % 13) as usize; // 0..=12 bytes at the PC
        let plen = (rng.next() % 97) as usize; // 0..=96 bytes before it
        let pc = ((rng.next() as usize) & !3) | (rng.next() % 8 == 0) as usize;
        let code: &[u8] = &fence.mid()[page - len..];
        let prev: &[u8] = &fence.mid()[..plen];
        let v = classify_with_prev(prev, code, pc);
        let w = classify(code, pc);
        if pc % 4 != 0 || len < 4 {
            assert_eq!((v, w), (Verdict::Undecodable, Verdict::Undecodable), "{code:02x?} at {pc:#x}");
        }
        if v != w {
            // Context decides frame questions only: is a store or SP
            // decrement part of a frame being built, is a branch a tail call
            // after the frame was torn down.
            let frame = |x: Verdict| matches!(x, Verdict::Safe | Verdict::InPrologue | Verdict::InEpilogue);
            assert!(frame(v) && frame(w), "{code:02x?} after {prev:02x?}: {v:?} vs {w:?}");
        }
        if len > 4 {
            assert_eq!(classify_with_prev(prev, &code[..4], pc), v, "trailing bytes changed {code:02x?}");
        }
        let tail = &prev[prev.len().saturating_sub(MAX_LOOKBEHIND)..];
        assert_eq!(classify_with_prev(tail, code, pc), v, "bytes beyond MAX_LOOKBEHIND mattered");
        assert_eq!(classify_with_prev(prev, code, pc), v, "not deterministic");
        let _ = is_after_call(prev, pc);
        let _ = is_after_call(code, pc);
        seen[index(v)] += 1;
    }
    seen
}
