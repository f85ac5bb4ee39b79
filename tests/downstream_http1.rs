//! The client side of HTTP/1.1 as fulcrum serves it itself (plain requests)
//! and through hyper (the rest), seen on the wire: pipelining across the
//! hand-off, response framing, a client that leaves, the drain.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// Reads HTTP/1.1 responses off one client connection.
struct Responses {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One response as it came: the head's lines (status line first) and the
/// body, de-chunked when it was chunked.
#[derive(Debug)]
struct Answer {
    lines: Vec<String>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> &str {
        &self.lines[0]
    }

    /// The values of field `name` (written lowercase), in order.
    fn fields(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}: ");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    fn body(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

impl Responses {
    /// A new client connection to `proxy`.
    async fn connect(proxy: &Proxy) -> Self {
        Self {
            stream: TcpStream::connect(proxy.addr()).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// More bytes, within WAIT; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("response within the wait")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..at].to_vec()).unwrap();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill().await, "the connection ended within a line");
        }
    }

    async fn exactly(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the connection ended within a body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response; `head`: it answers a HEAD request (no body).
    async fn next(&mut self, head: bool) -> Answer {
        let mut lines = vec![self.line().await];
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let mut answer = Answer {
            lines,
            body: Vec::new(),
        };
        let status: u16 = answer.status()[9..12].parse().unwrap();
        if head || status == 204 || status == 304 {
            return answer;
        }
        if answer.fields("transfer-encoding") == ["chunked"] {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).unwrap();
                let data = self.exactly(size).await;
                assert_eq!(self.line().await, "");
                if size == 0 {
                    break;
                }
                answer.body.extend_from_slice(&data);
            }
        } else {
            let length = answer.fields("content-length");
            assert_eq!(length.len(), 1, "{answer:?}");
            answer.body = self.exactly(length[0].parse().unwrap()).await;
        }
        answer
    }

