//! Balancers: pick a usable endpoint of an upstream (SPEC §Balancing).
//!
//! [`Balancer`] is an enum, not a trait object, so `pick` is a direct call;
//! each algorithm lives in its own file and builds its tables when the
//! snapshot is built. Every algorithm honours weights, skips endpoints that
//! are unusable or already tried by this request, and takes no lock.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::config::{BalanceKind, HashKey, UpstreamConfig};
use crate::upstream::endpoint::Endpoint;

mod alias;
mod consistent_hash;
pub mod hash_key;
mod least_requests;
mod maglev;
mod peak_ewma;
mod random;
mod round_robin;

pub use alias::Alias;
pub use consistent_hash::{ConsistentHash, Ring};
pub use least_requests::LeastRequests;
pub use maglev::{Maglev, MaglevTable};
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use round_robin::{RoundRobin, smooth_schedule};

/// The balancer of one upstream.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(Random),
    LeastRequests(LeastRequests),
    PeakEwma(PeakEwma),
    ConsistentHash(ConsistentHash),
    Maglev(Maglev),
}

impl Balancer {
    /// Builds the balancer for `config` over `endpoints` (same order);
    /// `in_flight` counts the upstream's requests in flight.
    pub fn new(config: &UpstreamConfig, endpoints: &[Endpoint], in_flight: Arc<AtomicU64>) -> Self {
        let key = config.hash_key.clone();
        match config.balance {
            BalanceKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(endpoints)),
            BalanceKind::Random => Balancer::Random(Random::new(endpoints)),
            BalanceKind::LeastRequests => Balancer::LeastRequests(LeastRequests::new(endpoints)),
            BalanceKind::PeakEwma => Balancer::PeakEwma(PeakEwma::new(endpoints)),
            BalanceKind::ConsistentHash => Balancer::ConsistentHash(ConsistentHash::new(
                endpoints,
                key,
                config.bounded_load,
                in_flight,
            )),
            BalanceKind::Maglev => Balancer::Maglev(Maglev::new(endpoints, key)),
        }
    }

    /// Where the request key comes from, for the hashing algorithms.
    #[inline]
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Balancer::ConsistentHash(b) => b.key.as_ref(),
            Balancer::Maglev(b) => b.key.as_ref(),
            Balancer::RoundRobin(_)
            | Balancer::Random(_)
            | Balancer::LeastRequests(_)
            | Balancer::PeakEwma(_) => None,
        }
    }

    /// Picks a usable endpoint not in `tried`; `None` when there is none.
    /// `key` is the request's key hash (hashing algorithms; without it they
    /// balance round robin).
    #[inline]
    pub fn pick(&self, endpoints: &[Endpoint], key: Option<u64>, tried: &[usize]) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(endpoints, tried),
            Balancer::Random(b) => b.pick(endpoints, tried),
            Balancer::LeastRequests(b) => b.pick(endpoints, tried),
            Balancer::PeakEwma(b) => b.pick(endpoints, tried),
            Balancer::ConsistentHash(b) => b.pick(endpoints, key, tried),
            Balancer::Maglev(b) => b.pick(endpoints, key, tried),
        }
    }

    /// Rebuilds tables that depend on which endpoints are usable (Maglev);
    /// called off the request path when usability changes.
    pub fn usability_changed(&self, endpoints: &[Endpoint]) {
        if let Balancer::Maglev(b) = self {
            b.rebuild(endpoints);
        }
    }
}

/// Whether endpoint `i` may take this request.
#[inline]
fn eligible(endpoints: &[Endpoint], i: usize, tried: &[usize]) -> bool {
    endpoints[i].state.is_usable() && !tried.contains(&i)
}

/// A weighted draw among the eligible endpoints by a linear scan: the
/// fallback when fast draws keep landing on ineligible ones.
fn scan_weighted(endpoints: &[Endpoint], tried: &[usize], r: u64) -> Option<usize> {
    let total: u64 = (0..endpoints.len())
        .filter(|&i| eligible(endpoints, i, tried))
        .map(|i| u64::from(endpoints[i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut target = r % total;
    for i in 0..endpoints.len() {
        if eligible(endpoints, i, tried) {
            let w = u64::from(endpoints[i].weight);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod testing {
    //! Endpoints for balancer unit tests: real state, a client that is never used.
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use crate::config::UpstreamConfig;
    use crate::upstream::endpoint::{Endpoint, EndpointState};

    /// `n` fixed key hashes.
    pub fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| super::hash_key::hash_bytes(format!("key-{i}").as_bytes()))
            .collect()
    }

    pub fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        endpoints_at(
            &weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (format!("10.0.{}.{}:8080", i / 250, i % 250 + 1), w))
                .collect::<Vec<_>>(),
        )
    }

    pub fn endpoints_at(list: &[(String, u32)]) -> Vec<Endpoint> {
        let config = upstream(list);
        let counter = Arc::new(AtomicU64::new(0));
        list.iter()
            .map(|(address, w)| Endpoint {
                address: address.as_str().into(),
                authority: address.parse().unwrap(),
                weight: *w,
                client: Arc::new(crate::upstream::client::build(&config, address)),
                state: Arc::new(EndpointState::new(
                    ("u", address),
                    *w,
                    false,
                    Arc::clone(&counter),
                    crate::upstream::EndpointMetrics::new(
                        &crate::metrics::Metrics::disabled(),
                        "u",
                        address,
                    ),
                )),
            })
            .collect()
    }

    pub fn upstream(list: &[(String, u32)]) -> UpstreamConfig {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[upstream.u]\nendpoints = [{}]\n",
            list.iter()
                .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = crate::config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        config.upstreams[0].clone()
    }
}
