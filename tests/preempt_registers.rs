//! Register preservation and exact backtraces through the real scheduler
//! (issue 3): tasks hold known values in every GPR and vector register
//! (x86-64: 14 GPRs + ymm0-15/xmm0-15; aarch64: x0-x28 minus the platform
//! register + q0-q31; see the arch crates' `regcheck`) in a preemptible
//! assembly loop and keep checking them, while being preempted many times at
//! a 100 µs quantum by the runtime, with other tasks (different patterns)
//! running on the same workers in between. Any mismatch fails. At every
//! accepted preemption, an observer walks the frame-pointer chain from the
//! spill frame: it must be well formed, pass through the test's own frames
//! and end at the task's entry (the zero link that `init_stack` plants);
//! every return address must follow a call instruction.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;

use usurp_preempt::arch;
use usurp_testsupport::scale_factor as scale;

/// The task's frame around the checker: its return address is looked for in
/// every backtrace.
#[inline(never)]
fn checker_frame(seed: u64, iterations: u64) -> u64 {
    let r = arch::regcheck::register_loop(black_box(seed), iterations);
    black_box(r)
}

static WALKS: AtomicU64 = AtomicU64::new(0);
static WALKS_THROUGH_CHECKER: AtomicU64 = AtomicU64::new(0);
static BAD_WALKS: AtomicU64 = AtomicU64::new(0);
static BAD_CALL_SITES: AtomicU64 = AtomicU64::new(0);

/// Whether the instruction before `ra` is a call.
fn follows_call(ra: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: return addresses point into mapped code; we read up to 7
        // bytes before them.
        let b = |k: usize| unsafe { *((ra - k) as *const u8) };
        // call rel32 | call [rip+disp32] | call reg (FF D0+r, REX 41) |
        // call [reg+disp8] (FF 50+r xx, with an optional REX) | call [rsp+..]
        b(5) == 0xE8
            || (b(6) == 0xFF && b(5) == 0x15)
            || (b(2) == 0xFF && (0xD0..=0xD7).contains(&b(1)))
            || (b(3) == 0x41 && b(2) == 0xFF && (0xD0..=0xD7).contains(&b(1)))
            || (b(3) == 0xFF && (0x50..=0x57).contains(&b(2)))
            || (b(4) == 0xFF && b(3) == 0x54)
            || (b(2) == 0xFF && (0x10..=0x17).contains(&b(1)))
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: return addresses point into mapped code.
        let insn = unsafe { *((ra - 4) as *const u32) };
        // BL imm26 | BLR Xn (| BLRAA etc. not used here)
        insn & 0xFC00_0000 == 0x9400_0000 || insn & 0xFFFF_FC1F == 0xD63F_0000
    }
}

/// Runs in the park hook on the preempted task's stack.
fn observe(frame: &usurp::preempt::SpillFrame) {
    let checker = checker_frame as *const () as usize;
    let mut fp = frame.fp();
    let mut prev = frame.sp();
    let mut through = false;
    for _ in 0..256 {
        if fp == 0 {
            WALKS.fetch_add(1, Ordering::Relaxed);
            if through {
                WALKS_THROUGH_CHECKER.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if fp % 8 != 0 || fp < prev {
            break;
        }
        // SAFETY: fp is a frame record on this task's stack (checked to be
        // above the spill frame and increasing).
        let (next, ra) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if next == 0 {
            // The trampoline's record: `ra` is the zero planted above it, or
            // the trampoline's own call into the task entry.
            fp = 0;
            continue;
        }
        if !follows_call(ra) {
            BAD_CALL_SITES.fetch_add(1, Ordering::Relaxed);
        }
        if ra > checker && ra < checker + 512 {
            through = true;
        }
        prev = fp;
        fp = next;
    }
    BAD_WALKS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn registers_survive_many_preemptions_and_backtraces_are_exact() {
    let target = (100_000.0 * scale()) as u64;
    // A floor far below the target (slow emulation, loaded machines); the
    // run stops early once the target is reached.
    let floor = (target / 20).max(50);
    let budget = Duration::from_secs(if cfg!(target_arch = "x86_64") { 15 } else { 40 });
    usurp_sched::hooks::set_preempt_observer(Some(observe));
    let rt = Runtime::builder().workers(2).quantum(Duration::from_micros(100)).build().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let before = rt.stats().preempt;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..6u64)
        .map(|k| {
            let done = done.clone();
            rt.spawn(move || {
                let mut mismatches = 0;
                let mut rounds = 0u64;
                while !done.load(Ordering::Relaxed) {
                    mismatches += checker_frame(0x5EED_0000 + k * 7919 + rounds, 200_000);
                    rounds += 1;
                    if rounds % 8 == 0 {
                        usurp::yield_now(); // cooperative switches too
                    }
                }
                (mismatches, rounds)
            })
        })
        .collect();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let accepted = rt.stats().preempt.accepted - before.accepted;
        if accepted >= target || t0.elapsed() > budget {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut total_rounds = 0;
    for (k, t) in tasks.into_iter().enumerate() {
        let (mismatches, rounds) = t.join().unwrap();
        assert_eq!(mismatches, 0, "task {k}: {mismatches} register mismatches ({})", arch::regcheck::checked_registers());
        total_rounds += rounds;
    }
    usurp_sched::hooks::set_preempt_observer(None);
    let after = rt.stats().preempt;
    let accepted = after.accepted - before.accepted;
    eprintln!(
        "{accepted} preemptions in {:?} ({} checked: {}), {total_rounds} check rounds, {} walks ({} through the checker)",
        t0.elapsed(),
        arch::regcheck::checked_registers(),
        arch::regcheck::vector_mode(),
        WALKS.load(Ordering::Relaxed),
        WALKS_THROUGH_CHECKER.load(Ordering::Relaxed),
    );
    assert!(accepted >= floor, "only {accepted} preemptions (floor {floor})");
    assert_eq!(BAD_WALKS.load(Ordering::Relaxed), 0, "malformed frame-pointer chains");
    assert_eq!(BAD_CALL_SITES.load(Ordering::Relaxed), 0, "return addresses not after a call");
    let walks = WALKS.load(Ordering::Relaxed);
    assert!(walks >= floor, "{walks} backtraces");
    // Nearly all preemptions land in the checker loop (the rest in the
    // test's loop around it, if it is ever preemptible: it is not).
    assert!(WALKS_THROUGH_CHECKER.load(Ordering::Relaxed) * 10 >= walks * 9, "backtraces missed the task's frames");
}
