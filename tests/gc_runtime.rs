//! The GC on real tasks (issue 4): conservative roots in registers and
//! locals of async-preempted tasks, interior pointers, a multi-worker stress
//! with the verifier on, the heap limit, finalizers on a task, and
//! stop-the-world with tasks in `blocking` and in tight loops.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{AllocError, Gc, Heap, HeapConfig, Member};
use usurp::{preemptible, Runtime};
use usurp_testsupport::{scale, within};
use usurp_testsupport::preemptible::hold_spinning;
use usurp_testsupport_gc::{count, node, runtime, scrub, tree, Node};

/// A list of `n` nodes; returns the head's address only (no handle kept).
#[inline(never)]
fn build_list(n: usize) -> usize {
    let mut head: Option<Gc<Node>> = None;
    for i in 0..n {
        head = Some(node(i * 7 + 1, head, None));
    }
    head.unwrap().raw().addr()
}

/// Checksum of the list whose head (or an interior pointer into it) is `p`.
#[inline(never)]
fn list_sum(p: usize, n: usize) -> usize {
    let heap = Heap::current().expect("task threads are attached");
    let obj = heap.find_object(p).expect("the list head was freed");
    let mut cur = Gc::<Node>::from_ref(obj);
    let (mut sum, mut len) = (0usize, 0usize);
    while let Some(c) = cur {
        sum = sum.wrapping_add(c.val);
        len += 1;
        cur = c.left.get();
    }
    assert_eq!(len, n, "list length changed");
    sum
}

fn expected_sum(n: usize) -> usize {
    (0..n).map(|i| i * 7 + 1).sum()
}

fn verify_config(limit: usize) -> HeapConfig {
    HeapConfig { max_heap: limit, gogc: Some(100), min_heap: 1 << 20, verify: true, ..HeapConfig::default() }
}

