//! The spill frame: what the spill routine (module `spill`) saves on the
//! task's stack, read through [`SpillFrame`]'s accessors. Plain data, so it
//! compiles on every host (as the aarch64 crate's `frame`); the routine that
//! fills it exists on x86-64 only.

/// Stack reserved for the Rust hook called by the spill routine (the park path
/// of the scheduler runs there, up to its cooperative `switch`).
pub const SPILL_HOOK_STACK: usize = 8 * 1024;

/// The x86-64 System V red zone that belongs to the interrupted code.
pub const RED_ZONE: usize = 128;

/// The fixed part of the spill frame, as laid out by the spill routine
/// (lowest address first). The XSAVE area lies below it, 64-byte aligned, at
/// `xsave`.
///
/// `r15 ..= rbp` are contiguous so that [`SpillFrame::gprs`] can hand them out
/// as one slice; `rbp` and `rip` form a regular frame record (`[fp]` = caller's
/// fp, `[fp + 8]` = return address), which links the spill frame into the
/// interrupted code's frame-pointer chain.
#[repr(C)]
pub struct SpillFrame {
    xsave: usize,
    rflags: usize,
    r15: usize,
    r14: usize,
    r13: usize,
    r12: usize,
    r11: usize,
    r10: usize,
    r9: usize,
    r8: usize,
    rdi: usize,
    rsi: usize,
    rdx: usize,
    rcx: usize,
    rbx: usize,
    rax: usize,
    rbp: usize,
    rip: usize,
}

/// Names of the registers returned by [`SpillFrame::gprs`], in that order.
pub const GPR_NAMES: [&str; 15] = [
    "r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "rdi", "rsi", "rdx", "rcx", "rbx", "rax", "rbp",
];

pub(crate) const FRAME_SIZE: usize = core::mem::size_of::<SpillFrame>();
const _: () = assert!(FRAME_SIZE == 144);

impl SpillFrame {
    /// The 15 general-purpose registers other than RSP, in the order of
    /// [`GPR_NAMES`]: r15, r14, …, r8, rdi, rsi, rdx, rcx, rbx, rax, rbp.
    pub fn gprs(&self) -> &[usize] {
        // SAFETY: r15..=rbp are 15 consecutive usize fields of a repr(C)
        // struct (no padding between same-typed fields).
        unsafe { core::slice::from_raw_parts(&self.r15 as *const usize, 15) }
    }

    /// The saved RFLAGS of the interrupted code.
    pub fn rflags(&self) -> usize {
        self.rflags
    }

    /// `[lo, hi)`: everything the spill routine saved (XSAVE area, alignment
    /// padding, GPRs, flags, frame record), for conservative scanning.
    pub fn saved_range(&self) -> (usize, usize) {
        (self.xsave, self as *const Self as usize + FRAME_SIZE)
    }

    /// The address of the XSAVE (or FXSAVE) area holding the extended state.
    pub fn xsave_area(&self) -> usize {
        self.xsave
    }

    /// The interrupted program counter (where execution resumes).
    pub fn pc(&self) -> usize {
        self.rip
    }

    /// Makes the frame safe to resume on the calling thread when it was
    /// interrupted on another one (the task migrated while parked). Nothing
    /// to do on x86-64: the spill routine resumes with `ret`, and nothing in
    /// the frame belongs to a thread (the aarch64 frame, resumed through
    /// `rt_sigreturn`, carries the thread's alternate signal stack).
    pub fn rebind_to_current_thread(&mut self) {}

    /// The interrupted stack pointer (exactly as it was before the signal).
    pub fn sp(&self) -> usize {
        self as *const Self as usize + FRAME_SIZE + RED_ZONE
    }

    /// The interrupted frame pointer (RBP).
    pub fn fp(&self) -> usize {
        self.rbp
    }

    /// The address of the spill routine's own frame record; walking the
    /// frame-pointer chain from here visits the interrupted PC first.
    pub fn frame_record(&self) -> usize {
        &self.rbp as *const usize as usize
    }
}
