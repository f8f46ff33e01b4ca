//! The spill mechanism end to end, without the scheduler or the preempt
//! crate (the twin of `usurp-arch-x86_64`'s `tests/spill.rs`): a test SIGURG
//! handler (SA_SIGINFO | SA_ONSTACK) classifies the interrupted PC and calls
//! `inject_spill`; the spill hook checks the frame and switches to a
//! "worker" context on the same OS thread, which clobbers every register and
//! switches back into the task; the routine then resumes the task through
//! rt_sigreturn.
//!
//! * `registers_survive_preemption`: the crate's register checker
//!   (`regcheck::register_loop`: patterns in x0–x17, x19–x28 and all 128
//!   bits of q0–q31, checked every iteration) runs with FPCR and FPSR set to
//!   patterns, which the task checks after every call. The hook checks every
//!   saved x0–x30 and NZCV against the ucontext the handler saw, the saved
//!   pattern registers (inside the checker's check loop), FPCR and FPSR, and
//!   the frame-record chains (from the frame, and from the hook itself
//!   through the record at F).
//! * `exclusive_loop_stays_exact`: a ldxr/stxr increment loop preempted inside
//!   its exclusive window; a shared counter stays exact.
//! * `rust_code_chain_is_exact`: compiled Rust functions (mutually recursive,
//!   in their own linker section) preempted wherever `classify_with_prev`
//!   accepts; at each accepted point, the frame-pointer chain from the spill
//!   frame is walked and every return address must follow a `bl` whose target
//!   is the function the previous frame is in: a half-built or torn-down frame
//!   that the classifier wrongly accepted would skip a frame and fail this.
//!
//! All three share one handler and one hook (process-wide), so they run one
//! at a time (LOCK). The assembly and the spill routine exist on aarch64
//! only: elsewhere this file is empty.
#![cfg(target_arch = "aarch64")]
// `x % n == 0` instead of `is_multiple_of` (stable since 1.87): MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

use core::arch::global_asm;
use core::ffi::c_void;
use core::mem::offset_of;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};
use usurp_arch_aarch64::regcheck::{self, Patterns};
use usurp_arch_aarch64::{
    classify_with_prev, init_stack, is_after_call, set_spill_hook, sigctx, spill_stack_needed, switch, SpillFrame,
    Verdict, MAX_LOOKBEHIND, SPILL_FRAME_SIZE,
};

/// What the task bodies and the worker share. The exclusive loop's assembly
/// reads `stop`, `iters` and `counter` at fixed offsets.
#[repr(C, align(16))]
struct Ctl {
    /// Its own address (the exclusive loop keeps it in x0).
    self_addr: u64,
    _reserved: [u64; 4],
    stop: AtomicU64,
    iters: AtomicU64,
    /// Register loops: iterations that found a register changed, plus FPCR
    /// or FPSR found changed after a call.
    fail: AtomicU64,
    /// Register loops: the seed of the first call's patterns.
    seed: u64,
    _reserved2: [u64; 2],
    /// Exclusive loop: address of the shared counter.
    counter: u64,
}

const _: () = {
    assert!(offset_of!(Ctl, stop) == 40);
    assert!(offset_of!(Ctl, iters) == 48);
    assert!(offset_of!(Ctl, counter) == 88);
};

const FPCR_PATTERN: u64 = 0x0340_0000; // DN, FZ, round towards +inf
const FPSR_PATTERN: u64 = 0x0800_001a; // QC, IXC, UFC, DZC

impl Ctl {
    fn new() -> Box<Ctl> {
        let mut c = Box::new(Ctl {
            self_addr: 0,
            _reserved: [0; 4],
            stop: AtomicU64::new(0),
            iters: AtomicU64::new(0),
            fail: AtomicU64::new(0),
            seed: 0x0123_4567_89ab_cdef,
            _reserved2: [0; 2],
            counter: 0,
        });
        c.self_addr = &*c as *const Ctl as u64;
        c
    }
}

// ---------------------------------------------------------------------------
// The register task: the crate's checker, with FPCR and FPSR patterns.

/// Iterations per `register_loop` call (a few preemptions apart under qemu).
const REG_ITERS: u64 = 20_000;
/// The seed of the patterns the running `register_loop` call holds (read by
/// the hook).
static CUR_SEED: AtomicU64 = AtomicU64::new(0);

fn fpcr() -> u64 {
    let v: u64;
    // SAFETY: reads a system register that EL0 may read.
    unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}
