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
pub mod moved;
mod peak_ewma;
mod random;
mod round_robin;
#[cfg(test)]
mod slow_start_tests;

pub use alias::Alias;
pub use consistent_hash::{ConsistentHash, Ring};
pub use least_requests::LeastRequests;
pub use maglev::{Maglev, MaglevTable};
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use round_robin::{RoundRobin, smooth_schedule};

/// The balancer of one upstream: an algorithm's tables as built for the
/// upstream's endpoints.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(Random),
    LeastRequests(LeastRequests),
    PeakEwma(PeakEwma),
    ConsistentHash(ConsistentHash),
    Maglev(Maglev),
    /// Some endpoint ramped when this was built (slow start): the
    /// algorithm behind the slow-start path. A variant of its own, so a pick
    /// without a ramp costs no test beyond the dispatch it has anyway; the
    /// membership step builds anew when a ramp begins or ends.
    Ramping(Box<Balancer>),
}

/// Draws while slow start declines a ramping endpoint, before taking the
/// last one drawn.
const RAMP_DRAWS: usize = 8;

impl Balancer {
    /// Builds the balancer for `config` over `endpoints` (same order);
    /// `in_flight` counts the upstream's requests in flight.
    pub fn new(config: &UpstreamConfig, endpoints: &[Endpoint], in_flight: Arc<AtomicU64>) -> Self {
        let key = config.hash_key.clone();
        let ramping = endpoints.iter().any(|e| e.state.ramp_progress().is_some());
        let algorithm = match config.balance {
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
            BalanceKind::Maglev => Balancer::Maglev(Maglev::new(endpoints, key, ramping)),
        };
        if ramping {
            Balancer::Ramping(Box::new(algorithm))
        } else {
            algorithm
        }
    }

    /// The algorithm and its tables, ramping or not.
    pub fn algorithm(&self) -> &Balancer {
        match self {
            Balancer::Ramping(inner) => inner,
            settled => settled,
        }
    }

    /// Whether some endpoint ramped when this was built.
    pub fn is_ramping(&self) -> bool {
        matches!(self, Balancer::Ramping(_))
    }

    /// Where the request key comes from, for the hashing algorithms.
    #[inline]
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Balancer::ConsistentHash(b) => b.key.as_ref(),
            Balancer::Maglev(b) => b.key.as_ref(),
            Balancer::Ramping(inner) => inner.hash_key(),
            Balancer::RoundRobin(_)
            | Balancer::Random(_)
            | Balancer::LeastRequests(_)
            | Balancer::PeakEwma(_) => None,
        }
    }

    /// Picks a usable endpoint not in `tried`; `None` when there is none.
    /// `key` is the request's key hash (hashing algorithms; without it they
    /// balance round robin). `endpoints` begins with those the balancer was
    /// built over, in the same order; any after them (the upstream's other
    /// SRV priority levels) are never picked, so the caller need not cut
    /// the slice on every pick.
    #[inline]
    pub fn pick(&self, endpoints: &[Endpoint], key: Option<u64>, tried: &[usize]) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(endpoints, tried),
            Balancer::Random(b) => b.pick(endpoints, tried),
            Balancer::LeastRequests(b) => b.pick(endpoints, tried),
            Balancer::PeakEwma(b) => b.pick(endpoints, tried),
            Balancer::ConsistentHash(b) => b.pick(endpoints, key, tried),
            Balancer::Maglev(b) => b.pick(endpoints, key, tried),
            Balancer::Ramping(inner) => inner.pick_ramping(endpoints, key, tried),
        }
    }

    /// A pick while endpoints ramp (SPEC §Slow start), on the algorithm
    /// inside [`Balancer::Ramping`]. The hashing algorithms hand a ramping
    /// endpoint the keys whose fraction is below its progress; the others
    /// draw again when slow start declines a ramping endpoint (accepted with
    /// probability = progress), which scales its weight by its progress:
    /// w·p / (W - w + w·p) of the picks.
    #[cold]
    #[inline(never)]
    fn pick_ramping(
        &self,
        endpoints: &[Endpoint],
        key: Option<u64>,
        tried: &[usize],
    ) -> Option<usize> {
        let now = crate::upstream::endpoint::now_ms();
        match (self, key) {
            (Balancer::ConsistentHash(b), Some(key)) => {
                let fraction = key_fraction(key);
                b.pick_admitting(endpoints, key, tried, |i| {
                    endpoints[i]
                        .state
                        .ramp_progress_at(now)
                        .is_none_or(|p| fraction < p)
                })
            }
            (Balancer::Maglev(b), Some(key)) => b.pick_ramping(endpoints, key, tried, now),
            _ => {
                let mut last = None;
                for _ in 0..RAMP_DRAWS {
                    let i = self.pick(endpoints, key, tried)?;
                    match endpoints[i].state.ramp_progress_at(now) {
                        Some(p) if fastrand::f64() >= p => last = Some(i),
                        _ => return Some(i),
                    }
                }
                last
            }
        }
    }

    /// The share of the hash space whose endpoint differs from `before`'s
    /// (built over `before_endpoints`) to this one's (over `endpoints`):
    /// exact for Maglev and over the ring's arcs for consistent hashing,
    /// with the usability each build saw (`usable`); 0 for the other
    /// algorithms and across a change of algorithm.
    pub fn keys_moved(
        &self,
        endpoints: &[Endpoint],
        usable: &[bool],
        before: (&Balancer, &[Endpoint], &[bool]),
    ) -> f64 {
        let (old, old_endpoints, old_usable) = before;
        match (old.algorithm(), self.algorithm()) {
            (Balancer::Maglev(a), Balancer::Maglev(b)) => moved::moved_share(
                (&a.table().pieces(), old_endpoints),
                (&b.table().pieces(), endpoints),
            ),
            (Balancer::ConsistentHash(a), Balancer::ConsistentHash(b)) => moved::moved_share(
                (&a.ring().pieces(|i| old_usable[i]), old_endpoints),
                (&b.ring().pieces(|i| usable[i]), endpoints),
            ),
            _ => 0.0,
        }
    }
}

/// A key's fixed fraction in [0, 1) for slow start's hand-over: a second
/// hash of the key hash, so it is independent of where the key falls on the
/// ring or in the table.
#[inline]
pub fn key_fraction(key: u64) -> f64 {
    let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(&key.to_le_bytes(), 0x510f_57a7);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
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
                priority: 0,
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
