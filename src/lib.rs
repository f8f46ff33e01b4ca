//! # usurp
//!
//! A runtime for language VMs on Linux (x86-64 and aarch64): M:N green threads
//! ("tasks") that the runtime can preempt at almost any instruction with timer
//! signals, and a precise-plus-conservative mark-sweep garbage collector.
//!
//! This facade is the API: it re-exports the user-facing items of the member
//! crates (`usurp-sched`, `usurp-preempt`, `usurp-gc`) and none of their
//! wiring (worker slots, hooks, heap internals). `DESIGN.md` tells how the
//! crates fit together. **Read [`embedding`] before embedding usurp**: it
//! lists what a VM author must know (roots, scanners, long builtins,
//! frame pointers).
//!
//! ## Map of the API
//!
//! **Runtime and tasks**
//! * [`Runtime`] (built with [`Runtime::builder`] → [`RuntimeBuilder`]):
//!   [`Runtime::block_on`], [`Runtime::spawn`], stats ([`RuntimeStats`],
//!   [`StwStats`]), task dumps ([`Runtime::dump_tasks`] → [`TaskDump`]).
//! * [`spawn`], [`try_spawn`] → [`JoinHandle`] (with [`TaskStats`]);
//!   [`task::Builder`] names a task; [`task`] also has the current task's
//!   [`task::id`], [`task::name`], [`task::current`] and [`task::dump`].
//! * Switch points: [`yield_now`], [`sleep`], [`blocking`] (a long system
//!   call or C library call without stalling the worker).
//! * Task-local storage: [`task_local!`] → [`LocalKey`].
//! * Limits and defaults: [`MIN_QUANTUM`], [`DEFAULT_QUANTUM`],
//!   [`MAX_QUANTUM`], [`DEFAULT_TIMER_SPIN`], [`MAX_TIMER_SPIN`], [`MAX_WORKERS`], [`MIN_STACK_SIZE`],
//!   [`DEFAULT_STACK_SIZE`], [`MAX_STACK_SIZE`], [`MAX_BLOCKING_THREADS`].
//!   Errors: [`Error`].
//!
//! **Synchronisation** ([`sync`]): [`Mutex`], [`Condvar`], [`channel`],
//! [`sync_channel`], `Select`: they park the task, not the thread.
//!
//! **Preemption** ([`preempt`])
//! * [`preemptible!`] places functions where a timer signal may suspend
//!   them at any instruction; [`checkpoint`] is the cooperative poll for
//!   everything else (an interpreter's back-edges); [`no_preempt`] /
//!   [`NoPreempt`] hold preemption off.
//! * JIT code: [`preempt::register_code`] (→ [`preempt::CodeHandle`]),
//!   [`preempt::register_unsafe_range`] (→ [`preempt::RangeHandle`]),
//!   [`preempt::pc_status`].
//! * Counters: [`preempt::stats`] ([`preempt::PreemptStats`],
//!   [`preempt::Refusal`]).
//!
//! **Garbage collector** ([`gc`])
//! * Layouts: [`gc::gc_type!`] for Rust types, [`gc::Descriptor`] built at
//!   run time for a VM's own, with tagged values ([`gc::ValueEncoding`]).
//! * Allocation: [`gc::alloc`], [`gc::alloc_array`], [`gc::try_alloc`],
//!   [`gc::Gc::new`]; handles: [`gc::Gc`], [`gc::GcRef`] (element access:
//!   [`gc::GcRef::elem`]), [`gc::Member`].
//! * Roots for what no stack holds: [`gc::Root`], [`gc::RootedVec`],
//!   [`gc::Heap::add_root_scanner`]; [`gc::WeakRef`]; finalizers
//!   ([`gc::Heap::set_finalizer`]).
//! * The heap: [`gc::Heap`] ([`gc::Heap::current`] inside tasks),
//!   [`gc::HeapConfig`], [`gc::GcStats`] / [`gc::CycleStats`].
//! * Without the scheduler: [`gc::World`], [`gc::ThreadWorld`],
//!   [`gc::SoloWorld`].
//!
//! Wiring between the member crates (worker slots, park hooks, heap
//! layout) is not here; the member crates keep it in `#[doc(hidden)]`
//! modules named `internals` (and `usurp_sched::hooks`), with no stability
//! promise. Their test-only switches (negative controls that break the
//! runtime's guarantees on purpose) exist only with the `test-hooks` cargo
//! feature, off by default, which only this workspace's tests and benches
//! turn on.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod embedding;

// ---- runtime and tasks -------------------------------------------------------