fn fpsr() -> u64 {
    let v: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mrs {}, fpsr", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}
fn set_fp_control(fpcr: u64, fpsr: u64) {
    // SAFETY: EL0 may write both; the task's Rust code does no floating
    // point while the patterns (rounding mode, flush-to-zero) are set.
    unsafe {
        core::arch::asm!("msr fpcr, {}", "msr fpsr, {}", in(reg) fpcr, in(reg) fpsr, options(nomem, nostack, preserves_flags))
    };
}

/// Task body: `register_loop` calls with successive seeds until `stop`,
/// checking FPCR/FPSR after each (the worker runs with other values).
unsafe extern "C" fn reg_driver(ctl: *mut Ctl) {
    // SAFETY: the test keeps the Ctl alive until the task is done.
    let ctl = unsafe { &*ctl };
    let (fpcr0, fpsr0) = (fpcr(), fpsr());
    set_fp_control(FPCR_PATTERN, FPSR_PATTERN);
    let mut seed = ctl.seed;
    while ctl.stop.load(Relaxed) == 0 {
        CUR_SEED.store(seed, Relaxed);
        let m = regcheck::register_loop(seed, REG_ITERS);
        let (c, s) = (fpcr(), fpsr());
        if m != 0 || c != FPCR_PATTERN || s != FPSR_PATTERN {
            ctl.fail.fetch_add(m.max(1), Relaxed);
            err(format!("register_loop: {m} mismatches; fpcr {c:#x} fpsr {s:#x} after the call"));
            set_fp_control(FPCR_PATTERN, FPSR_PATTERN);
        }
        ctl.iters.fetch_add(REG_ITERS, Relaxed);
        seed = seed.wrapping_add(1);
    }
    set_fp_control(fpcr0, fpsr0);
}


// Clobbers every register but SP, x29 (our frame record) and x0 (the seed):
// x1–x28, x30, v0–v31, FPSR, NZCV and FPCR (FPCR and the callee-saved set are
// restored before returning, as AAPCS64 requires). Stack layout: 176-byte
// frame: x29/x30 record at sp+0, x19–x28 at sp+16, d8–d15 at sp+96, the
// caller's FPCR at sp+160.
global_asm!(
    ".text",
    ".globl usurp_t_clobber",
    ".type usurp_t_clobber,%function",
    ".p2align 4",
    "usurp_t_clobber:",
    "stp x29, x30, [sp, #-176]!",
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
    "mrs x9, fpcr",
    "str x9, [sp, #160]",
    "mov x9, #0x00c00000",
    "msr fpcr, x9",
    "mov x9, #0x9f",
    "msr fpsr, x9",
    "mov x9, #0x50000000",
    "msr nzcv, x9",
    "add x1, x0, #1",
    "add x2, x0, #2",
    "add x3, x0, #3",
    "add x4, x0, #4",
    "add x5, x0, #5",
    "add x6, x0, #6",
    "add x7, x0, #7",
    "add x8, x0, #8",
    "add x9, x0, #9",
    "add x10, x0, #10",
    "add x11, x0, #11",
    "add x12, x0, #12",
    "add x13, x0, #13",
    "add x14, x0, #14",
    "add x15, x0, #15",
    "add x16, x0, #16",
    "add x17, x0, #17",
    "add x18, x0, #18",
    "add x19, x0, #19",
    "add x20, x0, #20",
    "add x21, x0, #21",
    "add x22, x0, #22",
    "add x23, x0, #23",
    "add x24, x0, #24",
    "add x25, x0, #25",
    "add x26, x0, #26",
    "add x27, x0, #27",
    "add x28, x0, #28",
    "add x30, x0, #30",
    "dup v0.2d, x1",
    "dup v1.2d, x2",
    "dup v2.2d, x3",
    "dup v3.2d, x4",
    "dup v4.2d, x5",
    "dup v5.2d, x6",
    "dup v6.2d, x7",
    "dup v7.2d, x8",
    "dup v8.2d, x9",
    "dup v9.2d, x10",
    "dup v10.2d, x11",
    "dup v11.2d, x12",
    "dup v12.2d, x13",
    "dup v13.2d, x14",
    "dup v14.2d, x15",
    "dup v15.2d, x16",
    "dup v16.2d, x17",
    "dup v17.2d, x18",
    "dup v18.2d, x19",
    "dup v19.2d, x20",
    "dup v20.2d, x21",
    "dup v21.2d, x22",
    "dup v22.2d, x23",
    "dup v23.2d, x24",
    "dup v24.2d, x25",
    "dup v25.2d, x26",
    "dup v26.2d, x27",
    "dup v27.2d, x28",
    "dup v28.2d, x1",
    "dup v29.2d, x2",
    "dup v30.2d, x3",
    "dup v31.2d, x4",
    "ldr x9, [sp, #160]",
    "msr fpcr, x9",
    "ldp x19, x20, [sp, #16]",
    "ldp x21, x22, [sp, #32]",
    "ldp x23, x24, [sp, #48]",
    "ldp x25, x26, [sp, #64]",
    "ldp x27, x28, [sp, #80]",
    "ldp d8, d9, [sp, #96]",
    "ldp d10, d11, [sp, #112]",
    "ldp d12, d13, [sp, #128]",
    "ldp d14, d15, [sp, #144]",
    "ldp x29, x30, [sp], #176",
    "ret",
    ".size usurp_t_clobber, . - usurp_t_clobber",
);

// The exclusive loop: ldxr / add / stxr on *ctl.counter, retried on failure;
// ctl.iters counts successful increments. The window [xwin_lo, xwin_hi)
// between the load and the end of the store holds two QEMU block starts.
// Stack layout: one frame record (x29/x30) at sp+0; x9–x12 are scratch
// (caller-saved), x0 = &Ctl.
global_asm!(
    ".text",
    ".globl usurp_t_xloop",
    ".type usurp_t_xloop,%function",
    ".p2align 4",
    "usurp_t_xloop:",
    "stp x29, x30, [sp, #-16]!",
    "mov x29, sp",
    "ldr x9, [x0, #88]",
    ".globl usurp_t_xloop_start",
    "usurp_t_xloop_start:",
    "1:",
    "ldxr x10, [x9]",
    "b 2f",
    ".globl usurp_t_xwin_lo",
    "usurp_t_xwin_lo:",
    "2:",
    "add x10, x10, #1",
    "b 4f",
    "4:",
    "stxr w11, x10, [x9]",
    ".globl usurp_t_xwin_hi",
    "usurp_t_xwin_hi:",
    "cbnz w11, 1b",
    "ldr x12, [x0, #48]",
    "add x12, x12, #1",
    "str x12, [x0, #48]",
    "ldr x12, [x0, #40]",
    "cbz x12, 1b",
    ".globl usurp_t_xloop_end",
    "usurp_t_xloop_end:",
    "ldp x29, x30, [sp], #16",
    "ret",
    ".size usurp_t_xloop, . - usurp_t_xloop",
);

extern "C" {
    fn usurp_t_clobber(seed: u64);
    fn usurp_t_xloop(ctl: *mut Ctl);
    fn usurp_t_xloop_start();
    fn usurp_t_xloop_end();
    fn usurp_t_xwin_lo();
    fn usurp_t_xwin_hi();
    fn usurp_aarch64_trampoline();
    fn usurp_aarch64_spill();
    static __start_usurp_t_rust: u8;
    static __stop_usurp_t_rust: u8;
}

fn addr(f: unsafe extern "C" fn()) -> usize {
    f as *const () as usize
}

// ---------------------------------------------------------------------------
// Mutually recursive Rust code in its own section (the "registered" region
// of the third test). No self-calls and no tail calls, so that every `bl`
// target identifies the function of the frame below. Every path makes a
// call, so LLVM cannot shrink-wrap: there is no frameless early-exit path
// (see the shrink-wrapping note in `classify`).

#[link_section = "usurp_t_rust"]
#[inline(never)]
extern "C" fn rw_leaf(acc: u64) -> u64 {
    acc.rotate_left(7) ^ 0x55
}

#[link_section = "usurp_t_rust"]
#[inline(never)]
extern "C" fn rw_a(n: u64, acc: u64) -> u64 {
    if n == 0 {
        return rw_leaf(acc) ^ 1;
    }
    rw_b(n - 1, acc ^ (acc << 1)) ^ rw_c(n - 1, acc >> 1)
}

#[link_section = "usurp_t_rust"]
#[inline(never)]
extern "C" fn rw_b(n: u64, acc: u64) -> u64 {
    if n == 0 {
        return rw_leaf(acc ^ 3) ^ 2;
    }
    rw_c(n - 1, acc ^ 3) ^ rw_a(n >> 1, acc)
}

#[link_section = "usurp_t_rust"]
#[inline(never)]
extern "C" fn rw_c(n: u64, acc: u64) -> u64 {
    if n == 0 {
        return rw_leaf(acc) | 1;
    }
    rw_a(n - 1, acc ^ 7) ^ 1
}

#[link_section = "usurp_t_rust"]
#[inline(never)]
unsafe extern "C" fn rw_driver(ctl: *mut Ctl) {
    // SAFETY: the test keeps the Ctl alive until the task is done.
    let ctl = unsafe { &*ctl };
    let mut acc = 1u64;
    loop {
        acc = rw_a(9, acc);
        ctl.iters.fetch_add(1, Relaxed);
        if ctl.stop.load(Relaxed) != 0 {
            break;
        }
    }
    std::hint::black_box(acc);
}

// ---------------------------------------------------------------------------
// Shared state of the handler, the hook and the worker.

static LOCK: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();
static TARGET_TID: AtomicI32 = AtomicI32::new(0);
static REGION: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static STACK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static MODE: AtomicUsize = AtomicUsize::new(0);
static TASK: AtomicUsize = AtomicUsize::new(0);
const MODE_REGS: usize = 1;
const MODE_XLOOP: usize = 2;
const MODE_RUST: usize = 3;

#[derive(Default)]
struct Counters {
    injected: AtomicUsize,
    refused_range: AtomicUsize,
    refused_verdict: AtomicUsize,
    refused_state: AtomicUsize,
    refused_room: AtomicUsize,
    sve_live: AtomicUsize,
    hooks: AtomicUsize,
    in_window: AtomicUsize,
    chains: AtomicUsize,
    errors: AtomicUsize,
}
static C: Counters = Counters {
    injected: AtomicUsize::new(0),
    refused_range: AtomicUsize::new(0),
    refused_verdict: AtomicUsize::new(0),
    refused_state: AtomicUsize::new(0),
    refused_room: AtomicUsize::new(0),
    sve_live: AtomicUsize::new(0),
    hooks: AtomicUsize::new(0),
    in_window: AtomicUsize::new(0),
    chains: AtomicUsize::new(0),
    errors: AtomicUsize::new(0),
};
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// x0–x30 and PSTATE of the last injected signal's ucontext (written by
/// the handler, read by the hook that follows it on the same thread).
static UC_REGS: [AtomicUsize; 31] = [const { AtomicUsize::new(0) }; 31];
static UC_PSTATE: AtomicU64 = AtomicU64::new(0);

fn reset_counters() {
    for c in [
        &C.injected,
        &C.refused_range,
        &C.refused_verdict,
        &C.refused_state,
        &C.refused_room,
        &C.sve_live,
        &C.hooks,
        &C.in_window,
        &C.chains,
        &C.errors,
    ] {
        c.store(0, SeqCst);
    }
    ERRORS.lock().unwrap().clear();
}

fn scale() -> f64 {
    usurp_testsupport::scale_factor()
}

struct TaskCtx {
    worker_sp: usize,
    task_sp: usize,
    done: bool,
    ctl: *mut Ctl,
    body: unsafe extern "C" fn(*mut Ctl),
}

unsafe extern "C" fn task_entry(arg: usize, _first: usize) -> ! {
    let t = arg as *mut TaskCtx;
    // SAFETY: the worker keeps the TaskCtx alive until `done`, and only one
    // of the two contexts runs at a time.
    unsafe {
        ((*t).body)((*t).ctl);
        (*t).done = true;
        switch(&mut (*t).task_sp, (*t).worker_sp, 0);
    }
    unreachable!("a finished task was resumed")
}

// ---------------------------------------------------------------------------
// The signal handler: allocation-free, lock-free, errno preserved.

extern "C" fn handler(_sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // SAFETY: errno location is per thread and always valid.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo and ucontext (SA_SIGINFO).
    unsafe {
        if (*info).si_code == libc::SI_TKILL
            && (*info).si_pid() == libc::getpid()
            && libc::gettid() == TARGET_TID.load(Relaxed)
        {
            handle(uc);
        }
        *libc::__errno_location() = errno;
    }
}

/// # Safety
/// `uc` is the handler's ucontext.
unsafe fn handle(uc: *mut c_void) {
    // SAFETY: uc is the kernel's ucontext.
    let pc = unsafe { sigctx::pc(uc) };
    let (lo, hi) = (REGION[0].load(Relaxed), REGION[1].load(Relaxed));
    if pc < lo || pc >= hi {
        C.refused_range.fetch_add(1, Relaxed);
        return;
    }
    let pstart = pc.saturating_sub(MAX_LOOKBEHIND).max(lo);
    // SAFETY: [lo, hi) is readable code of this binary and both slices lie in it.
    let (prev, code) = unsafe {
        (
            core::slice::from_raw_parts(pstart as *const u8, pc - pstart),
            core::slice::from_raw_parts(pc as *const u8, (hi - pc).min(4)),
        )
    };
    if classify_with_prev(prev, code, pc) != Verdict::Safe {
        C.refused_verdict.fetch_add(1, Relaxed);
        return;
    }
    // SAFETY: uc is the kernel's ucontext.
    let vs = unsafe { sigctx::vector_state(uc) };
    if vs.sve_live {
        C.sve_live.fetch_add(1, Relaxed);
    }
    if vs.must_refuse() {
        C.refused_state.fetch_add(1, Relaxed);
        return;
    }
    // SAFETY: uc is the kernel's ucontext.
    let sp = unsafe { sigctx::sp(uc) };
    if sp < STACK[0].load(Relaxed) + spill_stack_needed() || sp > STACK[1].load(Relaxed) {
        C.refused_room.fetch_add(1, Relaxed);
        return;
    }
    // What the hook must find in the frame: x0–x30 and PSTATE as the kernel
    // saved them (the injection changes only SP and PC).
    for (n, r) in UC_REGS.iter().enumerate() {
        // SAFETY: uc is the kernel's ucontext; n <= 30.
        r.store(unsafe { sigctx::reg(uc, n) }, Relaxed);
    }
    // SAFETY: uc is the kernel's ucontext (aarch64 layout).
    UC_PSTATE.store(unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.pstate }, Relaxed);
    // SAFETY: checked above: the PC is in our code, the stack has room, the
    // handler runs on the alternate stack, the hook is installed.
    unsafe { sigctx::inject_spill(uc) };
    C.injected.fetch_add(1, Relaxed);
}

