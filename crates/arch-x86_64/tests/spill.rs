//! The spill routine driven directly from a signal handler (no preempt
//! crate): a thread spins in an asm loop holding patterns in all 14 GPRs
//! besides RSP/RBP and in its red zone; another thread signals it; the
//! handler injects the spill; the hook checks the saved frame against the
//! ucontext, clobbers registers and returns; the loop checks that nothing
//! changed — registers, flags, and the 128 bytes below RSP. (The aarch64
//! twin is `usurp-arch-aarch64`'s `tests/spill.rs`.) The spill routine exists
//! on x86-64 only: elsewhere this file is empty.
#![cfg(target_arch = "x86_64")]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use usurp_arch_x86_64::{set_spill_hook, sigctx, SpillFrame, GPR_NAMES};

static GP: [u64; 14] = [
    0xa0a0_0000_0000_0001,
    0xa1a1_0000_0000_0002,
    0xa2a2_0000_0000_0003,
    0xa3a3_0000_0000_0004,
    0xa4a4_0000_0000_0005,
    0xa5a5_0000_0000_0006,
    0xa6a6_0000_0000_0007,
    0xa7a7_0000_0000_0008,
    0xa8a8_0000_0000_0009,
    0xa9a9_0000_0000_000a,
    0xaaaa_0000_0000_000b,
    0xabab_0000_0000_000c,
    0xacac_0000_0000_000d,
    0xadad_0000_0000_000e,
];
/// Order of GP: rax rbx rcx rdx rsi rdi r8 .. r15.
const NAMES: [&str; 14] = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
/// Written to the red zone [rsp-128, rsp) in 16 words (fits a sign-extended
/// imm32, so the loop compares it without a register).
static RZ: u64 = 0x5eed_5eed;

