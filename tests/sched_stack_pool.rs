//! The shared task pool keeps stacks without releasing their pages up to
//! a budget of resident bytes (new-user probe 112; `stack.rs`): fork-join
//! with more tasks in flight than the worker caches hold (64 each) used to
//! `madvise` every stack that joined the pool, with the pool's spin lock
//! held; each call flushed every CPU's TLB and every spawn spun on the
//! lock meanwhile: 200 tasks per round ran 13x slower than Go.
//!
//! Asserted through the pool's counts, not timing: rounds of 300 short
//! tasks release no stack with the budget, and release them by the hundred
//! with the budget at 0 (the negative control, the old behaviour); tasks
//! that each touch 128 KiB of stack fill the budget, after which stacks are
//! released and the pool's resident bytes stay within it.

use std::hint::black_box;
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::{serial, within};

const ROUNDS: usize = 20;
const WIDTH: usize = 300;

/// `ROUNDS` rounds of `WIDTH` tasks, each touching `touch` bytes of its
/// stack, spawned and joined by one task on 2 workers; returns the pool's
/// counts after them and the stacks released during them.
fn fork_join(budget: Option<usize>, touch: usize) -> ((usize, usize, u64), u64) {
    let _s = serial();
    hooks::set_stack_pool_budget_for_tests(budget);
    let r = within(120, "fork-join rounds", move || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let released0 = hooks::stack_pool_for_tests(&rt).2;
        rt.block_on(move || {
            for round in 0..ROUNDS {
                let hs: Vec<_> = (0..WIDTH)
                    .map(|i| {
                        usurp::spawn(move || {
                            if touch > 0 {
                                black_box(touch_stack(touch, round));
                            }
                            i * 2
                        })
                    })
                    .collect();
                for (i, h) in hs.into_iter().enumerate() {
                    assert_eq!(h.join().unwrap(), i * 2);
                }
            }
        });
        let counts = hooks::stack_pool_for_tests(&rt);
        (counts, counts.2 - released0)
    });
    hooks::set_stack_pool_budget_for_tests(None);
    r
}

/// Touches `n` bytes (up to 128 KiB) of the calling task's stack, a byte
/// per page, and returns one of them.
#[inline(never)]
fn touch_stack(n: usize, v: usize) -> u8 {
    let mut big = [0u8; 128 * 1024];
    let mut at = 0;
    while at < n.min(big.len()) {
        big[at] = v as u8;
        at += 4096;
    }
    black_box(&mut big);
    big[0]
}

#[test]
fn fork_join_beyond_the_worker_caches_releases_no_stack() {
    let ((pooled, resident, _), released) = fork_join(None, 0);
    eprintln!("budget on: {released} stacks released; pool {pooled} tasks, {resident} bytes resident");
    assert!(pooled > 0, "no task went to the pool: the test shows nothing");
    assert_eq!(released, 0, "stacks of short tasks were released on their way into the pool");
}

#[test]
fn negative_control_without_the_budget_every_pooled_stack_is_released() {
    let ((pooled, resident, _), released) = fork_join(Some(0), 0);
    eprintln!("budget 0: {released} stacks released; pool {pooled} tasks, {resident} bytes resident");
    assert!(released >= (ROUNDS * 50) as u64, "only {released} stacks released with the budget at 0");
    assert_eq!(resident, 0);
}

#[test]
fn deep_tasks_fill_the_budget_and_the_rest_is_released() {
    let ((pooled, resident, _), released) = fork_join(None, 128 * 1024);
    eprintln!("deep tasks: {released} stacks released; pool {pooled} tasks, {resident} bytes resident");
    assert!(resident <= 16 << 20, "the pool keeps {resident} resident bytes, over its 16 MiB budget");
    assert!(released > 0, "no stack was released: 128 KiB tasks beyond the caches exceed the budget");
}
