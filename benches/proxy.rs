//! One proxied request on loopback through a real fulcrum to a real hyper
//! endpoint, next to the same request sent directly to the endpoint, and
//! through a fulcrum whose metric handles do nothing, so the proxy's added
//! cost and the metrics' share of it are read as ratios from one run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

async fn endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello, world",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (direct, proxied, unmetered) = rt.block_on(async {
        let upstream = endpoint().await;
        let config = format!(
            "[admin]\nbind = \"\"\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{upstream}\" }}]\n"
        );
        let start = |metrics| {
            let config = fulcrum::config::parse(Path::new("bench.toml"), &config).unwrap();
            let proxy = fulcrum::Fulcrum::bind_with_metrics(config, metrics).unwrap();
            let addr = proxy.local_addr("l").unwrap();
            tokio::spawn(proxy.serve(std::future::pending()));
            addr
        };
        let metered = start(fulcrum::metrics::Metrics::new());
        let unmetered = start(fulcrum::metrics::Metrics::disabled());
        (upstream, metered, unmetered)
    });
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("request_12B");
    for (name, addr) in [
        ("direct", direct),
        ("through_fulcrum", proxied),
        ("through_fulcrum_without_metrics", unmetered),
    ] {
        let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let response = client
                        .request(hyper::Request::get(uri.clone()).body(Empty::new()).unwrap())
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
