//! Family 1, register loops: `regcheck::register_loop` (the arch crate's
//! register checker in preemptible assembly) over and over, counting
//! mismatched registers.

use super::coordinator::{bump, Ctx, TaskResult};
use super::Kind;

pub use usurp_preempt::arch::regcheck;

/// A warning if the register checker's code is not where the preemption
/// engine accepts PCs (then register loops are never preempted
/// asynchronously and check little).
pub fn regcheck_warning() -> Option<String> {
    let (lo, hi) = regcheck::code_range();
    for pc in [lo, hi - 1] {
        match usurp::preempt::pc_status(pc) {
            usurp::preempt::PcStatus::Preemptible { .. } => {}
            s => return Some(format!("register-loop code at {pc:#x} is {s:?}, not preemptible")),
        }
    }
    None
}

/// Iterations per `register_loop` call: about a millisecond natively, so a
/// call spans several quanta at 100 µs and the stop flag is seen soon.
const REG_ITERS: u64 = 50_000;

pub(crate) fn registers(ctx: &Ctx, seed: u64) -> TaskResult {
    let mut k = 0u64;
    while !ctx.stopped() {
        let m = regcheck::register_loop(seed.wrapping_add(k), REG_ITERS);
        if m != 0 {
            ctx.fail(&ctx.c.reg_mismatches, || format!("{m} register mismatches in {REG_ITERS} iterations"));
            // fail() counted one; count the rest.
            bump(&ctx.c.reg_mismatches, m - 1);
        }
        bump(&ctx.c.reg_iterations, REG_ITERS);
        ctx.progress(Kind::Registers);
        k += 1;
    }
    TaskResult::default()
}
