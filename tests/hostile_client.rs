//! Request smuggling and malformed input over raw sockets: each gets the
//! status (or close) SPEC requires, and the endpoint sees nothing it should
//! not.

mod support;

use std::time::Duration;

use support::*;

/// Sends `request` raw; returns the first response line ("" if the
/// connection closed without one) and the whole response.
async fn send_raw(proxy: &Proxy, request: &[u8]) -> (String, String) {
    let response = raw(proxy.addr(), request, Duration::from_secs(5)).await;
    (response.lines().next().unwrap_or("").to_string(), response)
}

async fn setup() -> (Backend, Proxy) {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&simple_config(&[&b], "")).await;
    (b, proxy)
}

/// Every request in `cases` is refused with a 4xx (or a close) and reaches
/// no endpoint.
async fn refused(cases: &[(&str, &[u8])]) {
    let (b, proxy) = setup().await;
    for (what, request) in cases {
        let (line, response) = send_raw(&proxy, request).await;
        assert!(
            line.is_empty() || line.starts_with("HTTP/1.1 4"),
            "{what}: answered {line:?}\n{response}"
        );
        assert!(
            !response.contains("\r\n\r\nb"),
            "{what}: the endpoint answered"
        );
        assert_eq!(b.hits(), 0, "{what}: reached the endpoint");
    }
}

#[tokio::test]
async fn content_length_and_transfer_encoding_together_are_refused() {
    let (b, proxy) = setup().await;
    for request in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGPOST / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 6\r\n\r\n0\r\n\r\nGPOST / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\nContent-Length: 6\r\nTRANSFER-ENCODING: Chunked\r\n\r\n0\r\n\r\nG",
    ] {
        let (line, response) = send_raw(&proxy, request).await;
        assert!(line.starts_with("HTTP/1.1 400"), "{response}");
        // One answer and a close: the smuggled "GPOST" is never parsed.
        assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
        assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn conflicting_or_hidden_lengths_are_refused() {
    refused(&[
        (
            "two different content-lengths",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        ),
        (
            "content-length list",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 6\r\n\r\nhello!",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding with space before the colon",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "negative content-length",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        ),
        (
            "content-length with a sign",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
        ),
    ])
    .await;
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    let long_line = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(200_000));
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n");
    refused(&[
        (
            "whitespace before a colon",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a : 1\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n  continued\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n",
        ),
        (
            "control byte in a header value",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: a\x01b\r\n\r\n",
        ),
        (
            "space in a header name",
            b"GET / HTTP/1.1\r\nhost: x\r\nx a: 1\r\n\r\n",
        ),
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("bad version", b"GET / HTTP/9.9\r\nhost: x\r\n\r\n"),
        ("oversized request line", long_line.as_bytes()),
        ("too many headers", many_headers.as_bytes()),
        ("two hosts", b"GET / HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n"),
    ])
    .await;
}

#[tokio::test]
async fn invalid_chunked_bodies_never_become_a_second_request() {
    let (b, proxy) = setup().await;
    for (what, request) in [
        ("invalid chunk size", &b"POST /consume HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..]),
        ("chunk size overflow", b"POST /consume HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk shorter than declared, then a request", b"POST /consume HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n10\r\nshort\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"),
    ] {
        let (line, response) = send_raw(&proxy, request).await;
        assert!(!line.starts_with("HTTP/1.1 2"), "{what}: {response}");
        let seen = b.uris();
        assert!(!seen.iter().any(|u| u.contains("smuggled")), "{what}: {seen:?}");
    }
    // hyper skips chunk extensions without checking their bytes; fulcrum
    // holds them to RFC 9112's grammar (http1::chunk): a control byte in one
    // is a malformed body, and the request is refused (its endpoint
    // connection, if the head went out, is closed, never reused).
    let (line, response) = send_raw(
        &proxy,
        b"POST /ext HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5;\x01ext\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("invalid chunked framing"), "{response}");
}

#[tokio::test]
async fn bare_lf_line_endings_make_one_clean_request_or_none() {
    let (b, proxy) = setup().await;
    let (line, response) =
        send_raw(&proxy, b"GET /lf HTTP/1.1\nhost: x\nconnection: close\n\n").await;
    // Either refused, or read as exactly the one request it is; what the
    // endpoint gets is re-serialized with CRLF, so it cannot read it otherwise.
    if line.starts_with("HTTP/1.1 200") {
        assert_eq!(b.hits(), 1, "{response}");
        assert_eq!(b.last_seen().uri, "/lf");
    } else {
        assert!(
            line.is_empty() || line.starts_with("HTTP/1.1 400"),
            "{response}"
        );
        assert_eq!(b.hits(), 0);
    }
}

#[tokio::test]
async fn fulcrum_is_not_an_open_proxy() {
    let (b, proxy) = setup().await;
    // An absolute-form target for a foreign host, agreeing with Host: routed
    // by fulcrum's own table to its own endpoint, sent in origin-form.
    let (line, _) = send_raw(&proxy, b"GET http://evil.example/steal?x=1 HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n").await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let seen = b.last_seen();
    assert_eq!(seen.uri, "/steal?x=1");
    assert_eq!(seen.headers["host"], "evil.example");
    // A Host that disagrees with the absolute-form authority is ambiguous.
    let (line, response) = send_raw(
        &proxy,
        b"GET http://evil.example/ HTTP/1.1\r\nhost: good.example\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("Host disagrees with the request target"),
        "{response}"
    );
    assert_eq!(b.hits(), 1);
    // CONNECT is refused, not tunnelled, not forwarded.
    let (line, response) = send_raw(
        &proxy,
        b"CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(b.hits(), 1);
}
