//! The spill routine: saves every register of an async-preempted context
//! into its [`SpillFrame`], calls the park hook, and resumes the context
//! exactly through `rt_sigreturn`.
//!
//! # Why rt_sigreturn
//!
//! Resuming must reload all 31 general registers and SP, and then branch to
//! the interrupted PC. Every aarch64 indirect branch (`br`, `blr`, `ret`,
//! `eret` aside) takes its target in a general register, and there is no
//! memory-indirect branch, so a user-mode epilogue always needs one scratch
//! register after all of them are reloaded. Go reserves one (R27) in its
//! ABI; Rust and C code do not. Self-modifying a per-thread `b <pc>`
//! trampoline would need W+X memory and cache maintenance on every resume.
//!
//! The kernel has no such problem: an exception return writes PC and PSTATE
//! from ELR/SPSR. `rt_sigreturn` takes a user-built `rt_sigframe` at SP and
//! restores from it x0–x30, SP, PC, PSTATE (NZCV, BTYPE, ...), FPSR, FPCR,
//! v0–v31, the signal mask and the alternate-stack setting, then returns to
//! user mode through ERET; its return value is the restored x0 (it sets
//! `forget_syscall`, so no syscall-restart logic touches x0 or PC). So the
//! spill frame is laid out as an rt_sigframe (see `frame`), and the routine
//! ends with `mov x8, #139; svc #0`.
//!
//! # Proof sketch
//!
//! 1. On entry (from `sigctx::inject_spill`) every register but SP and PC
//!    holds the interrupted value; SP = F, and [F, S) holds the interrupted
//!    SP, PC, PSTATE, mask, altstack, and the fpsimd/null record headers.
//! 2. The routine's first 16 instructions store x0–x30 before it writes any
//!    of them (x0 is stored by the first `stp` before `add x0` reuses it as
//!    the base). Then FPSR/FPCR (through x2/x3, already saved) and q0–q31
//!    (untouched so far), then NZCV (untouched: no flag-setting instruction
//!    precedes the `mrs`) is merged into the saved PSTATE.
//! 3. The hook runs below F (AAPCS64 callee: SP, x19–x29 preserved; it
//!    may switch away and back through `switch`, which preserves them too),
//!    so on its return SP = x29 = F and the frame is intact (it lies above
//!    every SP used meanwhile, and the task's stack is private to the task).
//! 4. rt_sigreturn with SP = F (16-aligned, which the kernel requires) parses
//!    exactly the records we wrote (fpsimd, then null: the kernel and QEMU
//!    require the fpsimd record and accept its absence of SVE/ZA records),
//!    validates PSTATE (it came from the kernel, so it is a valid EL0t
//!    value), and resumes at the saved PC with every saved register.
//! 5. Signal mask and alternate stack: rt_sigreturn sets both from the
//!    frame. The values captured at the interruption would undo whatever
//!    the thread changed while the task was parked (another task on the same
//!    worker blocking a signal, the runtime moving the alternate stack), so
//!    right before rt_sigreturn the routine overwrites them with the
//!    thread's current ones (`rt_sigprocmask(_, NULL, &uc_sigmask, 8)`,
//!    `sigaltstack(NULL, &uc_stack)`): the return sets them to what they
//!    already are. On x86-64 the resume is a plain `ret` and touches neither.
//!
//! The test `tests/spill.rs` (`registers_survive_preemption`) runs the
//! register checker (`regcheck`: x0–x17, x19–x28, q0–q31 at 128 bits) with
//! FPCR/FPSR patterns across thousands of preemptions during which another
//! context clobbers every register, and checks every saved x0–x30 and NZCV
//! against the kernel's ucontext.
//!
//! DWARF CFI: the routine describes itself as a signal frame
//! (`.cfi_signal_frame`: the "return address" is the interrupted PC itself,
//! not a call's return address). SP is F from the first instruction to
//! `rt_sigreturn` (no pushes; the hook's frames lie below), so every rule is
//! an expression on SP: CFA = `[F + 560]` (the interrupted SP), the
//! return-address column (x30, the only one libgcc's unwinder accepts for
//! ordinary FDEs: its table has no size for DWARF 32, the PC) is the
//! interrupted PC at `F + 568`, and x0–x29 are at `F + 312 + 8n`, declared
//! right after they are stored (until then they still hold the interrupted
//! values: "same value"). The price: an unwinder does not see the
//! interrupted x30 itself, which only matters for code preempted without a
//! frame record (hand-written or JIT leaf code; Rust code built with frame
//! pointers has saved its LR in its record). gdb, perf (`--call-graph
//! dwarf`) and libgcc's
//! `_Unwind_Backtrace` (Rust's `std::backtrace`) walk from the hook through
//! the spill routine into the interrupted function and its callers; the
//! frame-pointer chain continues too, through the frame record at F
//! ([`SpillFrame::frame_record`]).