// ---------------------------------------------------------------------------
// The hook: checks the frame, then parks the task (switches to the worker).

fn err(msg: String) {
    C.errors.fetch_add(1, Relaxed);
    let mut e = ERRORS.lock().unwrap();
    if e.len() < 20 {
        e.push(msg);
    }
}

fn read(a: usize) -> usize {
    // SAFETY: callers only pass addresses inside the task stack (checked) or
    // the code of this binary.
    unsafe { (a as *const usize).read() }
}

fn code_before(ret: usize) -> &'static [u8] {
    // SAFETY: callers pass return addresses checked to lie in this binary's code.
    unsafe { core::slice::from_raw_parts((ret - 4) as *const u8, 4) }
}

/// Target of the `bl` that ends right before `ret`, if it is one.
fn bl_target(ret: usize) -> Option<usize> {
    let w = u32::from_le_bytes(code_before(ret).try_into().unwrap());
    if w & 0xFC00_0000 != 0x9400_0000 {
        return None;
    }
    let imm = ((w & 0x03FF_FFFF) << 6) as i32 >> 6;
    Some((ret - 4).wrapping_add((imm as isize * 4) as usize))
}

fn in_text(a: usize) -> bool {
    // Our code lies between these two (the binary is small and contiguous).
    let lo = addr(usurp_t_xloop_start)
        .min(addr(usurp_aarch64_trampoline))
        .saturating_sub(64 << 20);
    let hi = addr(usurp_t_xloop_start).max(addr(usurp_aarch64_trampoline)) + (64 << 20);
    a >= lo && a < hi
}

