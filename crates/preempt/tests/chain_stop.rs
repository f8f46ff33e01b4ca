//! With a stop signal as the preemption signal and no host handler, a
//! foreign delivery stops the process (its default action), and after
//! SIGCONT the runtime's handler is still installed: ticks keep working and
//! a second foreign delivery stops the process again instead of finding the
//! disposition stuck at SIG_DFL (issue 12, finding 4). Alone in its binary.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use usurp_preempt::{register_worker, unregister_worker, WorkerSlot};

/// A helper process that, for up to 60 s, sends SIGCONT to us whenever it
/// sees us stopped, and appends a line to `log` each time (the watchdog: a
/// stop never lasts long).
fn continuer(log: &std::path::Path) -> Child {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt 1200 ]; do \
               grep -q '^State:[[:space:]]*T' /proc/{pid}/status 2>/dev/null && {{ echo stopped >> {log}; kill -CONT {pid}; }}; \
               [ -d /proc/{pid} ] || exit 0; sleep 0.05; i=$((i+1)); done",
            log = log.display()
        ))
        .spawn()
        .expect("sh")
}

fn stops_seen(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map(|s| s.lines().count()).unwrap_or(0)
}

fn current_handler(sig: libc::c_int) -> usize {
    // SAFETY: querying the current action into a local.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut cur), 0);
        cur.sa_sigaction
    }
}

#[test]
fn a_foreign_stop_signal_stops_and_leaves_the_handler_installed() {
    let sig = libc::SIGTSTP;
    usurp_preempt::set_signal(sig).unwrap();
    usurp_preempt::init().unwrap();
    let ours = current_handler(sig);
    assert_ne!(ours, libc::SIG_DFL);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let log = std::env::temp_dir().join(format!("usurp-chain-stop-{pid}"));
    let _ = std::fs::remove_file(&log);
    let mut cont = continuer(&log);
    // Round 0: `kill` from the process (SI_USER), as `kill -TSTP` would;
    // round 1: the host's own `raise` (SI_TKILL from our pid).
    for round in 0..2 {
        let t0 = Instant::now();
        let before = stops_seen(&log);
        // SAFETY: sending the signal to ourselves; our handler is installed.
        let r = unsafe { if round == 0 { libc::kill(pid, sig) } else { libc::raise(sig) } };
        assert_eq!(r, 0);
        // A deferred (re-raised) delivery happens by now too.
        std::thread::sleep(Duration::from_millis(20));
        // The continuer polls every 50 ms: wait for it to have seen the stop.
        while stops_seen(&log) == before && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("round {round}: back after {:?}, stops seen {}", t0.elapsed(), stops_seen(&log));
        assert!(stops_seen(&log) > before, "round {round}: the default action (stop) did not happen");
        assert_eq!(current_handler(sig), ours, "round {round}: the preemption signal's handler was reset to SIG_DFL");
    }
    assert!(usurp_preempt::chained_signals() >= 2);
    // Ticks still reach our handler.
    let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
    let ticks = std::thread::spawn(move || {
        register_worker(slot, Duration::from_micros(200)).unwrap();
        slot.set_idle(false).unwrap();
        let t0 = Instant::now();
        while slot.stats().ticks < 5 && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        slot.set_idle(true).unwrap();
        unregister_worker().unwrap();
        slot.stats().ticks
    })
    .join()
    .unwrap();
    let _ = cont.kill();
    let _ = cont.wait();
    let _ = std::fs::remove_file(&log);
    assert!(ticks >= 5, "ticks stopped reaching the handler ({ticks})");
}
