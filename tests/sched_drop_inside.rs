//! Issue 11 item 6: dropping a `Runtime` from inside one of its own tasks.
//! `Drop` cannot wait for the task's own worker to stop there; it used to
//! return at once, the workers exited, the shared state was freed under
//! tasks still parked (a later unlock from a plain thread wrote into freed
//! memory) and their joiners hung although `join` promises an error. Now
//! the shared state is kept alive and a reaper thread finishes the shutdown
//! (waits for the workers, then abandons what is left) as `Drop` does
//! outside the runtime: joiners of unfinished tasks get an error, and late
//! wake-ups find valid memory.

use std::sync::{mpsc, Arc, Mutex as StdMutex};
use std::time::Duration;
use usurp::{Mutex, Runtime};
use usurp_testsupport::within;

#[test]
fn runtime_dropped_from_its_own_task_abandons_cleanly() {
    within(30, "drop from inside", || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        // A task parked on a mutex that a plain thread (this one) holds.
        let m = Arc::new(Mutex::new(0u32));
        let guard = m.lock();
        let m2 = m.clone();
        let parked = rt.spawn(move || {
            *m2.lock() += 1;
        });
        // Let it run and park (nothing below depends on the timing: if it
        // has not parked yet, it is abandoned before it runs).
        std::thread::sleep(Duration::from_millis(50));
        let slot = Arc::new(StdMutex::new(None::<Runtime>));
        let s2 = slot.clone();
        let dropper = rt.spawn(move || {
            let rt = loop {
                if let Some(rt) = s2.lock().unwrap().take() {
                    break rt;
                }
                usurp::yield_now();
            };
            drop(rt); // from inside one of its own tasks
            1u32
        });
        *slot.lock().unwrap() = Some(rt);
        // The dropper finishes normally (or is abandoned if its worker
        // stopped first): either way `join` returns.
        let _ = dropper.join();
        // The parked task never finishes: its joiner gets an error.
        assert!(parked.join().is_err(), "the joiner of a task left parked at shutdown got Ok");
        // A late unlock from a plain thread must find valid memory (before:
        // it queued the woken task on the freed runtime's global queue).
        drop(guard);
    });
}

/// Spawns on `rt` a task that gets `rt` itself (handed over once the task
/// runs) and drops it, the runtime's last handle, from inside it, then
/// runs `after`; the receiver gets `after`'s result if the task got that
/// far.
fn drop_from_inside<T: Send + 'static>(rt: Runtime, after: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let slot = Arc::new(StdMutex::new(None::<Runtime>));
    let s2 = slot.clone();
    let (tx, rx) = mpsc::channel();
    rt.spawn(move || {
        let rt = loop {
            if let Some(rt) = s2.lock().unwrap().take() {
                break rt;
            }
            usurp::yield_now();
        };
        drop(rt); // the last handle, from inside one of its tasks
        let _ = tx.send(after());
    });
    *slot.lock().unwrap() = Some(rt);
    rx
}

