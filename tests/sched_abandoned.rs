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

/// A `Receiver` owned by the abandoned task (moved into it, so on its own
/// stack): nobody can ever receive, so a send that meets its parked
/// receive disconnects the channel (issue 11 item 7). The shutdown merge
/// of session 12 dropped this to serve shared receivers (the test above)
/// and a rendezvous or bounded send then waited for ever (the review,
/// helper-95): `within` catches that hang.
type SendFn = Box<dyn Fn(u32) -> Result<(), u32> + Send>;

fn send_to_an_owned_receiver_of_an_abandoned_task(bound: Option<usize>) -> Vec<Result<(), u32>> {
    within(30, "send to an abandoned owner", move || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let (send, rx): (SendFn, usurp::Receiver<u32>) = match bound {
            None => {
                let (tx, rx) = channel::<u32>();
                (Box::new(move |v| tx.send(v).map_err(|e| e.0)), rx)
            }
            Some(b) => {
                let (tx, rx) = usurp::sync_channel::<u32>(b);
                (Box::new(move |v| tx.send(v).map_err(|e| e.0)), rx)
            }
        };
        let _h = rt.spawn(move || {
            let _ = rx.recv();
        });
        parked(&rt); // in recv
        drop(rt);
        vec![send(5), send(6), send(7)]
    })
}

/// Serialises the two tests below (the control's switch is process-wide).
static OWNER_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn send_to_a_receiver_owned_by_an_abandoned_task_disconnects() {
    let _g = OWNER_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for bound in [Some(0), Some(1), None] {
        let r = send_to_an_owned_receiver_of_an_abandoned_task(bound);
        assert_eq!(r, vec![Err(5), Err(6), Err(7)], "bound {bound:?}");
    }
}

/// Negative control: without the owner check, the unbounded channel takes
/// the values (into a buffer nobody reads) and the rendezvous send waits
/// for ever (seen from a thread, given 2 s).
#[test]
fn negative_control_without_the_owner_check_a_rendezvous_send_hangs() {
    let _g = OWNER_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    usurp_sched::hooks::set_abandoned_owner_disconnects_for_tests(false);
    let r = send_to_an_owned_receiver_of_an_abandoned_task(None);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(send_to_an_owned_receiver_of_an_abandoned_task(Some(0)));
    });
    let hung = done_rx.recv_timeout(Duration::from_secs(2)).is_err();
    usurp_sched::hooks::set_abandoned_owner_disconnects_for_tests(true);
    assert_eq!(r, vec![Ok(()), Ok(()), Ok(())]);
    assert!(hung, "the rendezvous send returned without the owner check");
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
