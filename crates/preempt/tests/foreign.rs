//! Foreign deliveries of the preemption signal (SIGURG from `kill`, from
//! another process, or a host's own tgkill) do no harm to running tasks and
//! still reach the handler the host installed before the runtime.


use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_testsupport::install_host_handler;

static HOST_USER: AtomicU64 = AtomicU64::new(0);
static HOST_TKILL: AtomicU64 = AtomicU64::new(0);
static HOST_OTHER: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn host_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    match code {
        libc::SI_USER => HOST_USER.fetch_add(1, Ordering::SeqCst),
        libc::SI_TKILL => HOST_TKILL.fetch_add(1, Ordering::SeqCst),
        _ => HOST_OTHER.fetch_add(1, Ordering::SeqCst),
    };
}

#[test]
fn foreign_signals_are_chained_and_harmless() {
    // The host installs its handler first.
    // SAFETY: the test installs its host handler before the runtime, a
    // valid handler of the shape its flags ask for.
    unsafe { install_host_handler(libc::SIGURG, host_handler as *const () as usize, libc::SA_SIGINFO | libc::SA_RESTART, &[]) };
    usurp_preempt::init().unwrap();
    let expected = spin(10_000);
    let slot = new_slot();
    let worker = spawn_mini_worker(
        slot,
        RunConfig::default(),
        Box::new(move || {
            while !STOP.load(Ordering::Relaxed) {
                if spin(10_000) != expected {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                ROUNDS.fetch_add(1, Ordering::Relaxed);
            }
        }),
        None,
    );
    while slot.tid() == 0 {
        std::thread::yield_now();
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let n = ((200.0 * scale()) as u64).max(20);
    let t0 = Instant::now();
    for i in 0..n {
        // SAFETY: sending signals to ourselves; all threads handle SIGURG.
        unsafe {
            libc::kill(pid, libc::SIGURG);
            libc::tgkill(pid, slot.tid(), libc::SIGURG);
        }
        if i % 50 == 0 {
            // From another process, as `kill -URG` would.
            let _ = std::process::Command::new("kill").args(["-URG", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the timer preempt a few more times after the storm.
    while slot.stats().accepted < 10 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    STOP.store(true, Ordering::Relaxed);
    let parks = worker.join().expect("worker");
    let st = slot.stats();
    eprintln!(
        "host saw SI_USER {} SI_TKILL {} other {}; chained {}; accepted {} ticks {} rounds {}",
        HOST_USER.load(Ordering::SeqCst),
        HOST_TKILL.load(Ordering::SeqCst),
        HOST_OTHER.load(Ordering::SeqCst),
        usurp_preempt::chained_signals(),
        st.accepted,
        st.ticks,
        ROUNDS.load(Ordering::Relaxed)
    );
    assert_eq!(WRONG.load(Ordering::SeqCst), 0, "a foreign signal corrupted a task");
    assert!(HOST_USER.load(Ordering::SeqCst) > 0, "kill(2) deliveries did not reach the host handler");
    assert!(HOST_TKILL.load(Ordering::SeqCst) > 0, "the host's tgkill deliveries did not reach its handler");
    // Our own timer signals never reach the host.
    assert_eq!(HOST_OTHER.load(Ordering::SeqCst), 0);
    assert!(usurp_preempt::chained_signals() >= HOST_USER.load(Ordering::SeqCst) + HOST_TKILL.load(Ordering::SeqCst));
    assert!(st.accepted > 0 && st.ticks > 0);
    assert_eq!(parks, st.accepted);
}
