//! The slice of the arch interface this crate uses, in one place: the only
//! ISA-specific lines of this crate. Both arch crates export the same items;
//! the one difference (TEMPORARY) is `sigctx::set_pc`, which the aarch64 crate
//! does not have yet, so restartable ranges are refused like unsafe ranges
//! there (`RESTART_SUPPORTED`).

#[cfg(target_arch = "x86_64")]
mod imp {
    use usurp_arch_x86_64 as arch;
    pub use arch::SpillFrame;

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
    pub const RESTART_SUPPORTED: bool = true;
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
    pub use arch::{Verdict, MAX_INSN_LEN, MAX_LOOKBEHIND};
    pub fn classify(prev: &[u8], code: &[u8], pc: usize) -> Verdict {
        arch::classify_with_prev(prev, code, pc)
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use usurp_arch_aarch64 as arch;
    pub use arch::SpillFrame;

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
    /// TEMPORARY: the aarch64 crate has no `sigctx::set_pc` yet, so
    /// restartable ranges are treated as plain unsafe ranges there.
    pub const RESTART_SUPPORTED: bool = false;
    /// # Safety: never called while RESTART_SUPPORTED is false.
    pub unsafe fn set_pc(_uc: *mut libc::c_void, _pc: usize) {}
    /// # Safety: `uc` is a handler's ucontext; room was checked.
    pub unsafe fn inject_spill(uc: *mut libc::c_void) {
        // SAFETY: forwarded.
        unsafe { arch::sigctx::inject_spill(uc) }
    }
    pub use arch::{Verdict, MAX_INSN_LEN, MAX_LOOKBEHIND};
    pub fn classify(prev: &[u8], code: &[u8], pc: usize) -> Verdict {
        arch::classify_with_prev(prev, code, pc)
    }
}

pub use imp::*;
