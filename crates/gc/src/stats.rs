//! Collection statistics and the `gctrace` line.

use std::collections::VecDeque;
use std::time::Duration;

/// How many recent pauses / times-to-safepoint are kept for percentiles.
pub const HISTORY: usize = 1024;

/// The numbers of one collection cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleStats {
    /// Cycle number (1-based).
    pub cycle: u64,
    /// Heap in use when the cycle started (live after the previous mark plus
    /// memory handed to allocation since), in bytes.
    pub heap_before: usize,
    /// Live bytes found by this mark.
    pub heap_after: usize,
    /// The goal for triggering the next cycle, in bytes.
    pub heap_goal: usize,
    /// From the stop request until every task was parked (part of `pause`).
    pub time_to_safepoint: Duration,
    /// Who held a stop of the cycle up, when one waited noticeably
    /// ([`World::last_stop_holdup`](crate::World::last_stop_holdup)): the
    /// start stop's holder, or, if a termination stop waited longer (or the
    /// start stop named nobody), that stop's holder followed by
    /// ` (termination stop)`.
    pub ttsp_holdup: Option<String>,
    /// The cycle's stops together (the sum of `stops`), each from its stop
    /// request until the world restarted: `time_to_safepoint + root_scan +
    /// mark + sweep` plus the restarts (and an allocation retried in the
    /// pause). The verifier's own stop is not included (see `verify_pause`).
    pub pause: Duration,
    /// Each stop of the cycle, in order: the start stop, then the
    /// termination stops (more than one when a termination found much left
    /// to mark and let the world run again). With `stw_marking`, one stop.
    pub stops: Vec<Duration>,
    /// Scanning the roots (conservative ranges, precise roots, root
    /// scanners, finalizer closures), in the start stop.
    pub root_scan: Duration,
    /// Marking in the stops: the termination stops' draining of what the
    /// barrier shaded, weak references cleared, unreachable finalizable
    /// objects queued and marked from (with `stw_marking`: the whole mark).
    pub mark: Duration,
    /// Marking with the world running (between the start stop and the
    /// termination stop), not part of `pause`.
    pub concurrent_mark: Duration,
    /// Part of `concurrent_mark`: from the start stop's restart until every
    /// task's stack was scanned (a World that scans stacks one task at a
    /// time, [`World::begin_concurrent_stack_scan`](crate::World::begin_concurrent_stack_scan);
    /// zero otherwise: stacks were scanned in the start stop).
    pub stack_scan: Duration,
    /// Task stacks the collector scanned during that time (with the world
    /// running); the others were scanned by whoever resumed their task.
    pub stacks_scanned: usize,
    /// Time the mutators spent in mark assists during the concurrent mark
    /// (summed over threads; part of the mutators' time, not of `pause`).
    pub assist: Duration,
    /// Assist calls that marked something.
    pub assist_calls: u64,
    /// Times an assist at or past the goal found no mark work and slept
    /// (waited for a donation, a give-back or the mark's end, 200 µs at
    /// most) for the collector to donate some.
    pub assist_waits: u64,
    /// Wake-ups of allocations that reached the goal, or the trigger (the
    /// start hand-off, gc `pacer.rs`), before a start stop and waited (on a
    /// condvar the start stop notifies, re-checked every 1 ms at most)
    /// until the collector started the cycle. Counted when the waiter
    /// wakes, so a wait that the start stop of cycle N ended may count in
    /// cycle N + 1 (its start stop takes the count).
    pub start_waits: u64,
    /// Bytes of the objects the assists marked (part of `heap_after`).
    pub assist_marked: usize,
    /// Memory handed out during the concurrent mark (allocated black; not
    /// in `heap_after`, but counted with it for `heap_goal`, as Go counts
    /// it: gc `pacer.rs`, "Goal"); 0 without a concurrent mark.
    pub allocated_during_mark: usize,
    /// The highest heap use (live + allocated) seen during the concurrent
    /// mark (allocation slow paths and the termination stop), to compare
    /// with the goal the mark was to finish by (0 without a concurrent mark).
    pub heap_peak: usize,
    /// The goal in force during this cycle's mark (the previous cycle's
    /// `heap_goal`), which `heap_peak` is to be compared with.
    pub mark_goal: usize,
    /// Sweep start, in the termination stop: taking the mutators' cached blocks away
    /// and publishing the new mark generation. The sweeping itself is lazy
    /// (allocation and a background thread, world running).
    pub sweep: Duration,
    /// Heap verification itself (0 unless gcverify).
    pub verify: Duration,
    /// The verifier's own stop (gcverify), request to restart, after the
    /// cycle's stop and not counted in `pause`, `GcStats::pauses` or
    /// `GcStats::total_pause` (0 unless gcverify).
    pub verify_pause: Duration,
    /// Marking threads used.
    pub workers: usize,
    /// Words of conservative roots scanned.
    pub conservative_words: usize,
    /// Objects found live.
    pub live_objects: usize,
    /// Why the cycle ran.
    pub reason: &'static str,
    /// Precise pointer slots (and precise roots) found holding something
    /// other than null or an object start by this cycle's mark: one per slot.
    pub bad_pointers: usize,
    /// Value slots whose pointer-tagged word did not decode to null or an
    /// object start in this cycle's mark: one per slot.
    pub bad_values: usize,
    /// The first bad slot this cycle's mark met (with several markers: the
    /// first one published).
    pub first_bad: Option<BadSlot>,
}

