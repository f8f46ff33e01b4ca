//! The arch interface, written once.
//!
//! * **Which crate**: the one place in usurp that chooses the ISA's crate
//!   (`usurp-arch-x86_64` or `usurp-arch-aarch64`) with `cfg(target_arch)`,
//!   re-exported as `usurp_preempt::arch` for the scheduler, the collector,
//!   the stress binary and the tests; any other target is a compile error.
//!   (Cargo's manifest has to name the dependency per target too: it lists
//!   the same two.)
//! * **What each crate provides**: [`conformance`] names every item of the
//!   interface with its type. Compiling it for a target checks that target's
//!   crate; CI compiles both (natively and with `--target
//!   aarch64-unknown-linux-gnu`), so the two crates cannot drift apart
//!   without a build failing. Extensions one crate has beyond the interface
//!   (aarch64's `SpillFrame::x`, x86-64's `xsave_size`, …) are free.
//! * **The wrappers this crate calls** (below): thin forwards, plus the
//!   mapping of the arch's answers to this crate's [`Refusal`]s.
//!
//! [`Refusal`]: crate::Refusal

#[cfg(target_arch = "aarch64")]
pub use usurp_arch_aarch64 as arch;
#[cfg(target_arch = "x86_64")]
pub use usurp_arch_x86_64 as arch;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("usurp runs on x86-64 and aarch64 Linux only (no arch crate for this target)");

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
/// The anchor that keeps the preemptible linker section alive.
pub fn preemptible_section_anchor() -> usize {
    arch::preemptible_section_anchor()
}

