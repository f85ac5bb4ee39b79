//! The one timer of a connection, re-armed lazily: it enforces
//! `header_read_timeout` (from the first byte of a request head until the
//! request is handed to the proxy), `idle_timeout` (no request in flight,
//! or one in flight with nothing moving) and parks an idle HTTP/1
//! connection after [`PARK_AFTER`]. hyper's own header timer is off: it
//! also runs while a keep-alive connection is idle, which would cut idle
//! connections at the header timeout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::connection_state::ConnectionState;

/// How long an HTTP/1 connection stays idle before it parks. Far longer
/// than the gap between the requests of a busy connection: parking and
/// resuming builds the connection's server state and buffers again. Short,
/// so that a burst of new connections does not leave their buffers behind.
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// The limits a connection's timer enforces, copied from the snapshot the
/// connection began under.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Wait(Instant),
    /// Idle for PARK_AFTER: park the connection.
    Park,
    Close,
    Drain,
}

impl ConnectionState {
    /// When the last byte was read or written, or an idle or head-reading
    /// phase began, whichever is later.
    pub(super) fn last_read(&self) -> Instant {
        let last_io = self.last_io_ms.load(Ordering::Relaxed);
        let since = self.since_ms.load(Ordering::Acquire);
        self.epoch + Duration::from_millis(last_io.max(since))
    }

    /// What the connection timer should do now; `parkable`: an HTTP/1
    /// connection served by hyper. Called when the timer fired: the clock
    /// itself, not the turn's reading (`clock.rs`), which can be older than
    /// the firing when another thread turns the timer driver; a `Wait` for a
    /// deadline already passed would fire again at once, and the caller's
    /// loop would ask again with the same old reading.
    pub(super) fn step(&self, limits: &Deadlines, parkable: bool) -> Step {
        self.step_at(Instant::now(), limits, parkable)
    }

    pub(super) fn step_at(&self, now: Instant, limits: &Deadlines, parkable: bool) -> Step {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let last_io =
                self.epoch + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
            let deadline = last_io + limits.idle;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        if self.reading_head.load(Ordering::Acquire) {
            let deadline = since + limits.header_read;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let deadline = since + limits.idle;
        if now >= deadline {
            Step::Drain
        } else if parkable && since + PARK_AFTER < deadline {
            if now >= since + PARK_AFTER {
                Step::Park
            } else {
                Step::Wait(since + PARK_AFTER)
            }
        } else {
            Step::Wait(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    const LIMITS: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_parks_then_drains() {
        let c = ConnectionState::for_tests();
        let start = Instant::now();
        assert_eq!(c.step(&LIMITS, true), Step::Wait(start + PARK_AFTER));
        assert_eq!(c.step(&LIMITS, false), Step::Wait(start + LIMITS.idle));
        tokio::time::advance(PARK_AFTER).await;
        assert_eq!(c.step(&LIMITS, true), Step::Park);
        tokio::time::advance(LIMITS.idle - PARK_AFTER).await;
        assert_eq!(c.step(&LIMITS, true), Step::Drain);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_has_header_read_timeout_and_a_request_idle_timeout() {
        let c = ConnectionState::for_tests();
        // A head begins 5 s in: it must be whole by 15 s.
        tokio::time::advance(Duration::from_secs(5)).await;
        c.since_ms.store(c.now_ms(), Ordering::Release);
        c.reading_head.store(true, Ordering::Release);
        let begun = Instant::now();
        assert_eq!(
            c.step(&LIMITS, true),
            Step::Wait(begun + LIMITS.header_read)
        );
        tokio::time::advance(LIMITS.header_read).await;
        assert_eq!(c.step(&LIMITS, true), Step::Close);

        // A request in flight with nothing moving is cut at idle_timeout
        // from the last byte, not parked.
        c.reading_head.store(false, Ordering::Release);
        c.in_flight.store(1, Ordering::Release);
        c.last_io_ms.store(c.now_ms(), Ordering::Relaxed);
        let last_io = Instant::now();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(c.step(&LIMITS, true), Step::Wait(last_io + LIMITS.idle));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.step(&LIMITS, true), Step::Close);
    }
}
