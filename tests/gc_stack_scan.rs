//! Task stacks scanned one task at a time, outside the stops (issue 9 item
//! 2; `crates/sched/src/stack_scan.rs`): the start stop scans no task
//! stack; the collector claims the tasks that are not running, and whoever
//! resumes a task first scans it if the collector has not.
//!
//! * many parked and yielding tasks each hold the only reference to a tree
//!   in a local through collections (verifier on): nothing is lost, and
//!   the collector did scan stacks concurrently;
//! * a value handed through a channel from a task whose stack is not
//!   scanned yet (inside `blocking`, held back from the collector by a test
//!   hook) to a task already scanned survives; control: without the
//!   send-side shading it is freed; likewise a value captured by a closure
//!   such a task spawns during the mark (the new task's stack starts black);
//! * review finding 1: U inside `blocking` checks "a heap marks?" (no),
//!   then is held 300 ms (test hook) before its send publishes X; a
//!   collection starts meanwhile and V, the receiver, is scanned before X
//!   reaches it. With the check and the publication one step against the
//!   start stop (the shading gate) X survives; control: the pre-fix order
//!   (check outside the gate) frees X;
//! * a task resumed during the stack-scan phase is scanned before it runs;
//!   control: resumed without the claim (and held back from the collector),
//!   the tree only its running stack holds is freed;
//! * a task spinning in plain Rust code (no safe point) after the start
//!   stop holds up no stack scan: the scan phase ends long before the
//!   spinner does; only the termination stop waits for it.
//!
//! The tests flip process-wide switches: one at a time (`serial()`), each
//! switch restored by a drop guard.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usurp::gc::{Gc, GcRef, Heap, WeakRef};
use usurp_sched::hooks;
use usurp_testsupport::{scale, serial, wait_until, within};
use usurp_testsupport_gc::{count, manual, node, runtime, scrub, tree, Node};

/// Restores the process-wide switches and the hold on drop.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        hooks::set_send_shading_for_tests(true);
        hooks::set_resume_claim_for_tests(true);
        hooks::hold_stack_scan_for_tests(0);
        hooks::set_gated_publish_for_tests(true);
        hooks::set_publish_delay_for_tests(0);
        hooks::set_skip_stack_scans_for_tests(false);
    }
}

/// Addresses are kept XOR-ed where a test must not hold a reference.
const X: usize = 0x5a5a_5a5a_5a5a;

/// Many parked and yielding tasks each hold the only reference to a tree
/// in a local through collections (verifier on). `skip_scans` (negative
/// control): the collector and the resumers claim without scanning. Returns
/// the verifier's failures plus the trees found freed (weak references to
/// their roots cleared), and checks the trees when nothing is skipped.
fn parked_and_yielding(skip_scans: bool) -> u64 {
    let _restore = Restore;
    hooks::set_skip_stack_scans_for_tests(skip_scans);
    let rt = runtime(2, manual(1 << 30, true));
    let (by_collector0, _) = hooks::stack_scan_counts();
    let (cycles, stacks, failures) = rt.block_on(move || {
        let heap = Heap::current().unwrap();
        let tasks = scale(150).max(8);
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(usurp::sync::Mutex::new(()));
        let hold = gate.lock();
        let weaks: Arc<Mutex<Vec<WeakRef>>> = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..tasks)
            .map(|i| {
                let (stop, gate, weaks) = (stop.clone(), gate.clone(), weaks.clone());
                usurp::spawn(move || {
                    let t = tree(7);
                    let n = count(t);
                    let w = Heap::current().unwrap().weak(t.raw());
                    weaks.lock().unwrap().push(w);
                    if i % 2 == 0 {
                        // Parked on a mutex until the end.
                        drop(gate.lock());
                    } else {
                        // Yielding: resumed over and over during the
                        // stack-scan phases (races the collector's claims).
                        while !stop.load(Ordering::Relaxed) {
                            usurp::yield_now();
                        }
                    }
                    if skip_scans {
                        // The tree may be freed: do not walk it.
                        black_box(t);
                        return n;
                    }
                    assert_eq!(count(black_box(t)), n, "task {i}: its tree changed");
                    n
                })
            })
            .collect();
        if skip_scans {
            // The control frees what unscanned stacks hold: let every task
            // finish building and counting its tree first (a tree freed
            // half-built would be walked).
            while weaks.lock().unwrap().len() < tasks {
                usurp::yield_now();
            }
        }
        let mut cycles = 0;
        let mut stacks = 0;
        for _ in 0..scale(20).max(4) {
            // Garbage between collections, so that freed slots get reused.
            for _ in 0..200 {
                black_box(tree(3));
            }
            heap.collect();
            let last = heap.stats().last.unwrap();
            assert_eq!(last.bad_pointers, 0);
            stacks += last.stacks_scanned;
            cycles += 1;
        }
        while weaks.lock().unwrap().len() < tasks {
            usurp::yield_now();
        }
        let lost = weaks.lock().unwrap().iter().filter(|w| w.get().is_none()).count() as u64;
        stop.store(true, Ordering::Relaxed);
        drop(hold);
        for h in handles {
            assert_eq!(h.join().unwrap(), (1 << 8) - 1);
        }
        (cycles, stacks, heap.stats().verify_failures + lost)
    });
    if !skip_scans {
        let (by_collector, _) = hooks::stack_scan_counts();
        assert!(stacks > 0 && by_collector > by_collector0, "no stack was scanned by the collector concurrently");
    }
    assert!(cycles > 0);
    failures
}