use crate::frame::{SpillFrame, OFF_FPSIMD, OFF_PSTATE, OFF_REGS, OFF_SIGMASK, OFF_STACK};
use crate::layout::{NR_RT_SIGPROCMASK, NR_RT_SIGRETURN, NR_SIGALTSTACK};
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The installed hook (0 = none: the routine resumes at once).
static SPILL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the function the spill routine calls after saving everything.
/// The hook parks the task (switches away with `switch`) and returns when
/// the task is resumed, on the same OS thread; the routine then restores
/// every register exactly and resumes at the interrupted PC. Set once at
/// startup (a later call replaces the hook for future preemptions).
///
/// # Safety
/// The spill routine's assembly calls `hook` on the interrupted task's own
/// stack, right below the [`SpillFrame`], with the interrupted code's
/// registers saved only in that frame, and after it returns resumes the
/// task with `rt_sigreturn` on the frame. So `hook` must not unwind, must
/// leave the frame and the stack above it untouched (other than through
/// `SpillFrame`'s methods), must use at most `SPILL_HOOK_STACK` bytes of
/// stack (what `spill_stack_needed` reserves), and if it returns on another
/// thread than the one the task was interrupted on it must first call
/// [`SpillFrame::rebind_to_current_thread`] (the frame carries the old
/// thread's alternate signal stack), the interrupted code holding nothing
/// tied to the old thread.
pub unsafe fn set_spill_hook(hook: unsafe extern "C" fn(frame: *mut SpillFrame)) {
    SPILL_HOOK.store(hook as usize, Ordering::Release);
}

/// The address of the spill routine (for `sigctx::inject_spill`).
pub(crate) fn spill_routine_address() -> usize {
    usurp_aarch64_spill as *const () as usize
}

extern "C" {
    fn usurp_aarch64_spill();
}

