//! What an endpoint may send over HTTP/1.1, and how fulcrum reads it
//! (`upstream/h1.rs`): chunked bodies with extensions and trailers, bodies
//! that end with the connection, interim responses, HTTP/1.0, framing
//! conflicts, early responses to uploads, and connections the endpoint
//! closed while they were pooled. Each endpoint here is scripted byte by
//! byte and counts the connections it was given, which shows whether
//! fulcrum reused one.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the scripted endpoint does after reading a request head.
enum Reply {
    /// Write these bytes and wait for the next request.
    Keep(&'static [u8]),
    /// Write these bytes and close the connection.
    Close(&'static [u8]),
    /// Write these bytes, then neither read nor close for a while.
    Hold(&'static [u8]),
}

/// An endpoint answering each request head with `answer(head)`; counts the
/// connections it accepted.
async fn endpoint(answer: fn(&str) -> Reply) -> (SocketAddr, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let addr = raw_backend(move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                match answer(&head) {
                    Reply::Keep(bytes) => {
                        if s.write_all(bytes).await.is_err() {
                            return;
                        }
                    }
                    Reply::Close(bytes) => {
                        let _ = s.write_all(bytes).await;
                        return;
                    }
                    Reply::Hold(bytes) => {
                        let _ = s.write_all(bytes).await;
                        // The connection stays open, nothing more comes.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    })
    .await;
    (addr, connections)
}

fn proxy_config(addr: SocketAddr) -> String {
    config_for(&[addr], "", "retries = 0\nresponse_timeout = \"5s\"")
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
    let (addr, connections) = endpoint(|_| {
        Reply::Keep(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n",
        )
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    for _ in 0..2 {
        let (status, headers, body) = get(&c, &proxy.url("/")).await;
        assert_eq!(status, 200);
        assert_eq!(body, "hello, world");
        assert!(headers.get("content-length").is_none());
    }
    // The trailers reach a client that can take them (HTTP/2).
    let response = h2_client()
        .request(Request::get(proxy.url("/")).body(empty()).unwrap())
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello, world");
    // One connection: each body's end was found exactly.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_without_length_ends_with_the_connection() {
    let (addr, connections) = endpoint(|_| {
        Reply::Close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    for _ in 0..2 {
        let (status, _, body) = get(&c, &proxy.url("/")).await;
        assert_eq!(status, 200);
        assert_eq!(body, "until the end");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn early_hints_are_forwarded_and_100_is_dropped() {
    let (addr, connections) = endpoint(|_| {
        Reply::Keep(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nKeep-Alive: 5\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    // A client reads the 103 (its hop-by-hop fields left out), then the 200;
    // the 100 answered an expectation fulcrum did not send on.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while !bytes.ends_with(b"\r\n\r\nok") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the response within the bound");
    let response = String::from_utf8_lossy(&bytes);
    assert!(
        response.starts_with(
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    // An HTTP client that skips interim responses gets the 200 alone.
    let c = client();
    let (status, _, body) = get(&c, &proxy.url("/")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    // Where hyper writes the response (a request with a body) or the
    // client speaks HTTP/1.0, no interim response is sent.
    for request in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\na"[..],
        b"GET / HTTP/1.0\r\nhost: x\r\n\r\n",
    ] {
        let response = raw(proxy.addr(), request, Duration::from_secs(5)).await;
        assert!(
            response.starts_with("HTTP/1.") && response.contains(" 200 OK"),
            "{response}"
        );
        assert!(!response.contains("103"), "{response}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http10_responses_close_unless_kept_alive() {
    let (addr, connections) =
        endpoint(|_| Reply::Keep(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(get(&c, &proxy.url("/")).await.2, "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    let (addr, connections) = endpoint(|_| {
        Reply::Keep(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok")
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    for _ in 0..2 {
        assert_eq!(get(&c, &proxy.url("/")).await.2, "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn heads_and_bodiless_statuses_have_no_body() {
    let (addr, connections) = endpoint(|head| {
        if head.starts_with("HEAD") {
            Reply::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        } else if head.starts_with("GET /nothing") {
            Reply::Keep(b"HTTP/1.1 204 No Content\r\n\r\n")
        } else if head.starts_with("GET /same") {
            Reply::Keep(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n")
        } else {
            Reply::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        }
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    let head = send(&c, Request::head(proxy.url("/")).body(empty()).unwrap()).await;
    assert_eq!((head.0.as_u16(), head.2.as_str()), (200, ""));
    assert_eq!(head.1["content-length"], "5");
    assert_eq!(get(&c, &proxy.url("/nothing")).await.0, 204);
    assert_eq!(get(&c, &proxy.url("/same")).await.0, 304);
    assert_eq!(get(&c, &proxy.url("/")).await.2, "hello");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn framing_the_endpoint_gets_wrong_is_502() {
    for reply in [
        // Two lengths that disagree.
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!" as &[u8],
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello",
        // Not HTTP.
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        // A 101 to a request that asked for no upgrade.
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
    ] {
        let reply: &'static [u8] = reply;
        let addr = raw_backend(move |mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(reply).await;
        })
        .await;
        let proxy = Proxy::start(&proxy_config(addr)).await;
        let (status, _, body) = get(&client(), &proxy.url("/")).await;
        assert_eq!(status, 502, "{}: {body}", String::from_utf8_lossy(reply));
    }
}

#[tokio::test]
async fn too_many_response_headers_is_502() {
    let addr = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        let mut reply = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
        for i in 0..150 {
            reply.push_str(&format!("x-h{i}: v\r\n"));
        }
        reply.push_str("\r\n");
        let _ = s.write_all(reply.as_bytes()).await;
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    assert_eq!(get(&client(), &proxy.url("/")).await.0, 502);
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length() {
    let (addr, connections) = endpoint(|_| {
        Reply::Keep(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
        )
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    let (status, headers, body) = get(&c, &proxy.url("/")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    assert!(headers.get("content-length").is_none());
    // A message framed two ways is not trusted to have left the
    // connection clean.
    assert_eq!(get(&c, &proxy.url("/")).await.2, "ok");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_early_response_to_an_upload_is_passed_on() {
    // The endpoint answers as soon as it has the head and reads no body: the
    // client gets the answer although its upload cannot finish.
    let (addr, _) = endpoint(|_| {
        Reply::Hold(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\n\r\ntoo large")
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let size = 16 << 20;
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (mut reader, mut writer) = s.into_split();
    // Sends until the proxy stops taking bytes; the answer comes meanwhile.
    let upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < size {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains("too large") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(complete.is_ok(), "no answer within 10 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too large"), "{answer}");
    upload.abort();
}

#[tokio::test]
async fn a_pooled_connection_the_endpoint_closed_is_not_used() {
    // The endpoint closes each connection 100 ms after its response, without
    // saying so; a request after that must get a new connection, not a
    // failure (retries are off).
    let closed = Arc::new(AtomicUsize::new(0));
    let closes = Arc::clone(&closed);
    let addr = raw_backend(move |mut s| {
        let closes = Arc::clone(&closes);
        async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
            closes.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let proxy = Proxy::start(&proxy_config(addr)).await;
    let c = client();
    for round in 1..=3 {
        assert_eq!(get(&c, &proxy.url("/")).await.2, "ok", "round {round}");
        eventually(Duration::from_secs(5), || async {
            closed.load(Ordering::SeqCst) == round
        })
        .await;
    }
}

/// Bursts of concurrency above `pool_max_idle` reuse the connections the
/// last burst opened: the idle cap follows recent demand, so a pool does
/// not close connections at the end of one burst only to open them again
/// at the next.
#[tokio::test]
async fn bursts_above_pool_max_idle_do_not_churn_connections() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "pool_max_idle = 2")).await;
    let burst = || async {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let url = proxy.url("/delay/50");
                tokio::spawn(async move { get(&client(), &url).await.0 })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    };
    burst().await;
    let opened = b.connections.load(Ordering::SeqCst);
    assert!((2..=20).contains(&opened), "first burst opened {opened}");
    for _ in 0..3 {
        burst().await;
    }
    let later = b.connections.load(Ordering::SeqCst) - opened;
    assert!(
        later <= 2,
        "three more bursts of 20 opened {later} more connections"
    );
}
