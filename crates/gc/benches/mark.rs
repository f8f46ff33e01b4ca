//! Marking cost of a value slot against a pointer slot (issue 14 goal:
//! at most 1.3x). A heap of pairs — one list of `N` two-word pairs, rooted
//! by one `Root` — is marked by full collections; the mark phase (one
//! marking thread, the world is just this thread) is timed as
//! this thread's CPU time for the cycle times the mark's share of the
//! pause (`CycleStats::mark / pause`), median of `RUNS`; the cases run interleaved
//! (pointer, values, pointer, values, pointer) and the best median of each
//! is shown.
//!
//! Cases, each on a heap of its own:
//! * `pointer`: `[car ptr, cdr ptr]`, untagged heap; car points at the
//!   previous pair (already marked when reached), cdr at the next pair.
//! * `value/low_bits(7,0)`, `value/low_bits(1,1)`, `value/nan_box(48)`:
//!   `[car value, cdr value]` holding the same pointers, encoded.
//! * `*, car immediate`: car is null (pointer case) / a fixnum-like
//!   immediate (value cases), so half the slots are skipped.
//!
//! `cargo bench -p usurp-gc --bench mark`.
//!
//! `cargo bench -p usurp-gc --bench mark -- tree [depth] [post] [headered]`
//! instead marks a binary tree of two-pointer nodes (binary-trees' node:
//! compact, 16 bytes, or with `headered` the 24-byte headered layout; default
//! depth 20: 2M objects) as a concurrent cycle does (the stepped mark:
//! atomic mark bits, the grey stack drained in slices), and prints the
//! drain's thread CPU time per object, median of `RUNS`, with the mark
//! loop's look-ahead (prefetch, off by default) off and on, interleaved.
//! The tree is allocated parent first, or with `post` children first (as
//! binary-trees allocates: the depth-first mark then walks memory
//! downwards). For instructions per object: `valgrind --tool=callgrind
//! --toggle-collect='*debug_mark_steps*' target/release/deps/mark-* tree
//! 18` (its Ir over `2 * RUNS` times the objects printed: both
//! settings).

use std::time::Duration;
use usurp_gc::internals::{set_batched_marks_for_tests, set_mark_lookahead_for_tests};
use usurp_gc::{alloc, Descriptor, Heap, HeapConfig, ValueEncoding};

const N: usize = 1 << 20;
const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This thread's CPU time (less disturbed than wall time by other
/// processes on a shared machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median mark time over `RUNS` full collections of a list of `N` pairs.
fn bench(enc: ValueEncoding, value: bool, car_immediate: bool) -> Duration {
    let heap = Heap::new(HeapConfig {
        max_heap: 1 << 30,
        gogc: None,
        mark_workers: Some(1),
        verify: false,
        trace: false,
        check_refs: false,
        value_encoding: enc,
        ..HeapConfig::default()
    })
    .expect("heap");
    let _g = heap.attach_thread().unwrap();
    let b = Descriptor::builder(2).name(if value { "vpair" } else { "ppair" });
    let d = if value { b.value_at(0).value_at(1) } else { b.pointer_at(0).pointer_at(1) }.build().unwrap();
    let root = heap.add_root(None);
    let mut prev: Option<usurp_gc::GcRef> = None;
    let mut first = None;
    // An immediate under `enc` (a fixnum-like word whose tag says "not a pointer").
    let imm = |i: usize| [(i << 4) | 1, i << 4, (i << 4) | (0x7ff8 << 48)].into_iter().find(|&w| enc.decode(w).is_none()).unwrap();
    for i in 0..N {
        let p = alloc(d);
        let prev_addr = prev.map_or(0, |r| r.addr());
        if value {
            let w = if car_immediate { imm(i) } else if prev_addr == 0 { 0 } else { enc.encode(prev_addr) };
            p.set_value(0, w);
        } else {
            p.set_ptr(0, if car_immediate { None } else { prev });
        }
        match prev {
            Some(q) if value => q.set_value(1, enc.encode(p.addr())),
            Some(q) => q.set_ptr(1, Some(p)),
            None => first = Some(p),
        }
        prev = Some(p);
    }
    root.set(first);
    heap.collect(); // warm up
    let mut marks = vec![];
    for _ in 0..RUNS {
        let c0 = thread_cpu();
        heap.collect();
        let cpu = thread_cpu() - c0;
        let st = heap.stats();
        let last = st.last.unwrap();
        assert!(last.live_objects >= N, "{} live", last.live_objects);
        assert_eq!(st.bad_values + st.bad_pointers, 0);
        // The mark's share of the cycle's CPU time (the cycle runs on this
        // thread; the mark is nearly all of it).
        let share = last.mark.as_secs_f64() / last.pause.as_secs_f64().max(1e-9);
        marks.push(cpu.mul_f64(share.min(1.0)));
    }
    median(marks)
}

