//! Upstreams: named pools of endpoints with their balancer, timeouts and
//! retry policy, as built for one snapshot.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::balance::Balancer;
use crate::config::{Protocol, RetryOn, UpstreamConfig};

pub mod client;
mod endpoint;

pub use endpoint::{Endpoint, EndpointMetrics, EndpointState, InFlight};

use crate::metrics::{self as m, Metrics};

/// One upstream of a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub balance: crate::config::BalanceKind,
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
    pub protocol: Protocol,
    pub response_timeout: Duration,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub fail_open: bool,
    pub metrics: UpstreamMetrics,
}

/// The metric handles of one upstream.
#[derive(Debug)]
pub struct UpstreamMetrics {
    pub retries: metrics::Counter,
    pub usable_endpoints: metrics::Gauge,
    pub failing_open: metrics::Gauge,
}

impl Upstream {
    /// Builds the upstream, reusing endpoint state from `previous` by address.
    pub fn build(
        config: &UpstreamConfig,
        previous: Option<&Upstream>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let in_flight = previous.and_then(|p| p.endpoints.first()).map_or_else(
            || Arc::new(AtomicU64::new(0)),
            |e| e.state.upstream_in_flight(),
        );
        let endpoints: Vec<Endpoint> = config
            .endpoints
            .iter()
            .map(|e| {
                let kept = previous.and_then(|p| {
                    p.endpoints
                        .iter()
                        .find(|old| *old.address == *e.address)
                        .filter(|_| p.protocol == config.protocol)
                });
                let state = match kept {
                    Some(old) => {
                        old.state.set_weight(e.weight);
                        Arc::clone(&old.state)
                    }
                    None => Arc::new(EndpointState::new(
                        client::build(config),
                        e.weight,
                        Arc::clone(&in_flight),
                        EndpointMetrics::new(metrics, &config.name, &e.address),
                    )),
                };
                Endpoint {
                    authority: e.address.parse().expect("validated as host:port"),
                    address: e.address.as_str().into(),
                    weight: e.weight,
                    state,
                }
            })
            .collect();
        Self {
            name: config.name.as_str().into(),
            balance: config.balance,
            balancer: Balancer::new(config, &endpoints, in_flight),
            endpoints,
            protocol: config.protocol,
            response_timeout: config.response_timeout,
            retries: config.retries,
            retry_on: config.retry_on,
            fail_open: config.fail_open,
            metrics: UpstreamMetrics {
                retries: metrics.counter(m::UPSTREAM_RETRIES, &[("upstream", &config.name)]),
                usable_endpoints: metrics
                    .gauge(m::UPSTREAM_USABLE_ENDPOINTS, &[("upstream", &config.name)]),
                failing_open: metrics
                    .gauge(m::UPSTREAM_FAILING_OPEN, &[("upstream", &config.name)]),
            },
        }
    }

    /// Sets the gauges that mirror state (read at scrape time).
    pub fn update_gauges(&self) {
        let mut usable = 0;
        for e in &self.endpoints {
            let ok = e.state.is_usable();
            usable += usize::from(ok);
            e.state.metrics.in_flight.set(e.state.in_flight() as f64);
            e.state.metrics.usable.set(if ok { 1.0 } else { 0.0 });
        }
        self.metrics.usable_endpoints.set(usable as f64);
        self.metrics.failing_open.set(0.0);
    }
}
