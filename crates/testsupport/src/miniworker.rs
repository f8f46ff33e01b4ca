//! The one-thread preemption harness: a minimal "worker" for end-to-end
//! tests of the preemption mechanism without the scheduler (usurp-preempt's
//! integration tests; written once here, issue 13 item 5). One OS thread
//! registers a `WorkerSlot`, runs one task on its own stack with the arch
//! `switch`, and installs a park hook that switches back to the worker; the
//! worker then (optionally) clobbers every register and switches back into
//! the preempted task. Also: a requester thread for targeted requests, a
//! frame-pointer chain check for preempted tasks, and a preemptible spin
//! loop.
//!
//! State: the park hook is process-wide (`set_park_hook`), so one test
//! binary uses one harness; each mini worker's `Ctx` is reached through a
//! thread-local of its own thread and touched only by that thread.
// `%` instead of is_multiple_of: the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of, clippy::type_complexity)]

use std::cell::Cell;
use std::time::Duration;

use usurp_preempt::arch;
use usurp_preempt::internals::{register_worker, set_park_hook, unregister_worker, TaskPreemptState, WorkerSlot};
use usurp_preempt::SpillFrame;

const PARKED: usize = 1;
const DONE: usize = 2;

pub type ParkFn = Box<dyn FnMut(&SpillFrame, &Ctx)>;

pub struct Ctx {
    worker_sp: usize,
    task_sp: usize,
    pub stack_lo: usize,
    pub stack_hi: usize,
    body: Option<Box<dyn FnOnce()>>,
    on_park: Option<ParkFn>,
    pub parks: u64,
}

thread_local! {
    static CTX: Cell<*mut Ctx> = const { Cell::new(std::ptr::null_mut()) };
}

#[inline(never)]
fn ctx_ptr() -> *mut Ctx {
    CTX.with(|c| c.get())
}

/// The park hook: runs on the task's stack, same OS thread as the worker.
unsafe fn park(frame: *mut SpillFrame) {
    let ctx = ctx_ptr();
    assert!(!ctx.is_null(), "park hook outside a mini worker");
    // SAFETY: ctx is alive for the whole run; only this thread touches it.
    unsafe {
        if let Some(mut f) = (*ctx).on_park.take() {
            f(&*frame, &*ctx);
            (*ctx).on_park = Some(f);
        }
        (*ctx).parks += 1;
        arch::switch(&mut (*ctx).task_sp, (*ctx).worker_sp, PARKED);
    }
}

unsafe extern "C" fn entry(arg: usize, _first: usize) -> ! {
    let ctx = arg as *mut Ctx;
    // SAFETY: ctx is alive; the body runs once.
    unsafe {
        let body = (*ctx).body.take().expect("body");
        body();
        let mut dead = 0usize;
        arch::switch(&mut dead, (*ctx).worker_sp, DONE);
    }
    unreachable!("finished task resumed")
}

/// Loads junk into every GPR the ABI lets us touch, every YMM register and
/// MXCSR, so that anything the spill routine failed to restore would show.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn clobber_all() {
    // SAFETY: only registers declared as clobbered are changed; rbx is saved
    // and restored around its junk value; MXCSR is restored.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "sub rsp, 8",
            "stmxcsr [rsp]",
            "mov rbx, 0x0bad0bad0bad0bad",
            "mov rax, 0x0bad0bad0bad0bad",
            "mov rcx, rax", "mov rdx, rax", "mov rsi, rax", "mov rdi, rax",
            "mov r8, rax", "mov r9, rax", "mov r10, rax", "mov r11, rax",
            "mov r12, rax", "mov r13, rax", "mov r14, rax", "mov r15, rax",
            "vpcmpeqd ymm0, ymm0, ymm0", "vpcmpeqd ymm1, ymm1, ymm1", "vpcmpeqd ymm2, ymm2, ymm2",
            "vpcmpeqd ymm3, ymm3, ymm3", "vpcmpeqd ymm4, ymm4, ymm4", "vpcmpeqd ymm5, ymm5, ymm5",
            "vpcmpeqd ymm6, ymm6, ymm6", "vpcmpeqd ymm7, ymm7, ymm7", "vpcmpeqd ymm8, ymm8, ymm8",
            "vpcmpeqd ymm9, ymm9, ymm9", "vpcmpeqd ymm10, ymm10, ymm10", "vpcmpeqd ymm11, ymm11, ymm11",
            "vpcmpeqd ymm12, ymm12, ymm12", "vpcmpeqd ymm13, ymm13, ymm13", "vpcmpeqd ymm14, ymm14, ymm14",
            "vpcmpeqd ymm15, ymm15, ymm15",
            "push 0x3f80",
            "ldmxcsr [rsp]",
            "add rsp, 8",
            "ldmxcsr [rsp]",
            "add rsp, 8",
            "pop rbx",
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("r13") _,
            out("r14") _, out("r15") _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
            out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        );
    }
}

