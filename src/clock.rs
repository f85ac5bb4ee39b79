//! The time of a turn: at most one clock read per poll of a task that
//! serves connections.
//!
//! A request used to read the clock eight or nine times between its accept
//! and its close: the socket's reads and writes (for the idle and
//! header-read timeouts), its start, its endpoint's answer, the pooled
//! connection's check-in, its end (for the duration histogram). Each read
//! is a vDSO call of 20-70 ns on the machines measured, a quarter of a
//! microsecond per request in all (docs/performance-notebook.md, "The clock
//! of a turn"). nginx reads it once per turn of its event loop.
//!
//! Here a connection's task, an HTTP/2 stream's and a listener's accept loop
//! begin a [`Turn`] each time they are polled. The first [`now`] within the
//! turn reads the clock, and every later one until the poll returns gives
//! that same instant; a poll that asks for none reads none. A poll does a
//! few microseconds of work (a large body's write, a few hundred), so a
//! duration is short and a deadline early by at most that. Outside a turn
//! (other tasks, tests) [`now`] reads the clock, as before.
//!
//! Not for deciding whether a deadline has passed once a timer fired: with
//! another thread turning the timer driver, the turn's reading can be older
//! than the firing, and a loop that re-arms the timer on it would spin
//! (`listener/timer.rs`'s `step` and `upstream/h1/pool.rs`'s deadline read
//! the clock itself).
//!
//! The clock is tokio's: it follows time paused in tests.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

/// This thread's turn: `None` outside one; within one, the instant its
/// first [`now`] read, once read.
type State = Option<Option<Instant>>;

thread_local! {
    static TURN: Cell<State> = const { Cell::new(None) };
}

/// Now: within a turn, the instant its first call read; outside one, the
/// clock's reading.
#[inline]
pub fn now() -> Instant {
    TURN.with(|turn| match turn.get() {
        Some(Some(at)) => at,
        Some(None) => {
            let at = Instant::now();
            turn.set(Some(Some(at)));
            at
        }
        None => Instant::now(),
    })
}

/// While it lives, [`now`] on this thread reads the clock once at most.
/// Not `Send`: a future that held one across an `.await` would lend its
/// time to the tasks polled meanwhile, and could not be spawned.
#[must_use = "the turn ends when this is dropped"]
pub struct Turn {
    outer: State,
    _not_send: PhantomData<*const ()>,
}

impl Turn {
    /// Begins a turn; the clock is read when first asked.
    #[inline]
    pub fn begin() -> Self {
        Self {
            outer: TURN.replace(Some(None)),
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
    /// A future each poll of which is a turn: for the tasks that serve
    /// connections and requests (an accept loop, an HTTP/2 client's streams).
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
    async fn a_turn_holds_its_first_reading_and_gives_the_clock_back_when_it_ends() {
        let before = now();
        {
            let _turn = Turn::begin();
            tokio::time::advance(Duration::from_secs(1)).await;
            let first = now();
            assert_eq!(
                first,
                before + Duration::from_secs(1),
                "read when first asked"
            );
            tokio::time::advance(Duration::from_secs(5)).await;
            assert_eq!(now(), first, "within a turn, one instant");
            {
                let _inner = Turn::begin();
                assert_eq!(now(), first + Duration::from_secs(5));
            }
            assert_eq!(now(), first, "an inner turn gives the outer's back");
        }
        assert_eq!(now(), before + Duration::from_secs(6), "outside, the clock");
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