/// Node count of a full binary tree of `depth`.
fn tree_nodes(depth: u32) -> usize {
    (1usize << (depth + 1)) - 1
}

/// A binary tree of `depth` of two-pointer nodes.
fn build_tree(d: &'static Descriptor, depth: u32, post: bool) -> usurp_gc::GcRef {
    if post {
        // Children first (binary-trees' `create`): a parent follows its
        // subtrees in memory.
        let kids = (depth > 0).then(|| (build_tree(d, depth - 1, post), build_tree(d, depth - 1, post)));
        let n = alloc(d);
        if let Some((l, r)) = kids {
            n.set_ptr(0, Some(l));
            n.set_ptr(1, Some(r));
        }
        return n;
    }
    let n = alloc(d);
    if depth > 0 {
        n.set_ptr(0, Some(build_tree(d, depth - 1, post)));
        n.set_ptr(1, Some(build_tree(d, depth - 1, post)));
    }
    n
}

/// The `tree` case: stepped (concurrent-style) marks of one binary tree,
/// with the mark loop's look-ahead and prefetch off and on, interleaved
/// (the same minutes of a shared machine): the median drain CPU of each.
fn bench_tree(depth: u32, post: bool, headered: bool) {
    let heap = Heap::new(HeapConfig {
        max_heap: 1 << 31,
        gogc: None,
        mark_workers: Some(1),
        verify: false,
        trace: false,
        check_refs: false,
        ..HeapConfig::default()
    })
    .expect("heap");
    let _g = heap.attach_thread().unwrap();
    let b = Descriptor::builder(2).name("node").pointer_at(0).pointer_at(1);
    let d = if headered { b } else { b.compact() }.build().unwrap();
    let size = d.object_bytes(0).unwrap();
    let root = heap.add_root(Some(build_tree(d, depth, post)));
    let n = tree_nodes(depth);
    heap.collect(); // warm up: every block swept, the tree marked once
    // (name, look-ahead, batched mark bits)
    let configs = [("atomic marks", false, false), ("batched marks (default)", false, true), ("batched + look-ahead", true, true)];
    let mut drains = [vec![], vec![], vec![]];
    for _ in 0..RUNS {
        for (k, &(_, ahead, batch)) in configs.iter().enumerate() {
            set_mark_lookahead_for_tests(ahead);
            set_batched_marks_for_tests(batch);
            heap.debug_begin_marking();
            let c0 = thread_cpu();
            while !heap.debug_mark_steps(usize::MAX) {}
            drains[k].push(thread_cpu() - c0);
            heap.debug_finish_marking();
            // (The stepped mark sets the heap's live bytes, not `last`.)
            let live = heap.stats().heap_live;
            assert!(live >= n * size, "{live} live bytes for {n} nodes");
        }
    }
    set_mark_lookahead_for_tests(false);
    set_batched_marks_for_tests(true);
    drop(root);
    for (k, &(name, _, _)) in configs.iter().enumerate() {
        let t = median(std::mem::take(&mut drains[k]));
        println!(
            "tree depth {depth}{} ({size}-byte {} nodes), {name:<24}: {n} objects, drain {:.2} ms, {:.2} ns/object",
            if post { " (post-order)" } else { "" },
            if headered { "headered" } else { "compact" },
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e9 / n as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if args.first().map(String::as_str) == Some("tree") {
        let flag = |f: &str| args.iter().skip(2).any(|a| a == f);
        bench_tree(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20), flag("post"), flag("headered"));
        return;
    }
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / N as f64;
    let cases = [
        ("value/low_bits(7,0)", ValueEncoding::low_bits(7, 0)),
        ("value/low_bits(1,1)", ValueEncoding::low_bits(1, 1)),
        ("value/nan_box(48)", ValueEncoding::nan_box(48, &[0xfffc, 0xfffd])),
    ];
    for car_immediate in [false, true] {
        let tail = if car_immediate { ", car immediate" } else { "" };
        // Interleaved, twice, best of each (a shared 2-core machine): the
        // pointer case before and after the value cases.
        let mut base = Duration::MAX;
        let mut best = [Duration::MAX; 3];
        for _ in 0..2 {
            base = base.min(bench(ValueEncoding::untagged(), false, car_immediate));
            for (k, (_, enc)) in cases.iter().enumerate() {
                best[k] = best[k].min(bench(*enc, true, car_immediate));
            }
        }
        base = base.min(bench(ValueEncoding::untagged(), false, car_immediate));
        println!("{:<36} {:8.2} ms  {:5.2} ns/pair", format!("pointer{tail}"), base.as_secs_f64() * 1e3, ns(base));
        for (k, (name, _)) in cases.iter().enumerate() {
            let t = best[k];
            println!(
                "{:<36} {:8.2} ms  {:5.2} ns/pair  {:4.2}x pointer",
                format!("{name}{tail}"),
                t.as_secs_f64() * 1e3,
                ns(t),
                t.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}
