//! Prints the quality figures of docs/algorithms.md:
//! `cargo run --release --example balance_quality`.

#![allow(clippy::print_stdout)] // a report for the reader

use std::path::Path;

use fulcrum::balance::hash_key::hash_bytes;
use fulcrum::balance::{MaglevTable, Ring};
use fulcrum::upstream::{Endpoint, Upstream};

fn endpoints(addresses: &[String], weights: &[u32]) -> Vec<Endpoint> {
    build(addresses, weights, "round_robin", "").endpoints
}

/// An upstream of `balance` over `addresses` with `weights`.
fn build(addresses: &[String], weights: &[u32], balance: &str, extra: &str) -> Upstream {
    let list: Vec<String> = addresses
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
        .collect();
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[upstream.u]\nbalance = \"{balance}\"\n{extra}\nendpoints = [{}]\n",
        list.join(", ")
    );
    let config = fulcrum::config::parse(Path::new("q.toml"), &text).expect("valid");
    Upstream::build(
        &config.upstreams[0],
        None,
        &fulcrum::metrics::Metrics::disabled(),
    )
}

fn addresses(n: usize, set: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{set}.{}.{}:8080", i / 250, i % 250 + 1))
        .collect()
}

fn keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| hash_bytes(format!("key-{i}").as_bytes()))
        .collect()
}

/// max/mean of shares when each key goes to the next point clockwise.
fn clockwise_max_over_mean(ring: &Ring, n: usize, keys: &[u64]) -> f64 {
    let mut counts = vec![0usize; n];
    for &k in keys {
        counts[ring.walk_clockwise(k)] += 1;
    }
    *counts.iter().max().unwrap() as f64 / (keys.len() as f64 / n as f64)
}

/// Closed loop: `clients` requests always in flight, each finishing after
/// its endpoint's service time. Returns each endpoint's share of picks.
fn simulate(u: &Upstream, service: &[u64], clients: usize, requests: usize) -> Vec<f64> {
    let mut picks = vec![0usize; u.endpoints.len()];
    let mut running = Vec::new();
    let mut now = 0u64;
    for _ in 0..requests {
        if running.len() == clients {
            let next = (0..running.len())
                .min_by_key(|&k| {
                    let (t, _, _): &(u64, usize, _) = &running[k];
                    *t
                })
                .unwrap();
            let (t, _, guard) = running.swap_remove(next);
            now = t;
            drop(guard);
        }
        let i = u.balancer.pick(&u.endpoints, None, &[]).unwrap();
        picks[i] += 1;
        running.push((now + service[i], i, u.endpoints[i].state.start()));
    }
    picks.iter().map(|&p| p as f64 / requests as f64).collect()
}

fn upstream(balance: &str, weights: &[u32], extra: &str) -> Upstream {
    let addresses: Vec<String> = (1..=weights.len())
        .map(|i| format!("10.9.0.{i}:8080"))
        .collect();
    build(&addresses, weights, balance, extra)
}

fn bounded_load_over_cap(requests: usize) -> (usize, usize) {
    let u = upstream(
        "consistent_hash",
        &[1, 1, 2, 1, 1, 1, 3, 1],
        "hash_key = \"header:x\"\nbounded_load = 1.25",
    );
    let total_weight: f64 = u.endpoints.iter().map(|e| f64::from(e.weight)).sum();
    let zipf: Vec<f64> = (1..=1000).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
    let sum: f64 = zipf.iter().sum();
    let keys = keys(1000);
    let mut rng = fastrand::Rng::with_seed(9);
    let (mut open, mut over, mut hottest) = (Vec::new(), 0, 0usize);
    for step in 0..requests {
        let mut x = rng.f64() * sum;
        let k = zipf.iter().position(|w| {
            x -= w;
            x <= 0.0
        });
        let total: u64 = u.endpoints.iter().map(|e| e.state.in_flight()).sum();
        let i = u
            .balancer
            .pick(&u.endpoints, Some(keys[k.unwrap_or(999)]), &[])
            .unwrap();
        let cap =
            (1.25 * (total as f64 + 1.0) * f64::from(u.endpoints[i].weight) / total_weight).ceil();
        if (u.endpoints[i].state.in_flight() + 1) as f64 > cap {
            over += 1;
        }
        open.push(u.endpoints[i].state.start());
        hottest = hottest.max(
            u.endpoints
                .iter()
                .map(|e| e.state.in_flight() as usize)
                .max()
                .unwrap(),
        );
        if open.len() > 64 || step % 7 == 0 {
            let j = rng.usize(..open.len());
            open.swap_remove(j);
        }
    }
    (over, hottest)
}

fn main() {
    // Seeded: the figures in docs/algorithms.md are reproducible.
    fastrand::seed(20261126);
    println!("least_requests, closed loop of 30 clients, 200,000 requests");
    let u = upstream("least_requests", &[1, 2, 3], "");
    let shares = simulate(&u, &[100, 100, 100], 30, 200_000);
    println!(
        "| weights 1:2:3, equal speed | shares {:.4} {:.4} {:.4} | ideal 0.1667 0.3333 0.5000 |",
        shares[0], shares[1], shares[2]
    );
    let u = upstream("least_requests", &[1; 10], "");
    let mut service = vec![100; 10];
    service[3] = 1000;
    let shares = simulate(&u, &service, 50, 200_000);
    println!(
        "| 10 endpoints, one 10x slower, 50 clients | slow endpoint's share {:.4} |",
        shares[3]
    );
    let (over, hottest) = bounded_load_over_cap(50_000);
    println!();
    println!(
        "consistent_hash bounded_load = 1.25, Zipf(1.1) over 1,000 keys, 50,000 picks, ~64 in flight:"
    );
    println!("| picks over the cap | {over} | most in flight on one endpoint | {hottest} |");
    println!();
    let many = keys(1_000_000);
    println!("consistent_hash: most loaded endpoint's share / mean share (256 points per weight)");
    println!(
        "| N | address set | nearest point (fulcrum), exact | clockwise (Ketama), 10^6 keys |"
    );
    println!("| --- | --- | --- | --- |");
    for n in [10, 100] {
        for set in 0..3 {
            let eps = endpoints(&addresses(n, set), &vec![1; n]);
            let ring = Ring::build(&eps);
            let shares = ring.shares(n);
            let nearest = shares.iter().cloned().fold(0.0, f64::max) * n as f64;
            let clockwise = clockwise_max_over_mean(&ring, n, &many);
            println!("| {n} | 10.{set}.x.y | {nearest:.4} | {clockwise:.4} |");
        }
    }
    println!();
    println!("maglev: entries per endpoint, and keys moved when one of N is removed (ideal = 1/N)");
    println!("| N | address set | M | entries min..max (mean) | moved / ideal |");
    println!("| --- | --- | --- | --- | --- |");
    let some = keys(400_000);
    for n in [10, 100] {
        for set in 0..3 {
            let eps = endpoints(&addresses(n, set), &vec![1; n]);
            let table = MaglevTable::build(&eps, |_| true);
            let counts = table.counts(n);
            let gone = n / 3;
            let after = MaglevTable::build(&eps, |i| i != gone);
            let moved = some
                .iter()
                .filter(|&&k| table.lookup_with(k, |_| true) != after.lookup_with(k, |_| true))
                .count() as f64
                / some.len() as f64;
            println!(
                "| {n} | 10.{set}.x.y | {} | {}..{} ({:.1}) | {:.3} |",
                table.len(),
                counts.iter().min().unwrap(),
                counts.iter().max().unwrap(),
                table.len() as f64 / n as f64,
                moved * n as f64
            );
        }
    }
}
