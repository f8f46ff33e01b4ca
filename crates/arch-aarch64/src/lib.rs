//! # usurp-arch-aarch64: everything usurp knows about 64-bit Arm
//!
//! The twin of `usurp-arch-x86_64`, with the same interface:
//!
//! * `switch` / `init_stack` (module `switch`): the cooperative context
//!   switch. A suspended context is one word, its stack pointer; the registers
//!   AAPCS64 makes callee-saved (x19–x28, the frame record x29/x30, d8–d15, and
//!   FPCR) sit on its own stack below that word.
//! * Asynchronous preemption (modules `sigctx`, `spill`, `frame`):
//!   the preemption signal handler reads the interrupted PC/SP/FP with
//!   [`sigctx::pc`] & co., checks the instruction with [`classify`], and calls
//!   `sigctx::inject_spill`. That changes only SP and PC in the ucontext:
//!   SP moves below a [`SpillFrame`] that the handler prefills with what only
//!   the kernel knew (interrupted SP, PC, PSTATE, signal mask, altstack), and
//!   PC points to the spill routine. The routine stores x0–x30, NZCV, FPSR,
//!   FPCR and all 128 bits of q0–q31 into the frame, makes the frame record
//!   {interrupted x29, interrupted PC} at its base current (x29), and calls the
//!   hook installed with `set_spill_hook`, which parks the task. When the
//!   hook returns, the routine executes `rt_sigreturn` on the frame, which is
//!   laid out as a kernel `rt_sigframe`: the kernel reloads every register,
//!   PSTATE and PC at once. This is the only exact way to resume on aarch64
//!   without a reserved scratch register (every indirect branch needs one).
//!   See `spill` for the proof and `sigctx` for the injection.
//! * The safe-point check (module `classify`): a hand-written decoder of the
//!   32-bit word at the PC that refuses half-built or half-torn-down frames
//!   (prologues, epilogues, `ret`, pointer-authentication and BTI hints),
//!   and undecodable words. [`classify_with_prev`] also looks at the
//!   instructions before the PC (callee-save stores/loads between the frame
//!   push and `mov x29, sp`, or after `ldp x29, x30`), which a one-word look
//!   cannot see on aarch64 (LLVM places them there). [`is_after_call`] tells a
//!   return address from any other code address, for backtrace checks.
//! * `with_registers_spilled` (module `regs`): callee-saved registers onto
//!   the stack for the collector's conservative scan.
//!
//! Decisions (details in the modules):
//! * SVE: the frame keeps v0–v31 (the low 128 bits of Z0–Z31) in its fpsimd
//!   record and, when the kernel reports SVE state live, a verbatim copy of
//!   the kernel's SVE record (Z0–Z31, P0–P15, FFR; up to [`MAX_SVE_RECORD`]
//!   bytes, i.e. vector lengths up to 768 bits), so rt_sigreturn restores
//!   it. [`sigctx::vector_state`] reports live SVE, SME streaming mode, ZA,
//!   and shadow stacks; preempt refuses on
//!   [`sigctx::VectorState::must_refuse`] (streaming, ZA, GCS, an SVE record
//!   too large, an unparsable frame).
//! * Load/store-exclusive sequences are Safe: the resume is an exception
//!   return, which clears the local exclusive monitor (`AArch64.ExceptionReturn`
//!   calls `ClearExclusiveLocal`), so a `stxr` after a preemption fails and
//!   its retry loop reloads; see `classify`.
//! * Known gap: LLVM shrink-wrapping (frameless early-exit paths even with
//!   frame pointers) is invisible to the decoder; at such PCs a backtrace
//!   misses one frame (registers are still exact). Build preemptible code
//!   with `-C llvm-args=-enable-shrink-wrap=false` to close it; see `classify`.
//!
//! # Interface (mirrors `usurp-arch-x86_64`; extensions marked +)
//!
//! The interface both crates provide is written once, with types, in
//! usurp-preempt's `archif::conformance` (which fails to compile when a
//! crate drifts from it); this is a summary.
//!
//! ```text
//! switch(save, to, arg) -> usize; init_stack(top, entry, arg) -> usize; STACK_ALIGN
//! SpillFrame { gprs() -> &[usize] (x0..x30), saved_range(), pc(), sp(), fp(),
//!              frame_record(), + lr(), x(n), pstate(), nzcv(), fpsr(), fpcr(),
//!              vregs(), looks_valid() }
//! spill_stack_needed() -> usize   (16 + 4688 + SPILL_HOOK_STACK)
//! SPILL_HOOK_STACK = 8 KiB; RED_ZONE = 0; GPR_NAMES: [&str; 31]
//! + SPILL_FRAME_SIZE = 4688; + SPILL_MAGIC; + MAX_SVE_RECORD = 3552
//! unsafe set_spill_hook(unsafe extern "C" fn(*mut SpillFrame))
//! sigctx::{pc, sp, fp, set_pc, inject_spill}(uc)
//!   + sigctx::{lr, reg}(uc[, n]); + inject_spill_to(uc, entry) (portable, tests)
//!   + sigctx::vector_state(uc) -> VectorState { sve_live, sve_record, sve_size,
//!     streaming, za_live, gcs, malformed }, VectorState::must_refuse();
//!     sigctx::has_live_sve(uc); MAX_SVE_RECORD; SpillFrame::sve_record_size()
//! Verdict { Safe, InPrologue, InEpilogue, Undecodable, Syscall,
//!           VectorExtension }  (the same variants on x86-64, which never
//!           gives VectorExtension)
//! sigctx::unsaveable(uc) -> Option<Unsaveable { ShadowStack, VectorState }>
//! preemptible_section_anchor() -> usize  (the usurp_preemptible section's anchor)
//! classify(code, pc); classify_with_prev(prev, code, pc); is_after_call(before, ret)
//! MAX_INSN_LEN = 4; + MAX_LOOKBEHIND = 64
//! with_registers_spilled(&mut dyn FnMut(usize))
//! ```
//!
//! Also (issue 15): `cycles()` (cntvct_el0), `cycle_hz()` (cntfrq_el0) for
//! per-task CPU time; `SWITCH_FRAME_RECORD` / `SPILLED_FRAME_RECORD`: where
//! a saved context's frame record sits, for task dumps. `prefetch_read(addr)`
//! (`prfm pldl1keep`): a cache prefetch hint for the collector's mark loop.
//!
//! What the preemption check should do on aarch64, beyond x86-64: refuse if
//! `sigctx::vector_state(uc).must_refuse()`; pass the words before the PC
//! (`classify_with_prev`, up to [`MAX_LOOKBEHIND`] bytes inside the region):
//! without them every unconditional branch is refused and callee-save stores
//! right after a frame push are accepted.
//!
//! The portable parts (the decoder, the frame and ucontext layouts, the
//! record scanner) compile on every host so that their tests also run
//! natively on x86-64; the assembly only on aarch64.
#![deny(unsafe_op_in_unsafe_fn)]
// `x % n == 0` instead of `is_multiple_of` (stable since 1.87): MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

