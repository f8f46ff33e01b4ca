//! Task-aware synchronisation: blocking operations park the calling task
//! (its worker runs other tasks meanwhile); from plain threads they block the
//! thread, so the same objects can connect tasks and threads.

mod condvar;
pub mod mpsc;
mod mutex;

pub use condvar::Condvar;
pub use mpsc::{channel, sync_channel, Receiver, RecvError, SendError, Sender, SyncSender, TryRecvError, TrySendError};
pub use mutex::{Mutex, MutexGuard};
