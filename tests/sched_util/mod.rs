//! Helpers shared by the scheduler integration tests (tests/sched_*.rs).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// `n` scaled by env USURP_TEST_SCALE (float, default 1; CI uses 0.25 under
/// qemu), at least 1.
pub fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("USURP_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as usize).max(1)
}

/// Runs `f` on a thread and fails the test if it has not finished after
/// `secs` seconds (a deadlock detector, not a speed check).
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

/// Re-runs this test binary as a child process running only `test` with env
/// `var=1`, and returns its output and whether it had to be started through
/// qemu-user (no binfmt_misc: we are emulated ourselves).
pub fn run_child(test: &str, var: &str) -> (Output, bool) {
    run_child_env(test, var, &[])
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
        return (
            direct.unwrap_or_else(|e| panic!("cannot start child {exe:?}: {e}")),
            false,
        );
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
