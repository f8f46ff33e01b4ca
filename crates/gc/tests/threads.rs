//! Multi-threaded tests on a `ThreadWorld`: conservative roots on other
//! threads' stacks, collections triggered from any thread, parallel marking,
//! and a stress run with the verifier on.

mod common;
use common::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use usurp_testsupport::scale as test_scale;
use usurp_gc::{Gc, Heap, HeapConfig, ThreadWorld, World};

fn world_heap(parallelism: usize, cfg: HeapConfig) -> (Arc<ThreadWorld>, Heap) {
    let w = ThreadWorld::new(parallelism);
    let h = Heap::with_world(cfg, w.clone() as Arc<dyn World>).unwrap();
    (w, h)
}

/// A thread whose only reference to a list is in a local (stack slot or
/// register, hidden from the optimiser) survives collections run by another
/// thread; so does one holding only an interior pointer.
#[test]
fn parked_threads_stacks_are_conservative_roots() {
    let (w, h) = world_heap(2, config(64 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(3));
    let n = test_scale(2000);
    let mut threads = vec![];
    for kind in 0..2 {
        let (w, h, stop, ready) = (w.clone(), h.clone(), stop.clone(), ready.clone());
        threads.push(std::thread::spawn(move || {
            let _r = w.register();
            let _g = h.attach_thread().unwrap();
            // kind 0 keeps the head pointer, kind 1 only an interior pointer
            // (built in a callee, so that no exact copy stays in this frame).
            #[inline(never)]
            fn build(n: usize, offset: usize) -> usize {
                list(n).unwrap().raw().addr() + offset
            }
            let kept = black_box(build(n, if kind == 0 { 0 } else { 17 }));
            w.blocking_wait_ready(&ready);
            let mut spins = 0u64;
            while !stop.load(Ordering::Acquire) {
                w.safepoint();
                spins = black_box(spins + 1);
            }
            let obj = h.find_object(black_box(kept)).expect("list head was freed");
            check_list(Gc::from_ref(obj), n);
        }));
    }
    let _r = w.register();
    let _g = h.attach_thread().unwrap();
    w.blocking_wait_ready(&ready);
    for _ in 0..5 {
        for _ in 0..test_scale(100) {
            black_box(tree(5));
        }
        h.collect();
    }
    stop.store(true, Ordering::Release);
    // Leave the world so the joiners can finish without us polling (detach
    // first: dropping the Registration while attached panics).
    drop(_g);
    drop(_r);
    for t in threads {
        t.join().unwrap();
    }
    let st = h.stats();
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
    assert!(st.cycles >= 5);
    assert!(st.last.unwrap().conservative_words > 0);
}

trait ReadyExt {
    fn blocking_wait_ready(&self, b: &Barrier);
}
impl ReadyExt for ThreadWorld {
    /// Wait on a barrier while counting as stopped (so a collection by a
    /// thread that already passed can proceed).
    fn blocking_wait_ready(&self, b: &Barrier) {
        self.blocking(&mut || {
            b.wait();
        });
    }
}

static PTRS: usurp_gc::Descriptor = usurp_gc::Descriptor::array("ptrs", 1, 1);

/// Several threads allocate trees concurrently and trigger collections by
/// pacing; parallel marking; the verifier checks every cycle.
#[test]
fn stress_many_threads_with_verifier() {
    let cfg = HeapConfig { gogc: Some(50), min_heap: 2 << 20, ..config(512 << 20) };
    let (w, h) = world_heap(3, cfg);
    let threads = 4;
    let rounds = test_scale(300);
    let done = Arc::new(AtomicUsize::new(0));
    let mut hs = vec![];
    for t in 0..threads {
        let (w, h, done) = (w.clone(), h.clone(), done.clone());
        hs.push(std::thread::spawn(move || {
            let _r = w.register();
            let _g = h.attach_thread().unwrap();
            let long_lived = tree(10);
            let root = h.add_root(Some(tree(8).raw()));
            let weak = h.weak(tree(3).raw());
            for i in 0..rounds {
                let t1 = tree(8);
                w.safepoint();
                assert_eq!(count(t1), 511);
                // Swap the rooted tree now and then.
                if i % 7 == t {
                    root.set(Some(tree(8).raw()));
                }
                w.safepoint();
                // Large objects too.
                let big = usurp_gc::alloc_array(&PTRS, 5000);
                big.set_ptr(4999, Some(t1.raw()));
                black_box(big);
            }
            assert_eq!(count(long_lived), 2047);
            assert_eq!(count(root.get_as::<Node>().unwrap()), 511);
            let _ = weak.get();
            done.fetch_add(1, Ordering::Release);
            // Keep taking part until everyone is done (others may still collect).
            while done.load(Ordering::Acquire) < threads {
                w.safepoint();
                std::thread::yield_now();
            }
        }));
    }
    for t in hs {
        t.join().unwrap();
    }
    let st = h.stats();
    assert!(st.cycles >= 1, "no cycle ran");
    assert_eq!(st.verify_failures, 0);
    assert_eq!(st.bad_pointers, 0);
    let c = st.last.unwrap();
    // Concurrent marking uses half the World's parallelism by default.
    assert_eq!(c.workers, 2);
}

/// Collections requested concurrently by several threads all complete.
#[test]
fn concurrent_explicit_collections() {
    let (w, h) = world_heap(2, config(64 << 20));
    let n = test_scale(10);
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (w, h) = (w.clone(), h.clone());
            std::thread::spawn(move || {
                let _r = w.register();
                let _g = h.attach_thread().unwrap();
                let keep = list(100);
                for _ in 0..n {
                    black_box(list(100));
                    h.collect();
                    w.safepoint();
                }
                check_list(keep, 100);
            })
        })
        .collect();
    for t in hs {
        t.join().unwrap();
    }
    assert!(h.stats().cycles >= n as u64);
    assert_eq!(h.stats().verify_failures, 0);
}

