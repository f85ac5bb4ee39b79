//! Smooth weighted round robin (nginx's order), from a precomputed schedule.
//!
//! The schedule holds one full period of sum-of-weights picks, computed once
//! when the snapshot is built; a pick takes the next turn of one shared
//! cursor and reads the schedule there, so over any window of sum-of-weights
//! requests each endpoint gets exactly its weight's share. Drained endpoints
//! (weight 0) never appear in it.
//!
//! The cursor wraps at the schedule's length (compare-and-swap) instead of
//! counting up and taking a remainder: no division, and the order stays
//! exact forever (a wrapping counter with a remainder would break it once
//! per 2^64 turns, a 32-bit one once per 2^32).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::eligible;
use crate::upstream::endpoint::{Endpoint, EndpointState};

#[derive(Debug)]
pub struct RoundRobin {
    /// One period: the endpoint index and, so that a pick checks usability
    /// with one load instead of three dependent ones, its state.
    schedule: Box<[(u32, Arc<EndpointState>)]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Self {
            schedule: smooth_schedule(&weights)
                .into_iter()
                .map(|i| (i, Arc::clone(&endpoints[i as usize].state)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in the schedule that is usable and not yet tried.
    #[inline]
    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        if !tried.is_empty() {
            // A retry reads the cursor without taking a turn: otherwise every
            // retry would shift the schedule, and with a dead endpoint in a
            // pool of two, every request would try the dead one first.
            return self.scan(endpoints, self.next.load(Ordering::Relaxed), tried);
        }
        let turn = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(if t + 1 < len { t + 1 } else { 0 })
            })
            .unwrap_or_else(|t| t);
        let (i, state) = &self.schedule[turn];
        if state.is_usable() {
            return Some(*i as usize);
        }
        self.scan(endpoints, turn, tried)
    }

    /// The first eligible endpoint in the schedule from `turn` on.
    #[cold]
    fn scan(&self, endpoints: &[Endpoint], turn: usize, tried: &[usize]) -> Option<usize> {
        let len = self.schedule.len();
        (0..len)
            .map(|k| self.schedule[(turn + k) % len].0 as usize)
            .find(|&i| eligible(endpoints, i, tried))
    }
}

/// One period of nginx's smooth weighted round robin: each step adds every
/// weight to its current value, picks the largest (first on ties) and
/// subtracts the total from it.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_order_for_5_1_1() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn retries_do_not_take_a_turn() {
        let eps = crate::balance::testing::endpoints(&[1, 1]);
        let rr = RoundRobin::new(&eps);
        let mut first_attempts = Vec::new();
        for _ in 0..6 {
            let first = rr.pick(&eps, &[]).unwrap();
            first_attempts.push(first);
            assert_eq!(rr.pick(&eps, &[first]), Some(1 - first));
        }
        assert_eq!(first_attempts, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn picks_follow_the_schedule_across_many_periods() {
        let eps = crate::balance::testing::endpoints(&[5, 1, 1]);
        let rr = RoundRobin::new(&eps);
        let picks: Vec<usize> = (0..70).map(|_| rr.pick(&eps, &[]).unwrap()).collect();
        let period = [0, 0, 1, 0, 2, 0, 0];
        assert_eq!(picks, period.repeat(10));
        // An unusable endpoint's turns go to the next usable one in the schedule.
        eps[1].state.set_healthy(false);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(&eps, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 0, 0, 0, 2, 0, 0]);
    }

    #[test]
    fn drained_endpoints_never_appear() {
        let s = smooth_schedule(&[2, 0, 1]);
        assert_eq!(s.len(), 3);
        assert!(!s.contains(&1));
    }

    #[test]
    fn exact_shares_over_every_window() {
        let weights = [3, 1, 2, 7];
        let s = smooth_schedule(&weights);
        let total = s.len();
        let doubled: Vec<u32> = s.iter().chain(s.iter()).copied().collect();
        for start in 0..total {
            let window = &doubled[start..start + total];
            for (i, &w) in weights.iter().enumerate() {
                let n = window.iter().filter(|&&x| x as usize == i).count();
                assert_eq!(n, w as usize, "window at {start}, endpoint {i}");
            }
        }
    }
}
