//! Shared test helpers.
#![allow(dead_code)]

use std::sync::Arc;
use usurp_gc::{gc_type, Gc, GcRef, GcType, Heap, HeapConfig, Member, Root, ThreadWorld, World};

/// A binary-tree node: two pointer fields and a value.
#[repr(C)]
pub struct Node {
    pub left: Member<Node>,
    pub right: Member<Node>,
    pub val: usize,
}
gc_type!(Node { left, right });

/// A compact record with a raw word: 24 bytes, the class of a headered
/// 2-word object.
#[repr(C)]
pub struct CVal {
    pub next: Member<CVal>,
    pub a: usize,
    pub b: usize,
}
gc_type!(compact CVal { next });

/// Another compact type of the same size class as `CVal`.
#[repr(C)]
pub struct COther {
    pub x: usize,
    pub next: Member<COther>,
    pub y: usize,
}
gc_type!(compact COther { next });

/// The message of a caught panic (`String` or `&str` payload).
pub fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    match e.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default(),
    }
}

/// Runs `f`, returning its panic's message as the error.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(panic_message)
}

/// Silence the default panic hook's output for the expected panics: those
/// whose message names a `GcRef`, a stale `Gc<`, or any of `also`. Once
/// per test binary (the first call's `also` stays).
pub fn quiet_panics(also: &'static [&'static str]) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let m = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
            if !m.contains("GcRef") && !m.contains("stale Gc<") && !also.iter().any(|a| m.contains(a)) {
                prev(info);
            }
        }));
    });
}

pub fn node(val: usize, left: Option<Gc<Node>>, right: Option<Gc<Node>>) -> Gc<Node> {
    Gc::new(Node { left: Member::new(left), right: Member::new(right), val })
}

/// A config with pacing off and the verifier on (no env dependence).
pub fn config(max_heap: usize) -> HeapConfig {
    HeapConfig { max_heap, gogc: None, min_heap: 1 << 20, verify: true, ..HeapConfig::default() }
}

pub fn heap(max_heap: usize) -> Heap {
    heap_with(config(max_heap))
}

/// A heap of these tests: its World is [`TestWorld`].
pub fn heap_with(cfg: HeapConfig) -> Heap {
    Heap::with_world(cfg, std::sync::Arc::new(TestWorld)).expect("heap")
}

/// The World of these tests: stops nothing and scans nothing but the
/// collecting thread, like `SoloWorld`, but admits several (sequentially
/// used) attached threads and lets any thread collect, which `Heap::new`'s
/// SoloWorld refuses while a thread is attached. The tests need that to
/// check what a collection frees: they attach one thread, keep handles to
/// objects that should be garbage, and collect from a fresh thread
/// ([`collect_elsewhere`]) whose stack holds no stale copies.
pub struct TestWorld;

// SAFETY: the tests that use it touch the heap from one thread at a time:
// `on_other_thread` and `collect_elsewhere` run while the calling thread
// waits in `join`, and what the waiting thread holds unscanned is either
// rooted or garbage whose freeing the test checks (through `find_object`,
// `object_at` and the checked accessors, which never read freed memory).
unsafe impl usurp_gc::World for TestWorld {
    fn stop_the_world(&self) {}
    fn start_the_world(&self) {}
    fn for_each_conservative_range(&self, _f: &mut dyn FnMut(usize, usize)) {}
}

/// Build a list of `n` nodes with values 0..n (head has value n-1).
pub fn list(n: usize) -> Option<Gc<Node>> {
    let mut head: Option<Gc<Node>> = None;
    for i in 0..n {
        head = Some(node(i, head, None));
    }
    head
}

/// Check a list built by `list(n)`.
pub fn check_list(mut head: Option<Gc<Node>>, n: usize) {
    let mut expect = n;
    while let Some(h) = head {
        expect -= 1;
        assert_eq!(h.val, expect, "list corrupted");
        head = h.left.get();
    }
    assert_eq!(expect, 0, "list too short");
}

/// Build a full binary tree of `depth`.
pub fn tree(depth: usize) -> Gc<Node> {
    if depth == 0 {
        node(1, None, None)
    } else {
        let l = tree(depth - 1);
        let r = tree(depth - 1);
        node(depth, Some(l), Some(r))
    }
}

