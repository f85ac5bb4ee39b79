//! The time of a turn: one clock read per poll of a connection's task.
//!
//! A request used to read the clock eight or nine times between its accept
//! and its close: the socket's reads and writes (for the idle and
//! header-read timeouts), its start, its endpoint's answer, the pooled
//! connection's check-in, its end (for the duration histogram). Each read
//! is a vDSO call of 20-30 ns on the machines measured, about a quarter of
//! a microsecond per request (docs/performance-notebook.md, "The clock of
//! a turn"). nginx reads it once per turn of its event loop.
//!
//! Here a connection's task begins a [`Turn`] each time it is polled; until
//! that poll returns, [`now`] gives the instant the turn began. A poll does
//! a few microseconds of work (a large body's write, a few hundred), so a
//! duration is short and a deadline early by at most that. Outside a turn
//! (other tasks, tests) [`now`] reads the clock, as before.
//!
//! The clock is tokio's: it follows time paused in tests.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

thread_local! {
    static TURN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Now: the current turn's start within a turn, the clock's reading
/// otherwise.
#[inline]
pub fn now() -> Instant {
    TURN.with(Cell::get).unwrap_or_else(Instant::now)
}

/// While it lives, [`now`] on this thread gives the instant it was begun.
/// Not `Send`: a future that held one across an `.await` would lend its
/// time to the tasks polled meanwhile, and could not be spawned.
#[must_use = "the turn ends when this is dropped"]
pub struct Turn {
    outer: Option<Instant>,
    _not_send: PhantomData<*const ()>,
}

impl Turn {
    /// Reads the clock once, for everything until the guard drops.
    #[inline]
    pub fn begin() -> Self {
        Self {
            outer: TURN.replace(Some(Instant::now())),
            _not_send: PhantomData,
        }
    }
}

impl Drop for Turn {
    #[inline]
    fn drop(&mut self) {
        TURN.set(self.outer);
    }
}

pin_project_lite::pin_project! {
    /// A future each poll of which is a turn: for tasks that serve requests
    /// (an HTTP/2 client's streams).
    pub struct InTurns<F> {
        #[pin]
        inner: F,
    }
}

impl<F> InTurns<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for InTurns<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _turn = Turn::begin();
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_turn_holds_its_instant_and_gives_the_clock_back_when_it_ends() {
        let before = now();
        {
            let _turn = Turn::begin();
            let begun = now();
            tokio::time::advance(Duration::from_secs(5)).await;
            assert_eq!(now(), begun, "within a turn, one instant");
            {
                let _inner = Turn::begin();
                assert_eq!(now(), begun + Duration::from_secs(5));
            }
            assert_eq!(now(), begun, "an inner turn gives the outer's back");
        }
        assert_eq!(now(), before + Duration::from_secs(5), "outside, the clock");
    }

    #[test]
    fn a_turn_ends_with_a_panic_too() {
        let caught = std::panic::catch_unwind(|| {
            let _turn = Turn::begin();
            panic!("in a turn");
        });
        assert!(caught.is_err());
        assert!(TURN.with(Cell::get).is_none());
    }

    #[tokio::test]
    async fn each_poll_of_a_future_in_turns_is_a_turn_of_its_own() {
        let (first, second) = InTurns::new(async {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            assert!(Instant::now() > first, "the clock moved");
            assert_eq!(now(), first, "the turn's instant did not");
            tokio::time::sleep(Duration::from_millis(2)).await;
            (first, now())
        })
        .await;
        assert!(
            second >= first + Duration::from_millis(2),
            "a new poll, a new turn"
        );
        assert!(TURN.with(Cell::get).is_none(), "none left behind");
    }
}
