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
//! workers or more, [`begin`] posts an offer (`Stw::lend_offer`) and asks
//! the busy workers' tasks to get off their CPUs (a preemption request
//! each, once a cycle). The paths those requests take read the offer (an
//! async preemption, `preempt_current`; a checkpoint's yield,
//! `yield_at_checkpoint`) and go to the scheduler loop; plain yields,
//! parks and `next_fast` do not read it (they would pay for it on every
//! switch: +6 instructions a row in callgrind's `workers(1)` yield).
//! The first worker to reach its scheduler loop with the offer up claims it
//! ([`Worker::try_stand_aside`]): it moves its queued tasks to the global
//! queue (marking the other workers contended, so their quanta tick and
//! the tasks rotate), counts as stopped for stops (`stw::enter_safe`), and
//! sleeps on its futex word until [`end`] wakes it; then it waits out any
//! stop in force and runs tasks again. The termination stop so finds one
//! worker to stop, and that worker has a CPU.
//!
//! **Not at any price** (work conservation, issue 11). A worker with tasks
//! pinned to it does not claim the lend (they could run nowhere else), nor
//! one with tasks waiting for a boosted pick (`runnext`, the woken FIFO:
//! woken sleepers, just-spawned tasks), which would lose their boost in
//! the global queue.
//! The worker standing aside goes back to work **for the rest of the
//! cycle** when work needs it:
//! - a due timer, or its inbox (a task pinned to it that another worker
//!   took from a shared queue). While the pin rule above holds this cannot
//!   happen: a worker with pinned tasks does not claim, and a worker that
//!   runs nothing pins nothing. The check stays as a defence for a task
//!   pinned some other way in the future; it has no test of its own (the
//!   pin rule's negative control, which claims with a pinned task, shows
//!   what it guards against);
//! - a task in another worker's `runnext` or woken FIFO while that worker
//!   has not switched for [`BOOSTED_GRACE_NS`] (50 µs; an idle worker
//!   steals after 5 µs). A task made runnable on a busy worker while no
//!   worker is idle or searching wakes it to look (`Shared::notify`,
//!   [`wake_aside`]), as it would wake an idle worker;
//! - tasks in another worker's ring while that worker has not switched
//!   for two quanta, or in the global queue while no other worker has (a
//!   contended worker switches at least once a quantum, so two quanta
//!   without a switch mean its task is in long non-preemptible code, or its
//!   thread is kept off its CPU: its queued tasks would wait for the whole
//!   mark).
//!
//! Otherwise it looks every [`CHECK_EVERY_NS`]. It does not claim again
//! in that cycle: the first version did at its next switch, kept handing
//! its ring back to the global queue, and the runtime all but stopped
//! beside a stuck worker (review 109). While a stop is requested or in
//! force nobody counts as stuck (the workers are held for it). At
//! shutdown it leaves at once.
//!
//! So workloads whose tasks hand each other work through `runnext` on
//! every worker (channel ping-pong pairs on each worker) get no lend: at
//! every visit of the scheduler loop the partner waits there (review 111).
//! They keep the CPUs shared with the collector, as before.
//!
//! The one hazard it widens: a task that spin-waits, in code that neither
//! switches nor polls, for a task it made runnable on its own worker. An
//! idle worker steals that task within 5 µs; the worker standing aside
//! within 50 µs and its wake-up. A stop requested in between waits for the
//! spinning task for ever, as it already did when that window was 5 µs
//! (and always, with one worker); the GC's termination stop is such a
//! stop (review 110 found the first version's window at two quanta, and
//! unbounded once a stop was requested).
//!
//! **Alternatives rejected.** Lowering the collector's OS priority
//! (`SCHED_IDLE`, nice 19) starves the mark whenever the workers are busy,
//! and the assists then do all the marking: measured in session 15 as
//! assist-only marking, 10-25% slower. Running the mark *on* a worker
//! (as Go's mark worker runs on a P) would need the GC crate to depend on
//! the scheduler, or a job protocol through `World` for what is, here, the
//! same effect: one fewer runnable thread. Parking a worker only in the
//! termination stop does not help: the stop is then already waiting.
//! Lending more than one worker where the workers outnumber the CPUs by
//! more: not done (one collector thread takes one CPU).
//!
//! **Generations.** Each lend has a generation ([`Lend::gen`], never 0).
//! The offer on the switch path (`Stw::lend_offer`) holds the generation
//! of the lend not yet claimed, or 0; a worker claims it with a CAS from
//! that generation to 0, stands aside for that generation only, and leaves
//! when [`Lend::gen`] no longer holds it. So a mark that ends and a next
//! one that begins before the worker of the first looks cannot leave two
//! workers aside (review 109: both stood aside, and the second's record
//! was overwritten by the first's).
//!
//! Who touches what: [`Lend::gen`] is written by [`begin`] and [`end`]
//! only (the GC's collector thread: one cycle at a time per heap, and one
//! heap per runtime); `Stw::lend_offer` is stored by [`begin`], cleared by
//! [`end`] or by the claiming worker's CAS; [`Lend::aside`]`[i]` (the
//! generation worker `i` stands aside for, or 0) is written by worker `i`
//! only, read by [`end`] to wake it.

