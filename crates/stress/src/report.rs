//! The live progress line, the summary table and the JSON file.

use crate::kinds::{regcheck, Ctx, Kind, Outcome, Plan, KINDS};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use usurp::preempt::Refusal;
use usurp::Runtime;

/// The settings a run used.
pub struct RunConfig {
    pub seconds: f64,
    pub workers: usize,
    pub quantum: Duration,
    pub heap_limit: usize,
    pub seed: u64,
    pub tasks: usize,
    pub async_preemption: bool,
}

fn mib(b: usize) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The first lines printed: the settings and the task mix.
pub fn header(cfg: &RunConfig, plan: &Plan) -> String {
    let mix: Vec<String> = KINDS
        .iter()
        .zip(plan.counts.iter())
        .filter(|(_, &n)| n > 0)
        .map(|(k, n)| {
            if *k == Kind::Registers {
                format!("{n} {} ({})", k.name(), regcheck::checked_registers())
            } else {
                format!("{n} {}", k.name())
            }
        })
        .collect();
    format!(
        "usurp-stress: {} workers, {} tasks, quantum {} µs, {} s, heap limit {:.0} MiB, seed {:#x}, async preemption {}, heap verifier on\n  mix: {}",
        cfg.workers,
        cfg.tasks,
        cfg.quantum.as_micros(),
        cfg.seconds,
        mib(cfg.heap_limit),
        cfg.seed,
        if cfg.async_preemption { "on" } else { "OFF" },
        mix.join(", ")
    )
}

/// Runs on its own thread until `ctx.done`: refreshes `ctx.gc_cycles` every
/// 10 ms and prints the progress line (rewritten in place on a terminal,
/// once a second otherwise).
pub fn progress_loop(rt: &Runtime, ctx: &Ctx, start: Instant, duration: Duration) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(250) } else { Duration::from_secs(1) };
    let mut last_print = Instant::now();
    let mut last_accepted = rt.stats().preempt.accepted;
    let mut printed = false;
    while !ctx.done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
        let g = rt.heap().stats();
        ctx.gc_cycles.store(g.cycles, Ordering::Relaxed);
        let dt = last_print.elapsed();
        if dt < every {
            continue;
        }
        let accepted = rt.stats().preempt.accepted;
        let rate = (accepted - last_accepted) as f64 / dt.as_secs_f64();
        last_accepted = accepted;
        last_print = Instant::now();
        let el = start.elapsed().min(duration + Duration::from_secs(3600));
        let line = format!(
            "[{:6.1}/{:.0} s] tasks {:4}  preemptions/s {:8.0}  GC cycles {:6}  heap {:7.1} MiB",
            el.as_secs_f64(),
            duration.as_secs_f64(),
            ctx.c.live_tasks.load(Ordering::Relaxed),
            rate,
            g.cycles,
            mib(g.heap_alloc),
        );
        let mut e = std::io::stderr().lock();
        if tty {
            let _ = write!(e, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
        printed = true;
    }
    if tty && printed {
        let _ = writeln!(std::io::stderr());
    }
}

/// Nearest-rank percentile of `v` (sorted in place); 0 when empty.
fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// p50 / p99 / max in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dist {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Dist {
    fn of_ns(mut v: Vec<u64>) -> Dist {
        let us = |ns: u64| ns as f64 / 1e3;
        Dist {
            p50: us(pct(&mut v, 50.0)),
            p99: us(pct(&mut v, 99.0)),
            max: us(v.iter().copied().max().unwrap_or(0)),
            n: v.len(),
        }
    }
    fn of(v: &[Duration]) -> Dist {
        Dist::of_ns(v.iter().map(|d| d.as_nanos() as u64).collect())
    }
    fn json(&self) -> String {
        format!("{{\"p50\": {:.1}, \"p99\": {:.1}, \"max\": {:.1}}}", self.p50, self.p99, self.max)
    }
}

/// A refusal reason as a snake_case name ("NotPreemptibleCode" →
/// "not_preemptible_code").
pub fn reason_name(r: Refusal) -> String {
    let mut s = String::new();
    for (i, ch) in format!("{r:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        } else {
            s.push(ch);
        }
    }
    s
}

