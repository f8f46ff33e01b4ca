//! A task joining its own `JoinHandle` (red-team RT-sched finding 7,
//! `lost.rs selfjoin`) used to hang silently for ever; it now panics with a
//! clear message (as `std` reports `EDEADLK` for a thread joining itself).
//!
//! Checked by reverting the fix (the `joins_itself` check in
//! `JoinHandle::join`): both tests then fail (the join neither returns nor
//! panics within 10 s).

use std::time::Duration;
use usurp_testsupport::{panic_text, within};

fn self_join(in_blocking: bool) -> String {
    let rt = usurp::Runtime::builder().workers(2).build().unwrap();
    let (tx, rx) = usurp::channel::<usurp::JoinHandle<u32>>();
    let (rtx, rrx) = std::sync::mpsc::channel::<String>();
    let h = rt.spawn(move || {
        let me = rx.recv().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if in_blocking {
                usurp::blocking(move || me.join().is_ok())
            } else {
                me.join().is_ok()
            }
        }));
        let _ = rtx.send(match r {
            Ok(ok) => format!("returned (ok: {ok})"),
            Err(p) => panic_text(&*p),
        });
        7
    });
    tx.send(h).unwrap();
    rrx.recv_timeout(Duration::from_secs(10)).expect("the self-join neither returned nor panicked")
}

#[test]
fn task_joining_itself_panics() {
    let msg = within(20, "self-join", || self_join(false));
    assert!(msg.contains("on its own handle") && msg.contains("forever"), "unexpected: {msg}");
}

#[test]
fn task_joining_itself_inside_blocking_panics() {
    let msg = within(20, "self-join inside blocking", || self_join(true));
    assert!(msg.contains("on its own handle"), "unexpected: {msg}");
}
