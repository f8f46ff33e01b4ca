//! Benchmarks Game binary-trees on usurp tasks and the usurp GC, written like
//! the Go anchor (`../shared/anchors/go/binarytrees/main.go`): one task per
//! depth band. Depth from the first argument (default 21). Prints the usual
//! output, then wall time and GC figures. Compare with
//! `/usr/bin/time -f "%e s %M KB" target/release/deps/binarytrees-* 21`
//! against `../shared/anchors/run.sh binarytrees 21`.

use std::time::Instant;
use usurp::gc::{gc_type, Gc, Member};
use usurp::Runtime;

// Compact layout (issue 9): no header word, so a node is 16 bytes (Go's
// size) instead of 24; live bytes, and with them the pacer's goal and the
// RSS, shrink by a third.
#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(compact Node { left, right });

fn create(d: u32) -> Gc<Node> {
    if d == 0 {
        Gc::new(Node { left: Member::new(None), right: Member::new(None) })
    } else {
        let l = create(d - 1);
        let r = create(d - 1);
        Gc::new(Node { left: Member::new(Some(l)), right: Member::new(Some(r)) })
    }
}

fn check(n: Gc<Node>) -> usize {
    match (n.left.get(), n.right.get()) {
        (Some(l), Some(r)) => 1 + check(l) + check(r),
        _ => 1,
    }
}

// The same two functions as guest code a VM runs preemptibly (its
// interpreter loop or JIT output): `-- 21 --preemptible`. A stop of the
// world then takes a task off at its next instruction in these bodies
// instead of waiting for its next allocation refill (a `check` of a large
// tree allocates nothing: that wait is the time-to-safepoint of the default
// run). Go's code is preemptible everywhere.
usurp::preemptible! {
    fn create_p(d: u32) -> Gc<Node> {
        if d == 0 {
            Gc::new(Node { left: Member::new(None), right: Member::new(None) })
        } else {
            let l = create_p(d - 1);
            let r = create_p(d - 1);
            Gc::new(Node { left: Member::new(Some(l)), right: Member::new(Some(r)) })
        }
    }

    fn check_p(n: Gc<Node>) -> usize {
        match (n.left.get(), n.right.get()) {
            (Some(l), Some(r)) => 1 + check_p(l) + check_p(r),
            _ => 1,
        }
    }
}

/// The tree builder and checker (plain or `preemptible!`).
type Kernels = (fn(u32) -> Gc<Node>, fn(Gc<Node>) -> usize);

fn main() {
    let n: u32 = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(21);
    let preemptible = std::env::args().any(|a| a == "--preemptible");
    let (create, check): Kernels =
        if preemptible { (create_p, check_p) } else { (create, check) };
    let t0 = Instant::now();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let rt = Runtime::builder().workers(workers).stack_size(1 << 20).build().expect("runtime");
    let out = rt.block_on(move || {
        let min_d = 4;
        let max_d = n.max(min_d + 2);
        let stretch = max_d + 1;
        let mut out = vec![format!("stretch tree of depth {stretch}\t check: {}", check(create(stretch)))];
        let long = create(max_d);
        let bands: Vec<_> = (min_d..=max_d)
            .step_by(2)
            .map(|d| {
                usurp::spawn(move || {
                    let iters = 1usize << (max_d - d + min_d);
                    let mut chk = 0;
                    for _ in 0..iters {
                        chk += check(create(d));
                    }
                    format!("{iters}\t trees of depth {d}\t check: {chk}")
                })
            })
            .collect();
        for b in bands {
            out.push(b.join().unwrap());
        }
        out.push(format!("long lived tree of depth {max_d}\t check: {}", check(long)));
        out
    });
    for l in out {
        println!("{l}");
    }
    let st = rt.stats();
    // (`pause_percentile` takes 0..=100: this printed p0.5/p0.99 before.)
    let wall = t0.elapsed();
    eprintln!(
        "usurp binary-trees {n}: wall {:.2} s, workers {workers}, gc cycles {}, total pause {:?} ({:.1}% of wall), pause p50 {:?} p99 {:?} max {:?}, ttsp p99 {:?}; pause parts (totals): ttsp {:?}, roots {:?}, mark {:?}, sweep {:?}",
        wall.as_secs_f64(),
        st.gc.cycles,
        st.gc.total_pause,
        100.0 * st.gc.total_pause.as_secs_f64() / wall.as_secs_f64(),
        st.gc.pause_percentile(50.0),
        st.gc.pause_percentile(99.0),
        st.gc.pause_percentile(100.0),
        st.gc.ttsp_percentile(99.0),
        st.gc.total_ttsp,
        st.gc.total_root_scan,
        st.gc.total_mark,
        st.gc.total_sweep,
    );
}
