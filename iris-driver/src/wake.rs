//! [`Wake`]: how the node's tasks wake each other on its one thread.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A wake-up for one waiting task on the node's thread, kept until taken (like tokio's
/// `Notify::notify_one`): a notice given while nobody waits lets the next wait return at
/// once. No lock and no allocation, which matters because the reader, the writer and the
/// timer of every connection wait on one for every batch. Waits may wake spuriously (a
/// notice from before the condition was checked): callers check in a loop.
#[derive(Default)]
pub(crate) struct Wake {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake").finish_non_exhaustive()
    }
}

impl Wake {
    /// Wakes the waiting task, or the next one to wait.
    pub(crate) fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once notified (at once if a notice is pending), taking the notice.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            let waker = match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => w,
                _ => cx.waker().clone(),
            };
            self.waker.set(Some(waker));
            Poll::Pending
        })
        .await
    }
}