pub fn count(t: Gc<Node>) -> usize {
    1 + t.left.get().map_or(0, count) + t.right.get().map_or(0, count)
}

/// Allocate on a fresh attached thread (whose stack is never scanned once it
/// exits) and return what `f` computed: objects created there are garbage
/// unless `f` roots them.
pub fn on_other_thread<R: Send + 'static>(heap: &Heap, f: impl FnOnce(&Heap) -> R + Send + 'static) -> R {
    let h = heap.clone();
    std::thread::spawn(move || {
        let _g = h.attach_thread().unwrap();
        f(&h)
    })
    .join()
    .unwrap()
}

pub fn addr(r: GcRef) -> usize {
    r.addr()
}

/// Collect from a fresh thread. With the default `SoloWorld` only the
/// collecting thread's stack is scanned, so stale copies of addresses on the
/// test thread's stack cannot keep anything alive: "is it freed?" checks are
/// deterministic.
///
/// glibc caches the stacks of exited threads, and a reused stack holds stale
/// words of its previous thread in not-yet-written frame slots; every call
/// asks for a larger stack than any before ([`fresh_stack_size`]), which
/// glibc cannot serve from its cache, so the collecting thread's stack is
/// fresh (zero) memory.
pub fn collect_elsewhere(heap: &Heap) {
    let size = fresh_stack_size();
    let h = heap.clone();
    std::thread::Builder::new().stack_size(size).spawn(move || h.collect()).unwrap().join().unwrap();
}

/// Lazy-sweep scenario (tests/lazy_sweep.rs and its negative control): on a
/// heap with the background sweeper off, builds on another thread a dead
/// parent `p` (24-byte class) whose only reference goes to a dead child `c`
/// (48-byte class, in the first block, beside a rooted sibling), collects
/// (from a fresh thread: no stale stack word roots them), then allocates one
/// object of the child's class: that sweeps the child's block alone (the
/// first with room in that class) and reuses the child's slot, while the
/// parent's block stays unswept. Returns `(p, c, reused)` addresses.
pub fn lazy_sweep_scenario(h: &Heap) -> (usize, usize, GcRef) {
    use std::hint::black_box;
    use usurp_gc::{alloc, Descriptor};
    const X: usize = 0x5a5a_5a5a;
    let child: &'static Descriptor = Box::leak(Box::new(Descriptor::builder(5).name("Child").build().unwrap()));
    let parent: &'static Descriptor =
        Box::leak(Box::new(Descriptor::builder(2).pointer_at(0).name("Parent").build().unwrap()));
    let (px, cx) = on_other_thread(h, move |h| {
        let sibling = alloc(child);
        std::mem::forget(h.add_root(Some(sibling)));
        let c = alloc(child);
        let p = alloc(parent);
        p.set_ptr(0, Some(c));
        (p.addr() ^ X, c.addr() ^ X)
    });
    collect_elsewhere(h);
    let st = h.stats();
    assert_eq!(st.blocks_swept_background + st.blocks_swept_by_allocation, 0, "nothing swept yet");
    let reused = alloc(child);
    assert!(h.stats().blocks_swept_by_allocation >= 1);
    let (p, c) = (black_box(px) ^ X, black_box(cx) ^ X);
    assert_eq!(reused.addr(), c, "the freed child slot was reused");
    (p, c, reused)
}

/// Run the test `name` of the current test binary in a child process with
/// `key=val` in its environment (the test does its scenario when it sees the
/// variable) and return its output. For scenarios that must abort the
/// process. Under qemu without binfmt_misc the child starts through qemu.
#[allow(dead_code)]
pub fn run_child(name: &str, key: &str, val: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let args = [name, "--exact", "--nocapture", "--test-threads=1"];
    match std::process::Command::new(&exe).args(args).env(key, val).output() {
        Ok(o) if !(o.status.code() == Some(127) && o.stdout.is_empty() && o.stderr.is_empty()) => o,
        _ => {
            let qemu = format!("qemu-{}-static", std::env::consts::ARCH);
            std::process::Command::new(&qemu)
                .arg("-L")
                .arg(format!("/usr/{}-linux-gnu", std::env::consts::ARCH))
                .arg(&exe)
                .args(args)
                .env(key, val)
                .output()
                .unwrap()
        }
    }
}

