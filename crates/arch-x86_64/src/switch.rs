//! The cooperative context switch for x86-64 (System V ABI).
//!
//! A suspended context is represented by a single word: the stack pointer at
//! which its callee-saved state was pushed. `switch(save, to, arg)` pushes the
//! current context's callee-saved state, writes its stack pointer to `*save`,
//! loads `to` as the new stack pointer, pops that context's state and returns
//! `arg` to it as the return value of *its* call to `switch`.

use core::arch::global_asm;

/// Stack alignment required at a call instruction by the System V ABI.
pub const STACK_ALIGN: usize = 16;

// Saved-context layout, from the saved stack pointer upwards (64 bytes):
//
//   sp+0   MXCSR (4 bytes) | x87 control word (2 bytes) | pad (2 bytes)
//   sp+8   r15
//   sp+16  r14
//   sp+24  r13
//   sp+32  r12
//   sp+40  rbx
//   sp+48  rbp
//   sp+56  return address (pushed by the `call` to usurp_x86_64_switch)
//
// Registers saved: exactly the callee-saved set of the System V ABI — rbx,
// rbp, r12–r15, rsp (by storing it to *save), and the control parts of the
// floating-point state that the ABI also makes callee-saved: MXCSR's control
// bits and the x87 control word. Every other register is caller-saved, so the
// compiler has spilled what it needs before the call. The direction flag is
// clear at every call by the ABI; nothing to save there.
//
// Arguments: rdi = save (*mut usize), rsi = to (usize), rdx = arg.
// Returns in rax the `arg` given by whichever context switches back to us.
global_asm!(
    ".text",
    ".globl usurp_x86_64_switch",
    ".type usurp_x86_64_switch,@function",
    ".p2align 4",
    "usurp_x86_64_switch:",
    ".cfi_startproc",
    "endbr64",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    "push rbx",
    ".cfi_adjust_cfa_offset 8",
    "push r12",
    ".cfi_adjust_cfa_offset 8",
    "push r13",
    ".cfi_adjust_cfa_offset 8",
    "push r14",
    ".cfi_adjust_cfa_offset 8",
    "push r15",
    ".cfi_adjust_cfa_offset 8",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "stmxcsr [rsp]",
    "fnstcw [rsp + 4]",
    "mov [rdi], rsp",
    // From here on we are on the target context's stack.
    "mov rsp, rsi",
    "ldmxcsr [rsp]",
    "fldcw [rsp + 4]",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "pop r15",
    ".cfi_adjust_cfa_offset -8",
    "pop r14",
    ".cfi_adjust_cfa_offset -8",
    "pop r13",
    ".cfi_adjust_cfa_offset -8",
    "pop r12",
    ".cfi_adjust_cfa_offset -8",
    "pop rbx",
    ".cfi_adjust_cfa_offset -8",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    "mov rax, rdx",
    "ret",
    ".cfi_endproc",
    ".size usurp_x86_64_switch, . - usurp_x86_64_switch",
);

// The first code a new context runs. `init_stack` builds a saved-context frame
// whose return address is this trampoline, with r12 = entry function and
// r13 = its first argument. When the first `switch` to the new context
// returns here, rax holds the `arg` of that switch; it becomes the entry's
// second argument. rbp is 0 (from the initial frame), which terminates the
// frame-pointer chain at the task's entry for backtraces and the GC.
//
// Stack on arrival: rsp is 16-byte aligned (init_stack arranges it), so the
// `call` below enters `entry` with rsp ≡ 8 (mod 16) as the ABI requires. The
// entry never returns; if it did, `ud2` traps instead of running off the stack.
global_asm!(
    ".text",
    ".globl usurp_x86_64_trampoline",
    ".type usurp_x86_64_trampoline,@function",
    ".p2align 4",
    "usurp_x86_64_trampoline:",
    ".cfi_startproc",
    // No caller: mark the return address column undefined so unwinders stop.
    ".cfi_undefined rip",
    "mov rdi, r13",
    "mov rsi, rax",
    "call r12",
    "ud2",
    ".cfi_endproc",
    ".size usurp_x86_64_trampoline, . - usurp_x86_64_trampoline",
);

