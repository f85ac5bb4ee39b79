//! Prints the quality figures of docs/algorithms.md:
//! `cargo run --release --example balance_quality`.

use std::path::Path;

use fulcrum::balance::hash_key::hash_bytes;
use fulcrum::balance::{MaglevTable, Ring};
use fulcrum::upstream::{Endpoint, Upstream};

fn endpoints(addresses: &[String], weights: &[u32]) -> Vec<Endpoint> {
    let list: Vec<String> = addresses
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
        .collect();
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[upstream.u]\nendpoints = [{}]\n",
        list.join(", ")
    );
    let config = fulcrum::config::parse(Path::new("q.toml"), &text).expect("valid");
    Upstream::build(&config.upstreams[0], None).endpoints
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

fn main() {
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
