//! Task dumps and per-task CPU time (issue 15).
//!
//! **What a dump holds.** [`crate::Runtime::dump_tasks`] (and
//! [`crate::task::dump`] from inside a task) returns a [`TaskDump`]: one
//! [`TaskInfo`] per live task — id, name, [`TaskState`], CPU time, and a
//! symbolized backtrace — plus how long the world was stopped to take it.
//! Its `Display` is the text `USURP_DEBUG=dumpsignal=SIG…` prints.
//!
//! **How it is taken.** In three steps, so that the world stays stopped only
//! for copying words:
//! 1. Stop the world with the ordinary machinery (`stw::stop_the_world_until`,
//!    the same lock order as a collection: a dump requested during a
//!    collection waits for it, counted as stopped; a collection requested
//!    during a dump waits for the dump). The stop gives up after a timeout
//!    (default [`DUMP_STOP_TIMEOUT`]): the dump then says so and reports
//!    what can be read without a stop, each worker's state and running task
//!    (`stw::describe_workers_unstopped`), instead of hanging with the hang
//!    it is meant to diagnose.
//! 2. With the world stopped, under the task registry's lock, copy for each
//!    task that is not FREE: id, name, state, what it waits for
//!    (`Task::wait_kind`/`wait_arg`, written by the task before it parks),
//!    CPU cycles, and the raw return addresses of its frame-pointer chain
//!    into one vector. Every task but the caller is switched out, so its
//!    chain is frozen: it starts at the frame record of its saved context
//!    (`arch::SWITCH_FRAME_RECORD` above the SP saved by `switch`;
//!    `arch::SPILLED_FRAME_RECORD` above the SP of the register-spill frame
//!    for a task inside `blocking`, whose closure runs below that frame); a
//!    task switched out by an asynchronous preemption starts at its spill
//!    frame's record (`Task::preempt_record`), so its first PC is the
//!    interrupted one, then its callers. The caller walks its own live
//!    chain from a register-spill frame. Each step is checked (record inside
//!    the task's stack, 8-aligned, strictly increasing, at most
//!    [`MAX_FRAMES`]), so a corrupt chain ends the walk, never faults.
//! 3. Restart the world, then symbolize (the `backtrace` crate's resolver:
//!    DWARF line tables and the symbol table, read lazily and cached by the
//!    crate; our own cache maps each distinct PC once) — outside the stop
//!    and never in a signal handler.
//!
//! **Signal-requested dumps** (`USURP_DEBUG=dumpsignal=SIGQUIT`, or
//! `RuntimeBuilder::dump_signal`): the handler, installed through
//! `signal-hook-registry`, only sets the signal's bit in a process-wide
//! atomic and wakes the `usurp-dumper` thread with a futex wake; that thread
//! takes the dump of each runtime registered for the signal and writes it
//! to stderr (`dumpsig.rs`). The process goes on. (A dedicated thread rather
//! than the timer monitor: the monitor exists only with async preemption.)
//!
//! **CPU time.** Each worker keeps `run_since`, the cycle counter
//! (`arch::cycles`: rdtsc / cntvct_el0) when its running task was switched
//! in; every switch out adds the difference to `Task::cpu` (one counter
//! read per switch, no system call; `Worker::charge`). A task in a
//! `blocking` closure whose worker was handed off is charged up to the
//! handoff and again from when it is switched back in. Cycles become time
//! off the hot path ([`cycles_to_duration`]) at a rate read from the
//! architecture (cntfrq_el0; 1 GHz for x86-64's monotonic-clock fallback
//! without an invariant TSC) or measured against the monotonic clock over
//! the interval since the first runtime's build (x86-64), kept once that
//! interval is long enough. No reader sleeps for it: readers run on task
//! workers.
//!
//! Off (`RuntimeBuilder::task_cpu_time(false)`), no switch reads the
//! counter: `Worker::charge` returns at once, the scheduler loop does not
//! stamp `run_since`, every task's `cpu` stays 0, and the readers say so
//! rather than report a zero as a measurement (`TaskStats::cpu_time_on`,
//! `TaskDump::cpu_time_on`, `cpu off` in a printed dump).

use crate::shared::Shared;
use crate::tasks::tcb::{state, wait_kind, Task, TaskRef};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest walk of one task's frame-pointer chain.
pub const MAX_FRAMES: usize = 128;

