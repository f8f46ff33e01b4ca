//! Instruction classification at an interrupted PC: a hand-written decoder
//! for the A64 words that matter (portable Rust, tested on every host).
//!
//! # The rule
//!
//! At every accepted PC, x29 points to the *current* function's frame
//! record (`[x29]` = caller's x29, `[x29 + 8]` = return address into the
//! caller), and the chain from there up to the task's entry is intact. The
//! spill frame then links {interrupted x29, interrupted PC} into that chain
//! and a backtrace of the parked task is exact.
//!
//! LLVM (with frame pointers forced) builds and tears down frames like this
//! (observed on rustc's aarch64 output):
//!
//! ```text
//!  entry:  paciasp / bti c         x29 = caller's, LR = return address
//!          stp x29, x30, [sp,#-N]! frame record pushed, x29 = caller's
//!     or   stp d9, d8, [sp,#-N]!   then stp x29, x30, [sp,#M]
//!     or   sub sp, sp, #N          then stp x29, x30, [sp,#M]
//!          stp x20, x19, [sp,#16]  callee-save stores, x29 still caller's!
//!          mov x29, sp / add x29, sp, #M        <- frame linked after this
//!          sub sp, sp, #locals     (x29 already ours)
//!  body:   ...                                   all fine
//!  exit:   add sp, sp, #locals
//!          ldp x20, x19, [sp,#16]  callee-save loads, x29 still ours
//!          ldp x29, x30, [sp,#M]   fine before it executes ...
//!          ldp d9, d8, [sp], #N    ... but not after: x29 = caller's
//!          ldp x29, x30, [sp], #N  (or the frame record is popped last)
//!          autiasp
//!          ret / b tail / br x16   x29 = caller's: torn down
//! ```
//!
//! The word at the PC alone ([`classify`]) refuses:
//! * [`Verdict::InPrologue`] for `paciasp`/`pacibsp`/`paciaz`/`pacibz`,
//!   `pacia/pacib x30, Xn`, `bti c`/`bti jc` (function entries; `bti j` marks
//!   jump-table targets and is accepted), every store with pre-index
//!   writeback to SP (`stp/str ..., [sp, #-N]!`: a push), `stp x29, x30,
//!   [sp, #M]`, `sub sp, sp, #imm|Xm`, `mov x29, sp`/`add x29, sp, #M`.
//! * [`Verdict::InEpilogue`] for `ret`, `retaa`, `retab`, `autiasp` & co.,
//!   `autia/autib x30, Xn`, every load with post-index writeback from SP (a
//!   pop), `add sp, sp, #imm|Xm`; and an unconditional branch (`b`, `br`,
//!   `braa`...) when the preceding word is unknown, since it may be a tail
//!   call after the frame was popped.
//! * [`Verdict::Syscall`] for `svc` (a syscall the kernel is about to restart
//!   has its PC there, and `restart_syscall` state would not survive another
//!   task's syscalls), and the other exception-generating words (`brk`,
//!   `hlt`, `hvc`, `smc`, `dcps*`), which trap anyway.
//! * [`Verdict::VectorExtension`] for SVE and SME encodings, `smstart`/`smstop`:
//!   code that may hold SVE/SME state the spill frame does not keep.
//! * [`Verdict::Undecodable`] for fewer than 4 bytes, a misaligned PC, and the
//!   unallocated top-level encoding groups (op0 = 0b0001, 0b0011, and 0b0000
//!   with bit 31 clear, which holds `udf`), `eret`, `drps`. The rest of the
//!   A64 space is accepted as "some ordinary instruction": being pragmatic,
//!   we do not check every unallocated sub-encoding; if one is executed it
//!   raises SIGILL whether or not we preempted before it.
//!
//! [`classify_with_prev`] also reads up to [`MAX_LOOKBEHIND`] bytes before the
//! PC, and additionally refuses:
//! * a callee-save store (`str/stp` of x19–x30 or d8–d15 to `[sp, #imm]`)
//!   whose run of such stores goes back to a frame push or contains
//!   `stp x29, x30` (the record is pushed but `mov x29, sp` has not run);
//! * any instruction after `ldp x29, x30, [sp, #M]` or `ldp x29, x30, [sp],
//!   #N` that is reached through a run of callee-save loads (x29 is already
//!   the caller's): tail-call branches, `ldp d9, d8, [sp], #48`, ...
//!
//! and accepts `sub sp, sp, #N` right after `mov x29, sp` (locals), and
//! unconditional branches whose preceding word is not an epilogue.
//! These rules read straight-line code backwards: if the PC is a branch
//! target, the words before it may not have executed; that can only cause a
//! refusal, never an acceptance the single-word rules would refuse.
//!
//! # Known gap: shrink-wrapped code
//!
//! Even with frame pointers forced, LLVM shrink-wraps: it may place the
//! prologue after an early-exit test, so a function can run a few
//! instructions (`cbz x0, 1f` at its entry, `mov`/`eor` on a frameless exit
//! path before `ret`) with x29 still the caller's and the return address only
//! in LR (seen in rustc's release output for `if n == 0 { return acc }`).
//! Nothing in those words or the words before them tells them from body code,
//! so they are accepted. Registers (LR included) are still saved and
//! restored exactly and the GC scans them; only a backtrace taken at such a
//! point lacks one frame (the caller's PC, which is the saved LR). Code that
//! needs exact backtraces at every accepted point must be built with
//! `-C llvm-args=-enable-shrink-wrap=false`: with it, shrink-wrappable
//! functions in the end-to-end test got an exact chain at every instruction
//! (`QEMU_SINGLESTEP=1`, release); without it, about 17% of the accepted
//! preemptions in such functions missed a frame. x86-64 has the same gap. The end-to-end test keeps its Rust
//! functions free of frameless paths so that it stays strict in release.
//!
//! # Load/store-exclusive sequences: accepted
//!
//! `ldxr ... stxr` (and `ldaxr`, `stlxr`, the pair forms) are Safe anywhere.
//! Correctness: a preempted task resumes through `rt_sigreturn`, i.e. an
//! exception return, and the architecture clears the local exclusive monitor
//! on every exception return (the Arm pseudocode of `AArch64.ExceptionReturn`
//! calls `ClearExclusiveLocal`; this is why Linux needs no `clrex` on its
//! return-to-user path). The signal delivery that
//! preempted it was an exception entry as well. So a `stxr` executed after a
//! preemption between the load and the store fails, and the compiler's retry
//! loop (every LL/SC sequence is one: `stxr` may fail spuriously at any time
//! by the architecture) reloads. No store can succeed on a stale monitor set
//! by another task's `ldxr`, for the same reason. QEMU's user-mode emulation
//! compares the reserved value on `stxr` instead, which for a retry loop is
//! equally correct. Progress: a preemption costs one iteration; preemptions
//! come at most once per quantum, so a retry loop cannot livelock.
//! Refusing would only delay preemption; a Restart verdict would need the
//! address of the `ldxr`, which is not necessarily in the lookbehind.
//! The end-to-end test `tests/spill.rs` (`exclusive_loop_stays_exact`) preempts inside such
//! a window many times and checks that a shared counter stays exact.

