//! The scheduling policy: which task runs next (`runnext`, the woken FIFO
//! and its fairness bound, the ring, the inbox, the global queue every 61
//! schedules), stealing (rings, woken FIFOs, a stale `runnext`), idling and
//! waking (Go's wakep, spinning), where a woken or preempted task is queued
//! (`make_runnable`, `preempted_goes_global`), and the contention flag
//! that decides whether a worker's quantum ticks. The test-only policy
//! switches (`BOOST_POLICY`, `TICK_POLICY`, ...) are set through `hooks`.

use crate::queue::TaskList;
use crate::sys::{futex_wait, futex_wake, now_ns};
use crate::tasks::tcb::{TaskRef, state, NO_PIN};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use super::machine::{machine, Worker};

/// Every this many schedules a worker goes through its full scheduler loop
/// (global queue, inbox, timers, shutdown) even if local work is ready.
pub(super) const FAIR_TICKS: u32 = 61;
/// How many boosted picks (the woken FIFO, then `runnext`) in a row may win
/// over the ring before a ring task gets a turn: the bound of the latency
/// boost (issue 11), so tasks that wake each other in a loop cannot starve
/// tasks that used up their quantum.
pub(super) const RUNNEXT_STREAK: u32 = 32;

/// Test-only switch (negative controls of latency fairness, issue 11), set
/// through `hooks::set_boost_policy_for_tests` and
/// `hooks::set_boost_first_version_for_tests`: 0 normal; [`BOOST_OFF`]:
/// woken tasks displaced from `runnext` go to the back of the ring (no woken
/// FIFO), as before; [`BOOST_UNBOUNDED`]: boosted picks always win over the
/// ring (no streak bound); [`BOOST_FIRST_VERSION`]: the first version of
/// the woken FIFO, which starved it beside a ping-pong pair (see
/// `Worker::take_boosted`): boosted picks take `runnext` before the FIFO,
/// and a wake from the scheduler loop goes straight to the FIFO's back.
pub(crate) static BOOST_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub(crate) const BOOST_OFF: u8 = 1;
pub(crate) const BOOST_UNBOUNDED: u8 = 2;
pub(crate) const BOOST_FIRST_VERSION: u8 = 3;
/// How long an idle worker leaves a task in the `runnext` slot of a worker
/// that is running a task before stealing it (Go waits 3 µs: a switch takes
/// well under a microsecond, so the owner would have taken it by then).
pub(super) const RUNNEXT_GRACE_NS: u64 = 5_000;
/// Test-only switch (negative control of the spinner's wake-up, issue 11
/// review), set through `hooks::set_spinner_wakep_for_tests`: `true`
/// (normal): a spinning worker that finds work wakes an idle worker
/// (`Worker::find_runnable`); `false`: it does so only when the global
/// queue or its own ring holds more tasks, as before, so with three or more
/// workers a second task made runnable while it searched can wait on a busy
/// worker while another worker sleeps.
pub(crate) static SPINNER_WAKEP: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative control of uneven loop splits, issue 11), set
/// through `hooks::set_preempted_to_global_for_tests`: `true` (normal): an
/// async-preempted task that may migrate goes to the global queue when
/// [`preempted_goes_global`] says so; `false`: always to its worker's
/// ring, as before.
pub(crate) static PREEMPTED_TO_GLOBAL: AtomicBool = AtomicBool::new(true);
/// A timer spin lasts at most `1 / TIMER_SPIN_DUTY` of the time between
/// the end of the previous one and its own start (`Worker::sleep_then_spin`),
/// so the spinning worker uses at most 1/9 of a core however dense the
/// timers: with a timer due every 50 µs on an idle runtime, a full 100 µs
/// spin before each would keep one core busy all the time. A task
/// sleeping 1 ms in a loop gets the whole default spin (100 µs).
pub(super) const TIMER_SPIN_DUTY: u64 = 8;
/// Test-only switch (negative control of [`TIMER_SPIN_DUTY`]), set through
/// `hooks::set_timer_spin_duty_for_tests`: `false`: every spin is the
/// whole `timer_spin`, as before.
pub(crate) static TIMER_SPIN_DUTY_ON: AtomicBool = AtomicBool::new(true);
/// A clock gap this long inside a timer spin means the OS took the CPU
/// from the spinner for (part of) a time slice (`Worker::spin_until`).
/// Shorter gaps are interrupts and hypervisor exits: with 15 µs, spins on
/// this project's quiet VM backed off so often that an idle 1 ms sleep
/// was as late as without the spin (p50 41-43 µs instead of 6); the
/// preemptions that hurt last milliseconds.
pub(super) const TIMER_SPIN_DESCHEDULED_NS: u64 = 500_000;
/// How long timer spins stay off after one lost its CPU. On a machine
/// whose CPUs are all taken, a spinning thread uses up its share and is
/// preempted in the middle of the spin for a whole time slice, while one
/// asleep on the futex is favoured when it wakes: a review measured 1 ms
/// sleeps at load 4-6 with the spin on and off, alternated: p99 66-2900 µs
/// against 59-660 µs late, 84 sleeps more than 1 ms late against 33. So a
/// spin that sees it lost the CPU turns spinning off for 100 ms (about a
/// hundred 1 ms sleeps: a plain timed sleep each, as with the spin off),
/// then the next spin tries again; on an idle machine spins rarely lose
/// the CPU and stay on.
pub(super) const TIMER_SPIN_BACKOFF_NS: u64 = 100_000_000;
/// Test-only switches (`hooks::set_timer_spin_backoff_for_tests`,
/// `hooks::set_timer_spin_fake_loss_for_tests`): `TIMER_SPIN_BACKOFF_ON`
/// `false` (negative control): a spin that lost its CPU does not turn
/// spinning off; `TIMER_SPIN_FAKE_LOSS` `true`: every spin reports that it
/// lost its CPU.
pub(crate) static TIMER_SPIN_BACKOFF_ON: AtomicBool = AtomicBool::new(true);
pub(crate) static TIMER_SPIN_FAKE_LOSS: AtomicBool = AtomicBool::new(false);
/// Times spinning was turned off after a spin lost its CPU, process-wide;
/// read by tests through `hooks::timer_spin_backoffs_for_tests`.
pub(crate) static TIMER_SPIN_BACKOFFS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Nanoseconds spent in timer spins, process-wide; read by tests through
/// `hooks::timer_spin_ns_for_tests`.
pub(crate) static TIMER_SPIN_NS: AtomicU64 = AtomicU64::new(0);
/// Timed idle waits planned with a spin (`Worker::sleep_then_spin` with a
/// spin above 0), whether or not the spin came to pass (a waker, or a
/// wake-up later than the spin, ends it first), process-wide; read by
/// tests through `hooks::timer_spin_waits_for_tests`.
pub(crate) static TIMER_SPIN_WAITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Timer spins begun (`Worker::sleep_then_spin` reached its spin),
/// process-wide; read by tests through `hooks::timer_spins_for_tests`.
pub(crate) static TIMER_SPINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Test-only switch (negative control of "work arriving during a timer
/// spin runs at once"), set through `hooks::set_timer_spin_blind_for_tests`:
/// `true`: the spinning worker ignores wakers and new work and spins to
/// the deadline. Default `false`.
pub(crate) static TIMER_SPIN_BLIND: AtomicBool = AtomicBool::new(false);
/// How long after the earliest timer's deadline the other idle workers
/// sleep while one spins for it (`RuntimeBuilder::timer_spin`): they are
/// backups, for when the spinner leaves for a task or is kept off its CPU.
/// Waking them at the deadline itself cost the spinner its CPU there: the
/// woken backup often landed on the spinner's CPU and ran first (idle 1 ms
/// sleeps: the spin ended 40 µs late on average, one involuntary context
/// switch in three spins; with 100 µs, none, and the lateness p50 fell from
/// ~22 to ~5 µs, `cargo bench -p usurp --bench conserve -- --idle
/// --timer-spin=250`). Much more than 100 µs lands the backup's wake-up in
/// the spin for the next sleep of a loop of 1 ms sleeps, which hurts again;
/// and a timer due while the spinner runs a task fires up to this late.
pub(super) const TIMER_BACKUP_SLACK_NS: u64 = 100_000;
/// Rounds of searching before an idle worker sleeps.
pub(super) const SPIN_ROUNDS: u32 = 64;
/// Rounds of searching before an idle worker sleeps when no work can come
/// from inside the runtime soon (every other worker idle or searching, no
/// task in a handed-off `blocking` call: `Worker::others_run`): then no
/// run queue fills but by a timer (which the worker that waits for it
/// fires) or by a thread outside the runtime (which wakes an idle worker),
/// and a long search only burns the CPU. An idle runtime whose one task
/// sleeps 1 ms in a loop used 270-320 µs of CPU per sleep on `workers(2)`
/// (`cargo bench -p usurp --bench conserve -- --idle --timer-spin=50`):
/// both workers woke at the deadline, and the one that found nothing
/// searched [`SPIN_ROUNDS`] (~100 µs) and napped twice before it slept
/// again; now 95-120 µs. A few rounds still catch a thread that answers
/// at once (a plain thread's reply to a task).
pub(super) const LONE_SPIN_ROUNDS: u32 = 8;
/// Test-only switch (negative control of [`LONE_SPIN_ROUNDS`]), set
/// through `hooks::set_lone_spin_for_tests`: `false`: a worker searches
/// [`SPIN_ROUNDS`] and naps whether or not work can come, as before.
pub(crate) static LONE_SPIN: AtomicBool = AtomicBool::new(true);
/// Searches that ended after [`LONE_SPIN_ROUNDS`] in an idle sleep,
/// process-wide; read by tests through `hooks::lone_spins_for_tests`.
pub(crate) static LONE_SPINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How long a spinning worker naps when its spin found nothing while other
/// workers kept switching (`Worker::find_runnable`), and how many rounds it
/// searches after each nap (at ~1.6 us a round here, more than
/// `RUNNEXT_GRACE_NS`: a `runnext` task left by a worker that stopped
/// switching is stolen within them). Before (session 12), the spin ended in
/// an idle sleep, and the next hand-off into a busy worker's `runnext` (a
/// ping-pong, spawn+join on `workers(2)`) woke it at once: it spun ~100 us
/// (64 rounds of 32 pauses, ~49 ns each on this machine) for every futex
/// wake, and the process used 1.92-1.96 CPUs for one CPU of work (`perf
/// stat`, the switch bench's `workers(2)` rows), which cost the busy worker
/// its CPU on a loaded machine.
pub(super) const NAP_NS: u64 = 50_000;
pub(super) const NAP_ROUNDS: u32 = 8;
/// Naps in a row in which no other worker switched before the worker
/// sleeps after all (about 0.5 ms): on a loaded machine the busy worker's
/// thread loses its CPU for a while now and then, and the worker would
/// otherwise sleep and be woken again when it resumes. While other workers
/// keep switching, a spinner keeps napping: ~8 search rounds (~13 us) per
/// 50 us nap, about a fifth of a CPU, also when those switches hand it
/// nothing to wake it for (e.g. tasks that only yield on a worker whose
/// ring it cannot steal from); before, it slept then.
pub(super) const NAP_CREDIT: u32 = 8;
/// Test-only switch (negative control of the spinning nap), set through
/// `hooks::set_spin_nap_for_tests`: `false`: a spin that found nothing
/// always ends in an idle sleep, as before.
pub(crate) static SPIN_NAP: AtomicBool = AtomicBool::new(true);
/// Calls of `Shared::wake_one_idle` (a waker found an idle worker and no
/// spinning one), process-wide; read by tests through
/// `hooks::idle_wake_calls_for_tests`.
pub(crate) static IDLE_WAKE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Naps taken (`Worker::nap`), process-wide; read by tests through
/// `hooks::spin_naps_for_tests`.
pub(crate) static SPIN_NAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The most workers of one runtime seen napping at once (their `napping`
/// flags, counted by `Worker::nap`), process-wide; read and reset by tests
/// through `hooks::take_max_concurrent_naps_for_tests`.
pub(crate) static MAX_NAPPING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Test-only switch (negative control of "one napper at most"), set
/// through `hooks::set_spin_nap_sole_for_tests`: `false`: every spinner
/// that found nothing may nap, as in the first version, where with `N`
/// workers and one busy, all `N - 1` idle ones napped (each about a fifth
/// of a CPU).
pub(crate) static SPIN_NAP_SOLE: AtomicBool = AtomicBool::new(true);
/// Test-only nap length in ns (0: [`NAP_NS`]), set through
/// `hooks::set_nap_ns_for_tests`: a long nap makes a stopper that did not
/// wake the napper wait visibly (negative control of `stw.rs`
/// `ask_to_stop`'s wake).
pub(crate) static NAP_NS_FOR_TESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Test-only switch: `false`: the stopper does not wake a napping worker
/// (`hooks::set_stop_wakes_nappers_for_tests`).
pub(crate) static STOP_WAKES_NAPPERS: AtomicBool = AtomicBool::new(true);
/// Test-only switch: `false`: a timer that becomes the earliest does not
/// wake a napping worker (`timer.rs` `timer_is_earliest`;
/// `hooks::set_timer_wakes_napper_for_tests`).
pub(crate) static TIMER_WAKES_NAPPER: AtomicBool = AtomicBool::new(true);
/// Test-only switch (negative controls of "tick only when someone waits",
/// issue 12), set through `hooks::set_tick_policy_for_tests`: 0 normal;
/// [`TICK_ALWAYS`]: workers always report themselves contended, so their
/// quantum timers tick whenever they are busy, as before; [`TICK_NO_WAKE`]:
/// wakers never mark workers contended (only a worker's own picks do), so
/// a task made runnable while every worker runs a loop is never served.
pub(crate) static TICK_POLICY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub(crate) const TICK_ALWAYS: u8 = 1;
pub(crate) const TICK_NO_WAKE: u8 = 2;

/// `set_contended(true)` from a waker, out of line (the wake path stays
/// small: the flag is usually set already).
#[cold]
#[inline(never)]
pub(super) fn contend_slow(s: &usurp_preempt::WorkerSlot) {
    if wakers_contend() {
        let _ = s.set_contended(true);
    }
}

/// Whether wakers mark workers contended (false only under the
/// `TICK_NO_WAKE` test policy).
#[inline]
pub(crate) fn wakers_contend() -> bool {
    TICK_POLICY.load(Ordering::Relaxed) != TICK_NO_WAKE
}

impl Worker {
    pub(super) fn next_rand(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }

    /// True if `t` may run here; otherwise forwards it to the worker it is
    /// pinned to. `t` was just taken out of a queue by this worker's
    /// thread: it owns it (the handle's role).
    #[inline]
    pub(super) fn claim(&self, t: TaskRef) -> bool {
        // The common case inline (one load; no call on the switch path):
        // unpinned, or pinned here.
        let p = t.pinned_worker.get();
        if p == NO_PIN || p == self.index {
            return true;
        }
        self.shared().claim_for(self, t)
    }

    /// The fast-path choice of the next task: runnext or the ring; `None`
    /// when nothing is ready locally or when a periodic full schedule is due.
    // Forced inline (also `next_local`): the switch entry points live in
    // `switch.rs`, another codegen unit, where a plain `#[inline]` left
    // them a call to an out-of-line copy on every switch (before the split,
    // LLVM inlined both into `yield_current` and `park_current`).
    #[inline(always)]
    pub(super) fn next_fast(&self) -> Option<TaskRef> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick % FAIR_TICKS == 0 || self.stopping() {
            return None;
        }
        self.next_local()
    }

    /// Whether a stop-the-world is requested: then every switch goes to the
    /// scheduler loop, which parks (see `stw.rs`).
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.shared().stw.stop.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(super) fn next_local(&self) -> Option<TaskRef> {
        loop {
            let rn = self.runnext.0.load(Ordering::Relaxed);
            // Boosted picks first (the woken FIFO, then runnext), at most
            // RUNNEXT_STREAK in a row. Taking runnext: a thief may have
            // taken it since the load (`take_runnext` then returns `None`).
            let mut t = None;
            if (!rn.is_null() || self.woken_len.load(Ordering::Relaxed) != 0)
                && (self.streak.get() < RUNNEXT_STREAK || BOOST_POLICY.load(Ordering::Relaxed) == BOOST_UNBOUNDED)
            {
                t = self.take_boosted();
                if t.is_some() {
                    self.streak.set(self.streak.get() + 1);
                }
            }
            let t = match t {
                Some(t) => t,
                None => {
                    self.streak.set(0);
                    match self.queue.pop() {
                        Some(t) => t,
                        None => self.take_boosted()?,
                    }
                }
            };
            // `t` was just taken out of a queue: ours.
            if self.claim(t) {
                return Some(t);
            }
        }
    }

    /// Owner only: the next boosted task, oldest wake first: the front of
    /// the woken FIFO, else `runnext` (or `None`).
    ///
    /// The order is what keeps a woken task from waiting forever. `runnext`
    /// always holds the newest task (a wake or spawn displaces its occupant,
    /// a woken one to the back of the FIFO), so taking the FIFO first makes
    /// boosted picks FIFO in wake order: a woken task waits for at most the
    /// boosted tasks woken before it, plus one ring pick per
    /// `RUNNEXT_STREAK`. The first version took `runnext` first: beside a
    /// ping-pong pair (each task wakes the other into `runnext`, then parks)
    /// the slot was full at every pick and the FIFO was never reached, nor
    /// stolen from (the other worker was busy too). That was the hang of
    /// `usurp-stress --workers 2 --tasks 20` (2 runs in 61; 3 in ~110 here):
    /// its main task, woken from its 2 s sleep by a timer fired in the
    /// scheduler loop, sat in worker 0's FIFO behind two sleepers while
    /// `pingpong-0`/`-1` filled `runnext` forever, so it never set the stop
    /// flag; the GC kept stopping and starting the world meanwhile, which is
    /// why a stack dump looked like a worker parked for a stop (it was one
    /// of the ~500 stops a second, not a stuck one). Regression test:
    /// `tests/sched_fairness.rs` `woken_fifo_not_starved_by_runnext` (with
    /// [`BOOST_FIRST_VERSION`] as its negative control).
    // Forced inline, as `next_local`: once the queues returned
    // `Option<TaskRef>` (one word, no `unwrap_or(null)`), LLVM inlined
    // `take_woken` here and then left this a call on every park (callgrind,
    // the switch bench's workers(1) loops: +4 instructions per switch).
    #[inline(always)]
    pub(super) fn take_boosted(&self) -> Option<TaskRef> {
        if BOOST_POLICY.load(Ordering::Relaxed) == BOOST_FIRST_VERSION {
            let t = self.take_runnext();
            if t.is_some() {
                return t;
            }
            return self.take_woken();
        }
        let t = self.take_woken();
        if t.is_some() {
            return t;
        }
        self.take_runnext()
    }

    /// Takes the front of the woken FIFO (owner or thief), or `None`. The
    /// emptiness check inline (every switch makes it; the FIFO is usually
    /// empty), the locked pop out of line.
    #[inline(always)]
    pub(super) fn take_woken(&self) -> Option<TaskRef> {
        if self.woken_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.take_woken_locked()
    }

    #[inline(never)]
    fn take_woken_locked(&self) -> Option<TaskRef> {
        let mut q = self.woken.lock();
        let t = q.pop_front();
        self.woken_len.store(q.len(), Ordering::SeqCst);
        t
    }

    /// Owner only: a task just displaced from `runnext` (so owned by this
    /// thread): a woken one keeps its boost (woken FIFO), a spawned one goes
    /// to the back of the ring.
    #[inline]
    pub(super) fn push_displaced(&self, t: TaskRef) {
        // We own `t`; its flag was written on this thread when it was put
        // in `runnext` (only the owner fills the slot).
        if t.woken.get() {
            self.push_woken(t);
        } else {
            self.push_local(t);
        }
    }

    /// Owner only: queues a woken task for a boosted pick (at the back of
    /// the ring instead under the `BOOST_OFF` test switch).
    #[inline]
    pub(super) fn push_woken(&self, t: TaskRef) {
        if BOOST_POLICY.load(Ordering::Relaxed) == BOOST_OFF {
            self.push_local(t);
            return;
        }
        let mut q = self.woken.lock();
        q.push_back(t);
        self.woken_len.store(q.len(), Ordering::SeqCst);
    }

    /// Owner only: empties the runnext slot; returns its task (or `None`).
    #[inline]
    pub(super) fn take_runnext(&self) -> Option<TaskRef> {
        let t = self.runnext.0.load(Ordering::Relaxed);
        if t.is_null() {
            return None;
        }
        let t = if self.solo {
            self.runnext.0.store(ptr::null_mut(), Ordering::Relaxed);
            t
        } else {
            // The swap decides between the owner and a thief
            // (`steal_runnext`).
            self.runnext.0.swap(ptr::null_mut(), Ordering::Acquire)
        };
        // SAFETY: `runnext` holds null or a task stored from an owner's
        // handle (`make_runnable`); whoever empties the slot owns it.
        unsafe { TaskRef::from_raw(t) }
    }

    /// Pushes `t` on the ring; overflow goes to the global queue (and wakes
    /// an idle worker for it, or marks the busy ones contended).
    #[inline]
    pub(crate) fn push_local(&self, t: TaskRef) {
        if let Some(list) = self.queue.push(t) {
            let sh = self.shared();
            sh.push_global_list(list);
            sh.notify_global();
        }
    }

    /// Whether runnable work waits for this worker: its ring, `runnext`, its
    /// inbox, or the global queue. Another worker's ring needs no look: that
    /// worker marks itself contended when it fills it, so its own ticks
    /// serve it (and an idle worker steals it). SeqCst loads: the second
    /// half of the Dekker handshake in [`Worker::update_contention`].
    #[inline]
    pub(super) fn work_waits(&self) -> bool {
        self.queue.len() != 0
            || !self.runnext.0.load(Ordering::SeqCst).is_null()
            || self.woken_len.load(Ordering::SeqCst) != 0
            || self.inbox_len.load(Ordering::SeqCst) != 0
            || self.shared().global_len.load(Ordering::SeqCst) != 0
    }

    /// "Tick only when someone waits" (issue 12), the worker's half: called
    /// each time the scheduler loop picks the next task. Marks the thread's
    /// preemption slot contended if work waits for this worker (its quantum
    /// timer ticks), uncontended otherwise (no signal at all: a running loop
    /// keeps its CPU undisturbed). Clearing races with wakers, who publish
    /// work and then set the flag if they read it clear
    /// (`Shared::contend_busy`, `make_runnable`, `claim_for`): the clear is
    /// a SeqCst swap followed by a SeqCst fence and a second look at the
    /// queues, so either the waker sees the flag clear (and sets it, arming
    /// the timer), or this second look sees its work.
    #[inline]
    pub(super) fn update_contention(&self) {
        // SAFETY: slots are `'static`.
        let Some(s) = (unsafe { self.slot.load(Ordering::Relaxed).as_ref() }) else { return };
        if TICK_POLICY.load(Ordering::Relaxed) == TICK_ALWAYS || self.work_waits() {
            if !s.is_contended() {
                let _ = s.set_contended(true);
            }
            return;
        }
        if !s.is_contended() {
            return;
        }
        let _ = s.set_contended(false);
        std::sync::atomic::fence(Ordering::SeqCst);
        // A shutdown marks every worker contended (`preempt_for_shutdown`)
        // so that its quantum ticks until it stops: a clear racing that
        // mark must not undo it (the shutdown flag is stored SeqCst before
        // the mark; one of the two fences sees the other), or a lone loop
        // switched in after it would run with no tick (review of session 14).
        if self.work_waits() || self.shared().shutdown.load(Ordering::SeqCst) {
            let _ = s.set_contended(true);
        }
    }

    /// The direct-switch half: a task-to-task switch only *raises* the
    /// contention flag (the outgoing task is requeued, or work waits); it
    /// never clears it, which would need a full fence on every switch. A
    /// stale flag costs at most one tick: the next preemption (or the
    /// periodic full schedule, every 61 schedules) goes through the
    /// scheduler loop, which clears it.
    #[inline]
    pub(super) fn raise_contention(&self, slot: &usurp_preempt::WorkerSlot, requeued: bool) {
        if !slot.is_contended() {
            self.raise_contention_slow(slot, requeued);
        }
    }

    /// Out of line: keeps the switch path small (the flag is usually set
    /// while tasks switch back and forth).
    #[cold]
    #[inline(never)]
    pub(super) fn raise_contention_slow(&self, slot: &usurp_preempt::WorkerSlot, requeued: bool) {
        if requeued || self.work_waits() {
            let _ = slot.set_contended(true);
        }
    }

    /// A task was made runnable on this worker by its running task: the
    /// worker is expected to run it, so its quantum must tick (the running
    /// task may keep the CPU in a loop; an idle worker, if any, steals it
    /// sooner). Same thread as the worker's own picks: no fence needed.
    #[inline]
    pub(super) fn contend_self(&self) {
        // SAFETY: slots are `'static`.
        if let Some(s) = unsafe { self.slot.load(Ordering::Relaxed).as_ref() } {
            if !s.is_contended() {
                contend_slow(s);
            }
        }
    }

    /// After a task used up its quantum (async preemption, or a yield at a
    /// checkpoint) and nothing is ready locally: a task waiting in the
    /// global queue runs next, rather than the preempted task again (it goes
    /// back to the local ring, where the scheduler loop would find it
    /// before the global queue, which it checks first only every 61
    /// schedules). `None` if none.
    #[inline]
    pub(super) fn take_global_now(&self) -> Option<TaskRef> {
        let sh = self.shared();
        // (A lend offered: none, so that the caller goes to the scheduler
        // loop, which claims it: a worker of plain yielders with the global
        // queue full used to take a global task here at every 61st yield
        // and never claim; review 111. Only reached once `next_fast`
        // answered `None`: plain switches do not read the offer.)
        if self.stopping() || self.lend_pending() || sh.global_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        sh.take_global(self)
    }

    /// Clears the pin of the current task at a cooperative switch.
    #[inline]
    pub(super) fn clear_pin(&self, t: TaskRef) {
        if t.pinned_worker.get() != NO_PIN {
            t.pinned_worker.set(NO_PIN);
            self.pinned.set(self.pinned.get() - 1);
        }
    }

    pub(super) fn drain_inbox(&self) -> Option<TaskRef> {
        if self.inbox_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut list = {
            let mut inbox = self.inbox.lock();
            self.inbox_len.store(0, Ordering::SeqCst);
            std::mem::replace(&mut *inbox, TaskList::new())
        };
        let first = list.pop_front();
        while let Some(t) = list.pop_front() {
            self.push_local(t);
        }
        first
    }

    /// One pass over every source of work except stealing.
    pub(super) fn find_local_or_global(&self) -> Option<TaskRef> {
        let sh = self.shared();
        let t = self.drain_inbox();
        if t.is_some() {
            return t;
        }
        // A fast path that bailed out for fairness left `tick` at a multiple
        // of FAIR_TICKS: then the global queue goes first.
        let tick = self.tick.get();
        self.tick.set(tick.wrapping_add(1));
        if tick % FAIR_TICKS == 0 {
            if let Some(t) = sh.take_global(self) {
                return Some(t);
            }
        }
        sh.run_timers();
        let t = self.next_local();
        if t.is_some() {
            return t;
        }
        sh.take_global(self)
    }

    /// Whether a task other than the one this searching worker just took
    /// is visible in a queue another worker could take it from: the global
    /// queue, a worker's ring or woken FIFO, another worker's `runnext`
    /// (`tests/sched_spinner_wakep.rs` strands a task there without it). A
    /// spinner that found work wakes an idle worker only then: waking one
    /// after every find (the first version of Go's resetspinning -> wakep
    /// here) made a second worker search on every channel hand-off, and
    /// ping-pong on `workers(2)` cost 235 ns instead of 161 ns (153 ns with
    /// no wake-up at all; `cargo bench --bench switch`, quiet). Racy reads
    /// (relaxed): a task queued after the check is the queuer's to announce
    /// (`notify`).
    pub(super) fn more_work_visible(&self) -> bool {
        let sh = self.shared();
        if sh.global_len.load(Ordering::Relaxed) > 0 {
            return true;
        }
        sh.workers.iter().any(|w| {
            w.queue.len() > 0
                || w.woken_len.load(Ordering::Relaxed) > 0
                || (w.index != self.index && !w.runnext.0.load(Ordering::Relaxed).is_null())
        })
    }

    /// Takes the front of another worker's woken FIFO, else steals half of
    /// another worker's ring; when every ring is empty, a
    /// task waiting in another worker's `runnext` slot (see
    /// [`Worker::steal_runnext`]).
    pub(super) fn steal(&self) -> Option<TaskRef> {
        let n = self.shared().workers.len();
        if n == 1 {
            return None;
        }
        let start = self.next_rand() as usize % n;
        // A woken task waiting on a busy worker first: it keeps its boost
        // across stealing (it runs now, ahead of the victim's ring).
        let t = self
            .take_from_victims(start, |v| v.take_woken())
            .or_else(|| self.take_from_victims(start, |v| v.queue.steal_into(&self.queue)))
            .or_else(|| self.take_from_victims(start, |v| self.steal_runnext(v)))?;
        // `t` was just taken out of a queue: ours.
        if self.claim(t) {
            return Some(t);
        }
        self.next_local()
    }

    /// One pass of [`Worker::steal`]: `take` from every other worker in
    /// turn, starting at index `start`, until one yields a task.
    #[inline]
    fn take_from_victims(&self, start: usize, mut take: impl FnMut(&Worker) -> Option<TaskRef>) -> Option<TaskRef> {
        let workers = &self.shared().workers;
        let n = workers.len();
        (0..n).map(|i| (start + i) % n).filter(|&v| v != self.index).find_map(|v| take(&workers[v]))
    }

    /// Takes the task in `victim`'s `runnext` slot (as Go's runqsteal with
    /// stealRunNextG). The slot holds a task that the victim's running task
    /// just spawned or woke; the victim usually runs it within a switch
    /// (the running task parks or joins right after), so the thief takes
    /// the slot only once it has seen the victim make no switch for
    /// `RUNNEXT_GRACE_NS` (across its search rounds). If the victim's task
    /// keeps running without a switch (ordinary code, a loop), the woken
    /// task would otherwise wait for its whole quantum, or forever.
    pub(super) fn steal_runnext(&self, victim: &Worker) -> Option<TaskRef> {
        // Look at the slot only once the victim has made no switch for the
        // grace period (its running task keeps the CPU): a victim that is
        // switching gets to its runnext soon (a task re-woken into the slot,
        // as in a ping-pong, must not be carried off to another worker),
        // and not touching its slot's line then keeps the owner's swaps on
        // it cheap. `switch_count` is written with plain stores.
        let switches = victim.switch_count.load(Ordering::Relaxed);
        let watch = &self.watch[victim.index];
        let (seen, since) = watch.get();
        let now = now_ns();
        if seen != switches {
            watch.set((switches, now));
            return None;
        }
        if now.saturating_sub(since) < RUNNEXT_GRACE_NS {
            return None;
        }
        let t = victim.runnext.0.load(Ordering::Acquire);
        if t.is_null() {
            return None;
        }
        // Whoever empties the slot owns the task; the pointer becomes a
        // handle only after winning.
        match victim.runnext.0.compare_exchange(t, ptr::null_mut(), Ordering::Acquire, Ordering::Relaxed) {
            // SAFETY: as in `take_runnext`: a task stored from an owner's
            // handle, ours now that we emptied the slot.
            Ok(t) => unsafe { TaskRef::from_raw(t) },
            Err(_) => None,
        }
    }

    /// Sleeps on the futex until woken, a timer is due, or shutdown.
    pub(super) fn idle_sleep(&self) {
        let sh = self.shared();
        self.sleep_word.store(0, Ordering::SeqCst);
        self.idle.store(true, Ordering::SeqCst);
        sh.nidle.fetch_add(1, Ordering::SeqCst);
        let mut timeout = None;
        let nt = sh.next_timer.load(Ordering::SeqCst);
        if nt != u64::MAX {
            let now = now_ns();
            timeout = Some(nt.saturating_sub(now));
        }
        if timeout != Some(0) && !sh.has_work(self) && !self.stopping() {
            // No timer signals while asleep (a system call only on this
            // transition).
            // SAFETY: slots are `'static`.
            let slot = unsafe { self.slot.load(Ordering::Relaxed).as_ref() };
            if let Some(s) = slot {
                let _ = s.set_idle(true);
            }
            match timeout {
                // Timer spin (opt-in): one idle worker sleeps until the
                // spin before the deadline and spins the rest; the others
                // are backups (should the spinner leave for work and stay
                // busy) and sleep until a little after the deadline, so
                // that they do not take the spinner's CPU at it.
                Some(left) if sh.timer_spin_ns != 0 => {
                    if self.claim_timer_spin() {
                        // An earlier timer added between our read of
                        // `next_timer` and the claim: its adder may have
                        // woken another worker (it saw no claim), which
                        // then sleeps as a backup past that timer; we
                        // would spin for the later one. The claim and
                        // this read are SeqCst, as the adder's store of
                        // `next_timer` and its read of the claim
                        // (`wake_one_idle`): either the adder wakes us,
                        // or we see its timer here and leave to
                        // recompute (review of the backups' slack).
                        if sh.next_timer.load(Ordering::SeqCst) == nt {
                            self.sleep_then_spin(nt, left);
                        }
                        sh.timer_spinner.store(0, Ordering::Release);
                    } else {
                        futex_wait(&self.sleep_word, 0, Some(left.saturating_add(TIMER_BACKUP_SLACK_NS)));
                    }
                }
                _ => futex_wait(&self.sleep_word, 0, timeout),
            }
            if let Some(s) = slot {
                let _ = s.set_idle(false);
            }
        }
        if self.idle.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            sh.nidle.fetch_sub(1, Ordering::SeqCst);
        }
        // An idle worker counts as stopped without being woken: `idle` is
        // clear now, and the stop flag is read after this fence (the
        // caller's `stopping()`), see `stw.rs`.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Whether this idle worker may spin for the earliest timer
    /// (`RuntimeBuilder::timer_spin`): true if no other worker does (it
    /// claimed `Shared::timer_spinner`).
    fn claim_timer_spin(&self) -> bool {
        let sh = self.shared();
        sh.timer_spinner.load(Ordering::Relaxed) == 0
            && sh.timer_spinner.compare_exchange(0, self.index + 1, Ordering::SeqCst, Ordering::Relaxed).is_ok()
    }

    /// The timed idle wait with a timer spin (`idle_sleep`, this worker
    /// registered idle and holding the `timer_spinner` claim): sleeps on
    /// the futex until `Shared::timer_spin_ns` before the earliest timer
    /// (deadline `nt`, `left` ns from now), then spins until it is due.
    /// Returns early, as the futex wait does, when a waker wakes this
    /// worker (`sleep_word` set, `idle` cleared), at shutdown or a stop
    /// request, when work appears in the global queue or its inbox, or
    /// when the earliest timer changes (the caller's loop recomputes).
    /// The spin only reads: this worker's own line, the runtime's
    /// `next_timer`, `global_len`, `shutdown` and the stop flag, and the
    /// clock; so it takes no line away from busy workers.
    fn sleep_then_spin(&self, nt: u64, left: u64) {
        let sh = self.shared();
        // At most 1/TIMER_SPIN_DUTY of the time from the end of the last
        // spin to the start of this one (`nt - spin`): `spin <= (nt - end)
        // / (TIMER_SPIN_DUTY + 1)`.
        let since = nt.saturating_sub(sh.timer_spin_end.load(Ordering::Relaxed));
        let spin = if TIMER_SPIN_DUTY_ON.load(Ordering::Relaxed) {
            sh.timer_spin_ns.min(since / (TIMER_SPIN_DUTY + 1))
        } else {
            sh.timer_spin_ns
        };
        // No spin while backing off (`TIMER_SPIN_BACKOFF_NS`): a plain
        // timed sleep, as with the spin off.
        let spin = if nt < sh.timer_spin_off_until.load(Ordering::Relaxed) { 0 } else { spin };
        if spin == 0 {
            futex_wait(&self.sleep_word, 0, Some(left));
            return;
        }
        TIMER_SPIN_WAITS.fetch_add(1, Ordering::Relaxed);
        if left > spin {
            futex_wait(&self.sleep_word, 0, Some(left - spin));
            // Woken, or back early (a spurious return): the caller's loop
            // looks for work and comes back here.
            if self.sleep_word.load(Ordering::Acquire) != 0 || now_ns().saturating_add(spin) < nt {
                return;
            }
        }
        TIMER_SPINS.fetch_add(1, Ordering::Relaxed);
        let start = now_ns();
        let lost_cpu = self.spin_until(nt, start);
        let end = now_ns();
        sh.timer_spin_end.store(end, Ordering::Relaxed);
        TIMER_SPIN_NS.fetch_add(end.saturating_sub(start), Ordering::Relaxed);
        if lost_cpu && TIMER_SPIN_BACKOFF_ON.load(Ordering::Relaxed) {
            TIMER_SPIN_BACKOFFS.fetch_add(1, Ordering::Relaxed);
            sh.timer_spin_off_until.store(end.saturating_add(TIMER_SPIN_BACKOFF_NS), Ordering::Relaxed);
        }
    }

    /// The spin of [`Worker::sleep_then_spin`], begun at `start`: returns
    /// at the deadline `nt` or when anything it must leave for arrives (see
    /// there); `true` if the OS took the CPU from it meanwhile (two clock
    /// reads [`TIMER_SPIN_DESCHEDULED_NS`] apart).
    fn spin_until(&self, nt: u64, start: u64) -> bool {
        let sh = self.shared();
        let blind = TIMER_SPIN_BLIND.load(Ordering::Relaxed);
        let mut last = start;
        let mut lost = TIMER_SPIN_FAKE_LOSS.load(Ordering::Relaxed);
        loop {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            let now = now_ns();
            lost |= now.saturating_sub(last) > TIMER_SPIN_DESCHEDULED_NS;
            last = now;
            if now >= nt {
                return lost;
            }
            if blind {
                // Test-only: the negative control spins to the deadline
                // whatever arrives.
                continue;
            }
            if self.sleep_word.load(Ordering::Acquire) != 0
                || !self.idle.load(Ordering::Relaxed)
                || sh.next_timer.load(Ordering::Relaxed) != nt
                || sh.global_len.load(Ordering::Relaxed) != 0
                || self.inbox_len.load(Ordering::Relaxed) != 0
                || sh.shutdown.load(Ordering::Relaxed)
                || self.stopping()
            {
                return lost;
            }
        }
    }

    /// Whether work may soon come from inside the runtime: some other
    /// worker may be running a task (it is neither idle nor searching; this
    /// worker counts itself among the searchers), or a task runs a
    /// `blocking` closure handed off from its worker (it queues itself on
    /// return). A worker between states (woken, not yet searching) counts
    /// as running: the answer errs towards the long search. Relaxed loads:
    /// a heuristic, no protocol depends on it (an idle sleep re-checks for
    /// work under the wakep protocol, `Shared::has_work`).
    fn others_run(&self) -> bool {
        let sh = self.shared();
        sh.nidle.load(Ordering::Relaxed) + sh.nspinning.load(Ordering::Relaxed) < sh.workers.len()
            || sh.in_blocking.load(Ordering::Relaxed) != 0
    }

    /// The sum of the other workers' switch counts (changes while any of
    /// them switches).
    pub(super) fn others_switches(&self) -> u64 {
        self.shared()
            .workers
            .iter()
            .filter(|v| v.index != self.index)
            .fold(0u64, |a, v| a.wrapping_add(v.switch_count.load(Ordering::Relaxed)))
    }

    /// A spinning worker's nap (see `find_runnable`): waits on its futex
    /// word for at most [`NAP_NS`], still counted in `nspinning`, so work
    /// published meanwhile waits at most that long for it (`notify` leaves
    /// work to a spinner). Its inbox wakes it at once (`wake_worker` sets
    /// the word), and a stop or shutdown is seen when it returns.
    fn nap(&self) {
        SPIN_NAPS.fetch_add(1, Ordering::Relaxed);
        let sh = self.shared();
        self.sleep_word.store(0, Ordering::SeqCst);
        // Before the checks (SeqCst both sides): a stopper that sets the
        // stop flag after our check sees `napping` and wakes us (it asks
        // every unstopped worker again on each pass anyway).
        self.napping.store(true, Ordering::SeqCst);
        let napping = sh.workers.iter().filter(|w| w.napping.load(Ordering::Relaxed)).count();
        MAX_NAPPING.fetch_max(napping, Ordering::Relaxed);
        // Not past the earliest timer: the search after the nap fires it.
        let nt = sh.next_timer.load(Ordering::SeqCst);
        let nap_ns = NAP_NS_FOR_TESTS.load(Ordering::Relaxed);
        let nap_ns = if nap_ns == 0 { NAP_NS } else { nap_ns };
        let ns = if nt == u64::MAX { nap_ns } else { nap_ns.min(nt.saturating_sub(now_ns())) };
        // A shutdown's wake may have come before our store of 0 above
        // (the review of session 12's nap): look at the flag too.
        if ns != 0
            && self.inbox_len.load(Ordering::SeqCst) == 0
            && !sh.stw.stop.load(Ordering::SeqCst)
            && !sh.shutdown.load(Ordering::SeqCst)
        {
            futex_wait(&self.sleep_word, 0, Some(ns));
        }
        self.napping.store(false, Ordering::Relaxed);
    }

    /// Wakes this worker if it is in a spinning nap (`nap`), so that it
    /// looks again at once: at a stop (`stw.rs` `ask_to_stop`) or a new
    /// earliest timer (`timer.rs`). The napper sets `napping` (SeqCst)
    /// before its last checks; the caller publishes what it wants seen
    /// (SeqCst) before calling: one of the two sees the other.
    pub(crate) fn wake_if_napping(&self) {
        if self.napping.load(Ordering::SeqCst) {
            wake_worker_word(self);
        }
    }

    /// The scheduler's search: local, global, timers, stealing, then spinning
    /// briefly and sleeping. Returns None on shutdown.
    pub(super) fn find_runnable(&self) -> Option<TaskRef> {
        let sh = self.shared();
        let mut spinning = false;
        let mut rounds = 0;
        // Naps left before an idle sleep (see the nap below): a couple even
        // if nobody switched during the first spin (the busy worker's
        // thread may have been waiting for the CPU this one spun on).
        let mut nap_credit = NAP_CREDIT / 4 + 1;
        // The other workers' switches at the last look (`others_switches`).
        let mut switches_seen = self.others_switches();
        let mut called_back = false;
        loop {
            // A stop first, also at shutdown: a worker that was idle when the
            // world was stopped (counted as stopped without being woken) and
            // is woken by the shutdown parks for the stop before it exits,
            // so that a drop waits for the stopper to restart the world (it
            // may be reading the tasks the drop abandons). It used to exit
            // at once, and a drop beside a thread holding the stop returned
            // in the middle of it (tests/sched_drop_while_stopped.rs, once
            // idle workers searched briefly and slept more often).
            if self.stopping() {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                    spinning = false;
                }
                crate::stw::park_worker(self);
                continue;
            }
            if sh.shutdown.load(Ordering::Acquire) {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                }
                return None;
            }
            // The GC's collector wants a worker's place while it marks
            // (`stand_aside.rs`): this one, unless another claimed it.
            // Not again in this search once called back by work (a due
            // timer, ...): that work first.
            if self.lend_pending() && !called_back {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                    spinning = false;
                }
                if let Some(back) = self.try_stand_aside() {
                    called_back = back == super::stand_aside::Back::Work;
                    continue;
                }
            }
            let mut t = self.find_local_or_global();
            if t.is_none() {
                t = self.steal();
            }
            if let Some(t) = t {
                if spinning {
                    sh.nspinning.fetch_sub(1, Ordering::SeqCst);
                    if SPINNER_WAKEP.load(Ordering::Relaxed) && self.more_work_visible() {
                        // We may have been the only searcher, and wakers
                        // woke nobody while we searched (`notify` leaves
                        // the work to a spinner): more of it may wait (the
                        // rest of a woken FIFO, a `runnext`, a ring, the
                        // global queue). Wake an idle worker to look, as
                        // Go's resetspinning calls wakep when a spinner
                        // finds work (`notify` does nothing if another
                        // worker still searches or none idles).
                        sh.notify();
                    } else if sh.global_len.load(Ordering::Relaxed) > 0 || self.queue.len() > 0 {
                        // Test-only: the first version, which looked only
                        // at the global queue and its own ring.
                        sh.notify();
                    }
                }
                return Some(t);
            }
            if !spinning {
                spinning = true;
                sh.nspinning.fetch_add(1, Ordering::SeqCst);
            }
            rounds += 1;
            // No work can come from inside the runtime soon: a short
            // search, no nap (see `LONE_SPIN_ROUNDS`).
            let lone = LONE_SPIN.load(Ordering::Relaxed) && !self.others_run();
            if rounds < if lone { LONE_SPIN_ROUNDS } else { SPIN_ROUNDS } {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                continue;
            }
            if lone {
                // Straight to the idle sleep below, no nap.
                LONE_SPINS.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing found for a whole spin. If another worker switched
            // meanwhile, it may be busy handing tasks to itself (a
            // ping-pong, spawn+join: each hand-off puts a task in its
            // `runnext` and, with no worker spinning, wakes an idle one,
            // which finds nothing it may take either, spins and sleeps
            // again): nap instead of sleeping, still counted as spinning,
            // so that those hand-offs wake nobody, and look again after
            // the nap (a few rounds: enough to steal a `runnext` whose
            // owner stopped switching). Once nobody switched for
            // `NAP_CREDIT` naps in a row (the busy worker finished, or its
            // thread lost its CPU for a while), sleep. Only the sole
            // spinner naps (the count includes this worker): one searcher
            // is enough to keep hand-offs from waking anyone, and with
            // many workers and one busy, every idle worker would otherwise
            // nap and burn a fifth of a CPU each. Two spinners that both
            // see the other both sleep: no napper, as before the nap.
            let sole = sh.nspinning.load(Ordering::SeqCst) == 1 || !SPIN_NAP_SOLE.load(Ordering::Relaxed);
            if !lone && SPIN_NAP.load(Ordering::Relaxed) && sole {
                let switches = self.others_switches();
                if switches != switches_seen {
                    switches_seen = switches;
                    nap_credit = NAP_CREDIT;
                } else {
                    nap_credit = nap_credit.saturating_sub(1);
                }
                if nap_credit != 0 {
                    self.nap();
                    rounds = SPIN_ROUNDS - NAP_ROUNDS;
                    continue;
                }
            }
            sh.nspinning.fetch_sub(1, Ordering::SeqCst);
            spinning = false;
            rounds = 0;
            self.idle_sleep();
        }
    }
}

