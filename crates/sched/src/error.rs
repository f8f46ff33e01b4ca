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
/// Default of [`crate::RuntimeBuilder::timer_spin`] (100 µs): a little
/// above how late the OS wakes a sleeping thread on a VM at the 99th
/// percentile (~100 µs on this project's machine, even with a 1 ns timer
/// slack), so that an idle runtime's 1 ms sleep ends within ~60 µs at the
/// 99th percentile (issue 11's goal) instead of ~100 µs.
pub const DEFAULT_TIMER_SPIN: std::time::Duration = std::time::Duration::from_micros(100);
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
        /// The process's memory mappings at the failure (lines of
        /// `/proc/self/maps`), if readable.
        mappings: Option<u64>,
        /// The process's address space at the failure, in bytes (`VmSize`),
        /// if readable.
        address_space: Option<u64>,
        /// The process's address-space limit (`RLIMIT_AS`, `ulimit -v`), in
        /// bytes; `None` if unlimited.
        address_space_limit: Option<u64>,
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
            Error::StackMap {
                op,
                stack_size,
                errno,
                live_stacks,
                max_map_count,
                mappings,
                address_space,
                address_space_limit,
            } => {
                let e = std::io::Error::from_raw_os_error(*errno);
                write!(
                    f,
                    "cannot allocate a task stack of {stack_size} bytes: {op} failed: {e} \
                     ({live_stacks} task stacks are mapped, each 2 kernel memory mappings: the stack \
                     and its guard page)"
                )?;
                let fewer = "lower the stack size with Runtime::builder().stack_size(..), or run fewer tasks at once";
                let (limit, used) = (*address_space_limit, *address_space);
                match stack_map_cause(*errno, *stack_size, *max_map_count, *mappings, used, limit) {
                    StackMapCause::MapCount { mappings, max } => write!(
                        f,
                        ". The process has {mappings} memory mappings, at the kernel's limit \
                         vm.max_map_count = {max}: raise it (e.g. `sysctl -w vm.max_map_count=262144`), \
                         or run fewer tasks at once"
                    ),
                    StackMapCause::AddressSpace { used, limit } => {
                        write!(f, ". The process's address space")?;
                        if let Some(u) = used {
                            write!(f, " ({u} bytes)")?;
                        }
                        write!(
                            f,
                            " has reached its limit RLIMIT_AS (`ulimit -v`) of {limit} bytes: raise that \
                             limit, {fewer}"
                        )
                    }
                    StackMapCause::Memory => {
                        write!(f, ". Neither vm.max_map_count")?;
                        if let (Some(m), Some(max)) = (mappings, max_map_count) {
                            write!(f, " ({m} of {max} mappings)")?;
                        }
                        write!(
                            f,
                            " nor an address-space limit was reached: the kernel refused the memory \
                             (its overcommit policy, vm.overcommit_memory, or a memory cgroup); {fewer}"
                        )
                    }
                    StackMapCause::Other => write!(f, ". {fewer}"),
                }
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
                "invalid timer_spin {given:?}: allowed are 0 (off) to {MAX_TIMER_SPIN:?} (default {DEFAULT_TIMER_SPIN:?}); \
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

/// The process's memory mappings now (lines of `/proc/self/maps`; for error
/// messages).
pub(crate) fn mappings() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// The process's address space now, in bytes (`VmSize` of
/// `/proc/self/status`; for error messages).
pub(crate) fn address_space() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmSize:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// The soft `RLIMIT_AS` in bytes, `None` if unlimited (or unreadable).
pub(crate) fn address_space_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// Why the kernel refused a task stack, as far as the figures taken at the
/// failure tell.
#[derive(Debug, PartialEq, Eq)]
enum StackMapCause {
    /// The process's mappings reached `vm.max_map_count`.
    MapCount { mappings: u64, max: u64 },
    /// The address space reached `RLIMIT_AS`.
    AddressSpace { used: Option<u64>, limit: u64 },
    /// ENOMEM with neither limit reached: memory (overcommit, cgroup).
    Memory,
    /// Another errno.
    Other,
}

fn stack_map_cause(
    errno: i32,
    stack_size: usize,
    max_map_count: Option<u64>,
    mappings: Option<u64>,
    address_space: Option<u64>,
    address_space_limit: Option<u64>,
) -> StackMapCause {
    if errno != libc::ENOMEM {
        return StackMapCause::Other;
    }
    // A stack adds up to 2 mappings (mmap, then the guard's mprotect splits it).
    if let (Some(m), Some(max)) = (mappings, max_map_count) {
        if m + 2 > max {
            return StackMapCause::MapCount { mappings: m, max };
        }
    }
    if let Some(limit) = address_space_limit {
        // The stack plus its guard page (4 KiB to 64 KiB) would not fit.
        let need = stack_size as u64 + (64 << 10);
        if address_space.map_or(true, |u| u.saturating_add(need) > limit) {
            return StackMapCause::AddressSpace { used: address_space, limit };
        }
    }
    StackMapCause::Memory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_stack_is_blamed_on_the_limit_that_was_reached() {
        let c = |errno, maps, used, limit| stack_map_cause(errno, 256 << 10, Some(65530), maps, used, limit);
        let at_map_count = StackMapCause::MapCount { mappings: 65530, max: 65530 };
        assert_eq!(c(libc::ENOMEM, Some(65530), Some(1 << 30), None), at_map_count);
        // probe 11's stress run under `ulimit -v 4000000`: 9669 stacks.
        let at_limit = StackMapCause::AddressSpace { used: Some(4_095_900_000), limit: 4_096_000_000 };
        assert_eq!(c(libc::ENOMEM, Some(19_500), Some(4_095_900_000), Some(4_096_000_000)), at_limit);
        assert_eq!(c(libc::ENOMEM, Some(19_500), Some(1 << 30), Some(1 << 40)), StackMapCause::Memory);
        assert_eq!(c(libc::ENOMEM, None, None, None), StackMapCause::Memory);
        assert_eq!(c(libc::EPERM, Some(65530), None, None), StackMapCause::Other);
    }
}
