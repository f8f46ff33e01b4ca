//! The spill routine: where an async-preempted context goes when the signal
//! handler returns.
//!
//! The handler (crate `usurp-preempt`) has rewritten the signal's ucontext with
//! [`crate::sigctx::inject_spill`] so that the thread, on leaving the signal,
//! behaves as if the interrupted instruction had been `call usurp_x86_64_spill`
//! issued with the 128-byte red zone skipped: the interrupted RIP sits at
//! `[rsp]`, and `rsp + 8 + 128` is the interrupted RSP. Nothing else has been
//! touched: every register, the flags and the whole extended state still hold
//! the interrupted code's values. The routine saves all of it on the task's own
//! stack, calls the installed hook with a pointer to the [`SpillFrame`], and
//! when the hook returns (possibly much later, after the task was parked and
//! resumed by a cooperative `switch`), restores everything and returns to the
//! interrupted PC with RSP exactly as it was.

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::frame::{SpillFrame, FRAME_SIZE, RED_ZONE, SPILL_HOOK_STACK};

// ---- state shared with the assembly -------------------------------------

/// Bytes of the extended-state save area (FXSAVE's 512 until `init` runs).
static USURP_X86_64_XSAVE_SIZE: AtomicUsize = AtomicUsize::new(512);
/// 0: use FXSAVE64/FXRSTOR64 (no OS-enabled XSAVE); 1: XSAVE64/XRSTOR64.
static USURP_X86_64_XSAVE_MODE: AtomicU32 = AtomicU32::new(0);
/// XCR0 (the OS-enabled feature mask) split for EDX:EAX.
static USURP_X86_64_XCR0_LO: AtomicU32 = AtomicU32::new(0);
static USURP_X86_64_XCR0_HI: AtomicU32 = AtomicU32::new(0);
/// The MXCSR value the hook runs with (the ABI default: all exceptions masked,
/// round to nearest).
static USURP_X86_64_DEFAULT_MXCSR: u32 = 0x1F80;
/// The hook, or null (then the routine saves and restores without a call).
static USURP_X86_64_SPILL_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

static INIT: AtomicU32 = AtomicU32::new(0);

/// Reads CPUID/XCR0 once and publishes the XSAVE mask and area size.
fn init() {
    if INIT.load(Ordering::Acquire) == 2 {
        return;
    }
    // SAFETY: CPUID is available on every x86-64 CPU (the intrinsic is safe
    // on recent compilers, unsafe on older ones).
    #[allow(unused_unsafe)]
    let leaf1 = unsafe { core::arch::x86_64::__cpuid(1) };
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if osxsave {
        let (lo, hi): (u32, u32);
        // SAFETY: CR4.OSXSAVE is set (CPUID.1:ECX[27]), so XGETBV with ECX=0
        // is allowed in user mode; it only writes EAX/EDX.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        // SAFETY: CPUID leaf 0xD exists when XSAVE is enabled.
        #[allow(unused_unsafe)]
        let d = unsafe { core::arch::x86_64::__cpuid_count(0xD, 0) };
        // EBX: size of the XSAVE area for the features enabled in XCR0.
        let size = (d.ebx as usize).max(512 + 64);
        USURP_X86_64_XCR0_LO.store(lo, Ordering::Relaxed);
        USURP_X86_64_XCR0_HI.store(hi, Ordering::Relaxed);
        USURP_X86_64_XSAVE_SIZE.store(size, Ordering::Relaxed);
        USURP_X86_64_XSAVE_MODE.store(1, Ordering::Relaxed);
    }
    INIT.store(2, Ordering::Release);
}

/// The size of the extended-state area the spill routine saves (XSAVE area
/// for the OS-enabled features, or 512 for FXSAVE).
pub fn xsave_size() -> usize {
    init();
    USURP_X86_64_XSAVE_SIZE.load(Ordering::Relaxed)
}

/// The XCR0 mask used with XSAVE/XRSTOR (0 when FXSAVE is used instead).
pub fn xsave_mask() -> u64 {
    init();
    (USURP_X86_64_XCR0_LO.load(Ordering::Relaxed) as u64) | ((USURP_X86_64_XCR0_HI.load(Ordering::Relaxed) as u64) << 32)
}

