//! Family 2, GC structures: linked lists (`gc_type!` structs), binary trees
//! and hash tables (run-time descriptors), checksummed when built and
//! re-verified after every collection the task observes; some reached
//! through a `Root`, the rest only from the task's stack and registers.

use super::coordinator::{bump, Ctx, TaskResult};
use super::rng::{mix, Rng};
use super::Kind;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use usurp::gc::{self, gc_type, Descriptor, Gc, GcRef, Heap, Member};
use usurp::checkpoint;

/// A list node: a `gc_type!` struct with a `Member` field.
#[repr(C)]
struct ListNode {
    next: Member<ListNode>,
    value: u64,
}
gc_type!(ListNode { next });

/// Descriptors built at run time, as a VM builds its classes.
pub(crate) struct Descs {
    /// Tree node: [left, right, value].
    pub(crate) tree: &'static Descriptor,
    /// Hash-table entry: [next, key, value].
    pub(crate) entry: &'static Descriptor,
    /// An array of GC pointers (buckets, pools, slots).
    pub(crate) ptrs: &'static Descriptor,
    /// A pointer-free leaf: [id, pad].
    pub(crate) leaf: &'static Descriptor,
    /// Pointer-free word arrays (garbage).
    pub(crate) words: &'static Descriptor,
}

pub(crate) fn descs() -> &'static Descs {
    static D: OnceLock<Descs> = OnceLock::new();
    D.get_or_init(|| Descs {
        tree: Descriptor::builder(3).pointer_at(0).pointer_at(1).name("stress.Tree").build().expect("tree"),
        entry: Descriptor::builder(3).pointer_at(0).name("stress.Entry").build().expect("entry"),
        ptrs: Descriptor::array_builder(1).pointer_at(0).name("stress.Ptrs").build().expect("ptrs"),
        leaf: Descriptor::builder(2).name("stress.Leaf").build().expect("leaf"),
        words: Descriptor::array_builder(1).name("stress.Words").build().expect("words"),
    })
}

/// Allocates and drops some garbage: a short list and a word array.
fn churn(rng: &mut Rng) {
    let mut head: Option<Gc<ListNode>> = None;
    for i in 0..rng.range(8, 64) {
        head = Some(Gc::new(ListNode { next: Member::new(head), value: i as u64 }));
    }
    std::hint::black_box(head);
    let w = gc::alloc_array(descs().words, rng.range(1, 512));
    w.set_word(1, 42);
    std::hint::black_box(w);
}

fn build_list(rng: &mut Rng, n: usize) -> (Gc<ListNode>, u64) {
    let mut head = Gc::new(ListNode { next: Member::new(None), value: rng.next() });
    let mut sum = mix(head.value);
    for i in 1..n {
        let v = rng.next();
        head = Gc::new(ListNode { next: Member::new(Some(head)), value: v });
        sum = sum.wrapping_add(mix(v ^ i as u64));
        if i % 64 == 0 {
            checkpoint();
        }
    }
    (head, sum)
}

/// (length, checksum) of a list built by `build_list`.
fn list_sum(head: Gc<ListNode>, n: usize) -> (usize, u64) {
    let mut k = 0;
    let mut sum = 0u64;
    let mut cur = Some(head);
    while let Some(node) = cur {
        if k >= n {
            return (k + 1, sum);
        }
        let idx = (n - 1 - k) as u64;
        sum = sum.wrapping_add(if idx == 0 { mix(node.value) } else { mix(node.value ^ idx) });
        k += 1;
        cur = node.next.get();
    }
    (k, sum)
}

fn tree_combine(v: u64, l: u64, r: u64) -> u64 {
    mix(v ^ l.rotate_left(17)) ^ mix(r.wrapping_add(0x5555))
}

fn build_tree(rng: &mut Rng, depth: u32) -> (GcRef, u64) {
    let d = descs();
    let n = gc::alloc(d.tree);
    let v = rng.next();
    n.set_word(2, v as usize);
    if depth == 0 {
        return (n, mix(v));
    }
    let (l, hl) = build_tree(rng, depth - 1);
    n.set_ptr(0, Some(l));
    let (r, hr) = build_tree(rng, depth - 1);
    n.set_ptr(1, Some(r));
    if depth == 4 {
        checkpoint();
    }
    (n, tree_combine(v, hl, hr))
}

