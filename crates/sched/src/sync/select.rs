//! `Select`: wait for the first of several channel operations, like Go's
//! `select` statement.
//!
//! ```
//! # use usurp_sched::sync::{channel, Select};
//! # use std::time::Duration;
//! let (tx1, rx1) = channel::<u32>();
//! let (tx2, rx2) = channel::<&str>();
//! tx2.send("hi").unwrap();
//! let mut sel = Select::new();
//! let a = sel.recv(&rx1);
//! let b = sel.recv(&rx2);
//! sel.timeout(Duration::from_secs(1));
//! let s = sel.wait();
//! if s.index() == Some(b) {
//!     assert_eq!(s.recv(&rx2), Ok("hi"));
//! } else if s.index() == Some(a) {
//!     let _ = s.recv(&rx1);
//! } else {
//!     assert!(s.timed_out());
//! }
//! # drop(tx1);
//! ```
//!
//! **Algorithm** (Go's `selectgo`, with the claim of `wait.rs` as Go's
//! `selectDone`). `wait` locks every distinct channel of its cases in
//! address order (so two selects cannot deadlock), then polls the cases in
//! a random order: the first that can complete now completes (under the
//! locks) and is returned, so the choice among ready cases is uniformly
//! random. If none is ready: with a default case, it returns `Default`;
//! with a timeout already passed, `TimedOut`; otherwise it enqueues one
//! wait node per case, all sharing one [`Claim`], unlocks, and waits. A
//! sender or receiver (or drop of the other half) that dequeues one of the
//! nodes must win the claim (WAITING → WON + case index) before completing
//! the operation with it; the timer (if any) must win it (WAITING →
//! TIMED_OUT). Exactly one wins, so exactly one case completes (or the
//! timeout) and the waiter is woken once. Then the waiter relocks the
//! channels and unlinks its remaining nodes. Losers skip the nodes, so a
//! value is never handed to a select that took another case.
//!
//! The nodes and the values of send cases live in the `Select` (Rust heap),
//! not on the task's stack.
//!
//! **GC values** (issue 11). A value in a select is a GC root like one on
//! the task's stack: a select whose cases may hold a pointer (a value of at
//! least a word) registers its case storage in `heap_roots::REGISTRY`, and
//! every pause scans, conservatively: the values of send cases not yet
//! offered or taken back (a case not chosen: `wait` moves its value back
//! out of its node, so it lives until the `Selected` is dropped or
//! [`Selected::take_unsent`] takes it), the
//! payloads of its wait nodes once notified (a value handed to a receive
//! case, or returned by a send case whose receiver went away) or once
//! another case or the timer won the claim (a losing send case's value,
//! possibly already dequeued by a counterpart that lost the claim, before
//! `wait` takes it back), and the outcomes not yet taken with
//! [`Selected::recv`] / [`Selected::send`]. A send case's value offered in
//! a queued node is scanned through its channel (`mpsc::scan_offers` reads
//! blocked senders' payloads under the channel lock). Every write to the
//! scanned fields by the select's owner happens under the storage's own
//! lock (`Inner::lock`), which the scan takes; the other writer of a node's
//! payload (the counterpart, under the channel lock) must win the claim
//! first and is done before the node is notified, and the scan reads a
//! payload only once notified or once the claim is lost (no counterpart
//! writes it then).

use super::mpsc::{Chan, Receiver, RecvError, SendError, Sender, State, SyncSender, TryRecvError, TrySendError};
use crate::glue::heap_roots::{self, RangeFn, Slot};
use crate::spin::{SpinGuard, SpinLock};
use std::cell::UnsafeCell;
use crate::tasks::wait::{Claim, WaitNode, Waker};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The sending half of a channel, for [`Select::send`]: [`Sender`] or
/// [`SyncSender`]. Sealed.
pub trait SendHalf<T>: sealed::Sealed<T> {}
pub(super) mod sealed {
    use std::sync::Arc;
    /// Sealed: only the crate's senders implement it.
    pub trait Sealed<T> {
        /// The sender's `Chan<T>` (type-erased: `Chan` is private), valid
        /// while `self` is.
        #[doc(hidden)]
        fn chan_erased(&self) -> *const ();
    }
    impl<T> Sealed<T> for super::Sender<T> {
        fn chan_erased(&self) -> *const () {
            Arc::as_ptr(&self.chan) as *const ()
        }
    }
    impl<T> Sealed<T> for super::SyncSender<T> {
        fn chan_erased(&self) -> *const () {
            Arc::as_ptr(&self.chan) as *const ()
        }
    }
}
impl<T> SendHalf<T> for Sender<T> {}
impl<T> SendHalf<T> for SyncSender<T> {}

