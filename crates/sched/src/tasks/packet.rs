//! The reference-counted pointer of spawn packets (`join.rs`: the task
//! holds its packet as `PacketRc<dyn Body>`, the join handle as
//! `PacketRc<dyn Joinable<T>>`), in memory recycled per thread.
//!
//! `Arc` would do, but its memory comes from and goes back to the global
//! allocator on every spawn: one `malloc` and one `free` per spawn+join,
//! about 145 of its ~1290 instructions (callgrind, `benches/switch.rs`
//! spawn+join on `workers(1)`, glibc). Here the count lives in the packet
//! itself ([`Counted`]) and the memory of small packets (up to
//! [`CLASS_SIZES`]) is taken from and returned to a per-thread cache of
//! free blocks ([`alloc_block`], [`free_block`]); only a cache that is
//! empty (or full) falls back to the global allocator. Blocks may move
//! between threads (a packet allocated by one thread, freed by another):
//! every block of a class has the same layout, so any thread's cache or the
//! global allocator can take it.
//!
//! The cache functions are non-generic and never inlined: the spawn and
//! join paths are generic and may be inlined into `preemptible!` code,
//! where a task can be preempted (and another task run on the same thread)
//! at any instruction; the cache's list operations stay outside the
//! preemptible ranges, so no preemption splits them.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::Cell;
use std::ops::Deref;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

/// A value that carries its own reference count (starts at 1), read
/// without a virtual call through `PacketRc<dyn Trait>`.
///
/// # Safety
/// The implementing type is `#[repr(C)]` with an `AtomicUsize`, the count,
/// as its first field.
pub(crate) unsafe trait Counted {}

/// Block sizes of the per-thread cache; blocks are aligned to
/// [`BLOCK_ALIGN`]. Larger or more aligned packets use the global
/// allocator directly.
const CLASS_SIZES: [usize; 2] = [128, 256];
const BLOCK_ALIGN: usize = 16;
/// Free blocks a thread keeps per class.
const CACHE_MAX: usize = 32;

/// Test-only switch (negative control of the block cache): `false` sends
/// every packet to the global allocator, as with `Arc`.
static CACHE_ENABLED: AtomicBool = AtomicBool::new(true);

/// Test-only: turns the per-thread packet block cache off (`false`) or on
/// (`hooks::set_packet_cache_for_tests`).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_packet_cache_for_tests(enabled: bool) {
    CACHE_ENABLED.store(enabled, Ordering::SeqCst);
}

/// Test-only: how many packet allocations this thread's cache served so
/// far (`hooks::packet_cache_hits_for_tests`).
#[cfg(feature = "test-hooks")]
pub(crate) fn packet_cache_hits_for_tests() -> usize {
    CACHE.try_with(|c| c.hits.get()).unwrap_or(0)
}

struct ClassCache {
    /// Free blocks, linked through their first word.
    head: Cell<*mut u8>,
    len: Cell<usize>,
}

struct BlockCache {
    classes: [ClassCache; 2],
    /// Allocations served from the cache (test statistics).
    hits: Cell<usize>,
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        for (i, c) in self.classes.iter().enumerate() {
            let mut p = c.head.replace(ptr::null_mut());
            while !p.is_null() {
                // SAFETY: a free block of class `i`: its first word links
                // the next one; allocated with `class_layout(i)`.
                unsafe {
                    let next = *(p as *mut *mut u8);
                    dealloc(p, class_layout(i));
                    p = next;
                }
            }
            c.len.set(0);
        }
    }
}

thread_local! {
    static CACHE: BlockCache = const {
        BlockCache {
            classes: [
                ClassCache { head: Cell::new(ptr::null_mut()), len: Cell::new(0) },
                ClassCache { head: Cell::new(ptr::null_mut()), len: Cell::new(0) },
            ],
            hits: Cell::new(0),
        }
    };
}

fn class_layout(i: usize) -> Layout {
    // SAFETY: sizes are non-zero multiples of the alignment, a power of two.
    unsafe { Layout::from_size_align_unchecked(CLASS_SIZES[i], BLOCK_ALIGN) }
}

/// The cache class of `layout`, if it fits one.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > BLOCK_ALIGN {
        return None;
    }
    CLASS_SIZES.iter().position(|&s| layout.size() <= s)
}

/// Memory for a packet of `layout` (non-zero size): a cached block of its
/// class if this thread has one, else from the global allocator.
#[inline(never)]
fn alloc_block(layout: Layout) -> *mut u8 {
    let (p, l) = match class_of(layout) {
        Some(i) => {
            if CACHE_ENABLED.load(Ordering::Relaxed) {
                let p = CACHE
                    .try_with(|cache| {
                        let c = &cache.classes[i];
                        let p = c.head.get();
                        if !p.is_null() {
                            // SAFETY: a free block: its first word links the next.
                            c.head.set(unsafe { *(p as *mut *mut u8) });
                            c.len.set(c.len.get() - 1);
                            cache.hits.set(cache.hits.get() + 1);
                        }
                        p
                    })
                    .unwrap_or(ptr::null_mut());
                if !p.is_null() {
                    return p;
                }
            }
            // SAFETY: a non-zero size.
            (unsafe { alloc(class_layout(i)) }, class_layout(i))
        }
        // SAFETY: the caller's layout has a non-zero size.
        None => (unsafe { alloc(layout) }, layout),
    };
    if p.is_null() {
        handle_alloc_error(l);
    }
    p
}

