//! End-to-end: a task holding known values in all GPRs, all YMM registers,
//! MXCSR and the direction flag is preempted asynchronously many times (timer
//! ticks at a 100 µs quantum plus targeted requests), parked, the worker
//! clobbers every register, and the task resumes: any mismatch fails. At every
//! park the spill frame's contents and the frame-pointer chain are checked.
#![cfg(target_arch = "x86_64")]
// `%` instead of is_multiple_of: the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]


use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::arch;
use usurp_preempt::{preemptible, Refusal, SpillFrame};

/// Patterns for rax, rbx, rcx, rdx, rsi, rdi, r8..r15 (in that order).
static GP: [u64; 14] = [
    0x1111_0000_aaaa_0001,
    0x2222_0000_bbbb_0002,
    0x3333_0000_cccc_0003,
    0x4444_0000_dddd_0004,
    0x5555_0000_eeee_0005,
    0x6666_0000_ffff_0006,
    0x7777_1111_0000_0008,
    0x8888_2222_0000_0009,
    0x9999_3333_0000_000a,
    0xaaaa_4444_0000_000b,
    0xbbbb_5555_0000_000c,
    0xcccc_6666_0000_000d,
    0xdddd_7777_0000_000e,
    0xeeee_8888_0000_000f,
];
const GP_NAMES: [&str; 14] = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

#[repr(C, align(32))]
struct VecPatterns([[u64; 4]; 16]);
static VP: VecPatterns = {
    let mut v = [[0u64; 4]; 16];
    let mut i = 0;
    while i < 16 {
        let mut j = 0;
        while j < 4 {
            v[i][j] = 0xf00d_0000_0000_0000 | ((i as u64) << 16) | (j as u64) | 0x0100_0000;
            j += 1;
        }
        i += 1;
    }
    VecPatterns(v)
};
/// Round toward zero, flush-to-zero, denormals-are-zero, exceptions masked.
static MXCSR_PAT: u32 = 0xFFC0;

static LOOP_START: AtomicUsize = AtomicUsize::new(0);
static LOOP_END: AtomicUsize = AtomicUsize::new(0);

#[repr(C)]
struct Out {
    gprs: [u64; 14],
    ymm: [[u64; 4]; 16],
    mxcsr: u32,
    _pad: u32,
    rflags: u64,
    remaining: u64,
    rbp: u64,
}

