//! End-to-end refusals of the safe-point check: no-preempt sections, too
//! little stack, unsafe ranges, and restartable ranges (PC rewritten to the
//! range start).


use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::{no_preempt, register_unsafe_range, NoPreempt, Refusal, SpillFrame};

const TIMEOUT: Duration = Duration::from_secs(60);

fn want(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(5)
}

#[test]
fn no_preempt_sections_are_refused_and_nest() {
    static IN_SECTION: AtomicBool = AtomicBool::new(false);
    static PARKED_IN_SECTION: AtomicU64 = AtomicU64::new(0);
    static PHASE_REFUSED: AtomicU64 = AtomicU64::new(0);
    let need = want(50);
    let (parks, st) = run_until(
        RunConfig::default(),
        move |stop| {
            let slot = usurp_preempt::current_worker().expect("on a worker");
            {
                let _outer = NoPreempt::new();
                IN_SECTION.store(true, Ordering::SeqCst);
                no_preempt(|| {
                    assert_eq!(slot.no_preempt_depth(), 2);
                });
                // Inner section ended: still inside the outer one.
                assert_eq!(slot.no_preempt_depth(), 1);
                while slot.stats().refused(Refusal::NoPreempt) < need && !stop.load(Ordering::Relaxed) {
                    spin(10_000);
                }
                PHASE_REFUSED.store(slot.stats().refused(Refusal::NoPreempt), Ordering::SeqCst);
                IN_SECTION.store(false, Ordering::SeqCst);
            }
            assert_eq!(slot.no_preempt_depth(), 0);
            while !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
        },
        Some(Box::new(|_f: &SpillFrame, _c: &Ctx| {
            if IN_SECTION.load(Ordering::SeqCst) {
                PARKED_IN_SECTION.fetch_add(1, Ordering::SeqCst);
            }
        })),
        |s| s.refused(Refusal::NoPreempt) >= need && s.accepted >= need,
        TIMEOUT,
    );
    assert_eq!(PARKED_IN_SECTION.load(Ordering::SeqCst), 0, "preempted inside a no-preempt section");
    assert!(PHASE_REFUSED.load(Ordering::SeqCst) >= need, "{st:?}");
    assert!(st.accepted >= need, "never preempted after the section: {st:?}");
    assert_eq!(parks, st.accepted);
}

#[test]
fn too_little_stack_is_refused() {
    let need = want(50);
    let (parks, st) = run_until(
        // The task's stack is declared to end 8 KiB below its top: less than
        // the spill frame plus SPILL_HOOK_STACK.
        RunConfig { declared_stack: Some(8 * 1024), ..RunConfig::default() },
        |stop| {
            while !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
        },
        None,
        |s| s.refused(Refusal::StackRoom) >= need,
        TIMEOUT,
    );
    assert!(st.refused(Refusal::StackRoom) >= need, "{st:?}");
    assert_eq!(st.accepted, 0, "{st:?}");
    assert_eq!(parks, 0);
}

// A loop whose body is a 200-instruction sequence ending in one store: a
// valid restartable range (it recomputes rax from rdi, which it never
// writes; the store is its last instruction).
//   usurp_test_range_fn(input: rdi, out: rsi, iterations: rdx)
// Saved registers: rbp only (pushed, to link a frame record so preemptions
// inside it have an intact frame-pointer chain); rax/rsi/rdx are caller-saved
// arguments and scratch. Stack layout: [rsp] = saved rbp, [rsp+8] = return
// address; nothing else.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection usurp_preemptible,\"ax\",@progbits",
    ".p2align 4",
    ".globl usurp_test_range_fn",
    ".hidden usurp_test_range_fn",
    "usurp_test_range_fn:",
    "push rbp",
    "mov rbp, rsp",
    "2:",
    ".globl usurp_test_range_start",
    ".hidden usurp_test_range_start",
    "usurp_test_range_start:",
    "mov rax, rdi",
    ".rept 200",
    "add rax, 1",
    ".endr",
    "mov [rsi], rax",
    ".globl usurp_test_range_end",
    ".hidden usurp_test_range_end",
    "usurp_test_range_end:",
    "dec rdx",
    "jnz 2b",
    "pop rbp",
    "ret",
    ".popsection",
);

// The same on aarch64: the range recomputes x3 from x0 (never written) with
// 200 adds and ends with the store to [x1] as its last instruction.
//   usurp_test_range_fn(input: x0, out: x1, iterations: x2)
// Saved registers: x29/x30 only (the frame record, so the frame-pointer chain
// is intact at every preemption inside); x2/x3 are caller-saved scratch.
// Stack layout: [sp] = saved x29, [sp+8] = saved x30 (return address);
// sp stays 16-byte aligned.
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection usurp_preemptible,\"ax\",%progbits",
    ".p2align 4",
    ".globl usurp_test_range_fn",
    ".hidden usurp_test_range_fn",
    "usurp_test_range_fn:",
    "stp x29, x30, [sp, #-16]!",
    "mov x29, sp",
    "2:",
    ".globl usurp_test_range_start",
    ".hidden usurp_test_range_start",
    "usurp_test_range_start:",
    "mov x3, x0",
    ".rept 200",
    "add x3, x3, #1",
    ".endr",
    "str x3, [x1]",
    ".globl usurp_test_range_end",
    ".hidden usurp_test_range_end",
    "usurp_test_range_end:",
    "subs x2, x2, #1",
    "b.ne 2b",
    "ldp x29, x30, [sp], #16",
    "ret",
    ".popsection",
);

