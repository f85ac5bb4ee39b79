//! Slow start over time, on the runtime's paused clock: a ramping
//! endpoint's share for the weighted algorithms, and the gradual hand-over
//! of keys for the hashing ones (which keys move, and when).

use std::time::Duration;

use super::testing::{endpoints_at, keys, upstream};
use super::{Balancer, key_fraction};
use crate::config::BalanceKind;
use crate::upstream::endpoint::Endpoint;

const WINDOW: Duration = Duration::from_secs(10);

/// Five endpoints of weight 1, the last joining now with a 10 s ramp.
fn joining(balance: BalanceKind) -> (Vec<Endpoint>, Balancer) {
    let list: Vec<(String, u32)> = (1..=5).map(|i| (format!("10.9.0.{i}:80"), 1)).collect();
    let eps = endpoints_at(&list);
    for e in &eps {
        e.state.set_slow_start(WINDOW);
    }
    eps[4].state.start_ramp();
    let mut config = upstream(&list);
    config.balance = balance;
    config.hash_key = Some(crate::config::HashKey::Path);
    let balancer = Balancer::new(&config, &eps, eps[0].state.upstream_in_flight());
    assert!(balancer.is_ramping());
    (eps, balancer)
}

/// The joining endpoint's share of `n` picks now.
fn share(eps: &[Endpoint], balancer: &Balancer, n: usize) -> f64 {
    let hits = (0..n)
        .filter(|_| balancer.pick(eps, None, &[]) == Some(4))
        .count();
    hits as f64 / n as f64
}

#[tokio::test(start_paused = true)]
async fn a_ramping_endpoints_share_grows_with_its_scaled_weight() {
    for balance in [
        BalanceKind::RoundRobin,
        BalanceKind::Random,
        BalanceKind::LeastRequests,
        BalanceKind::PeakEwma,
    ] {
        fastrand::seed(7);
        let (eps, balancer) = joining(balance);
        let mut shares = Vec::new();
        for step in 0..=2 {
            // Progress 0.1, 0.55, then done (full share): w·p / (4 + w·p).
            let expected = [0.1 / 4.1, 0.55 / 4.55, 0.2][step];
            let got = share(&eps, &balancer, 40_000);
            assert!(
                (got - expected).abs() < 0.012,
                "{balance:?} at {}s: share {got:.4}, expected {expected:.4}",
                step * 5
            );
            shares.push(got);
            tokio::time::advance(WINDOW / 2).await;
        }
        assert!(shares[0] < shares[1] && shares[1] < shares[2], "{shares:?}");
    }
}

/// Where each key goes now, by endpoint index.
fn owners(eps: &[Endpoint], balancer: &Balancer, keys: &[u64]) -> Vec<usize> {
    keys.iter()
        .map(|&k| balancer.pick(eps, Some(k), &[]).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn keys_move_to_a_ramping_endpoint_gradually_and_no_other_key_moves() {
    for balance in [BalanceKind::ConsistentHash, BalanceKind::Maglev] {
        let (eps, balancer) = joining(balance);
        let keys = keys(20_000);
        // Where keys went before it joined, and where they go once its
        // ramp is over (the tables with it).
        let without: Vec<usize> = match balancer.algorithm() {
            Balancer::ConsistentHash(b) => keys
                .iter()
                .map(|&k| b.ring().walk(k, |i| i != 4).unwrap())
                .collect(),
            Balancer::Maglev(_) => {
                let before = super::MaglevTable::build(&eps, |i| i != 4);
                keys.iter()
                    .map(|&k| before.lookup_with(k, |_| true).unwrap())
                    .collect()
            }
            _ => unreachable!(),
        };
        let mut moved_at = Vec::new();
        let mut previous: Option<Vec<usize>> = None;
        for step in 0..=2 {
            let progress = [0.1, 0.55, 1.0][step];
            let now = owners(&eps, &balancer, &keys);
            let mut moved = 0;
            for (k, (&key, (&went, &goes))) in keys.iter().zip(without.iter().zip(&now)).enumerate()
            {
                if goes == 4 {
                    // Only keys under the progress go to it...
                    assert!(key_fraction(key) < progress, "{balance:?}: key {k} early");
                    moved += 1;
                } else {
                    // ...and every other key stays where it was.
                    assert_eq!(
                        goes, went,
                        "{balance:?}: key {k} moved between old endpoints"
                    );
                }
                // A key handed over stays handed over.
                if let Some(previous) = &previous {
                    assert!(
                        previous[k] != 4 || goes == 4,
                        "{balance:?}: key {k} went back"
                    );
                }
            }
            moved_at.push(moved as f64 / keys.len() as f64);
            previous = Some(now);
            tokio::time::advance(WINDOW / 2).await;
        }
        // A fifth of the keys is the endpoint's full share: 10% of it
        // at once, 55% at half time, all of it at the end.
        let full = moved_at[2];
        assert!((0.15..0.25).contains(&full), "{balance:?}: {moved_at:?}");
        assert!(
            (moved_at[0] / full - 0.1).abs() < 0.03,
            "{balance:?}: {moved_at:?}"
        );
        assert!(
            (moved_at[1] / full - 0.55).abs() < 0.04,
            "{balance:?}: {moved_at:?}"
        );
    }
}
