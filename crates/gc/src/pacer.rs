//! The pacer of concurrent marking: when a cycle starts (the trigger), and
//! mutator assists while it marks.
//!
//! **Why.** With one background marker thread beside two CPU-bound workers
//! on two cores, the old pacer (trigger at 3/4 of the growth allowance; an
//! allocation that reached the goal during a mark waited for the cycle to
//! end) left a core idle for most of every mark: the cycle started late
//! (binary-trees 21: at 216 of a 222 MB goal), the mutators hit the goal
//! within milliseconds and blocked until the lone marker finished (12.2 s
//! of concurrent marking in a 17.9 s run, user+sys 26.9 s of 35.8 s).
//!
//! **Assists (Go's).** While a heap marks concurrently, every block (or
//! large object) a mutator takes adds its bytes to that mutator's assist
//! debt; on its way out of the allocation slow path the mutator pays the
//! debt with marking work: bytes to mark = debt × (live bytes still
//! expected to be marked) / (bytes left before the goal), the ratio Go's
//! `assistWorkPerByte` uses, computed afresh at each assist. So the later
//! the mark is, the more each allocation marks, and the heap ends the mark
//! near its goal without anyone waiting. An assist takes grey objects from
//! the heap's grey list (`MarkShared::grey`, where the write barrier puts
//! what it shades); when that is empty it asks the collector's markers to
//! donate half of a stack there (`assist_wanted`, checked every [`SLICE`]
//! objects by the single marker and by each parallel one, in
//! `HeapInner::concurrent_mark_tick`; the first to see it donates). Each
//! assist call is bounded ([`ASSIST_MAX_OBJECTS`] objects), and leaves
//! after the slice in which a stop request shows (below); an unpaid rest stays as debt for the next slow path. What an assist has not
//! scanned goes back to the grey list before it returns; the collector's
//! concurrent loop does not end while an assist holds grey objects
//! (`assists_busy`), and anything left is drained by the termination stop
//! (the world stopped: no assist in flight), so assists never decide
//! termination. Assists mark with atomic RMWs (never in a stop: they run
//! only on World threads, which a stop parks outside allocation).
//!
//! **Goal** (issue 9 item 2). GOGC percent over the heap the last cycle
//! left: `(live + black) × (1 + GOGC/100)`, `live` the bytes the mark
//! found (marked and shaded) and `black` the memory handed out during the
//! mark (allocated black, so the sweep keeps all of it), which is Go's
//! arithmetic (its `heapMarked` counts the objects allocated during the
//! mark). Until session 8 the goal was `live × (1 + GOGC/100)` with
//! `black` counted as already allocated: the growth allowance was then
//! `live - black`, less than GOGC percent of what the sweep left, and
//! binary-trees 21 ran 98-102 cycles to Go's 75-79, each marking the whole
//! live heap (10.75 GB marked in all); counting `black` ran 77-79 cycles
//! (8.29 GB marked), for a max RSS of 323-342 MB against 310-323 MB (Go
//! beside: 333-403 MB; alternated runs at load 3-6, session 8). `black`
//! stays out of `live` (the assists' estimate of the next
//! mark's work: most of it is garbage by then in allocation-heavy
//! programs). [`set_black_counts_as_marked_for_tests`]`(false)` restores
//! the old goal (the negative control, tests/gc_goal_black.rs).
//!
//! **Trigger.** Memory handed out during a mark counts against the next
//! cycle's allowance (see `cycle_body`), so the allocation between two
//! cycles' starts is the trigger's share of the allowance: the later the
//! trigger, the fewer cycles (each marks the whole live heap). With assists
//! pacing the mark, the trigger can be late: [`TRIGGER_NUM`]/[`TRIGGER_DEN`]
//! of the allowance, less what was allocated last cycle between the
//! trigger and the start stop (the background collector's wake-up, the
//! sweep termination, time-to-safepoint), clamped to
//! [`TRIGGER_MIN`]..=[`TRIGGER_MAX`] (per mille). Go computes its trigger
//! from its marking rate with a 25% CPU budget; here the budget is what
//! the assists add to the background marker.
//!
//! **Leaving for a stop** (issue 9 item 1). An assist runs in a
//! no-preemption section: a stop request (or a quantum tick) that lands
//! there is refused and sets the worker's checkpoint flag. The assist
//! tests that flag (`usurp_preempt::checkpoint_requested`, one load of a
//! global word while no worker has a request) after every [`SLICE`]
//! objects (a few microseconds) and, when it is set, leaves with the rest
//! of its debt unpaid: `pay_assist_debt` then reaches its cooperative
//! point, the task parks for the stop, and the assist goes on after it.
//! The allocation's lazy sweep for room (`HeapInner::sweep_for`, up to 64
//! blocks) leaves the same way after each block it sweeps. Without this, a
//! stop waited for the rest of the assist (up to [`ASSIST_MAX_OBJECTS`])
//! or of the sweep budget. [`set_leave_for_requests_for_tests`] turns it
//! off (the negative control); [`request_exit_counters`] counts both the
//! exits and the slices or blocks done with a request outstanding
//! (tests/gc_stop_exit.rs).
//!
//! A sweep that left does not make the refill take a fresh block (it used
//! to): the refill gives up (`Need::Checkpoint`), the slow path passes its
//! cooperative point (the task parks for the stop, or yields for a tick)
//! and retries, sweeping on from the shared cursor. A fresh block per exit
//! grew the footprint by a block per request under frequent requests
//! (quantum ticks, other stops) while unswept garbage had room, and at the
//! hard heap limit, with no fresh block left, the refill escalated to the
//! full sweep (`finish_sweep`) while the stop waited (review, session 6).
//! Bounded: each round sweeps at least one block and the cursor only
//! advances, so a request that the cooperative point cannot clear (a
//! caller's own no-preemption section) costs retries, never a loop. Not in
//! a pause (the allocation retried in the pause of its collection, which
//! must not fail for a request). [`set_sweep_exit_checkpoint_for_tests`]
//! restores the fresh block (the negative control);
//! [`fresh_blocks_after_sweep_exits`] counts the fresh blocks taken after
//! an exit.
//!
//! **Start hand-off** (issue 9, the start stop). An allocation that finds
//! the heap at the trigger asks the background collector for a cycle and
//! then waits for its start stop inside `World::blocking` (counted as
//! stopped; wake-ups counted in `CycleStats::start_waits`), at most
//! [`START_HANDOFF_MAX`], or until the pacer no longer asks (someone else
//! collected). Why: the collector is a thread beside the workers. On two
//! cores with two busy workers (binary-trees) it took a worker's CPU when
//! it woke for the cycle, and that worker then waited for a CPU through
//! most of the start stop (the stop trace's `rq`): start stops of two
//! running workers cost 150-200 µs at p50, against 7-30 µs for
//! termination stops that find the workers waiting in an assist at the
//! goal (most of them). Waiting, the allocating worker gives the collector
//! its CPU; the other workers reach the trigger at their next refill and
//! wait as well, so the start stop mostly finds them stopped. The waiters
//! sleep on a condvar the start stop notifies (`HeapInner::started_cv`;
//! the first version polled every 20 µs, and each poll slept 60-90 µs on
//! this VM: 0.5-0.7 ms of worker sleep per cycle in the review's
//! binary-trees runs). The workers lose the collector's wake-up, sweep
//! termination and the stop itself; the stop figures in gctrace do not
//! count that wait (`start_waits` counts the wake-ups). Only
//! where the workers and the collector outnumber the CPUs
//! (`World::parallelism` + 1 > `available_parallelism`): with a CPU to
//! spare the collector displaces nobody, and the wait would only cost the
//! workers its wake-up. Not for
//! the task that holds the world stopped (`World::caller_holds_stop`: the
//! start stop would wait for it), and only with a World that collects in
//! the background. [`set_start_handoff_for_tests`] turns it off (the
//! negative control); [`start_handoffs`] counts the allocations that
//! waited (tests/gc_start_handoff.rs).
//!
//! **Placement** (session 16). Waiting gave the collector a CPU, but not
//! always this one: the OS tended to wake the collector on the CPU it last
//! ran on, where the other worker ran, and that worker then waited in the
//! run queue through the start stop (the stop trace: request acknowledged
//! 65-80 µs into the stop, run-queue wait 300 µs and more) while this CPU
//! idled. So the waiting allocation pins the collector to its own CPU
//! (`sched_setaffinity`) before it wakes it, saving the collector's mask
//! of that moment, and the collector restores it as soon as its start stop
//! holds the world (the pause, and any thread it starts, must not stay on
//! one CPU; review 111 found a stop-the-world mark pinned for its whole
//! pause); so does an allocation whose wait timed out
//! (`HeapInner::place_collector_here`, `unpin_collector`). A mask the
//! kernel refuses on restore (a cpuset changed meanwhile) falls back to
//! every CPU, which the kernel clamps to the allowed ones. Left: an
//! affinity change of the process made while the pin is in force (a
//! millisecond at most) is undone for the collector's thread. binary-trees
//! 21, three alternated pairs of runs: stops p50 0.050-0.053 ms against
//! 0.081-0.097 ms. [`set_collector_placement_for_tests`] turns it off (the
//! negative control, tests/gc_collector_placement.rs).
//!
//! [`set_collector_placement_for_tests`]: crate::heap::set_collector_placement_for_tests
//!
//! **Waiting at the goal** (before the start stop). An allocation that
//! finds the heap at its goal while the cycle asked for at the trigger has
//! not started yet (the collector thread is late: woken, sweeping, or kept
//! off the CPU) waits for the start stop inside `World::blocking` (counted
//! as stopped). It waits on `HeapInner::started_cv` like the hand-off,
//! re-checking every [`GOAL_WAIT_RECHECK`] at most (a safety net: every
//! way out of the wait but one is preceded by the start stop, which
//! notifies; the one exception, the checkrefs quarantine raising the goal
//! from a sweep, is rare and only costs that re-check). It used to sleep
//! 20 µs at a time: every poll woke a worker (60-90 µs on this VM) that
//! took a CPU the late collector needed to start the cycle, and the start
//! was seen up to a poll late. [`set_goal_wait_on_cv_for_tests`]`(false)`
//! restores the polls (the negative control); [`goal_wait_counters`]
//! counts the wake-ups that found the cycle started and those that found
//! it still not started (tests/gc_goal_wait.rs).
//!
//! A waiter whose re-check finds the cycle still not started looks at the
//! collector (`HeapInner::goal_wait_stalled`): if its cycle failed since
//! the wait began (a panic in the World's `stop_the_world` or anywhere
//! else before the start stop: the cycle is abandoned and nothing would
//! start it again) or its thread is gone (it panicked outside a cycle, or
//! could not be spawned), the waiter leaves the wait and runs the cycle
//! itself, as an allocation does with a World that does not collect in the
//! background; if that cycle fails too, the allocation panics, naming the
//! collector's failure and its own (never a wait without end). Else, with
//! no request pending (the collector took it, or declined it), it asks
//! again (cheap; a cycle the pacer no longer wants is declined at once).
//! Once the collector's thread is gone, allocations at the trigger run
//! the cycles themselves. [`set_goal_wait_takeover_for_tests`]`(false)`
//! restores the endless wait (the negative control);
//! [`goal_wait_takeovers`] counts the take-overs
//! (crates/gc/tests/lost_background_cycle.rs).
//!
//! **Waiting for mark work** (at the goal). An assist at or past the goal
//! that finds the grey list empty (the collector's markers hold all the
//! grey objects on their private stacks; it asked them to donate) waits
//! inside `World::blocking` (counted as stopped) on `Pacer::assist_wait`,
//! which the marker's donation, an assist giving grey objects back, and
//! the end of the mark notify (all waiters: an assist takes at most
//! `ASSIST_TAKE` entries of a donation, and each waiter asks for a
//! donation again, `assist_wanted`, before it sleeps, so that no waiter
//! sleeps on while another's request was served), re-checking every
//! [`ASSIST_WAIT_RECHECK`] at most (objects the write barrier shades onto
//! the grey list notify nobody). It used to sleep 20 µs at a time:
//! binary-trees 21 counted 12,000-15,000 such polls per run, each waking a
//! worker (60-90 µs late on this VM) that took a CPU from the marker whose
//! donation it waited for, or slept on past the donation.
//! [`set_assist_wait_for_tests`] turns the notifications off and sets the
//! re-check bound (the negative control); [`assist_wait_counters`] counts
//! the waits that ended by a notification of mark work, by the mark's end,
//! and by the bound (tests/gc_assist_wait.rs).
//!
//! **Switch.** [`set_assists_for_tests`] turns assists off (the negative
//! control: allocation then outruns a slow mark and the heap passes the
//! goal; tests/gc_assist.rs). [`set_mark_delay_for_tests`] slows the
//! collector's concurrent marker down (a sleep per [`SLICE`]) so that
//! tests see a slow mark deterministically.

