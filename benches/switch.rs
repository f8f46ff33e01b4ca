//! Scheduler micro-benchmarks (harness = false; run with
//! `cargo bench --bench switch`): yield between two tasks on one worker,
//! channel ping-pong round trip between two tasks, and spawn+join of an empty
//! task. Each figure is the median of several runs; one line per benchmark.
//!
//! Knobs (for profiling one scenario, e.g. under callgrind):
//! `USURP_BENCH_ITERS=n` operations per run (default 1e6), `USURP_BENCH_RUNS=r`
//! runs per figure (default 7; the warm-up run comes on top), and a filter
//! argument: `cargo bench --bench switch -- spawn` runs only the benchmarks
//! whose name contains `spawn` (e.g. `ping-pong`, `workers(1)`).
//! `USURP_BENCH_CLOCK=cpu` times with the process's CPU time instead of the
//! wall clock: on a loaded machine the wall time of a run includes the
//! slices the OS gave other processes, its CPU time does not. Meaningful
//! for the `workers(1)` rows (one runtime thread busy; the others sleep),
//! not for `workers(2)` (an idle worker's search counts too). Not
//! comparable with Go's wall figures: for comparing two builds.

use usurp::{spawn, sync_channel, yield_now, Runtime};

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The bench's clock: wall (`Instant`), or the process's CPU time with
/// `USURP_BENCH_CLOCK=cpu` (see the module docs).
#[derive(Clone, Copy)]
struct Instant(u64);

impl Instant {
    fn cpu() -> bool {
        static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *CPU.get_or_init(|| std::env::var("USURP_BENCH_CLOCK").is_ok_and(|v| v == "cpu"))
    }

    fn now() -> Instant {
        let clock = if Instant::cpu() { libc::CLOCK_PROCESS_CPUTIME_ID } else { libc::CLOCK_MONOTONIC };
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the struct we pass; both clocks exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Instant(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    fn elapsed(self) -> std::time::Duration {
        std::time::Duration::from_nanos(Instant::now().0 - self.0)
    }
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// ns per yield: two tasks on one worker each yield `n` times.
fn yield_ns(rt: &Runtime, n: usize) -> f64 {
    rt.block_on(move || {
        let t = Instant::now();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                spawn(move || {
                    for _ in 0..n {
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        t.elapsed().as_nanos() as f64 / (2 * n) as f64
    })
}

/// ns per round trip over two rendezvous channels (as Go's unbuffered ones).
fn pingpong_ns(rt: &Runtime, n: usize) -> f64 {
    rt.block_on(move || {
        let (atx, arx) = sync_channel::<usize>(0);
        let (btx, brx) = sync_channel::<usize>(0);
        let echo = spawn(move || {
            for v in arx.iter() {
                btx.send(v).unwrap();
            }
        });
        let t = Instant::now();
        for i in 0..n {
            atx.send(i).unwrap();
            assert_eq!(brx.recv().unwrap(), i);
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        drop(atx);
        echo.join().unwrap();
        ns
    })
}

/// ns per spawn + join of an empty task, from a task.
fn spawn_join_ns(rt: &Runtime, n: usize) -> f64 {
    rt.block_on(move || {
        let t = Instant::now();
        for _ in 0..n {
            spawn(|| ()).join().unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

fn report(filter: Option<&str>, name: &str, unit: &str, f: impl Fn() -> f64) {
    if filter.is_some_and(|w| !name.contains(w)) {
        return;
    }
    let runs = env_usize("USURP_BENCH_RUNS", RUNS).max(1);
    f(); // warm-up (maps stacks, fills caches)
    let runs: Vec<f64> = (0..runs).map(|_| f()).collect();
    let k = runs.len();
    let lo = runs.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = runs.iter().cloned().fold(0.0, f64::max);
    println!("{name}: {:.1} {unit} (median of {}; min {lo:.1}, max {hi:.1})", median(runs), k);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // special: run a short smoke pass then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 1000 } else { env_usize("USURP_BENCH_ITERS", 1_000_000) };
    // The first argument that is not an option filters benchmarks by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let filter = filter.as_deref();
    let one = Runtime::builder().workers(1).build().expect("runtime");
    let all = Runtime::new().expect("runtime");
    report(filter, "yield, 2 tasks, workers(1)", "ns per yield", || yield_ns(&one, n));
    report(filter, "channel ping-pong round trip, workers(1)", "ns", || pingpong_ns(&one, n));
    report(filter, "spawn+join, workers(1)", "ns", || spawn_join_ns(&one, n));
    // The same without per-task CPU time (`RuntimeBuilder::task_cpu_time`):
    // no cycle-counter read per switch.
    let nocpu = Runtime::builder().workers(1).task_cpu_time(false).build().expect("runtime");
    report(filter, "yield, 2 tasks, workers(1), task_cpu_time(false)", "ns per yield", || yield_ns(&nocpu, n));
    report(filter, "channel ping-pong round trip, workers(1), task_cpu_time(false)", "ns", || pingpong_ns(&nocpu, n));
    drop(nocpu);
    let w = all.workers();
    report(filter, &format!("yield, 2 tasks, workers({w})"), "ns per yield", || yield_ns(&all, n));
    report(filter, &format!("channel ping-pong round trip, workers({w})"), "ns", || pingpong_ns(&all, n));
    report(filter, &format!("spawn+join, workers({w})"), "ns", || spawn_join_ns(&all, n));
}
