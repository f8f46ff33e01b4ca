//! The spinning worker's nap (session 12, `worker/policy.rs` `NAP_NS`):
//! on `workers(2)`, a ping-pong (or spawn+join) keeps one worker busy
//! handing tasks to itself through its `runnext`; every hand-off calls
//! `notify`, which woke the idle worker whenever none was spinning. The
//! woken worker found nothing it may take (a `runnext` whose owner keeps
//! switching), spun ~100 us, slept, and was woken by the next hand-off: a
//! futex wake every ~200 us and a second CPU kept busy for nothing. Now a
//! spin that found nothing while another worker kept switching ends in a
//! short nap counted as spinning, so those hand-offs wake nobody.
//!
//! Checked: during 300 ms of ping-pong on 2 workers, wakers go to wake an
//! idle worker only a few times (the first hand-offs, and whenever the
//! busy worker made no switch for a whole spin and nap, e.g. when the OS
//! took its CPU); the negative control turns the nap off and sees the
//! check fail (hundreds of wakes). A third test checks that work
//! conservation holds while the worker naps: a task spawned by a task that
//! then runs a loop without switching is taken by the napping worker.
//!
//! Only the sole spinner naps: with 4 workers and one busy, the first
//! version let all three idle workers nap (each ~a fifth of a CPU for
//! nothing); now at most one naps at a time (negative control: with the
//! limit off, several nap at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp::Runtime;
use usurp_sched::hooks;
use usurp_testsupport::within;

/// Serialises the tests (the counters and the switch are process-wide).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` in the calling task with a channel ping-pong partner: `f`'s
/// argument makes one round trip (a rendezvous send to an echo task and
/// the echo's reply); the echo task is joined after `f`.
fn with_echo<R>(f: impl FnOnce(&mut dyn FnMut(u64)) -> R) -> R {
    let (atx, arx) = usurp::sync_channel::<u64>(0);
    let (btx, brx) = usurp::sync_channel::<u64>(0);
    let echo = usurp::spawn(move || {
        for v in arx.iter() {
            btx.send(v).unwrap();
        }
    });
    let r = f(&mut |i| {
        atx.send(i).unwrap();
        assert_eq!(brx.recv().unwrap(), i);
    });
    drop(atx);
    echo.join().unwrap();
    r
}

/// What `ms` of channel ping-pong on `workers` workers did: idle-worker
/// wakes, round trips, and the most workers napping at once.
struct PingPong {
    wakes: usize,
    round_trips: u64,
    max_nappers: usize,
}

fn pingpong(workers: usize, ms: u64) -> PingPong {
    let rt = Runtime::builder().workers(workers).build().unwrap();
    rt.block_on(move || {
        with_echo(|round_trip| {
            // Settle first (the first hand-offs wake the idle worker).
            for i in 0..1000 {
                round_trip(i);
            }
            let before = hooks::idle_wake_calls_for_tests();
            hooks::take_max_concurrent_naps_for_tests();
            let round_trips = pingpong_for(round_trip, Duration::from_millis(ms));
            let wakes = hooks::idle_wake_calls_for_tests() - before;
            let max_nappers = hooks::take_max_concurrent_naps_for_tests();
            PingPong { wakes, round_trips, max_nappers }
        })
    })
}

/// Round trips for `d` (in batches of 100); returns how many.
fn pingpong_for(round_trip: &mut dyn FnMut(u64), d: Duration) -> u64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        for _ in 0..100 {
            round_trip(n);
            n += 1;
        }
    }
    n
}

/// Idle-worker wakes during `ms` of ping-pong on 2 workers, and the round
/// trips made.
fn wakes_during_pingpong(ms: u64) -> (usize, u64) {
    let p = pingpong(2, ms);
    (p.wakes, p.round_trips)
}

/// Few enough wakes for 300 ms: without the nap there is one per spin
/// (~100 us natively) plus the futex round trip.
const MAX_WAKES: usize = 100;

