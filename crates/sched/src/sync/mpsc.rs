//! Channels with the shape of `std::sync::mpsc`: [`channel`] (unbounded) and
//! [`sync_channel`] (bounded; capacity 0 is a rendezvous). Blocking
//! operations park the task, not the worker thread; from plain threads they
//! block the thread.
//!
//! One spin lock guards a buffer and two wait queues. A sender that finds a
//! receiver waiting hands the value straight into the receiver's wait node;
//! a receiver that finds a blocked sender takes the sender's value (or moves
//! it into the freed buffer slot). Values never pass through the buffer on a
//! rendezvous, so capacity 0 needs no special case.
//!
//! **GC values in flight.** A value sent but not yet received sits in the
//! buffer (Rust heap memory) or in a blocked sender's wait node (on the
//! sender's stack, scanned like any task stack, or inside a `Select`). A
//! channel whose values may
//! hold a pointer (at least a word in size) registers itself in
//! `heap_roots::REGISTRY` when created and leaves it when dropped. Every
//! cycle scans the bytes of its buffered values and of the values its
//! blocked senders offer conservatively, under the channel's lock, so a
//! `GcRef` (or a struct or tuple holding one) sent to a
//! task survives collections until it is received: the offers in the start
//! stop, the buffer in the stop of a stop-the-world cycle and a chunk at a
//! time with the world running in a concurrent one (`heap_roots.rs`; a
//! receive on a task then shades what it takes out of the buffer while a
//! heap marks, `State::try_recv_locked`). Memory a value owns (a
//! `Vec<GcRef>` sent as a whole) is not scanned.

use crate::glue::heap_roots::{self, RangeFn, Slot, WalkPos};
use crate::spin::{SpinGuard, SpinLock};
use crate::tasks::wait::{Claim, WaitNode, WaitQueue, Waker};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// A channel's state; every field is read and written under `Chan::state`.
pub(super) struct State<T> {
    buf: VecDeque<T>,
    /// Values ever taken from the front of `buf` (or dropped with it): the
    /// position of `buf[0]` among every value ever buffered, which the
    /// deferred scan counts in (`scan_buffer_chunk`).
    popped: u64,
    cap: usize,
    senders: usize,
    receiver_alive: bool,
    /// The `Receiver`'s address during the latest blocking receive (set
    /// under the lock by each one that queues a node; the `Receiver` is
    /// borrowed, so it stays there while that node is queued, and since
    /// there is one `Receiver`, every queued receive node has the same).
    /// Tells a sender whether an abandoned receiver task owned the
    /// `Receiver` on its own stack (see `try_send_locked`).
    pub(super) receiver_at: usize,
    pub(super) recv_q: WaitQueue<Option<T>>,
    pub(super) send_q: WaitQueue<Option<T>>,
}

pub(super) struct Chan<T> {
    /// Registration of the buffer as a GC root (see the module docs). First
    /// field: dropped (unregistered) before `state`.
    roots: Slot,
    pub(super) state: SpinLock<State<T>>,
}

/// The registry's deferred scan of a channel: up to [`SCAN_CHUNK_BYTES`]
/// of buffered values (one value at least) from position `pos.at` (counted
/// as `State::popped`: values received since the last call are skipped,
/// they were shaded), advancing it; `true` once it reached `pos.end`, the
/// buffer's end at the first call. Values buffered later come from black
/// stacks or were shaded (`heap_roots.rs`).
///
/// # Safety
/// `c` is a registered `Chan<T>`; the registry lock is held.
unsafe fn scan_buffer_chunk<T>(c: *const (), pos: &mut WalkPos, f: RangeFn<'_>) -> bool {
    // SAFETY: per the contract (unregistered before it is dropped).
    let c = unsafe { &*(c as *const Chan<T>) };
    let st = c.state.lock();
    if pos.end == u64::MAX {
        // Values buffered from now on come from black stacks or were
        // shaded: the walk stops at this end.
        pos.end = st.popped + st.buf.len() as u64;
    }
    let limit = pos.end.saturating_sub(st.popped).min(st.buf.len() as u64) as usize;
    let from = pos.at.saturating_sub(st.popped).min(limit as u64) as usize;
    let to = limit.min(from + (SCAN_CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1));
    let (a, b) = st.buf.as_slices();
    // `[from, to)` of the buffer, in its two slices.
    for (s, base) in [(a, 0), (b, a.len())] {
        let (lo, hi) = (from.max(base) - base, to.min(base + s.len()).saturating_sub(base));
        if lo < hi {
            let p = s[lo..hi].as_ptr() as usize;
            f(p, p + std::mem::size_of_val(&s[lo..hi]));
        }
    }
    pos.at = st.popped + to as u64;
    to >= limit
}