/// The checksum of a tree of `depth`, or a description of its broken shape.
fn tree_sum(n: GcRef, depth: u32) -> Result<u64, String> {
    if !std::ptr::eq(n.descriptor(), descs().tree) {
        return Err(format!("node {n:?} has descriptor {}", n.descriptor().name()));
    }
    let v = n.word(2) as u64;
    match (n.ptr(0), n.ptr(1), depth) {
        (None, None, 0) => Ok(mix(v)),
        (Some(l), Some(r), d) if d > 0 => Ok(tree_combine(v, tree_sum(l, d - 1)?, tree_sum(r, d - 1)?)),
        (l, r, d) => Err(format!("node {n:?} at height {d} has children {l:?}, {r:?}")),
    }
}

fn bucket(key: u64, nb: usize) -> usize {
    (mix(key) % nb as u64) as usize
}

fn entry_sum(key: u64, val: u64) -> u64 {
    mix(key ^ mix(val))
}

fn table_insert(t: GcRef, nb: usize, key: u64, val: u64) {
    let e = gc::alloc(descs().entry);
    e.set_word(1, key as usize);
    e.set_word(2, val as usize);
    let b = 1 + bucket(key, nb);
    e.set_ptr(0, t.ptr(b));
    t.set_ptr(b, Some(e));
}

fn table_lookup(t: GcRef, nb: usize, key: u64) -> Option<u64> {
    let mut cur = t.ptr(1 + bucket(key, nb));
    while let Some(e) = cur {
        if e.word(1) as u64 == key {
            return Some(e.word(2) as u64);
        }
        cur = e.ptr(0);
    }
    None
}

fn table_remove(t: GcRef, nb: usize, key: u64) -> bool {
    let b = 1 + bucket(key, nb);
    let mut prev: Option<GcRef> = None;
    let mut cur = t.ptr(b);
    while let Some(e) = cur {
        if e.word(1) as u64 == key {
            match prev {
                None => t.set_ptr(b, e.ptr(0)),
                Some(p) => p.set_ptr(0, e.ptr(0)),
            }
            return true;
        }
        prev = Some(e);
        cur = e.ptr(0);
    }
    false
}

/// (entries, checksum) of a table.
fn table_sum(t: GcRef, nb: usize) -> (usize, u64) {
    let mut n = 0;
    let mut sum = 0u64;
    for b in 0..nb {
        let mut cur = t.ptr(1 + b);
        while let Some(e) = cur {
            n += 1;
            sum = sum.wrapping_add(entry_sum(e.word(1) as u64, e.word(2) as u64));
            cur = e.ptr(0);
        }
    }
    (n, sum)
}

/// One structure under test and what it must look like.
enum Structure {
    List { head: Gc<ListNode>, n: usize, sum: u64 },
    Tree { root: GcRef, depth: u32, sum: u64 },
    Table { t: GcRef, nb: usize, n: usize, sum: u64, keys: Vec<(u64, u64)> },
}

impl Structure {
    fn build(kind: Kind, rng: &mut Rng) -> Structure {
        match kind {
            Kind::Lists => {
                let n = rng.range(100, 3000);
                let (head, sum) = build_list(rng, n);
                Structure::List { head, n, sum }
            }
            Kind::Trees => {
                let depth = rng.range(6, 13) as u32;
                let (root, sum) = build_tree(rng, depth);
                Structure::Tree { root, depth, sum }
            }
            _ => {
                let nb = rng.range(16, 512);
                let t = gc::alloc_array(descs().ptrs, nb);
                let n = rng.range(nb, 4 * nb);
                let mut keys = Vec::with_capacity(n);
                let mut sum = 0u64;
                for i in 0..n {
                    let (k, v) = (rng.next(), rng.next());
                    table_insert(t, nb, k, v);
                    keys.push((k, v));
                    sum = sum.wrapping_add(entry_sum(k, v));
                    if i % 64 == 0 {
                        checkpoint();
                    }
                }
                Structure::Table { t, nb, n, sum, keys }
            }
        }
    }