use super::machine::Worker;
use crate::shared::Shared;
use crate::sys::{futex_wait, now_ns};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// How often a worker standing aside checks that the others make progress
/// (see the module docs).
pub(crate) const CHECK_EVERY_NS: u64 = 1_000_000;

/// How long a task may wait in another worker's `runnext` or woken FIFO
/// while that worker does not switch, before the worker standing aside
/// goes back for it. Longer than an idle worker's steal grace
/// (`RUNNEXT_GRACE_NS`, 5 µs): a task that spawns and then joins at once
/// must not cost the collector its CPU; short enough that a task that
/// spawns and then waits for its child in code that does not switch gets
/// it run within a poll or two (see the module docs).
pub(crate) const BOOSTED_GRACE_NS: u64 = 50_000;

/// Test-only switch (negative control): when cleared, no worker stands
/// aside, as before. Set through `hooks::set_stand_aside_for_tests`.
pub(crate) static STAND_ASIDE: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of the call-backs): when cleared, a
/// worker standing aside goes back only when the mark ends. Set through
/// `hooks::set_stand_aside_callbacks_for_tests`.
pub(crate) static CALLBACKS: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of "a worker with pinned tasks does
/// not claim"): when cleared, it claims anyway, and its pinned tasks go to
/// the global queue, whence they can only be forwarded back to its inbox.
/// Set through `hooks::set_stand_aside_respects_pins_for_tests`.
pub(crate) static RESPECT_PINS: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of "a worker with boosted tasks does
/// not claim"): when cleared, it claims and moves them to the global
/// queue, as the first version did. Set through
/// `hooks::set_stand_aside_keeps_boosted_for_tests`.
pub(crate) static KEEP_BOOSTED: AtomicBool = AtomicBool::new(true);

/// Test-only switch (negative control of the stop protocol): when
/// cleared, a worker standing aside does not count as stopped (a stop
/// waits until it goes back) and goes back without waiting out a stop.
/// Set through `hooks::set_stand_aside_stop_protocol_for_tests`.
pub(crate) static STOP_PROTOCOL: AtomicBool = AtomicBool::new(true);

/// Test-only: the CPU count the policy assumes (0: the process's). Set
/// through `hooks::set_stand_aside_cpus_for_tests`.
pub(crate) static CPUS_FOR_TESTS: AtomicUsize = AtomicUsize::new(0);

/// The lend of a worker to the GC's background collector, per runtime.
pub(crate) struct Lend {
    /// The generation of the lend in force (the collector marks and wants
    /// a worker's place), or 0 (between [`end`] and the next [`begin`]).
    gen: AtomicU32,
    /// The last generation handed out (its successor skips 0). Collector
    /// only.
    last: AtomicU32,
    /// Per worker: the generation it stands aside for, or 0. Written by
    /// that worker only (set after its claim, cleared when it goes back).
    aside: Box<[AtomicU32]>,
    /// Workers standing aside now: incremented (SeqCst) by such a worker
    /// before its first look at the queues, decremented when it goes
    /// back; read by `Shared::notify` after its fence, which then wakes
    /// it (a task made runnable on a busy worker, nobody idle).
    pub(crate) aside_count: AtomicUsize,
    /// Lends begun (stats): by [`begin`].
    pub(crate) asked: AtomicU64,
    /// Lends claimed by a worker (stats): by the claiming worker.
    pub(crate) claimed: AtomicU64,
    /// Workers that went back early because work needed them (stats).
    pub(crate) returned_early: AtomicU64,
}

impl Lend {
    pub(crate) fn new(workers: usize) -> Lend {
        Lend {
            gen: AtomicU32::new(0),
            last: AtomicU32::new(0),
            aside: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            aside_count: AtomicUsize::new(0),
            asked: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            returned_early: AtomicU64::new(0),
        }
    }

    /// Whether worker `i` stands aside now (stop reports).
    pub(crate) fn is_aside(&self, i: usize) -> bool {
        self.aside[i].load(Ordering::Relaxed) != 0
    }

    /// (asked, claimed, called back by work, the first worker standing aside).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn counts(&self) -> (u64, u64, u64, Option<usize>) {
        (
            self.asked.load(Ordering::Relaxed),
            self.claimed.load(Ordering::Relaxed),
            self.returned_early.load(Ordering::Relaxed),
            self.aside.iter().position(|a| a.load(Ordering::SeqCst) != 0),
        )
    }
}

