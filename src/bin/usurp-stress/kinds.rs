//! The task kinds of usurp-stress, how many of each run, and their checks.
//!
//! Every kind loops until the coordinator sets `Ctx::stop`, counts its work
//! in `Ctx::c`, and counts every failed check (a wrong register, a wrong
//! checksum, a wrong value read back through a barrier-written field, a
//! message out of order, a broken mutex invariant) instead of panicking, so
//! that one run reports all of them. The first few failures of each kind are
//! also described on stderr.
//!
//! GC structures are referenced only from task stacks and registers (scanned
//! conservatively) or, for every third structure a task builds, from a
//! [`Root`](usurp::gc::Root) through which the task reaches it afterwards.
//! No GC pointer is ever kept in Rust heap memory (a `Vec`), which the
//! collector does not scan.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use usurp::gc::{self, gc_type, Descriptor, Gc, GcRef, Heap, Member};
use usurp::{checkpoint, task, yield_now, Mutex};

#[cfg(target_arch = "aarch64")]
pub use usurp_arch_aarch64::regcheck;
#[cfg(target_arch = "x86_64")]
pub use usurp_arch_x86_64::regcheck;

/// The kinds, in the order tasks are dealt out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `regcheck::register_loop` in preemptible assembly.
    Registers,
    /// Linked lists of `gc_type!` nodes.
    Lists,
    /// Binary trees with a run-time descriptor.
    Trees,
    /// Chained hash tables: a pointer array of buckets, run-time entries.
    Tables,
    /// Pointer stores through the write barrier in a hot loop.
    Barrier,
    /// Channel ping-pong (one pair = two tasks).
    PingPong,
    /// Mutex contention (groups of up to four).
    Mutex,
    /// 1 ms sleepers recording their wake latency.
    Sleepers,
    /// `blocking(|| std::thread::sleep(1 ms))`.
    Blocking,
}

/// Dealing order; every kind gets a task before any gets a second.
pub const KINDS: [Kind; 9] = [
    Kind::Registers,
    Kind::Lists,
    Kind::Trees,
    Kind::Tables,
    Kind::Barrier,
    Kind::PingPong,
    Kind::Mutex,
    Kind::Sleepers,
    Kind::Blocking,
];

impl Kind {
    /// A short name (task names, the summary).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Registers => "register loops",
            Kind::Lists => "GC lists",
            Kind::Trees => "GC trees",
            Kind::Tables => "GC hash tables",
            Kind::Barrier => "barrier hammers",
            Kind::PingPong => "ping-pong tasks",
            Kind::Mutex => "mutex contenders",
            Kind::Sleepers => "sleepers",
            Kind::Blocking => "blocking callers",
        }
    }
    /// The short name used by `--kinds` and in task names.
    pub fn task_name(self) -> &'static str {
        match self {
            Kind::Registers => "regs",
            Kind::Lists => "gc-list",
            Kind::Trees => "gc-tree",
            Kind::Tables => "gc-table",
            Kind::Barrier => "barrier",
            Kind::PingPong => "pingpong",
            Kind::Mutex => "mutex",
            Kind::Sleepers => "sleeper",
            Kind::Blocking => "blocking",
        }
    }
    fn units(self) -> usize {
        if self == Kind::PingPong {
            2
        } else {
            1
        }
    }
}

/// The value of `--kinds`.
#[derive(Debug, Clone)]
pub struct KindList(pub Vec<Kind>);

/// Parses a `--kinds` value: comma-separated short names.
pub fn parse_kinds(s: &str) -> Result<KindList, String> {
    s.split(',')
        .map(|w| {
            let w = w.trim();
            KINDS.iter().copied().find(|k| k.task_name() == w).ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|k| k.task_name()).collect();
                format!("unknown kind {w:?} (kinds: {})", names.join(", "))
            })
        })
        .collect::<Result<Vec<Kind>, String>>()
        .map(KindList)
}

/// How many tasks of each kind run (indexed like [`KINDS`]).
#[derive(Debug, Clone)]
pub struct Plan {
    pub counts: [usize; KINDS.len()],
}

