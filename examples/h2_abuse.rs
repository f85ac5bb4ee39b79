//! HTTP/2 abuse harness: each attack of tests/h2_abuse.rs runs for a fixed
//! time against a real `fulcrum` process, reconnecting whenever it is cut
//! off (as a real attacker would), while another client sends requests one
//! after another and measures their latency. Prints, per attack: the frames
//! sent, the connections fulcrum cut, how many attack requests reached the
//! endpoint, the other client's p50/p99/max, and fulcrum's RSS growth.
//!
//! `benches/h2_abuse.sh` builds and runs it (not part of CI).

#![allow(clippy::print_stdout)] // a report for the reader

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod common;
#[path = "../tests/support/h2raw.rs"]
mod h2raw;

use common::{Killed, free_port, rss_kib, status_kib};
use h2raw::*;

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(3);

/// An endpoint answering "ok"; counts requests whose path starts "/attack".
async fn endpoint(attack_hits: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = Arc::clone(&attack_hits);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    if req.uri().path().starts_with("/attack") {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One attack: what it writes on a fresh connection, batch after batch.
struct Attack {
    name: &'static str,
    /// The client reads what fulcrum sends (false: never reads).
    reads: bool,
    /// The bytes of batch `n` of a connection (stream ids from `n`).
    batch: fn(u32) -> Vec<u8>,
    /// Requests (streams) each batch opens.
    streams_per_batch: u32,
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "rapid reset, 100 pairs a write",
            reads: true,
            streams_per_batch: 100,
            batch: |n| {
                (n * 100..n * 100 + 100)
                    .flat_map(|i| {
                        [request(2 * i + 1, "/attack", true), rst(2 * i + 1, CANCEL)].concat()
                    })
                    .collect()
            },
        },
        Attack {
            name: "rapid reset, 1 pair a write",
            reads: true,
            streams_per_batch: 1,
            batch: |n| [request(2 * n + 1, "/attack", true), rst(2 * n + 1, CANCEL)].concat(),
        },
        Attack {
            name: "MadeYouReset (content-length on an ended stream)",
            reads: true,
            streams_per_batch: 50,
            batch: |n| {
                let mut block = get_block("/attack");
                block.extend_from_slice(&[0x0f, 28 - 15, 1, b'1']);
                (n * 50..n * 50 + 50)
                    .flat_map(|i| frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block))
                    .collect()
            },
        },
        Attack {
            name: "CONTINUATION, 16 KiB frames",
            reads: true,
            streams_per_batch: 0,
            batch: |n| {
                if n == 0 {
                    let mut first = get_block("/attack");
                    first.extend_from_slice(&[0x00, 0x05]);
                    first.extend_from_slice(b"x-big");
                    hpack_length(&mut first, 1 << 24);
                    first.resize(16384, b'v');
                    frame(HEADERS, 0, 1, &first)
                } else {
                    frame(CONTINUATION, 0, 1, &[b'v'; 16384])
                }
            },
        },
        Attack {
            name: "CONTINUATION, empty frames",
            reads: true,
            streams_per_batch: 0,
            batch: |n| {
                if n == 0 {
                    frame(HEADERS, 0, 1, &get_block("/attack"))
                } else {
                    (0..100)
                        .flat_map(|_| frame(CONTINUATION, 0, 1, &[]))
                        .collect()
                }
            },
        },
        Attack {
            name: "PING flood",
            reads: true,
            streams_per_batch: 0,
            batch: |_| (0..100).flat_map(|_| frame(PING, 0, 0, &[7; 8])).collect(),
        },
        Attack {
            name: "SETTINGS flood",
            reads: true,
            streams_per_batch: 0,
            batch: |_| (0..100).flat_map(|_| frame(SETTINGS, 0, 0, &[])).collect(),
        },
        Attack {
            name: "PING flood under the run limit (1 byte of DATA every 500), never reading",
            reads: false,
            streams_per_batch: 0,
            batch: |n| {
                let mut b = if n == 0 {
                    request(1, "/attack", false)
                } else {
                    Vec::new()
                };
                b.extend(frame(DATA, 0, 1, b"x"));
                b.extend((0..500).flat_map(|_| frame(PING, 0, 0, &[1; 8])));
                b
            },
        },
    ]
}