/// Bytes of buffered values a deferred scan reports per call (see
/// `heap_roots::WALK_BUDGET`): a receive waits for one chunk at most.
const SCAN_CHUNK_BYTES: usize = 32 << 10;

/// The registry's stop scan of a channel: the values its blocked senders
/// offer (the buffer is the deferred part, `scan_buffer_chunk`).
///
/// # Safety
/// `c` is a registered `Chan<T>`; the registry lock is held.
unsafe fn scan_offers<T>(c: *const (), f: RangeFn<'_>) {
    // SAFETY: per the contract (unregistered before it is dropped).
    let c = unsafe { &*(c as *const Chan<T>) };
    let st = c.state.lock();
    // Values offered by blocked senders: their nodes are on the senders'
    // stacks (scanned anyway for tasks, not for plain threads) or inside a
    // `Select` (Rust heap, issue 11): under this lock, a queued node's
    // payload is only written by whoever dequeues it, which holds it too.
    st.send_q.for_each_payload(|p| {
        let lo = p as usize;
        f(lo, lo + std::mem::size_of::<Option<T>>());
    });
}

/// The value could not be sent: the receiver is gone. Holds the value.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// Nothing will ever arrive: all senders are gone and the channel is empty.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub struct RecvError;

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum TryRecvError {
    /// No value is available now.
    Empty,
    /// All senders are gone and the channel is empty.
    Disconnected,
}

/// Why [`Receiver::recv_timeout`] returned nothing.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the timeout.
    Timeout,
    /// All senders are gone and the channel is empty.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on a channel"),
            RecvTimeoutError::Disconnected => f.write_str("receiving on an empty channel whose senders are all gone"),
        }
    }
}
impl std::error::Error for RecvTimeoutError {}
impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        RecvTimeoutError::Disconnected
    }
}

/// Why [`SyncSender::try_send`] failed; holds the value.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The buffer is full (or, for a rendezvous channel, no receiver waits).
    Full(T),
    /// The receiver is gone.
    Disconnected(T),
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}
impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receiver is gone")
    }
}
impl<T> std::error::Error for SendError<T> {}
impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}
impl std::error::Error for RecvError {}
impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => f.write_str("receiving on an empty channel whose senders are all gone"),
        }
    }
}
impl std::error::Error for TryRecvError {}
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}
impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => f.write_str("sending on a channel whose receiver is gone"),
        }
    }
}
impl<T> std::error::Error for TrySendError<T> {}

/// The sending half of an unbounded [`channel`]; clone it for more senders.
pub struct Sender<T> {
    pub(super) chan: Arc<Chan<T>>,
}

/// The sending half of a bounded [`sync_channel`]; clone it for more senders.
pub struct SyncSender<T> {
    pub(super) chan: Arc<Chan<T>>,
}

/// The receiving half of a channel: there is one (it is not `Clone`), but,
/// unlike `std::sync::mpsc::Receiver`, it is `Sync`: several tasks or
/// threads may receive through a shared reference (an `Arc<Receiver<T>>`
/// work queue); each value goes to one of them (the longest waiting first).
/// The channel disconnects for senders when the `Receiver` is dropped (not
/// when a task waiting in it is abandoned by its runtime's shutdown: the
/// value then goes to another receiver or stays buffered).
pub struct Receiver<T> {
    pub(super) chan: Arc<Chan<T>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender { .. }")
    }
}
impl<T> fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncSender { .. }")
    }
}
impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

