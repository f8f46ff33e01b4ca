//! Issue 10 items 2, 4, 5, 7, 9 and issue 11 item 2: who may allocate, what
//! happens when something panics inside a pause, stop-the-world deadlocks
//! that are detected (and the ones that are reported), spurious heap
//! exhaustion, and a stopper that yields or gets preempted during its own
//! stop. Every scenario that could hang runs under a watchdog.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{AllocError, AttachError, Heap};
use usurp::Runtime;
use usurp_testsupport::{panic_text, run_child, run_child_env, scale, within};
use usurp_testsupport_gc::{link, Link};

// ---- issue 10 items 2 and 9: allocation from threads the World does not stop

/// A plain thread cannot attach to a runtime's heap (the World refuses it),
/// and allocating without attaching panics with a message that does not send
/// the user to `attach_thread`.
#[test]
fn plain_thread_cannot_allocate_in_a_runtime_heap() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let heap = rt.heap().clone();
    within(30, "plain thread", move || {
        std::thread::spawn(move || {
            match heap.attach_thread() {
                Err(e @ AttachError::Refused(_)) => {
                    let m = e.to_string();
                    assert!(m.contains("outside the runtime"), "{m}");
                    assert!(m.contains("task"), "{m}");
                }
                Err(e) => panic!("unexpected attach error {e:?}"),
                Ok(_) => panic!("a plain thread attached to the runtime's heap"),
            }
            let p = std::panic::catch_unwind(|| black_box(link(1, None)).val).expect_err("allocation succeeded");
            let m = panic_text(&*p);
            assert!(m.contains("allocation from a thread outside the runtime"), "{m}");
            assert!(!m.contains("call Heap::attach_thread"), "the message still advises attach_thread: {m}");
            assert_eq!(usurp::gc::Gc::try_new(Link { next: usurp::gc::Member::null(), val: 0 }).err(), Some(AllocError::NotAttached));
        })
        .join()
        .unwrap();
    });
    // The runtime's own tasks still allocate.
    assert_eq!(rt.block_on(|| link(7, Some(link(8, None))).next.get().unwrap().val), 8);
}

fn alloc_inside_blocking(rt: &Runtime) {
    rt.block_on(|| {
        let before = link(1, None);
        let p = std::panic::catch_unwind(|| usurp::blocking(|| black_box(link(2, None)).val))
            .expect_err("allocation inside blocking() succeeded");
        let m = panic_text(&*p);
        assert!(m.contains("inside blocking()"), "{m}");
        let e = usurp::blocking(|| usurp::gc::Gc::try_new(Link { next: usurp::gc::Member::null(), val: 0 }).err());
        assert!(matches!(e, Some(AllocError::Forbidden(_))), "{e:?}");
        // Allocation works again after blocking(), on whatever thread the
        // task resumed.
        let after = link(3, Some(before));
        assert_eq!(after.next.get().unwrap().val, 1);
    });
}

/// Allocation inside `blocking` (handed-off thread) panics clearly.
#[test]
fn allocation_inside_blocking_is_refused() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(60, "blocking (handoff)", move || alloc_inside_blocking(&rt));
}

/// Same when `blocking` runs its closure in place (no spare thread allowed).
#[test]
fn allocation_inside_in_place_blocking_is_refused() {
    let rt = Runtime::builder().workers(1).max_blocking_threads(0).build().unwrap();
    within(60, "blocking (in place)", move || alloc_inside_blocking(&rt));
}

// ---- issue 10 item 4: a panic inside a pause

/// Builds garbage and checks a list in a loop until `stop`; returns rounds.
fn churn(stop: &AtomicBool) -> usize {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut head = None;
        for i in 0..200 {
            head = Some(link(i, head));
        }
        let mut n = 0;
        let mut p = head;
        while let Some(x) = p {
            n += 1;
            p = x.next.get();
        }
        assert_eq!(n, 200);
        rounds += 1;
        usurp::yield_now();
    }
    rounds
}

fn verify_config() -> usurp::gc::HeapConfig {
    usurp::gc::HeapConfig { verify: true, gogc: Some(100), ..usurp::gc::HeapConfig::default() }
}

