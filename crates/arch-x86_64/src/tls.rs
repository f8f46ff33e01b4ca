//! Does a range of x86-64 machine code touch thread-local storage?
//!
//! Used by the scheduler to decide whether an asynchronously preempted task
//! must resume on the same OS thread (issue 11, "preempted loops migrate"):
//! code that computes a thread-local address may keep it in a register, which
//! after a migration would point into another thread's TLS. On x86-64 Linux
//! user code reaches TLS through the FS segment (local-exec and initial-exec
//! models: `mov rax, fs:[...]`, `fs:`-prefixed operands), `rdfsbase`, or the
//! general-dynamic call sequence, marked by its `data16 lea rdi, [rip+x@tlsgd]`.
//! The local-dynamic model (shared objects) has no such marker: callers must
//! only trust a negative answer for code of the main executable.
//!
//! The scan is a linear sweep of the decoder over the range: compiled code
//! has no data in `.text` on x86-64 (jump tables live in `.rodata`), and a
//! mis-synchronised decode after padding can only add false positives (the
//! safe direction: the task is pinned).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// True if any instruction in `code` (loaded at address `ip`) may compute or
/// use a thread-local address.
pub fn code_touches_tls(code: &[u8], ip: u64) -> bool {
    let mut dec = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while dec.can_decode() {
        let off = dec.position();
        dec.decode_out(&mut insn);
        if insn.is_invalid() {
            continue;
        }
        if matches!(insn.mnemonic(), Mnemonic::Rdfsbase | Mnemonic::Wrfsbase | Mnemonic::Rdgsbase | Mnemonic::Wrgsbase) {
            return true;
        }
        let has_mem = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
        if has_mem && matches!(insn.memory_segment(), Register::FS | Register::GS) {
            return true;
        }
        // General dynamic: data16 lea rdi, [rip+disp32] (66 48 8d 3d).
        if code.get(off..off + 4) == Some(&[0x66, 0x48, 0x8d, 0x3d][..]) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::code_touches_tls;

    #[test]
    fn finds_fs_relative_accesses() {
        // mov rax, fs:[0]
        assert!(code_touches_tls(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0], 0x1000));
        // add dword ptr fs:[rax+8], 1 ; after an unrelated instruction
        assert!(code_touches_tls(&[0x48, 0x01, 0xc8, 0x64, 0x83, 0x40, 0x08, 0x01], 0x1000));
        // rdfsbase rax
        assert!(code_touches_tls(&[0xf3, 0x48, 0x0f, 0xae, 0xc0], 0x1000));
        // general dynamic: data16 lea rdi,[rip+0]; data16 data16 rex.W call [rip+0]
        assert!(code_touches_tls(
            &[0x66, 0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0x66, 0x66, 0x48, 0xff, 0x15, 0, 0, 0, 0],
            0x1000
        ));
    }

    #[test]
    fn plain_code_does_not() {
        // add rax, rcx; mov rdx, [rax+8]; lea rdi, [rip+0]; call rel32; ret
        let code = [0x48, 0x01, 0xc8, 0x48, 0x8b, 0x50, 0x08, 0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0xc3];
        assert!(!code_touches_tls(&code, 0x1000));
        assert!(!code_touches_tls(&[], 0x1000));
    }
}
