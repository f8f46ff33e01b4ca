//! # usurp-arch-aarch64: everything usurp knows about 64-bit Arm
//!
//! The twin of `usurp-arch-x86_64`, with the same interface:
//!
//! * [`switch`] / [`init_stack`] (module `switch`): the cooperative context
//!   switch. A suspended context is one word, its stack pointer; the registers
//!   AAPCS64 makes callee-saved (x19–x28, the frame record x29/x30, d8–d15, and
//!   FPCR) sit on its own stack below that word.
//!
//! The portable parts (the hand-written instruction decoder) compile on every
//! host so that their tests also run natively on x86-64; the assembly only on
//! aarch64.
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_arch = "aarch64")]
mod switch;
#[cfg(target_arch = "aarch64")]
pub use switch::{init_stack, switch, STACK_ALIGN};