/// A root scanner that panics (here: by locking a poisoned std mutex with
/// `unwrap`, the poisoned-lock case) in a runtime with tasks running: the
/// collecting task gets a clear panic naming the scanner, the world runs
/// again (the other tasks make progress), and later collections work and
/// verify clean.
fn scanner_panics(poisoned: bool) {
    let rt = Arc::new(Runtime::builder().workers(2).heap_config(verify_config()).build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|_| {
            let s = stop.clone();
            rt.spawn(move || churn(&s))
        })
        .collect();
    let lock = Arc::new(std::sync::Mutex::new(0usize));
    if poisoned {
        let l = lock.clone();
        let _ = std::thread::spawn(move || {
            let _g = l.lock().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(lock.is_poisoned());
    }
    // The scanner fails once, in the collection of the task whose id is in
    // `target` (the churners collect too: they must not get the panic).
    let armed = Arc::new(AtomicBool::new(true));
    let target = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (a2, l2, t2) = (armed.clone(), lock.clone(), target.clone());
    let id = rt.heap().add_root_scanner(Box::new(move |_mark: &mut dyn FnMut(usurp::gc::GcRef)| {
        if usurp::task::id() == Some(t2.load(Ordering::SeqCst)) && a2.swap(false, Ordering::SeqCst) {
            if poisoned {
                *l2.lock().unwrap() += 1; // panics: poisoned
            }
            panic!("the VM's root scanner failed");
        }
    }));
    let heap = rt.heap().clone();
    let a3 = armed.clone();
    let collector = rt.spawn(move || {
        target.store(usurp::task::id().unwrap(), Ordering::SeqCst);
        let keep = link(42, None);
        // `collect()` may join a cycle a churner (or the pacer's background
        // collector) already started: then the scanner runs on that
        // collector, not in this task, and `collect` returns normally.
        // Collect again until this task's own cycle runs the scanner.
        let mut r = Ok(());
        for _ in 0..200 {
            r = std::panic::catch_unwind(|| heap.collect());
            if r.is_err() || !a3.load(Ordering::SeqCst) {
                break;
            }
        }
        black_box(&keep);
        (r.map_err(|p| panic_text(&*p)), keep.val)
    });
    let (r, v) = collector.join().unwrap();
    let msg = r.expect_err("the collection did not report the scanner's panic");
    assert!(msg.contains("root scanner"), "{msg}");
    assert!(msg.contains(if poisoned { "PoisonError" } else { "the VM's root scanner failed" }), "{msg}");
    assert!(msg.contains("world restarted"), "{msg}");
    assert_eq!(v, 42);
    assert!(!armed.load(Ordering::SeqCst));
    // The world runs: the churners finish; more collections (scanner still
    // registered, now quiet) complete and verify clean.
    let heap = rt.heap().clone();
    rt.block_on(move || {
        for _ in 0..3 {
            heap.collect();
        }
    });
    stop.store(true, Ordering::SeqCst);
    for c in churners {
        c.join().unwrap();
    }
    assert!(rt.heap().remove_root_scanner(id));
    rt.heap().collect();
    let st = rt.stats().gc;
    assert!(st.cycles >= 4, "{}", st.cycles);
    assert_eq!(st.verify_failures, 0);
}

#[test]
fn panicking_root_scanner_restarts_the_world() {
    within(60, "panicking root scanner", || scanner_panics(false));
}

#[test]
fn poisoned_lock_in_a_root_scanner_restarts_the_world() {
    within(60, "poisoned lock in a root scanner", || scanner_panics(true));
}

// ---- issue 10 item 5(b) and issue 11 item 2: the stopper during its stop

usurp::preemptible! {
    /// A call-free loop in preemptible code: async preemption can land
    /// anywhere in it.
    fn spin_preemptible(n: u64) -> u64 {
        let mut x = 0u64;
        let mut i = 0u64;
        while i < n {
            // SAFETY: volatile accesses to a local.
            unsafe { std::ptr::write_volatile(&mut x, std::ptr::read_volatile(&x).wrapping_add(i)) };
            i += 1;
        }
        x
    }
}

/// Spins outside preemptible code for about `d`, polling `checkpoint()`.
fn spin_with_checkpoints(d: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        for _ in 0..1000 {
            black_box(0u64);
        }
        usurp::checkpoint();
    }
}

/// A task stops the world, then runs a long preemptible loop and calls
/// `checkpoint()` in a non-preemptible one (quantum 1 ms, a sleeper keeping
/// the timer monitor busy): it is neither preempted nor yielded, so it
/// restarts the world itself. Before the fix its own quantum (or the
/// monitor) preempted it and its worker parked for the stop it held.
#[test]
fn stopper_is_not_preempted_during_its_stop() {
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_millis(1)).build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let sleeper = rt.spawn(move || {
        let mut n = 0;
        while !s2.load(Ordering::Relaxed) {
            usurp::sleep(Duration::from_micros(200));
            n += 1;
        }
        n
    });
    let rt2 = rt.clone();
    within(60, "stopper preempted in its own stop", move || {
        let r = rt2.clone();
        rt2.block_on(move || {
            for _ in 0..scale(10) {
                r.stop_the_world();
                black_box(spin_preemptible(black_box(30_000_000)));
                spin_with_checkpoints(Duration::from_millis(20));
                r.start_the_world();
                usurp::yield_now();
            }
        });
    });
    stop.store(true, Ordering::SeqCst);
    assert!(sleeper.join().unwrap() > 0);
}

