//! The preemption path end to end on whichever arch crate this target uses
//! (x86-64 natively, aarch64 under qemu in CI): a task in a preemptible
//! Rust loop on a mini worker is preempted by timer ticks and targeted
//! requests, parked, resumed, and computes the right results.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usurp_preempt::arch;
use usurp_preempt::{preemptible, register_worker, request_preempt, set_park_hook, unregister_worker};
use usurp_preempt::{SpillFrame, TaskPreemptState, WorkerSlot};

use usurp_testsupport::scale_factor as scale;

preemptible! {
    fn mix(n: u64, seed: u64) -> u64 {
        let mut x = seed;
        for i in 0..n {
            x = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}

struct Ctx {
    worker_sp: usize,
    task_sp: usize,
}

thread_local! {
    static CTX: Cell<*mut Ctx> = const { Cell::new(std::ptr::null_mut()) };
}

static PARKS: AtomicU64 = AtomicU64::new(0);
static BAD_FRAMES: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static EXPECTED: AtomicU64 = AtomicU64::new(0);

unsafe fn park(frame: *mut SpillFrame) {
    let ctx = CTX.with(|c| c.get());
    // SAFETY: the frame is the live spill frame; ctx outlives the run.
    unsafe {
        let f = &*frame;
        let (lo, hi) = f.saved_range();
        if !(lo < hi && hi <= f.sp()) || f.gprs().is_empty() || f.pc() == 0 {
            BAD_FRAMES.fetch_add(1, Ordering::Relaxed);
        }
        PARKS.fetch_add(1, Ordering::Relaxed);
        arch::switch(&mut (*ctx).task_sp, (*ctx).worker_sp, 1);
    }
}

unsafe extern "C" fn entry(arg: usize, _: usize) -> ! {
    let ctx = arg as *mut Ctx;
    let want = EXPECTED.load(Ordering::Relaxed);
    while !STOP.load(Ordering::Relaxed) {
        if mix(20_000, 7) != want {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
        ROUNDS.fetch_add(1, Ordering::Relaxed);
    }
    let mut dead = 0;
    // SAFETY: ctx is alive.
    unsafe { arch::switch(&mut dead, (*ctx).worker_sp, 2) };
    unreachable!()
}

#[test]
fn a_preemptible_loop_is_preempted_and_resumes_correctly() {
    EXPECTED.store(mix(20_000, 7), Ordering::Relaxed);
    let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
    let worker = std::thread::spawn(move || {
        // SAFETY: `park` switches to this thread's scheduler context and
        // returns when the same thread resumes the task.
        unsafe { set_park_hook(park) };
        register_worker(slot, Duration::from_micros(200)).unwrap();
        let mut stack = vec![0u8; 256 * 1024];
        let lo = stack.as_mut_ptr() as usize;
        let hi = lo + stack.len();
        let ctx = Box::into_raw(Box::new(Ctx { worker_sp: 0, task_sp: 0 }));
        CTX.with(|c| c.set(ctx));
        slot.set_idle(false).unwrap();
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
            drop(Box::from_raw(ctx));
        }
        unregister_worker().unwrap();
        drop(stack);
    });
    while slot.tid() == 0 {
        std::thread::yield_now();
    }
    let need = ((200.0 * scale()) as u64).max(20);
    let t0 = Instant::now();
    while slot.stats().accepted < need && t0.elapsed() < Duration::from_secs(60) {
        let _ = request_preempt(slot);
        std::thread::sleep(Duration::from_micros(300));
    }
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    let st = slot.stats();
    eprintln!("{st:?}, rounds {}", ROUNDS.load(Ordering::Relaxed));
    assert_eq!(WRONG.load(Ordering::Relaxed), 0);
    assert_eq!(BAD_FRAMES.load(Ordering::Relaxed), 0);
    assert!(st.accepted >= need, "{st:?}");
    assert_eq!(PARKS.load(Ordering::Relaxed), st.accepted);
}
