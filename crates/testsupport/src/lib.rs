//! Helpers shared by usurp's test suites (a dev-dependency only; never
//! published).
//!
//! Design: one place for what every test file used to copy:
//! * [`scale`] / [`scale_factor`]: the `USURP_TEST_SCALE` knob (CI sets 0.25
//!   for the aarch64 suite under qemu, where everything runs ~10× slower);
//! * [`within`]: a watchdog that turns a hang into a failure (RULES: a test
//!   that could hang carries its own, never relies on CI's limit);
//! * [`wait_until`]: wait for a condition instead of sleeping a fixed time and
//!   hoping it holds (fixed sleeps flake on a loaded runner or under qemu);
//! * [`run_child`] / [`run_child_env`]: re-run one test of the current test
//!   binary in a child process (for tests that must crash, abort, or install
//!   process-wide state), also under qemu-user without binfmt_misc;
//!   [`child_watchdog`] ends such a child that hangs, with a message and an
//!   exit code its parent asserts on;
//! * [`StderrTee`]: lets a child process wait until its own stderr shows
//!   what another thread prints (a task dump) instead of sleeping a fixed
//!   time before it exits;
//! * [`miniworker`]: the one-thread preemption harness (a mini worker
//!   running one task under the preemption crate, without the scheduler)
//!   for usurp-preempt's own integration tests;
//! * [`preemptible`]: tight loops in the runtime's `preemptible!` section that
//!   the scheduler tests use to hold values in registers while being
//!   preempted asynchronously;
//! * [`serial`]: one test at a time in a test binary, for tests that flip
//!   process-wide switches.
//!
//! Layering: this crate depends only on `libc` and `usurp-preempt` (for the
//! `preemptible!` section), never on `usurp-sched`, `usurp-gc` or the facade,
//! so that the scheduler's unit tests can use it without linking a second
//! copy of the crate under test. Runtime and heap set-up (traced node types,
//! trees, heap configurations, runtime builders) is in `usurp-testsupport-gc`
//! (crates/testsupport-gc), which the facade's integration tests use.

use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub mod miniworker;
pub mod preemptible;

/// The `USURP_TEST_SCALE` factor: a positive float, default 1 (also for an
/// unset, unparsable, zero or negative value). CI runs the aarch64 suite
/// under qemu with 0.25.
/// Read once per process (the one parser of the knob: [`parse_scale`]).
pub fn scale_factor() -> f64 {
    static FACTOR: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *FACTOR.get_or_init(|| parse_scale(std::env::var("USURP_TEST_SCALE").ok().as_deref()))
}

/// The factor a `USURP_TEST_SCALE` value stands for (`None`: unset).
pub fn parse_scale(v: Option<&str>) -> f64 {
    v.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s > 0.0).unwrap_or(1.0)
}

/// `n` scaled by [`scale_factor`], at least 1.
pub fn scale(n: usize) -> usize {
    ((n as f64 * scale_factor()) as usize).max(1)
}

/// [`scale`] for `u64` counts.
pub fn scale_u64(n: u64) -> u64 {
    ((n as f64 * scale_factor()) as u64).max(1)
}

/// Runs `f` on a thread and fails the test if it has not finished after
/// `secs` seconds (a deadlock detector, not a speed check). A panic in `f`
/// is passed on as is. On a timeout the thread is left running (it may be
/// stuck for good): the test fails and its process ends soon after.
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: did not finish within {secs} s (deadlock?)"),
    }
}

