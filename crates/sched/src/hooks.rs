//! Hook points for the preemption and GC crates (not part of the user API).
//!
//! * Per worker, allocated once: `switch_count` (incremented by the worker's
//!   driving thread on every task switch; a watchdog compares it across a
//!   quantum, like Go's sysmon compares `schedtick`) and `running_task` (the
//!   address of the task on the worker's CPU, 0 when the worker is in its
//!   scheduler or idle). Read them with [`worker_switch_count`] and
//!   [`worker_running_task`].
//! * [`park_current_and_reschedule`]: called by the spill hook of an
//!   async-preempted task, on the task's own stack (below the spill frame),
//!   on the worker's thread. Puts the task at the tail of this worker's local
//!   run queue, pinned to this worker (`pinned_worker`): thieves and the
//!   global queue forward it back here, and `blocking` will not hand this
//!   worker to another thread while it has pinned tasks. The pin is cleared
//!   at the task's next cooperative switch. Returns when the task is resumed.
//! * [`for_each_task_stack`]: with the world stopped, every task that is not
//!   running, as (saved SP, stack low, stack high). Tasks inside `blocking`
//!   report the SP at which they entered it.
//! * Per-task stack scanning (`stack_scan.rs`), for tests:
//!   [`task_stack_scanned`], [`stack_scan_epoch`], [`stack_scan_counts`];
//!   with the `test-hooks` feature also its negative controls
//!   (`set_resume_claim_for_tests`, `set_send_shading_for_tests`) and
//!   `hold_stack_scan_for_tests` (keeps the collector off one task).
//! * Test-only switches and probes (`*_for_tests`): compiled only with the
//!   crate's `test-hooks` feature (off by default; the workspace's test
//!   suites and benches enable it through their dev-dependencies), since
//!   several break the runtime's guarantees on purpose.

use crate::Runtime;
use std::sync::atomic::Ordering;

/// Parks the current task (async-preempted, running on a signal-injected
/// frame on its own stack) and puts it back on its worker's local run queue,
/// pinned to that worker. Returns when it is resumed. Does nothing outside a
/// task.
pub fn park_current_and_reschedule() {
    // The interrupted PC is unknown here: pin (the runtime's own park hook
    // pins only tasks whose code may hold a TLS address).
    crate::worker::preempt_current(true);
}

/// Test-only switch: `Some(true)` pins every async-preempted task to its
/// worker's thread (the behaviour before preempted loops could migrate),
/// `Some(false)` never pins (unsound for code holding TLS addresses: only
/// for negative controls), `None` decides by the code, per function (the
/// default).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_pin_policy_for_tests(p: Option<bool>) {
    let v = match p {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    crate::glue::preempt_glue::PIN_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of per-function pinning, issue 11):
/// `true` decides by the whole `preemptible!` section, as before functions
/// were told apart (one TLS-touching function pins every task preempted
/// anywhere in the section); `false` restores the default per-function
/// rule.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_pin_by_section_for_tests(on: bool) {
    let v = if on { crate::glue::preempt_glue::PIN_BY_SECTION } else { 0 };
    crate::glue::preempt_glue::PIN_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of the caller walk of per-function
/// pinning): `true` decides by the interrupted function alone, ignoring
/// `preemptible!` callers that may hold a thread-local address across
/// their call; `false` restores the default.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_pin_without_callers_for_tests(on: bool) {
    let v = if on { crate::glue::preempt_glue::PIN_WITHOUT_CALLERS } else { 0 };
    crate::glue::preempt_glue::PIN_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the runtime found thread-local accesses anywhere in the
/// `preemptible!` code; `None` before the first runtime started.
#[doc(hidden)]
pub fn preemptible_code_touches_tls() -> Option<bool> {
    crate::glue::preempt_glue::section_tls_known()
}

/// Whether the `preemptible!` function holding `pc` (e.g. a function's
/// address) touches thread-locals, per the runtime's per-function table (an
/// async-preempted task there is pinned to its thread); `None` before the
/// first runtime started or if `pc` is not in a recorded function.
#[doc(hidden)]
pub fn preemptible_fn_touches_tls(pc: usize) -> Option<bool> {
    crate::glue::preempt_glue::function_tls_known(pc)
}

