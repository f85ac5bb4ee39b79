//! What one client connection's task, socket wrapper, service and
//! requests' guards share (one allocation per connection), and the guard
//! that counts a request in flight.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::h2_guard::Abuse;
use super::upgrade::{OnUpgrade, Upgraded};
use crate::http1::stream::Verdicts;
use crate::state::Shared;

/// One connection's identity and state: shared by its task, its socket
/// wrapper, its service and its requests' guards (one allocation).
#[derive(Debug)]
pub struct ConnectionState {
    pub(super) shared: Arc<Shared>,
    pub(super) listener: Arc<str>,
    pub(super) client: SocketAddr,
    pub(super) https: bool,
    /// The client's IP as an X-Forwarded-For element, formatted once.
    pub(super) client_ip: crate::headers::ClientIp,
    pub(super) epoch: Instant,
    pub(super) in_flight: AtomicU32,
    /// Milliseconds since `epoch` when the current idle or head-reading
    /// phase began.
    pub(super) since_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last byte read or written: a
    /// connection with requests in flight but nothing moving for
    /// `idle_timeout` is stalled (a client that never reads its response,
    /// an endpoint that hangs mid-body) and is closed.
    pub(super) last_io_ms: AtomicU64,
    pub(super) reading_head: AtomicBool,
    pub(super) http2: AtomicBool,
    /// Set when a request head starts arriving, so the timer moves its
    /// deadline from idle_timeout to header_read_timeout.
    pub(super) rearm: AtomicBool,
    /// A request has ended on this connection: from then on the timer also
    /// wakes it PARK_AFTER after each read that re-arms it, to park it.
    /// Before, it does not: a connection that closes after its first
    /// response (`Connection: close`) never sets that short timer, which
    /// is earlier than the event loop's next wake and so would make tokio
    /// wake its own loop (a write to its eventfd and one more turn).
    pub(super) served: AtomicBool,
    /// Why the HTTP/2 frame watch refused the connection, if it did.
    pub(super) refused: std::sync::OnceLock<Abuse>,
    /// The last read found nothing to read.
    pub(super) read_blocked: AtomicBool,
    /// Bytes were written since the last completed flush.
    pub(super) unflushed: AtomicBool,
    /// hyper is closing the connection to park it: its shutdown of the
    /// socket is skipped.
    pub(super) parking: AtomicBool,
    /// What passes between the socket, the requests and the task, under
    /// one lock (taken when hyper serves a request, never on the plain
    /// path).
    pub(super) handovers: std::sync::Mutex<Handovers>,
}

/// What passes between a connection's socket, its requests and its task.
#[derive(Debug, Default)]
pub(super) struct Handovers {
    /// What the follower of the request stream finds of the requests hyper
    /// serves (`http1::stream`), since the last hand-off to hyper. (An
    /// `ArcSwapOption` cost about 200 instructions per connection as it
    /// was dropped, which walks every thread's debt list.)
    pub(super) verdicts: Option<Arc<Verdicts>>,
    /// Where an upgrade (a request the proxy answers with 101) wants the
    /// client's connection.
    pub(super) upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// Counts a request in flight on its connection until its response body is
/// dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnectionState>);

impl ConnectionState {
    pub(super) fn new(
        shared: Arc<Shared>,
        listener: Arc<str>,
        client: SocketAddr,
        https: bool,
    ) -> Self {
        Self {
            shared,
            listener,
            client,
            https,
            client_ip: crate::headers::ClientIp::new(client.ip()),
            epoch: crate::clock::now(),
            in_flight: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(0),
            reading_head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            rearm: AtomicBool::new(false),
            served: AtomicBool::new(false),
            refused: std::sync::OnceLock::new(),
            read_blocked: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            handovers: std::sync::Mutex::default(),
        }
    }

    /// An HTTP/1 connection between requests: nothing in flight, no head
    /// begun, everything written, and hyper waiting for the client.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.reading_head.load(Ordering::Relaxed)
            && self.read_blocked.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.http2.load(Ordering::Relaxed)
    }

    pub(super) fn now_ms(&self) -> u64 {
        crate::clock::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }
}

impl RequestGuard {
    pub(super) fn start(state: &Arc<ConnectionState>, http2: bool) -> Self {
        // No clock read: `last_io_ms` was set by the read that brought this
        // head (or, pipelined, the one before it: no byte has come since).
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.reading_head.store(false, Ordering::Release);
        // The timer may be set for the header deadline; with a request in
        // flight the stall rule decides, and idle_timeout may be shorter.
        state.rearm.store(true, Ordering::Release);
        if http2 {
            state.http2.store(true, Ordering::Relaxed);
        }
        Self(Arc::clone(state))
    }
}

impl RequestGuard {
    /// The client's connection, once the response to this request (a 101)
    /// is written.
    pub fn on_upgrade(&self) -> OnUpgrade {
        let (to, from) = oneshot::channel();
        if let Ok(mut handovers) = self.0.handovers.lock() {
            handovers.upgrade = Some(to);
        }
        from
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle from the last write, which hyper made just before it let
            // go of the body (no clock read per request).
            let last_io = state.last_io_ms.load(Ordering::Relaxed);
            state.since_ms.store(last_io, Ordering::Release);
            if !state.served.load(Ordering::Relaxed) {
                // The first request ended: the timer is armed for parking
                // (the drop happens on the connection's task, which polls
                // its timer next).
                state.served.store(true, Ordering::Relaxed);
                state.rearm.store(true, Ordering::Release);
            }
        }
    }
}

/// How a connection ended, for the log.
pub(super) enum End {
    Closed,
    Upgraded,
    /// header_read_timeout, a stall, or the drain deadline.
    TimedOut,
    Error(hyper::Error),
    Io(io::Error),
}

impl ConnectionState {
    /// Counts an HTTP/2 refusal, and logs how the connection ended (at
    /// debug only: an attacker must not be able to flood the log).
    pub(super) fn log_end(&self, end: End) {
        let client = self.client;
        if let Some(abuse) = self.refused.get() {
            self.shared
                .metrics
                .counter(
                    crate::metrics::DOWNSTREAM_H2_REFUSED,
                    &[("listener", &self.listener), ("cause", abuse.cause())],
                )
                .increment(1);
            tracing::debug!(%client, %abuse, "HTTP/2 connection refused");
            return;
        }
        match end {
            End::Closed | End::Upgraded => {}
            End::TimedOut => {
                tracing::debug!(%client, "connection closed: header_read_timeout, stalled, or drain deadline");
            }
            End::Error(error) => tracing::debug!(%client, %error, "connection ended with an error"),
            End::Io(error) => tracing::debug!(%client, %error, "connection ended with an error"),
        }
    }
}

#[cfg(test)]
impl ConnectionState {
    /// A plain connection's state on a listener "l" with one route.
    pub(super) fn for_tests() -> Self {
        let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
                    [[route]]\nupstream = \"u\"\n\
                    [upstream.u]\nendpoints = [{ address = \"10.0.0.1:80\" }]\n";
        let config = crate::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let metrics = crate::metrics::Metrics::disabled();
        let snapshot = crate::state::Snapshot::build(&config, 1, None, &metrics);
        let shared = Shared::new(snapshot, &config, metrics, None);
        Self::new(
            shared,
            Arc::from("l"),
            "127.0.0.1:1".parse().unwrap(),
            false,
        )
    }
}
