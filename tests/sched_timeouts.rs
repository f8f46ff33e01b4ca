//! Non-blocking and timed operations of the task-aware sync primitives
//! (issue 11 item 10): `Mutex::try_lock` (a `Result`, like std),
//! `Receiver::try_recv` / `recv_timeout`, `SyncSender::try_send`,
//! `Condvar::wait_timeout`, from tasks, from plain threads and inside
//! `blocking`; and the race between a timeout and a wake-up, which the
//! wait claim (one compare-exchange, `wait.rs`) resolves exactly once.
//! `recv_timeout_race_negative_control` and
//! `condvar_notify_race_negative_control` show that the two race tests
//! fail (a value lost; a notification swallowed) when the claim is switched
//! off. Timing is only checked against generous
//! lower bounds (a timeout never returns early) and watchdogs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::sync::{RecvTimeoutError, TryLockError, TryRecvError, TrySendError};
use usurp::{blocking, channel, spawn, sync_channel, yield_now, Condvar, Mutex, Runtime};
use usurp_testsupport::{run_child, scale, within};

#[test]
fn try_lock_is_a_result_like_std() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(60, "try_lock", move || {
        let m = Arc::new(Mutex::new(5));
        let m2 = m.clone();
        rt.block_on(move || {
            let g = m2.lock();
            // Held by this task: another task and a plain thread both fail.
            let m3 = m2.clone();
            let r = spawn(move || matches!(m3.try_lock(), Err(TryLockError::WouldBlock)));
            assert!(r.join().unwrap());
            let m4 = m2.clone();
            assert!(std::thread::spawn(move || m4.try_lock().is_err()).join().unwrap());
            assert_eq!(format!("{:?}", *m2), "Mutex { <locked> }");
            drop(g);
            let mut g = m2.try_lock().expect("free mutex");
            *g += 1;
        });
        assert_eq!(*m.try_lock().unwrap(), 6);
        assert_eq!(m.try_lock().err(), None);
        assert_eq!(TryLockError::WouldBlock.to_string(), "try_lock failed because the operation would block");
    });
}

#[test]
fn try_recv_and_try_send_like_std() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(60, "try ops", move || {
        rt.block_on(|| {
            // Rendezvous: try_send fails without a waiting receiver; a
            // blocked sender's value is taken by try_recv.
            let (tx, rx) = sync_channel::<u32>(0);
            assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
            let tx2 = tx.clone();
            let s = spawn(move || tx2.send(7));
            let got = loop {
                match rx.try_recv() {
                    Ok(v) => break v,
                    Err(TryRecvError::Empty) => yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            };
            assert_eq!(got, 7);
            s.join().unwrap().unwrap();
            // Bounded: fills, then Full; Disconnected once the receiver is gone.
            let (tx3, rx3) = sync_channel::<u32>(2);
            assert_eq!(tx3.try_send(1), Ok(()));
            assert_eq!(tx3.try_send(2), Ok(()));
            assert_eq!(tx3.try_send(3), Err(TrySendError::Full(3)));
            drop(rx3);
            assert_eq!(tx3.try_send(4), Err(TrySendError::Disconnected(4)));
            // Empty while senders remain, Disconnected after the last is gone.
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
            drop(tx);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        })
    });
}

/// recv_timeout semantics, run from whatever context calls it.
fn recv_timeout_semantics(ctx: &str) {
    // Nothing arrives: Timeout, never early.
    let (tx, rx) = channel::<u32>();
    let t0 = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_millis(20)), Err(RecvTimeoutError::Timeout), "{ctx}");
    assert!(t0.elapsed() >= Duration::from_millis(20), "{ctx}: returned early: {:?}", t0.elapsed());
    // Zero timeout behaves like try_recv.
    assert_eq!(rx.recv_timeout(Duration::ZERO), Err(RecvTimeoutError::Timeout), "{ctx}");
    // A value already there is returned at once.
    tx.send(1).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(1), "{ctx}");
    // A value sent while waiting wakes the waiter well before the timeout.
    let tx2 = tx.clone();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx2.send(2).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(2), "{ctx}");
    th.join().unwrap();
    // Senders dropped while waiting: Disconnected, not Timeout.
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        drop(tx);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Err(RecvTimeoutError::Disconnected), "{ctx}");
    th.join().unwrap();
    // ...and at once when already disconnected and empty.
    assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Err(RecvTimeoutError::Disconnected), "{ctx}");
    // After a timeout the channel still works, and a value that a sender
    // left meanwhile is there: nothing was lost by the timed-out wait.
    let (tx, rx) = sync_channel::<u32>(1);
    assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout), "{ctx}");
    tx.send(3).unwrap();
    assert_eq!(rx.recv(), Ok(3), "{ctx}");
    // Rendezvous: a blocked sender is matched by recv_timeout.
    let (tx, rx) = sync_channel::<u32>(0);
    let th = std::thread::spawn(move || tx.send(4));
    assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(4), "{ctx}");
    th.join().unwrap().unwrap();
}