/// The length of every A64 instruction.
pub const MAX_INSN_LEN: usize = 4;
/// How many bytes before the PC [`classify_with_prev`] looks at (16 words).
pub const MAX_LOOKBEHIND: usize = 64;

/// What the classifier thinks of an interrupted PC. The same variants in
/// both arch crates (usurp-preempt's `archif` checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Preempting here keeps the frame-pointer chain exact.
    Safe,
    /// The current function's frame record is not yet linked by x29.
    InPrologue,
    /// The current function's frame record has already been popped into
    /// x29/x30 (or may have been: a branch that may be a tail call).
    InEpilogue,
    /// Fewer than 4 bytes, a misaligned PC, or an unallocated encoding.
    Undecodable,
    /// `svc` or another exception-generating instruction.
    Syscall,
    /// An SVE or SME instruction: the code may hold state the spill frame
    /// does not keep (aarch64 only).
    VectorExtension,
}

/// Decodes the word at `code[..4]` (little-endian).
fn word(code: &[u8]) -> Option<u32> {
    let b = code.get(..4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Word-level facts about one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Ordinary instruction (accepted by itself).
    Plain,
    /// Callee-save store `str/stp Rt(,Rt2), [sp, #imm]` (no writeback); the
    /// flag tells whether it stores the pair x29, x30.
    SaveStore { frame_record: bool },
    /// Callee-save load from `[sp, #imm]` (no writeback); flag: loads x29.
    SaveLoad { frame_record: bool },
    /// `sub sp, sp, ...`.
    SubSp,
    /// `mov x29, sp` / `add x29, sp, #imm`.
    SetFp,
    /// Store with pre-index writeback to SP (a push).
    Push,
    /// Load with post-index writeback from SP (a pop); flag: loads x29.
    Pop { frame_record: bool },
    /// `add sp, sp, ...`.
    AddSp,
    /// `ret`, `retaa`, `retab`.
    Ret,
    /// PAC sign of LR / BTI call landing pad (function entry).
    EntryHint,
    /// PAC authenticate of LR (function exit).
    ExitHint,
    /// Unconditional branch: `b`, `br`, `braa`...
    Jump,
    /// Conditional branch: `b.cond`, `cbz/cbnz`, `tbz/tbnz`.
    CondJump,
    /// Exception generating.
    Trap,
    /// SVE/SME.
    Vector,
    /// Unallocated / undefined at EL0.
    Bad,
}

fn is_callee_saved_gpr(r: u32) -> bool {
    (19..=30).contains(&r)
}

fn decode(w: u32) -> Kind {
    let op0 = (w >> 25) & 0xf;
    match op0 {
        0b0000 => {
            return if w >> 31 == 1 {
                Kind::Vector
            } else {
                Kind::Bad
            }
        } // SME / UDF+reserved
        0b0001 | 0b0011 => return Kind::Bad,
        0b0010 => return Kind::Vector, // SVE
        _ => {}
    }
    let rn = (w >> 5) & 31;
    let rt = w & 31;
    // --- Branches, exception generation, system (op0 = 101x).
    if w & 0xFF00_0000 == 0xD400_0000 {
        return Kind::Trap;
    }
    match w {
        0xD503_233F | 0xD503_237F | 0xD503_231F | 0xD503_235F => return Kind::EntryHint, // paciasp, pacibsp, paciaz, pacibz
        0xD503_245F | 0xD503_24DF => return Kind::EntryHint, // bti c, bti jc
        0xD503_23BF | 0xD503_23FF | 0xD503_239F | 0xD503_23DF => return Kind::ExitHint, // autiasp, autibsp, autiaz, autibz
        0xD65F_0BFF | 0xD65F_0FFF => return Kind::Ret, // retaa, retab
        _ => {}
    }
    // pacia/pacib x30, Xn|SP and autia/autib x30, Xn|SP.
    match w & 0xFFFF_FC1F {
        0xDAC1_001E | 0xDAC1_041E => return Kind::EntryHint,
        0xDAC1_101E | 0xDAC1_141E => return Kind::ExitHint,
        _ => {}
    }
    // smstart/smstop and MSR SVCR*: msr #imm with op1=011, CRn=0100, op2=011, CRm=0b0x1x.
    if w & 0xFFFF_F0FF == 0xD503_407F && ((w >> 8) & 0xf) >= 2 && ((w >> 8) & 0xf) <= 7 {
        return Kind::Vector;
    }
    // Unconditional branch (register): 1101011 opc op2 op3 Rn op4.
    if w & 0xFE00_0000 == 0xD600_0000 {
        let opc = (w >> 21) & 0xf;
        return match opc {
            0b0010 if w & 0xFFFF_FC1F == 0xD65F_0000 => Kind::Ret,
            0b0000 | 0b1000 => Kind::Jump, // br, braaz/brabz, braa/brab
            0b0001 | 0b1001 => Kind::Plain, // blr & co.: a call, frame intact
            _ => Kind::Bad,                // eret, drps, unallocated at EL0
        };
    }
    if w & 0x7C00_0000 == 0x1400_0000 {
        // b (bit 31 = 0) / bl (bit 31 = 1)
        return if w >> 31 == 0 {
            Kind::Jump
        } else {
            Kind::Plain
        };
    }
    if w & 0xFF00_0010 == 0x5400_0000
        || w & 0x7E00_0000 == 0x3400_0000
        || w & 0x7E00_0000 == 0x3600_0000
    {
        return Kind::CondJump; // b.cond, cbz/cbnz, tbz/tbnz
    }
    // --- Add/subtract (immediate) and (extended register) with SP operands.
    // imm: sf op S 100010 sh imm12 Rn Rd; ext: sf op S 01011 00 1 Rm opt imm3 Rn Rd.
    let addsub_imm = w & 0x9F80_0000 == 0x9100_0000 && (w >> 29) & 1 == 0;
    let addsub_ext = w & 0x9FE0_0000 == 0x8B20_0000 && (w >> 29) & 1 == 0;
    if addsub_imm || addsub_ext {
        let is_sub = (w >> 30) & 1 == 1;
        if rt == 31 && rn == 31 {
            return if is_sub { Kind::SubSp } else { Kind::AddSp };
        }
        if addsub_imm && !is_sub && rt == 29 && rn == 31 {
            return Kind::SetFp;
        }
        return Kind::Plain;
    }
    // --- Loads and stores with SP as the base.
    if rn == 31 {
        // Load/store pair: opc 101 V type(3) L imm7 Rt2 Rn Rt.
        if w & 0x3800_0000 == 0x2800_0000 {
            let ty = (w >> 23) & 7;
            let load = (w >> 22) & 1 == 1;
            let v = (w >> 26) & 1 == 1;
            let rt2 = (w >> 10) & 31;
            let opc = w >> 30;
            let saved = if v {
                (8..=15).contains(&rt) || (8..=15).contains(&rt2)
            } else {
                is_callee_saved_gpr(rt) || is_callee_saved_gpr(rt2)
            };
            let fr = !v && opc == 0b10 && rt == 29 && rt2 == 30;
            return match (ty, load) {
                (0b011, false) => Kind::Push,
                (0b001, true) => Kind::Pop {
                    frame_record: fr || (!v && rt == 29),
                },
                (0b010, false) if saved => Kind::SaveStore { frame_record: fr },
                (0b010, true) if saved => Kind::SaveLoad {
                    frame_record: fr || (!v && opc == 0b10 && rt == 29),
                },
                _ => Kind::Plain,
            };
        }
        // Load/store register: size 111 V 0x opc ...
        if w & 0x3A00_0000 == 0x3800_0000 {
            let v = (w >> 26) & 1 == 1;
            let opc = (w >> 22) & 3;
            let load = opc != 0 && !(v && opc == 0b10); // V with opc=10 is a 128-bit store
            let saved = if v {
                (8..=15).contains(&rt)
            } else {
                is_callee_saved_gpr(rt)
            };
            if (w >> 24) & 1 == 1 {
                // unsigned offset
                return match (load, saved) {
                    (false, true) => Kind::SaveStore {
                        frame_record: false,
                    },
                    (true, true) => Kind::SaveLoad {
                        frame_record: !v && rt == 29,
                    },
                    _ => Kind::Plain,
                };
            }
            if (w >> 21) & 1 == 0 {
                return match ((w >> 10) & 3, load) {
                    (0b11, false) => Kind::Push,
                    (0b01, true) => Kind::Pop {
                        frame_record: !v && rt == 29,
                    },
                    _ => Kind::Plain,
                };
            }
        }
    }
    Kind::Plain
}

/// Classifies the instruction at `pc`. `code` holds the bytes from `pc` to
/// the end of the registered region (only the first [`MAX_INSN_LEN`] are
/// looked at). Never reads outside `code`; never panics. Without the bytes
/// before the PC, every unconditional branch is treated as a possible tail
/// call and refused, and callee-save stores/loads are accepted: the
/// preemption crate should use [`classify_with_prev`] wherever it can.
pub fn classify(code: &[u8], pc: usize) -> Verdict {
    classify_with_prev(&[], code, pc)
}

/// Like [`classify`], with `prev` = the bytes immediately before `pc` inside
/// the same registered region (may be empty; only its last
/// [`MAX_LOOKBEHIND`] bytes, in whole words ending at `pc`, are used).
pub fn classify_with_prev(prev: &[u8], code: &[u8], pc: usize) -> Verdict {
    if pc % 4 != 0 {
        return Verdict::Undecodable;
    }
    let Some(w) = word(code) else {
        return Verdict::Undecodable;
    };
    let prev = &prev[prev.len().saturating_sub(MAX_LOOKBEHIND)..];
    let prev = &prev[prev.len() % 4..];
    // Kinds of the words before the PC, nearest first.
    let mut back = [Kind::Plain; MAX_LOOKBEHIND / 4];
    let mut n = 0;
    for (slot, k) in back
        .iter_mut()
        .zip(prev.rchunks_exact(4).filter_map(word).map(decode))
    {
        *slot = k;
        n += 1;
    }
    let back = &back[..n];
    match decode(w) {
        Kind::Bad => Verdict::Undecodable,
        Kind::Vector => Verdict::VectorExtension,
        Kind::Trap => Verdict::Syscall,
        Kind::EntryHint | Kind::Push | Kind::SetFp => Verdict::InPrologue,
        Kind::SaveStore { frame_record: true } => Verdict::InPrologue,
        Kind::Ret | Kind::ExitHint | Kind::Pop { .. } | Kind::AddSp => Verdict::InEpilogue,
        Kind::SubSp => match back.first() {
            Some(Kind::SetFp) => Verdict::Safe,
            _ => Verdict::InPrologue,
        },
        Kind::SaveStore {
            frame_record: false,
        } => {
            // Walk back over the run of callee-save stores: the frame record
            // is pushed but not linked if the run contains `stp x29, x30` or
            // starts right after a push / an SP decrement that is not the
            // locals allocation after `mov x29, sp`.
            for (i, k) in back.iter().enumerate() {
                match k {
                    Kind::SaveStore {
                        frame_record: false,
                    } => continue,
                    Kind::SaveStore { frame_record: true } | Kind::Push | Kind::EntryHint => {
                        return Verdict::InPrologue
                    }
                    Kind::SubSp if back.get(i + 1) == Some(&Kind::SetFp) => return Verdict::Safe,
                    Kind::SubSp => return Verdict::InPrologue,
                    _ => return Verdict::Safe,
                }
            }
            Verdict::Safe
        }
        Kind::Jump if back.is_empty() => Verdict::InEpilogue,
        Kind::Plain | Kind::SaveLoad { .. } | Kind::Jump | Kind::CondJump => {
            // Walk back over the epilogue-like run (callee-save loads, pops,
            // `add sp`, `autiasp`): if x29 was reloaded in it, the frame is
            // gone and this word is the tail of an epilogue.
            for k in back {
                match k {
                    Kind::SaveLoad { frame_record: true } | Kind::Pop { frame_record: true } => {
                        return Verdict::InEpilogue
                    }
                    Kind::SaveLoad {
                        frame_record: false,
                    }
                    | Kind::Pop {
                        frame_record: false,
                    }
                    | Kind::AddSp
                    | Kind::ExitHint => continue,
                    _ => break,
                }
            }
            Verdict::Safe
        }
    }
}

/// True if `ret_addr` directly follows a call: the word before it is `bl`,
/// `blr`, `blraa`, `blrab`, `blraaz` or `blrabz`. `code_before` holds the
/// bytes immediately before `ret_addr` (its last byte is at `ret_addr - 1`).
/// Never reads outside `code_before`; never panics.
pub fn is_after_call(code_before: &[u8], ret_addr: usize) -> bool {
    if ret_addr % 4 != 0 || code_before.len() < 4 {
        return false;
    }
    let Some(w) = word(&code_before[code_before.len() - 4..]) else {
        return false;
    };
    w & 0xFC00_0000 == 0x9400_0000 // bl
        || w & 0xFFFF_FC1F == 0xD63F_0000 // blr
        || w & 0xFFFF_F800 == 0xD73F_0800 // blraa, blrab
        || w & 0xFFFF_F81F == 0xD63F_081F // blraaz, blrabz
}