preemptible! {
    /// Loads the patterns, sets DF, spins `n` iterations comparing every GPR
    /// with its pattern (leaving early on a mismatch), then stores every
    /// register into `out`.
    #[target_feature(enable = "avx")]
    unsafe fn spin_check(n: u64, out: *mut Out) {
        // SAFETY: writes only `out` (valid) and the two loop-bound statics;
        // all clobbered registers are declared; rbx is saved and restored;
        // DF is cleared and MXCSR restored before the asm ends.
        unsafe {
            std::arch::asm!(
                "push rbx",
                "sub rsp, 24",
                "mov [rsp], rdi",
                "mov [rsp + 8], rsi",
                "stmxcsr [rsp + 16]",
                "lea rax, [rip + 2f]",
                "mov [rip + {ls}], rax",
                "lea rax, [rip + 3f]",
                "mov [rip + {le}], rax",
                "ldmxcsr [rip + {mx}]",
                "vmovdqu ymm0, [rip + {vp}]",
                "vmovdqu ymm1, [rip + {vp} + 32]",
                "vmovdqu ymm2, [rip + {vp} + 64]",
                "vmovdqu ymm3, [rip + {vp} + 96]",
                "vmovdqu ymm4, [rip + {vp} + 128]",
                "vmovdqu ymm5, [rip + {vp} + 160]",
                "vmovdqu ymm6, [rip + {vp} + 192]",
                "vmovdqu ymm7, [rip + {vp} + 224]",
                "vmovdqu ymm8, [rip + {vp} + 256]",
                "vmovdqu ymm9, [rip + {vp} + 288]",
                "vmovdqu ymm10, [rip + {vp} + 320]",
                "vmovdqu ymm11, [rip + {vp} + 352]",
                "vmovdqu ymm12, [rip + {vp} + 384]",
                "vmovdqu ymm13, [rip + {vp} + 416]",
                "vmovdqu ymm14, [rip + {vp} + 448]",
                "vmovdqu ymm15, [rip + {vp} + 480]",
                "mov rax, [rip + {gp}]",
                "mov rbx, [rip + {gp} + 8]",
                "mov rcx, [rip + {gp} + 16]",
                "mov rdx, [rip + {gp} + 24]",
                "mov rsi, [rip + {gp} + 32]",
                "mov rdi, [rip + {gp} + 40]",
                "mov r8, [rip + {gp} + 48]",
                "mov r9, [rip + {gp} + 56]",
                "mov r10, [rip + {gp} + 64]",
                "mov r11, [rip + {gp} + 72]",
                "mov r12, [rip + {gp} + 80]",
                "mov r13, [rip + {gp} + 88]",
                "mov r14, [rip + {gp} + 96]",
                "mov r15, [rip + {gp} + 104]",
                "std",
                "2:",
                "cmp rax, [rip + {gp}]",
                "jne 3f",
                "cmp rbx, [rip + {gp} + 8]",
                "jne 3f",
                "cmp rcx, [rip + {gp} + 16]",
                "jne 3f",
                "cmp rdx, [rip + {gp} + 24]",
                "jne 3f",
                "cmp rsi, [rip + {gp} + 32]",
                "jne 3f",
                "cmp rdi, [rip + {gp} + 40]",
                "jne 3f",
                "cmp r8, [rip + {gp} + 48]",
                "jne 3f",
                "cmp r9, [rip + {gp} + 56]",
                "jne 3f",
                "cmp r10, [rip + {gp} + 64]",
                "jne 3f",
                "cmp r11, [rip + {gp} + 72]",
                "jne 3f",
                "cmp r12, [rip + {gp} + 80]",
                "jne 3f",
                "cmp r13, [rip + {gp} + 88]",
                "jne 3f",
                "cmp r14, [rip + {gp} + 96]",
                "jne 3f",
                "cmp r15, [rip + {gp} + 104]",
                "jne 3f",
                "sub qword ptr [rsp + 8], 1",
                "jnz 2b",
                "3:",
                "pushfq",
                "cld",
                "push rax",
                "mov rax, [rsp + 16]",
                "pop qword ptr [rax]",
                "mov [rax + 8], rbx",
                "mov [rax + 16], rcx",
                "mov [rax + 24], rdx",
                "mov [rax + 32], rsi",
                "mov [rax + 40], rdi",
                "mov [rax + 48], r8",
                "mov [rax + 56], r9",
                "mov [rax + 64], r10",
                "mov [rax + 72], r11",
                "mov [rax + 80], r12",
                "mov [rax + 88], r13",
                "mov [rax + 96], r14",
                "mov [rax + 104], r15",
                "vmovdqu [rax + 112], ymm0",
                "vmovdqu [rax + 144], ymm1",
                "vmovdqu [rax + 176], ymm2",
                "vmovdqu [rax + 208], ymm3",
                "vmovdqu [rax + 240], ymm4",
                "vmovdqu [rax + 272], ymm5",
                "vmovdqu [rax + 304], ymm6",
                "vmovdqu [rax + 336], ymm7",
                "vmovdqu [rax + 368], ymm8",
                "vmovdqu [rax + 400], ymm9",
                "vmovdqu [rax + 432], ymm10",
                "vmovdqu [rax + 464], ymm11",
                "vmovdqu [rax + 496], ymm12",
                "vmovdqu [rax + 528], ymm13",
                "vmovdqu [rax + 560], ymm14",
                "vmovdqu [rax + 592], ymm15",
                "stmxcsr [rax + 624]",
                "pop qword ptr [rax + 632]",
                "mov rcx, [rsp + 8]",
                "mov [rax + 640], rcx",
                "mov [rax + 648], rbp",
                "ldmxcsr [rsp + 16]",
                "vzeroupper",
                "add rsp, 24",
                "pop rbx",
                ls = sym LOOP_START,
                le = sym LOOP_END,
                mx = sym MXCSR_PAT,
                vp = sym VP,
                gp = sym GP,
                inout("rdi") out => _,
                inout("rsi") n => _,
                out("rax") _, out("rcx") _, out("rdx") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("r13") _,
                out("r14") _, out("r15") _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
                out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            );
        }
    }
}

