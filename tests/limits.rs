//! SPEC `[server]` limits and timeouts, and graceful shutdown.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(server: &str) -> (Backend, Proxy) {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&config_for(&[b.addr], server, "")).await;
    (b, proxy)
}

/// Sends a GET on `s` and asserts it is answered 200.
async fn get_ok(s: &mut TcpStream, what: &str) {
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_some(s, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{what}: {r:?}");
}

/// Reads one response head (and whatever follows in the same read).
async fn read_some(s: &mut TcpStream, wait: Duration) -> String {
    let mut buf = vec![0u8; 16384];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

/// Sends a GET whose `x-big` header is `len` bytes; returns the response.
async fn get_with_header(proxy: &Proxy, len: usize) -> String {
    let request = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "x".repeat(len)
    );
    raw(proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await
}

#[tokio::test]
async fn request_heads_over_max_header_bytes_get_431() {
    let (b, proxy) = proxy_with("max_header_bytes = 2048").await;
    let r = get_with_header(&proxy, 3000).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(r.contains("max_header_bytes"), "{r}");
    // Far over the limit, hyper refuses it before parsing completes.
    let r = get_with_header(&proxy, 20_000).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Just under the limit passes.
    let r = get_with_header(&proxy, 1800).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn bodies_over_max_request_body_get_413() {
    let (b, proxy) = proxy_with("max_request_body = \"1KiB\"").await;
    // Declared too large: refused before any endpoint is contacted.
    let r = raw(
        proxy.addr(),
        b"POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("max_request_body"), "{r}");
    assert_eq!(b.hits(), 0);
    // Chunked: cut off when the limit is passed.
    let chunk = "y".repeat(600);
    let req = format!(
        "POST /consume HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = raw(proxy.addr(), req.as_bytes(), Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // At the limit passes.
    let body = "z".repeat(1024);
    let r = raw(proxy.addr(), format!("POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 1024\r\nconnection: close\r\n\r\n{body}").as_bytes(), Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("1024"), "{r}");
}

#[tokio::test]
async fn stalled_body_gets_408() {
    let (_b, proxy) = proxy_with("body_read_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let started = Instant::now();
    let r = read_some(&mut s, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("body_read_timeout"), "{r}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn trickled_headers_are_cut_off_but_idle_keepalive_is_not() {
    let (_b, proxy) = proxy_with("header_read_timeout = \"300ms\"\nidle_timeout = \"10s\"").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let r = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(!r.contains("200 OK"), "{r}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );

    // An idle keep-alive connection outlives header_read_timeout.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    get_ok(&mut s, "first request").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    get_ok(&mut s, "second request on the idle connection").await;
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout() {
    let (_b, proxy) = proxy_with("idle_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    get_ok(&mut s, "first request").await;
    let started = Instant::now();
    let rest = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(rest, "");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn max_connections_holds_new_connections_until_one_closes() {
    let (_b, proxy) = proxy_with("max_connections = 2").await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        get_ok(&mut s, "within max_connections").await;
        open.push(s);
    }
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_some(&mut third, Duration::from_millis(500)).await,
        "",
        "served beyond max_connections"
    );
    drop(open.pop());
    let r = read_some(&mut third, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let (_b, mut proxy) = proxy_with("shutdown_timeout = \"5s\"").await;
    let addr = proxy.addr();
    let c = client();
    let url = proxy.url("/delay/500");
    let in_flight = tokio::spawn(async move { get(&c, &url).await });
    // Wait until the request is in flight at the backend.
    eventually(Duration::from_secs(5), || async { _b.hits() == 1 }).await;
    let done = proxy.shutdown();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_drain() {
    let (b, mut proxy) = proxy_with("shutdown_timeout = \"300ms\"").await;
    let c = client();
    let url = proxy.url("/delay/10000");
    let _stuck = tokio::spawn(async move { get(&c, &url).await });
    eventually(Duration::from_secs(5), || async { b.hits() == 1 }).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

async fn parked(admin: std::net::SocketAddr) -> f64 {
    metric(admin, "fulcrum_downstream_connections_parked", "").await
}

async fn parks(admin: std::net::SocketAddr) -> f64 {
    metric(admin, "fulcrum_downstream_parks_total", "").await
}

#[tokio::test]
async fn an_idle_keep_alive_connection_parks_and_resumes() {
    let (_b, _proxy, admin) = proxy_with_admin("").await;
    let addr = _proxy.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    get_ok(&mut s, "first request").await;
    eventually(Duration::from_secs(5), || async {
        parked(admin).await == 1.0
    })
    .await;
    assert_eq!(parks(admin).await, 1.0);

    // The next request on the same connection is served as before.
    get_ok(&mut s, "after parking").await;
    eventually(Duration::from_secs(5), || async {
        parks(admin).await == 2.0
    })
    .await;
    assert_eq!(parked(admin).await, 1.0);

    // A parked connection the client closes is gone from both gauges.
    drop(s);
    eventually(Duration::from_secs(5), || async {
        parked(admin).await == 0.0
            && metric(admin, "fulcrum_downstream_connections", "").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_connection_parks_after_a_first_request_served_by_hyper() {
    // The park timer is armed when a connection's first request ends
    // (before that, a connection that closes after one response never sets
    // it); a request with a body is hyper's, and its end arms it too.
    let (b, proxy, admin) = proxy_with_admin("").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let r = read_some(&mut s, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    eventually(Duration::from_secs(5), || async {
        parked(admin).await == 1.0
    })
    .await;
    get_ok(&mut s, "after parking").await;
    assert_eq!(b.uris(), ["/upload", "/"]);
}

#[tokio::test]
async fn a_request_read_ahead_before_parking_is_served_after() {
    let (b, proxy, admin) = proxy_with_admin("").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    // One request and the first half of the next, in one write: hyper reads
    // both, answers the first, and parks with the half in its buffer.
    s.write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nho")
        .await
        .unwrap();
    let r = read_some(&mut s, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    eventually(Duration::from_secs(5), || async {
        parks(admin).await >= 1.0
    })
    .await;
    s.write_all(b"st: x\r\n\r\n").await.unwrap();
    let r = read_some(&mut s, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert_eq!(b.uris(), ["/first", "/second"]);
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (_b, mut proxy, admin) = proxy_with_admin("shutdown_timeout = \"30s\"").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    get_ok(&mut s, "before shutdown").await;
    eventually(Duration::from_secs(5), || async {
        parked(admin).await == 1.0
    })
    .await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("drained well before shutdown_timeout")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(read_until_close(&mut s, Duration::from_secs(5)).await, "");
}

/// The admin API holds a client to `header_read_timeout` too (a head
/// trickled, nothing sent, or nothing more after an answer), and keeps at
/// most 64 connections: idle connections to it cannot take the process's
/// descriptors.
#[tokio::test]
async fn admin_connections_are_cut_off_and_capped() {
    let b = Backend::spawn("a").await;
    let config = config_for(&[b.addr], "header_read_timeout = \"300ms\"", "")
        .replace("[admin]\nbind = \"\"", "[admin]\nbind = \"127.0.0.1:0\"");
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin.expect("admin enabled");
    for (what, sent) in [
        (
            "a trickled head",
            &b"GET /metrics HTTP/1.1\r\nhost: a\r\n"[..],
        ),
        ("nothing", b""),
        (
            "a request, then nothing",
            b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n",
        ),
    ] {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(sent).await.unwrap();
        let started = Instant::now();
        let r = read_until_close(&mut s, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(4),
            "{what}: closed after {took:?}: {r:?}"
        );
    }
    // 64 held open: the 65th is closed at once, unanswered.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(admin).await.unwrap());
    }
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let r = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(r, "", "beyond the cap");
    // Once they are gone, the admin API answers again.
    drop(held);
    eventually(Duration::from_secs(5), || async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let r = read_until_close(&mut s, Duration::from_secs(5)).await;
        r.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
}
