//! Accessors for the `ucontext_t` a signal handler receives (x86-64 Linux).
//!
//! All functions take the handler's third argument as an untyped pointer so
//! that the ISA-neutral preemption crate can pass it through unchanged. None of
//! them allocates, locks or panics: the register array is indexed with
//! constants that are in bounds by construction.

use libc::{c_void, ucontext_t, REG_RBP, REG_RIP, REG_RSP};

use crate::frame::RED_ZONE;
use crate::spill::spill_routine;

const RIP: usize = REG_RIP as usize;
const RSP: usize = REG_RSP as usize;
const RBP: usize = REG_RBP as usize;

/// The interrupted program counter.
///
/// # Safety
/// `uc` must be the `ucontext_t` pointer passed to an `SA_SIGINFO` handler.
#[inline]
pub unsafe fn pc(uc: *const c_void) -> usize {
    // SAFETY: the caller passes the kernel-provided ucontext.
    unsafe { (*(uc as *const ucontext_t)).uc_mcontext.gregs[RIP] as usize }
}

/// The interrupted stack pointer.
///
/// # Safety
/// As for [`pc`].
#[inline]
pub unsafe fn sp(uc: *const c_void) -> usize {
    // SAFETY: the caller passes the kernel-provided ucontext.
    unsafe { (*(uc as *const ucontext_t)).uc_mcontext.gregs[RSP] as usize }
}

/// The interrupted frame pointer (RBP).
///
/// # Safety
/// As for [`pc`].
#[inline]
pub unsafe fn fp(uc: *const c_void) -> usize {
    // SAFETY: the caller passes the kernel-provided ucontext.
    unsafe { (*(uc as *const ucontext_t)).uc_mcontext.gregs[RBP] as usize }
}

/// Sets the PC at which the interrupted code resumes (used to back a
/// restartable sequence up to its start before injecting the spill).
///
/// # Safety
/// As for [`pc`]; `new_pc` must be a valid resumption point for the
/// interrupted register state.
#[inline]
pub unsafe fn set_pc(uc: *mut c_void, new_pc: usize) {
    // SAFETY: the caller passes the kernel-provided ucontext.
    unsafe { (*(uc as *mut ucontext_t)).uc_mcontext.gregs[RIP] = new_pc as i64 }
}

/// Rewrites the context so that returning from the handler enters the spill
/// routine as if the interrupted code had called it with its red zone
/// skipped: `new_rsp = rsp - 128 - 8`, `[new_rsp] = rip`, `rip = spill`.
/// The spill routine ends with `ret 128`, which restores RSP exactly.
///
/// # Safety
/// As for [`pc`]; the caller has checked that the interrupted stack has at
/// least [`crate::spill_stack_needed`] bytes of room below its SP.
#[inline]
pub unsafe fn inject_spill(uc: *mut c_void) {
    // SAFETY: the caller passes the kernel-provided ucontext and guarantees
    // the stack room, so the word at new_rsp (below the red zone) is ours.
    unsafe {
        let g = &mut (*(uc as *mut ucontext_t)).uc_mcontext.gregs;
        let rsp = g[RSP] as usize;
        let new_rsp = rsp - RED_ZONE - 8;
        (new_rsp as *mut usize).write(g[RIP] as usize);
        g[RIP] = spill_routine() as i64;
        g[RSP] = new_rsp as i64;
    }
}

/// Whether a CET user shadow stack (SHSTK) is active on the calling thread.
/// `rdsspq` reads the shadow-stack pointer when shadow stacks are enabled
/// and is a no-op (a hint NOP: the register keeps its value) otherwise, on
/// every x86-64 CPU, so this is one instruction and async-signal-safe. The
/// spill routine resumes with a `ret` that no `call` pushed on the shadow
/// stack, which raises #CP (SIGSEGV) when one is active: the preemption
/// check refuses then.
#[inline]
pub fn shadow_stack_active() -> bool {
    let mut ssp: u64 = 0;
    // SAFETY: RDSSPQ only writes its register operand (or nothing).
    unsafe {
        core::arch::asm!("rdsspq {0}", inout(reg) ssp, options(nomem, nostack, preserves_flags));
    }
    ssp != 0
}

/// Why the interrupted state cannot go through the spill frame (see
/// [`unsaveable`]). The same enum in both arch crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsaveable {
    /// A shadow stack is active (x86-64: CET SHSTK): the spill routine's
    /// resume would not match it.
    ShadowStack,
    /// Register state the spill frame does not keep (never on x86-64: XSAVE
    /// with the whole XCR0 mask saves every component the OS enabled).
    VectorState,
}

/// Whether the thread interrupted with `uc` has state the spill routine
/// cannot save and restore exactly: on x86-64, an active CET shadow stack
/// ([`shadow_stack_active`]; `uc` is not needed). Register state is never
/// refused: XSAVE with the whole XCR0 mask saves x87, SSE, AVX, AVX-512, PKRU,
/// and AMX tiles if the process asked the kernel for them.
///
/// # Safety
/// `uc` is the ucontext of a signal handler running on this thread (unused
/// here; the aarch64 twin reads it).
#[inline]
pub unsafe fn unsaveable(uc: *const c_void) -> Option<Unsaveable> {
    let _ = uc;
    if shadow_stack_active() {
        Some(Unsaveable::ShadowStack)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    /// ARCH_SHSTK_STATUS (arch/x86/include/uapi/asm/prctl.h).
    const ARCH_SHSTK_STATUS: libc::c_int = 0x5005;
    const ARCH_SHSTK_SHSTK: u64 = 1;

    #[test]
    fn shadow_stack_detection_agrees_with_the_kernel() {
        let mut features: u64 = 0;
        // SAFETY: arch_prctl writes one u64 through the pointer.
        let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SHSTK_STATUS, &mut features as *mut u64) };
        // Kernels without CET support reject the code: then no shadow stack.
        let kernel_says = r == 0 && features & ARCH_SHSTK_SHSTK != 0;
        assert_eq!(super::shadow_stack_active(), kernel_says);
    }
}
