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
//! **Channel buffers, with the world running** (issue 9: 1M queued
//! values made every start stop 18 ms long). A channel registers a second
//! function besides its stop scan: [`DeferredFn`], which reports its
//! buffer a chunk at a time. In the start stop of a cycle that scans task
//! stacks one at a time (`stack_scan::omit_stacks_now`), the stop reports
//! only the stop parts (a channel's blocked senders' offers, results,
//! select storage), and the collector walks the buffers afterwards
//! ([`for_each_deferred`], from `World::for_each_deferred_range`), the
//! registry and the channel locked for one chunk at a time. Sound because
//! a value leaves a buffer only by a receive, and a receive on a task
//! shades what it takes from the buffer while a heap marks, under the
//! channel's lock (`mpsc::State::try_recv_locked`): a value the buffer
//! held at the stop is either still there when the walk reaches its
//! position (positions are counted from the channel's first value ever,
//! `State::popped`, so receives between two chunks do not shift them), or
//! was shaded when it left. Values sent meanwhile come from black stacks
//! (every running task's stack is scanned before it runs in the cycle), or
//! were shaded by `stack_scan::publish`. A receive on a thread without a
//! mutator (a plain thread, a `blocking` closure) shades nothing: its
//! frames are no roots (README, "Roots"). While a walk is in progress,
//! entries removed from the registry leave a tombstone instead of moving
//! the last entry into their place ([`Registry::remove`]), so that the
//! walk's index stays valid when it lets the lock go between chunks; the
//! last walker compacts.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Reports `[lo, hi)` byte ranges to scan conservatively.
pub(crate) type RangeFn<'a> = &'a mut dyn FnMut(usize, usize);

