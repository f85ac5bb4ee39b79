//! Least requests: power of two choices. Two candidates are drawn in
//! proportion to weight; the one with fewer in-flight requests per unit of
//! weight wins.

use super::{Alias, eligible, scan_weighted};
use crate::upstream::Endpoint;

const DRAWS: usize = 8;

#[derive(Debug)]
pub struct LeastRequests {
    alias: Alias,
}

impl LeastRequests {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self {
            alias: Alias::new(endpoints),
        }
    }

    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        let (a, b) = two_candidates(&self.alias, endpoints, tried)?;
        // in_flight(a) / w(a) <= in_flight(b) / w(b), without division.
        let load = |i: usize| u128::from(endpoints[i].state.in_flight());
        let weight = |i: usize| u128::from(endpoints[i].weight);
        Some(if load(a) * weight(b) <= load(b) * weight(a) {
            a
        } else {
            b
        })
    }
}

/// Two eligible candidates drawn by weight, distinct when possible.
pub(super) fn two_candidates(
    alias: &Alias,
    endpoints: &[Endpoint],
    tried: &[usize],
) -> Option<(usize, usize)> {
    if alias.is_empty() {
        return None;
    }
    let draw = || {
        (0..DRAWS)
            .map(|_| alias.draw(fastrand::u64(..)))
            .find(|&i| eligible(endpoints, i, tried))
            .or_else(|| scan_weighted(endpoints, tried, fastrand::u64(..)))
    };
    let a = draw()?;
    let b = (0..3)
        .map(|_| draw())
        .find(|&b| b != Some(a))
        .flatten()
        .unwrap_or(a);
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;
    use crate::upstream::InFlight;

    /// A closed-loop simulation: `clients` requests always in flight; each
    /// finishes after its endpoint's service time; a finished client sends
    /// its next request at once. Returns each endpoint's share of picks.
    pub(crate) fn simulate(
        pick: impl Fn() -> usize,
        eps: &[Endpoint],
        service: &[u64],
        clients: usize,
        requests: usize,
    ) -> Vec<f64> {
        let mut picks = vec![0usize; eps.len()];
        // (finish time, endpoint, guard)
        let mut running: Vec<(u64, usize, InFlight)> = Vec::new();
        let mut now = 0u64;
        for _ in 0..requests {
            if running.len() == clients {
                let next = (0..running.len()).min_by_key(|&k| running[k].0).unwrap();
                let (t, _, guard) = running.swap_remove(next);
                now = t;
                drop(guard);
            }
            let i = pick();
            picks[i] += 1;
            running.push((now + service[i], i, eps[i].state.start()));
        }
        picks.iter().map(|&p| p as f64 / requests as f64).collect()
    }

    #[test]
    fn shares_follow_weights_at_equal_speed() {
        fastrand::seed(1);
        let eps = endpoints(&[1, 2, 3]);
        let lr = LeastRequests::new(&eps);
        let shares = simulate(
            || lr.pick(&eps, &[]).unwrap(),
            &eps,
            &[100, 100, 100],
            30,
            200_000,
        );
        for (share, w) in shares.iter().zip([1.0, 2.0, 3.0]) {
            let ideal = w / 6.0;
            assert!((share - ideal).abs() <= 0.05 * ideal, "shares {shares:?}");
        }
    }

    #[test]
    fn a_ten_times_slower_endpoint_gets_at_most_two_percent() {
        fastrand::seed(2);
        let eps = endpoints(&[1; 10]);
        let lr = LeastRequests::new(&eps);
        let mut service = vec![100; 10];
        service[3] = 1000;
        let shares = simulate(|| lr.pick(&eps, &[]).unwrap(), &eps, &service, 50, 200_000);
        assert!(shares[3] <= 0.02, "slow endpoint share {}", shares[3]);
    }

    #[test]
    fn skips_unusable_and_tried() {
        let eps = endpoints(&[1, 1, 1]);
        eps[1].state.set_healthy(false);
        let lr = LeastRequests::new(&eps);
        for _ in 0..200 {
            assert_eq!(lr.pick(&eps, &[0]), Some(2));
        }
    }
}