use crate::mark::MarkCounters;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Objects the collector's concurrent marker scans between looks at
/// `assist_wanted` and between progress updates.
pub(crate) const SLICE: usize = 256;

/// Objects one assist call scans at most (about 50-100 µs; a stop request
/// waits for one [`SLICE`] of it, see "Leaving for a stop").
pub(crate) const ASSIST_MAX_OBJECTS: usize = 4096;

/// Grey objects an assist takes from the grey list at a time.
pub(crate) const ASSIST_TAKE: usize = 512;

/// The trigger's share of the growth allowance, before the start-lag
/// correction: 7/8.
pub(crate) const TRIGGER_NUM: usize = 7;
pub(crate) const TRIGGER_DEN: usize = 8;
/// Clamp of the trigger, per mille of the allowance.
pub(crate) const TRIGGER_MIN: usize = 600;
pub(crate) const TRIGGER_MAX: usize = 950;

static ASSISTS: AtomicBool = AtomicBool::new(true);
static LEAVE_FOR_REQUESTS: AtomicBool = AtomicBool::new(true);
static SWEEP_EXIT_CHECKPOINT: AtomicBool = AtomicBool::new(true);
/// The start hand-off's switch: 0 = where the workers and the collector
/// outnumber the CPUs (the default), 1 = always, 2 = never (tests).
static START_HANDOFF: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// Allocations that waited for a start stop at the trigger (see "Start
/// hand-off" in the module docs), process-wide.
static START_HANDOFFS: AtomicU64 = AtomicU64::new(0);