#[test]
fn a_busy_hand_off_loop_does_not_keep_waking_the_idle_worker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let naps = hooks::spin_naps_for_tests();
    let (wakes, n) = within(120, "ping-pong with nap", || wakes_during_pingpong(300));
    eprintln!("{wakes} idle-worker wakes in {n} round trips, {} naps", hooks::spin_naps_for_tests() - naps);
    assert!(n > 0);
    assert!(wakes <= MAX_WAKES, "{wakes} idle-worker wakes in 300 ms of ping-pong ({n} round trips)");
}

#[test]
fn negative_control_without_the_nap_the_idle_worker_is_woken_again_and_again() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (wakes, n) = within(120, "ping-pong without nap", || {
        hooks::set_spin_nap_for_tests(false);
        let r = wakes_during_pingpong(300);
        hooks::set_spin_nap_for_tests(true);
        r
    });
    eprintln!("nap off: {wakes} idle-worker wakes in {n} round trips");
    assert!(wakes > MAX_WAKES, "the nap was off, yet only {wakes} idle-worker wakes in 300 ms ({n} round trips)");
}

#[test]
fn a_task_left_in_runnext_by_a_looping_task_is_taken_by_the_napping_worker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let naps_before = hooks::spin_naps_for_tests();
    let (ran_alongside, naps) = within(120, "runnext while napping", move || {
        let rt = Runtime::builder().workers(2).build().unwrap();
        rt.block_on(move || {
            // Keep the other worker napping: a ping-pong for a while.
            with_echo(|round_trip| pingpong_for(round_trip, Duration::from_millis(50)));
            // Now spawn (into this worker's runnext) and loop without a
            // switch until the child has run: only another worker can run
            // it before this loop ends (it gives up after 10 s).
            let flag = Arc::new(AtomicBool::new(false));
            let f2 = flag.clone();
            let h = usurp::spawn(move || f2.store(true, Ordering::Release));
            let t = Instant::now();
            while !flag.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                std::hint::spin_loop();
            }
            let ran = flag.load(Ordering::Acquire);
            h.join().unwrap();
            (ran, hooks::spin_naps_for_tests() - naps_before)
        })
    });
    eprintln!("{naps} naps");
    assert!(ran_alongside, "the spawned task did not run while its spawner looped for 10 s");
}

/// The most workers napping at once during `ms` of ping-pong on 4 workers.
fn max_nappers_during_pingpong_on_4(ms: u64) -> usize {
    pingpong(4, ms).max_nappers
}

#[test]
fn only_one_idle_worker_naps_beside_a_busy_one() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let naps = hooks::spin_naps_for_tests();
    let most = within(120, "ping-pong on 4 workers", || max_nappers_during_pingpong_on_4(300));
    let naps = hooks::spin_naps_for_tests() - naps;
    eprintln!("at most {most} workers napping at once, {naps} naps");
    assert!(most <= 1, "{most} workers napped at once beside one busy worker");
}

#[test]
fn negative_control_without_the_sole_spinner_rule_several_workers_nap_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The three idle workers must spin at the same time for the control
    // to show anything; on a loaded machine they may not within one run:
    // up to 5 runs.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let most = within(120, "ping-pong on 4 workers, no limit", || {
            hooks::set_spin_nap_sole_for_tests(false);
            let r = max_nappers_during_pingpong_on_4(300);
            hooks::set_spin_nap_sole_for_tests(true);
            r
        });
        seen.push(most);
        if most >= 2 {
            break;
        }
    }
    eprintln!("limit off: most workers napping at once per run: {seen:?}");
    assert!(seen.iter().any(|&m| m >= 2), "the limit was off, yet never two workers napping at once: {seen:?}");
}

/// The longest of `n` stops of the world taken by a plain thread while a
/// ping-pong keeps one of 2 workers busy and the other napping, with naps
/// of 1 s (test hook) so that a stopper that waits for a nap to end shows.
fn longest_stop_beside_a_napper(n: usize) -> Duration {
    hooks::set_nap_ns_for_tests(1_000_000_000);
    // A quantum of 1 s: a preemption tick (a signal) would end the nap
    // early (EINTR) and hide a stopper that does not wake it.
    let rt = Arc::new(Runtime::builder().workers(2).quantum(Duration::from_secs(1)).build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (rt2, stop2) = (rt.clone(), stop.clone());
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50)); // the ping-pong settles
        let mut longest = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            rt2.stop_the_world();
            longest = longest.max(t.elapsed());
            rt2.start_the_world();
            std::thread::sleep(Duration::from_millis(5)); // the worker naps again
        }
        stop2.store(true, Ordering::Release);
        longest
    });
    rt.block_on(move || {
        with_echo(|round_trip| {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                round_trip(i);
                i += 1;
            }
        })
    });
    hooks::set_nap_ns_for_tests(0);
    stopper.join().unwrap()
}

