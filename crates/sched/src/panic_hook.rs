//! Panic messages name the task, not the worker thread (issue 15).
//!
//! std's default panic hook names the OS thread (`thread 'usurp-worker-0'
//! panicked at …`), which says nothing about which guest thread failed:
//! tasks migrate between workers. The first [`Runtime`](crate::Runtime)
//! built installs (once per process, `std::sync::Once`) a hook that chains
//! to the hook installed before it (`std::panic::take_hook`):
//!
//! * Panics outside a task (plain threads, the runtime's own threads in
//!   their scheduler loop) go to the previous hook unchanged: std's
//!   `thread '…' panicked at …`, or whatever hook the user set before.
//! * A panic inside a task (also inside its `blocking` closure) prints what
//!   std prints with the task in place of the thread —
//!   `task 'guest-1' (id 7) panicked at src/vm.rs:10:5:` then the message,
//!   `task <unnamed> (id 7)` for a task without a name — followed by the
//!   backtrace or the note std prints, honouring `RUST_BACKTRACE` as std does
//!   (read once, at the first task panic: unset or `0` prints the note
//!   `run with RUST_BACKTRACE=1` once per process, `full` a full backtrace,
//!   anything else a short one; the backtrace starts in the hook and is not
//!   trimmed to std's short-backtrace markers). The previous hook is then
//!   not called (it would print the thread line too), so a hook set before
//!   the first runtime is built does not see task panics.
//! * A hook the user sets after the first runtime is built replaces this
//!   one, as with any `std::panic::set_hook` (std's semantics); to keep the
//!   task names, take this one with `take_hook` and call it from yours.
//!
//! The task is found through `worker::current_task()` (the never-inlined
//! accessor: the hook runs on the thread the task is on now). The hook runs
//! on the panicking thread, never in a signal handler; it allocates (the
//! message, the backtrace) like std's, writes with one locked `stderr` and
//! ignores write errors (a hook that panicked would abort the process). It
//! reaches no switch point, so the task cannot move meanwhile. Unlike std's
//! hook it writes to the real stderr even under libtest's output capture
//! (capture is not a stable API).

use std::any::Any;
use std::io::Write;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Once;

static INSTALL: Once = Once::new();

/// `RUST_BACKTRACE` as read at the first task panic: 0 not read yet.
/// Written by any panicking task (the same value), read by all.
static STYLE: AtomicU8 = AtomicU8::new(0);
const STYLE_OFF: u8 = 1;
const STYLE_SHORT: u8 = 2;
const STYLE_FULL: u8 = 3;
/// Whether the `RUST_BACKTRACE=1` note is still to be printed (std prints
/// it on the first panic only). Swapped by panicking tasks.
static FIRST_NOTE: AtomicBool = AtomicBool::new(true);

/// Installs the task-naming panic hook (once per process), chaining to the
/// hook installed before it.
pub(crate) fn install() {
    // `take_hook`/`set_hook` panic on a panicking thread (a runtime built in
    // a destructor during unwinding): install at the next build instead.
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !report_task_panic(info.payload(), info.location()) {
                prev(info);
            }
        }));
    });
}

/// If the calling thread runs a task: prints the panic naming the task and
/// returns true. Otherwise returns false (the caller chains).
#[inline(never)]
fn report_task_panic(payload: &(dyn Any + Send), location: Option<&Location<'_>>) -> bool {
    let t = crate::worker::current_task();
    if t.is_null() {
        return false;
    }
    // SAFETY: the current task is valid while it runs, and we are it (the
    // hook runs on the panicking task's stack and reaches no switch point);
    // its id and name are written only by `Task::prepare`, before it runs.
    let (id, name) = unsafe { ((*t).id.get(), (*(*t).name.get()).as_deref()) };
    let msg = match payload.downcast_ref::<&str>() {
        Some(s) => *s,
        None => payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("Box<dyn Any>"),
    };
    let style = backtrace_style();
    // Formatted before taking stderr (symbolisation can be slow).
    let mut out = String::with_capacity(256);
    {
        use std::fmt::Write as _;
        let _ = match name {
            Some(n) => write!(out, "\ntask '{n}' (id {id}) panicked at "),
            None => write!(out, "\ntask <unnamed> (id {id}) panicked at "),
        };
        let _ = match location {
            Some(l) => writeln!(out, "{l}:\n{msg}"),
            None => writeln!(out, "<unknown location>:\n{msg}"),
        };
        match style {
            STYLE_SHORT => {
                let bt = std::backtrace::Backtrace::force_capture();
                let _ = write!(out, "stack backtrace:\n{bt}");
                end_line(&mut out);
                out.push_str(
                    "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n",
                );
            }
            STYLE_FULL => {
                let bt = std::backtrace::Backtrace::force_capture();
                let _ = write!(out, "stack backtrace:\n{bt:#}");
                end_line(&mut out);
            }
            _ => {
                if FIRST_NOTE.swap(false, Ordering::Relaxed) {
                    out.push_str("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n");
                }
            }
        }
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
    true
}

/// Ends `s` with one newline (a backtrace's text may or may not end with one).
fn end_line(s: &mut String) {
    if !s.ends_with('\n') {
        s.push('\n');
    }
}

/// `RUST_BACKTRACE`, read once (as std does): unset or `0` off, `full`
/// full, anything else short.
fn backtrace_style() -> u8 {
    let s = STYLE.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    let s = match std::env::var_os("RUST_BACKTRACE") {
        None => STYLE_OFF,
        Some(v) if v == "0" => STYLE_OFF,
        Some(v) if v == "full" => STYLE_FULL,
        Some(_) => STYLE_SHORT,
    };
    STYLE.store(s, Ordering::Relaxed);
    s
}
