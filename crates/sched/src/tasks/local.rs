//! Task-local storage: values that belong to a task, not to the OS thread it
//! happens to run on (tasks migrate between threads, so `thread_local!` data
//! must never be relied on across a yield).
//!
//! Each task has a small map from key address to a boxed value, created
//! lazily on first access by the key's initialiser and dropped when the task
//! finishes (on the task, before it exits). Boxing keeps every value at a
//! fixed address while the map grows.
//!
//! **Not a GC root.** Task-local values are not scanned by the GC: a task
//! inside `blocking` may use (and grow) its map on another thread while the
//! world is stopped, so the pause cannot read it safely. A GC reference kept
//! only in a task-local is freed; keep a `usurp_gc::Root` in it instead.

use crate::tasks::tcb::Task;
use crate::worker;
use std::any::Any;
use std::fmt;

pub(crate) struct LocalMap {
    entries: Vec<(usize, Box<dyn Any>)>,
    destroyed: bool,
}

impl LocalMap {
    pub(crate) const fn new() -> LocalMap {
        LocalMap { entries: Vec::new(), destroyed: false }
    }
}

/// Drops the task-local values of `t` (at the end of the task).
///
/// # Safety
/// `t` is the task running on the calling thread (its map is only touched
/// by it).
pub(crate) unsafe fn drop_locals(t: *mut Task) {
    // SAFETY: per the contract, `t` is the running task.
    let map = unsafe { &mut *(*t).locals.get() };
    map.destroyed = true;
    // Values are dropped one by one; a destructor that touches a key sees
    // AccessError (the map is marked destroyed).
    while let Some(e) = map.entries.pop() {
        // A panic must not unwind out of the task's exit path (it cannot
        // unwind there: the process would abort with "panic in a function
        // that cannot unwind", naming nothing). As std does for a
        // thread-local destructor, abort, but say which destructor.
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(e))) {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-string payload)".to_string());
            eprintln!(
                "usurp: fatal: a task-local value's destructor panicked at the end of its task ({msg}); a \
                 destructor of a task-local value must not panic (nor use another task-local: they are being \
                 destroyed, `with` panics and `try_with` returns AccessError): aborting"
            );
            std::process::abort();
        }
    }
    map.destroyed = false;
}

/// A key for task-local storage; declare with [`crate::task_local!`].
///
/// Task-local values are **not scanned by the GC**: to keep a GC object in
/// one, store a `Root` (`heap.add_root(Some(obj))`), not a bare `GcRef`.
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKey { .. }")
    }
}

/// Error of [`LocalKey::try_with`]: not inside a task, or the task is being
/// torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessError;

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task-local value accessed outside a usurp task or during its teardown")
    }
}

impl std::error::Error for AccessError {}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> LocalKey<T> {
        LocalKey { init }
    }

    /// Runs `f` with a reference to this task's value, initialising it on
    /// first use.
    ///
    /// # Panics
    /// Outside a usurp task, or from a task-local destructor.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.try_with(f).expect("usurp: task-local accessed outside a usurp task (or during task teardown)")
    }

    /// Like [`LocalKey::with`], returning an error instead of panicking.
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let t = worker::current_task();
        if t.is_null() {
            return Err(AccessError);
        }
        let key = self as *const LocalKey<T> as usize;
        // SAFETY: the map belongs to the running task; we hold no reference
        // into `entries` across user code other than to boxed values, whose
        // addresses are stable.
        let p: *const T = unsafe {
            let map = &mut *(*t).locals.get();
            if map.destroyed {
                return Err(AccessError);
            }
            match map.entries.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => v.downcast_ref::<T>().expect("task-local type") as *const T,
                None => {
                    let v = (self.init)();
                    // The initialiser may itself have used task-locals.
                    let map = &mut *(*t).locals.get();
                    map.entries.push((key, Box::new(v)));
                    map.entries.last().unwrap().1.downcast_ref::<T>().unwrap() as *const T
                }
            }
        };
        // SAFETY: the box lives until the task ends, which cannot happen
        // while `f` runs on it.
        Ok(f(unsafe { &*p }))
    }
}

/// Declares task-local keys, like `thread_local!`:
///
/// ```no_run
/// use std::cell::Cell;
/// usurp_sched::task_local! {
///     static COUNTER: Cell<u32> = Cell::new(0);
/// }
/// # let rt = usurp_sched::Runtime::new().unwrap();
/// rt.block_on(|| COUNTER.with(|c| c.set(c.get() + 1)));
/// ```
#[macro_export]
macro_rules! task_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])* $vis static $name: $crate::LocalKey<$t> = $crate::LocalKey::new({
            fn __usurp_init() -> $t { $init }
            __usurp_init
        });
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::task_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}