/// The lock of [`serial`] (one per test binary).
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests of a binary that take it one at a time (they flip
/// process-wide switches, or measure what another test would disturb).
/// Hold the guard for the whole test. A test that failed holding it does
/// not fail the others (the poison is ignored).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `cond` (every millisecond, from the calling OS thread) until it
/// holds; panics naming `what` if it does not within `timeout` (a watchdog,
/// not a speed check: give minutes where seconds are expected). Use instead
/// of a fixed sleep before an assertion. Not for code inside a task that
/// must let its worker run others (use the runtime's sleep there).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > timeout {
            panic!("{what}: not reached within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where things run: samples `on_worker(w)` for every worker `w` in
/// `0..workers` every 200 µs (it returns the index, below `items`, of the
/// item running there, if any) and returns the set of items seen on each
/// worker. Samples for at least `min` and then until every item has been
/// seen somewhere, for at most `max` (a loaded or emulated machine may need
/// far longer than `min` to run every item once: a fixed sampling time made
/// the picture incomplete there).
pub fn sample_placement(
    workers: usize,
    items: usize,
    min: Duration,
    max: Duration,
    on_worker: impl Fn(usize) -> Option<usize>,
) -> Vec<std::collections::HashSet<usize>> {
    let mut on = vec![std::collections::HashSet::new(); workers];
    let t0 = Instant::now();
    loop {
        for (w, set) in on.iter_mut().enumerate() {
            if let Some(k) = on_worker(w) {
                set.insert(k);
            }
        }
        let all_seen = (0..items).all(|k| on.iter().any(|s| s.contains(&k)));
        if (t0.elapsed() >= min && all_seen) || t0.elapsed() >= max {
            return on;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Installs `handler` for `sig` as an embedding host would, before or
/// beside the runtime (the signal-chaining tests): `sigaction` with `flags`,
/// `sa_mask` holding `mask`; panics if the call fails.
///
/// # Safety
/// Process-wide: replaces the current disposition of `sig`. `handler` is an
/// `extern "C"` function of the shape `flags` asks for (three arguments
/// with `SA_SIGINFO`, one without) that is safe to run in a signal handler.
pub unsafe fn install_host_handler(sig: libc::c_int, handler: usize, flags: libc::c_int, mask: &[libc::c_int]) {
    // SAFETY: a zeroed sigaction is a valid initial value; the calls get
    // valid pointers; the handler's validity is the caller's contract.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        for &s in mask {
            libc::sigaddset(&mut sa.sa_mask, s);
        }
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0, "sigaction: {}", std::io::Error::last_os_error());
    }
}

/// Re-runs this test binary as a child process running only `test` with env
/// `var=1`, and returns its output and whether it had to be started through
/// qemu-user (no binfmt_misc: we are emulated ourselves).
pub fn run_child(test: &str, var: &str) -> (Output, bool) {
    run_child_env(test, var, &[])
}

/// The watchdog of a child process (see [`run_child`]): a thread that, if
/// the process is still running after `secs` seconds, prints `message` to
/// stderr and ends the process with exit status `code`. The parent then
/// sees a failed child whose stderr says what hung, instead of waiting for
/// CI's limit. Start it first thing in the child's branch of the test.
pub fn child_watchdog(secs: u64, message: &'static str, code: i32) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("{message}");
        std::process::exit(code);
    });
}

/// [`run_child`] with extra environment: `(name, Some(value))` sets a
/// variable in the child, `(name, None)` removes it.
pub fn run_child_env(test: &str, var: &str, env: &[(&str, Option<&str>)]) -> (Output, bool) {
    let exe = std::env::current_exe().unwrap();
    let args = [test, "--exact", "--nocapture", "--test-threads=1"];
    let with_env = |c: &mut Command| {
        for (k, v) in env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
    };
    let mut cmd = Command::new(&exe);
    with_env(&mut cmd);
    let direct = cmd.args(args).env(var, "1").output();
    // Under qemu-user without binfmt_misc the exec fails: ENOEXEC, or (when
    // spawn is emulated with fork + exec) a silent exit status 127.
    let exec_failed = match &direct {
        Err(e) => e.raw_os_error() == Some(libc::ENOEXEC),
        Ok(o) => o.status.code() == Some(127) && o.stdout.is_empty() && o.stderr.is_empty(),
    };
    if !exec_failed {
        return (direct.unwrap_or_else(|e| panic!("cannot start child {exe:?}: {e}")), false);
    }
    let qemu = format!("qemu-{}-static", std::env::consts::ARCH);
    let mut cmd = Command::new(&qemu);
    with_env(&mut cmd);
    let out = cmd
        .arg("-L")
        .arg(format!("/usr/{}-linux-gnu", std::env::consts::ARCH))
        .arg(&exe)
        .args(args)
        .env(var, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot start child {exe:?} directly or through {qemu}: {e}"));
    (out, true)
}

/// Process-wide: file descriptor 2 becomes a pipe whose reader thread
/// copies everything to the original stderr and keeps a copy of the text,
/// so that the process can wait until something it prints from another
/// thread (a task dump) has been written. For child processes (see
/// [`run_child`]): the parent still reads the whole stderr. Install once,
/// before the output to wait for; the tee stays for the rest of the process.
pub struct StderrTee {
    seen: Arc<(Mutex<String>, Condvar)>,
}

impl StderrTee {
    pub fn install() -> StderrTee {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain system calls on descriptors this function owns;
        // dup2 replaces fd 2 atomically (writers see the old or the new
        // file, never a closed descriptor).
        let orig = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe: {}", std::io::Error::last_os_error());
            let orig = libc::dup(2);
            assert!(orig >= 0, "dup(2): {}", std::io::Error::last_os_error());
            assert!(libc::dup2(fds[1], 2) >= 0, "dup2: {}", std::io::Error::last_os_error());
            libc::close(fds[1]);
            orig
        };
        let seen = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a local buffer of the given length.
                let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
                if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted) {
                    return;
                }
                if n < 0 {
                    continue;
                }
                let chunk = &buf[..n as usize];
                let mut off = 0;
                while off < chunk.len() {
                    // SAFETY: writing from a live buffer to our duplicate of
                    // the original stderr.
                    let w = unsafe { libc::write(orig, chunk[off..].as_ptr().cast(), chunk.len() - off) };
                    if w <= 0 {
                        break; // the original stderr is gone: keep the text only
                    }
                    off += w as usize;
                }
                let (text, cv) = &*s2;
                text.lock().unwrap().push_str(&String::from_utf8_lossy(chunk));
                cv.notify_all();
            }
        });
        StderrTee { seen }
    }

    /// Waits until `pred` holds for everything written to stderr since
    /// [`StderrTee::install`] (already copied to the original stderr);
    /// false if it does not within `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let (text, cv) = &*self.seen;
        let t0 = Instant::now();
        let mut g = text.lock().unwrap();
        while !pred(&g) {
            let left = timeout.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return false;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
        true
    }
}

