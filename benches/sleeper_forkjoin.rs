//! The issue-11 scenarios as a new user writes them (public API only), to run
//! beside the same program in Go (`benches/go/sleeper_forkjoin`, `go run .`):
//! (1) the main task builds and drops GC trees for 1 s in ordinary Rust code
//! while a task it spawned sleeps 1 ms in a loop: wake-ups completed; (2)
//! fork-join of two 500 ms halves: wall time. Two workers (Go: GOMAXPROCS=2).
//! `cargo bench --bench sleeper_forkjoin`.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::gc::{gc_type, Gc, Member};
use usurp::Runtime;

struct Node { left: Member<Node>, right: Member<Node> }
gc_type!(Node { left, right });
fn tree(d: u32) -> Gc<Node> {
    if d == 0 { Gc::new(Node { left: Member::new(None), right: Member::new(None) }) }
    else { let l = tree(d - 1); let r = tree(d - 1); Gc::new(Node { left: Member::new(Some(l)), right: Member::new(Some(r)) }) }
}
fn spin(d: Duration) -> u64 { let t = Instant::now(); let mut x = 0u64; while t.elapsed() < d { for i in 0..1000 { x = x.wrapping_add(i); } } x }

fn main() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let n = Arc::new(AtomicUsize::new(0));
        let (s2, n2) = (stop.clone(), n.clone());
        let h = usurp::spawn(move || while !s2.load(Ordering::Relaxed) { usurp::sleep(Duration::from_millis(1)); n2.fetch_add(1, Ordering::Relaxed); });
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) { std::hint::black_box(tree(14)); }
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        println!("spawned sleeper: {} wake-ups in 1 s", n.load(Ordering::Relaxed));
        let t = Instant::now();
        let h = usurp::spawn(|| spin(Duration::from_millis(500)));
        let a = spin(Duration::from_millis(500));
        let b = h.join().unwrap();
        std::hint::black_box(a ^ b);
        println!("fork-join of two 500 ms halves: {:.3} s", t.elapsed().as_secs_f64());
    });
}
