//! [`SpillFrame`]: the saved state of an async-preempted context.
//!
//! The frame IS a Linux `rt_sigframe` (see `layout`), so that the spill
//! routine can hand it to `rt_sigreturn`, and the kernel, not our code,
//! reloads every register (see `spill`). Layout, from its base F (16-aligned,
//! the stack pointer while the spill routine and its hook run) upwards:
//!
//! ```text
//!  F+0     frame record {x29 = interrupted x29, x30 = interrupted pc}
//!  F+16    magic "USURPSPL"          (F+0..F+128 is rt_sigframe.info: the
//!  F+24    unused                     kernel never reads it on sigreturn)
//!  F+128   ucontext:
//!  F+128     uc_flags = 0, uc_link = 0
//!  F+144     uc_stack   = the sigaltstack (at the interruption; the
//!  F+168     uc_sigmask = the signal mask     spill routine refreshes both
//!                                             right before rt_sigreturn)
//!  F+304     uc_mcontext: fault_address = 0
//!  F+312       regs[0..31] = x0..x30 (x30 = the interrupted LR)
//!  F+560       sp     = the interrupted SP
//!  F+568       pc     = the interrupted PC
//!  F+576       pstate = the interrupted PSTATE (NZCV, BTYPE, ...)
//!  F+592       fpsimd_context {FPSIMD_MAGIC, 528, fpsr, fpcr, v0..v31 (128 bits each)}
//!  F+1120      when SVE state was live at the interruption: a verbatim copy
//!              of the kernel's SVE record (Z0-Z31, P0-P15, FFR at the
//!              thread's vector length; at most MAX_SVE_RECORD bytes)
//!  F+1120(+N)  {0, 0}: end of the record list
//!  ...         rest of __reserved (never written, never read)
//!  F+4688  end (= F + size_of::<SpillFrame>() <= interrupted SP)
//! ```

use crate::layout::{CtxHeader, FpsimdContext, UContext, FPSIMD_MAGIC, PSTATE_NZCV, SVE_MAGIC};
use core::mem::{offset_of, size_of};

/// The saved state of an async-preempted context, built on the task's stack
/// by the signal handler (`sigctx::inject_spill`) and the spill routine.
#[repr(C, align(16))]
pub struct SpillFrame {
    pub(crate) record: [u64; 2],
    pub(crate) magic: u64,
    pub(crate) _info_rest: [u64; 13],
    pub(crate) uc: UContext,
}

/// "USURPSPL", at F+16: lets a debugger (and our tests) recognise a frame.
pub const SPILL_MAGIC: u64 = u64::from_le_bytes(*b"USURPSPL");

/// Size of a [`SpillFrame`] (a multiple of 16).
pub const SPILL_FRAME_SIZE: usize = size_of::<SpillFrame>();
pub(crate) const OFF_UC: usize = offset_of!(SpillFrame, uc);
pub(crate) const OFF_MC: usize = OFF_UC + offset_of!(UContext, uc_mcontext);
/// Offset of `uc_stack` from F.
pub(crate) const OFF_STACK: usize = OFF_UC + offset_of!(UContext, uc_stack);
/// Offset of `uc_sigmask` from F.
pub(crate) const OFF_SIGMASK: usize = OFF_UC + offset_of!(UContext, uc_sigmask);
/// Offset of `regs[0]` (x0) from F.
pub(crate) const OFF_REGS: usize = OFF_MC + 8;
pub(crate) const OFF_SP: usize = OFF_MC + 256;
pub(crate) const OFF_PC: usize = OFF_MC + 264;
pub(crate) const OFF_PSTATE: usize = OFF_MC + 272;
/// Offset of the fpsimd_context record (start of `__reserved`).
pub(crate) const OFF_FPSIMD: usize = OFF_MC + 288;
/// Offset of the terminating null record.
pub(crate) const OFF_END_RECORD: usize = OFF_FPSIMD + size_of::<FpsimdContext>();
/// End of everything the frame holds without an SVE record (after the null
/// record), 16-aligned.
pub(crate) const SAVED_END: usize = (OFF_END_RECORD + 8 + 15) & !15;
/// The largest SVE record the frame can carry: the 4096-byte record area
/// minus the fpsimd record and the 16 bytes kept for the terminating null
/// record. 3552 bytes hold the registers of vector lengths up to 768 bits
/// (vq = 6; every shipping SVE core has 128, 256 or 512); a larger live
/// record is refused (`VectorState::must_refuse`).
pub const MAX_SVE_RECORD: usize = 4096 - size_of::<FpsimdContext>() - 16;

