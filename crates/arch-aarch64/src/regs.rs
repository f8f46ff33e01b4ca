//! [`with_registers_spilled`]: callee-saved registers onto the stack, for
//! conservative stack scanning by the collector (Boehm's
//! `GC_with_callee_saves_pushed`).

use core::arch::global_asm;
use core::ffi::c_void;

// usurp_aarch64_with_regs(ctx: *mut c_void, cb: extern "C" fn(ctx, sp))
//
// Stack layout built (160 bytes, from the new SP upwards):
//   sp+0    x29, x30  (frame record: keeps the frame-pointer chain intact)
//   sp+16   x19, x20
//   sp+32   x21, x22
//   sp+48   x23, x24
//   sp+64   x25, x26
//   sp+80   x27, x28
//   sp+96   d8, d9
//   sp+112  d10, d11
//   sp+128  d12, d13
//   sp+144  d14, d15
//
// Registers saved: the AAPCS64 callee-saved set (x19–x28, x29, x30, d8–d15).
// Caller-saved registers hold nothing the caller still needs (the compiler
// spilled it before the call), so they cannot hide the only copy of a
// pointer. SP itself is passed to cb: everything from it up to the stack top
// is then scannable. Nothing is reloaded but x29/x30: cb is an AAPCS64
// function and preserves x19–x28 and d8–d15 itself.
global_asm!(
    ".text",
    ".globl usurp_aarch64_with_regs",
    ".type usurp_aarch64_with_regs,%function",
    ".p2align 4",
    "usurp_aarch64_with_regs:",
    ".cfi_startproc",
    "stp x29, x30, [sp, #-160]!",
    ".cfi_def_cfa_offset 160",
    ".cfi_offset x29, -160",
    ".cfi_offset x30, -152",
    "mov x29, sp",
    "stp x19, x20, [sp, #16]",
    "stp x21, x22, [sp, #32]",
    "stp x23, x24, [sp, #48]",
    "stp x25, x26, [sp, #64]",
    "stp x27, x28, [sp, #80]",
    "stp d8, d9, [sp, #96]",
    "stp d10, d11, [sp, #112]",
    "stp d12, d13, [sp, #128]",
    "stp d14, d15, [sp, #144]",
    "mov x2, x1",
    "mov x1, sp",
    "blr x2",
    "ldp x29, x30, [sp], #160",
    ".cfi_def_cfa_offset 0",
    ".cfi_restore x29",
    ".cfi_restore x30",
    "ret",
    ".cfi_endproc",
    ".size usurp_aarch64_with_regs, . - usurp_aarch64_with_regs",
);

extern "C" {
    fn usurp_aarch64_with_regs(ctx: *mut c_void, cb: unsafe extern "C" fn(*mut c_void, usize));
}

struct Ctx<'a> {
    f: &'a mut dyn FnMut(usize),
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn call(ctx: *mut c_void, sp: usize) {
    // SAFETY: `ctx` is the `Ctx` that `with_registers_spilled` passed, alive
    // and exclusively ours for the duration of the call.
    let ctx = unsafe { &mut *(ctx as *mut Ctx<'_>) };
    // A panic must not unwind through the assembly frame: catch it here and
    // resume it once we are back in Rust.
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (ctx.f)(sp))) {
        ctx.panic = Some(p);
    }
}

/// Pushes all callee-saved registers (x19–x30, d8–d15) onto the stack, then
/// calls `f(sp)` with the resulting stack pointer: every register value the
/// caller's frames may hold is then in `[sp, stack top)`. A panic in `f`
/// propagates to the caller.
pub fn with_registers_spilled(f: &mut dyn FnMut(usize)) {
    let mut ctx = Ctx { f, panic: None };
    // SAFETY: the routine follows the C ABI and calls `call` exactly once
    // with the pointer we pass; `call` never unwinds.
    unsafe { usurp_aarch64_with_regs(&mut ctx as *mut Ctx<'_> as *mut c_void, call) };
    if let Some(p) = ctx.panic {
        std::panic::resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callee_saved_values_are_in_scanned_range() {
        let pat: [u64; 10] = core::array::from_fn(|i| 0x5eed_0000_0000_0000 | (i as u64 * 0x1111));
        let mut found = [false; 10];
        let mut sp_seen = 0;
        let mut check = |sp: usize| {
            sp_seen = sp;
            // The promise: every callee-saved value is somewhere in
            // [sp, stack top); look in the first 4 KiB (the block we pushed
            // and the frames of the Rust callers in between).
            for i in 0..512 {
                // SAFETY: [sp, sp+4096) is this thread's live stack (the test
                // harness's frames lie above it).
                let w = unsafe { *((sp + 8 * i) as *const u64) };
                if let Some(k) = pat.iter().position(|&p| p == w) {
                    found[k] = true;
                }
            }
        };
        let mut cb: &mut dyn FnMut(usize) = &mut check;
        // Load the patterns into x19–x28 around the call. x19 cannot be an
        // asm operand (LLVM uses it), so the block saves x19–x28 itself.
        // SAFETY: the block restores every callee-saved register it changes
        // and keeps SP 16-aligned; the callee follows the C ABI.
        unsafe {
            core::arch::asm!(
                "stp x19, x20, [sp, #-80]!",
                "stp x21, x22, [sp, #16]",
                "stp x23, x24, [sp, #32]",
                "stp x25, x26, [sp, #48]",
                "stp x27, x28, [sp, #64]",
                "ldp x19, x20, [x9, #0]",
                "ldp x21, x22, [x9, #16]",
                "ldp x23, x24, [x9, #32]",
                "ldp x25, x26, [x9, #48]",
                "ldp x27, x28, [x9, #64]",
                "blr x10",
                "ldp x21, x22, [sp, #16]",
                "ldp x23, x24, [sp, #32]",
                "ldp x25, x26, [sp, #48]",
                "ldp x27, x28, [sp, #64]",
                "ldp x19, x20, [sp], #80",
                in("x9") pat.as_ptr(),
                in("x10") trampoline as *const () as usize,
                in("x0") &mut cb as *mut &mut dyn FnMut(usize),
                clobber_abi("C"),
            );
        }
        unsafe extern "C" fn trampoline(p: *mut &mut dyn FnMut(usize)) {
            // SAFETY: `p` points to the test's `cb`, alive during the call.
            with_registers_spilled(unsafe { &mut **p });
        }
        assert!(sp_seen != 0);
        assert_eq!(
            found, [true; 10],
            "every callee-saved pattern must be in the spilled block"
        );
    }

    #[test]
    fn panics_propagate() {
        let r = std::panic::catch_unwind(|| with_registers_spilled(&mut |_| panic!("boom")));
        assert!(r.is_err());
    }
}
