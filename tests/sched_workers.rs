//! Multi-worker behaviour: work stealing, blocking handoff.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use usurp::{blocking, spawn, yield_now, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::{scale, within};

#[test]
fn tasks_spawned_on_one_worker_run_on_others() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let seen = Arc::new(StdMutex::new(HashSet::new()));
    let s2 = seen.clone();
    let (spawner, ran_on) = within(120, "stealing", move || {
        rt.block_on(move || {
            let spawner = hooks::current_worker_index().unwrap();
            let hs: Vec<_> = (0..64)
                .map(|_| {
                    let seen = s2.clone();
                    spawn(move || {
                        // Keep the spawning worker's queue non-empty until some
                        // task has been seen on another worker.
                        for _ in 0..1_000_000 {
                            let w = hooks::current_worker_index().unwrap();
                            let mut s = seen.lock().unwrap();
                            s.insert(w);
                            if s.len() >= 2 {
                                return;
                            }
                            drop(s);
                            for _ in 0..200 {
                                std::hint::spin_loop();
                            }
                            yield_now();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            (spawner, seen.lock().unwrap().clone())
        })
    });
    assert!(ran_on.len() >= 2, "all tasks ran on worker {spawner}: {ran_on:?}");
}

#[test]
fn blocking_hands_the_worker_off() {
    // One worker: if `blocking` blocked the worker, the second task could
    // never send, and the first would wait forever.
    let rt = Runtime::builder().workers(1).build().unwrap();
    let progressed = within(60, "blocking handoff", move || {
        rt.block_on(|| {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            let ticks = Arc::new(AtomicUsize::new(0));
            let t2 = ticks.clone();
            let blocker = spawn(move || blocking(move || rx.recv().unwrap()));
            let other = spawn(move || {
                for _ in 0..100 {
                    t2.fetch_add(1, Ordering::SeqCst);
                    yield_now();
                }
                tx.send(7).unwrap();
            });
            other.join().unwrap();
            assert_eq!(blocker.join().unwrap(), 7);
            ticks.load(Ordering::SeqCst)
        })
    });
    assert_eq!(progressed, 100);
}

#[test]
fn many_concurrent_blocking_calls_and_panics() {
    let rt = Runtime::builder().workers(2).max_blocking_threads(4).build().unwrap();
    let n = scale(40);
    let sum = within(120, "blocking many", move || {
        rt.block_on(move || {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    spawn(move || {
                        let v = blocking(|| {
                            std::thread::sleep(Duration::from_millis(2));
                            // Task APIs degrade to thread behaviour in here.
                            yield_now();
                            usurp::sleep(Duration::from_millis(1));
                            i
                        });
                        // Back on a worker: task operations work again.
                        yield_now();
                        v
                    })
                })
                .collect();
            let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            // A panic inside blocking propagates to the task (and its join).
            let e = spawn(|| blocking(|| -> () { panic!("in blocking") })).join().unwrap_err();
            assert_eq!(*e.downcast::<&str>().unwrap(), "in blocking");
            sum
        })
    });
    assert_eq!(sum, n * (n - 1) / 2);
}

#[test]
fn block_on_from_many_threads_at_once() {
    let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                (0..scale(50)).map(|i| rt.block_on(move || spawn(move || k * 1000 + i).join().unwrap())).sum::<usize>()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let n = scale(50);
    let expect: usize = (0..4).map(|k| (0..n).map(|i| k * 1000 + i).sum::<usize>()).sum();
    assert_eq!(total, expect);
}