/// Bytes the injection plus the spill routine plus the park path need below
/// the interrupted SP: the red zone, the pushed PC, the fixed frame, up to 63
/// bytes of alignment, the extended-state area and [`SPILL_HOOK_STACK`].
pub fn spill_stack_needed() -> usize {
    RED_ZONE + 8 + FRAME_SIZE + 64 + xsave_size() + SPILL_HOOK_STACK
}

/// Installs the function the spill routine calls after saving everything.
/// Call once at startup, before any preemption is injected; later calls
/// replace the hook for subsequent spills.
///
/// # Safety
/// The spill routine's assembly calls `hook` on the interrupted task's own
/// stack, right below the [`SpillFrame`], with the interrupted code's
/// registers saved only in that frame, and after it returns restores them
/// from the frame and jumps to the interrupted PC. So `hook` must not
/// unwind, must leave the frame and the stack above it untouched (other
/// than through `SpillFrame`'s methods), must use at most
/// [`SPILL_HOOK_STACK`] bytes of stack (what [`spill_stack_needed`]
/// reserves), and may switch away and return later (on any thread: nothing
/// in the x86-64 frame belongs to a thread) only if the interrupted code
/// holds nothing tied to the thread it was interrupted on.
pub unsafe fn set_spill_hook(hook: unsafe extern "C" fn(frame: *mut SpillFrame)) {
    init();
    USURP_X86_64_SPILL_HOOK.store(hook as *mut (), Ordering::Release);
}

/// The spill routine's address (the handler points the interrupted RIP here).
pub(crate) fn spill_routine() -> usize {
    usurp_x86_64_spill as *const () as usize
}

extern "C" {
    fn usurp_x86_64_spill();
}

