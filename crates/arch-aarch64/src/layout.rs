//! The Linux/aarch64 signal-frame layout, defined here because `libc` keeps
//! `mcontext_t::__reserved` private and declares glibc's 1024-bit `sigset_t`
//! where the kernel reads only 64 bits.
//!
//! Source: the kernel UAPI headers `arch/arm64/include/uapi/asm/sigcontext.h`
//! and `ucontext.h`, and `struct rt_sigframe` in `arch/arm64/kernel/signal.c`:
//!
//! ```text
//! rt_sigframe   { siginfo_t info (128 bytes); struct ucontext uc; }
//! ucontext      { uc_flags u64; uc_link ptr; stack_t uc_stack (24 bytes);
//!                 sigset_t uc_sigmask (8 bytes) + 120 bytes glibc padding;
//!                 struct sigcontext uc_mcontext (16-aligned, at +176) }
//! sigcontext    { fault_address u64; regs[31] u64; sp; pc; pstate;
//!                 __reserved[4096] (16-aligned, at +288) }
//! __reserved    a list of records { magic u32, size u32, payload }, each a
//!               multiple of 16 bytes, ended by a record with magic 0 size 0:
//!               fpsimd_context (always first), esr, sve, za, zt, tpidr2,
//!               fpmr, gcs, and extra_context (points to more records after
//!               the frame when they do not fit in 4096 bytes).
//! ```
//!
//! Portable Rust: the layout (and the record scanner in `sigctx`) compile and
//! are unit-tested on every host; the offsets are checked at compile time.

use core::mem::{offset_of, size_of};

/// `struct _aarch64_ctx`: the header of every record in `__reserved`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxHeader {
    pub magic: u32,
    pub size: u32,
}

/// `FPSIMD_MAGIC`: the FP/SIMD record (always present, always first).
pub const FPSIMD_MAGIC: u32 = 0x4650_8001;
/// `ESR_MAGIC`: the exception syndrome of a fault (ignored on sigreturn).
pub const ESR_MAGIC: u32 = 0x4553_5201;
/// `EXTRA_MAGIC`: pointer to records stored after the frame.
pub const EXTRA_MAGIC: u32 = 0x4558_5401;
/// `SVE_MAGIC`: the SVE (or streaming SVE) register record.
pub const SVE_MAGIC: u32 = 0x5356_4501;
/// `ZA_MAGIC`: the SME ZA array record.
pub const ZA_MAGIC: u32 = 0x5436_6345;
/// `ZT_MAGIC`: the SME2 ZT0 register record.
pub const ZT_MAGIC: u32 = 0x5a54_4e01;
/// `TPIDR2_MAGIC`: the SME TPIDR2_EL0 record.
pub const TPIDR2_MAGIC: u32 = 0x5450_4902;
/// `FPMR_MAGIC`: the FP8 mode register record.
pub const FPMR_MAGIC: u32 = 0x4650_4d52;
/// `GCS_MAGIC`: the guarded-control-stack (shadow stack) record.
pub const GCS_MAGIC: u32 = 0x4743_5300;
/// `SVE_SIG_FLAG_SM`: the SVE record describes streaming mode.
pub const SVE_SIG_FLAG_SM: u16 = 1;
/// Size of an SVE/ZA record that carries no register payload (header,
/// vl, flags, reserved): the kernel writes one when the state is not live.
pub const SVE_EMPTY_RECORD_SIZE: u32 = 16;
/// `PR_SHADOW_STACK_ENABLE` in `gcs_context::features_enabled`.
pub const GCS_ENABLED: u64 = 1;

/// `struct fpsimd_context`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
pub struct FpsimdContext {
    pub head: CtxHeader,
    pub fpsr: u32,
    pub fpcr: u32,
    pub vregs: [u128; 32],
}

/// `stack_t` as the kernel lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackT {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub _pad: i32,
    pub ss_size: u64,
}

/// The 4096-byte record area, 16-aligned.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Reserved(pub [u8; 4096]);

/// `struct sigcontext` (= glibc's `mcontext_t`).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct SigContext {
    pub fault_address: u64,
    pub regs: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    pub pstate: u64,
    pub reserved: Reserved,
}

/// `struct ucontext` (kernel view: only the first 8 bytes of the mask count).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct UContext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: StackT,
    pub uc_sigmask: u64,
    pub _glibc_sigset_pad: [u8; 120],
    pub uc_mcontext: SigContext,
}

/// The condition flags in PSTATE/SPSR (bits 31..28).
pub const PSTATE_NZCV: u64 = 0xf000_0000;
/// PSTATE.BTYPE (bits 11..10): the branch type of the last indirect branch,
/// checked against the landing pad at the next instruction on BTI pages.
pub const PSTATE_BTYPE: u64 = 0x0c00;

/// `__NR_rt_sigreturn` on aarch64 (generic syscall table).
pub const NR_RT_SIGRETURN: u64 = 139;
/// `__NR_rt_sigprocmask` on aarch64.
pub const NR_RT_SIGPROCMASK: u64 = 135;
/// `__NR_sigaltstack` on aarch64.
pub const NR_SIGALTSTACK: u64 = 132;

const _: () = {
    assert!(size_of::<CtxHeader>() == 8);
    assert!(size_of::<FpsimdContext>() == 528);
    assert!(offset_of!(FpsimdContext, vregs) == 16);
    assert!(size_of::<StackT>() == 24);
    assert!(offset_of!(SigContext, regs) == 8);
    assert!(offset_of!(SigContext, sp) == 256);
    assert!(offset_of!(SigContext, pc) == 264);
    assert!(offset_of!(SigContext, pstate) == 272);
    assert!(offset_of!(SigContext, reserved) == 288);
    assert!(size_of::<SigContext>() == 288 + 4096);
    assert!(offset_of!(UContext, uc_stack) == 16);
    assert!(offset_of!(UContext, uc_sigmask) == 40);
    assert!(offset_of!(UContext, uc_mcontext) == 176);
    assert!(size_of::<UContext>() == 4560);
};
