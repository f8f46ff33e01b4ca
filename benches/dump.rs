//! Task dumps (issue 15): the stopped-world time of a dump of 10,000 tasks
//! (goal: at most 100 ms), each parked on a channel 8 frames deep, with 2
//! spinning tasks in `preemptible!` loops on 2 workers (so the stop must
//! preempt them). Prints, over 7 dumps, the world-stopped time (stop request
//! to restart, time-to-safepoint included), the time-to-safepoint, and the
//! whole call (symbolization included; the first call also loads the debug
//! information). `cargo bench --bench dump`.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{channel, preemptible, Receiver, Runtime};

const TASKS: usize = 10_000;

preemptible! {
    fn spin(stop: &AtomicBool) -> u64 {
        let mut n = 0u64;
        loop {
            // SAFETY: a volatile read of a valid AtomicBool (no call).
            if unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } != 0 {
                return n;
            }
            n = n.wrapping_add(1);
        }
    }
}

#[inline(never)]
fn deep(n: u32, rx: &Receiver<u32>, parked: &AtomicUsize) -> u32 {
    if n == 0 {
        parked.fetch_add(1, Ordering::SeqCst);
        return rx.recv().unwrap_or(0);
    }
    std::hint::black_box(deep(n - 1, rx, parked)) + 1
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(TASKS);
    let mut handles = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let (tx, rx) = channel::<u32>();
        let p = parked.clone();
        senders.push(tx);
        handles.push(
            usurp::task::Builder::new().name(format!("guest-{i}")).spawn_on(&rt, move || deep(7, &rx, &p)).unwrap(),
        );
    }
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let s = stop.clone();
            rt.spawn(move || spin(&s))
        })
        .collect();
    while parked.load(Ordering::SeqCst) < TASKS {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut stopped = Vec::new();
    let mut ttsp = Vec::new();
    let mut whole = Vec::new();
    let mut frames = 0;
    for k in 0..7 {
        let t = Instant::now();
        let d = rt.dump_tasks();
        let w = t.elapsed();
        assert!(!d.stop_timed_out, "{d}");
        assert!(d.tasks.len() >= TASKS + 2, "{} tasks in the dump", d.tasks.len());
        frames = d.tasks.iter().map(|t| t.frames.len()).sum::<usize>();
        let text = d.to_string();
        assert!(text.contains("guest-9999"));
        println!(
            "dump {k}: {} tasks, {frames} frames, world stopped {} (time to safepoint {}), whole call {}, text {} KiB",
            d.tasks.len(),
            ms(d.stopped),
            ms(d.time_to_safepoint),
            ms(w),
            text.len() / 1024
        );
        stopped.push(d.stopped);
        ttsp.push(d.time_to_safepoint);
        if k > 0 {
            whole.push(w);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stopped.sort();
    ttsp.sort();
    whole.sort();
    println!(
        "dump of {TASKS} parked tasks + 2 preempted loops ({frames} frames): world stopped median {} (min {}, max {}), \
         time to safepoint median {}, whole call median {} (after the first)",
        ms(stopped[stopped.len() / 2]),
        ms(stopped[0]),
        ms(stopped[stopped.len() - 1]),
        ms(ttsp[ttsp.len() / 2]),
        ms(whole[whole.len() / 2]),
    );
    stop.store(true, Ordering::SeqCst);
    for (i, tx) in senders.into_iter().enumerate() {
        tx.send(i as u32).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    for s in spinners {
        s.join().unwrap();
    }
}
