//! Does a function's machine code start by linking a frame record? (issue 13
//! item 9: detect an embedder's build without frame pointers.)
//!
//! Built with `-C force-frame-pointers=yes` and shrink-wrapping off, every
//! function starts `push rbp; mov rbp, rsp` (after an `endbr64` when CET
//! branch protection is on). Without frame pointers a function that needs a
//! frame starts by pushing other registers or adjusting RSP; with
//! shrink-wrapping on, a function with an early exit starts with its test
//! and branch, before the prologue. Portable (pure byte matching), so its
//! unit tests run on every host.

/// Whether `code`, the first bytes of a function (16 are enough), begins
/// with the frame-pointer prologue `[endbr64;] push rbp; mov rbp, rsp`.
pub fn prologue_links_frame(code: &[u8]) -> bool {
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    // push rbp; mov rbp, rsp (REX.W 89 /r, and the 8B /r form some
    // assemblers pick).
    const PROLOGUES: [[u8; 4]; 2] = [[0x55, 0x48, 0x89, 0xe5], [0x55, 0x48, 0x8b, 0xec]];
    let code = code.strip_prefix(&ENDBR64[..]).unwrap_or(code);
    PROLOGUES.iter().any(|p| code.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::prologue_links_frame;

    #[test]
    fn a_frame_pointer_prologue_is_recognised() {
        // push rbp; mov rbp, rsp; push r14; push rbx
        assert!(prologue_links_frame(&[0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0x53]));
        // endbr64 first (CET)
        assert!(prologue_links_frame(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x53]));
        assert!(prologue_links_frame(&[0x55, 0x48, 0x8b, 0xec, 0x90]));
    }

    #[test]
    fn prologues_without_a_frame_record_are_refused() {
        // No frame pointers: push r14; push rbx; push rax
        assert!(!prologue_links_frame(&[0x41, 0x56, 0x53, 0x50, 0x48, 0x85, 0xf6]));
        // sub rsp, 0x18 (leaf-like frame without rbp)
        assert!(!prologue_links_frame(&[0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0xf8]));
        // Shrink-wrapped: test rsi, rsi; je ... before push rbp
        assert!(!prologue_links_frame(&[0x48, 0x85, 0xf6, 0x74, 0x20, 0x55, 0x48, 0x89, 0xe5]));
        // push rbp alone (rbp saved as a callee-saved register, not linked)
        assert!(!prologue_links_frame(&[0x55, 0x53, 0x48, 0x83, 0xec, 0x10]));
        assert!(!prologue_links_frame(&[]));
    }
}
