//! Thread state around a preemption (issue 12, finding 5):
//! * the signal mask and the alternate signal stack a task finds after being
//!   resumed are the thread's at that moment, not the ones captured when it
//!   was interrupted (aarch64 resumes through `rt_sigreturn`, which sets
//!   both from the spill frame);
//! * with the alternate signal stack disabled, the handler runs on the task's
//!   stack right below SP, where the injection would write: refused and
//!   counted, the task keeps running correctly.


use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::{Refusal, SpillFrame};

fn usr1_blocked() -> bool {
    // SAFETY: reading this thread's mask into a local set.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, libc::SIGUSR1) == 1
    }
}

fn current_altstack() -> usize {
    // SAFETY: querying the alternate stack into a local.
    unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut ss);
        ss.ss_sp as usize
    }
}

#[test]
fn resumed_task_sees_the_threads_current_mask_and_altstack() {
    static CHANGED: AtomicBool = AtomicBool::new(false);
    static NEW_SS: AtomicUsize = AtomicUsize::new(0);
    static SEEN_AFTER: AtomicUsize = AtomicUsize::new(0);
    let need = ((10.0 * scale()) as u64).max(3);
    let (parks, st) = run_until(
        RunConfig::default(),
        move |stop| {
            assert!(!usr1_blocked());
            while !CHANGED.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
            // Resumed after the park that changed the thread's state: the
            // next preemptions must not undo it either.
            let slot = usurp_preempt::current_worker().expect("on a worker");
            let a = slot.stats().accepted;
            while slot.stats().accepted < a + need && !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
            let mut bad = 0;
            if !usr1_blocked() {
                bad |= 1;
            }
            if current_altstack() != NEW_SS.load(Ordering::SeqCst) {
                bad |= 2;
            }
            SEEN_AFTER.store(bad | 4, Ordering::SeqCst);
            // Unblock again, for the worker's teardown.
            // SAFETY: plain mask change on this thread.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
            while !stop.load(Ordering::Relaxed) {
                spin(10_000);
            }
        },
        Some(Box::new(|_f: &SpillFrame, _c: &Ctx| {
            if CHANGED.load(Ordering::SeqCst) {
                return;
            }
            // While the task is parked, the thread blocks SIGUSR1 and moves
            // to a new alternate signal stack (leaked: it stays installed).
            let size = usurp_preempt::altstack_size();
            let mem: &'static mut [u8] = Box::leak(vec![0u8; size].into_boxed_slice());
            // SAFETY: plain mask change; the new stack stays mapped for ever.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                let ss = libc::stack_t { ss_sp: mem.as_mut_ptr() as *mut libc::c_void, ss_flags: 0, ss_size: size };
                assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
            }
            NEW_SS.store(mem.as_ptr() as usize, Ordering::SeqCst);
            CHANGED.store(true, Ordering::SeqCst);
        })),
        |_| SEEN_AFTER.load(Ordering::SeqCst) != 0,
        Duration::from_secs(60),
    );
    let seen = SEEN_AFTER.load(Ordering::SeqCst);
    assert_ne!(seen, 0, "never got far enough: {st:?}");
    assert_eq!(seen & 1, 0, "the signal mask changed while parked was undone by the resume");
    assert_eq!(seen & 2, 0, "the alternate stack changed while parked was undone by the resume");
    assert_eq!(parks, st.accepted);
}

#[test]
fn handler_on_the_task_stack_is_refused() {
    let need = ((20.0 * scale()) as u64).max(5);
    let expected = spin(10_000);
    let (parks, st) = run_until(
        RunConfig { clobber: false, ..RunConfig::default() },
        move |stop| {
            // SAFETY: disabling this thread's alternate stack (we are on the
            // task's stack, not on it); re-enabled below.
            let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
            let off = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sigaltstack(&off, &mut old) }, 0);
            let slot = usurp_preempt::current_worker().expect("on a worker");
            while slot.stats().refused(Refusal::HandlerOnTaskStack) < need && !stop.load(Ordering::Relaxed) {
                assert_eq!(spin(10_000), expected);
            }
            assert_eq!(slot.stats().accepted, 0, "injected while the handler ran on the task's stack");
            // SAFETY: restoring the alternate stack saved above.
            assert_eq!(unsafe { libc::sigaltstack(&old, std::ptr::null_mut()) }, 0);
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(spin(10_000), expected);
            }
        },
        None,
        |s| s.refused(Refusal::HandlerOnTaskStack) >= need && s.accepted >= need,
        Duration::from_secs(60),
    );
    assert!(st.refused(Refusal::HandlerOnTaskStack) >= need, "{st:?}");
    assert!(st.accepted >= need, "not preempted once the alternate stack was back: {st:?}");
    assert_eq!(parks, st.accepted);
}
