//! Session 12, findings G1 and G5 of the red-team pass: what is handed to a
//! waiter while (G5) or after (G1) its task's runtime shuts down.
//!
//! G5: between the start of a runtime's shutdown (`Runtime` dropped) and
//! the abandonment of its unfinished tasks (after its last worker stopped),
//! a parked task of that runtime used to count as live: a `Mutex` unlock
//! handed it the lock (locked for ever), a `notify_one` its notification, a
//! send its value (lost for the live waiters behind it). Now a waiter whose
//! runtime is shutting down counts as abandoned for hand-offs
//! (`WaitNode::is_abandoned`). The window is held open here by a task that
//! keeps the dying runtime's only worker (no switch point, asynchronous
//! preemption off) until the test is done with it; the task itself sees
//! the shutdown begin (`try_spawn` fails).
//!
//! G1: `Receiver` is `Sync`, so an `Arc<Receiver>` may be shared. A send
//! that met a receiver blocked in an abandoned task used to mark the whole
//! channel disconnected: the live receiver behind it never got the value,
//! every later send failed. Now only the dead node is skipped.
//!
//! Negative control: `set_shutdown_skip_for_tests(false)` restores the old
//! G5 behaviour; the window scenarios must then fail (checked below).
//! G1 was checked by reverting the mpsc change (see the commit message).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::sync::{set_shutdown_skip_for_tests, Select};
use usurp::{channel, sync_channel, Condvar, Mutex, Runtime};
use usurp_testsupport::{serial, wait_until, within};

/// How long a live waiter waits for what must reach it at once (a bound
/// against hanging, not a speed check: the hand-off is a wake-up).
const LIVE_WAIT: Duration = Duration::from_secs(10);

fn one_worker() -> Runtime {
    Runtime::builder().workers(1).async_preemption(false).build().unwrap()
}

/// Waits until `n` tasks of `rt` are parked (read through a task dump).
fn parked(rt: &Runtime, n: usize) {
    wait_until(Duration::from_secs(60), "the tasks park", || {
        rt.dump_tasks().tasks.iter().filter(|t| matches!(t.state, usurp::TaskState::Parked(_))).count() >= n
    });
}

/// A runtime being dropped on another thread, its shutdown begun but its
/// only worker held by a busy task, so nothing is abandoned yet.
struct Dying {
    release: Arc<AtomicBool>,
    dropper: std::thread::JoinHandle<()>,
}

