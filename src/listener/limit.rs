//! The limit on open client connections (`server.max_connections`), shared
//! by every listener: a count and the limit, both atomics, and a `Notify`
//! for the accept loops waiting at the limit.
//!
//! A connection takes a place with one compare-and-swap and gives it back
//! with one subtraction; only a connection closed while the count is at
//! (or over) the limit wakes the waiting loops. tokio's `Semaphore`, which
//! this replaces, took its waiter list's lock for every connection that
//! closed, waiting loops or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How many client connections are open, and how many may be.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: AtomicUsize,
    /// Told when a place may have come free: a connection closed at the
    /// limit, or the limit rose.
    freed: Notify,
}

/// One open connection's place, given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            freed: Notify::new(),
        })
    }

    /// A place, if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<Place> {
        let max = self.max.load(Ordering::Relaxed);
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Place(Arc::clone(self))),
                Err(now) => open = now,
            }
        }
    }

    /// A place, once one is free.
    pub async fn take(self: &Arc<Self>) -> Place {
        loop {
            // Registered before the check: a place freed between the two
            // wakes this waiter.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(place) = self.try_take() {
                return place;
            }
            freed.await;
        }
    }

    /// Moves the limit. Lowered, it takes effect as connections close:
    /// none is closed for it.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    /// How many connections hold a place.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let before = self.0.open.fetch_sub(1, Ordering::AcqRel);
        if before >= self.0.max.load(Ordering::Relaxed) {
            self.0.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn places_up_to_the_limit_and_a_freed_one_wakes_a_waiter() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_take().expect("first place");
        let _b = limit.try_take().expect("second place");
        assert!(limit.try_take().is_none());
        assert_eq!(limit.open(), 2);
        let mut waiting = pin!(limit.take());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(a);
        let Poll::Ready(_c) = waiting.as_mut().poll(&mut cx) else {
            panic!("a freed place is taken");
        };
        assert_eq!(limit.open(), 2);
    }

    #[test]
    fn a_lowered_limit_holds_as_connections_close_and_a_raised_one_wakes() {
        let limit = ConnectionLimit::new(3);
        let places: Vec<_> = (0..3).filter_map(|_| limit.try_take()).collect();
        assert_eq!(places.len(), 3);
        limit.set_max(1);
        let mut places = places.into_iter();
        drop(places.next());
        // Two open, the limit one: still full.
        assert!(limit.try_take().is_none());
        let mut waiting = pin!(limit.take());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        limit.set_max(4);
        let Poll::Ready(_d) = waiting.as_mut().poll(&mut cx) else {
            panic!("a raised limit frees a place");
        };
        assert_eq!(limit.open(), 3);
    }
}