/// One case, type-erased. All methods but `lock`, `unlock`, `notified`
/// and `complete` need the channel locked by this select (`lock` on this
/// case or on a sibling case of the same channel, `adopt`).
trait Case<'a> {
    fn chan_addr(&self) -> usize;
    fn is_recv(&self) -> bool;
    /// Takes the channel lock; returns the state pointer for siblings.
    fn lock(&mut self) -> *mut ();
    /// Uses a sibling's lock (same channel, so the same `State<T>`).
    fn adopt(&mut self, st: *mut ());
    fn unlock(&mut self);
    /// Completes now if possible (the outcome is stored in the case);
    /// a waker to wake after unlocking goes into `wakers`.
    fn poll(&mut self, wakers: &mut Vec<Waker>) -> bool;
    fn enqueue(&mut self, claim: &Claim, case: usize);
    /// A case that did not win: unlinks its node if still queued, moves a
    /// send case's value back into the case and drops the node. Needs the
    /// storage lock too (it writes what the scan reads).
    fn dequeue(&mut self);
    fn notified(&self) -> bool;
    /// After this case won: moves the outcome out of the node.
    fn complete(&mut self);
    /// The typed outcome slot (`Option<Result<T, RecvError>>` or
    /// `Option<Result<(), SendError<T>>>`).
    fn out(&mut self) -> *mut ();
    /// A send case's value slot (`Option<T>`: the value while not offered,
    /// and once `wait` took it back from a losing node); null for a
    /// receive case.
    fn unsent(&mut self) -> *mut ();
    /// GC scan (`scan_cases`, storage lock held): reports the bytes of the
    /// values this case holds (see the module docs); nothing for values
    /// smaller than a word.
    fn gc_ranges(&self, f: RangeFn<'_>);
}

/// Reports the bytes of `*p` to a GC scan.
fn report<X>(p: *const X, f: RangeFn<'_>) {
    let lo = p as usize;
    f(lo, lo + std::mem::size_of::<X>());
}

/// A select's cases, boxed so that their address stays put while the
/// `Select` and then the `Selected` move: a GC root while registered (see
/// the module docs).
struct Inner<'a> {
    /// Registration in `heap_roots::REGISTRY` (made by the first case whose
    /// values may hold a pointer). First field: unregistered before the
    /// cases are dropped.
    roots: Slot,
    /// Held by the scan (`scan_cases`) and by the owner for every write to
    /// what the scan reads: the case list, send values, outcomes, and the
    /// payload of a notified node. Taken before channel locks.
    lock: SpinLock<()>,
    /// Written by the owner only, and only under `lock` (`cases_mut`); read
    /// by the owner (`cases`) and by the scan (under `lock`).
    cases: UnsafeCell<Vec<Box<dyn Case<'a> + 'a>>>,
}

impl<'a> Inner<'a> {
    fn new() -> Box<Inner<'a>> {
        Box::new(Inner { roots: Slot::new(), lock: SpinLock::new(()), cases: UnsafeCell::new(Vec::new()) })
    }

    /// The cases, to read (owner only).
    fn cases(&self) -> &Vec<Box<dyn Case<'a> + 'a>> {
        // SAFETY: a mutable reference to the list exists only while `lock`
        // is held, made by the owner (`cases_mut`), which does not use a
        // shared one from here while it lives (see `cases_mut`); the scan
        // makes only shared ones, under `lock`. Shared references coexist.
        unsafe { &*self.cases.get() }
    }

    /// The cases, to change (owner only), while `g` (a guard of `lock`,
    /// so no scan is reading them) is held.
    #[allow(clippy::mut_from_ref)]
    fn cases_mut<'g>(&'g self, _g: &'g SpinGuard<'_, ()>) -> &'g mut Vec<Box<dyn Case<'a> + 'a>> {
        // SAFETY: `g` holds `lock`, so the scan (which takes it) makes no
        // reference to the list meanwhile; the owner is the only caller
        // (`Select`/`Selected` are neither `Send` nor `Sync`) and makes no
        // other reference to the list while this one lives: shared ones
        // from `cases` are not kept across a `cases_mut` (each use of the
        // list in `wait` and `Selected` takes one or the other for a
        // bounded section, see there).
        unsafe { &mut *self.cases.get() }
    }
}

