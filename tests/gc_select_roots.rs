//! GC values held by a `Select` survive collections (issue 11: a select's
//! storage was not a root): a send case's value while the select waits, a
//! value handed to a receive case before its task runs again, and a
//! select's outcome before `Selected::recv` takes it.
//!
//! As in `gc_rust_heap_roots.rs` (whose helpers this shares:
//! `usurp_testsupport_gc::seeded`): one worker,
//! so the task holding the value cannot run while the main task collects;
//! checksummed lists whose only reference sits in the select; garbage of
//! the same size between collections so that a freed list is overwritten;
//! the heap verifier on; stale copies on the collecting stack scrubbed.
//! Each test fails without the select's registration (checked: the lists
//! were freed, checksum `None`).

use std::time::{Duration, Instant};
use usurp::gc::GcRef;
use usurp::sync::{Select, Selected};
use usurp::{Receiver, SyncSender, TaskState, WaitOn};
use usurp_testsupport_gc::scrub;
use usurp_testsupport_gc::seeded::{check_heap, checksum, collect_and_churn, expected, make_list, runtime};

/// Collections while the current task keeps its (only) worker.
fn collect_here() {
    scrub::<2048>();
    usurp::no_preempt(collect_and_churn);
}

/// Yields (one worker: the others run) until task `id` waits in a select.
fn wait_until_selecting(id: u64) {
    let t0 = Instant::now();
    loop {
        let d = usurp::task::dump();
        if matches!(d.task(id).map(|t| &t.state), Some(TaskState::Parked(WaitOn::Select { .. }))) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "task {id} never waited in its select");
        usurp::yield_now();
    }
}

/// A send case's value while the select waits (no receiver yet): the
/// select's node, in its heap storage, holds the only reference.
#[test]
fn send_case_value_survives_while_the_select_waits() {
    let rt = runtime();
    let sum = rt.block_on(|| {
        let (tx, rx) = usurp::sync_channel::<GcRef>(0);
        let (_never_tx, never_rx) = usurp::channel::<GcRef>();
        #[inline(never)]
        fn build<'a>(tx: &'a SyncSender<GcRef>, never: &'a Receiver<GcRef>) -> Select<'a> {
            let mut sel = Select::new();
            sel.send(tx, make_list(40));
            sel.recv(never);
            sel
        }
        let h = usurp::spawn(move || {
            let sel = build(&tx, &never_rx);
            scrub::<2048>();
            let s = sel.wait();
            assert_eq!(s.index(), Some(0));
            s.send(&tx).is_ok()
        });
        wait_until_selecting(h.id());
        collect_here();
        let sum = checksum(rx.recv().unwrap());
        assert!(h.join().unwrap());
        sum
    });
    assert_eq!(sum, Some(expected(40)), "a value offered by a waiting select was freed");
    check_heap(&rt);
}

/// A value handed to a waiting select's receive case, before that task
/// runs again to take it: only the select's node holds it.
#[test]
fn value_handed_to_a_receive_case_survives_until_taken() {
    let rt = runtime();
    let sum = rt.block_on(|| {
        let (tx, rx) = usurp::sync_channel::<GcRef>(0);
        let (_never_tx, never_rx) = usurp::channel::<GcRef>();
        let h = usurp::spawn(move || {
            let mut sel = Select::new();
            sel.recv(&rx);
            sel.recv(&never_rx);
            let s = sel.wait();
            assert_eq!(s.index(), Some(0));
            checksum(s.recv(&rx).unwrap())
        });
        wait_until_selecting(h.id());
        #[inline(never)]
        fn send_list(tx: &SyncSender<GcRef>) {
            tx.send(make_list(41)).unwrap(); // into the select's node; it is woken
        }
        send_list(&tx);
        collect_here(); // before the receiver runs (one worker)
        h.join().unwrap()
    });
    assert_eq!(sum, Some(expected(41)), "a value handed to a select's receive case was freed");
    check_heap(&rt);
}

/// A select's outcome before `Selected::recv` takes it (the value left the
/// channel's buffer for the select's storage).
#[test]
fn outcome_survives_until_taken() {
    let rt = runtime();
    let sum = rt.block_on(|| {
        let (tx, rx) = usurp::channel::<GcRef>();
        #[inline(never)]
        fn fill(tx: usurp::Sender<GcRef>) {
            tx.send(make_list(42)).unwrap();
        }
        fill(tx);
        #[inline(never)]
        fn select(rx: &Receiver<GcRef>) -> Selected<'_> {
            let mut sel = Select::new();
            sel.recv(rx);
            sel.wait()
        }
        let s = select(&rx);
        collect_here();
        checksum(s.recv(&rx).unwrap())
    });
    assert_eq!(sum, Some(expected(42)), "a select's outcome was freed before it was taken");
    check_heap(&rt);
}