impl Dying {
    /// Starts the shutdown of `rt` (its tasks already parked) and returns
    /// once it has begun.
    fn start(rt: Runtime) -> Dying {
        let release = Arc::new(AtomicBool::new(false));
        let shutting = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));
        let (r2, s2, run2) = (release.clone(), shutting.clone(), running.clone());
        let _busy = rt.spawn(move || {
            run2.store(true, Ordering::SeqCst);
            // No switch point until released: the worker cannot reach its
            // scheduler, so the shutdown cannot complete.
            while !r2.load(Ordering::SeqCst) {
                if !s2.load(Ordering::SeqCst) && usurp::try_spawn(|| ()).is_err() {
                    s2.store(true, Ordering::SeqCst); // shutdown begun
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Started first: a worker that sees the shutdown before picking the
        // busy task never runs it.
        wait_until(Duration::from_secs(60), "the busy task runs", || running.load(Ordering::SeqCst));
        let dropper = std::thread::spawn(move || drop(rt));
        wait_until(Duration::from_secs(60), "the shutdown begins", || shutting.load(Ordering::SeqCst));
        Dying { release, dropper }
    }

    /// Lets the worker stop and the shutdown finish (abandonment).
    fn finish(self) {
        self.release.store(true, Ordering::SeqCst);
        self.dropper.join().unwrap();
    }
}

/// G5, Mutex: an unlock during the shutdown must not hand the lock to the
/// dying runtime's parked waiter. Returns whether the lock was free
/// afterwards (checked during the shutdown and after it).
fn mutex_unlock_during_shutdown() -> bool {
    let rt = one_worker();
    let m = Arc::new(Mutex::new(0u32));
    let guard = m.lock();
    let m2 = m.clone();
    let y = rt.spawn(move || *m2.lock() += 1);
    parked(&rt, 1); // on the lock
    let dying = Dying::start(rt);
    drop(guard); // the hand-off, in the window
    let free = m.try_lock().ok().map(|g| *g == 0);
    dying.finish();
    let free_after = m.try_lock().is_ok();
    let y_done = y.join().is_ok();
    if free.is_some() {
        assert_eq!(free, Some(true), "the dying task took the lock and ran");
        assert!(free_after, "the mutex is locked after the shutdown");
        assert!(!y_done, "the skipped task finished");
    }
    free.is_some() && free_after
}

/// G5, Condvar: a `notify_one` during the shutdown must reach the live
/// waiter (a plain thread) queued behind the dying runtime's waiter.
/// Returns whether it did.
fn notify_one_during_shutdown() -> bool {
    let rt = one_worker();
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let _y = rt.spawn(move || {
        let (m, c) = &*p2;
        let mut g = m.lock();
        while !*g {
            g = c.wait(g);
        }
    });
    parked(&rt, 1); // first in the condvar's queue
    let waiting = Arc::new(AtomicBool::new(false));
    let (p3, w2) = (pair.clone(), waiting.clone());
    let z = std::thread::spawn(move || {
        let (m, c) = &*p3;
        let g = m.lock();
        w2.store(true, Ordering::SeqCst);
        // Queued behind the task once it releases the lock in the wait.
        // One wait: woken by the notification, or timed out (the flag is
        // set either way by then, so `wait_timeout_while` could not tell).
        let (g, r) = c.wait_timeout(g, LIVE_WAIT);
        !r.timed_out() && *g
    });
    wait_until(Duration::from_secs(60), "the thread waits", || waiting.load(Ordering::SeqCst));
    let dying = Dying::start(rt);
    {
        let (m, c) = &*pair;
        let mut g = m.lock(); // the thread is in the queue once we have it
        *g = true;
        c.notify_one();
    }
    let woken = z.join().unwrap();
    dying.finish();
    woken
}

/// G1 (`window` false: the sends come after the abandonment) and G5
/// (`window` true: during the shutdown): a task of the dying runtime waits
/// in `recv` (or a `Select` recv case) on a shared receiver, a live
/// receiver (a plain thread, or a task of another runtime) waits behind it.
/// Two values are sent: both must reach live receivers and the sends must
/// succeed. Returns whether they did.
fn shared_receiver(window: bool, select: bool, live_in_task: bool) -> bool {
    let rt = one_worker();
    let (tx, rx) = channel::<u32>();
    let rx = Arc::new(rx);
    let rx2 = rx.clone();
    let _y = rt.spawn(move || {
        if select {
            let mut s = Select::new();
            s.recv(&*rx2);
            let sel = s.wait();
            sel.recv(&*rx2).ok()
        } else {
            rx2.recv().ok()
        }
    });
    parked(&rt, 1); // first in the receive queue
    let live = || {
        let rx3 = rx.clone();
        move || -> Vec<u32> { (0..2).map_while(|_| rx3.recv_timeout(LIVE_WAIT).ok()).collect() }
    };
    let other = Runtime::builder().workers(1).build().unwrap();
    let (dying, rt) = if window { (Some(Dying::start(rt)), None) } else { (None, Some(rt)) };
    drop(rt); // G1: abandoned now
    let (th, task) = if live_in_task {
        (None, Some(other.spawn(live())))
    } else {
        (Some(std::thread::spawn(live())), None)
    };
    if live_in_task {
        parked(&other, 1);
    } else {
        // Queued behind the dying task or not yet: either way it must get
        // both values (from its wait node or the buffer).
        std::thread::sleep(Duration::from_millis(20));
    }
    let s1 = tx.send(42);
    let s2 = tx.send(43);
    let got = match (th, task) {
        (Some(th), _) => th.join().unwrap(),
        (_, Some(t)) => t.join().unwrap(),
        _ => unreachable!(),
    };
    if let Some(d) = dying {
        d.finish();
    }
    let s3 = tx.send(44); // still connected: the Receiver exists
    if s3.is_ok() {
        assert_eq!(rx.try_recv().ok(), Some(44), "the value sent after the shutdown is not buffered");
    }
    s1.is_ok() && s2.is_ok() && s3.is_ok() && got == [42, 43]
}

/// G5, bounded channel: a live sender blocked behind the dying runtime's
/// blocked sender; a receive during the shutdown skips the dying one (as it
/// would after the abandonment) and the live sender's value arrives.
/// Returns the values received.
fn bounded_senders_during_shutdown() -> Vec<u32> {
    let rt = one_worker();
    let (tx, rx) = sync_channel::<u32>(0);
    let tx2 = tx.clone();
    let _y = rt.spawn(move || {
        let _ = tx2.send(1);
    });
    parked(&rt, 1); // first in the send queue
    let z = std::thread::spawn(move || tx.send(2).is_ok());
    std::thread::sleep(Duration::from_millis(20)); // z queued behind (or not yet)
    let dying = Dying::start(rt);
    let mut got = vec![];
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
        got.push(v);
        if v == 2 {
            break;
        }
    }
    assert!(z.join().unwrap(), "the live sender's send failed");
    dying.finish();
    got
}

fn shared_receiver_cases(window: bool) {
    let mut lost = vec![];
    for select in [false, true] {
        for live_in_task in [false, true] {
            if !shared_receiver(window, select, live_in_task) {
                lost.push(format!("(select {select}, live receiver in a task {live_in_task})"));
            }
        }
    }
    assert!(lost.is_empty(), "shared receiver (window {window}): a value or a send was lost in {}", lost.join(", "));
}

#[test]
fn g1_shared_receiver_after_abandonment() {
    within(300, "G1", || shared_receiver_cases(false));
}

#[test]
fn g5_mutex_unlock_during_shutdown() {
    let _s = serial();
    within(120, "G5 mutex", || assert!(mutex_unlock_during_shutdown(), "the unlock went to the dying task"));
}

#[test]
fn g5_notify_one_during_shutdown() {
    let _s = serial();
    within(120, "G5 condvar", || assert!(notify_one_during_shutdown(), "the notification went to the dying task"));
}

#[test]
fn g5_shared_receiver_during_shutdown() {
    let _s = serial();
    within(300, "G5 channel", || shared_receiver_cases(true));
}

#[test]
fn g5_bounded_senders_during_shutdown() {
    let _s = serial();
    let got = within(120, "G5 bounded", bounded_senders_during_shutdown);
    assert_eq!(got, [2], "a value of the dying runtime's blocked sender was taken");
}

/// The negative control: with the shutdown rule switched off, the window
/// scenarios lose the lock, the notification and the value.
#[test]
fn g5_negative_control() {
    let _s = serial();
    set_shutdown_skip_for_tests(false);
    let r = std::panic::catch_unwind(|| {
        within(300, "G5 negative control", || {
            (
                mutex_unlock_during_shutdown(),
                notify_one_during_shutdown(),
                shared_receiver(true, false, false),
                shared_receiver(true, true, false),
            )
        })
    });
    set_shutdown_skip_for_tests(true);
    let (m, c, ch, sel) = r.unwrap();
    assert!(!m, "with the rule off, the unlock still reached a live waiter: the test checks nothing");
    assert!(!c, "with the rule off, the notification still reached the live waiter");
    assert!(!ch, "with the rule off, the values still reached the live receiver");
    assert!(!sel, "with the rule off (select), the values still reached the live receiver");
}
