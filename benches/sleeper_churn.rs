//! Issue 9's sleeper goal: a task sleeping 1 ms in a loop beside a task that
//! churns binary trees (a long-lived depth-20 tree, then depth-18 trees built,
//! checked and dropped), on 2 workers; prints the sleeper's lateness (time
//! past the 1 ms asked for) p50 / p99 / max and the GC's figures. The same
//! program in Go is `benches/go/sleeper_churn` (GOMAXPROCS=2). Run both, in
//! the same minutes (the machine's load moves every figure):
//!
//! ```text
//! bash ci/sleeper_churn.sh [seconds] [--preemptible]
//! ```
//!
//! or by hand: `cargo bench --bench sleeper_churn -- 10` and
//! `cd benches/go/sleeper_churn && go run . 10`. Arguments: the churn's
//! length in seconds (default 10); `--preemptible` runs the tree code as
//! `preemptible!` guest code (a VM's interpreter or JIT output), which a
//! stop of the world takes off at its next instruction instead of at its
//! next allocation refill (Go's code is preemptible everywhere).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{gc_type, Gc, Member};
use usurp::Runtime;

#[repr(C)]
struct Node {
    left: Member<Node>,
    right: Member<Node>,
}
gc_type!(Node { left, right });

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

/// `create` and `check`, ordinary or preemptible.
type TreeFns = (fn(u32) -> Gc<Node>, fn(Gc<Node>) -> usize);

/// Nearest-rank percentile of sorted `v` (the same rule as the Go twin).
fn pct(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let secs: f64 = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let preemptible = std::env::args().any(|a| a == "--preemptible");
    let (create, check): TreeFns = if preemptible { (create_p, check_p) } else { (create, check) };
    let rt = Runtime::builder().workers(2).stack_size(1 << 20).build().expect("runtime");
    let t0 = Instant::now();
    let (mut late, trees) = rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let sleeper = usurp::spawn(move || {
            let mut late = Vec::with_capacity(20_000);
            while !s2.load(Ordering::Relaxed) {
                let t = Instant::now();
                usurp::sleep(Duration::from_millis(1));
                late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            late
        });
        let churn = usurp::spawn(move || {
            let long = create(20);
            let t = Instant::now();
            let mut n = 0usize;
            while t.elapsed() < Duration::from_secs_f64(secs) {
                assert_eq!(check(create(18)), (1 << 19) - 1);
                n += 1;
            }
            assert_eq!(check(long), (1 << 21) - 1);
            n
        });
        let n = churn.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (sleeper.join().unwrap(), n)
    });
    let wall = t0.elapsed();
    late.sort();
    let st = rt.stats();
    println!(
        "usurp sleeper beside binary-trees churn{}: {} sleeps, lateness p50 {:.3} / p99 {:.3} / max {:.3} ms; \
         {trees} depth-18 trees in {:.1} s",
        if preemptible { " (preemptible)" } else { "" },
        late.len(),
        ms(pct(&late, 50.0)),
        ms(pct(&late, 99.0)),
        ms(pct(&late, 100.0)),
        wall.as_secs_f64(),
    );
    println!(
        "  gc: {} cycles, stops p50 {:.3} / p99 {:.3} / max {:.3} ms, total {:.1} ms ({:.1}% of wall), concurrent mark {:.1} s",
        st.gc.cycles,
        ms(st.gc.pause_percentile(50.0)),
        ms(st.gc.pause_percentile(99.0)),
        ms(st.gc.pause_percentile(100.0)),
        ms(st.gc.total_pause),
        100.0 * st.gc.total_pause.as_secs_f64() / wall.as_secs_f64(),
        st.gc.total_concurrent_mark.as_secs_f64(),
    );
}