extern "C" {
    fn usurp_test_range_fn(input: u64, out: *mut u64, iterations: u64);
    static usurp_test_range_start: u8;
    static usurp_test_range_end: u8;
}

fn range() -> (usize, usize) {
    (
        core::ptr::addr_of!(usurp_test_range_start) as usize,
        core::ptr::addr_of!(usurp_test_range_end) as usize,
    )
}

static RANGE_BAD: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RANGE_IN: AtomicUsize = AtomicUsize::new(0);

fn range_body(stop: &'static AtomicBool) {
    let mut input = 1000u64;
    while !stop.load(Ordering::Relaxed) {
        let mut out = 0u64;
        // SAFETY: the asm function writes only *out.
        unsafe { usurp_test_range_fn(input, &mut out, 20_000) };
        if out != input + 200 {
            RANGE_BAD.lock().unwrap().push(format!("result {out} for input {input}"));
        }
        input += 1;
    }
}

#[test]
fn unsafe_ranges_are_refused_and_restartable_ranges_restart() {
    let (start, end) = range();
    let need = want(50);

    // Non-restartable: never parked inside.
    // SAFETY: `[start, end)` is the asm function's range above (in the
    // preemptible section, frame record kept); non-restartable: preemptions
    // there are only refused. The handle is dropped before the next case.
    let h = unsafe { register_unsafe_range(start, end, false) }.unwrap();
    let (parks, st) = run_until(
        RunConfig::default(),
        range_body,
        Some(Box::new(move |f: &SpillFrame, _c: &Ctx| {
            if start <= f.pc() && f.pc() < end {
                RANGE_BAD.lock().unwrap().push(format!("parked inside unsafe range at {:#x}", f.pc()));
            }
        })),
        |s| s.refused(Refusal::UnsafeRange) >= need,
        TIMEOUT,
    );
    drop(h);
    assert!(st.refused(Refusal::UnsafeRange) >= need, "{st:?}");
    assert_eq!(st.restarted, 0);
    assert_eq!(parks, st.accepted);

    // Restartable: parked only at the start, never in the middle.
    // SAFETY: the range recomputes its only output register from an input
    // it never writes, keeps SP, and commits with its last instruction (one
    // store): re-running it from `start` is the same as finishing it; no
    // other range covers it; the handle is dropped below.
    let h = unsafe { register_unsafe_range(start, end, true) }.unwrap();
    let (parks, st) = run_until(
        RunConfig::default(),
        range_body,
        Some(Box::new(move |f: &SpillFrame, _c: &Ctx| {
            let pc = f.pc();
            if start <= pc && pc < end {
                RANGE_IN.fetch_add(1, Ordering::SeqCst);
                if pc != start {
                    RANGE_BAD.lock().unwrap().push(format!("parked at {pc:#x} inside restartable range"));
                }
            }
        })),
        |s| s.restarted >= need,
        TIMEOUT,
    );
    drop(h);
    let bad = RANGE_BAD.lock().unwrap();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(st.restarted >= need, "{st:?}");
    assert_eq!(st.refused(Refusal::UnsafeRange), 0, "{st:?}");
    assert!(RANGE_IN.load(Ordering::SeqCst) as u64 >= st.restarted);
    assert_eq!(parks, st.accepted);
}

#[cfg(target_arch = "aarch64")]
extern "C" {
    /// libgcc / compiler-rt: synchronise the caches over [start, end).
    fn __clear_cache(start: *mut libc::c_char, end: *mut libc::c_char);
}

/// An address inside the JIT code (the loop), for `pc_status` probes.
#[cfg(target_arch = "x86_64")]
const JIT_PROBE: usize = 6;
#[cfg(target_arch = "aarch64")]
const JIT_PROBE: usize = 12;

/// A tiny "JIT": a counting loop copied into fresh executable memory.
struct Jit {
    base: *mut u8,
    len: usize,
}

