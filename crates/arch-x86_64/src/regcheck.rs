//! A register-preservation checker for stress tests: a loop in preemptible
//! code that holds known values in every general-purpose and vector register
//! it may use and keeps checking them.
//!
//! [`register_loop`] derives patterns from a seed and calls an assembly
//! routine placed in the `usurp_preemptible` linker section, so the runtime
//! may preempt it asynchronously at (almost) any instruction. If any
//! preemption — the signal, the spill routine, the park, another task running
//! on the worker, the restore — loses or swaps a register, the next check
//! sees it. The routine counts mismatches instead of stopping, reloads the
//! patterns, and carries on; the count is its return value.
//!
//! # What is checked
//!
//! * All 14 GPRs other than RSP and RBP: rax, rbx, rcx, rdx, rsi, rdi,
//!   r8–r15. RBP stays the frame pointer (the safe-point check accepts a PC
//!   only when RBP points to the current frame record, and backtraces of
//!   preempted tasks walk that chain), so the routine addresses everything
//!   else relative to RBP and needs no other base register.
//! * With AVX (CPUID and XCR0 checked at run time with
//!   `is_x86_feature_detected!`): all 256 bits of ymm0–ymm15. Without AVX but
//!   with SSE4.1: xmm0–xmm15. Otherwise GPRs only ([`vector_mode`]).
//!
//! Comparisons perturb nothing: a GPR is compared with its pattern in memory
//! (`cmp reg, [rbp - off]`); a vector register `a` with its pattern `p` by
//! two `(v)ptest`s: `ptest a, ~p` sets ZF iff `a & ~p == 0`, `ptest a, p`
//! sets CF iff `~a & p == 0`; both together mean `a == p`. The iteration
//! counter and the mismatch counter live in the frame, not in registers.
//!
//! # The routine `usurp_regcheck_loop(pat: rdi, iterations: rsi, mode: rdx) -> rax`
//!
//! `pat` points to a [`Patterns`] block (1152 bytes), `iterations` ≥ 1,
//! `mode` = 0 (GPRs), 1 (+XMM, SSE4.1), 2 (+YMM, AVX). Stack layout built
//! below the incoming RSP (RBP-relative offsets):
//!
//! ```text
//!   [rbp + 8]            return address (pushed by the caller's call)
//!   [rbp]                caller's rbp: the frame record
//!   [rbp - 8 .. - 40]    rbx, r12, r13, r14, r15 (callee-saved, restored)
//!   [rbp - 48]           iterations remaining
//!   [rbp - 56]           mismatches so far
//!   [rbp - 64]           mode
//!   [rbp - 1216]         copy of the Patterns block (16-byte aligned: RBP is
//!                        16-aligned after `push rbp`, 1216 = 76 * 16)
//!   rsp = rbp - 1216
//! ```
//!
//! Registers saved: rbx, rbp, r12–r15, the System V callee-saved GPRs it
//! overwrites. The vector registers are all caller-saved; in mode 2 the
//! routine ends with `vzeroupper`. The direction flag is clear on entry (ABI)
//! and `rep movsq` relies on it; MXCSR and the x87 state are not touched.
//! Every accepted preemption point inside the routine has RBP = its frame
//! record, so the routine is a well-formed preemptible function.

use core::arch::global_asm;

/// Number of GPRs holding patterns.
pub const GPRS: usize = 14;
/// Names of the pattern GPRs, in [`Patterns::gpr`] order.
pub const GPR_NAMES: [&str; GPRS] =
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// The pattern block the routine copies into its frame. Layout is fixed
/// (offsets are hard-coded in the assembly).
#[repr(C, align(32))]
#[derive(Clone)]
pub struct Patterns {
    /// GPR patterns in [`GPR_NAMES`] order (the last two words are padding).
    pub gpr: [u64; 16],
    /// ymm0–ymm15 (xmm uses the low two words of each).
    pub vec: [[u64; 4]; 16],
    /// The bitwise complement of `vec` (for the `ptest` equality check).
    pub vec_not: [[u64; 4]; 16],
}

