//! The coordinator: the counters and state shared by every task, spawning
//! the plan's tasks, joining them and the end-of-run checks.

use super::barrier::barrier;
use super::gc_structures::gc_structures;
use super::messaging::{contend, ping, pong};
use super::registers::registers;
use super::rng::mix;
use super::sleepers::{blocker, sleeper};
use super::{Kind, Plan, KINDS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::{task, Mutex};

/// Work and failure counters, shared by all tasks.
#[derive(Default)]
pub struct Counters {
    pub reg_iterations: AtomicU64,
    pub reg_mismatches: AtomicU64,
    pub gc_checksum_failures: AtomicU64,
    pub barrier_failures: AtomicU64,
    pub channel_failures: AtomicU64,
    pub mutex_failures: AtomicU64,
    pub structures: AtomicU64,
    pub verifications: AtomicU64,
    pub explicit_collections: AtomicU64,
    pub barrier_stores: AtomicU64,
    pub pingpongs: AtomicU64,
    pub mutex_sections: AtomicU64,
    pub sleeps: AtomicU64,
    pub blocking_calls: AtomicU64,
    pub live_tasks: AtomicU64,
    /// Units of work done per kind (indexed like [`KINDS`]): a kind whose
    /// tasks did nothing during the whole run was starved.
    pub progress: [AtomicU64; KINDS.len()],
    /// Failure descriptions printed so far (capped).
    reported: AtomicU64,
}

/// State shared by the coordinator, the tasks and the progress thread.
pub struct Ctx {
    pub seed: u64,
    /// Set when the run's time is up: every task finishes its current step.
    pub stop: AtomicBool,
    /// Set when every task has been joined (ends the progress thread).
    pub done: AtomicBool,
    /// GC cycles completed, refreshed by the progress thread every 10 ms:
    /// GC tasks re-verify their structures whenever it changes.
    pub gc_cycles: AtomicU64,
    pub c: Counters,
}

impl Ctx {
    pub fn new(seed: u64) -> Arc<Ctx> {
        Arc::new(Ctx {
            seed,
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
            gc_cycles: AtomicU64::new(0),
            c: Counters::default(),
        })
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Counts a failure and describes the first 20 on stderr.
    pub(crate) fn fail(&self, counter: &AtomicU64, what: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.c.reported.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("\nusurp-stress: FAILURE in task {}: {}", task::name().unwrap_or_default(), what());
        }
    }
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Ctx {
    /// Counts one unit of progress of `kind`.
    pub(crate) fn progress(&self, kind: Kind) {
        if let Some(i) = KINDS.iter().position(|&k| k == kind) {
            bump(&self.c.progress[i], 1);
        }
    }

    /// The kinds that had tasks in `plan` but made no progress at all.
    pub fn starved(&self, plan: &Plan) -> Vec<Kind> {
        KINDS
            .iter()
            .enumerate()
            .filter(|&(i, _)| plan.counts[i] > 0 && self.c.progress[i].load(Ordering::SeqCst) == 0)
            .map(|(_, &k)| k)
            .collect()
    }
}

/// What the coordinator gathers from the tasks.
#[derive(Default)]
pub struct Outcome {
    /// Every sleeper's lateness (actual − requested sleep), in nanoseconds.
    pub wake_latency_ns: Vec<u64>,
    /// Tasks that panicked: "name: message".
    pub panics: Vec<String>,
}

/// What one task returns.
#[derive(Default)]
pub(crate) struct TaskResult {
    pub(crate) latencies: Vec<u64>,
    pub(crate) sections: u64,
}


/// Spawns the plan's tasks, lets them run for `duration`, stops and joins
/// them, and runs the end-of-run checks (mutex totals).
pub fn run_all(ctx: &Arc<Ctx>, plan: &Plan, duration: Duration) -> Outcome {
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    for (ki, &kind) in KINDS.iter().enumerate() {
        let n = plan.counts[ki];
        match kind {
            Kind::PingPong => {
                for p in 0..n / 2 {
                    let (tx_ab, rx_ab) = usurp::channel::<u64>();
                    let (tx_ba, rx_ba) = usurp::channel::<u64>();
                    let c = ctx.clone();
                    handles.push(spawn(kind, 2 * p, usize::MAX, move || ping(&c, tx_ab, rx_ba)));
                    let c = ctx.clone();
                    handles.push(spawn(kind, 2 * p + 1, usize::MAX, move || pong(&c, rx_ab, tx_ba)));
                }
            }
            Kind::Mutex => {
                for g in 0..n.div_ceil(4) {
                    let m = Arc::new(Mutex::new([0u64; 2]));
                    groups.push(m.clone());
                    for i in 4 * g..(4 * g + 4).min(n) {
                        let (c, m) = (ctx.clone(), m.clone());
                        handles.push(spawn(kind, i, g, move || contend(&c, &m)));
                    }
                }
            }
            _ => {
                for i in 0..n {
                    let c = ctx.clone();
                    handles.push(spawn(kind, i, usize::MAX, move || run_kind(&c, kind, i)));
                }
            }
        }
    }
    usurp::sleep(duration);
    ctx.stop.store(true, Ordering::SeqCst);
    let mut out = Outcome::default();
    let mut sections = vec![0u64; groups.len()];
    for (name, group, h) in handles {
        match h.join() {
            Ok(r) => {
                out.wake_latency_ns.extend(r.latencies);
                if let Some(s) = sections.get_mut(group) {
                    *s += r.sections;
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".into());
                out.panics.push(format!("{name}: {msg}"));
            }
        }
    }
    for (g, m) in groups.iter().enumerate() {
        let v = *m.lock();
        if v[0] != v[1] || v[0] != sections[g] {
            ctx.fail(&ctx.c.mutex_failures, || {
                format!("mutex group {g}: counters {v:?}, sections counted by its tasks {}", sections[g])
            });
        }
    }
    out
}

type Handle = (String, usize, usurp::JoinHandle<TaskResult>);

/// `--inject-spawn-failure` (testing): the 10th spawn of the run fails.
pub static INJECT_SPAWN_FAILURE: AtomicBool = AtomicBool::new(false);

fn spawn(kind: Kind, i: usize, group: usize, f: impl FnOnce() -> TaskResult + Send + 'static) -> Handle {
    static SPAWNS: AtomicU64 = AtomicU64::new(0);
    let name = format!("{}-{i}", kind.task_name());
    if INJECT_SPAWN_FAILURE.load(Ordering::Relaxed) && SPAWNS.fetch_add(1, Ordering::Relaxed) == 9 {
        panic!("usurp-stress: cannot spawn task {name}: injected failure (--inject-spawn-failure)");
    }
    let h = task::Builder::new()
        .name(name.clone())
        .spawn(f)
        .unwrap_or_else(|e| panic!("usurp-stress: cannot spawn task {name}: {e}"));
    (name, group, h)
}

fn run_kind(ctx: &Ctx, kind: Kind, i: usize) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let seed = ctx.seed ^ mix((i as u64) << 8 | kind as u64);
    let r = match kind {
        Kind::Registers => registers(ctx, seed),
        Kind::Lists | Kind::Trees | Kind::Tables => gc_structures(ctx, kind, seed),
        Kind::Barrier => barrier(ctx, seed),
        Kind::Sleepers => sleeper(ctx),
        Kind::Blocking => blocker(ctx),
        Kind::PingPong | Kind::Mutex => TaskResult::default(),
    };
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    r
}
