//! Scheduler basics: spawn/join, panics, yield, sleep, task names and
//! task-local storage, calls outside a runtime, invalid configuration, idle
//! CPU use.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{spawn, task, try_spawn, yield_now, Error, Runtime};
use usurp_testsupport::{scale, within};

#[test]
fn spawn_and_join_return_values() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = scale(5000);
    let total = rt.block_on(move || {
        let hs: Vec<_> = (0..n).map(|i| spawn(move || i as u64 * 3)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(total, 3 * (n as u64) * (n as u64 - 1) / 2);
}

#[test]
fn nested_spawns_join_across_levels() {
    fn tree(depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let l = spawn(move || tree(depth - 1));
        let r = spawn(move || tree(depth - 1));
        l.join().unwrap() + r.join().unwrap()
    }
    let rt = Runtime::builder().workers(2).build().unwrap();
    let depth = if scale(4) < 4 { 8 } else { 11 };
    assert_eq!(rt.block_on(move || tree(depth)), 1 << depth);
}

#[test]
fn panic_propagates_to_join_with_payload() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (a, b) = rt.block_on(|| {
        let h1 = spawn(|| -> u32 { std::panic::panic_any(17u32) });
        let h2 = spawn(|| 5u32);
        (h1.join(), h2.join())
    });
    assert_eq!(*a.unwrap_err().downcast::<u32>().unwrap(), 17);
    assert_eq!(b.unwrap(), 5);
    // A panic in the root task reaches block_on's caller.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(|| -> () { panic!("root task") })));
    assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "root task");
    // Runtime::spawn + join from a plain thread also carries the payload.
    let h = rt.spawn(|| -> () { panic!("from outside") });
    assert_eq!(*h.join().unwrap_err().downcast::<&str>().unwrap(), "from outside");
}

#[test]
fn yield_lets_every_task_progress_on_one_worker() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let rounds = scale(200);
    let log = rt.block_on(move || {
        let counters: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
        let hs: Vec<_> = (0..4)
            .map(|k| {
                let c = counters.clone();
                spawn(move || {
                    let mut max_lead = 0usize;
                    for _ in 0..rounds {
                        c[k].fetch_add(1, Ordering::SeqCst);
                        let mine = c[k].load(Ordering::SeqCst);
                        let min = c.iter().map(|x| x.load(Ordering::SeqCst)).min().unwrap();
                        max_lead = max_lead.max(mine - min);
                        yield_now();
                    }
                    max_lead
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    // Round-robin on one worker: no task ever gets more than one step ahead.
    assert!(log.iter().all(|&lead| lead <= 1), "{log:?}");
}

#[test]
fn sleep_waits_at_least_the_duration_and_others_run() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (slept, progressed) = rt.block_on(|| {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t2 = ticks.clone();
        let sleeper = spawn(|| {
            let t = Instant::now();
            usurp::sleep(Duration::from_millis(30));
            t.elapsed()
        });
        let worker = spawn(move || {
            // Runs while the sleeper sleeps on the same (only) worker.
            for _ in 0..10 {
                t2.fetch_add(1, Ordering::SeqCst);
                yield_now();
            }
        });
        worker.join().unwrap();
        (sleeper.join().unwrap(), ticks.load(Ordering::SeqCst))
    });
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
    assert_eq!(progressed, 10);
}

#[test]
fn many_sleepers_all_wake() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = scale(1000);
    let woke = rt.block_on(move || {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                spawn(move || {
                    let d = Duration::from_micros((i % 50) as u64 * 100);
                    let t = Instant::now();
                    usurp::sleep(d);
                    t.elapsed() >= d
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).filter(|&ok| ok).count()
    });
    assert_eq!(woke, n);
}

#[test]
fn task_builder_names_and_ids() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (name, id_inside, id_handle, unnamed) = rt.block_on(|| {
        let h = task::Builder::new().name("parser").spawn(|| (task::name(), task::id())).unwrap();
        let hid = h.id();
        let (n, i) = h.join().unwrap();
        let unnamed = spawn(task::name).join().unwrap();
        (n, i, hid, unnamed)
    });
    assert_eq!(name.as_deref(), Some("parser"));
    assert_eq!(id_inside, Some(id_handle));
    assert_eq!(unnamed, None);
    assert_eq!(task::id(), None);
}

usurp::task_local! {
    static COUNTER: Cell<u32> = Cell::new(0);
    static PROBE: Cell<Option<Arc<AtomicUsize>>> = Cell::new(None);
}

#[test]
fn task_locals_are_per_task_and_dropped_at_exit() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let n = scale(16);
    let ok = rt.block_on(move || {
        let hs: Vec<_> = (0..n as u32)
            .map(|k| {
                spawn(move || {
                    COUNTER.with(|c| c.set(k));
                    for _ in 0..20 {
                        yield_now(); // may migrate between workers
                        COUNTER.with(|c| c.set(c.get() + 1000));
                        COUNTER.with(|c| c.set(c.get() - 1000));
                    }
                    COUNTER.with(|c| c.get()) == k
                })
            })
            .collect();
        hs.into_iter().all(|h| h.join().unwrap())
    });
    assert!(ok);
    // A fresh task starts from the initialiser, not from a recycled value.
    assert_eq!(rt.block_on(|| spawn(|| COUNTER.with(|c| c.get())).join().unwrap()), 0);
    // Values are dropped at task exit.
    let counted = Arc::new(AtomicUsize::new(0));
    let c2 = counted.clone();
    rt.block_on(move || spawn(move || PROBE.with(|p| p.set(Some(c2)))).join().unwrap());
    assert_eq!(Arc::strong_count(&counted), 1, "task-local value was not dropped at task exit");
    // Outside a task there is no task-local storage.
    assert!(COUNTER.try_with(|c| c.get()).is_err());
    let r = std::panic::catch_unwind(|| COUNTER.with(|c| c.get()));
    assert!(r.is_err());
}

fn panic_message(r: std::thread::Result<()>) -> String {
    let p = r.expect_err("expected a panic");
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap()
}

#[test]
fn task_calls_outside_a_runtime_fail_clearly() {
    let m = panic_message(std::panic::catch_unwind(|| {
        spawn(|| ());
    }));
    assert!(m.contains("outside a usurp runtime"), "{m}");
    assert!(matches!(try_spawn(|| ()), Err(Error::NoRuntime)));
    assert!(Error::NoRuntime.to_string().contains("inside a usurp task"));
    let m = panic_message(std::panic::catch_unwind(yield_now));
    assert!(m.contains("outside a usurp task"), "{m}");
    let m = panic_message(std::panic::catch_unwind(|| usurp::sleep(Duration::from_millis(1))));
    assert!(m.contains("outside a usurp task"), "{m}");
    assert!(matches!(task::Builder::new().name("x").spawn(|| ()), Err(Error::NoRuntime)));
    // Outside a task, blocking() just runs the closure.
    assert_eq!(usurp::blocking(|| 3), 3);
    // block_on from inside a task is refused with a message.
    let rt = Runtime::builder().workers(1).build().unwrap();
    let rt2 = Arc::new(Runtime::builder().workers(1).build().unwrap());
    let msg = rt.block_on(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt2.block_on(|| ())));
        panic_message(r)
    });
    assert!(msg.contains("from a usurp task on a worker"), "{msg}");
}

