//! Peak EWMA: power of two choices on cost = latency estimate x
//! (in-flight + 1), so a slow endpoint is avoided before its queue grows. Weights act
//! through the draw of the two candidates (in proportion to weight), not on
//! the cost: dividing the cost by weight would starve a light endpoint at low
//! concurrency and leave its estimate stale.
//!
//! The estimate (`EndpointState::observe_latency`) jumps to any higher
//! latency at once and decays toward lower ones with a 10 s time constant.
//! An endpoint with no estimate yet is neutral: it is costed at the other
//! candidate's estimate, so it is neither shunned nor flooded.

use super::least_requests::Candidates;
use crate::upstream::endpoint::Endpoint;

#[derive(Debug)]
pub struct PeakEwma {
    candidates: Candidates,
}

impl PeakEwma {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self {
            candidates: Candidates::new(endpoints),
        }
    }

    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        let (a, b) = self.candidates.two(endpoints, tried)?;
        let (ea, eb) = (&endpoints[a], &endpoints[b]);
        let (la, lb) = (ea.state.latency_estimate(), eb.state.latency_estimate());
        let (la, lb) = match (la, lb) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => (x, x),
            (None, Some(y)) => (y, y),
            (None, None) => (1.0, 1.0),
        };
        let cost = |latency: f64, e: &Endpoint| latency * (e.state.in_flight() + 1) as f64;
        Some(if cost(la, ea) <= cost(lb, eb) { a } else { b })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::testing::endpoints;

    #[test]
    fn a_slow_endpoint_is_avoided() {
        fastrand::seed(3);
        let eps = endpoints(&[1; 5]);
        let pe = PeakEwma::new(&eps);
        for (i, e) in eps.iter().enumerate() {
            let ms = if i == 2 { 50 } else { 5 };
            let now = std::time::Instant::now();
            e.state
                .observe_latency(now - Duration::from_millis(ms), now);
        }
        let picks = (0..10_000)
            .filter(|_| pe.pick(&eps, &[]) == Some(2))
            .count();
        // Chosen only when drawn against itself: 1/25 of pairs at most.
        assert!(picks <= 500, "slow endpoint picked {picks} times");
    }

    #[test]
    fn the_estimate_takes_peaks_at_once_and_decays_toward_lower_latencies() {
        let eps = endpoints(&[1]);
        let s = &eps[0].state;
        assert_eq!(s.latency_estimate(), None);
        s.observe_latency_at(Duration::from_millis(10), 0);
        s.observe_latency_at(Duration::from_millis(100), 1_000);
        assert_eq!(s.latency_estimate(), Some(100e6));
        // One time constant later, a 10 ms response pulls it 63% of the way.
        s.observe_latency_at(Duration::from_millis(10), 1_000 + 10_000_000_000);
        let e = s.latency_estimate().unwrap();
        let expected = 100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!((e - expected).abs() < 1.0, "{e} vs {expected}");
    }

    #[test]
    fn new_endpoints_are_neutral() {
        fastrand::seed(4);
        let eps = endpoints(&[1, 1]);
        let pe = PeakEwma::new(&eps);
        let now = std::time::Instant::now();
        eps[0]
            .state
            .observe_latency(now - Duration::from_millis(5), now);
        let new = (0..10_000)
            .filter(|_| pe.pick(&eps, &[]) == Some(1))
            .count();
        assert!(
            (3_000..=7_000).contains(&new),
            "new endpoint picked {new} of 10000"
        );
    }
}
