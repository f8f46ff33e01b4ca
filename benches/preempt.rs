//! Preemption benchmarks (issue 3), comparable with
//! `../shared/anchors/run.sh preempt` (Go): 2 workers saturated by 4 tight
//! loops (no calls, in `preemptible!` code).
//!   (a) wake latency: how late a task sleeping 1 ms wakes up, p50/p99/max,
//!       at a 1 ms and a 100 µs quantum;
//!   (b) `heap.collect()` while the loops spin: time-to-safepoint and pause
//!       (p50/p99) from the GC's stats, and the wall time of the call;
//!   (c) loop throughput at a 1 ms quantum against async preemption off in
//!       the same run, with loops == workers and loops == 2 x workers
//!       (`throughput ratio (...)` lines, issue 12).
//!   (d) latency fairness (issue 11): 32 loops + 32 tasks sleeping 1 ms in
//!       a loop, quantum 1 ms: wake lateness p50/p99 over all sleepers.
//! Run: `cargo bench -p usurp --bench preempt` (args: probes, collections;
//! `-- --throughput` runs only (c), `-- --fairness` only (d), `-- --gc-only
//! N` only (b) with N collections; `--stopper-sleeps` makes the stoppers
//! sleep from the start of each stop, as before their spin, issue 9).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{gc_type, Gc, Heap, Member};
use usurp::{preemptible, Runtime};

preemptible! {
    fn spin(stop: &AtomicBool, iters: &AtomicU64) {
        let mut x = 0u64;
        loop {
            // SAFETY: volatile read of a valid AtomicBool (no call).
            if unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } != 0 {
                break;
            }
            x = x.wrapping_add(1);
            if x & 0xffff == 0 {
                iters.fetch_add(0x10000, Ordering::Relaxed);
            }
        }
    }
}

#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(Node { left, right });