/// Where a task that used up its quantum (async preemption) while another
/// task waits for its worker queues: the global queue, as Go's
/// `gopreempt_m` (issue 11, uneven loop splits), when it may run on any
/// worker and another worker has nothing queued; else its worker's ring. (When nothing waits, the preemption
/// found no successor and the task stays local: pushing it to the global
/// queue would mark every worker contended, so loops as many as the
/// workers would tick each other forever; issue 12's quiet loops.)
///
/// With the ring, loops split unevenly stayed so: with 3 loops on worker A
/// and 1 on B, B's ring and the global queue stay empty, so B is never
/// contended (its quantum never ticks) and runs its loop alone, while A
/// rotates 3; B helps only once its loop ends (it then steals one), and the
/// tail runs on one core. Through the global queue every preemption makes
/// the busy workers contended (`notify_global`), and a worker whose ring is
/// empty takes the next loop from it (`take_global_now`), so all the loops
/// rotate over all the workers, as in Go. Kept local: a task pinned to this
/// thread, a runtime with one worker, and a preemption for a stop (the
/// world restarts where it was).
///
/// `t` is the running task being preempted, on the thread driving `w`.
#[inline]
pub(super) fn preempted_goes_global(w: &Worker, t: TaskRef) -> bool {
    let pinned = t.pinned_worker.get() != NO_PIN;
    if pinned || w.solo || w.stopping() || !PREEMPTED_TO_GLOBAL.load(Ordering::Relaxed) {
        return false;
    }
    // Only while another worker has nothing queued (it runs one task at
    // most): the split is uneven. When every worker has a queue (e.g. 32
    // loops on 2 workers), the tasks stay local: going through the global
    // queue there made 1 ms sleepers beside them wake later (p99 10-47 ms
    // against 2-21 ms kept local, `benches/preempt.rs --fairness`,
    // alternated runs on a loaded machine).
    w.shared().workers.iter().any(|v| {
        v.index != w.index
            && v.queue.len() == 0
            && v.runnext.0.load(Ordering::Relaxed).is_null()
            && v.woken_len.load(Ordering::Relaxed) == 0
    })
}