/// A slot that held a bad pointer or value (ignored by marking: a VM bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSlot {
    /// The object holding the slot; 0 for a precise root (a `Root`, a root
    /// scanner's report, a pending finalizer's object).
    pub object: usize,
    /// Its descriptor's name (`"<root>"` for a precise root).
    pub descriptor: &'static str,
    /// The payload word index of the slot (0 for a root).
    pub slot: usize,
    /// The word found there.
    pub word: usize,
    /// A value slot (decoded with the heap's encoding) or a pointer slot.
    pub value_slot: bool,
}

impl std::fmt::Display for BadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.value_slot { "value" } else { "pointer" };
        if self.object == 0 {
            write!(f, "precise root holds {:#x}, not an object", self.word)
        } else {
            write!(
                f,
                "object {:#x} (`{}`) {what} slot {}: {:#x} is not an object",
                self.object, self.descriptor, self.slot, self.word
            )
        }
    }
}

/// Heap-wide statistics, see [`Heap::stats`](crate::Heap::stats).
#[derive(Debug, Clone, Default)]
pub struct GcStats {
    /// Completed cycles.
    pub cycles: u64,
    /// The last cycle, if any.
    pub last: Option<CycleStats>,
    /// Live bytes after the last mark.
    pub heap_live: usize,
    /// Live bytes plus memory handed to allocation since the last mark.
    pub heap_alloc: usize,
    /// The current goal.
    pub heap_goal: usize,
    /// Memory of blocks in use or not yet returned to the OS.
    pub heap_committed: usize,
    /// The hard limit.
    pub heap_limit: usize,
    /// Sum of all pauses (the cycles' stops; verifier stops excluded).
    pub total_pause: Duration,
    /// Sum of the cycles' concurrent marking (world running).
    pub total_concurrent_mark: Duration,
    /// Sum of the mutators' mark-assist time (see `CycleStats::assist`).
    pub total_assist: Duration,
    /// Bytes marked by assists, summed over cycles.
    pub total_assist_marked: u64,
    /// Sum of the verifier's stops (gcverify), apart from `total_pause`.
    pub total_verify_pause: Duration,
    /// Sums over all cycles of the pause's parts: time-to-safepoint, root
    /// scan, mark (with termination) and sweep.
    pub total_ttsp: Duration,
    /// See `total_ttsp`.
    pub total_root_scan: Duration,
    /// See `total_ttsp`.
    pub total_mark: Duration,
    /// See `total_ttsp`.
    pub total_sweep: Duration,
    /// Recent stops (oldest first, at most `HISTORY`; each stop of a cycle
    /// apart: start and termination; verifier stops excluded).
    pub pauses: Vec<Duration>,
    /// Recent times-to-safepoint (per cycle: its stops' together).
    pub ttsp: Vec<Duration>,
    /// Failures found by the heap verifier (gcverify).
    pub verify_failures: u64,
    /// Precise pointer slots that held something other than null or an object
    /// start (ignored by marking; a VM bug): summed over cycles, one per slot
    /// per mark (a slot that stays bad for three marks counts three).
    pub bad_pointers: u64,
    /// Value slots whose pointer-tagged word decoded to neither null nor an
    /// object start (ignored by marking, never followed), counted like
    /// `bad_pointers`.
    pub bad_values: u64,
    /// The first bad pointer or value slot any mark of this heap met.
    pub first_bad: Option<BadSlot>,
    /// Finalizers run so far.
    pub finalizers_run: u64,
    /// Finalizers waiting for `run_pending_finalizers`.
    pub finalizers_pending: usize,
    /// Finalizers registered and not yet queued (their objects not found
    /// dead yet).
    pub finalizers_registered: usize,
    /// Finalizer records visited with the world stopped so far: by the
    /// stop-the-world mark (`HeapConfig::stw_marking`, and a collection at
    /// the hard limit) and by sweeps run in a pause (the allocation retried
    /// there). A concurrent cycle visits none in its stops: the records are
    /// scanned while the world runs and found dead by the sweep.
    pub finalizer_records_in_stops: u64,
    /// Weak references cleared so far.
    pub weak_cleared: u64,
    /// Blocks whose memory was returned to the OS so far.
    pub blocks_decommitted: u64,
    /// Blocks swept lazily so far: by the background sweeper, by
    /// allocation (in a pause too: the allocation retried there), by the
    /// collector finishing the sweep before a mark, and by the collector
    /// sweeping the blocks with finalizer records right after a mark (world
    /// running), each block counted once, under who swept it.
    pub blocks_swept_background: u64,
    /// See `blocks_swept_background`.
    pub blocks_swept_by_allocation: u64,
    /// See `blocks_swept_background`.
    pub blocks_swept_before_mark: u64,
    /// See `blocks_swept_background`.
    pub blocks_swept_for_finalizers: u64,
    /// Blocks with finalizer records that a cycle, sweeping them right
    /// after its mark, found claimed by another sweeper and waited for so
    /// far (it waits for those blocks only, never for sweeps of blocks
    /// without records).
    pub finalizer_blocks_waited: u64,
}