const _: () = {
    assert!(SPILL_FRAME_SIZE == 4688);
    assert!(SPILL_FRAME_SIZE % 16 == 0);
    assert!(OFF_UC == 128);
    assert!(OFF_STACK == 144);
    assert!(OFF_SIGMASK == 168);
    assert!(OFF_REGS == 312);
    assert!(OFF_SP == 560);
    assert!(OFF_PC == 568);
    assert!(OFF_PSTATE == 576);
    assert!(OFF_FPSIMD == 592);
    assert!(OFF_END_RECORD == 1120);
    assert!(size_of::<usize>() == 8);
};

impl SpillFrame {
    fn fpsimd(&self) -> &FpsimdContext {
        // SAFETY: the first 528 bytes of `__reserved` hold the fpsimd record
        // (16-aligned, `Reserved` is 16-aligned); every bit pattern is valid.
        unsafe { &*(self.uc.uc_mcontext.reserved.0.as_ptr() as *const FpsimdContext) }
    }

    /// All saved general-purpose registers x0..x30 (x30 = the interrupted
    /// link register, which may hold a live pointer: golang/go 80188).
    pub fn gprs(&self) -> &[usize] {
        // SAFETY: [u64; 31] and [usize; 31] have the same layout (64-bit only).
        unsafe {
            core::slice::from_raw_parts(self.uc.uc_mcontext.regs.as_ptr() as *const usize, 31)
        }
    }

    /// The size of the SVE record the frame carries (0 if none).
    pub fn sve_record_size(&self) -> usize {
        let r = &self.uc.uc_mcontext.reserved.0[OFF_END_RECORD - OFF_FPSIMD..];
        let magic = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let size = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as usize;
        if magic == SVE_MAGIC && size <= MAX_SVE_RECORD {
            size
        } else {
            0
        }
    }

    /// `[lo, hi)` covering the entire saved state: the frame record, x0–x30,
    /// SP, PC, PSTATE, FPSR, FPCR, all 128 bits of v0–v31, and the SVE
    /// record if any. Scanned conservatively by the GC.
    pub fn saved_range(&self) -> (usize, usize) {
        let lo = self as *const Self as usize;
        (lo, lo + SAVED_END + self.sve_record_size())
    }

    /// The interrupted program counter.
    pub fn pc(&self) -> usize {
        self.uc.uc_mcontext.pc as usize
    }

    /// Makes the frame safe to resume on the calling thread when it was
    /// interrupted on another one (the task migrated while parked): the
    /// `rt_sigreturn` that resumes it also installs `uc_stack` as the
    /// thread's alternate signal stack, which must be this thread's, never
    /// the one of the thread it was interrupted on (two threads sharing an
    /// alternate stack corrupt each other's signal frames). One system call.
    /// Not async-signal-unsafe, but meant for the park hook, after the switch
    /// back.
    pub fn rebind_to_current_thread(&mut self) {
        // SAFETY: a zeroed stack_t is a valid out-parameter; a null new
        // stack only queries.
        unsafe {
            let mut cur: libc::stack_t = core::mem::zeroed();
            if libc::sigaltstack(core::ptr::null(), &mut cur) == 0 {
                self.uc.uc_stack.ss_sp = cur.ss_sp as u64;
                self.uc.uc_stack.ss_flags = cur.ss_flags & !libc::SS_ONSTACK;
                self.uc.uc_stack.ss_size = cur.ss_size as u64;
            }
        }
    }

    /// The interrupted stack pointer (the frame lies entirely below it).
    pub fn sp(&self) -> usize {
        self.uc.uc_mcontext.sp as usize
    }

    /// The interrupted frame pointer x29.
    pub fn fp(&self) -> usize {
        self.uc.uc_mcontext.regs[29] as usize
    }

    /// The interrupted link register x30.
    pub fn lr(&self) -> usize {
        self.uc.uc_mcontext.regs[30] as usize
    }

    /// Saved register xN, N in 0..=30 (`None` otherwise).
    pub fn x(&self, n: usize) -> Option<usize> {
        self.gprs().get(n).copied()
    }

    /// The interrupted PSTATE (NZCV in bits 31..28).
    pub fn pstate(&self) -> u64 {
        self.uc.uc_mcontext.pstate
    }

    /// The condition flags, as `mrs x, nzcv` reads them.
    pub fn nzcv(&self) -> u64 {
        self.uc.uc_mcontext.pstate & PSTATE_NZCV
    }

    /// Saved FPSR.
    pub fn fpsr(&self) -> u32 {
        self.fpsimd().fpsr
    }

    /// Saved FPCR.
    pub fn fpcr(&self) -> u32 {
        self.fpsimd().fpcr
    }

    /// Saved q0..q31 (all 128 bits).
    pub fn vregs(&self) -> &[u128; 32] {
        &self.fpsimd().vregs
    }

