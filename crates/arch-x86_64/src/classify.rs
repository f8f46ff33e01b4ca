//! Instruction classification at an interrupted PC (portable: decoding only).
//!
//! The asynchronous safe-point check asks: if the task were parked right
//! here, would its frame-pointer chain be exact? The rule this module
//! enforces is that at every accepted PC
//!
//! 1. RBP points to the *current* function's frame record (`[rbp]` = caller's
//!    RBP, `[rbp + 8]` = return address into the caller), and
//! 2. the chain from there up to the task's entry is intact.
//!
//! With frame pointers forced on (`-C force-frame-pointers=yes`), every
//! function looks like
//!
//! ```text
//!     endbr64            ; (with CET) rbp = caller's, [rsp] = return address
//!     push rbp           ; rbp = caller's
//!     mov  rbp, rsp      ; rbp = caller's, [rsp] = saved rbp
//!     ...                ; frame built: rule 1 holds
//!     pop  rbp / leave   ; still holds *before* it executes (rbp = ours)
//!     ret / jmp tail     ; rbp = caller's again: torn down
//! ```
//!
//! Before `mov rbp, rsp` has executed, RBP is still the caller's; a walk
//! from it would skip the caller (its return address sits unlinked at
//! `[rsp]`), so `endbr64`, `push rbp` and `mov rbp, rsp` are refused
//! ([`Verdict::InPrologue`]). `pop rbp` and `leave` themselves are fine to
//! interrupt: before they execute RBP still names the current frame record.
//! After them the frame is gone while the function still runs its last
//! instruction, normally a `ret` — so every `ret` is refused
//! ([`Verdict::InEpilogue`]; in a function with a frame, a `ret` can only run
//! after the frame was popped). A tail call is `pop rbp; jmp target` (or a
//! conditional branch after `pop rbp`, which LLVM emits for conditional tail
//! calls): a branch is refused when the byte just before it is `pop rbp` (0x5D,
//! also the last byte of `48 5D`) or `leave` (0xC9). A coincidental 0x5D/0xC9
//! as the last byte of some other instruction only costs a refusal. When the
//! preceding bytes are not available (PC at the start of a region), every
//! unconditional branch is refused; conditional ones are accepted.
//!
//! `syscall`, `sysenter` and `int n` are refused ([`Verdict::Syscall`]): the PC
//! of a syscall the kernel is about to restart (SA_RESTART or
//! `restart_syscall`) points at the syscall instruction, and a
//! `restart_syscall` depends on per-thread kernel state that another task run
//! on this worker meanwhile could overwrite.
//!
//! Bytes that do not decode, or an instruction that would extend past `code`,
//! are refused ([`Verdict::Undecodable`]). The decoder is given exactly `code`
//! and never looks outside it.
//!
//! Everything else is accepted: string instructions interrupted mid-way keep
//! their progress in RCX/RSI/RDI, LOCK-prefixed instructions are atomic (x86
//! has no load-linked/store-conditional pairs whose retry loop a preemption
//! could livelock), and an RTM transaction is aborted by the signal itself, so
//! the PC we see is already the abort path.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, Register};

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// How many bytes before the PC [`classify_with_prev`] may look at (it uses
/// only the last one; callers pass up to this many).
pub const MAX_LOOKBEHIND: usize = 16;

/// What the classifier thinks of an interrupted PC. The same variants in
/// both arch crates (usurp-preempt's `archif` checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Preempting here keeps the frame-pointer chain exact.
    Safe,
    /// The current function's frame record is not yet linked.
    InPrologue,
    /// The current function's frame record has already been popped.
    InEpilogue,
    /// The bytes do not decode, or the instruction extends past the region.
    Undecodable,
    /// A system call or software interrupt instruction.
    Syscall,
    /// An instruction of a vector extension whose state the spill frame
    /// does not keep. Never produced on x86-64 (XSAVE saves every
    /// OS-enabled component); aarch64 refuses SVE/SME instructions with it.
    VectorExtension,
}

fn decode_one(code: &[u8], pc: usize) -> Option<Instruction> {
    let mut d = Decoder::try_with_ip(64, code, pc as u64, DecoderOptions::NONE).ok()?;
    if !d.can_decode() {
        return None;
    }
    let ins = d.decode();
    if ins.is_invalid() || ins.len() > code.len() {
        return None;
    }
    Some(ins)
}

/// Classifies the instruction at `pc`. `code` holds the bytes from `pc` to the
/// end of the registered region (at most [`MAX_INSN_LEN`] are looked at).
/// Never reads outside `code`; never panics. Without the preceding bytes, every
/// unconditional branch is treated as a possible tail call and refused; the
/// preemption crate uses [`classify_with_prev`] where it can.
pub fn classify(code: &[u8], pc: usize) -> Verdict {
    classify_with_prev(&[], code, pc)
}

/// Like [`classify`], with `prev` = the bytes immediately before `pc` (inside
/// the same registered region; may be empty), used to recognise a branch that
/// follows `pop rbp` / `leave` (a tail call with the frame already torn down).
pub fn classify_with_prev(prev: &[u8], code: &[u8], pc: usize) -> Verdict {
    let code = match code.get(..MAX_INSN_LEN) {
        Some(c) => c,
        None => code,
    };
    let ins = match decode_one(code, pc) {
        Some(i) => i,
        None => return Verdict::Undecodable,
    };
    match ins.mnemonic() {
        Mnemonic::Endbr64 | Mnemonic::Endbr32 => return Verdict::InPrologue,
        Mnemonic::Push if ins.op0_register() == Register::RBP => return Verdict::InPrologue,
        Mnemonic::Mov if ins.op0_register() == Register::RBP && ins.op1_register() == Register::RSP => {
            return Verdict::InPrologue
        }
        Mnemonic::Syscall | Mnemonic::Sysenter | Mnemonic::Int | Mnemonic::Int1 | Mnemonic::Int3 | Mnemonic::Into => {
            return Verdict::Syscall
        }
        _ => {}
    }
    let after_pop_rbp = matches!(prev.last(), Some(0x5D) | Some(0xC9));
    match ins.flow_control() {
        FlowControl::Return => Verdict::InEpilogue,
        FlowControl::UnconditionalBranch | FlowControl::IndirectBranch => {
            if prev.is_empty() || after_pop_rbp {
                Verdict::InEpilogue
            } else {
                Verdict::Safe
            }
        }
        FlowControl::ConditionalBranch if after_pop_rbp => Verdict::InEpilogue,
        _ => Verdict::Safe,
    }
}

/// True if `ret_addr` directly follows a call instruction. `code_before` holds
/// the bytes immediately before `ret_addr` (its last byte is at
/// `ret_addr - 1`); every candidate length from 2 to 15 bytes that fits in it
/// is decoded, and one of them must be a complete near call ending exactly at
/// `ret_addr`. Never reads outside `code_before`.
pub fn is_after_call(code_before: &[u8], ret_addr: usize) -> bool {
    for len in 2..=MAX_INSN_LEN.min(code_before.len()) {
        let Some(start) = code_before.len().checked_sub(len) else { break };
        let Some(bytes) = code_before.get(start..) else { continue };
        let Some(ip) = ret_addr.checked_sub(len) else { continue };
        if let Some(ins) = decode_one(bytes, ip) {
            let is_call = matches!(ins.flow_control(), FlowControl::Call | FlowControl::IndirectCall);
            if is_call && ins.len() == len && ins.mnemonic() == Mnemonic::Call {
                return true;
            }
        }
    }
    false
}