#[test]
fn recv_timeout_like_std_from_tasks_threads_and_blocking() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "recv_timeout semantics", move || {
        recv_timeout_semantics("plain thread");
        rt.block_on(|| {
            recv_timeout_semantics("task");
            blocking(|| recv_timeout_semantics("inside blocking"));
            // Many tasks timing out at once on one worker pair.
            let hs: Vec<_> = (0..32)
                .map(|i| {
                    spawn(move || {
                        let (_tx, rx) = channel::<u32>();
                        let d = Duration::from_millis(1 + i % 5);
                        let t0 = Instant::now();
                        let r = rx.recv_timeout(d);
                        (r, t0.elapsed() >= d)
                    })
                })
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap(), (Err(RecvTimeoutError::Timeout), true));
            }
        });
    });
}

#[test]
fn condvar_wait_timeout_like_std() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "wait_timeout semantics", move || {
        let check = |ctx: &str| {
            let m = Arc::new(Mutex::new(false));
            let cv = Arc::new(Condvar::new());
            // No notification: times out, never early, mutex relocked.
            let t0 = Instant::now();
            let (g, r) = cv.wait_timeout(m.lock(), Duration::from_millis(20));
            assert!(r.timed_out(), "{ctx}");
            assert!(t0.elapsed() >= Duration::from_millis(20), "{ctx}: early: {:?}", t0.elapsed());
            assert!(m.try_lock().is_err(), "{ctx}: guard must hold the lock");
            drop(g);
            // Notified: not timed out.
            let (m2, cv2) = (m.clone(), cv.clone());
            let th = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                *m2.lock() = true;
                cv2.notify_one();
            });
            let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_secs(3600), |ready| !*ready);
            assert!(!r.timed_out() && *g, "{ctx}");
            drop(g);
            th.join().unwrap();
            // wait_timeout_while whose condition never becomes false.
            let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_millis(5), |_| true);
            assert!(r.timed_out(), "{ctx}");
            drop(g);
        };
        check("plain thread");
        rt.block_on(move || {
            check("task");
            blocking(|| check("inside blocking"));
        });
    });
}

/// N timed waiters (long timeouts) all queued; K notify_one: exactly K wake
/// (none spuriously, none twice), the rest stay asleep until notify_all.
#[test]
fn condvar_wait_timeout_counts_notifications_exactly() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "wait_timeout counting", move || {
        rt.block_on(|| {
            struct S {
                m: Mutex<usize>, // waiters queued
                cv: Condvar,
                woke: AtomicUsize,
            }
            let n = 16;
            let k = 5;
            let s = Arc::new(S { m: Mutex::new(0), cv: Condvar::new(), woke: AtomicUsize::new(0) });
            let mut hs = Vec::new();
            for i in 0..n {
                let s = s.clone();
                let run = move || {
                    let mut g = s.m.lock();
                    *g += 1;
                    let (g, r) = s.cv.wait_timeout(g, Duration::from_secs(3600));
                    drop(g);
                    s.woke.fetch_add(1, Ordering::SeqCst);
                    r.timed_out()
                };
                // Half tasks, half plain threads.
                if i % 2 == 0 {
                    hs.push(Ok(spawn(run)));
                } else {
                    hs.push(Err(std::thread::spawn(run)));
                }
            }
            while *s.m.lock() < n {
                usurp::sleep(Duration::from_millis(1));
            }
            // All n are queued (they registered under the mutex, which
            // wait_timeout releases only after queueing).
            for _ in 0..k {
                s.cv.notify_one();
            }
            while s.woke.load(Ordering::SeqCst) < k {
                usurp::sleep(Duration::from_millis(1));
            }
            usurp::sleep(Duration::from_millis(50));
            assert_eq!(s.woke.load(Ordering::SeqCst), k, "a notify_one woke more than one waiter");
            s.cv.notify_all();
            for h in hs {
                let timed_out = match h {
                    Ok(t) => t.join().unwrap(),
                    Err(t) => t.join().unwrap(),
                };
                assert!(!timed_out);
            }
            assert_eq!(s.woke.load(Ordering::SeqCst), n);
        })
    });
}