const _: () = assert!(core::mem::size_of::<Patterns>() == 1152);

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Patterns {
    /// Patterns derived from `seed`: pseudo-random, with the register index
    /// in the low byte so that every value is distinct (a swap of two
    /// registers is always a mismatch) and none is zero.
    pub fn from_seed(seed: u64) -> Patterns {
        let mut s = seed;
        let mut p = Patterns { gpr: [0; 16], vec: [[0; 4]; 16], vec_not: [[0; 4]; 16] };
        for (i, g) in p.gpr.iter_mut().take(GPRS).enumerate() {
            *g = (splitmix(&mut s) & !0xFF) | (0x40 + i as u64);
        }
        for i in 0..16 {
            for j in 0..4 {
                let v = (splitmix(&mut s) & !0xFF) | (0x80 + (i * 4 + j) as u64);
                p.vec[i][j] = v;
                p.vec_not[i][j] = !v;
            }
        }
        p
    }
}

/// Which vector registers [`register_loop`] checks on this CPU: 2 = YMM
/// (AVX), 1 = XMM (SSE4.1), 0 = none.
pub fn vector_mode() -> u64 {
    if std::is_x86_feature_detected!("avx") {
        2
    } else if std::is_x86_feature_detected!("sse4.1") {
        1
    } else {
        0
    }
}

/// A short description of what [`register_loop`] checks here.
pub fn checked_registers() -> &'static str {
    match vector_mode() {
        2 => "14 GPRs + ymm0-15",
        1 => "14 GPRs + xmm0-15",
        _ => "14 GPRs",
    }
}

/// `[start, end)` of the assembly routine (inside the `usurp_preemptible`
/// section).
pub fn code_range() -> (usize, usize) {
    (usurp_regcheck_loop as *const () as usize, core::ptr::addr_of!(usurp_regcheck_loop_end) as usize)
}

/// Loads patterns derived from `seed` into every GPR but RSP/RBP and every
/// vector register (see [`vector_mode`]), then checks them all `iterations`
/// times in preemptible code. Returns the number of iterations that found a
/// register different from its pattern (after each, the patterns are
/// reloaded). 0 without preemption; 0 with preemption if the runtime saves
/// and restores registers exactly.
pub fn register_loop(seed: u64, iterations: u64) -> u64 {
    if iterations == 0 {
        return 0;
    }
    let p = Patterns::from_seed(seed);
    // SAFETY: `p` is a valid, aligned Patterns block that lives across the
    // call; the routine follows the C ABI (callee-saved registers restored,
    // caller-saved ones clobbered, which the extern declaration implies);
    // mode matches the CPU's features as checked by vector_mode.
    unsafe { usurp_regcheck_loop(&p, iterations, vector_mode()) }
}

extern "C" {
    fn usurp_regcheck_loop(pat: *const Patterns, iterations: u64, mode: u64) -> u64;
    static usurp_regcheck_loop_end: u8;
    static usurp_regcheck_marks: [usize; 2];
}

