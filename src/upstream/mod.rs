//! Upstreams: named pools of endpoints with their balancer, timeouts and
//! retry policy, as built for one snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::balance::Balancer;
use crate::config::{
    EndpointConfig, HealthCheckConfig, OutlierConfig, Protocol, RetryOn, UpstreamConfig,
};
use crate::discovery::Discovery;

pub mod client;
pub mod endpoint;
pub mod error;
mod h1;
pub mod outgoing;
pub mod response;
pub use h1::RawHead;
pub(crate) use h1::{check_chunked_decoder, check_response_head};
pub mod health;
pub mod outlier;

pub use endpoint::{Endpoint, EndpointMetrics, EndpointState, Health, InFlight, Probe};

use crate::metrics::{self as m, Metrics};

/// One upstream of a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// As configured; the membership step builds the next one from it.
    pub config: Arc<UpstreamConfig>,
    /// Where a discovered upstream's endpoints come from (carried to the
    /// next build while its table stays the same).
    pub discovery: Option<Arc<Discovery>>,
    pub balance: crate::config::BalanceKind,
    /// Every endpoint, the serving priority level first (`serving` of them).
    pub endpoints: Vec<Endpoint>,
    /// The endpoints of the lowest priority value with a usable endpoint
    /// when built (SRV backups; all of them otherwise): `endpoints[..serving]`.
    pub serving: usize,
    /// Whether each endpoint was usable when built (keys moved).
    usable_when_built: Vec<bool>,
    pub balancer: Balancer,
    pub protocol: Protocol,
    pub response_timeout: Duration,
    /// Extra attempts: `retries` as configured, at most one per other endpoint.
    pub retries: u32,
    pub retry_on: RetryOn,
    pub fail_open: bool,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
    /// True while no endpoint is usable and `fail_open` sends to all of them.
    pub failing_open: AtomicBool,
    /// Round-robin cursor over every weighted endpoint, for fail-open.
    fail_open_cursor: AtomicUsize,
    connections: ConnectionSettings,
    pub metrics: UpstreamMetrics,
}

/// What an endpoint's pool is built from.
#[derive(Debug, Clone, PartialEq)]
struct ConnectionSettings {
    protocol: Protocol,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
}

impl ConnectionSettings {
    fn of(config: &UpstreamConfig) -> Self {
        Self {
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
        }
    }
}

/// The metric handles of one upstream.
#[derive(Debug)]
pub struct UpstreamMetrics {
    pub retries: metrics::Counter,
    pub fail_open_requests: metrics::Counter,
    pub usable_endpoints: metrics::Gauge,
    pub failing_open: metrics::Gauge,
    pub keys_moved: metrics::Gauge,
}

impl Upstream {
    /// The one build of an upstream, whatever asked for it (start, reload,
    /// a discovery answer, a change of usability, a ramp's end): its
    /// members (configured, or the discovery answer in use) over the state
    /// of `previous`, the upstream of the same name it replaces. A
    /// discovered upstream keeps its record while its table stays the same,
    /// else starts a new one that keeps `previous`'s endpoints serving until
    /// its first answer. Sets the keys-moved gauge from `previous`.
    pub fn build(
        config: &UpstreamConfig,
        previous: Option<&Upstream>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let discovery = config.discovery.as_ref().map(|table| {
            match previous.and_then(|p| p.discovery.as_ref()) {
                Some(d) if d.config == *table => Arc::clone(d),
                _ => {
                    let serving = previous.map(Upstream::members).filter(|m| !m.is_empty());
                    Arc::new(Discovery::new(
                        &config.name,
                        table.clone(),
                        serving,
                        metrics,
                    ))
                }
            }
        });
        let members = match &discovery {
            Some(d) => d.endpoints().unwrap_or_default(),
            None => config.endpoints.clone(),
        };
        let upstream = Self::assemble(
            Arc::new(config.clone()),
            discovery,
            &members,
            previous,
            metrics,
        );
        if let Some(previous) = previous {
            let moved = upstream.keys_moved_since(previous);
            upstream.metrics.keys_moved.set(moved);
        }
        upstream
    }

