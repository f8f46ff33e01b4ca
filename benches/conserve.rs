//! Work-conservation benchmarks (issue 11), 2 workers, ordinary Rust code
//! (not `preemptible!`, no cooperative point in the busy parts):
//!   (a) fork-join: `let h = spawn(work); work(); h.join()` with two halves
//!       of `HALF_MS` ms of CPU each: wall time (goal: ≤ 1.1x one half, i.e.
//!       ≤ 0.55 s for 500 ms halves; before the fix it ran serially, 2x);
//!   (b) spawned sleeper: the main task is busy for 1 s while a task it
//!       spawned sleeps 1 ms in a loop: wake-ups completed in that second
//!       (Go's same program: ~900 on this machine), and how late each 1 ms
//!       sleep returned (p50 / p99).
//!   (c) 30 call-free loops of 1e8 additions (`preemptible!`) on 2 workers:
//!       wall time and CPU used (cores; goal >= 1.9: preempted loops must
//!       migrate to a worker whose loops finished).
//!   (d) idle sleep: one task sleeps 1 ms 500 times on an otherwise idle
//!       runtime: lateness p50 / p99 (timer slack and the idle worker's
//!       futex wake-up; goal p50 ≤ 20 µs, p99 ≤ 60 µs; Go ~103 / 145 µs),
//!       printed beside the machine's own floor: the same 500 sleeps of a
//!       plain OS thread with the same 1 ns timer slack (`nanosleep`, no
//!       runtime), so that what the runtime adds is the difference.
//!       With `--timer-spin=US` (e.g. `-- --idle --timer-spin=100`), (d)
//!       also runs on a second runtime built with
//!       `RuntimeBuilder::timer_spin(US µs)` (its idle worker stops
//!       sleeping US µs before the timer and spins), interleaved with the
//!       other two, and prints its lateness and the CPU the process used
//!       per sleep on each runtime.
//! Run: `cargo bench -p usurp --bench conserve` (args: half_ms, busy_ms;
//! `-- --idle` runs only (d)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usurp::{preemptible, sleep, spawn, Runtime};

preemptible! {
    /// A call-free loop of `n` additions.
    fn adds(n: u64) -> u64 {
        let mut x = 0u64;
        let mut i = 0u64;
        while i < n {
            // SAFETY: volatile read of a stack local: keeps the loop (no call).
            x = x.wrapping_add(unsafe { std::ptr::read_volatile(&i) });
            i += 1;
        }
        x
    }
}

fn cpu_secs() -> f64 {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// (wall seconds, cores used) for `tasks` loops of `n` additions.
fn loops(rt: &Runtime, tasks: usize, n: u64) -> (f64, f64) {
    let c0 = cpu_secs();
    let t = Instant::now();
    let hs: Vec<_> = (0..tasks).map(|_| rt.spawn(move || adds(n))).collect();
    for h in hs {
        std::hint::black_box(h.join().unwrap());
    }
    let wall = t.elapsed().as_secs_f64();
    (wall, (cpu_secs() - c0) / wall)
}

const RUNS: usize = 5;

/// Busy in ordinary code for `d` (never yields, never allocates).
fn busy(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn fork_join(rt: &Runtime, half: Duration) -> f64 {
    rt.block_on(move || {
        let t = Instant::now();
        let h = spawn(move || busy(half));
        let a = busy(half);
        let b = h.join().unwrap();
        std::hint::black_box(a ^ b);
        t.elapsed().as_secs_f64()
    })
}

/// Returns (sleeps completed, lateness of each sleep in µs).
fn spawned_sleeper(rt: &Runtime, busy_for: Duration) -> (usize, Vec<f64>) {
    rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let late = Arc::new(Mutex::new(Vec::with_capacity(4096)));
        let (s, l) = (stop.clone(), late.clone());
        let h = spawn(move || {
            let mut v = Vec::with_capacity(4096);
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                sleep(Duration::from_millis(1));
                v.push((t.elapsed().as_secs_f64() * 1e6 - 1000.0).max(0.0));
            }
            *l.lock().unwrap() = v;
        });
        busy(busy_for);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let v = std::mem::take(&mut *late.lock().unwrap());
        (v.len(), v)
    })
}

/// (d): lateness in µs of each of `n` 1 ms sleeps of one task, nothing else
/// running.
fn idle_sleeps(rt: &Runtime, n: usize) -> Vec<f64> {
    rt.block_on(move || {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            sleep(Duration::from_millis(1));
            v.push(t0.elapsed().saturating_sub(Duration::from_millis(1)).as_secs_f64() * 1e6);
        }
        v
    })
}

