//! Task dumps on a signal (issue 15): `USURP_DEBUG=dumpsignal=SIGQUIT`, or
//! `RuntimeBuilder::dump_signal`, prints a dump of the runtime to stderr when the
//! process receives that signal, without stopping the process (as Go prints
//! every goroutine on SIGQUIT, except that Go then exits).
//!
//! The handler (installed once per signal number through
//! `signal-hook-registry`, which chains any handler installed before, then
//! given `SA_ONSTACK` so that it runs on the thread's alternate signal stack,
//! never on a task's small stack)
//! allocates nothing, takes no lock and cannot panic: it sets the signal's
//! bit in [`PENDING`], sets [`WORD`] and wakes the dumper with a futex wake
//! (a raw system call), saving and restoring errno. The dumper, one thread
//! per process started with the first registration, waits on [`WORD`];
//! woken, it takes the pending bits and, for each runtime registered for a
//! pending signal that is still alive, takes a dump (`dump::dump`, which
//! stops that runtime's world briefly, or reports what it can read if the
//! stop times out) and writes it to stderr. Runtimes are held weakly: a
//! dropped runtime is skipped and forgotten.

use crate::shared::Shared;
use crate::sys::{futex_wait, futex_wake};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

/// Signals delivered and not yet served: bit `sig` (signals 1..=63).
static PENDING: AtomicU64 = AtomicU64::new(0);
/// The dumper's futex word: 1 when it has something to do.
static WORD: AtomicU32 = AtomicU32::new(0);
/// Runtimes that asked for dumps, with their signal; the handlers installed
/// (signal numbers); whether the dumper thread runs.
static STATE: Mutex<State> = Mutex::new(State { runtimes: Vec::new(), installed: Vec::new(), dumper: false });

struct State {
    runtimes: Vec<(libc::c_int, Weak<Shared>)>,
    installed: Vec<libc::c_int>,
    dumper: bool,
}

/// Signals that cannot carry a dump request: the ones that cannot be caught,
/// the synchronous faults (their handlers must not return to the faulting
/// instruction), and the preemption signal.
pub(crate) fn check_signal(sig: libc::c_int) -> Result<(), String> {
    if !(1..64).contains(&sig) {
        return Err(format!("{sig} is not a signal number"));
    }
    let forbidden = [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP];
    if forbidden.contains(&sig) {
        return Err(format!("signal {sig} cannot carry a dump request (it cannot be caught, or is a fault)"));
    }
    if sig == usurp_preempt::signal() {
        return Err(format!("signal {sig} is the preemption signal"));
    }
    Ok(())
}

/// Parses a signal given by name (`SIGQUIT`, `QUIT`) or number.
pub(crate) fn parse_signal(s: &str) -> Option<libc::c_int> {
    let s = s.trim();
    if let Ok(n) = s.parse::<libc::c_int>() {
        return Some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Some(match name {
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

/// The signal `USURP_DEBUG=…,dumpsignal=SIG…` asks for, if any (the last
/// setting wins). A value that is not a signal is reported on stderr and
/// ignored.
pub(crate) fn from_env() -> Option<libc::c_int> {
    let v = std::env::var("USURP_DEBUG").ok()?;
    let mut sig = None;
    for kv in v.split(',') {
        if let Some(val) = kv.trim().strip_prefix("dumpsignal=") {
            match parse_signal(val) {
                Some(s) => sig = Some(s),
                None => eprintln!("usurp: USURP_DEBUG: dumpsignal={val} is not a signal name or number; ignored"),
            }
        }
    }
    sig
}

/// Registers `sh` for dumps on `sig` (checked with [`check_signal`]):
/// installs the handler for `sig` (once) and starts the dumper (once).
pub(crate) fn register(sig: libc::c_int, sh: Weak<Shared>) -> Result<(), String> {
    check_signal(sig)?;
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if !st.installed.contains(&sig) {
        // SAFETY: the action is async-signal-safe: it touches only atomics
        // and makes one raw system call, saving and restoring errno.
        let r = unsafe { signal_hook_registry::register(sig, move || on_signal(sig)) };
        r.map_err(|e| format!("cannot install a handler for signal {sig}: {e}"))?;
        on_alt_stack(sig);
        st.installed.push(sig);
    }
    if !st.dumper {
        std::thread::Builder::new()
            .name("usurp-dumper".into())
            .spawn(dumper_main)
            .map_err(|e| format!("cannot start the dump thread: {e}"))?;
        st.dumper = true;
    }
    st.runtimes.retain(|(_, w)| w.strong_count() > 0);
    st.runtimes.push((sig, sh));
    Ok(())
}

/// Adds `SA_ONSTACK` to the action installed for `sig` (signal-hook-registry
/// installs its dispatcher without it). Without it, a dump signal that lands
/// on a worker (a thread-directed one, or a process-directed one the kernel
/// gives to a worker) builds its frame (2.5-3 KiB with AVX-512 state) on the
/// running task's stack: a task with less room left than that faulted on its
/// guard page, and the overflow handler then saw a fault it could not
/// attribute (the dump was lost and the process died of SIGSEGV). Every
/// runtime thread has an alternate signal stack (`guard::AltStack`); threads
/// without one are unaffected by the flag. The dispatcher, its mask and its
/// other flags are kept as they are, so the handlers it chains (installed
/// before or after ours through the registry) still run.
fn on_alt_stack(sig: libc::c_int) {
    // SAFETY: plain sigaction calls with valid structs; the action written
    // back is the one just read, with one more flag.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
            && sa.sa_sigaction != libc::SIG_DFL
            && sa.sa_sigaction != libc::SIG_IGN
            && sa.sa_flags & libc::SA_ONSTACK == 0
        {
            sa.sa_flags |= libc::SA_ONSTACK;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal handler's action (see the module docs).
fn on_signal(sig: libc::c_int) {
    // SAFETY: errno is thread-local; reading and restoring it is what a
    // handler making a system call must do.
    let errno = unsafe { *libc::__errno_location() };
    PENDING.fetch_or(1u64 << (sig as u32 & 63), Ordering::SeqCst);
    WORD.store(1, Ordering::SeqCst);
    futex_wake(&WORD, 1);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn dumper_main() {
    loop {
        futex_wait(&WORD, 0, None);
        WORD.store(0, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending == 0 {
            continue;
        }
        let targets: Vec<(libc::c_int, std::sync::Arc<Shared>)> = {
            let st = STATE.lock().unwrap_or_else(|p| p.into_inner());
            st.runtimes
                .iter()
                .filter(|(s, _)| pending & (1u64 << (*s as u32 & 63)) != 0)
                .filter_map(|(s, w)| w.upgrade().map(|a| (*s, a)))
                .collect()
        };
        for (sig, sh) in targets {
            if sh.shutdown.load(Ordering::Acquire) {
                continue;
            }
            let d = crate::glue::dump::dump(&sh, crate::glue::dump::DUMP_STOP_TIMEOUT);
            eprint!("usurp: signal {sig}: {d}");
        }
    }
}
