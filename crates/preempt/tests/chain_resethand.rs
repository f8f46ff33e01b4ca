//! A foreign delivery of the preemption signal is passed to the host's
//! previous handler as the kernel would have delivered it: with that
//! action's own `sa_mask` (not our full mask), the signal itself blocked (no
//! `SA_NODEFER`), and `SA_RESETHAND` honoured (the second delivery gets the
//! default action: SIGURG's is "ignore"). Alone in its binary: the previous
//! action is captured once, at init.

use std::sync::atomic::{AtomicU64, Ordering};
use usurp_testsupport::install_host_handler;

static CALLS: AtomicU64 = AtomicU64::new(0);
/// Bit 0: SIGUSR1 blocked in the handler; bit 1: SIGUSR2; bit 2: SIGURG.
static MASK_SEEN: AtomicU64 = AtomicU64::new(0);

fn blocked_now() -> u64 {
    // SAFETY: reading this thread's mask into a local set.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
        let mut bits = 0;
        for (i, s) in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGURG].into_iter().enumerate() {
            if libc::sigismember(&cur, s) == 1 {
                bits |= 1 << i;
            }
        }
        bits
    }
}

extern "C" fn host_handler(_sig: libc::c_int, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    MASK_SEEN.store(blocked_now(), Ordering::SeqCst);
    CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn chained_handler_gets_its_own_mask_and_flags() {
    // SAFETY: the test installs its host handler before the runtime, a
    // valid handler of the shape its flags ask for.
    unsafe { install_host_handler(libc::SIGURG, host_handler as *const () as usize, libc::SA_SIGINFO | libc::SA_RESETHAND, &[libc::SIGUSR2]) };
    usurp_preempt::init().unwrap();
    assert_eq!(blocked_now(), 0, "the test thread starts with nothing blocked");
    // SAFETY: raising a signal with a handler installed.
    assert_eq!(unsafe { libc::raise(libc::SIGURG) }, 0);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the host handler did not run");
    let m = MASK_SEEN.load(Ordering::SeqCst);
    assert_eq!(m & 1, 0, "SIGUSR1 (in neither mask) was blocked in the chained handler");
    assert_eq!(m & 2, 2, "SIGUSR2 (the host's sa_mask) was not blocked in the chained handler");
    assert_eq!(m & 4, 4, "SIGURG itself was not blocked (no SA_NODEFER)");
    assert_eq!(blocked_now(), 0, "the mask was not restored after the handler");
    // SA_RESETHAND: the next foreign delivery gets the default action.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::raise(libc::SIGURG) }, 0);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "SA_RESETHAND ignored: the host handler ran twice");
    assert_eq!(usurp_preempt::chained_signals(), 2);
}