impl Plan {
    /// Deals `total` tasks over the kinds in `only` (all if empty)
    /// round-robin (a ping-pong pair takes two; it is skipped when only one
    /// task is left, and then gets none if it is the only kind).
    pub fn new(total: usize, only: &[Kind]) -> Plan {
        let mut counts = [0; KINDS.len()];
        let mut left = total;
        let mut i = 0;
        let enabled = |k: Kind| only.is_empty() || only.contains(&k);
        if only == [Kind::PingPong] {
            left -= left % 2;
        }
        while left > 0 {
            let k = KINDS[i % KINDS.len()];
            if enabled(k) && k.units() <= left {
                counts[i % KINDS.len()] += k.units();
                left -= k.units();
            }
            i += 1;
        }
        Plan { counts }
    }
    /// Tasks of kind `k`.
    #[cfg(test)]
    pub fn count(&self, k: Kind) -> usize {
        self.counts[KINDS.iter().position(|&x| x == k).unwrap_or(0)]
    }
    /// All tasks.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }
}

/// Work and failure counters, shared by all tasks.
#[derive(Default)]
pub struct Counters {
    pub reg_iterations: AtomicU64,
    pub reg_mismatches: AtomicU64,
    pub gc_checksum_failures: AtomicU64,
    pub barrier_failures: AtomicU64,
    pub channel_failures: AtomicU64,
    pub mutex_failures: AtomicU64,
    pub structures: AtomicU64,
    pub verifications: AtomicU64,
    pub explicit_collections: AtomicU64,
    pub barrier_stores: AtomicU64,
    pub pingpongs: AtomicU64,
    pub mutex_sections: AtomicU64,
    pub sleeps: AtomicU64,
    pub blocking_calls: AtomicU64,
    pub live_tasks: AtomicU64,
    /// Units of work done per kind (indexed like [`KINDS`]): a kind whose
    /// tasks did nothing during the whole run was starved.
    pub progress: [AtomicU64; KINDS.len()],
    /// Failure descriptions printed so far (capped).
    reported: AtomicU64,
}

/// State shared by the coordinator, the tasks and the progress thread.
pub struct Ctx {
    pub seed: u64,
    /// Set when the run's time is up: every task finishes its current step.
    pub stop: AtomicBool,
    /// Set when every task has been joined (ends the progress thread).
    pub done: AtomicBool,
    /// GC cycles completed, refreshed by the progress thread every 10 ms:
    /// GC tasks re-verify their structures whenever it changes.
    pub gc_cycles: AtomicU64,
    pub c: Counters,
}