/// Walks the frame-record chain starting at `fp` (the interrupted x29):
/// records must lie in the task stack at increasing 16-aligned addresses,
/// every return address must follow a call, and the chain must end with the
/// x29 = 0 sentinel of `init_stack` after a return into the trampoline.
/// In MODE_RUST, also checks each `bl` target against the function of the
/// frame below. Returns the number of records.
fn check_chain(f: &SpillFrame) -> usize {
    let (slo, shi) = (STACK[0].load(Relaxed), STACK[1].load(Relaxed));
    let funcs = {
        let mut v = [
            rw_a as *const () as usize,
            rw_b as *const () as usize,
            rw_c as *const () as usize,
            rw_leaf as *const () as usize,
            rw_driver as *const () as usize,
        ];
        v.sort();
        v
    };
    // SAFETY: the section symbols are defined by the linker.
    let (rlo, rhi) = unsafe {
        (
            &__start_usurp_t_rust as *const u8 as usize,
            &__stop_usurp_t_rust as *const u8 as usize,
        )
    };
    let func_of = |a: usize| funcs.iter().rev().find(|&&s| s <= a).copied();
    let rust = MODE.load(Relaxed) == MODE_RUST;
    let mut below = f.pc();
    let mut fp = f.fp();
    let mut last_ret = 0;
    let mut n = 0;
    while fp != 0 {
        if fp % 16 != 0 || fp < f.sp() || fp + 16 > shi || fp < slo {
            err(format!(
                "record {n} at {fp:#x} outside the task stack / misaligned (pc {:#x})",
                f.pc()
            ));
            return n;
        }
        let ret = read(fp + 8);
        if !in_text(ret) || !is_after_call(code_before(ret), ret) {
            err(format!(
                "record {n}: return address {ret:#x} does not follow a call (pc {:#x})",
                f.pc()
            ));
            return n;
        }
        if rust && (rlo..rhi).contains(&below) {
            match bl_target(ret) {
                Some(t) if Some(t) == func_of(below) => {}
                Some(t) if (rlo..rhi).contains(&ret) => {
                    err(format!("frame skipped: pc {:#x}, record {n}: bl at {:#x} targets {t:#x}, but the frame below is in {:?}", f.pc(), ret - 4, func_of(below)));
                    return n;
                }
                _ => {}
            }
        }
        let next = read(fp);
        if next != 0 && next <= fp {
            err(format!(
                "record {n} at {fp:#x}: next {next:#x} not above it"
            ));
            return n;
        }
        below = ret;
        last_ret = ret;
        fp = next;
        n += 1;
        if n > 4096 {
            err("runaway chain".into());
            return n;
        }
    }
    let tramp = addr(usurp_aarch64_trampoline);
    if !(tramp..tramp + 16).contains(&last_ret) {
        err(format!(
            "chain ends at {last_ret:#x}, not in the task trampoline {tramp:#x}"
        ));
    }
    n
}