#[test]
fn parked_and_yielding_tasks_lose_nothing() {
    let _s = serial();
    within(300, "parked_and_yielding_tasks_lose_nothing", || {
        assert_eq!(parked_and_yielding(false), 0, "a tree was freed or the verifier found a lost object");
    });
}

/// Negative control of the above: with the tasks claimed but not scanned
/// (collector and resumers), trees are freed.
#[test]
fn negative_control_unscanned_task_stacks_lose_trees() {
    let _s = serial();
    within(300, "negative_control_unscanned_task_stacks_lose_trees", || {
        assert!(parked_and_yielding(true) > 0, "with no task stack scanned no tree was freed: the test shows nothing");
    });
}

/// U (not scanned: inside `blocking`, held back from the collector) sends
/// the only reference to X to V (scanned already) during the mark; V keeps
/// it across the end of the cycle. Returns whether X survived.
fn handoff(shading: bool) -> bool {
    static U_ID: AtomicU64 = AtomicU64::new(0);
    static V_ID: AtomicU64 = AtomicU64::new(0);
    static WATCHING: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static U_IN_BLOCKING: AtomicBool = AtomicBool::new(false);
    for a in [&U_ID, &V_ID] {
        a.store(0, Ordering::SeqCst);
    }
    for b in [&WATCHING, &GO, &U_IN_BLOCKING] {
        b.store(false, Ordering::SeqCst);
    }
    let _restore = Restore;
    hooks::set_send_shading_for_tests(shading);
    let rt = runtime(2, manual(256 << 20, false));
    std::thread::scope(|s| {
        let rt = &rt;
        // The watcher: once the cycle began (new epoch) and V's stack is
        // scanned, let U send.
        s.spawn(move || {
            wait_until(Duration::from_secs(60), "both tasks started", || {
                U_ID.load(Ordering::SeqCst) != 0 && V_ID.load(Ordering::SeqCst) != 0
            });
            let e0 = hooks::stack_scan_epoch(rt);
            WATCHING.store(true, Ordering::SeqCst);
            wait_until(Duration::from_secs(60), "V scanned in the new cycle", || {
                hooks::stack_scan_epoch(rt) > e0 && hooks::task_stack_scanned(rt, V_ID.load(Ordering::SeqCst)) == Some(true)
            });
            GO.store(true, Ordering::SeqCst);
        });
        rt.block_on(|| {
            let heap = Heap::current().unwrap();
            let weak: Arc<Mutex<Option<WeakRef>>> = Arc::new(Mutex::new(None));
            let (tx, rx) = usurp::channel::<GcRef>();
            let (done_tx, done_rx) = usurp::channel::<()>();
            let v = {
                let weak = weak.clone();
                usurp::spawn(move || {
                    V_ID.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                    let x = rx.recv().unwrap();
                    done_rx.recv().unwrap();
                    // After the cycle: X must still be there.
                    x_survived(&weak, x)
                })
            };
            let u = {
                let weak = weak.clone();
                let heap = heap.clone();
                usurp::spawn(move || {
                    let xs = make_x(&heap, &weak);
                    // Zeros below this frame: no stale copy of X's address
                    // is left where the frames of `blocking` will lie, above
                    // the SP it records, which U's scan reads.
                    scrub::<4096>();
                    U_ID.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                    usurp::blocking(move || {
                        U_IN_BLOCKING.store(true, Ordering::SeqCst);
                        wait_until(Duration::from_secs(60), "GO", || GO.load(Ordering::SeqCst));
                        send_deep(&tx, xs);
                    });
                })
            };
            while !(U_IN_BLOCKING.load(Ordering::SeqCst) && V_ID.load(Ordering::SeqCst) != 0) {
                usurp::yield_now();
            }
            hooks::hold_stack_scan_for_tests(U_ID.load(Ordering::SeqCst));
            while !WATCHING.load(Ordering::SeqCst) {
                usurp::yield_now();
            }
            heap.collect();
            hooks::hold_stack_scan_for_tests(0);
            let st = heap.stats().last.unwrap();
            assert!(st.stack_scan > Duration::ZERO, "the cycle did not scan stacks one task at a time");
            done_tx.send(()).unwrap();
            u.join().unwrap();
            v.join().unwrap()
        })
    })
}

