//! Task-aware synchronisation: channels (unbounded, bounded, rendezvous,
//! disconnects), Mutex and Condvar under contention, mixing tasks and threads.

use std::collections::VecDeque;
use std::sync::Arc;
use usurp::sync::{RecvError, TryRecvError, TrySendError};
use usurp::{channel, spawn, sync_channel, yield_now, Condvar, Mutex, Runtime};
use usurp_testsupport::{scale, within};

#[test]
fn unbounded_channel_many_senders() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let senders = 8;
    let per = scale(2000);
    let (sum, count) = within(120, "unbounded", move || {
        rt.block_on(move || {
            let (tx, rx) = channel::<u64>();
            for s in 0..senders {
                let tx = tx.clone();
                spawn(move || {
                    for i in 0..per {
                        tx.send((s * per + i) as u64).unwrap();
                        if i % 64 == 0 {
                            yield_now();
                        }
                    }
                });
            }
            drop(tx);
            // Ends when every sender is gone.
            let mut sum = 0u64;
            let mut count = 0usize;
            for v in rx.iter() {
                sum += v;
                count += 1;
            }
            (sum, count)
        })
    });
    let n = (senders * per) as u64;
    assert_eq!(count as u64, n);
    assert_eq!(sum, n * (n - 1) / 2);
}

#[test]
fn rendezvous_channel_preserves_order_and_blocks_sender() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = scale(5000);
    let got = within(120, "rendezvous", move || {
        rt.block_on(move || {
            let (tx, rx) = sync_channel::<usize>(0);
            // Nobody receives yet: a rendezvous send cannot complete.
            assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
            let p = spawn(move || {
                for i in 0..n {
                    tx.send(i).unwrap();
                }
            });
            let v: Vec<usize> = rx.iter().collect();
            p.join().unwrap();
            v
        })
    });
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

#[test]
fn bounded_channel_applies_backpressure() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (full_at, total) = rt.block_on(|| {
        let (tx, rx) = sync_channel::<u32>(3);
        let mut k = 0;
        while tx.try_send(k).is_ok() {
            k += 1;
        }
        let full_at = k;
        // A blocked sender resumes when the receiver makes room.
        let tx2 = tx.clone();
        let h = spawn(move || {
            for i in 100..110 {
                tx2.send(i).unwrap();
            }
        });
        drop(tx);
        let mut total = 0;
        for v in rx.iter() {
            total += v;
        }
        h.join().unwrap();
        (full_at, total)
    });
    assert_eq!(full_at, 3);
    assert_eq!(total, 3 + (100..110).sum::<u32>()); // 0 + 1 + 2, then the blocked sends
}

#[test]
fn disconnects_are_reported_both_ways() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(60, "disconnects", move || {
        rt.block_on(|| {
            // Receiver parked in recv is woken with an error when the last
            // sender goes away.
            let (tx, rx) = channel::<u8>();
            let r = spawn(move || rx.recv());
            yield_now();
            drop(tx);
            assert_eq!(r.join().unwrap(), Err(RecvError));

            // try_recv distinguishes empty from disconnected.
            let (tx, rx) = channel::<u8>();
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
            tx.send(9).unwrap();
            drop(tx);
            assert_eq!(rx.try_recv(), Ok(9));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

            // Sending to a dropped receiver returns the value.
            let (tx, rx) = channel::<String>();
            drop(rx);
            assert_eq!(tx.send("x".into()).unwrap_err().0, "x");

            // A sender parked on a rendezvous is woken with its value back
            // when the receiver goes away.
            let (tx, rx) = sync_channel::<String>(0);
            let s = spawn(move || tx.send("kept".to_string()));
            yield_now();
            yield_now();
            drop(rx);
            assert_eq!(s.join().unwrap().unwrap_err().0, "kept");

            // Same with a full bounded channel.
            let (tx, rx) = sync_channel::<u32>(1);
            tx.send(1).unwrap();
            let s = spawn(move || tx.send(2));
            yield_now();
            drop(rx);
            assert_eq!(s.join().unwrap().unwrap_err().0, 2);
        })
    });
}

#[test]
fn channels_connect_tasks_and_plain_threads() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = scale(2000);
    let (to_task, task_rx) = sync_channel::<usize>(0);
    let (task_tx, from_task) = channel::<usize>();
    let h = rt.spawn(move || {
        for v in task_rx.iter() {
            task_tx.send(v * 2).unwrap();
        }
    });
    within(120, "thread<->task", move || {
        for i in 0..n {
            to_task.send(i).unwrap(); // blocks this thread until the task takes it
            assert_eq!(from_task.recv().unwrap(), i * 2);
        }
        drop(to_task);
        h.join().unwrap();
    });
}

#[test]
fn mutex_counts_exactly_under_contention() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let tasks = 16;
    let per = scale(3000);
    let m = Arc::new(Mutex::new(0usize));
    let m2 = m.clone();
    // Plain threads contend on the same mutex as the tasks.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..per {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    within(120, "mutex", move || {
        rt.block_on(move || {
            let hs: Vec<_> = (0..tasks)
                .map(|k| {
                    let m = m2.clone();
                    spawn(move || {
                        for i in 0..per {
                            let mut g = m.lock();
                            let v = *g;
                            if (i + k) % 7 == 0 {
                                yield_now(); // switch while holding the lock
                            }
                            *g = v + 1;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        })
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*m.lock(), (tasks + 2) * per);
    assert!(m.try_lock().is_ok());
}

#[test]
fn condvar_bounded_buffer_producers_consumers() {
    struct Q {
        m: Mutex<(VecDeque<u64>, usize)>, // items, producers still running
        not_empty: Condvar,
        not_full: Condvar,
    }
    const CAP: usize = 4;
    let rt = Runtime::builder().workers(2).build().unwrap();
    let producers = 4u64;
    let per = scale(2000) as u64;
    let consumers = 4;
    let q = Arc::new(Q {
        m: Mutex::new((VecDeque::new(), producers as usize)),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    let total = within(120, "condvar", move || {
        rt.block_on(move || {
            let mut ps = Vec::new();
            for p in 0..producers {
                let q = q.clone();
                ps.push(spawn(move || {
                    for i in 0..per {
                        let mut g = q.not_full.wait_while(q.m.lock(), |s| s.0.len() >= CAP);
                        g.0.push_back(p * per + i);
                        drop(g);
                        q.not_empty.notify_one();
                    }
                    q.m.lock().1 -= 1;
                    q.not_empty.notify_all();
                }));
            }
            let cs: Vec<_> = (0..consumers)
                .map(|_| {
                    let q = q.clone();
                    spawn(move || {
                        let mut sum = 0u64;
                        loop {
                            let mut g = q.not_empty.wait_while(q.m.lock(), |s| s.0.is_empty() && s.1 > 0);
                            match g.0.pop_front() {
                                Some(v) => {
                                    drop(g);
                                    q.not_full.notify_one();
                                    sum += v;
                                }
                                None => return sum, // empty and no producers left
                            }
                        }
                    })
                })
                .collect();
            for p in ps {
                p.join().unwrap();
            }
            cs.into_iter().map(|c| c.join().unwrap()).sum::<u64>()
        })
    });
    let n = producers * per;
    assert_eq!(total, n * (n - 1) / 2);
}