/// Test-only switch (negative controls of "tick only when someone waits",
/// issue 12). Process-wide. `None`: normal. `Some(true)`: every worker
/// reports itself contended whenever it picks a task, so busy workers take
/// a quantum tick even when no task waits (the behaviour before).
/// `Some(false)`: wakers (spawn, wake, global queue, pinned forwarding)
/// never mark workers contended; only a worker's own scheduling does, so a
/// task made runnable while every worker runs a loop is never served.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_tick_policy_for_tests(p: Option<bool>) {
    let v = match p {
        None => 0,
        Some(true) => crate::worker::TICK_ALWAYS,
        Some(false) => crate::worker::TICK_NO_WAKE,
    };
    crate::worker::TICK_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Installs (or with `None` removes) a function called with the spill frame
/// of every accepted asynchronous preemption of any runtime's task, on the
/// task's stack, right before it parks (tests, profilers).
pub fn set_preempt_observer(f: Option<fn(&usurp_preempt::SpillFrame)>) {
    crate::glue::preempt_glue::set_preempt_observer(f);
}

/// Switch counter of worker `i` of `rt` (incremented on every task switch).
pub fn worker_switch_count(rt: &Runtime, i: usize) -> u64 {
    rt.shared().workers[i].switch_count.load(Ordering::Relaxed)
}

/// Address of the task running on worker `i` of `rt`, or 0.
pub fn worker_running_task(rt: &Runtime, i: usize) -> usize {
    rt.shared().workers[i].running_task.load(Ordering::Relaxed)
}

/// Index of the worker driven by the calling thread, if any.
pub fn current_worker_index() -> Option<usize> {
    crate::worker::Current::get().map(|c| c.worker().index)
}

/// Calls `f(saved_sp, stack_lo, stack_hi)` for every task of `rt` that is not
/// running. The GC scans `[saved_sp - arch::RED_ZONE, stack_hi)` conservatively
/// (RED_ZONE is 128 on x86-64, 0 on aarch64; see `gc_world.rs`).
///
/// # Safety
/// The world must be stopped: no task of `rt` may switch while this runs.
pub unsafe fn for_each_task_stack(rt: &Runtime, f: &mut dyn FnMut(usize, usize, usize)) {
    // SAFETY: forwarded contract.
    unsafe { rt.shared().for_each_task_stack(f) }
}

/// Test-only switch (negative controls of latency fairness, issue 11).
/// Process-wide. `None`: normal. `Some(false)`: no boost for woken tasks
/// beyond the single `runnext` slot (a task displaced from it, or woken by
/// the scheduler loop, goes to the back of the ring, as before).
/// `Some(true)`: boosted picks are unbounded (the ring never gets a turn
/// while woken tasks wait).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_boost_policy_for_tests(p: Option<bool>) {
    let v = match p {
        None => 0,
        Some(false) => crate::worker::BOOST_OFF,
        Some(true) => crate::worker::BOOST_UNBOUNDED,
    };
    crate::worker::BOOST_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of the order of boosted picks, issue
/// 11). Process-wide. `true`: the first version of the woken FIFO (boosted
/// picks take the `runnext` slot before the FIFO, and a wake from the
/// scheduler loop goes straight to the FIFO), under which a woken task
/// waits forever while a ping-pong pair keeps refilling `runnext`; `false`:
/// normal (same as `set_boost_policy_for_tests(None)`).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_boost_first_version_for_tests(on: bool) {
    let v = if on { crate::worker::BOOST_FIRST_VERSION } else { 0 };
    crate::worker::BOOST_POLICY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control, issue 12): `true` lets a task that
/// stops the world keep its quantum timer ticking through the stop (every
/// tick refused, reason `no_preempt`), as before; `false` (the default)
/// disarms it from `stop_the_world` to `start_the_world`. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_ticks_for_tests(on: bool) {
    crate::stw::STOPPER_TICKS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of the stopper's spinning wait,
/// issue 9 item 1). `true` (the default): a stopper waits for the workers
/// by spinning (a CPU pause between re-checks) for the first 60 µs of
/// its stop (`stw::SPIN_FOR`), then sleeps; `false`: it sleeps on its
/// condvar from the start, as before (a parking worker's notification
/// wakes it). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_spin_for_tests(on: bool) {
    crate::stw::STOPPER_SPIN.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of "no spin on a full machine",
/// issue 9). `false` (the default): a stopper that, with the workers it
/// waits for, outnumbers the CPUs sleeps (a parking worker's notification
/// wakes it) instead of spinning, so a worker waiting for a CPU gets the
/// stopper's; `true`: it spins anyway, as before. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_spin_when_oversubscribed_for_tests(on: bool) {
    crate::stw::SPIN_WHEN_OVERSUBSCRIBED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only: the CPU count the stopper's spin policy assumes (0, the
