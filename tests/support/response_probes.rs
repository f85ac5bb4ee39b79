//! The response probes of `tests/strict_origin.rs`: scripted origin
//! responses and what the client must get (`probes.rs` holds the
//! requests).

pub struct ResponseProbe {
    pub name: &'static str,
    /// What the origin answers.
    pub origin: &'static [u8],
    /// The origin closes after answering.
    pub close: bool,
    /// The request is a HEAD.
    pub head: bool,
    /// The status the client gets (`None`: no whole response, cut short).
    pub status: Option<u16>,
    pub body: Option<&'static [u8]>,
    /// Lower-case text the response head must hold, and must not.
    pub fields: &'static [&'static str],
    pub absent: &'static [&'static str],
}

const fn answer(
    name: &'static str,
    origin: &'static [u8],
    status: Option<u16>,
    body: Option<&'static [u8]>,
) -> ResponseProbe {
    ResponseProbe {
        name,
        origin,
        close: false,
        head: false,
        status,
        body,
        fields: &[],
        absent: &[],
    }
}

const OK: Option<u16> = Some(200);
const BAD: Option<u16> = Some(502);
const HELLO: Option<&[u8]> = Some(b"hello");

pub fn responses() -> Vec<ResponseProbe> {
    let mut r = vec![
        answer("length 5", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO),
        ResponseProbe {
            fields: &["content-length: 5\r\n"],
            absent: &["5, 5"],
            ..answer("length list 5, 5", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", OK, HELLO)
        },
        ResponseProbe {
            fields: &["content-length: 5\r\n"],
            ..answer("two equal lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO)
        },
        answer("length list 5, 6", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", BAD, None),
        answer("two differing lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", BAD, None),
        answer("length +5", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", BAD, None),
        answer("length -5", b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", BAD, None),
        answer("length 5 5", b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello", BAD, None),
        answer("length 0x5", b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", BAD, None),
        answer("length of 20 digits", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello", BAD, None),
        ResponseProbe {
            absent: &["content-length: 3"],
            ..answer("length beside chunked", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", OK, HELLO)
        },
        answer("codings gzip, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD, None),
        answer("codings gzip + chunked fields", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD, None),
        answer("codings chunked, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD, None),
        answer("coding gzip alone", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", BAD, None),
        answer("coding identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello", BAD, None),
        answer("coding xchunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\nhello", BAD, None),
    ];
    for (name, origin) in [
        ("chunk size +5", &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"[..]),
        ("chunk size padded", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk extension with a bare CR", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with a trailing space", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x5", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk line with a bare LF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        ("chunk size of 17 digits", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ] {
        r.push(answer(name, origin, BAD, None));
    }
    r.extend([
        answer("chunk extension", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n", OK, HELLO),
        answer("chunk size upper case", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nhellohello\r\n0\r\n\r\n", OK, Some(b"hellohello")),
        answer("trailers with framing fields", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 9\r\nHost: x\r\n\r\n", OK, HELLO),
        answer("100 then 200", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO),
        ResponseProbe {
            head: true,
            ..answer("HEAD answered with a body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", OK, None)
        },
        answer("204 with a body", b"HTTP/1.1 204 No Content\r\n\r\nhello", Some(204), None),
        answer("304 with a body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", Some(304), None),
        ResponseProbe {
            close: true,
            ..answer("closed mid-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", None, Some(b"helloworld"))
        },
        ResponseProbe {
            close: true,
            ..answer("closed before a head", b"", BAD, None)
        },
        answer("a second response after the first", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", OK, Some(b"ok")),
        answer("garbage status line", b"HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello", BAD, None),
        answer("HTTP/2.0 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", BAD, None),
        answer("bare LF response head", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", OK, HELLO),
        answer("obs-fold in a response", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\nContent-Length: 5\r\n\r\nhello", BAD, None),
        answer("space before a colon", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", BAD, None),
        answer("NUL in a field value", b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 5\r\n\r\nhello", BAD, None),
        answer("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO),
        ResponseProbe {
            fields: &["content-length: 5"],
            ..answer("Connection: content-length", b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO)
        },
        ResponseProbe {
            close: true,
            ..answer("HTTP/1.0 to the close", b"HTTP/1.0 200 OK\r\n\r\nhello", OK, HELLO)
        },
        answer("HTTP/1.0 chunked", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", OK, HELLO),
        ResponseProbe {
            absent: &["keep-alive"],
            ..answer("Keep-Alive is hop-by-hop", b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO)
        },
        ResponseProbe {
            absent: &["x-secret"],
            ..answer("Connection names a field", b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 5\r\n\r\nhello", OK, HELLO)
        },
    ]);
    r
}
