//! The checks behind the fuzz targets (`fuzz/fuzz_targets/`), here so that
//! `cargo test` replays every corpus on stable (`tests/fuzz_corpus.rs`)
//! with the very checks the fuzzer ran. Each takes arbitrary bytes, must
//! not panic, and asserts what the parser it drives must always hold.

use std::convert::Infallible;

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;

use crate::headers::{ClientIp, Forwarding};
use crate::http1::chunk::{parse_size_line, write_size_line};
use crate::http1::fields::{Framing, request_framing};
use crate::http1::stream::{MAX_FIELDS, RequestStream};

/// The head limit the follower and hyper are given in these checks.
const LIMIT: usize = 16 * 1024;

/// The follower of a request stream, fed `data` whole and cut at a place
/// the data chooses: never panics, and decides the same either way.
pub fn request_stream(data: &[u8]) {
    let whole = follow(data, data.len().max(1));
    let cut = usize::from(data.first().copied().unwrap_or(1)).max(1);
    assert_eq!(whole, follow(data, cut), "cut into pieces of {cut}");
}

fn follow(data: &[u8], piece: usize) -> (Option<crate::http1::stream::Refused>, u64) {
    let mut stream = RequestStream::new(LIMIT);
    let mut refused = None;
    for chunk in data.chunks(piece) {
        refused = refused.or(stream.feed(chunk));
    }
    (refused, stream.messages())
}

/// A response head from an endpoint, read both ways fulcrum reads one
/// (`upstream::h1`); the first byte says whether it answers a HEAD.
pub fn response_head(data: &[u8]) {
    let Some((&first, head)) = data.split_first() else {
        return;
    };
    crate::upstream::check_response_head(head, first & 1 == 1);
}

/// A chunked response body through the endpoint client's decoder, whole
/// and in pieces, and through the request follower
/// (`upstream::h1::check_chunked_decoder`).
pub fn chunked_body(data: &[u8]) {
    crate::upstream::check_chunked_decoder(data);
}

/// A chunk-size line: never panics, and a size it reads is written and
/// read back the same.
pub fn chunk_line(data: &[u8]) {
    if let Ok(size) = parse_size_line(data)
        && let Ok(size) = usize::try_from(size)
    {
        let mut line = Vec::new();
        write_size_line(&mut line, size);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(parse_size_line(&line), Ok(size as u64));
    }
}

/// A request path as `http` parses one, put in normal form
/// (`crate::path`): never panics; the normal form starts with `/`, has no
/// `.` or `..` segment and no escaped unreserved character, is a valid
/// target, and normalizing it again changes nothing.
pub fn request_path(data: &[u8]) {
    let Ok(target) = http::uri::PathAndQuery::try_from(data) else {
        return;
    };
    let path = target.path();
    // The proxy refuses the rest before it normalizes (`proxy::request`).
    if !path.starts_with('/') || !path.is_ascii() {
        return;
    }
    let normal = match crate::path::normalize(path) {
        Err(_) => return assert!(path.contains('%'), "{path:?}"),
        Ok(None) => path.to_owned(),
        Ok(Some(normal)) => {
            assert_ne!(normal, path);
            assert_eq!(crate::path::normalize(&normal), Ok(None), "{path:?}");
            normal
        }
    };
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert!(
        normal.split('/').all(|s| s != "." && s != ".."),
        "{path:?} -> {normal:?}"
    );
    for escape in normal.split('%').skip(1) {
        let code = u8::from_str_radix(&escape[..2], 16).expect("two hex digits");
        assert!(
            !(code.is_ascii_alphanumeric() || b"-._~".contains(&code)),
            "{path:?} -> {normal:?}"
        );
    }
    assert!(http::uri::PathAndQuery::try_from(normal).is_ok());
}

/// The HTTP/2 frame watch over a client's bytes (after the preface): never
/// panics, and decides the same whole or in pieces.
pub fn h2_frames(data: &[u8]) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let stream = [PREFACE, data].concat();
    let mut whole = crate::listener::h2_guard::FrameWatch::new(LIMIT);
    let whole = whole.feed(&stream).map_err(|a| a.cause());
    let mut pieces = crate::listener::h2_guard::FrameWatch::new(LIMIT);
    let cut = usize::from(data.first().copied().unwrap_or(7)).max(1);
    let mut result = Ok(());
    for chunk in stream.chunks(cut) {
        result = pieces.feed(chunk).map_err(|a| a.cause());
        if result.is_err() {
            break;
        }
    }
    assert_eq!(whole, result);
}

/// The follower against hyper's HTTP/1 server on the same bytes: when the
/// follower refuses nothing and hyper ends without an error, both found
/// the same number of requests (they agree on where each message ends, so
/// no request hyper serves goes unjudged); hyper never serves more than
/// the follower counted.
pub fn follower_against_hyper(data: &[u8]) {
    let (refused, counted) = follow(data, data.len().max(1));
    if refused.is_some() {
        return;
    }
    let (served, clean) = hyper_serves(data);
    assert!(
        served <= counted,
        "hyper served {served}, follower counted {counted}"
    );
    if clean {
        assert_eq!(served, counted);
    }
}

