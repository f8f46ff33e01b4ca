//! Floor 4: adapters. The glue between the scheduler and the preemption
//! crate (`preempt_glue.rs`: signal-handler hooks, per-thread slots), the
//! GC crate (`gc_world.rs`: the GC's `World`; `heap_roots.rs`: GC values
//! held in Rust heap memory), and task dumps (`dump.rs`, `dumpsig.rs`).
//!
//! Nothing below this floor imports these modules by path except the few
//! call sites the crate docs list ("Layers"); they are imported by the
//! public API (`runtime.rs`, `join.rs`, `sync/`, `hooks.rs`).

pub(crate) mod dump;
pub(crate) mod dumpsig;
pub(crate) mod gc_world;
pub(crate) mod heap_roots;
pub(crate) mod preempt_glue;
