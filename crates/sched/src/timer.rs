//! Timers: one min-heap of (deadline, task) per runtime, behind a spin lock,
//! with the earliest deadline mirrored in an atomic (`Shared::next_timer`) so
//! that checking "is a timer due?" is one load plus, only when timers exist,
//! one clock read. Workers fire due timers in their scheduler loop (also every
//! 61 schedules); an idle worker sleeps on its futex with a timeout equal to
//! the time left to the earliest deadline, so timers fire without polling.

use crate::runtime::Shared;
use crate::sys::now_ns;
use crate::tcb::Task;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    seq: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl Shared {
    /// Registers `t` to be unparked at `deadline` (monotonic ns). Returns
    /// true if it is now the earliest timer.
    pub(crate) fn add_timer(&self, deadline: u64, t: *mut Task) -> bool {
        let mut tm = self.timers.lock();
        tm.seq += 1;
        let seq = tm.seq;
        tm.heap.push(Reverse((deadline, seq, t as usize)));
        let earliest = deadline < self.next_timer.load(Ordering::Relaxed);
        if earliest {
            self.next_timer.store(deadline, Ordering::SeqCst);
        }
        earliest
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
        while let Some(&Reverse((d, _, t))) = tm.heap.peek() {
            if d > now {
                break;
            }
            tm.heap.pop();
            crate::worker::unpark(t as *mut Task);
        }
        let next = tm.heap.peek().map_or(u64::MAX, |Reverse((d, _, _))| *d);
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
    let Some((_, w, cur)) = crate::worker::current_with_worker() else {
        if !crate::worker::current_task().is_null() {
            std::thread::sleep(d); // inside `blocking`: we own this thread
            return;
        }
        panic!("usurp::sleep called outside a usurp task; use std::thread::sleep on plain threads");
    };
    if d.is_zero() {
        crate::yield_now();
        return;
    }
    let deadline = now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let sh = w.shared();
    if sh.add_timer(deadline, cur) {
        if sh.nidle.load(Ordering::SeqCst) > 0 {
            // An idle worker may be sleeping with a later timeout: let it
            // recompute.
            sh.wake_one_idle();
        } else if sh.preempt.enabled {
            // Every worker is busy: the timer monitor makes sure one of them
            // looks at the timers when this one is due.
            crate::sysmon::timer_added(sh, deadline);
        }
    }
    // Exactly one unpark comes: from the timer.
    crate::worker::park_current();
}
