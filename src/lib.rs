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
//! `listener.rs` (with `h2_guard.rs`, the HTTP/2 frame watch), `tls.rs`,
//! `proxy.rs`, `route.rs`, `headers.rs`,
//! `balance/`, `upstream/`, `error.rs`, `demo.rs`, `cli.rs`.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diff;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod h1_server;
pub mod h2_guard;
pub mod headers;
pub mod http1;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod workers;

use access_log::{AccessLog, Writer};
use admin::AdminServer;
use config::Config;
use listener::{BoundListener, ListenerError, Serving};
use metrics::Metrics;
use state::{Shared, Snapshot};

/// A proxy whose listeners are bound, ready to serve.
pub struct Fulcrum {
    config: Config,
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    admin: Option<AdminServer>,
    access_log_writer: Option<Writer>,
    watch: bool,
    /// Installed at bind, before "listening" is logged, so that a SIGHUP
    /// sent as soon as fulcrum is up reloads instead of killing it.
    sighup: Option<reload::Hangup>,
    workers: Option<Arc<workers::Workers>>,
}

/// Why fulcrum could not start with a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("{0}")]
    Admin(std::io::Error),
    #[error("{0}")]
    AccessLog(std::io::Error),
}

impl Fulcrum {
    /// Builds the first snapshot and binds every listener. Must run inside a
    /// tokio runtime.
    pub fn bind(config: Config) -> Result<Self, StartError> {
        Self::bind_with_metrics(config, Metrics::new())
    }

    /// [`Fulcrum::bind`] with a given registry ([`Metrics::disabled`] turns
    /// recording off, for benchmarks).
    pub fn bind_with_metrics(config: Config, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let snapshot = Snapshot::build(&config, 1, None, &metrics);
        let listeners = config
            .listeners
            .iter()
            .map(BoundListener::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let admin = match config.admin.bind {
            Some(addr) => Some(
                AdminServer::bind(addr, config.admin.token.clone()).map_err(StartError::Admin)?,
            ),
            None => None,
        };
        let (access_log, access_log_writer) =
            match AccessLog::new(&config.access_log, &metrics).map_err(StartError::AccessLog)? {
                Some((log, writer)) => (Some(log), Some(writer)),
                None => (None, None),
            };
        let sighup = reload::Hangup::install();
        for l in &listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, "listening");
        }
        if let Some(admin) = &admin {
            tracing::info!(listener = "admin", addr = %admin.local_addr, "admin API listening");
        }
        Ok(Self {
            shared: Shared::new(snapshot, &config, metrics, access_log),
            config,
            listeners,
            admin,
            access_log_writer,
            watch: true,
            sighup,
            workers: None,
        })
    }

    /// The bound address of the admin API, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr)
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
            workers: self.workers.clone(),
        });
        let reloader = reload::Reloader::start(
            Arc::clone(&self.shared),
            Arc::clone(&serving),
            self.listeners,
            self.config.server.max_connections,
        );
        let admin_stop = CancellationToken::new();
        if let Some(admin) = self.admin {
            let r = Arc::clone(&reloader);
            let reload: admin::ReloadFn = Arc::new(move || r.reload());
            tokio::spawn(admin.serve(Arc::clone(&self.shared), Some(reload), admin_stop.clone()));
        }
        // Kept to the end of `serve`: dropping it ends the watch.
        let _watcher = if self.watch {
            match reload::watch(
                Arc::clone(&reloader),
                self.config.path.clone(),
                admin_stop.clone(),
            ) {
                Ok(w) => Some(w),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP or POST /reload");
                    None
                }
            }
        } else {
            None
        };
        if let Some(hangup) = self.sighup {
            tokio::spawn(reload::on_sighup(
                hangup,
                Arc::clone(&reloader),
                admin_stop.clone(),
            ));
        }
        if let Some(writer) = self.access_log_writer {
            tokio::spawn(writer.run());
        }
        if let Ok(mut health) = self.shared.health.lock() {
            health.sync(&self.shared, &self.shared.snapshot.load());
        }
        let upkeep_metrics = Arc::clone(&self.shared.metrics);
        let upkeep_stop = admin_stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(metrics::UPKEEP);
            loop {
                tokio::select! {
                    _ = tick.tick() => upkeep_metrics.run_upkeep(),
                    () = upkeep_stop.cancelled() => return,
                }
            }
        });
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        serving.shutdown.cancel();
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
        admin_stop.cancel();
        if let Ok(mut health) = self.shared.health.lock() {
            health.stop();
        }
    }

    /// Serves connections on `workers` (started before `bind`) instead of
    /// the runtime `serve` runs on.
    pub fn workers(mut self, workers: Arc<workers::Workers>) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Whether to reload when the config file changes (on by default).
    pub fn watch_config(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// Whether to reload on SIGHUP (on by default; tests that run several
    /// instances in one process turn it off).
    pub fn reload_on_sighup(mut self, on: bool) -> Self {
        if !on {
            self.sighup = None;
        }
        self
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). (SIGHUP reloads: see
/// `reload::on_sighup`, which `Fulcrum::serve` runs.)
///
/// The handlers are installed when this is called, not when the future is
/// first polled: call it before binding, so that a signal sent as soon as
/// "listening" is logged is handled instead of ending the process (`serve`
/// polls it only after its setup, while the listeners already accept).
/// Must be called within a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            let (Ok(mut term), Ok(mut int)) = handlers else {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