pub struct RunConfig {
    pub quantum: Duration,
    pub stack_bytes: usize,
    /// Pretend the task's stack starts this many bytes below its top (to
    /// provoke stack-room refusals).
    pub declared_stack: Option<usize>,
    pub clobber: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { quantum: Duration::from_micros(100), stack_bytes: 512 * 1024, declared_stack: None, clobber: true }
    }
}

pub fn new_slot() -> &'static WorkerSlot {
    Box::leak(Box::new(WorkerSlot::new()))
}

/// Runs `body` as a task on a new mini worker thread registered with `slot`.
/// Returns the number of parks (async preemptions that reached the hook).
pub fn spawn_mini_worker(
    slot: &'static WorkerSlot,
    cfg: RunConfig,
    body: Box<dyn FnOnce() + Send>,
    on_park: Option<Box<dyn FnMut(&SpillFrame, &Ctx) + Send>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        // SAFETY: `park` switches to this thread's scheduler context and
        // returns when the same thread resumes the task.
        unsafe { set_park_hook(park) };
        register_worker(slot, cfg.quantum).expect("register_worker");
        let mut stack = vec![0u8; cfg.stack_bytes];
        let lo = stack.as_mut_ptr() as usize;
        let hi = lo + stack.len();
        let declared_lo = match cfg.declared_stack {
            Some(n) => hi - n,
            None => lo + 4096,
        };
        let body: Box<dyn FnOnce()> = body;
        let on_park: Option<ParkFn> = on_park.map(|f| f as ParkFn);
        let ctx = Box::into_raw(Box::new(Ctx {
            worker_sp: 0,
            task_sp: 0,
            stack_lo: declared_lo,
            stack_hi: hi,
            body: Some(body),
            on_park,
            parks: 0,
        }));
        CTX.with(|c| c.set(ctx));
        // SAFETY: the stack outlives the task (we run it to completion); ctx
        // is only used by this thread.
        unsafe {
            (*ctx).task_sp = arch::init_stack(hi, entry, ctx as usize);
            slot.set_idle(false).expect("arm timer");
            let mut st = TaskPreemptState::default();
            loop {
                slot.switch_in(declared_lo, hi, st);
                let r = arch::switch(&mut (*ctx).worker_sp, (*ctx).task_sp, 0);
                st = slot.switch_out();
                if r == DONE {
                    break;
                }
                assert_eq!(r, PARKED);
                // The x86-64 clobber exercises register restoration on the
                // way back in; on aarch64 that is covered by the arch crate's
                // tests/spill.rs and tests/preempt_registers.rs.
                #[cfg(target_arch = "x86_64")]
                if cfg.clobber && std::is_x86_feature_detected!("avx") {
                    clobber_all();
                }
            }
            slot.set_idle(true).expect("disarm timer");
            CTX.with(|c| c.set(std::ptr::null_mut()));
            let parks = (*ctx).parks;
            drop(Box::from_raw(ctx));
            unregister_worker().expect("unregister");
            drop(stack);
            parks
        }
    })
}

/// Sends targeted requests to `slot` until `stop` is set.
pub fn spawn_requester(
    slot: &'static WorkerSlot,
    stop: &'static std::sync::atomic::AtomicBool,
    pause: Duration,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut sent = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(true) = usurp_preempt::internals::request_preempt(slot) {
                sent += 1;
            }
            std::thread::sleep(pause);
        }
        sent
    })
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn usurp_x86_64_trampoline();
}

