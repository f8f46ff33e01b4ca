//! A worker stands aside while the GC's background collector marks (issue
//! 9, the stop tails on a full machine).
//!
//! **Why.** The heap's collector is a thread beside the workers. On a
//! machine with as many CPUs as workers (binary-trees 21 on 2 workers and 2
//! vCPUs) it marks for 40-80 ms a cycle while both workers run, so the OS
//! shares two CPUs among three runnable threads: at any moment one of them
//! waits in the run queue. The mark's termination stop then waits for a
//! worker that has no CPU to answer on: the stop trace classified 35% of
//! binary-trees' stops as "a worker waited for a CPU" (time-to-safepoint
//! p50 106 µs against 6 µs for the rest), and `perf sched` showed the
//! collector queued behind a worker for milliseconds while the other CPU
//! idled. Go never has this: its mark workers take a P, so the OS never
//! runs more of its threads than `GOMAXPROCS`.
//!
//! **What.** While the collector marks concurrently, one worker gives it its
//! place: the GC calls `World::background_marking(true)` right after its
//! start stop restarts the world, and `(false)` after its last stop. If
//! the workers and the collector outnumber the CPUs and the runtime has two
//! workers or more, [`begin`] raises `Stw::lend_pending` (on the switch
//! path's cache line, beside the stop flag: `next_fast` reads both) and
//! asks one busy worker's task to get off its CPU (a preemption request).
//! The first worker to reach its scheduler loop with the flag up claims it
//! ([`Worker::try_stand_aside`]): it moves its queued tasks to the global
//! queue (marking the other workers contended, so their quanta tick and
//! the tasks rotate), counts as stopped for stops (`stw::enter_safe`), and
//! sleeps on its futex word until [`end`] wakes it; then it waits out any
//! stop in force and runs tasks again. The termination stop so finds one
//! worker to stop, and that worker has a CPU.
//!
//! **Not at any price** (work conservation, issue 11). A worker with tasks
//! pinned to it does not claim the lend (they could run nowhere else).
//! The worker standing aside looks every [`CHECK_EVERY`]: it goes back to
//! work for the rest of the cycle if work waits in the global queue or its
//! inbox while no other worker has switched tasks since its last look (the
//! others are stuck in long non-preemptible code or kept off their CPUs:
//! the queued tasks would wait for the whole mark). At shutdown it leaves
//! at once.
//!
//! **Alternatives rejected.** Lowering the collector's OS priority
//! (`SCHED_IDLE`, nice 19) starves the mark whenever the workers are busy,
//! and the assists then do all the marking: measured in session 15 as
//! assist-only marking, 10-25% slower. Running the mark *on* a worker
//! (as Go's mark worker runs on a P) would need the GC crate to depend on
//! the scheduler, or a job protocol through `World` for what is, here, the
//! same effect: one fewer runnable thread. Parking a worker only in the
//! termination stop does not help: the stop is then already waiting.
//!
//! Who touches what: `Stw::lend_pending` is raised (SeqCst) by [`begin`]
//! and cleared by [`end`] or by the claiming worker's CAS; [`Lend::active`]
//! is written by [`begin`]/[`end`] only (the GC's collector thread, one at
//! a time per heap); [`Lend::lent`] (the standing-aside worker's index + 1)
//! is written by that worker only, read by [`end`] to wake it.

use super::machine::Worker;
use crate::shared::Shared;
use crate::sys::{futex_wait, now_ns};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// How often a worker standing aside checks that the others make progress
/// (see the module docs).
pub(crate) const CHECK_EVERY_NS: u64 = 1_000_000;

/// Test-only switch (negative control): when cleared, no worker stands
/// aside, as before. Set through `hooks::set_stand_aside_for_tests`.
pub(crate) static STAND_ASIDE: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of the call-backs): when cleared, a
/// worker standing aside goes back only when the mark ends. Set through
/// `hooks::set_stand_aside_callbacks_for_tests`.
pub(crate) static CALLBACKS: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of the stop protocol): when
/// cleared, a worker standing aside does not count as stopped (a stop
/// waits until it goes back) and goes back without waiting out a stop.
/// Set through `hooks::set_stand_aside_stop_protocol_for_tests`.
pub(crate) static STOP_PROTOCOL: AtomicBool = AtomicBool::new(true);