/// Whether a run of `seconds` was long enough for each of `tasks` tasks on
/// `workers` workers to get a turn even if every task ahead of it held its
/// worker for a whole quantum (`quantum_us`): only then does a starved
/// kind say something about the scheduler's fairness.
fn starvation_judged(seconds: f64, tasks: usize, workers: usize, quantum_us: u64) -> bool {
    let per_worker = tasks.div_ceil(workers.max(1)) as f64;
    seconds * 1e6 >= per_worker * quantum_us as f64
}

/// What a starved kind means for such a run (see [`starvation_judged`]).
fn starvation_verdict(seconds: f64, tasks: usize, workers: usize, quantum_us: u64) -> String {
    if starvation_judged(seconds, tasks, workers, quantum_us) {
        "a scheduler fairness problem".to_string()
    } else {
        let per_worker = tasks.div_ceil(workers.max(1));
        format!(
            "not a fairness verdict: the run ({seconds:.1} s) was shorter than the {per_worker} quanta of {quantum_us} µs a task may wait for its first turn"
        )
    }
}

/// Everything the summary table and the JSON file report.
pub struct Summary {
    pub seconds: f64,
    pub workers: usize,
    pub quantum_us: u64,
    /// Tasks of the run (`--tasks`): with the quantum, how long a task may
    /// wait for its first turn (see [`starvation_judged`]).
    pub tasks: usize,
    pub accepted: u64,
    pub refused: Vec<(String, u64)>,
    /// Cooperative yields at `checkpoint()`, and how many of them a refused
    /// asynchronous preemption caused.
    pub checkpoint_yields: u64,
    pub yields_after_refusal: u64,
    /// Refused ticks that retried an earlier refusal of the same task.
    pub refusal_retries: u64,
    /// Quantum-timer signals handled (accepted, refused, or only starting
    /// a quantum), and targeted requests sent (stops, due timers).
    pub ticks: u64,
    pub requests_sent: u64,
    pub gc_cycles: u64,
    /// Fraction of the run's wall time with the world stopped by the GC:
    /// its cycles' pauses plus the verifier's own stops.
    pub stopped_fraction: f64,
    /// The same, the cycles' pauses only.
    pub pause_fraction: f64,
    pub pause: Dist,
    pub ttsp: Dist,
    pub wake: Dist,
    pub checksum_failures: u64,
    pub gc_checksum: u64,
    pub barrier: u64,
    pub channel: u64,
    pub mutex: u64,
    pub register_mismatches: u64,
    pub verifier_failures: u64,
    pub bad_pointers: u64,
    pub panics: Vec<String>,
    pub work: Vec<(&'static str, u64)>,
    pub heap_live: usize,
    pub heap_committed: usize,
    pub async_preemption: bool,
    pub reg_iterations: u64,
    /// Kinds whose tasks made no progress during the whole run.
    pub starved: Vec<&'static str>,
}

impl Summary {
    /// What a starved kind means for this run (see [`starvation_judged`]).
    pub fn starvation_verdict(&self) -> String {
        starvation_verdict(self.seconds, self.tasks, self.workers, self.quantum_us)
    }