unsafe extern "C" fn hook(frame: *mut SpillFrame) {
    C.hooks.fetch_add(1, Relaxed);
    // SAFETY: the spill routine passes its complete frame.
    let f = unsafe { &*frame };
    let fa = frame as usize;
    if !f.looks_valid() {
        err(format!("frame at {fa:#x} malformed"));
    }
    if !(fa + SPILL_FRAME_SIZE <= f.sp() && f.sp() - fa < SPILL_FRAME_SIZE + 16) {
        err(format!("frame at {fa:#x} not right below sp {:#x}", f.sp()));
    }
    let (lo, hi) = (REGION[0].load(Relaxed), REGION[1].load(Relaxed));
    if !(lo..hi).contains(&f.pc()) {
        err(format!("pc {:#x} outside the region", f.pc()));
    }
    // The hook's own frame record links to the record at F, which links to
    // the interrupted frame: hook -> spill routine -> interrupted code.
    let my_fp: usize;
    // SAFETY: reads x29 only.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) my_fp, options(nomem, nostack, preserves_flags))
    };
    let ret = read(my_fp + 8);
    let spill = addr(usurp_aarch64_spill);
    if read(my_fp) != f.frame_record()
        || !(spill..spill + 512).contains(&ret)
        || !is_after_call(code_before(ret), ret)
    {
        err(format!(
            "hook frame {my_fp:#x} does not link to the spill record {:#x} (ret {ret:#x})",
            f.frame_record()
        ));
    }
    if read(f.frame_record()) != f.fp() || read(f.frame_record() + 8) != f.pc() {
        err("spill frame record is not {x29, pc}".into());
    }
    let mode = MODE.load(Relaxed);
    let t = TASK.load(Relaxed) as *mut TaskCtx;
    // SAFETY: the worker set TASK before switching into the task.
    let ctl = unsafe { &*(*t).ctl };
    // Every mode: the frame holds the registers the kernel saw.
    for (n, r) in UC_REGS.iter().enumerate() {
        if f.x(n) != Some(r.load(Relaxed)) {
            err(format!("saved x{n} = {:#x?}, the ucontext had {:#x}", f.x(n), r.load(Relaxed)));
        }
    }
    if f.nzcv() != UC_PSTATE.load(Relaxed) & 0xf000_0000 {
        err(format!("saved nzcv {:#x}, the ucontext had pstate {:#x}", f.nzcv(), UC_PSTATE.load(Relaxed)));
    }
    if mode == MODE_XLOOP {
        // The loop keeps x29 = SP and x0 = &ctl.
        if f.fp() != f.sp() {
            err(format!("x29 {:#x} != sp {:#x}", f.fp(), f.sp()));
        }
        if f.x(0) != Some(ctl.self_addr as usize) {
            err(format!("saved x0 {:#x?} != &ctl", f.x(0)));
        }
    }
    if mode == MODE_REGS {
        if f.fpcr() as u64 != FPCR_PATTERN || f.fpsr() as u64 != FPSR_PATTERN {
            err(format!("saved fpcr/fpsr {:#x}/{:#x}", f.fpcr(), f.fpsr()));
        }
        // Inside the check loop every pattern register holds its pattern.
        let (clo, chi) = regcheck::check_range();
        if (clo..chi).contains(&f.pc()) {
            C.in_window.fetch_add(1, Relaxed);
            let p = Patterns::from_seed(CUR_SEED.load(Relaxed));
            for (i, name) in regcheck::GPR_NAMES.iter().enumerate() {
                let n: usize = name[1..].parse().expect("xN");
                if f.x(n) != Some(p.gpr[i] as usize) {
                    err(format!("saved {name} = {:#x?}, pattern {:#x} (pc {:#x})", f.x(n), p.gpr[i], f.pc()));
                }
            }
            for (i, v) in p.vec.iter().enumerate() {
                let want = (v[1] as u128) << 64 | v[0] as u128;
                if f.vregs()[i] != want {
                    err(format!("saved q{i} = {:#x}, pattern {want:#x} (pc {:#x})", f.vregs()[i], f.pc()));
                }
            }
        }
    }
    if mode == MODE_XLOOP && (addr(usurp_t_xwin_lo)..addr(usurp_t_xwin_hi)).contains(&f.pc()) {
        C.in_window.fetch_add(1, Relaxed);
    }
    if check_chain(f) >= 2 {
        C.chains.fetch_add(1, Relaxed);
    }
    // Park: back to the worker; it resumes us with `switch` on this thread.
    // SAFETY: TASK is alive; the worker's saved context is valid.
    unsafe { switch(&mut (*t).task_sp, (*t).worker_sp, frame as usize) };
}

