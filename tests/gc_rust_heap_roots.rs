//! GC values the runtime keeps in Rust heap memory survive collections
//! (issue 10, item 6): a spawn closure's captures before the task runs, a
//! join result (and a panic payload) until it is joined, values buffered in
//! a channel until they are received.
//!
//! Each scenario runs on one worker, so the task holding the value cannot
//! run while the spawner collects. The objects are checksummed lists whose
//! only reference sits in the runtime's box; between collections garbage of
//! the same size class is allocated so that a freed list gets overwritten;
//! the heap verifier is on. Stale copies of the reference on the spawner's
//! stack are scrubbed before collecting (they would hide a bug).

use std::time::Duration;
use usurp::gc::{GcRef, Heap};
use usurp_testsupport_gc::seeded::{check_heap, checksum, collect_and_churn, expected, make_list, runtime};
use usurp_testsupport_gc::{scrub, verified_manual};

/// A task whose closure captures the only references to lists, spawned but
/// not run while its spawner (same worker) collects, finds them intact.
#[test]
fn spawn_closure_captures_survive_until_the_task_runs() {
    let rt = runtime();
    let sums = rt.block_on(|| {
        #[inline(never)]
        fn spawn_holder() -> usurp::JoinHandle<Vec<Option<usize>>> {
            let lists = [make_list(1), make_list(2), make_list(3)];
            let extra = (7usize, make_list(4));
            usurp::spawn(move || {
                let mut v: Vec<Option<usize>> = lists.iter().map(|&l| checksum(l)).collect();
                v.push(checksum(extra.1));
                v
            })
        }
        let h = spawn_holder();
        scrub::<2048>();
        // One worker: the task cannot start before we yield or join, and
        // allocation is a cooperative point only outside a no-preemption
        // section (its slow path honours an expired quantum with
        // `checkpoint()`, a no-op in here).
        usurp::no_preempt(collect_and_churn);
        assert!(!h.is_finished(), "the spawned task ran before the collections: the test would not test its closure");
        h.join().unwrap()
    });
    assert_eq!(sums, vec![Some(expected(1)), Some(expected(2)), Some(expected(3)), Some(expected(4))]);
    check_heap(&rt);
}

/// A task returns the only reference to a list (and another one panics with
/// one as its payload); both survive collections until they are joined.
#[test]
fn join_results_survive_until_joined() {
    let rt = runtime();
    let (ok, payload) = rt.block_on(|| {
        let h = usurp::spawn(|| (make_list(11), 5usize));
        let p = usurp::spawn(|| -> () { std::panic::panic_any(make_list(12)) });
        while !h.is_finished() || !p.is_finished() {
            usurp::yield_now();
        }
        scrub::<2048>();
        collect_and_churn();
        let (r, five) = h.join().unwrap();
        assert_eq!(five, 5);
        let payload = *p.join().unwrap_err().downcast::<GcRef>().expect("the payload is a GcRef");
        (checksum(r), checksum(payload))
    });
    assert_eq!(ok, Some(expected(11)), "a join result was freed before it was joined");
    assert_eq!(payload, Some(expected(12)), "a panic payload was freed before it was joined");
    check_heap(&rt);
}

/// Lists sent through channels (unbounded and bounded) and not yet received
/// survive collections; the sender has exited, so the buffers hold the only
/// references.
#[test]
fn values_buffered_in_channels_survive_until_received() {
    let rt = runtime();
    let sums = rt.block_on(|| {
        let (tx, rx) = usurp::channel::<(usize, GcRef)>();
        let (stx, srx) = usurp::sync_channel::<GcRef>(4);
        let sender = usurp::spawn(move || {
            for seed in 20..24 {
                tx.send((seed, make_list(seed))).unwrap();
            }
            for seed in 30..34 {
                stx.send(make_list(seed)).unwrap();
            }
        });
        sender.join().unwrap();
        scrub::<2048>();
        collect_and_churn();
        let mut v = Vec::new();
        while let Ok((seed, l)) = rx.try_recv() {
            v.push((seed, checksum(l)));
        }
        let mut seed = 30;
        while let Ok(l) = srx.try_recv() {
            v.push((seed, checksum(l)));
            seed += 1;
        }
        v
    });
    let want: Vec<_> = (20..24).chain(30..34).map(|s| (s, Some(expected(s)))).collect();
    assert_eq!(sums, want, "a value buffered in a channel was freed");
    check_heap(&rt);
}

/// Stress of the registration itself on two workers: results and channels
/// registered, joined, detached and dropped while the other worker collects
/// (a deadlock between the registry lock and a pause, or a scan of a freed
/// packet, would show as a hang or a crash here; the unit tests in
/// `heap_roots.rs` check that each entry leaves the registry). A list kept
/// on this task's stack stays intact, the verifier stays clean.
#[test]
fn registration_churn_while_collecting_on_two_workers() {
    // Watchdog: the scenario runs on its own thread; a hang fails the test.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = usurp_testsupport_gc::runtime(2, verified_manual(128 << 20));
        let ok = rt.block_on(|| {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let collector = usurp::spawn(move || {
                let heap = Heap::current().unwrap();
                let mut n = 0usize;
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    heap.collect();
                    n += 1;
                    usurp::yield_now();
                }
                n
            });
            let keep = make_list(40);
            for round in 0..usurp_testsupport::scale(400) {
                let h = usurp::spawn(move || make_list(round));
                let detached = usurp::spawn(move || make_list(round + 1));
                drop(detached);
                let (tx, rx) = usurp::channel::<GcRef>();
                tx.send(make_list(round + 2)).unwrap();
                if round % 2 == 0 {
                    drop(rx);
                } else {
                    assert_eq!(checksum(rx.recv().unwrap()), Some(expected(round + 2)));
                }
                assert_eq!(checksum(h.join().unwrap()), Some(expected(round)));
                if round % 8 == 0 {
                    usurp::yield_now();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(collector.join().unwrap() > 0);
            usurp::sleep(Duration::from_millis(1));
            collect_and_churn();
            checksum(keep)
        });
        assert_eq!(ok, Some(expected(40)));
        check_heap(&rt);
        done_tx.send(()).unwrap();
    });
    match done_rx.recv_timeout(Duration::from_secs(300)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hang: registration churn did not finish in 300 s"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the scenario panicked (see above)"),
    }
}
