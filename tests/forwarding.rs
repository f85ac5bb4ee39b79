//! SPEC §Forwarding: headers, bodies both ways, HTTP/2, upgrades, trailers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn forwarded_headers_and_host() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let c = client();
    let req = Request::get(proxy.url("/x?y=1"))
        .header("host", "Site.Example:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&c, req).await;
    assert_eq!(status, 200);
    assert_eq!(body, "a");
    assert_eq!(headers["x-backend"], "a");
    let seen = b.last_seen();
    assert_eq!(seen.uri, "/x?y=1");
    assert_eq!(seen.headers["host"], "Site.Example:8080");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "Site.Example:8080");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    // A raw backend so the response can carry hop-by-hop headers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        seen_tx
            .send(String::from_utf8_lossy(&head).into_owned())
            .unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nx-end: kept\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        // The connection stays open.
        std::future::pending::<()>().await;
    });
    let config = format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{addr}\" }}]\n"
    );
    let proxy = Proxy::start(&config).await;
    let response = raw(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: x-secret, close\r\nx-secret: 1\r\nkeep-alive: 5\r\nproxy-connection: keep-alive\r\nte: gzip\r\nupgrade: foo\r\nx-visible: yes\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .to_ascii_lowercase();
    let upstream_head = seen_rx.await.unwrap().to_ascii_lowercase();
    assert!(upstream_head.contains("x-visible: yes"), "{upstream_head}");
    for gone in [
        "x-secret",
        "keep-alive: 5",
        "proxy-connection",
        "te: gzip",
        "upgrade: foo",
    ] {
        assert!(
            !upstream_head.contains(gone),
            "{gone} reached the endpoint: {upstream_head}"
        );
    }
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("x-end: kept"), "{response}");
    assert!(!response.contains("x-hop"), "{response}");
    assert!(!response.contains("keep-alive: timeout"), "{response}");
}

#[tokio::test]
async fn ten_megabytes_each_way_over_http1_and_http2() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let payload = Bytes::from(pattern(10 << 20));
    let digest = Sha256::digest(&payload);
    for c in [client(), h2_client()] {
        // Streamed in 64 KiB chunks, so the request is chunked over HTTP/1.1.
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, BoxError>> = payload
            .chunks(64 << 10)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )));
        let req = Request::post(proxy.url("/echo")).body(body).unwrap();
        let response = c.request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let echoed = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(echoed.len(), payload.len());
        assert_eq!(Sha256::digest(&echoed), digest);
    }
    let response = client()
        .request(
            Request::get(proxy.url("/big/10485760"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let downloaded = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(Sha256::digest(&downloaded), digest);
}

#[tokio::test]
async fn head_requests_and_expect_continue() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let head = raw(
        proxy.addr(),
        b"HEAD /big/1000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1000"),
        "{head}"
    );
    assert!(
        head.ends_with("\r\n\r\n"),
        "HEAD response has no body: {head:?}"
    );

    // Expect: 100-continue: fulcrum sends 100 before the body is read.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut s, &mut first),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 100"));
    s.write_all(b"hello").await.unwrap();
    let rest = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(rest.contains("200 OK") && rest.ends_with("hello"), "{rest}");
    assert!(!b.last_seen().headers.contains_key("expect"));
}

#[tokio::test]
async fn chunked_request_body_is_streamed() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let response = raw(
        proxy.addr(),
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The echo comes back chunked: "5\r\nhello\r\n6\r\n world\r\n" or merged.
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let text: String = body
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(text, "hello world", "{response}");
}

#[tokio::test]
async fn http2_on_both_sides_with_trailers() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "protocol = \"http2\"")).await;
    let c = h2_client();
    let req = Request::get(proxy.url("/trailers"))
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let response = c.request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers passed through");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(collected.to_bytes(), "with trailers");
    let seen = b.last_seen();
    assert_eq!(seen.version, http::Version::HTTP_2);
    // The :authority the client used reaches the endpoint as Host.
    assert_eq!(seen.headers["host"], proxy.addr().to_string());
}

