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

pub fn set_spill_hook(h: unsafe extern "C" fn(*mut SpillFrame)) {
    arch::set_spill_hook(h)
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

/// Whether the interrupted thread holds register state that the spill
/// routine cannot save and restore, so preempting it would lose data.
///
/// x86-64: never. The spill routine uses XSAVE with the whole XCR0 mask, so
/// every state component the OS enabled (x87, SSE, AVX, AVX-512, PKRU, and
/// AMX tiles if the process asked the kernel for them) is saved.
///
/// aarch64: SME streaming mode, live ZA/ZT0 storage, a guarded control stack,
/// or a record list the arch crate could not parse (see
/// `usurp_arch_aarch64::sigctx::VectorState::must_refuse` for why live SVE
/// state alone is not a reason).
///
/// # Safety: `uc` is a handler's ucontext.
#[allow(unused_variables)]
pub unsafe fn unsaveable_state(uc: *const libc::c_void) -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: forwarded; the scan reads only inside the kernel's frame.
        unsafe { arch::sigctx::vector_state(uc).must_refuse() }
    }
    #[cfg(target_arch = "x86_64")]
    {
        false
    }
}
