//! The classifier property test, shared by the CI test
//! (`tests/classify_property.rs`, 10^5 inputs) and the benchmark-style
//! target (`benches/classify_property.rs`, 10^7 inputs by default; not run
//! by CI). Properties, for random bytes at random PCs:
//! * `classify` and `classify_with_prev` never panic and never read outside
//!   the slices they are given (the slices sit flush against PROT_NONE
//!   pages on both sides);
//! * the predecessor bytes only decide between `Safe` and `InEpilogue`
//!   (a branch after a frame teardown), never anything else;
//! * the verdict is a function of the input (the same call twice agrees);
//! * an empty slice is `Undecodable`;
//! * `is_after_call` never panics on any of it.
//!
//! Returns how often each verdict came out, for the caller to check that
//! random input reaches the interesting ones.
#![allow(dead_code)]

use usurp_arch_x86_64::{classify, classify_with_prev, is_after_call, Verdict};

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

/// Verdict counts: Safe, InPrologue, InEpilogue, Undecodable, Syscall.
pub type Counts = [u64; 5];

fn index(v: Verdict) -> usize {
    match v {
        Verdict::Safe => 0,
        Verdict::InPrologue => 1,
        Verdict::InEpilogue => 2,
        Verdict::Undecodable => 3,
        Verdict::Syscall => 4,
        // Never produced on x86-64 (the variant exists for the shared interface).
        Verdict::VectorExtension => panic!("a verdict x86-64 never gives: {v:?}"),
    }
}

/// Runs `rounds` random inputs from `seed`; panics on a violated property.
pub fn run(rounds: u64, seed: u64) -> Counts {
    let mut fence = Fenced::new();
    let page = fence.page();
    let mut rng = Rng(seed | 1);
    let mut seen: Counts = [0; 5];
    for _ in 0..rounds {
        let len = (rng.next() % 16) as usize; // 0..=15 (the longest x86 instruction)
        let plen = (rng.next() % 16) as usize;
        let pc = rng.next() as usize;
        // Bias half of the inputs towards the bytes that matter (prologue,
        // epilogue, branch, syscall and prefix opcodes), so 10^5 inputs
        // reach every verdict; the other half is uniform.
        const HOT: [u8; 16] = [0x55, 0x5d, 0xc3, 0xc9, 0xe9, 0xeb, 0xff, 0x0f, 0x05, 0x48, 0x89, 0xe5, 0x8b, 0xcd, 0x66, 0xf3];
        let biased = rng.next() & 1 == 0;
        let mid = fence.mid_mut();
        for i in (0..16).chain(page - 16..page) {
            let r = rng.next();
            mid[i] = if biased && r & 3 != 0 { HOT[(r >> 8) as usize % HOT.len()] } else { (r >> 16) as u8 };
        }
        let code: &[u8] = &fence.mid()[page - len..];
        let prev: &[u8] = &fence.mid()[..plen];
        let v = classify_with_prev(prev, code, pc);
        let w = classify(code, pc);
        if v != w {
            assert!(
                matches!((v, w), (Verdict::Safe, Verdict::InEpilogue) | (Verdict::InEpilogue, Verdict::Safe)),
                "{code:02x?} after {prev:02x?}: {v:?} vs {w:?}"
            );
        }
        assert_eq!(classify_with_prev(prev, code, pc), v, "not deterministic: {code:02x?} after {prev:02x?}");
        if len == 0 {
            assert_eq!(w, Verdict::Undecodable);
        }
        let _ = is_after_call(prev, pc);
        let _ = is_after_call(code, pc);
        seen[index(w)] += 1;
    }
    seen
}
