//! The stop trace (`USURP_DEBUG=stoptrace=1`, issue 9 item 1): one line
//! per stop on stderr, saying where its time-to-safepoint went.
//!
//! Off by default: the stopper then only tests an `Option` per loop
//! iteration. On, the stopper (not a signal handler: it may allocate)
//! records, in microseconds from the moment it set the stop flag:
//! * what each other worker was doing then (`idle`, `safe`, `parked`,
//!   `sched` = in its scheduler loop with no task, `task` = running one);
//! * each request it sent (`>t`), and each one the worker's handler
//!   served (`ack@t ok` = accepted: the task was preempted, or `ack@t
//!   <Refusal>`: refused, the checkpoint flag set), from the handler's own
//!   stamp (`WorkerSlot::last_request`);
//! * when the worker parked (`parked@t`, its own stamp in `park_worker`)
//!   and when the stopper first saw it stopped (`seen@t`);
//! * the stopper's waits: how many, how many ran out their timeout, and
//!   the largest oversleep past a timeout (the OS's lateness in waking the
//!   stopper), and how many ended early (a worker's notification);
//! * per worker, `rq X`: how long its thread waited for a CPU (ready, not
//!   running) from just before the stop flag was set to the end of the
//!   stop: the growth of `run_delay` in `/proc/self/task/<tid>/schedstat`,
//!   read by the stopper before it sets the flag and after the stop
//!   completed (the kernel adds a wait when the thread gets a CPU back, so
//!   a wait that began just before the stop counts whole; a worker that
//!   parked got the CPU back before it did, so its wait is in). A worker
//!   whose `rq` is most of its `parked@` time was held up by the OS, not
//!   by the runtime; and `flt N`, the minor page faults its thread took
//!   meanwhile (`minflt` of `/proc/self/task/<tid>/stat`: first touches of
//!   fresh heap memory, handled in the kernel, where no signal is
//!   delivered and no poll runs);
//! * `stopper rq X` at the end: the stopper's own wait for a CPU over the
//!   stop (same reading). A stopper that slept and was woken late sees
//!   the parks late: a `seen@` long after the last `parked@` with a large
//!   stopper `rq` was the OS's (binary-trees 21: a 2 ms stop whose
//!   workers had both parked by 425 µs).
//!
//! Example: `usurp stoptrace: stop 12 ttsp 41.3 us; stopper waits 2 (timed
//! out 1, late max 3.1 us; notified 1); w1 task >0.4 ack@9.8
//! NotPreemptibleCode >21.0 ack@24.9 ok parked@33.0 seen@40.9`.
//!
//! Written by the stopper only (one stop at a time); `STOPS` numbers the
//! lines across runtimes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Whether `USURP_DEBUG` has `stoptrace=1` (read once per process).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("USURP_DEBUG").unwrap_or_default();
        let mut on = false;
        for kv in v.split(',') {
            if let Some(val) = kv.trim().strip_prefix("stoptrace=") {
                on = matches!(val.trim(), "1" | "true" | "on");
            }
        }
        on
    })
}

static STOPS: AtomicU64 = AtomicU64::new(0);

/// One worker's events in a traced stop.
struct WorkerTrace {
    /// Its thread's `run_delay` (ns) and minor faults before the stop
    /// flag was set.
    rq0: Option<(u64, u64)>,
    /// What it was doing when the stop flag was set.
    at_start: &'static str,
    /// Acks seen so far (the slot's count), to spot a new one.
    acks: u64,
    events: String,
    seen: bool,
}

/// The trace of the stop in progress (see the module docs).
pub(crate) struct StopTrace {
    t0_ns: u64,
    workers: Vec<Option<WorkerTrace>>,
    waits: u32,
    timed_out: u32,
    late_max_ns: u64,
    notified: u32,
    spins: u32,
    /// When the stopper first held the stw lock in its wait loop.
    looped_ns: u64,
    /// The stopper's own `run_delay` and minor faults before the flag
    /// was set (entry `n` of `rq0`).
    stopper_rq0: Option<(u64, u64)>,
}

/// Each thread's `run_delay` (ns waited for a CPU, from
/// `/proc/self/task/<tid>/schedstat`) and minor faults, by worker index;
/// `None` where they could not be read.
pub(crate) fn run_delays(tids: impl Iterator<Item = Option<i32>>) -> Vec<Option<(u64, u64)>> {
    tids.map(|t| t.and_then(|t| Some((super::thread_run_delay(t)?, minor_faults(t)?)))).collect()
}

