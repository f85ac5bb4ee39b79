//! Least requests: power of two choices. Two candidates are drawn in
//! proportion to weight; the one with fewer in-flight requests per unit of
//! weight wins.

use super::alias::{self, Alias, Column};
use super::{eligible, scan_weighted};
use crate::upstream::endpoint::Endpoint;

const DRAWS: usize = 8;

/// Pools up to this size get a table per endpoint for the second draw.
const SMALL_POOL: usize = 32;

#[derive(Debug)]
pub struct LeastRequests {
    candidates: Candidates,
}

/// Draws two candidates in proportion to weight, distinct when possible.
#[derive(Debug)]
pub struct Candidates {
    alias: Alias,
    /// In pools of at most `SMALL_POOL` endpoints, per endpoint: a table over
    /// the others, so the second candidate is drawn distinct from the first
    /// in one step (w_b / (W - w_a), as redrawing until distinct gives).
    /// Redrawing costs a third of the picks in a pool of three equal
    /// endpoints, and a mispredicted branch; larger pools rarely draw twice.
    /// All tables in one array: endpoint `a`'s is `others[a * n..][..n]`;
    /// empty for large pools and when no other endpoint has weight.
    others: Vec<Column>,
    /// Only one endpoint has weight: both candidates are that one.
    lone: bool,
}

impl LeastRequests {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self {
            candidates: Candidates::new(endpoints),
        }
    }

    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        let (a, b) = self.candidates.two(endpoints, tried)?;
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

impl Candidates {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let n = weights.len();
        let lone = weights.iter().filter(|&&w| w > 0).count() == 1;
        let mut others = Vec::new();
        // With two weighted endpoints or more, each table over the others
        // has n columns; with one, there is no other to draw.
        if n <= SMALL_POOL && !lone {
            for i in 0..n {
                let mut rest = weights.clone();
                rest[i] = 0;
                others.extend_from_slice(Alias::from_weights(&rest).columns());
            }
        }
        Self {
            alias: Alias::from_weights(&weights),
            others,
            lone,
        }
    }

    /// Two eligible candidates drawn by weight, distinct when possible.
    #[inline]
    pub fn two(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<(usize, usize)> {
        if self.alias.is_empty() {
            return None;
        }
        let n = self.alias.columns().len();
        let a = self.alias.draw(fastrand::u64(..));
        if self.lone {
            // Redrawing for a distinct second candidate could only find `a`.
            return eligible(endpoints, a, tried).then_some((a, a));
        }
        let b = match self.others.get(a * n..(a + 1) * n) {
            Some(others) => alias::draw(others, fastrand::u64(..)),
            None => self.alias.draw(fastrand::u64(..)),
        };
        if a != b && eligible(endpoints, a, tried) && eligible(endpoints, b, tried) {
            return Some((a, b));
        }
        // Rejecting the pair and drawing afresh keeps the distribution.
        self.two_slowly(endpoints, tried)
    }

    /// Redraws past ineligible and repeated candidates; falls back to a scan.
    #[cold]
    fn two_slowly(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<(usize, usize)> {
        let draw = || {
            (0..DRAWS)
                .map(|_| self.alias.draw(fastrand::u64(..)))
                .find(|&i| eligible(endpoints, i, tried))
                .or_else(|| {
                    // Only the endpoints the table was built over.
                    let built = &endpoints[..self.alias.columns().len()];
                    scan_weighted(built, tried, fastrand::u64(..))
                })
        };
        let a = draw()?;
        let b = (0..3)
            .map(|_| draw())
            .find(|&b| b != Some(a))
            .flatten()
            .unwrap_or(a);
        Some((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;
    use crate::upstream::InFlight;

    #[test]
    fn the_second_candidate_is_distinct_and_drawn_by_weight() {
        let eps = endpoints(&[1, 2, 3]);
        let candidates = Candidates::new(&eps);
        fastrand::seed(11);
        let mut pairs = [[0u32; 3]; 3];
        for _ in 0..300_000 {
            let (a, b) = candidates.two(&eps, &[]).unwrap();
            pairs[a][b] += 1;
        }
        for (a, row) in pairs.iter().enumerate() {
            assert_eq!(row[a], 0, "{pairs:?}");
            let total: u32 = row.iter().sum();
            let others: f64 = [1.0, 2.0, 3.0].iter().sum::<f64>() - [1.0, 2.0, 3.0][a];
            for (b, &n) in row.iter().enumerate().filter(|&(b, _)| b != a) {
                let expected = [1.0, 2.0, 3.0][b] / others;
                let share = f64::from(n) / f64::from(total);
                assert!(
                    (share - expected).abs() < 0.01,
                    "{a}->{b}: {share} vs {expected}"
                );
            }
        }
        // A pool with one endpoint of weight, or one eligible: the same twice.
        let one = endpoints(&[0, 4]);
        assert_eq!(Candidates::new(&one).two(&one, &[]), Some((1, 1)));
        assert_eq!(Candidates::new(&one).two(&one, &[1]), None);
        assert_eq!(candidates.two(&eps, &[0, 2]), Some((1, 1)));
    }

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
