//! The snapshot: everything built from one config generation, behind the one
//! `ArcSwap` that requests load once each; and the state shared by the
//! listeners, the request path, the admin API and reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;

use crate::access_log::AccessLog;
use crate::config::{Config, ServerConfig};
use crate::discovery::{Discovery, MembershipListener};
use crate::listener::counts::ConnectionCounts;
use crate::metrics::{self as m, CodeCounters, Metrics};
use crate::route::RouteTable;
use crate::upstream::Upstream;
use crate::upstream::health::UsabilityListener;

/// How long /readyz waits for discovery's first answers after start.
pub const DISCOVERY_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything a request needs from one config generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub server: ServerConfig,
    pub routes: Arc<RouteTable>,
    /// Shared with the snapshots the membership step derives from this one.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `[listener][route]`; the last route slot of each listener counts
    /// requests that matched no route (`route="none"`, `upstream="none"`).
    pub request_metrics: Arc<Vec<Vec<RouteMetrics>>>,
}

/// The handles of requests answered on one listener for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    pub requests: CodeCounters,
    pub duration: metrics::Histogram,
}

/// The state shared by listeners, requests, the admin API and reload.
#[derive(Debug)]
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub config_path: PathBuf,
    pub loaded_at: Mutex<SystemTime>,
    /// The outcome of the last reload, if there was one.
    pub last_reload: Mutex<Option<ReloadOutcome>>,
    /// Set when a graceful shutdown starts (/readyz answers 503).
    pub draining: AtomicBool,
    /// Open client connections per listener name.
    pub connections: Mutex<Vec<(Arc<str>, Arc<ConnectionCounts>)>>,
    pub access_log: Option<AccessLog>,
    /// Settings only a restart changes, as loaded at start.
    pub startup: Startup,
    /// Where changes of membership and usability are sent, to the
    /// reloader's membership step (set when it starts).
    pub membership: OnceLock<UnboundedSender<Arc<str>>>,
    /// When the process started serving (/readyz waits at most 10 s for
    /// discovery's first answers).
    pub started: std::time::Instant,
    /// The text of the config in use.
    config_text: Mutex<String>,
    generation: metrics::Gauge,
    reloads_ok: metrics::Counter,
    reloads_failed: metrics::Counter,
}

/// What only a restart changes, remembered from the start.
#[derive(Debug, Clone)]
pub struct Startup {
    pub admin: crate::config::AdminConfig,
    pub access_log: crate::config::AccessLogConfig,
    pub workers: usize,
}

/// What the last reload did, for /status.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub ok: bool,
    pub at: SystemTime,
    pub error: Option<String>,
}

impl Snapshot {
    /// Builds generation `generation` of `config`, reusing endpoint state
    /// (health, in-flight counts, pooled connections, metric handles) of
    /// `previous` by (upstream name, endpoint address).
    pub fn build(
        config: &Config,
        generation: u64,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let old = previous.and_then(|p| p.upstream(&u.name));
                Arc::new(Upstream::build(u, old.map(|o| &**o), metrics))
            })
            .collect();
        let request_metrics = config
            .listeners
            .iter()
            .map(|l| {
                let mut per_route: Vec<RouteMetrics> = config
                    .routes
                    .iter()
                    .map(|r| {
                        RouteMetrics::new(
                            metrics,
                            &l.name,
                            &r.name,
                            &config.upstreams[r.upstream].name,
                        )
                    })
                    .collect();
                per_route.push(RouteMetrics::new(metrics, &l.name, "none", "none"));
                per_route
            })
            .collect();
        Self {
            generation,
            server: config.server.clone(),
            routes: Arc::new(RouteTable::build(config)),
            upstreams,
            request_metrics: Arc::new(request_metrics),
        }
    }

    /// The same generation with upstream `index` replaced: what the
    /// membership step publishes (the routes and metric handles are shared).
    pub fn with_upstream(&self, index: usize, upstream: Upstream) -> Self {
        let mut upstreams = self.upstreams.clone();
        upstreams[index] = Arc::new(upstream);
        Self {
            generation: self.generation,
            server: self.server.clone(),
            routes: Arc::clone(&self.routes),
            upstreams,
            request_metrics: Arc::clone(&self.request_metrics),
        }
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| *u.name == *name)
    }

    /// The discovery records of this snapshot's upstreams.
    pub fn discoveries(&self) -> Vec<Arc<Discovery>> {
        self.upstreams
            .iter()
            .filter_map(|u| u.discovery.clone())
            .collect()
    }

    /// The handles for a request on `listener` that matched `route` (`None`:
    /// no route).
    pub fn route_metrics(&self, listener: usize, route: Option<usize>) -> Option<&RouteMetrics> {
        let per_route = self.request_metrics.get(listener)?;
        per_route.get(route.unwrap_or(per_route.len() - 1))
    }
}

