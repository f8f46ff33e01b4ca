//! Task-aware synchronisation: blocking operations park the calling task
//! (its worker runs other tasks meanwhile); from plain threads they block the
//! thread, so the same objects can connect tasks and threads.

mod condvar;
pub mod mpsc;
mod mutex;
mod select;

pub use crate::wait::set_wait_claim_for_tests;
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mpsc::{
    channel, sync_channel, Receiver, RecvError, RecvTimeoutError, SendError, Sender, SyncSender, TryRecvError,
    TrySendError,
};
pub use mutex::{Mutex, MutexGuard, TryLockError};
pub use select::{Chosen, Select, Selected, SendHalf};
