//! How a listener tells its connections to drain: a flag and a `Notify`,
//! one per listener, set when its accept loop ends (the listener's token
//! was cancelled: shutdown, or a reload that removed it).
//!
//! A connection holds a reference and one waiter, registered on its first
//! poll: an atomic count and one lock of the waiter list, and one more
//! lock as it is dropped. A `CancellationToken` (what connections held
//! before) took a lock of the token tree for each clone and each drop, two
//! clones per connection: 253 instructions more per `Connection: close`
//! request under callgrind (docs/performance-notebook.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// A listener's drain signal, shared by its connections.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    notify: Arc<Notify>,
}

impl Stop {
    /// Whether the listener has stopped: its connections drain.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A future that completes when the listener stops after this call
    /// (one that stopped before is told by `is_stopped`). It is woken
    /// once polled, or as soon as it exists: `Notify` counts its wake-ups.
    pub fn waiter(&self) -> OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }

    /// Stops the listener's connections: those waiting are woken, later
    /// ones see the flag.
    fn signal(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Signals `Stop` when dropped: held by the accept loop, so its
/// connections drain however the loop ends.
pub struct SignalOnDrop(pub Arc<Stop>);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        self.0.signal();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn waiters_are_woken_and_later_ones_see_the_flag() {
        let stop = Arc::new(Stop::default());
        let mut polled = pin!(stop.waiter());
        // Created before the signal, never polled: still told.
        let unpolled = stop.waiter();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(polled.as_mut().poll(&mut cx).is_pending());
        assert!(!stop.is_stopped());
        drop(SignalOnDrop(Arc::clone(&stop)));
        assert!(stop.is_stopped());
        assert_eq!(polled.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(pin!(unpolled).poll(&mut cx), Poll::Ready(()));
        // After the signal, a new waiter waits; the flag tells.
        assert!(pin!(stop.waiter()).poll(&mut cx).is_pending());
    }
}
