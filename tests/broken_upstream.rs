//! Broken endpoints: the client gets a 502 or a clean close, never a hang
//! beyond the timeouts; in-flight counts and open file descriptors return to
//! their baseline after each case.
//!
//! The tests of this file hold one lock, so the process's descriptor count
//! is not disturbed by another test running in parallel.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A raw endpoint that reads a request head, then acts out `script`.
async fn scripted(script: &'static str) -> SocketAddr {
    raw_backend(move |mut s| async move {
        read_head(&mut s).await;
        match script {
            "short body" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                    .await;
            }
            "huge headers" => {
                let big = "x".repeat(1 << 20);
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\nx-big: {big}\r\n\r\n").as_bytes())
                    .await;
            }
            "hang mid-body" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart")
                    .await;
                // The rest never comes.
                std::future::pending::<()>().await;
            }
            "reset mid-body" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
            }
            "bad status line" => {
                let _ = s.write_all(b"HTTP/1.1 2OO OK\r\n\r\n").await;
            }
            other => panic!("{other}"),
        }
    })
    .await
}

async fn in_flight(admin: SocketAddr) -> u64 {
    let (_, _, body) = get(&client(), &format!("http://{admin}/status")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["upstreams"]["app"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["in_flight"].as_u64().unwrap())
        .sum()
}

fn with_admin(config: String) -> String {
    config.replace("bind = \"\"", "bind = \"127.0.0.1:0\"")
}

#[tokio::test]
async fn broken_endpoints_end_in_502_or_a_clean_close() {
    let _serial = SERIAL.lock().await;
    let cases = [
        ("short body", false),
        ("huge headers", true),
        ("hang mid-body", false),
        ("reset mid-body", false),
        ("bad status line", true),
    ];
    for (script, expect_502) in cases {
        let endpoint = scripted(script).await;
        let config = with_admin(config_for(
            &[endpoint],
            "idle_timeout = \"500ms\"",
            "retries = 0\nresponse_timeout = \"2s\"",
        ));
        let proxy = Proxy::start(&config).await;
        let admin = proxy.admin.unwrap();
        // Settle the admin client's own connection before the baseline.
        in_flight(admin).await;
        let baseline = open_fds();

        let started = Instant::now();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let response = read_until_close(&mut s, Duration::from_secs(10)).await;
        let took = started.elapsed();
        drop(s);
        assert!(took < Duration::from_secs(5), "{script}: took {took:?}");
        if expect_502 {
            assert!(
                response.starts_with("HTTP/1.1 502"),
                "{script}: {response:.200}"
            );
        } else {
            // Headers came through; the body was cut and the connection closed.
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "{script}: {response:.200}"
            );
            assert!(response.len() < 150, "{script}: {response:.200}");
        }
        eventually(Duration::from_secs(5), || async {
            in_flight(admin).await == 0
        })
        .await;
        eventually(Duration::from_secs(5), || async { open_fds() <= baseline }).await;
    }
}

#[tokio::test]
async fn a_client_that_never_reads_releases_the_endpoint() {
    let _serial = SERIAL.lock().await;
    let b = Backend::spawn("b").await;
    let config = with_admin(config_for(
        &[b.addr],
        "idle_timeout = \"500ms\"",
        "retries = 0",
    ));
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    // 64 MiB that the client never reads: buffering stays bounded by socket
    // buffers, and once nothing moves for idle_timeout the connection closes.
    s.write_all(b"GET /big/67108864 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async {
        in_flight(admin).await == 1
    })
    .await;
    let started = Instant::now();
    eventually(Duration::from_secs(10), || async {
        in_flight(admin).await == 0
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(s);
    // The endpoint serves on.
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "b");
}