/// The longest an allocation at the trigger waits for the start stop (see
/// "Start hand-off"): past it, it goes on allocating (a collector the OS
/// keeps off the CPU).
pub(crate) const START_HANDOFF_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// Test-only: `Some(false)` makes an allocation at the trigger go on at
/// once after asking for the cycle, as it used to (the negative control of
/// the start hand-off); `Some(true)` makes it wait whatever the CPU count;
/// `None` (the default) waits only where the workers and the collector
/// outnumber the CPUs. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_start_handoff_for_tests(on: Option<bool>) {
    START_HANDOFF.store(
        match on {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        Ordering::SeqCst,
    );
}

/// Allocations that waited for a start stop at the trigger so far in this
/// process (see "Start hand-off" in the module docs).
#[doc(hidden)]
pub fn start_handoffs() -> u64 {
    START_HANDOFFS.load(Ordering::Relaxed)
}

/// Whether an allocation at the trigger waits for the start stop, with a
/// World of `workers` workers (see "Start hand-off").
pub(crate) fn start_handoff_on(workers: usize) -> bool {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match START_HANDOFF.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => workers + 1 > *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

pub(crate) fn count_start_handoff() {
    START_HANDOFFS.fetch_add(1, Ordering::Relaxed);
}
/// The longest an allocation at the goal waits on `started_cv` before it
/// re-checks (see "Waiting at the goal"); the start stop notifies.
pub(crate) const GOAL_WAIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

/// The longest an assist at the goal waits for mark work before it
/// looks again (see "Waiting for mark work").
pub(crate) const ASSIST_WAIT_RECHECK: std::time::Duration = std::time::Duration::from_micros(200);

/// A re-check bound that tests may replace (the two waits' negative
/// controls and their long-bound tests): the override in µs, 0 for none.
struct RecheckOverride(AtomicU64);

impl RecheckOverride {
    /// Replaces the bound (`None`: back to the default). Process-wide.
    #[cfg(feature = "test-hooks")]
    fn set(&self, bound: Option<std::time::Duration>) {
        self.0.store(bound.map_or(0, |d| d.as_micros().max(1) as u64), Ordering::SeqCst);
    }

    /// The bound in force: the override, else `default`.
    fn get(&self, default: std::time::Duration) -> std::time::Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => default,
            us => std::time::Duration::from_micros(us),
        }
    }
}

