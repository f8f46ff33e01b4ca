//! Floor 4: adapters. The glue between the scheduler and the preemption
//! crate (`preempt_glue.rs`: the signal-handler hooks; the per-thread slots
//! are `worker/thread.rs`), the
//! GC crate (`gc_world.rs`: the GC's `World`; `heap_roots.rs`: GC values
//! held in Rust heap memory), and task dumps (`dump.rs`, `dumpsig.rs`).
//!
//! Nothing below this floor imports these modules (`tests/sched_layers.rs`
//! checks it): they are imported by the public API (`runtime.rs`,
//! `join.rs`, `sync/`, `hooks.rs`), which also installs the hooks through
//! which lower floors reach them (`Shared::attach_thread`,
//! `RuntimeWorld::spawn_finalizers`).

pub(crate) mod dump;
pub(crate) mod dumpsig;
pub(crate) mod gc_world;
pub(crate) mod heap_roots;
pub(crate) mod preempt_glue;