// ---------------------------------------------------------------------------

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: installing a SA_SIGINFO handler with a full mask; the
        // handler only acts on tgkill from this process to TARGET_TID.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigfillset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGURG, &sa, core::ptr::null_mut()), 0);
        }
        // SAFETY: `hook` checks the frame and parks the task with this
        // test's own `switch`; its worker resumes it on the same thread,
        // and the hook then returns with the frame untouched.
        unsafe { set_spill_hook(hook) };
    });
}

struct Outcome {
    parks: usize,
}

/// Runs `body(ctl)` as a task on a fresh stack on a new OS thread whose
/// alternate signal stack is set, until the body returns. Each time the task
/// is parked by the hook, the worker clobbers every register and resumes it.
fn run_task(
    body: unsafe extern "C" fn(*mut Ctl),
    ctl: *mut Ctl,
) -> std::thread::JoinHandle<Outcome> {
    let ctl = ctl as usize;
    std::thread::spawn(move || {
        const ALT: usize = 256 * 1024;
        let mut alt = vec![1u8; ALT];
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr() as *mut c_void,
            ss_flags: 0,
            ss_size: ALT,
        };
        // SAFETY: `alt` outlives the registration (disabled below).
        assert_eq!(unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) }, 0);
        let mut stack = vec![0u8; 512 * 1024];
        let lo = stack.as_mut_ptr() as usize;
        let top = (lo + stack.len()) & !15;
        STACK[0].store(lo, SeqCst);
        STACK[1].store(top, SeqCst);
        let mut t = TaskCtx {
            worker_sp: 0,
            task_sp: 0,
            done: false,
            ctl: ctl as *mut Ctl,
            body,
        };
        let tp: *mut TaskCtx = &mut t;
        TASK.store(tp as usize, SeqCst);
        let mut parks = 0;
        // SAFETY: the stack and TaskCtx outlive the task; one side runs at a time.
        unsafe {
            (*tp).task_sp = init_stack(top, task_entry, tp as usize);
            TARGET_TID.store(libc::gettid(), SeqCst);
            loop {
                let r = switch(&mut (*tp).worker_sp, (*tp).task_sp, 0);
                if (*tp).done {
                    break;
                }
                assert_ne!(r, 0);
                parks += 1;
                usurp_t_clobber(0xdead_beef_0000_0000 ^ parks as u64);
            }
            TARGET_TID.store(0, SeqCst);
            let off = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            assert_eq!(libc::sigaltstack(&off, core::ptr::null_mut()), 0);
        }
        drop(stack);
        drop(alt);
        Outcome { parks }
    })
}