mod classify;
mod frame;
mod tls;
pub use tls::code_touches_tls;
mod fpcheck;
pub use fpcheck::prologue_links_frame;
pub mod layout;
pub mod sigctx;

pub use classify::{
    classify, classify_with_prev, is_after_call, Verdict, MAX_INSN_LEN, MAX_LOOKBEHIND,
};
pub use frame::{
    spill_stack_needed, SpillFrame, GPR_NAMES, MAX_SVE_RECORD, RED_ZONE, SPILL_FRAME_SIZE,
    SPILL_HOOK_STACK, SPILL_MAGIC,
};

#[cfg(target_arch = "aarch64")]
mod anchor;
#[cfg(target_arch = "aarch64")]
pub use anchor::preemptible_section_anchor;
#[cfg(target_arch = "aarch64")]
mod cycles;
#[cfg(target_arch = "aarch64")]
pub use cycles::{cycle_hz, cycles, SPILLED_FRAME_RECORD, SWITCH_FRAME_RECORD};
#[cfg(target_arch = "aarch64")]
mod prefetch;
#[cfg(target_arch = "aarch64")]
pub use prefetch::prefetch_read;
#[cfg(target_arch = "aarch64")]
mod regs;
#[cfg(target_arch = "aarch64")]
mod spill;
#[cfg(target_arch = "aarch64")]
mod switch;
#[cfg(target_arch = "aarch64")]
pub use regs::with_registers_spilled;

// A register-preservation checker in preemptible code, for stress tests
// (its docs are inner, so that its links resolve inside it).
#[cfg(target_arch = "aarch64")]
pub mod regcheck;
#[cfg(target_arch = "aarch64")]
pub use spill::set_spill_hook;
#[cfg(target_arch = "aarch64")]
pub use switch::{init_stack, switch, STACK_ALIGN};

