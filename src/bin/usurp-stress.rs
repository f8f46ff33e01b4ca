//! usurp-stress: a small demo/stress run of the scheduler. Spawns tasks that
//! mix yields, channel pipelines, sleeps, a contended mutex and spawn+join,
//! runs them for a few seconds (default 3) and prints a summary with
//! consistency checks. Exit status 1 if a check fails.
//!
//! Options: `--secs S` (default 3), `--workers N` (default: all CPUs),
//! `--tasks N` (tasks per kind, default 200).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::sched::hooks;
use usurp::{spawn, sync_channel, yield_now, Mutex, Runtime};

struct Opts {
    secs: f64,
    workers: Option<usize>,
    tasks: usize,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts { secs: 3.0, workers: None, tasks: 200 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = val("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--workers" => o.workers = Some(val("--workers")?.parse().map_err(|e| format!("--workers: {e}"))?),
            "--tasks" => o.tasks = val("--tasks")?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "-h" | "--help" => {
                println!("usage: usurp-stress [--secs S] [--workers N] [--tasks N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.secs.is_nan() || o.secs <= 0.0 || o.tasks == 0 {
        return Err("--secs must be > 0 and --tasks >= 1".into());
    }
    Ok(o)
}

#[derive(Default)]
struct Counters {
    yields: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    sleeps: AtomicU64,
    locked: AtomicU64,
    spawned: AtomicU64,
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("usurp-stress: {e}");
            std::process::exit(2);
        }
    };
    let mut b = Runtime::builder();
    if let Some(w) = o.workers {
        b = b.workers(w);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("usurp-stress: {e}");
            std::process::exit(2);
        }
    };
    let c = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mutex = Arc::new(Mutex::new(0u64));
    let n = o.tasks;
    let start = Instant::now();
    let (c2, stop2, m2) = (c.clone(), stop.clone(), mutex.clone());
    let (stop_timer, dur) = (stop.clone(), Duration::from_secs_f64(o.secs));
    std::thread::spawn(move || {
        std::thread::sleep(dur);
        stop_timer.store(true, Ordering::SeqCst);
    });
    rt.block_on(move || {
        let (c, stop, mutex) = (c2, stop2, m2);
        let mut hs = Vec::new();
        // Yielders.
        for _ in 0..n {
            let (c, stop) = (c.clone(), stop.clone());
            hs.push(spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    yield_now();
                    c.yields.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Pipelines of 8 stages over bounded channels.
        for _ in 0..(n / 8).max(1) {
            let (tx, mut rx) = sync_channel::<u64>(1);
            for _ in 0..7 {
                let (ntx, nrx) = sync_channel::<u64>(1);
                hs.push(spawn(move || {
                    for v in rx.iter() {
                        if ntx.send(v + 1).is_err() {
                            break;
                        }
                    }
                }));
                rx = nrx;
            }
            let c1 = c.clone();
            hs.push(spawn(move || {
                for v in rx.iter() {
                    assert!(v >= 7);
                    c1.received.fetch_add(1, Ordering::Relaxed);
                }
            }));
            let (c, stop) = (c.clone(), stop.clone());
            hs.push(spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    tx.send(0).unwrap();
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Sleepers.
        for i in 0..n {
            let (c, stop) = (c.clone(), stop.clone());
            hs.push(spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    usurp::sleep(Duration::from_micros(500 + (i as u64 % 10) * 100));
                    c.sleeps.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Mutex contenders (each yields while holding the lock now and then).
        for i in 0..n {
            let (c, stop, m) = (c.clone(), stop.clone(), mutex.clone());
            hs.push(spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut g = m.lock();
                    *g += 1;
                    k += 1;
                    if (k + i as u64) % 16 == 0 {
                        yield_now();
                    }
                    drop(g);
                    c.locked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // A spawner: spawn+join short tasks.
        let (c1, stop1) = (c.clone(), stop.clone());
        hs.push(spawn(move || {
            while !stop1.load(Ordering::Relaxed) {
                let v = spawn(|| 1u64).join().unwrap();
                c1.spawned.fetch_add(v, Ordering::Relaxed);
            }
        }));
        for h in hs {
            h.join().unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let switches: u64 = (0..rt.workers()).map(|i| hooks::worker_switch_count(&rt, i)).sum();
    let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let rate = |v: u64| v as f64 / secs;
    println!("usurp-stress: {} workers, {} tasks per kind, {:.2} s", rt.workers(), n, secs);
    println!("  task switches      {:>12}  ({:.0}/s)", switches, rate(switches));
    println!("  yields             {:>12}  ({:.0}/s)", get(&c.yields), rate(get(&c.yields)));
    println!("  pipeline messages  {:>12}  ({:.0}/s), received {}", get(&c.sent), rate(get(&c.sent)), get(&c.received));
    println!("  sleeps completed   {:>12}  ({:.0}/s)", get(&c.sleeps), rate(get(&c.sleeps)));
    println!("  mutex sections     {:>12}  ({:.0}/s)", get(&c.locked), rate(get(&c.locked)));
    println!("  spawn+join         {:>12}  ({:.0}/s)", get(&c.spawned), rate(get(&c.spawned)));
    let mut ok = true;
    if *mutex.lock() != get(&c.locked) {
        println!("  CHECK FAILED: mutex counter {} != sections {}", *mutex.lock(), get(&c.locked));
        ok = false;
    }
    if get(&c.sent) != get(&c.received) {
        println!("  CHECK FAILED: pipeline sent {} != received {}", get(&c.sent), get(&c.received));
        ok = false;
    }
    for (name, v) in [("yields", &c.yields), ("sleeps", &c.sleeps), ("mutex", &c.locked), ("spawns", &c.spawned)] {
        if get(v) == 0 {
            println!("  CHECK FAILED: no {name} made progress");
            ok = false;
        }
    }
    println!("  checks: {}", if ok { "ok" } else { "FAILED" });
    if !ok {
        std::process::exit(1);
    }
}