/// Signals the task thread until `done()` (or a generous deadline, which
/// only guards against hanging; reaching it fails the floor assertions).
fn drive(mut done: impl FnMut() -> bool, mut between: impl FnMut()) {
    while TARGET_TID.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let tid = TARGET_TID.load(SeqCst);
    // SAFETY: plain syscalls.
    let pid = unsafe { libc::getpid() };
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() && Instant::now() < deadline {
        // SAFETY: tgkill to a live thread of this process (it clears
        // TARGET_TID only after the task finished, which needs `stop`).
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGURG) };
        between();
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn report(what: &str) -> String {
    format!(
        "{what}: injected {} hooks {} chains-ok {} in-window {} refused: range {} verdict {} state {} room {}; sve-live {}; errors {}: {:?}",
        C.injected.load(SeqCst),
        C.hooks.load(SeqCst),
        C.chains.load(SeqCst),
        C.in_window.load(SeqCst),
        C.refused_range.load(SeqCst),
        C.refused_verdict.load(SeqCst),
        C.refused_state.load(SeqCst),
        C.refused_room.load(SeqCst),
        C.sve_live.load(SeqCst),
        C.errors.load(SeqCst),
        ERRORS.lock().unwrap()
    )
}

#[test]
fn registers_survive_preemption() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    install();
    reset_counters();
    MODE.store(MODE_REGS, SeqCst);
    let (lo, hi) = regcheck::code_range();
    REGION[0].store(lo, SeqCst);
    REGION[1].store(hi, SeqCst);
    let mut ctl = Ctl::new();
    let cp: *mut Ctl = &mut *ctl;
    let target = ((2000.0 * scale()) as usize).max(100);
    let in_check_floor = ((200.0 * scale()) as usize).max(20);
    let h = run_task(reg_driver, cp);
    // SAFETY: `ctl` outlives the task; fields are read atomically.
    drive(
        || {
            (C.injected.load(SeqCst) >= target && C.in_window.load(SeqCst) >= in_check_floor)
                // SAFETY: `ctl` outlives the task and this closure; the field is atomic.
                || unsafe { (*cp).fail.load(SeqCst) } != 0
        },
        || {},
    );
    ctl.stop.store(1, SeqCst);
    let out = h.join().unwrap();
    let msg = report("registers");
    eprintln!("{msg}; checker iterations {}", ctl.iters.load(SeqCst));
    assert_eq!(ctl.fail.load(SeqCst), 0, "register or FPCR/FPSR mismatch after a preemption: {msg}");
    assert_eq!(C.errors.load(SeqCst), 0, "{msg}");
    let floor = ((200.0 * scale()) as usize).max(20);
    assert!(C.injected.load(SeqCst) >= floor, "only {} preemptions: {msg}", C.injected.load(SeqCst));
    assert!(C.in_window.load(SeqCst) >= in_check_floor, "too few preemptions inside the check loop: {msg}");
    assert_eq!(out.parks, C.injected.load(SeqCst), "every injection must park exactly once");
    assert_eq!(C.hooks.load(SeqCst), out.parks);
    assert_eq!(C.chains.load(SeqCst), out.parks, "{msg}");
    assert!(ctl.iters.load(SeqCst) > 0);
}

