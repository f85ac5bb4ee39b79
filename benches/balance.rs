//! pick() per algorithm at N = 3, 100 and 1,000 endpoints, key extraction and
//! hashing included for the hashing algorithms; ring and Maglev builds.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balance::hash_key;
use fulcrum::balance::{MaglevTable, Ring};
use fulcrum::upstream::Upstream;

fn upstream(balance: &str, n: usize) -> Upstream {
    Upstream::build(
        &config(balance, n, ""),
        None,
        &fulcrum::metrics::Metrics::disabled(),
    )
}

/// `n` endpoints, the last of them joining with a one-hour slow start (so
/// it ramps through the whole run).
fn ramping_upstream(balance: &str, n: usize) -> Upstream {
    let metrics = fulcrum::metrics::Metrics::disabled();
    let before = Upstream::build(
        &config(balance, n - 1, "slow_start = \"1h\"\n"),
        None,
        &metrics,
    );
    let after = Upstream::build(
        &config(balance, n, "slow_start = \"1h\"\n"),
        Some(&before),
        &metrics,
    );
    assert!(after.balancer.is_ramping());
    after
}

fn config(balance: &str, n: usize, extra: &str) -> fulcrum::config::UpstreamConfig {
    let endpoints: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{ address = \"10.{}.{}.{}:8080\" }}",
                i / 62500,
                i / 250 % 250,
                i % 250 + 1
            )
        })
        .collect();
    let key = if matches!(balance, "consistent_hash" | "maglev") {
        "hash_key = \"header:x-user-id\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[upstream.u]\nbalance = \"{balance}\"\n{key}{extra}endpoints = [{}]\n",
        endpoints.join(", ")
    );
    let config = fulcrum::config::parse(Path::new("bench.toml"), &text).expect("valid");
    config.upstreams[0].clone()
}

/// Every algorithm, as `balance` names it.
const ALGORITHMS: [&str; 6] = [
    "round_robin",
    "random",
    "least_requests",
    "peak_ewma",
    "consistent_hash",
    "maglev",
];

fn picks(c: &mut Criterion) {
    let requests: Vec<http::request::Parts> = (0..1024)
        .map(|i| {
            http::Request::get("/")
                .header("x-user-id", format!("user-{i}"))
                .body(())
                .unwrap()
                .into_parts()
                .0
        })
        .collect();
    let mut group = c.benchmark_group("pick");
    // The floor under round robin: the shared cursor's atomic increment.
    let cursor = std::sync::atomic::AtomicUsize::new(0);
    group.bench_function("baseline_atomic_fetch_add", |b| {
        b.iter(|| black_box(cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
    });
    for balance in ALGORITHMS {
        for n in [3, 100, 1000] {
            bench_pick(&mut group, balance, &upstream(balance, n), n, &requests);
        }
    }
    group.finish();

    // The same picks while one endpoint of 100 ramps (slow start).
    let mut group = c.benchmark_group("pick_ramping");
    for balance in ALGORITHMS {
        let u = ramping_upstream(balance, 100);
        bench_pick(&mut group, balance, &u, 100, &requests);
    }
    group.finish();

    let mut group = c.benchmark_group("build");
    for n in [100, 1000] {
        let u = upstream("round_robin", n);
        group.bench_with_input(BenchmarkId::new("ring", n), &n, |b, _| {
            b.iter(|| black_box(Ring::build(&u.endpoints)))
        });
        group.bench_with_input(BenchmarkId::new("maglev", n), &n, |b, _| {
            b.iter(|| black_box(MaglevTable::build(&u.endpoints, |_| true)))
        });
    }
    group.finish();
}

/// One pick per iteration from `u`, key extraction and hashing included,
/// over 1,024 requests with distinct keys.
fn bench_pick(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    balance: &str,
    u: &Upstream,
    n: usize,
    requests: &[http::request::Parts],
) {
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut i = 0usize;
    group.bench_with_input(BenchmarkId::new(balance, n), &n, |b, _| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let key = u
                .balancer
                .hash_key()
                .and_then(|k| hash_key::hash(k, &requests[i], client));
            black_box(u.pick(key, &[]))
        })
    });
}

criterion_group!(benches, picks);
criterion_main!(benches);