/// A thread's minor page faults so far (`minflt`, field 10 of
/// `/proc/self/task/<tid>/stat`).
fn minor_faults(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    s.rsplit_once(')')?.1.split_whitespace().nth(7)?.parse().ok()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl StopTrace {
    /// Starts a trace at `t0_ns` (when the stop flag was set); `state(i)`
    /// describes worker `i` then (`None`: the stopper's own worker).
    /// `rq0[i]` is worker `i`'s `run_delay` read before the flag was set
    /// ([`run_delays`]), `rq0[n]` the stopper's own.
    pub(crate) fn new(
        t0_ns: u64,
        n: usize,
        rq0: &[Option<(u64, u64)>],
        state: impl Fn(usize) -> Option<(&'static str, u64)>,
    ) -> StopTrace {
        let workers = (0..n)
            .map(|i| {
                state(i).map(|(at_start, acks)| WorkerTrace {
                    rq0: rq0.get(i).copied().flatten(),
                    at_start,
                    acks,
                    events: String::new(),
                    seen: false,
                })
            })
            .collect();
        StopTrace {
            t0_ns,
            workers,
            waits: 0,
            timed_out: 0,
            late_max_ns: 0,
            notified: 0,
            spins: 0,
            looped_ns: 0,
            stopper_rq0: rq0.get(n).copied().flatten(),
        }
    }

    fn rel(&self, ns: u64) -> f64 {
        us(ns.saturating_sub(self.t0_ns))
    }

    /// A request signal was sent to worker `i` at `now_ns`.
    pub(crate) fn sent(&mut self, i: usize, now_ns: u64) {
        let t = self.rel(now_ns);
        if let Some(Some(w)) = self.workers.get_mut(i) {
            let _ = write!(w.events, " >{t:.1}");
        }
    }

    /// Worker `i`'s slot shows `acks` served requests, the last one served
    /// at `at_ns` with outcome `r`.
    pub(crate) fn acked(&mut self, i: usize, acks: u64, at_ns: u64, r: Result<(), usurp_preempt::Refusal>) {
        let t = self.rel(at_ns);
        if let Some(Some(w)) = self.workers.get_mut(i) {
            if acks != w.acks {
                w.acks = acks;
                match r {
                    Ok(()) => {
                        let _ = write!(w.events, " ack@{t:.1} ok");
                    }
                    Err(e) => {
                        let _ = write!(w.events, " ack@{t:.1} {e:?}");
                    }
                }
            }
        }
    }

    /// The stopper sees worker `i` stopped at `now_ns`; `parked_ns` is the
    /// worker's own park stamp (0: it did not park in this stop).
    pub(crate) fn stopped(&mut self, i: usize, now_ns: u64, parked_ns: u64) {
        let (tp, ts) = (self.rel(parked_ns), self.rel(now_ns));
        let t0 = self.t0_ns;
        if let Some(Some(w)) = self.workers.get_mut(i) {
            if !w.seen {
                w.seen = true;
                if parked_ns >= t0 {
                    let _ = write!(w.events, " parked@{tp:.1}");
                }
                let _ = write!(w.events, " seen@{ts:.1}");
            }
        }
    }

    /// The stopper waited `asked_ns` at most and woke after `took_ns`.
    pub(crate) fn waited(&mut self, asked_ns: u64, took_ns: u64, timed_out: bool) {
        self.waits += 1;
        if timed_out {
            self.timed_out += 1;
            self.late_max_ns = self.late_max_ns.max(took_ns.saturating_sub(asked_ns));
        } else {
            self.notified += 1;
        }
    }

    /// The stopper starts an iteration of its wait loop at `now_ns`.
    pub(crate) fn iteration(&mut self, now_ns: u64) {
        if self.looped_ns == 0 {
            self.looped_ns = now_ns;
        }
    }

    /// The stopper spun `n` times (`sched_yield`s) before a re-check.
    pub(crate) fn spun(&mut self, n: u32) {
        self.spins += n;
    }

    /// Prints the stop's line (see the module docs); `rq1` are the
    /// workers' `run_delay`s read now ([`run_delays`]), then the
    /// stopper's.
    pub(crate) fn finish(self, ttsp_ns: u64, rq1: &[Option<(u64, u64)>]) {
        let n = STOPS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = format!(
            "usurp stoptrace: stop {n} ttsp {:.1} us; stopper loop@{:.1}, spins {}, waits {} (timed out {}, late max {:.1} us; notified {})",
            us(ttsp_ns),
            self.rel(self.looped_ns),
            self.spins,
            self.waits,
            self.timed_out,
            us(self.late_max_ns),
            self.notified
        );
        for (i, w) in self.workers.iter().enumerate() {
            match w {
                Some(w) => {
                    let _ = write!(out, "; w{i} {}{}", w.at_start, w.events);
                    if let (Some((a, fa)), Some(Some((b, fb)))) = (w.rq0, rq1.get(i)) {
                        let _ = write!(out, " rq {:.1} flt {}", us(b.saturating_sub(a)), fb.saturating_sub(fa));
                    }
                }
                None => {
                    let _ = write!(out, "; w{i} stopper");
                }
            }
        }
        if let (Some((a, _)), Some(Some((b, _)))) = (self.stopper_rq0, rq1.get(self.workers.len())) {
            let _ = write!(out, "; stopper rq {:.1}", us(b.saturating_sub(a)));
        }
        out.push('\n');
        crate::sys::write_stderr(out.as_bytes());
    }
}