/// Test-only switch (negative control of the owner check in
/// `try_send_locked`): `false`: a send that meets an abandoned receiver
/// never disconnects the channel, even when that task owned the
/// `Receiver` (then a bounded send waits for ever). Default `true`.
static ABANDONED_OWNER_DISCONNECTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets [`ABANDONED_OWNER_DISCONNECTS`] (`hooks::set_abandoned_owner_disconnects_for_tests`).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_abandoned_owner_disconnects_for_tests(on: bool) {
    ABANDONED_OWNER_DISCONNECTS.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn new_chan<T>(cap: usize) -> Arc<Chan<T>> {
    let c = Arc::new(Chan {
        roots: Slot::new(),
        state: SpinLock::new(State {
            buf: VecDeque::new(),
            popped: 0,
            cap,
            senders: 1,
            receiver_alive: true,
            receiver_at: 0,
            recv_q: WaitQueue::new(),
            send_q: WaitQueue::new(),
        }),
    });
    if crate::join::may_hold_pointer::<T>() {
        // SAFETY: the channel is in an `Arc` (fixed address) and unregisters
        // when dropped (`Slot`, its first field); its buffer and offers are
        // only touched under its lock, which both scans take; a value leaves
        // the buffer only in `try_recv_locked` (shaded there while a heap
        // marks, on a task) or with the receiver's drop (never to a stack).
        unsafe {
            heap_roots::lock().insert_deferred(
                &c.roots,
                Arc::as_ptr(&c) as *const (),
                scan_offers::<T>,
                Some(scan_buffer_chunk::<T>),
            )
        };
    }
    c
}

/// An unbounded channel: `send` never blocks. GC values sent (a `GcRef`,
/// a `Gc<T>`, structs of them) stay alive until received: the runtime scans
/// channel buffers (see the module docs).
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let c = new_chan(usize::MAX);
    (Sender { chan: c.clone() }, Receiver { chan: c })
}

/// A bounded channel holding at most `bound` values; `send` parks while it
/// is full. With `bound == 0` every send waits for a receiver (rendezvous).
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let c = new_chan(bound);
    (SyncSender { chan: c.clone() }, Receiver { chan: c })
}

impl<T> State<T> {
    /// Under the channel's lock: sends `v` now if a receiver waits (it is
    /// handed the value; the returned waker must be woken after unlocking)
    /// or the buffer has room; else `Full(v)` or `Disconnected(v)`.
    #[inline]
    pub(super) fn try_send_locked(&mut self, v: T) -> (Result<(), TrySendError<T>>, Option<Waker>) {
        if !self.receiver_alive {
            return (Err(TrySendError::Disconnected(v)), None);
        }
        while let Some(n) = self.recv_q.pop() {
            // SAFETY: a dequeued receiver node, not yet notified.
            if unsafe { WaitNode::is_abandoned(n) } {
                // The receiver is blocked in a task its runtime abandoned
                // (or is shutting down): that task never receives again.
                // If the `Receiver` lies on that task's own stack, the
                // task owned it, and nobody else can (a `Receiver` is not
                // `Clone`, and that stack is never unwound): the channel
                // is dead, and a send that waited for room would wait for
                // ever. Disconnect, as a dropped `Receiver` would (issue
                // 11 item 7). Otherwise the `Receiver` is shared (it is
                // `Sync`: an `Arc<Receiver>` work queue) and a live
                // receiver may wait behind this node or come later: only
                // this node is dropped, the value goes to the next live
                // receiver or the buffer (G1, session 12: it used to
                // disconnect here in every case, and every later send
                // failed while a live receiver waited).
                // SAFETY: a queued node, dequeued by us under the lock; its
                // waiter never looks at it again.
                let owned_by_dead_stack = unsafe { WaitNode::waiter_stack_holds(n, self.receiver_at) };
                // SAFETY: as above.
                unsafe { WaitNode::drop_abandoned(n) };
                if owned_by_dead_stack && ABANDONED_OWNER_DISCONNECTS.load(std::sync::atomic::Ordering::Relaxed) {
                    self.receiver_alive = false;
                    return (Err(TrySendError::Disconnected(v)), None);
                }
                continue;
            }
            // SAFETY: as above. Losing the claim means the receiver timed
            // out (or its select took another case): skip it, the value
            // goes to the next receiver or the buffer.
            if !unsafe { WaitNode::try_claim(n) } {
                continue;
            }
            // SAFETY: a dequeued receiver node we won; we fill its slot,
            // the caller wakes it.
            let w = unsafe {
                *(*n).payload.get() = Some(v);
                WaitNode::take_waker(n)
            };
            return (Ok(()), Some(w));
        }
        if self.buf.len() < self.cap {
            self.buf.push_back(v);
            return (Ok(()), None);
        }
        (Err(TrySendError::Full(v)), None)
    }

