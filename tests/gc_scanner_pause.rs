//! A root scanner runs inside a collection's pause, on the collector, which
//! is the stop's *stopper* for the scheduler. It used to be able to end
//! that pause (red-team RT-gc item 2, session 14): `Runtime::start_the_world`
//! was accepted (only "caller is the stopper" was checked) and a
//! `drop(Runtime)` restarted the world too (its "dropped by the stopper"
//! path), so tasks ran and stored pointers in the middle of the marking and
//! reachable objects were freed. Now the collector's stops are marked
//! (`stw::stop_for_collection`): `start_the_world` there panics, a drop
//! there is deferred to the pause's end (the shutdown then begins, as for a
//! drop from one of the runtime's own tasks), and `yield_now` there says it
//! is inside a GC pause (it used to advise calling `start_the_world`).
//!
//! Each test fails without the fix (checked by reverting
//! `crates/sched/src/{stw.rs,runtime.rs,glue/gc_world.rs,worker/switch.rs}`):
//! the first finds `start_the_world` accepted (no panic), the second finds
//! the runtime shut down (the world restarted for it) inside the pause,
//! the third the old message. Each runs under a watchdog (`within`).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_testsupport::within;

/// Silences the default panic hook for the panics these tests expect.
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let m = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
            if !m.contains("inside a GC pause") && !m.contains("holds the world stopped") {
                prev(info);
            }
        }));
    });
}

fn message(e: Box<dyn std::any::Any + Send>) -> String {
    match e.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default(),
    }
}

/// A task that counts while it runs (it does not run while the world is
/// stopped).
fn counter(rt: &Runtime) -> Arc<AtomicUsize> {
    let c = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    let _ = rt.spawn(move || loop {
        c2.fetch_add(1, Ordering::SeqCst);
        usurp::sleep(Duration::from_micros(200));
    });
    let t0 = Instant::now();
    while c.load(Ordering::SeqCst) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the counting task did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    c
}

#[test]
fn start_the_world_in_a_root_scanner_panics() {
    quiet();
    within(60, "start_the_world in a root scanner", || {
        let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
        let count = counter(&rt);
        let weak = Arc::downgrade(&rt);
        let armed = Arc::new(AtomicBool::new(false));
        let (a2, c2) = (armed.clone(), count.clone());
        // (count before, count after) the call, with the world meant stopped.
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        rt.heap().add_root_scanner(Box::new(move |_| {
            if !a2.swap(false, Ordering::SeqCst) {
                return;
            }
            let Some(rt) = weak.upgrade() else { return };
            let before = c2.load(Ordering::SeqCst);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.start_the_world()));
            std::thread::sleep(Duration::from_millis(30));
            *s2.lock().unwrap() = Some((before, c2.load(Ordering::SeqCst), r.err().map(message)));
        }));
        armed.store(true, Ordering::SeqCst);
        rt.heap().collect(); // from this plain thread: it is the stopper
        let (before, after, panicked) = seen.lock().unwrap().take().expect("the scanner did not run");
        let msg = panicked.expect("Runtime::start_the_world was accepted inside a GC pause");
        let expected = msg.contains("inside a GC pause") && msg.contains("a root scanner may not restart the world");
        assert!(expected, "{msg:?}");
        assert_eq!(before, after, "tasks ran inside the collection's pause");
        // The collector restarted the world at its pause's end.
        let n = count.load(Ordering::SeqCst);
        let t0 = Instant::now();
        while count.load(Ordering::SeqCst) == n {
            assert!(t0.elapsed() < Duration::from_secs(5), "the world did not restart after the collection");
            std::thread::sleep(Duration::from_millis(1));
        }
        rt.heap().collect();
    });
}

#[test]
fn drop_runtime_in_a_root_scanner_waits_for_the_pause_end() {
    within(60, "drop(Runtime) in a root scanner", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let heap = rt.heap().clone();
        let count = counter(&rt);
        // A task that never finishes, joined by a plain thread: the join
        // returns (an error: the task is abandoned) once the shutdown is
        // done, which needs the world running.
        let h = rt.spawn(|| loop {
            usurp::sleep(Duration::from_millis(1));
        });
        let joined = Arc::new(AtomicBool::new(false));
        let j2 = joined.clone();
        let joiner = std::thread::spawn(move || {
            let r = h.join();
            j2.store(true, Ordering::SeqCst);
            r.is_err()
        });
        let slot: Arc<Mutex<Option<Runtime>>> = Arc::new(Mutex::new(None));
        let (s2, c2, j3) = (slot.clone(), count.clone(), joined.clone());
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        heap.add_root_scanner(Box::new(move |_| {
            let Some(rt) = s2.try_lock().ok().and_then(|mut g| g.take()) else { return };
            let before = c2.load(Ordering::SeqCst);
            drop(rt); // returns: the shutdown waits for the pause's end
            std::thread::sleep(Duration::from_millis(50));
            *seen2.lock().unwrap() = Some((before, c2.load(Ordering::SeqCst), j3.load(Ordering::SeqCst)));
        }));
        *slot.lock().unwrap() = Some(rt);
        heap.collect();
        let (before, after, joined_in_pause) = seen.lock().unwrap().take().expect("the scanner did not run");
        assert_eq!(before, after, "drop(Runtime) in a root scanner let tasks run inside the pause");
        assert!(
            !joined_in_pause,
            "drop(Runtime) in a root scanner restarted the world and shut the runtime down inside the pause"
        );
        // The shutdown then happens: the task is abandoned, the counter stops.
        assert!(joiner.join().unwrap(), "the never-ending task's join did not fail after the shutdown");
        let t0 = Instant::now();
        loop {
            let n = count.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            if count.load(Ordering::SeqCst) == n {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "the runtime did not shut down after the pause");
        }
        heap.collect(); // the heap (a clone) still works
    });
}

#[test]
fn yield_now_in_a_root_scanner_names_the_gc_pause() {
    quiet();
    within(60, "yield_now in a root scanner", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let heap = rt.heap().clone();
        let armed = Arc::new(AtomicBool::new(false));
        let a2 = armed.clone();
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        heap.add_root_scanner(Box::new(move |_| {
            if a2.swap(false, Ordering::SeqCst) {
                let r = std::panic::catch_unwind(usurp::yield_now);
                *s2.lock().unwrap() = Some(r.err().map(message));
            }
        }));
        let h2 = heap.clone();
        rt.block_on(move || {
            armed.store(true, Ordering::SeqCst);
            h2.collect(); // from a task: the scanner runs on it
        });
        let msg = seen.lock().unwrap().take().expect("the scanner did not run").expect("yield_now did not panic");
        assert!(msg.contains("inside a GC pause") && !msg.contains("call Runtime::start_the_world"), "{msg:?}");
    });
}
