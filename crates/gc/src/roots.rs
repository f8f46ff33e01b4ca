//! Precise roots and weak references.
//!
//! A [`Root`] is an RAII handle to a slot the collector treats as a precise
//! root (for pointers held outside scanned stacks: Rust heap data, globals).
//! A [`WeakRef`] is a slot the collector clears when its target is found
//! unreachable (before finalization and sweeping). Both are `Arc<AtomicUsize>`
//! slots in a table; dropping the handle makes the table forget the slot at
//! the next collection.

use crate::object::{Gc, GcRef};
use crate::GcType;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct SlotTable {
    slots: Mutex<Vec<Arc<AtomicUsize>>>,
}

impl SlotTable {
    pub fn add(&self, v: usize) -> Arc<AtomicUsize> {
        let s = Arc::new(AtomicUsize::new(v));
        self.slots.lock().unwrap().push(s.clone());
        s
    }

    /// Visit every live slot, forgetting slots whose handle was dropped.
    pub fn for_each(&self, mut f: impl FnMut(&AtomicUsize)) {
        let mut v = self.slots.lock().unwrap();
        v.retain(|s| {
            if Arc::strong_count(s) == 1 {
                return false;
            }
            f(s);
            true
        });
    }
}

/// A precise root: keeps its object (if any) alive until dropped or reset.
/// `Send + Sync`: it may live anywhere.
pub struct Root {
    slot: Arc<AtomicUsize>,
}

impl Root {
    pub(crate) fn new(slot: Arc<AtomicUsize>) -> Root {
        Root { slot }
    }
    /// The rooted object.
    pub fn get(&self) -> Option<GcRef> {
        GcRef::from_heap_addr(self.slot.load(Ordering::Acquire))
    }
    /// The rooted object as a `Gc<T>` if its descriptor is `T`'s.
    pub fn get_as<T: GcType>(&self) -> Option<Gc<T>> {
        self.get().and_then(Gc::from_ref)
    }
    /// Root another object (or none).
    pub fn set(&self, v: Option<GcRef>) {
        self.slot.store(v.map_or(0, |r| r.addr()), Ordering::Release);
    }
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Root({:?})", self.get())
    }
}

/// A weak reference: `get()` returns the target until the collector finds it
/// unreachable, then `None` forever (even if a finalizer resurrects it).
pub struct WeakRef {
    slot: Arc<AtomicUsize>,
}

impl WeakRef {
    pub(crate) fn new(slot: Arc<AtomicUsize>) -> WeakRef {
        WeakRef { slot }
    }
    /// The target, if still alive. The returned handle keeps it alive while it
    /// is on a scanned stack or in a root.
    pub fn get(&self) -> Option<GcRef> {
        GcRef::from_heap_addr(self.slot.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for WeakRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeakRef({:?})", self.get())
    }
}

/// Identifies a root scanner registered with [`Heap::add_root_scanner`](crate::Heap::add_root_scanner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannerId(pub(crate) u64);

/// A root-scanning callback: called in the pause with a function to report
/// each root (null-free object starts). It must not allocate or block on
/// anything a stopped task may hold.
pub type RootScanner = Box<dyn Fn(&mut dyn FnMut(GcRef)) + Send + Sync>;
