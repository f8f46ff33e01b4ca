//! The entry of a no-preemption section inside `preemptible!` code (session
//! 9, `crates/preempt/src/guard.rs` `enter_section`; session 10 task W
//! item 2). `NoPreempt::new` looks the worker slot up and raises its depth
//! in one out-of-line function, so no preemption can fall between the
//! lookup and the increment. The old form (kept as
//! `NoPreempt::new_inlined_for_tests`, inlined) did the lookup in an
//! out-of-line call and the increment in the caller's preemptible code:
//! a tick after the call returned could move the task to the other worker,
//! which then raised the depth of the worker it left (another task's) and
//! ran its section with its own depth at zero (preemptible).
//!
//! Three tasks on two workers with the shortest quantum run `preemptible!`
//! loops entering and leaving sections (the loops touch no thread-local,
//! so preempted tasks migrate). Each round checks, through out-of-line
//! reads of the current worker's slot: the depth is 0 outside a section
//! ("unbalanced"), at least 1 inside ("unprotected"), and the worker
//! does not change inside a section ("moved inside"). With `NoPreempt::new`
//! none is ever seen; with the old form (the negative control) they are,
//! usually within a second (the window is a few instructions, so that
//! test runs until it sees one, 60 s at most).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::{preemptible, NoPreempt, Runtime};
use usurp_sched::hooks;
use usurp_testsupport::within;

#[derive(Default, Debug)]
struct Counts {
    rounds: AtomicU64,
    migrations: AtomicU64,
    unbalanced: AtomicU64,
    unprotected: AtomicU64,
    moved_inside: AtomicU64,
}

impl Counts {
    fn corruptions(&self) -> u64 {
        self.unbalanced.load(SeqCst) + self.unprotected.load(SeqCst) + self.moved_inside.load(SeqCst)
    }
}

/// The calling thread's worker slot (its address) and its no-preemption
/// depth: out of line, so the preemptible loops touch no thread-local.
#[inline(never)]
fn here() -> (usize, u32) {
    match usurp_preempt::internals::current_worker() {
        Some(s) => (s as *const _ as usize, s.no_preempt_depth()),
        None => (0, 0),
    }
}

macro_rules! section_loop {
    ($enter:expr, $stop:expr, $c:expr) => {{
        let (stop, c): (&AtomicBool, &Counts) = ($stop, $c);
        let mut x = 1u64;
        let mut last = 0usize;
        let mut rounds = 0u64;
        // SAFETY: volatile read of a valid AtomicBool (no call).
        while unsafe { std::ptr::read_volatile(stop as *const AtomicBool as *const u8) } == 0 {
            let (w, d) = here();
            if d != 0 {
                c.unbalanced.fetch_add(1, Relaxed);
            }
            if w != last {
                if last != 0 {
                    c.migrations.fetch_add(1, Relaxed);
                }
                last = w;
            }
            let g = $enter;
            let (w0, d0) = here();
            for k in 0..16u64 {
                x = std::hint::black_box(x).wrapping_mul(6364136223846793005).wrapping_add(k);
            }
            let (w1, _) = here();
            if d0 == 0 {
                c.unprotected.fetch_add(1, Relaxed);
            }
            if w0 != w1 {
                c.moved_inside.fetch_add(1, Relaxed);
            }
            drop(g);
            // Work outside the section too: most ticks then find the loop
            // in its own preemptible code, not refused in a section or in
            // `here`, and a preempted loop moves often.
            for k in 0..64u64 {
                x = std::hint::black_box(x).wrapping_mul(2862933555777941757).wrapping_add(k);
            }
            rounds += 1;
        }
        c.rounds.fetch_add(rounds, Relaxed);
        x
    }};
}

preemptible! {
    /// Sections entered with `NoPreempt::new` until `stop`.
    fn sections(stop: &AtomicBool, c: &Counts) -> u64 {
        section_loop!(NoPreempt::new(), stop, c)
    }

    /// The same with the old, inlined entry (the negative control).
    fn sections_old_entry(stop: &AtomicBool, c: &Counts) -> u64 {
        // SAFETY: the negative control itself: its runtime is used by this
        // test only, and a worker left with a raised depth ends with it.
        section_loop!(unsafe { NoPreempt::new_inlined_for_tests() }, stop, c)
    }
}

/// Three loops on two workers: a preempted loop goes to the global queue
/// while the other worker has nothing queued (issue 11), so the loops
/// rotate over both workers (with 2 + 2 they stayed where they started).
const TASKS: usize = 3;

/// Runs `TASKS` loops of `f` on two workers (quantum 100 µs) until `until`
/// says enough (it is given the counts and the time so far; polled every
/// 10 ms). Returns the counts and the accepted asynchronous preemptions.
fn run(f: fn(&AtomicBool, &Counts) -> u64, until: impl Fn(&Counts, Duration) -> bool) -> (Arc<Counts>, u64) {
    let rt = Runtime::builder().workers(2).quantum(usurp::MIN_QUANTUM).build().unwrap();
    assert!(rt.async_preemption(), "this test needs async preemption (USURP_DEBUG=asyncpreemptoff is set?)");
    assert_eq!(hooks::preemptible_fn_touches_tls(f as usize), Some(false), "the loop touches TLS: it would not migrate");
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counts::default());
    let accepted0 = rt.stats().preempt.accepted;
    let hs: Vec<_> = (0..TASKS)
        .map(|_| {
            let (stop, c) = (stop.clone(), c.clone());
            rt.spawn(move || f(&stop, &c))
        })
        .collect();
    let t0 = Instant::now();
    while !until(&c, t0.elapsed()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, SeqCst);
    for h in hs {
        h.join().unwrap();
    }
    let st = rt.stats().preempt;
    eprintln!("preemption: {st:?}");
    let accepted = st.accepted - accepted0;
    (c, accepted)
}

#[test]
fn no_preemption_between_the_slot_lookup_and_the_depth() {
    let _g = usurp_testsupport::serial();
    let (c, accepted) = within(120, "sections", || {
        run(sections, |c, t| (t >= Duration::from_secs(5) && c.migrations.load(SeqCst) >= 200) || t >= Duration::from_secs(30))
    });
    eprintln!("NoPreempt::new: {c:?}, {accepted} preemptions accepted");
    assert!(accepted >= 100, "{accepted} preemptions: the loops were hardly preempted ({c:?})");
    assert!(c.migrations.load(SeqCst) >= 100, "the tasks hardly migrated: {c:?}");
    assert_eq!(c.unbalanced.load(SeqCst), 0, "a depth left raised outside a section: {c:?}");
    assert_eq!(c.unprotected.load(SeqCst), 0, "a section ran at depth 0: {c:?}");
    assert_eq!(c.moved_inside.load(SeqCst), 0, "a section was preempted and moved: {c:?}");
}

#[test]
fn negative_control_the_old_inlined_entry_corrupts_the_depths() {
    let _g = usurp_testsupport::serial();
    let (c, accepted) = within(120, "old entry", || {
        run(sections_old_entry, |c, t| c.corruptions() > 0 || t >= Duration::from_secs(60))
    });
    eprintln!("old entry: {c:?}, {accepted} preemptions accepted");
    assert!(c.corruptions() > 0, "no corruption seen in 60 s with the old entry: {c:?}");
}
