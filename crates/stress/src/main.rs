//! usurp-stress: a torture test to trust usurp on your machine.
//!
//! Runs a mix of task kinds at once for `--seconds` (default 10) on one
//! runtime with a short preemption quantum (default 1 ms) and the GC heap
//! verifier on:
//!
//! * **register loops**: tasks in preemptible assembly that hold known values
//!   in every general-purpose and vector register and check them in a loop
//!   (the arch crate's `regcheck`), preempted asynchronously over and over;
//! * **GC allocators**: linked lists, binary trees (run-time descriptors) and
//!   hash tables of GC objects, referenced only from task stacks (and some
//!   from `Root`s), checksummed when built and re-verified after every
//!   collection the task observes;
//! * **barrier hammering**: pointer stores through the write barrier
//!   (`GcRef::set_ptr`, `Member::set`) in hot loops, checked against a shadow;
//! * channel ping-pong pairs, mutex contention groups, 1 ms sleepers
//!   (recording wake latency) and tasks calling `blocking`.
//!
//! A progress line goes to stderr; at the end a summary table goes to stdout
//! (and `--json FILE` writes the same numbers). Exit status: 0 if every
//! check passed, 1 if any failure counter is non-zero, 2 for invalid
//! arguments or a runtime that cannot be built.

mod kinds;
mod report;

use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use usurp::gc::HeapConfig;
use usurp::Runtime;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "usurp-stress",
    version,
    about = "Stress usurp: preemptible register loops, GC allocators, write barriers, channels, mutexes, sleepers and blocking calls, all at once",
    after_help = "Exit status: 0 if every check passed, 1 if a failure counter is non-zero, 2 for invalid arguments."
)]
struct Cli {
    /// Worker threads [default: available parallelism]
    #[arg(long)]
    workers: Option<usize>,
    /// Tasks in total, spread over the kinds (a ping-pong pair counts 2)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    tasks: u64,
    /// Preemption quantum, e.g. 1ms, 100us, 0.5ms (allowed 100us to 10s)
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    quantum: Duration,
    /// How long to run, in seconds
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Hard limit of the GC heap, e.g. 512MiB, 1GiB, 300M
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    heap_limit: usize,
    /// Seed for the task mix's random choices and register patterns
    /// [default: from the clock, printed]
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Run only these kinds (comma-separated): regs, gc-list, gc-tree,
    /// gc-table, barrier, pingpong, mutex, sleeper, blocking [default: all]
    #[arg(long, value_parser = kinds::parse_kinds)]
    kinds: Option<kinds::KindList>,
    /// Also write the summary as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// If no task makes progress for SECONDS, print a task dump (every
    /// task's state and backtrace; if the world cannot be stopped, each
    /// worker's running task) to stderr and fail
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    dump_on_hang: Option<f64>,
    /// Testing --dump-on-hang: a task loops outside preemptible code
    /// without checkpoints while another collects, so the collection's stop
    /// never completes
    #[arg(long, hide = true)]
    inject_hang: bool,
    /// Testing the end of a run that panics: the coordinator's 10th spawn
    /// fails as if the kernel had refused the task's stack
    #[arg(long, hide = true)]
    inject_spawn_failure: bool,
}

/// "1ms", "100us", "100µs", "2s", "1.5ms", "250000ns".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 1ms, 100us or 2s"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "" => return Err(format!("{s:?} needs a unit: ns, us, ms or s")),
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ns, us, ms or s)")),
    };
    let secs = v * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v <= 1e6) {
        return Err(format!("{s:?}: must be more than 0 and at most 1000000"));
    }
    Ok(v)
}

/// "512MiB", "1GiB", "300M", "64KiB", "1048576" (bytes).
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like 512MiB or 1GiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0f64.powi(4),
        u => return Err(format!("unknown unit {u:?} in {s:?} (use B, KiB, MiB, GiB, TiB or K, M, G, T)")),
    };
    let b = v * scale;
    if !b.is_finite() || b >= usize::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(b as usize)
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a 64-bit number (decimal or 0x hex)"))
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ (std::process::id() as u64).rotate_left(32)
}

