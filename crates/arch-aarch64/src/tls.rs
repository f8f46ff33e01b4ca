//! Does a range of AArch64 machine code touch thread-local storage?
//!
//! Used by the scheduler to decide whether an asynchronously preempted task
//! must resume on the same OS thread (issue 11, "preempted loops migrate"):
//! code that computes a thread-local address may keep it in a register,
//! which after a migration would point into another thread's TLS. Every TLS
//! model on AArch64 Linux (local-exec, initial-exec, and TLS descriptors for
//! the dynamic models) reads the thread pointer with `mrs Xt, tpidr_el0`;
//! `tpidrro_el0` is matched too. Instructions are 4 bytes, aligned: the scan
//! is exact.

/// `mrs Xt, tpidr_el0` with the register field (bits 0-4) cleared.
const MRS_TPIDR_EL0: u32 = 0xd53b_d040;
/// `mrs Xt, tpidrro_el0`.
const MRS_TPIDRRO_EL0: u32 = 0xd53b_d060;

/// True if any instruction in `code` (4-byte aligned instructions, loaded at
/// `_ip`; the same signature as the x86-64 crate's) reads the thread pointer.
pub fn code_touches_tls(code: &[u8], _ip: u64) -> bool {
    code.chunks_exact(4).any(|w| {
        let i = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & !0x1f;
        i == MRS_TPIDR_EL0 || i == MRS_TPIDRRO_EL0
    })
}

#[cfg(test)]
mod tests {
    use super::code_touches_tls;

    fn bytes(insns: &[u32]) -> Vec<u8> {
        insns.iter().flat_map(|i| i.to_le_bytes()).collect()
    }

    #[test]
    fn finds_thread_pointer_reads() {
        // add x0, x0, #1 ; mrs x8, tpidr_el0 ; ret
        assert!(code_touches_tls(&bytes(&[0x9100_0400, 0xd53b_d048, 0xd65f_03c0]), 0));
        // mrs x1, tpidrro_el0
        assert!(code_touches_tls(&bytes(&[0xd53b_d061]), 0));
    }

    #[test]
    fn plain_code_does_not() {
        // add x0, x0, #1 ; mrs x0, nzcv ; ldr x1, [x0] ; ret
        assert!(!code_touches_tls(&bytes(&[0x9100_0400, 0xd53b_4200, 0xf940_0001, 0xd65f_03c0]), 0));
        assert!(!code_touches_tls(&[], 0));
    }
}