/// The registry's scan function of a select's storage.
///
/// # Safety
/// `obj` is a registered `Inner` (unregistered before it is dropped); the
/// registry lock is held.
unsafe fn scan_cases(obj: *const (), f: RangeFn<'_>) {
    // SAFETY: per the contract; lifetimes do not change the layout.
    let inner = unsafe { &*(obj as *const Inner<'static>) };
    let _g = inner.lock.lock();
    // SAFETY: the list is only changed under `lock` (`Select::push_case`);
    // the fields the cases report are written under it too.
    let cases = unsafe { &*inner.cases.get() };
    for c in cases.iter() {
        c.gc_ranges(&mut *f);
    }
}

struct RecvCase<'a, T> {
    chan: &'a Chan<T>,
    /// The address of the borrowed `Receiver` (`State::receiver_at`).
    rx_at: usize,
    guard: Option<SpinGuard<'a, State<T>>>,
    st: *mut State<T>,
    node: Option<WaitNode<Option<T>>>,
    out: Option<Result<T, RecvError>>,
}

struct SendCase<'a, T> {
    chan: &'a Chan<T>,
    guard: Option<SpinGuard<'a, State<T>>>,
    st: *mut State<T>,
    value: Option<T>,
    node: Option<WaitNode<Option<T>>>,
    out: Option<Result<(), SendError<T>>>,
}

macro_rules! lock_impl {
    () => {
        fn chan_addr(&self) -> usize {
            self.chan as *const Chan<T> as usize
        }
        fn lock(&mut self) -> *mut () {
            let g = self.guard.insert(self.chan.state.lock());
            self.st = &mut **g as *mut State<T>;
            self.st as *mut ()
        }
        fn adopt(&mut self, st: *mut ()) {
            self.st = st as *mut State<T>;
        }
        fn unlock(&mut self) {
            self.st = std::ptr::null_mut();
            self.guard = None;
        }
        fn notified(&self) -> bool {
            self.node.as_ref().is_some_and(|n| n.is_notified())
        }
        fn dequeue(&mut self) {
            if let Some(n) = &self.node {
                let np = n as *const _ as *mut WaitNode<Option<T>>;
                // SAFETY: the channel is locked by this select (see `Case`).
                let st = unsafe { &mut *self.st };
                if self.is_recv() {
                    st.recv_q.remove(np);
                } else {
                    st.send_q.remove(np);
                }
            }
            // Off the queue under the channel lock and not the winner: no
            // waker touches the node again, so its value (a send case's,
            // never handed over) moves back into the case, where the scan
            // reports it, and the node (whose claim is about to go away)
            // is dropped.
            if let Some(v) = self.node.take().and_then(|n| n.payload.into_inner()) {
                self.keep_unsent(v);
            }
        }
    };
}

impl<T> RecvCase<'_, T> {
    /// A losing receive node holds no value (a sender writes one only
    /// after winning the claim); dropped if it ever did.
    fn keep_unsent(&mut self, v: T) {
        drop(v);
    }
}

impl<T> SendCase<'_, T> {
    /// The value of a losing send case, back from its node.
    fn keep_unsent(&mut self, v: T) {
        self.value = Some(v);
    }
}