    /// The GC reference of the whole structure (for a `Root`).
    fn handle(&self) -> GcRef {
        match self {
            Structure::List { head, .. } => head.raw(),
            Structure::Tree { root, .. } => *root,
            Structure::Table { t, .. } => *t,
        }
    }

    /// Re-points the structure at `r` (the same object, read back from a Root).
    fn reattach(&mut self, r: GcRef) {
        match self {
            Structure::List { head, .. } => {
                if let Some(g) = Gc::from_ref(r) {
                    *head = g;
                }
            }
            Structure::Tree { root, .. } => *root = r,
            Structure::Table { t, .. } => *t = r,
        }
    }

    /// Checks the structure; `Err` describes what is wrong.
    fn verify(&self) -> Result<(), String> {
        match self {
            Structure::List { head, n, sum } => {
                let (k, s) = list_sum(*head, *n);
                if (k, s) != (*n, *sum) {
                    return Err(format!("list: {k} nodes, checksum {s:#x}; built {n} nodes, checksum {sum:#x}"));
                }
            }
            Structure::Tree { root, depth, sum } => {
                let s = tree_sum(*root, *depth)?;
                if s != *sum {
                    return Err(format!("tree of height {depth}: checksum {s:#x}, built {sum:#x}"));
                }
            }
            Structure::Table { t, nb, n, sum, keys } => {
                let (k, s) = table_sum(*t, *nb);
                if (k, s) != (*n, *sum) {
                    return Err(format!("table: {k} entries, checksum {s:#x}; expected {n}, {sum:#x}"));
                }
                for &(key, v) in keys.iter().step_by(7) {
                    if table_lookup(*t, *nb, key) != Some(v) {
                        return Err(format!("table: key {key:#x} lost or wrong"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A mutation that keeps the expected checksum in step (tables: delete
    /// and re-insert a key; lists and trees are immutable once built).
    fn mutate(&mut self, rng: &mut Rng) {
        if let Structure::Table { t, nb, n, sum, keys } = self {
            if keys.is_empty() {
                return;
            }
            let i = rng.range(0, keys.len());
            let (k, v) = keys.swap_remove(i);
            if table_remove(*t, *nb, k) {
                *n -= 1;
                *sum = sum.wrapping_sub(entry_sum(k, v));
            }
            let (k2, v2) = (rng.next(), rng.next());
            table_insert(*t, *nb, k2, v2);
            keys.push((k2, v2));
            *n += 1;
            *sum = sum.wrapping_add(entry_sum(k2, v2));
        }
    }
}

pub(crate) fn gc_structures(ctx: &Ctx, kind: Kind, seed: u64) -> TaskResult {
    let heap = Heap::current().expect("usurp-stress: a GC task runs on a thread without a heap");
    let mut rng = Rng::new(seed);
    let mut round = 0u64;
    while !ctx.stopped() {
        round += 1;
        let mut s = Structure::build(kind, &mut rng);
        bump(&ctx.c.structures, 1);
        ctx.progress(kind);
        let mut seen = ctx.gc_cycles.load(Ordering::Relaxed);
        // Every third structure is also held in a Root and reached through it.
        let root = (round % 3 == 0).then(|| heap.add_root(Some(s.handle())));
        let check = |s: &mut Structure| {
            if let Some(r) = &root {
                match r.get() {
                    Some(h) => s.reattach(h),
                    None => ctx.fail(&ctx.c.gc_checksum_failures, || "a Root lost its object".into()),
                }
            }
            bump(&ctx.c.verifications, 1);
            if let Err(e) = s.verify() {
                ctx.fail(&ctx.c.gc_checksum_failures, || e);
            }
        };
        check(&mut s);
        // Keep it alive while allocating garbage; re-verify after every
        // collection observed.
        for step in 0..rng.range(20, 200) {
            if ctx.stopped() {
                break;
            }
            churn(&mut rng);
            if step % 8 == 0 {
                s.mutate(&mut rng);
            }
            let now = ctx.gc_cycles.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                check(&mut s);
            }
            checkpoint();
        }
        check(&mut s);
        if round % 16 == 0 {
            heap.collect();
            bump(&ctx.c.explicit_collections, 1);
            check(&mut s);
        }
        drop(root);
    }
    TaskResult::default()
}