/// The only reference to a list is held by a task async-preempted in a tight
/// loop while other tasks force collections; afterwards the list is intact.
#[test]
fn list_held_only_by_preempted_tight_loop_survives_collections() {
    let rt = Runtime::builder()
        .workers(2)
        .quantum(Duration::from_micros(500))
        .heap_config(verify_config(256 << 20))
        .build()
        .unwrap();
    let n = scale(20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let before = rt.stats();
    let holders: Vec<_> = (0..2)
        .map(|k| {
            let (stop, spins) = (stop.clone(), spins.clone());
            rt.spawn(move || {
                // kind 1 keeps only an interior pointer.
                let p = build_list(n) + if k == 1 { 8 } else { 0 };
                let p = hold_spinning(black_box(p), &stop, &spins);
                list_sum(p, n)
            })
        })
        .collect();
    let stop2 = stop.clone();
    let spins2 = spins.clone();
    let collector = rt.spawn(move || {
        // Wait until a holder spins, then churn and collect.
        while spins2.load(Ordering::Relaxed) == 0 {
            usurp::sleep(Duration::from_millis(1));
        }
        let heap = Heap::current().unwrap();
        for _ in 0..scale(20) {
            for _ in 0..10 {
                black_box(tree(8));
            }
            heap.collect();
            usurp::yield_now();
        }
        stop2.store(true, Ordering::SeqCst);
    });
    collector.join().unwrap();
    for h in holders {
        assert_eq!(h.join().unwrap(), expected_sum(n));
    }
    let st = rt.stats();
    assert!(st.gc.cycles >= scale(20) as u64);
    assert_eq!(st.gc.verify_failures, 0);
    assert_eq!(st.gc.bad_pointers, 0);
    assert!(st.stw.stops > before.stw.stops);
    assert!(st.preempt.accepted > before.preempt.accepted, "the holders were never async-preempted");
}

/// Interior pointers held in locals across cooperative switches keep whole
/// objects alive through collections run on other tasks.
#[test]
fn interior_pointers_on_task_stacks_keep_objects_alive() {
    let rt = runtime(2, verify_config(128 << 20));
    let n = scale(5_000);
    let tasks: Vec<_> = (0..4)
        .map(|k| {
            rt.spawn(move || {
                let p = black_box(build_list(n) + 8 + (k % 2) * 8);
                for _ in 0..scale(10) {
                    black_box(tree(6));
                    if k == 0 {
                        Heap::current().unwrap().collect();
                    }
                    usurp::yield_now();
                }
                list_sum(black_box(p), n)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.join().unwrap(), expected_sum(n));
    }
    let st = rt.stats().gc;
    assert!(st.cycles >= scale(10) as u64);
    assert_eq!(st.verify_failures, 0);
}

/// Many tasks on all workers allocate trees (pacing triggers collections)
/// and some collect explicitly, with the verifier on.
#[test]
fn multi_worker_stress_with_verifier() {
    let rt = runtime(2, verify_config(256 << 20));
    let tasks: Vec<_> = (0..16)
        .map(|k| {
            rt.spawn(move || {
                let keep = tree(10);
                let mut total = 0;
                for i in 0..scale(40) {
                    total += count(tree(7));
                    if k == 0 && i % 8 == 0 {
                        Heap::current().unwrap().collect();
                    }
                    if i % 4 == 0 {
                        usurp::yield_now();
                    }
                }
                assert_eq!(count(keep), (1 << 11) - 1);
                total
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.join().unwrap(), scale(40) * ((1 << 8) - 1));
    }
    let st = rt.stats().gc;
    assert!(st.cycles >= 1);
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
}

/// Past the heap limit, after a full collection, `Gc::try_new` fails with an
/// error on a task.
#[test]
fn heap_limit_error_from_a_task() {
    let rt = Runtime::builder().workers(2).heap_limit(4 << 20).gogc(None).build().unwrap();
    let r = rt.block_on(|| {
        let mut head: Option<Gc<Node>> = None;
        for i in 0..10_000_000usize {
            match Gc::try_new(Node { left: Member::null(), right: Member::null(), val: 0 }) {
                Ok(n) => {
                    n.left.set(head);
                    head = Some(n);
                }
                Err(e) => return Some((i, e)),
            }
        }
        black_box(head);
        None
    });
    let (i, e) = r.expect("the heap limit was never reached");
    assert!(i > 1000, "failed too early ({i})");
    assert!(matches!(e, AllocError::HeapExhausted { .. }), "{e:?}");
    assert!(e.to_string().contains("limit"), "{e}");
}

/// A finalizer runs on a task after its object becomes unreachable.
#[test]
fn finalizers_run_on_a_task() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    static ON_TASK: AtomicUsize = AtomicUsize::new(0);
    let rt = Runtime::builder().workers(2).gogc(None).build().unwrap();
    rt.block_on(|| {
        #[inline(never)]
        fn make() {
            let heap = Heap::current().unwrap();
            for _ in 0..8 {
                let n = node(5, None, None);
                heap.set_finalizer(n.raw(), |_| {
                    RAN.fetch_add(1, Ordering::SeqCst);
                    if usurp::task::id().is_some() {
                        ON_TASK.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        }
        make();
        // Clobber the stack area `make` used, so no stale copy keeps them.
        scrub::<512>();
        let heap = Heap::current().unwrap();
        for _ in 0..1000 {
            heap.collect();
            for _ in 0..20 {
                usurp::sleep(Duration::from_millis(1));
                if RAN.load(Ordering::SeqCst) >= 6 {
                    return;
                }
            }
        }
    });
    // Conservative scanning may retain a few; most must be finalized.
    assert!(RAN.load(Ordering::SeqCst) >= 6, "finalizers ran: {}", RAN.load(Ordering::SeqCst));
    assert_eq!(ON_TASK.load(Ordering::SeqCst), RAN.load(Ordering::SeqCst));
}

preemptible! {
    fn spin_counting(stop: &AtomicBool, count: &AtomicU64) {
        let mut n = 0u64;
        loop {
            // SAFETY: volatile read of a valid AtomicBool.
            if unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } != 0 {
                break;
            }
            n = n.wrapping_add(1);
            // SAFETY: a valid aligned u64 written only here.
            unsafe { std::ptr::write_volatile(count.as_ptr(), n) };
        }
    }
}

/// Stop-the-world from outside the runtime completes with one task inside
/// `blocking` and one spinning in preemptible code: while stopped, neither
/// the loop advances nor does the blocking task return from `blocking`.
#[test]
fn stop_the_world_with_blocking_and_tight_loop_tasks() {
    let rt = Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (s2, c2) = (stop.clone(), count.clone());
    let spinner = rt.spawn(move || spin_counting(&s2, &c2));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let in_blocking = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let (ib, ret) = (in_blocking.clone(), returned.clone());
    let blocker = rt.spawn(move || {
        usurp::blocking(|| {
            ib.store(true, Ordering::SeqCst);
            rx.recv().unwrap();
        });
        ret.store(true, Ordering::SeqCst);
    });
    while count.load(Ordering::Relaxed) == 0 || !in_blocking.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rounds = scale(20);
    for _ in 0..rounds {
        rt.stop_the_world();
        let c = count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(count.load(Ordering::SeqCst), c, "a stopped task ran");
        rt.start_the_world();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Release the blocking call while the world is stopped: it must not return.
    rt.stop_the_world();
    tx.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!returned.load(Ordering::SeqCst), "blocking returned while the world was stopped");
    rt.start_the_world();
    blocker.join().unwrap();
    assert!(returned.load(Ordering::SeqCst));
    stop.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    let st = rt.stats().stw;
    assert_eq!(st.stops, rounds as u64 + 1);
    assert_eq!(st.ttsp_samples.len(), rounds + 1);
}

/// Stop-the-world from a task: the caller keeps running, the others stop.
#[test]
fn stop_the_world_from_a_task() {
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let (s2, c2) = (stop.clone(), count.clone());
            rt.spawn(move || spin_counting(&s2, &c2))
        })
        .collect();
    let rt2 = rt.clone();
    let c2 = count.clone();
    let r = rt.spawn(move || {
        while c2.load(Ordering::Relaxed) == 0 {
            usurp::yield_now();
        }
        let mut stopped_ok = 0;
        for _ in 0..scale(20) {
            rt2.stop_the_world();
            let c = c2.load(Ordering::SeqCst);
            let mut x = 0u64;
            for i in 0..200_000u64 {
                x = black_box(x.wrapping_add(i));
            }
            if c2.load(Ordering::SeqCst) == c {
                stopped_ok += 1;
            }
            rt2.start_the_world();
            usurp::yield_now();
        }
        stopped_ok
    });
    assert_eq!(r.join().unwrap(), scale(20));
    stop.store(true, Ordering::SeqCst);
    for s in spinners {
        s.join().unwrap();
    }
}

/// Review defect 6: `Heap::set_world` on a runtime's heap replaced the
/// runtime's World from safe code, after which a plain thread could attach
/// and allocate unstopped. It now panics, and plain threads stay refused.
#[test]
fn set_world_cannot_replace_a_runtimes_world() {
    let rt = usurp::Runtime::builder().workers(1).build().unwrap();
    let heap = rt.heap().clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| heap.set_world(std::sync::Arc::new(usurp::gc::SoloWorld))));
    let h2 = heap.clone();
    let attached = std::thread::spawn(move || h2.attach_thread().is_ok()).join().unwrap();
    assert!(!attached, "a plain thread attached to the runtime's heap after set_world");
    let e = r.expect_err("set_world replaced the runtime's World");
    let m = e.downcast_ref::<String>().cloned().unwrap_or_else(|| e.downcast_ref::<&str>().unwrap_or(&"").to_string());
    assert!(m.contains("already has a World that stops threads"), "{m}");
}

static PTRS: usurp::gc::Descriptor = usurp::gc::Descriptor::array("ptrs", 1, 1);
static LEAF: usurp::gc::Descriptor = usurp::gc::Descriptor::fixed("leaf", 1, &[0]);

/// A thread the world does not stop (a plain OS thread, or a task inside
/// `blocking`) moves `K` leaves between the ends of a rooted pointer array
/// with safe `ptr`/`set_ptr` while tasks allocate and collect; returns the
/// mover's panic message (`None` if it never panicked) and how many leaves
/// were found intact afterwards.
fn unstopped_mover(in_blocking: bool) -> (Option<String>, usize) {
    const N: usize = 100_000;
    const K: usize = 64;
    within(60, "the scenario", move || {
        let cfg = HeapConfig { max_heap: 256 << 20, gogc: None, min_heap: 64 << 20, ..HeapConfig::default() };
        let rt = runtime(2, cfg);
        let heap = rt.heap().clone();
        let arr = rt.block_on(|| {
            let arr = usurp::gc::alloc_array(&PTRS, N);
            for k in 0..K {
                let l = usurp::gc::alloc(&LEAF);
                l.set_word(0, 1000 + k);
                arr.set_ptr(N - k, Some(l)); // high indices (element i is payload word i)
            }
            arr
        });
        let _root = heap.add_root(Some(arr));
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let mover = move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut pos: Vec<usize> = (0..K).map(|k| N - k).collect();
                let mut flip = false;
                while !s2.load(Ordering::Relaxed) {
                    for (k, p) in pos.iter_mut().enumerate() {
                        let to = if flip { N - k } else { 1 + k };
                        let v = arr.ptr(*p);
                        arr.set_ptr(to, v); // destination first: always reachable
                        arr.set_ptr(*p, None);
                        *p = to;
                    }
                    flip = !flip;
                }
            }))
            .err()
            .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_else(|| e.downcast_ref::<&str>().unwrap_or(&"").to_string()))
        };
        let (tm, tb) = if in_blocking {
            (None, Some(rt.spawn(move || usurp::blocking(mover))))
        } else {
            (Some(std::thread::spawn(mover)), None)
        };
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            rt.block_on(|| {
                for _ in 0..200 {
                    black_box(usurp::gc::alloc(&LEAF));
                }
                Heap::current().unwrap().collect();
            });
        }
        stop.store(true, Ordering::Relaxed);
        let msg = match (tm, tb) {
            (Some(t), _) => t.join().unwrap(),
            (_, Some(h)) => rt.block_on(move || h.join().unwrap()),
            _ => unreachable!(),
        };
        let ok = rt.block_on(move || {
            (1..=N).filter_map(|i| arr.ptr(i)).filter(|r| std::panic::catch_unwind(|| r.word(0)).is_ok_and(|v| (1000..1000 + K).contains(&v))).count()
        });
        (msg, ok)
    })
}

