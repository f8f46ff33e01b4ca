//! Floor 3: workers and machines, split by job.
//!
//! A *worker* (Go's P) owns the scheduling state: a ring of runnable tasks, a
//! LIFO `runnext` slot, a free cache of task structs, an inbox for pinned
//! tasks, and the hook state the preemption and GC crates read
//! (`switch_count`, `running_task`). A *machine* (Go's M) is an OS thread; it
//! runs a worker's scheduler loop on its own stack. Normally worker i is
//! driven by machine i; `blocking(f)` hands a worker to a spare machine while
//! the calling machine blocks.
//!
//! Switching is direct task-to-task whenever the worker has a task ready
//! (runnext or ring): the outgoing task picks its successor on its own stack,
//! then `switch`es with an *action word* (`outgoing task | action`). The
//! incoming context — whichever it is: a resumed task, a new task's entry, or
//! the scheduler loop — runs `finish_switch` (`switch.rs`) first, which does what the
//! outgoing task could not do while its registers were still live: put it in
//! a run queue (yield), complete parking (park), recycle it (exit), queue it
//! globally (return from blocking), or queue it pinned (async preemption).
//! Only when nothing is ready locally does a task switch to its machine's
//! scheduler loop, which searches globally, steals, fires timers, and sleeps
//! on a futex when there is nothing at all.
//!
//! - `machine.rs`: the per-thread machine, the worker's state, and the
//!   accessors the compiler cannot cache (`machine`, `Current`,
//!   `current_task`);
//! - `policy.rs`: picking the next task, stealing, idling and waking,
//!   fairness, contention;
//! - `switch.rs`: the switch protocol (`switch_to`/`finish_switch`), the
//!   park token, and the scheduler loop;
//! - `blocking.rs`: the blocking handoff, with its in-place fallback;
//! - `stand_aside.rs`: a worker lent to the GC's background collector while
//!   it marks, where the workers and the collector outnumber the CPUs;
//! - `thread.rs`: a runtime thread's preemption slot, its GC mutator (through
//!   the `Shared::attach_thread` hook) and the signal mask;
//! - `guard.rs`: guard-page overflow reports and alternate signal stacks.

mod blocking;
pub(crate) mod guard;
mod machine;
mod policy;
mod stand_aside;
mod switch;
pub(crate) mod thread;

pub(crate) use blocking::{blocking_dyn, blocking_leave_worker};
pub(crate) use machine::{
    current_cpu_cycles, current_task, current_task_ref, machine, machine_in_signal, Current, Machine, Worker,
};
// The policy switches and counters among these are named only by `hooks`'
// test switches (compiled with the `test-hooks` feature).
#[cfg_attr(not(feature = "test-hooks"), allow(unused_imports))]
pub(crate) use policy::{
    make_runnable, wake_worker_word, wakers_contend, BOOST_FIRST_VERSION, BOOST_OFF, BOOST_POLICY, BOOST_UNBOUNDED,
    PREEMPTED_TO_GLOBAL, SPINNER_WAKEP, LONE_SPIN, LONE_SPINS, SPIN_NAP, SPIN_NAPS, SPIN_NAP_SOLE, MAX_NAPPING, NAP_NS_FOR_TESTS, STOP_WAKES_NAPPERS, TIMER_WAKES_NAPPER, IDLE_WAKE_CALLS, TICK_ALWAYS, TICK_NO_WAKE, TICK_POLICY, TIMER_SPINS, TIMER_SPIN_BLIND, TIMER_SPIN_DUTY_ON, TIMER_SPIN_NS, TIMER_SPIN_WAITS, TIMER_SPIN_BACKOFF_ON, TIMER_SPIN_FAKE_LOSS, TIMER_SPIN_BACKOFFS,
};
pub(crate) use stand_aside::{begin as stand_aside_begin, end as stand_aside_end, wake_aside as stand_aside_wake, Lend};
#[cfg_attr(not(feature = "test-hooks"), allow(unused_imports))]
pub(crate) use stand_aside::{CALLBACKS as STAND_ASIDE_CALLBACKS, CPUS_FOR_TESTS as STAND_ASIDE_CPUS, KEEP_BOOSTED as STAND_ASIDE_KEEPS_BOOSTED, RESPECT_PINS as STAND_ASIDE_RESPECTS_PINS, STAND_ASIDE, STOP_PROTOCOL as STAND_ASIDE_STOP_PROTOCOL};
pub(crate) use switch::{after_stop, machine_main, park_current, preempt_current, task_entry, unpark, yield_at_checkpoint, yield_current};
#[cfg(feature = "test-hooks")]
pub(crate) use switch::TIMERS_AT_CHECKPOINT;
