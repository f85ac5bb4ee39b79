//! Per-endpoint runtime state: atomics that outlive a snapshot, and the
//! guard that counts a request in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::client::UpstreamClient;

/// One endpoint as the current snapshot sees it: its configured address and
/// weight, and the state shared with every snapshot that keeps it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As configured; also its metric label.
    pub address: Arc<str>,
    /// The address as a URI authority, parsed once.
    pub authority: http::uri::Authority,
    pub weight: u32,
    pub state: Arc<EndpointState>,
}

/// What survives a reload for an endpoint kept by (upstream, address).
#[derive(Debug)]
pub struct EndpointState {
    /// Not marked down by active checks and not ejected by passive ones.
    healthy: AtomicBool,
    /// False once the endpoint's weight is 0 (drained).
    weighted: AtomicBool,
    in_flight: AtomicU64,
    requests: AtomicU64,
    pub client: UpstreamClient,
}

/// Counts one request in flight on an endpoint until dropped, whatever way
/// the request ends (response done, error, timeout, client gone).
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl EndpointState {
    pub fn new(client: UpstreamClient, weight: u32) -> Self {
        Self {
            healthy: AtomicBool::new(true),
            weighted: AtomicBool::new(weight > 0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            client,
        }
    }

    /// Usable: healthy and weight above 0.
    pub fn is_usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.weighted.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weighted.store(weight > 0, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to this endpoint so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Starts counting one request.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