/// Address of the arch crate's task trampoline (the caller of every task
/// entry function) and the span of bytes after it that a return into it may
/// land in.
#[cfg(target_arch = "x86_64")]
fn trampoline() -> (usize, usize) {
    (usurp_x86_64_trampoline as *const () as usize, 32)
}

#[cfg(target_arch = "aarch64")]
extern "C" {
    fn usurp_aarch64_trampoline();
}

#[cfg(target_arch = "aarch64")]
fn trampoline() -> (usize, usize) {
    (usurp_aarch64_trampoline as *const () as usize, 16)
}

/// Walks the frame-pointer chain of a preempted task from its spill frame.
/// Checks: the spill frame's own record links to the interrupted PC; every
/// frame record lies on the task's stack at increasing addresses; every
/// return address follows a call instruction; the chain ends with a zero
/// frame pointer whose return address is in the task trampoline (the task's
/// entry was called from there). Returns the number of frames.
pub fn check_backtrace(frame: &SpillFrame, lo: usize, hi: usize) -> Result<usize, String> {
    let rec = frame.frame_record();
    // SAFETY: the spill frame record is on the live task stack.
    let (rec_fp, rec_pc) = unsafe { (*(rec as *const usize), *((rec + 8) as *const usize)) };
    if rec_fp != frame.fp() || rec_pc != frame.pc() {
        return Err(format!("spill record {rec_fp:#x}/{rec_pc:#x} vs fp {:#x} pc {:#x}", frame.fp(), frame.pc()));
    }
    let mut fp = frame.fp();
    let mut depth = 0;
    let mut last_ret = 0;
    while fp != 0 {
        if fp % 8 != 0 || fp < frame.sp() || fp < lo || fp + 16 > hi {
            return Err(format!("frame {depth}: fp {fp:#x} outside stack {lo:#x}..{hi:#x} (sp {:#x})", frame.sp()));
        }
        // SAFETY: fp is inside the task's stack (checked).
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        // SAFETY: a return address points into mapped code; the 16 bytes
        // before it belong to the calling function.
        let before = unsafe { std::slice::from_raw_parts((ret - 16) as *const u8, 16) };
        if !arch::is_after_call(before, ret) {
            return Err(format!("frame {depth}: return address {ret:#x} does not follow a call"));
        }
        if next != 0 && next <= fp {
            return Err(format!("frame {depth}: chain goes down {fp:#x} -> {next:#x}"));
        }
        depth += 1;
        last_ret = ret;
        fp = next;
        if depth > 64 {
            return Err("chain too long".into());
        }
    }
    let (t, span) = trampoline();
    if !(t < last_ret && last_ret < t + span) {
        return Err(format!("chain ends at {last_ret:#x}, not in the task trampoline at {t:#x}"));
    }
    Ok(depth)
}

/// Runs `body(stop)` on a mini worker with a requester sending targeted
/// requests, until `done(stats)` holds or `timeout` passes; then sets `stop`
/// (the body must return soon after) and returns (parks, final stats).
pub fn run_until(
    cfg: RunConfig,
    body: impl FnOnce(&'static std::sync::atomic::AtomicBool) + Send + 'static,
    on_park: Option<Box<dyn FnMut(&SpillFrame, &Ctx) + Send>>,
    done: impl Fn(&usurp_preempt::PreemptStats) -> bool,
    timeout: Duration,
) -> (u64, usurp_preempt::PreemptStats) {
    let stop: &'static std::sync::atomic::AtomicBool = Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    let slot = new_slot();
    let worker = spawn_mini_worker(slot, cfg, Box::new(move || body(stop)), on_park);
    let requester = spawn_requester(slot, stop, Duration::from_micros(50));
    let t0 = std::time::Instant::now();
    while !done(&slot.stats()) && t0.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let parks = worker.join().expect("worker panicked");
    requester.join().expect("requester panicked");
    (parks, slot.stats())
}

usurp_preempt::preemptible! {
    /// A tight loop with no calls (preemptible).
    pub fn spin(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}