/// X, allocated and then held only XOR-ed (no reference on any stack).
#[inline(never)]
fn make_x(heap: &Heap, weak: &Mutex<Option<WeakRef>>) -> usize {
    let x = node(0xfeed, None, None);
    *weak.lock().unwrap() = Some(heap.weak(x.raw()));
    x.raw().addr() ^ X
}

/// After the cycle: whether X (`x`, its weak reference `weak`) survived;
/// if it did, its contents are intact.
fn x_survived(weak: &Mutex<Option<WeakRef>>, x: GcRef) -> bool {
    let alive = weak.lock().unwrap().as_ref().unwrap().get().is_some();
    if alive {
        assert_eq!(Gc::<Node>::from_ref(black_box(x)).unwrap().val, 0xfeed);
    }
    alive
}

/// Sends X from deep below the caller's frames (so no copy of it lands
/// where a later scan of the sender's stack would find it).
#[inline(never)]
fn send_deep(tx: &usurp::Sender<GcRef>, xs: usize) {
    let pad = [0usize; 512];
    black_box(&pad);
    // SAFETY: X is live: nothing can free it before this send (the cycle in
    // progress waits for this task's stack scan, which comes after it).
    // (Not `Heap::object_at`: it would shade X itself.)
    let x = unsafe { GcRef::from_addr(black_box(xs) ^ X) }.expect("X's address");
    tx.send(x).unwrap();
}

/// Review finding 1: U (inside `blocking`, no mutator) sends the only
/// reference to X; its marking check finds no mark, then a test hook holds
/// it 300 ms before the push while a collection begins (V, parked in
/// `recv`, is scanned at once, empty-handed). V keeps X across the end of
/// the cycle. Returns whether X survived.
fn check_then_publish_race(gated: bool) -> bool {
    static V_ID: AtomicU64 = AtomicU64::new(0);
    V_ID.store(0, Ordering::SeqCst);
    let _restore = Restore;
    hooks::set_gated_publish_for_tests(gated);
    let rt = runtime(2, manual(256 << 20, false));
    rt.block_on(|| {
        let heap = Heap::current().unwrap();
        let weak: Arc<Mutex<Option<WeakRef>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = usurp::channel::<GcRef>();
        let (done_tx, done_rx) = usurp::channel::<()>();
        let v = {
            let weak = weak.clone();
            usurp::spawn(move || {
                V_ID.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                let x = rx.recv().unwrap();
                done_rx.recv().unwrap();
                x_survived(&weak, x)
            })
        };
        while V_ID.load(Ordering::SeqCst) == 0 {
            usurp::yield_now();
        }
        // Only publications on threads without a mutator are delayed.
        hooks::set_publish_delay_for_tests(300);
        let u = {
            let weak = weak.clone();
            let heap = heap.clone();
            usurp::spawn(move || {
                let xs = make_x(&heap, &weak);
                scrub::<4096>();
                usurp::blocking(move || send_deep(&tx, xs));
            })
        };
        let t0 = Instant::now();
        while !hooks::publish_delayed_for_tests() {
            assert!(t0.elapsed() < Duration::from_secs(60), "U never reached its send");
            usurp::yield_now();
        }
        heap.collect();
        let st = heap.stats().last.unwrap();
        assert!(st.stack_scan > Duration::ZERO, "the cycle did not scan stacks one task at a time");
        done_tx.send(()).unwrap();
        u.join().unwrap();
        v.join().unwrap()
    })
}