// usurp_aarch64_spill: entered by an exception return (the preemption
// handler's sigreturn), not by a call. CFI (raw DWARF through .cfi_escape,
// since the CFA is a memory load): DW_CFA_def_cfa_expression
// {DW_OP_breg31 560; DW_OP_deref}, and DW_CFA_expression reg {DW_OP_breg31
// off} for the return column x30 (the interrupted PC, off 568) and x0-x29
// (off 312 + 8n).
//
// Entry state:  SP = F (16-aligned SpillFrame base, below the interrupted SP)
//               x0–x30, NZCV, FPSR, FPCR, v0–v31 = interrupted values
//               LR (x30) = the interrupted LR (NOT a return address)
//
// Stack layout it completes (offsets from F; see frame.rs):
//   F+0     {interrupted x29, interrupted pc}   prefilled: frame record
//   F+312   x0 .. x30                           stored here
//   F+560   sp, pc, pstate                      prefilled; NZCV merged here
//   F+592   fpsimd_context head                 prefilled
//   F+600   fpsr, fpcr                          stored here
//   F+608   q0 .. q31                           stored here
//   F+1120  null record                         prefilled
//
// Registers saved: ALL of x0–x30, NZCV, FPSR, FPCR and all 128 bits of
// q0–q31, because the interrupted code was stopped at an arbitrary
// instruction: no register is dead, none is callee-saved. x0 is stored by the
// first instruction, then serves as the base register (the regs array starts
// at F+312, out of reach of an SP-based `stp` beyond x25). x1–x3 serve as
// scratch only after they are stored. x16 (IP0) holds the hook address.
// Before the call, x29 = F makes the prefilled frame record the current one:
// a frame-pointer walk from the hook goes hook -> F -> interrupted frame.
// After the hook: SP = x29 = F again (callee-saved); the frame's mask and
// alternate stack are refreshed from the thread's current ones (x0-x3 and x8
// are free: rt_sigreturn reloads every register from the frame); then
// rt_sigreturn.
global_asm!(
    ".text",
    ".globl usurp_aarch64_spill",
    ".type usurp_aarch64_spill,%function",
    ".p2align 4",
    "usurp_aarch64_spill:",
    // DWARF CFI (gdb, perf, libgcc's unwinder): a signal frame whose CFA and
    // registers are found through SP = F; see the comment above.
    ".cfi_startproc",
    ".cfi_signal_frame",
    // CFA = the interrupted SP, stored at [sp + 560] (sp = F throughout).
    ".cfi_escape 0x0f, 0x04, 0x8f, 0xb0, 0x04, 0x06",
    // The return address (column x30, as libgcc and gdb expect on aarch64)
    // is the interrupted PC, saved at [sp + 568].
    ".cfi_escape 0x10, 0x1e, 0x03, 0x8f, 0xb8, 0x04",
    "stp x0, x1, [sp, #{regs}]",
    ".cfi_escape 0x10, 0x00, 0x03, 0x8f, 0xb8, 0x02",
    ".cfi_escape 0x10, 0x01, 0x03, 0x8f, 0xc0, 0x02",
    "add x0, sp, #{regs}",
    "stp x2, x3, [x0, #16]",
    "stp x4, x5, [x0, #32]",
    "stp x6, x7, [x0, #48]",
    "stp x8, x9, [x0, #64]",
    "stp x10, x11, [x0, #80]",
    "stp x12, x13, [x0, #96]",
    "stp x14, x15, [x0, #112]",
    "stp x16, x17, [x0, #128]",
    "stp x18, x19, [x0, #144]",
    "stp x20, x21, [x0, #160]",
    "stp x22, x23, [x0, #176]",
    "stp x24, x25, [x0, #192]",
    "stp x26, x27, [x0, #208]",
    "stp x28, x29, [x0, #224]",
    "str x30, [x0, #240]",
    // From here every general register is in the frame.
    ".cfi_escape 0x10, 0x02, 0x03, 0x8f, 0xc8, 0x02",
    ".cfi_escape 0x10, 0x03, 0x03, 0x8f, 0xd0, 0x02",
    ".cfi_escape 0x10, 0x04, 0x03, 0x8f, 0xd8, 0x02",
    ".cfi_escape 0x10, 0x05, 0x03, 0x8f, 0xe0, 0x02",
    ".cfi_escape 0x10, 0x06, 0x03, 0x8f, 0xe8, 0x02",
    ".cfi_escape 0x10, 0x07, 0x03, 0x8f, 0xf0, 0x02",
    ".cfi_escape 0x10, 0x08, 0x03, 0x8f, 0xf8, 0x02",
    ".cfi_escape 0x10, 0x09, 0x03, 0x8f, 0x80, 0x03",
    ".cfi_escape 0x10, 0x0a, 0x03, 0x8f, 0x88, 0x03",
    ".cfi_escape 0x10, 0x0b, 0x03, 0x8f, 0x90, 0x03",
    ".cfi_escape 0x10, 0x0c, 0x03, 0x8f, 0x98, 0x03",
    ".cfi_escape 0x10, 0x0d, 0x03, 0x8f, 0xa0, 0x03",
    ".cfi_escape 0x10, 0x0e, 0x03, 0x8f, 0xa8, 0x03",
    ".cfi_escape 0x10, 0x0f, 0x03, 0x8f, 0xb0, 0x03",
    ".cfi_escape 0x10, 0x10, 0x03, 0x8f, 0xb8, 0x03",
    ".cfi_escape 0x10, 0x11, 0x03, 0x8f, 0xc0, 0x03",
    ".cfi_escape 0x10, 0x12, 0x03, 0x8f, 0xc8, 0x03",
    ".cfi_escape 0x10, 0x13, 0x03, 0x8f, 0xd0, 0x03",
    ".cfi_escape 0x10, 0x14, 0x03, 0x8f, 0xd8, 0x03",
    ".cfi_escape 0x10, 0x15, 0x03, 0x8f, 0xe0, 0x03",
    ".cfi_escape 0x10, 0x16, 0x03, 0x8f, 0xe8, 0x03",
    ".cfi_escape 0x10, 0x17, 0x03, 0x8f, 0xf0, 0x03",
    ".cfi_escape 0x10, 0x18, 0x03, 0x8f, 0xf8, 0x03",
    ".cfi_escape 0x10, 0x19, 0x03, 0x8f, 0x80, 0x04",
    ".cfi_escape 0x10, 0x1a, 0x03, 0x8f, 0x88, 0x04",
    ".cfi_escape 0x10, 0x1b, 0x03, 0x8f, 0x90, 0x04",
    ".cfi_escape 0x10, 0x1c, 0x03, 0x8f, 0x98, 0x04",
    ".cfi_escape 0x10, 0x1d, 0x03, 0x8f, 0xa0, 0x04",
    // x1 = &fpsimd_context; fpsr at +8, fpcr at +12, v0 at +16.
    "add x1, sp, #{fpsimd}",
    "mrs x2, fpsr",
    "mrs x3, fpcr",
    "stp w2, w3, [x1, #8]",
    "stp q0, q1, [x1, #16]",
    "stp q2, q3, [x1, #48]",
    "stp q4, q5, [x1, #80]",
    "stp q6, q7, [x1, #112]",
    "stp q8, q9, [x1, #144]",
    "stp q10, q11, [x1, #176]",
    "stp q12, q13, [x1, #208]",
    "stp q14, q15, [x1, #240]",
    "stp q16, q17, [x1, #272]",
    "stp q18, q19, [x1, #304]",
    "stp q20, q21, [x1, #336]",
    "stp q22, q23, [x1, #368]",
    "stp q24, q25, [x1, #400]",
    "stp q26, q27, [x1, #432]",
    "stp q28, q29, [x1, #464]",
    "stp q30, q31, [x1, #496]",
    // pstate = (prefilled pstate & ~NZCV) | NZCV (the live flags).
    "mrs x2, nzcv",
    "ldr x3, [sp, #{pstate}]",
    "bic x3, x3, #0xf0000000",
    "orr x3, x3, x2",
    "str x3, [sp, #{pstate}]",
    // The frame record at F becomes current.
    "mov x29, sp",
    "adrp x16, :got:{hook}",
    "ldr x16, [x16, :got_lo12:{hook}]",
    "ldr x16, [x16]",
    "cbz x16, 1f",
    "mov x0, sp",
    "blr x16",
    "1:",
    "mov sp, x29",
    "mov x0, #0",
    "mov x1, #0",
    "add x2, sp, #{sigmask}",
    "mov x3, #8",
    "mov x8, #{nr_mask}",
    "svc #0",
    "mov x0, #0",
    "add x1, sp, #{stack}",
    "mov x8, #{nr_ss}",
    "svc #0",
    "mov x8, #{nr}",
    "svc #0",
    // rt_sigreturn does not return; a rejected frame raises SIGSEGV instead.
    "brk #0x5350",
    ".cfi_endproc",
    ".size usurp_aarch64_spill, . - usurp_aarch64_spill",
    regs = const OFF_REGS,
    fpsimd = const OFF_FPSIMD,
    pstate = const OFF_PSTATE,
    nr = const NR_RT_SIGRETURN,
    nr_mask = const NR_RT_SIGPROCMASK,
    nr_ss = const NR_SIGALTSTACK,
    sigmask = const OFF_SIGMASK,
    stack = const OFF_STACK,
    hook = sym SPILL_HOOK,
);
