//! The per-thread cache of spawn packet memory (`tasks/packet.rs`, session
//! 12): a spawn's packet (closure, result, join state) is allocated from a
//! per-thread list of free blocks and returned to it when both the task and
//! the join handle are done with it, instead of `malloc`/`free` each time.
//!
//! Checked here: results and captured values of every size class (and of
//! packets too large or too aligned for the cache) survive block reuse
//! intact and are dropped exactly once, whether the handle is joined from a
//! task, from a plain thread (the block is freed on another thread than the
//! one that allocated it) or detached; a multi-worker stress moves blocks
//! between threads; and the cache does serve spawns (the negative control
//! turns it off and sees the check fail).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::within;

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[repr(align(64))]
#[derive(Clone, Copy, PartialEq, Debug)]
struct Aligned([u64; 4]);

/// Spawns tasks whose results and captures span the cache's classes and
/// beyond (round `i`), and checks every value.
fn mixed_round(i: u64, drops: &Arc<AtomicUsize>) {
    let c = Counted(drops.clone());
    let small = usurp::spawn(move || {
        let _c = c;
        i
    });
    let c = Counted(drops.clone());
    let mid = usurp::spawn(move || {
        let _c = c;
        [i; 20] // 160 bytes: the larger class
    });
    let c = Counted(drops.clone());
    let big = usurp::spawn(move || {
        let _c = c;
        [i; 100] // 800 bytes: the global allocator
    });
    let c = Counted(drops.clone());
    let aligned = usurp::spawn(move || {
        let _c = c;
        Aligned([i; 4]) // over-aligned: the global allocator
    });
    let c = Counted(drops.clone());
    // Detached: the task frees the packet (or the dropped handle does).
    drop(usurp::spawn(move || {
        let _c = c;
        vec![i; 3]
    }));
    assert_eq!(small.join().unwrap(), i);
    assert_eq!(mid.join().unwrap(), [i; 20]);
    assert_eq!(big.join().unwrap(), [i; 100]);
    let a = aligned.join().unwrap();
    assert_eq!(a, Aligned([i; 4]));
    assert_eq!(&a as *const Aligned as usize % 64, 0);
}

#[test]
fn packets_of_every_size_survive_reuse_and_drop_once() {
    let rounds = 2_000u64;
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    within(120, "packet reuse", move || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let d2 = d.clone();
        rt.block_on(move || {
            for i in 0..rounds {
                mixed_round(i, &d2);
            }
        });
        // Joined from a plain thread: the handle's drop frees the block on
        // this thread, the task's on a worker.
        for i in 0..rounds {
            let c = Counted(d.clone());
            let h = rt.spawn(move || {
                let _c = c;
                [i; 12]
            });
            assert_eq!(h.join().unwrap(), [i; 12]);
        }
        drop(rt); // detached tasks have finished or are abandoned by now
    });
    // Every capture dropped exactly once: 5 per mixed round, 1 per thread
    // join (a detached task either ran, or never started and had its
    // closure dropped when the runtime was).
    let n = drops.load(Ordering::SeqCst);
    assert_eq!(n, 6 * rounds as usize, "captures dropped: {n}, expected {}", 6 * rounds);
}

#[test]
fn blocks_move_between_threads_under_load() {
    let tasks = 8;
    let per = 3_000u64;
    let sum = within(120, "packet stress", move || {
        let rt = Runtime::builder().workers(4).build().unwrap();
        rt.block_on(move || {
            // Handles travel to another task over a channel: the block is
            // allocated on one worker and freed wherever the joiner runs.
            let (tx, rx) = usurp::channel::<usurp::JoinHandle<[u64; 10]>>();
            let joiner = usurp::spawn(move || {
                let mut s = 0u64;
                for h in rx.iter() {
                    let v = h.join().unwrap();
                    assert!(v.iter().all(|&x| x == v[0]), "a result was corrupted: {v:?}");
                    s += v[0];
                }
                s
            });
            let hs: Vec<_> = (0..tasks)
                .map(|k| {
                    let tx = tx.clone();
                    usurp::spawn(move || {
                        for i in 0..per {
                            let v = k * per + i;
                            tx.send(usurp::spawn(move || [v; 10])).unwrap();
                            if i % 3 == 0 {
                                assert_eq!(usurp::spawn(move || v).join().unwrap(), v);
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            for h in hs {
                h.join().unwrap();
            }
            joiner.join().unwrap()
        })
    });
    let n = tasks * per;
    assert_eq!(sum, n * (n - 1) / 2);
}

/// Serialises the two tests that read the hit counter (the negative
/// control turns the cache off process-wide).
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Spawn+join `n` times on a one-worker runtime; the cache hits the
/// worker's thread counted meanwhile.
fn hits_over_spawn_joins(n: usize) -> usize {
    let rt = Runtime::builder().workers(1).build().unwrap();
    rt.block_on(move || {
        let before = hooks::packet_cache_hits_for_tests();
        for i in 0..n {
            assert_eq!(usurp::spawn(move || i).join().unwrap(), i);
        }
        hooks::packet_cache_hits_for_tests() - before
    })
}

#[test]
fn spawn_join_reuses_packet_memory() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let n = 1_000;
    let hits = within(60, "cache hits", move || hits_over_spawn_joins(n));
    // All but the first (and any a new thread's cache lacked) are reused.
    assert!(hits >= n - 10, "the packet cache served {hits} of {n} spawns");
}

#[test]
fn negative_control_without_the_cache_no_packet_is_reused() {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let n = 1_000;
    let hits = within(60, "cache hits, cache off", move || {
        hooks::set_packet_cache_for_tests(false);
        let h = hits_over_spawn_joins(n);
        hooks::set_packet_cache_for_tests(true);
        h
    });
    // The check of `spawn_join_reuses_packet_memory` fails without the
    // mechanism.
    assert!(hits < n - 10, "the cache was off, yet {hits} of {n} spawns were served from it");
}
