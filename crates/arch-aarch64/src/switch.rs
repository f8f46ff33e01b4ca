//! The cooperative context switch for aarch64 (AAPCS64).
//!
//! A suspended context is a single word: the stack pointer at which its
//! callee-saved registers were stored. `switch(save, to, arg)`
//! stores the current context's callee-saved registers, writes its stack
//! pointer to `*save`, loads `to`, reloads that context's registers and
//! returns `arg` to it as the result of *its* call to `switch`.

use core::arch::global_asm;

/// Stack alignment the AAPCS64 requires at all times (SP is checked by the CPU).
pub const STACK_ALIGN: usize = 16;

// Saved-context layout, from the saved stack pointer upwards (176 bytes):
//
//   sp+0    x19, x20
//   sp+16   x21, x22
//   sp+32   x23, x24
//   sp+48   x25, x26
//   sp+64   x27, x28
//   sp+80   x29 (frame pointer), x30 (link register: where `switch` returns)
//   sp+96   d8, d9
//   sp+112  d10, d11
//   sp+128  d12, d13
//   sp+144  d14, d15
//   sp+160  FPCR, pad
//
// Registers saved: the callee-saved set of AAPCS64 — x19–x28, x29, x30 (our
// return address), SP (stored to *save), the low 64 bits of v8–v15 (only those
// are callee-saved), and FPCR, whose rounding-mode and flush-to-zero controls
// the ABI treats as preserved across calls. x18 is the platform register and
// is left alone. Everything else is caller-saved.
//
// Arguments: x0 = save (*mut usize), x1 = to (usize), x2 = arg.
// Returns in x0 the `arg` given by whichever context switches back to us.
global_asm!(
    ".text",
    ".globl usurp_aarch64_switch",
    ".type usurp_aarch64_switch,%function",
    ".p2align 4",
    "usurp_aarch64_switch:",
    ".cfi_startproc",
    "sub sp, sp, #176",
    ".cfi_def_cfa_offset 176",
    "stp x19, x20, [sp, #0]",
    "stp x21, x22, [sp, #16]",
    "stp x23, x24, [sp, #32]",
    "stp x25, x26, [sp, #48]",
    "stp x27, x28, [sp, #64]",
    "stp x29, x30, [sp, #80]",
    ".cfi_offset x29, -96",
    ".cfi_offset x30, -88",
    "stp d8, d9, [sp, #96]",
    "stp d10, d11, [sp, #112]",
    "stp d12, d13, [sp, #128]",
    "stp d14, d15, [sp, #144]",
    "mrs x9, fpcr",
    "str x9, [sp, #160]",
    "mov x9, sp",
    "str x9, [x0]",
    // From here on we are on the target context's stack.
    "mov sp, x1",
    "ldr x9, [sp, #160]",
    "mrs x10, fpcr",
    "cmp x9, x10",
    "b.eq 1f",
    // Writing FPCR can be slow (it may synchronise the FP unit): only if it differs.
    "msr fpcr, x9",
    "1:",
    "ldp x19, x20, [sp, #0]",
    "ldp x21, x22, [sp, #16]",
    "ldp x23, x24, [sp, #32]",
    "ldp x25, x26, [sp, #48]",
    "ldp x27, x28, [sp, #64]",
    "ldp x29, x30, [sp, #80]",
    "ldp d8, d9, [sp, #96]",
    "ldp d10, d11, [sp, #112]",
    "ldp d12, d13, [sp, #128]",
    "ldp d14, d15, [sp, #144]",
    "add sp, sp, #176",
    ".cfi_def_cfa_offset 0",
    "mov x0, x2",
    "ret",
    ".cfi_endproc",
    ".size usurp_aarch64_switch, . - usurp_aarch64_switch",
);

// The first code a new context runs. `init_stack` builds a saved-context frame
// whose x30 is this trampoline, with x19 = entry function and x20 = its first
// argument, x29 = 0 (ends the frame-record chain at the task's entry). When the
// first `switch` into the new context returns here, x0 holds that switch's
// `arg`; it becomes the entry's second argument. The entry never returns; if
// it did, `brk` traps.
global_asm!(
    ".text",
    ".globl usurp_aarch64_trampoline",
    ".type usurp_aarch64_trampoline,%function",
    ".p2align 4",
    "usurp_aarch64_trampoline:",
    ".cfi_startproc",
    ".cfi_undefined x30",
    "mov x1, x0",
    "mov x0, x20",
    "blr x19",
    "brk #1",
    ".cfi_endproc",
    ".size usurp_aarch64_trampoline, . - usurp_aarch64_trampoline",
);

extern "C" {
    fn usurp_aarch64_switch(save: *mut usize, to: usize, arg: usize) -> usize;
    fn usurp_aarch64_trampoline();
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
    unsafe { usurp_aarch64_switch(save, to, arg) }
}

/// Prepares a fresh stack whose highest usable address is `top` so that the
/// first [`switch`] to the returned stack pointer calls
/// `entry(entry_arg, switch_arg)` on it. `entry` must never return.
///
/// # Safety
/// `top` must be the upper end of a writable region of at least 256 bytes that
/// is not in use.
pub unsafe fn init_stack(
    top: usize,
    entry: unsafe extern "C" fn(usize, usize) -> !,
    entry_arg: usize,
) -> usize {
    let top = top & !(STACK_ALIGN - 1);
    let sp = top - 16 - 176;
    let frame = sp as *mut u64;
    // SAFETY: the caller guarantees [top-256, top) is writable and unused.
    unsafe {
        for i in 0..22 {
            frame.add(i).write(0);
        }
        frame.add(0).write(entry as usize as u64); // x19
        frame.add(1).write(entry_arg as u64); // x20
        frame.add(10).write(0); // x29: ends the frame-record chain
        frame
            .add(11)
            .write(usurp_aarch64_trampoline as *const () as usize as u64); // x30
        frame.add(20).write(0); // FPCR: round to nearest, no flush-to-zero
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
    fn ping_pong_passes_values() {
        let mut stack = vec![0u8; 64 * 1024];
        let top = stack.as_mut_ptr() as usize + stack.len();
        let mut p = Box::new(Pair {
            main_sp: 0,
            task_sp: 0,
            log: vec![],
        });
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
    }
}