/// default: the process's, `std::thread::available_parallelism`), so that
/// a test sees the same policy on any machine. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_cpus_for_tests(n: usize) {
    crate::stw::CPUS_FOR_TESTS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only: the stopper's spin budget (`stw::SPIN_FOR`) and the clock
/// gap that ends the spin as descheduled (`stw::DESCHEDULED`), in µs; 0
/// restores a default. Under qemu or on a loaded machine a stop of
/// preemptible loops takes longer than the production budget and the
/// stopper loses its CPU often, so a test of the spin's mechanism gives
/// it room. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_spin_budget_for_tests(budget_us: u64, descheduled_us: u64) {
    crate::stw::SPIN_BUDGET_US.store(budget_us, std::sync::atomic::Ordering::Relaxed);
    crate::stw::DESCHEDULED_US.store(descheduled_us, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control, issue 11 review: work conservation
/// with three or more workers). `true` (the default): a spinning worker
/// that finds work wakes an idle worker (Go's wakep when a spinner finds
/// work). `false`: it wakes one only when the global queue or its own ring
/// holds more tasks (the behaviour before). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_spinner_wakep_for_tests(on: bool) {
    crate::worker::SPINNER_WAKEP.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only: (searching, sleeping) worker counts of `rt`: workers that
/// found nothing in their last search round and search again (spinning),
/// and workers asleep in or going to their idle wait. Racy snapshots.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn spinning_and_idle_workers_for_tests(rt: &Runtime) -> (usize, usize) {
    let sh = rt.shared();
    (sh.nspinning.load(Ordering::SeqCst), sh.nidle.load(Ordering::SeqCst))
}

/// Test-only switch (negative control, issue 11: uneven loop splits).
/// `true` (the default): an async-preempted task that may migrate goes to
/// the global queue when another task waits for its worker and another
/// worker has nothing queued (as Go's `gopreempt_m`), so unevenly split
/// loops rotate over every worker. `false`: it goes back to its worker's ring (the behaviour
/// before), so a worker running one loop alone keeps it while another
/// rotates several. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_preempted_to_global_for_tests(on: bool) {
    crate::worker::PREEMPTED_TO_GLOBAL.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of the resume-side stack-scan claim,
/// `stack_scan.rs`): with `false`, a task resumed during a mark runs
/// without its stack being scanned first, and the collector counts a
/// running unscanned task as scanned (it cannot read a running stack).
/// Process-wide; restore `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_resume_claim_for_tests(on: bool) {
    crate::stack_scan::set_resume_claim_for_tests(on);
}

/// Test-only switch (negative control of the shading of values moved
/// through runtime memory during a mark: channel and select sends, spawn
/// closures, join results). Process-wide; restore `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_send_shading_for_tests(on: bool) {
    crate::stack_scan::set_send_shading_for_tests(on);
}

/// Test-only switch (negative control of the receive-side shading of the
/// channel-buffer walk: a task's receive from a buffer no longer shades
/// the value while a heap marks). Process-wide; restore `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_recv_shading_for_tests(on: bool) {
    crate::stack_scan::set_recv_shading_for_tests(on);
}

/// Test-only switch: `true` makes every start stop scan the channel
/// buffers and the spawn closures of tasks not started, as before, instead
/// of the concurrent cycle walking the buffers with the world running and
/// scanning each closure with its task's stack (the negative control).
/// Process-wide; restore `false`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_runtime_roots_in_stop_for_tests(in_stop: bool) {
    crate::stack_scan::set_defer_buffers_for_tests(!in_stop);
}

/// Test-only: ranges of channel buffers and spawn closures reported in
/// stops so far in this process (all runtimes).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn runtime_roots_in_stops_for_tests() -> usize {
    crate::glue::heap_roots::DEFERRED_RANGES_IN_STOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Test-only: the collector does not claim the stack of the task with this
/// id (0: none) for its per-task scan; the task is then scanned only by
/// whoever resumes it (or when it leaves `blocking`), and the cycle waits
/// for that. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn hold_stack_scan_for_tests(task_id: u64) {
    crate::stack_scan::hold_for_tests(task_id);
}