/// Test-only switch: pretend a shadow stack is active (the negative
/// control of the shadow-stack refusal on machines without CET/GCS).
static FAKE_SHADOW_STACK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Test-only: makes the safe-point check see an active shadow stack.
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub fn fake_shadow_stack_for_tests(on: bool) {
    FAKE_SHADOW_STACK.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Why the interrupted thread's state cannot go through a spill frame, if it
/// cannot: a shadow stack (x86-64 CET SHSTK, aarch64 GCS), or register state
/// the spill routine does not save (aarch64: SME streaming mode, live
/// ZA/ZT0, an SVE record too large, an unparsable record list; never on
/// x86-64). The arch crate's `sigctx::unsaveable` decides (see there).
///
/// # Safety: `uc` is a handler's ucontext.
pub unsafe fn unsaveable_state(uc: *const libc::c_void) -> Option<crate::Refusal> {
    if FAKE_SHADOW_STACK.load(core::sync::atomic::Ordering::Relaxed) {
        return Some(crate::Refusal::ShadowStack);
    }
    // SAFETY: forwarded (the aarch64 scan reads only inside the kernel's frame).
    match unsafe { arch::sigctx::unsaveable(uc) } {
        None => None,
        Some(arch::sigctx::Unsaveable::ShadowStack) => Some(crate::Refusal::ShadowStack),
        Some(arch::sigctx::Unsaveable::VectorState) => Some(crate::Refusal::VectorState),
    }
}

/// The interface each arch crate provides, item by item, with its type: a
/// crate that lacks an item, or gives it another type, fails to compile
/// here (on its target). Safe functions are checked as safe `fn` pointers
/// (an `unsafe fn` does not coerce to one); `unsafe fn`s as `unsafe fn`
/// pointers. Nothing here runs.
#[allow(dead_code)]
pub mod conformance {
    use super::arch;
    use core::ffi::c_void;

    type Frame = arch::SpillFrame;

    // ---- the cooperative context switch (module `switch`) ----
    /// `switch(save, to, arg) -> arg of the switch that resumes `save``.
    pub const SWITCH: unsafe fn(*mut usize, usize, usize) -> usize = arch::switch;
    /// `init_stack(top, entry, arg) -> saved SP` of a fresh context.
    pub const INIT_STACK: unsafe fn(usize, unsafe extern "C" fn(usize, usize) -> !, usize) -> usize =
        arch::init_stack;
    pub const STACK_ALIGN: usize = arch::STACK_ALIGN;
    /// Offsets of a saved context's frame record from its saved SP: after a
    /// cooperative switch, and after a spill (task dumps walk from there).
    pub const SWITCH_FRAME_RECORD: usize = arch::SWITCH_FRAME_RECORD;
    pub const SPILLED_FRAME_RECORD: usize = arch::SPILLED_FRAME_RECORD;

    // ---- the spill routine and its frame (modules `frame`, `spill`) ----
    pub const SET_SPILL_HOOK: unsafe fn(unsafe extern "C" fn(*mut Frame)) = arch::set_spill_hook;
    /// Bytes below the interrupted SP the injection, the spill and the park
    /// path need (a plain `fn` in both crates: x86-64 knows its XSAVE size
    /// only at run time).
    pub const SPILL_STACK_NEEDED: fn() -> usize = arch::spill_stack_needed;
    pub const SPILL_HOOK_STACK: usize = arch::SPILL_HOOK_STACK;
    pub const RED_ZONE: usize = arch::RED_ZONE;
    /// Names of `SpillFrame::gprs()`, in order.
    pub const GPR_NAMES: &[&str] = &arch::GPR_NAMES;
    pub const FRAME_GPRS: fn(&Frame) -> &[usize] = Frame::gprs;
    /// `[lo, hi)` of everything the spill saved, for conservative scanning.
    pub const FRAME_SAVED_RANGE: fn(&Frame) -> (usize, usize) = Frame::saved_range;
    pub const FRAME_PC: fn(&Frame) -> usize = Frame::pc;
    pub const FRAME_SP: fn(&Frame) -> usize = Frame::sp;
    pub const FRAME_FP: fn(&Frame) -> usize = Frame::fp;
    pub const FRAME_RECORD: fn(&Frame) -> usize = Frame::frame_record;
    pub const FRAME_REBIND: fn(&mut Frame) = Frame::rebind_to_current_thread;

    // ---- the signal's ucontext (module `sigctx`) ----
    pub const SIG_PC: unsafe fn(*const c_void) -> usize = arch::sigctx::pc;
    pub const SIG_SP: unsafe fn(*const c_void) -> usize = arch::sigctx::sp;
    pub const SIG_FP: unsafe fn(*const c_void) -> usize = arch::sigctx::fp;
    pub const SIG_SET_PC: unsafe fn(*mut c_void, usize) = arch::sigctx::set_pc;
    pub const SIG_INJECT_SPILL: unsafe fn(*mut c_void) = arch::sigctx::inject_spill;
    pub const SIG_UNSAVEABLE: unsafe fn(*const c_void) -> Option<arch::sigctx::Unsaveable> =
        arch::sigctx::unsaveable;
    /// Exactly these reasons, in both crates.
    pub const fn unsaveable_variants(u: arch::sigctx::Unsaveable) -> u8 {
        match u {
            arch::sigctx::Unsaveable::ShadowStack => 0,
            arch::sigctx::Unsaveable::VectorState => 1,
        }
    }

    // ---- the safe-point check (module `classify`, portable) ----
    pub const CLASSIFY: fn(&[u8], usize) -> arch::Verdict = arch::classify;
    pub const CLASSIFY_WITH_PREV: fn(&[u8], &[u8], usize) -> arch::Verdict = arch::classify_with_prev;
    pub const IS_AFTER_CALL: fn(&[u8], usize) -> bool = arch::is_after_call;
    pub const MAX_INSN_LEN: usize = arch::MAX_INSN_LEN;
    pub const MAX_LOOKBEHIND: usize = arch::MAX_LOOKBEHIND;
    /// Exactly these verdicts, in both crates (neither is `non_exhaustive`).
    pub const fn verdict_variants(v: arch::Verdict) -> u8 {
        match v {
            arch::Verdict::Safe => 0,
            arch::Verdict::InPrologue => 1,
            arch::Verdict::InEpilogue => 2,
            arch::Verdict::Undecodable => 3,
            arch::Verdict::Syscall => 4,
            arch::Verdict::VectorExtension => 5,
        }
    }
    /// Whether code may hold a thread-local address (pinning, module `tls`).
    pub const CODE_TOUCHES_TLS: fn(&[u8], u64) -> bool = arch::code_touches_tls;

    // ---- the rest ----
    /// Callee-saved registers onto the stack, for a conservative self-scan.
    pub const WITH_REGISTERS_SPILLED: fn(&mut dyn FnMut(usize)) = arch::with_registers_spilled;
    /// Per-task CPU time: a counter and its rate (None: unknown).
    pub const CYCLES: fn() -> u64 = arch::cycles;
    pub const CYCLE_HZ: fn() -> Option<u64> = arch::cycle_hz;
    /// A cache prefetch hint for a read of the line holding an address
    /// (any address: a hint never faults); the collector's mark loop.
    pub const PREFETCH_READ: fn(usize) = arch::prefetch_read;
    /// The anchor instruction of the `usurp_preemptible` linker section.
    pub const PREEMPTIBLE_SECTION_ANCHOR: fn() -> usize = arch::preemptible_section_anchor;

    // ---- the register checker for stress tests (module `regcheck`) ----
    pub const REGCHECK_LOOP: fn(u64, u64) -> u64 = arch::regcheck::register_loop;
    pub const REGCHECK_CODE_RANGE: fn() -> (usize, usize) = arch::regcheck::code_range;
    pub const REGCHECK_CHECK_RANGE: fn() -> (usize, usize) = arch::regcheck::check_range;
    pub const REGCHECK_CHECKED: fn() -> &'static str = arch::regcheck::checked_registers;
    pub const REGCHECK_VECTOR_MODE: fn() -> u64 = arch::regcheck::vector_mode;
    pub const REGCHECK_PATTERNS: fn(u64) -> arch::regcheck::Patterns = arch::regcheck::Patterns::from_seed;
    pub const REGCHECK_GPR_NAMES: &[&str] = &arch::regcheck::GPR_NAMES;
    pub const REGCHECK_GPRS: usize = arch::regcheck::GPRS;
}
