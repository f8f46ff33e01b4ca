//! Per-thread integration of a runtime thread with the preemption crate:
//! its registered `WorkerSlot` (slots are `'static`, leaked once and
//! recycled through a pool; the preempt crate keeps a process-wide table of
//! at most `usurp_preempt::MAX_WORKERS`), the per-runtime preemption
//! settings, and the signal mask `blocking` run in place uses. Moved down
//! from `glue/preempt_glue.rs` (which keeps the signal-handler hooks) so
//! that the worker floor does not import an adapter; see
//! `glue/preempt_glue.rs` for how the switch path uses the slot.

use crate::shared::Shared;
use std::sync::Mutex;
use std::time::Duration;
use usurp_preempt::WorkerSlot;

static POOL: Mutex<Vec<&'static WorkerSlot>> = Mutex::new(Vec::new());

fn take_slot() -> &'static WorkerSlot {
    if let Some(s) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return s;
    }
    Box::leak(Box::new(WorkerSlot::new()))
}

/// Test-only switch (negative control of the cooperative slots): when
/// cleared, a worker of a runtime without async preemption registers no
/// slot, as before (`checkpoint()` then never yields there). Set through
/// `hooks::set_cooperative_slots_for_tests`.
pub(crate) static COOPERATIVE_SLOTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Per-thread integration state of a runtime thread: its registered
/// preemption slot and its GC mutator. Dropped on the thread before it exits.
pub(crate) struct ThreadInit {
    slot: Option<&'static WorkerSlot>,
    _mutator: Option<usurp_gc::MutatorGuard>,
}

impl ThreadInit {
    /// Registers a slot and attaches the thread to the runtime's heap. With
    /// async preemption the slot takes signals (quantum ticks, targeted
    /// requests); without it (`USURP_DEBUG=asyncpreemptoff=1`,
    /// `async_preemption(false)`) it is registered cooperative only: no
    /// signal, timer or alternate stack, its checkpoint flag alone, which
    /// stops and the timer monitor's quantum requests set and the task's
    /// cooperative points (`checkpoint()`, allocation, yields) honour.
    /// Before, such a worker had no slot: a task that polled `checkpoint()`
    /// never saw a stop's request and held up every collection for ever,
    /// and a sleeper beside such tasks starved (new-user probe 112).
    pub(crate) fn new(sh: &Shared) -> ThreadInit {
        let mut slot = None;
        if !sh.preempt.enabled && !COOPERATIVE_SLOTS.load(std::sync::atomic::Ordering::Relaxed) {
            let mutator = (sh.attach_thread)(sh);
            return ThreadInit { slot, _mutator: mutator };
        }
        let s = take_slot();
        let r = if sh.preempt.enabled {
            usurp_preempt::register_worker(s, sh.preempt.quantum)
        } else {
            usurp_preempt::internals::register_worker_cooperative(s, sh.preempt.quantum)
        };
        match r {
            Ok(()) => slot = Some(s),
            Err(e) => {
                // The runtime still works cooperatively; say why once.
                POOL.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                let mut b = crate::sys::RawBuf::<256>::new();
                b.push(b"usurp: preemption requests unavailable on a worker thread: ");
                b.push(e.to_string().as_bytes()).push(b"\n");
                crate::sys::write_stderr(b.as_bytes());
            }
        }
        // Through the hook the runtime installed (`Shared::attach_thread`:
        // `glue::gc_world::attach_thread`), so this floor does not import
        // the GC adapter.
        let mutator = (sh.attach_thread)(sh);
        ThreadInit { slot, _mutator: mutator }
    }
}

impl Drop for ThreadInit {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            let _ = s.set_idle(true);
            if usurp_preempt::unregister_worker().is_ok() {
                POOL.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }
    }
}

/// Per-runtime preemption settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreemptConfig {
    pub(crate) enabled: bool,
    pub(crate) quantum: Duration,
}

/// The calling thread's registered slot (null if none).
#[inline(never)]
pub(crate) fn thread_slot() -> *mut WorkerSlot {
    usurp_preempt::current_worker().map_or(std::ptr::null_mut(), |s| s as *const WorkerSlot as *mut WorkerSlot)
}

/// Blocks the preemption signal on the calling thread while alive, when
/// async preemption is on (`stw::safe_region`: `blocking` run in place, the
/// GC's blocking sections). The thread keeps its worker and its quantum
/// timer, but the closure it runs may sit in system calls that `SA_RESTART`
/// does not restart (`nanosleep`, `poll`, `epoll_wait`): a tick or request
/// arriving meanwhile stays pending (one per signal number) instead of
/// making them fail with EINTR once per quantum, and is handled when the
/// mask is restored, so an expired quantum still makes the task yield
/// afterwards (the refused tick sets the checkpoint flag).
pub(crate) struct MaskPreemptSignal {
    old: Option<libc::sigset_t>,
}

impl MaskPreemptSignal {
    pub(crate) fn new(sh: &Shared) -> MaskPreemptSignal {
        if !sh.preempt.enabled {
            return MaskPreemptSignal { old: None };
        }
        // SAFETY: sigset_t is plain data, initialised by sigemptyset;
        // pthread_sigmask only changes this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, usurp_preempt::signal());
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return MaskPreemptSignal { old: None };
            }
            MaskPreemptSignal { old: Some(old) }
        }
    }
}

impl Drop for MaskPreemptSignal {
    fn drop(&mut self) {
        if let Some(old) = self.old.as_ref() {
            // SAFETY: restores the mask saved by `new` on this same thread
            // (the closure in between never switches threads).
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
        }
    }
}
