//! Stack-overflow detection: a SIGSEGV handler that recognises hits on a
//! task's guard page.
//!
//! Every runtime thread runs on an alternate signal stack (sized from
//! `getauxval(AT_MINSIGSTKSZ)` plus headroom, pre-faulted), so the handler
//! runs even when the task stack is exhausted. The handler is lock-free and
//! allocation-free: it reads this thread's machine (a const-initialised
//! thread-local), the task currently running on it, and compares the fault
//! address with that task's guard page. On a hit it writes
//! `usurp: task <id> ("<name>") overflowed its stack of <n> bytes` with
//! write(2) and exits with status 134. Every other SIGSEGV goes to the handler
//! installed before ours (or, if that was the default action, the default
//! action is restored and the fault re-executes).

use crate::sys::{page_size, write_stderr, RawBuf};
use crate::worker;
use memmap2::{MmapMut, MmapOptions};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Once;

struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once inside `INSTALL` before our handler can run, read-only after.
unsafe impl Sync for PrevAction {}

static PREV: PrevAction = PrevAction(UnsafeCell::new(MaybeUninit::zeroed()));
static INSTALL: Once = Once::new();

/// Installs the SIGSEGV handler (once per process).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: plain sigaction calls with valid structs; PREV is written
        // before our handler is installed (the first call only reads).
        unsafe {
            let prev = (*PREV.0.get()).as_mut_ptr();
            libc::sigaction(libc::SIGSEGV, std::ptr::null(), prev);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_segv as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
    });
}

/// If `addr` is in the guard page of the task running on this thread:
/// (task id, name, stack size).
fn guard_hit(addr: usize) -> Option<(u64, Option<&'static str>, usize)> {
    let m = worker::machine_in_signal();
    if m.is_null() {
        return None;
    }
    // SAFETY: a machine lives as long as its thread; `current` is a live task
    // while set (we are that task's thread, interrupted while it ran).
    unsafe {
        let t = (*m).current.get();
        if t.is_null() {
            return None;
        }
        let t = &*t;
        let lo = t.stack.guard_lo();
        if addr < lo || addr >= t.stack.lo() {
            return None;
        }
        let name = (*t.name.get()).as_deref().map(|s| &*(s as *const str));
        Some((t.id.get(), name, t.stack.size()))
    }
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; saved and restored around the handler.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((id, name, size)) = guard_hit(addr) {
        let mut b = RawBuf::<512>::new();
        b.push(b"usurp: task ").dec(id);
        if let Some(n) = name {
            b.push(b" (\"").push(n.as_bytes()).push(b"\")");
        }
        b.push(b" overflowed its stack of ")
            .dec(size as u64)
            .push(b" bytes (guard page hit at ")
            .hex(addr as u64)
            .push(b"); raise Runtime::builder().stack_size(..) or reduce recursion\n");
        write_stderr(b.as_bytes());
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(134) };
    }
    // SAFETY: chaining per the previous disposition, read-only after install.
    unsafe {
        let prev = &*(*PREV.0.get()).as_ptr();
        let h = prev.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            // Restore the default action; returning re-executes the fault,
            // which then kills the process with SIGSEGV as usual.
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
        *libc::__errno_location() = saved_errno;
    }
}

/// This thread's alternate signal stack; disabled and unmapped on drop.
pub(crate) struct AltStack {
    _map: Option<MmapMut>,
}

impl AltStack {
    /// Size: the kernel's minimum for this CPU's signal frame (AT_MINSIGSTKSZ,
    /// which grows with AVX-512/AMX/SVE state), at least SIGSTKSZ, plus 64 KiB
    /// headroom for the handlers (ours and the preemption handler's).
    pub(crate) fn size() -> usize {
        // SAFETY: getauxval has no preconditions.
        let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        let base = min.max(libc::SIGSTKSZ).max(16 * 1024);
        let ps = page_size();
        (base + 64 * 1024).div_ceil(ps) * ps
    }

    /// Maps, pre-faults and installs an alternate signal stack for this thread.
    pub(crate) fn install() -> AltStack {
        let size = Self::size();
        let Ok(mut map) = MmapOptions::new().len(size).populate().map_anon() else {
            return AltStack { _map: None };
        };
        // Pre-fault every page (populate is only a hint): Linux 5.2–5.4
        // corrupted AVX state when the signal stack page was not present.
        for i in (0..size).step_by(page_size()) {
            map[i] = 0;
        }
        let ss = libc::stack_t { ss_sp: map.as_mut_ptr().cast(), ss_flags: 0, ss_size: size };
        // SAFETY: `ss` describes a mapping that lives until this AltStack drops
        // (which disables it first).
        let rc = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        AltStack { _map: if rc == 0 { Some(map) } else { None } }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if self._map.is_some() {
            let ss = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: disabling the alternate stack before unmapping it.
            unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        }
    }
}
