//! Mutator assists (issue 9 item 4, `crates/gc/src/pacer.rs`): while the
//! collector's concurrent marker is slow (a test-only delay per slice), an
//! allocating task marks in proportion to what it allocates, and the heap
//! stays near its goal; with assists switched off (test-only switch, the
//! negative control) the same allocation outruns the mark and the heap
//! passes the goal by far. Asserted through the cycles' stats
//! (`CycleStats::heap_peak` against `mark_goal`, `assist_marked`), never
//! through timing.

use std::sync::Mutex;
use std::time::Duration;
use usurp::gc::{gc_type, CycleStats, Gc, HeapConfig, Member};
use usurp::Runtime;

/// The switches are process-wide: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("USURP_TEST_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    ((n as f64 * s) as usize).max(1)
}

#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(Node { left, right });

/// A list of `n` nodes (garbage).
#[inline(never)]
fn list(n: usize) -> Gc<Node> {
    let mut head = Gc::new(Node { left: Member::new(None), right: Member::new(None) });
    for _ in 1..n {
        head = Gc::new(Node { left: Member::new(Some(head)), right: Member::new(None) });
    }
    head
}

/// A complete binary tree of depth `d` (the long-lived structure: its
/// marking can be shared between the collector and the assists).
#[inline(never)]
fn tree(d: u32) -> Gc<Node> {
    let (l, r) = if d == 0 { (None, None) } else { (Some(tree(d - 1)), Some(tree(d - 1))) };
    Gc::new(Node { left: Member::new(l), right: Member::new(r) })
}

#[inline(never)]
fn count(n: Gc<Node>) -> usize {
    1 + n.left.get().map_or(0, count) + n.right.get().map_or(0, count)
}

fn depth() -> u32 {
    if scale(4) < 4 {
        14
    } else {
        16
    }
}

/// What the scenario saw: every concurrent cycle's stats that the
/// allocating task sampled.
struct Seen {
    cycles: Vec<CycleStats>,
    total_assist_marked: u64,
}

/// A long-lived tree (marking it takes the slow marker one 300 µs sleep
/// per 256 objects), and one task allocating garbage lists until 4
/// concurrent cycles were sampled. Runs in a child thread with a watchdog.
fn scenario(assists: bool) -> Seen {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        usurp_gc::set_assists_for_tests(assists);
        usurp_gc::set_mark_delay_for_tests(300);
        let cfg = HeapConfig { max_heap: 2 << 30, gogc: Some(100), min_heap: 4 << 20, ..HeapConfig::default() };
        let rt = Runtime::builder().workers(2).heap_config(cfg).build().unwrap();
        let seen = rt.block_on(|| {
            let heap = usurp::gc::Heap::current().unwrap();
            let live = tree(depth());
            let want = 4;
            let mut cycles: Vec<CycleStats> = Vec::new();
            let mut rounds = 0;
            while cycles.len() < want {
                rounds += 1;
                assert!(rounds < 100_000, "only {} concurrent cycles sampled", cycles.len());
                // Garbage: about 0.5 MB per round.
                std::hint::black_box(list(16_384));
                if let Some(c) = heap.stats().last {
                    if c.stops.len() >= 2 && cycles.last().map_or(true, |l: &_| l.cycle < c.cycle) && c.cycle > 0 {
                        cycles.push(c);
                    }
                }
            }
            assert_eq!(count(live), (1 << (depth() + 1)) - 1, "the long-lived tree lost nodes");
            Seen { cycles, total_assist_marked: heap.stats().total_assist_marked }
        });
        usurp_gc::set_mark_delay_for_tests(0);
        usurp_gc::set_assists_for_tests(true);
        let _ = tx.send(seen);
    });
    rx.recv_timeout(Duration::from_secs(300)).expect("the scenario hung (watchdog: 300 s)")
}

fn overshoot(c: &CycleStats) -> f64 {
    c.heap_peak as f64 / c.mark_goal as f64
}

#[test]
fn allocation_during_a_slow_mark_assists_and_stays_near_the_goal() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seen = scenario(true);
    assert!(seen.total_assist_marked > 0, "no assist marked anything");
    let assisted: Vec<_> = seen.cycles.iter().filter(|c| c.assist_marked > 0).collect();
    let shares: Vec<_> = seen.cycles.iter().map(|c| (c.assist_marked, c.heap_after)).collect();
    assert!(!assisted.is_empty(), "no sampled cycle had assists: (assist-marked, live) {shares:?}");
    // The slow marker leaves most of the tree to the assists.
    assert!(
        assisted.iter().any(|c| c.assist_marked * 4 >= c.heap_after),
        "assists marked under a quarter of the live heap in every cycle: (assist-marked, live) {shares:?}"
    );
    for c in &seen.cycles {
        // At the goal an assist without work waits for the marker's
        // donation: what passes the goal is at most the blocks (64 KiB)
        // two workers take before their next assist.
        assert!(
            c.heap_peak <= c.mark_goal + (4 << 20),
            "cycle {}: heap peak {} passed the goal {} ({:.2}x) with assists on",
            c.cycle,
            c.heap_peak,
            c.mark_goal,
            overshoot(c)
        );
    }
}

#[test]
fn without_assists_allocation_outruns_a_slow_mark() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seen = scenario(false);
    assert_eq!(seen.total_assist_marked, 0, "assists marked while switched off");
    let worst = seen.cycles.iter().map(overshoot).fold(0.0, f64::max);
    assert!(
        worst > 2.0,
        "with assists off the heap should pass its goal by far during a slow mark (worst peak/goal {worst:.2})"
    );
}
