//! Safe dereferences on a pointer chase, beside Go: build a linked list of
//! compact GC cells (default 1M), then sum it (default 50 rounds) through
//! `Gc<T>` derefs (two per cell: the value and the next link), each of
//! which checks that the handle names a live object of its type
//! (`crates/gc/src/refcheck.rs`, `is_live_as`), and once more through
//! `get_unchecked` (no check: what the check costs). Go's twin:
//! `benches/go/listwalk`. Both: `bash ci/listwalk.sh`.
//!
//! `cargo bench -p usurp --bench listwalk -- [cells] [rounds]`.

use std::time::Instant;
use usurp::gc::{gc_type, Gc, Member};

#[repr(C)]
struct Cell {
    next: Member<Cell>,
    val: usize,
}
gc_type!(compact Cell { next });

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let rt = usurp::Runtime::builder().workers(1).build().expect("runtime");
    let (checked, unchecked) = rt.block_on(move || {
        let mut head: Option<Gc<Cell>> = None;
        for i in 0..n {
            head = Some(Gc::new(Cell { next: Member::new(head), val: i }));
        }
        let t = Instant::now();
        let mut sum = 0usize;
        for _ in 0..rounds {
            let mut p = head;
            while let Some(c) = p {
                sum = sum.wrapping_add(c.val);
                p = c.next.get();
            }
        }
        let checked = (t.elapsed(), sum);
        let t = Instant::now();
        let mut sum = 0usize;
        for _ in 0..rounds {
            let mut p = head;
            while let Some(c) = p {
                // SAFETY: every cell is reachable from `head`, on this stack.
                let c = unsafe { c.get_unchecked() };
                sum = sum.wrapping_add(c.val);
                p = c.next.get();
            }
        }
        (checked, (t.elapsed(), sum))
    });
    assert_eq!(checked.1, unchecked.1);
    let per = |d: std::time::Duration| d.as_nanos() as f64 / (n * rounds) as f64;
    println!("usurp list walk, {n} cells x {rounds}: checked derefs {:.2} ns per cell, get_unchecked {:.2} ns per cell (sum {})", per(checked.0), per(unchecked.0), checked.1);
}
