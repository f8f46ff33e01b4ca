//! Timers: one ordered map of (deadline, sequence) → entry per runtime,
//! behind a spin lock, with the earliest deadline mirrored in an atomic
//! (`Shared::next_timer`) so that checking "is a timer due?" is one load
//! plus, only when timers exist, one clock read. Workers fire due timers in
//! their scheduler loop (also every 61 schedules); an idle worker sleeps on
//! its futex with a timeout equal to the time left to the earliest deadline,
//! so timers fire without polling.
//!
//! An entry is either a sleeping task (`sleep`: fired = unparked) or the
//! [`Claim`] of a timed wait (`recv_timeout`, `wait_timeout`, a `Select`
//! with a timeout). Firing a claim entry tries the claim's one atomic
//! transition WAITING → TIMED_OUT (see `wait.rs`): only if it wins does it
//! unpark the task; if a waker won first, the entry is just dropped. The
//! claim lives on the waiter's stack: the entry is fired (popped, claim
//! tried, task unparked) entirely under the timers lock, and a waiter woken
//! by a waker removes its entry under the same lock ([`Shared::cancel_timer`])
//! before it leaves, so the timer never touches a claim whose waiter is gone.
//! The map is a `BTreeMap` rather than a binary heap so that this
//! cancellation is O(log n) and cancelled waits leave nothing behind.

use crate::shared::Shared;
use crate::sys::now_ns;
use crate::tasks::tcb::{Task, TaskRef};
use crate::tasks::wait::Claim;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Tag bit of a timer entry: set = a `*const Claim`, clear = a `*mut Task`
/// (both at least 8-aligned).
const CLAIM_TAG: usize = 1;

/// The runtime's timers. Written only under `Shared::timers` (a spin lock).
pub(crate) struct Timers {
    /// (deadline ns, sequence) → tagged entry (see `CLAIM_TAG`).
    map: BTreeMap<(u64, u64), usize>,
    seq: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers { map: BTreeMap::new(), seq: 0 }
    }
}

/// The key of a registered timer, to cancel it.
pub(crate) type TimerKey = (u64, u64);

impl Shared {
    /// Registers `t` to be unparked at `deadline` (monotonic ns). Returns
    /// true if it is now the earliest timer.
    pub(crate) fn add_timer(&self, deadline: u64, t: TaskRef) -> bool {
        self.insert_timer(deadline, t.as_ptr() as usize).1
    }

    /// Registers the timed wait `claim` (on its waiter's stack) to be timed
    /// out at `deadline`, and makes sure a worker looks at it in time.
    /// The waiter must call [`Shared::cancel_timer`] with the returned key
    /// before leaving unless the timer claimed it.
    pub(crate) fn add_claim_timer(&self, deadline: u64, claim: *const Claim) -> TimerKey {
        debug_assert_eq!(claim as usize & CLAIM_TAG, 0);
        let (key, earliest) = self.insert_timer(deadline, claim as usize | CLAIM_TAG);
        if earliest {
            self.timer_is_earliest(deadline);
        }
        key
    }

    /// Removes a timer that may still be registered (a timed wait that a
    /// waker won). Once this returns, the timer will never touch the entry.
    pub(crate) fn cancel_timer(&self, key: TimerKey) {
        let mut tm = self.timers.lock();
        if tm.map.remove(&key).is_some() {
            let next = tm.map.keys().next().map_or(u64::MAX, |k| k.0);
            if next != self.next_timer.load(Ordering::Relaxed) {
                self.next_timer.store(next, Ordering::SeqCst);
            }
        }
    }

    fn insert_timer(&self, deadline: u64, entry: usize) -> (TimerKey, bool) {
        let mut tm = self.timers.lock();
        tm.seq += 1;
        let key = (deadline, tm.seq);
        tm.map.insert(key, entry);
        let earliest = deadline < self.next_timer.load(Ordering::Relaxed);
        if earliest {
            self.next_timer.store(deadline, Ordering::SeqCst);
        }
        (key, earliest)
    }

    /// A timer just became the earliest: an idle worker may be sleeping
    /// with a later timeout (let it recompute); if every worker is busy, the
    /// timer monitor makes sure one of them looks at the timers when due.
    fn timer_is_earliest(&self, deadline: u64) {
        if self.nidle.load(Ordering::SeqCst) > 0 {
            self.wake_one_idle();
        } else {
            // A spinning worker's nap (`policy.rs` `Worker::nap`) was
            // timed from the earlier earliest timer, and wakers (the
            // monitor's included) leave work to a spinner: wake the napper
            // so it times its nap again (the review of session 12's nap: a
            // timer due within a nap fired up to the nap's end late). The
            // napper sets `napping` (SeqCst) before it reads `next_timer`
            // (SeqCst), which `insert_timer` stored before this read: it
            // sees the new deadline or we see it napping.
            if crate::worker::TIMER_WAKES_NAPPER.load(Ordering::Relaxed) {
                self.workers.iter().for_each(|w| w.wake_if_napping());
            }
            // With or without async preemption: the monitor runs in both
            // (without it, its requests reach the tasks' cooperative
            // points).
            crate::sysmon::timer_added(self, deadline);
        }
    }

    /// Unparks the tasks of all due timers.
    #[inline]
    pub(crate) fn run_timers(&self) {
        let nt = self.next_timer.load(Ordering::Acquire);
        if nt == u64::MAX || now_ns() < nt {
            return;
        }
        self.fire_due();
    }

    #[cold]
    fn fire_due(&self) {
        let now = now_ns();
        let mut tm = self.timers.lock();
        while let Some((&(d, _), &e)) = tm.map.first_key_value() {
            if d > now {
                break;
            }
            tm.map.pop_first();
            if e & CLAIM_TAG == 0 {
                // SAFETY: a plain entry is a sleeping task's (`sleep`): it
                // waits for exactly this unpark, and only the timer that
                // pops the entry gives it.
                crate::worker::unpark(unsafe { TaskRef::new(e as *mut Task) });
            } else {
                // SAFETY: a claim entry is valid while registered: its waiter
                // cannot leave before the claim is won by us (then it waits
                // for our unpark) or it removed the entry under this lock.
                unsafe { Claim::fire_timeout((e & !CLAIM_TAG) as *const Claim) };
            }
        }
        let next = tm.map.keys().next().map_or(u64::MAX, |k| k.0);
        self.next_timer.store(next, Ordering::SeqCst);
    }
}

/// Suspends the current task for at least `d`; other tasks run meanwhile.
///
/// Inside [`crate::blocking`] this sleeps the thread instead.
///
/// # Panics
/// If called outside a usurp task (use `std::thread::sleep` on plain threads).
pub fn sleep(d: Duration) {
    let Some(c) = crate::worker::Current::get() else {
        if !crate::worker::current_task().is_null() {
            std::thread::sleep(d); // inside `blocking`: we own this thread
            return;
        }
        panic!("usurp::sleep called outside a usurp task; use std::thread::sleep on plain threads");
    };
    if d.is_zero() {
        crate::worker::yield_current(c);
        return;
    }
    let cur = c.task();
    let deadline = now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let sh = cur.shared();
    if sh.add_timer(deadline, cur) {
        sh.timer_is_earliest(deadline);
    }
    // Exactly one unpark comes: from the timer.
    crate::tasks::wait::note_wait(crate::tasks::tcb::wait_kind::SLEEP, deadline);
    crate::worker::park_current();
    crate::tasks::wait::clear_wait();
}