    /// Under the channel's lock: receives a value now if one is buffered
    /// (moving a blocked sender's value into the freed slot) or a live
    /// sender waits (rendezvous); the returned waker must be woken after
    /// unlocking. Else `Empty`, or `Disconnected` if no sender is left.
    #[inline(always)]
    pub(super) fn try_recv_locked(&mut self) -> (Result<T, TryRecvError>, Option<Waker>) {
        if let Some(v) = self.buf.pop_front() {
            self.popped += 1;
            // The deletion half for the deferred buffer scan: under the lock
            // (a task reaches no safe point before the guard drops).
            crate::stack_scan::shade_received(&v);
            // Room freed: move one blocked sender's value in.
            let w = self.send_q.pop_live().map(|n| {
                // SAFETY: a dequeued sender node we won, its value still in it.
                unsafe {
                    let sv = (*(*n).payload.get()).take().expect("sender value");
                    self.buf.push_back(sv);
                    WaitNode::take_waker(n)
                }
            });
            return (Ok(v), w);
        }
        if let Some(n) = self.send_q.pop_live() {
            // Rendezvous: take the value straight from the sender.
            // SAFETY: as above.
            let (v, w) = unsafe { ((*(*n).payload.get()).take().expect("sender value"), WaitNode::take_waker(n)) };
            return (Ok(v), Some(w));
        }
        if self.senders == 0 {
            return (Err(TryRecvError::Disconnected), None);
        }
        (Err(TryRecvError::Empty), None)
    }
}

impl<T> Chan<T> {
    /// Sends; `block` = wait for room.
    fn send(&self, v: T, block: bool) -> Result<(), TrySendError<T>> {
        // Hook (stack_scan.rs): the value leaves the sender's stack for the
        // buffer, a receiver's slot or (full) this frame's wait node:
        // shaded during a mark, atomically with the start stop, on threads
        // without a mutator (inside `blocking`).
        let (mut st, r, w) = crate::stack_scan::publish(v, |v| {
            let mut st = self.state.lock();
            let (r, w) = st.try_send_locked(v);
            (st, r, w)
        });
        let v = match r {
            Err(TrySendError::Full(v)) if block => v,
            r => {
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
                return r;
            }
        };
        // One look-up of the calling context for the whole wait.
        let waker = Waker::current();
        let task = waker.task();
        let node = WaitNode::with_waker(Some(v), waker);
        // SAFETY: the node stays on our stack until dequeued and woken.
        unsafe { st.send_q.push(&node as *const _ as *mut WaitNode<Option<T>>) };
        drop(st);
        node.wait_noted(task, crate::tasks::tcb::wait_kind::CHAN_SEND, self as *const Self as u64);
        // SAFETY: notified: the waker is done with the node.
        match unsafe { (*node.payload.get()).take() } {
            None => Ok(()),
            Some(v) => Err(TrySendError::Disconnected(v)),
        }
    }

