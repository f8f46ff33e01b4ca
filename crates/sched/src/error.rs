//! The scheduler's error type: invalid configuration, stacks the kernel
//! refuses, and calls that need a runtime made outside one.

use std::fmt;

/// Smallest task stack accepted by [`crate::RuntimeBuilder::stack_size`] (16 KiB).
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest task stack accepted by [`crate::RuntimeBuilder::stack_size`] (1 GiB).
pub const MAX_STACK_SIZE: usize = 1 << 30;
/// Largest worker count accepted by [`crate::RuntimeBuilder::workers`].
pub const MAX_WORKERS: usize = 1024;
/// Largest value accepted by [`crate::RuntimeBuilder::max_blocking_threads`].
pub const MAX_BLOCKING_THREADS: usize = 4096;
/// Smallest quantum accepted by the builder.
pub const MIN_QUANTUM: std::time::Duration = std::time::Duration::from_micros(100);
/// Largest quantum accepted by the builder.
pub const MAX_QUANTUM: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest value accepted by [`crate::RuntimeBuilder::timer_spin`] (1 ms):
/// past that the spin costs more CPU than any timer wake-up it saves (a
/// sleeping thread's wake-up is late by tens of microseconds, not
/// milliseconds).
pub const MAX_TIMER_SPIN: std::time::Duration = std::time::Duration::from_millis(1);
/// Default quantum (as Go).
pub const DEFAULT_QUANTUM: std::time::Duration = std::time::Duration::from_millis(10);

/// Errors from building a runtime or spawning a task.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `workers(n)` was given a value outside `1..=MAX_WORKERS`.
    InvalidWorkers {
        /// The value given.
        given: usize,
    },
    /// `stack_size(b)` was given a value outside `MIN_STACK_SIZE..=MAX_STACK_SIZE`.
    InvalidStackSize {
        /// The value given.
        given: usize,
    },
    /// With async preemption on, `stack_size(b)` was given less than a
    /// preemption needs on this CPU ([`usurp_preempt::min_task_stack`]):
    /// every attempt would be refused and a loop in a task would hold up a
    /// stop-the-world for ever.
    StackTooSmallForPreemption {
        /// The value given.
        given: usize,
        /// The smallest stack a preemption can succeed on here.
        needed: usize,
    },
    /// `max_blocking_threads(n)` was given a value above `MAX_BLOCKING_THREADS`.
    InvalidBlockingThreads {
        /// The value given.
        given: usize,
    },
    /// `thread_name(s)` was given a name containing a NUL byte (an OS
    /// thread name cannot hold one).
    InvalidThreadName {
        /// The value given.
        given: String,
    },
    /// The operating system refused to start a worker thread.
    ThreadSpawn(std::io::Error),
    /// The kernel refused to map (or protect the guard page of) a task stack.
    StackMap {
        /// Which call failed: `"mmap"` or `"mprotect"`.
        op: &'static str,
        /// The usable stack size asked for, in bytes.
        stack_size: usize,
        /// The errno of the failed call.
        errno: i32,
        /// Task stacks mapped by this process at the time.
        live_stacks: usize,
        /// The kernel's `vm.max_map_count`, if readable.
        max_map_count: Option<u64>,
    },
    /// A call that needs a runtime was made outside one (not from a task, and
    /// not through a [`crate::Runtime`]).
    NoRuntime,
    /// The runtime is shutting down and accepts no new tasks.
    ShutDown,
    /// `quantum(d)` was given a value outside `MIN_QUANTUM..=MAX_QUANTUM`.
    InvalidQuantum {
        /// The value given.
        given: std::time::Duration,
    },
    /// The preemption machinery refused the configuration or failed to start
    /// (signal number, signal already fixed by an earlier runtime, timers).
    Preempt(usurp_preempt::Error),
    /// The GC heap configuration is invalid or its reservation failed.
    Heap(usurp_gc::ConfigError),
    /// `timer_spin(d)` was given more than [`MAX_TIMER_SPIN`].
    InvalidTimerSpin {
        /// The value given.
        given: std::time::Duration,
    },
    /// `dump_signal(sig)` was given a signal that cannot carry dump
    /// requests, or its handler could not be installed.
    InvalidDumpSignal {
        /// The value given.
        given: libc::c_int,
        /// Why it was refused.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidWorkers { given } => write!(
                f,
                "invalid worker count {given}: a runtime needs between 1 and {MAX_WORKERS} workers"
            ),
            Error::InvalidStackSize { given } => write!(
                f,
                "invalid task stack size {given} bytes: allowed are {MIN_STACK_SIZE} bytes (16 KiB) to \
                 {MAX_STACK_SIZE} bytes (1 GiB); it is rounded up to whole pages"
            ),
            Error::StackTooSmallForPreemption { given, needed } => write!(
                f,
                "task stack size {given} bytes is too small for asynchronous preemption on this CPU: \
                 a preemption needs {needed} bytes (its spill frame holds the whole XSAVE/SIMD state, \
                 whose size the CPU reports, plus the park path and 4 KiB for the task's frames); \
                 raise stack_size to at least {needed}, or build with async_preemption(false)"
            ),
            Error::InvalidBlockingThreads { given } => write!(
                f,
                "invalid max_blocking_threads {given}: allowed are 0 to {MAX_BLOCKING_THREADS}"
            ),
            Error::InvalidThreadName { given } => write!(
                f,
                "invalid thread_name {given:?}: it contains a NUL byte, which an OS thread name cannot hold"
            ),
            Error::ThreadSpawn(e) => write!(f, "cannot start a usurp worker thread: {e}"),
            Error::StackMap { op, stack_size, errno, live_stacks, max_map_count } => {
                let e = std::io::Error::from_raw_os_error(*errno);
                write!(
                    f,
                    "cannot allocate a task stack of {stack_size} bytes: {op} failed: {e} \
                     ({live_stacks} task stacks are mapped; each takes 2 kernel memory mappings, \
                     the stack and its guard page"
                )?;
                if let Some(m) = max_map_count {
                    write!(f, ", against vm.max_map_count = {m}")?;
                }
                write!(
                    f,
                    "). Raise the limit (e.g. `sysctl -w vm.max_map_count=262144`), lower the stack \
                     size with Runtime::builder().stack_size(..) if memory is the problem, or run \
                     fewer tasks at once"
                )
            }
            Error::NoRuntime => write!(
                f,
                "no usurp runtime here: this must be called from inside a usurp task (or through a \
                 Runtime, e.g. Runtime::spawn / Runtime::block_on)"
            ),
            Error::ShutDown => write!(f, "the usurp runtime is shutting down and accepts no new tasks"),
            Error::InvalidQuantum { given } => write!(
                f,
                "invalid preemption quantum {given:?}: allowed are {:?} to {:?}",
                MIN_QUANTUM,
                MAX_QUANTUM
            ),
            Error::InvalidTimerSpin { given } => write!(
                f,
                "invalid timer_spin {given:?}: allowed are 0 (off, the default) to {MAX_TIMER_SPIN:?}; \
                 the spin only has to cover how late the OS wakes a sleeping thread (tens of µs)"
            ),
            Error::Preempt(e) => write!(f, "usurp preemption: {e}"),
            Error::Heap(e) => write!(f, "{e}"),
            Error::InvalidDumpSignal { given, reason } => {
                write!(f, "invalid dump signal {given}: {reason} (use e.g. SIGQUIT or SIGUSR1)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ThreadSpawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads `/proc/sys/vm/max_map_count` (for error messages).
pub(crate) fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}
