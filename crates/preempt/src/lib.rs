//! # usurp-preempt: asynchronous preemption
//!
//! (Skeleton: filled in by the preemption work.)
#![deny(unsafe_op_in_unsafe_fn)]

// The one ISA-specific line outside the arch crates: which of them to use.
#[cfg(target_arch = "aarch64")]
use usurp_arch_aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use usurp_arch_x86_64 as arch;
