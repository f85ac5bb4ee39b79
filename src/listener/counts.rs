//! Open and parked client connections per listener, for the downstream
//! connection metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A listener's client connections.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Open now (`fulcrum_downstream_connections`).
    pub open: AtomicU64,
    /// Parked now: idle HTTP/1 connections holding no buffers
    /// (`fulcrum_downstream_connections_parked`).
    pub parked: AtomicU64,
    /// Parked so far (`fulcrum_downstream_parks_total`).
    pub parks: AtomicU64,
}

/// Counts an open connection on its listener until dropped.
pub(crate) struct OpenConnection(pub(crate) Arc<ConnectionCounts>);

impl OpenConnection {
    pub(crate) fn parked(&self, parked: bool) {
        if parked {
            self.0.parked.fetch_add(1, Ordering::Relaxed);
            self.0.parks.fetch_add(1, Ordering::Relaxed);
        } else {
            self.0.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