/// The CPUs this process may run on (`sys::process_cpus`), or the tests'
/// figure.
fn cpus() -> usize {
    match CPUS_FOR_TESTS.load(Ordering::Relaxed) {
        0 => crate::sys::process_cpus(),
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
    let l = &sh.lend;
    let g = match l.last.load(Ordering::Relaxed).wrapping_add(1) {
        0 => 1,
        g => g,
    };
    l.last.store(g, Ordering::Relaxed);
    l.asked.fetch_add(1, Ordering::Relaxed);
    l.gen.store(g, Ordering::SeqCst);
    sh.stw.lend_offer.store(g, Ordering::SeqCst);
    // A worker in its scheduler loop claims at its next look. A busy one
    // claims only after a preemption or a checkpoint's yield (plain
    // switches do not read the offer), and a task that runs alone on its
    // worker is not preempted by its quantum (nobody waits): ask the busy
    // workers' tasks to get off their CPUs (a no-preemption section defers
    // the request to its next cooperative point, e.g. an allocation). Not
    // while the world is stopped (the holder of the stop would refuse it).
    if sh.stw.stop.load(Ordering::SeqCst) {
        return;
    }
    for w in sh.workers.iter() {
        if w.idle.load(Ordering::SeqCst) {
            // Asleep (no CPU taken): no thread is one too many. It claims
            // when it wakes and finds nothing to run; nobody is asked.
            // (Only idle: a worker in a `blocking` section or between tasks
            // reads `running_task` 0 too, and waiting for it left most
            // lends unclaimed: review 111.)
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
/// after its last stop of the cycle, or when the cycle unwinds): the
/// worker standing aside goes back.
pub(crate) fn end(sh: &Shared) {
    let l = &sh.lend;
    let g = l.gen.swap(0, Ordering::SeqCst);
    if g == 0 {
        return;
    }
    // The offer, if still this lend's (nobody claimed it).
    let _ = sh.stw.lend_offer.compare_exchange(g, 0, Ordering::SeqCst, Ordering::Relaxed);
    // Dekker with the claimer (`try_stand_aside`: it stores `aside[i]`,
    // then reads `gen`, both SeqCst): we see its `aside`, or it sees the
    // generation gone and does not sleep.
    for (i, a) in l.aside.iter().enumerate() {
        if a.load(Ordering::SeqCst) == g {
            super::policy::wake_worker_word(&sh.workers[i]);
        }
    }
}

/// A task was made runnable on a busy worker and no worker is idle or
/// searching (`Shared::notify`): wakes the workers standing aside, which
/// look at the other workers' queues (one futex wake per sleep of theirs:
/// a worker's word already set is not woken again).
#[cold]
#[inline(never)]
pub(crate) fn wake_aside(sh: &Shared) {
    for (i, a) in sh.lend.aside.iter().enumerate() {
        if a.load(Ordering::Relaxed) != 0 {
            let w = &sh.workers[i];
            if w.sleep_word.swap(1, Ordering::SeqCst) == 0 {
                crate::sys::futex_wake(&w.sleep_word, 1);
            }
        }
    }
}

impl Worker {
    /// Whether the collector offers a lend nobody took yet (the requests'
    /// paths: then they go to the scheduler loop).
    #[inline(always)]
    pub(super) fn lend_pending(&self) -> bool {
        self.shared().stw.lend_offer.load(Ordering::Relaxed) != 0
    }

    /// In the scheduler loop, with an offer seen: claims the lend
    /// and stands aside until the collector's mark ends or work needs this
    /// worker (see the module docs). `None` if this worker may not or
    /// another claimed first; else why it came back.
    #[cold]
    #[inline(never)]
    pub(super) fn try_stand_aside(&self) -> Option<Back> {
        let sh = self.shared();
        let g = sh.stw.lend_offer.load(Ordering::SeqCst);
        // Not with tasks pinned here (they could run nowhere else), nor
        // with woken or just-spawned tasks waiting for a boosted pick
        // (`runnext`, the woken FIFO): moved to the global queue they lost
        // their boost and waited behind every queued task (review of
        // usurp-stress, 64 tasks, quantum 1 ms, ~230 marks a second: 1 ms
        // sleepers' wake latency p99 2.8 -> 9-11 ms, max 9 -> 130-160
        // ms). Another worker claims, or this one once they ran.
        let boosted = KEEP_BOOSTED.load(Ordering::Relaxed)
            && (!self.runnext.0.load(Ordering::Relaxed).is_null() || self.woken_len.load(Ordering::Relaxed) != 0);
        let pinned = RESPECT_PINS.load(Ordering::Relaxed) && self.pinned.get() != 0;
        if g == 0
            || pinned
            || boosted
            || sh.stw.lend_offer.compare_exchange(g, 0, Ordering::SeqCst, Ordering::Relaxed).is_err()
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
        // No timer signals while aside (as an idle worker: the global
        // pushes above may have marked this slot contended).
        let slot = self.slot.load(Ordering::Relaxed);
        // SAFETY: slots are `'static`.
        let slot = unsafe { slot.as_ref() };
        if let Some(s) = slot {
            let _ = s.set_idle(true);
        }
        self.sleep_word.store(0, Ordering::SeqCst);
        sh.lend.aside[self.index].store(g, Ordering::SeqCst);
        sh.lend.aside_count.fetch_add(1, Ordering::SeqCst);
        let back = self.aside_until_called(g);
        sh.lend.aside_count.fetch_sub(1, Ordering::SeqCst);
        sh.lend.aside[self.index].store(0, Ordering::SeqCst);
        if let Some(s) = slot {
            let _ = s.set_idle(false);
        }
        if protocol {
            crate::stw::leave_safe(sh, self.index);
        }
        if back == Back::Work {
            sh.lend.returned_early.fetch_add(1, Ordering::Relaxed);
        }
        Some(back)
    }

    /// The wait of a worker standing aside for lend `g`: until the lend
    /// ends or work needs this worker (see the module docs).
    fn aside_until_called(&self, g: u32) -> Back {
        let sh = self.shared();
        // Two quanta without a switch: stuck (see the module docs).
        let stuck_after = if sh.preempt.enabled { 2 * sh.preempt.quantum.as_nanos() as u64 } else { 2 * CHECK_EVERY_NS };
        // Per worker: its switch count at the last look, since when, and
        // since when (0: not) a task waits in its `runnext` or woken FIFO
        // with that count unchanged.
        let now = now_ns();
        let mut watch: Vec<(u64, u64, u64)> =
            sh.workers.iter().map(|v| (v.switch_count.load(Ordering::Relaxed), now, 0)).collect();
        loop {
            if sh.lend.gen.load(Ordering::SeqCst) != g || sh.shutdown.load(Ordering::SeqCst) {
                return Back::Ended;
            }
            let now = now_ns();
            let callbacks = CALLBACKS.load(Ordering::Relaxed);
            let nt = if callbacks { sh.next_timer.load(Ordering::SeqCst) } else { u64::MAX };
            let mut wait = CHECK_EVERY_NS;
            if callbacks {
                if self.inbox_len.load(Ordering::SeqCst) > 0 || nt <= now {
                    // Its pinned tasks, or a sleeper due: this worker runs
                    // them (the others may be inside a quantum for a while).
                    return Back::Work;
                }
                // (A stop requested or in force holds every worker still:
                // not stuck.)
                let stopped = sh.stw.stop.load(Ordering::SeqCst);
                let mut all_stuck = true;
                for (v, w) in sh.workers.iter().zip(watch.iter_mut()) {
                    if v.index == self.index {
                        continue;
                    }
                    let sw = v.switch_count.load(Ordering::Relaxed);
                    if sw != w.0 || stopped {
                        *w = (sw, now, 0);
                    }
                    let boosted = !v.runnext.0.load(Ordering::SeqCst).is_null() || v.woken_len.load(Ordering::SeqCst) > 0;
                    if !boosted {
                        w.2 = 0;
                    } else if w.2 == 0 {
                        w.2 = now;
                        wait = BOOSTED_GRACE_NS;
                    } else if now - w.2 >= BOOSTED_GRACE_NS {
                        return Back::Work;
                    } else {
                        wait = BOOSTED_GRACE_NS;
                    }
                    let stuck = now - w.1 >= stuck_after;
                    all_stuck &= stuck;
                    if stuck && v.queue.len() > 0 {
                        return Back::Work;
                    }
                }
                if all_stuck && sh.global_len.load(Ordering::SeqCst) > 0 {
                    return Back::Work;
                }
            }
            futex_wait(&self.sleep_word, 0, Some(wait.min(nt.saturating_sub(now))));
            self.sleep_word.store(0, Ordering::SeqCst);
        }
    }
}

/// Why a worker that stood aside came back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Back {
    /// The collector's mark ended (or the runtime shuts down).
    Ended,
    /// Work needs it: a due timer, its inbox, a task in a busy worker's
    /// `runnext` or woken FIFO for [`BOOSTED_GRACE_NS`], or tasks the other
    /// workers have not taken for two quanta. It does not stand aside again in
    /// this search (`find_runnable`), nor for this lend (the offer is
    /// gone).
    Work,
}