#[test]
fn invalid_configuration_is_rejected_with_a_reason() {
    let e = Runtime::builder().workers(0).build().unwrap_err();
    assert!(matches!(e, Error::InvalidWorkers { given: 0 }));
    let s = e.to_string();
    assert!(s.contains("worker count 0") && s.contains("between 1 and 1024"), "{s}");
    let e = Runtime::builder().workers(100_000).build().unwrap_err();
    assert!(matches!(e, Error::InvalidWorkers { given: 100_000 }));
    let e = Runtime::builder().stack_size(1000).build().unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::InvalidStackSize { given: 1000 }));
    assert!(s.contains("1000 bytes") && s.contains("16384") && s.contains("1 GiB"), "{s}");
    let e = Runtime::builder().stack_size(1 << 40).build().unwrap_err();
    assert!(matches!(e, Error::InvalidStackSize { .. }));
    let e = Runtime::builder().max_blocking_threads(1 << 20).build().unwrap_err();
    assert!(e.to_string().contains("max_blocking_threads"), "{e}");
    // A NUL byte in the thread name: an error, not std's panic from the
    // worker threads' spawn.
    let r = std::panic::catch_unwind(|| Runtime::builder().workers(1).thread_name("vm\0worker").build().err());
    let e = r.expect("build() panicked on a thread name with a NUL byte").expect("a NUL thread name accepted");
    assert!(matches!(&e, Error::InvalidThreadName { given } if given == "vm\0worker"), "{e:?}");
    assert!(e.to_string().contains("thread_name") && e.to_string().contains("NUL"), "{e}");
    // Valid odd sizes are rounded up to whole pages.
    let rt = Runtime::builder().workers(1).stack_size(70_000).build().unwrap();
    assert!(rt.stack_size() >= 70_000 && rt.stack_size() % 4096 == 0);
    assert_eq!(rt.block_on(|| 1), 1);
}

#[test]
fn idle_runtime_uses_no_cpu() {
    let name = "usurp-idle-chk";
    let rt = Runtime::builder().workers(2).thread_name(name).build().unwrap();
    rt.block_on(|| ());
    std::thread::sleep(Duration::from_millis(100)); // let workers settle
    let ticks = || -> u64 {
        let mut sum = 0;
        for e in std::fs::read_dir("/proc/self/task").unwrap() {
            let p = e.unwrap().path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !comm.trim().starts_with("usurp-idle-chk") {
                continue;
            }
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Fields after the ")": state is field 3; utime 14, stime 15.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            sum += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
        sum
    };
    let before = ticks();
    std::thread::sleep(Duration::from_millis(1000));
    let used = ticks() - before;
    // Two spinning workers would use ~200 ticks (at 100 Hz) in that second.
    assert!(used <= 10, "idle workers used {used} clock ticks in 1 s");
    drop(rt);
}

#[test]
fn dropping_runtime_abandons_parked_tasks() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (tx, rx) = usurp::sync_channel::<()>(0);
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = started.clone();
    let h = rt.spawn(move || {
        s2.store(true, Ordering::SeqCst);
        let _ = rx.recv(); // never gets a value while the runtime lives
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    within(60, "drop", move || drop(rt));
    let err = h.join().unwrap_err();
    assert!(err.downcast_ref::<&str>().unwrap().contains("shut down"));
    drop(tx);
}
