//! Issue 11 item 7: tasks abandoned when their runtime shuts down must not
//! swallow what other threads hand to waiters afterwards: the next unlock
//! of a Mutex goes to a live waiter (not to a dead task, which would keep it
//! locked forever), a `notify_one` wakes a live waiter, a value sent to a
//! receiver blocked in an abandoned task is not handed to it (it stays for
//! the `Receiver`, which may be shared: session 12, G1, it used to turn the
//! channel disconnected for everyone), and a `Sender` captured by a task
//! that never started is dropped (an outside receiver sees the
//! disconnection). The same during the shutdown, before the abandonment
//! (session 12, G5): tests/sched_shutdown_handoff.rs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::{channel, Condvar, Mutex, Runtime};
use usurp_testsupport::{wait_until, within};

/// Waits until the runtime's one task is parked (read through a task dump):
/// the shutdown below must find it waiting (a fixed 50 ms sleep was a guess
/// that a loaded qemu run could miss, and the test then checked nothing).
fn parked(rt: &Runtime) {
    wait_until(Duration::from_secs(25), "the task parks", || {
        rt.dump_tasks().tasks.iter().any(|t| matches!(t.state, usurp::TaskState::Parked(_)))
    });
}

#[test]
fn mutex_unlock_after_shutdown_skips_abandoned_waiters() {
    within(30, "mutex after shutdown", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let m = Arc::new(Mutex::new(0u32));
        let guard = m.lock();
        let m2 = m.clone();
        let _h = rt.spawn(move || *m2.lock() += 1);
        parked(&rt); // on the lock
        drop(rt); // the parked task is abandoned
        drop(guard);
        // Before: the lock was handed to the dead task; this blocked forever.
        let g = m.lock();
        assert_eq!(*g, 0, "an abandoned task ran");
    });
}

#[test]
fn notify_one_after_shutdown_wakes_a_live_waiter() {
    within(30, "condvar after shutdown", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = pair.clone();
        // A task waits first (it is first in the queue).
        let _h = rt.spawn(move || {
            let (m, c) = &*p2;
            let mut g = m.lock();
            while !*g {
                g = c.wait(g);
            }
        });
        parked(&rt);
        drop(rt);
        // Then a plain thread waits.
        let p3 = pair.clone();
        let waiting = Arc::new(AtomicBool::new(false));
        let w2 = waiting.clone();
        let th = std::thread::spawn(move || {
            let (m, c) = &*p3;
            let mut g = m.lock();
            w2.store(true, Ordering::SeqCst);
            while !*g {
                g = c.wait(g);
            }
        });
        while !waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Once the thread holds the lock and waits, set the flag and notify
        // one: the live thread must get it (before: the dead task did).
        {
            let (m, c) = &*pair;
            let mut g = m.lock();
            *g = true;
            c.notify_one();
        }
        th.join().unwrap();
    });
}

#[test]
fn send_to_a_receiver_in_an_abandoned_task_keeps_the_value() {
    let (r, rx) = within(30, "send after shutdown", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let (tx, rx) = channel::<u32>();
        let rx = Arc::new(rx);
        let rx2 = rx.clone();
        let _h = rt.spawn(move || {
            let _ = rx2.recv();
        });
        parked(&rt); // in recv
        drop(rt);
        (tx.send(5), rx)
    });
    // First: Ok(()), and the value vanished with the dead task. Then (issue
    // 11): `Err(5)`, the channel disconnected for good although the shared
    // `Receiver` was alive. Now the value waits for the Receiver.
    assert_eq!(r.map_err(|e| e.0), Ok(()));
    assert_eq!(rx.try_recv().ok(), Some(5), "the value went to the abandoned task");
}

#[test]
fn sender_captured_by_a_task_that_never_ran_is_dropped() {
    within(30, "sender of a never-started task", || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let shutting = Arc::new(AtomicBool::new(false));
        let s2 = shutting.clone();
        // Occupies the only worker until the shutdown has begun.
        let _busy = rt.spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = channel::<u32>();
        let _never = rt.spawn(move || {
            let _ = tx.send(1);
        });
        let dropper = std::thread::spawn(move || drop(rt));
        std::thread::sleep(Duration::from_millis(50)); // shutdown begins
        shutting.store(true, Ordering::SeqCst);
        dropper.join().unwrap();
        // Before: the Sender stayed inside the abandoned task: recv blocked.
        assert!(rx.recv().is_err(), "the never-started task's message arrived");
    });
}