/// The assist wait's switches: notifications on (the default), and a
/// test-only re-check bound (default [`ASSIST_WAIT_RECHECK`]).
static ASSIST_WAIT_NOTIFY: AtomicBool = AtomicBool::new(true);
static ASSIST_WAIT_RECHECK_OVERRIDE: RecheckOverride = RecheckOverride(AtomicU64::new(0));
/// Assist waits ended by a notification of mark work (a donation, a
/// give-back), by the mark's end, and by the re-check bound, process-wide.
static ASSIST_WAITS_WORK: AtomicU64 = AtomicU64::new(0);
static ASSIST_WAITS_END: AtomicU64 = AtomicU64::new(0);
static ASSIST_WAITS_TIMED_OUT: AtomicU64 = AtomicU64::new(0);
/// What `Pacer::assist_wait`'s generation adds for a notification of mark
/// work (low half) and for the mark's end (high half), so that a waiter
/// tells which woke it.
pub(crate) const ASSIST_GEN_WORK: u64 = 1;
pub(crate) const ASSIST_GEN_END: u64 = 1 << 32;

/// Test-only: `notify` false makes the wakers of assists waiting for mark
/// work notify nobody, so that every wait lasts its re-check bound, as
/// the old 20 µs polls did (the negative control of "Waiting for mark
/// work"); `recheck`: that bound (`None`: the default,
/// [`ASSIST_WAIT_RECHECK`]). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_assist_wait_for_tests(notify: bool, recheck: Option<std::time::Duration>) {
    ASSIST_WAIT_NOTIFY.store(notify, Ordering::SeqCst);
    ASSIST_WAIT_RECHECK_OVERRIDE.set(recheck);
}