    /// Receives a value if one is ready now (buffered, or from a blocked
    /// sender), else says why not: `Empty` or `Disconnected`. Called with
    /// the lock held; consumes the guard.
    #[inline(always)]
    fn recv_ready<'a>(&'a self, mut st: SpinGuard<'a, State<T>>) -> Result<T, (SpinGuard<'a, State<T>>, TryRecvError)> {
        match st.try_recv_locked() {
            (Ok(v), w) => {
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
                Ok(v)
            }
            (Err(e), _) => Err((st, e)),
        }
    }

    /// Receives; `block` = wait for a value: `None` = no, `Some(None)` =
    /// without a deadline, `Some(Some(d))` = until monotonic time `d`.
    /// `rx_at`: the address of the `Receiver` this receive borrows.
    fn recv(&self, block: Option<Option<u64>>, rx_at: usize) -> Result<T, RecvTimeoutError> {
        let st = match self.recv_ready(self.state.lock()) {
            Ok(v) => return Ok(v),
            Err((_, TryRecvError::Disconnected)) => return Err(RecvTimeoutError::Disconnected),
            Err((st, TryRecvError::Empty)) => st,
        };
        let Some(deadline) = block else {
            return Err(RecvTimeoutError::Timeout); // = Empty for try_recv
        };
        let mut st = st;
        st.receiver_at = rx_at;
        let Some(d) = deadline else {
            let waker = Waker::current();
            let task = waker.task();
            let node: WaitNode<Option<T>> = WaitNode::with_waker(None, waker);
            // SAFETY: the node stays on our stack until dequeued and woken.
            unsafe { st.recv_q.push(&node as *const _ as *mut WaitNode<Option<T>>) };
            drop(st);
            node.wait_noted(task, crate::tasks::tcb::wait_kind::CHAN_RECV, self as *const Self as u64);
            // SAFETY: notified: the waker is done with the node.
            return unsafe { (*node.payload.get()).take() }.ok_or(RecvTimeoutError::Disconnected);
        };
        let claim = Claim::new();
        let node: WaitNode<Option<T>> = WaitNode::with_claim(None, &claim, 0);
        let np = &node as *const _ as *mut WaitNode<Option<T>>;
        // SAFETY: the node stays on our stack until a waker that won our
        // claim woke it, or we removed it from the queue (below).
        unsafe { st.recv_q.push(np) };
        drop(st);
        crate::tasks::wait::note_wait(crate::tasks::tcb::wait_kind::CHAN_RECV, self as *const Self as u64);
        if claim.wait(Some(d), |_| node.is_notified()).is_some() {
            // SAFETY: notified: the waker is done with the node.
            return unsafe { (*node.payload.get()).take() }.ok_or(RecvTimeoutError::Disconnected);
        }
        // Timed out: nobody will fill or wake the node; unlink it (unless a
        // sender that lost the claim already dequeued it). A value or a
        // disconnection that arrived meanwhile is still reported.
        let mut st = self.state.lock();
        st.recv_q.remove(np);
        match self.recv_ready(st) {
            Ok(v) => Ok(v),
            Err((_, TryRecvError::Disconnected)) => Err(RecvTimeoutError::Disconnected),
            Err((_, TryRecvError::Empty)) => Err(RecvTimeoutError::Timeout),
        }
    }

    fn add_sender(&self) {
        self.state.lock().senders += 1;
    }

    fn drop_sender(&self) {
        let mut wakers: Vec<Waker> = Vec::new();
        {
            let mut st = self.state.lock();
            st.senders -= 1;
            if st.senders == 0 {
                while let Some(n) = st.recv_q.pop() {
                    // SAFETY: dequeued by us; its slot stays None =
                    // disconnected. A receiver whose claim we lose timed out
                    // (it sees the disconnection when it relocks).
                    unsafe {
                        if WaitNode::try_claim(n) {
                            wakers.push(WaitNode::take_waker(n));
                        }
                    }
                }
            }
        }
        for w in wakers {
            w.wake();
        }
    }

    fn drop_receiver(&self) {
        let mut wakers: Vec<Waker> = Vec::new();
        let buf = {
            // One no-preemption section from the buffer's removal to its
            // shading (no safe point in between), with the shading outside
            // the channel's lock (review 116: a buffer of 1M values shaded
            // under it held up other runtimes' start stops, which lock
            // every channel). The values are dropped after the section.
            let _np = usurp_preempt::NoPreempt::new();
            let buf = {
                let mut st = self.state.lock();
                st.receiver_alive = false;
                while let Some(n) = st.send_q.pop() {
                    // SAFETY: dequeued by us; the value stays in the node, which
                    // the sender reads as "disconnected" (a sender whose claim
                    // we lose sees the disconnection itself).
                    unsafe {
                        if WaitNode::try_claim(n) {
                            wakers.push(WaitNode::take_waker(n));
                        }
                    }
                }
                st.popped += st.buf.len() as u64;
                std::mem::take(&mut st.buf)
            };
            let (a, b) = buf.as_slices();
            crate::stack_scan::shade_received_all(a);
            crate::stack_scan::shade_received_all(b);
            buf
        };
        for w in wakers {
            w.wake();
        }
        drop(buf); // values dropped outside the lock
    }
}