/// A stopper wakes a napping worker (`stw.rs` `ask_to_stop`): the
/// review of the nap measured a napping worker parking for a stop at p50
/// 30 µs (up to its 50 µs nap, more under load) against 2 µs for an idle
/// one. With 1 s naps the stops stay far below a second.
#[test]
fn a_stop_wakes_a_napping_worker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let longest = within(120, "stops beside a napper", || longest_stop_beside_a_napper(5));
    eprintln!("longest of 5 stops beside a 1 s napper: {longest:?}");
    assert!(longest < Duration::from_millis(250), "a stop waited {longest:?} for a napping worker");
}

#[test]
fn negative_control_a_stopper_that_does_not_wake_the_napper_waits_for_its_nap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let longest = within(120, "stops beside a napper, no wake", || {
        hooks::set_stop_wakes_nappers_for_tests(false);
        let r = longest_stop_beside_a_napper(5);
        hooks::set_stop_wakes_nappers_for_tests(true);
        r
    });
    eprintln!("no wake: longest of 5 stops beside a 1 s napper: {longest:?}");
    assert!(longest >= Duration::from_millis(300), "the stops did not wait for the nap ({longest:?}): the control shows nothing");
}

/// How late a 1 ms sleep ends when the sleeper's worker then runs a task
/// that never switches (300 ms) and the other worker naps (1 s naps, 1 s
/// quantum: see `longest_stop_beside_a_napper`). The timer is added while
/// the other worker naps, timed from the old earliest timer; the monitor's
/// wake at the deadline leaves the work to that spinner.
fn sleep_lateness_beside_a_napper() -> Duration {
    hooks::set_nap_ns_for_tests(1_000_000_000);
    let rt = Runtime::builder().workers(2).quantum(Duration::from_secs(1)).build().unwrap();
    let late = rt.block_on(move || {
        // The other worker starts napping.
        with_echo(|round_trip| pingpong_for(round_trip, Duration::from_millis(50)));
        let sleeper = usurp::spawn(|| {
            let t = Instant::now();
            usurp::sleep(Duration::from_millis(1));
            t.elapsed().saturating_sub(Duration::from_millis(1))
        });
        usurp::yield_now(); // the sleeper runs here and adds its timer
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            std::hint::spin_loop();
        }
        sleeper.join().unwrap()
    });
    hooks::set_nap_ns_for_tests(0);
    late
}

#[test]
fn a_timer_added_during_a_nap_fires_on_time() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let late = within(120, "sleep beside a napper", sleep_lateness_beside_a_napper);
    eprintln!("1 ms sleep beside a 1 s napper: {late:?} late");
    assert!(late < Duration::from_millis(100), "the sleep ended {late:?} late");
}

#[test]
fn negative_control_a_timer_that_does_not_wake_the_napper_waits_for_its_nap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The nap's remaining time at the timer's add is anywhere in 0..1 s:
    // up to 3 runs for one late by 100 ms or more.
    let mut seen = Vec::new();
    hooks::set_timer_wakes_napper_for_tests(false);
    for _ in 0..3 {
        let late = within(120, "sleep beside a napper, no wake", sleep_lateness_beside_a_napper);
        seen.push(late);
        if late >= Duration::from_millis(100) {
            break;
        }
    }
    hooks::set_timer_wakes_napper_for_tests(true);
    eprintln!("no wake: 1 ms sleep beside a 1 s napper, late by {seen:?}");
    assert!(seen.iter().any(|&l| l >= Duration::from_millis(100)), "no late sleep without the wake: {seen:?}");
}
