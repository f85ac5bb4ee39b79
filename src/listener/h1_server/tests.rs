//! The server side's unit tests: heads found, parsed and written as hyper
//! would.

use super::output::{Output, SHARE_FROM};
use super::request::{NotPlain, head_may_end, parse};
use super::response::{Head, WriteFraming, finish, write_data};
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};

use super::*;

#[test]
fn the_end_of_a_head_is_found_however_it_arrives() {
    let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    // Byte by byte, each search starting where the last one stopped:
    // the end shows only with the last byte.
    let mut searched = 0;
    for n in 1..=head.len() {
        let found = head_may_end(&head[..n], searched);
        assert_eq!(found, n == head.len(), "after {n} bytes");
        searched = n;
    }
    assert!(head_may_end(b"GET / HTTP/1.1\nhost: x\n\n", 0));
    assert!(head_may_end(b"GET / HTTP/1.1\r\nhost: x\n\r\n", 20));
    assert!(!head_may_end(b"GET / HTTP/1.1\r\nhost: x\r\n", 0));
}

/// The head `response` is written with, whether its body is sent, and
/// whether the connection closes after it.
fn encoded(
    head_request: bool,
    closing: bool,
    response: Response<ResponseBody>,
) -> (String, bool, bool) {
    let mut out = Vec::new();
    let (body, _, last) = Head {
        head_request,
        closing,
    }
    .encode(response, &mut out)
    .expect("a head hyper would write");
    (String::from_utf8(out).unwrap(), body.is_some(), last)
}

fn full(status: u16, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

#[test]
fn heads_are_written_as_hyper_writes_them() {
    let (head, sent, last) = encoded(false, false, full(200, "hello"));
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
        "{head:?}"
    );
    assert!(head.ends_with(" GMT\r\n\r\n"), "{head:?}");
    assert!(sent && !last);

    // HEAD: the length the body would have, no body.
    let (head, sent, last) = encoded(true, false, full(200, "hello"));
    assert!(head.contains("content-length: 5\r\n"), "{head:?}");
    assert!(!sent && !last);

    // An interim status as the final answer: hyper's 500, and the end.
    let (head, sent, last) = encoded(false, false, full(103, ""));
    assert!(
        head.starts_with("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: "),
        "{head:?}"
    );
    assert!(!sent && last);

    // Draining: close joins the response's own Connection options.
    let mut response = full(404, "");
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    let (head, _, last) = encoded(false, true, response);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head:?}");
    assert!(
        head.contains("connection: keep-alive, close\r\n"),
        "{head:?}"
    );
    assert!(head.contains("content-length: 0\r\n"), "{head:?}");
    assert!(last);

    // Closing, no field of its own (or its fields as lines): `connection:
    // close` first, where hyper's map would put it.
    let (head, sent, last) = encoded(false, true, full(200, "hello"));
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\ndate: "),
        "{head:?}"
    );
    assert!(sent && last);
}

#[test]
fn only_plain_requests_are_parsed_here() {
    let parts = |head: &str| {
        let mut buf = BytesMut::from(head.as_bytes());
        parse(&mut buf).map(|p| {
            p.map(|p| {
                let (parts, close) = (p.parts, p.close);
                (parts.method, parts.uri, parts.headers.len(), close)
            })
        })
    };
    let (method, uri, fields, close) =
        parts("GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n")
            .ok()
            .flatten()
            .expect("plain");
    assert_eq!(
        (method, uri.to_string(), fields, close),
        (Method::GET, "/a?b".into(), 2, false)
    );
    // `Connection: close` is plain too, and says the connection closes.
    let (.., close) = parts("GET / HTTP/1.1\r\nhost: x\r\nConnection: Close\r\n\r\n")
        .ok()
        .flatten()
        .expect("plain");
    assert!(close);
    assert!(matches!(parts("GET / HTTP/1.1\r\nhost: x\r\n"), Ok(None)));
    for other in [
        "GET / HTTP/1.0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx",
        "POST / HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: close, te\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: x-secret\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nhost : x\r\n\r\n",
    ] {
        assert!(matches!(parts(other), Err(NotPlain)), "{other:?}");
    }
    // What is not parsed here stays in the buffer, for hyper.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\n\r\n"[..]);
    assert!(parse(&mut buf).is_err());
    assert_eq!(&buf[..], b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn body_data_is_framed_as_hyper_frames_it() {
    // Chunked: the size in upper-case hex, as hyper writes it; a large
    // frame is queued, not copied, and framed the same.
    let large = Bytes::from(vec![b'z'; SHARE_FROM]);
    let mut out = Output::default();
    let mut framing = WriteFraming::Chunked;
    write_data(
        &mut framing,
        Bytes::from_static(b"abcdefghijklmnopqrstuvwxyz"),
        &mut out,
    );
    write_data(&mut framing, Bytes::new(), &mut out);
    write_data(&mut framing, large.clone(), &mut out);
    write_data(&mut framing, Bytes::from_static(b"abc"), &mut out);
    assert!(!finish(&mut framing, &mut out));
    let mut expected = b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n".to_vec();
    expected.extend_from_slice(format!("{SHARE_FROM:X}\r\n").as_bytes());
    expected.extend_from_slice(&large);
    expected.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(out.pending(), expected);

    // A length: nothing beyond it; short of it, the connection closes.
    let mut out = Output::default();
    let mut framing = WriteFraming::Length(5);
    write_data(&mut framing, Bytes::from_static(b"abc"), &mut out);
    assert!(finish(&mut framing, &mut out));
    write_data(&mut framing, Bytes::from_static(b"defgh"), &mut out);
    assert!(!finish(&mut framing, &mut out));
    assert_eq!(out.pending(), b"abcde");

    // A large frame beyond the length is cut, not copied.
    let mut out = Output::default();
    let mut framing = WriteFraming::Length(SHARE_FROM as u64 + 1);
    write_data(
        &mut framing,
        Bytes::from(vec![b'y'; SHARE_FROM * 2]),
        &mut out,
    );
    assert!(!finish(&mut framing, &mut out));
    assert_eq!(out.pending(), vec![b'y'; SHARE_FROM + 1]);
}