    /// Whether the server closed the connection (nothing more came).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

#[tokio::test]
async fn pipelined_requests_cross_the_hand_off_to_hyper_and_back() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let mut r = Responses::connect(&proxy).await;
    // A plain request, one with a body (hyper's), a plain one: one write.
    r.send(
        b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n\
              POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              GET /three HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    for body in ["a", "5", "a"] {
        let answer = r.next(false).await;
        assert_eq!((answer.status(), answer.body()), ("HTTP/1.1 200 OK", body));
    }
    r.send(b"GET /four HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(r.next(false).await.body(), "a");
    assert_eq!(b.uris(), ["/one", "/consume", "/three", "/four"]);
}

/// An endpoint answering by path, keep-alive: `/length`, `/chunked`,
/// `/to-close` (no length: the body ends with its connection), `/none`
/// (204), `/dated` (with its own Date).
async fn framing_endpoint() -> std::net::SocketAddr {
    raw_backend(|mut s: TcpStream| async move {
        loop {
            let head = read_head(&mut s).await;
            let Some(path) = head.split(' ').nth(1) else {
                return;
            };
            let reply: &[u8] = match path {
                "/length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Custom: v\r\n\r\nhello",
                "/chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                }
                "/to-close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
                "/none" => b"HTTP/1.1 204 No Content\r\n\r\n",
                "/dated" => {
                    b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 1\r\n\r\nd"
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            };
            if s.write_all(reply).await.is_err() || path == "/to-close" {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn responses_are_framed_as_hyper_frames_them() {
    let endpoint = framing_endpoint().await;
    let proxy = Proxy::start(&config_for(&[endpoint], "", "")).await;
    let mut r = Responses::connect(&proxy).await;
    let mut ask = async |method: &str, path: &str| {
        let request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        r.send(request.as_bytes()).await;
        r.next(method == "HEAD").await
    };

    let a = ask("GET", "/length").await;
    assert_eq!(a.status(), "HTTP/1.1 200 OK");
    assert_eq!((a.fields("content-length"), a.body()), (vec!["5"], "hello"));
    assert_eq!(a.fields("x-custom"), ["v"], "names lowercase: {a:?}");
    assert_eq!(a.fields("date").len(), 1, "{a:?}");

    let a = ask("HEAD", "/length").await;
    assert_eq!(a.fields("content-length"), ["5"], "{a:?}");

    let a = ask("GET", "/chunked").await;
    assert_eq!(a.fields("transfer-encoding"), ["chunked"], "{a:?}");
    assert_eq!(a.body(), "hello world");

    // No length from the endpoint: chunked to the client, and the client's
    // connection stays open.
    let a = ask("GET", "/to-close").await;
    assert_eq!(a.fields("transfer-encoding"), ["chunked"], "{a:?}");
    assert_eq!(a.fields("connection"), Vec::<&str>::new(), "{a:?}");
    assert_eq!(a.body(), "until the end");

    let a = ask("GET", "/none").await;
    assert_eq!(a.status(), "HTTP/1.1 204 No Content");
    assert!(a.fields("content-length").is_empty(), "{a:?}");

    let a = ask("GET", "/dated").await;
    assert_eq!(a.fields("date"), ["Mon, 01 Jan 2024 00:00:00 GMT"], "{a:?}");
    assert_eq!(a.body(), "d");

    // fulcrum's own answers are framed the same way.
    let a = ask("GET", "/missing").await;
    assert_eq!(a.status(), "HTTP/1.1 404 Not Found");
    assert_eq!(a.fields("content-length"), ["0"], "{a:?}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_ends_it_at_the_endpoint() {
    let (got, mut got_rx) = mpsc::unbounded_channel();
    let (ended, mut ended_rx) = mpsc::unbounded_channel();
    let endpoint = raw_backend(move |mut s: TcpStream| {
        let (got, ended) = (got.clone(), ended.clone());
        async move {
            read_head(&mut s).await;
            let _ = got.send(());
            // Never answers; waits for fulcrum to let go.
            let mut rest = [0u8; 64];
            while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
            let _ = ended.send(());
        }
    })
    .await;
    let proxy = Proxy::start(&config_for(&[endpoint], "", "")).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(WAIT, got_rx.recv())
        .await
        .expect("the request reached the endpoint");
    drop(client);
    tokio::time::timeout(WAIT, ended_rx.recv())
        .await
        .expect("the endpoint connection was closed once the client left");
}

#[tokio::test]
async fn the_response_in_flight_at_a_drain_says_connection_close() {
    let b = Backend::spawn("a").await;
    let mut proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let mut r = Responses::connect(&proxy).await;
    r.send(b"GET /delay/300 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    eventually(WAIT, || async { b.hits() == 1 }).await;
    let drained = proxy.shutdown();
    let a = r.next(false).await;
    assert_eq!((a.status(), a.body()), ("HTTP/1.1 200 OK", "a"));
    assert_eq!(a.fields("connection"), ["close"], "{a:?}");
    assert!(r.closed().await, "the connection closes after it");
    tokio::time::timeout(WAIT, drained).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_length_conflict_after_a_plain_request_is_still_400() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    let mut r = Responses::connect(&proxy).await;
    r.send(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(r.next(false).await.body(), "a");
    r.send(
        b"POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\
              transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    let a = r.next(false).await;
    assert_eq!(a.status(), "HTTP/1.1 400 Bad Request", "{a:?}");
    assert_eq!(b.hits(), 1, "the conflicting request reached nobody");
}

#[tokio::test]
async fn connection_close_is_answered_then_the_connection_closes() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    // After a keep-alive request, on fulcrum's own side (plain) and through
    // hyper (a body), and first on a fresh connection: the same answer.
    for before in [
        &b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"POST /consume HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx",
        b"",
    ] {
        let mut r = Responses::connect(&proxy).await;
        if !before.is_empty() {
            r.send(before).await;
            assert_eq!(r.next(false).await.status(), "HTTP/1.1 200 OK");
        }
        // A request pipelined behind the one that closes is not answered.
        r.send(
            b"GET /last HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n\
              GET /never HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        let a = r.next(false).await;
        assert_eq!((a.status(), a.body()), ("HTTP/1.1 200 OK", "a"), "{a:?}");
        assert_eq!(a.fields("connection"), ["close"], "{a:?}");
        assert!(r.closed().await, "the connection closes after it");
    }
    assert!(!b.uris().iter().any(|u| u == "/never"), "{:?}", b.uris());
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_back_the_endpoint_and_loses_nothing() {
    const BODY: usize = 48 << 20;
    const PIECE: usize = 64 << 10;
    let written = Arc::new(AtomicUsize::new(0));
    let sent = written.clone();
    let endpoint = raw_backend(move |mut s: TcpStream| {
        let sent = sent.clone();
        async move {
            read_head(&mut s).await;
            // Small, so that what stands between the endpoint and the
            // client is mostly fulcrum's.
            socket2::SockRef::from(&s)
                .set_send_buffer_size(PIECE)
                .unwrap();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let mut piece = vec![0u8; PIECE];
            for at in (0..BODY).step_by(PIECE) {
                for (k, b) in piece.iter_mut().enumerate() {
                    *b = pattern_byte(at + k);
                }
                if s.write_all(&piece).await.is_err() {
                    return;
                }
                sent.fetch_add(PIECE, Ordering::Relaxed);
            }
        }
    })
    .await;
    let proxy = Proxy::start(&config_for(&[endpoint], "", "")).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let mut client = socket.connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /large HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: once the buffers between it and the
    // endpoint are full, the endpoint's writes wait. Whatever fulcrum
    // holds is bounded, far below the body (fulcrum's socket buffers,
    // sized by the kernel, hold most of it). A blocked write sends no
    // signal: the endpoint has stalled when its count stands still for
    // 200 ms.
    let mut last = usize::MAX;
    let stalled = eventually(WAIT * 2, || {
        let now = written.load(Ordering::Relaxed);
        let before = std::mem::replace(&mut last, now);
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (now > 0 && now == before).then_some(now)
        }
    })
    .await;
    assert!(
        stalled < BODY / 2,
        "the endpoint wrote {stalled} of {BODY} bytes to a client reading nothing"
    );
    // Then every byte arrives, in order.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut buf = vec![0u8; PIECE];
    let mut at = 0;
    while at < BODY {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .expect("the body keeps coming")
            .unwrap();
        assert!(n > 0, "the body ended at {at} of {BODY} bytes");
        for (k, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern_byte(at + k), "byte {}", at + k);
        }
        at += n;
    }
    assert_eq!(at, BODY);
}