    /// [`Upstream::build`] over explicit `members` (configured or discovered)
    /// over the state of `previous` by address. A kept endpoint keeps its
    /// state (health, ejection, in-flight count, latency, ramp) and, while
    /// the connection settings stay the same, its pool; a new one starts in
    /// `health_check.initial` and ramps (slow start) unless it is among the
    /// upstream's first endpoints.
    fn assemble(
        config: Arc<UpstreamConfig>,
        discovery: Option<Arc<Discovery>>,
        members: &[EndpointConfig],
        previous: Option<&Upstream>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let in_flight = previous.and_then(|p| p.endpoints.first()).map_or_else(
            || Arc::new(AtomicU64::new(0)),
            |e| e.state.upstream_in_flight(),
        );
        let joining = previous.is_some_and(|p| !p.endpoints.is_empty());
        let same_connections =
            previous.is_some_and(|p| p.connections == ConnectionSettings::of(&config));
        let mut endpoints: Vec<(u16, Endpoint)> = members
            .iter()
            .map(|e| {
                let old = previous
                    .and_then(|p| p.endpoints.iter().find(|old| *old.address == *e.address));
                let fresh = Fresh {
                    in_flight: &in_flight,
                    joining,
                    same_connections,
                    metrics,
                };
                (e.priority, endpoint(&config, e, old, &fresh))
            })
            .collect();
        // The serving level first: the lowest priority value with a usable
        // endpoint, or the lowest of all when none is.
        endpoints.sort_by_key(|(priority, _)| *priority);
        let level = endpoints
            .iter()
            .find(|(_, e)| e.state.is_usable())
            .or(endpoints.first())
            .map_or(0, |(p, _)| *p);
        endpoints.sort_by_key(|(priority, _)| (*priority != level, *priority));
        let serving = endpoints.iter().filter(|(p, _)| *p == level).count();
        let endpoints: Vec<Endpoint> = endpoints.into_iter().map(|(_, e)| e).collect();
        let usable_when_built = endpoints.iter().map(|e| e.state.is_usable()).collect();
        let failing_open = config.fail_open && !endpoints.iter().any(|e| e.state.is_usable());
        let labels = [("upstream", config.name.as_str())];
        Self {
            connections: ConnectionSettings::of(&config),
            name: config.name.as_str().into(),
            balance: config.balance,
            balancer: Balancer::new(&config, &endpoints[..serving], in_flight),
            serving,
            usable_when_built,
            // Each retry goes to another endpoint: a pool of one has none to
            // offer, and its requests then keep no copy of their headers.
            retries: config.retries.min(endpoints.len().saturating_sub(1) as u32),
            endpoints,
            protocol: config.protocol,
            response_timeout: config.response_timeout,
            retry_on: config.retry_on,
            fail_open: config.fail_open,
            health_check: config.health_check.clone(),
            outlier: config.outlier.clone(),
            // Derived from the endpoints' states, which a reload carries
            // over: an upstream that fails open still does after a reload.
            failing_open: AtomicBool::new(failing_open),
            fail_open_cursor: AtomicUsize::new(0),
            metrics: UpstreamMetrics {
                retries: metrics.counter(m::UPSTREAM_RETRIES, &labels),
                fail_open_requests: metrics.counter(m::UPSTREAM_FAIL_OPEN_REQUESTS, &labels),
                usable_endpoints: metrics.gauge(m::UPSTREAM_USABLE_ENDPOINTS, &labels),
                failing_open: metrics.gauge(m::UPSTREAM_FAILING_OPEN, &labels),
                keys_moved: metrics.gauge(m::UPSTREAM_KEYS_MOVED, &labels),
            },
            discovery,
            config,
        }
    }

    /// Picks among the serving endpoints: the balancer was built over
    /// `endpoints[..serving]` and picks no other (see [`Balancer::pick`]).
    #[inline]
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        self.balancer.pick(&self.endpoints, key, tried)
    }

    /// The share of the hash space whose endpoint changed from `before` to
    /// this build (0 for the algorithms that do not hash).
    pub fn keys_moved_since(&self, before: &Upstream) -> f64 {
        self.balancer.keys_moved(
            &self.endpoints[..self.serving],
            &self.usable_when_built,
            (
                &before.balancer,
                &before.endpoints[..before.serving],
                &before.usable_when_built,
            ),
        )
    }

    /// Whether some endpoint ramps now (slow start); the membership step
    /// builds again when the first ramp ends.
    pub fn next_ramp_end(&self) -> Option<Duration> {
        self.endpoints
            .iter()
            .filter_map(|e| e.state.ramp_remaining())
            .min()
    }

    /// The members as this build has them, for a build that keeps them.
    pub fn members(&self) -> Vec<EndpointConfig> {
        self.endpoints
            .iter()
            .map(|e| EndpointConfig {
                address: e.address.to_string(),
                weight: e.weight,
                priority: e.priority,
            })
            .collect()
    }

    /// Sets the gauges that mirror state (read at scrape time).
    pub fn update_gauges(&self) {
        let mut usable = 0;
        for e in &self.endpoints {
            let ok = e.state.is_usable();
            usable += usize::from(ok);
            e.state.metrics.in_flight.set(e.state.in_flight() as f64);
            e.state.metrics.usable.set(if ok { 1.0 } else { 0.0 });
            let share = e.state.ramp_progress().unwrap_or(1.0);
            e.state.metrics.slow_start.set(share);
        }
        self.metrics.usable_endpoints.set(usable as f64);
        let failing_open = self.failing_open.load(Ordering::Relaxed);
        self.metrics
            .failing_open
            .set(if failing_open { 1.0 } else { 0.0 });
    }

    /// Endpoints ejected by passive checks now, and all endpoints.
    pub fn ejected_count(&self) -> (usize, usize) {
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.state.is_ejected())
            .count();
        (ejected, self.endpoints.len())
    }

    /// With `fail_open` and no usable endpoint: the next weighted endpoint
    /// not yet tried, whatever its health (round robin over all of them).
    pub fn pick_failing_open(&self, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.fail_open_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.endpoints[i].weight > 0 && !tried.contains(&i))
    }

    /// Records whether this request found no usable endpoint; logs entering
    /// and leaving fail-open once each.
    pub fn note_failing_open(&self, failing: bool) {
        if self.failing_open.swap(failing, Ordering::Relaxed) != failing {
            if failing {
                tracing::warn!(upstream = %self.name, "no usable endpoint: failing open to all endpoints");
            } else {
                tracing::info!(upstream = %self.name, "usable endpoints again: fail-open over");
            }
        }
    }
}