#[doc(inline)]
pub use usurp_sched::{
    blocking, channel, sleep, spawn, sync_channel, try_spawn, yield_now, AccessError, Condvar, Error, JoinHandle,
    LocalKey, Mutex, MutexGuard, Receiver, Runtime, RuntimeBuilder, RuntimeStats, Sender, StwStats, SyncSender,
    DEFAULT_MAX_BLOCKING_THREADS, DEFAULT_QUANTUM, DEFAULT_STACK_SIZE, DEFAULT_TIMER_SPIN, MAX_BLOCKING_THREADS,
    MAX_QUANTUM, MAX_STACK_SIZE, MAX_TIMER_SPIN, MAX_WORKERS, MIN_QUANTUM, MIN_STACK_SIZE, TIMER_SLACK_NS,
};
// Task dumps and per-task CPU time (issue 15): `Runtime::dump_tasks`,
// `task::dump`, `task::current`, `JoinHandle::stats`.
#[doc(inline)]
pub use usurp_sched::{Frame, TaskDump, TaskInfo, TaskState, TaskStats, WaitOn, DUMP_STOP_TIMEOUT, MAX_FRAMES};
#[doc(inline)]
pub use usurp_sched::{sync, task, task_local};

/// The runtime's builder under its old name (the task builder is
/// [`task::Builder`]).
#[deprecated(note = "renamed RuntimeBuilder (the task builder is task::Builder)")]
pub type Builder = RuntimeBuilder;

// ---- preemption ----------------------------------------------------------------

#[doc(inline)]
pub use usurp_preempt::{checkpoint, no_preempt, preemptible, NoPreempt};

pub mod preempt {
    //! Preemption: safe points, JIT code registration, counters.
    //!
    //! A task is preempted asynchronously (a timer signal suspends it at the
    //! interrupted instruction) only while it runs code in a [`preemptible!`]
    //! section or in a JIT region registered with [`register_code`];
    //! everywhere else it yields at its next [`checkpoint`] (or any other
    //! switch point). See [`crate::embedding`] for what such code may do.
    #[doc(inline)]
    pub use usurp_preempt::{
        async_preempt_off, chained_signals, checkpoint, min_task_stack, no_preempt, pc_status, preempt_stack_needed,
        preemptible, preemptible_code, register_code, register_unsafe_range, signal, stats, worker_stats, CodeHandle,
        Error, NoPreempt, PcStatus, PreemptStats, RangeHandle, Refusal, SpillFrame, MAX_CODE_REGIONS,
        MAX_UNSAFE_RANGES, PREEMPTIBLE_SECTION, TASK_FRAMES_HEADROOM,
    };
}

// ---- garbage collector ---------------------------------------------------------

pub mod gc {
    //! The garbage collector's API: layouts, allocation, handles, roots, weak
    //! references, finalizers, statistics and configuration.
    //!
    //! Inside a runtime's tasks the heap is the runtime's own
    //! ([`Heap::current`], [`crate::Runtime::heap`]); [`World`] and its
    //! implementations let a VM use the heap without the scheduler. What
    //! keeps an object alive is listed in [`crate::embedding`] (and in full
    //! in `usurp-gc`'s "Roots" section).
    #[doc(inline)]
    pub use usurp_gc::{
        alloc, alloc_array, forbid_allocation, gc_type, try_alloc, try_alloc_array, usurp_gc_write_barrier,
        usurp_gc_write_barrier_value, AllocError, AllocationForbidden, ArrayDescriptorBuilder, AttachError, BadSlot,
        CompactId, ConfigError, CycleStats, Descriptor, DescriptorBuilder, DescriptorError, Gc, GcRef, GcStats, GcType, Heap,
        HeapDropped,
        HeapConfig, Member, Mutator, MutatorGuard, Root, RootScanner, RootedVec, ScannerId, SlotKind, SoloWorld,
        ThreadWorld, ValueEncoding, WeakRef, World,
    };
    pub mod stats {
        //! Statistics types and the length of the kept cycle history.
        #[doc(inline)]
        pub use usurp_gc::stats::{BadSlot, CycleStats, GcStats, HISTORY};
    }
}

/// The scheduler's public items under their former path `usurp::sched::…`
/// (they are all at the crate root); the scheduler's wiring is not here.
#[doc(hidden)]
pub mod sched {
    pub use crate::{
        blocking, channel, sleep, spawn, sync, sync_channel, task, try_spawn, yield_now, AccessError, Condvar, Error,
        Frame, JoinHandle, LocalKey, Mutex, MutexGuard, Receiver, Runtime, RuntimeBuilder, RuntimeStats, Sender,
        StwStats, SyncSender, TaskDump, TaskInfo, TaskState, TaskStats, WaitOn, DEFAULT_MAX_BLOCKING_THREADS,
        DEFAULT_QUANTUM, DEFAULT_STACK_SIZE, DEFAULT_TIMER_SPIN, DUMP_STOP_TIMEOUT, MAX_BLOCKING_THREADS, MAX_FRAMES, MAX_QUANTUM,
        MAX_STACK_SIZE, MAX_TIMER_SPIN, MAX_WORKERS, MIN_QUANTUM, MIN_STACK_SIZE, TIMER_SLACK_NS,
    };
}
