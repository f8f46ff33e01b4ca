//! Allocation micro-benchmark and single-threaded binary-trees.
//!
//! `cargo bench -p usurp-gc --bench alloc [-- DEPTH]` (default depth 16;
//! env BT_DEPTH also works). Prints ns per small allocation on the fast path
//! (pacing off, so no collection runs), the same with GOGC=100 (collections
//! included), and binary-trees wall time with GC statistics, marking on one
//! thread and on two.

use std::hint::black_box;
use std::time::{Duration, Instant};
use std::sync::Arc;
use usurp_gc::{gc_type, Gc, Heap, HeapConfig, Member, SoloWorld, ThreadWorld, World};

#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(Node { left, right });

fn make(d: u32) -> Gc<Node> {
    if d == 0 {
        Gc::new(Node { left: Member::null(), right: Member::null() })
    } else {
        let l = make(d - 1);
        let r = make(d - 1);
        Gc::new(Node { left: Member::new(Some(l)), right: Member::new(Some(r)) })
    }
}

fn check(t: Gc<Node>) -> u32 {
    match (t.left.get(), t.right.get()) {
        (Some(l), Some(r)) => 1 + check(l) + check(r),
        _ => 1,
    }
}

fn fast_path(n: usize, gogc: Option<u32>) -> f64 {
    let heap = Heap::new(HeapConfig { max_heap: 8 << 30, gogc, verify: false, trace: false, ..HeapConfig::default() })
        .expect("heap");
    let _g = heap.attach_thread().unwrap();
    // Rounds of 1M allocations; with pacing off, an untimed collection between
    // rounds frees the memory so that the timed loop reuses faulted-in blocks
    // (first touch of fresh pages is the kernel's cost, not the allocator's).
    let round = 1_000_000;
    let mut timed = Duration::ZERO;
    for r in 0..=n / round {
        let t = Instant::now();
        for _ in 0..round {
            black_box(Gc::new(Node { left: Member::null(), right: Member::null() }));
        }
        if r > 0 {
            timed += t.elapsed();
        }
        if gogc.is_none() {
            heap.collect();
        }
    }
    let ns = timed.as_nanos() as f64 / (n / round * round) as f64;
    let st = heap.stats();
    println!(
        "alloc 24 B ({}): {:.1} ns/alloc over {} allocs, {} cycles",
        gogc.map_or("GOGC=off".to_string(), |g| format!("GOGC={g}")),
        ns,
        n,
        st.cycles
    );
    ns
}

fn binary_trees(depth: u32, mark_threads: usize) {
    // The mutator is this one thread; with mark_threads > 1 a ThreadWorld
    // runs the marking (and the sweep of large heaps) on that many threads.
    let world: Arc<dyn World> = if mark_threads > 1 { ThreadWorld::new(mark_threads) } else { Arc::new(SoloWorld) };
    let heap = Heap::with_world(HeapConfig::default(), world).expect("heap");
    let _g = heap.attach_thread().unwrap();
    let t0 = Instant::now();
    let max = depth.max(6);
    let stretch = max + 1;
    println!("stretch tree of depth {stretch}\t check: {}", check(make(stretch)));
    let long = make(max);
    let mut d = 4;
    while d <= max {
        let iters = 1u32 << (max - d + 4);
        let mut c = 0;
        for _ in 0..iters {
            c += check(make(d));
        }
        println!("{iters}\t trees of depth {d}\t check: {c}");
        d += 2;
    }
    println!("long lived tree of depth {max}\t check: {}", check(long));
    let wall = t0.elapsed();
    let st = heap.stats();
    println!(
        "binary-trees depth {max}, {mark_threads} marking thread(s): wall {:.3} s, {} GCs, total pause {:.1} ms, pause p50 {:.3} ms p99 {:.3} ms max {:.3} ms, peak committed heap {} MB",
        wall.as_secs_f64(),
        st.cycles,
        st.total_pause.as_secs_f64() * 1e3,
        ms(st.pause_percentile(50.0)),
        ms(st.pause_percentile(99.0)),
        ms(st.pause_percentile(100.0)),
        st.heap_committed >> 20,
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let depth: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("BT_DEPTH").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(16);
    // BT_ONLY=1|2: only binary-trees with that many marking threads (for
    // profilers and simulators).
    match std::env::var("BT_ONLY").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(t) => binary_trees(depth, t.max(1)),
        None => {
            let n = 20_000_000;
            let ns = fast_path(n, None);
            println!("fast-path goal <= 20 ns: {}", if ns <= 20.0 { "met" } else { "NOT met" });
            fast_path(n, Some(100));
            binary_trees(depth, 1);
            binary_trees(depth, 2);
        }
    }
}