/// A stopper that collects, stops again, or yields inside its own stop gets
/// a clear panic (not a hang); `blocking()` there runs in place; after
/// `start_the_world` everything works.
#[test]
fn stopper_waiting_for_itself_panics_clearly() {
    let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let rt2 = rt.clone();
    within(60, "stopper waits for itself", move || {
        let r = rt2.clone();
        rt2.block_on(move || {
            let keep = link(5, None);
            r.stop_the_world();
            let heap = r.heap().clone();
            let p = std::panic::catch_unwind(|| heap.collect()).expect_err("collect inside own stop returned");
            let m = panic_text(&*p);
            assert!(m.contains("holds the world stopped"), "{m}");
            let r3 = r.clone();
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || r3.stop_the_world())).expect_err("second stop returned");
            assert!(panic_text(&*p).contains("holds the world stopped"));
            let p = std::panic::catch_unwind(usurp::yield_now).expect_err("yield inside own stop returned");
            assert!(panic_text(&*p).contains("holds the world stopped"), "{}", panic_text(&*p));
            assert_eq!(usurp::blocking(|| 7), 7);
            r.start_the_world();
            heap.collect();
            assert_eq!(keep.val, 5);
            assert_eq!(link(6, Some(keep)).next.get().unwrap().val, 5);
        });
    });
    // From a plain thread too.
    rt.stop_the_world();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.heap().collect())).expect_err("collect inside own stop returned");
    assert!(panic_text(&*p).contains("holds the world stopped"));
    rt.start_the_world();
    rt.heap().collect();
    assert!(rt.stats().gc.cycles >= 2);
}

/// Only the stopper restarts the world.
#[test]
fn only_the_stopper_starts_the_world() {
    let rt = Arc::new(Runtime::builder().workers(1).build().unwrap());
    rt.stop_the_world();
    let r2 = rt.clone();
    let e = std::thread::spawn(move || r2.start_the_world()).join().expect_err("another thread restarted the world");
    assert!(panic_text(&*e).contains("did not stop the world"));
    rt.start_the_world();
    assert_eq!(rt.block_on(|| 3), 3);
}

/// A stopper task that parks (here: sleeps) during its stop cannot be woken:
/// the process aborts with a message instead of hanging.
#[test]
fn stopper_parking_aborts_with_a_message() {
    if std::env::var("USURP_CHILD_STOPPER_PARKS").is_ok() {
        usurp_testsupport::child_watchdog(30, "child watchdog: the stopper's park hung", 99);
        let rt = Arc::new(Runtime::builder().workers(2).build().unwrap());
        let r = rt.clone();
        rt.block_on(move || {
            r.stop_the_world();
            usurp::sleep(Duration::from_millis(1));
        });
        unreachable!("the stopper's sleep returned");
    }
    let (out, _) = run_child("stopper_parking_aborts_with_a_message", "USURP_CHILD_STOPPER_PARKS");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child succeeded: {err}");
    assert!(err.contains("the task that holds the world stopped parked") && err.contains("Runtime::stop_the_world"), "{err}");
}

// ---- issue 10 item 5(a): a stop held up by a task blocked in the kernel

