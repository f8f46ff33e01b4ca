//! Family 4, messaging and locking: channel ping-pong pairs that check the
//! order of their messages, and groups of four tasks contending for one
//! mutex whose two counters must always agree.

use super::coordinator::{bump, Ctx, TaskResult};
use super::Kind;
use std::sync::atomic::Ordering;
use usurp::{yield_now, Mutex};

pub(crate) fn ping(ctx: &Ctx, tx: usurp::Sender<u64>, rx: usurp::Receiver<u64>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut i = 0u64;
    while !ctx.stopped() {
        if tx.send(i).is_err() {
            ctx.fail(&ctx.c.channel_failures, || "pong hung up".into());
            break;
        }
        match rx.recv() {
            Ok(v) if v == i + 1 => {
                bump(&ctx.c.pingpongs, 1);
                ctx.progress(Kind::PingPong);
            }
            Ok(v) => ctx.fail(&ctx.c.channel_failures, || format!("sent {i}, got back {v}")),
            Err(_) => {
                ctx.fail(&ctx.c.channel_failures, || "pong hung up".into());
                break;
            }
        }
        i += 2;
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult::default()
}

pub(crate) fn pong(ctx: &Ctx, rx: usurp::Receiver<u64>, tx: usurp::Sender<u64>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut want = 0u64;
    // Ends when ping drops its sender.
    while let Ok(v) = rx.recv() {
        if v != want {
            ctx.fail(&ctx.c.channel_failures, || format!("expected {want}, received {v}"));
        }
        want = v + 2;
        if tx.send(v + 1).is_err() {
            break;
        }
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult::default()
}

pub(crate) fn contend(ctx: &Ctx, m: &Mutex<[u64; 2]>) -> TaskResult {
    bump(&ctx.c.live_tasks, 1);
    let mut sections = 0u64;
    while !ctx.stopped() {
        {
            let mut g = m.lock();
            if g[0] != g[1] {
                let v = *g;
                ctx.fail(&ctx.c.mutex_failures, || format!("inside the lock: {v:?}"));
            }
            g[0] += 1;
            if sections % 8 == 0 {
                yield_now();
            }
            g[1] += 1;
        }
        sections += 1;
        bump(&ctx.c.mutex_sections, 1);
        ctx.progress(Kind::Mutex);
        if sections % 4 == 0 {
            yield_now();
        }
    }
    ctx.c.live_tasks.fetch_sub(1, Ordering::Relaxed);
    TaskResult { sections, ..Default::default() }
}
