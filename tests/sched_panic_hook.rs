//! Panic messages name the task, not the worker thread (issue 15): the
//! runtime's panic hook, checked on the stderr of child processes (this
//! test binary re-run with an env var selecting the scenario; each child
//! has its own watchdog).

use usurp::{task, Runtime};
use usurp_testsupport::run_child_env;

#[inline(never)]
fn guest_main_that_panics(what: &str) -> u64 {
    panic!("{what} boom");
}

fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A named task, then an unnamed one, panic; their ids go to stdout.
#[test]
fn tasks_child() {
    if std::env::var_os("USURP_CHILD_PANIC_TASKS").is_none() {
        return; // only runs as the child of the tests below
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung", 99);
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let h = task::Builder::new()
            .name("guest-1")
            .spawn(|| {
                println!("child: guest-1 id={}", task::id().unwrap());
                guest_main_that_panics("guest")
            })
            .unwrap();
        assert_eq!(payload_text(&*h.join().unwrap_err()), "guest boom");
        let h = usurp::spawn(|| {
            println!("child: unnamed id={}", task::id().unwrap());
            guest_main_that_panics("anonymous")
        });
        assert_eq!(payload_text(&*h.join().unwrap_err()), "anonymous boom");
    });
    println!("child: done");
}

/// `child: <what> id=N` from the child's stdout.
fn id_of(stdout: &str, what: &str) -> u64 {
    let key = format!("child: {what} id=");
    // (libtest may print `test tasks_child ... ` before it on the same line.)
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(key.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"));
    line.1.trim().parse().unwrap()
}

fn run(test: &str, var: &str, backtrace: Option<&str>) -> (String, String) {
    let (out, _) = run_child_env(test, var, &[("RUST_BACKTRACE", backtrace)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child failed ({:?}); stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("child: done"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

#[test]
fn a_task_panic_names_the_task_not_the_worker_thread() {
    let (stdout, stderr) = run("tasks_child", "USURP_CHILD_PANIC_TASKS", None);
    let named = id_of(&stdout, "guest-1");
    let unnamed = id_of(&stdout, "unnamed");
    let file = file!();
    assert!(
        stderr.contains(&format!("task 'guest-1' (id {named}) panicked at {file}:")),
        "named task not reported:\n{stderr}"
    );
    assert!(stderr.contains("\nguest boom\n"), "{stderr}");
    assert!(
        stderr.contains(&format!("task <unnamed> (id {unnamed}) panicked at {file}:")),
        "unnamed task not reported by id:\n{stderr}"
    );
    assert!(stderr.contains("\nanonymous boom\n"), "{stderr}");
    // The previous (std's) hook is not called as well: no thread line.
    assert!(!stderr.contains("thread 'usurp-worker"), "{stderr}");
    assert!(!stderr.contains("thread '"), "{stderr}");
    // RUST_BACKTRACE unset: std's note, once per process.
    assert_eq!(
        stderr
            .matches("note: run with `RUST_BACKTRACE=1` environment variable")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace:"), "{stderr}");
}

#[test]
fn a_task_panic_honours_rust_backtrace() {
    for style in ["1", "full"] {
        // The child finishing shows the walk of the task's stack ends.
        let (_, stderr) = run("tasks_child", "USURP_CHILD_PANIC_TASKS", Some(style));
        assert!(
            stderr.contains("task 'guest-1' (id "),
            "RUST_BACKTRACE={style}:\n{stderr}"
        );
        assert_eq!(
            stderr.matches("stack backtrace:").count(),
            2,
            "RUST_BACKTRACE={style}:\n{stderr}"
        );
        assert!(
            stderr.contains("guest_main_that_panics"),
            "RUST_BACKTRACE={style}:\n{stderr}"
        );
        assert!(!stderr.contains("thread '"), "RUST_BACKTRACE={style}:\n{stderr}");
        assert!(
            !stderr.contains("note: run with `RUST_BACKTRACE=1`"),
            "RUST_BACKTRACE={style}:\n{stderr}"
        );
        let omitted = stderr.matches("note: Some details are omitted").count();
        assert_eq!(
            omitted,
            if style == "full" { 0 } else { 2 },
            "RUST_BACKTRACE={style}:\n{stderr}"
        );
    }
    // `0` is off, as for std.
    let (_, stderr) = run("tasks_child", "USURP_CHILD_PANIC_TASKS", Some("0"));
    assert!(!stderr.contains("stack backtrace:"), "{stderr}");
    assert!(stderr.contains("note: run with `RUST_BACKTRACE=1`"), "{stderr}");
}

/// A plain thread panics while a runtime exists.
#[test]
fn plain_thread_child() {
    if std::env::var_os("USURP_CHILD_PANIC_PLAIN").is_none() {
        return;
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung", 99);
    let rt = Runtime::builder().workers(2).build().unwrap();
    assert_eq!(rt.block_on(|| usurp::spawn(|| 7).join().unwrap()), 7);
    let r = std::thread::Builder::new()
        .name("plain-thread".into())
        .spawn(|| guest_main_that_panics("plain"))
        .unwrap();
    assert_eq!(payload_text(&*r.join().unwrap_err()), "plain boom");
    drop(rt);
    println!("child: done");
}

#[test]
fn a_plain_thread_panic_still_names_the_thread() {
    let (_, stderr) = run("plain_thread_child", "USURP_CHILD_PANIC_PLAIN", None);
    assert!(stderr.contains("thread 'plain-thread'"), "{stderr}");
    assert!(stderr.contains(&format!("panicked at {}:", file!())), "{stderr}");
    assert!(stderr.contains("\nplain boom\n"), "{stderr}");
    assert!(!stderr.contains("task "), "{stderr}");
}

/// A user hook is set before the runtime is built (so ours chains to it),
/// then a plain thread and a task panic.
#[test]
fn user_hook_before_child() {
    if std::env::var_os("USURP_CHILD_PANIC_HOOK_BEFORE").is_none() {
        return;
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung", 99);
    std::panic::set_hook(Box::new(|info| {
        eprintln!("user hook saw: {}", payload_text(info.payload()))
    }));
    let rt = Runtime::builder().workers(2).build().unwrap();
    let r = std::thread::Builder::new()
        .name("plain-thread".into())
        .spawn(|| guest_main_that_panics("plain"))
        .unwrap();
    assert!(r.join().is_err());
    rt.block_on(|| {
        let h = task::Builder::new()
            .name("guest-1")
            .spawn(|| guest_main_that_panics("guest"))
            .unwrap();
        assert!(h.join().is_err());
    });
    println!("child: done");
}

#[test]
fn a_hook_set_before_the_runtime_still_sees_panics_outside_tasks() {
    let (_, stderr) = run("user_hook_before_child", "USURP_CHILD_PANIC_HOOK_BEFORE", None);
    // Chained: the user's hook, not std's, for the plain thread.
    assert!(stderr.contains("user hook saw: plain boom"), "{stderr}");
    assert!(!stderr.contains("thread 'plain-thread'"), "{stderr}");
    // A task panic is reported by the runtime's hook only (documented).
    assert!(stderr.contains("task 'guest-1' (id "), "{stderr}");
    assert!(!stderr.contains("user hook saw: guest boom"), "{stderr}");
}

/// A user hook set after the runtime is built replaces the runtime's (std's
/// semantics); one that takes it and calls it keeps the task names.
#[test]
fn user_hook_after_child() {
    if std::env::var_os("USURP_CHILD_PANIC_HOOK_AFTER").is_none() {
        return;
    }
    usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung", 99);
    let rt = Runtime::builder().workers(2).build().unwrap();
    let runtime_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("user hook saw: {}", payload_text(info.payload()));
        if payload_text(info.payload()) == "chained boom" {
            runtime_hook(info);
        }
    }));
    rt.block_on(|| {
        let h = task::Builder::new()
            .name("replaced")
            .spawn(|| guest_main_that_panics("replaced"))
            .unwrap();
        assert!(h.join().is_err());
        let h = task::Builder::new()
            .name("chained")
            .spawn(|| guest_main_that_panics("chained"))
            .unwrap();
        assert!(h.join().is_err());
    });
    println!("child: done");
}

#[test]
fn a_hook_set_after_the_runtime_replaces_or_chains_to_it() {
    let (_, stderr) = run("user_hook_after_child", "USURP_CHILD_PANIC_HOOK_AFTER", None);
    assert!(stderr.contains("user hook saw: replaced boom"), "{stderr}");
    assert!(!stderr.contains("task 'replaced'"), "{stderr}");
    assert!(stderr.contains("user hook saw: chained boom"), "{stderr}");
    assert!(stderr.contains("task 'chained' (id "), "{stderr}");
}
