//! Issue 11 item 8: `JoinHandle::join` returns only after the task's
//! task-local destructors have run (as std's join does for thread-locals).
//! Before, the join state was completed first and the destructors ran
//! afterwards, racing with the joiner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::Runtime;
use usurp_testsupport::within;

/// Sets its flag when dropped, after a pause that keeps the window between
/// "result published" and "destructors done" wide open.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        self.0.store(true, Ordering::SeqCst);
    }
}

usurp::task_local! {
    static GUARD: std::cell::RefCell<Option<SetOnDrop>> = std::cell::RefCell::new(None);
}

#[test]
fn join_returns_after_task_local_destructors() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (from_task, from_thread) = within(30, "join after locals", move || {
        // Joined from another task.
        let from_task = rt.block_on(|| {
            let dropped = Arc::new(AtomicBool::new(false));
            let d2 = dropped.clone();
            let h = usurp::spawn(move || GUARD.with(|g| *g.borrow_mut() = Some(SetOnDrop(d2))));
            h.join().unwrap();
            dropped.load(Ordering::SeqCst)
        });
        // Joined from a plain thread.
        let dropped = Arc::new(AtomicBool::new(false));
        let d2 = dropped.clone();
        rt.spawn(move || GUARD.with(|g| *g.borrow_mut() = Some(SetOnDrop(d2)))).join().unwrap();
        (from_task, dropped.load(Ordering::SeqCst))
    });
    assert!(from_task, "join (from a task) returned before the task-local destructor had run");
    assert!(from_thread, "join (from a thread) returned before the task-local destructor had run");
}

/// A task-local value whose destructor panics aborts the process (as std
/// does for a thread-local's), with a message that says so, instead of
/// "panic in a function that cannot unwind" naming nothing (red-team
/// finding F11, session 11).
#[test]
fn a_panicking_task_local_destructor_aborts_naming_it() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb went off");
        }
    }
    usurp::task_local! {
        static BOMB: Bomb = Bomb;
    }
    if std::env::var("USURP_CHILD_TL_PANIC").is_ok() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        rt.block_on(|| {
            let h = usurp::spawn(|| BOMB.with(|_| ()));
            let _ = h.join();
        });
        std::process::exit(0);
    }
    let (out, _) = usurp_testsupport::run_child("a_panicking_task_local_destructor_aborts_naming_it", "USURP_CHILD_TL_PANIC");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child succeeded: {err}");
    assert!(err.contains("task-local value's destructor panicked") && err.contains("bomb went off"), "{err}");
}
