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
    let wall = t.elapsed().as_secs_f64();
    println!("30 loops: {wall:.3} s (sum {s})");
    // The process's CPU time (all threads) over the wall time: cores used
    // (goal >= 1.9 on 2 workers). Whether preempted loops may migrate: in a
    // `preemptible!` function that touches thread-locals they are pinned.
    // SAFETY: getrusage writes the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let cpu = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    let cores = (cpu(ru.ru_utime) + cpu(ru.ru_stime)) / wall;
    let pinned = usurp_sched::hooks::preemptible_fn_touches_tls(add_loop as fn(u64) -> u64 as usize);
    println!("cores used {cores:.2} (process CPU time / wall); preempted loops pinned to their thread: {pinned:?}");
}
