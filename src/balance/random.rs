//! Weighted random: an alias-table draw from a per-thread RNG, no lock.

use super::{Alias, eligible, scan_weighted};
use crate::upstream::endpoint::Endpoint;

/// Draws this many times before falling back to a scan of eligible endpoints.
const DRAWS: usize = 8;

#[derive(Debug)]
pub struct Random {
    alias: Alias,
}

impl Random {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self {
            alias: Alias::new(endpoints),
        }
    }

    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        if self.alias.is_empty() {
            return None;
        }
        for _ in 0..DRAWS {
            let i = self.alias.draw(fastrand::u64(..));
            if eligible(endpoints, i, tried) {
                return Some(i);
            }
        }
        // Only the endpoints the table was built over.
        let built = &endpoints[..self.alias.columns().len()];
        scan_weighted(built, tried, fastrand::u64(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;

    /// Chi-square critical value for 2 degrees of freedom at p = 0.001.
    const CHI2_2DF_P001: f64 = 13.816;

    #[test]
    fn chi_square_over_a_million_picks_with_weights_1_2_3() {
        let eps = endpoints(&[1, 2, 3]);
        let random = Random::new(&eps);
        fastrand::seed(20261126);
        let mut counts = [0f64; 3];
        let n = 1_000_000;
        for _ in 0..n {
            counts[random.pick(&eps, &[]).unwrap()] += 1.0;
        }
        let chi2: f64 = counts
            .iter()
            .zip([1.0, 2.0, 3.0])
            .map(|(observed, w)| {
                let expected = f64::from(n) * w / 6.0;
                (observed - expected).powi(2) / expected
            })
            .sum();
        assert!(chi2 < CHI2_2DF_P001, "chi2 = {chi2}, counts {counts:?}");
    }

    #[test]
    fn unusable_and_tried_endpoints_are_skipped() {
        let eps = endpoints(&[5, 1, 1]);
        eps[0].state.set_healthy(false);
        let random = Random::new(&eps);
        for _ in 0..1000 {
            let i = random.pick(&eps, &[1]).unwrap();
            assert_eq!(i, 2);
        }
        assert_eq!(random.pick(&eps, &[1, 2]), None);
    }
}