impl<'a, T> Case<'a> for RecvCase<'a, T> {
    lock_impl!();
    fn is_recv(&self) -> bool {
        true
    }
    fn poll(&mut self, wakers: &mut Vec<Waker>) -> bool {
        // SAFETY: the channel is locked by this select.
        let st = unsafe { &mut *self.st };
        let (r, w) = st.try_recv_locked();
        wakers.extend(w);
        match r {
            Ok(v) => self.out = Some(Ok(v)),
            Err(TryRecvError::Disconnected) => self.out = Some(Err(RecvError)),
            Err(TryRecvError::Empty) => return false,
        }
        true
    }
    fn enqueue(&mut self, claim: &Claim, case: usize) {
        let n = self.node.insert(WaitNode::with_claim(None, claim, case));
        // SAFETY: the channel is locked by this select; the node (in this
        // boxed case) stays put until dequeued by a winner or by `dequeue`.
        unsafe {
            (*self.st).receiver_at = self.rx_at;
            (*self.st).recv_q.push(n as *mut WaitNode<Option<T>>)
        };
    }
    fn complete(&mut self) {
        let n = self.node.as_ref().expect("won case has a node");
        // SAFETY: notified: the winner is done with the node.
        self.out = Some(unsafe { (*n.payload.get()).take() }.ok_or(RecvError));
    }
    fn out(&mut self) -> *mut () {
        &mut self.out as *mut _ as *mut ()
    }
    fn unsent(&mut self) -> *mut () {
        std::ptr::null_mut()
    }
    fn gc_ranges(&self, f: RangeFn<'_>) {
        if !crate::join::may_hold_pointer::<T>() {
            return;
        }
        report(&self.out, &mut *f);
        if let Some(n) = self.node.as_ref().filter(|n| n.is_notified()) {
            report(n.payload.get(), f);
        }
    }
}

impl<'a, T> Case<'a> for SendCase<'a, T> {
    lock_impl!();
    fn is_recv(&self) -> bool {
        false
    }
    fn poll(&mut self, wakers: &mut Vec<Waker>) -> bool {
        // SAFETY: the channel is locked by this select.
        let st = unsafe { &mut *self.st };
        let v = self.value.take().expect("send case value");
        let (r, w) = st.try_send_locked(v);
        wakers.extend(w);
        match r {
            Ok(()) => self.out = Some(Ok(())),
            Err(TrySendError::Disconnected(v)) => self.out = Some(Err(SendError(v))),
            Err(TrySendError::Full(v)) => {
                self.value = Some(v);
                return false;
            }
        }
        true
    }
    fn enqueue(&mut self, claim: &Claim, case: usize) {
        let v = self.value.take().expect("send case value");
        let n = self.node.insert(WaitNode::with_claim(Some(v), claim, case));
        // SAFETY: as in `RecvCase::enqueue`.
        unsafe { (*self.st).send_q.push(n as *mut WaitNode<Option<T>>) };
    }
    fn complete(&mut self) {
        let n = self.node.as_ref().expect("won case has a node");
        // SAFETY: notified: the winner is done with the node. A value left
        // in it means the receiver went away.
        self.out = Some(match unsafe { (*n.payload.get()).take() } {
            None => Ok(()),
            Some(v) => Err(SendError(v)),
        });
    }
    fn out(&mut self) -> *mut () {
        &mut self.out as *mut _ as *mut ()
    }
    fn unsent(&mut self) -> *mut () {
        &mut self.value as *mut _ as *mut ()
    }
    fn gc_ranges(&self, f: RangeFn<'_>) {
        if !crate::join::may_hold_pointer::<T>() {
            return;
        }
        report(&self.value, &mut *f);
        report(&self.out, &mut *f);
        // A notified node (its value returned: receiver gone), or one whose
        // claim another case or the timer won: a waker may have dequeued
        // it (`pop_live` leaves a losing node out of the queue), so the
        // channel no longer reports its value; no waker writes it any more
        // (it must win the claim first). `wait` moves that value back into
        // `value` (and drops the node) before the claim goes away, so the
        // claim read here is alive.
        let reported = |n: &&WaitNode<Option<T>>| {
            // SAFETY: as just said, the claim is alive while a node that is
            // not notified is still in the case.
            n.is_notified() || unsafe { n.claim_lost() }
        };
        if let Some(n) = self.node.as_ref().filter(reported) {
            report(n.payload.get(), f);
        }
    }
}

