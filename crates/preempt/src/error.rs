//! Errors of the preemption API.

use core::fmt;

/// What went wrong in a preemption API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The signal cannot be used for preemption (synchronous, uncatchable or
    /// out of range).
    InvalidSignal(i32),
    /// `set_signal` after `init` (the handler is already installed).
    AlreadyInitialized,
    /// A quantum below the supported minimum.
    InvalidQuantum(std::time::Duration),
    /// `start >= end` or a null range.
    InvalidRange { start: usize, end: usize },
    /// A fixed-capacity table (workers, code regions, unsafe ranges) is full.
    TableFull(&'static str),
    /// The calling thread has no registered worker slot / registered another.
    NotAWorker,
    /// The slot is already registered on some thread.
    AlreadyRegistered,
    /// A system call failed (name, errno).
    Os(&'static str, i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSignal(s) => write!(f, "signal {s} cannot be used for preemption"),
            Error::AlreadyInitialized => {
                // The signal in force (process-wide, fixed by the first
                // `init`, e.g. the first runtime's build).
                let sig = crate::signal::signal();
                let name = if sig == libc::SIGURG { " (SIGURG, the default)".to_string() } else { String::new() };
                write!(
                    f,
                    "the preemption signal is already {sig}{name}, in force for the whole process since the first \
                     runtime started (init()); it cannot change: build this runtime with preempt_signal({sig}) or \
                     without preempt_signal, or choose the signal before the first runtime is built"
                )
            }
            Error::InvalidQuantum(d) => write!(f, "quantum {d:?} is below the minimum of 50µs"),
            Error::InvalidRange { start, end } => write!(f, "invalid code range {start:#x}..{end:#x}"),
            Error::TableFull(what) => write!(f, "the {what} table is full"),
            Error::NotAWorker => write!(f, "the calling thread is not a registered worker"),
            Error::AlreadyRegistered => write!(f, "the worker slot is already registered"),
            Error::Os(call, errno) => {
                write!(f, "{call} failed: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for Error {}

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
