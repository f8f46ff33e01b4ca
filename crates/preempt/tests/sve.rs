//! aarch64 SVE state survives an asynchronous preemption (issue 12,
//! finding 1). A loop in preemptible code keeps Z registers (with lanes above
//! bit 127 when the vector length allows) and predicates live across its
//! back edge, as LLVM does with a `whilelo` predicate; while the task is
//! parked the park hook overwrites them, as another task using SVE on the
//! same thread would (and as the kernel does at the first syscall: it
//! zeroes them). The spill frame carries the kernel's SVE record, so the
//! resume restores them. Runs where the CPU (or QEMU's default `max` CPU)
//! has SVE; see README "Debugging" for checking on SVE hardware.
#![cfg(target_arch = "aarch64")]


use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_testsupport::scale_factor as scale;
use usurp_preempt::SpillFrame;

std::arch::global_asm!(
    ".pushsection usurp_preemptible,\"ax\",%progbits",
    ".arch_extension sve",
    ".globl usurp_test_sve_loop",
    ".type usurp_test_sve_loop,%function",
    ".p2align 4",
    // x0 = outer iterations; returns the number of mismatches seen.
    "usurp_test_sve_loop:",
    "stp x29, x30, [sp, #-16]!",
    "mov x29, sp",
    "index z0.d, #7, #3",
    "index z17.s, #-5, #11",
    "ptrue p3.s",
    "pfalse p4.b",
    "ptrue p7.b",
    "mov x1, #0",
    "1:",
    "mov x2, #64",
    "2:",
    "add x3, x3, x2",
    "eor x3, x3, x2, lsl #3",
    "subs x2, x2, #1",
    "b.ne 2b",
    "index z1.d, #7, #3",
    "cmpne p6.d, p7/z, z0.d, z1.d",
    "b.none 3f",
    "add x1, x1, #1",
    "3:",
    "index z2.s, #-5, #11",
    "cmpne p6.s, p7/z, z17.s, z2.s",
    "b.none 4f",
    "add x1, x1, #1",
    "4:",
    "cntp x4, p7, p3.s",
    "cntw x5",
    "cmp x4, x5",
    "b.eq 5f",
    "add x1, x1, #1",
    "5:",
    "ptest p7, p4.b",
    "b.none 6f",
    "add x1, x1, #1",
    "6:",
    "subs x0, x0, #1",
    "b.ne 1b",
    "mov x0, x1",
    "ldp x29, x30, [sp], #16",
    "ret",
    ".size usurp_test_sve_loop, . - usurp_test_sve_loop",
    ".globl usurp_test_sve_loop_end",
    "usurp_test_sve_loop_end:",
    "nop",
    ".popsection",
);

extern "C" {
    fn usurp_test_sve_loop(iterations: u64) -> u64;
    fn usurp_test_sve_loop_end();
}

fn has_sve() -> bool {
    const HWCAP_SVE: u64 = 1 << 22;
    // SAFETY: getauxval has no preconditions.
    (unsafe { libc::getauxval(libc::AT_HWCAP) } as u64) & HWCAP_SVE != 0
}

/// What another SVE user would leave behind: every register the loop keeps
/// live gets a different value.
fn clobber_sve() {
    // SAFETY: only SVE state is changed; v0/v1/v2/v17 (the low halves of the
    // Z registers written) are declared clobbered; predicates are not used
    // by Rust code.
    unsafe {
        std::arch::asm!(
            ".arch_extension sve",
            "dup z0.d, #-1",
            "dup z17.s, #0",
            "dup z1.d, #3",
            "dup z2.d, #3",
            "pfalse p3.b",
            "ptrue p4.b",
            "ptrue p6.b",
            out("v0") _, out("v1") _, out("v2") _, out("v17") _,
        );
    }
}

#[test]
fn sve_registers_and_predicates_survive_preemption() {
    if !has_sve() {
        eprintln!("no SVE on this CPU: nothing to test");
        return;
    }
    // SAFETY: the routine follows the AAPCS64 (it only uses caller-saved
    // registers, x0-x5, z0-z2, z17 and predicates, and restores x29/x30).
    assert_eq!(unsafe { usurp_test_sve_loop(1000) }, 0, "the check loop fails without preemption");
    static MISMATCHES: AtomicU64 = AtomicU64::new(0);
    static IN_LOOP: AtomicU64 = AtomicU64::new(0);
    let need = ((40.0 * scale()) as u64).max(10);
    let (parks, st) = run_until(
        RunConfig::default(),
        |stop| {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: as above.
                let m = unsafe { usurp_test_sve_loop(2000) };
                MISMATCHES.fetch_add(m, Ordering::SeqCst);
            }
        },
        Some(Box::new(|f: &SpillFrame, _c: &Ctx| {
            let lo = usurp_test_sve_loop as *const () as usize;
            let hi = usurp_test_sve_loop_end as *const () as usize;
            if (lo..hi).contains(&f.pc()) {
                IN_LOOP.fetch_add(1, Ordering::SeqCst);
            }
            clobber_sve();
        })),
        |_| IN_LOOP.load(Ordering::SeqCst) >= need,
        Duration::from_secs(120),
    );
    eprintln!("parks {parks}, in the SVE loop {}, stats {st:?}", IN_LOOP.load(Ordering::SeqCst));
    assert!(IN_LOOP.load(Ordering::SeqCst) >= need, "too few preemptions inside the SVE loop: {st:?}");
    assert_eq!(MISMATCHES.load(Ordering::SeqCst), 0, "SVE state was lost across a preemption");
    assert_eq!(parks, st.accepted);
}
