//! Family 5, sleeping and blocking: 1 ms sleepers that record their wake
//! latency, and tasks calling `blocking` around a 1 ms thread sleep.

use super::coordinator::{bump, Ctx, TaskResult};
use super::Kind;
use std::time::{Duration, Instant};
use usurp::checkpoint;

const SLEEP: Duration = Duration::from_millis(1);

pub(crate) fn sleeper(ctx: &Ctx) -> TaskResult {
    let mut latencies = Vec::new();
    while !ctx.stopped() {
        let t0 = Instant::now();
        usurp::sleep(SLEEP);
        latencies.push(t0.elapsed().saturating_sub(SLEEP).as_nanos() as u64);
        bump(&ctx.c.sleeps, 1);
        ctx.progress(Kind::Sleepers);
    }
    TaskResult { latencies, ..Default::default() }
}

pub(crate) fn blocker(ctx: &Ctx) -> TaskResult {
    while !ctx.stopped() {
        usurp::blocking(|| std::thread::sleep(SLEEP));
        bump(&ctx.c.blocking_calls, 1);
        ctx.progress(Kind::Blocking);
        // `blocking` runs its closure in place (without a handoff) when the
        // worker holds tasks pinned by an async preemption; a loop of such
        // calls would never give the worker back. Poll like any cooperative
        // loop outside preemptible code.
        checkpoint();
    }
    TaskResult::default()
}
