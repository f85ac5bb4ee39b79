//! Header rewriting on a typical request and response.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::headers::{ClientIp, rewrite_request, strip_hop_by_hop};
use http::{HeaderMap, HeaderValue};

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive"),
        ("cookie", "session=abc123; theme=dark"),
        ("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("date", "Thu, 26 Nov 2026 10:00:00 GMT"),
        ("cache-control", "no-store"),
        ("server", "app"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let ip = ClientIp::new("192.0.2.1".parse::<IpAddr>().unwrap());
    let host = HeaderValue::from_static("api.example.com");
    let request = request_headers();
    let response = response_headers();
    c.bench_function("headers/rewrite_request", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |h| rewrite_request(black_box(h), &ip, false, Some(&host), false),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/strip_hop_by_hop_response", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| strip_hop_by_hop(black_box(h), false),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