impl Jit {
    fn new() -> Jit {
        // push rbp; mov rbp, rsp; xor eax, eax
        // 1: add rax, 1; dec rdi; jnz 1b
        // pop rbp; ret
        // Saves rbp only (frame record); stack: [rsp] = rbp, [rsp+8] = return.
        #[cfg(target_arch = "x86_64")]
        let code: [u8; 17] = [
            0x55, 0x48, 0x89, 0xE5, 0x31, 0xC0, 0x48, 0x83, 0xC0, 0x01, 0x48, 0xFF, 0xCF, 0x75, 0xF7, 0x5D, 0xC3,
        ];
        // stp x29, x30, [sp, #-16]!; mov x29, sp; mov x1, #0
        // 1: add x1, x1, #1; subs x0, x0, #1; b.ne 1b
        // mov x0, x1; ldp x29, x30, [sp], #16; ret
        // Saves x29/x30 only (frame record); stack: [sp] = x29, [sp+8] = x30.
        // Little-endian words, checked with aarch64-linux-gnu-as/objdump.
        #[cfg(target_arch = "aarch64")]
        let code: [u8; 36] = {
            let words: [u32; 9] = [
                0xa9bf7bfd, 0x910003fd, 0xd2800001, 0x91000421, 0xf1000400, 0x54ffffc1, 0xaa0103e0, 0xa8c17bfd,
                0xd65f03c0,
            ];
            let mut b = [0u8; 36];
            let mut i = 0;
            while i < 9 {
                let w = words[i].to_le_bytes();
                b[4 * i..4 * i + 4].copy_from_slice(&w);
                i += 1;
            }
            b
        };
        let len = 4096;
        // SAFETY: fresh anonymous mapping, filled, then made read+exec.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(code.as_ptr(), p as *mut u8, code.len());
            assert_eq!(libc::mprotect(p, len, libc::PROT_READ | libc::PROT_EXEC), 0);
            // aarch64 has no coherent instruction cache: make the new code
            // visible to instruction fetch before running it.
            #[cfg(target_arch = "aarch64")]
            __clear_cache(p as *mut libc::c_char, (p as *mut libc::c_char).add(code.len()));
            Jit { base: p as *mut u8, len }
        }
    }
    fn call(&self, n: u64) -> u64 {
        // SAFETY: the code is the function assembled above (C ABI, one arg).
        let f: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(self.base) };
        f(n)
    }
    fn range(&self) -> (usize, usize) {
        (self.base as usize, self.base as usize + self.len)
    }
}

// SAFETY: the mapping is immutable after construction.
unsafe impl Send for Jit {}
// SAFETY: as for Send: shared access only reads the immutable mapping.
unsafe impl Sync for Jit {}

#[test]
fn jit_regions_are_preemptible_only_while_registered() {
    let jit: &'static Jit = Box::leak(Box::new(Jit::new()));
    let (start, end) = jit.range();
    let need = want(50);
    static JIT_BAD: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static IN_JIT: AtomicU64 = AtomicU64::new(0);
    let body = move |stop: &'static AtomicBool| {
        while !stop.load(Ordering::Relaxed) {
            let r = jit.call(200_000);
            if r != 200_000 {
                JIT_BAD.lock().unwrap().push(format!("jit returned {r}"));
            }
        }
    };
    // Unregistered: the PC is almost always in the JIT code, never accepted there.
    let (_, st) = run_until(
        RunConfig::default(),
        body,
        Some(Box::new(move |f: &SpillFrame, _c: &Ctx| {
            if start <= f.pc() && f.pc() < end {
                JIT_BAD.lock().unwrap().push("parked in unregistered JIT code".into());
            }
        })),
        |s| s.refused(Refusal::NotPreemptibleCode) >= need,
        TIMEOUT,
    );
    assert!(st.refused(Refusal::NotPreemptibleCode) >= need, "{st:?}");
    assert_eq!(usurp_preempt::pc_status(start + JIT_PROBE), usurp_preempt::PcStatus::NotPreemptible);

    // SAFETY: the mapping holds only the function assembled in `Jit::new`
    // (frame record through RBP / x29 outside its prologue and epilogue, no
    // red zone use, nothing that must not be suspended); it is leaked, so
    // never unmapped while registered.
    let handle = unsafe { usurp_preempt::register_code(start, end) }.unwrap();
    assert_eq!(usurp_preempt::pc_status(start + JIT_PROBE), usurp_preempt::PcStatus::Preemptible { restart_at: None });
    let (parks, st) = run_until(
        RunConfig::default(),
        body,
        Some(Box::new(move |f: &SpillFrame, c: &Ctx| {
            if start <= f.pc() && f.pc() < end {
                IN_JIT.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = check_backtrace(f, c.stack_lo, c.stack_hi) {
                    JIT_BAD.lock().unwrap().push(format!("backtrace from JIT code: {e}"));
                }
            }
        })),
        |_| IN_JIT.load(Ordering::SeqCst) >= need,
        TIMEOUT,
    );
    drop(handle);
    assert_eq!(usurp_preempt::pc_status(start + JIT_PROBE), usurp_preempt::PcStatus::NotPreemptible);
    let bad = JIT_BAD.lock().unwrap();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(IN_JIT.load(Ordering::SeqCst) >= need, "{st:?}");
    assert_eq!(parks, st.accepted);
}
