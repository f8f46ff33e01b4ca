//! GC values the runtime holds in Rust heap memory: spawn closures not yet
//! started, join results not yet joined, values buffered in channels (and
//! offered by their blocked senders), values held by a `Select` (its
//! storage registers like a channel: `sync/select.rs`).
//!
//! The GC scans task stacks and saved registers; a `GcRef` moved into a box
//! the runtime owns would be invisible to it. These places are scanned
//! conservatively, with the world stopped, through
//! `World::for_each_conservative_range` (`gc_world.rs`):
//!
//! * **Spawn closures** are found through the tasks: every registered task
//!   that is neither `FREE` nor `RUNNING` has its body (`Task::body`, set
//!   before the task is published with a release store of `RUNNABLE`), and
//!   the body reports its closure's bytes until the task takes the closure
//!   out onto its own stack to run it ([`for_each_spawn_closure`]). While it
//!   runs, the closure lives in the task's frames (scanned like any stack).
//! * **Join results and channel buffers** are listed in one process-wide
//!   registry ([`REGISTRY`]): a packet registers its result when the task
//!   stores it and unregisters when the result is taken (`join`) or the
//!   packet is dropped; a channel whose values may hold a pointer (at least
//!   one word in size) registers when created and unregisters when dropped.
//!   Each entry is a type-erased `(object, scan function)`; the scan
//!   function reports the byte ranges of the values the object holds.
//!
//! **Why the ranges are readable and stable during the scan.** The registry
//! lock is held for the whole scan. Every write to a registered result
//! (storing it, taking it) happens under that lock; an entry is removed
//! under it before its object's memory goes away (the object's first field
//! is its `Slot`, whose `Drop` unregisters before the other fields are
//! dropped and the allocation is freed); a channel's buffer is read under
//! the channel's own lock (lock order: registry, then channel; nothing takes
//! the registry lock while holding a channel's). Spawn closures are only taken by their own task while it
//! runs, and with the world stopped no task but the collector runs (tasks
//! inside `blocking` on a handed-off thread have started already: their
//! closure is on their stack). Task stacks are not part of this: see
//! `gc_world.rs`.
//!
//! **Locks in the pause.** The registry lock and channel locks are spin
//! locks held only for short, non-blocking critical sections, never across
//! a switch (`SpinGuard` holds a no-preemption guard): a task stopped for a
//! collection never holds one, and a thread outside the runtime holding one
//! releases it without waiting for anything the collector holds.
//!
//! **Cost.** Registration is one uncontended spin lock and a vector push or
//! swap-remove: a spawn whose result is smaller than a word, and a channel
//! of such values, never register; the rest pay it once per result and once
//! per channel. Only the values' own bytes are scanned, never memory they own
//! (a `Vec<GcRef>` result or channel value is *not* a root: use `Root`s).

use crate::shared::Shared;
use crate::spin::{SpinGuard, SpinLock};
use crate::tasks::tcb::state;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Reports `[lo, hi)` byte ranges to scan conservatively.
pub(crate) type RangeFn<'a> = &'a mut dyn FnMut(usize, usize);

/// Scans the object at the given address (see [`Registry::insert`]).
pub(crate) type ScanFn = unsafe fn(*const (), RangeFn<'_>);

struct Entry {
    obj: *const (),
    scan: ScanFn,
    slot: *const Slot,
}

/// The list behind [`REGISTRY`].
pub(crate) struct Registry {
    entries: Vec<Entry>,
}

// SAFETY: the raw pointers are only dereferenced under the registry lock,
// per the contract of `insert`.
unsafe impl Send for Registry {}

/// Every registered result and channel of the process (all runtimes: a
/// pause scans the other runtimes' entries too, whose words are ignored by
/// the heap's range check).
pub(crate) static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry { entries: Vec::new() });