#[test]
fn send_from_blocking_racing_the_start_stop_survives() {
    let _s = serial();
    within(300, "send_from_blocking_racing_the_start_stop_survives", || {
        assert!(check_then_publish_race(true), "the value a blocking closure sent during the start stop was freed");
    });
}

#[test]
fn negative_control_send_from_blocking_checked_outside_the_gate_is_freed() {
    let _s = serial();
    within(300, "negative_control_send_from_blocking_checked_outside_the_gate_is_freed", || {
        assert!(
            !check_then_publish_race(false),
            "with the marking check outside the gate the value survived: the test shows nothing"
        );
    });
}

#[test]
fn channel_handoff_from_an_unscanned_stack_survives() {
    let _s = serial();
    within(300, "channel_handoff_from_an_unscanned_stack_survives", || {
        assert!(handoff(true), "the value handed through the channel was freed");
    });
}

#[test]
fn negative_control_handoff_without_send_shading_is_freed() {
    let _s = serial();
    within(300, "negative_control_handoff_without_send_shading_is_freed", || {
        assert!(!handoff(false), "without the send-side shading the handed-off value survived: the test shows nothing");
    });
}

/// U (not scanned: inside `blocking`, held back from the collector)
/// spawns, during the mark, a task W whose closure captures the only
/// reference to X; W starts with a black stack, takes X onto it and keeps
/// it across the end of the cycle. Returns whether X survived.
fn spawn_handoff(shading: bool) -> bool {
    static U_ID: AtomicU64 = AtomicU64::new(0);
    static WATCHING: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static U_IN_BLOCKING: AtomicBool = AtomicBool::new(false);
    U_ID.store(0, Ordering::SeqCst);
    for b in [&WATCHING, &GO, &U_IN_BLOCKING] {
        b.store(false, Ordering::SeqCst);
    }
    let _restore = Restore;
    hooks::set_send_shading_for_tests(shading);
    let rt = runtime(2, manual(256 << 20, false));
    std::thread::scope(|s| {
        let rt = &rt;
        // The watcher: once the cycle began (new epoch), let U spawn.
        s.spawn(move || {
            wait_until(Duration::from_secs(60), "U started", || U_ID.load(Ordering::SeqCst) != 0);
            let e0 = hooks::stack_scan_epoch(rt);
            WATCHING.store(true, Ordering::SeqCst);
            wait_until(Duration::from_secs(60), "the cycle began", || hooks::stack_scan_epoch(rt) > e0);
            GO.store(true, Ordering::SeqCst);
        });
        rt.block_on(|| {
            let heap = Heap::current().unwrap();
            let weak: Arc<Mutex<Option<WeakRef>>> = Arc::new(Mutex::new(None));
            let (done_tx, done_rx) = usurp::channel::<()>();
            let (w_tx, w_rx) = std::sync::mpsc::channel();
            let u = {
                let weak = weak.clone();
                let heap = heap.clone();
                usurp::spawn(move || {
                    let xs = make_x(&heap, &weak);
                    // Zeros below this frame: no stale copy of X's address
                    // is left where the frames of `blocking` will lie, above
                    // the SP it records, which U's scan reads.
                    scrub::<4096>();
                    U_ID.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                    usurp::blocking(move || {
                        U_IN_BLOCKING.store(true, Ordering::SeqCst);
                        wait_until(Duration::from_secs(60), "GO", || GO.load(Ordering::SeqCst));
                        w_tx.send(spawn_deep(xs, weak, done_rx)).unwrap();
                    });
                })
            };
            while !U_IN_BLOCKING.load(Ordering::SeqCst) {
                usurp::yield_now();
            }
            hooks::hold_stack_scan_for_tests(U_ID.load(Ordering::SeqCst));
            while !WATCHING.load(Ordering::SeqCst) {
                usurp::yield_now();
            }
            heap.collect();
            hooks::hold_stack_scan_for_tests(0);
            done_tx.send(()).unwrap();
            u.join().unwrap();
            let w = w_rx.recv().unwrap();
            w.join().unwrap()
        })
    })
}

/// Spawns W with X in its closure, from deep below the caller's frames.
#[inline(never)]
fn spawn_deep(
    xs: usize,
    weak: Arc<Mutex<Option<WeakRef>>>,
    done_rx: usurp::Receiver<()>,
) -> usurp::JoinHandle<bool> {
    let pad = [0usize; 512];
    black_box(&pad);
    // SAFETY: as in `send_deep`.
    let x = unsafe { GcRef::from_addr(black_box(xs) ^ X) }.expect("X's address");
    usurp::spawn(move || {
        let x = black_box(x);
        done_rx.recv().unwrap();
        x_survived(&weak, x)
    })
}

