//! The classifier property test at scale: 10^7 random inputs by default
//! (`cargo bench -p usurp-arch-x86_64 --bench classify_property [-- ROUNDS
//! [SEED]]`). Not run by CI (which runs 10^5 in `tests/classify_property.rs`).
//! Prints the verdict distribution, the count and the time.

#[path = "../tests/property/mod.rs"]
mod property;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x005E_ED0F_C1A5_51F1);
    let t0 = std::time::Instant::now();
    let seen = property::run(rounds, seed);
    let dt = t0.elapsed();
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    println!(
        "x86-64 classifier property: {rounds} random inputs (seed {seed:#x}) in {:.1} s, all properties held; \
         verdicts safe {} prologue {} epilogue {} undecodable {} syscall {}",
        dt.as_secs_f64(),
        seen[0],
        seen[1],
        seen[2],
        seen[3],
        seen[4]
    );
}