/// Returns a block from [`alloc_block`]`(layout)`.
///
/// # Safety
/// `p` came from `alloc_block` with the same `layout` and is not used
/// afterwards.
#[inline(never)]
unsafe fn free_block(p: *mut u8, layout: Layout) {
    let Some(i) = class_of(layout) else {
        // SAFETY: per the contract, allocated with `layout`.
        unsafe { dealloc(p, layout) };
        return;
    };
    let kept = CACHE_ENABLED.load(Ordering::Relaxed)
        && CACHE
            .try_with(|c| {
                let c = &c.classes[i];
                if c.len.get() >= CACHE_MAX {
                    return false;
                }
                // SAFETY: the block is ours (per the contract) and at least
                // a word in size, aligned for a pointer.
                unsafe { *(p as *mut *mut u8) = c.head.get() };
                c.head.set(p);
                c.len.set(c.len.get() + 1);
                true
            })
            .unwrap_or(false);
    if !kept {
        // SAFETY: blocks of class `i` are allocated with its layout.
        unsafe { dealloc(p, class_layout(i)) };
    }
}

/// A shared pointer to a [`Counted`] value in memory from [`alloc_block`]
/// (see the module docs): `Arc` with the count inside the value.
pub(crate) struct PacketRc<D: ?Sized + Counted> {
    p: NonNull<D>,
}

// SAFETY: as `Arc<D>`: shared access from any thread needs `D: Sync`, and
// the last owner drops `D` on its thread, so `D: Send` too.
unsafe impl<D: ?Sized + Counted + Send + Sync> Send for PacketRc<D> {}
// SAFETY: as above.
unsafe impl<D: ?Sized + Counted + Send + Sync> Sync for PacketRc<D> {}

impl<D: Counted> PacketRc<D> {
    /// Moves `v` (whose count must be 1) into a block of its own.
    pub(crate) fn new(v: D) -> PacketRc<D> {
        let layout = Layout::new::<D>();
        assert!(layout.size() != 0, "packets are never zero-sized");
        let p = alloc_block(layout) as *mut D;
        // SAFETY: fresh memory for a `D`.
        unsafe { p.write(v) };
        // SAFETY: `alloc_block` never returns null.
        let r = PacketRc { p: unsafe { NonNull::new_unchecked(p) } };
        debug_assert_eq!(r.refs().load(Ordering::Relaxed), 1);
        r
    }
}

impl<D: ?Sized + Counted> PacketRc<D> {
    /// Another owner of the same value, through a pointer of another
    /// (unsized) type: `cast` must return the pointer it is given, unsized
    /// (e.g. `|p| p as NonNull<dyn Body>`).
    ///
    /// # Safety
    /// `cast` returns its argument's address, as a pointer to a type whose
    /// `Counted` impl is the same value's.
    pub(crate) unsafe fn clone_as<U: ?Sized + Counted>(&self, cast: impl FnOnce(NonNull<D>) -> NonNull<U>) -> PacketRc<U> {
        self.refs().fetch_add(1, Ordering::Relaxed);
        PacketRc { p: cast(self.p) }
    }

    /// The count: the value's first field (see [`Counted`]).
    #[inline]
    fn refs(&self) -> &AtomicUsize {
        // SAFETY: per `Counted`'s contract; alive while any owner is.
        unsafe { &*(self.p.as_ptr() as *const u8 as *const AtomicUsize) }
    }

    /// This owner through a pointer of another (unsized) type, as
    /// [`PacketRc::clone_as`] without a new owner.
    ///
    /// # Safety
    /// As [`PacketRc::clone_as`].
    pub(crate) unsafe fn cast<U: ?Sized + Counted>(self, cast: impl FnOnce(NonNull<D>) -> NonNull<U>) -> PacketRc<U> {
        let p = std::mem::ManuallyDrop::new(self).p;
        PacketRc { p: cast(p) }
    }

    /// The value's address (tests).
    #[cfg(test)]
    pub(crate) fn as_ptr(&self) -> *const D {
        self.p.as_ptr()
    }

    /// The last owner: drops the value and frees its block.
    #[inline(never)]
    fn drop_slow(&mut self) {
        fence(Ordering::Acquire);
        // SAFETY: the last owner; the value is valid until dropped here;
        // its layout is the one `new` allocated with (`Layout::for_value`
        // of the same object through an unsized pointer).
        unsafe {
            let layout = Layout::for_value(self.p.as_ref());
            ptr::drop_in_place(self.p.as_ptr());
            free_block(self.p.as_ptr() as *mut u8, layout);
        }
    }
}

impl<D: ?Sized + Counted> Deref for PacketRc<D> {
    type Target = D;
    #[inline]
    fn deref(&self) -> &D {
        // SAFETY: alive while any owner is.
        unsafe { self.p.as_ref() }
    }
}

impl<D: ?Sized + Counted> Drop for PacketRc<D> {
    #[inline]
    fn drop(&mut self) {
        if self.refs().fetch_sub(1, Ordering::Release) == 1 {
            self.drop_slow();
        }
    }
}