/// `[assist waits ended by a notification of mark work, by the mark's
/// end, by the re-check bound]` so far in this process (see "Waiting for
/// mark work").
#[doc(hidden)]
pub fn assist_wait_counters() -> [u64; 3] {
    [
        ASSIST_WAITS_WORK.load(Ordering::Relaxed),
        ASSIST_WAITS_END.load(Ordering::Relaxed),
        ASSIST_WAITS_TIMED_OUT.load(Ordering::Relaxed),
    ]
}

pub(crate) fn assist_wait_recheck() -> std::time::Duration {
    ASSIST_WAIT_RECHECK_OVERRIDE.get(ASSIST_WAIT_RECHECK)
}

/// An assist wait ended: `gen_delta` is how much the waiters' generation
/// moved while it waited (0: the bound ended it).
pub(crate) fn count_assist_wait(gen_delta: u64) {
    let c = if gen_delta & (ASSIST_GEN_END - 1) != 0 {
        &ASSIST_WAITS_WORK
    } else if gen_delta != 0 {
        &ASSIST_WAITS_END
    } else {
        &ASSIST_WAITS_TIMED_OUT
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// The goal's arithmetic: black-allocated bytes count as marked (Go's, the
/// default) or not (the old goal; tests).
static BLACK_COUNTS_AS_MARKED: AtomicBool = AtomicBool::new(true);

/// Test-only: `false` makes the goal `live × (1 + GOGC/100)`, the memory
/// handed out during the mark counted as allocated only, as it used to (the
/// negative control of "Goal"); `true` (the default) counts it as marked,
/// as Go does. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_black_counts_as_marked_for_tests(on: bool) {
    BLACK_COUNTS_AS_MARKED.store(on, Ordering::SeqCst);
}

pub(crate) fn black_counts_as_marked() -> bool {
    BLACK_COUNTS_AS_MARKED.load(Ordering::Relaxed)
}

/// The goal wait's switch: on (the default), the wait on `started_cv`;
/// off, 20 µs sleeps (the negative control).
static GOAL_WAIT_ON_CV: AtomicBool = AtomicBool::new(true);
/// Test-only re-check bound (default [`GOAL_WAIT_RECHECK`]).
static GOAL_WAIT_RECHECK_OVERRIDE: RecheckOverride = RecheckOverride(AtomicU64::new(0));
/// Wake-ups of allocations waiting at the goal: those that found the cycle
/// started (or the heap under its goal), and those that found it still
/// not started (a re-check or a poll), process-wide.
static GOAL_WAKES_DONE: AtomicU64 = AtomicU64::new(0);
static GOAL_WAKES_EARLY: AtomicU64 = AtomicU64::new(0);
/// Test-only: the background collector sleeps this long (µs) before it
/// starts a cycle (0, the default: no delay).
static COLLECTOR_START_DELAY_US: AtomicU64 = AtomicU64::new(0);
/// Whether an allocation waiting at the goal runs the cycle itself when the
/// background collector's cycle was lost (see "Waiting at the goal"); off
/// only in tests (the negative control: the wait as it was, which never
/// ends once the cycle is lost).
static GOAL_WAIT_TAKEOVER: AtomicBool = AtomicBool::new(true);
/// Allocations at the goal that ran the cycle themselves because the
/// background collector's was lost, process-wide.
static GOAL_WAIT_TAKEOVERS: AtomicU64 = AtomicU64::new(0);

/// Test-only: `false` makes an allocation at the goal before the start
/// stop poll in 20 µs sleeps, as it used to (the negative control of
/// "Waiting at the goal"); `true` (the default) waits on the start stop's
/// condvar. `recheck`: its re-check bound (`None`: the default,
/// [`GOAL_WAIT_RECHECK`]). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_goal_wait_on_cv_for_tests(on: bool, recheck: Option<std::time::Duration>) {
    GOAL_WAIT_ON_CV.store(on, Ordering::SeqCst);
    GOAL_WAIT_RECHECK_OVERRIDE.set(recheck);
}

/// `[wake-ups that found the cycle started, wake-ups that found it not
/// started yet]` of allocations waiting at the goal, so far in this
/// process (see "Waiting at the goal").
#[doc(hidden)]
pub fn goal_wait_counters() -> [u64; 2] {
    [GOAL_WAKES_DONE.load(Ordering::Relaxed), GOAL_WAKES_EARLY.load(Ordering::Relaxed)]
}

/// Test-only: make the background collector sleep `us` microseconds before
/// each cycle it runs (0: no delay), so that allocations reach the goal
/// before its start stop. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_collector_start_delay_for_tests(us: u64) {
    COLLECTOR_START_DELAY_US.store(us, Ordering::SeqCst);
}