/// How long a dump waits for the world to stop before it reports what it
/// can read without a stop ([`TaskDump::stop_timed_out`]).
pub const DUMP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A snapshot of every live task of a runtime ([`crate::Runtime::dump_tasks`]).
/// `Display` prints it (one block per task, Go-style).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskDump {
    /// The live tasks, in the order of the runtime's task registry.
    pub tasks: Vec<TaskInfo>,
    /// How long the world was stopped for the dump: from the stop request
    /// until the restart (time-to-safepoint included). Zero if the caller
    /// held the world stopped already, or if the stop timed out.
    pub stopped: Duration,
    /// The stop's time-to-safepoint (request until every worker stopped).
    pub time_to_safepoint: Duration,
    /// The world could not be stopped within the timeout: `tasks` is empty
    /// and `workers` says what every worker was doing.
    pub stop_timed_out: bool,
    /// With `stop_timed_out`: who holds the stop in force, if any, then one
    /// line per worker (`worker N (thread T): …`), read without a stop.
    pub workers: Vec<String>,
    /// How long the dump was willing to wait for the world to stop.
    pub stop_timeout: Duration,
    /// Whether the runtime measures per-task CPU time
    /// ([`crate::RuntimeBuilder::task_cpu_time`]): false, every
    /// `TaskInfo::cpu_time` is zero (not measured) and `Display` prints
    /// `cpu off`.
    pub cpu_time_on: bool,
}

/// One task in a [`TaskDump`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's id.
    pub id: u64,
    /// Its name ([`crate::task::Builder::name`]).
    pub name: Option<String>,
    /// What it was doing when the world stopped.
    pub state: TaskState,
    /// CPU time used (see `TaskStats::cpu_time`); zero when the runtime
    /// does not measure it (`TaskDump::cpu_time_on`).
    pub cpu_time: Duration,
    /// Its backtrace, innermost frame first (inlined functions get a frame
    /// each, with the PC of the machine frame that holds them).
    pub frames: Vec<Frame>,
}

/// The state of a task in a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskState {
    /// On a worker's CPU: only the task that took the dump (every other
    /// task is stopped). `worker` is `None` inside a `blocking` closure.
    Running {
        /// The worker it runs on.
        worker: Option<usize>,
    },
    /// Ready to run, in a run queue (or just spawned).
    Runnable,
    /// Ready to run after an asynchronous preemption (a timer signal or a
    /// stop request interrupted it at `pc` inside `preemptible!` code).
    Preempted {
        /// The interrupted program counter.
        pc: usize,
    },
    /// Suspended until something wakes it.
    Parked(WaitOn),
    /// Inside a `blocking` closure.
    Blocking,
    /// Its runtime shut down before it finished.
    Abandoned,
}

/// What a parked task waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitOn {
    /// Sending on a full channel (the channel's address).
    ChannelSend(usize),
    /// Receiving from an empty channel (the channel's address).
    ChannelRecv(usize),
    /// Locking a `Mutex` (its address).
    Mutex(usize),
    /// A `Condvar` notification (its address).
    Condvar(usize),
    /// `sleep`: how long was left when the world stopped (zero if due).
    Sleep {
        /// Time left until the deadline.
        remaining: Duration,
    },
    /// Joining another task.
    Join {
        /// The joined task's id.
        task: u64,
    },
    /// `Select::wait` over some cases.
    Select {
        /// Number of cases.
        cases: usize,
    },
    /// Parked through another path (e.g. `hooks::park_current_and_reschedule`).
    Unknown,
}

/// One frame of a backtrace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Frame {
    /// The PC: the interrupted PC for the first frame of a preempted task,
    /// otherwise a return address.
    pub pc: usize,
    /// The function, demangled without its hash, if the symbol is known.
    pub function: Option<String>,
    /// Source file and line, if the debug information has them.
    pub location: Option<(String, u32)>,
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskState::Running { worker: Some(w) } => write!(f, "running on worker {w} (the dumping task)"),
            TaskState::Running { worker: None } => write!(f, "running in a blocking call (the dumping task)"),
            TaskState::Runnable => write!(f, "runnable"),
            TaskState::Preempted { pc } => write!(f, "runnable, preempted asynchronously at PC {pc:#x}"),
            TaskState::Parked(w) => write!(f, "parked on {w}"),
            TaskState::Blocking => write!(f, "in a blocking call"),
            TaskState::Abandoned => write!(f, "abandoned (runtime shut down)"),
        }
    }
}

