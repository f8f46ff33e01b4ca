//! A request signal merged into a pending tick (standard signals do not
//! queue) must not make the handler swallow a later host `pthread_kill` or
//! `raise` of the same signal (issue 12, finding 3: a count of our tgkills
//! in flight leaked one per merge and took the host's next `SI_TKILL` for
//! ours). Alone in its binary: it installs a host handler for SIGURG.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usurp_preempt::{register_worker, request_preempt, unregister_worker, WorkerSlot};
use usurp_testsupport::install_host_handler;

static HOST_TKILL: AtomicU64 = AtomicU64::new(0);
static HOST_OTHER: AtomicU64 = AtomicU64::new(0);

extern "C" fn host_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    if code == libc::SI_TKILL {
        HOST_TKILL.fetch_add(1, Ordering::SeqCst);
    } else {
        HOST_OTHER.fetch_add(1, Ordering::SeqCst);
    }
}

fn block_sigurg(block: bool) {
    // SAFETY: plain signal mask manipulation on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

fn sigurg_pending() -> bool {
    // SAFETY: valid out-pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGURG) == 1
    }
}

#[test]
fn a_request_merged_into_a_tick_leaves_host_signals_chained() {
    // SAFETY: the test installs its host handler before the runtime, a
    // valid handler of the shape its flags ask for.
    unsafe { install_host_handler(libc::SIGURG, host_handler as *const () as usize, libc::SA_SIGINFO | libc::SA_RESTART, &[]) };
    usurp_preempt::init().unwrap();
    let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
    let rounds = 5u64;
    let t = std::thread::spawn(move || {
        register_worker(slot, Duration::from_micros(100)).unwrap();
        let mut merged = 0;
        for _ in 0..rounds {
            // A tick becomes pending while the signal is blocked ...
            block_sigurg(true);
            slot.set_idle(false).unwrap();
            let t0 = Instant::now();
            while !sigurg_pending() {
                assert!(t0.elapsed() < Duration::from_secs(20), "the timer never fired");
                std::thread::sleep(Duration::from_micros(200));
            }
            // ... and a request sent now merges into it.
            let acks = slot.acks();
            assert_eq!(request_preempt(slot), Ok(true));
            block_sigurg(false);
            // The tick (carrying the request) was delivered on unblocking.
            let t0 = Instant::now();
            while slot.acks() == acks {
                assert!(t0.elapsed() < Duration::from_secs(20), "the merged request was never acknowledged");
                std::thread::sleep(Duration::from_micros(200));
            }
            if !slot.is_pending() {
                merged += 1;
            }
            slot.set_idle(true).unwrap();
            // Let any separate delivery of the request arrive.
            std::thread::sleep(Duration::from_millis(2));
        }
        // Now the host signals this thread itself, twice.
        let before = HOST_TKILL.load(Ordering::SeqCst);
        // SAFETY: signalling our own thread; SIGURG has a handler.
        unsafe {
            assert_eq!(libc::pthread_kill(libc::pthread_self(), libc::SIGURG), 0);
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(libc::raise(libc::SIGURG), 0);
        }
        let t0 = Instant::now();
        while HOST_TKILL.load(Ordering::SeqCst) < before + 2 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = HOST_TKILL.load(Ordering::SeqCst) - before;
        unregister_worker().unwrap();
        (merged, got)
    });
    let (merged, got) = t.join().expect("worker thread");
    eprintln!("merged requests {merged}, host deliveries {got}, chained {}", usurp_preempt::chained_signals());
    assert_eq!(merged, rounds);
    assert_eq!(got, 2, "a host pthread_kill/raise of the preemption signal was swallowed");
    assert_eq!(HOST_OTHER.load(Ordering::SeqCst), 0, "one of our signals reached the host handler");
}