/// Whether the stack of task `task_id` of `rt` is scanned for the GC's
/// current per-task scan epoch (`None`: no such live task).
#[doc(hidden)]
pub fn task_stack_scanned(rt: &Runtime, task_id: u64) -> Option<bool> {
    let sh = rt.shared();
    let want = sh.stack_scan.epoch.load(Ordering::Acquire) << 1;
    let reg = sh.registry.lock();
    reg.iter()
        .map(|&t| {
            // SAFETY: registered tasks are valid while the lock is held.
            unsafe { &*t }
        })
        .find(|t| t.state.load(Ordering::Acquire) != crate::tasks::tcb::state::FREE && t.id.get() == task_id)
        .map(|t| t.scan.load(Ordering::Acquire) == want)
}

/// Task stacks scanned per task since the process started (all runtimes):
/// `(by collectors, by resumers)`.
#[doc(hidden)]
pub fn stack_scan_counts() -> (usize, usize) {
    (
        crate::stack_scan::BY_COLLECTOR.load(Ordering::Relaxed),
        crate::stack_scan::BY_RESUMER.load(Ordering::Relaxed),
    )
}

/// The GC's per-task stack scan epoch of `rt` (bumped in the start stop of
/// every concurrent cycle; see `stack_scan.rs`).
#[doc(hidden)]
pub fn stack_scan_epoch(rt: &Runtime) -> u64 {
    rt.shared().stack_scan.epoch.load(Ordering::Acquire)
}

/// Test-only switch (negative control of the gated publication, review
/// finding 1): when false, a thread without a mutator (a task inside
/// `blocking`) checks whether a heap marks outside the GC's shading gate
/// and then sends/spawns, as before the fix. Process-wide; restore `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_gated_publish_for_tests(on: bool) {
    crate::stack_scan::set_gated_publish_for_tests(on);
}

/// Test-only: on a thread without a mutator, a channel/select send or a
/// spawn sleeps `ms` between its "a heap marks?" check and the publication
/// of its value (0: no delay), after setting the flag
/// [`publish_delayed_for_tests`] reads. Process-wide; restore 0.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_publish_delay_for_tests(ms: u64) {
    crate::stack_scan::set_publish_delay_for_tests(ms);
}

/// Whether a publication entered the delay of
/// [`set_publish_delay_for_tests`] since it was set.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn publish_delayed_for_tests() -> bool {
    crate::stack_scan::PUBLISH_DELAYED.load(Ordering::SeqCst)
}

/// Test-only switch (negative control of the per-task stack scan): when
/// true, the collector claims tasks without scanning their stacks and
/// resumers claim without scanning, so a cycle scans no task stack.
/// Process-wide; restore `false`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_skip_stack_scans_for_tests(on: bool) {
    crate::stack_scan::set_skip_scans_for_tests(on);
}

/// Test-only: timer spins begun so far (`RuntimeBuilder::timer_spin`: an
/// idle worker stopped sleeping and spun for the earliest timer),
/// process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn timer_spins_for_tests() -> usize {
    crate::worker::TIMER_SPINS.load(Ordering::Relaxed)
}

/// Test-only switch (negative control of the timer spin's duty cap,
/// `worker/policy.rs` `TIMER_SPIN_DUTY`): `false`: every spin lasts the
/// whole `timer_spin`, however recent the last one. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timer_spin_duty_for_tests(on: bool) {
    crate::worker::TIMER_SPIN_DUTY_ON.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of the timer spin's backoff,
/// `worker/policy.rs` `TIMER_SPIN_BACKOFF_NS`): `false`: a spin that lost
/// its CPU does not turn spinning off. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timer_spin_backoff_for_tests(on: bool) {
    crate::worker::TIMER_SPIN_BACKOFF_ON.store(on, Ordering::Relaxed);
}

/// Test-only switch: `true`: every timer spin reports that the OS took its
/// CPU (as if two of its clock reads were far apart). Default `false`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timer_spin_fake_loss_for_tests(on: bool) {
    crate::worker::TIMER_SPIN_FAKE_LOSS.store(on, Ordering::Relaxed);
}

/// Times timer spinning was turned off after a spin lost its CPU so far,
/// process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn timer_spin_backoffs_for_tests() -> usize {
    crate::worker::TIMER_SPIN_BACKOFFS.load(Ordering::Relaxed)
}

/// Timed idle waits planned with a timer spin so far, process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn timer_spin_waits_for_tests() -> usize {
    crate::worker::TIMER_SPIN_WAITS.load(Ordering::Relaxed)
}

/// Nanoseconds spent in timer spins so far, process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn timer_spin_ns_for_tests() -> u64 {
    crate::worker::TIMER_SPIN_NS.load(Ordering::Relaxed)
}

