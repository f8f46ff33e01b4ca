//! How many signals the runtime sends to a thread that cannot act on them
//! (issue 11 items 4 and 5).
//!
//! * `blocking` run in place (no spare thread may be started) must not let
//!   the quantum timer interrupt the closure's system calls: `nanosleep`,
//!   `poll`, `epoll_wait` are not restarted by `SA_RESTART` and failed with
//!   EINTR once per quantum before. The closure now runs with the preemption
//!   signal blocked on its thread; a tick that came due meanwhile is handled
//!   afterwards, so the task still yields when its quantum ran out.
//! * The timer monitor asks a busy worker to fire a due timer; when the
//!   worker runs code that is not preemptible, asking again every 50 µs sent
//!   up to 20,000 signals a second. Retries now back off (to 2 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{blocking, sleep, spawn, yield_now, Runtime};
use usurp_testsupport::within;

/// Sleeps `total` with nanosleep, resuming after each EINTR; returns how
/// many EINTRs it saw.
fn nanosleep_counting_eintr(total: Duration) -> u32 {
    let mut req = libc::timespec { tv_sec: total.as_secs() as _, tv_nsec: total.subsec_nanos() as _ };
    let mut eintr = 0;
    loop {
        let mut rem = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid timespec pointers.
        let r = unsafe { libc::nanosleep(&req, &mut rem) };
        if r == 0 {
            return eintr;
        }
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINTR));
        eintr += 1;
        req = rem;
    }
}

#[test]
fn in_place_blocking_gets_no_timer_signals() {
    // No spare thread may be started: `blocking` runs in place on the
    // worker's thread, with a 1 ms quantum.
    let rt = Runtime::builder().workers(1).max_blocking_threads(0).quantum(Duration::from_millis(1)).build().unwrap();
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    let (eintr, other_ran) = within(60, "in-place blocking", move || {
        rt.block_on(|| {
            let ran = Arc::new(AtomicBool::new(false));
            let r2 = ran.clone();
            // Another runnable task: once the blocking task's quantum has
            // run out inside the closure, it must yield to it afterwards.
            let h = spawn(move || r2.store(true, Ordering::SeqCst));
            let eintr = blocking(|| nanosleep_counting_eintr(Duration::from_millis(100)));
            // `blocking` yielded at its end (the quantum ran out inside): the
            // other task has run by now, before this task's next switch.
            let other_ran = ran.load(Ordering::SeqCst);
            h.join().unwrap();
            (eintr, other_ran)
        })
    });
    assert_eq!(eintr, 0, "nanosleep inside an in-place blocking call failed with EINTR {eintr} times in 100 ms");
    assert!(other_ran, "the task whose quantum ran out inside blocking did not yield afterwards");
}

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