impl Ctx {
    pub fn new(seed: u64) -> Arc<Ctx> {
        Arc::new(Ctx {
            seed,
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
            gc_cycles: AtomicU64::new(0),
            c: Counters::default(),
        })
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Counts a failure and describes the first 20 on stderr.
    fn fail(&self, counter: &AtomicU64, what: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.c.reported.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("\nusurp-stress: FAILURE in task {}: {}", task::name().unwrap_or_default(), what());
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Ctx {
    /// Counts one unit of progress of `kind`.
    fn progress(&self, kind: Kind) {
        if let Some(i) = KINDS.iter().position(|&k| k == kind) {
            bump(&self.c.progress[i], 1);
        }
    }

    /// The kinds that had tasks in `plan` but made no progress at all.
    pub fn starved(&self, plan: &Plan) -> Vec<Kind> {
        KINDS
            .iter()
            .enumerate()
            .filter(|&(i, _)| plan.counts[i] > 0 && self.c.progress[i].load(Ordering::SeqCst) == 0)
            .map(|(_, &k)| k)
            .collect()
    }
}

/// What the coordinator gathers from the tasks.
#[derive(Default)]
pub struct Outcome {
    /// Every sleeper's lateness (actual − requested sleep), in nanoseconds.
    pub wake_latency_ns: Vec<u64>,
    /// Tasks that panicked: "name: message".
    pub panics: Vec<String>,
}

/// What one task returns.
#[derive(Default)]
struct TaskResult {
    latencies: Vec<u64>,
    sections: u64,
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// A 64-bit mixer (splitmix64's finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A warning if the register checker's code is not where the preemption
/// engine accepts PCs (then register loops are never preempted
/// asynchronously and check little).
pub fn regcheck_warning() -> Option<String> {
    let (lo, hi) = regcheck::code_range();
    for pc in [lo, hi - 1] {
        match usurp::preempt::pc_status(pc) {
            usurp::preempt::PcStatus::Preemptible { .. } => {}
            s => return Some(format!("register-loop code at {pc:#x} is {s:?}, not preemptible")),
        }
    }
    None
}

/// Spawns the plan's tasks, lets them run for `duration`, stops and joins
/// them, and runs the end-of-run checks (mutex totals).
pub fn run_all(ctx: &Arc<Ctx>, plan: &Plan, duration: Duration) -> Outcome {
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    for (ki, &kind) in KINDS.iter().enumerate() {
        let n = plan.counts[ki];
        match kind {
            Kind::PingPong => {
                for p in 0..n / 2 {
                    let (tx_ab, rx_ab) = usurp::channel::<u64>();
                    let (tx_ba, rx_ba) = usurp::channel::<u64>();
                    let c = ctx.clone();
                    handles.push(spawn(kind, 2 * p, usize::MAX, move || ping(&c, tx_ab, rx_ba)));
                    let c = ctx.clone();
                    handles.push(spawn(kind, 2 * p + 1, usize::MAX, move || pong(&c, rx_ab, tx_ba)));
                }
            }
            Kind::Mutex => {
                for g in 0..n.div_ceil(4) {
                    let m = Arc::new(Mutex::new([0u64; 2]));
                    groups.push(m.clone());
                    for i in 4 * g..(4 * g + 4).min(n) {
                        let (c, m) = (ctx.clone(), m.clone());
                        handles.push(spawn(kind, i, g, move || contend(&c, &m)));
                    }
                }
            }
            _ => {
                for i in 0..n {
                    let c = ctx.clone();
                    handles.push(spawn(kind, i, usize::MAX, move || run_kind(&c, kind, i)));
                }
            }
        }
    }
    usurp::sleep(duration);
    ctx.stop.store(true, Ordering::SeqCst);
    let mut out = Outcome::default();
    let mut sections = vec![0u64; groups.len()];
    for (name, group, h) in handles {
        match h.join() {
            Ok(r) => {
                out.wake_latency_ns.extend(r.latencies);
                if let Some(s) = sections.get_mut(group) {
                    *s += r.sections;
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".into());
                out.panics.push(format!("{name}: {msg}"));
            }
        }
    }
    for (g, m) in groups.iter().enumerate() {
        let v = *m.lock();
        if v[0] != v[1] || v[0] != sections[g] {
            ctx.fail(&ctx.c.mutex_failures, || {
                format!("mutex group {g}: counters {v:?}, sections counted by its tasks {}", sections[g])
            });
        }
    }
    out
}

type Handle = (String, usize, usurp::JoinHandle<TaskResult>);

fn spawn(kind: Kind, i: usize, group: usize, f: impl FnOnce() -> TaskResult + Send + 'static) -> Handle {
    let name = format!("{}-{i}", kind.task_name());
    let h = task::Builder::new()
        .name(name.clone())
        .spawn(f)
        .unwrap_or_else(|e| panic!("usurp-stress: cannot spawn task {name}: {e}"));
    (name, group, h)
}

fn run_kind(ctx: &Ctx, kind: Kind, i: usize) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let seed = ctx.seed ^ mix((i as u64) << 8 | kind as u64);
    let r = match kind {
        Kind::Registers => registers(ctx, seed),
        Kind::Lists | Kind::Trees | Kind::Tables => gc_structures(ctx, kind, seed),
        Kind::Barrier => barrier(ctx, seed),
        Kind::Sleepers => sleeper(ctx),
        Kind::Blocking => blocker(ctx),
        Kind::PingPong | Kind::Mutex => TaskResult::default(),
    };
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    r
}

// ---- register loops ------------------------------------------------------------

/// Iterations per `register_loop` call: about a millisecond natively, so a
/// call spans several quanta at 100 µs and the stop flag is seen soon.
const REG_ITERS: u64 = 50_000;

fn registers(ctx: &Ctx, seed: u64) -> TaskResult {
    let mut k = 0u64;
    while !ctx.stopped() {
        let m = regcheck::register_loop(seed.wrapping_add(k), REG_ITERS);
        if m != 0 {
            ctx.fail(&ctx.c.reg_mismatches, || format!("{m} register mismatches in {REG_ITERS} iterations"));
            // fail() counted one; count the rest.
            bump(&ctx.c.reg_mismatches, m - 1);
        }
        bump(&ctx.c.reg_iterations, REG_ITERS);
        ctx.progress(Kind::Registers);
        k += 1;
    }
    TaskResult::default()
}

// ---- GC structures -------------------------------------------------------------

/// A list node: a `gc_type!` struct with a `Member` field.
#[repr(C)]
struct ListNode {
    next: Member<ListNode>,
    value: u64,
}
gc_type!(ListNode { next });

/// A ring cell for typed barrier stores (`Member::set`).
#[repr(C)]
struct Cell {
    next: Member<Cell>,
    id: u64,
}
gc_type!(Cell { next });

/// Descriptors built at run time, as a VM builds its classes.
struct Descs {
    /// Tree node: [left, right, value].
    tree: &'static Descriptor,
    /// Hash-table entry: [next, key, value].
    entry: &'static Descriptor,
    /// An array of GC pointers (buckets, pools, slots).
    ptrs: &'static Descriptor,
    /// A pointer-free leaf: [id, pad].
    leaf: &'static Descriptor,
    /// Pointer-free word arrays (garbage).
    words: &'static Descriptor,
}

fn descs() -> &'static Descs {
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

fn gc_structures(ctx: &Ctx, kind: Kind, seed: u64) -> TaskResult {
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

// ---- barrier hammering ---------------------------------------------------------

const POOL: usize = 64;
const SLOTS: usize = 256;
const CELLS: usize = 32;

fn barrier(ctx: &Ctx, seed: u64) -> TaskResult {
    let d = descs();
    let mut rng = Rng::new(seed);
    let new_leaf = |id: usize| {
        let l = gc::alloc(d.leaf);
        l.set_word(0, id);
        l
    };
    let pool = gc::alloc_array(d.ptrs, POOL);
    for j in 0..POOL {
        pool.set_ptr(1 + j, Some(new_leaf(j)));
    }
    let slots = gc::alloc_array(d.ptrs, SLOTS);
    let cells = gc::alloc_array(d.ptrs, CELLS);
    for j in 0..CELLS {
        let c = Gc::new(Cell { next: Member::new(None), id: j as u64 });
        cells.set_ptr(1 + j, Some(c.raw()));
    }
    let cell = |j: usize| -> Option<Gc<Cell>> { cells.ptr(1 + j).and_then(Gc::from_ref) };
    let mut shadow = [usize::MAX; SLOTS];
    let mut cell_shadow = [u64::MAX; CELLS];
    while !ctx.stopped() {
        for _ in 0..4096 {
            let (i, j) = (rng.range(0, SLOTS), rng.range(0, POOL));
            slots.set_ptr(1 + i, pool.ptr(1 + j));
            shadow[i] = j;
            let (a, b) = (rng.range(0, CELLS), rng.range(0, CELLS));
            if let (Some(ca), Some(cb)) = (cell(a), cell(b)) {
                ca.next.set(Some(cb));
                cell_shadow[a] = b as u64;
            }
        }
        bump(&ctx.c.barrier_stores, 2 * 4096);
        ctx.progress(Kind::Barrier);
        // A fresh leaf with the same id replaces a pool entry: slots may
        // point to old or new leaves, both with id j.
        let j = rng.range(0, POOL);
        pool.set_ptr(1 + j, Some(new_leaf(j)));
        checkpoint();
        for (i, &want) in shadow.iter().enumerate() {
            let got = slots.ptr(1 + i).map_or(usize::MAX, |l| l.word(0));
            if got != want {
                ctx.fail(&ctx.c.barrier_failures, || format!("slot {i} holds leaf {got}, stored {want}"));
            }
        }
        for (a, &want) in cell_shadow.iter().enumerate() {
            let got = cell(a).and_then(|c| c.next.get()).map_or(u64::MAX, |c| c.id);
            if got != want {
                ctx.fail(&ctx.c.barrier_failures, || format!("cell {a}.next is cell {got}, stored {want}"));
            }
        }
    }
    TaskResult::default()
}

// ---- channels, mutexes, sleepers, blocking -------------------------------------

fn ping(ctx: &Ctx, tx: usurp::Sender<u64>, rx: usurp::Receiver<u64>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut i = 0u64;
    while !ctx.stopped() {
        if tx.send(i).is_err() {
            ctx.fail(&ctx.c.channel_failures, || "pong hung up".into());
            break;
        }
        match rx.recv() {
            Ok(v) if v == i + 1 => {
                bump(&ctx.c.pingpongs, 1);
                ctx.progress(Kind::PingPong);
            }
            Ok(v) => ctx.fail(&ctx.c.channel_failures, || format!("sent {i}, got back {v}")),
            Err(_) => {
                ctx.fail(&ctx.c.channel_failures, || "pong hung up".into());
                break;
            }
        }
        i += 2;
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult::default()
}

fn pong(ctx: &Ctx, rx: usurp::Receiver<u64>, tx: usurp::Sender<u64>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut want = 0u64;
    // Ends when ping drops its sender.
    while let Ok(v) = rx.recv() {
        if v != want {
            ctx.fail(&ctx.c.channel_failures, || format!("expected {want}, received {v}"));
        }
        want = v + 2;
        if tx.send(v + 1).is_err() {
            break;
        }
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult::default()
}

fn contend(ctx: &Ctx, m: &Mutex<[u64; 2]>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut sections = 0u64;
    while !ctx.stopped() {
        {
            let mut g = m.lock();
            if g[0] != g[1] {
                let v = *g;
                ctx.fail(&ctx.c.mutex_failures, || format!("inside the lock: {v:?}"));
            }
            g[0] += 1;
            if sections % 8 == 0 {
                yield_now();
            }
            g[1] += 1;
        }
        sections += 1;
        bump(&ctx.c.mutex_sections, 1);
        ctx.progress(Kind::Mutex);
        if sections % 4 == 0 {
            yield_now();
        }
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult { sections, ..Default::default() }
}

const SLEEP: Duration = Duration::from_millis(1);

fn sleeper(ctx: &Ctx) -> TaskResult {
    let mut latencies = Vec::new();
    while !ctx.stopped() {
        let t0 = Instant::now();
        usurp::sleep(SLEEP);
        latencies.push(t0.elapsed().saturating_sub(SLEEP).as_nanos() as u64);
        bump(&ctx.c.sleeps, 1);
        ctx.progress(Kind::Sleepers);
    }
    TaskResult { latencies, ..Default::default() }
}

fn blocker(ctx: &Ctx) -> TaskResult {
    while !ctx.stopped() {
        usurp::blocking(|| std::thread::sleep(SLEEP));
        bump(&ctx.c.blocking_calls, 1);
        ctx.progress(Kind::Blocking);
        // `blocking` runs its closure in place (without a handoff) when the
        // worker holds tasks pinned by an async preemption; a loop of such
        // calls would never give the worker back. Poll like any cooperative
        // loop outside preemptible code.
        checkpoint();
    }
    TaskResult::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_deals_round_robin() {
        let p = Plan::new(64, &[]);
        assert_eq!(p.total(), 64);
        assert!(KINDS.iter().all(|&k| p.count(k) >= 6), "{p:?}");
        assert_eq!(p.count(Kind::PingPong) % 2, 0);
        let small = Plan::new(6, &[]);
        assert_eq!(small.total(), 6);
        assert_eq!(small.count(Kind::PingPong), 0);
        assert_eq!(small.count(Kind::Registers), 1);
        assert_eq!(Plan::new(1, &[]).total(), 1);
        let only = Plan::new(5, &[Kind::Sleepers, Kind::PingPong]);
        assert_eq!((only.count(Kind::Sleepers), only.count(Kind::PingPong), only.total()), (1, 4, 5));
        assert_eq!(Plan::new(5, &[Kind::PingPong]).total(), 4);
    }
}
