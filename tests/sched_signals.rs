//! How many signals the runtime sends to a thread that cannot act on them
//! (issue 11 item 5).
//!
//! * The timer monitor asks a busy worker to fire a due timer; when the
//!   worker runs code that is not preemptible, asking again every 50 µs sent
//!   up to 20,000 signals a second. Retries now back off (to 2 ms).

mod sched_util;

use sched_util::within;
use std::time::{Duration, Instant};
use usurp::{sleep, spawn, yield_now, Runtime};

#[test]
fn sysmon_backs_off_from_a_worker_in_non_preemptible_code() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    let busy = Duration::from_millis(300);
    let sent = within(60, "sysmon backoff", move || {
        rt.block_on(move || {
            // A sleeper whose timer comes due while the only worker is busy
            // in ordinary code (nobody fires timers until it is done).
            let h = spawn(|| sleep(Duration::from_millis(1)));
            yield_now(); // the sleeper runs and parks on its timer
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let requests = || {
                usurp::preempt::worker_stats().iter().filter(|(t, _)| *t == tid).map(|(_, s)| s.requests_sent).sum::<u64>()
            };
            let before = requests();
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < busy {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let sent = requests() - before;
            h.join().unwrap();
            sent
        })
    });
    // 300 ms of retries: every 50 µs before (about 6,000 requests); with the
    // backoff, 50 µs doubling to 2 ms, about 150.
    assert!(sent <= 400, "the timer monitor sent {sent} preemption requests in {busy:?} to a worker that cannot act on them");
    assert!(sent >= 1, "the timer monitor never asked the busy worker to fire the due timer");
}