/// A task holding a `std::sync::Mutex` collects while another task blocks in
/// the kernel on that mutex (outside `blocking`): the stop cannot complete
/// (the documented contract), but after 1 s the stopper prints which worker
/// and which task (id and name) hold it up. The scenario runs in a child
/// process, which its own watchdog ends after a few seconds. The stopper is
/// a plain thread, so it cannot be the one stuck behind the blocked worker.
#[test]
fn stalled_stop_reports_the_straggler() {
    if std::env::var("USURP_CHILD_STALLED_STOP").is_ok() {
        usurp_testsupport::child_watchdog(8, "child: watchdog ends the stalled process", 7);
        let rt = Runtime::builder().workers(2).build().unwrap();
        let heap = rt.heap().clone();
        // The mutex is held, and the collection run, by this plain thread
        // (a plain thread may collect: it is the stopper, counted as
        // stopped). Nothing here depends on a worker: when this was a task
        // that slept 1 ms while the other task started, the blocked task
        // could take the sleeper's worker, whose timer then never fired the
        // sleeper's wakeup (seen under qemu: "blocked task id 2", then
        // nothing until the watchdog).
        let m = Arc::new(std::sync::Mutex::new(0u32));
        let g = m.lock().unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let (m2, s2) = (m.clone(), started.clone());
        let h = usurp::task::Builder::new()
            .name("kernel-blocked")
            .spawn_on(&rt, move || {
                s2.store(true, Ordering::SeqCst);
                *m2.lock().unwrap() += 1; // blocks its worker in the kernel
            })
            .unwrap();
        eprintln!("child: blocked task id {}", h.id());
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        eprintln!("child: collecting");
        heap.collect(); // waits for the blocked worker: never returns
        drop(g);
        let _ = rt.block_on(move || h.join());
        eprintln!("child: the collection completed");
        std::process::exit(0);
    }
    let (out, _) = run_child("stalled_stop_reports_the_straggler", "USURP_CHILD_STALLED_STOP");
    let err = String::from_utf8_lossy(&out.stderr);
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("child: blocked task id "))
        .unwrap_or_else(|| panic!("child did not start the scenario: {err}"))
        .trim()
        .to_string();
    assert!(err.contains("child: collecting"), "{err}");
    assert!(!err.contains("the collection completed"), "{err}");
    assert_eq!(out.status.code(), Some(7), "{err}");
    let report = err.lines().position(|l| l.starts_with("usurp: stop-the-world (") && l.contains(") has waited ")).unwrap_or_else(|| panic!("no report: {err}"));
    let rest: Vec<&str> = err.lines().skip(report).collect();
    assert!(
        rest.iter().any(|l| l.contains(&format!("task {id} \"kernel-blocked\" has not reached a safe point"))),
        "the report does not name the blocked task {id}: {err}"
    );
    assert!(err.contains("use usurp::Mutex"), "{err}");
}

// ---- issue 10 item 7: no spurious HeapExhausted

static WORDS: usurp::gc::Descriptor = usurp::gc::Descriptor::array("words", 1, 0);

/// Tasks on 2 workers racing to allocate 2-block objects near the limit,
/// each keeping the last 12 on its stack: the working set (at most 4 × 13 ×
/// 2 = 104 of 128 blocks) fits, so no allocation may report exhaustion.
#[test]
fn racing_tasks_near_the_limit_never_fail_spuriously() {
    let rt = Runtime::builder().workers(2).heap_limit(8 << 20).gogc(None).build().unwrap();
    within(120, "racing tasks near the limit", move || {
        for _ in 0..3 {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    rt.spawn(|| {
                        let mut slots: [Option<usurp::gc::GcRef>; 12] = [None; 12];
                        for i in 0..scale(2000) {
                            match usurp::gc::try_alloc_array(&WORDS, 12_000) {
                                Ok(r) => slots[i % 12] = Some(r),
                                Err(e) => return Some(e.to_string()),
                            }
                            if i % 7 == 0 {
                                usurp::yield_now();
                            }
                        }
                        black_box(&mut slots);
                        None
                    })
                })
                .collect();
            let errors: Vec<String> = tasks.into_iter().filter_map(|t| t.join().unwrap()).collect();
            assert!(errors.is_empty(), "spurious exhaustion in {} of 4 tasks: {}", errors.len(), errors[0]);
        }
        assert!(rt.stats().gc.cycles > 0);
    });
}

