//! Stack overflow and stack-allocation failure, each in a child process (this
//! test binary re-run with an env var selecting the scenario).

use usurp::{task, Error, Runtime};
use usurp_testsupport::run_child;

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buf = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + buf[7] as u64
}

#[test]
fn overflow_child() {
    if std::env::var_os("USURP_CHILD_OVERFLOW").is_none() {
        return; // only runs as the child of the test below
    }
    let rt = Runtime::builder().workers(2).stack_size(64 * 1024).build().unwrap();
    rt.block_on(|| {
        let h = task::Builder::new().name("deep-recursion").spawn(|| recurse(0)).unwrap();
        let _ = h.join();
    });
    unreachable!("the overflow should have ended the process");
}

#[test]
fn stack_overflow_names_the_task_and_exits_nonzero() {
    let (out, _) = run_child("overflow_child", "USURP_CHILD_OVERFLOW");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child succeeded: {stderr}");
    assert_eq!(out.status.code(), Some(134), "stderr: {stderr}");
    assert!(stderr.contains("usurp: task "), "{stderr}");
    assert!(stderr.contains("(\"deep-recursion\")"), "{stderr}");
    assert!(stderr.contains("overflowed its stack of 65536 bytes"), "{stderr}");
}

#[test]
fn segv_elsewhere_child() {
    if std::env::var_os("USURP_CHILD_SEGV").is_none() {
        return;
    }
    let rt = Runtime::builder().workers(1).build().unwrap();
    rt.block_on(|| {
        // A fault that is not a guard-page hit: chained to the previous
        // handler (Rust's, then the default action).
        // SAFETY: deliberately invalid, to raise SIGSEGV in a child process.
        unsafe { std::ptr::read_volatile(16usize as *const u64) };
    });
}

#[test]
fn other_segfaults_are_not_reported_as_overflow() {
    let (out, _) = run_child("segv_elsewhere_child", "USURP_CHILD_SEGV");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("overflowed its stack"), "{stderr}");
    // Killed by SIGSEGV (default action), not our exit code.
    assert_ne!(out.status.code(), Some(134), "{stderr}");
}

#[test]
fn map_failure_child() {
    if std::env::var_os("USURP_CHILD_MAPFAIL").is_none() {
        return;
    }
    let rt = Runtime::builder().workers(1).stack_size(16 << 20).build().unwrap();
    // Limit the address space to what is mapped now plus 1 GiB (room for
    // malloc arenas of new threads): a few dozen 16 MiB stacks fit, then
    // mmap fails.
    let vm: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let lim = libc::rlimit { rlim_cur: (vm + 1024 * 1024) * 1024, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    let (msg, spawned) = rt.block_on(|| {
        let (tx, rx) = usurp::sync_channel::<()>(0);
        let rx = std::sync::Arc::new(usurp::Mutex::new(rx));
        let mut hs = Vec::new();
        let err = loop {
            let rx = rx.clone();
            match usurp::try_spawn(move || {
                let _ = rx.lock().recv();
            }) {
                Ok(h) => hs.push(h),
                Err(e) => break e,
            }
            if hs.len() > 2_000 {
                // qemu-user reserves the guest address space up front, so
                // RLIMIT_AS does not limit guest mappings there.
                println!("CHILD-RESULT unlimited");
                std::process::exit(0);
            }
        };
        let msg = err.to_string();
        assert!(matches!(err, Error::StackMap { .. }), "{err:?}");
        // `spawn` panics with the same explanation.
        let p = std::panic::catch_unwind(|| usurp::spawn(|| ())).unwrap_err();
        let pm = p.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(pm.contains("cannot spawn a task") && pm.contains("RLIMIT_AS"), "{pm}");
        drop(tx);
        let n = hs.len();
        for h in hs {
            h.join().unwrap();
        }
        (msg, n)
    });
    println!("CHILD-RESULT spawned={spawned} msg={msg}");
}

#[test]
fn refused_stack_gives_an_error_that_says_what_to_raise() {
    let (out, via_qemu) = run_child("map_failure_child", "USURP_CHILD_MAPFAIL");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    if via_qemu && stdout.contains("CHILD-RESULT unlimited") {
        eprintln!("note: RLIMIT_AS has no effect on guest mappings under qemu-user; scenario not applicable");
        return;
    }
    let line = stdout
        .lines()
        .find_map(|l| l.find("CHILD-RESULT").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no result line: {stdout}\n{stderr}"));
    assert!(line.contains("cannot allocate a task stack of 16777216 bytes"), "{line}");
    assert!(line.contains("mmap failed"), "{line}");
    // The limit that was reached is named (the address space, set by the
    // child), not vm.max_map_count (far from reached: a few dozen stacks).
    assert!(line.contains("has reached its limit RLIMIT_AS (`ulimit -v`)"), "{line}");
    assert!(!line.contains("max_map_count"), "{line}");
    assert!(line.contains("stack_size"), "{line}");
}
