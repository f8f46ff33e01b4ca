//! Thin wrappers over the few Linux system calls the scheduler needs:
//! futex wait/wake (idle workers and spare threads sleep on these), the
//! monotonic clock, the page size, the process's CPU count, the timer slack
//! of the threads that wait
//! for timers, and raw writes to stderr (usable from a signal handler).

use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;

/// Sleeps while `*word == expected`, at most `timeout_ns` nanoseconds if given.
/// Spurious returns are possible; callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) {
    let ts;
    let tsp: *const libc::timespec = match timeout_ns {
        Some(ns) => {
            ts = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            &ts
        }
        None => std::ptr::null(),
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (valid for the
    // duration of the call) and an optional relative timeout on our stack.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

/// Wakes up to `n` threads sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n);
    }
}

/// Timer slack (ns) of the runtime's threads that wait for timers (workers,
/// which idle on a futex with the next timer's deadline as timeout, and the
/// sysmon). Linux's default is 50 µs: every timed futex wait of such a
/// thread would return up to 50 µs late, so an idle runtime's 1 ms sleep
/// would too (Go has the same default and the same lateness).
pub const TIMER_SLACK_NS: u64 = 1;

/// Sets the calling thread's timer slack to [`TIMER_SLACK_NS`]; called once
/// by each thread that waits for timers, at its start. A failure (e.g. an
/// emulator without the option) only leaves the default slack.
pub(crate) fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer, dereferences no pointer and
    // changes only the calling thread's timer slack (inherited by threads it
    // creates, which all are runtime threads).
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS as libc::c_ulong, 0, 0, 0) };
}

/// Monotonic time in nanoseconds (vDSO `clock_gettime`, no syscall).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec to a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPUs this process may run on (its affinity mask and cgroup quota,
/// read once, at the first call): what the stopper's spin policy and the
/// stand-aside policy compare the runtime's threads with.
pub(crate) fn process_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    static PS: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PS.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// Current errno value.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes all of `buf` to fd 2 with write(2): no allocation, no lock, so it is
/// usable from a signal handler.
pub(crate) fn write_stderr(mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            // SAFETY: reading errno of this thread.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// A fixed-size text buffer for messages built without allocating (signal
/// handler use).
pub(crate) struct RawBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> RawBuf<N> {
    pub(crate) const fn new() -> Self {
        RawBuf { buf: [0; N], len: 0 }
    }
    /// Appends bytes, silently truncating at capacity.
    pub(crate) fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }
    /// Appends `v` in decimal.
    pub(crate) fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..])
    }
    /// Appends `v` as 0x-prefixed hex.
    pub(crate) fn hex(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 18];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        i -= 2;
        tmp[i] = b'0';
        tmp[i + 1] = b'x';
        self.push(&tmp[i..])
    }
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rawbuf_formats_numbers() {
        let mut b = RawBuf::<64>::new();
        b.push(b"n=").dec(0).push(b",").dec(262144).push(b",").hex(0xdead);
        assert_eq!(b.as_bytes(), b"n=0,262144,0xdead");
        let mut small = RawBuf::<4>::new();
        small.push(b"abcdef");
        assert_eq!(small.as_bytes(), b"abcd");
    }

    #[test]
    fn futex_wait_times_out_and_returns_on_mismatch() {
        let w = AtomicU32::new(0);
        futex_wait(&w, 1, None); // value differs: returns at once
        let t = now_ns();
        futex_wait(&w, 0, Some(1_000_000));
        assert!(now_ns() >= t);
        futex_wake(&w, 1);
    }
}