/// Test-only: `false` makes an allocation waiting at the goal wait for the
/// background collector's start stop whatever happened to its cycle, as it
/// used to (the negative control of the take-over in "Waiting at the
/// goal"; a lost cycle then leaves it waiting forever); `true` (the
/// default) restores the take-over. Process-wide, read at each re-check.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_goal_wait_takeover_for_tests(on: bool) {
    GOAL_WAIT_TAKEOVER.store(on, Ordering::SeqCst);
}

/// Allocations waiting at the goal that ran the cycle themselves because
/// the background collector's cycle was lost (failed, or its thread gone),
/// so far in this process (see "Waiting at the goal").
#[doc(hidden)]
pub fn goal_wait_takeovers() -> u64 {
    GOAL_WAIT_TAKEOVERS.load(Ordering::Relaxed)
}

pub(crate) fn goal_wait_takeover_on() -> bool {
    GOAL_WAIT_TAKEOVER.load(Ordering::SeqCst)
}

pub(crate) fn count_goal_wait_takeover() {
    GOAL_WAIT_TAKEOVERS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn goal_wait_on_cv() -> bool {
    GOAL_WAIT_ON_CV.load(Ordering::Relaxed)
}

pub(crate) fn goal_wait_recheck() -> std::time::Duration {
    GOAL_WAIT_RECHECK_OVERRIDE.get(GOAL_WAIT_RECHECK)
}

/// A waiter at the goal woke; `still` = the cycle has not started yet.
pub(crate) fn count_goal_wake(still: bool) {
    if still { &GOAL_WAKES_EARLY } else { &GOAL_WAKES_DONE }.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn collector_start_delay() -> Option<std::time::Duration> {
    match COLLECTOR_START_DELAY_US.load(Ordering::Relaxed) {
        0 => None,
        us => Some(std::time::Duration::from_micros(us)),
    }
}

/// Fresh blocks a refill took after its sweep for room left for a request
/// (only with [`SWEEP_EXIT_CHECKPOINT`] off, or in a pause).
static FRESH_AFTER_EXIT: AtomicU64 = AtomicU64::new(0);

/// Test-only: `false` makes a refill whose sweep for room left for a
/// request take a fresh block, as it used to (the negative control of
/// "Leaving for a stop": the checkpoint first); `true` (the default)
/// restores it. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_sweep_exit_checkpoint_for_tests(on: bool) {
    SWEEP_EXIT_CHECKPOINT.store(on, Ordering::SeqCst);
}

/// Fresh blocks taken by refills right after their sweep for room left for
/// a request, so far in this process (see the module docs).
#[doc(hidden)]
pub fn fresh_blocks_after_sweep_exits() -> u64 {
    FRESH_AFTER_EXIT.load(Ordering::Relaxed)
}

/// Whether a refill whose sweep left for a request gives up for the
/// cooperative point (`Need::Checkpoint`) rather than take a fresh block:
/// yes, except in a pause (see the module docs) or with the test switch off.
pub(crate) fn checkpoint_before_fresh_block() -> bool {
    SWEEP_EXIT_CHECKPOINT.load(Ordering::Relaxed) && !crate::heap::in_pause()
}

/// A refill took a fresh block after its sweep left for a request.
pub(crate) fn count_fresh_block_after_exit() {
    FRESH_AFTER_EXIT.fetch_add(1, Ordering::Relaxed);
}

/// Process-wide counters of the early exits (see the module docs): assists
/// that left for a request, mark slices done with a request outstanding
/// (only with the exit off), sweeps for room that left for a request,
/// blocks swept with a request outstanding (only with the exit off).
static ASSIST_EXITS: AtomicU64 = AtomicU64::new(0);
static ASSIST_SLICES_PAST_REQUEST: AtomicU64 = AtomicU64::new(0);
static SWEEP_EXITS: AtomicU64 = AtomicU64::new(0);
static SWEEP_BLOCKS_PAST_REQUEST: AtomicU64 = AtomicU64::new(0);

/// Test-only: `false` makes assists and allocation's sweeps for room
/// ignore outstanding checkpoint requests (they run to their budget, as
/// before: the negative control of the early exit); `true` (the default)
/// restores it. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_leave_for_requests_for_tests(on: bool) {
    LEAVE_FOR_REQUESTS.store(on, Ordering::SeqCst);
}

/// What the early exits did so far in this process: `[assist exits,
/// assist slices past a request, sweep exits, sweep blocks past a
/// request]` (see the module docs).
#[doc(hidden)]
pub fn request_exit_counters() -> [u64; 4] {
    [&ASSIST_EXITS, &ASSIST_SLICES_PAST_REQUEST, &SWEEP_EXITS, &SWEEP_BLOCKS_PAST_REQUEST].map(|c| c.load(Ordering::Relaxed))
}

