//! The anchor of the `usurp_preemptible` linker section (where
//! usurp-preempt's `preemptible!` places functions): one trapping
//! instruction that guarantees the section exists, and with it the linker's
//! `__start_`/`__stop_` symbols, even in a program without any preemptible
//! function. usurp-preempt's `preemptible_code` takes its address, which
//! keeps it (and so the section) alive under --gc-sections. Nothing ever
//! jumps to it.

core::arch::global_asm!(
    ".pushsection usurp_preemptible,\"ax\",@progbits",
    ".p2align 4",
    ".globl usurp_preemptible_anchor",
    ".hidden usurp_preemptible_anchor",
    "usurp_preemptible_anchor:",
    "udf #0",
    ".popsection",
);

extern "C" {
    static usurp_preemptible_anchor: u8;
}

/// The anchor's address (inside the `usurp_preemptible` section).
#[inline]
pub fn preemptible_section_anchor() -> usize {
    // SAFETY: only the address of a linker-defined symbol is taken, nothing
    // is read (recent compilers consider this safe; older ones need unsafe).
    #[allow(unused_unsafe)]
    unsafe {
        core::ptr::addr_of!(usurp_preemptible_anchor) as usize
    }
}
