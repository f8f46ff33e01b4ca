//! A plain thread that holds the world stopped (`Runtime::stop_the_world`)
//! and then waits for a task (`block_on`, `JoinHandle::join`) waits for
//! itself: no task runs until it starts the world. It used to hang silently
//! (probe 11, F5); it now panics with the same message as `Heap::collect`
//! there ("holds the world stopped"), before its wait queues anything
//! (`stw::thread_about_to_wait`), so the primitives still work once the
//! world is started again. Its waits on channels, a `Mutex` or a `Select`
//! are not refused: another plain thread may complete them, and timed ones
//! time out. A plain thread
//! that exits holding the stop used to leave the world stopped for ever; its
//! thread-local record of the stop now restarts the world, with a message.
//! And a runtime dropped by the thread that holds its world stopped (as
//! when such a panic unwinds past the runtime) restarts the world first:
//! its workers parked for the stop used to wait for ever, and the drop with
//! them.
//!
//! Without the check the scenarios hang: `within` fails them after 60 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::sync::Select;
use usurp::Runtime;
use usurp_testsupport::{panic_text, run_child, within};

/// Runs `f` (a wait) on this plain thread while it holds `rt`'s world
/// stopped: it must panic clearly; the world is then started again.
fn must_panic_inside_stop(rt: &Runtime, what: &str, f: impl FnOnce()) {
    rt.stop_the_world();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err(&format!("{what} inside the thread's own stop returned"));
    let m = panic_text(&*p);
    assert!(m.contains("holds the world stopped") && m.contains("would wait for itself"), "{what}: {m}");
    rt.start_the_world();
}

#[test]
fn a_plain_thread_holding_the_stop_gets_a_panic_when_it_waits() {
    let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let bg_stop = Arc::new(AtomicBool::new(false));
    let s = bg_stop.clone();
    let _bg = rt.spawn(move || {
        while !s.load(Ordering::Relaxed) {
            usurp::sleep(Duration::from_millis(1));
        }
    });
    let r = rt.clone();
    within(60, "waits of a plain thread inside its own stop", move || {
        let rt = &*r;
        // block_on: panics before it spawns; works after the start.
        must_panic_inside_stop(rt, "block_on", || {
            rt.block_on(|| 1);
        });
        assert_eq!(rt.block_on(|| 1), 1);

        // JoinHandle::join of a task that cannot finish during the stop.
        let go = Arc::new(AtomicBool::new(false));
        let g = go.clone();
        let h = rt.spawn(move || {
            while !g.load(Ordering::Relaxed) {
                usurp::sleep(Duration::from_millis(1));
            }
            5
        });
        must_panic_inside_stop(rt, "join", move || {
            let _ = h.join();
        });
        go.store(true, Ordering::Relaxed);

        // Waits whose other side may be another plain thread, which the
        // stop does not stop, or that have a deadline, are not refused
        // (the first version refused them; its review showed a stopper
        // receiving from another plain thread, and a timed wait that used
        // to time out).
        rt.stop_the_world();
        let (tx, rx) = usurp::channel::<u32>();
        assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(usurp::sync::RecvTimeoutError::Timeout));
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(rx.recv(), Ok(7), "a stopper's recv from another plain thread");
        feeder.join().unwrap();
        let m = Arc::new(usurp::Mutex::new(0u32));
        let (m2, (held_tx, held_rx)) = (m.clone(), std::sync::mpsc::channel());
        let holder = std::thread::spawn(move || {
            let mut g = m2.lock();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            *g += 1;
        });
        held_rx.recv().unwrap();
        assert_eq!(*m.lock(), 1, "a stopper's lock of a Mutex another plain thread held");
        holder.join().unwrap();
        let (stx, srx) = usurp::sync_channel::<u32>(1);
        stx.send(3).unwrap();
        let mut sel = Select::new();
        sel.recv(&srx);
        let chosen = sel.wait();
        assert_eq!(chosen.recv(&srx), Ok(3), "a stopper's Select with a ready case");
        rt.start_the_world();

        // Without a stop held, nothing changed.
        assert_eq!(rt.block_on(|| 2), 2);
    });
    bg_stop.store(true, Ordering::Relaxed);
}

#[test]
fn thread_exits_holding_the_stop_child() {
    if std::env::var_os("USURP_CHILD_THREAD_EXITS_STOPPED").is_none() {
        return; // only runs as the child of the test below
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the world stayed stopped", 99);
    let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let r = rt.clone();
    std::thread::spawn(move || {
        r.stop_the_world();
    })
    .join()
    .unwrap();
    // Needs the workers: hangs if the world is still stopped.
    println!("CHILD-RESULT block_on returned {}", rt.block_on(|| 1));
    rt.stop_the_world(); // and the stop is free for another thread
    rt.start_the_world();
}

#[test]
fn a_plain_thread_exiting_with_the_stop_restarts_the_world() {
    let (out, _) = run_child("thread_exits_holding_the_stop_child", "USURP_CHILD_THREAD_EXITS_STOPPED");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?}): {stdout}\n{stderr}", out.status.code());
    assert!(stdout.contains("CHILD-RESULT block_on returned 1"), "{stdout}\n{stderr}");
    assert!(stderr.contains("a thread exited while it held the world stopped"), "{stderr}");
}

#[test]
fn drop_while_stopped_child() {
    if std::env::var_os("USURP_CHILD_DROP_WHILE_STOPPED").is_none() {
        return; // only runs as the child of the test below
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the drop hung", 99);
    let rt = Runtime::builder().workers(2).build().unwrap();
    // Keeps both workers busy, so that they park for the stop (idle
    // workers count as stopped without parking).
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..2 {
        let r = running.clone();
        let _ = rt.spawn(move || {
            r.fetch_add(1, Ordering::SeqCst);
            loop {
                usurp::yield_now();
            }
        });
    }
    usurp_testsupport::wait_until(Duration::from_secs(30), "busy tasks started", || {
        running.load(Ordering::SeqCst) == 2
    });
    rt.stop_the_world();
    drop(rt);
    println!("CHILD-RESULT dropped");
}

#[test]
fn a_runtime_dropped_by_its_stopper_thread_restarts_the_world_first() {
    let (out, _) = run_child("drop_while_stopped_child", "USURP_CHILD_DROP_WHILE_STOPPED");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?}): {stdout}\n{stderr}", out.status.code());
    assert!(stdout.contains("CHILD-RESULT dropped"), "{stdout}\n{stderr}");
}