#[test]
fn spawn_closure_from_an_unscanned_stack_survives() {
    let _s = serial();
    within(300, "spawn_closure_from_an_unscanned_stack_survives", || {
        assert!(spawn_handoff(true), "the value captured by a closure spawned during the mark was freed");
    });
}

#[test]
fn negative_control_spawn_closure_without_shading_is_freed() {
    let _s = serial();
    within(300, "negative_control_spawn_closure_without_shading_is_freed", || {
        assert!(!spawn_handoff(false), "without the spawn-side shading the captured value survived: the test shows nothing");
    });
}

/// T holds a tree only in its locals and runs (plain code, polling
/// `checkpoint`) through a collection: it is switched out by the start
/// stop and resumed right after, before the collector (held back from it
/// by the test hook) can claim it. Returns whether the tree survived.
/// The control (`claim` false) also changes the collector's side: it then
/// counts a running unscanned task as scanned (it cannot read a running
/// stack), so the cycle does not wait for the task.
fn resumed_during_scan(claim: bool) -> bool {
    let _restore = Restore;
    hooks::set_resume_claim_for_tests(claim);
    let rt = runtime(2, manual(256 << 20, false));
    rt.block_on(|| {
        let heap = Heap::current().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));
        let t_id = Arc::new(AtomicU64::new(0));
        let t = {
            let (stop, running, t_id, heap) = (stop.clone(), running.clone(), t_id.clone(), heap.clone());
            usurp::spawn(move || {
                t_id.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                let tr = tree(6);
                let w = heap.weak(tr.raw());
                running.store(true, Ordering::SeqCst);
                let mut spins = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    spins = black_box(spins + 1);
                    usurp::checkpoint();
                }
                let alive = w.get().is_some();
                if alive {
                    assert_eq!(count(black_box(tr)), (1 << 7) - 1);
                }
                alive
            })
        };
        while !running.load(Ordering::SeqCst) {
            usurp::yield_now();
        }
        hooks::hold_stack_scan_for_tests(t_id.load(Ordering::SeqCst));
        heap.collect();
        hooks::hold_stack_scan_for_tests(0);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap()
    })
}

#[test]
fn task_resumed_during_the_scan_is_scanned_first() {
    let _s = serial();
    within(300, "task_resumed_during_the_scan_is_scanned_first", || {
        let (_, r0) = hooks::stack_scan_counts();
        assert!(resumed_during_scan(true), "a task resumed during the stack-scan phase lost its tree");
        let (_, r1) = hooks::stack_scan_counts();
        assert!(r1 > r0, "no stack was scanned by a resumer");
    });
}

#[test]
fn negative_control_resume_without_claim_loses_the_tree() {
    let _s = serial();
    within(300, "negative_control_resume_without_claim_loses_the_tree", || {
        assert!(!resumed_during_scan(false), "resumed without the claim, the tree survived: the test shows nothing");
    });
}

