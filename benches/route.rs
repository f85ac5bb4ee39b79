//! Route matching with 1,000 routes: exact hosts, wildcards and prefixes.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::route::RouteTable;

fn table(n: usize) -> RouteTable {
    let mut text = String::from("[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n");
    for i in 0..n {
        let host = match i % 3 {
            0 => format!("host = \"svc{i}.example.com\"\n"),
            1 => format!("host = \"*.tenant{i}.example.com\"\n"),
            _ => String::new(),
        };
        text.push_str(&format!(
            "[[route]]\n{host}path_prefix = \"/api/v{}/r{i}\"\nupstream = \"u\"\n",
            i % 7
        ));
    }
    text.push_str(
        "[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n",
    );
    let config =
        fulcrum::config::parse(Path::new("bench.toml"), &text).expect("valid bench config");
    RouteTable::build(&config)
}

fn bench(c: &mut Criterion) {
    let t = table(1000);
    let mut group = c.benchmark_group("route_1000");
    group.bench_function("exact_host", |b| {
        b.iter(|| {
            t.find(
                0,
                black_box(Some("svc300.example.com")),
                black_box("/api/v6/r300/items"),
            )
        })
    });
    group.bench_function("exact_host_mixed_case_with_port", |b| {
        b.iter(|| {
            t.find(
                0,
                black_box(Some("SVC300.Example.com:443")),
                black_box("/api/v6/r300/items"),
            )
        })
    });
    group.bench_function("wildcard_host", |b| {
        b.iter(|| {
            t.find(
                0,
                black_box(Some("a.tenant301.example.com")),
                black_box("/api/v0/r301"),
            )
        })
    });
    group.bench_function("no_host_prefix_scan", |b| {
        b.iter(|| {
            t.find(
                0,
                black_box(Some("unknown.org")),
                black_box("/api/v2/r998/x"),
            )
        })
    });
    group.bench_function("fallback", |b| {
        b.iter(|| t.find(0, black_box(None), black_box("/static/app.js")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