#[tokio::test]
async fn http2_client_to_http1_endpoint() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let (status, _, body) = get(&h2_client(), &proxy.url("/")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    let seen = b.last_seen();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.headers["host"], proxy.addr().to_string());
    assert_eq!(seen.headers["x-forwarded-host"], proxy.addr().to_string());

    // Cookies an HTTP/2 client split into fields reach HTTP/1.1 as one
    // (RFC 9113 section 8.2.3).
    let request = Request::get(proxy.url("/"))
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .body(empty())
        .unwrap();
    assert_eq!(send(&h2_client(), request).await.0, 200);
    let cookies: Vec<_> = b
        .last_seen()
        .headers
        .get_all("cookie")
        .iter()
        .cloned()
        .collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr()))
        .await
        .expect("websocket handshake through fulcrum");
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        let msg = format!("ping {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), msg);
    }
}

/// An `Upgrade: h2c` is not passed through: an endpoint that took the
/// connection over as HTTP/2 would get every later request on it unrouted.
/// The request goes up as a plain one; a 101 to it would be invalid.
#[tokio::test]
async fn an_h2c_upgrade_goes_up_as_a_plain_request() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_backend(move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            loop {
                let head = read_head(&mut s).await.to_ascii_lowercase();
                if head.is_empty() {
                    return;
                }
                let reply: &[u8] = if head.contains("upgrade") {
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                seen_tx.send(head).unwrap();
                let _ = s.write_all(reply).await;
            }
        }
    })
    .await;
    let proxy = Proxy::start(&config_for(&[addr], "", "")).await;
    for upgrade in ["h2c", "H2C, websocket", "websocket, h2c/2"] {
        let request = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings, close\r\n\
upgrade: {upgrade}\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        let response = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{upgrade}: {response}"
        );
        let head = seen_rx.recv().await.unwrap();
        for gone in ["upgrade", "http2-settings"] {
            assert!(!head.contains(gone), "{upgrade}: {gone} went up: {head}");
        }
    }
}

#[tokio::test]
async fn websocket_bytes_sent_with_the_handshake_are_not_lost() {
    // The client sends its first frame in the same write as the upgrade
    // request: fulcrum has read it with the head, and must hand it on.
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut bytes = b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    // A masked text frame "hello" (RFC 6455 section 5.3).
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"hello".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    s.write_all(&bytes).await.unwrap();
    // The 101 head, then the echo (unmasked), perhaps in the same read.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let echo_at = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= end + 4 + 7
        {
            break end + 4;
        }
        let read = tokio::io::AsyncReadExt::read(&mut s, &mut buf);
        let n = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("101 and echo within 5 s")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let echoed = &got[echo_at..];
    assert_eq!(&echoed[..7], b"\x81\x05hello");
}

#[tokio::test]
async fn connections_to_endpoints_are_kept_alive() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &proxy.url("/")).await.0, 200);
    }
    assert_eq!(b.hits(), 20);
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pool_max_idle_zero_keeps_no_idle_connection() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "pool_max_idle = 0")).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/")).await.0, 200);
    }
    // Nothing is pooled: every request opened its own connection.
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// An endpoint that answers keep-alive requests on each connection until
/// fulcrum closes it (or after `per_connection` answers, if set, closing
/// with `Connection: close`); counts the connections it saw end.
async fn counting_endpoint(
    per_connection: Option<usize>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let ended = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ended);
    let addr = raw_backend(move |mut s| {
        let ended = Arc::clone(&counter);
        async move {
            let mut answered = 0;
            while !read_head(&mut s).await.is_empty() {
                answered += 1;
                let last = per_connection == Some(answered);
                let close = if last { "connection: close\r\n" } else { "" };
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{close}\r\nok");
                if s.write_all(reply.as_bytes()).await.is_err() || last {
                    break;
                }
            }
            ended.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (addr, ended)
}

#[tokio::test]
async fn pooled_connections_close_after_pool_idle_timeout() {
    let (addr, ended) = counting_endpoint(None).await;
    let proxy = Proxy::start(&config_for(&[addr], "", "pool_idle_timeout = \"300ms\"")).await;
    assert_eq!(get(&client(), &proxy.url("/")).await.0, 200);
    eventually(Duration::from_secs(5), || async {
        ended.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn connections_the_endpoint_closes_are_not_reused() {
    // Every connection serves two requests and then closes: without retries,
    // no request may land on a closed connection.
    let (addr, ended) = counting_endpoint(Some(2)).await;
    let proxy = Proxy::start(&config_for(&[addr], "", "retries = 0")).await;
    let c = client();
    for i in 0..10 {
        assert_eq!(get(&c, &proxy.url("/")).await.0, 200, "request {i}");
    }
    eventually(Duration::from_secs(5), || async {
        ended.load(Ordering::SeqCst) == 5
    })
    .await;
}