extern "C" {
    fn usurp_x86_64_switch(save: *mut usize, to: usize, arg: usize) -> usize;
    fn usurp_x86_64_trampoline();
}

/// Saves the current context's callee-saved registers on its stack, stores its
/// stack pointer in `*save`, and resumes the context whose saved stack pointer
/// is `to`. Returns the `arg` passed by the `switch` call that later resumes
/// this context.
///
/// # Safety
/// `save` must be valid for a write of one word. `to` must be a stack pointer
/// previously stored by `switch` or returned by [`init_stack`], whose context
/// has not been resumed since, and whose stack is still mapped.
#[inline(always)]
pub unsafe fn switch(save: *mut usize, to: usize, arg: usize) -> usize {
    // SAFETY: forwarded to the caller; the asm routine follows the C ABI.
    unsafe { usurp_x86_64_switch(save, to, arg) }
}

/// Prepares a fresh stack whose highest usable address is `top` so that the
/// first [`switch`] to the returned stack pointer calls
/// `entry(entry_arg, switch_arg)` on it, where `switch_arg` is the `arg` of that
/// switch. `entry` must never return (it ends by switching away for good).
///
/// # Safety
/// `top` must be the upper end of a writable region of at least 128 bytes that
/// is not in use.
pub unsafe fn init_stack(top: usize, entry: unsafe extern "C" fn(usize, usize) -> !, entry_arg: usize) -> usize {
    let top = top & !(STACK_ALIGN - 1);
    // Layout (see the comment above the asm): 7 words + return address.
    // After the switch's `ret`, rsp = sp + 64 must be 16-aligned; leave one
    // spare word above it so nothing writes past `top`.
    let sp = top - 16 - 64;
    let frame = sp as *mut u64;
    // SAFETY: the caller guarantees [top-128, top) is writable and unused.
    unsafe {
        frame.add(0).write(0x1F80 | (0x037F << 32)); // default MXCSR, x87 CW
        frame.add(1).write(0); // r15
        frame.add(2).write(0); // r14
        frame.add(3).write(entry_arg as u64); // r13
        frame.add(4).write(entry as usize as u64); // r12
        frame.add(5).write(0); // rbx
        frame.add(6).write(0); // rbp: ends the frame-pointer chain
        frame.add(7).write(usurp_x86_64_trampoline as *const () as usize as u64);
        frame.add(8).write(0); // a zero "return address" above the trampoline
    }
    sp
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        main_sp: usize,
        task_sp: usize,
        log: Vec<usize>,
    }

    unsafe extern "C" fn entry(arg: usize, first: usize) -> ! {
        let p = arg as *mut Pair;
        // SAFETY: the test keeps `Pair` alive and only one side runs at a time.
        unsafe {
            (*p).log.push(first);
            let mut v = first;
            loop {
                v = switch(&mut (*p).task_sp, (*p).main_sp, v + 1);
                (*p).log.push(v);
            }
        }
    }

    #[test]
    fn ping_pong_passes_values_and_keeps_fpu_control() {
        let mut stack = vec![0u8; 64 * 1024];
        let top = stack.as_mut_ptr() as usize + stack.len();
        let mut p = Box::new(Pair { main_sp: 0, task_sp: 0, log: vec![] });
        let pp: *mut Pair = &mut *p;
        // SAFETY: the stack outlives every switch into it; `p` is not moved.
        unsafe {
            (*pp).task_sp = init_stack(top, entry, pp as usize);
            let mut v = 10;
            for _ in 0..5 {
                v = switch(&mut (*pp).main_sp, (*pp).task_sp, v);
            }
            assert_eq!(v, 15);
            assert_eq!((*pp).log, vec![10, 11, 12, 13, 14]);
        }
        // The task's MXCSR is the default; ours is unchanged by the switches.
        let mut mxcsr: u32 = 0;
        // SAFETY: stmxcsr writes 4 bytes to a local.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr) };
        assert_eq!(mxcsr & 0xffc0, 0x1F80);
    }
}