/// Called by an assist after each slice and by a sweep for room after
/// each block: whether to leave now for the calling worker's outstanding
/// checkpoint request. Counts what it decides (`assist`: which counters).
#[inline]
pub(crate) fn leave_for_request(assist: bool) -> bool {
    if !usurp_preempt::checkpoint_requested() {
        return false;
    }
    let leave = LEAVE_FOR_REQUESTS.load(Ordering::Relaxed);
    let c = match (assist, leave) {
        (true, true) => &ASSIST_EXITS,
        (true, false) => &ASSIST_SLICES_PAST_REQUEST,
        (false, true) => &SWEEP_EXITS,
        (false, false) => &SWEEP_BLOCKS_PAST_REQUEST,
    };
    c.fetch_add(1, Ordering::Relaxed);
    leave
}
static MARK_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// Test-only: turn mutator assists off (`false`) or on again (the
/// default). Process-wide. Off, allocation during a concurrent mark neither
/// marks nor waits: the heap may pass its goal (the negative control of
/// the assists).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_assists_for_tests(on: bool) {
    ASSISTS.store(on, Ordering::SeqCst);
}

/// Test-only: make the collector's concurrent marker sleep `us`
/// microseconds every [`SLICE`] objects (0, the default: no delay).
/// Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_mark_delay_for_tests(us: u64) {
    MARK_DELAY_US.store(us, Ordering::SeqCst);
}

pub(crate) fn assists_on() -> bool {
    ASSISTS.load(Ordering::Relaxed)
}

pub(crate) fn mark_delay() -> Option<std::time::Duration> {
    match MARK_DELAY_US.load(Ordering::Relaxed) {
        0 => None,
        us => Some(std::time::Duration::from_micros(us)),
    }
}

/// The pacer's shared state, in `HeapInner::pacer`.
#[derive(Default)]
pub(crate) struct Pacer {
    /// Heap use (live + allocated, bytes) at which allocation asks for a
    /// cycle. Written in the termination stop (`sweep_start`) and at heap
    /// creation; read by allocation.
    pub trigger: AtomicUsize,
    /// Allocated bytes between the trigger and the start stop in the last
    /// cycle (written in the start stop, under the collection lock).
    pub start_lag: AtomicUsize,
    /// Live bytes this mark is expected to find (the last mark's, or the
    /// heap's use at the first one's start); written in the start stop.
    pub expected_live: AtomicUsize,
    /// Bytes the collector's own markers marked so far in the mark in
    /// progress (raised with `fetch_max` by each concurrent marker every
    /// [`SLICE`] objects from the cycle's shared counters; reset in the
    /// start stop).
    pub collector_marked: AtomicUsize,
    /// Counters of what assists marked in the mark in progress: folded
    /// into the cycle's by the termination stop (world stopped, no assist
    /// in flight) and reset in the start stop.
    pub assist_counters: MarkCounters,
    /// Assists holding grey objects right now (incremented before an
    /// assist takes any, decremented after it gave back the rest).
    pub assists_busy: AtomicUsize,
    /// An assist found the grey list empty: one of the collector's markers
    /// donates half of its stack (set by assists, cleared with a swap by
    /// the marker that donates).
    pub assist_wanted: AtomicBool,
    /// Time spent in assists in the mark in progress (ns) and assist calls
    /// that marked something; reset in the start stop, read in the
    /// termination stop.
    pub assist_ns: AtomicU64,
    pub assist_calls: AtomicU64,
    /// Waits of assists that found no work at or past the goal (see
    /// "Waiting for mark work"); reset in the start stop.
    pub assist_waits: AtomicU64,
    /// Assists waiting for mark work at the goal right now (incremented
    /// before a waiter looks at the grey list under `assist_wait`'s mutex,
    /// decremented when it leaves).
    pub assist_waiters: AtomicUsize,
    /// The waiters' generation and condvar: bumped (`ASSIST_GEN_WORK`,
    /// `ASSIST_GEN_END`) and notified (under the mutex) by whoever makes
    /// mark work available to them (a marker's donation, an assist giving
    /// back grey objects) or ends the mark.
    pub assist_wait: (std::sync::Mutex<u64>, std::sync::Condvar),
    /// Wake-ups of allocations waiting at the goal, or at the trigger
    /// (the start hand-off), before the collector's start stop
    /// (`collect_for_alloc`): counted from one start stop to the next (read
    /// there into the cycle's stats, then reset).
    pub start_waits: AtomicU64,
    /// Highest heap use (live + allocated) seen by an allocation slow path
    /// during the mark in progress (reset in the start stop).
    pub peak_during_mark: AtomicUsize,
}

