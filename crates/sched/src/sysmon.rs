//! The timer monitor (a small cousin of Go's sysmon).
//!
//! Workers fire due timers in their scheduler loops and after every
//! asynchronous preemption, and an idle worker sleeps with a futex timeout
//! equal to the time left to the earliest timer. When every worker is busy
//! running tasks that do not switch (tight loops), nobody would look at the
//! timers until the next quantum ends: a task sleeping 1 ms would wake up to a
//! quantum late. So each runtime has one monitor
//! thread that sleeps until the earliest timer is due (woken early by `sleep`
//! when it adds an earlier one) and then, if no worker is idle or searching,
//! sends a preemption request to a busy worker: its task is preempted at the
//! next safe point, the park path fires the due timers, and the woken task
//! runs next on that worker (`runnext`). If the running code is not
//! preemptible, the request sets its checkpoint flag instead; while the same
//! timer stays due, the retries back off (50 µs doubling to 2 ms), so a
//! worker stuck in non-preemptible code gets at most ~500 requests a second.
//! The monitor uses no CPU when no timer is pending, and never touches the
//! switch path.
//!
//! **Without async preemption** (`USURP_DEBUG=asyncpreemptoff=1`, the
//! builder's `async_preemption(false)`) the workers' slots take no signal
//! (`worker::thread::ThreadInit`), so nothing else ends a quantum: the
//! monitor also wakes once a quantum while some worker runs a task and asks
//! each worker that has not switched since its last look to yield at its
//! next cooperative point ([`retake`]; a `checkpoint()` poll, an
//! allocation); the requests, a stop's and the timers' alike, set the
//! worker's checkpoint flag and send nothing. Before, such a runtime
//! started no monitor and registered no slot: a task polling
//! `checkpoint()` held up every collection for ever, and sleepers beside
//! such tasks starved (new-user probe 112). Like the workers, it runs with a timer slack of 1 ns
//! (`sys::set_timer_slack`), so its timed futex waits end on time instead
//! of up to Linux's default 50 µs late.

use crate::shared::Shared;
use crate::sys::{futex_wait, futex_wake, now_ns};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// Longest sleep of the monitor (it re-checks for shutdown this often).
const MAX_SLEEP_NS: u64 = 10_000_000;
/// How long to wait for a requested preemption to fire a due timer before
/// asking again (another worker, round robin).
const RETRY_NS: u64 = 50_000;
/// The retry interval doubles while the same timer stays due (the workers
/// run code that is not preemptible, or a stopped world holds them) up to
/// this: at most ~500 requests a second, not 20,000.
const MAX_RETRY_NS: u64 = 2_000_000;

#[derive(Default)]
pub(crate) struct Sysmon {
    word: AtomicU32,
    /// When the monitor plans to wake up (monotonic ns).
    planned: AtomicU64,
    cursor: AtomicUsize,
}

/// Starts the monitor thread of `sh`.
pub(crate) fn start(sh: &Arc<Shared>) {
    let weak = Arc::downgrade(sh);
    if let Ok(h) = std::thread::Builder::new().name("usurp-sysmon".into()).spawn(move || run(weak)) {
        sh.keep_thread(h);
    }
}

/// Shutdown (after `shutdown` was set, SeqCst): wakes the monitor, which
/// then exits instead of sleeping on (holding a reference to the runtime).
pub(crate) fn shutdown(sh: &Shared) {
    sh.sysmon.word.store(1, Ordering::SeqCst);
    futex_wake(&sh.sysmon.word, 1);
}

/// Called by `sleep` after adding the earliest timer while no worker is idle.
pub(crate) fn timer_added(sh: &Shared, deadline: u64) {
    let m = &sh.sysmon;
    if deadline < m.planned.load(Ordering::SeqCst) {
        m.word.store(1, Ordering::SeqCst);
        futex_wake(&m.word, 1);
    }
}

