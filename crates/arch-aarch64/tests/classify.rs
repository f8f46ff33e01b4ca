//! Decoder tests. Encodings were produced with `aarch64-linux-gnu-as
//! -march=armv9-a+sve+sme` and `objdump -d`; the function bodies are rustc
//! 1.95 output (`-O -C force-frame-pointers=yes`, aarch64).
// `x % n == 0` instead of `is_multiple_of` (stable since 1.87): MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

use usurp_arch_aarch64::{classify, classify_with_prev, is_after_call, Verdict};

fn le(w: u32) -> [u8; 4] {
    w.to_le_bytes()
}

fn one(w: u32) -> Verdict {
    classify(&le(w), 0x1000)
}

fn bytes(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Classifies every instruction of `f` (a function body) with its preceding
/// words as context.
fn walk(f: &[u32]) -> Vec<Verdict> {
    let b = bytes(f);
    (0..f.len())
        .map(|i| classify_with_prev(&b[..4 * i], &b[4 * i..], 0x4000 + 4 * i))
        .collect()
}

const PACIASP: u32 = 0xd503233f;
const PACIBSP: u32 = 0xd503237f;
const AUTIASP: u32 = 0xd50323bf;
const AUTIBSP: u32 = 0xd50323ff;
const BTI_C: u32 = 0xd503245f;
const BTI_J: u32 = 0xd503249f;
const BTI_JC: u32 = 0xd50324df;
const RETAA: u32 = 0xd65f0bff;
const RETAB: u32 = 0xd65f0fff;
const RET: u32 = 0xd65f03c0;
const RET_X1: u32 = 0xd65f0020;
const BR_X16: u32 = 0xd61f0200;
const BRAAZ_X16: u32 = 0xd61f0a1f;
const BLR_X8: u32 = 0xd63f0100;
const BLRAA: u32 = 0xd73f0909;
const BLRAAZ: u32 = 0xd63f091f;
const BL: u32 = 0x94000000;
const B: u32 = 0x14000000;
const B_NE: u32 = 0x54000001;
const CBZ: u32 = 0xb4000000;
const SVC: u32 = 0xd4000001;
const BRK: u32 = 0xd4200020;
const HLT: u32 = 0xd4400000;
const UDF: u32 = 0x00000000;
const STP_FP_LR_PRE: u32 = 0xa9bd7bfd; // stp x29, x30, [sp, #-48]!
const STP_FP_LR_OFF: u32 = 0xa9017bfd; // stp x29, x30, [sp, #16]
const LDP_FP_LR_OFF: u32 = 0xa9417bfd; // ldp x29, x30, [sp, #16]
const LDP_FP_LR_POST: u32 = 0xa8c37bfd; // ldp x29, x30, [sp], #48
const STP_D9_D8_PRE: u32 = 0x6dbd23e9;
const LDP_D9_D8_POST: u32 = 0x6cc323e9;
const STR_LR_PRE: u32 = 0xf81f0ffe; // str x30, [sp, #-16]!
const LDR_LR_POST: u32 = 0xf84107fe; // ldr x30, [sp], #16
const STR_X21_OFF: u32 = 0xf9000bf5; // str x21, [sp, #16]
const STP_X20_X19: u32 = 0xa9024ff4; // stp x20, x19, [sp, #32]
const LDP_X20_X19: u32 = 0xa9424ff4; // ldp x20, x19, [sp, #32]
const STR_D8: u32 = 0xfd0007e8; // str d8, [sp, #8]
const STP_Q8_Q9: u32 = 0xad0127e8; // stp q8, q9, [sp, #32]
const SUB_SP: u32 = 0xd10c83ff; // sub sp, sp, #0x320
const SUB_SP_LSL: u32 = 0xd14007ff; // sub sp, sp, #1, lsl #12
const ADD_SP: u32 = 0x910c83ff;
const MOV_FP_SP: u32 = 0x910003fd;
const ADD_FP_SP: u32 = 0x910043fd; // add x29, sp, #16
const SUB_SP_REG: u32 = 0xcb3063ff; // sub sp, sp, x16
const ADD_SP_REG: u32 = 0x8b3063ff;
const MOV_SP_FP: u32 = 0x910003bf; // mov sp, x29
const LDXR: u32 = 0xc85f7c20;
const STXR: u32 = 0xc8027c20;
const LDAXP: u32 = 0xc87f8440;
const STLXP: u32 = 0xc8238440;
const CASAL: u32 = 0xc8e0fc41;
const LDADD: u32 = 0xf8200041;
const NOP: u32 = 0xd503201f;
const MRS_NZCV: u32 = 0xd53b4200;
const MSR_FPCR: u32 = 0xd51b4400;
const SVE_ADD: u32 = 0x04e20020;
const SVE_LD1D: u32 = 0xa5e0a000;
const SMSTART: u32 = 0xd503477f;
const PACIA_LR_SP: u32 = 0xdac103fe;
const AUTIA_LR_SP: u32 = 0xdac113fe;
const XPACLRI: u32 = 0xd50320ff;
const STP_W_PRE: u32 = 0x29be07e0; // stp w0, w1, [sp, #-16]!
const STR_X0_OFF: u32 = 0xf90007e0; // str x0, [sp, #8]
const MOV_X0_X1: u32 = 0xaa0103e0;
const LDR_X0: u32 = 0xf9400000;
const ERET: u32 = 0xd69f03e0;
const MUL: u32 = 0x9b007c28;
const CMP: u32 = 0xf100081f;

#[test]
fn single_words() {
    use Verdict::*;
    let cases: &[(u32, Verdict)] = &[
        (PACIASP, InPrologue),
        (PACIBSP, InPrologue),
        (BTI_C, InPrologue),
        (BTI_JC, InPrologue),
        (BTI_J, Safe),
        (PACIA_LR_SP, InPrologue),
        (STP_FP_LR_PRE, InPrologue),
        (STP_FP_LR_OFF, InPrologue),
        (STP_D9_D8_PRE, InPrologue),
        (STR_LR_PRE, InPrologue),
        (STP_W_PRE, InPrologue),
        (SUB_SP, InPrologue),
        (SUB_SP_LSL, InPrologue),
        (SUB_SP_REG, InPrologue),
        (MOV_FP_SP, InPrologue),
        (ADD_FP_SP, InPrologue),
        (AUTIASP, InEpilogue),
        (AUTIBSP, InEpilogue),
        (AUTIA_LR_SP, InEpilogue),
        (RET, InEpilogue),
        (RET_X1, InEpilogue),
        (RETAA, InEpilogue),
        (RETAB, InEpilogue),
        (LDP_FP_LR_POST, InEpilogue),
        (LDP_D9_D8_POST, InEpilogue),
        (LDR_LR_POST, InEpilogue),
        (ADD_SP, InEpilogue),
        (ADD_SP_REG, InEpilogue),
        // Without context a branch may be a tail call.
        (B, InEpilogue),
        (BR_X16, InEpilogue),
        (BRAAZ_X16, InEpilogue),
        (B_NE, Safe),
        (CBZ, Safe),
        (BL, Safe),
        (BLR_X8, Safe),
        (BLRAA, Safe),
        (BLRAAZ, Safe),
        (SVC, Syscall),
        (BRK, Syscall),
        (HLT, Syscall),
        (UDF, Undecodable),
        (0x0000_1234, Undecodable),
        (0x0200_0000, Undecodable), // op0 = 0001
        (0x0600_0000, Undecodable), // op0 = 0011
        (ERET, Undecodable),
        (SVE_ADD, VectorExtension),
        (SVE_LD1D, VectorExtension),
        (SMSTART, VectorExtension),
        (0x8000_0000, VectorExtension), // SME space
        // Ordinary instructions, including the exclusive/atomic family.
        (LDP_FP_LR_OFF, Safe),
        (LDP_X20_X19, Safe),
        (STR_X21_OFF, Safe),
        (STP_X20_X19, Safe),
        (STR_D8, Safe),
        (STP_Q8_Q9, Safe),
        (MOV_SP_FP, Safe),
        (LDXR, Safe),
        (STXR, Safe),
        (LDAXP, Safe),
        (STLXP, Safe),
        (CASAL, Safe),
        (LDADD, Safe),
        (NOP, Safe),
        (MRS_NZCV, Safe),
        (MSR_FPCR, Safe),
        (XPACLRI, Safe),
        (STR_X0_OFF, Safe),
        (MOV_X0_X1, Safe),
        (LDR_X0, Safe),
        (MUL, Safe),
        (CMP, Safe),
    ];
    for &(w, v) in cases {
        assert_eq!(one(w), v, "word {w:#010x}");
    }
}

#[test]
fn short_or_misaligned_input_is_undecodable() {
    assert_eq!(classify(&[], 0x1000), Verdict::Undecodable);
    assert_eq!(classify(&le(NOP)[..3], 0x1000), Verdict::Undecodable);
    assert_eq!(classify(&le(NOP), 0x1002), Verdict::Undecodable);
    // Extra bytes after the word are ignored.
    let mut b = le(NOP).to_vec();
    b.extend_from_slice(&le(RET));
    assert_eq!(classify(&b, 0x1000), Verdict::Safe);
}

#[test]
fn fib_prologue_body_epilogue() {
    use Verdict::*;
    // rustc: fn fib(n) { if n < 2 { n } else { fib(n-1) + fib(n-2) } }
    let f = [
        0xa9be7bfd, // stp x29, x30, [sp, #-32]!
        0xa9014ff4, // stp x20, x19, [sp, #16]     record pushed, x29 not set
        0x910003fd, // mov x29, sp
        0xaa0003f3, // mov x19, x0
        0xf100081f, // cmp x0, #0x2
        0x540000a2, // b.cs
        0x8b1f0260, // add x0, x19, xzr
        0xa9414ff4, // ldp x20, x19, [sp, #16]
        0xa8c27bfd, // ldp x29, x30, [sp], #32
        0xd65f03c0, // ret
        0xaa1f03f4, // mov x20, xzr
        0xd1000660, // sub x0, x19, #0x1
        0x94000000, // bl fib
        0xd1000a73, // sub x19, x19, #0x2
        0x8b140014, // add x20, x0, x20
        0xf100067f, // cmp x19, #0x1
        0x54ffff68, // b.hi
    ];
    let expect = [
        InPrologue, InPrologue, InPrologue, Safe, Safe, Safe, Safe, Safe, InEpilogue, InEpilogue,
        Safe, Safe, Safe, Safe, Safe, Safe, Safe,
    ];
    assert_eq!(walk(&f), expect);
}

#[test]
fn fp_callee_saves_and_offset_frame_record() {
    use Verdict::*;
    // rustc: `many` (saves d8/d9 first, frame record at sp+16).
    let f = [
        0x6dbd23e9, // stp d9, d8, [sp, #-48]!
        0xa9017bfd, // stp x29, x30, [sp, #16]
        0xa9024ff4, // stp x20, x19, [sp, #32]   record pushed, x29 not set
        0x910043fd, // add x29, sp, #0x10
        0x1e604008, // fmov d8, d0
        0x94000000, // bl
        0x1e602920, // fadd d0, d9, d0
        0xa9424ff4, // ldp x20, x19, [sp, #32]
        0xa9417bfd, // ldp x29, x30, [sp, #16]    fine before it executes
        0x6cc323e9, // ldp d9, d8, [sp], #48      x29 is the caller's
        0xd65f03c0, // ret
    ];
    let expect = [
        InPrologue, InPrologue, InPrologue, InPrologue, Safe, Safe, Safe, Safe, Safe, InEpilogue,
        InEpilogue,
    ];
    assert_eq!(walk(&f), expect);
}

#[test]
fn big_frame_with_locals() {
    use Verdict::*;
    // rustc: `big` (frame record at the bottom, locals allocated after mov x29).
    let f = [
        0xa9bd7bfd, // stp x29, x30, [sp, #-48]!
        0xa90157fc, // stp x28, x21, [sp, #16]
        0xa9024ff4, // stp x20, x19, [sp, #32]
        0x910003fd, // mov x29, sp
        0xd10c83ff, // sub sp, sp, #0x320           locals: x29 already ours
        0xf9000bf3, // str x19, [sp, #16]           a spill into the locals
        0xaa0003f3, // mov x19, x0
        0x910c83ff, // add sp, sp, #0x320           refused (conservative)
        0xa9424ff4, // ldp x20, x19, [sp, #32]
        0xa94157fc, // ldp x28, x21, [sp, #16]
        0xa8c37bfd, // ldp x29, x30, [sp], #48
        0xd65f03c0, // ret
    ];
    let expect = [
        InPrologue, InPrologue, InPrologue, InPrologue, Safe, Safe, Safe, InEpilogue, Safe, Safe,
        InEpilogue, InEpilogue,
    ];
    assert_eq!(walk(&f), expect);
}

#[test]
fn sub_sp_frame_and_pac() {
    use Verdict::*;
    let f = [
        PACIASP,
        0xd10103ff,  // sub sp, sp, #0x40
        0xa9037bfd,  // stp x29, x30, [sp, #48]
        STP_X20_X19, // still not linked
        0x9100c3fd,  // add x29, sp, #48
        MUL,
        0xa9437bfd,  // ldp x29, x30, [sp, #48]
        LDP_X20_X19, // after ldp x29: torn down
        0x910103ff,  // add sp, sp, #0x40
        AUTIASP,
        RET,
    ];
    let expect = [
        InPrologue, InPrologue, InPrologue, InPrologue, InPrologue, Safe, Safe, InEpilogue,
        InEpilogue, InEpilogue, InEpilogue,
    ];
    assert_eq!(walk(&f), expect);
}

#[test]
fn tail_calls_after_epilogue_are_refused() {
    use Verdict::*;
    // ldp x29, x30, [sp], #16 ; b target
    assert_eq!(walk(&[LDP_FP_LR_POST, B])[1], InEpilogue);
    assert_eq!(walk(&[LDP_FP_LR_POST, BR_X16])[1], InEpilogue);
    assert_eq!(walk(&[LDP_FP_LR_POST, B_NE])[1], InEpilogue);
    assert_eq!(walk(&[LDP_FP_LR_POST, AUTIASP, B])[2], InEpilogue);
    // ldp x29, x30, [sp, #16] ; add sp, sp, #32 ; b target
    assert_eq!(walk(&[LDP_FP_LR_OFF, ADD_SP, B])[2], InEpilogue);
    // A loop back-edge in a body is fine once the preceding word is known.
    assert_eq!(walk(&[MUL, B])[1], Safe);
    assert_eq!(
        walk(&[LDXR, 0x91000400, STXR, 0x35ffffa2 /* cbnz */, B])[4],
        Safe
    );
}

#[test]
fn store_runs_in_bodies_are_accepted() {
    use Verdict::*;
    // Spills of callee-saved registers in a function body.
    assert_eq!(walk(&[MUL, STR_X21_OFF, STP_X20_X19])[2], Safe);
    assert_eq!(walk(&[MOV_FP_SP, STP_X20_X19])[1], Safe);
    // The same stores right after a push are a prologue.
    assert_eq!(walk(&[STR_LR_PRE, STR_X21_OFF, STP_Q8_Q9])[2], InPrologue);
    assert_eq!(walk(&[SUB_SP, STR_D8])[1], InPrologue);
    assert_eq!(walk(&[MOV_FP_SP, SUB_SP, STR_D8])[2], Safe);
}

#[test]
fn lookbehind_uses_whole_words_ending_at_pc() {
    // One stray byte at the front of `prev` must not shift the words.
    let mut prev = vec![0xEE];
    prev.extend_from_slice(&le(STP_FP_LR_PRE));
    assert_eq!(
        classify_with_prev(&prev, &le(STP_X20_X19), 0x1004),
        Verdict::InPrologue
    );
    // A huge prev: only the last MAX_LOOKBEHIND bytes count.
    let mut prev = bytes(&[STP_FP_LR_PRE]);
    prev.extend(bytes(&[STR_X21_OFF; 40]));
    assert_eq!(
        classify_with_prev(&prev, &le(STP_X20_X19), 0x2000),
        Verdict::Safe
    );
}

#[test]
fn after_call() {
    let at = |w: u32| is_after_call(&le(w), 0x1004);
    assert!(at(BL));
    assert!(at(BLR_X8));
    assert!(at(BLRAA));
    assert!(at(BLRAAZ));
    assert!(at(0xd73f0d09)); // blrab x8, x9
    assert!(at(0xd63f0d1f)); // blrabz x8
    assert!(!at(B));
    assert!(!at(BR_X16));
    assert!(!at(RET));
    assert!(!at(MUL));
    assert!(!at(SVC));
    assert!(!is_after_call(&le(BL)[1..], 0x1004));
    assert!(!is_after_call(&le(BL), 0x1006));
    let mut more = bytes(&[MUL, MUL]);
    more.extend_from_slice(&le(BL));
    assert!(is_after_call(&more, 0x100c));
}

/// xorshift64*
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_words_never_panic() {
    let scale = usurp_testsupport::scale_factor();
    let n = ((200_000.0 * scale) as usize).max(1000);
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut buf = [0u8; 96];
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&r.next().to_le_bytes());
        }
        let cut = (r.next() % 96) as usize;
        let end = cut + (r.next() % (96 - cut as u64 + 1)) as usize;
        let pc = (r.next() as usize) & !3 | (r.next() as usize % 8 == 0) as usize;
        let v = classify_with_prev(&buf[..cut], &buf[cut..end], pc);
        seen.insert(format!("{v:?}"));
        let _ = classify(&buf[cut..end], pc);
        let _ = is_after_call(&buf[..cut], pc);
    }
    // Random words reach every verdict (the test must be able to fail).
    for v in [
        "Safe",
        "InPrologue",
        "InEpilogue",
        "Undecodable",
        "Syscall",
        "VectorExtension",
    ] {
        assert!(seen.contains(v), "{v} never produced: {seen:?}");
    }
}

#[test]
fn every_verdict_is_stable_under_trailing_bytes() {
    // `classify` looks at exactly one word: appending bytes never changes it.
    let mut r = Rng(42);
    for _ in 0..10_000 {
        let w = r.next() as u32;
        let a = classify(&le(w), 0x100);
        let mut b = le(w).to_vec();
        b.extend_from_slice(&(r.next() as u32).to_le_bytes());
        assert_eq!(a, classify(&b, 0x100));
    }
}
