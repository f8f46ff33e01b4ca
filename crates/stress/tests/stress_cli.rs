//! The `usurp-stress` binary end to end: a short run passes and writes the
//! documented JSON; invalid flags and values fail with a message.
//!
//! Under qemu-user (aarch64 cross-testing) the binary cannot be executed
//! directly without binfmt_misc, so it is started through the emulator,
//! as `usurp_testsupport::run_child` does for child processes.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary to completion, failing the test if it is still running
/// after `LIMIT` (a hang detector, not a speed check: the runs below take a
/// few seconds).
const LIMIT: Duration = Duration::from_secs(300);

fn run_stress(args: &[&str]) -> Output {
    run_stress_within(args, LIMIT)
}

/// [`run_stress`] with another hang limit.
fn run_stress_within(args: &[&str], limit: Duration) -> Output {
    let exe = env!("CARGO_BIN_EXE_usurp-stress");
    let direct = run_with_limit(Command::new(exe).args(args), limit);
    // Under qemu-user without binfmt_misc the exec fails: ENOEXEC, or (when
    // spawn is emulated with fork + exec) a silent exit status 127.
    let exec_failed = match &direct {
        Err(e) => e.raw_os_error() == Some(libc::ENOEXEC),
        Ok(o) => o.status.code() == Some(127) && o.stdout.is_empty() && o.stderr.is_empty(),
    };
    if !exec_failed {
        return direct.unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    }
    let qemu = format!("qemu-{}-static", std::env::consts::ARCH);
    run_with_limit(
        Command::new(&qemu).arg("-L").arg(format!("/usr/{}-linux-gnu", std::env::consts::ARCH)).arg(exe).args(args),
        limit,
    )
    .unwrap_or_else(|e| panic!("cannot start {exe} directly or through {qemu}: {e}"))
}

fn run_with_limit(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!("usurp-stress still running after {limit:?} (hang?); stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

/// True when this test runs under qemu-user (then signals are emulated and
/// slow; the stress binary's own numbers are smaller).
fn emulated() -> bool {
    // qemu-user shows the host's /proc/cpuinfo (an x86 one here), which
    // has no "CPU implementer" lines.
    cfg!(target_arch = "aarch64")
        && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| !c.contains("CPU implementer"))
}

// ---- a minimal JSON reader (no dependency) ------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(v));
                }
                loop {
                    self.ws();
                    let k = match self.value()? {
                        Json::Str(k) => k,
                        o => return Err(format!("object key {o:?} is not a string")),
                    };
                    self.eat(b':')?;
                    v.push((k, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(v));
                        }
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != b'"' {
                    if self.s[self.i] == b'\\' {
                        return Err("escapes are not expected in this file".into());
                    }
                    self.i += 1;
                }
                let st = String::from_utf8(self.s[start..self.i].to_vec()).map_err(|e| e.to_string())?;
                self.eat(b'"')?;
                Ok(Json::Str(st))
            }
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = self.i;
                while self.i < self.s.len() && matches!(self.s[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                t.parse().map(Json::Num).map_err(|_| format!("bad number {t:?}"))
            }
            _ => Err(format!("unexpected input at byte {}", self.i)),
        }
    }
}

fn parse_json(s: &str) -> Result<Json, String> {
    let mut r = Reader { s: s.as_bytes(), i: 0 };
    let v = r.value()?;
    r.ws();
    if r.i != s.len() {
        return Err(format!("trailing data at byte {}", r.i));
    }
    Ok(v)
}

impl Json {
    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(v) => v.iter().find(|(kk, _)| kk == k).map(|(_, v)| v),
            _ => None,
        }
    }
    fn num(&self, k: &str) -> f64 {
        match self.get(k) {
            Some(Json::Num(n)) => *n,
            o => panic!("key {k:?}: expected a number, found {o:?}"),
        }
    }
    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(v) => v.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        }
    }
}

#[test]
fn json_reader_reads_what_it_should() {
    let j = parse_json(r#"{"a": 1, "b": {"c": [1, 2.5e3, -3]}, "d": "x", "e": true, "f": null}"#).unwrap();
    assert_eq!(j.num("a"), 1.0);
    assert_eq!(j.get("b").unwrap().get("c"), Some(&Json::Arr(vec![Json::Num(1.0), Json::Num(2500.0), Json::Num(-3.0)])));
    assert_eq!(j.get("d"), Some(&Json::Str("x".into())));
    assert_eq!(j.keys(), ["a", "b", "d", "e", "f"]);
    assert!(parse_json("{\"a\": }").is_err());
    assert!(parse_json("{\"a\": 1} x").is_err());
}

// ---- the runs -------------------------------------------------------------------

const KEYS: [&str; 13] = [
    "preemptions_accepted",
    "preemptions_refused",
    "gc_cycles",
    "pause_us",
    "ttsp_us",
    "wake_latency_us",
    "checksum_failures",
    "register_mismatches",
    "verifier_failures",
    "seconds",
    "workers",
    "quantum_us",
    "stopped_fraction",
];

fn json_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("usurp-stress-{tag}-{}.json", std::process::id()))
}

