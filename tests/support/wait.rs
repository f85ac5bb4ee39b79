//! Waiting for a condition within a bound: the one way the tests wait for
//! something they cannot be told of. `eventually` in async tests,
//! `eventually_blocking` in tests that drive a child process; both poll
//! every 10 ms and fail the test when `limit` passes.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is asked again.
const POLL: Duration = Duration::from_millis(10);

/// What a probe returns: `true` or `Some(value)` when the condition holds.
pub trait Met {
    type Value;
    fn met(self) -> Option<Self::Value>;
}

impl Met for bool {
    type Value = ();
    fn met(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Met for Option<T> {
    type Value = T;
    fn met(self) -> Option<T> {
        self
    }
}

/// Waits until `probe` holds (`true` or `Some`), at most `limit`; returns
/// what it gave.
pub async fn eventually<M, F, Fut>(limit: Duration, mut probe: F) -> M::Value
where
    M: Met,
    F: FnMut() -> Fut,
    Fut: Future<Output = M>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await.met() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a test without a runtime: the thread sleeps between
/// probes.
pub fn eventually_blocking<M: Met>(limit: Duration, mut probe: impl FnMut() -> M) -> M::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().met() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(POLL);
    }
}
