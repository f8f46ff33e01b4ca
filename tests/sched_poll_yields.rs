//! Busy-polling with the runtime's non-blocking calls (red-team RT-sched
//! finding 6, `poll.rs` / `pollstw.rs`): on `workers(1)`, a task looping on
//! `Receiver::try_recv`, `Mutex::try_lock`, `SyncSender::try_send` or
//! `JoinHandle::is_finished` used to keep its worker for ever (the task it
//! waits for never ran: livelock), and a stop-the-world waited for such a
//! loop until something else ended it (4 s in the repro). A failed call now
//! honours a pending checkpoint request (quantum up, or a stop waiting), so
//! the loop yields.
//!
//! Checked by reverting the fix (the `checkpoint()` on the failure paths in
//! `join.rs`, `sync/mpsc.rs`, `sync/mutex.rs`): each `*_on_one_worker` test
//! then times out in its watchdog, and `stop_waits_little_for_try_recv_loop`
//! waits out its sender (over 1 s).

use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp_testsupport::within;

fn one_worker() -> usurp::Runtime {
    usurp::Runtime::builder().workers(1).build().unwrap()
}

#[test]
fn try_recv_loop_on_one_worker() {
    within(20, "try_recv poll loop on workers(1)", || {
        let rt = one_worker();
        rt.block_on(|| {
            let (tx, rx) = usurp::channel::<u32>();
            usurp::spawn(move || {
                usurp::sleep(Duration::from_millis(1));
                tx.send(1).unwrap();
            });
            while rx.try_recv().is_err() {}
        });
    });
}

#[test]
fn try_lock_loop_on_one_worker() {
    within(20, "try_lock poll loop on workers(1)", || {
        let rt = one_worker();
        rt.block_on(|| {
            let m = Arc::new(usurp::Mutex::new(()));
            let m2 = m.clone();
            usurp::spawn(move || {
                let _g = m2.lock();
                usurp::sleep(Duration::from_millis(1));
            });
            // Let the holder take the lock first.
            usurp::yield_now();
            while m.try_lock().is_err() {}
        });
    });
}

#[test]
fn try_send_loop_on_one_worker() {
    within(20, "try_send poll loop on workers(1)", || {
        let rt = one_worker();
        rt.block_on(|| {
            let (tx, rx) = usurp::sync_channel::<u32>(1);
            tx.send(0).unwrap();
            let h = usurp::spawn(move || {
                usurp::sleep(Duration::from_millis(1));
                let a = rx.recv().unwrap();
                let b = rx.recv().unwrap();
                (a, b)
            });
            while tx.try_send(1).is_err() {}
            assert_eq!(h.join().unwrap(), (0, 1));
        });
    });
}

#[test]
fn is_finished_loop_on_one_worker() {
    within(20, "is_finished poll loop on workers(1)", || {
        let rt = one_worker();
        rt.block_on(|| {
            let h = usurp::spawn(|| {
                usurp::sleep(Duration::from_millis(1));
                3
            });
            while !h.is_finished() {}
            assert_eq!(h.join().unwrap(), 3);
        });
    });
}

/// A plain thread stops the world while a task polls `try_recv` (nothing
/// arrives until 3 s later): the stop must not wait for the sender.
#[test]
fn stop_waits_little_for_try_recv_loop() {
    within(30, "stop-the-world against a try_recv loop", || {
        let rt = usurp::Runtime::builder().workers(2).build().unwrap();
        let (tx, rx) = usurp::channel::<u32>();
        let h = rt.spawn(move || while rx.try_recv().is_err() {});
        std::thread::sleep(Duration::from_millis(50));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            let _ = tx.send(1);
        });
        let t = Instant::now();
        let ttsp = rt.stop_the_world();
        rt.start_the_world();
        let waited = t.elapsed();
        sender.join().unwrap();
        h.join().unwrap();
        assert!(waited < Duration::from_secs(1), "stop-the-world waited {waited:?} (ttsp {ttsp:?}) for a try_recv loop");
    });
}