#[test]
fn a_short_run_passes_and_writes_the_json_summary() {
    let path = json_path("run");
    let out = run_stress(&[
        "--seconds",
        "2",
        "--workers",
        "2",
        "--tasks",
        "20",
        "--quantum",
        "1ms",
        "--seed",
        "12345",
        "--json",
        path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("result: OK"), "{stdout}");
    assert!(stdout.contains("seed 0x3039"), "the seed is printed: {stdout}");
    for row in ["preemptions accepted", "GC pause p50 / p99 / max", "wake latency p99", "register mismatches"] {
        assert!(stdout.contains(row), "summary lacks {row:?}:\n{stdout}");
    }

    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    let j = parse_json(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{text}"));
    let mut keys = j.keys();
    keys.sort();
    let mut want = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want, "{text}");

    // Every count is a non-negative number; the distributions are objects.
    for k in ["preemptions_accepted", "gc_cycles", "checksum_failures", "register_mismatches", "verifier_failures"] {
        let v = j.num(k);
        assert!(v >= 0.0 && v.fract() == 0.0, "{k} = {v}");
    }
    let f = j.num("stopped_fraction");
    assert!((0.0..=1.0).contains(&f), "stopped_fraction = {f}");
    assert!(f > 0.0 || j.num("gc_cycles") == 0.0, "stopped_fraction = {f} although the GC ran");
    assert!(stdout.contains("world stopped (fraction)"), "{stdout}");
    for k in ["pause_us", "ttsp_us", "wake_latency_us"] {
        let d = j.get(k).unwrap();
        let mut dk = d.keys();
        dk.sort();
        assert_eq!(dk, ["max", "p50", "p99"], "{k}: {text}");
        let (p50, p99, max) = (d.num("p50"), d.num("p99"), d.num("max"));
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{k}: {p50} {p99} {max}");
    }
    let refused = j.get("preemptions_refused").unwrap();
    assert!(refused.keys().contains(&"not_preemptible_code"), "{text}");
    for k in refused.keys() {
        assert!(refused.num(k) >= 0.0, "{k}");
    }

    assert_eq!(j.num("checksum_failures"), 0.0, "{text}");
    assert_eq!(j.num("register_mismatches"), 0.0, "{text}");
    assert_eq!(j.num("verifier_failures"), 0.0, "{text}");
    assert_eq!(j.num("workers"), 2.0);
    assert_eq!(j.num("quantum_us"), 1000.0);
    assert!(j.num("seconds") >= 2.0, "{text}");
    // Whether every kind made progress is checked by
    // `every_kind_makes_progress`; this run only needs the checks to pass.
    // Natively, the register loops (preemptible assembly running for
    // several quanta per call) must have been preempted asynchronously.
    // Under qemu-user signals are emulated and much slower; a run there
    // shows preemptions too, but a 2 s run is not required to.
    if !emulated() {
        assert!(j.num("preemptions_accepted") > 0.0, "no asynchronous preemption accepted:\n{text}\n{stdout}");
    }
}

#[test]
fn invalid_flags_fail_with_a_message() {
    let out = run_stress(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");

    let out = run_stress(&["--seconds", "soon"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seconds"));

    let out = run_stress(&["--quantum", "5 parsecs"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit"));

    let out = run_stress(&["--kinds", "regs,nonsense"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}

#[test]
fn invalid_values_give_the_runtimes_error_and_exit_2() {
    // Below the 100 µs minimum: the runtime's builder refuses it.
    let out = run_stress(&["--quantum", "50us", "--seconds", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("quantum"), "{err}");
    assert!(out.stdout.is_empty(), "nothing runs");

    let out = run_stress(&["--workers", "0", "--seconds", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("worker"), "{err}");
}

#[test]
fn help_lists_the_flags() {
    let out = run_stress(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for f in ["--workers", "--tasks", "--quantum", "--seconds", "--heap-limit", "--seed", "--json"] {
        assert!(help.contains(f), "help lacks {f}:\n{help}");
    }
}

#[test]
fn register_loops_alone_at_the_smallest_quantum_stay_exact() {
    let path = json_path("regs");
    let out = run_stress(&[
        "--seconds",
        "2",
        "--workers",
        "2",
        "--tasks",
        "4",
        "--kinds",
        "regs",
        "--quantum",
        "100us",
        "--json",
        path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("mix: 4 register loops"), "{stdout}");
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let j = parse_json(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{text}"));
    assert_eq!(j.num("quantum_us"), 100.0);
    assert_eq!(j.num("register_mismatches"), 0.0, "{text}");
    // Four tasks in preemptible assembly on two workers: every quantum ends
    // in an asynchronous preemption (natively; QEMU's signals are slower).
    if !emulated() {
        assert!(j.num("preemptions_accepted") > 0.0, "{text}\n{stdout}");
    }
    let iterations: u64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("register-loop iterations"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no iteration count in:\n{stdout}"));
    assert!(iterations > 0, "{stdout}");
}

/// Every kind of task makes progress during a short run: no starvation.
/// At 99e4f67 the scheduler starved whole kinds in about half of such runs
/// (tasks looping over `blocking` run in place restarted their quantum on
/// every call and kept their worker); fixed in 51192e1. The binary reports
/// starvation as "starved kinds".
#[test]
fn every_kind_makes_progress() {
    for seed in ["1", "2", "3"] {
        let out = run_stress(&["--seconds", "2", "--workers", "2", "--tasks", "20", "--seed", seed]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(!stdout.contains("warning: starved"), "seed {seed}:\n{stdout}");
        let line = stdout.lines().find(|l| l.trim_start().starts_with("starved kinds")).unwrap_or("");
        assert_eq!(line.split_whitespace().last(), Some("none"), "seed {seed}:\n{stdout}");
    }
}

/// `--dump-on-hang`: with a hang injected (a task looping outside
/// preemptible code without checkpoints while another collects: the
/// collection's stop never completes and no task makes progress), the
/// binary prints a task dump — here the fallback without a stop, naming the
/// task that holds the stop up — and fails instead of running on.
#[test]
fn dump_on_hang_prints_a_dump_and_fails() {
    let out = run_stress(&[
        "--seconds",
        "120",
        "--workers",
        "2",
        "--tasks",
        "8",
        "--kinds",
        "sleeper,pingpong",
        "--dump-on-hang",
        "1",
        "--inject-hang",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The limit is scaled by 10 under qemu-user (EMULATION_SLOWDOWN).
    let secs = if emulated() { "10.0" } else { "1.0" };
    assert!(stdout.contains(&format!("result: FAILED (hang: no progress for {secs} s)")), "{stdout}");
    assert!(stderr.contains(&format!("no progress for {secs} s: task dump follows")), "{stderr}");
    assert!(stderr.contains("could not be stopped"), "{stderr}");
    assert!(stderr.contains("\"injected-hog\": has not reached a safe point"), "{stderr}");
    assert!(stderr.contains("a stop is in force, requested by a thread that is not a task"), "{stderr}");
}

/// A panic during the run (here the coordinator's, as when the kernel
/// refuses a task's stack) ends the process with status 1 and the panic's
/// message. It used to leave the progress thread running for ever: the
/// panic left `thread::scope`'s closure without setting `done`, and the
/// scope waited for that thread.
#[test]
fn a_panic_during_the_run_ends_it_with_status_1() {
    let args = ["--seconds", "5", "--workers", "2", "--tasks", "40", "--inject-spawn-failure"];
    // The run ends at the 10th spawn; 60 s is a hang detector (qemu-user
    // included), not a speed check.
    let out = run_stress_within(&args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("usurp-stress: the run ended with a panic: usurp-stress: cannot spawn task"), "{stderr}");
    assert!(stderr.contains("injected failure"), "{stderr}");
    assert!(stdout.contains("result: FAILED (panic: usurp-stress: cannot spawn task"), "{stdout}");
    assert!(!stdout.contains("result: OK"), "{stdout}");
}

/// A run shorter than the quanta a task may wait for its first turn
/// (`--quantum 10s --seconds 1`: 32 tasks a worker, each may hold it for a
/// quantum) starves kinds legitimately: the summary says so instead of
/// calling it a scheduler fairness problem (found by the session-12
/// red-team pass: it said "a scheduler fairness problem" and `result: OK`).
#[test]
fn starvation_in_a_run_shorter_than_the_quanta_is_not_a_fairness_verdict() {
    let out = run_stress(&["--seconds", "1", "--quantum", "10s", "--workers", "2", "--tasks", "64", "--seed", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Whether a kind starves in that second depends on the run (stops of
    // the GC preempt tasks whatever the quantum: in CI runs, natively and
    // under qemu-user, sometimes none did), so the verdict is checked when
    // one did; the judgement itself is unit-tested in `report.rs`.
    let starved = stdout.contains("warning: starved");
    assert!(!starved || stdout.contains("not a fairness verdict"), "{stdout}");
    assert!(!stdout.contains("a scheduler fairness problem"), "{stdout}");
}