/// The task that drops its own runtime runs on after the drop, through
/// `yield_now`, `blocking` and `Heap::collect`, as before session 14's
/// shutdown changes (which send every other task's switches to the
/// scheduler loop at shutdown: a review found the dropper itself abandoned
/// at its next yield, the code after it never run). Negative control: with
/// `Shared::shutting_down_for` reduced to the shutdown flag, this fails
/// (checked by hand: the flag is never set).
#[test]
fn the_task_that_dropped_its_runtime_runs_on() {
    for call in ["yield", "blocking", "collect"] {
        let ran_on = within(30, "dropper runs on", move || {
            let rt = Runtime::builder().workers(2).build().unwrap();
            let heap = rt.heap().clone();
            let rx = drop_from_inside(rt, move || match call {
                "yield" => usurp::yield_now(),
                "blocking" => usurp::blocking(|| std::thread::sleep(Duration::from_millis(1))),
                _ => heap.collect(),
            });
            rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        assert!(ran_on, "the task that dropped its runtime never got past {call} after the drop");
    }
}

/// The dropper runs on on a one-worker runtime through what used to
/// abandon it (review 107 of session 14's fix): 200 yields (every 61st
/// went to the scheduler loop, which stopped the worker), 200 yields
/// beside another task that yields for ever (a yield or preemption switched
/// to that task, whose next switch stopped the worker with the dropper
/// queued), and dropping another runtime (its `blocking` wait handed the
/// worker to a thread that stopped it). Negative control: without
/// `Shared::runs_on_at_shutdown` in `yield_raw`, `preempt_current` and
/// `blocking_impl`, all three fail (checked by hand).
#[test]
fn the_dropper_runs_on_through_many_yields_a_queued_task_and_another_drop() {
    for case in ["200 yields", "200 yields beside a yielding task", "dropping another runtime"] {
        let ran_on = within(30, "dropper runs on", move || {
            let rt = Runtime::builder().workers(1).build().unwrap();
            if case == "200 yields beside a yielding task" {
                rt.spawn(|| loop {
                    usurp::yield_now();
                });
            }
            let rx = drop_from_inside(rt, move || {
                if case == "dropping another runtime" {
                    drop(Runtime::builder().workers(1).build().unwrap());
                } else {
                    for _ in 0..200 {
                        usurp::yield_now();
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        assert!(ran_on, "the task that dropped its runtime never got past \"{case}\" after the drop");
    }
}

/// The dropper that runs on still honours a stop of its dropped runtime at
/// its yields (review 108: its yields kept it running through a stop, so a
/// collection from a plain thread waited until the dropper parked or
/// ended, and for ever if the dropper waited for that collection). Here
/// the dropper yields until a plain thread's `heap.collect()` completes.
/// Negative control: without the stop check in `dropper_runs_on`, the
/// dropper gives up after 3 s without seeing the collection end.
#[test]
fn the_dropper_honours_a_stop_at_its_yields() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let saw = within(30, "dropper vs a collection from a plain thread", || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let heap = rt.heap().clone();
        let dropped = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (dr2, dn2) = (dropped.clone(), done.clone());
        let rx = drop_from_inside(rt, move || {
            dr2.store(true, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while !dn2.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(3) {
                usurp::yield_now();
            }
            dn2.load(Ordering::SeqCst)
        });
        let collector = std::thread::spawn(move || {
            while !dropped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            heap.collect();
            done.store(true, Ordering::SeqCst);
        });
        let saw = rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false);
        collector.join().unwrap();
        saw
    });
    assert!(saw, "the dropper never saw the collection from a plain thread end");
}

/// Session 15's leftover: a root scanner that drops the runtime (its last
/// handle) during the pause of a collection a task asked for. The drop
/// begins the shutdown when the pause ends ("Roots"); the task waiting in
/// `collect` must run on past it, as the task that drops its runtime in its
/// own code does. Returns whether it did.
fn collection_drops_the_runtime(workers: usize, stw: bool, busy: bool) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    within(30, "a task whose collection drops the runtime", move || {
        let cfg = usurp::gc::HeapConfig { stw_marking: stw, ..usurp::gc::HeapConfig::default() };
        let rt = Runtime::builder().workers(workers).heap_config(cfg).build().unwrap();
        let heap = rt.heap().clone();
        let slot = Arc::new(StdMutex::new(None::<Runtime>));
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let (s2, a2, d2) = (slot.clone(), armed.clone(), dropped.clone());
        heap.add_root_scanner(Box::new(move |_report: &mut dyn FnMut(usurp::gc::GcRef)| {
            // Only in the collection the task asked for (not a background
            // cycle before it); `try_lock`: never wait for a lock in a pause.
            if a2.load(Ordering::SeqCst) {
                if let Ok(mut s) = s2.try_lock() {
                    if let Some(rt) = s.take() {
                        drop(rt);
                        d2.store(true, Ordering::SeqCst);
                    }
                }
            }
        }));
        if busy {
            // Other tasks wait for the workers: the collecting task's
            // `after_collect` yields.
            for _ in 0..workers {
                rt.spawn(|| loop {
                    usurp::yield_now();
                });
            }
        }
        let (tx, rx) = mpsc::channel();
        let (h2, s3) = (heap.clone(), slot.clone());
        rt.spawn(move || {
            while s3.lock().unwrap().is_none() {
                usurp::yield_now();
            }
            armed.store(true, Ordering::SeqCst);
            h2.collect();
            let _ = tx.send(());
        });
        *slot.lock().unwrap() = Some(rt);
        let ran_on = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        assert!(dropped.load(Ordering::SeqCst), "the scanner never dropped the runtime: the test shows nothing");
        ran_on
    })
}

#[test]
fn a_task_whose_collection_drops_the_runtime_runs_on() {
    for workers in [1, 2] {
        for stw in [false, true] {
            for busy in [false, true] {
                assert!(
                    collection_drops_the_runtime(workers, stw, busy),
                    "workers({workers}), stw_marking {stw}, busy {busy}: the task whose collection dropped its \
                     runtime never got past collect"
                );
            }
        }
    }
}
