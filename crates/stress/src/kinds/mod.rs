//! The task kinds of usurp-stress, how many of each run, and their checks.
//!
//! Every kind loops until the coordinator sets `Ctx::stop`, counts its work
//! in `Ctx::c`, and counts every failed check (a wrong register, a wrong
//! checksum, a wrong value read back through a barrier-written field, a
//! message out of order, a broken mutex invariant) instead of panicking, so
//! that one run reports all of them. The first few failures of each kind are
//! also described on stderr.
//!
//! GC structures are referenced only from task stacks and registers (scanned
//! conservatively) or, for every third structure a task builds, from a
//! [`Root`](usurp::gc::Root) through which the task reaches it afterwards.
//! No GC pointer is ever kept in Rust heap memory (a `Vec`), which the
//! collector does not scan.
//!
//! One file per part: this one is the catalogue of kinds, the `--kinds`
//! parser and the [`Plan`] that deals tasks over them; [`coordinator`] spawns
//! and joins the tasks and owns the shared counters; [`rng`] is the
//! deterministic generator; the five workload families are [`registers`]
//! (register loops), [`gc_structures`] (lists, trees, tables), [`barrier`]
//! (write-barrier hammering), [`messaging`] (channel ping-pong, mutex
//! contention) and [`sleepers`] (1 ms sleepers, `blocking` calls).

mod barrier;
mod coordinator;
mod gc_structures;
mod messaging;
mod registers;
mod rng;
mod sleepers;

pub use coordinator::{run_all, Ctx, Outcome, INJECT_SPAWN_FAILURE};
pub use registers::{regcheck, regcheck_warning};

/// The kinds, in the order tasks are dealt out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `regcheck::register_loop` in preemptible assembly.
    Registers,
    /// Linked lists of `gc_type!` nodes.
    Lists,
    /// Binary trees with a run-time descriptor.
    Trees,
    /// Chained hash tables: a pointer array of buckets, run-time entries.
    Tables,
    /// Pointer stores through the write barrier in a hot loop.
    Barrier,
    /// Channel ping-pong (one pair = two tasks).
    PingPong,
    /// Mutex contention (groups of up to four).
    Mutex,
    /// 1 ms sleepers recording their wake latency.
    Sleepers,
    /// `blocking(|| std::thread::sleep(1 ms))`.
    Blocking,
}

/// Dealing order; every kind gets a task before any gets a second.
pub const KINDS: [Kind; 9] = [
    Kind::Registers,
    Kind::Lists,
    Kind::Trees,
    Kind::Tables,
    Kind::Barrier,
    Kind::PingPong,
    Kind::Mutex,
    Kind::Sleepers,
    Kind::Blocking,
];

impl Kind {
    /// A short name (task names, the summary).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Registers => "register loops",
            Kind::Lists => "GC lists",
            Kind::Trees => "GC trees",
            Kind::Tables => "GC hash tables",
            Kind::Barrier => "barrier hammers",
            Kind::PingPong => "ping-pong tasks",
            Kind::Mutex => "mutex contenders",
            Kind::Sleepers => "sleepers",
            Kind::Blocking => "blocking callers",
        }
    }
    /// The short name used by `--kinds` and in task names.
    pub fn task_name(self) -> &'static str {
        match self {
            Kind::Registers => "regs",
            Kind::Lists => "gc-list",
            Kind::Trees => "gc-tree",
            Kind::Tables => "gc-table",
            Kind::Barrier => "barrier",
            Kind::PingPong => "pingpong",
            Kind::Mutex => "mutex",
            Kind::Sleepers => "sleeper",
            Kind::Blocking => "blocking",
        }
    }
    fn units(self) -> usize {
        if self == Kind::PingPong {
            2
        } else {
            1
        }
    }
}

/// The value of `--kinds`.
#[derive(Debug, Clone)]
pub struct KindList(pub Vec<Kind>);

/// Parses a `--kinds` value: comma-separated short names.
pub fn parse_kinds(s: &str) -> Result<KindList, String> {
    s.split(',')
        .map(|w| {
            let w = w.trim();
            KINDS.iter().copied().find(|k| k.task_name() == w).ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|k| k.task_name()).collect();
                format!("unknown kind {w:?} (kinds: {})", names.join(", "))
            })
        })
        .collect::<Result<Vec<Kind>, String>>()
        .map(KindList)
}

/// How many tasks of each kind run (indexed like [`KINDS`]).
#[derive(Debug, Clone)]
pub struct Plan {
    pub counts: [usize; KINDS.len()],
}

impl Plan {
    /// Deals `total` tasks over the kinds in `only` (all if empty)
    /// round-robin (a ping-pong pair takes two; it is skipped when only one
    /// task is left, and then gets none if it is the only kind).
    pub fn new(total: usize, only: &[Kind]) -> Plan {
        let mut counts = [0; KINDS.len()];
        let mut left = total;
        let mut i = 0;
        let enabled = |k: Kind| only.is_empty() || only.contains(&k);
        if only == [Kind::PingPong] {
            left -= left % 2;
        }
        while left > 0 {
            let k = KINDS[i % KINDS.len()];
            if enabled(k) && k.units() <= left {
                counts[i % KINDS.len()] += k.units();
                left -= k.units();
            }
            i += 1;
        }
        Plan { counts }
    }
    /// Tasks of kind `k`.
    #[cfg(test)]
    pub fn count(&self, k: Kind) -> usize {
        self.counts[KINDS.iter().position(|&x| x == k).unwrap_or(0)]
    }
    /// All tasks.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_deals_round_robin() {
        let p = Plan::new(64, &[]);
        assert_eq!(p.total(), 64);
        assert!(KINDS.iter().all(|&k| p.count(k) >= 6), "{p:?}");
        assert_eq!(p.count(Kind::PingPong) % 2, 0);
        let small = Plan::new(6, &[]);
        assert_eq!(small.total(), 6);
        assert_eq!(small.count(Kind::PingPong), 0);
        assert_eq!(small.count(Kind::Registers), 1);
        assert_eq!(Plan::new(1, &[]).total(), 1);
        let only = Plan::new(5, &[Kind::Sleepers, Kind::PingPong]);
        assert_eq!((only.count(Kind::Sleepers), only.count(Kind::PingPong), only.total()), (1, 4, 5));
        assert_eq!(Plan::new(5, &[Kind::PingPong]).total(), 4);
    }
}