/// Test-only: the CPU count the policy assumes (0: the process's). Set
/// through `hooks::set_stand_aside_cpus_for_tests`.
pub(crate) static CPUS_FOR_TESTS: AtomicUsize = AtomicUsize::new(0);

/// The lend of a worker to the GC's background collector, per runtime.
#[derive(Default)]
pub(crate) struct Lend {
    /// The collector marks and wants a worker's place (between [`begin`]
    /// and [`end`]). Written by the collector's thread only.
    active: AtomicBool,
    /// The worker standing aside (its index + 1), or 0. Written by that
    /// worker only (set after its claim, cleared when it goes back).
    lent: AtomicUsize,
    /// Lends begun (stats): by [`begin`].
    pub(crate) asked: AtomicU64,
    /// Lends claimed by a worker (stats): by the claiming worker.
    pub(crate) claimed: AtomicU64,
    /// Workers that went back early because work waited (stats).
    pub(crate) returned_early: AtomicU64,
}

impl Lend {
    /// (asked, claimed, called back by work, the worker standing aside).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn counts(&self) -> (u64, u64, u64, Option<usize>) {
        let l = self.lent.load(Ordering::SeqCst);
        (
            self.asked.load(Ordering::Relaxed),
            self.claimed.load(Ordering::Relaxed),
            self.returned_early.load(Ordering::Relaxed),
            l.checked_sub(1),
        )
    }
}

/// The CPUs this process may run on (or the tests' figure).
fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match CPUS_FOR_TESTS.load(Ordering::Relaxed) {
        0 => *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    }
}

/// The GC's background collector begins marking with the world running
/// (`World::background_marking(true)`, on the collector's thread, which is
/// not a worker). Asks one worker to stand aside if the workers and the
/// collector outnumber the CPUs.
pub(crate) fn begin(sh: &Shared) {
    let n = sh.workers.len();
    if n < 2 || n < cpus() || !STAND_ASIDE.load(Ordering::Relaxed) || sh.shutdown.load(Ordering::Relaxed) {
        return;
    }
    sh.lend.asked.fetch_add(1, Ordering::Relaxed);
    sh.lend.active.store(true, Ordering::SeqCst);
    sh.stw.lend_pending.store(true, Ordering::SeqCst);
    // A worker in its scheduler loop claims at its next look; one running a
    // task sees the flag at its next switch. A task that runs alone on its
    // worker is not preempted by its quantum (nobody waits): ask one busy
    // worker's task to get off its CPU (a no-preemption section defers
    // the request to its next cooperative point, e.g. an allocation).
    for w in sh.workers.iter() {
        if w.running_task.load(Ordering::SeqCst) == 0 {
            // In its scheduler loop: it claims by itself.
            return;
        }
    }
    // Every busy worker: one with tasks pinned to it cannot claim, and
    // which one has any is its own business (`Worker::pinned`). The one
    // that loses the claim runs its next task; each request costs at most
    // one switch a cycle.
    for w in sh.workers.iter() {
        let slot = w.slot.load(Ordering::Acquire);
        // SAFETY: slots are `'static` (pooled, never freed).
        if let Some(slot) = unsafe { slot.as_ref() } {
            crate::stw::request_task_preempt(w, slot);
        }
    }
}

/// The collector's marking is over (`World::background_marking(false)`,
/// after its last stop of the cycle): the worker standing aside goes back.
pub(crate) fn end(sh: &Shared) {
    if !sh.lend.active.load(Ordering::Relaxed) {
        return;
    }
    sh.stw.lend_pending.store(false, Ordering::SeqCst);
    sh.lend.active.store(false, Ordering::SeqCst);
    // Dekker with the claimer (`try_stand_aside`: it stores `lent`, then
    // reads `active`, both SeqCst): we see its `lent`, or it sees `active`
    // cleared and does not sleep.
    let l = sh.lend.lent.load(Ordering::SeqCst);
    if l != 0 {
        super::policy::wake_worker_word(&sh.workers[l - 1]);
    }
}