#[test]
fn exclusive_loop_stays_exact() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    install();
    reset_counters();
    MODE.store(MODE_XLOOP, SeqCst);
    REGION[0].store(addr(usurp_t_xloop_start), SeqCst);
    REGION[1].store(addr(usurp_t_xloop_end), SeqCst);
    let counter = Box::new(AtomicU64::new(0));
    let mut ctl = Ctl::new();
    ctl.counter = &*counter as *const AtomicU64 as u64;
    let cp: *mut Ctl = &mut *ctl;
    let target = ((400.0 * scale()) as usize).max(40);
    let window_floor = ((50.0 * scale()) as usize).max(5);
    let mut ours = 0u64;
    let h = run_task(usurp_t_xloop, cp);
    drive(
        || C.injected.load(SeqCst) >= target && C.in_window.load(SeqCst) >= window_floor,
        || {
            for _ in 0..50 {
                counter.fetch_add(1, SeqCst);
                ours += 1;
            }
        },
    );
    ctl.stop.store(1, SeqCst);
    let out = h.join().unwrap();
    let msg = report("exclusive");
    eprintln!(
        "{msg}; task increments {}, main increments {ours}",
        ctl.iters.load(SeqCst)
    );
    assert_eq!(C.errors.load(SeqCst), 0, "{msg}");
    assert_eq!(
        counter.load(SeqCst),
        ctl.iters.load(SeqCst) + ours,
        "lost or duplicated increments: {msg}"
    );
    assert!(
        C.in_window.load(SeqCst) >= window_floor,
        "too few preemptions inside ldxr..stxr: {msg}"
    );
    assert!(C.injected.load(SeqCst) >= target, "{msg}");
    assert_eq!(out.parks, C.injected.load(SeqCst));
}

#[test]
fn rust_code_chain_is_exact() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    install();
    reset_counters();
    MODE.store(MODE_RUST, SeqCst);
    // SAFETY: the section symbols are defined by the linker.
    let (lo, hi) = unsafe {
        (
            &__start_usurp_t_rust as *const u8 as usize,
            &__stop_usurp_t_rust as *const u8 as usize,
        )
    };
    assert!(lo < hi && (lo..hi).contains(&(rw_a as *const () as usize)));
    REGION[0].store(lo, SeqCst);
    REGION[1].store(hi, SeqCst);
    let mut ctl = Ctl::new();
    let cp: *mut Ctl = &mut *ctl;
    let target = ((1000.0 * scale()) as usize).max(50);
    let h = run_task(rw_driver, cp);
    drive(|| C.injected.load(SeqCst) >= target, || {});
    ctl.stop.store(1, SeqCst);
    let out = h.join().unwrap();
    let msg = report("rust");
    eprintln!("{msg}; driver iterations {}", ctl.iters.load(SeqCst));
    assert_eq!(C.errors.load(SeqCst), 0, "{msg}");
    assert!(C.injected.load(SeqCst) >= target, "{msg}");
    assert!(
        C.refused_verdict.load(SeqCst) > 0,
        "prologues/epilogues must have been hit and refused: {msg}"
    );
    assert_eq!(C.chains.load(SeqCst), out.parks, "{msg}");
}