/// Test-only switch (negative control of the timer spin's early exit):
/// `true` makes a worker spinning for a timer ignore wakers and new work
/// until the deadline (so work arriving during the spin waits for it).
/// Process-wide; restore `false`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timer_spin_blind_for_tests(on: bool) {
    crate::worker::TIMER_SPIN_BLIND.store(on, Ordering::Relaxed);
}

/// Test-only: turns off (`false`) or on again (the default) the release of
/// a dropped runtime's threads, and with them its heap, before `Runtime`'s
/// drop returns (negative control of `tests/gc_runtime_drop_release.rs`).
/// Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_release_on_drop_for_tests(on: bool) {
    crate::shared::RELEASE_ON_DROP.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of the per-thread cache of spawn
/// packet memory, `tasks/packet.rs`): `false` allocates and frees every
/// packet with the global allocator, as `Arc` did. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_packet_cache_for_tests(enabled: bool) {
    crate::tasks::packet::set_packet_cache_for_tests(enabled);
}

/// Test-only: how many spawn packets the calling thread's block cache
/// served so far (`tasks/packet.rs`).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn packet_cache_hits_for_tests() -> usize {
    crate::tasks::packet::packet_cache_hits_for_tests()
}

/// Test-only switch (negative control of the spinning worker's nap,
/// `worker/policy.rs` `NAP_NS`): `false`: a spin that found nothing always
/// ends in an idle sleep (and the next hand-off wakes the worker again).
/// Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_spin_nap_for_tests(on: bool) {
    crate::worker::SPIN_NAP.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of the short search of a worker
/// whose runtime runs nothing else, `worker/policy.rs` `LONE_SPIN_ROUNDS`):
/// `false`: an idle worker spins and naps as long whether or not another
/// worker runs. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_lone_spin_for_tests(on: bool) {
    crate::worker::LONE_SPIN.store(on, Ordering::Relaxed);
}

/// Searches that ended early in an idle sleep because no other worker ran
/// anything, process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn lone_spins_for_tests() -> usize {
    crate::worker::LONE_SPINS.load(Ordering::Relaxed)
}

/// Naps taken by spinning workers so far, process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn spin_naps_for_tests() -> usize {
    crate::worker::SPIN_NAPS.load(Ordering::Relaxed)
}

/// Test-only switch (negative control of "only the sole spinner naps",
/// `worker/policy.rs` `find_runnable`): `false`: every spinner that found
/// nothing naps (all idle workers beside a busy one). Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_spin_nap_sole_for_tests(on: bool) {
    crate::worker::SPIN_NAP_SOLE.store(on, Ordering::Relaxed);
}

/// The most workers seen napping at once since the last call (process-wide);
/// resets the figure.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn take_max_concurrent_naps_for_tests() -> usize {
    crate::worker::MAX_NAPPING.swap(0, Ordering::Relaxed)
}

/// Times a waker went to wake an idle worker (it found one idle and none
/// spinning: `Shared::wake_one_idle`), process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn idle_wake_calls_for_tests() -> usize {
    crate::worker::IDLE_WAKE_CALLS.load(Ordering::Relaxed)
}

/// Test-only switch (negative control of the owner check of a send that
/// meets an abandoned receiver, `sync/mpsc.rs`): `false`: such a send
/// never disconnects the channel, even when the abandoned task owned the
/// `Receiver` on its stack. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_abandoned_owner_disconnects_for_tests(on: bool) {
    crate::sync::mpsc::set_abandoned_owner_disconnects_for_tests(on);
}

/// Test-only: the spinning nap's length in ns (0: the default, 50 µs).
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_nap_ns_for_tests(ns: u64) {
    crate::worker::NAP_NS_FOR_TESTS.store(ns, Ordering::Relaxed);
}

/// Test-only switch (negative control): `false`: a stopper does not wake
/// a napping worker, which then parks for the stop only when its nap ends.
/// Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stop_wakes_nappers_for_tests(on: bool) {
    crate::worker::STOP_WAKES_NAPPERS.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control): `false`: a timer that becomes the
/// earliest does not wake a napping worker, which then runs it only when
/// its nap ends. Default `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timer_wakes_napper_for_tests(on: bool) {
    crate::worker::TIMER_WAKES_NAPPER.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of "a park frees a CPU", session