fn tree(d: u32) -> Gc<Node> {
    if d == 0 {
        Gc::new(Node { left: Member::new(None), right: Member::new(None) })
    } else {
        Gc::new(Node { left: Member::new(Some(tree(d - 1))), right: Member::new(Some(tree(d - 1))) })
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

struct Loops {
    stop: Arc<AtomicBool>,
    iters: Arc<AtomicU64>,
    handles: Vec<usurp::JoinHandle<()>>,
}

fn start_loops(rt: &Runtime, n: usize) -> Loops {
    let stop = Arc::new(AtomicBool::new(false));
    let iters = Arc::new(AtomicU64::new(0));
    let handles = (0..n)
        .map(|_| {
            let (s, i) = (stop.clone(), iters.clone());
            rt.spawn(move || spin(&s, &i))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    Loops { stop, iters, handles }
}

impl Loops {
    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().unwrap();
        }
    }
}

fn wake_latency(quantum: Duration, probes: usize) {
    let rt = Runtime::builder().workers(2).quantum(quantum).build().unwrap();
    let loops = start_loops(&rt, 4);
    let mut lat = rt.block_on(move || {
        let mut lat = Vec::with_capacity(probes);
        for _ in 0..probes {
            let t0 = Instant::now();
            usurp::sleep(Duration::from_millis(1));
            lat.push(t0.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        lat
    });
    loops.finish();
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    println!("wake latency (1ms sleep overshoot), quantum {quantum:?}: p50={p50:?} p99={p99:?} max={max:?}");
}

/// (d): 32 call-free loops and 32 sleepers (1 ms, `rounds` each) on 2
/// workers at a 1 ms quantum; lateness = elapsed - 1 ms per sleep.
fn fairness_latency(rounds: usize) {
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    let loops = start_loops(&rt, 32);
    let sleepers: Vec<_> = (0..32)
        .map(|_| {
            rt.spawn(move || {
                let mut lat = Vec::with_capacity(rounds);
                for _ in 0..rounds {
                    let t0 = Instant::now();
                    usurp::sleep(Duration::from_millis(1));
                    lat.push(t0.elapsed().saturating_sub(Duration::from_millis(1)));
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = sleepers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    loops.finish();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(
        "32 loops + 32 sleepers, quantum 1 ms: wake lateness p50 {} us, p99 {} us",
        p50.as_micros(),
        p99.as_micros()
    );
}

fn gc_while_spinning(collections: usize) {
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).gogc(None).build().unwrap();
    let loops = start_loops(&rt, 4);
    let mut wall = rt.block_on(move || {
        let keep = tree(16); // ~64K live objects
        let heap = Heap::current().unwrap();
        let mut wall = Vec::with_capacity(collections);
        for _ in 0..collections {
            let t0 = Instant::now();
            heap.collect();
            wall.push(t0.elapsed());
        }
        black_box(keep);
        wall
    });
    loops.finish();
    let st = rt.stats();
    let mut ttsp = st.gc.ttsp.clone();
    let mut pause = st.gc.pauses.clone();
    println!(
        "heap.collect() while 4 loops spin on 2 workers: wall p50={:?} p99={:?}; time-to-safepoint p50={:?} p99={:?}; pause p50={:?} p99={:?} ({} cycles); per stop p50={:?} p99={:?} ({} stops, stopper slept {} times)",
        pct(&mut wall, 0.5),
        pct(&mut wall, 0.99),
        pct(&mut ttsp, 0.5),
        pct(&mut ttsp, 0.99),
        pct(&mut pause, 0.5),
        pct(&mut pause, 0.99),
        st.gc.cycles,
        st.stw.ttsp_p50,
        st.stw.ttsp_p99,
        st.stw.stops,
        st.stw.stopper_sleeps
    );
}

/// Loop iterations per second over `secs` with `loops` loops on 2 workers,
/// and the quantum ticks delivered meanwhile (process-wide counter).
fn throughput(async_on: bool, loops: usize, secs: f64) -> (f64, u64) {
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).async_preemption(async_on).build().unwrap();
    let loops = start_loops(&rt, loops);
    let i0 = loops.iters.load(Ordering::Relaxed);
    let k0 = usurp::preempt::stats().ticks;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let rate = (loops.iters.load(Ordering::Relaxed) - i0) as f64 / t0.elapsed().as_secs_f64();
    let ticks = usurp::preempt::stats().ticks - k0;
    loops.finish();
    (rate, ticks)
}

/// Throughput ratios against async preemption off, in the same run
/// (issue 12): 2 loops on 2 workers (nobody waits: no tick should be sent),
/// and 4 loops on 2 workers (every worker has a waiting task: a tick per
/// quantum). Async off runs 2 loops in both cases (one per worker: with 4,
/// two would never run). Rounds alternate to cancel drift.
fn throughput_ratios() {
    let (mut eq, mut dbl, mut off) = (0.0, 0.0, 0.0);
    let (mut eq_ticks, mut dbl_ticks) = (0, 0);
    let rounds = 3;
    for _ in 0..rounds {
        let (r, k) = throughput(true, 2, 0.5);
        eq += r;
        eq_ticks += k;
        off += throughput(false, 2, 0.5).0;
        let (r, k) = throughput(true, 4, 0.5);
        dbl += r;
        dbl_ticks += k;
    }
    let n = rounds as f64;
    println!(
        "loop throughput, quantum 1ms: {:.3e} iter/s async off (2 loops); async on: {:.3e} (2 loops), {:.3e} (4 loops)",
        off / n,
        eq / n,
        dbl / n
    );
    println!(
        "quantum ticks delivered while measuring ({:.1} s each): {eq_ticks} with 2 loops, {dbl_ticks} with 4 loops",
        rounds as f64 * 0.5
    );
    println!("throughput ratio (loops == workers): {:.4}", eq / off);
    println!("throughput ratio (loops == 2 x workers): {:.4}", dbl / off);
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.iter().any(|a| a == "--throughput") {
        // Only the throughput ratios (e.g. to take medians of several runs).
        throughput_ratios();
        println!("preemption stats: {:?}", usurp::preempt::stats());
        return;
    }
    if all.iter().any(|a| a == "--preempted-local") {
        // Comparison only: preempted tasks back to their worker's ring (the
        // policy before they went through the global queue, issue 11).
        usurp_sched::hooks::set_preempted_to_global_for_tests(false);
    }
    if all.iter().any(|a| a == "--stopper-sleeps") {
        // Comparison only: stoppers sleep on their condvar from the start
        // (the wait before the spin, issue 9 item 1).
        usurp_sched::hooks::set_stopper_spin_for_tests(false);
    }
    if all.iter().any(|a| a == "--gc-only") {
        // Only (b), the collections while the loops spin.
        let args: Vec<String> = all.iter().filter(|a| !a.starts_with('-')).cloned().collect();
        gc_while_spinning(args.first().and_then(|a| a.parse().ok()).unwrap_or(50));
        let st = usurp::preempt::stats();
        println!("preemption stats: {st:?}");
        return;
    }
    if all.iter().any(|a| a == "--fairness") {
        fairness_latency(200);
        return;
    }
    let args: Vec<String> = all.into_iter().filter(|a| !a.starts_with('-')).collect();
    let probes = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let collections = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    println!("usurp workers=2 loops=4");
    wake_latency(Duration::from_millis(1), probes);
    wake_latency(Duration::from_micros(100), probes);
    wake_latency(usurp::DEFAULT_QUANTUM, probes / 10);
    gc_while_spinning(collections);
    fairness_latency(200);
    throughput_ratios();
    println!("preemption stats: {:?}", usurp::preempt::stats());
}