impl<T> Sender<T> {
    /// Sends a value; fails only if the receiver is gone.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.chan.send(v, true).map_err(|e| match e {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => SendError(v),
        })
    }
}

impl<T> SyncSender<T> {
    /// Sends a value, parking while the channel is full (for a rendezvous
    /// channel: until a receiver takes it). Fails if the receiver is gone.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.chan.send(v, true).map_err(|e| match e {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => SendError(v),
        })
    }

    /// Sends a value if there is room (or a waiting receiver) right now.
    ///
    /// On failure a pending checkpoint request (quantum up, a stop waiting)
    /// is honoured before returning, as `checkpoint()` does, so a
    /// task polling `try_send` in a loop lets the receiver run even on a
    /// single worker (one load of a global word when none is pending).
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let r = self.chan.send(v, false);
        if r.is_err() {
            usurp_preempt::checkpoint();
        }
        r
    }
}

#[cfg(test)]
impl<T> Receiver<T> {
    /// The channel's address, as registered in `heap_roots` (tests).
    pub(crate) fn chan_addr(&self) -> *const () {
        Arc::as_ptr(&self.chan) as *const ()
    }
}

impl<T> Receiver<T> {
    /// Receives a value, parking until one arrives. Fails once all senders
    /// are gone and the channel is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv(Some(None), self as *const Self as usize).map_err(|_| RecvError)
    }

    /// Receives a value if one is available now, like
    /// `std::sync::mpsc::Receiver::try_recv`: `Err(Empty)` if none is (but
    /// senders remain), `Err(Disconnected)` if all senders are gone and the
    /// channel is empty. Never blocks; but when nothing is received, a
    /// pending checkpoint request (quantum up, a stop waiting) is honoured
    /// before returning, as `checkpoint()` does, so a task polling
    /// `try_recv` in a loop lets the sender run even on a single worker
    /// (one load of a global word when none is pending).
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let r = self.chan.recv(None, self as *const Self as usize).map_err(|e| match e {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
        });
        if r.is_err() {
            usurp_preempt::checkpoint();
        }
        r
    }

    /// Receives a value, parking (or, on a plain thread, blocking) for at
    /// most `timeout`, like `std::sync::mpsc::Receiver::recv_timeout`:
    /// `Err(Timeout)` if nothing arrived in time, `Err(Disconnected)` once
    /// all senders are gone and the channel is empty. A value that arrives
    /// as the timeout expires is either received or left in the channel for
    /// the next receive, never lost: the timer and a sender race for one
    /// claim (see the `wait` module docs). Timeouts are measured on the
    /// monotonic clock; for tasks they fire from the runtime's timers (as
    /// `usurp::sleep`), so they may be late under load, never early.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<T, RecvTimeoutError> {
        self.chan.recv(Some(Some(crate::tasks::wait::deadline_after(timeout))), self as *const Self as usize)
    }

    /// [`Receiver::recv_timeout`] with an absolute deadline.
    pub fn recv_deadline(&self, deadline: std::time::Instant) -> Result<T, RecvTimeoutError> {
        let d = deadline.saturating_duration_since(std::time::Instant::now());
        self.recv_timeout(d)
    }

    /// An iterator over received values, ending when all senders are gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }
}

/// Iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender { chan: self.chan.clone() }
    }
}
impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        SyncSender { chan: self.chan.clone() }
    }
}
impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}
impl<T> Drop for SyncSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}
impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}