/// Overlapping `collect()` calls share one cycle (issue 9 item 4): threads
/// that call it at once (each read the cycle count before any cycle's start
/// stop, which waits for all of them to park in their wait for the
/// collection lock) are all served by the first cycle. Before: one cycle
/// per call, back to back.
#[test]
fn overlapping_collect_calls_share_one_cycle() {
    let (w, h) = world_heap(2, config(64 << 20));
    let n = 6;
    let go = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (w, h, go) = (w.clone(), h.clone(), go.clone());
            std::thread::spawn(move || {
                let _r = w.register();
                let _g = h.attach_thread().unwrap();
                let keep = list(100);
                // A plain wait: every thread is running (not parked) when
                // the first one leaves it, so the first cycle's start stop
                // waits for all of them to reach their `collect()`.
                go.wait();
                h.collect();
                check_list(keep, 100);
            })
        })
        .collect();
    for t in hs {
        t.join().unwrap();
    }
    assert_eq!(h.stats().cycles, 1, "{n} overlapping collect() calls ran more than one cycle");
    assert_eq!(h.stats().verify_failures, 0);
}

/// A `ThreadWorld` heap refuses a thread that is not registered (it would
/// not stop for collections, and its stack would not be scanned); after
/// registering, the same thread attaches.
#[test]
fn thread_world_refuses_unregistered_threads() {
    let (w, h) = world_heap(1, config(8 << 20));
    std::thread::spawn(move || {
        match h.attach_thread() {
            Err(usurp_gc::AttachError::Refused(why)) => assert!(why.contains("ThreadWorld::register"), "{why}"),
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => panic!("an unregistered thread attached"),
        }
        let _r = w.register();
        let _g = h.attach_thread().expect("a registered thread attaches");
        assert_eq!(list(10).map(|l| l.val), Some(9));
    })
    .join()
    .unwrap();
}

static WORDS: usurp_gc::Descriptor = usurp_gc::Descriptor::array("words", 1, 0);