/// How many requests hyper's HTTP/1 server hands to its service when a
/// client sends `data` and then closes; whether it ended without error.
fn hyper_serves(data: &[u8]) -> (u64, bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let clean = runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(LIMIT.max(8192))
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let drain = async move {
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let (result, ()) = tokio::join!(connection, drain);
        result.is_ok()
    });
    (served.load(Ordering::SeqCst), clean)
}

/// fulcrum's own server side against hyper's on the same head: a request
/// it takes as plain, hyper's HTTP/1 server reads with the same method,
/// target and fields (names and values, in order), and closes the
/// connection after the response exactly when fulcrum would
/// (`Connection: close`). Requests it does not take are hyper's anyway.
pub fn plain_against_hyper(data: &[u8]) {
    let Some((parts, close)) = crate::listener::h1_server::parse_plain(data) else {
        return;
    };
    // hyper is given this head alone: what follows is the next request's
    // (bytes hyper reads ahead may change its answer to this one: a
    // malformed next head makes it close after this response).
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let Ok(httparse::Status::Complete(len)) = httparse::Request::new(&mut fields).parse(data)
    else {
        panic!("fulcrum took a head httparse does not end");
    };
    let Some((seen, closed)) = hyper_reads(&data[..len]) else {
        panic!(
            "fulcrum took {:?} {} as plain; hyper refused it",
            parts.method, parts.uri
        );
    };
    assert_eq!(seen.method, parts.method);
    assert_eq!(seen.uri, parts.uri);
    let fields = |h: &HeaderMap| -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(fields(&seen.headers), fields(&parts.headers));
    assert_eq!(closed, close, "hyper closes after it: {closed}");
}

/// The first request hyper's HTTP/1 server reads from `data` (as a client
/// that keeps the connection open would send it), and whether hyper says
/// it closes the connection after the response; `None` if it reads none.
fn hyper_reads(data: &[u8]) -> Option<(http::request::Parts, bool)> {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let first = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&first);
    let answer = runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (parts, _) = request.into_parts();
                keep.lock().expect("unpoisoned").get_or_insert(parts);
                async move {
                    Ok::<_, Infallible>(http::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(LIMIT.max(8192))
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let _ = client.write_all(data).await;
        // The response to the first request, whatever follows it.
        let read = async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        };
        // The server runs beside the read (it ends on its own only when
        // it closes the connection).
        let server = tokio::spawn(connection);
        let limit = std::time::Duration::from_secs(5);
        let got = tokio::time::timeout(limit, read).await.unwrap_or_default();
        server.abort();
        got
    });
    let parts = first.lock().expect("unpoisoned").take()?;
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    Some((parts, head.contains("\r\nconnection: close\r\n")))
}

/// A request head fulcrum would forward (at most one Host), read as
/// fulcrum's own server side reads one, then
/// written for an endpoint by `Forwarding::write` and read again: the
/// written fields hold no framing field, exactly one Host, what
/// `Forwarding::apply` makes of them, and declare no body (the encoder
/// alone frames a body, from the parsed framing).
pub fn forwarding_round_trip(data: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else {
        return;
    };
    // More than one Host is refused before anything is forwarded
    // (`proxy::target_and_host`).
    let hosts = request
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"));
    if hosts.count() > 1 {
        return;
    }
    let mut headers = HeaderMap::new();
    for f in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            headers.append(name, value);
        }
    }
    let ip = ClientIp::new(std::net::IpAddr::from([10, 0, 0, 1]));
    let host = headers.get(http::header::HOST).cloned();
    let forwarding = Forwarding {
        client_ip: &ip,
        https: false,
        host: host.as_ref(),
        upgrade: crate::headers::is_upgrade_request(&headers),
    };
    let mut out = b"GET / HTTP/1.1\r\n".to_vec();
    forwarding.write(&headers, &mut out, "endpoint:80");
    out.extend_from_slice(b"\r\n");
    let mut again = [httparse::EMPTY_HEADER; MAX_FIELDS * 2];
    let mut reread = httparse::Request::new(&mut again);
    assert!(
        matches!(reread.parse(&out), Ok(httparse::Status::Complete(_))),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    let written: Vec<(&[u8], &[u8])> = reread
        .headers
        .iter()
        .map(|f| (f.name.as_bytes(), f.value))
        .collect();
    assert_eq!(
        request_framing(false, written.iter().copied()),
        Ok(Framing::None)
    );
    let hosts = written
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .count();
    assert_eq!(hosts, 1, "{:?}", String::from_utf8_lossy(&out));
    let mut applied = headers.clone();
    forwarding.apply(&mut applied);
    if !applied.contains_key(http::header::HOST) {
        applied.insert(http::header::HOST, HeaderValue::from_static("endpoint:80"));
    }
    let mut want: Vec<(String, Vec<u8>)> = applied
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let mut got: Vec<(String, Vec<u8>)> = written
        .iter()
        .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
