//! Spilling the callee-saved registers for a thread that scans its own stack.
//!
//! A conservative scan of the current thread's stack must also see the
//! pointers that live only in registers. Caller-saved registers are dead at a
//! call by definition (the compiler already spilled whatever it still needs),
//! so pushing the callee-saved ones onto the stack and then scanning from the
//! resulting stack pointer covers everything.

use core::arch::global_asm;

// usurp_x86_64_with_regs_spilled(ctx: rdi, cb: rsi)
//
// Stack layout built (from the incoming rsp downwards):
//   [return address]            pushed by our caller's call
//   rbp                         frame record (rbp chain stays walkable)
//   rbx, r12, r13, r14, r15     the remaining callee-saved GPRs
//   8 bytes padding             entry rsp ≡ 8 (mod 16); after 6 pushes and
//                               this pad rsp ≡ 0 (mod 16) at the call
// Then calls cb(ctx, rsp): every callee-saved register value is now in memory
// at or above the second argument. Registers saved: rbx, rbp, r12–r15 (the
// System V callee-saved GPRs); nothing else can hold a live value of our
// caller across this call. They are restored before returning.
global_asm!(
    ".text",
    ".globl usurp_x86_64_with_regs_spilled",
    ".type usurp_x86_64_with_regs_spilled,@function",
    ".p2align 4",
    "usurp_x86_64_with_regs_spilled:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov rax, rsi",
    "mov rsi, rsp",
    "call rax",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size usurp_x86_64_with_regs_spilled, . - usurp_x86_64_with_regs_spilled",
);

extern "C" {
    fn usurp_x86_64_with_regs_spilled(ctx: *mut u8, cb: unsafe extern "C" fn(*mut u8, usize));
}

unsafe extern "C" fn trampoline(ctx: *mut u8, sp: usize) {
    // SAFETY: ctx is the `&mut &mut dyn FnMut` passed below, alive for the call.
    let f = unsafe { &mut *(ctx as *mut &mut dyn FnMut(usize)) };
    f(sp)
}

/// Pushes all callee-saved registers (rbx, rbp, r12–r15) onto the stack, then
/// calls `f(sp)` with the stack pointer below them: everything from `sp` up to
/// the thread's stack top is then scannable and includes those registers.
///
/// A panic in `f` is not allowed to unwind through the assembly frame: it
/// aborts the process (the extern "C" trampoline does not unwind).
pub fn with_registers_spilled(f: &mut dyn FnMut(usize)) {
    let mut f = f;
    let ctx = &mut f as *mut &mut dyn FnMut(usize) as *mut u8;
    // SAFETY: the routine follows the C ABI and calls trampoline(ctx, sp) once.
    unsafe { usurp_x86_64_with_regs_spilled(ctx, trampoline) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_sees_a_stack_pointer_below_the_caller_and_callee_saved_values() {
        let here = 0u8;
        let here_addr = &here as *const u8 as usize;
        let mut got = 0usize;
        let mut r12_found = false;
        let marker: usize = 0x5eed_1234_abcd_0001;
        // Put a known value in r12 (and nowhere else on the stack) across the call; it must appear on the
        // stack between sp and our frame.
        // SAFETY: r12 is restored to its original value by the asm below; the
        // callback only reads stack memory between sp and here_addr.
        unsafe {
            let mut cb = |sp: usize| {
                got = sp;
                let mut p = sp;
                while p < here_addr {
                    // [sp, here_addr) is live stack of this thread.
                    if (p as *const usize).read() == marker {
                        r12_found = true;
                    }
                    p += 8;
                }
            };
            let cbp: &mut dyn FnMut(usize) = &mut cb;
            let ctx = &cbp as *const &mut dyn FnMut(usize) as usize;
            core::arch::asm!(
                "push r12",
                "mov r12, rax",
                "sub rsp, 8",
                "call {f}",
                "add rsp, 8",
                "pop r12",
                f = sym call_with_ctx,
                in("rax") marker,
                in("rdi") ctx,
                clobber_abi("C"),
            );
        }
        assert!(got != 0 && got < here_addr);
        assert!(r12_found, "r12's value was not spilled below the caller");
    }

    unsafe extern "C" fn call_with_ctx(ctx: usize) {
        // SAFETY: ctx points to a live `&mut dyn FnMut(usize)` on the test's stack.
        let f = unsafe { &mut **(ctx as *mut &mut dyn FnMut(usize)) };
        with_registers_spilled(f);
    }
}