// Offsets used below: P = rbp - 1216 is the frame copy of Patterns;
// gpr[i] at P + 8i, vec[i] at P + 128 + 32i, vec_not[i] at P + 640 + 32i.
global_asm!(
    ".pushsection usurp_preemptible,\"ax\",@progbits",
    ".p2align 4",
    ".globl usurp_regcheck_loop",
    ".hidden usurp_regcheck_loop",
    ".type usurp_regcheck_loop,@function",
    "usurp_regcheck_loop:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    ".cfi_offset rbx, -24",
    ".cfi_offset r12, -32",
    ".cfi_offset r13, -40",
    ".cfi_offset r14, -48",
    ".cfi_offset r15, -56",
    "sub rsp, 1176",
    "mov [rbp - 48], rsi",
    "mov qword ptr [rbp - 56], 0",
    "mov [rbp - 64], rdx",
    // Copy the 144-word pattern block into the frame (DF is clear).
    "mov rsi, rdi",
    "lea rdi, [rbp - 1216]",
    "mov ecx, 144",
    "rep movsq",
    // (Re)load every pattern.
    "2:",
    "cmp qword ptr [rbp - 64], 1",
    "jb 5f",
    "ja 4f",
    "movdqa xmm0, [rbp - 1216 + 128 + 0*32]",
    "movdqa xmm1, [rbp - 1216 + 128 + 1*32]",
    "movdqa xmm2, [rbp - 1216 + 128 + 2*32]",
    "movdqa xmm3, [rbp - 1216 + 128 + 3*32]",
    "movdqa xmm4, [rbp - 1216 + 128 + 4*32]",
    "movdqa xmm5, [rbp - 1216 + 128 + 5*32]",
    "movdqa xmm6, [rbp - 1216 + 128 + 6*32]",
    "movdqa xmm7, [rbp - 1216 + 128 + 7*32]",
    "movdqa xmm8, [rbp - 1216 + 128 + 8*32]",
    "movdqa xmm9, [rbp - 1216 + 128 + 9*32]",
    "movdqa xmm10, [rbp - 1216 + 128 + 10*32]",
    "movdqa xmm11, [rbp - 1216 + 128 + 11*32]",
    "movdqa xmm12, [rbp - 1216 + 128 + 12*32]",
    "movdqa xmm13, [rbp - 1216 + 128 + 13*32]",
    "movdqa xmm14, [rbp - 1216 + 128 + 14*32]",
    "movdqa xmm15, [rbp - 1216 + 128 + 15*32]",
    "jmp 5f",
    "4:",
    "vmovdqu ymm0, [rbp - 1216 + 128 + 0*32]",
    "vmovdqu ymm1, [rbp - 1216 + 128 + 1*32]",
    "vmovdqu ymm2, [rbp - 1216 + 128 + 2*32]",
    "vmovdqu ymm3, [rbp - 1216 + 128 + 3*32]",
    "vmovdqu ymm4, [rbp - 1216 + 128 + 4*32]",
    "vmovdqu ymm5, [rbp - 1216 + 128 + 5*32]",
    "vmovdqu ymm6, [rbp - 1216 + 128 + 6*32]",
    "vmovdqu ymm7, [rbp - 1216 + 128 + 7*32]",
    "vmovdqu ymm8, [rbp - 1216 + 128 + 8*32]",
    "vmovdqu ymm9, [rbp - 1216 + 128 + 9*32]",
    "vmovdqu ymm10, [rbp - 1216 + 128 + 10*32]",
    "vmovdqu ymm11, [rbp - 1216 + 128 + 11*32]",
    "vmovdqu ymm12, [rbp - 1216 + 128 + 12*32]",
    "vmovdqu ymm13, [rbp - 1216 + 128 + 13*32]",
    "vmovdqu ymm14, [rbp - 1216 + 128 + 14*32]",
    "vmovdqu ymm15, [rbp - 1216 + 128 + 15*32]",
    "5:",
    "mov rax, [rbp - 1216 + 0*8]",
    "mov rbx, [rbp - 1216 + 1*8]",
    "mov rcx, [rbp - 1216 + 2*8]",
    "mov rdx, [rbp - 1216 + 3*8]",
    "mov rsi, [rbp - 1216 + 4*8]",
    "mov rdi, [rbp - 1216 + 5*8]",
    "mov r8, [rbp - 1216 + 6*8]",
    "mov r9, [rbp - 1216 + 7*8]",
    "mov r10, [rbp - 1216 + 8*8]",
    "mov r11, [rbp - 1216 + 9*8]",
    "mov r12, [rbp - 1216 + 10*8]",
    "mov r13, [rbp - 1216 + 11*8]",
    "mov r14, [rbp - 1216 + 12*8]",
    "mov r15, [rbp - 1216 + 13*8]",
    // The check loop.
    "3:",
    ".Lusurp_regcheck_check:",
    "cmp rax, [rbp - 1216 + 0*8]",
    "jne 8f",
    "cmp rbx, [rbp - 1216 + 1*8]",
    "jne 8f",
    "cmp rcx, [rbp - 1216 + 2*8]",
    "jne 8f",
    "cmp rdx, [rbp - 1216 + 3*8]",
    "jne 8f",
    "cmp rsi, [rbp - 1216 + 4*8]",
    "jne 8f",
    "cmp rdi, [rbp - 1216 + 5*8]",
    "jne 8f",
    "cmp r8, [rbp - 1216 + 6*8]",
    "jne 8f",
    "cmp r9, [rbp - 1216 + 7*8]",
    "jne 8f",
    "cmp r10, [rbp - 1216 + 8*8]",
    "jne 8f",
    "cmp r11, [rbp - 1216 + 9*8]",
    "jne 8f",
    "cmp r12, [rbp - 1216 + 10*8]",
    "jne 8f",
    "cmp r13, [rbp - 1216 + 11*8]",
    "jne 8f",
    "cmp r14, [rbp - 1216 + 12*8]",
    "jne 8f",
    "cmp r15, [rbp - 1216 + 13*8]",
    "jne 8f",
    "cmp qword ptr [rbp - 64], 1",
    "jb 7f",
    "ja 6f",
    // XMM: ZF <=> a & ~p == 0, CF <=> ~a & p == 0.
    "ptest xmm0, [rbp - 1216 + 640 + 0*32]",
    "jnz 8f",
    "ptest xmm0, [rbp - 1216 + 128 + 0*32]",
    "jnc 8f",
    "ptest xmm1, [rbp - 1216 + 640 + 1*32]",
    "jnz 8f",
    "ptest xmm1, [rbp - 1216 + 128 + 1*32]",
    "jnc 8f",
    "ptest xmm2, [rbp - 1216 + 640 + 2*32]",
    "jnz 8f",
    "ptest xmm2, [rbp - 1216 + 128 + 2*32]",
    "jnc 8f",
    "ptest xmm3, [rbp - 1216 + 640 + 3*32]",
    "jnz 8f",
    "ptest xmm3, [rbp - 1216 + 128 + 3*32]",
    "jnc 8f",
    "ptest xmm4, [rbp - 1216 + 640 + 4*32]",
    "jnz 8f",
    "ptest xmm4, [rbp - 1216 + 128 + 4*32]",
    "jnc 8f",
    "ptest xmm5, [rbp - 1216 + 640 + 5*32]",
    "jnz 8f",
    "ptest xmm5, [rbp - 1216 + 128 + 5*32]",
    "jnc 8f",
    "ptest xmm6, [rbp - 1216 + 640 + 6*32]",
    "jnz 8f",
    "ptest xmm6, [rbp - 1216 + 128 + 6*32]",
    "jnc 8f",
    "ptest xmm7, [rbp - 1216 + 640 + 7*32]",
    "jnz 8f",
    "ptest xmm7, [rbp - 1216 + 128 + 7*32]",
    "jnc 8f",
    "ptest xmm8, [rbp - 1216 + 640 + 8*32]",
    "jnz 8f",
    "ptest xmm8, [rbp - 1216 + 128 + 8*32]",
    "jnc 8f",
    "ptest xmm9, [rbp - 1216 + 640 + 9*32]",
    "jnz 8f",
    "ptest xmm9, [rbp - 1216 + 128 + 9*32]",
    "jnc 8f",
    "ptest xmm10, [rbp - 1216 + 640 + 10*32]",
    "jnz 8f",
    "ptest xmm10, [rbp - 1216 + 128 + 10*32]",
    "jnc 8f",
    "ptest xmm11, [rbp - 1216 + 640 + 11*32]",
    "jnz 8f",
    "ptest xmm11, [rbp - 1216 + 128 + 11*32]",
    "jnc 8f",
    "ptest xmm12, [rbp - 1216 + 640 + 12*32]",
    "jnz 8f",
    "ptest xmm12, [rbp - 1216 + 128 + 12*32]",
    "jnc 8f",
    "ptest xmm13, [rbp - 1216 + 640 + 13*32]",
    "jnz 8f",
    "ptest xmm13, [rbp - 1216 + 128 + 13*32]",
    "jnc 8f",
    "ptest xmm14, [rbp - 1216 + 640 + 14*32]",
    "jnz 8f",
    "ptest xmm14, [rbp - 1216 + 128 + 14*32]",
    "jnc 8f",
    "ptest xmm15, [rbp - 1216 + 640 + 15*32]",
    "jnz 8f",
    "ptest xmm15, [rbp - 1216 + 128 + 15*32]",
    "jnc 8f",
    "jmp 7f",
    // YMM: the same test on all 256 bits.
    "6:",
    "vptest ymm0, [rbp - 1216 + 640 + 0*32]",
    "jnz 8f",
    "vptest ymm0, [rbp - 1216 + 128 + 0*32]",
    "jnc 8f",
    "vptest ymm1, [rbp - 1216 + 640 + 1*32]",
    "jnz 8f",
    "vptest ymm1, [rbp - 1216 + 128 + 1*32]",
    "jnc 8f",
    "vptest ymm2, [rbp - 1216 + 640 + 2*32]",
    "jnz 8f",
    "vptest ymm2, [rbp - 1216 + 128 + 2*32]",
    "jnc 8f",
    "vptest ymm3, [rbp - 1216 + 640 + 3*32]",
    "jnz 8f",
    "vptest ymm3, [rbp - 1216 + 128 + 3*32]",
    "jnc 8f",
    "vptest ymm4, [rbp - 1216 + 640 + 4*32]",
    "jnz 8f",
    "vptest ymm4, [rbp - 1216 + 128 + 4*32]",
    "jnc 8f",
    "vptest ymm5, [rbp - 1216 + 640 + 5*32]",
    "jnz 8f",
    "vptest ymm5, [rbp - 1216 + 128 + 5*32]",
    "jnc 8f",
    "vptest ymm6, [rbp - 1216 + 640 + 6*32]",
    "jnz 8f",
    "vptest ymm6, [rbp - 1216 + 128 + 6*32]",
    "jnc 8f",
    "vptest ymm7, [rbp - 1216 + 640 + 7*32]",
    "jnz 8f",
    "vptest ymm7, [rbp - 1216 + 128 + 7*32]",
    "jnc 8f",
    "vptest ymm8, [rbp - 1216 + 640 + 8*32]",
    "jnz 8f",
    "vptest ymm8, [rbp - 1216 + 128 + 8*32]",
    "jnc 8f",
    "vptest ymm9, [rbp - 1216 + 640 + 9*32]",
    "jnz 8f",
    "vptest ymm9, [rbp - 1216 + 128 + 9*32]",
    "jnc 8f",
    "vptest ymm10, [rbp - 1216 + 640 + 10*32]",
    "jnz 8f",
    "vptest ymm10, [rbp - 1216 + 128 + 10*32]",
    "jnc 8f",
    "vptest ymm11, [rbp - 1216 + 640 + 11*32]",
    "jnz 8f",
    "vptest ymm11, [rbp - 1216 + 128 + 11*32]",
    "jnc 8f",
    "vptest ymm12, [rbp - 1216 + 640 + 12*32]",
    "jnz 8f",
    "vptest ymm12, [rbp - 1216 + 128 + 12*32]",
    "jnc 8f",
    "vptest ymm13, [rbp - 1216 + 640 + 13*32]",
    "jnz 8f",
    "vptest ymm13, [rbp - 1216 + 128 + 13*32]",
    "jnc 8f",
    "vptest ymm14, [rbp - 1216 + 640 + 14*32]",
    "jnz 8f",
    "vptest ymm14, [rbp - 1216 + 128 + 14*32]",
    "jnc 8f",
    "vptest ymm15, [rbp - 1216 + 640 + 15*32]",
    "jnz 8f",
    "vptest ymm15, [rbp - 1216 + 128 + 15*32]",
    "jnc 8f",
    // Next iteration.
    "7:",
    "sub qword ptr [rbp - 48], 1",
    "jnz 3b",
    "jmp 9f",
    // Mismatch: count it, use up the iteration, reload every pattern.
    "8:",
    ".Lusurp_regcheck_mismatch:",
    "add qword ptr [rbp - 56], 1",
    "sub qword ptr [rbp - 48], 1",
    "jnz 2b",
    // Done: result, vzeroupper after AVX use, restore callee-saved registers.
    "9:",
    "cmp qword ptr [rbp - 64], 2",
    "jne 10f",
    "vzeroupper",
    "10:",
    "mov rax, [rbp - 56]",
    "lea rsp, [rbp - 40]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size usurp_regcheck_loop, . - usurp_regcheck_loop",
    ".globl usurp_regcheck_loop_end",
    ".hidden usurp_regcheck_loop_end",
    "usurp_regcheck_loop_end:",
    ".popsection",
    // [start, end) of the check loop (every pattern register loaded), for
    // the corruption test.
    ".pushsection .data.rel.ro,\"aw\",@progbits",
    ".p2align 3",
    ".globl usurp_regcheck_marks",
    ".hidden usurp_regcheck_marks",
    "usurp_regcheck_marks:",
    ".quad .Lusurp_regcheck_check",
    ".quad .Lusurp_regcheck_mismatch",
    ".popsection",
);