impl fmt::Display for WaitOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitOn::ChannelSend(a) => write!(f, "channel send ({a:#x})"),
            WaitOn::ChannelRecv(a) => write!(f, "channel receive ({a:#x})"),
            WaitOn::Mutex(a) => write!(f, "mutex ({a:#x})"),
            WaitOn::Condvar(a) => write!(f, "condvar ({a:#x})"),
            WaitOn::Sleep { remaining } => write!(f, "sleep until {} from now", fmt_dur(*remaining)),
            WaitOn::Join { task } => write!(f, "join of task {task}"),
            WaitOn::Select { cases } => write!(f, "select over {cases} cases"),
            WaitOn::Unknown => write!(f, "an unrecorded wait"),
        }
    }
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

impl fmt::Display for TaskDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stop_timed_out {
            writeln!(
                f,
                "usurp task dump: the world could not be stopped within {} (another stop holds it, or a worker \
                 does not reach a safe point); what can be read without a stop:",
                fmt_dur(self.stop_timeout)
            )?;
            for w in &self.workers {
                writeln!(f, "  {w}")?;
            }
            return Ok(());
        }
        writeln!(
            f,
            "usurp task dump: {} tasks, world stopped {} (time to safepoint {})",
            self.tasks.len(),
            fmt_dur(self.stopped),
            fmt_dur(self.time_to_safepoint)
        )?;
        for t in &self.tasks {
            writeln!(f)?;
            write!(f, "task {}", t.id)?;
            if let Some(n) = &t.name {
                write!(f, " \"{n}\"")?;
            }
            if self.cpu_time_on {
                writeln!(f, ": {}, cpu {}", t.state, fmt_dur(t.cpu_time))?;
            } else {
                writeln!(f, ": {}, cpu off", t.state)?;
            }
            for fr in &t.frames {
                match &fr.function {
                    Some(name) => writeln!(f, "    {:#018x} {name}", fr.pc)?,
                    None => writeln!(f, "    {:#018x} ?", fr.pc)?,
                }
                if let Some((file, line)) = &fr.location {
                    writeln!(f, "        at {file}:{line}")?;
                }
            }
        }
        Ok(())
    }
}