/// Scans the object at the given address (see [`Registry::insert`]).
pub(crate) type ScanFn = unsafe fn(*const (), RangeFn<'_>);

/// Scans part of what the object at the given address holds that may be
/// scanned with the world running (a channel's buffer, see the module
/// docs): from position `pos.at` (counted from the object's first value
/// ever) for a bounded number of values, advancing it; `true` once it
/// reached `pos.end`, which the first call sets to the end of that moment
/// (values added later need no scan: a walk does not chase a channel that
/// is sent to faster than it scans, review 116). See
/// [`Registry::insert_deferred`].
pub(crate) type DeferredFn = unsafe fn(*const (), &mut WalkPos, RangeFn<'_>) -> bool;

/// A walk's position in one object's deferred part (see [`DeferredFn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalkPos {
    pub(crate) at: u64,
    /// `u64::MAX` until the first call.
    pub(crate) end: u64,
}

impl WalkPos {
    pub(crate) const START: WalkPos = WalkPos { at: 0, end: u64::MAX };
}

struct Entry {
    /// Null: a tombstone (removed during a walk; see [`Registry::remove`]).
    obj: *const (),
    scan: ScanFn,
    deferred: Option<DeferredFn>,
    slot: *const Slot,
}

/// The list behind [`REGISTRY`].
pub(crate) struct Registry {
    entries: Vec<Entry>,
    /// Walks of the deferred parts in progress ([`for_each_deferred`]; one
    /// per heap marking at once). While nonzero, removals leave
    /// tombstones.
    walkers: usize,
    /// Tombstones in `entries`.
    tombstones: usize,
}

// SAFETY: the raw pointers are only dereferenced under the registry lock,
// per the contract of `insert`.
unsafe impl Send for Registry {}

/// Every registered result and channel of the process (all runtimes: a
/// pause scans the other runtimes' entries too, whose words are ignored by
/// the heap's range check).
pub(crate) static REGISTRY: SpinLock<Registry> =
    SpinLock::new(Registry { entries: Vec::new(), walkers: 0, tombstones: 0 });

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
        // SAFETY: the caller's contract.
        unsafe { self.insert_deferred(slot, obj, scan, None) }
    }

    /// [`insert`](Registry::insert), with a part that may be scanned with
    /// the world running (`deferred`, see the module docs).
    ///
    /// # Safety
    /// As `insert`; besides, `deferred(obj, ..)` reads under the object's
    /// own lock only memory valid while the registry lock is held, and the
    /// object's owner keeps the barrier of the module docs: whatever leaves
    /// the ranges `deferred` reports, while a heap marks, is shaded by
    /// whoever takes it out, before any safe point of theirs.
    pub(crate) unsafe fn insert_deferred(&mut self, slot: &Slot, obj: *const (), scan: ScanFn, deferred: Option<DeferredFn>) {
        debug_assert!(!slot.registered());
        // SAFETY: we hold the registry lock (we are `&mut Registry`).
        unsafe { *slot.index.get() = self.entries.len() };
        self.entries.push(Entry { obj, scan, deferred, slot });
        slot.registered.store(true, Ordering::Relaxed);
    }

    /// Unregisters the object of `slot` (no-op if it is not registered).
    /// While a walk is in progress the entry becomes a tombstone (indices
    /// stay put for the walk); else the last entry moves into its place.
    pub(crate) fn remove(&mut self, slot: &Slot) {
        if !slot.registered() {
            return;
        }
        // SAFETY: registry lock held; registered slots' indices are exact and
        // moved entries' slots are valid (they are still registered).
        unsafe {
            let i = *slot.index.get();
            if self.walkers > 0 {
                let e = &mut self.entries[i];
                e.obj = std::ptr::null();
                e.slot = std::ptr::null();
                e.deferred = None;
                self.tombstones += 1;
            } else {
                self.entries.swap_remove(i);
                if let Some(moved) = self.entries.get(i) {
                    *(*moved.slot).index.get() = i;
                }
            }
            *slot.index.get() = usize::MAX;
        }
        slot.registered.store(false, Ordering::Relaxed);
    }

    /// Drops the tombstones (no walk in progress), fixing the indices.
    fn compact(&mut self) {
        if self.tombstones == 0 {
            return;
        }
        self.entries.retain(|e| !e.obj.is_null());
        for (i, e) in self.entries.iter().enumerate() {
            // SAFETY: registry lock held; a live entry's slot is valid.
            unsafe { *(*e.slot).index.get() = i };
        }
        self.tombstones = 0;
    }

    /// Number of registered objects (tests and statistics).
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.tombstones
    }
}

/// Reports the ranges of every registered result and channel buffer: the
/// stop parts, and the deferred parts too unless `deferred_later` (the
/// collector then walks them with the world running: [`for_each_deferred`]).
///
/// # Safety
/// Called by the GC with the world stopped (any thread may call it: it only
/// reads under the locks described in the module docs).
pub(crate) unsafe fn for_each_registered(f: RangeFn<'_>, deferred_later: bool) {
    let reg = lock();
    let mut values = 0;
    for e in reg.entries.iter().filter(|e| !e.obj.is_null()) {
        // SAFETY: per `insert`'s contract, with the lock held.
        unsafe { (e.scan)(e.obj, &mut *f) };
        if let (Some(d), false) = (e.deferred, deferred_later) {
            let mut at = WalkPos::START;
            // SAFETY: per `insert_deferred`'s contract, with the lock held.
            while !unsafe { d(e.obj, &mut at, &mut |lo, hi| {
                values += 1;
                f(lo, hi)
            }) } {}
        }
    }
    DEFERRED_RANGES_IN_STOPS.fetch_add(values, Ordering::Relaxed);
}

/// Ranges of deferred parts and spawn closures reported in stops,
/// process-wide (test statistics: 0 while every concurrent cycle walks
/// the former afterwards and scans the latter with the task stacks).
pub(crate) static DEFERRED_RANGES_IN_STOPS: AtomicUsize = AtomicUsize::new(0);

/// Entries [`for_each_deferred`] looks at per registry lock, at most.
const WALK_BUDGET: usize = 64;