/// 15). `true` (the default): a stopper woken by a worker's park starts a
/// new spin budget (`stw::SPIN_FOR`) if the workers it still waits for fit
/// beside it; `false`: the budget counts from the stop's start only, as
/// before. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stopper_respin_for_tests(on: bool) {
    crate::stw::RESPIN.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Test-only switch (negative control of "a worker stands aside while the
/// GC's background collector marks", issue 9, `worker/stand_aside.rs`).
/// `true` (the default): the collector's `World::background_marking(true)`
/// asks a worker to stand aside where the workers and the collector
/// outnumber the CPUs; `false`: it asks nothing, as before. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_for_tests(on: bool) {
    crate::worker::STAND_ASIDE.store(on, Ordering::Relaxed);
}

/// Test-only: the CPU count the stand-aside policy assumes (0: the
/// process's). Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_cpus_for_tests(n: usize) {
    crate::worker::STAND_ASIDE_CPUS.store(n, Ordering::Relaxed);
}

/// Test-only switch (negative control of the call-backs). `true` (the
/// default): a worker standing aside goes back to work for a due timer,
/// its inbox, or tasks the other workers have not taken for two quanta;
/// `false`: only when the mark ends. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_callbacks_for_tests(on: bool) {
    crate::worker::STAND_ASIDE_CALLBACKS.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of the stand-aside stop protocol).
/// `true` (the default): a worker standing aside counts as stopped, and
/// waits out a stop in force before it goes back to work; `false`: it
/// counts as running (a stop waits until it goes back) and goes back
/// without waiting. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_stop_protocol_for_tests(on: bool) {
    crate::worker::STAND_ASIDE_STOP_PROTOCOL.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of "a worker with woken or
/// just-spawned tasks waiting for a boosted pick does not stand aside").
/// `true` (the default); `false`: it claims and moves them to the global
/// queue, as the first version did. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_keeps_boosted_for_tests(on: bool) {
    crate::worker::STAND_ASIDE_KEEPS_BOOSTED.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of "a worker with tasks pinned to
/// it does not stand aside"). `true` (the default); `false`: it claims and
/// moves them to the global queue. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stand_aside_respects_pins_for_tests(on: bool) {
    crate::worker::STAND_ASIDE_RESPECTS_PINS.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of the cooperative slots of a
/// runtime without async preemption): `true` (the default); `false`: its
/// workers register no preemption slot, as before, so `checkpoint()` never
/// yields there (a stop waits for such a task for ever). Read when a
/// worker thread starts. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_cooperative_slots_for_tests(on: bool) {
    crate::worker::thread::COOPERATIVE_SLOTS.store(on, Ordering::Relaxed);
}

/// Test-only switch (negative control of "a checkpoint's yield fires due
/// timers"): `true` (the default); `false`: it does not, and a sleeper
/// beside tasks that poll `checkpoint()` wakes only when its worker
/// reaches its scheduler loop. Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_timers_at_checkpoint_for_tests(on: bool) {
    crate::worker::TIMERS_AT_CHECKPOINT.store(on, Ordering::Relaxed);
}

/// Test-only: what the GC's background collector does when it begins
/// (`on`) and ends (`!on`) a concurrent mark: asks a worker of `rt` to
/// stand aside, and lets it go back. Call from a thread that is not one
/// of `rt`'s workers, begin and end in turn.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn stand_aside_for_tests(rt: &Runtime, on: bool) {
    if on {
        crate::worker::stand_aside_begin(rt.shared());
    } else {
        crate::worker::stand_aside_end(rt.shared());
    }
}

/// Test-only: the shared task pool's budget of resident stack bytes
/// (`None`: the default, 16 MiB; `Some(0)`: every stack that joins the pool
/// has its pages released, as before the budget, the negative control).
/// Process-wide.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_stack_pool_budget_for_tests(bytes: Option<usize>) {
    crate::shared::POOL_BUDGET_FOR_TESTS.store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// Test-only: `rt`'s shared task pool: `(tasks in it, their resident stack
/// bytes, stacks released on their way in so far)`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn stack_pool_for_tests(rt: &Runtime) -> (usize, usize, u64) {
    rt.shared().pool_counts()
}

/// Test-only: `rt`'s stand-aside counts so far (asked, claimed, called
/// back by work) and the worker standing aside now, if any.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn stand_aside_counts_for_tests(rt: &Runtime) -> (u64, u64, u64, Option<usize>) {
    rt.shared().lend.counts()
}

/// Test-only switch (negative control of scanning a task's spawn closure
/// with its stack, `stack_scan::closure_of`): `false` leaves the closures
/// of tasks not started unscanned in a concurrent cycle. Process-wide;
/// restore `true`.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn set_closures_with_stacks_for_tests(on: bool) {
    crate::stack_scan::set_closures_with_stacks_for_tests(on);
}
