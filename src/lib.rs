//! fulcrum: a Layer-7 HTTP reverse proxy and load balancer.
//!
//! # The path of one request
//! 1. `listener/` accepts a connection within `server.max_connections`,
//!    does the TLS handshake (`tls/`, certificate by SNI), tells HTTP/2
//!    from HTTP/1 by the first bytes, and serves it: plain HTTP/1.1 requests
//!    with fulcrum's own server side (`listener/h1_server/`), the rest with
//!    hyper, every byte hyper reads followed by the HTTP/1.1 rules of
//!    `http1/`, an HTTP/2 client's frames watched by `listener/h2_guard.rs`.
//! 2. `proxy/` loads the current [`state::Snapshot`] once; the request keeps
//!    that generation to its end. It checks the request, and
//! 3. `route.rs` finds the route on the borrowed host and the path in its
//!    normal form (`path.rs`: dot segments and escaped unreserved
//!    characters resolved, as endpoints read them; 404 if none);
//! 4. `balance/` picks a usable endpoint of the route's upstream;
//! 5. `headers.rs` rewrites the fields (hop-by-hop, X-Forwarded-*) and
//!    `upstream/` sends the request, its body streamed (`body.rs`), through
//!    the endpoint's keep-alive pool (HTTP/1.1 by `upstream/h1/`, HTTP/2 by
//!    hyper) while an in-flight guard counts it; a failed attempt is retried
//!    on another endpoint when the policy allows (`proxy/retry.rs`).
//! 6. The response streams back; any failure becomes a plain-text response
//!    in `proxy/error.rs` only. When the client's body is done, the request
//!    is counted and logged (`access_log.rs`).
//!
//! # Module map
//! - `access_log`: the access log, written off the request path.
//! - `admin`: the admin API (`/status`, `/metrics`, `/config`, `/reload`,
//!   `/healthz`, `/readyz`).
//! - `balance`: the balancing algorithms and the hash keys.
//! - `body`: the request body on its way to an endpoint.
//! - `cli`: the command line.
//! - `clock`: the time of a turn (at most one clock read per poll of a
//!   connection's task).
//! - `config`: load the TOML file and validate it whole; its defaults.
//! - `demo`: three endpoints and a proxy in front of them.
//! - `diff`: what a reload would change (`check --diff`).
//! - `fuzzing`: entry points for the fuzz targets (not an API).
//! - `headers`: the field rewrite of a forwarded request.
//! - `http1`: the one set of HTTP/1.1 rules (fields, chunks, the request
//!   stream follower).
//! - `listener`: listeners, connections, the HTTP/1.1 server side, the
//!   HTTP/2 guard, the running listener set.
//! - `metrics`: the Prometheus registry and metric names.
//! - `path`: the request path in its normal form (RFC 3986).
//! - `proxy`: the request path, the retry policy, errors as responses.
//! - `reload`: hot reload (SIGHUP, file watch, `POST /reload`).
//! - `route`: the route table.
//! - `state`: the snapshot and the state everything shares.
//! - `tls`: certificates and the rustls server config.
//! - `upstream`: upstreams, endpoints, their clients and pools, health
//!   checks and outlier ejection.
//! - `workers`: the worker runtimes connections are served on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod diff;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod http1;
pub mod listener;
pub mod metrics;
pub mod path;
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
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
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
            connections: listener::limit::ConnectionLimit::new(self.config.server.max_connections),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            workers: self.workers.clone(),
        });
        let reloader = reload::Reloader::start(
            Arc::clone(&self.shared),
            Arc::clone(&serving),
            self.listeners,
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
        if let Some(writer) = self.access_log_writer
            && let Err(error) = writer.start()
        {
            tracing::error!(%error, "cannot start the access log writer; lines are dropped");
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
        reloader.stop_health_checks();
        // The last requests' lines reach the file before the process ends.
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(log) = &shared.access_log {
                log.flush(Duration::from_secs(2));
            }
        })
        .await;
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
