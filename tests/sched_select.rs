//! `usurp::sync::Select` (issue 11 item 10): Go-style select over channel
//! receives and sends, with a default case or a timeout, from tasks and
//! plain threads. Semantics (ready case taken, default, timeout,
//! disconnection), random choice among ready cases, wake-ups, and the
//! exactly-once race: one select offers a value on two channels whose
//! receivers both want it, so only the shared claim keeps it from being
//! received twice (`select_race_negative_control` switches the claim off
//! in a child process and requires the failure).

use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::sync::{Chosen, RecvError, Select, SendError};
use usurp::{blocking, channel, spawn, sync_channel, yield_now, Runtime};
use usurp_testsupport::{run_child, scale, within};

fn basics(ctx: &str) {
    // A ready receive is taken.
    let (tx1, rx1) = channel::<u32>();
    let (tx2, rx2) = channel::<String>();
    tx2.send("x".into()).unwrap();
    let mut s = Select::new();
    let a = s.recv(&rx1);
    let b = s.recv(&rx2);
    let r = s.wait();
    assert_eq!(r.index(), Some(b), "{ctx}");
    assert_eq!(r.recv(&rx2), Ok("x".to_string()), "{ctx}");
    // Nothing ready + default: Default, nothing consumed.
    let mut s = Select::new();
    s.recv(&rx1);
    s.recv(&rx2);
    s.default_case();
    assert_eq!(s.wait().chosen(), Chosen::Default, "{ctx}");
    // Nothing ready + timeout: TimedOut, never early.
    let t0 = Instant::now();
    let mut s = Select::new();
    s.recv(&rx1);
    s.timeout(Duration::from_millis(20));
    assert!(s.wait().timed_out(), "{ctx}");
    assert!(t0.elapsed() >= Duration::from_millis(20), "{ctx}: early {:?}", t0.elapsed());
    // A value arriving while waiting wakes the select.
    let tx1b = tx1.clone();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx1b.send(5).unwrap();
    });
    let mut s = Select::new();
    let a2 = s.recv(&rx1);
    s.recv(&rx2);
    s.timeout(Duration::from_secs(3600));
    let r = s.wait();
    assert_eq!(r.index(), Some(a2), "{ctx}");
    assert_eq!(a, a2);
    assert_eq!(r.recv(&rx1), Ok(5), "{ctx}");
    th.join().unwrap();
    // A disconnected channel is ready with RecvError.
    drop(tx1);
    let mut s = Select::new();
    s.recv(&rx1);
    s.recv(&rx2);
    let r = s.wait();
    assert_eq!(r.index(), Some(0), "{ctx}");
    assert_eq!(r.recv(&rx1), Err(RecvError), "{ctx}");
    // Send cases: a full channel is not ready; room is.
    let (ftx, frx) = sync_channel::<u32>(1);
    ftx.send(0).unwrap();
    let mut s = Select::new();
    s.send(&ftx, 1);
    s.default_case();
    assert!(s.wait().is_default(), "{ctx}");
    assert_eq!(frx.recv(), Ok(0), "{ctx}");
    let mut s = Select::new();
    let k = s.send(&ftx, 2);
    let r = s.wait();
    assert_eq!(r.index(), Some(k), "{ctx}");
    assert_eq!(r.send(&ftx), Ok(()), "{ctx}");
    assert_eq!(frx.recv(), Ok(2), "{ctx}");
    // A send parked in a select is taken by a receiver on another thread.
    let (rtx, rrx) = sync_channel::<u32>(0);
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        rrx.recv()
    });
    let mut s = Select::new();
    s.recv(&rx2); // never ready
    let k = s.send(&rtx, 7);
    let r = s.wait();
    assert_eq!(r.index(), Some(k), "{ctx}");
    assert_eq!(r.send(&rtx), Ok(()), "{ctx}");
    assert_eq!(th.join().unwrap(), Ok(7), "{ctx}");
    // Receiver gone: the send case is ready with its value back.
    drop(frx);
    let mut s = Select::new();
    s.send(&ftx, 9);
    let r = s.wait();
    assert_eq!(r.send(&ftx), Err(SendError(9)), "{ctx}");
    // Only a timeout.
    let mut s = Select::new();
    s.timeout(Duration::from_millis(1));
    assert!(s.wait().timed_out(), "{ctx}");
    drop(tx2);
}