/// A set of channel operations to wait on together: build it with
/// [`Select::recv`] / [`Select::send`] (each returns the case's index),
/// optionally [`Select::timeout`] or [`Select::default`], then
/// [`Select::wait`]. Works from tasks (parks the task) and from plain
/// threads (blocks the thread). When several cases are ready, one is chosen
/// uniformly at random (as Go's `select`).
pub struct Select<'a> {
    inner: Box<Inner<'a>>,
    deadline: Option<u64>,
    default: bool,
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select").field("cases", &self.inner.cases().len()).field("default", &self.default).finish()
    }
}

impl Default for Select<'_> {
    fn default() -> Self {
        Select::new()
    }
}

/// Which way a [`Select`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// The case with this index completed.
    Case(usize),
    /// The timeout elapsed first.
    TimedOut,
    /// No case was ready and the select has a default case.
    Default,
}

/// The outcome of [`Select::wait`]: which case completed, and its result
/// ([`Selected::recv`] / [`Selected::send`]).
pub struct Selected<'a> {
    chosen: Chosen,
    inner: Box<Inner<'a>>,
}

impl std::fmt::Debug for Selected<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected").field("chosen", &self.chosen).finish()
    }
}

static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

fn random() -> u64 {
    // A splitmix64 step over a global counter mixed with the clock: cheap,
    // and good enough to break ties between ready cases.
    let mut z = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ crate::sys::now_ns();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Select<'a> {
        Select { inner: Inner::new(), deadline: None, default: false }
    }

    /// Adds a case (built by the caller inside `_np`, so that no GC stop
    /// finds its value in a box not yet listed); registers the storage as
    /// a GC root first if the case's values may hold a pointer.
    #[inline(never)]
    fn push_case(&mut self, case: Box<dyn Case<'a> + 'a>, may_hold_pointer: bool, _np: usurp_preempt::NoPreempt) -> usize {
        let inner = &*self.inner;
        if may_hold_pointer && !inner.roots.registered() {
            // SAFETY: `inner` is boxed (fixed address) and unregisters when
            // dropped (`Slot`, its first field); `scan_cases` reads under
            // `inner.lock` what the owner writes under it.
            unsafe { heap_roots::lock().insert(&inner.roots, inner as *const Inner<'a> as *const (), scan_cases) };
        }
        let g = inner.lock.lock();
        let cases = inner.cases_mut(&g);
        cases.push(case);
        cases.len() - 1
    }

    /// Adds a receive on `rx`; returns the case's index. Its result:
    /// `Ok(value)`, or `Err(RecvError)` when all senders are gone (a
    /// disconnected channel is always ready, as in Go a closed channel).
    pub fn recv<T: Send + 'a>(&mut self, rx: &'a Receiver<T>) -> usize {
        let np = usurp_preempt::NoPreempt::new();
        let case = Box::new(RecvCase { chan: &rx.chan, rx_at: rx as *const Receiver<T> as usize, guard: None, st: std::ptr::null_mut(), node: None, out: None });
        self.push_case(case, crate::join::may_hold_pointer::<T>(), np)
    }

    /// Adds a send of `value` on `tx` (a [`Sender`] or [`SyncSender`]);
    /// returns the case's index. Its result: `Ok(())`, or
    /// `Err(SendError(value))` if the receiver is gone (always ready). The
    /// values of send cases that are not chosen are dropped with the
    /// [`Selected`].
    ///
    /// **GC values**: `value` stays a root while the select holds it (in
    /// the select's storage, offered to the channel, or returned in
    /// `Err(SendError(value))`), as a received value does until
    /// [`Selected::recv`] (see the module docs). Memory a value owns (a
    /// `Vec<GcRef>`) is not scanned, as for channels.
    pub fn send<T: Send + 'a, S: SendHalf<T>>(&mut self, tx: &'a S, value: T) -> usize {
        // SAFETY: the sender's `Chan<T>`, kept alive by `tx`, borrowed for 'a.
        let chan: &'a Chan<T> = unsafe { &*(tx.chan_erased() as *const Chan<T>) };
        let np = usurp_preempt::NoPreempt::new();
        // Hook (stack_scan.rs): the value leaves the caller's stack for the
        // select's storage (no stop of a mark in progress rescans it):
        // shaded during a mark, atomically with the start stop, on threads
        // without a mutator (inside `blocking`).
        crate::stack_scan::publish(value, move |value| {
            let case = Box::new(SendCase {
                chan,
                guard: None,
                st: std::ptr::null_mut(),
                value: Some(value),
                node: None,
                out: None,
            });
            self.push_case(case, crate::join::may_hold_pointer::<T>(), np)
        })
    }

    /// Gives up after `d` (then [`Selected::timed_out`]). A zero timeout
    /// only polls, like a default case.
    pub fn timeout(&mut self, d: Duration) -> &mut Self {
        self.deadline = Some(crate::tasks::wait::deadline_after(d));
        self
    }

    /// Gives up at `deadline`.
    pub fn deadline(&mut self, deadline: Instant) -> &mut Self {
        self.timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// Adds a default case: if no case is ready, `wait` returns
    /// [`Chosen::Default`] at once instead of waiting.
    pub fn default_case(&mut self) -> &mut Self {
        self.default = true;
        self
    }

    /// Completes one ready case (chosen at random among the ready ones), or
    /// waits until one can complete, the timeout elapses, or — with a
    /// default case — returns at once.
    ///
    /// # Panics
    /// With no case, no timeout and no default case (it would wait forever).
    pub fn wait(self) -> Selected<'a> {
        let Select { inner, deadline, default } = self;
        // The list is read through `inner.cases()` (shared) and changed
        // through `cases_mut` only under the storage lock; no shared
        // reference is kept across a `cases_mut` section (`Inner::cases_mut`).
        let n = inner.cases().len();
        if n == 0 && deadline.is_none() && !default {
            panic!("usurp: Select::wait with no case, no timeout and no default would block forever");
        }
        // Lock order: by channel address; a channel in several cases is
        // locked once (the others adopt its state pointer).
        let mut lock_order: Vec<usize> = (0..n).collect();
        lock_order.sort_by_key(|&i| inner.cases()[i].chan_addr());
        let lock_all = |cases: &mut Vec<Box<dyn Case<'a> + 'a>>| {
            let mut prev: Option<(usize, *mut ())> = None;
            for &i in &lock_order {
                let a = cases[i].chan_addr();
                match prev {
                    Some((pa, st)) if pa == a => cases[i].adopt(st),
                    _ => prev = Some((a, cases[i].lock())),
                }
            }
        };
        let unlock_all = |cases: &mut Vec<Box<dyn Case<'a> + 'a>>| {
            for &i in lock_order.iter().rev() {
                cases[i].unlock();
            }
        };
        // Random poll order (Fisher-Yates).
        let mut poll_order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (random() % (i as u64 + 1)) as usize;
            poll_order.swap(i, j);
        }
        let mut wakers = Vec::new();
        // The storage lock first (module docs): polls and enqueues move
        // values the GC scan reads.
        let stg = inner.lock.lock();
        let cases = inner.cases_mut(&stg);
        lock_all(cases);
        let ready = poll_order.iter().copied().find(|&i| cases[i].poll(&mut wakers));
        let chosen = match ready {
            Some(i) => Some(Chosen::Case(i)),
            None if default => Some(Chosen::Default),
            None if deadline.is_some_and(|d| d <= crate::sys::now_ns()) => Some(Chosen::TimedOut),
            None => None,
        };
        if let Some(chosen) = chosen {
            unlock_all(cases);
            drop(stg);
            for w in wakers {
                w.wake();
            }
            return Selected { chosen, inner };
        }
        debug_assert!(wakers.is_empty());
        let claim = Claim::new();
        for (i, c) in cases.iter_mut().enumerate() {
            c.enqueue(&claim, i);
        }
        unlock_all(cases);
        drop(stg);
        crate::tasks::wait::note_wait(crate::tasks::tcb::wait_kind::SELECT, n as u64);
        // Shared reads while waiting (the scan may run meanwhile).
        let won = claim.wait(deadline, |i| inner.cases()[i].notified());
        // Unlink the nodes still queued (all but the winner's) before the
        // claim and nodes go away, and move the losing send cases' values
        // back into their cases: under the storage lock, as the scan reads
        // those values (in the node, then in the case).
        let stg = inner.lock.lock();
        let cases = inner.cases_mut(&stg);
        lock_all(cases);
        for (i, c) in cases.iter_mut().enumerate() {
            if Some(i) != won {
                c.dequeue();
            }
        }
        unlock_all(cases);
        if let Some(i) = won {
            cases[i].complete();
        }
        drop(stg);
        match won {
            Some(i) => Selected { chosen: Chosen::Case(i), inner },
            None => Selected { chosen: Chosen::TimedOut, inner },
        }
    }
}