/// Review defect 1: safe heap writes (and reads) from a thread the World
/// does not stop raced the marker: moving a pointer from an unscanned slot
/// to a scanned one hid always-reachable objects, which were freed (the
/// reviewer's run: plain thread ok=51 bad=13; blocking ok=54 bad=10). The
/// safe accessors now refuse on a thread without a mutator, with a message
/// saying why, and no object is lost.
#[test]
fn heap_access_from_threads_the_world_does_not_stop_is_refused() {
    let (msg, ok) = unstopped_mover(false);
    let msg = msg.expect("a plain thread wrote heap pointers unchecked");
    assert!(msg.contains("from a thread outside the runtime"), "{msg}");
    assert_eq!(ok, 64, "leaves lost");
    let (msg, ok) = unstopped_mover(true);
    let msg = msg.expect("a blocking() closure wrote heap pointers unchecked");
    assert!(msg.contains("inside blocking()"), "{msg}");
    assert_eq!(ok, 64, "leaves lost");
}

/// The hard limit with the pacer on (issue 9): collections triggered by
/// allocation run concurrently on the heap's background collector, and two
/// tasks keep growing lists until the limit: each gets `HeapExhausted` (after
/// a full collection that its allocation waited for), never a hang or a
/// deadlock with the concurrent mark. Watchdog: 120 s.
#[test]
fn heap_limit_error_while_collections_run_concurrently() {
    let (((ia, ea), (ib, eb)), cycles) = within(120, "the heap limit with concurrent collections", move || {
        let rt = Runtime::builder().workers(2).heap_limit(16 << 20).gogc(Some(100)).build().unwrap();
        let r = rt.block_on(|| {
            let grow = || {
                let mut head: Option<Gc<Node>> = None;
                for i in 0.. {
                    // Garbage too, so that the pacer runs cycles on the way
                    // (through Gc::try_new as well: `Gc::new` panics at the
                    // limit, and either allocation may be the one that hits it).
                    if let Err(e) = Gc::try_new(Node { left: Member::null(), right: Member::null(), val: 0 }).map(black_box) {
                        return (i, e);
                    }
                    match Gc::try_new(Node { left: Member::null(), right: Member::null(), val: 0 }) {
                        Ok(n) => {
                            n.left.set(head);
                            head = Some(n);
                        }
                        Err(e) => return (i, e),
                    }
                }
                unreachable!()
            };
            let a = usurp::spawn(grow);
            let b = usurp::spawn(grow);
            (a.join().unwrap(), b.join().unwrap())
        });
        let cycles = rt.stats().gc.cycles;
        (r, cycles)
    });
    for (i, e) in [(ia, ea), (ib, eb)] {
        assert!(i > 1000, "failed too early ({i})");
        assert!(matches!(e, AllocError::HeapExhausted { .. }), "{e:?}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
    assert!(cycles >= 3, "the pacer ran {cycles} cycles");
}

/// The heap verifier on the runtime's World (its job runs on the stopped
/// workers and marker threads, `World::run_parallel`): 5 corrupt pointer
/// fields spread over a 200,000-node list are each reported exactly once,
/// and the repaired heap verifies clean. (`crates/gc/tests/verify_parallel.rs`
/// checks the same on the GC's own thread World.)
#[test]
fn the_verifier_on_the_runtimes_threads_reports_each_bad_field_once() {
    let rt = runtime(4, usurp_testsupport_gc::verified_manual(256 << 20));
    let (failures, after_repair) = within(120, "verifier on the runtime's threads", move || {
        rt.block_on(|| {
            let heap = Heap::current().expect("task threads are attached");
            let len = 200_000;
            let mut head = node(0, None, None);
            for i in 1..len {
                head = node(i, Some(head), None);
            }
            let head = black_box(head);
            let nth = |i: usize| (0..i).fold(head, |n, _| n.left.get().expect("list long enough"));
            heap.collect();
            let before = heap.stats().verify_failures;
            let bad = [0, 1, len / 3, len / 2, len - 2];
            let target = nth(7);
            for &i in &bad {
                // A pointer field holding an interior address (not an
                // object), written past `Member::set`'s checks.
                // SAFETY: payload word 1 (`right`) of a live Node.
                unsafe { nth(i).raw().payload().add(1).write(target.raw().addr() + 8) };
            }
            heap.collect();
            let failures = heap.stats().verify_failures - before;
            for &i in &bad {
                nth(i).right.set(None);
            }
            heap.collect();
            let after_repair = heap.stats().verify_failures - before - failures;
            black_box(head);
            (failures, after_repair)
        })
    });
    assert_eq!(failures, 5, "the verifier reported {failures} bad fields for 5 corrupt objects");
    assert_eq!(after_repair, 0, "the repaired heap failed verification");
}
