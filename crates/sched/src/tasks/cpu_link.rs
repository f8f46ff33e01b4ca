//! The link through which a join handle reads its task's CPU time (the
//! join state's part that the task itself touches: `tcb.rs`'s `Body`
//! hands it to the exiting task, which retires it). Moved down from
//! `join.rs` so that the task floor does not import the public API.

use crate::tasks::tcb::Task;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// How a join handle reads its task's CPU time (issue 15) without touching
/// the task's switch path: while the task lives, through the task struct
/// (its `cpu`, charged at every switch out); once it finished, the final
/// figure the task left here. The task struct may be recycled and freed
/// after the task exits, so a reader announces itself in `readers` before it
/// loads `task`, and the exiting task, after storing the final figure and
/// clearing `task` (SeqCst), waits until no reader is left (a few loads:
/// readers never block). So a reader either sees `task` null and reads the
/// final figure, or is counted before the task clears it and reads the
/// struct before the task goes on to exit.
pub(crate) struct CpuLink {
    /// The running task; null once it finished (or never started running).
    /// Set once at spawn, cleared once by the task (`retire`).
    pub(crate) task: AtomicPtr<Task>,
    /// Readers between their load of `task` and their read of the struct.
    readers: AtomicU32,
    /// The task's CPU cycles when it finished (written by `retire` before
    /// `task` is cleared).
    final_cycles: AtomicU64,
    /// The task's runtime measures CPU time (`RuntimeBuilder::task_cpu_time`).
    /// Off, the task is never charged and `cycles` is not consulted.
    pub(crate) on: bool,
}

impl CpuLink {
    pub(crate) fn new(on: bool) -> CpuLink {
        CpuLink {
            task: AtomicPtr::new(std::ptr::null_mut()),
            readers: AtomicU32::new(0),
            final_cycles: AtomicU64::new(0),
            on,
        }
    }

    /// The task's CPU cycles: up to its last switch out while it runs, the
    /// final figure once it finished. Never inlined: called from the generic
    /// `JoinHandle` methods, which may be inlined into `preemptible!` code,
    /// and a reader preempted between its count and its uncount would keep
    /// an exiting task spinning in `retire` (maybe on the reader's worker).
    #[inline(never)]
    pub(crate) fn cycles(&self) -> u64 {
        self.readers.fetch_add(1, Ordering::SeqCst);
        let t = self.task.load(Ordering::SeqCst);
        let v = if t.is_null() {
            self.final_cycles.load(Ordering::SeqCst)
        } else {
            // SAFETY: `t` was non-null after we counted ourselves in
            // `readers`, so its task has not passed the wait in `retire`
            // yet: the struct stays allocated until we leave `readers`.
            unsafe { (*t).cpu.load(Ordering::Relaxed) }
        };
        self.readers.fetch_sub(1, Ordering::SeqCst);
        v
    }

    /// Called by the task once, when its body is done: publishes its final
    /// CPU cycles and detaches from the link (see the type's docs).
    pub(crate) fn retire(&self, cycles: u64) {
        // Release is enough here (and a plain store on x86, where a SeqCst
        // store is a locked exchange): a reader loads it only after seeing
        // `task` null, which the SeqCst (so releasing) store below
        // publishes after it.
        self.final_cycles.store(cycles, Ordering::Release);
        self.task.store(std::ptr::null_mut(), Ordering::SeqCst);
        let mut spins = 0u32;
        while self.readers.load(Ordering::SeqCst) != 0 {
            // A reader's window is a few instructions of runtime code; its
            // thread may have been descheduled by the OS in it.
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

