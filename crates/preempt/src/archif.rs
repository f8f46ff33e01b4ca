//! The slice of the arch interface this crate uses, in one place: the only
//! ISA-specific lines of this crate. Both arch crates export the same items,
//! so the bodies below are shared; only the crate chosen, and the one
//! question that has a different answer per ISA (is there register state the
//! spill routine cannot save?), differ.

#[cfg(target_arch = "aarch64")]
use usurp_arch_aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use usurp_arch_x86_64 as arch;

pub use arch::SpillFrame;
pub use arch::{Verdict, MAX_INSN_LEN, MAX_LOOKBEHIND};

/// # Safety
/// As for the arch crate's `set_spill_hook`.
pub unsafe fn set_spill_hook(h: unsafe extern "C" fn(*mut SpillFrame)) {
    // SAFETY: forwarded contract.
    unsafe { arch::set_spill_hook(h) }
}
pub fn spill_stack_needed() -> usize {
    arch::spill_stack_needed()
}
/// # Safety: `uc` is a handler's ucontext.
pub unsafe fn pc(uc: *const libc::c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { arch::sigctx::pc(uc) }
}
/// # Safety: `uc` is a handler's ucontext.
pub unsafe fn sp(uc: *const libc::c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { arch::sigctx::sp(uc) }
}
/// # Safety: `uc` is a handler's ucontext; `pc` a valid resumption point.
pub unsafe fn set_pc(uc: *mut libc::c_void, pc: usize) {
    // SAFETY: forwarded.
    unsafe { arch::sigctx::set_pc(uc, pc) }
}
/// # Safety: `uc` is a handler's ucontext; room was checked.
pub unsafe fn inject_spill(uc: *mut libc::c_void) {
    // SAFETY: forwarded.
    unsafe { arch::sigctx::inject_spill(uc) }
}
pub fn classify(prev: &[u8], code: &[u8], pc: usize) -> Verdict {
    arch::classify_with_prev(prev, code, pc)
}

/// Test-only switch: pretend a shadow stack is active (the negative
/// control of the shadow-stack refusal on machines without CET/GCS).
static FAKE_SHADOW_STACK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Test-only: makes the safe-point check see an active shadow stack.
#[doc(hidden)]
pub fn fake_shadow_stack_for_tests(on: bool) {
    FAKE_SHADOW_STACK.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Why the interrupted thread's state cannot go through a spill frame, if it
/// cannot: register state the spill routine does not save, or a shadow
/// stack.
///
/// x86-64: a CET user shadow stack (SHSTK) is active on this thread (`rdssp`
/// reads a non-zero SSP; it is a no-op without CET): the spill routine
/// returns to the interrupted PC with a `ret` that no `call` pushed on the
/// shadow stack, which would raise #CP. Register state: never refused, XSAVE
/// with the whole XCR0 mask saves every component the OS enabled (x87, SSE,
/// AVX, AVX-512, PKRU, and AMX tiles if the process asked the kernel for
/// them).
///
/// aarch64: a guarded control stack (GCS) is enabled (shadow stack); SME
/// streaming mode, live ZA/ZT0 storage, an SVE record too large for the
/// spill frame, or a record list the arch crate could not parse (register
/// state). Live SVE state is saved and restored (the spill frame carries a
/// copy of the kernel's SVE record).
///
/// # Safety: `uc` is a handler's ucontext.
#[allow(unused_variables)]
pub unsafe fn unsaveable_state(uc: *const libc::c_void) -> Option<crate::Refusal> {
    if FAKE_SHADOW_STACK.load(core::sync::atomic::Ordering::Relaxed) {
        return Some(crate::Refusal::ShadowStack);
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: forwarded; the scan reads only inside the kernel's frame.
        let v = unsafe { arch::sigctx::vector_state(uc) };
        if v.gcs {
            Some(crate::Refusal::ShadowStack)
        } else if v.must_refuse() {
            Some(crate::Refusal::VectorState)
        } else {
            None
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if arch::sigctx::shadow_stack_active() {
            Some(crate::Refusal::ShadowStack)
        } else {
            None
        }
    }
}