impl Pacer {
    /// Start stop (world stopped): reset the per-mark figures; `used` is
    /// the heap's use now, `live` what the last mark found (0 before the
    /// first: then everything in use may be live).
    pub(crate) fn begin(&self, used: usize, live: usize) {
        self.expected_live.store(if live == 0 { used } else { live }, Ordering::Relaxed);
        self.collector_marked.store(0, Ordering::Relaxed);
        let c = &self.assist_counters;
        c.bad_pointers.store(0, Ordering::Relaxed);
        c.bad_values.store(0, Ordering::Relaxed);
        c.live_objects.store(0, Ordering::Relaxed);
        c.live_bytes.store(0, Ordering::Relaxed);
        *c.first_bad.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.assist_wanted.store(false, Ordering::Relaxed);
        self.assist_ns.store(0, Ordering::Relaxed);
        self.assist_calls.store(0, Ordering::Relaxed);
        self.assist_waits.store(0, Ordering::Relaxed);
        self.peak_during_mark.store(used, Ordering::Relaxed);
    }

    /// Wake the assists waiting for mark work (see "Waiting for mark
    /// work"): `end` false, mark work was published (a donation or a
    /// give-back); true, the mark ended. All of them either way (an assist
    /// takes at most `ASSIST_TAKE` entries, and the one woken first may
    /// not be the one whose request the donation served). Costs one load
    /// when nobody waits. Call after the work was published (the grey
    /// list's mutex released).
    pub(crate) fn wake_assist_waiters(&self, end: bool) {
        if !ASSIST_WAIT_NOTIFY.load(Ordering::Relaxed) {
            return;
        }
        // Against a waiter that registers and then reads the grey list
        // (Dekker: publication, fence, read of `assist_waiters`).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.assist_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let (m, cv) = &self.assist_wait;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.wrapping_add(if end { ASSIST_GEN_END } else { ASSIST_GEN_WORK });
        cv.notify_all();
    }

    /// Bytes an assist must mark to pay `debt` allocated bytes: `debt ×
    /// remaining / runway` with `remaining` the live bytes still expected
    /// to be marked (the last mark's live bytes less what this one marked
    /// so far, at least a tenth of them: the estimate may be short) and
    /// `runway` the bytes left before the goal (at least one block).
    pub(crate) fn assist_work(&self, debt: usize, expected_live: usize, used: usize, goal: usize) -> usize {
        let marked = self.collector_marked.load(Ordering::Relaxed)
            + self.assist_counters.live_bytes.load(Ordering::Relaxed);
        let remaining = expected_live.saturating_sub(marked).max(expected_live / 10);
        let runway = goal.saturating_sub(used).max(crate::block::BLOCK_SIZE);
        ((debt as u128 * remaining as u128) / runway as u128).min(usize::MAX as u128) as usize
    }
}

/// The next trigger (heap use, bytes) for a heap whose mark found `live`
/// bytes with goal `goal`, given the last cycle's start lag.
pub(crate) fn next_trigger(live: usize, goal: usize, start_lag: usize) -> usize {
    let a = goal.saturating_sub(live);
    let t = (a / TRIGGER_DEN * TRIGGER_NUM).saturating_sub(start_lag);
    live + t.clamp(a / 1000 * TRIGGER_MIN, a / 1000 * TRIGGER_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_is_clamped_and_corrected_by_the_start_lag() {
        let mb = 1 << 20;
        assert_eq!(next_trigger(100 * mb, 200 * mb, 0), 100 * mb + 100 * mb / 8 * 7);
        assert_eq!(next_trigger(100 * mb, 200 * mb, 10 * mb), 100 * mb + 100 * mb / 8 * 7 - 10 * mb);
        assert_eq!(next_trigger(100 * mb, 200 * mb, 90 * mb), 100 * mb + 100 * mb / 1000 * 600);
        assert_eq!(next_trigger(0, 0, 0), 0);
    }

    #[test]
    fn assist_work_grows_as_the_runway_shrinks() {
        let p = Pacer::default();
        let mb = 1 << 20;
        // 100 MB to mark, 100 MB of runway: one byte marked per byte allocated.
        assert_eq!(p.assist_work(64 << 10, 100 * mb, 100 * mb, 200 * mb), 64 << 10);
        // 10 MB of runway: ten.
        assert_eq!(p.assist_work(64 << 10, 100 * mb, 190 * mb, 200 * mb), 640 << 10);
        // Past the goal: the runway counts as one block.
        assert_eq!(p.assist_work(64 << 10, 100 * mb, 300 * mb, 200 * mb), 100 * mb);
        // Half marked by the collector: half as much.
        p.collector_marked.store(50 * mb, Ordering::Relaxed);
        assert_eq!(p.assist_work(64 << 10, 100 * mb, 100 * mb, 200 * mb), 32 << 10);
    }
}
