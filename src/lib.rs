//! # usurp
//!
//! A runtime for language VMs on Linux (x86-64 and aarch64): M:N green threads
//! ("tasks") that the runtime can preempt at almost any instruction with timer
//! signals, and a precise-plus-conservative mark-sweep garbage collector.
//!
//! This facade only re-exports the public API of the member crates; see
//! `DESIGN.md` for how they fit together.
pub use usurp_gc as gc;
pub use usurp_preempt as preempt;
pub use usurp_sched as sched;
