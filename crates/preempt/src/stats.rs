//! Counters: accepted preemptions and refusals per reason.

use core::sync::atomic::{AtomicU64, Ordering};

/// Why the safe-point check refused an asynchronous preemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Refusal {
    /// The worker was not running a task (scheduler code, idle).
    NotRunning = 0,
    /// The task was inside a [`crate::no_preempt`] section.
    NoPreempt,
    /// `USURP_DEBUG=asyncpreemptoff=1`.
    AsyncOff,
    /// No park hook was installed with [`crate::set_park_hook`].
    NoParkHook,
    /// The PC was outside registered preemptible code.
    NotPreemptibleCode,
    /// The PC was inside a (non-restartable) unsafe range.
    UnsafeRange,
    /// A registry entry was being updated at that moment.
    RegistryBusy,
    /// The current function's frame was not yet built.
    Prologue,
    /// The current function's frame was already torn down.
    Epilogue,
    /// The bytes at the PC did not decode within the registered region.
    Undecodable,
    /// A system call, software interrupt, or other instruction the arch
    /// classifier rejects.
    UnsafeInstruction,
    /// Too little stack below SP for the spill frame and the park path, or SP
    /// outside the task's stack bounds.
    StackRoom,
    /// The thread held register state the spill routine cannot save (on
    /// aarch64: SME streaming mode, live ZA/ZT0, an SVE record too large
    /// for the spill frame, an unparsable signal frame).
    VectorState,
    /// A user shadow stack is active (x86-64 CET SHSTK, aarch64 GCS): the
    /// spill routine's return (x86-64 `ret`) or `rt_sigreturn` (aarch64)
    /// would not match it.
    ShadowStack,
    /// The signal handler was not running on an alternate signal stack (the
    /// thread's sigaltstack was disabled or replaced by one on the task's
    /// stack): the kernel's signal frame lies on the task's stack, where the
    /// injection would write.
    HandlerOnTaskStack,
}

impl Refusal {
    /// Number of reasons.
    pub const COUNT: usize = 15;
    /// All reasons, in index order.
    pub const ALL: [Refusal; Refusal::COUNT] = [
        Refusal::NotRunning,
        Refusal::NoPreempt,
        Refusal::AsyncOff,
        Refusal::NoParkHook,
        Refusal::NotPreemptibleCode,
        Refusal::UnsafeRange,
        Refusal::RegistryBusy,
        Refusal::Prologue,
        Refusal::Epilogue,
        Refusal::Undecodable,
        Refusal::UnsafeInstruction,
        Refusal::StackRoom,
        Refusal::VectorState,
        Refusal::ShadowStack,
        Refusal::HandlerOnTaskStack,
    ];
}

/// A snapshot of preemption counters (per worker, or summed over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreemptStats {
    /// Asynchronous preemptions injected.
    pub accepted: u64,
    /// Of those, how many backed the PC up to a restartable range's start.
    pub restarted: u64,
    /// Refusals, indexed by `Refusal as usize`.
    pub refused: [u64; Refusal::COUNT],
    /// Timer signals handled.
    pub ticks: u64,
    /// Targeted requests sent with tgkill.
    pub requests_sent: u64,
    /// Targeted requests whose signal the handler has processed.
    pub acks: u64,
    /// Cooperative yields at [`crate::checkpoint`] (the checkpoint flag was
    /// set: by a refused asynchronous attempt, or by a request).
    pub checkpoint_yields: u64,
    /// Of those, the ones whose flag a refused attempt had set: how often a
    /// task left the CPU cooperatively because it could not be preempted.
    pub yields_after_refusal: u64,
    /// Quantum ticks that retried an earlier refused tick of the same task
    /// (the task stayed in non-preemptible code), refused again.
    pub refusal_retries: u64,
    /// Of those, the ones retried later than a quarter quantum (the delay
    /// of the first retry before it became a whole quantum).
    pub backed_off: u64,
}

impl PreemptStats {
    /// Refusals for one reason.
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused[r as usize]
    }
    /// All refusals.
    pub fn total_refused(&self) -> u64 {
        self.refused.iter().sum()
    }
    pub(crate) fn add(&mut self, o: &PreemptStats) {
        self.accepted += o.accepted;
        self.restarted += o.restarted;
        for (a, b) in self.refused.iter_mut().zip(o.refused.iter()) {
            *a += b;
        }
        self.ticks += o.ticks;
        self.requests_sent += o.requests_sent;
        self.acks += o.acks;
        self.checkpoint_yields += o.checkpoint_yields;
        self.yields_after_refusal += o.yields_after_refusal;
        self.refusal_retries += o.refusal_retries;
        self.backed_off += o.backed_off;
    }
}

/// The live counters inside a worker slot.
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub restarted: AtomicU64,
    pub refused: [AtomicU64; Refusal::COUNT],
    pub ticks: AtomicU64,
    pub requests_sent: AtomicU64,
    pub acks: AtomicU64,
    pub checkpoint_yields: AtomicU64,
    pub yields_after_refusal: AtomicU64,
    pub refusal_retries: AtomicU64,
    pub backed_off: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            accepted: Z,
            restarted: Z,
            refused: [Z; Refusal::COUNT],
            ticks: Z,
            requests_sent: Z,
            acks: Z,
            checkpoint_yields: Z,
            yields_after_refusal: Z,
            refusal_retries: Z,
            backed_off: Z,
        }
    }
    /// Bumps a counter. Only the slot's own thread (and its signal handler)
    /// writes most counters, but requests come from other threads: use RMW.
    #[inline]
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn refuse(&self, r: Refusal) {
        if let Some(c) = self.refused.get(r as usize) {
            Self::bump(c);
        }
    }
    pub fn snapshot(&self) -> PreemptStats {
        let mut s = PreemptStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            restarted: self.restarted.load(Ordering::Relaxed),
            ticks: self.ticks.load(Ordering::Relaxed),
            requests_sent: self.requests_sent.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            checkpoint_yields: self.checkpoint_yields.load(Ordering::Relaxed),
            yields_after_refusal: self.yields_after_refusal.load(Ordering::Relaxed),
            refusal_retries: self.refusal_retries.load(Ordering::Relaxed),
            backed_off: self.backed_off.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (d, c) in s.refused.iter_mut().zip(self.refused.iter()) {
            *d = c.load(Ordering::Relaxed);
        }
        s
    }
}