#[derive(Default)]
struct Outcome {
    batches: u64,
    connections: u64,
    cut: u64,
}

/// Runs `attack` until `until`, reconnecting after each cut.
async fn run_attack(addr: SocketAddr, attack: &Attack, until: Instant) -> Outcome {
    let mut out = Outcome::default();
    while Instant::now() < until {
        let mut h2 = RawH2::connect(addr, &[], attack.reads).await;
        out.connections += 1;
        let mut n = 0;
        loop {
            if Instant::now() >= until {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if h2.send_within(&(attack.batch)(n), left).await.is_err() || h2.seen().closed {
                out.cut += u64::from(h2.closed_within(Duration::from_millis(100)).await);
                break;
            }
            out.batches += 1;
            n += 1;
            tokio::task::yield_now().await;
        }
    }
    out
}

/// Latencies of requests sent one after another until `stop`.
async fn victim(url: hyper::Uri, stop: Arc<AtomicBool>) -> (Vec<Duration>, u64) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match client.get(url.clone()).await {
            Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    latencies.sort();
    (latencies, failed)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let binary = std::env::var("FULCRUM_BIN").unwrap_or_else(|_| "target/release/fulcrum".into());
    let hits = Arc::new(AtomicU64::new(0));
    let upstream = endpoint(Arc::clone(&hits)).await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("fulcrum-h2-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fulcrum.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nworkers = 1\n[admin]\nbind = \"\"\n[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:{port}\"\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{{ address = \"{upstream}\" }}]\n"
        ),
    )
    .unwrap();
    let proxy = Killed(
        Command::new(&binary)
            .args(["-c", path.to_str().unwrap()])
            .env("FULCRUM_LOG", "warn,h2=error")
            .stdout(Stdio::null())
            .spawn()
            .expect("run FULCRUM_BIN (default target/release/fulcrum)"),
    );
    let pid = proxy.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "fulcrum did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!(
        "fulcrum pid {pid}, one worker; each attack runs {ATTACK:?}; the other client sends one request at a time"
    );
    println!(
        "| attack | frames batches sent | connections (cut by fulcrum) | attack requests at the endpoint | other client: requests, p50 / p99 / max ms, failed | RSS growth KiB (peak) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut all = vec![None];
    all.extend(attacks().into_iter().map(Some));
    for attack in &all {
        hits.store(0, Ordering::Relaxed);
        let (rss0, hwm0) = (rss_kib(pid), status_kib(pid, "VmHWM:"));
        let stop = Arc::new(AtomicBool::new(false));
        let other = tokio::spawn(victim(url.clone(), Arc::clone(&stop)));
        let until = Instant::now() + ATTACK;
        let out = match attack {
            Some(a) => run_attack(addr, a, until).await,
            None => {
                tokio::time::sleep(ATTACK).await;
                Outcome::default()
            }
        };
        stop.store(true, Ordering::Relaxed);
        let (lat, failed) = other.await.unwrap();
        let (rss1, hwm1) = (rss_kib(pid), status_kib(pid, "VmHWM:"));
        let streams = attack
            .as_ref()
            .map_or(0, |a| u64::from(a.streams_per_batch) * out.batches);
        println!(
            "| {} | {} | {} ({}) | {} of {} streams | {}, {:.2} / {:.2} / {:.2}, {} | {:+} ({:+}) |",
            attack.as_ref().map_or("none (baseline)", |a| a.name),
            out.batches,
            out.connections,
            out.cut,
            hits.load(Ordering::Relaxed),
            streams,
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            failed,
            rss1 as i64 - rss0 as i64,
            hwm1 as i64 - hwm0 as i64,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