/// Review (revsched4): a send case that lost (another case won, or the
/// select timed out) keeps its value in its dequeued, never-notified node
/// until the `Selected` is dropped; the scan reports a node's payload only
/// once notified and the channel no longer lists the node, so the value is
/// not a root although the README says a send case's value is one "until
/// it is sent". A value whose `Drop` reads the object then reads freed
/// memory.
#[test]
fn losing_send_case_value_survives_until_the_selected_is_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Option<Option<usize>>>>;
    struct Probe(GcRef, Seen);
    impl Drop for Probe {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = Some(checksum(self.0));
        }
    }
    let rt = runtime();
    let seen: Seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    rt.block_on(move || {
        let (lose_tx, _lose_rx) = usurp::sync_channel::<Probe>(0);
        let (win_tx, win_rx) = usurp::channel::<usize>();
        let (go_tx, go_rx) = usurp::channel::<()>();
        let parked = Arc::new(AtomicBool::new(false));
        let parked2 = parked.clone();
        #[inline(never)]
        fn build<'a>(tx: &'a SyncSender<Probe>, win: &'a Receiver<usize>, seen: Seen) -> Select<'a> {
            let mut sel = Select::new();
            sel.send(tx, Probe(make_list(43), seen));
            sel.recv(win);
            sel
        }
        let h = usurp::spawn(move || {
            let sel = build(&lose_tx, &win_rx, seen2);
            scrub::<2048>();
            let s = sel.wait();
            assert_eq!(s.index(), Some(1));
            scrub::<2048>();
            parked2.store(true, Ordering::SeqCst);
            go_rx.recv().unwrap();
            drop(s); // drops the losing case's Probe: its Drop reads the list
        });
        wait_until_selecting(h.id());
        win_tx.send(7).unwrap();
        let t0 = Instant::now();
        while !parked.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(60), "the select never returned");
            usurp::yield_now();
        }
        usurp::yield_now(); // let it park in go_rx.recv (one worker)
        collect_here();
        go_tx.send(()).unwrap();
        h.join().unwrap();
    });
    let got = *seen.lock().unwrap();
    assert_eq!(got, Some(Some(expected(43))), "a losing send case's value was freed while the Selected held it");
    check_heap(&rt);
}

/// The window before `wait` takes a losing send case's value back: another
/// case won, and a receiver on the losing case's channel then dequeued its
/// node, lost the claim and left the node to its select (`pop_live`). The
/// channel no longer lists the node, the select's task has not run yet,
/// and the node is not notified: the select's scan must still report the
/// value (its claim is lost, so no one else writes it). Fails without that
/// (checked: the list was freed, checksum `None`).
#[test]
fn losing_send_case_value_dequeued_by_a_losing_receiver_survives() {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Option<Option<usize>>>>;
    struct Probe(GcRef, Seen);
    impl Drop for Probe {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = Some(checksum(self.0));
        }
    }
    let rt = runtime();
    let seen: Seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    rt.block_on(move || {
        let (lose_tx, lose_rx) = usurp::sync_channel::<Probe>(0);
        let (win_tx, win_rx) = usurp::channel::<usize>();
        #[inline(never)]
        fn build<'a>(tx: &'a SyncSender<Probe>, win: &'a Receiver<usize>, seen: Seen) -> Select<'a> {
            let mut sel = Select::new();
            sel.send(tx, Probe(make_list(44), seen));
            sel.recv(win);
            sel
        }
        let h = usurp::spawn(move || {
            let sel = build(&lose_tx, &win_rx, seen2);
            scrub::<2048>();
            let s = sel.wait();
            assert_eq!(s.index(), Some(1));
            drop(s); // drops the losing case's Probe: its Drop reads the list
        });
        wait_until_selecting(h.id());
        // One worker: the select's task cannot run until this task yields.
        usurp::no_preempt(|| {
            win_tx.send(7).unwrap(); // case 1 wins the claim
            // Dequeues case 0's node, loses its claim, leaves it alone.
            assert!(matches!(lose_rx.try_recv(), Err(usurp::sync::TryRecvError::Empty)));
        });
        collect_here();
        h.join().unwrap();
    });
    let got = *seen.lock().unwrap();
    assert_eq!(got, Some(Some(expected(44))), "a losing send case's value was freed before its select returned");
    check_heap(&rt);
}