impl<'a> Selected<'a> {
    /// How the select ended.
    pub fn chosen(&self) -> Chosen {
        self.chosen
    }

    /// The index of the completed case, or `None` (timeout or default).
    pub fn index(&self) -> Option<usize> {
        match self.chosen {
            Chosen::Case(i) => Some(i),
            _ => None,
        }
    }

    /// Whether the timeout elapsed first.
    pub fn timed_out(&self) -> bool {
        self.chosen == Chosen::TimedOut
    }

    /// Whether no case was ready and the default case was taken.
    pub fn is_default(&self) -> bool {
        self.chosen == Chosen::Default
    }

    /// The result of the completed receive case on `rx`.
    ///
    /// # Panics
    /// If the completed case is not a receive on `rx`.
    pub fn recv<T: Send>(self, rx: &Receiver<T>) -> Result<T, RecvError> {
        let addr = &*rx.chan as *const Chan<T> as usize;
        let i = self.index().expect("Selected::recv: no case completed (timeout or default)");
        let stg = self.inner.lock.lock();
        let c = &mut self.inner.cases_mut(&stg)[i];
        assert!(c.is_recv() && c.chan_addr() == addr, "Selected::recv: case {i} is not a receive on this channel");
        // SAFETY: a receive case on this channel address was built from a
        // `&Receiver<T>` of this very (still borrowed, so live) channel:
        // its outcome slot has type `Option<Result<T, RecvError>>`.
        let out = unsafe { &mut *(c.out() as *mut Option<Result<T, RecvError>>) };
        out.take().expect("outcome taken once")
    }