/// Timed waiters churn (tiny timeouts) on a token queue while a producer
/// adds tokens with `notify_one`: every token is consumed (no hang), and
/// waiters report "notified" no more often than notifications were sent (no
/// spurious wakeups). The exact "a notification is never swallowed" check
/// is `condvar_notify_never_swallowed_by_a_timeout`.
#[test]
fn condvar_timed_waiters_churn_with_notifies() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let rounds = scale(400);
    within(120, "condvar churn", move || {
        rt.block_on(move || {
            struct S {
                m: Mutex<(u64, bool)>, // tokens, stop
                cv: Condvar,
                notified_returns: AtomicUsize,
                notifies: AtomicUsize,
            }
            let s = Arc::new(S {
                m: Mutex::new((0, false)),
                cv: Condvar::new(),
                notified_returns: AtomicUsize::new(0),
                notifies: AtomicUsize::new(0),
            });
            let consumed = Arc::new(AtomicUsize::new(0));
            let cs: Vec<_> = (0..8)
                .map(|i| {
                    let (s, consumed) = (s.clone(), consumed.clone());
                    spawn(move || {
                        let mut g = s.m.lock();
                        loop {
                            if g.0 > 0 {
                                g.0 -= 1;
                                consumed.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            if g.1 {
                                return;
                            }
                            let d = Duration::from_micros(1 + (i * 13) % 40);
                            let (g2, r) = s.cv.wait_timeout(g, d);
                            g = g2;
                            if !r.timed_out() {
                                s.notified_returns.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for r in 0..rounds {
                {
                    let mut g = s.m.lock();
                    g.0 += 1;
                    s.notifies.fetch_add(1, Ordering::SeqCst);
                    s.cv.notify_one();
                }
                if r % 8 == 0 {
                    usurp::sleep(Duration::from_micros(20));
                } else {
                    yield_now();
                }
            }
            s.m.lock().1 = true;
            s.notifies.fetch_add(1, Ordering::SeqCst);
            s.cv.notify_all();
            for c in cs {
                c.join().unwrap();
            }
            assert_eq!(consumed.load(Ordering::SeqCst), rounds);
            // No spurious wakeups: a waiter reports "notified" only for a
            // notification (notify_all counts once per waiter at most 8).
            assert!(
                s.notified_returns.load(Ordering::SeqCst) <= s.notifies.load(Ordering::SeqCst) - 1 + 8,
                "more notified returns ({}) than notifications ({})",
                s.notified_returns.load(Ordering::SeqCst),
                s.notifies.load(Ordering::SeqCst)
            );
        })
    });
}

/// A notification is never swallowed by a waiter that reports a timeout.
/// Timed waiters churn with tiny timeouts beside one untimed waiter U; each
/// round notifies once, only when every earlier notification was
/// acknowledged (`pending == 0`) and U is queued, so a live waiter is always
/// queued and `notify_one` must reach one (U or a live timed waiter), which
/// acknowledges it. If the timer and the notifier could both win a timed
/// waiter, the notification is lost to a waiter reporting a timeout and the
/// round never completes. Panics with "notification swallowed" after 10 s.
fn condvar_notify_race(rounds: usize) {
    struct S {
        m: Mutex<(usize, bool, bool)>, // pending, U queued, stop
        cv: Condvar,
    }
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(move || {
        let s = Arc::new(S { m: Mutex::new((0, false, false)), cv: Condvar::new() });
        let timed: Vec<_> = (0..6u64)
            .map(|i| {
                let s = s.clone();
                spawn(move || {
                    let mut g = s.m.lock();
                    let mut k = i;
                    while !g.2 {
                        k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let (g2, r) = s.cv.wait_timeout(g, Duration::from_nanos(500 + (k >> 33) % 30_000));
                        g = g2;
                        if !r.timed_out() {
                            g.0 = g.0.saturating_sub(1); // acknowledged
                        }
                        if k % 5 == 0 {
                            drop(g);
                            yield_now();
                            g = s.m.lock();
                        }
                    }
                })
            })
            .collect();
        let s2 = s.clone();
        let u = spawn(move || {
            let mut g = s2.m.lock();
            while !g.2 {
                g.1 = true;
                g = s2.cv.wait(g);
                g.1 = false;
                g.0 = g.0.saturating_sub(1);
            }
        });
        for _ in 0..rounds {
            let t0 = Instant::now();
            loop {
                {
                    let mut g = s.m.lock();
                    if g.0 == 0 && g.1 {
                        g.0 = 1;
                        s.cv.notify_one();
                        break;
                    }
                }
                assert!(t0.elapsed() < Duration::from_secs(10), "condvar race: notification swallowed");
                yield_now();
            }
        }
        s.m.lock().2 = true;
        s.cv.notify_all();
        for t in timed {
            t.join().unwrap();
        }
        u.join().unwrap();
    });
}

#[test]
fn condvar_notify_never_swallowed_by_a_timeout() {
    let rounds = scale(20_000);
    within(300, "condvar notify race", move || condvar_notify_race(rounds));
}

/// The race: on 2 workers, receivers loop on `recv_timeout` with tiny
/// timeouts while senders send; the timer and a sender often go for the same
/// parked receiver. Every value must be received exactly once. Returns the
/// number of timeouts seen (the race must actually happen).
fn recv_timeout_race(chans: usize, per_sender: usize) -> usize {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let senders_per_chan = 2;
    rt.block_on(move || {
        let mut rxs = Vec::new();
        let mut sends = Vec::new();
        for c in 0..chans {
            let (tx, rx) = channel::<u64>();
            for s in 0..senders_per_chan {
                let tx = tx.clone();
                sends.push(spawn(move || {
                    let base = ((c * senders_per_chan + s) * per_sender) as u64;
                    for i in 0..per_sender as u64 {
                        tx.send(base + i).unwrap();
                        match i % 16 {
                            0 => usurp::sleep(Duration::from_micros(1 + (i % 7) * 3)),
                            5 | 11 => yield_now(),
                            _ => {}
                        }
                    }
                }));
            }
            drop(tx);
            rxs.push(spawn(move || {
                let mut got = Vec::new();
                let mut timeouts = 0usize;
                let mut k = c as u64;
                loop {
                    k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let d = Duration::from_nanos(500 + (k >> 33) % 20_000);
                    match rx.recv_timeout(d) {
                        Ok(v) => got.push(v),
                        Err(RecvTimeoutError::Timeout) => timeouts += 1,
                        Err(RecvTimeoutError::Disconnected) => return (got, timeouts),
                    }
                }
            }));
        }
        for s in sends {
            s.join().unwrap();
        }
        let total = chans * senders_per_chan * per_sender;
        let mut seen = vec![0u8; total];
        let mut timeouts = 0;
        for r in rxs {
            let (got, t) = r.join().unwrap();
            timeouts += t;
            for v in got {
                seen[v as usize] += 1;
            }
        }
        let lost = seen.iter().filter(|&&c| c == 0).count();
        let dup = seen.iter().filter(|&&c| c > 1).count();
        assert!(lost == 0 && dup == 0, "recv_timeout race: {lost} values lost, {dup} received twice, of {total}");
        timeouts
    })
}

#[test]
fn recv_timeout_race_every_value_exactly_once() {
    let per = scale(20_000);
    let timeouts = within(300, "recv_timeout race", move || {
        let mut t = 0;
        for _ in 0..3 {
            t += recv_timeout_race(4, per);
        }
        t
    });
    // The race was exercised: receivers did time out between values.
    assert!(timeouts > 0, "no receiver ever timed out: the race was not exercised");
}

/// Runs `scenario` in a child process with the wait claim's compare-exchange
/// replaced by a plain store (both the timer and a waker "win"); the child
/// must fail with `symptom` (it may also die from a signal: a stray wake
/// reaches a task that moved on).
fn negative_control(test: &'static str, var: &'static str, symptom: &str, scenario: impl Fn()) {
    if std::env::var_os(var).is_some() {
        usurp::sync::set_wait_claim_for_tests(false);
        let t0 = Instant::now();
        // Keep racing (bounded) until the symptom shows; the assertion in
        // the scenario fails the child.
        while t0.elapsed() < Duration::from_secs(60) {
            scenario();
        }
        println!("CLAIM-OFF: no failure observed");
        return;
    }
    let (out, _) = within(240, "negative control child", move || run_child(test, var));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "with the claim switched off {test} passed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(symptom) || stdout.contains(symptom) || out.status.code().is_none(),
        "the child failed for another reason: {:?}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Negative control for the wait claim: `recv_timeout_race` loses values.
#[test]
fn recv_timeout_race_negative_control() {
    negative_control("recv_timeout_race_negative_control", "USURP_CLAIM_OFF_RECV", "values lost", || {
        recv_timeout_race(4, scale(20_000));
    });
}

/// Negative control for the wait claim: `condvar_notify_race` swallows a
/// notification (the round never completes; the scenario's own 10 s bound
/// turns that into a failure).
#[test]
fn condvar_notify_race_negative_control() {
    negative_control("condvar_notify_race_negative_control", "USURP_CLAIM_OFF_CONDVAR", "notification swallowed", || {
        condvar_notify_race(scale(20_000));
    });
}