impl GcStats {
    /// The `p`-th percentile (0..=100) of the recent pauses.
    pub fn pause_percentile(&self, p: f64) -> Duration {
        percentile(&self.pauses, p)
    }
    /// The `p`-th percentile of the recent times-to-safepoint.
    pub fn ttsp_percentile(&self, p: f64) -> Duration {
        percentile(&self.ttsp, p)
    }
}

/// Nearest-rank percentile; zero for an empty list.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Mutable accumulation behind the heap's stats lock.
#[derive(Default)]
pub(crate) struct StatsAcc {
    pub last: Option<CycleStats>,
    pub total_pause: Duration,
    pub total_concurrent_mark: Duration,
    pub total_assist: Duration,
    pub total_assist_marked: u64,
    pub total_verify_pause: Duration,
    pub total_ttsp: Duration,
    pub total_root_scan: Duration,
    pub total_mark: Duration,
    pub total_sweep: Duration,
    pub pauses: VecDeque<Duration>,
    pub ttsp: VecDeque<Duration>,
    pub verify_failures: u64,
    pub bad_pointers: u64,
    pub bad_values: u64,
    pub first_bad: Option<BadSlot>,
    pub finalizers_run: u64,
    pub weak_cleared: u64,
    pub blocks_decommitted: u64,
}

impl StatsAcc {
    pub fn record(&mut self, c: &CycleStats) {
        self.total_pause += c.pause;
        self.total_concurrent_mark += c.concurrent_mark;
        self.total_assist += c.assist;
        self.total_assist_marked += c.assist_marked as u64;
        self.total_verify_pause += c.verify_pause;
        self.total_ttsp += c.time_to_safepoint;
        self.total_root_scan += c.root_scan;
        self.total_mark += c.mark;
        self.total_sweep += c.sweep;
        if c.stops.is_empty() {
            push_bounded(&mut self.pauses, c.pause);
        }
        for &d in &c.stops {
            push_bounded(&mut self.pauses, d);
        }
        push_bounded(&mut self.ttsp, c.time_to_safepoint);
        self.bad_pointers += c.bad_pointers as u64;
        self.bad_values += c.bad_values as u64;
        if self.first_bad.is_none() {
            self.first_bad = c.first_bad;
        }
        self.last = Some(c.clone());
    }
}

