//! Soak: 1,000,000 requests through a real `fulcrum` process, with a reload
//! every 100,000 requests (alternating endpoint sets) and an endpoint
//! restarted every 250,000; prints the proxy's RSS and open descriptors
//! every 100,000 requests. Memory must stay flat.
//!
//! `benches/soak.sh` builds and runs it (not part of CI).

#![allow(clippy::print_stdout)] // a report for the reader

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Killed, fds, free_port, rss_kib};

const TOTAL: u64 = 1_000_000;
const CLIENTS: usize = 32;

/// An endpoint on `addr` (port 0 for any) until `stop`.
async fn endpoint(addr: SocketAddr, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind endpoint");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                () = stop.cancelled() => return,
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello, soak!",
                    ))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! { _ = conn => {}, () = stop.cancelled() => {} }
            });
        }
    });
    addr
}

fn config(admin: u16, listener: u16, endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[admin]\nbind = \"127.0.0.1:{admin}\"\n[[listener]]\nname = \"soak\"\nbind = \"127.0.0.1:{listener}\"\n[[route]]\nupstream = \"app\"\n[upstream.app]\nretries = 2\nendpoints = [{}]\n[upstream.app.health_check]\ninterval = \"500ms\"\ntimeout = \"500ms\"\n",
        list.join(", ")
    )
}

#[tokio::main]
async fn main() {
    let binary = std::env::var("FULCRUM_BIN").unwrap_or_else(|_| "target/release/fulcrum".into());
    let stops: Vec<CancellationToken> = (0..4).map(|_| CancellationToken::new()).collect();
    let mut endpoints = Vec::new();
    for stop in &stops {
        endpoints.push(endpoint("127.0.0.1:0".parse().unwrap(), stop.clone()).await);
    }
    let (admin, port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("fulcrum-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fulcrum.toml");
    let sets = [
        vec![endpoints[0], endpoints[1], endpoints[2]],
        vec![endpoints[1], endpoints[2], endpoints[3]],
    ];
    std::fs::write(&path, config(admin, port, &sets[0])).unwrap();
    let child = Command::new(&binary)
        .args(["-c", path.to_str().unwrap()])
        .env("FULCRUM_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("run FULCRUM_BIN (default target/release/fulcrum)");
    let proxy = Killed(child);
    let pid = proxy.0.id();
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    while client
        .request(hyper::Request::get(url.clone()).body(Empty::new()).unwrap())
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fulcrum did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, sent, failed) = (
            client.clone(),
            url.clone(),
            Arc::clone(&sent),
            Arc::clone(&failed),
        );
        workers.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < TOTAL {
                let ok = match client
                    .request(hyper::Request::get(url.clone()).body(Empty::new()).unwrap())
                    .await
                {
                    Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    println!("| requests | RSS (KiB) | open fds | failed so far | elapsed |");
    println!("| --- | --- | --- | --- | --- |");
    println!("| 0 | {} | {} | 0 | 0 s |", rss_kib(pid), fds(pid));
    let mut next_report = 100_000;
    let mut next_restart = 250_000;
    let mut generation = 0;
    let mut stops = stops;
    while next_report <= TOTAL {
        let done = sent.load(Ordering::Relaxed).min(TOTAL);
        if done >= next_restart {
            // Restart endpoint 1 (in both sets) on the same port.
            stops[1].cancel();
            tokio::time::sleep(Duration::from_millis(200)).await;
            stops[1] = CancellationToken::new();
            endpoint(endpoints[1], stops[1].clone()).await;
            next_restart += 250_000;
        }
        if done >= next_report {
            generation += 1;
            std::fs::write(&path, config(admin, port, &sets[generation % 2])).unwrap();
            let req = hyper::Request::post(format!("http://127.0.0.1:{admin}/reload"))
                .body(Empty::new())
                .unwrap();
            let reloaded = client
                .request(req)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            println!(
                "| {next_report} | {} | {} | {} | {:.0} s (reload: {reloaded}) |",
                rss_kib(pid),
                fds(pid),
                failed.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
            next_report += 100_000;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        let _ = w.await;
    }
    println!(
        "\n{TOTAL} requests in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
