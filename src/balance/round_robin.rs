//! Smooth weighted round robin (nginx's order), from a precomputed schedule.
//!
//! The schedule holds one full period of sum-of-weights picks, computed once
//! when the snapshot is built; a pick is one atomic increment and an index, so
//! over any window of sum-of-weights requests each endpoint gets exactly its
//! weight's share. Drained endpoints (weight 0) never appear in it.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::eligible;
use crate::upstream::Endpoint;

#[derive(Debug)]
pub struct RoundRobin {
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Self {
            schedule: smooth_schedule(&weights),
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in the schedule that is usable and not yet tried.
    pub fn pick(&self, endpoints: &[Endpoint], tried: &[usize]) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        // A retry reads the cursor without taking a turn: otherwise every
        // retry would shift the schedule, and with a dead endpoint in a pool
        // of two, every request would try the dead one first.
        let start = if tried.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        (0..len)
            .map(|i| self.schedule[(start + i) % len] as usize)
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
