//! # usurp-arch-x86_64: everything usurp knows about x86-64
//!
//! The rest of usurp is ISA-neutral. Whatever depends on the instruction set —
//! assembly, the layout of a signal's `ucontext`, how a half-executed call looks
//! in machine code — lives in this crate (and its twin `usurp-arch-aarch64`),
//! behind one interface that the other crates reach through `cfg(target_arch)`.
//!
//! The interface (written once, with types, in usurp-preempt's
//! `archif::conformance`, which fails to compile when either crate drifts
//! from it):
//!
//! * [`switch`] / [`init_stack`] (module `switch`): the cooperative context
//!   switch. A suspended context is one word, its stack pointer; the
//!   callee-saved registers the System V ABI obliges us to keep (rbx, rbp,
//!   r12–r15, MXCSR and the x87 control word) sit on its own stack, below that
//!   word. Everything else is caller-saved, so the compiler has already spilled
//!   whatever it still needs before it called `switch`.
//! * [`sigctx`]: reading the interrupted PC/SP/FP from a signal's ucontext, and
//!   [`sigctx::inject_spill`], which rewrites the ucontext so that leaving the
//!   signal handler "calls" the spill routine — skipping the 128-byte red zone
//!   that belongs to the interrupted code.
//! * The spill routine (module `spill`): saves every GPR, RFLAGS and the full
//!   XSAVE state (XCR0 mask) on the task's stack into a [`SpillFrame`] linked
//!   into the frame-pointer chain, calls the hook installed with
//!   [`set_spill_hook`] (which parks the task and returns when it is resumed),
//!   restores everything and returns to the interrupted PC with RSP exact.
//! * [`classify`] (module `classify`, portable): decodes the one instruction at
//!   an interrupted PC with iced-x86 and refuses the points where the
//!   frame-pointer chain is not exact (prologue, epilogue, tail calls) or where
//!   a preemption is otherwise unsafe (system calls, undecodable bytes); plus
//!   [`is_after_call`] for backtrace checks.
//! * [`with_registers_spilled`] (module `regs`): pushes the callee-saved
//!   registers and hands the resulting SP to a callback, for a thread that
//!   scans its own stack conservatively.
//!
//! * [`sigctx::unsaveable`]: state a spill cannot keep (here: an active CET
//!   shadow stack), and [`preemptible_section_anchor`] (module `anchor`): the
//!   instruction that keeps the `usurp_preemptible` linker section alive.
//! * [`SpillFrame`] (module `frame`, portable, as on aarch64) with the
//!   shared accessors (`gprs`, `saved_range`, `pc`, `sp`, `fp`,
//!   `frame_record`, `rebind_to_current_thread`).
//! * [`cycles`] / [`cycle_hz`] (module `cycles`): the time-stamp counter for
//!   per-task CPU time (the monotonic clock without an invariant TSC), and [`SWITCH_FRAME_RECORD`] / [`SPILLED_FRAME_RECORD`]:
//!   where a saved context's frame record sits (task dumps walk from it).
//! * [`prefetch_read`] (module `prefetch`): a cache prefetch hint
//!   (`prefetcht0`) for the collector's mark loop.
//!
//! The portable parts (the instruction classifier) compile on every host so
//! that their tests also run on an aarch64 machine; the assembly only on
//! x86-64.
#![deny(unsafe_op_in_unsafe_fn)]

mod classify;
pub use classify::{classify, classify_with_prev, is_after_call, Verdict, MAX_INSN_LEN, MAX_LOOKBEHIND};

mod tls;
pub use tls::code_touches_tls;

#[cfg(target_arch = "x86_64")]
mod cycles;
#[cfg(target_arch = "x86_64")]
pub use cycles::{cycle_hz, cycles, SPILLED_FRAME_RECORD, SWITCH_FRAME_RECORD};

#[cfg(target_arch = "x86_64")]
mod switch;
#[cfg(target_arch = "x86_64")]
pub use switch::{init_stack, switch, STACK_ALIGN};

#[cfg(target_arch = "x86_64")]
pub mod sigctx;

mod frame;
pub use frame::{SpillFrame, GPR_NAMES, RED_ZONE, SPILL_HOOK_STACK};

#[cfg(target_arch = "x86_64")]
mod spill;
#[cfg(target_arch = "x86_64")]
pub use spill::{set_spill_hook, spill_stack_needed, xsave_mask, xsave_size};

#[cfg(target_arch = "x86_64")]
mod anchor;
#[cfg(target_arch = "x86_64")]
pub use anchor::preemptible_section_anchor;

#[cfg(target_arch = "x86_64")]
mod prefetch;
#[cfg(target_arch = "x86_64")]
pub use prefetch::prefetch_read;

#[cfg(target_arch = "x86_64")]
mod regs;
#[cfg(target_arch = "x86_64")]
pub use regs::with_registers_spilled;

// A register-preservation checker in preemptible code, for stress tests
// (its docs are inner, so that its links resolve inside it).
#[cfg(target_arch = "x86_64")]
pub mod regcheck;

/// Frame-pointer prologue check (portable).
mod fpcheck;
pub use fpcheck::prologue_links_frame;
