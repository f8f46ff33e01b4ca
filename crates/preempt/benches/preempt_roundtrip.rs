//! Cost of one asynchronous preemption versus a bare signal round trip.
//!
//! * bare: `tgkill` to the current thread with a signal whose handler only
//!   bumps a counter; the time from before the syscall to after it returns
//!   (the handler runs on the way out of the syscall).
//! * refused: the same with the preemption signal and a pending request while
//!   the task is in a no-preempt section (handler, safe-point check, refusal).
//! * full: the same with the preemption signal from inside a preemptible
//!   function on a worker: handler, safe-point check, spill (all GPRs, flags,
//!   XSAVE), park hook that switches to the worker context, worker switches
//!   straight back, restore, return to the interrupted PC.
//!
//! Medians of many samples; prints the ratio full / bare (goal: at most 2).
//! Run: `cargo bench -p usurp-preempt --bench preempt_roundtrip`.

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use usurp_preempt::arch;
    use usurp_preempt::{preemptible, NoPreempt, SpillFrame, TaskPreemptState, WorkerSlot};

    const SAMPLES: usize = 20_000;

    static BARE_HITS: AtomicU64 = AtomicU64::new(0);

    extern "C" fn bare_handler(_s: libc::c_int, _i: *mut libc::siginfo_t, _u: *mut libc::c_void) {
        BARE_HITS.fetch_add(1, Ordering::Relaxed);
    }

    /// tgkill issued with a raw `syscall` so that the signal is delivered with
    /// the PC on the `nop` right after it, inside the calling function.
    #[inline(always)]
    fn raw_tgkill(pid: i32, tid: i32, sig: i32) {
        // SAFETY: the tgkill system call has no memory effects on us.
        unsafe {
            std::arch::asm!(
                "syscall",
                "nop",
                inlateout("rax") libc::SYS_tgkill => _,
                in("rdi") pid as isize,
                in("rsi") tid as isize,
                in("rdx") sig as isize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }

    /// rt_tgsigqueueinfo issued with a raw `syscall`, like [`raw_tgkill`]:
    /// how the runtime sends a request (its payload identifies it).
    #[inline(always)]
    fn raw_request(pid: i32, tid: i32, sig: i32, info: &libc::siginfo_t) {
        // SAFETY: the system call only reads `info`.
        unsafe {
            std::arch::asm!(
                "syscall",
                "nop",
                inlateout("rax") libc::SYS_rt_tgsigqueueinfo => _,
                in("rdi") pid as isize,
                in("rsi") tid as isize,
                in("rdx") sig as isize,
                in("r10") info as *const libc::siginfo_t,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, readonly),
            );
        }
    }

    fn median(v: &mut [Duration]) -> Duration {
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn bench_bare() -> Duration {
        // SAFETY: installing a trivial handler for SIGUSR1.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = bare_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        // SAFETY: no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        let mut v = Vec::with_capacity(SAMPLES);
        BARE_HITS.store(0, Ordering::Relaxed);
        for _ in 0..SAMPLES {
            let t0 = Instant::now();
            raw_tgkill(pid, tid, libc::SIGUSR1);
            v.push(t0.elapsed());
        }
        assert_eq!(BARE_HITS.load(Ordering::Relaxed), SAMPLES as u64);
        median(&mut v)
    }

    // ---- a one-task worker --------------------------------------------------

    struct Ctx {
        worker_sp: usize,
        task_sp: usize,
        slot: &'static WorkerSlot,
        full: Vec<Duration>,
        refused: Vec<Duration>,
    }

    thread_local! {
        static CTX: Cell<*mut Ctx> = const { Cell::new(std::ptr::null_mut()) };
    }

    unsafe fn park(_frame: *mut SpillFrame) {
        let ctx = CTX.with(|c| c.get());
        // SAFETY: ctx lives for the whole run on this thread.
        unsafe { arch::switch(&mut (*ctx).task_sp, (*ctx).worker_sp, 1) };
    }

    preemptible! {
        fn measure(ctx: *mut Ctx, refused: bool) {
            let pid = usurp_preempt::cached_pid();
            // SAFETY: ctx is alive; only this task uses it while running.
            let slot = unsafe { (*ctx).slot };
            let tid = slot.tid();
            let sig = usurp_preempt::signal();
            let info = usurp_preempt::request_siginfo(slot);
            let guard = if refused { Some(NoPreempt::new()) } else { None };
            for _ in 0..SAMPLES {
                let before = slot.stats().acks;
                assert!(usurp_preempt::mark_request_pending(slot));
                let t0 = Instant::now();
                raw_request(pid, tid, sig, &info);
                let dt = t0.elapsed();
                assert_eq!(slot.stats().acks, before + 1);
                // SAFETY: as above.
                unsafe {
                    if refused { (*ctx).refused.push(dt) } else { (*ctx).full.push(dt) }
                }
            }
            drop(guard);
        }
    }

    preemptible! {
        /// A tight loop without calls; returns the iterations done before
        /// `deadline` (the clock is read every 64k iterations).
        fn spin_until(deadline: Instant) -> u64 {
            let mut x = 1u64;
            let mut n = 0u64;
            loop {
                for _ in 0..65_536 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    x = std::hint::black_box(x);
                }
                n += 65_536;
                if Instant::now() >= deadline {
                    return n;
                }
            }
        }
    }

    static THROUGHPUT: AtomicU64 = AtomicU64::new(0);
    static SPIN_FOR_MS: AtomicU64 = AtomicU64::new(0);
    static HOLD_NO_PREEMPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    unsafe extern "C" fn entry_roundtrip(arg: usize, _: usize) -> ! {
        let ctx = arg as *mut Ctx;
        measure(ctx, true);
        measure(ctx, false);
        let mut dead = 0;
        // SAFETY: ctx is alive.
        unsafe { arch::switch(&mut dead, (*ctx).worker_sp, 2) };
        unreachable!()
    }

    unsafe extern "C" fn entry_throughput(arg: usize, _: usize) -> ! {
        let ctx = arg as *mut Ctx;
        let d = Duration::from_millis(SPIN_FOR_MS.load(Ordering::Relaxed));
        let guard = HOLD_NO_PREEMPT.load(Ordering::Relaxed).then(NoPreempt::new);
        THROUGHPUT.store(spin_until(Instant::now() + d), Ordering::Relaxed);
        drop(guard);
        let mut dead = 0;
        // SAFETY: ctx is alive.
        unsafe { arch::switch(&mut dead, (*ctx).worker_sp, 2) };
        unreachable!()
    }

    /// Runs one task (`entry`) on a fresh worker thread; with `quantum`, the
    /// worker's timer is armed (each expiry parks the task and the worker
    /// resumes it at once).
    fn run_on_worker(
        entry: unsafe extern "C" fn(usize, usize) -> !,
        quantum: Option<Duration>,
    ) -> (Duration, Duration, usurp_preempt::PreemptStats) {
        std::thread::spawn(move || {
            let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
            // SAFETY: `park` switches to this thread's scheduler context and
            // returns when the same thread resumes the task.
            unsafe { usurp_preempt::set_park_hook(park) };
            usurp_preempt::register_worker(slot, quantum.unwrap_or(Duration::from_millis(10))).unwrap();
            let mut stack = vec![0u8; 256 * 1024];
            let lo = stack.as_mut_ptr() as usize;
            let hi = lo + stack.len();
            let ctx = Box::into_raw(Box::new(Ctx {
                worker_sp: 0,
                task_sp: 0,
                slot,
                full: Vec::with_capacity(SAMPLES),
                refused: Vec::with_capacity(SAMPLES),
            }));
            CTX.with(|c| c.set(ctx));
            if quantum.is_some() {
                slot.set_idle(false).unwrap();
            }
            // SAFETY: the stack outlives the task; ctx is used by this thread only.
            unsafe {
                (*ctx).task_sp = arch::init_stack(hi, entry, ctx as usize);
                let mut st = TaskPreemptState::default();
                loop {
                    slot.switch_in(lo + 4096, hi, st);
                    let r = arch::switch(&mut (*ctx).worker_sp, (*ctx).task_sp, 0);
                    st = slot.switch_out();
                    if r == 2 {
                        break;
                    }
                }
                slot.set_idle(true).unwrap();
                let mut c = Box::from_raw(ctx);
                let stats = slot.stats();
                usurp_preempt::unregister_worker().unwrap();
                drop(stack);
                let m = |v: &mut Vec<Duration>| if v.is_empty() { Duration::ZERO } else { median(v) };
                (m(&mut c.full), m(&mut c.refused), stats)
            }
        })
        .join()
        .unwrap()
    }

    fn bench_preempt() -> (Duration, Duration, usurp_preempt::PreemptStats) {
        // Timer never armed: no tick disturbs the samples.
        run_on_worker(entry_roundtrip, None)
    }

    /// Iterations per second of a tight loop, preempted every `quantum`.
    /// Returns (iterations/s, accepted preemptions + ticks, as one number:
    /// the signals that interrupted it).
    fn throughput(quantum: Option<Duration>, ms: u64) -> (f64, u64) {
        SPIN_FOR_MS.store(ms, Ordering::Relaxed);
        let (_, _, st) = run_on_worker(entry_throughput, quantum);
        if std::env::var_os("USURP_BENCH_VERBOSE").is_some() {
            eprintln!("  quantum {quantum:?}: {st:?}");
        }
        let events = if HOLD_NO_PREEMPT.load(Ordering::Relaxed) { st.ticks } else { st.accepted };
        (THROUGHPUT.load(Ordering::Relaxed) as f64 / (ms as f64 / 1000.0), events)
    }

    pub fn main() {
        usurp_preempt::init().unwrap();
        // Warm up, then measure each twice and keep the better median.
        let _ = bench_bare();
        let bare = bench_bare().min(bench_bare());
        let (f1, r1, _) = bench_preempt();
        let (f2, r2, st) = bench_preempt();
        let (full, refused) = (f1.min(f2), r1.min(r2));
        println!("xsave area: {} bytes (XCR0 {:#x})", arch::xsave_size(), arch::xsave_mask());
        println!("bare signal round trip (tgkill to self, empty handler): median {:>8.0} ns", bare.as_nanos());
        println!("refused preemption (handler + safe-point check):        median {:>8.0} ns", refused.as_nanos());
        println!("full async preemption (spill, park, switch back, restore): median {:>5.0} ns", full.as_nanos());
        println!("ratio full / bare: {:.2} (goal <= 2.0)", full.as_secs_f64() / bare.as_secs_f64());
        assert_eq!(st.accepted, SAMPLES as u64, "every full sample must be an accepted preemption: {st:?}");
        assert_eq!(st.refused(usurp_preempt::Refusal::NoPreempt), SAMPLES as u64, "{st:?}");

        // Throughput of a tight loop preempted every quantum (each preemption
        // parks the task and the worker resumes it at once) vs the same loop
        // with the timer off; alternated, best of 3 each.
        for (q, refuse) in [(Duration::from_millis(1), false), (Duration::from_millis(10), false), (Duration::from_millis(1), true)] {
            HOLD_NO_PREEMPT.store(refuse, Ordering::Relaxed);
            let (mut on, mut off, mut preempts) = (0f64, 0f64, 0u64);
            for _ in 0..3 {
                let (r, p) = throughput(Some(q), 1000);
                if r > on {
                    on = r;
                    preempts = p;
                }
                off = off.max(throughput(None, 1000).0);
            }
            let what = if refuse { "refused ticks (in a no-preempt section)" } else { "preemptions" };
            println!(
                "tight loop at a {q:?} quantum: {on:.4e} it/s with {preempts} {what}/s, {off:.4e} it/s without: {:+.2}% ({:.1} µs of loop time per event)",
                (on / off - 1.0) * 100.0,
                (1.0 - on / off) * 1e6 / preempts.max(1) as f64
            );
        }

    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    imp::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("preempt_roundtrip: x86-64 only for now");
}