static LOOP_START: AtomicUsize = AtomicUsize::new(0);
static LOOP_END: AtomicUsize = AtomicUsize::new(0);
static INJECTED: AtomicU64 = AtomicU64::new(0);
static HOOKED: AtomicU64 = AtomicU64::new(0);
static UC_SP: AtomicUsize = AtomicUsize::new(0);
static UC_PC: AtomicUsize = AtomicUsize::new(0);
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn handler(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: uc is the kernel's ucontext for this delivery.
    unsafe {
        let pc = sigctx::pc(uc);
        if LOOP_START.load(Ordering::Relaxed) <= pc && pc < LOOP_END.load(Ordering::Relaxed) {
            UC_SP.store(sigctx::sp(uc), Ordering::Relaxed);
            UC_PC.store(pc, Ordering::Relaxed);
            sigctx::inject_spill(uc);
            INJECTED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn err(s: String) {
    let mut e = ERRORS.lock().unwrap();
    if e.len() < 20 {
        e.push(s);
    }
}

unsafe extern "C" fn hook(frame: *mut SpillFrame) {
    // SAFETY: the spill routine passes its live frame.
    let f = unsafe { &*frame };
    HOOKED.fetch_add(1, Ordering::Relaxed);
    if f.sp() != UC_SP.load(Ordering::Relaxed) || f.pc() != UC_PC.load(Ordering::Relaxed) {
        err(format!("frame sp/pc {:#x}/{:#x} vs ucontext {:#x}/{:#x}", f.sp(), f.pc(), UC_SP.load(Ordering::Relaxed), UC_PC.load(Ordering::Relaxed)));
    }
    for (name, &v) in GPR_NAMES.iter().zip(f.gprs()) {
        if let Some(i) = NAMES.iter().position(|n| n == name) {
            if v as u64 != GP[i] {
                err(format!("saved {name} {v:#x}"));
            }
        }
    }
    // The frame and the hook's stack lie entirely below the red zone.
    let (lo, hi) = f.saved_range();
    if hi > f.sp() - 128 || lo >= hi {
        err(format!("saved range {lo:#x}..{hi:#x} overlaps the red zone below {:#x}", f.sp()));
    }
    // The hook runs with DF clear and a 16-byte aligned stack.
    let (flags, sp): (u64, usize);
    // SAFETY: reads flags and rsp only.
    unsafe { core::arch::asm!("pushfq", "pop {}", "mov {}, rsp", out(reg) flags, out(reg) sp) };
    if flags & (1 << 10) != 0 {
        err("DF set in the hook".into());
    }
    if sp % 16 != 0 {
        // In this function's body rsp is 16-aligned iff the call was.
        err(format!("misaligned stack in hook: {sp:#x}"));
    }
    // Clobber everything the routine must restore.
    // SAFETY: only declared registers are changed.
    unsafe {
        core::arch::asm!(
            "mov rax, -1", "mov rcx, rax", "mov rdx, rax", "mov rsi, rax", "mov rdi, rax",
            "mov r8, rax", "mov r9, rax", "mov r10, rax", "mov r11, rax",
            "xor r12, r12", "xor r13, r13", "xor r14, r14", "xor r15, r15",
            "pcmpeqd xmm0, xmm0", "pcmpeqd xmm7, xmm7", "pcmpeqd xmm15, xmm15",
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _, out("r8") _, out("r9") _,
            out("r10") _, out("r11") _, out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm0") _, out("xmm7") _, out("xmm15") _,
        )
    };
}

/// Spins `n` iterations checking all patterns; returns the remaining count
/// (0 unless a check failed) and a bitmask of what failed.
fn spin(n: u64) -> (u64, u64) {
    let (remaining, failed): (u64, u64);
    // SAFETY: the asm reserves its own 256 bytes below rsp (so the "red zone"
    // it fills is its own memory), saves/restores rbx, declares clobbers,
    // and leaves DF clear.
    unsafe {
        core::arch::asm!(
            "push rbx",
            "sub rsp, 256",
            "mov [rsp + 128], rdi",            // iteration count
            "lea rax, [rip + 2f]",
            "mov [rip + {ls}], rax",
            "lea rax, [rip + 7f]",
            "mov [rip + {le}], rax",
            // Fill the 128 bytes below the loop's rsp (= rsp + 128 after the
            // `add` below) with the red-zone pattern.
            "mov rax, [rip + {rz}]",
            "mov rcx, 16",
            "4:",
            "mov [rsp + rcx * 8 - 8], rax",
            "dec rcx",
            "jnz 4b",
            "add rsp, 128",                    // now [rsp-128, rsp) holds RZ
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
            "cmp rax, [rip + {gp}]", "jne 3f",
            "cmp rbx, [rip + {gp} + 8]", "jne 3f",
            "cmp rcx, [rip + {gp} + 16]", "jne 3f",
            "cmp rdx, [rip + {gp} + 24]", "jne 3f",
            "cmp rsi, [rip + {gp} + 32]", "jne 3f",
            "cmp rdi, [rip + {gp} + 40]", "jne 3f",
            "cmp r8, [rip + {gp} + 48]", "jne 3f",
            "cmp r9, [rip + {gp} + 56]", "jne 3f",
            "cmp r10, [rip + {gp} + 64]", "jne 3f",
            "cmp r11, [rip + {gp} + 72]", "jne 3f",
            "cmp r12, [rip + {gp} + 80]", "jne 3f",
            "cmp r13, [rip + {gp} + 88]", "jne 3f",
            "cmp r14, [rip + {gp} + 96]", "jne 3f",
            "cmp r15, [rip + {gp} + 104]", "jne 3f",
            "cmp qword ptr [rsp - 8], 0x5eed5eed", "jne 5f",
            "cmp qword ptr [rsp - 64], 0x5eed5eed", "jne 5f",
            "cmp qword ptr [rsp - 128], 0x5eed5eed", "jne 5f",
            "sub qword ptr [rsp], 1",
            "jnz 2b",
            "7:",                              // end of the checked loop
            "xor eax, eax",
            "jmp 6f",
            "5:",
            "mov eax, 2",
            "jmp 6f",
            "3:",
            "mov eax, 1",
            "6:",
            "pushfq",
            "pop rcx",
            "cld",
            "shr rcx, 10",
            "and rcx, 1",
            "xor rcx, 1",                      // 1 if DF was lost
            "shl rcx, 2",
            "or rax, rcx",
            "mov rdi, [rsp]",
            "add rsp, 128",
            "pop rbx",
            ls = sym LOOP_START,
            le = sym LOOP_END,
            rz = sym RZ,
            gp = sym GP,
            inout("rdi") n => remaining,
            out("rax") failed,
            out("rcx") _, out("rdx") _, out("rsi") _, out("r8") _, out("r9") _, out("r10") _,
            out("r11") _, out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
    (remaining, failed)
}

#[test]
fn spill_from_a_signal_preserves_registers_flags_and_red_zone() {
    // SAFETY: `hook` only reads the frame and records mismatches; it
    // returns at once, on this thread, using little stack.
    unsafe { set_spill_hook(hook) };
    // SAFETY: installing a handler for SIGUSR2, used by no other test here.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, core::ptr::null_mut()), 0);
    }
    let scale = usurp_testsupport::scale_factor();
    let want = ((2_000.0 * scale) as u64).max(50);
    let (tx, rx) = std::sync::mpsc::channel();
    let spinner = std::thread::spawn(move || {
        // SAFETY: no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let mut rounds = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            let (rem, failed) = spin(50_000);
            if failed != 0 || rem != 0 {
                err(format!("loop failure mask {failed:#b}, {rem} iterations left"));
                break;
            }
            rounds += 1;
        }
        rounds
    });
    let tid = rx.recv().unwrap();
    // SAFETY: no preconditions.
    let pid = unsafe { libc::getpid() };
    let t0 = std::time::Instant::now();
    while INJECTED.load(Ordering::Relaxed) < want && t0.elapsed() < std::time::Duration::from_secs(30) {
        // SAFETY: signalling our own thread.
        unsafe { libc::tgkill(pid, tid, libc::SIGUSR2) };
        std::thread::sleep(std::time::Duration::from_micros(30));
    }
    STOP.store(true, Ordering::Relaxed);
    let rounds = spinner.join().unwrap();
    let e = ERRORS.lock().unwrap();
    assert!(e.is_empty(), "{e:#?}");
    assert!(INJECTED.load(Ordering::Relaxed) >= want, "only {} injections", INJECTED.load(Ordering::Relaxed));
    assert_eq!(HOOKED.load(Ordering::Relaxed), INJECTED.load(Ordering::Relaxed));
    assert!(rounds > 0);
}