/// The message of a caught panic's payload (`String` or `&str`; otherwise a
/// placeholder).
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The knob is read once per process: the parser is tested directly, and
    // the cached factor against it.
    #[test]
    fn scale_knob_parses_and_clamps() {
        assert_eq!(parse_scale(Some("0.25")), 0.25);
        assert_eq!(parse_scale(Some(" 2 ")), 2.0);
        assert_eq!(parse_scale(None), 1.0);
        for bad in ["0", "-1", "x", "inf", ""] {
            assert_eq!(parse_scale(Some(bad)), 1.0, "{bad:?}");
        }
        let f = scale_factor();
        assert_eq!(f, parse_scale(std::env::var("USURP_TEST_SCALE").ok().as_deref()));
        assert_eq!(scale(1000), ((1000.0 * f) as usize).max(1));
        assert_eq!(scale_u64(8), ((8.0 * f) as u64).max(1));
        assert_eq!(scale(0), 1, "never scaled to 0");
    }

    #[test]
    fn within_returns_the_value_and_fails_a_hang() {
        assert_eq!(within(60, "quick", || 42), 42);
        let r = std::panic::catch_unwind(|| within(1, "stuck", || std::thread::sleep(Duration::from_secs(30))));
        let msg = *r.expect_err("a hang must fail").downcast::<String>().unwrap();
        assert!(msg.contains("stuck: did not finish within 1 s"), "{msg}");
    }

    #[test]
    fn stderr_tee_sees_what_another_thread_writes() {
        if std::env::var_os("USURP_TESTSUPPORT_TEE_CHILD").is_some() {
            let tee = StderrTee::install();
            assert!(!tee.wait_for(Duration::from_millis(20), |t| t.contains("marker")), "seen before written");
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(10));
                eprintln!("before marker-1234 after");
            });
            assert!(tee.wait_for(Duration::from_secs(60), |t| t.contains("marker-1234")));
            println!("child saw its stderr");
            std::process::exit(0);
        }
        let (out, _) = run_child("tests::stderr_tee_sees_what_another_thread_writes", "USURP_TESTSUPPORT_TEE_CHILD");
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && so.contains("child saw its stderr"), "{so}\n{se}");
        assert!(se.contains("before marker-1234 after"), "the parent reads the child's stderr through the tee: {se}");
    }

    #[test]
    fn child_watchdog_ends_a_hung_child_with_its_message_and_code() {
        if std::env::var_os("USURP_TESTSUPPORT_WATCHDOG_CHILD").is_some() {
            child_watchdog(1, "child watchdog: the test scenario hung", 42);
            std::thread::sleep(Duration::from_secs(120));
            println!("child outlived its watchdog");
            std::process::exit(0);
        }
        let (out, _) = run_child(
            "tests::child_watchdog_ends_a_hung_child_with_its_message_and_code",
            "USURP_TESTSUPPORT_WATCHDOG_CHILD",
        );
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(42), "{so}\n{se}");
        assert!(se.contains("child watchdog: the test scenario hung"), "{se}");
        assert!(!so.contains("outlived"), "{so}");
    }

    #[test]
    fn wait_until_sees_the_condition_and_fails_one_never_met() {
        let t0 = Instant::now();
        wait_until(Duration::from_secs(60), "later", || t0.elapsed() > Duration::from_millis(5));
        let r = std::panic::catch_unwind(|| wait_until(Duration::from_millis(20), "never", || false));
        let msg = *r.expect_err("an unmet condition must fail").downcast::<String>().unwrap();
        assert!(msg.contains("never: not reached within"), "{msg}");
    }
}