/// A task spinning without a safe point for 300 ms from right after the
/// start stop, while the stack-scan phase lasts ~50 ms more (another task,
/// held back from the collector, is scanned only when it leaves `blocking`
/// 50 ms into the spin): the phase ends without waiting for the spinner
/// (it was scanned when it resumed), a 1 ms sleeper on the third worker
/// keeps waking during it, and only the termination stop waits for the
/// spinner. No negative control: under this design a running task is
/// always scanned already (when it resumed), so no switch makes the
/// stack-scan phase wait for a spinner; the test guards against a change
/// that would (e.g. a targeted stop of running tasks).
#[test]
fn spinner_in_plain_code_holds_up_no_stack_scan() {
    static EPOCH0: AtomicU64 = AtomicU64::new(u64::MAX);
    static EPOCH: AtomicU64 = AtomicU64::new(0);
    static SPINNING: AtomicBool = AtomicBool::new(false);
    static WAKES: AtomicU64 = AtomicU64::new(0);
    static WAKES_AT_SPIN: AtomicU64 = AtomicU64::new(0);
    static WAKES_AT_RELEASE: AtomicU64 = AtomicU64::new(0);
    let _s = serial();
    within(300, "spinner_in_plain_code_holds_up_no_stack_scan", || {
        let _restore = Restore;
        let rt = runtime(3, manual(256 << 20, false));
        let rt_ref = &rt;
        let quit = AtomicBool::new(false);
        let quit_ref = &quit;
        let (stack_scan, spun, stops, wakes) = std::thread::scope(|s| {
            // Publishes the epoch, so that the spinner sees the cycle begin.
            s.spawn(move || {
                while !quit_ref.load(Ordering::Relaxed) {
                    EPOCH.store(hooks::stack_scan_epoch(rt_ref), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(50));
                }
            });
            let r = rt.block_on(move || {
                let heap = Heap::current().unwrap();
                let spin_for = Duration::from_millis(300);
                // (A new runtime's epoch is 0 until its first cycle.)
                EPOCH0.store(EPOCH.load(Ordering::SeqCst), Ordering::SeqCst);
                let armed = Arc::new(AtomicBool::new(false));
                let spinner = {
                    let armed = armed.clone();
                    usurp::spawn(move || {
                        armed.store(true, Ordering::SeqCst);
                        // Yield until the cycle's start stop has passed
                        // (each resume goes through the claim).
                        while EPOCH.load(Ordering::SeqCst) <= EPOCH0.load(Ordering::SeqCst) {
                            usurp::yield_now();
                        }
                        WAKES_AT_SPIN.store(WAKES.load(Ordering::SeqCst), Ordering::SeqCst);
                        SPINNING.store(true, Ordering::SeqCst);
                        let t0 = Instant::now();
                        let mut x = 0u64;
                        while t0.elapsed() < spin_for {
                            x = black_box(x.wrapping_add(1));
                        }
                        t0.elapsed()
                    })
                };
                // Held back from the collector; scanned when it leaves
                // `blocking`, 50 ms into the spin: the phase lasts that long.
                let h_id = Arc::new(AtomicU64::new(0));
                let held = {
                    let h_id = h_id.clone();
                    usurp::spawn(move || {
                        h_id.store(usurp::task::id().unwrap(), Ordering::SeqCst);
                        usurp::blocking(|| {
                            wait_until(Duration::from_secs(60), "the spinner started", || {
                                SPINNING.load(Ordering::SeqCst)
                            });
                            std::thread::sleep(Duration::from_millis(50));
                            WAKES_AT_RELEASE.store(WAKES.load(Ordering::SeqCst), Ordering::SeqCst);
                        });
                    })
                };
                let stop_sleeper = Arc::new(AtomicBool::new(false));
                let sleeper = {
                    let stop = stop_sleeper.clone();
                    usurp::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            usurp::task::sleep(Duration::from_millis(1));
                            WAKES.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                };
                while !armed.load(Ordering::SeqCst) || h_id.load(Ordering::SeqCst) == 0 {
                    usurp::yield_now();
                }
                hooks::hold_stack_scan_for_tests(h_id.load(Ordering::SeqCst));
                heap.collect();
                hooks::hold_stack_scan_for_tests(0);
                let st = heap.stats().last.unwrap();
                let spun = spinner.join().unwrap();
                held.join().unwrap();
                stop_sleeper.store(true, Ordering::Relaxed);
                sleeper.join().unwrap();
                let wakes = WAKES_AT_RELEASE.load(Ordering::SeqCst) - WAKES_AT_SPIN.load(Ordering::SeqCst);
                (st.stack_scan, spun, st.stops, wakes)
            });
            quit.store(true, Ordering::Relaxed);
            r
        });
        eprintln!("stack scan {stack_scan:?}, spinner {spun:?}, stops {stops:?}, sleeper wakes during the spin's scan phase {wakes}");
        assert!(spun >= Duration::from_millis(300));
        // (The phase is timed from the restart's return, which can come a
        // few ms after the tasks ran again: less than the held task's 50 ms.)
        assert!(stack_scan >= Duration::from_millis(10), "the scan phase did not wait for the held task");
        assert!(
            stack_scan < Duration::from_millis(200),
            "the stack-scan phase took {stack_scan:?}: it waited for the spinner"
        );
        // (At least twice in 50 ms: a loose bound, the machine may be loaded.)
        assert!(wakes >= 2, "the 1 ms sleeper woke only {wakes} times in the 50 ms of the scan phase");
        let longest = stops.iter().max().copied().unwrap_or_default();
        assert!(
            longest >= Duration::from_millis(50),
            "no stop waited for the spinner (stops {stops:?}): it did not spin through the cycle"
        );
    });
}