fn run(weak: Weak<Shared>) {
    // It sleeps until the earliest timer is due: no slack.
    crate::sys::set_timer_slack();
    // Backoff state (this thread only): the due deadline we are retrying
    // for, and the current retry interval.
    let mut due_for = u64::MAX;
    let mut retry = RETRY_NS;
    // Without async preemption: each worker's switch count at the last
    // quantum check (see `retake`), and when that check is next due.
    let mut seen: Vec<u64> = Vec::new();
    let mut next_retake = 0u64;
    loop {
        let Some(sh) = weak.upgrade() else { return };
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        let m = &sh.sysmon;
        m.word.store(0, Ordering::SeqCst);
        let now = now_ns();
        let retake_at = if sh.preempt.enabled {
            u64::MAX
        } else if now < next_retake {
            next_retake
        } else if retake(&sh, &mut seen) {
            next_retake = now + sh.preempt.quantum.as_nanos() as u64;
            next_retake
        } else {
            // No worker runs a task: look again at the next wake-up, and
            // sleep as long as the monitor otherwise would (at most
            // `MAX_SLEEP_NS`): an idle runtime takes no wake-up per quantum.
            next_retake = 0;
            u64::MAX
        };
        let nt = sh.next_timer.load(Ordering::SeqCst);
        let planned = if nt <= now {
            if sh.nidle.load(Ordering::SeqCst) == 0 && sh.nspinning.load(Ordering::SeqCst) == 0 {
                preempt_one(&sh);
            } else {
                sh.notify();
            }
            if nt != due_for {
                // A different timer is due (the previous one fired): no
                // backoff.
                due_for = nt;
                retry = RETRY_NS;
            } else {
                retry = (retry * 2).min(MAX_RETRY_NS);
            }
            now + retry
        } else {
            nt.min(now + MAX_SLEEP_NS)
        }
        .min(retake_at);
        m.planned.store(planned, Ordering::SeqCst);
        // A timer added after our read of next_timer wakes us via `word`.
        if sh.next_timer.load(Ordering::SeqCst) < planned && nt > now {
            continue;
        }
        // Shutdown's wake-up may have come before our `word` store above
        // (it sets `shutdown` first, SeqCst): then we see it here.
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // Sleep (holding the runtime, `keep`; `shutdown` wakes us).
        let word = &m.word as *const AtomicU32;
        let keep = Arc::clone(&sh);
        drop(sh);
        // SAFETY: `keep` holds the shared state (and `word`) alive meanwhile.
        futex_wait(unsafe { &*word }, 0, Some(planned.saturating_sub(now_ns()).max(1)));
        drop(keep);
    }
}

/// Asks a worker running a task to get off its CPU (round robin).
/// Without async preemption (the workers' slots take no signal: see
/// `worker::thread::ThreadInit`), the quantum's end is this monitor's to
/// tell: once a quantum, every worker that has run the same task since the
/// last check (its switch count unchanged, a task on it) is asked to yield
/// at its next cooperative point (its checkpoint flag, no signal), as
/// Go's sysmon retakes a P whose goroutine ran past its time slice. A
/// worker that switched meanwhile is left alone. Not during a stop (the
/// stopper asks).
/// Returns whether any worker was running a task.
fn retake(sh: &Shared, seen: &mut Vec<u64>) -> bool {
    seen.resize(sh.workers.len(), u64::MAX);
    let stopping = sh.stw.stop.load(Ordering::SeqCst);
    let mut busy = false;
    for (w, last) in sh.workers.iter().zip(seen.iter_mut()) {
        let switches = w.switch_count.load(Ordering::Relaxed);
        let same = switches == *last;
        *last = switches;
        if w.running_task.load(Ordering::SeqCst) == 0 {
            continue;
        }
        busy = true;
        if !same || stopping {
            continue;
        }
        // SAFETY: slots are `'static`.
        if let Some(s) = unsafe { w.slot.load(Ordering::Acquire).as_ref() } {
            let _ = crate::stw::request_task_preempt(w, s);
        }
    }
    busy
}

fn preempt_one(sh: &Shared) {
    if sh.stw.stop.load(Ordering::SeqCst) {
        // A stop is in progress: the stopper asks the other workers itself,
        // and its own worker must not be disturbed (its task is the stopper).
        // A task that stops the world in a loop (collections, dumps) fires
        // the due timers itself after each stop (`worker::after_stop`).
        return;
    }
    let n = sh.workers.len();
    let start = sh.sysmon.cursor.fetch_add(1, Ordering::Relaxed);
    for i in 0..n {
        let w = &sh.workers[(start + i) % n];
        if w.running_task.load(Ordering::SeqCst) == 0 {
            continue;
        }
        // SAFETY: slots are `'static`.
        if let Some(s) = unsafe { w.slot.load(Ordering::Acquire).as_ref() } {
            let _ = crate::stw::request_task_preempt(w, s);
            return;
        }
    }
}