fn main() {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(clock_seed);

    // The heap verifier runs after every collection (in a stop of its own); the environment still
    // chooses GOGC and gctrace.
    let hc = HeapConfig { verify: true, ..HeapConfig::default() };
    let mut b = Runtime::builder().quantum(cli.quantum).heap_config(hc).heap_limit(cli.heap_limit);
    if let Some(w) = cli.workers {
        b = b.workers(w);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("usurp-stress: {e}");
            std::process::exit(2);
        }
    };

    let plan = kinds::Plan::new(cli.tasks as usize, cli.kinds.as_ref().map_or(&[][..], |k| &k.0[..]));
    let cfg = report::RunConfig {
        seconds: cli.seconds,
        workers: rt.workers(),
        quantum: rt.quantum(),
        heap_limit: cli.heap_limit,
        seed,
        tasks: plan.total(),
        async_preemption: rt.async_preemption(),
    };
    println!("{}", report::header(&cfg, &plan));
    if let Some(w) = kinds::regcheck_warning() {
        eprintln!("usurp-stress: warning: {w}");
    }

    let ctx = kinds::Ctx::new(seed);
    let duration = Duration::from_secs_f64(cli.seconds);
    if cli.inject_spawn_failure {
        kinds::INJECT_SPAWN_FAILURE.store(true, Ordering::SeqCst);
    }
    let start = Instant::now();
    // A panic (the coordinator's, e.g. a spawn the kernel refused, resumed
    // here by block_on) ends the run: the guard sets `done` on the way out,
    // so that the scope's progress and watchdog threads end and the scope
    // returns the panic to us.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|s| {
            let done = DoneOnDrop(&ctx.done);
            let progress = s.spawn(|| report::progress_loop(&rt, &ctx, start, duration));
            if let Some(secs) = cli.dump_on_hang {
                let (rt, ctx) = (&rt, &ctx);
                s.spawn(move || hang_watchdog(rt, ctx, Duration::from_secs_f64(secs)));
            }
            if cli.inject_hang {
                inject_hang(&rt);
            }
            let (c, p) = (ctx.clone(), plan.clone());
            let outcome = rt.block_on(move || kinds::run_all(&c, &p, duration));
            drop(done);
            progress.join().ok();
            outcome
        })
    }));
    let outcome = match run {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            eprintln!("\nusurp-stress: the run ended with a panic: {msg}");
            println!("result: FAILED (panic: {msg})");
            std::process::exit(1);
        }
    };
    let elapsed = start.elapsed();
    let summary = report::Summary::collect(&rt, &ctx, &cfg, &plan, &outcome, elapsed);
    println!("{}", summary.table());
    if let Some(path) = &cli.json {
        if let Err(e) = std::fs::write(path, summary.json()) {
            eprintln!("usurp-stress: cannot write {}: {e}", path.display());
            std::process::exit(2);
        }
    }
    let failures = summary.failures();
    if !summary.starved.is_empty() {
        // Not a failure counter (the checks above passed), but worth a line.
        println!(
            "warning: starved: {} made no progress in {:.1} s ({})",
            summary.starved.join(", "),
            summary.seconds,
            summary.starvation_verdict()
        );
    }
    if failures.is_empty() {
        println!("result: OK");
    } else {
        println!("result: FAILED ({})", failures.join(", "));
        std::process::exit(1);
    }
}

/// Sets the flag when dropped (also while unwinding).
struct DoneOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `--dump-on-hang`: samples the progress counters every 50 ms; when none
/// moved for `limit`, prints a task dump to stderr and exits with status 1.
/// Ends when the run is done.
///
/// Progress is any task's progress counter, a completed collection (GC
/// cycles and the runtime's completed stops: the verifier's stops too), a
/// structure verification or an explicit collection: a run whose tasks all
/// wait for a long collection is not hung. A single stop (a pause, or the
/// verifier's walk) that lasts longer than `limit` still counts as a hang;
/// its dump then shows the collecting task in it. Under qemu-user
/// emulation (signals and the collector run ~10-50x slower), the limit is
/// multiplied by [`EMULATION_SLOWDOWN`].
fn hang_watchdog(rt: &Runtime, ctx: &kinds::Ctx, limit: Duration) {
    let limit = if emulated() { limit * EMULATION_SLOWDOWN } else { limit };
    let total = || {
        let tasks = ctx.c.progress.iter().map(|c| c.load(Ordering::Relaxed)).fold(0u64, u64::wrapping_add);
        let gc = rt.heap().stats().cycles;
        let stops = rt.stats().stw.stops;
        let checks = ctx.c.verifications.load(Ordering::Relaxed) + ctx.c.explicit_collections.load(Ordering::Relaxed);
        (tasks, gc, stops, checks)
    };
    let mut last = total();
    let mut since = Instant::now();
    while !ctx.done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let now = total();
        if now != last {
            last = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= limit {
            eprintln!("\nusurp-stress: no progress for {:.1} s: task dump follows", limit.as_secs_f64());
            eprint!("{}", rt.dump_tasks());
            println!("result: FAILED (hang: no progress for {:.1} s)", limit.as_secs_f64());
            std::process::exit(1);
        }
    }
}

/// How much longer `--dump-on-hang` waits under qemu-user emulation.
const EMULATION_SLOWDOWN: u32 = 10;

/// True when this runs under qemu-user: an aarch64 binary whose
/// /proc/cpuinfo is the host's x86 one (no "CPU implementer" lines). One
/// file read, once per run.
fn emulated() -> bool {
    cfg!(target_arch = "aarch64")
        && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| !c.contains("CPU implementer"))
}

/// `--inject-hang`: a task that never reaches a safe point, then (from a
/// plain thread, once it runs) a collection, whose stop waits for it
/// forever while every other worker stays parked for it.
fn inject_hang(rt: &Runtime) {
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = running.clone();
    let _ = usurp::task::Builder::new().name("injected-hog").spawn_on(rt, move || {
        r.store(true, Ordering::SeqCst);
        loop {
            std::hint::spin_loop();
        }
    });
    let heap = rt.heap().clone();
    std::thread::spawn(move || {
        while !running.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        heap.collect();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("100µs").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("300M").unwrap(), 300_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 furlongs").is_err());
    }

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("0x10").unwrap(), 16);
        assert_eq!(parse_seed("42").unwrap(), 42);
        assert!(parse_seed("x").is_err());
    }
}