    pub fn collect(
        rt: &Runtime,
        ctx: &Ctx,
        cfg: &RunConfig,
        plan: &Plan,
        out: &Outcome,
        elapsed: Duration,
    ) -> Summary {
        let st = rt.stats();
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let c = &ctx.c;
        let (gc_checksum, barrier, channel, mutex) =
            (get(&c.gc_checksum_failures), get(&c.barrier_failures), get(&c.channel_failures), get(&c.mutex_failures));
        Summary {
            seconds: elapsed.as_secs_f64(),
            workers: cfg.workers,
            quantum_us: cfg.quantum.as_micros() as u64,
            tasks: cfg.tasks,
            accepted: st.preempt.accepted,
            refused: Refusal::ALL.iter().map(|&r| (reason_name(r), st.preempt.refused(r))).collect(),
            checkpoint_yields: st.preempt.checkpoint_yields,
            yields_after_refusal: st.preempt.yields_after_refusal,
            refusal_retries: st.preempt.refusal_retries,
            ticks: st.preempt.ticks,
            requests_sent: st.preempt.requests_sent,
            gc_cycles: st.gc.cycles,
            stopped_fraction: (st.gc.total_pause + st.gc.total_verify_pause).as_secs_f64()
                / elapsed.as_secs_f64().max(1e-9),
            pause_fraction: st.gc.total_pause.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            pause: Dist::of(&st.gc.pauses),
            ttsp: Dist::of(&st.gc.ttsp),
            wake: Dist::of_ns(out.wake_latency_ns.clone()),
            checksum_failures: gc_checksum + barrier + channel + mutex,
            gc_checksum,
            barrier,
            channel,
            mutex,
            register_mismatches: get(&c.reg_mismatches),
            verifier_failures: st.gc.verify_failures,
            bad_pointers: st.gc.bad_pointers,
            panics: out.panics.clone(),
            work: vec![
                ("register-loop iterations", get(&c.reg_iterations)),
                ("GC structures built", get(&c.structures)),
                ("structure verifications", get(&c.verifications)),
                ("explicit collections", get(&c.explicit_collections)),
                ("barrier stores", get(&c.barrier_stores)),
                ("ping-pong round trips", get(&c.pingpongs)),
                ("mutex sections", get(&c.mutex_sections)),
                ("sleeps", get(&c.sleeps)),
                ("blocking calls", get(&c.blocking_calls)),
            ],
            heap_live: st.gc.heap_live,
            heap_committed: st.gc.heap_committed,
            async_preemption: cfg.async_preemption,
            reg_iterations: get(&c.reg_iterations),
            starved: ctx.starved(plan).iter().map(|k| k.name()).collect(),
        }
    }