/// `[start, end)` of the check loop: at every PC in it, all pattern
/// registers hold their patterns (for tests that corrupt a register from a
/// signal handler and expect the loop to notice).
pub fn check_range() -> (usize, usize) {
    // SAFETY: a two-word table written by the assembler, never modified.
    unsafe { (usurp_regcheck_marks[0], usurp_regcheck_marks[1]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        static __start_usurp_preemptible: u8;
        static __stop_usurp_preemptible: u8;
    }

    #[test]
    fn no_mismatch_without_preemption() {
        for seed in [0u64, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(register_loop(seed, 10_000), 0, "seed {seed:#x}");
        }
        assert_eq!(register_loop(7, 1), 0);
        assert_eq!(register_loop(7, 0), 0);
    }

    #[test]
    fn patterns_are_distinct() {
        let p = Patterns::from_seed(42);
        let mut all: Vec<u64> = p.gpr[..GPRS].to_vec();
        all.extend(p.vec.iter().flatten());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(all.iter().all(|&v| v != 0));
        for i in 0..16 {
            for j in 0..4 {
                assert_eq!(p.vec_not[i][j], !p.vec[i][j]);
            }
        }
    }

    #[test]
    fn routine_lies_in_the_preemptible_section() {
        // SAFETY: only the addresses of linker-defined symbols are taken.
        #[allow(unused_unsafe)]
        let (s, e) = unsafe {
            (
                core::ptr::addr_of!(__start_usurp_preemptible) as usize,
                core::ptr::addr_of!(__stop_usurp_preemptible) as usize,
            )
        };
        let (lo, hi) = code_range();
        assert!(lo < hi, "{lo:#x}..{hi:#x}");
        assert!(s <= lo && hi <= e, "routine {lo:#x}..{hi:#x} outside section {s:#x}..{e:#x}");
        let (clo, chi) = check_range();
        assert!(lo < clo && clo < chi && chi < hi);
    }

    /// The safe-point check accepts every instruction of the check loop, so
    /// preemptions there are accepted (not only refused and retried).
    #[test]
    fn check_loop_is_all_safe_points() {
        let (lo, hi) = check_range();
        // SAFETY: [lo - 16, hi + 15) lies inside the routine's code, which
        // is mapped and readable.
        let code = unsafe { std::slice::from_raw_parts((lo - 16) as *const u8, hi - lo + 31) };
        let mut pc = lo;
        let mut n = 0;
        while pc < hi {
            let off = pc - (lo - 16);
            let v = crate::classify_with_prev(&code[off - 16..off], &code[off..], pc);
            assert_eq!(v, crate::Verdict::Safe, "at {:#x} (+{:#x})", pc, pc - lo);
            let mut d = iced_x86::Decoder::with_ip(64, &code[off..], pc as u64, iced_x86::DecoderOptions::NONE);
            pc += d.decode().len();
            n += 1;
        }
        assert!(n > 100, "{n} instructions");
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
    static HITS: AtomicU64 = AtomicU64::new(0);

    /// Flips one bit of r12, or (every other time, when vector registers
    /// are checked) of xmm5, in the interrupted context when the PC is
    /// inside the check loop and more than one iteration remains (so the
    /// loop must see it before returning).
    extern "C" fn corrupt(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
        let uc = uc as *mut libc::ucontext_t;
        // SAFETY: the kernel passes a valid ucontext; rbp is the routine's
        // frame pointer whenever the PC is inside its check loop, and
        // [rbp - 48] holds the remaining iteration count there.
        unsafe {
            let g = &mut (*uc).uc_mcontext.gregs;
            let pc = g[libc::REG_RIP as usize] as usize;
            let (lo, hi) = check_range();
            if lo <= pc && pc < hi {
                let remaining = ((g[libc::REG_RBP as usize] as usize - 48) as *const u64).read();
                let fp = (*uc).uc_mcontext.fpregs;
                if remaining > 1 {
                    if HITS.load(Ordering::SeqCst) % 2 == 1 && vector_mode() > 0 && !fp.is_null() {
                        // The kernel restores xmm0-15 from the legacy area of
                        // the saved FP state (the SSE component is live: it
                        // holds the patterns).
                        (*fp)._xmm[5].element[1] ^= 1 << 9;
                    } else {
                        g[libc::REG_R12 as usize] ^= 1 << 20;
                    }
                    HITS.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    }

    /// The checker is not vacuous: a register changed behind its back (by a
    /// signal handler editing the ucontext) is counted, once per change.
    #[test]
    fn detects_a_corrupted_register() {
        let sig = libc::SIGRTMIN() + 7;
        // SAFETY: installs a handler for a real-time signal no other test of
        // this crate uses; the handler only touches atomics and the ucontext.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = corrupt as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigfillset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
        }
        static STOP: AtomicBool = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let mut mismatches = 0;
            while !STOP.load(Ordering::SeqCst) {
                mismatches += register_loop(99, 200_000);
            }
            mismatches
        });
        let tid = rx.recv().unwrap();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        while HITS.load(Ordering::SeqCst) < 10 {
            let before = ATTEMPTS.load(Ordering::SeqCst);
            // SAFETY: signals a live thread of this process.
            assert_eq!(unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) }, 0);
            while ATTEMPTS.load(Ordering::SeqCst) == before {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        STOP.store(true, Ordering::SeqCst);
        let mismatches = worker.join().unwrap();
        assert_eq!(mismatches, HITS.load(Ordering::SeqCst));
    }
}
