//! A chained handler installed with `SA_NODEFER` runs with the signal itself
//! unblocked, and without `SA_RESETHAND` it keeps receiving deliveries.
//! Alone in its binary: the previous action is captured once, at init.

use std::sync::atomic::{AtomicU64, Ordering};
use usurp_testsupport::install_host_handler;

static CALLS: AtomicU64 = AtomicU64::new(0);
static URG_BLOCKED: AtomicU64 = AtomicU64::new(0);

extern "C" fn host_handler(_sig: libc::c_int) {
    // SAFETY: reading this thread's mask into a local set.
    let blocked = unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, libc::SIGURG) == 1
    };
    if blocked {
        URG_BLOCKED.fetch_add(1, Ordering::SeqCst);
    }
    CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn chained_handler_honours_sa_nodefer() {
    // SAFETY: the test installs its host handler before the runtime, a
    // valid one-argument handler of the shape its flags ask for.
    unsafe { install_host_handler(libc::SIGURG, host_handler as *const () as usize, libc::SA_NODEFER, &[]) };
    usurp_preempt::init().unwrap();
    for _ in 0..3 {
        // SAFETY: raising a signal with a handler installed.
        assert_eq!(unsafe { libc::raise(libc::SIGURG) }, 0);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    assert_eq!(URG_BLOCKED.load(Ordering::SeqCst), 0, "SA_NODEFER ignored: SIGURG blocked in the chained handler");
}