#[inline(always)]
fn current_rbp() -> u64 {
    let r: u64;
    // SAFETY: reads rbp only.
    unsafe { std::arch::asm!("mov {}, rbp", out(reg) r, options(nomem, nostack, preserves_flags)) };
    r
}

static MISMATCH: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CHUNKS: AtomicU64 = AtomicU64::new(0);
static IN_LOOP_PARKS: AtomicU64 = AtomicU64::new(0);
static BACKTRACES: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn fail(msg: String) {
    let mut m = MISMATCH.lock().unwrap();
    if m.len() < 20 {
        m.push(msg);
    }
}

#[inline(never)]
fn task_body() {
    let mut out = Box::new(Out { gprs: [0; 14], ymm: [[0; 4]; 16], mxcsr: 0, _pad: 0, rflags: 0, remaining: 0, rbp: 0 });
    while !STOP.load(Ordering::Relaxed) {
        // One chunk is a few hundred microseconds: several quanta.
        // SAFETY: avx was checked by the test; `out` is valid.
        unsafe { spin_check(20_000, &mut *out) };
        CHUNKS.fetch_add(1, Ordering::Relaxed);
        if out.remaining != 0 {
            fail(format!("loop left early with {} iterations remaining", out.remaining));
        }
        for (i, (&got, &want)) in out.gprs.iter().zip(GP.iter()).enumerate() {
            if got != want {
                fail(format!("{}: {got:#x} != {want:#x}", GP_NAMES[i]));
            }
        }
        for i in 0..16 {
            if out.ymm[i] != VP.0[i] {
                fail(format!("ymm{i}: {:x?} != {:x?}", out.ymm[i], VP.0[i]));
            }
        }
        if out.mxcsr & 0xFFC0 != MXCSR_PAT {
            fail(format!("mxcsr {:#x}", out.mxcsr));
        }
        if out.rflags & (1 << 10) == 0 {
            fail("direction flag lost".into());
        }
        // spin_check's own rbp (saved in out) must still be its frame: it is
        // below ours and a frame pointer, so merely check it is non-zero and
        // 8-aligned and under our rbp.
        let ours = current_rbp();
        if out.rbp == 0 || out.rbp % 8 != 0 || out.rbp >= ours {
            fail(format!("rbp {:#x} (caller's {ours:#x})", out.rbp));
        }
    }
}