impl RouteMetrics {
    fn new(metrics: &Arc<Metrics>, listener: &str, route: &str, upstream: &str) -> Self {
        Self {
            requests: metrics.by_code(
                m::REQUESTS_TOTAL,
                &[
                    ("listener", listener),
                    ("route", route),
                    ("upstream", upstream),
                ],
            ),
            duration: metrics.histogram(
                m::REQUEST_DURATION,
                &[("route", route), ("upstream", upstream)],
            ),
        }
    }
}

impl Shared {
    pub fn new(
        snapshot: Snapshot,
        config: &Config,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        let generation = metrics.gauge(m::CONFIG_GENERATION, &[]);
        generation.set(snapshot.generation as f64);
        let reloads_ok = metrics.counter(m::CONFIG_RELOADS, &[("result", "success")]);
        let reloads_failed = metrics.counter(m::CONFIG_RELOADS, &[("result", "failure")]);
        reloads_ok.increment(0);
        reloads_failed.increment(0);
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            config_path: config.path.clone(),
            loaded_at: Mutex::new(SystemTime::now()),
            last_reload: Mutex::new(None),
            draining: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            access_log,
            startup: Startup {
                admin: config.admin.clone(),
                access_log: config.access_log.clone(),
                workers: config.server.workers,
            },
            config_text: Mutex::new(config.source.clone()),
            membership: OnceLock::new(),
            started: std::time::Instant::now(),
            generation,
            reloads_ok,
            reloads_failed,
        })
    }

    /// The text of the config in use.
    pub fn config_text(&self) -> String {
        self.config_text
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    pub fn set_config_text(&self, text: String) {
        if let Ok(mut t) = self.config_text.lock() {
            *t = text;
        }
    }

    /// Records a reload's outcome for /status and the metrics.
    pub fn record_reload(&self, outcome: ReloadOutcome) {
        if outcome.ok {
            self.reloads_ok.increment(1);
            self.generation.set(self.snapshot.load().generation as f64);
            if let Ok(mut at) = self.loaded_at.lock() {
                *at = outcome.at;
            }
        } else {
            self.reloads_failed.increment(1);
        }
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(outcome);
        }
    }

    /// The Prometheus exposition, with state-mirroring gauges set first.
    pub fn render_metrics(&self) -> String {
        let snapshot = self.snapshot.load();
        for upstream in &snapshot.upstreams {
            upstream.update_gauges();
        }
        self.generation.set(snapshot.generation as f64);
        if let Ok(connections) = self.connections.lock() {
            for (name, counts) in connections.iter() {
                let labels = [("listener", &**name)];
                let open = counts.open.load(Ordering::Relaxed);
                let parked = counts.parked.load(Ordering::Relaxed);
                let parks = counts.parks.load(Ordering::Relaxed);
                let metrics = &self.metrics;
                metrics
                    .gauge(m::DOWNSTREAM_CONNECTIONS, &labels)
                    .set(open as f64);
                metrics
                    .gauge(m::DOWNSTREAM_PARKED, &labels)
                    .set(parked as f64);
                metrics
                    .counter(m::DOWNSTREAM_PARKS, &labels)
                    .absolute(parks);
            }
        }
        self.metrics.render()
    }

    /// Whether every discovered upstream has had its first answer, or 10 s
    /// have passed since start (/readyz).
    pub fn discovery_ready(&self) -> bool {
        self.started.elapsed() >= DISCOVERY_READY_WAIT
            || self
                .snapshot
                .load()
                .upstreams
                .iter()
                .all(|u| u.discovery.as_ref().is_none_or(|d| d.is_ready()))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl UsabilityListener for Shared {
    /// Asks the membership step to build `upstream` anew (its tables follow
    /// usability); it runs off the request path.
    fn usability_changed(&self, upstream: &str) {
        self.membership_changed(upstream);
    }
}

impl MembershipListener for Shared {
    fn membership_changed(&self, upstream: &str) {
        if let Some(tx) = self.membership.get() {
            // The receiver lives as long as the reloader; after it, there
            // is nothing left to build.
            let _ = tx.send(upstream.into());
        }
    }
}
