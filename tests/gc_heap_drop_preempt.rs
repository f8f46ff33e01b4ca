//! A heap's drop waits for the readers that pinned its tables
//! (`refcheck::with_pinned`). If a pin could be held across an asynchronous
//! preemption (it was: `GcRef::is_live` inlined the pin into a
//! `preemptible!` function), a task dropping that heap on the same (only)
//! worker would wait forever for a task that cannot run: found by the
//! review of the pin, hung 2 of 2 runs (at its 1st and 0th drop); the pin
//! now stays in out-of-line runtime code, where preemption is refused.
//! `USURP_TEST_CONTROL=1` runs the same loop without `is_live` (the
//! scenario's timing alone). Watchdog: 60 s.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{gc_type, Gc, Heap, HeapConfig, Member};

#[repr(C)]
struct Link {
    next: Member<Link>,
}
gc_type!(Link { next });

static CONTROL: AtomicBool = AtomicBool::new(false);

usurp::preemptible! {
    fn spin(objs: &[Gc<Link>], cur: &AtomicUsize, stop: &AtomicBool, n: &AtomicU64) {
        while !stop.load(Ordering::Relaxed) {
            let i = cur.load(Ordering::Relaxed);
            let r = objs[i].raw();
            if if CONTROL.load(Ordering::Relaxed) { r.addr() % 8 == 0 && r.addr() != 1 } else { r.is_live() } {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn drop_of_a_heap_while_a_preempted_task_holds_a_pin() {
    CONTROL.store(std::env::var("USURP_TEST_CONTROL").is_ok(), Ordering::Relaxed);
    const K: usize = 50;
    let mut heaps = Vec::new();
    let mut objs = Vec::new();
    for _ in 0..K {
        let h = Heap::new(HeapConfig { max_heap: 4 << 20, ..HeapConfig::default() }).unwrap();
        let x = {
            let _g = h.attach_thread().unwrap();
            Gc::new(Link { next: Member::null() })
        };
        heaps.push(h);
        objs.push(x);
    }
    let rt = usurp::Runtime::builder().workers(1).quantum(Duration::from_micros(200)).build().unwrap();
    assert!(rt.async_preemption());
    let objs = Arc::new(objs);
    let cur = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let a = {
        let (objs, cur, stop, n) = (objs.clone(), cur.clone(), stop.clone(), n.clone());
        rt.spawn(move || spin(&objs, &cur, &stop, &n))
    };
    let b = {
        let (cur, stop, progress) = (cur.clone(), stop.clone(), progress.clone());
        rt.spawn(move || {
            for (i, h) in heaps.into_iter().enumerate() {
                usurp::sleep(Duration::from_micros(300));
                cur.store((i + 1) % K, Ordering::Relaxed);
                drop(h);
                progress.store(i + 1, Ordering::SeqCst);
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let t0 = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if t0.elapsed() > Duration::from_secs(60) {
            // Not eprintln!: the test harness captures that, and the exit
            // below would lose it.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "watchdog: a heap's drop hung (pin held by a preempted task?): {} of {K} heaps dropped, is_live \
                 answers {}, preemptions accepted {}",
                progress.load(Ordering::SeqCst),
                n.load(Ordering::Relaxed),
                rt.stats().preempt.accepted
            );
            std::process::exit(3);
        }
    }
    b.join().unwrap();
    a.join().unwrap();
    assert!(n.load(Ordering::Relaxed) > 0, "the spinning task never asked is_live");
}