    /// Address of the frame record {interrupted x29, interrupted pc} that
    /// the spill routine makes current (x29) while its hook runs: a
    /// frame-pointer walk from inside the hook goes hook → this record →
    /// the interrupted frame, and so on up to the task's entry.
    pub fn frame_record(&self) -> usize {
        self as *const Self as usize
    }

    /// True if the frame carries our magic and a well-formed record list
    /// (used by tests and debug checks).
    pub fn looks_valid(&self) -> bool {
        let head = self.fpsimd().head;
        let end = &self.uc.uc_mcontext.reserved.0[OFF_END_RECORD - OFF_FPSIMD + self.sve_record_size()..][..8];
        self.magic == SPILL_MAGIC
            && head
                == CtxHeader {
                    magic: FPSIMD_MAGIC,
                    size: size_of::<FpsimdContext>() as u32,
                }
            && end.iter().all(|&b| b == 0)
            && self.record[1] == self.uc.uc_mcontext.pc
    }
}

/// Linux/aarch64 has no red zone: signal frames are pushed right below SP.
/// (Mirrors `usurp_arch_x86_64::RED_ZONE`, which is 128.)
pub const RED_ZONE: usize = 0;

/// Names of the registers [`SpillFrame::gprs`] returns, in order.
pub const GPR_NAMES: [&str; 31] = [
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30",
];

/// Stack reserved below the spill frame for the hook (the park path: the
/// Rust hook, `switch`, and whatever a signal handler of another library
/// pushes while the hook runs without an alternate stack).
pub const SPILL_HOOK_STACK: usize = 8 * 1024;

/// Bytes below the interrupted SP that the injection, the spill routine and
/// the park path need: alignment slack (15), the [`SpillFrame`] (4688: the
/// rt_sigframe with the full 4096-byte record area), and
/// [`SPILL_HOOK_STACK`]. Linux/aarch64 has no red zone, so nothing else.
/// (A plain `fn`, as on x86-64, where the XSAVE size is known at run time.)
pub fn spill_stack_needed() -> usize {
    16 + SPILL_FRAME_SIZE + SPILL_HOOK_STACK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_the_kernel_layout() {
        // SAFETY: SpillFrame is plain data; all-zero is a valid value.
        let mut f: Box<SpillFrame> = Box::new(unsafe { core::mem::zeroed() });
        let base = &*f as *const SpillFrame as usize;
        for i in 0..31 {
            f.uc.uc_mcontext.regs[i] = 0x100 + i as u64;
        }
        f.uc.uc_mcontext.sp = 0x7000;
        f.uc.uc_mcontext.pc = 0x4000;
        f.uc.uc_mcontext.pstate = 0x6000_0000 | 0x400;
        f.record = [0x11d, 0x4000];
        f.magic = SPILL_MAGIC;
        let r = &mut f.uc.uc_mcontext.reserved.0;
        r[0..4].copy_from_slice(&FPSIMD_MAGIC.to_le_bytes());
        r[4..8].copy_from_slice(&528u32.to_le_bytes());
        r[8..12].copy_from_slice(&0x1fu32.to_le_bytes());
        r[12..16].copy_from_slice(&0x0040_0000u32.to_le_bytes());
        r[16 + 16 * 31..16 * 33].copy_from_slice(&0xdead_beefu128.to_le_bytes());
        assert!(f.looks_valid());
        assert_eq!(f.gprs().len(), 31);
        assert_eq!(f.gprs()[7], 0x107);
        assert_eq!(GPR_NAMES[7], "x7");
        assert_eq!(
            (f.fp(), f.lr(), f.sp(), f.pc()),
            (0x11d, 0x11e, 0x7000, 0x4000)
        );
        assert_eq!(f.x(31), None);
        assert_eq!(f.nzcv(), 0x6000_0000);
        assert_eq!((f.fpsr(), f.fpcr()), (0x1f, 0x0040_0000));
        assert_eq!(f.vregs()[31], 0xdead_beef);
        assert_eq!(f.frame_record(), base);
        let (lo, hi) = f.saved_range();
        assert_eq!(lo, base);
        // The range covers the registers, v31 and the null record, and stays
        // inside the frame.
        assert!(hi >= base + OFF_END_RECORD + 8 && hi <= base + SPILL_FRAME_SIZE);
        let v31 = base + OFF_FPSIMD + 16 + 16 * 31;
        assert!(v31 + 16 <= hi);
        // A broken record list is detected.
        f.uc.uc_mcontext.reserved.0[OFF_END_RECORD - OFF_FPSIMD] = 1;
        assert!(!f.looks_valid());
    }

    #[test]
    fn room_needed_covers_frame_alignment_and_hook() {
        assert!(spill_stack_needed() >= SPILL_FRAME_SIZE + 15 + SPILL_HOOK_STACK);
        assert_eq!(RED_ZONE, 0);
    }
}