/// What a build gives each endpoint it makes.
struct Fresh<'a> {
    in_flight: &'a Arc<AtomicU64>,
    /// The upstream had endpoints: a new one joins (and ramps).
    joining: bool,
    /// The connection settings did not change: pools carry over.
    same_connections: bool,
    metrics: &'a Arc<Metrics>,
}

/// One endpoint of a build: `old`'s state and pool when it had this
/// address, else new ones.
fn endpoint(
    config: &UpstreamConfig,
    e: &EndpointConfig,
    old: Option<&Endpoint>,
    fresh: &Fresh<'_>,
) -> Endpoint {
    let Fresh {
        in_flight,
        joining,
        same_connections,
        metrics,
    } = *fresh;
    let state = match old {
        Some(old) => {
            old.state.set_weight(e.weight);
            Arc::clone(&old.state)
        }
        None => Arc::new(EndpointState::new(
            (&config.name, &e.address),
            e.weight,
            config
                .health_check
                .as_ref()
                .is_some_and(|h| !h.initial_usable),
            Arc::clone(in_flight),
            EndpointMetrics::new(metrics, &config.name, &e.address),
        )),
    };
    state.set_slow_start(config.slow_start);
    if old.is_none() && joining {
        state.start_ramp();
    }
    // The pool carries over while nothing it was built from changed.
    let client = match old {
        Some(old) if same_connections => Arc::clone(&old.client),
        _ => Arc::new(client::build(config, &e.address)),
    };
    Endpoint {
        authority: e.address.parse().expect("validated as host:port"),
        address: e.address.as_str().into(),
        weight: e.weight,
        priority: e.priority,
        state,
        client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BalanceKind;

    /// Primaries `a`, `b` (priority 10) and a backup `c` (priority 20).
    fn members() -> Vec<EndpointConfig> {
        [
            ("10.0.0.1:80", 10),
            ("10.0.0.2:80", 10),
            ("10.0.0.3:80", 20),
        ]
        .iter()
        .map(|(address, priority)| EndpointConfig {
            address: (*address).into(),
            weight: 1,
            priority: *priority,
        })
        .collect()
    }

    #[test]
    fn a_backup_level_is_never_picked_while_a_primary_is_usable() {
        let metrics = Metrics::disabled();
        for balance in [
            BalanceKind::RoundRobin,
            BalanceKind::Random,
            BalanceKind::LeastRequests,
            BalanceKind::PeakEwma,
        ] {
            let mut config = crate::balance::testing::upstream(&[("10.0.0.1:80".into(), 1)]);
            config.balance = balance;
            let config = Arc::new(config);
            let u = Upstream::assemble(Arc::clone(&config), None, &members(), None, &metrics);
            assert_eq!(u.serving, 2, "{balance:?}");
            let index = |address: &str| {
                u.endpoints
                    .iter()
                    .position(|e| &*e.address == address)
                    .unwrap()
            };
            let (a, b) = (index("10.0.0.1:80"), index("10.0.0.2:80"));
            u.endpoints[a].state.set_healthy(false);
            for _ in 0..1000 {
                assert_eq!(u.pick(None, &[]), Some(b), "{balance:?}");
                // The one usable primary tried: none is left, and the
                // backup waits for a build that finds the level empty
                // (the fallback scans never reach past the level).
                assert_eq!(u.pick(None, &[b]), None, "{balance:?}");
            }
            u.endpoints[b].state.set_healthy(false);
            let next = Upstream::assemble(config, None, &members(), Some(&u), &metrics);
            assert_eq!(next.serving, 1, "{balance:?}");
            let picked = next.pick(None, &[]).unwrap();
            assert_eq!(&*next.endpoints[picked].address, "10.0.0.3:80");
        }
    }
}