/// The floor of (d): the lateness of `n` 1 ms sleeps of a plain OS thread
/// whose timer slack is 1 ns like the runtime's threads.
fn os_thread_sleeps(n: usize) -> Vec<f64> {
    std::thread::spawn(move || {
        // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this
        // thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        (0..n)
            .map(|_| {
                let t0 = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                t0.elapsed().saturating_sub(Duration::from_millis(1)).as_secs_f64() * 1e6
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// `idle_sleeps` and the CPU time the process used meanwhile, in µs per
/// sleep.
fn idle_sleeps_cpu(rt: &Runtime, n: usize) -> (Vec<f64>, f64) {
    let c0 = cpu_secs();
    let v = idle_sleeps(rt, n);
    (v, (cpu_secs() - c0) * 1e6 / n as f64)
}

fn print_idle(rt: &Runtime, spin: Option<(&Runtime, u64)>) {
    if let Some((srt, us)) = spin {
        // Interleaved in five rounds, so that all three see the same load.
        let (mut v, mut s, mut f) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cv, mut cs) = (0.0, 0.0);
        for _ in 0..5 {
            let (a, c) = idle_sleeps_cpu(rt, 100);
            v.extend(a);
            cv += c / 5.0;
            let (a, c) = idle_sleeps_cpu(srt, 100);
            s.extend(a);
            cs += c / 5.0;
            f.extend(os_thread_sleeps(100));
        }
        println!(
            "idle 1 ms sleep lateness: timer_spin off: p50 {:.0} µs, p99 {:.0} µs ({cv:.0} µs CPU per sleep); \
             timer_spin {us} µs: p50 {:.0} µs, p99 {:.0} µs ({cs:.0} µs CPU per sleep) (500 sleeps each, workers(2)); \
             machine floor (plain OS thread, nanosleep, 1 ns slack): p50 {:.0} µs, p99 {:.0} µs",
            pct(&mut v, 0.5),
            pct(&mut v, 0.99),
            pct(&mut s, 0.5),
            pct(&mut s, 0.99),
            pct(&mut f, 0.5),
            pct(&mut f, 0.99)
        );
        return;
    }
    // Interleaved in two halves, so that both see the same machine load.
    let (mut v, mut f) = (idle_sleeps(rt, 250), os_thread_sleeps(250));
    v.extend(idle_sleeps(rt, 250));
    f.extend(os_thread_sleeps(250));
    println!(
        "idle 1 ms sleep lateness: p50 {:.0} µs, p99 {:.0} µs (500 sleeps, workers(2)); \
         machine floor (plain OS thread, nanosleep, 1 ns slack): p50 {:.0} µs, p99 {:.0} µs",
        pct(&mut v, 0.5),
        pct(&mut v, 0.99),
        pct(&mut f, 0.5),
        pct(&mut f, 0.99)
    );
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let quick = !std::env::args().any(|a| a == "--bench");
    let half_ms: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(if quick { 20 } else { 500 });
    let busy_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(if quick { 50 } else { 1000 });
    let rt = Runtime::builder().workers(2).build().expect("runtime");
    let spin_us: Option<u64> = std::env::args().find_map(|a| {
        let v = a.strip_prefix("--timer-spin=")?;
        Some(v.parse().expect("--timer-spin=<µs>"))
    });
    let spin_rt = spin_us.map(|us| {
        let b = Runtime::builder().workers(2).timer_spin(Duration::from_micros(us));
        (b.build().expect("runtime with timer_spin"), us)
    });
    let spin = spin_rt.as_ref().map(|(r, us)| (r, *us));
    if std::env::args().any(|a| a == "--idle") {
        print_idle(&rt, spin);
        return;
    }

    let half = Duration::from_millis(half_ms);
    let walls: Vec<f64> = (0..RUNS).map(|_| fork_join(&rt, half)).collect();
    let lo = walls.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = walls.iter().cloned().fold(0.0, f64::max);
    let m = median(walls);
    println!(
        "fork-join, two {half_ms} ms halves, workers(2): {:.3} s (median of {RUNS}; min {lo:.3}, max {hi:.3}; {:.2}x one half)",
        m,
        m / half.as_secs_f64()
    );

    let busy_for = Duration::from_millis(busy_ms);
    let mut counts = Vec::new();
    let mut all = Vec::new();
    for _ in 0..RUNS {
        let (n, v) = spawned_sleeper(&rt, busy_for);
        counts.push(n as f64);
        all.extend(v);
    }
    println!(
        "spawned sleeper, 1 ms sleeps while the spawner is busy {busy_ms} ms, workers(2): {:.0} wake-ups (median of {RUNS}); lateness p50 {:.0} us, p99 {:.0} us",
        median(counts),
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );

    let n: u64 = if quick { 1_000_000 } else { 100_000_000 };
    let mut walls = Vec::new();
    let mut cores = Vec::new();
    for _ in 0..3 {
        let (w, c) = loops(&rt, 30, n);
        walls.push(w);
        cores.push(c);
    }
    println!(
        "30 call-free loops of {n} additions, workers(2): wall {:.3} s, CPU {:.2} cores (median of 3)",
        median(walls),
        median(cores)
    );

    print_idle(&rt, spin);
}
