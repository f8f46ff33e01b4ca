//! Floor 1: tasks. The task control block (`tcb.rs`: stack, saved SP, state
//! words, the park token), parking and wait queues (`wait.rs`: wait nodes,
//! claims of timed waits), task-local storage (`local.rs`), and the link a
//! join handle reads the task's CPU time through (`cpu_link.rs`).
//!
//! These modules import the primitives (floor 0). Where they must act on
//! the scheduler (park the current task, make a woken one runnable) they
//! call the worker's entry points (`crate::worker::{park_current, unpark,
//! current_task}`), the crate's one sanctioned upward call: those are the
//! scheduler's narrow interface, not its state (see the crate docs).

pub(crate) mod cpu_link;
pub(crate) mod local;
pub(crate) mod packet;
pub(crate) mod tcb;
pub(crate) mod wait;