    /// The failure counters that are non-zero, described.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut add = |n: u64, what: &str| {
            if n > 0 {
                f.push(format!("{what}: {n}"));
            }
        };
        add(self.checksum_failures, "checksum failures");
        add(self.register_mismatches, "register mismatches");
        add(self.verifier_failures, "verifier failures");
        add(self.bad_pointers, "bad pointer slots");
        add(self.panics.len() as u64, "task panics");
        f
    }

    /// The summary table (stdout).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<30} {v}\n"));
        let d = |x: &Dist| format!("{:.1} / {:.1} / {:.1} µs", x.p50, x.p99, x.max);
        let rate = |n: u64| n as f64 / self.seconds.max(1e-9);
        let refused: u64 = self.refused.iter().map(|r| r.1).sum();
        line(
            "preemptions accepted",
            format!("{:>12}  ({:.0}/s{})", self.accepted, rate(self.accepted), if self.async_preemption { "" } else { "; async preemption OFF" }),
        );
        line("preemptions refused", format!("{refused:>12}  (by reason:)"));
        let mut body = String::new();
        for (name, n) in &self.refused {
            body.push_str(&format!("      {name:<28} {n:>12}\n"));
        }
        s.push_str(&body);
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<30} {v}\n"));
        line(
            "checkpoint yields",
            format!("{:>12}  ({} after a refused preemption)", self.checkpoint_yields, self.yields_after_refusal),
        );
        line("refused-tick retries", format!("{:>12}  (same task refused again; retried with backoff)", self.refusal_retries));
        line(
            "signals: ticks / requests",
            format!("{:>12}  ({:.0}/s; {} requests sent, {:.0}/s)", self.ticks, rate(self.ticks), self.requests_sent, rate(self.requests_sent)),
        );
        line("GC cycles", format!("{:>12}", self.gc_cycles));
        // Each stop of a cycle (start, termination) is a pause figure.
        let recent = if self.pause.n >= usurp::gc::stats::HISTORY { format!(" (last {} stops)", self.pause.n) } else { String::new() };
        line("GC pause p50 / p99 / max", format!("{}{recent}", d(&self.pause)));
        line(
            "world stopped (fraction)",
            format!(
                "{:>11.1}%  of wall time (GC pauses {:.1}%, verifier stops {:.1}%)",
                100.0 * self.stopped_fraction,
                100.0 * self.pause_fraction,
                100.0 * (self.stopped_fraction - self.pause_fraction)
            ),
        );
        line("time-to-safepoint p99", format!("{:.1} µs  (p50 {:.1}, max {:.1})", self.ttsp.p99, self.ttsp.p50, self.ttsp.max));
        line(
            "wake latency p99",
            format!("{:.1} µs  (p50 {:.1}, max {:.1}; {} sleeps of 1 ms)", self.wake.p99, self.wake.p50, self.wake.max, self.wake.n),
        );
        line("heap live / committed", format!("{:.1} / {:.1} MiB", mib(self.heap_live), mib(self.heap_committed)));
        for (k, v) in &self.work {
            line(k, format!("{v:>12}  ({:.0}/s)", rate(*v)));
        }
        line(
            "checksum failures",
            format!(
                "{:>12}  (GC structures {}, barrier fields {}, channel order {}, mutex invariant {})",
                self.checksum_failures, self.gc_checksum, self.barrier, self.channel, self.mutex
            ),
        );
        line(
            "register mismatches",
            format!("{:>12}  ({} checks of {})", self.register_mismatches, self.reg_iterations, regcheck::checked_registers()),
        );
        line(
            "verifier failures",
            format!("{:>12}  (heap verified after every collection, in its own stop; bad pointer slots {})", self.verifier_failures, self.bad_pointers),
        );
        line(
            "starved kinds",
            if self.starved.is_empty() {
                format!("{:>12}", "none")
            } else {
                format!("{:>12}  (no progress at all: {}; {})", self.starved.len(), self.starved.join(", "), self.starvation_verdict())
            },
        );
        line("task panics", format!("{:>12}", self.panics.len()));
        for p in &self.panics {
            s.push_str(&format!("      {p}\n"));
        }
        format!("summary ({:.2} s, {} workers, quantum {} µs):\n{}", self.seconds, self.workers, self.quantum_us, s.trim_end())
    }

    /// The JSON document for `--json` (exactly the documented keys).
    pub fn json(&self) -> String {
        let refused: Vec<String> = self.refused.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        format!(
            "{{\n  \"preemptions_accepted\": {},\n  \"preemptions_refused\": {{{}}},\n  \"gc_cycles\": {},\n  \"pause_us\": {},\n  \"ttsp_us\": {},\n  \"wake_latency_us\": {},\n  \"checksum_failures\": {},\n  \"register_mismatches\": {},\n  \"verifier_failures\": {},\n  \"seconds\": {:.3},\n  \"workers\": {},\n  \"quantum_us\": {},\n  \"stopped_fraction\": {:.6}\n}}\n",
            self.accepted,
            refused.join(", "),
            self.gc_cycles,
            self.pause.json(),
            self.ttsp.json(),
            self.wake.json(),
            self.checksum_failures,
            self.register_mismatches,
            self.verifier_failures,
            self.seconds,
            self.workers,
            self.quantum_us,
            self.stopped_fraction,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names() {
        assert_eq!(reason_name(Refusal::NotPreemptibleCode), "not_preemptible_code");
        assert_eq!(reason_name(Refusal::NotRunning), "not_running");
        assert_eq!(reason_name(Refusal::StackRoom), "stack_room");
    }

    #[test]
    fn starvation_is_judged_only_in_runs_longer_than_the_quanta() {
        // 64 tasks on 2 workers: 32 quanta a worker before the last task's turn.
        assert!(!starvation_judged(1.0, 64, 2, 10_000_000));
        assert!(!starvation_judged(0.3, 64, 2, 10_000));
        assert!(starvation_judged(0.33, 64, 2, 10_000));
        assert!(starvation_judged(10.0, 64, 2, 1_000));
        let v = starvation_verdict(1.0, 64, 2, 10_000_000);
        assert!(v.starts_with("not a fairness verdict") && v.contains("32 quanta of 10000000 µs"), "{v}");
        assert_eq!(starvation_verdict(10.0, 64, 2, 1_000), "a scheduler fairness problem");
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(pct(&mut v, 50.0), 50);
        assert_eq!(pct(&mut v, 99.0), 99);
        assert_eq!(pct(&mut [], 99.0), 0);
        let d = Dist::of_ns((1..=1000).map(|x| x * 1000).collect());
        assert_eq!((d.p50, d.p99, d.max, d.n), (500.0, 990.0, 1000.0, 1000));
    }
}
