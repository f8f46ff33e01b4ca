//! Task-aware synchronisation: blocking operations park the calling task
//! (its worker runs other tasks meanwhile); from plain threads they block the
//! thread, so the same objects can connect tasks and threads.
//!
//! The API follows `std::sync`: [`Mutex`] (`lock`, `try_lock` returning
//! `Result<_, TryLockError>`; no poisoning), [`Condvar`] (`wait`,
//! `wait_while`, `wait_timeout`, `wait_timeout_while`, `notify_one`,
//! `notify_all`), [`channel`] / [`sync_channel`] (`send`, `try_send`,
//! `recv`, `try_recv`, `recv_timeout`, `recv_deadline`, `iter`); plus
//! [`Select`], Go's `select` over receives and sends. Timed waits and
//! selects are woken exactly once: see the claim in `wait.rs`.

mod condvar;
pub mod mpsc;
mod mutex;
mod select;

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use crate::tasks::wait::{set_shutdown_skip_for_tests, set_wait_claim_for_tests};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mpsc::{
    channel, sync_channel, Receiver, RecvError, RecvTimeoutError, SendError, Sender, SyncSender, TryRecvError,
    TrySendError,
};
pub use mutex::{Mutex, MutexGuard, TryLockError};
pub use select::{Chosen, Select, Selected, SendHalf};