/// A thread stack size larger than any this process asked for before through
/// this function: glibc serves a request from its cache of exited threads'
/// stacks only with a stack at least that large, so the new thread's stack
/// is fresh memory, free of stale words. One counter for every helper: with
/// two counters (collect_elsewhere's 4 MiB + n, collect_holding's 6 MiB + m)
/// a collect_elsewhere thread could get an exited collect_holding thread's
/// stack, whose stale words pointed into a heap reservation that a later
/// test's heap reused: objects that test expected freed were retained.
pub fn fresh_stack_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    (8 << 20) + N.fetch_add(1, Ordering::Relaxed) * (64 << 10)
}

/// Whether the object at `addr` still heads the list [`list`]`(len)` built
/// (values `len - 1` down to 0), read through `Heap::object_at` (checked:
/// a freed head reads as `false`, never as freed memory).
pub fn intact_list(h: &Heap, addr: usize, len: usize) -> bool {
    let Some(r) = h.object_at(addr) else { return false };
    let mut cur: Option<Gc<Node>> = Gc::from_ref(r);
    let mut expect = len;
    while let Some(n) = cur {
        if expect == 0 || n.val != expect - 1 {
            return false;
        }
        expect -= 1;
        cur = n.left.get();
    }
    expect == 0
}

/// What a test changes in a [`ThreadWorld`]: each hook runs on the thread
/// that made the World call, before (or instead of) the delegated call.
pub trait WorldHooks: Send + Sync {
    /// Before every `stop_the_world` (a panic here abandons the call before
    /// anything is stopped, as a faulty VM World would).
    fn before_stop(&self) {}
    /// Answers `background_collection`; `inner` is the ThreadWorld's answer.
    fn background_collection(&self, inner: &ThreadWorld) -> bool {
        inner.background_collection()
    }
}

/// A [`ThreadWorld`] behind [`WorldHooks`]: every other `World` call is the
/// ThreadWorld's own.
pub struct HookedWorld<H> {
    pub inner: Arc<ThreadWorld>,
    pub hooks: H,
}

// SAFETY: every call is ThreadWorld's, whose contract holds (see its impl).
// The hooks may panic before a delegated `stop_the_world` (nothing half
// done, which the heap must survive as it survives any World panic) or
// answer `background_collection` either way, which is allowed at any time.
unsafe impl<H: WorldHooks> World for HookedWorld<H> {
    fn stop_the_world(&self) {
        self.hooks.before_stop();
        self.inner.stop_the_world()
    }
    fn start_the_world(&self) {
        self.inner.start_the_world()
    }
    fn for_each_conservative_range(&self, f: &mut dyn FnMut(usize, usize)) {
        self.inner.for_each_conservative_range(f)
    }
    fn run_parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.inner.run_parallel(n, f)
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn blocking(&self, f: &mut dyn FnMut()) {
        self.inner.blocking(f)
    }
    fn background_collection(&self) -> bool {
        self.hooks.background_collection(&self.inner)
    }
    fn caller_holds_stop(&self) -> bool {
        self.inner.caller_holds_stop()
    }
    fn may_attach(&self) -> Result<(), &'static str> {
        self.inner.may_attach()
    }
    fn thread_attached(&self) {
        self.inner.thread_attached()
    }
    fn thread_detached(&self) {
        self.inner.thread_detached()
    }
}

/// Two heaps `a` and `b`, and an object of `a` (made by `make` on a thread
/// attached to `a`, rooted there): what each test offers to heap `b`.
pub fn with_foreign<T: GcType + Send + 'static>(make: fn() -> T) -> (Heap, Heap, Gc<T>, Root) {
    let cfg = || HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() };
    let a = Heap::new(cfg()).unwrap();
    let b = Heap::new(cfg()).unwrap();
    let a2 = a.clone();
    let (x, root) = std::thread::spawn(move || {
        let _g = a2.attach_thread().unwrap();
        let x = Gc::new(make());
        (x, a2.add_root(Some(x.raw())))
    })
    .join()
    .unwrap();
    (a, b, x, root)
}
