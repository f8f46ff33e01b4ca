//! Task dumps and per-task CPU time (issue 15): a dump taken while tasks sit
//! in each state names the state and shows the expected functions in each
//! backtrace (a task preempted inside a `preemptible!` loop: the
//! interrupted function, then its callers, in order); dumps during
//! collections and heavy preemption complete and lose no task; a spinning
//! task's CPU time exceeds a sleeping one's; a dump on a signal prints to
//! stderr and the process goes on. Every scenario runs under a watchdog.

mod sched_util;

use sched_util::within;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::sync::Select;
use usurp::{blocking, channel, preemptible, sync_channel, task, Condvar, Mutex, Runtime, TaskState, WaitOn};

preemptible! {
    /// Spins until `stop` is set (call-free loop: preemptible anywhere).
    fn dump_spin_inner(stop: &AtomicBool) -> u64 {
        let mut n = 0u64;
        loop {
            // SAFETY: a volatile read of a valid AtomicBool (no call).
            let s = unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) };
            if s != 0 {
                return n;
            }
            n = n.wrapping_add(1);
        }
    }
}

#[inline(never)]
fn dump_spin_outer(stop: &AtomicBool, started: &AtomicBool) -> u64 {
    started.store(true, Ordering::SeqCst);
    let n = dump_spin_inner(stop);
    std::hint::black_box(n)
}

#[inline(never)]
fn dump_recv_waiter(rx: usurp::Receiver<u32>) -> u32 {
    std::hint::black_box(rx.recv().unwrap_or(0))
}

#[inline(never)]
fn dump_send_waiter(tx: usurp::SyncSender<u32>) {
    let _ = tx.send(1);
    std::hint::black_box(());
}

#[inline(never)]
fn dump_mutex_waiter(m: &Mutex<u32>) -> u32 {
    let v = *m.lock();
    std::hint::black_box(v)
}

#[inline(never)]
fn dump_condvar_waiter(m: &Mutex<bool>, cv: &Condvar) {
    let mut g = m.lock();
    while !*g {
        g = cv.wait(g);
    }
    std::hint::black_box(());
}

#[inline(never)]
fn dump_sleeper(d: Duration) {
    usurp::sleep(d);
    std::hint::black_box(());
}

#[inline(never)]
fn dump_joiner(h: usurp::JoinHandle<u32>) -> u32 {
    std::hint::black_box(h.join().unwrap_or(0))
}

#[inline(never)]
fn dump_selecter(a: &usurp::Receiver<u32>, b: &usurp::Receiver<u32>) {
    let mut s = Select::new();
    s.recv(a);
    s.recv(b);
    let r = s.wait();
    std::hint::black_box(r.index());
}

#[inline(never)]
fn dump_blocking_caller(rx: std::sync::mpsc::Receiver<u32>) -> u32 {
    let v = blocking(move || rx.recv().unwrap_or(0));
    std::hint::black_box(v)
}

#[inline(never)]
fn dump_taker() -> usurp::TaskDump {
    let d = task::dump();
    std::hint::black_box(d)
}

/// Waits (bounded) until `cond`, yielding the task.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        usurp::sleep(Duration::from_millis(1));
    }
}

/// Index of the first frame whose function name contains `f`.
fn pos(names: &[&str], f: &str) -> Option<usize> {
    names.iter().position(|n| n.contains(f))
}

fn check_frames(d: &usurp::TaskDump, id: u64, fns: &[&str]) {
    let t = d.task(id).unwrap_or_else(|| panic!("task {id} missing from the dump:\n{d}"));
    let names = t.function_names();
    let mut last = None;
    for f in fns {
        let p = pos(&names, f).unwrap_or_else(|| panic!("task {id}: no frame `{f}` in {names:?}\n{d}"));
        if let Some(l) = last {
            assert!(p > l, "task {id}: `{f}` (frame {p}) not below the previous function (frame {l}): {names:?}");
        }
        last = Some(p);
    }
}

