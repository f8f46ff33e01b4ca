//! `Runtime::block_on` inside `usurp::blocking` (red-team RT-sched,
//! `nest.rs`): the closure runs off the worker (or counting as stopped on
//! it), so its thread may block there like a plain thread; block_on used to
//! panic "called from inside a usurp task" anyway. It is now allowed there
//! (another runtime's or its own), and still refused on a worker, with a
//! message that says where it may be called.
//!
//! Checked by reverting the fix (the `Current::get()` test in
//! `Runtime::block_on`, back to `current_task()`): the two `*_inside_blocking`
//! tests then fail with the old panic, and the message test fails too.

use std::sync::Arc;
use usurp_testsupport::{panic_text, within};

#[test]
fn other_runtimes_block_on_inside_blocking() {
    within(30, "block_on of B inside blocking in a task of A", || {
        let a = usurp::Runtime::builder().workers(2).build().unwrap();
        let b = usurp::Runtime::builder().workers(2).build().unwrap();
        let r = a.block_on(move || usurp::blocking(move || b.block_on(|| 1)));
        assert_eq!(r, 1);
    });
}

#[test]
fn own_runtimes_block_on_inside_blocking() {
    within(30, "block_on of A inside blocking in a task of A", || {
        let a = Arc::new(usurp::Runtime::builder().workers(1).build().unwrap());
        let a2 = a.clone();
        let r = a.block_on(move || usurp::blocking(move || a2.block_on(|| usurp::spawn(|| 2).join().unwrap())));
        assert_eq!(r, 2);
    });
}

#[test]
fn block_on_on_a_worker_still_panics() {
    within(30, "block_on from a task on its worker", || {
        let a = usurp::Runtime::builder().workers(2).build().unwrap();
        let b = usurp::Runtime::builder().workers(2).build().unwrap();
        let msg = a.block_on(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.block_on(|| 1)));
            panic_text(&*r.expect_err("block_on on a worker must panic"))
        });
        assert!(msg.contains("inside usurp::blocking"), "unexpected message: {msg}");
    });
}