/// Reports the deferred part of every registered object (channel buffers),
/// with the world running, holding the registry lock for one chunk that
/// reports something (a deferred function scans a bounded chunk per call)
/// or [`WALK_BUDGET`] entries at most: see the module docs for why that is
/// sound.
/// Objects registered during the walk are visited too (harmless); removed
/// ones leave tombstones until the last walker finishes.
pub(crate) fn for_each_deferred(f: RangeFn<'_>) {
    /// Ends the walk, also if `f` unwinds (tombstones would pile up).
    struct Walk;
    impl Drop for Walk {
        fn drop(&mut self) {
            let mut reg = lock();
            reg.walkers -= 1;
            if reg.walkers == 0 {
                reg.compact();
            }
        }
    }
    lock().walkers += 1;
    let _walk = Walk;
    let (mut i, mut at) = (0usize, WalkPos::START);
    loop {
        let reg = lock();
        let mut budget = WALK_BUDGET;
        while budget > 0 && i < reg.entries.len() {
            budget -= 1;
            let e = &reg.entries[i];
            let Some(d) = e.deferred.filter(|_| !e.obj.is_null()) else {
                // (A tombstone may be the entry the walk was part way
                // through: the next one starts at its beginning. Review
                // 115: carried over, the position skipped the next
                // channel's values.)
                (i, at) = (i + 1, WalkPos::START);
                continue;
            };
            let mut reported = false;
            // SAFETY: a live entry (not a tombstone) with the registry lock
            // held: per `insert_deferred`'s contract.
            if unsafe {
                d(e.obj, &mut at, &mut |lo, hi| {
                    reported = true;
                    f(lo, hi)
                })
            } {
                (i, at) = (i + 1, WalkPos::START);
            }
            if reported {
                break;
            }
        }
        if i >= reg.entries.len() {
            return;
        }
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
                    DEFERRED_RANGES_IN_STOPS.fetch_add(1, Ordering::Relaxed);
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

    // An entry removed while the walk is part way through it (review 115):
    // the walk goes on with the next entry from its beginning. Fake
    // entries: X's deferred part never ends and reports nothing (a walk
    // leaves it only once it is removed, so the removal always falls in
    // the middle of it; under qemu a remover racing a 2M-chunk part lost),
    // Y records the position its first call gets.
    static X_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static Y_FIRST_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

    // SAFETY (of the fn): reads nothing.
    unsafe fn x_chunk(_: *const (), pos: &mut WalkPos, _: RangeFn<'_>) -> bool {
        X_CALLS.fetch_add(1, Ordering::SeqCst);
        pos.at += 1;
        false
    }

    // SAFETY (of the fn): reads nothing.
    unsafe fn y_chunk(_: *const (), pos: &mut WalkPos, _: RangeFn<'_>) -> bool {
        let _ = Y_FIRST_AT.compare_exchange(u64::MAX, pos.at, Ordering::SeqCst, Ordering::SeqCst);
        true
    }

    #[test]
    fn an_entry_removed_mid_walk_does_not_shift_the_next_one() {
        let sx: &'static Slot = Box::leak(Box::new(Slot::new()));
        let sy: &'static Slot = Box::leak(Box::new(Slot::new()));
        let (ox, oy) = (sx as *const Slot as *const (), sy as *const Slot as *const ());
        // SAFETY: leaked slots (never freed); the fake scans read nothing.
        unsafe {
            let mut g = lock();
            g.insert_deferred(sx, ox, scan_nothing, Some(x_chunk));
            g.insert_deferred(sy, oy, scan_nothing, Some(y_chunk));
        }
        let remover = std::thread::spawn(move || {
            while X_CALLS.load(Ordering::SeqCst) < 1000 {
                std::hint::spin_loop();
            }
            lock().remove(sx);
        });
        for_each_deferred(&mut |_, _| {});
        remover.join().unwrap();
        lock().remove(sy);
        assert_eq!(Y_FIRST_AT.load(Ordering::SeqCst), 0, "the next entry's walk started at the removed entry's position");
    }
}