impl Worker {
    /// Whether the collector asked for a worker's place and nobody took it
    /// yet (the switch path: then `next_fast` answers `None`).
    #[inline(always)]
    pub(super) fn lend_pending(&self) -> bool {
        self.shared().stw.lend_pending.load(Ordering::Relaxed)
    }

    /// In the scheduler loop, with `lend_pending` seen: claims the lend
    /// and stands aside until the collector's mark ends or work needs this
    /// worker (see the module docs). `None` if this worker may not or
    /// another claimed first; else why it came back.
    #[cold]
    #[inline(never)]
    pub(super) fn try_stand_aside(&self) -> Option<Back> {
        let sh = self.shared();
        if self.pinned.get() != 0
            || sh.stw.lend_pending.compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed).is_err()
        {
            return None;
        }
        sh.lend.claimed.fetch_add(1, Ordering::Relaxed);
        // Its queued tasks to the global queue, where the others take them
        // (with the contention flags raised: their quanta tick).
        let mut moved = 0;
        while let Some(t) = self.next_local() {
            sh.push_global_one(t);
            moved += 1;
        }
        if moved > 0 {
            sh.notify_global();
        }
        let protocol = STOP_PROTOCOL.load(Ordering::Relaxed);
        if protocol {
            crate::stw::enter_safe(sh, self.index);
        }
        self.sleep_word.store(0, Ordering::SeqCst);
        sh.lend.lent.store(self.index + 1, Ordering::SeqCst);
        // No task switch on the other workers for this long while tasks
        // wait in the global queue: they are stuck (long non-preemptible
        // code, or off their CPUs), and this worker goes back.
        let stuck_after = if sh.preempt.enabled { 2 * sh.preempt.quantum.as_nanos() as u64 } else { 2 * CHECK_EVERY_NS };
        let mut seen = self.others_switches();
        let mut seen_at = now_ns();
        let back = loop {
            if !sh.lend.active.load(Ordering::SeqCst) || sh.shutdown.load(Ordering::SeqCst) {
                break Back::Ended;
            }
            let callbacks = CALLBACKS.load(Ordering::Relaxed);
            if callbacks && self.inbox_len.load(Ordering::SeqCst) > 0 {
                break Back::Work;
            }
            let now = now_ns();
            let nt = if callbacks { sh.next_timer.load(Ordering::SeqCst) } else { u64::MAX };
            if nt <= now {
                // A sleeper is due: this worker fires it and runs it (the
                // others may be inside a quantum for a while).
                break Back::Work;
            }
            let sw = self.others_switches();
            // (A stop in force holds every worker still: not stuck.)
            if sw != seen || sh.stw.stop.load(Ordering::SeqCst) {
                (seen, seen_at) = (sw, now);
            } else if callbacks && now - seen_at >= stuck_after && sh.global_len.load(Ordering::SeqCst) > 0 {
                break Back::Work;
            }
            futex_wait(&self.sleep_word, 0, Some(CHECK_EVERY_NS.min(nt.saturating_sub(now))));
            self.sleep_word.store(0, Ordering::SeqCst);
        };
        sh.lend.lent.store(0, Ordering::SeqCst);
        if protocol {
            crate::stw::leave_safe(sh, self.index);
        }
        if back == Back::Work {
            sh.lend.returned_early.fetch_add(1, Ordering::Relaxed);
            // The mark goes on: a worker may take the collector's side again
            // once out of work (this one, after it ran what called it back).
            if sh.lend.active.load(Ordering::SeqCst) {
                sh.stw.lend_pending.store(true, Ordering::SeqCst);
                // Cleared by `end` meanwhile: not raised again.
                if !sh.lend.active.load(Ordering::SeqCst) {
                    sh.stw.lend_pending.store(false, Ordering::SeqCst);
                }
            }
        }
        Some(back)
    }
}

/// Why a worker that stood aside came back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Back {
    /// The collector's mark ended (or the runtime shuts down).
    Ended,
    /// Work needs it: a due timer, its inbox, or tasks the other workers
    /// have not taken for two quanta.
    Work,
}