/// Where a registrable object keeps its registry index. Dropping a
/// registered slot unregisters it: declare it as the object's *first* field,
/// so that it is dropped (unregistered, under the registry lock) before the
/// fields it scans are dropped and before the object's memory is freed. (A
/// `Drop` impl on the generic object itself would do the same but would
/// make the drop checker require borrowed values in it, e.g. a channel of
/// `&str`, to outlive the object.)
pub(crate) struct Slot {
    /// Index in `Registry::entries`; written only under the registry lock.
    index: UnsafeCell<usize>,
    /// Whether the object is registered. Written by the object's owner under
    /// the registry lock, read by its owner without it (an owner is whoever
    /// has exclusive use of the object at that point in its life).
    registered: AtomicBool,
}

// SAFETY: `index` is only accessed under the registry lock; `registered`
// is atomic.
unsafe impl Sync for Slot {}
// SAFETY: as above.
unsafe impl Send for Slot {}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.registered() {
            self.unregister();
        }
    }
}

impl Slot {
    /// Out of line (the registry's lock inlined cost every drop of an
    /// unregistered slot, e.g. each spawned task's, register saves).
    #[inline(never)]
    fn unregister(&self) {
        lock().remove(self);
    }
}

impl Slot {
    pub(crate) const fn new() -> Slot {
        Slot { index: UnsafeCell::new(usize::MAX), registered: AtomicBool::new(false) }
    }

    /// Whether the object is registered (owner only; see the field).
    pub(crate) fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }
}

/// Locks the registry.
pub(crate) fn lock() -> SpinGuard<'static, Registry> {
    REGISTRY.lock()
}

impl Registry {
    /// Registers `obj`, scanned with `scan(obj, f)` in every pause until
    /// [`Registry::remove`].
    ///
    /// # Safety
    /// `obj` and `slot` stay valid and at the same address until removed;
    /// `slot` belongs to `obj` and is not registered; `scan(obj, ..)` reads
    /// only memory that is valid and not written concurrently while the
    /// registry lock is held (writers hold the lock, or the object's own
    /// lock which `scan` takes), and reports only readable ranges.
    pub(crate) unsafe fn insert(&mut self, slot: &Slot, obj: *const (), scan: ScanFn) {
        debug_assert!(!slot.registered());
        // SAFETY: we hold the registry lock (we are `&mut Registry`).
        unsafe { *slot.index.get() = self.entries.len() };
        self.entries.push(Entry { obj, scan, slot });
        slot.registered.store(true, Ordering::Relaxed);
    }

    /// Unregisters the object of `slot` (no-op if it is not registered).
    pub(crate) fn remove(&mut self, slot: &Slot) {
        if !slot.registered() {
            return;
        }
        // SAFETY: registry lock held; registered slots' indices are exact and
        // moved entries' slots are valid (they are still registered).
        unsafe {
            let i = *slot.index.get();
            self.entries.swap_remove(i);
            if let Some(moved) = self.entries.get(i) {
                *(*moved.slot).index.get() = i;
            }
            *slot.index.get() = usize::MAX;
        }
        slot.registered.store(false, Ordering::Relaxed);
    }

