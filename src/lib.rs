//! fulcrum: a Layer-7 HTTP reverse proxy and load balancer.
//!
//! # The path of one request
//! 1. `listener.rs` accepts a connection within `server.max_connections`,
//!    does the TLS handshake (`tls.rs`, certificate by SNI) and serves it with
//!    hyper (HTTP/1.1 and HTTP/2), enforcing the header and idle timeouts.
//! 2. `proxy.rs` loads the current [`state::Snapshot`] once; the request keeps
//!    that generation to its end.
//! 3. `route.rs` finds the route on the borrowed host and path (404 if none).
//! 4. `balance/` picks a usable endpoint of the route's upstream.
//! 5. `headers.rs` rewrites the request (hop-by-hop, X-Forwarded-*,
//!    `strip_prefix`); `upstream/` sends it through the endpoint's keep-alive
//!    pool under the upstream's timeouts while an in-flight guard counts it;
//!    a failed attempt is retried on another endpoint when that is safe.
//! 6. The response streams back without hop-by-hop headers; any failure is
//!    turned into a plain-text response in `error.rs` only.
//!
//! # Module map
//! `config/` (load and validate the TOML file), `state.rs` (the snapshot),
//! `listener.rs`, `tls.rs`, `proxy.rs`, `route.rs`, `headers.rs`,
//! `balance/`, `upstream/`, `error.rs`, `demo.rs`, `cli.rs`.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod headers;
pub mod listener;
pub mod proxy;
pub mod route;
pub mod state;
pub mod tls;
pub mod upstream;

use config::Config;
use listener::{BoundListener, ListenerError, Serving};
use state::{Shared, Snapshot};

/// A proxy whose listeners are bound, ready to serve.
pub struct Fulcrum {
    config: Config,
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
}

/// Why fulcrum could not start with a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

impl Fulcrum {
    /// Builds the first snapshot and binds every listener. Must run inside a
    /// tokio runtime.
    pub fn bind(config: Config) -> Result<Self, StartError> {
        let snapshot = Snapshot::build(&config, 1, None);
        let listeners = config
            .listeners
            .iter()
            .map(BoundListener::bind)
            .collect::<Result<Vec<_>, _>>()?;
        for l in &listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, "listening");
        }
        Ok(Self {
            shared: Shared::new(snapshot),
            config,
            listeners,
        })
    }

    /// The bound address of listener `name` (useful with port 0).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| l.local_addr)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets
    /// in-flight requests finish within `server.shutdown_timeout`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let serving = Arc::new(Serving {
            shared: Arc::clone(&self.shared),
            connections: Arc::new(Semaphore::new(self.config.server.max_connections)),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let accepting = TaskTracker::new();
        for listener in self.listeners {
            accepting.spawn(listener.serve(Arc::clone(&serving)));
        }
        accepting.close();
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        serving.shutdown.cancel();
        accepting.wait().await;
        serving.tracker.close();
        let timeout = self.config.server.shutdown_timeout;
        if tokio::time::timeout(timeout, serving.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = serving.tracker.len(),
                "shutdown_timeout reached; closing the remaining connections"
            );
        } else {
            tracing::info!("drained");
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). SIGHUP is caught so that it does
/// not kill the process; it reloads the config once hot reload lands.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
                _ = int.recv() => { tracing::info!("SIGINT received"); return; }
                _ = hup.recv() => tracing::warn!("SIGHUP received: hot reload is not available in this build; restart to apply a new config"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
