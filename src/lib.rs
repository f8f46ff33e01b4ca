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

pub use usurp_sched::{
    blocking, channel, sleep, spawn, sync, sync_channel, task, task_local, try_spawn, yield_now, AccessError,
    Builder, Condvar, Error, JoinHandle, LocalKey, Mutex, MutexGuard, Receiver, Runtime, RuntimeStats, Sender,
    StwStats, SyncSender, DEFAULT_QUANTUM, MAX_QUANTUM, MIN_QUANTUM, TIMER_SLACK_NS,
};
// Task dumps and per-task CPU time (issue 15): `Runtime::dump_tasks`,
// `task::dump`, `task::current`, `JoinHandle::stats`.
pub use usurp_sched::{Frame, TaskDump, TaskInfo, TaskState, TaskStats, WaitOn, DUMP_STOP_TIMEOUT};

pub use usurp_preempt::{checkpoint, no_preempt, preemptible, NoPreempt};