fn push_bounded(q: &mut VecDeque<Duration>, d: Duration) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(d);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// One `gctrace` line, in the spirit of Go's: the pause and its parts
/// (time-to-safepoint + root scan + mark in the stops + sweep start), each
/// stop apart (start, then termination), the concurrent mark time, then
/// the verifier's own stop apart (gcverify only).
pub fn trace_line(c: &CycleStats, since_start: Duration, verify: bool) -> String {
    let stops = match c.stops.len() {
        0 | 1 => String::new(),
        _ => format!(
            ", stops start {:.3} + termination {} ms, concurrent mark {:.3} ms{}, assist {:.3} ms ({} calls, {:.1} MB marked, {} waits, {} start waits), peak {:.1} MB, black {:.1} MB",
            ms(c.stops[0]),
            c.stops[1..].iter().map(|d| format!("{:.3}", ms(*d))).collect::<Vec<_>>().join(" + "),
            ms(c.concurrent_mark),
            if c.stack_scan.is_zero() {
                String::new()
            } else {
                format!(" (stacks {:.3} ms, {} by the collector)", ms(c.stack_scan), c.stacks_scanned)
            },
            ms(c.assist),
            c.assist_calls,
            mb(c.assist_marked),
            c.assist_waits,
            c.start_waits,
            mb(c.heap_peak),
            mb(c.allocated_during_mark)
        ),
    };
    format!(
        "gc {} @{:.3}s: {:.1}->{:.1} ({:.1} goal) MB, pause {:.3} ms (ttsp {:.3} + roots {:.3} + mark {:.3} + sweep {:.3} ms){stops}{}, {} workers, {} live objects, {} conservative words, {}{}",
        c.cycle,
        since_start.as_secs_f64(),
        mb(c.heap_before),
        mb(c.heap_after),
        mb(c.heap_goal),
        ms(c.pause),
        ms(c.time_to_safepoint),
        ms(c.root_scan),
        ms(c.mark),
        ms(c.sweep),
        match (verify, &c.ttsp_holdup) {
            (false, None) => String::new(),
            (false, Some(h)) => format!(", stop held up by {h}"),
            (true, h) => format!(
                "{}, verifier's own stop {:.3} ms (verify {:.3} ms)",
                h.as_ref().map_or(String::new(), |h| format!(", stop held up by {h}")),
                ms(c.verify_pause),
                ms(c.verify)
            ),
        },
        c.workers,
        c.live_objects,
        c.conservative_words,
        c.reason,
        match &c.first_bad {
            Some(b) => format!(", {} bad pointers + {} bad values (first: {b})", c.bad_pointers, c.bad_values),
            None => String::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn trace_line_has_the_numbers() {
        let c = CycleStats { cycle: 7, heap_before: 8 << 20, heap_after: 2 << 20, heap_goal: 4 << 20, workers: 2, reason: "goal", ..Default::default() };
        let l = trace_line(&c, Duration::from_millis(1500), false);
        assert!(l.starts_with("gc 7 @1.500s: 8.0->2.0 (4.0 goal) MB"), "{l}");
        assert!(l.contains("2 workers") && l.ends_with("goal"));
        assert!(!l.contains("verif"), "{l}");
        let c = CycleStats {
            pause: Duration::from_micros(1500),
            time_to_safepoint: Duration::from_micros(100),
            root_scan: Duration::from_micros(200),
            mark: Duration::from_micros(700),
            sweep: Duration::from_micros(400),
            verify: Duration::from_micros(3000),
            verify_pause: Duration::from_micros(3100),
            ..c
        };
        let l = trace_line(&c, Duration::from_millis(1500), true);
        assert!(
            l.contains("pause 1.500 ms (ttsp 0.100 + roots 0.200 + mark 0.700 + sweep 0.400 ms), verifier's own stop 3.100 ms (verify 3.000 ms)"),
            "{l}"
        );
        let c = CycleStats { ttsp_holdup: Some("worker 1 (thread 42): task 7 \"sort\"".into()), ..c };
        let l = trace_line(&c, Duration::from_millis(1500), false);
        assert!(l.contains("sweep 0.400 ms), stop held up by worker 1 (thread 42): task 7 \"sort\","), "{l}");
        let bad = BadSlot { object: 0x1000, descriptor: "pair", slot: 1, word: 0x1235, value_slot: true };
        let c = CycleStats { bad_values: 3, first_bad: Some(bad), ..c };
        let l = trace_line(&c, Duration::from_millis(1500), false);
        assert!(
            l.ends_with("goal, 0 bad pointers + 3 bad values (first: object 0x1000 (`pair`) value slot 1: 0x1235 is not an object)"),
            "{l}"
        );
        let c = CycleStats {
            stops: vec![Duration::from_micros(300), Duration::from_micros(1200)],
            concurrent_mark: Duration::from_millis(5),
            assist: Duration::from_millis(2),
            assist_calls: 3,
            assist_waits: 4,
            start_waits: 5,
            assist_marked: 3 << 19,
            heap_peak: 5 << 20,
            allocated_during_mark: 1 << 19,
            ..c
        };
        let l = trace_line(&c, Duration::from_millis(1500), false);
        assert!(
            l.contains(
                "sweep 0.400 ms), stops start 0.300 + termination 1.200 ms, concurrent mark 5.000 ms, assist 2.000 ms (3 \
                 calls, 1.5 MB marked, 4 waits, 5 start waits), peak 5.0 MB, black 0.5 MB, stop held up"
            ),
            "{l}"
        );
        let mut acc = StatsAcc::default();
        acc.record(&c);
        assert_eq!(acc.pauses.len(), 2, "each stop of a cycle is a pause figure of its own");
        assert_eq!(acc.total_concurrent_mark, Duration::from_millis(5));
        assert_eq!((acc.total_assist, acc.total_assist_marked), (Duration::from_millis(2), 3 << 19));
        assert_eq!((acc.bad_values, acc.first_bad), (3, Some(bad)), "both branches' counters accumulate");
    }
}