/// A panic in a parallel marking job (on a parked worker, a marker thread or
/// the collector: injected with a test switch) cannot be undone while the
/// other jobs share its work: the process aborts with a message naming it
/// instead of hanging the collection (child process with a watchdog).
#[test]
fn panicking_marking_job_aborts_with_a_message() {
    if std::env::var("USURP_CHILD_MARKING_JOB").is_ok() {
        usurp_testsupport::child_watchdog(30, "child watchdog: the collection hung", 99);
        let rt = Runtime::builder().workers(2).build().unwrap();
        rt.block_on(|| {
            // 64 precise roots, each reaching a 100-node list: the marking
            // stack starts with 64 entries, so marking runs in parallel.
            let roots: Vec<_> = (0..64)
                .map(|_| {
                    let mut head = None;
                    for i in 0..100 {
                        head = Some(link(i, head));
                    }
                    head.unwrap()
                })
                .collect();
            let keep: Vec<_> = roots.iter().map(|r| Heap::current().unwrap().add_root(Some(r.raw()))).collect();
            usurp_gc::fail_next_marking_job();
            Heap::current().unwrap().collect();
            black_box(keep);
        });
        eprintln!("child: the collection completed");
        std::process::exit(0);
    }
    let (out, _) = run_child("panicking_marking_job_aborts_with_a_message", "USURP_CHILD_MARKING_JOB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("usurp gc: fatal: a GC marking job panicked"), "{err}");
    assert!(err.contains("injected marking-job failure"), "{err}");
}

/// A task that stops the world inside a `blocking` closure (handed off, or
/// in place) and leaves the closure with the world still stopped would wait
/// for itself: the process aborts with a message (child processes).
#[test]
fn stopper_leaving_blocking_aborts_with_a_message() {
    if std::env::var("USURP_CHILD_STOP_IN_BLOCKING").is_ok() {
        let v = std::env::var("USURP_CHILD_STOP_MODE").unwrap_or_default();
        usurp_testsupport::child_watchdog(30, "child watchdog: leaving blocking hung", 99);
        let in_place = v == "in-place";
        let rt = Arc::new(Runtime::builder().workers(1).max_blocking_threads(if in_place { 0 } else { 4 }).build().unwrap());
        let r = rt.clone();
        rt.block_on(move || {
            usurp::blocking(|| {
                r.stop_the_world();
            });
        });
        eprintln!("child: blocking returned");
        std::process::exit(0);
    }
    for mode in ["handoff", "in-place"] {
        let (out, _) = run_child_env(
            "stopper_leaving_blocking_aborts_with_a_message",
            "USURP_CHILD_STOP_IN_BLOCKING",
            &[("USURP_CHILD_STOP_MODE", Some(mode))],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode}: {err}");
        assert!(err.contains("inside blocking() and left the closure"), "{mode}: {err}");
    }
}

/// A root scanner (run by the collecting task, with the world stopped) that
/// waits for a `usurp::Mutex` a sleeping task holds: the process aborts,
/// and the message names that case, not only `stop_the_world`, which this
/// program never calls (red-team finding F7, session 11: the message
/// blamed `Runtime::stop_the_world`).
#[test]
fn root_scanner_waiting_for_a_task_lock_aborts_naming_the_scanner() {
    if std::env::var("USURP_CHILD_SCANNER_LOCKS").is_ok() {
        usurp_testsupport::child_watchdog(30, "child watchdog: the scanner's wait hung", 99);
        let rt = Runtime::builder().workers(2).build().unwrap();
        rt.block_on(|| {
            let heap = usurp::gc::Heap::current().unwrap();
            let m = Arc::new(usurp::Mutex::new(0usize));
            let m2 = m.clone();
            heap.add_root_scanner(Box::new(move |_report| {
                let _g = m2.lock();
            }));
            let holder = usurp::spawn(move || {
                let _g = m.lock();
                usurp::sleep(Duration::from_secs(5));
            });
            usurp::sleep(Duration::from_millis(20));
            heap.collect();
            holder.join().unwrap();
        });
        unreachable!("the collection whose scanner waited returned");
    }
    let (out, _) = run_child("root_scanner_waiting_for_a_task_lock_aborts_naming_the_scanner", "USURP_CHILD_SCANNER_LOCKS");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child succeeded: {err}");
    assert!(err.contains("holds the world stopped parked") && err.contains("root scanner"), "{err}");
}
