//! The scheduler's floors (issue 13 item 4; crates/sched/src/lib.rs,
//! "Layers", and DESIGN.md): a module of `crates/sched/src` imports only
//! from its own floor or the floors below, and the adapters (`glue/`) are
//! imported by nobody below them. This test reads the sources, finds every
//! `crate::<module>` path outside comments and `#[cfg(test)]` code, and
//! compares the upward ones with the list of sanctioned exceptions below,
//! both ways: a new upward import fails, and so does an exception that no
//! longer exists (remove it from the list). Every source file must have a
//! floor (a new module must be placed).
//!
//! Negative control: the same checker run on a synthetic tree in which a
//! primitive (`sys.rs`) imports the worker and a worker file imports an
//! adapter must report exactly those two edges; without them it must report
//! none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The floor of a top-level module or root item of the crate (the first
/// path segment after `crate::`, or a file's first path component).
fn floor(name: &str) -> Option<u8> {
    Some(match name {
        // 0: primitives (and the ISA crate, re-exported as `crate::arch`).
        "sys" | "spin" | "stack" | "error" | "fpcheck" | "arch" => 0,
        // 1: tasks.
        "tasks" => 1,
        // 2: queues.
        "queue" => 2,
        // 3: the hub, the stop state, timers, sysmon, the worker, the GC's per-task stack scan.
        "shared" | "stw" | "timer" | "sysmon" | "worker" | "stack_scan" => 3,
        // 4: adapters to usurp-preempt and usurp-gc, dumps.
        "glue" => 4,
        // 5: the public API (modules, and items defined or re-exported at
        // the crate root).
        "runtime" | "join" | "sync" | "hooks" | "panic_hook" | "lib" | "tests" => 5,
        _ => return None,
    })
}

/// Root items (`crate::Error`, `crate::MIN_QUANTUM`, ...) resolve to the
/// floor of the module defining them; anything else at the root is API.
fn floor_of_path(seg: &str) -> u8 {
    match seg {
        "Error" | "MIN_QUANTUM" | "MAX_QUANTUM" | "DEFAULT_QUANTUM" | "MIN_STACK_SIZE" | "MAX_STACK_SIZE"
        | "MAX_WORKERS" | "MAX_BLOCKING_THREADS" | "TIMER_SLACK_NS" => 0,
        s => floor(s).unwrap_or(5),
    }
}

/// Upward edges `(file, module)` found in `files` (relative path, text);
/// `Err` names the files without a floor.
fn upward_edges(files: &[(String, String)]) -> Result<BTreeSet<(String, String)>, Vec<String>> {
    let mut unplaced = Vec::new();
    let mut up = BTreeSet::new();
    for (rel, text) in files {
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let Some(f) = floor(top) else {
            unplaced.push(rel.clone());
            continue;
        };
        for line in text.lines() {
            let l = line.trim_start();
            if l.starts_with("#[cfg(test)]") {
                break; // unit tests sit at the end of their file
            }
            if l.starts_with("//") {
                continue;
            }
            let mut rest = l;
            while let Some(i) = rest.find("crate::") {
                let macro_path = rest[..i].ends_with('$');
                let after = &rest[i + "crate::".len()..];
                let seg: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !macro_path && !seg.is_empty() && floor_of_path(&seg) > f {
                    up.insert((rel.clone(), seg));
                }
                rest = after;
            }
        }
    }
    if unplaced.is_empty() {
        Ok(up)
    } else {
        Err(unplaced)
    }
}

fn read_tree(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).expect("read sched sources") {
        let p: PathBuf = e.unwrap().path();
        if p.is_dir() {
            read_tree(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// The sanctioned exceptions (see the crate docs, "Layers"): the task
/// floor calls the scheduler's entry points (`current_task`, `Current`,
/// `park_current`, `unpark`), and the task struct names the hub's type in
/// its back-pointer and allocates from the hub's pool and registry.
const ALLOWED: &[(&str, &str)] = &[("tasks/local.rs", "worker"), ("tasks/tcb.rs", "shared"), ("tasks/wait.rs", "worker")];

#[test]
fn sched_imports_only_go_down_the_floors() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/sched/src");
    let mut files = Vec::new();
    read_tree(&base, &base, &mut files);
    assert!(files.len() > 30, "found only {} source files under {}", files.len(), base.display());
    let up = upward_edges(&files).unwrap_or_else(|u| panic!("source files without a floor (place them): {u:?}"));
    let allowed: BTreeSet<(String, String)> = ALLOWED.iter().map(|&(f, m)| (f.to_owned(), m.to_owned())).collect();
    let new: Vec<_> = up.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&up).collect();
    assert!(new.is_empty(), "imports that go up a floor (move the code down, or pass a hook): {new:?}");
    assert!(gone.is_empty(), "sanctioned exceptions that no longer exist (remove them from ALLOWED): {gone:?}");
}

#[test]
fn negative_control_the_checker_reports_upward_imports() {
    let clean = vec![
        ("sys.rs".to_owned(), "use std::ptr;\n// crate::worker in a comment\n".to_owned()),
        ("worker/switch.rs".to_owned(), "use crate::queue::TaskList;\nuse crate::sys::now_ns;\n".to_owned()),
        ("tasks/local.rs".to_owned(), "macro_rules! m { () => { $crate::LocalKey::new() } }\n".to_owned()),
    ];
    assert_eq!(upward_edges(&clean).unwrap(), BTreeSet::new(), "a clean tree must pass");
    let mut bad = clean.clone();
    bad[0].1.push_str("use crate::worker::machine;\n");
    bad[1].1.push_str("let s = crate::glue::preempt_glue::thread_slot();\n");
    let up = upward_edges(&bad).unwrap();
    let want: BTreeSet<(String, String)> =
        [("sys.rs", "worker"), ("worker/switch.rs", "glue")].iter().map(|&(f, m)| (f.to_owned(), m.to_owned())).collect();
    assert_eq!(up, want, "the checker must report both upward imports");
    let mut unplaced = clean;
    unplaced.push(("newmod.rs".to_owned(), String::new()));
    assert_eq!(upward_edges(&unplaced).unwrap_err(), vec!["newmod.rs".to_owned()]);
}