    /// Number of registered objects (tests and statistics).
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Reports the ranges of every registered result and channel buffer.
///
/// # Safety
/// Called by the GC with the world stopped (any thread may call it: it only
/// reads under the locks described in the module docs).
pub(crate) unsafe fn for_each_registered(f: RangeFn<'_>) {
    let reg = lock();
    for e in reg.entries.iter() {
        // SAFETY: per `insert`'s contract, with the lock held.
        unsafe { (e.scan)(e.obj, &mut *f) };
    }
}

/// Reports the closure of every task of `sh` that has not started yet.
///
/// # Safety
/// The world of `sh` is stopped (no task of it starts running meanwhile).
pub(crate) unsafe fn for_each_spawn_closure(sh: &Shared, f: RangeFn<'_>) {
    let reg = sh.registry.lock();
    for &t in reg.iter() {
        // SAFETY: registered tasks are valid. A task that is not FREE was
        // published with a release store after its body was set (acquire
        // here), and only the task itself changes its body, while RUNNING
        // (skipped). The closure slot is only taken by the task, while it
        // runs: not during this stop.
        unsafe {
            let s = (*t).state.load(Ordering::Acquire);
            if s == state::FREE || s == state::RUNNING {
                continue;
            }
            if let Some(body) = (*(*t).body.get()).as_ref() {
                let (lo, hi) = body.closure_range();
                if lo < hi {
                    f(lo, hi);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The registry itself, and that results and channels leave it when
    //! joined, detached or dropped (a stale entry would make a pause read
    //! freed memory). Other tests run concurrently in this process and
    //! register their own objects: checks are by object, never by count.
    use super::*;
    use crate::Runtime;

    fn contains(obj: *const ()) -> bool {
        lock().entries.iter().any(|e| e.obj == obj)
    }

    // SAFETY (of the fn): reports nothing, reads nothing.
    unsafe fn scan_nothing(_: *const (), _: RangeFn<'_>) {}

    #[test]
    fn insert_and_remove_keep_indices_exact() {
        let slots: Vec<Slot> = (0..4).map(|_| Slot::new()).collect();
        let objs: Vec<*const ()> = slots.iter().map(|s| s as *const Slot as *const ()).collect();
        for (s, &o) in slots.iter().zip(&objs) {
            // SAFETY: the slots outlive their registration (removed below).
            unsafe { lock().insert(s, o, scan_nothing) };
        }
        lock().remove(&slots[1]);
        assert!(!slots[1].registered() && !contains(objs[1]));
        for (k, s) in slots.iter().enumerate() {
            if k != 1 {
                assert!(s.registered());
                let g = lock();
                assert_eq!(g.entries[index_of_locked(s)].obj, objs[k], "index of entry {k} is stale");
            }
        }
        lock().remove(&slots[1]); // not registered: no-op
        for s in [&slots[3], &slots[0], &slots[2]] {
            lock().remove(s);
        }
        assert!(objs.iter().all(|&o| !contains(o)));
    }

    fn index_of_locked(slot: &Slot) -> usize {
        // SAFETY: only called while the caller holds the registry lock.
        unsafe { *slot.index.get() }
    }

    #[test]
    fn results_leave_the_registry_when_joined_or_detached() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        rt.block_on(|| {
            // A word-sized result is registered until joined.
            let h = crate::spawn(|| 42usize);
            let p = h.packet_addr();
            while !h.is_finished() {
                crate::yield_now();
            }
            assert!(contains(p), "a finished task's result is not registered");
            assert_eq!(h.join().unwrap(), 42);
            assert!(!contains(p), "a joined result is still registered");
            // A detached task's packet unregisters when the task drops it.
            let h = crate::spawn(|| 7usize);
            let p = h.packet_addr();
            drop(h);
            let mut tries = 0;
            while contains(p) && tries < 10_000 {
                crate::yield_now();
                tries += 1;
            }
            assert!(!contains(p), "a detached task's result stayed registered");
            // Results smaller than a word are never registered.
            let h = crate::spawn(|| 1u8);
            let p = h.packet_addr();
            while !h.is_finished() {
                crate::yield_now();
            }
            assert!(!contains(p));
            h.join().unwrap();
        });
    }

    #[test]
    fn channels_leave_the_registry_when_dropped() {
        let (tx, rx) = crate::channel::<usize>();
        let c = rx.chan_addr();
        assert!(contains(c));
        tx.send(1).unwrap();
        drop(rx);
        assert!(contains(c), "the sender still holds the channel");
        drop(tx);
        assert!(!contains(c), "a dropped channel is still registered");
        let (_tx, rx) = crate::sync_channel::<u32>(1);
        assert!(!contains(rx.chan_addr()), "a channel of values smaller than a word was registered");
    }
}
