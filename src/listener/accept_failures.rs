//! Failed accepts of one listening socket (out of descriptors and the
//! like): the loop backs off before it tries again, and the warning is
//! written at most once a minute, with how many failed since, so a flood
//! of connections neither spins the accept loop nor fills the log. The
//! listeners', the admin API's and the demo endpoints' loops all go
//! through [`AcceptFailures::back_off`].

use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// How long an accept loop waits after a failed accept: the connection
/// that failed is still queued, and an immediate retry fails the same way.
const BACK_OFF: Duration = Duration::from_millis(50);

/// How often the warning may be written.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct AcceptFailures {
    warned: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// Notes one failure of `listener`'s accept (warning at most once a
    /// minute), then waits before the loop tries again.
    pub async fn back_off(&mut self, listener: &str, error: &io::Error) {
        self.record(listener, error);
        tokio::time::sleep(BACK_OFF).await;
    }

    /// Notes one failure of `listener`'s accept, and warns if the last
    /// warning is a minute old.
    fn record(&mut self, listener: &str, error: &io::Error) {
        self.unlogged += 1;
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(listener = %listener, %error, failed = self.unlogged, "accept failed");
            self.warned = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_warning_a_minute_with_the_failures_since() {
        let error = io::Error::from_raw_os_error(24);
        let mut failures = AcceptFailures::default();
        failures.record("web", &error);
        assert_eq!(failures.unlogged, 0, "the first failure is warned of");
        let first = failures.warned.expect("warned");
        for _ in 0..5 {
            tokio::time::advance(BACK_OFF).await;
            failures.record("web", &error);
        }
        assert_eq!(failures.unlogged, 5);
        assert_eq!(failures.warned, Some(first), "no second warning yet");
        tokio::time::advance(WARN_EVERY).await;
        failures.record("web", &error);
        assert_eq!(failures.unlogged, 0, "warned again, with the six since");
        assert!(failures.warned.expect("warned") > first);
    }
}