    /// The result of the completed send case on `tx`.
    ///
    /// # Panics
    /// If the completed case is not a send on `tx`.
    pub fn send<T: Send, S: SendHalf<T>>(self, tx: &S) -> Result<(), SendError<T>> {
        let addr = tx.chan_erased() as usize;
        let i = self.index().expect("Selected::send: no case completed (timeout or default)");
        let stg = self.inner.lock.lock();
        let c = &mut self.inner.cases_mut(&stg)[i];
        assert!(!c.is_recv() && c.chan_addr() == addr, "Selected::send: case {i} is not a send on this channel");
        // SAFETY: as in `recv`, for `Option<Result<(), SendError<T>>>`.
        let out = unsafe { &mut *(c.out() as *mut Option<Result<(), SendError<T>>>) };
        out.take().expect("outcome taken once")
    }

    /// The value of send case `case` on `tx` back, if that case did not
    /// complete (another case, the timeout or the default was chosen):
    /// what to offer again after a timeout, rather than lose a value that
    /// is not `Clone`. `None` for the completed case (its value was sent,
    /// or comes back in [`Selected::send`]'s `SendError`) and once taken.
    /// Values not taken are dropped with the `Selected`.
    ///
    /// # Panics
    /// If case `case` is not a send on `tx`.
    pub fn take_unsent<T: Send, S: SendHalf<T>>(&mut self, case: usize, tx: &S) -> Option<T> {
        let addr = tx.chan_erased() as usize;
        let stg = self.inner.lock.lock();
        let cases = self.inner.cases_mut(&stg);
        let Some(c) = cases.get_mut(case) else {
            panic!("Selected::take_unsent: no case {case} (the select had {})", cases.len())
        };
        assert!(
            !c.is_recv() && c.chan_addr() == addr,
            "Selected::take_unsent: case {case} is not a send on this channel"
        );
        // SAFETY: a send case on this channel address was built from a
        // `SendHalf<T>` of this very (still borrowed, so live) channel:
        // its value slot has type `Option<T>`. Written under the storage
        // lock (`stg`), which the GC scan of the slot takes.
        unsafe { (*(c.unsent() as *mut Option<T>)).take() }
    }
}
