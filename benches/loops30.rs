//! The issue-11 seed program: 30 tasks, each a call-free loop of 1e8 additions
//! in `preemptible!` code, on 2 workers; run beside the same program in Go
//! (`benches/go/loops30`: `go run .`) under `/usr/bin/time` to compare wall time
//! and CPU use. `cargo bench --bench loops30`.
use usurp::{preemptible, Runtime};
preemptible! {
    fn add_loop(n: u64) -> u64 {
        let mut x = 0u64;
        let mut i = 0u64;
        while i < n {
            x = x.wrapping_add(i);
            // SAFETY: an empty asm statement; it only keeps LLVM from folding the loop.
            unsafe { std::arch::asm!("/* {0} */", inout(reg) x, options(nomem, nostack, preserves_flags)) };
            i += 1;
        }
        x
    }
}
fn main() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let t = std::time::Instant::now();
    let s: u64 = rt.block_on(|| {
        let hs: Vec<_> = (0..30).map(|_| usurp::spawn(|| add_loop(100_000_000))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).fold(0, u64::wrapping_add)
    });
    println!("30 loops: {:.3} s (sum {s})", t.elapsed().as_secs_f64());
}