// The spill routine.
//
// Entry (made by inject_spill, not by a real call): [rsp] = interrupted RIP,
// rsp = interrupted RSP - 128 (red zone, left untouched) - 8. Every other
// register, RFLAGS and the extended state are the interrupted code's. The
// incoming RSP may have any alignment (the interrupted code may have been in
// the middle of a push sequence), so all alignment is done dynamically.
//
// Stack layout built (addresses relative to rbp after the prologue; rbx holds
// the address of the SpillFrame = rbp - 128 while the hook runs):
//
//   rbp+144 .. rbp+16   red zone of the interrupted code (128 bytes, untouched)
//   rbp+8    interrupted RIP           } a normal frame record: the chain goes
//   rbp+0    interrupted RBP           } spill -> interrupted frame -> ... -> entry
//   rbp-8    rax        rbp-16  rbx    rbp-24  rcx    rbp-32  rdx
//   rbp-40   rsi        rbp-48  rdi    rbp-56  r8     rbp-64  r9
//   rbp-72   r10        rbp-80  r11    rbp-88  r12    rbp-96  r13
//   rbp-104  r14        rbp-112 r15
//   rbp-120  RFLAGS
//   rbp-128  address of the XSAVE area          <- SpillFrame (rbx)
//   ...      padding to 64-byte alignment
//   xsave    XSAVE64 area (size from CPUID.0xD.0:EBX for XCR0), or FXSAVE64
//   ...      the hook's stack (SPILL_HOOK_STACK is reserved for it)
//
// Registers saved and why: all 15 GPRs besides RSP (the interrupted code may
// hold live values in any of them: it did not agree to a call), RFLAGS
// (condition codes and DF may be live), and the whole extended state with
// XSAVE64 using the OS-enabled XCR0 mask as EDX:EAX (x87, MXCSR, XMM, YMM
// upper halves, AVX-512 opmask/ZMM, whatever the OS enabled). XSAVE needs a
// 64-byte aligned area whose header (bytes 512..575) XRSTOR checks: we zero
// it first, because XSAVE writes only XSTATE_BV and the stack holds garbage.
// RSP is restored by construction (the frame is popped and `ret 128` skips the
// red zone).
//
// Before calling Rust: DF is cleared (cld) after RFLAGS was saved, the x87
// unit is reset (fninit: empty register stack, default control word) and MXCSR
// is set to the ABI default, so the hook runs in the state the ABI promises;
// the stack is 64-byte aligned at the call (the ABI needs 16). rbx is
// callee-saved, so it still points at the SpillFrame when the hook returns,
// even if the hook switched away with `switch` and was resumed later: `switch`
// saves and restores rbx/rbp/r12-r15 and MXCSR/x87 CW, and XRSTOR afterwards
// restores the interrupted extended state anyway.
global_asm!(
    ".text",
    ".globl usurp_x86_64_spill",
    ".type usurp_x86_64_spill,@function",
    ".p2align 4",
    "usurp_x86_64_spill:",
    ".cfi_startproc",
    // The "return address" is the interrupted PC itself, not the address after
    // a call: tell unwinders not to subtract one when looking it up.
    ".cfi_signal_frame",
    ".cfi_def_cfa rsp, 136",
    ".cfi_offset rip, -136",
    "push rbp",
    ".cfi_def_cfa_offset 144",
    ".cfi_offset rbp, -144",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rax",
    ".cfi_offset rax, -152",
    "push rbx",
    ".cfi_offset rbx, -160",
    "push rcx",
    ".cfi_offset rcx, -168",
    "push rdx",
    ".cfi_offset rdx, -176",
    "push rsi",
    ".cfi_offset rsi, -184",
    "push rdi",
    ".cfi_offset rdi, -192",
    "push r8",
    ".cfi_offset r8, -200",
    "push r9",
    ".cfi_offset r9, -208",
    "push r10",
    ".cfi_offset r10, -216",
    "push r11",
    ".cfi_offset r11, -224",
    "push r12",
    ".cfi_offset r12, -232",
    "push r13",
    ".cfi_offset r13, -240",
    "push r14",
    ".cfi_offset r14, -248",
    "push r15",
    ".cfi_offset r15, -256",
    "pushfq",
    // DWARF register 49 is RFLAGS.
    ".cfi_offset 49, -264",
    "cld",
    "sub rsp, 8",
    "mov rbx, rsp",
    // Carve the 64-byte aligned extended-state area.
    "sub rsp, qword ptr [rip + {size}]",
    "and rsp, -64",
    "mov qword ptr [rbx], rsp",
    "cmp dword ptr [rip + {mode}], 0",
    "je 2f",
    // Zero the XSAVE header (offsets 512..575).
    "xor eax, eax",
    "mov qword ptr [rsp + 512], rax",
    "mov qword ptr [rsp + 520], rax",
    "mov qword ptr [rsp + 528], rax",
    "mov qword ptr [rsp + 536], rax",
    "mov qword ptr [rsp + 544], rax",
    "mov qword ptr [rsp + 552], rax",
    "mov qword ptr [rsp + 560], rax",
    "mov qword ptr [rsp + 568], rax",
    "mov eax, dword ptr [rip + {lo}]",
    "mov edx, dword ptr [rip + {hi}]",
    "xsave64 [rsp]",
    // With AVX state enabled (XCR0 bit 2), clear the upper halves so that the
    // SSE code of the hook pays no AVX-SSE transition penalty.
    "test eax, 4",
    "jz 3f",
    "vzeroupper",
    "jmp 3f",
    "2:",
    "fxsave64 [rsp]",
    "3:",
    "fninit",
    "ldmxcsr dword ptr [rip + {mxcsr}]",
    "mov rax, qword ptr [rip + {hook}]",
    "test rax, rax",
    "jz 4f",
    "mov rdi, rbx",
    "call rax",
    "4:",
    // Restore. rbx survived the call (callee-saved).
    "mov rsp, qword ptr [rbx]",
    "cmp dword ptr [rip + {mode}], 0",
    "je 5f",
    "mov eax, dword ptr [rip + {lo}]",
    "mov edx, dword ptr [rip + {hi}]",
    "xrstor64 [rsp]",
    "jmp 6f",
    "5:",
    "fxrstor64 [rsp]",
    "6:",
    "lea rsp, [rbx + 8]",
    // RFLAGS first (it was pushed last); pops and `ret` leave flags alone.
    "popfq",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "pop rbp",
    ".cfi_def_cfa rsp, 136",
    // Pop the interrupted RIP and skip the red zone: rsp is exactly as before.
    "ret 128",
    ".cfi_endproc",
    ".size usurp_x86_64_spill, . - usurp_x86_64_spill",
    size = sym USURP_X86_64_XSAVE_SIZE,
    mode = sym USURP_X86_64_XSAVE_MODE,
    lo = sym USURP_X86_64_XCR0_LO,
    hi = sym USURP_X86_64_XCR0_HI,
    mxcsr = sym USURP_X86_64_DEFAULT_MXCSR,
    hook = sym USURP_X86_64_SPILL_HOOK,
);
