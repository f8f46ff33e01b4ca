//! Does a function's machine code start by linking a frame record? (issue 13
//! item 9: detect an embedder's build without frame pointers.)
//!
//! Built with `-C force-frame-pointers=yes` and shrink-wrapping off, a
//! function starts by storing x29/x30 (`stp x29, x30, [sp, #-n]!`, or
//! `sub sp, sp, #n` then `stp x29, x30, [sp, #m]`) and pointing x29 at the
//! record (`mov x29, sp` / `add x29, sp, #m`), after at most a `bti c` or
//! `paciasp` hint. Without frame pointers, x29 is never set from SP; with
//! shrink-wrapping on, an early-exit test and branch come first. Portable
//! (pure word matching), so its unit tests run on every host.

/// Whether `code`, the first bytes of a function (24 are enough), begins
/// with a frame-record prologue: after hints (`bti`, `paciasp`), only
/// `stp x29, x30, [sp, ..]` / `sub sp, sp, #n` / other stores to SP until
/// `add x29, sp, #m` (`mov x29, sp`) within the first four instructions.
pub fn prologue_links_frame(code: &[u8]) -> bool {
    let words = code.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let mut seen = 0;
    let mut saved_record = false;
    for w in words {
        // HINT space (nop, bti, paciasp, ...): skipped, not counted.
        if w & 0xffff_f01f == 0xd503_201f {
            continue;
        }
        seen += 1;
        if seen > 4 {
            return false;
        }
        // add x29, sp, #imm (mov x29, sp is #0): 64-bit ADD (immediate),
        // Rn = sp, Rd = x29, no shift.
        if w & 0xffc0_03ff == 0x9100_03fd {
            return saved_record;
        }
        // stp x29, x30, [sp, #imm] in any addressing mode (signed offset,
        // pre-index; 64-bit, store): opc=10, 101 0 0xx, L=0.
        let is_stp_64 = w & 0xfe40_0000 == 0xa800_0000 && (w >> 23) & 3 != 0;
        if is_stp_64 && (w >> 5) & 31 == 31 {
            if w & 31 == 29 && (w >> 10) & 31 == 30 {
                saved_record = true;
            }
            continue;
        }
        // sub sp, sp, #imm (any shift).
        if w & 0xff80_03ff == 0xd100_03ff {
            continue;
        }
        // str Xt, [sp, #imm] (unsigned offset or pre-index): other
        // callee-saved registers stored before x29 is set.
        if w & 0xffc0_03e0 == 0xf900_03e0 || w & 0xffe0_0fe0 == 0xf800_0fe0 {
            continue;
        }
        return false;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::prologue_links_frame;

    fn bytes(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const STP_PRE: u32 = 0xa9bf_7bfd; // stp x29, x30, [sp, #-16]!
    const MOV_FP: u32 = 0x9100_03fd; // mov x29, sp
    const SUB_SP: u32 = 0xd100_83ff; // sub sp, sp, #0x20
    const STP_OFF: u32 = 0xa901_7bfd; // stp x29, x30, [sp, #16]
    const ADD_FP: u32 = 0x9100_43fd; // add x29, sp, #16
    const BTI_C: u32 = 0xd503_245f;
    const PACIASP: u32 = 0xd503_233f;
    const STP_X20_X19: u32 = 0xa901_4ff4; // stp x20, x19, [sp, #16]
    const CBZ_X1: u32 = 0xb400_0101; // cbz x1, +32
    const RET: u32 = 0xd65f_03c0;

    #[test]
    fn frame_record_prologues_are_recognised() {
        assert!(prologue_links_frame(&bytes(&[STP_PRE, MOV_FP, RET])));
        assert!(prologue_links_frame(&bytes(&[SUB_SP, STP_OFF, ADD_FP, RET])));
        assert!(prologue_links_frame(&bytes(&[BTI_C, PACIASP, STP_PRE, MOV_FP])));
    }

    #[test]
    fn prologues_without_a_frame_record_are_refused() {
        // No frame pointer: callee-saved registers only, x29 never set.
        assert!(!prologue_links_frame(&bytes(&[SUB_SP, STP_X20_X19, CBZ_X1, RET])));
        // Shrink-wrapped: the early exit test comes before the prologue.
        assert!(!prologue_links_frame(&bytes(&[CBZ_X1, STP_PRE, MOV_FP, RET])));
        // x29 set from SP without storing the record first.
        assert!(!prologue_links_frame(&bytes(&[SUB_SP, ADD_FP, RET])));
        assert!(!prologue_links_frame(&[]));
    }
}