/// Makes a parked or new task runnable: on this thread's worker if it belongs
/// to the same runtime, otherwise on its runtime's global queue. On this
/// worker it takes the `runnext` slot (as Go does) when a task is running,
/// or when it is `woken` (a wake: timer, channel, mutex, join..., not a
/// spawn) from the scheduler loop; a spawn from the scheduler loop goes to
/// the ring. The slot's previous occupant is displaced: to the woken FIFO if
/// it was woken (it keeps its boost, latency fairness, issue 11), else to
/// the back of the ring. So `runnext` always holds the newest task and the
/// FIFO the older woken ones in wake order (see `Worker::take_boosted`).
///
/// The caller owns `t` (it is new, or it won the unpark).
pub(crate) fn make_runnable(tr: TaskRef, woken: bool) {
    let (t, task) = (tr, &*tr);
    task.woken.set(woken);
    task.state.store(state::RUNNABLE, Ordering::Relaxed);
    let m = machine();
    // SAFETY: machine and worker are valid on this thread while set.
    unsafe {
        if !m.is_null() {
            let w = (*m).worker.get();
            if !w.is_null() && (*w).shared == task.shared {
                let w = &*w;
                let running = !(*m).current.get().is_null();
                if !running && woken {
                    match BOOST_POLICY.load(Ordering::Relaxed) {
                        BOOST_OFF => {
                            w.push_local(t);
                            w.shared().notify();
                            return;
                        }
                        BOOST_FIRST_VERSION => {
                            w.push_woken(t);
                            w.shared().notify();
                            return;
                        }
                        _ => {}
                    }
                }
                if running || woken {
                    if running {
                        // The running task made it runnable here: its
                        // quantum must tick from now on (it may keep the
                        // CPU).
                        w.contend_self();
                    }
                    if w.solo {
                        let old = w.runnext.0.load(Ordering::Relaxed);
                        w.runnext.0.store(t.as_ptr(), Ordering::Relaxed);
                        // SAFETY: as in `Worker::take_runnext`: we emptied
                        // the slot (only this thread fills a solo worker's).
                        if let Some(old) = TaskRef::from_raw(old) {
                            w.push_displaced(old);
                        }
                        return;
                    }
                    // SeqCst swap: orders the publication before the idle
                    // check in `notify_after_seqcst` (see there).
                    // SAFETY: as in `Worker::take_runnext`: the swap
                    // emptied the slot of its previous task, now ours.
                    let Some(old) = TaskRef::from_raw(w.runnext.0.swap(t.as_ptr(), Ordering::SeqCst)) else {
                        // Work appeared while a worker may idle: wake one
                        // (Go's wakep), which can steal from runnext if this
                        // worker does not get to it.
                        w.shared().notify_after_seqcst();
                        return;
                    };
                    // An idle worker takes a displaced woken task from the
                    // FIFO at once (`steal`), or steals from the ring.
                    w.push_displaced(old);
                    w.shared().notify();
                    return;
                }
                // A spawn from the scheduler loop (no task current): the
                // worker picks next and sees its ring.
                w.push_local(t);
                w.shared().notify();
                return;
            }
        }
    }
    push_global_notify(task.shared(), t);
}

/// `make_runnable` from outside its runtime's workers: `t` goes to the
/// global queue. Out of line: the global queue's lock, inlined, cost the
/// worker paths of `make_runnable` register saves.
#[inline(never)]
fn push_global_notify(sh: &crate::shared::Shared, t: TaskRef) {
    sh.push_global_one(t);
    sh.notify_global();
}

/// Wakes worker `i` (sets its futex word), whether or not it sleeps.
pub(crate) fn wake_worker_word(w: &Worker) {
    w.sleep_word.store(1, Ordering::SeqCst);
    futex_wake(&w.sleep_word, 1);
}