#[test]
fn dump_names_every_state_and_backtrace() {
    within(120, "dump of every state", || {
        let rt = Runtime::builder().workers(2).max_blocking_threads(4).build().unwrap();
        rt.block_on(|| {
            let me = task::id().unwrap();
            let (rtx, rrx) = channel::<u32>();
            let recv = task::Builder::new().name("recv").spawn(move || dump_recv_waiter(rrx)).unwrap();
            let (stx, srx) = sync_channel::<u32>(0);
            let send = task::Builder::new().name("send").spawn(move || dump_send_waiter(stx)).unwrap();
            let m = Arc::new(Mutex::new(7u32));
            let guard = m.lock();
            let m2 = m.clone();
            let mutex = task::Builder::new().name("mutex").spawn(move || dump_mutex_waiter(&m2)).unwrap();
            let cvp = Arc::new((Mutex::new(false), Condvar::new()));
            let cvp2 = cvp.clone();
            let condvar = task::Builder::new().name("condvar").spawn(move || dump_condvar_waiter(&cvp2.0, &cvp2.1)).unwrap();
            let sleep = task::Builder::new().name("sleep").spawn(|| dump_sleeper(Duration::from_secs(3600))).unwrap();
            let (jtx, jrx) = channel::<u32>();
            let target = task::Builder::new().name("join-target").spawn(move || jrx.recv().unwrap_or(0)).unwrap();
            let target_id = target.id();
            let join = task::Builder::new().name("join").spawn(move || dump_joiner(target)).unwrap();
            let (atx, arx) = channel::<u32>();
            let (_btx, brx) = channel::<u32>();
            let select = task::Builder::new().name("select").spawn(move || dump_selecter(&arx, &brx)).unwrap();
            let (btx_std, brx_std) = std::sync::mpsc::channel::<u32>();
            let in_blocking = Arc::new(AtomicBool::new(false));
            let ib = in_blocking.clone();
            let blk = task::Builder::new()
                .name("blocking")
                .spawn(move || {
                    ib.store(true, Ordering::SeqCst);
                    dump_blocking_caller(brx_std)
                })
                .unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let started = Arc::new(AtomicBool::new(false));
            let (st2, sa2) = (stop.clone(), started.clone());
            let spin = task::Builder::new().name("spin").spawn(move || dump_spin_outer(&st2, &sa2)).unwrap();
            // Let every task reach its wait (the parked ones park at once
            // when this task sleeps; the spinner starts on the other worker).
            wait_for("the spinner to start", || started.load(Ordering::SeqCst));
            wait_for("the blocking task to enter blocking", || in_blocking.load(Ordering::SeqCst));
            usurp::sleep(Duration::from_millis(50));
            // Spawned and not yielded to: runnable (the other worker spins).
            let (ftx, frx) = channel::<u32>();
            let fresh = task::Builder::new().name("fresh").spawn(move || frx.recv().unwrap_or(0)).unwrap();
            let d = dump_taker();
            let text = d.to_string();
            if std::env::var_os("USURP_TEST_PRINT_DUMP").is_some() {
                eprintln!("{text}");
            }
            assert!(!d.stop_timed_out, "{text}");
            let state = |id: u64| d.task(id).unwrap_or_else(|| panic!("task {id} missing:\n{text}")).state.clone();
            assert_eq!(state(me), TaskState::Running { worker: usurp::sched::hooks::current_worker_index() }, "{text}");
            assert!(matches!(state(recv.id()), TaskState::Parked(WaitOn::ChannelRecv(_))), "{text}");
            assert!(matches!(state(send.id()), TaskState::Parked(WaitOn::ChannelSend(_))), "{text}");
            let mutex_addr = &*m as *const Mutex<u32> as usize;
            assert_eq!(state(mutex.id()), TaskState::Parked(WaitOn::Mutex(mutex_addr)), "{text}");
            assert_eq!(state(condvar.id()), TaskState::Parked(WaitOn::Condvar(&cvp.1 as *const Condvar as usize)), "{text}");
            match state(sleep.id()) {
                TaskState::Parked(WaitOn::Sleep { remaining }) => {
                    assert!(remaining > Duration::from_secs(3000) && remaining <= Duration::from_secs(3600), "{text}")
                }
                s => panic!("sleep task: {s:?}\n{text}"),
            }
            assert_eq!(state(join.id()), TaskState::Parked(WaitOn::Join { task: target_id }), "{text}");
            assert_eq!(state(select.id()), TaskState::Parked(WaitOn::Select { cases: 2 }), "{text}");
            assert_eq!(state(blk.id()), TaskState::Blocking, "{text}");
            assert_eq!(state(fresh.id()), TaskState::Runnable, "{text}");
            let pc = match state(spin.id()) {
                TaskState::Preempted { pc } => pc,
                s => panic!("spinner: {s:?}\n{text}"),
            };
            assert_ne!(pc, 0);
            // Names and backtraces.
            assert_eq!(d.task(recv.id()).unwrap().name.as_deref(), Some("recv"));
            assert_eq!(d.task(me).unwrap().name, None);
            check_frames(&d, me, &["dump_taker"]);
            check_frames(&d, recv.id(), &["dump_recv_waiter"]);
            check_frames(&d, send.id(), &["dump_send_waiter"]);
            check_frames(&d, mutex.id(), &["dump_mutex_waiter"]);
            check_frames(&d, condvar.id(), &["dump_condvar_waiter"]);
            check_frames(&d, sleep.id(), &["usurp_sched::timer::sleep", "dump_sleeper"]);
            check_frames(&d, join.id(), &["join", "dump_joiner"]);
            check_frames(&d, select.id(), &["dump_selecter"]);
            check_frames(&d, blk.id(), &["dump_blocking_caller"]);
            // The preempted spinner: the interrupted function first, then
            // its callers in order.
            let sp = d.task(spin.id()).unwrap();
            assert_eq!(sp.frames[0].pc, pc);
            let names = sp.function_names();
            assert!(names[0].contains("dump_spin_inner"), "first frame of the preempted task: {names:?}\n{text}");
            check_frames(&d, spin.id(), &["dump_spin_inner", "dump_spin_outer"]);
            assert!(d.stopped >= d.time_to_safepoint);
            assert!(text.contains("parked on channel receive") && text.contains("preempted asynchronously at PC"), "{text}");
            // Release everyone; every task finishes.
            rtx.send(1).unwrap();
            assert_eq!(srx.recv().unwrap(), 1);
            drop(guard);
            {
                let mut g = cvp.0.lock();
                *g = true;
                cvp.1.notify_all();
            }
            jtx.send(2).unwrap();
            atx.send(3).unwrap();
            btx_std.send(4).unwrap();
            ftx.send(5).unwrap();
            stop.store(true, Ordering::SeqCst);
            assert_eq!(recv.join().unwrap(), 1);
            send.join().unwrap();
            assert_eq!(mutex.join().unwrap(), 7);
            condvar.join().unwrap();
            assert_eq!(join.join().unwrap(), 2);
            select.join().unwrap();
            assert_eq!(blk.join().unwrap(), 4);
            assert_eq!(fresh.join().unwrap(), 5);
            spin.join().unwrap();
            drop(sleep); // detached; abandoned at shutdown
        });
    });
}
