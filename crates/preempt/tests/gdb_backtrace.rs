//! gdb sees through an asynchronous preemption (issue 12): stopped in the
//! park hook of a preempted task, `bt` walks from the hook through the spill
//! routine into the interrupted function and on to its callers, using the
//! spill routine's DWARF CFI. The test runs itself under `gdb -batch` (as the
//! README's "Debugging" section suggests: `handle SIGURG nostop noprint
//! pass`). On x86-64 gdb starts the test binary itself. On aarch64 the
//! test prefers qemu's gdbstub when `qemu-aarch64-static` and
//! `gdb-multiarch` are installed (the emulated CI run; `ci/test.sh`
//! installs both): the child runs under `qemu-aarch64-static -g PORT` and
//! `gdb-multiarch` attaches with `target remote`; otherwise (real aarch64
//! hardware) it uses the native `gdb` as on x86-64. Without gdb the test
//! says so and skips. `tests/backtrace.rs` checks the same walk with
//! libgcc's unwinder on both ISAs.


use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usurp_testsupport::miniworker::*;
use usurp_preempt::SpillFrame;

usurp_preempt::preemptible! {
    /// The interrupted function.
    pub fn gdb_interrupted_leaf(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}

#[inline(never)]
fn gdb_calling_function(stop: &AtomicBool) -> u64 {
    let mut acc = 0u64;
    while !stop.load(Ordering::Relaxed) {
        acc = acc.wrapping_add(std::hint::black_box(gdb_interrupted_leaf(std::hint::black_box(50_000))));
    }
    acc
}

/// gdb's breakpoint: called from the park hook of a task preempted inside
/// `gdb_interrupted_leaf`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn usurp_gdb_park_marker(pc: usize) -> usize {
    std::hint::black_box(pc)
}

/// The scenario gdb runs (the child): returns after one marked park.
#[test]
fn gdb_child_scenario() {
    if std::env::var_os("USURP_GDB_CHILD").is_none() {
        return; // only meaningful under gdb, started by the test below
    }
    static MARKED: AtomicBool = AtomicBool::new(false);
    let leaf = gdb_interrupted_leaf as *const () as usize;
    run_until(
        RunConfig { quantum: Duration::from_millis(1), ..RunConfig::default() },
        |stop| {
            std::hint::black_box(gdb_calling_function(stop));
        },
        Some(Box::new(move |f: &SpillFrame, _c: &Ctx| {
            if f.pc() >= leaf && f.pc() < leaf + 4096 && !MARKED.swap(true, Ordering::SeqCst) {
                usurp_gdb_park_marker(f.pc());
            }
        })),
        |_| MARKED.load(Ordering::SeqCst),
        Duration::from_secs(60),
    );
    assert!(MARKED.load(Ordering::SeqCst));
}

fn installed(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The gdb commands every variant runs once the child is loaded.
const GDB_SCRIPT: [&str; 10] = [
    "-ex",
    "handle SIGURG nostop noprint pass",
    "-ex",
    "break usurp_gdb_park_marker",
    "-ex",
    "continue",
    "-ex",
    "bt",
    "-ex",
    "kill",
];

/// The spill routine as gdb names it (when it does not print it as a
/// signal frame).
#[cfg(target_arch = "x86_64")]
const SPILL_NAME: &str = "usurp_x86_64_spill";
#[cfg(target_arch = "aarch64")]
const SPILL_NAME: &str = "usurp_aarch64_spill";

/// Starts gdb on this test binary's `gdb_child_scenario`, or `None` (with
/// the reason) when no usable gdb is installed. The second value is a
/// process to kill afterwards (qemu's gdbstub), if any.
fn start_gdb() -> Result<(std::process::Child, Option<std::process::Child>), &'static str> {
    let exe = std::env::current_exe().unwrap();
    let child_args = ["--exact", "gdb_child_scenario", "--nocapture", "--test-threads=1"];
    let piped = || std::process::Stdio::piped();
    let emulated = cfg!(target_arch = "aarch64") && installed("qemu-aarch64-static") && installed("gdb-multiarch");
    if emulated {
        // qemu's gdbstub: the child waits for gdb on a free local port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let qemu = std::process::Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu", "-g", &port.to_string()])
            .arg(&exe)
            .args(child_args)
            .env("USURP_GDB_CHILD", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("qemu-aarch64-static");
        // gdb retries the connection until qemu listens (up to 10 s).
        let gdb = std::process::Command::new("gdb-multiarch")
            .args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set sysroot /usr/aarch64-linux-gnu"])
            .args(["-ex", "set tcp connect-timeout 10", "-ex", "set tcp auto-retry on"])
            .arg("-ex")
            .arg(format!("file {}", exe.display()))
            .arg("-ex")
            .arg(format!("target remote 127.0.0.1:{port}"))
            .args(GDB_SCRIPT)
            .stdout(piped())
            .stderr(piped())
            .spawn()
            .expect("gdb-multiarch");
        return Ok((gdb, Some(qemu)));
    }
    if !installed("gdb") {
        return Err("gdb is not installed (apt-get install gdb; under qemu also gdb-multiarch)");
    }
    let gdb = std::process::Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "set startup-with-shell off"])
        .args(["-ex", "handle SIGURG nostop noprint pass", "-ex", "break usurp_gdb_park_marker", "-ex", "run"])
        .args(["-ex", "bt", "-ex", "kill"])
        .arg("--args")
        .arg(&exe)
        .args(child_args)
        .env("USURP_GDB_CHILD", "1")
        .stdout(piped())
        .stderr(piped())
        .spawn()
        .expect("gdb");
    Ok((gdb, None))
}

#[test]
fn gdb_backtrace_walks_through_the_spill_routine() {
    let (mut child, mut qemu) = match start_gdb() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("{why}: skipped");
            return;
        }
    };
    // Watchdog: gdb gets two minutes.
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            if let Some(q) = qemu.as_mut() {
                let _ = q.kill();
            }
            panic!("gdb did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    if let Some(mut q) = qemu {
        // gdb's `kill` ends the emulated child; make sure of it.
        let _ = q.kill();
        let _ = q.wait();
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("ptrace: Operation not permitted") || text.contains("Couldn't get registers") {
        eprintln!("gdb may not trace processes here: skipped\n{text}");
        return;
    }
    // The backtrace lines, in order.
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let at = |name: &str| {
        frames.iter().position(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} missing from gdb's backtrace:\n{text}"))
    };
    // gdb shows the spill routine (a `.cfi_signal_frame`) as
    // "<signal handler called>" (or by name).
    let s = frames
        .iter()
        .position(|l| l.contains(SPILL_NAME) || l.contains("<signal handler called>"))
        .unwrap_or_else(|| panic!("the spill frame is missing from gdb's backtrace:\n{text}"));
    let (m, l, c) = (at("usurp_gdb_park_marker"), at("gdb_interrupted_leaf"), at("gdb_calling_function"));
    assert!(m < s && s < l && l < c, "frames out of order (marker {m}, spill {s}, leaf {l}, caller {c}):\n{text}");
    // Between the spill frame and the interrupted function only frames
    // inlined into it. The first frame after the signal frame holds the
    // interrupted PC (gdb prints its address unless the PC starts a line:
    // that depends on where the tick landed); frames inlined around it share
    // that PC and are printed without an address.
    assert!(
        frames[s + 2..l.max(s + 2)].iter().all(|f| !f.contains(" in ")),
        "the interrupted function must be the spill routine's caller:\n{text}"
    );
    assert!(frames[c..].iter().any(|f| f.contains("gdb_backtrace")), "the walk stopped at the caller:\n{text}");
}