/// Checks what the spill routine saved, when the PC is inside the loop.
fn check_spill(frame: &SpillFrame, lo: usize, hi: usize) {
    match check_backtrace(frame, lo, hi) {
        Ok(depth) => {
            if depth < 2 {
                fail(format!("backtrace too short: {depth}"));
            }
            BACKTRACES.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail(format!("backtrace: {e}")),
    }
    let pc = frame.pc();
    let (ls, le) = (LOOP_START.load(Ordering::Relaxed), LOOP_END.load(Ordering::Relaxed));
    if !(ls <= pc && pc < le) {
        return;
    }
    IN_LOOP_PARKS.fetch_add(1, Ordering::Relaxed);
    let gprs = frame.gprs();
    assert_eq!(gprs.len(), 15);
    for (name, &v) in arch::GPR_NAMES.iter().zip(gprs.iter()) {
        if let Some(i) = GP_NAMES.iter().position(|n| n == name) {
            if v as u64 != GP[i] {
                fail(format!("spilled {name} = {v:#x}, want {:#x}", GP[i]));
            }
        }
    }
    if frame.rflags() & (1 << 10) == 0 {
        fail("spilled RFLAGS lacks DF".into());
    }
    // The XSAVE area (standard format): MXCSR at 24, XMM i at 160 + 16 i,
    // YMM upper halves at the offset CPUID.(0xD, 2):EBX gives.
    let x = frame.xsave_area();
    let (slo, shi) = frame.saved_range();
    if !(slo <= x && x < shi && x % 64 == 0) {
        fail(format!("xsave area {x:#x} outside saved range {slo:#x}..{shi:#x}"));
        return;
    }
    // SAFETY: the area lies within the saved range on the live task stack.
    unsafe {
        let mx = *((x + 24) as *const u32);
        if mx & 0xFFC0 != MXCSR_PAT {
            fail(format!("spilled MXCSR {mx:#x}"));
        }
        for i in 0..16 {
            let lo128 = std::slice::from_raw_parts((x + 160 + 16 * i) as *const u64, 2);
            if lo128 != &VP.0[i][..2] {
                fail(format!("spilled xmm{i} {lo128:x?}"));
            }
        }
        if arch::xsave_mask() & 4 != 0 {
            let xstate_bv = *((x + 512) as *const u64);
            let off = std::arch::x86_64::__cpuid_count(0xD, 2).ebx as usize;
            if xstate_bv & 4 != 0 {
                for i in 0..16 {
                    let hi128 = std::slice::from_raw_parts((x + off + 16 * i) as *const u64, 2);
                    if hi128 != &VP.0[i][2..] {
                        fail(format!("spilled ymm{i} upper {hi128:x?}"));
                    }
                }
            } else {
                fail("XSTATE_BV says AVX state is in its initial configuration".into());
            }
        }
    }
}

#[test]
fn registers_survive_async_preemption_and_backtraces_are_exact() {
    if !std::is_x86_feature_detected!("avx") {
        eprintln!("no AVX on this CPU: the YMM register test cannot run");
        return;
    }
    let scale = scale();
    let target = ((100_000.0 * scale) as u64).max(100);
    let floor = ((1_000.0 * scale) as u64).max(50);
    let budget = Duration::from_secs_f64(10.0 * scale.max(0.2));
    let slot = new_slot();
    let worker = spawn_mini_worker(
        slot,
        RunConfig::default(),
        Box::new(task_body),
        Some(Box::new(|frame: &SpillFrame, ctx: &Ctx| check_spill(frame, ctx.stack_lo, ctx.stack_hi))),
    );
    let requester = spawn_requester(slot, &STOP, Duration::from_micros(20));
    let t0 = Instant::now();
    while slot.stats().accepted < target && t0.elapsed() < budget {
        std::thread::sleep(Duration::from_millis(20));
    }
    STOP.store(true, Ordering::Relaxed);
    let parks = worker.join().expect("worker");
    let sent = requester.join().expect("requester");
    let st = slot.stats();
    eprintln!(
        "{:.1}s: accepted {} (parks {parks}, in loop {}), requests sent {sent}, acks {}, ticks {}, chunks {}, refused {:?}",
        t0.elapsed().as_secs_f64(),
        st.accepted,
        IN_LOOP_PARKS.load(Ordering::Relaxed),
        st.acks,
        st.ticks,
        CHUNKS.load(Ordering::Relaxed),
        Refusal::ALL.iter().map(|r| (*r, st.refused(*r))).filter(|x| x.1 > 0).collect::<Vec<_>>()
    );
    let m = MISMATCH.lock().unwrap();
    assert!(m.is_empty(), "mismatches: {m:#?}");
    assert_eq!(parks, st.accepted, "every accepted preemption parks exactly once");
    assert!(st.accepted >= floor, "only {} preemptions (floor {floor})", st.accepted);
    assert!(IN_LOOP_PARKS.load(Ordering::Relaxed) > 0);
    assert_eq!(BACKTRACES.load(Ordering::Relaxed), parks);
    assert!(st.ticks > 0, "no timer tick reached the worker");
    assert!(CHUNKS.load(Ordering::Relaxed) > 0);
    // Every request signal was acknowledged by the handler (the last one may
    // have arrived after the worker unregistered).
    assert!(st.acks <= st.requests_sent && st.acks + 1 >= st.requests_sent, "{st:?}");
}