/// Threads racing to allocate 2-block objects near the heap limit, each
/// keeping a ring of the last `k` (on its stack): the working set always
/// fits (worst case 4 × (k + 1) × 2 = 104 blocks of the 128, leaving room
/// for stale conservative references), so no allocation may fail. Before
/// the fix, an allocation whose collection was skipped because another
/// thread had just collected retried once and reported `HeapExhausted`
/// when the others had taken the freed memory meanwhile.
fn race_near_the_limit(threads: usize, k: usize, iters: usize) -> (usize, Vec<String>) {
    let (w, h) = world_heap(1, HeapConfig { verify: false, ..config(8 << 20) });
    let go = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (w, h, go) = (w.clone(), h.clone(), go.clone());
            std::thread::spawn(move || {
                let _r = w.register();
                let _g = h.attach_thread().unwrap();
                let mut slots: [Option<usurp_gc::GcRef>; 16] = [None; 16];
                assert!(k <= slots.len());
                w.blocking_wait_ready(&go);
                let mut errors = Vec::new();
                for i in 0..iters {
                    w.safepoint();
                    match usurp_gc::try_alloc_array(&WORDS, 12_000) {
                        Ok(r) => slots[i % k] = Some(r),
                        Err(e) => {
                            errors.push(e.to_string());
                            break;
                        }
                    }
                }
                black_box(&mut slots);
                errors
            })
        })
        .collect();
    let errors: Vec<String> = handles.into_iter().flat_map(|t| t.join().unwrap()).collect();
    (h.stats().cycles as usize, errors)
}

#[test]
fn racing_allocations_near_the_limit_never_fail_spuriously() {
    for _ in 0..3 {
        let (cycles, errors) = race_near_the_limit(4, 12, test_scale(3000));
        assert!(cycles > 0);
        assert!(errors.is_empty(), "spurious exhaustion ({} of 4 threads, {cycles} cycles): {}", errors.len(), errors[0]);
    }
}

/// A working set that does not fit still fails with the clear error, on
/// every racing thread, and nothing hangs.
#[test]
fn racing_allocations_past_the_limit_report_exhaustion() {
    let t = std::time::Instant::now();
    let (w, h) = world_heap(1, HeapConfig { verify: false, ..config(8 << 20) });
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (w, h) = (w.clone(), h.clone());
            std::thread::spawn(move || {
                let _r = w.register();
                let _g = h.attach_thread().unwrap();
                let mut head: Option<Gc<Node>> = None;
                loop {
                    w.safepoint();
                    match Gc::try_new(Node { left: usurp_gc::Member::null(), right: usurp_gc::Member::null(), val: 0 }) {
                        Ok(n) => {
                            n.left.set(head);
                            head = Some(n);
                        }
                        Err(e) => {
                            black_box(&head);
                            return e;
                        }
                    }
                }
            })
        })
        .collect();
    for t in handles {
        let e = t.join().unwrap();
        assert!(matches!(e, usurp_gc::AllocError::HeapExhausted { .. }), "{e:?}");
        assert!(e.to_string().contains("exhausted"), "{e}");
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(120), "took {:?}", t.elapsed());
}

/// Review defect 6: a `Heap::new` heap (SoloWorld: stops nothing) admitted
/// any number of attached threads (two threads building checksummed lists
/// corrupted them), and a thread could collect while another was attached
/// (unscanned). It now admits one attached thread at a time, refuses a
/// collection from another thread meanwhile, and admits the next thread
/// once the first has detached.
#[test]
fn a_solo_heap_admits_one_attached_thread_at_a_time() {
    let h = usurp_gc::Heap::new(usurp_gc::HeapConfig::default()).unwrap();
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let h1 = h.clone();
    let first = std::thread::spawn(move || {
        let _g = h1.attach_thread().unwrap();
        let l = list(100);
        attached_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        h1.collect();
        check_list(l, 100);
    });
    attached_rx.recv().unwrap();
    let h2 = h.clone();
    let (refused, collect_msg) = std::thread::spawn(move || {
        let refused = match h2.attach_thread() {
            Err(usurp_gc::AttachError::Refused(why)) => why.contains("one thread at a time"),
            _ => false,
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h2.collect()));
        let msg = r.err().map(|e| {
            e.downcast_ref::<String>().cloned().unwrap_or_else(|| e.downcast_ref::<&str>().unwrap_or(&"").to_string())
        });
        (refused, msg)
    })
    .join()
    .unwrap();
    release_tx.send(()).unwrap();
    first.join().unwrap();
    assert!(refused, "a second thread attached to a Heap::new heap while the first was attached");
    let m = collect_msg.expect("another thread collected while a thread was attached to a Heap::new heap");
    assert!(m.contains("other than the one attached"), "{m}");
    // The first has detached: the next thread may attach.
    on_other_thread(&h, |_| check_list(list(10), 10));
    assert_eq!(h.stats().verify_failures, 0);
}