#[test]
fn select_like_go_from_tasks_threads_and_blocking() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    within(120, "select basics", move || {
        basics("plain thread");
        rt.block_on(|| {
            basics("task");
            blocking(|| basics("inside blocking"));
        });
    });
}

#[test]
#[should_panic(expected = "would block forever")]
fn empty_select_panics() {
    Select::new().wait();
}

#[test]
fn select_panics_on_the_wrong_channel() {
    let (tx, rx) = channel::<u32>();
    let (_tx2, rx2) = channel::<u32>();
    tx.send(1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = Select::new();
        s.recv(&rx);
        s.wait().recv(&rx2)
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("not a receive on this channel"), "{msg}");
}

/// A value that counts its drops (not `Clone`: a lost one cannot be remade).
struct Counted(u32, Arc<std::sync::atomic::AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `Selected::take_unsent` gives back the value of a send case that did
/// not complete, after a timeout (its node was queued and taken back) and
/// beside a completed case (never offered or polled and refused); `None`
/// for the completed case and once taken; a retry offers the value again.
/// Before it, those values could only be dropped with the `Selected`.
fn take_unsent_cases(ctx: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = sync_channel::<Counted>(0); // nobody receives yet
    let (btx, brx) = sync_channel::<Counted>(1); // room for one
    // Timeout: the queued offer comes back whole.
    let mut sel = Select::new();
    let a = sel.send(&tx, Counted(7, drops.clone()));
    sel.timeout(Duration::from_millis(2));
    let mut s = sel.wait();
    assert!(s.timed_out(), "{ctx}");
    let v = s.take_unsent(a, &tx).expect("the timed-out case's value");
    assert_eq!(v.0, 7, "{ctx}");
    assert!(s.take_unsent(a, &tx).is_none(), "{ctx}: taken once");
    drop(s);
    assert_eq!(drops.load(SeqCst), 0, "{ctx}: the value was dropped");
    // Beside a completed case (the buffered channel has room).
    let mut sel = Select::new();
    let a = sel.send(&tx, v);
    let b = sel.send(&btx, Counted(8, drops.clone()));
    let mut s = sel.wait();
    assert_eq!(s.index(), Some(b), "{ctx}");
    assert!(s.take_unsent(b, &btx).is_none(), "{ctx}: the completed case's value was sent");
    let v = s.take_unsent(a, &tx).expect("the case not chosen");
    s.send(&btx).expect("sent");
    assert_eq!(brx.try_recv().map(|c| c.0).ok(), Some(8), "{ctx}");
    // The retry is received.
    let h = std::thread::spawn(move || rx.recv().map(|c| c.0));
    let mut sel = Select::new();
    let a = sel.send(&tx, v);
    let s = sel.wait();
    assert_eq!(s.index(), Some(a), "{ctx}");
    s.send(&tx).expect("received");
    assert_eq!(h.join().unwrap(), Ok(7), "{ctx}");
    assert_eq!(drops.load(SeqCst), 2, "{ctx}: each value dropped once, by its receiver");
}

#[test]
fn take_unsent_returns_what_a_select_did_not_send() {
    within(60, "take_unsent", || {
        take_unsent_cases("plain thread");
        let rt = Runtime::builder().workers(2).build().unwrap();
        rt.block_on(|| take_unsent_cases("task"));
    });
}

#[test]
fn take_unsent_panics_on_a_receive_case() {
    let (tx, rx) = channel::<u32>();
    tx.send(1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sel = Select::new();
        let a = sel.recv(&rx);
        let mut s = sel.wait();
        s.take_unsent(a, &tx)
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("not a send on this channel"), "{msg}");
}

/// Both cases always ready: each is chosen about half the time.
#[test]
fn select_chooses_randomly_among_ready_cases() {
    let (tx1, rx1) = channel::<u8>();
    let (tx2, rx2) = channel::<u8>();
    let n = 2000;
    for _ in 0..n {
        tx1.send(1).unwrap();
        tx2.send(2).unwrap();
    }
    let mut counts = [0usize; 2];
    for _ in 0..n {
        let mut s = Select::new();
        s.recv(&rx1);
        s.recv(&rx2);
        let r = s.wait();
        counts[r.index().unwrap()] += 1;
    }
    // Binomial(2000, 0.5): sd ≈ 22; 700 is > 13 sd away.
    assert!(counts[0] > 700 && counts[1] > 700, "biased choice: {counts:?}");
}

/// The race: every sender task offers each value with one select on two
/// rendezvous channels, each drained by its own receiver task; and receiver
/// selects with tiny timeouts on a third pair. Each value must be received
/// exactly once: twice would mean both cases of one select completed.
fn select_race(senders: usize, per: usize) {
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(move || {
        let (tx1, rx1) = sync_channel::<u64>(0);
        let (tx2, rx2) = sync_channel::<u64>(0);
        let (otx1, orx1) = channel::<u64>();
        let (otx2, orx2) = channel::<u64>();
        let tx1 = Arc::new(tx1);
        let tx2 = Arc::new(tx2);
        let mut hs = Vec::new();
        for s in 0..senders {
            let (tx1, tx2, otx1, otx2) = (tx1.clone(), tx2.clone(), otx1.clone(), otx2.clone());
            hs.push(spawn(move || {
                for i in 0..per as u64 {
                    let v = (s * per) as u64 + i;
                    if i % 2 == 0 {
                        // Offer v on both rendezvous channels.
                        let mut sel = Select::new();
                        sel.send(&*tx1, v);
                        sel.send(&*tx2, v);
                        let r = sel.wait();
                        match r.index() {
                            Some(0) => r.send(&*tx1).unwrap(),
                            _ => r.send(&*tx2).unwrap(),
                        }
                    } else if i % 4 == 1 {
                        otx1.send(v).unwrap();
                    } else {
                        otx2.send(v).unwrap();
                    }
                    if i % 32 == 0 {
                        yield_now();
                    }
                }
            }));
        }
        drop((otx1, otx2));
        let drain = |rx: usurp::sync::Receiver<u64>| spawn(move || rx.iter().collect::<Vec<_>>());
        let d1 = drain(rx1);
        let d2 = drain(rx2);
        // A selecting receiver with tiny timeouts on the other pair.
        let sel_rx = spawn(move || {
            let mut got = Vec::new();
            let (mut open1, mut open2) = (true, true);
            let mut k = 1u64;
            while open1 || open2 {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let mut s = Select::new();
                let c1 = open1.then(|| s.recv(&orx1));
                let c2 = open2.then(|| s.recv(&orx2));
                s.timeout(Duration::from_nanos(500 + (k >> 33) % 20_000));
                let r = s.wait();
                if r.timed_out() {
                    continue;
                }
                if r.index() == c1 {
                    match r.recv(&orx1) {
                        Ok(v) => got.push(v),
                        Err(_) => open1 = false,
                    }
                } else if r.index() == c2 {
                    match r.recv(&orx2) {
                        Ok(v) => got.push(v),
                        Err(_) => open2 = false,
                    }
                }
            }
            got
        });
        for h in hs {
            h.join().unwrap();
        }
        drop((tx1, tx2));
        let total = senders * per;
        let mut seen = vec![0u8; total];
        for v in d1.join().unwrap().into_iter().chain(d2.join().unwrap()).chain(sel_rx.join().unwrap()) {
            seen[v as usize] += 1;
        }
        let lost = seen.iter().filter(|&&c| c == 0).count();
        let dup = seen.iter().filter(|&&c| c > 1).count();
        assert!(lost == 0 && dup == 0, "select race: {lost} values lost, {dup} received twice, of {total}");
    });
}

#[test]
fn select_race_every_value_exactly_once() {
    let per = scale(20_000);
    within(300, "select race", move || {
        for _ in 0..3 {
            select_race(4, per);
        }
    });
}

/// Negative control: with the claim's compare-exchange replaced by a plain
/// store, both receivers can take the value of one select (or a timed-out
/// select loses one): the race must fail in the child.
#[test]
fn select_race_negative_control() {
    let var = "USURP_CLAIM_OFF_SELECT";
    if std::env::var_os(var).is_some() {
        usurp::sync::set_wait_claim_for_tests(false);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            select_race(4, scale(20_000));
        }
        println!("CLAIM-OFF: no failure observed");
        return;
    }
    let (out, _) = within(240, "negative control child", move || run_child("select_race_negative_control", var));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "with the claim switched off the select race passed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("select race:") || out.status.code().is_none(),
        "the child failed for another reason: {:?}\n{stdout}\n{stderr}",
        out.status
    );
}
