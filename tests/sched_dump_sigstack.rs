//! The dump signal on a task with little stack left (issue 15 review, found
//! by the reviewer's check, kept as a regression test): the dump-signal
//! handler was installed by signal-hook-registry WITHOUT `SA_ONSTACK`, so a
//! dump signal delivered to a worker thread built its signal frame (up to
//! ~3 KiB with AVX-512 state) on the running task's stack. A task that
//! legitimately used all but ~2.5 KiB of its stack then faulted on its guard
//! page when someone did `kill -QUIT` aimed at (or landing on) its worker:
//! the overflow handler chained the fault to std's handler, which reset
//! SIGSEGV to the default action, so the dump was lost and stack-overflow
//! reporting was gone for the rest of the process. Now the handler runs on
//! the worker's alternate signal stack: the dump is printed and the SIGSEGV
//! handler stays ours.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::{task, Runtime};
use usurp_testsupport::{run_child_env, StderrTee};

fn stack_lo_containing(addr: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines() {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
        if a <= addr && addr < b {
            return a;
        }
    }
    panic!("no mapping for {addr:#x}");
}

fn segv_handler() -> usize {
    // SAFETY: query only.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[inline(never)]
fn deep(lo: usize, leave: usize, ready: &AtomicBool, stop: &AtomicBool) -> u64 {
    let buf = [7u8; 256];
    let here = std::hint::black_box(&buf) as *const _ as usize;
    if here - lo > leave + 512 {
        return deep(lo, leave, ready, stop) + std::hint::black_box(buf[3]) as u64;
    }
    ready.store(true, Ordering::SeqCst);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        std::hint::spin_loop();
    }
    n + buf[0] as u64
}

fn child(leave: usize) {
    let tee = StderrTee::install();
    let rt = Runtime::builder().workers(1).stack_size(64 * 1024).dump_signal(libc::SIGQUIT).build().unwrap();
    let segv_before = segv_handler();
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI64::new(0));
    let room = Arc::new(AtomicUsize::new(0));
    let (r2, s2, t2, room2) = (ready.clone(), stop.clone(), tid.clone(), room.clone());
    let h = task::Builder::new()
        .name("deep")
        .spawn_on(&rt, move || {
            // SAFETY: gettid has no preconditions.
            t2.store(unsafe { libc::syscall(libc::SYS_gettid) }, Ordering::SeqCst);
            let x = 0u8;
            let lo = stack_lo_containing(&x as *const u8 as usize);
            room2.store(&x as *const u8 as usize - lo, Ordering::SeqCst);
            deep(lo, leave, &r2, &s2)
        })
        .unwrap();
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("task thread {} room at entry {} leave {}", tid.load(Ordering::SeqCst), room.load(Ordering::SeqCst), leave);
    // A process-directed `kill -QUIT` may land on any thread; aim it at the
    // worker running the deep task.
    // SAFETY: plain system calls.
    unsafe {
        let r = libc::syscall(libc::SYS_tgkill, libc::getpid(), tid.load(Ordering::SeqCst) as libc::pid_t, libc::SIGQUIT);
        println!("tgkill -> {r}");
    }
    // Wait for the dump (its stop times out after 2 s: the deep task spins
    // outside preemptible code) instead of a fixed 2.6 s, which a loaded
    // qemu run can exceed; if the dump is lost, the parent says so.
    tee.wait_for(Duration::from_secs(120), |t| t.contains("usurp: signal 3: usurp task dump"));
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    let segv_after = segv_handler();
    println!("SIGSEGV handler before {segv_before:#x} after {segv_after:#x} (0 = SIG_DFL)");
    if segv_after == segv_before {
        println!("SIGSEGV handler kept");
    }
    println!("child survived");
    std::process::exit(0);
}

#[test]
fn dump_signal_on_a_deep_task_stack() {
    if let Ok(v) = std::env::var("REVSCHED_CHILD") {
        child(v.parse().unwrap());
    }
    // Control: plenty of stack left: the dump is printed, the child lives.
    let (out, _) = run_child_env("dump_signal_on_a_deep_task_stack", "REVSCHED_CHILD_X", &[("REVSCHED_CHILD", Some("32768"))]);
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    println!("control: status {:?}\n{so}\n{}", out.status, &se[..se.len().min(400)]);
    assert!(out.status.success() && so.contains("child survived"), "control failed");
    assert!(se.contains("usurp: signal 3: usurp task dump"), "control: no dump printed");
    // ~2 KiB of the task's stack left: legal for the task, but the signal
    // frame (xsave area ~2.7 KiB with AVX-512) does not fit.
    let (out, _) = run_child_env("dump_signal_on_a_deep_task_stack", "REVSCHED_CHILD_X", &[("REVSCHED_CHILD", Some("2560"))]);
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    println!("deep: status {:?}\n{so}\n{}", out.status, &se[..se.len().min(400)]);
    assert!(out.status.success() && so.contains("child survived"), "child killed by the dump signal: {:?}", out.status);
    assert!(se.contains("usurp: signal 3: usurp task dump"), "the SIGQUIT dump request was lost (no dump printed)");
    assert!(so.contains("SIGSEGV handler kept"), "the dump signal left the SIGSEGV handler replaced (overflow reports lost)");
}
