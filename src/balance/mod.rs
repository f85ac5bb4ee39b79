//! Balancers: pick a usable endpoint of an upstream.
//!
//! [`Balancer`] is an enum, not a trait object, so `pick` is a direct call the
//! compiler can inline; each algorithm lives in its own file and builds its
//! tables when the snapshot is built.

use crate::config::{BalanceKind, UpstreamConfig};
use crate::upstream::Endpoint;

mod round_robin;

pub use round_robin::RoundRobin;

/// The balancer of one upstream.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

/// The balancing algorithm is valid config but not built into this version.
#[derive(Debug, Clone, thiserror::Error)]
#[error("balance = \"{0}\" is not supported by this build of fulcrum yet; use round_robin")]
pub struct Unsupported(pub &'static str);

impl Balancer {
    /// Builds the balancer for `config` over `endpoints` (same order).
    pub fn new(config: &UpstreamConfig, endpoints: &[Endpoint]) -> Result<Self, Unsupported> {
        match config.balance {
            BalanceKind::RoundRobin => Ok(Balancer::RoundRobin(RoundRobin::new(endpoints))),
            other @ (BalanceKind::Random
            | BalanceKind::LeastRequests
            | BalanceKind::PeakEwma
            | BalanceKind::ConsistentHash
            | BalanceKind::Maglev) => Err(Unsupported(other.as_str())),
        }
    }

    /// Picks a usable endpoint not in `tried`; `None` when there is none.
    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(endpoints, tried),
        }
    }
}