impl TaskDump {
    /// The entry of task `id`, if it was live.
    pub fn task(&self, id: u64) -> Option<&TaskInfo> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

impl TaskInfo {
    /// The function names of the backtrace, innermost first (unknown frames
    /// as `?`).
    pub fn function_names(&self) -> Vec<&str> {
        self.frames.iter().map(|f| f.function.as_deref().unwrap_or("?")).collect()
    }
}

// ---- CPU time: cycles to time ------------------------------------------

/// (cycles, monotonic ns) when the first runtime was built: the anchor of
/// the one calibration on ISAs that do not state their counter's rate.
static ANCHOR: OnceLock<(u64, u64)> = OnceLock::new();
/// The calibrated rate (Hz), 0 until calibrated; set once, never changed.
static HZ: AtomicU64 = AtomicU64::new(0);
/// How long the first runtime's build measures the counter's rate (a spin,
/// once per process). The two clocks are read within a microsecond of each
/// other (else the pair is read again), so the rate is within ~0.05%.
/// The rate is then fixed: a conversion must not change with time, or a
/// running task's CPU time could go down by a nanosecond between two
/// reads (it did, through `JoinHandle::cpu_time`, when the rate was
/// re-measured on each call for the first 20 ms of the process).
const CALIBRATE_NS: u64 = 200_000;

/// Calibrates the counter's rate if its ISA does not state it (the first
/// runtime build spins [`CALIBRATE_NS`]; cheap after the first).
pub(crate) fn init_clock() {
    if crate::arch::cycle_hz().is_some() || HZ.load(Ordering::Relaxed) != 0 {
        return;
    }
    let &(c0, n0) = ANCHOR.get_or_init(|| (crate::arch::cycles(), crate::sys::now_ns()));
    loop {
        let n1 = crate::sys::now_ns();
        let c1 = crate::arch::cycles();
        let n2 = crate::sys::now_ns();
        if n2.saturating_sub(n0) < CALIBRATE_NS || n2.saturating_sub(n1) > 1_000 {
            std::hint::spin_loop();
            continue;
        }
        let (hz, _) = measured_hz(c0, n0, c1, n1);
        let _ = HZ.compare_exchange(0, hz, Ordering::Relaxed, Ordering::Relaxed);
        return;
    }
}

/// The rate of `arch::cycles()` measured from the anchor `(c0, n0)` to
/// `(c1, n1)`, and whether the interval is long enough to keep it
/// ([`CALIBRATE_NS`]).
fn measured_hz(c0: u64, n0: u64, c1: u64, n1: u64) -> (u64, bool) {
    let dn = n1.saturating_sub(n0).max(1);
    let hz = (c1.saturating_sub(c0) as u128 * 1_000_000_000 / dn as u128).min(u64::MAX as u128) as u64;
    (hz.max(1), dn >= CALIBRATE_NS)
}

/// The counter's rate: the ISA's, or the calibrated one (before
/// `init_clock` finished, only on another thread during the first
/// runtime's build, a rough rate measured so far).
fn cycle_hz() -> u64 {
    if let Some(hz) = crate::arch::cycle_hz() {
        return hz;
    }
    let hz = HZ.load(Ordering::Relaxed);
    if hz != 0 {
        return hz;
    }
    let &(c0, n0) = ANCHOR.get_or_init(|| (crate::arch::cycles(), crate::sys::now_ns()));
    let n1 = crate::sys::now_ns();
    let c1 = crate::arch::cycles();
    let (hz, keep) = measured_hz(c0, n0, c1, n1);
    if keep {
        let _ = HZ.compare_exchange(0, hz, Ordering::Relaxed, Ordering::Relaxed);
    }
    hz
}

/// Converts a number of `arch::cycles()` ticks to time.
pub(crate) fn cycles_to_duration(c: u64) -> Duration {
    if c == 0 {
        return Duration::ZERO;
    }
    let hz = cycle_hz() as u128;
    Duration::from_nanos((c as u128 * 1_000_000_000 / hz).min(u64::MAX as u128) as u64)
}

// ---- taking a dump -------------------------------------------------------

/// What is copied per task while the world is stopped (no symbols yet).
struct Raw {
    id: u64,
    name: Option<String>,
    state: TaskState,
    cpu: u64,
    /// Range of this task's PCs in the shared PC vector.
    pcs: (usize, usize),
    /// The first PC is an interrupted PC (exact), not a return address.
    exact_first: bool,
}

/// Walks a frame-pointer chain from the frame record at `rec` (`{caller's
/// FP, return address}`), appending return addresses to `out`, within the
/// stack `[lo, hi)`.
///
/// # Safety
/// `[lo, hi)` is mapped and readable (a task's stack), and the chain's
/// records in it are not being rewritten (the task is switched out with the
/// world stopped, or it is the caller's own chain above this frame).
unsafe fn walk(mut rec: usize, lo: usize, hi: usize, out: &mut Vec<usize>) {
    for _ in 0..MAX_FRAMES {
        if rec < lo || rec.saturating_add(16) > hi || rec & 7 != 0 {
            return;
        }
        // SAFETY: [rec, rec+16) lies inside the mapped stack (checked);
        // volatile: another thread's frozen stack, read as plain words.
        let (fp, pc) = unsafe { (std::ptr::read_volatile(rec as *const usize), std::ptr::read_volatile((rec + 8) as *const usize)) };
        if pc == 0 {
            return;
        }
        out.push(pc);
        if fp <= rec {
            return; // end of the chain (0 at a task's entry) or corrupt
        }
        rec = fp;
    }
}

/// Copies task `t` (world stopped, registry locked).
///
/// # Safety
/// `t` is registered in `sh` and not FREE; the world is stopped (or the
/// caller holds it stopped); `me` is the calling task or null.
unsafe fn copy_task(sh: &Shared, t: *mut Task, st: u8, me: *mut Task, now_ns: u64, pcs: &mut Vec<usize>) -> Raw {
    // SAFETY: per the contract: a registered, prepared task whose fields
    // are not written while the world is stopped (its name and id only by
    // `prepare`, on a FREE struct); its stack is mapped.
    unsafe {
        let task = &*t;
        let id = task.id.get();
        let name = (*task.name.get()).as_deref().map(str::to_owned);
        let (lo, hi) = (task.stack.lo(), task.stack.hi());
        let start = pcs.len();
        let mut exact_first = false;
        let state;
        if t == me {
            // The caller: its own live chain, from a spill frame pushed here.
            let w = crate::stw::my_worker(sh);
            state = TaskState::Running { worker: w };
            crate::arch::with_registers_spilled(&mut |sp| {
                // SAFETY: our own stack, above this frame: not rewritten
                // while we walk.
                walk(sp + crate::arch::SPILLED_FRAME_RECORD, lo, hi, pcs)
            });
        } else {
            let sp = std::ptr::read_volatile(task.sp.get());
            match st {
                state::RUNNING => {
                    // Cannot be seen with the world stopped (only the caller
                    // runs); said as it is, without a walk.
                    let w = sh.workers.iter().find(|w| w.running_task.load(Ordering::Relaxed) == t as usize);
                    state = TaskState::Running { worker: w.map(|w| w.index) };
                }
                state::BLOCKING => {
                    state = TaskState::Blocking;
                    walk(sp + crate::arch::SPILLED_FRAME_RECORD, lo, hi, pcs);
                }
                state::ABANDONED => {
                    state = TaskState::Abandoned;
                    walk(sp + crate::arch::SWITCH_FRAME_RECORD, lo, hi, pcs);
                }
                state::PARKED => {
                    state = TaskState::Parked(wait_on(task, now_ns));
                    walk(sp + crate::arch::SWITCH_FRAME_RECORD, lo, hi, pcs);
                }
                _ => {
                    let rec = task.preempt_record.load(Ordering::Relaxed);
                    if rec != 0 {
                        walk(rec, lo, hi, pcs);
                        exact_first = pcs.len() > start;
                        let pc = if exact_first { pcs[start] } else { 0 };
                        state = TaskState::Preempted { pc };
                    } else {
                        state = TaskState::Runnable;
                        walk(sp + crate::arch::SWITCH_FRAME_RECORD, lo, hi, pcs);
                    }
                }
            }
        }
        let cpu = if t == me {
            // `t` is the calling task, valid while it runs (inside the
            // enclosing unsafe block: `TaskRef::new`'s contract holds).
            crate::worker::current_cpu_cycles(TaskRef::new(t))
        } else {
            task.cpu.load(Ordering::Relaxed)
        };
        Raw { id, name, state, cpu, pcs: (start, pcs.len()), exact_first }
    }
}

fn wait_on(task: &Task, now_ns: u64) -> WaitOn {
    let arg = task.wait_arg.load(Ordering::Relaxed);
    match task.wait_kind.load(Ordering::Relaxed) {
        wait_kind::CHAN_SEND => WaitOn::ChannelSend(arg as usize),
        wait_kind::CHAN_RECV => WaitOn::ChannelRecv(arg as usize),
        wait_kind::MUTEX => WaitOn::Mutex(arg as usize),
        wait_kind::CONDVAR => WaitOn::Condvar(arg as usize),
        wait_kind::SLEEP => WaitOn::Sleep { remaining: Duration::from_nanos(arg.saturating_sub(now_ns)) },
        wait_kind::JOIN => WaitOn::Join { task: arg },
        wait_kind::SELECT => WaitOn::Select { cases: arg as usize },
        _ => WaitOn::Unknown,
    }
}

/// Copies every live task of `sh`. The world must be stopped (by the caller).
fn collect(sh: &Shared) -> (Vec<Raw>, Vec<usize>) {
    let me = crate::worker::current_task();
    let now = crate::sys::now_ns();
    let reg = sh.registry.lock();
    let mut raws = Vec::with_capacity(reg.len());
    let mut pcs = Vec::with_capacity(reg.len() * 16);
    for &t in reg.iter() {
        // SAFETY: registered tasks stay allocated while we hold `reg`.
        let st = unsafe { (*t).state.load(Ordering::Acquire) };
        if st == state::FREE {
            continue;
        }
        // SAFETY: registered, not FREE, world stopped (see `copy_task`).
        raws.push(unsafe { copy_task(sh, t, st, me, now, &mut pcs) });
    }
    (raws, pcs)
}

/// Takes a dump of `sh` (see the module docs), waiting at most `timeout`
/// for the world to stop.
pub(crate) fn dump(sh: &Shared, timeout: Duration) -> TaskDump {
    let t0 = Instant::now();
    let (raws, pcs, ttsp, stopped) = if crate::stw::caller_is_stopper(sh) {
        // The caller holds the world stopped already: copy, and leave it so.
        let (r, p) = collect(sh);
        (r, p, Duration::ZERO, Duration::ZERO)
    } else {
        match crate::stw::stop_the_world_until(sh, Some(t0 + timeout)) {
            Ok(ttsp) => {
                // Stopped for the time-to-safepoint plus the copy (not the
                // wait for another stopper, if any, before ours began).
                let stopped_at = Instant::now();
                let (r, p) = collect(sh);
                crate::stw::start_the_world(sh);
                (r, p, ttsp, ttsp + stopped_at.elapsed())
            }
            Err(workers) => {
                return TaskDump {
                    tasks: Vec::new(),
                    stopped: Duration::ZERO,
                    time_to_safepoint: Duration::ZERO,
                    stop_timed_out: true,
                    workers,
                    stop_timeout: timeout,
                    cpu_time_on: sh.cpu_time,
                };
            }
        }
    };
    // World running again: symbolize.
    let mut cache: HashMap<usize, Syms> = HashMap::new();
    let tasks = raws
        .into_iter()
        .map(|r| {
            let mut frames = Vec::new();
            for (k, &pc) in pcs[r.pcs.0..r.pcs.1].iter().enumerate() {
                // A return address points after the call: look up the call
                // itself (pc - 1), except for an interrupted PC.
                let lookup = if k == 0 && r.exact_first { pc } else { pc.wrapping_sub(1) };
                let syms = cache.entry(lookup).or_insert_with(|| resolve(lookup));
                if syms.is_empty() {
                    frames.push(Frame { pc, function: None, location: None });
                }
                for (function, location) in syms.iter() {
                    frames.push(Frame { pc, function: function.clone(), location: location.clone() });
                }
            }
            TaskInfo { id: r.id, name: r.name, state: r.state, cpu_time: cycles_to_duration(r.cpu), frames }
        })
        .collect();
    TaskDump {
        tasks,
        stopped,
        time_to_safepoint: ttsp,
        stop_timed_out: false,
        workers: Vec::new(),
        stop_timeout: timeout,
        cpu_time_on: sh.cpu_time,
    }
}

/// Function names and source locations at one address, innermost inlined
/// function first.
type Syms = Vec<(Option<String>, Option<(String, u32)>)>;

/// The symbols at `addr`, innermost inlined function first.
fn resolve(addr: usize) -> Syms {
    let mut out = Vec::new();
    backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
        let name = sym.name().map(|n| format!("{n:#}"));
        let loc = match (sym.filename(), sym.lineno()) {
            (Some(f), Some(l)) => Some((f.display().to_string(), l)),
            _ => None,
        };
        out.push((name, loc));
    });
    out
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn measured_rate_is_kept_only_over_a_long_interval() {
        // 3 GHz over 100 µs: the rate, not kept; over 200 µs: kept.
        assert_eq!(measured_hz(1000, 5_000, 1000 + 300_000, 5_000 + 100_000), (3_000_000_000, false));
        assert_eq!(measured_hz(0, 0, 600_000, CALIBRATE_NS), (3_000_000_000, true));
        // Clocks read in the same nanosecond, or a counter that went back:
        // a usable rate, never a division by zero.
        assert!(measured_hz(10, 10, 20, 10).0 >= 1);
        assert_eq!(measured_hz(10, 10, 5, 10_000).0, 1);
    }

    #[test]
    fn the_rate_is_fixed_once_a_runtime_was_built() {
        // The conversion must not change with time (a running task's CPU
        // time went down by 1 ns between two reads when the rate was
        // re-measured on each call for the first 20 ms).
        init_clock();
        let (a, b) = (cycle_hz(), cycle_hz());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!((a, b), (cycle_hz(), cycle_hz()), "the counter's rate changed after calibration");
        let c = 123_456_789;
        assert!(cycles_to_duration(c + 1) >= cycles_to_duration(c));
    }
}
