//! # usurp-arch-x86_64: everything usurp knows about x86-64
//!
//! The rest of usurp is ISA-neutral. Whatever depends on the instruction set —
//! assembly, the layout of a signal's `ucontext`, how a half-executed call looks
//! in machine code — lives in this crate (and its twin `usurp-arch-aarch64`),
//! behind one interface that the other crates reach through `cfg(target_arch)`.
//!
//! The interface:
//!
//! * [`switch`] / [`init_stack`] (module `switch`): the cooperative context
//!   switch. A suspended context is one word, its stack pointer; the
//!   callee-saved registers the System V ABI obliges us to keep (rbx, rbp,
//!   r12–r15, MXCSR and the x87 control word) sit on its own stack, below that
//!   word. Everything else is caller-saved, so the compiler has already spilled
//!   whatever it still needs before it called `switch`.
//!
//! The portable parts (the instruction classifier) compile on every host so
//! that their tests also run on an aarch64 machine; the assembly only on
//! x86-64.
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_arch = "x86_64")]
mod switch;
#[cfg(target_arch = "x86_64")]
pub use switch::{init_stack, switch, STACK_ALIGN};
