//! HTTP/1.1 to an endpoint, driven inside the request's own task.
//!
//! hyper's `client::conn::http1` runs each connection as a task of its own
//! and passes every request and response through channels between that task
//! and the request's; callgrind counted about 10,000 instructions per
//! request for it (a minimal hyper proxy: 25,400 per request with it, 15,500
//! with this way; docs/performance.md). Here the request's task writes the
//! request head and body to the endpoint's socket and parses the response
//! head (with httparse, as hyper does) itself, and the response body is
//! read from the socket as the client takes it. No task, no channel, no
//! wake-up of another task per request.
//!
//! What a response head may say and how its body is framed follows RFC 9112
//! section 6: no body for HEAD, 1xx, 204 and 304; `Transfer-Encoding` ending
//! in `chunked` is decoded (trailers included); any other
//! `Transfer-Encoding`, or no length at all, reads to the end of the
//! connection; otherwise `Content-Length`, whose values must agree. Interim
//! responses (100, 102, 103) are dropped, as hyper drops them; 101 hands the
//! connection to the upgrade.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::client::{Lease, Outgoing};
use crate::http1::Interim;
use crate::http1::chunk::{self, write_size_line};
use crate::http1::fields::{self as rules, Codings, Lengths, allowed_in_trailers};
use crate::proxy::{BodyError, RequestBody};

/// Headers in a response head, as hyper allows by default.
const MAX_HEADERS: usize = 100;
/// A response head larger than this is refused (hyper's default buffer
/// ceiling).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// A trailer section longer than this is refused.
const MAX_TRAILERS: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8192;
/// A data frame up to this size is copied next to its framing so that it
/// goes out in the same write as the head.
const COPY_BELOW: usize = 1024;

/// Why an exchange with an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Writing or reading failed, or the endpoint closed the connection
    /// before a whole response head came.
    #[error("connection to the endpoint failed: {0}")]
    Io(#[source] io::Error),
    /// The endpoint's response was not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The client's request body failed (too large, stalled, aborted).
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// An open connection to an endpoint.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read from the endpoint and not used yet.
    read: BytesMut,
    /// The request head being written, kept for its capacity.
    write: Vec<u8>,
    /// No response may follow on this connection (closing, or left
    /// mid-message).
    done: bool,
    /// The request being sent, until all of it has been.
    upload: Option<Upload>,
    /// The field names of the last response head.
    names: Names,
    /// Where a response head's fields are written as the client will get
    /// them ([`RawHead`]); its allocation serves response after response.
    raw: BytesMut,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the endpoint closes the connection.
    Close,
    /// 101: the connection now belongs to the upgrade.
    Upgrade,
}

/// A response head and what follows it.
#[derive(Debug)]
pub struct Answer {
    /// With an empty header map when the fields are in `raw`.
    pub head: response::Parts,
    pub framing: Framing,
    /// Whether the connection may carry another exchange after this one.
    reuse: bool,
    pub raw: Option<RawHead>,
}

/// A response's fields as fulcrum's own HTTP/1.1 server side writes them:
/// `name: value` lines, names lowercase (as hyper writes them), hop-by-hop
/// fields left out. Built instead of a header map when the request asked
/// for it (`Outgoing::raw_head`) and nothing needs the map: the fields go
/// from one buffer to the other without a map in between.
#[derive(Debug)]
pub struct RawHead {
    pub lines: Bytes,
    /// A Date field is among them.
    pub date: bool,
    /// A Content-Length field is among them (one).
    pub length: bool,
}

/// How the request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoder {
    Length(u64),
    Chunked,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            done: false,
            upload: None,
            names: Names::default(),
            raw: BytesMut::new(),
        }
    }

    /// Whether the connection can carry no request: the endpoint closed
    /// it, sent something unasked, or a previous message was left unfinished.
    /// Uses the runtime's record of readiness; a system call only when the
    /// socket was seen readable.
    pub fn is_stale(&self) -> bool {
        if !self.reusable() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                !matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Whether the connection may carry the next request.
    pub fn reusable(&self) -> bool {
        !self.done && self.read.is_empty() && self.upload.is_none()
    }

    /// Sends `request` and reads the response head; the body, if any, is
    /// read afterwards through [`ResponseBody`]. `response_timeout` is the
    /// caller's (the lease's timer). A request body the endpoint has not
    /// taken all of when its response head comes goes on being sent while
    /// the response body is read (an endpoint may echo as it reads).
    pub async fn exchange(
        &mut self,
        request: &Outgoing<'_>,
        body: RequestBody,
    ) -> Result<Answer, Failure> {
        let head_request = *request.method == Method::HEAD;
        let upgrade = request.forwarding.upgrade;
        self.write.clear();
        let encoder = encode_head(&mut self.write, request, &body);
        self.upload = Some(Upload {
            body,
            encoder,
            out: Staged {
                pre: std::mem::take(&mut self.write),
                at: 0,
                data: Bytes::new(),
                post: b"",
            },
            sent: 0,
            body_done: encoder.is_none(),
        });
        let answer = poll_fn(|cx| {
            self.poll_upload(cx)?;
            // The response head may come before the body is all sent (an
            // early 413, say).
            loop {
                let raw = request.raw_head.then_some(&mut self.raw);
                let parsed = parse_head(
                    &mut self.read,
                    &mut self.names,
                    head_request,
                    upgrade,
                    raw,
                    request.interim,
                )?;
                if let Some(answer) = parsed {
                    return Poll::Ready(Ok(answer));
                }
                if self.read.len() > MAX_HEAD {
                    return Poll::Ready(Err(Failure::Invalid("response head too large")));
                }
                match ready!(poll_read(&mut self.io, cx, &mut self.read)) {
                    Ok(0) => {
                        return Poll::Ready(Err(Failure::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the endpoint closed the connection before a response",
                        ))));
                    }
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(Failure::Io(e))),
                }
            }
        })
        .await;
        match answer {
            // A first chunk line that came with the head is read now: if
            // it is invalid, the client gets a 502 rather than a head and
            // a cut body.
            Ok(answer)
                if answer.framing == Framing::Chunked
                    && memchr::memchr(b'\n', &self.read)
                        .is_some_and(|nl| chunk::parse_size_line(&self.read[..nl]).is_err()) =>
            {
                self.done = true;
                self.upload = None;
                Err(Failure::Invalid("bad chunk size"))
            }
            Ok(answer) => {
                self.done |= !answer.reuse;
                Ok(answer)
            }
            Err(e) => {
                self.done = true;
                self.upload = None;
                Err(e)
            }
        }
    }

    /// Sends what it can of the request. A failed write ends the upload
    /// (the response may still come); a failed request body is the
    /// exchange's failure.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        let Some(upload) = &mut self.upload else {
            return Ok(());
        };
        match upload.poll(&mut self.io, cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                // All sent; the staging buffer's capacity serves the next
                // request's head.
                if let Some(upload) = self.upload.take() {
                    self.write = upload.out.pre;
                }
                Ok(())
            }
            Poll::Ready(Err(failure)) => {
                self.upload = None;
                self.done = true;
                match failure {
                    Failure::Io(error) => {
                        tracing::debug!(%error, "writing to the endpoint failed");
                        Ok(())
                    }
                    failure => Err(failure),
                }
            }
        }
    }

    /// The socket and the bytes the endpoint sent after its 101 response.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.io, self.read.freeze())
    }
}

/// A request on its way to the endpoint: the head, then the body.
#[derive(Debug)]
struct Upload {
    body: RequestBody,
    encoder: Option<Encoder>,
    out: Staged,
    /// Body bytes staged so far.
    sent: u64,
    /// No body, or its end has been staged.
    body_done: bool,
}

impl Upload {
    /// Ready when all of the request has been written.
    fn poll(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        loop {
            ready!(self.out.poll_write(io, cx)).map_err(Failure::Io)?;
            if self.body_done {
                return Poll::Ready(Ok(()));
            }
            self.out.pre.clear();
            self.out.at = 0;
            let Some(encoder) = self.encoder else {
                self.body_done = true;
                continue;
            };
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.sent += data.len() as u64;
                        if let Encoder::Length(n) = encoder
                            && self.sent > n
                        {
                            return Poll::Ready(Err(Failure::Body(BodyError::Length)));
                        }
                        self.out.stage(data, encoder);
                    }
                    Err(frame) => {
                        if let (Ok(trailers), Encoder::Chunked) = (frame.into_trailers(), encoder) {
                            self.out.pre.extend_from_slice(b"0\r\n");
                            // No framing, routing or hop-by-hop field
                            // passes in a trailer.
                            for (name, value) in &trailers {
                                if allowed_in_trailers(name.as_str()) {
                                    crate::headers::write_line(
                                        &mut self.out.pre,
                                        name.as_str().as_bytes(),
                                        value.as_bytes(),
                                    );
                                }
                            }
                            self.out.pre.extend_from_slice(b"\r\n");
                            self.body_done = true;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Failure::Body(e))),
                None => {
                    match encoder {
                        Encoder::Chunked => self.out.pre.extend_from_slice(b"0\r\n\r\n"),
                        Encoder::Length(n) if self.sent < n => {
                            return Poll::Ready(Err(Failure::Body(BodyError::Length)));
                        }
                        Encoder::Length(_) => {}
                    }
                    self.body_done = true;
                }
            }
        }
    }
}

/// Bytes on their way to the endpoint, in order: `pre[at..]`, `data`,
/// `post`.
#[derive(Debug)]
struct Staged {
    pre: Vec<u8>,
    at: usize,
    data: Bytes,
    post: &'static [u8],
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.at == self.pre.len() && self.data.is_empty() && self.post.is_empty()
    }

    /// Stages one data frame of the request body.
    fn stage(&mut self, data: Bytes, encoder: Encoder) {
        if data.is_empty() {
            return;
        }
        if encoder == Encoder::Chunked {
            write_size_line(&mut self.pre, data.len());
        }
        let post: &'static [u8] = if encoder == Encoder::Chunked {
            b"\r\n"
        } else {
            b""
        };
        if data.len() < COPY_BELOW {
            self.pre.extend_from_slice(&data);
            self.pre.extend_from_slice(post);
        } else {
            self.data = data;
            self.post = post;
        }
    }

    fn poll_write(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let mut n = if self.data.is_empty() && self.post.is_empty() {
                // One buffer (a head, or a head and a small body): `send`,
                // whose way through the kernel is shorter than `writev`'s
                // (about 0.3 us per call on loopback, docs/performance.md).
                ready!(Pin::new(&mut *io).poll_write(cx, &self.pre[self.at..]))?
            } else {
                let slices = [
                    IoSlice::new(&self.pre[self.at..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.post),
                ];
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_pre = n.min(self.pre.len() - self.at);
            self.at += from_pre;
            n -= from_pre;
            let from_data = n.min(self.data.len());
            self.data.advance(from_data);
            n -= from_data;
            self.post = &self.post[n..];
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads what the socket has into `buf`; 0 at its end.
fn poll_read(
    io: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes the request line and headers; says how the body will be framed
/// (`None`: no body).
///
/// The framing is written here and only here, from the body as the client's
/// framing was parsed (its exact length, or none known: chunked), never
/// copied from the client's fields, which the field rewrite leaves out
/// (`Forwarding::write`). A request without a body gets `Content-Length: 0`
/// when the client sent a Content-Length.
fn encode_head(out: &mut Vec<u8>, request: &Outgoing<'_>, body: &RequestBody) -> Option<Encoder> {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let declared_length =
        request
            .forwarding
            .write(request.headers, out, request.authority.as_str());
    let encoder = if body.is_end_stream() {
        if declared_length {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        None
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        Some(Encoder::Length(n))
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Some(Encoder::Chunked)
    };
    out.extend_from_slice(b"\r\n");
    encoder
}

/// Parses a response head at the start of `read`, taking it out; interim
/// responses are dropped. `None`: not all of it has come.
///
/// Hop-by-hop fields (RFC 9110, 7.6.1) are read for what they say about
/// framing and the connection and not copied into the response, so that
/// the proxy need not look for them again; a 101 keeps them all for the
/// upgrade.
fn parse_head(
    read: &mut BytesMut,
    names: &mut Names,
    head_request: bool,
    upgrade: bool,
    raw: Option<&mut BytesMut>,
    interim: Option<&Interim>,
) -> Result<Option<Answer>, Failure> {
    loop {
        if read.is_empty() {
            return Ok(None);
        }
        // Left uninitialised: httparse writes the fields it finds.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, read, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Failure::Invalid("too many headers"));
            }
            Err(_) => return Err(Failure::Invalid("malformed response head")),
        };
        let code = parsed.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            // 100 answers an Expect fulcrum does not send on; others (103
            // Early Hints) go to the client where its server side can
            // write them.
            if let (Some(interim), false) = (interim, code == 100) {
                interim.push(&interim_head(code, parsed.headers));
            }
            read.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Failure::Invalid("bad status code"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Where each field lies in the head, so that the values can be
        // shared slices of it rather than copies.
        let base = read.as_ptr() as usize;
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let count = parsed.headers.len();
        for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            );
        }
        let head = read.split_to(len).freeze();
        let spans = &spans[..count];
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // 204 and 304 keep the map: hyper leaves their Content-Length out.
        let raw = raw.filter(|_| !switching && !matches!(code, 204 | 304));
        let (headers, seen, raw) = match raw {
            Some(buf) => match raw_fields(&head, spans, names, buf)? {
                Some((seen, raw)) => (HeaderMap::new(), seen, Some(raw)),
                None => {
                    let (headers, seen) = map_fields(&head, spans, names, false)?;
                    (headers, seen, None)
                }
            },
            None => {
                let (headers, seen) = map_fields(&head, spans, names, switching)?;
                (headers, seen, None)
            }
        };
        let framing = framing(status, &seen, head_request, upgrade)?;
        // Framed two ways (RFC 9112, 6.3): the connection is not trusted
        // with another message.
        let ambiguous =
            seen.codings.present() && (seen.lengths.get().is_some() || version == Version::HTTP_10);
        let keep_alive = if version == Version::HTTP_10 {
            seen.keep_alive && !seen.close
        } else {
            !seen.close
        };
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = status;
        head.version = version;
        head.headers = headers;
        return Ok(Some(Answer {
            head,
            framing,
            reuse: keep_alive && !ambiguous && framing != Framing::Close,
            raw,
        }));
    }
}

/// For the fuzz targets (`crate::fuzzing`): parses `data` as a response
/// head both ways (fields as lines, fields in a map) and checks what every
/// head must hold: the two ways agree on status and framing and, where
/// both give fields, on the fields; no hop-by-hop field and no framing
/// field beside chunked framing is kept; a repeated length is one value.
pub(crate) fn check_response_head(data: &[u8], head_request: bool) {
    let parse = |raw: Option<&mut BytesMut>| {
        let mut read = BytesMut::from(data);
        parse_head(
            &mut read,
            &mut Names::default(),
            head_request,
            false,
            raw,
            None,
        )
    };
    let mut lines = BytesMut::new();
    let (as_lines, as_map) = (parse(Some(&mut lines)), parse(None));
    let (Ok(Some(as_lines)), Ok(Some(as_map))) = (as_lines, as_map) else {
        return;
    };
    assert_eq!(as_lines.head.status, as_map.head.status);
    assert_eq!(as_lines.framing, as_map.framing);
    let headers = &as_map.head.headers;
    if let Some(raw) = &as_lines.raw {
        // The lines keep the order sent; a map groups a name's values. Both
        // keep each name's values in their order, which is what counts.
        let mut mapped = Vec::new();
        crate::headers::write_lines(&mut mapped, headers);
        assert_eq!(
            fields_by_name(&raw.lines),
            fields_by_name(&mapped),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
    if as_map.head.status != http::StatusCode::SWITCHING_PROTOCOLS {
        for name in crate::http1::fields::HOP_BY_HOP {
            assert!(!headers.contains_key(name), "{name} kept");
        }
    }
    if as_map.framing == Framing::Chunked {
        assert!(!headers.contains_key(CONTENT_LENGTH));
    }
    assert!(headers.get_all(CONTENT_LENGTH).iter().count() <= 1);
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        assert!(
            length.as_bytes().iter().all(u8::is_ascii_digit),
            "{length:?}"
        );
    }
}

/// An interim response head as fulcrum forwards it: its status, its fields
/// but the hop-by-hop ones.
fn interim_head(code: u16, fields: &[httparse::Header<'_>]) -> Vec<u8> {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
    for field in fields {
        let lower = field.name.to_ascii_lowercase();
        if !rules::is_hop_by_hop(&lower) && !rules::is_protected(field.name.as_bytes()) {
            crate::headers::write_line(&mut head, lower.as_bytes(), field.value);
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// For the fuzz targets (`crate::fuzzing`): decodes `data` as a chunked
/// response body, whole and cut into pieces (the same outcome, data and
/// trailers either way), and holds the request follower to the same reading
/// of the same bytes: a body the decoder ends, the follower reads whole and
/// accepts; one it refuses, the follower refuses.
pub(crate) fn check_chunked_decoder(data: &[u8]) {
    use crate::http1::stream::RequestStream;
    let whole = decode_chunked(data, data.len().max(1));
    let cut = usize::from(data.first().copied().unwrap_or(1)).max(1);
    assert_eq!(whole, decode_chunked(data, cut), "cut into pieces of {cut}");
    let (outcome, _, _, consumed) = &whole;
    let mut follower = RequestStream::new(MAX_TRAILERS);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(follower.feed(head), None);
    match outcome {
        Some(true) => {
            assert_eq!(follower.feed(&data[..*consumed]), None);
            assert!(follower.between_messages(), "the follower wants more");
        }
        Some(false) => assert!(follower.feed(data).is_some(), "the follower accepts it"),
        None => assert_eq!(follower.feed(data), None),
    }
}

/// A chunked body decoded from `data` fed `piece` bytes at a time: ended
/// (`Some(true)`), invalid (`Some(false)`) or wanting more; its data, its
/// trailers, and the bytes it took.
type Decoded = (Option<bool>, Vec<u8>, Vec<(String, Vec<u8>)>, usize);

fn decode_chunked(data: &[u8], piece: usize) -> Decoded {
    let mut decode = Decode::ChunkSize;
    let mut read = BytesMut::new();
    let (mut body, mut trailers, mut fed) = (Vec::new(), Vec::new(), 0);
    for chunk in data.chunks(piece) {
        read.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match decode_step(&mut decode, &mut read) {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Trailers(t) => {
                    trailers = t
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                        .collect();
                    return (Some(true), body, trailers, fed - read.len());
                }
                Step::End => return (Some(true), body, trailers, fed - read.len()),
                Step::Invalid(_) => return (Some(false), body, trailers, 0),
                Step::More => break,
            }
        }
    }
    (None, body, trailers, 0)
}

/// Field lines grouped by name, each name's values in their order, names
/// sorted: what two ways of writing the same fields must agree on.
fn fields_by_name(lines: &[u8]) -> Vec<(&[u8], Vec<&[u8]>)> {
    let mut fields: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let at = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let (name, value) = line.split_at(at);
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => fields.push((name, vec![value])),
        }
    }
    fields.sort();
    fields
}

/// Where a field's name and value lie in a response head.
type Span = (u32, u32, u32, u32);

/// The fields of a response head in a header map, hop-by-hop fields left
/// out (a 101, `switching`, keeps them all for the upgrade).
fn map_fields(
    head: &Bytes,
    spans: &[Span],
    names: &mut Names,
    switching: bool,
) -> Result<(HeaderMap, Seen), Failure> {
    let mut seen = Seen::default();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (i, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let (name, kind) = names.get(i, &head[name_start as usize..name_end as usize])?;
        let value = &head[value_start as usize..value_end as usize];
        if !switching && !seen.field(kind, value)? {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
                .map_err(|_| Failure::Invalid("bad header value"))?;
        headers.append(name, value);
    }
    if seen.listed {
        // The Connection field names other fields: they go too.
        crate::headers::strip_hop_by_hop(&mut headers, false);
    }
    if seen.codings.present() {
        // Transfer-Encoding overrides Content-Length, which must not
        // reach the client beside a body framed some other way.
        headers.remove(CONTENT_LENGTH);
    } else if let (true, Some(n)) = (seen.lengths.repeated(), seen.lengths.get()) {
        // `5, 5` or two equal fields: sent on as one value.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok((headers, seen))
}

/// The fields of a response head as [`RawHead`] lines, written into `buf`;
/// `None` when one of them needs the map: a Connection naming other fields,
/// Content-Length repeated or beside Transfer-Encoding. (Trailer is
/// hop-by-hop here, as in RFC 2616's list: never kept.)
fn raw_fields(
    head: &Bytes,
    spans: &[Span],
    names: &mut Names,
    buf: &mut BytesMut,
) -> Result<Option<(Seen, RawHead)>, Failure> {
    let mut seen = Seen::default();
    let (mut date, mut lengths) = (false, 0);
    buf.clear();
    buf.reserve(head.len());
    for (i, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let (name, kind) = names.get(i, &head[name_start as usize..name_end as usize])?;
        // httparse admits the bytes a header value may hold, no others.
        let value = &head[value_start as usize..value_end as usize];
        if !seen.field(kind, value)? {
            continue;
        }
        match kind {
            Kind::ContentLength => lengths += 1,
            Kind::Connection => return Ok(None),
            _ if name == http::header::DATE => date = true,
            _ => {}
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value);
        buf.extend_from_slice(b"\r\n");
    }
    if lengths > 1 || seen.lengths.repeated() || (lengths > 0 && seen.codings.present()) {
        return Ok(None);
    }
    let raw = RawHead {
        lines: buf.split().freeze(),
        date,
        length: lengths > 0,
    };
    Ok(Some((seen, raw)))
}

/// The field names of an endpoint's last response head, in order and as
/// sent: an endpoint sends the same names in the same order response after
/// response, and a name found here is compared, not parsed and looked up
/// again.
#[derive(Debug, Default)]
struct Names {
    /// The names as sent, one after another.
    raw: Vec<u8>,
    /// Where each ends in `raw`, the name, and what it is to framing.
    parsed: Vec<(usize, HeaderName, Kind)>,
}

/// How many field names of a response head [`Names`] keeps.
const NAMES_KEPT: usize = 32;

impl Names {
    /// The `i`th field name of a response head: the last head's `i`th name
    /// if it is sent the same, parsed and noted for the next head
    /// otherwise (with the names after it forgotten).
    fn get(&mut self, i: usize, sent: &[u8]) -> Result<(HeaderName, Kind), Failure> {
        let start = match i {
            0 => 0,
            _ => self.parsed.get(i - 1).map_or(usize::MAX, |&(end, ..)| end),
        };
        if let Some((end, name, kind)) = self.parsed.get(i)
            && self.raw.get(start..*end) == Some(sent)
        {
            return Ok((name.clone(), *kind));
        }
        let name = HeaderName::from_bytes(sent).map_err(|_| Failure::Invalid("bad header name"))?;
        let kind = Kind::of(&name);
        // Noted only in sequence: names after a gap (beyond NAMES_KEPT) are
        // not, and `start` is then not used.
        if i <= self.parsed.len() && i < NAMES_KEPT {
            self.parsed.truncate(i);
            self.raw.truncate(start);
            self.raw.extend_from_slice(sent);
            self.parsed.push((self.raw.len(), name.clone(), kind));
        }
        Ok((name, kind))
    }
}

/// What a response field is to the framing of the message and to the
/// connection: known once per name, then remembered with it ([`Names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Another hop-by-hop field: not forwarded.
    HopByHop,
    Other,
}

impl Kind {
    /// One match on the name (lower case, as HeaderName keeps it) rather
    /// than a comparison per name of interest.
    fn of(name: &HeaderName) -> Self {
        match name.as_str() {
            "content-length" => Kind::ContentLength,
            "transfer-encoding" => Kind::TransferEncoding,
            "connection" => Kind::Connection,
            "te" | "trailer" | "upgrade" | "keep-alive" | "proxy-connection" => Kind::HopByHop,
            _ => Kind::Other,
        }
    }
}

/// What a response head's hop-by-hop and length fields said, read by the
/// rules of `http1::fields`.
#[derive(Default)]
struct Seen {
    codings: Codings,
    lengths: Lengths,
    close: bool,
    keep_alive: bool,
    /// Connection named fields other than its own options.
    listed: bool,
}

impl Seen {
    /// Notes what a field says; false for a hop-by-hop field, which is not
    /// copied. A Connection field naming other fields is kept, for them to
    /// be removed after.
    fn field(&mut self, kind: Kind, value: &[u8]) -> Result<bool, Failure> {
        match kind {
            Kind::ContentLength => {
                self.lengths
                    .add(value)
                    .map_err(|_| Failure::Invalid("bad or conflicting Content-Length"))?;
                Ok(true)
            }
            Kind::TransferEncoding => {
                self.codings.add(value);
                Ok(false)
            }
            Kind::Connection => {
                let mut options_only = true;
                for token in rules::tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else {
                        options_only = false;
                    }
                }
                self.listed |= !options_only;
                Ok(!options_only)
            }
            Kind::HopByHop => Ok(false),
            Kind::Other => Ok(true),
        }
    }

    /// Whether the body is chunked; a Transfer-Encoding fulcrum cannot
    /// decode (a coding besides chunked, chunked twice or not last) makes
    /// the response invalid, as nginx holds it: forwarding it decoded would
    /// drop a coding, and reading to the close would forward a body framed
    /// one way under fields that say another.
    fn chunked(&self) -> Result<bool, Failure> {
        self.codings
            .chunked()
            .map_err(|_| Failure::Invalid("unsupported Transfer-Encoding"))
    }
}

/// How the body after a response head is delimited (RFC 9112, 6.3).
fn framing(
    status: StatusCode,
    seen: &Seen,
    head_request: bool,
    upgrade: bool,
) -> Result<Framing, Failure> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return if upgrade {
            Ok(Framing::Upgrade)
        } else {
            Err(Failure::Invalid("101 to a request that asked no upgrade"))
        };
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if seen.chunked()? {
        return Ok(Framing::Chunked);
    }
    Ok(match seen.lengths.get() {
        None => Framing::Close,
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy)]
enum Decode {
    Length(u64),
    /// Chunked: the next thing is a chunk-size line.
    ChunkSize,
    /// Chunked: this much of the current chunk is left, then its CRLF.
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// What one step of decoding a response body gives.
#[derive(Debug)]
enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed.
    More,
    Invalid(&'static str),
}

/// Decodes what `read` holds of a body, as far as one frame: data, the
/// trailers, the end, or the need for more bytes. Pure over the buffer, so
/// the fuzz targets reach it (`check_chunked_decoder`).
#[inline]
fn decode_step(decode: &mut Decode, read: &mut BytesMut) -> Step {
    loop {
        match *decode {
            Decode::Done => return Step::End,
            Decode::Length(left) if !read.is_empty() => {
                let n = left.min(read.len() as u64);
                *decode = if left == n {
                    Decode::Done
                } else {
                    Decode::Length(left - n)
                };
                return Step::Data(read.split_to(n as usize).freeze());
            }
            Decode::ChunkData(left) if !read.is_empty() => {
                let n = left.min(read.len() as u64);
                *decode = if left == n {
                    Decode::ChunkEnd
                } else {
                    Decode::ChunkData(left - n)
                };
                return Step::Data(read.split_to(n as usize).freeze());
            }
            Decode::Close if !read.is_empty() => return Step::Data(read.split().freeze()),
            // Judged byte by byte, as the request follower judges it: a
            // wrong first byte is refused without waiting for the second.
            Decode::ChunkEnd if !read.is_empty() => {
                let n = read.len().min(2);
                if read[..n] != b"\r\n"[..n] {
                    return Step::Invalid("chunk not followed by CRLF");
                }
                if n < 2 {
                    return Step::More;
                }
                read.advance(2);
                *decode = Decode::ChunkSize;
            }
            Decode::ChunkSize => {
                let Some(nl) = memchr::memchr(b'\n', read) else {
                    if read.len() > chunk::MAX_LINE {
                        return Step::Invalid("chunk-size line too long");
                    }
                    return Step::More;
                };
                let Ok(size) = chunk::parse_size_line(&read[..nl]) else {
                    return Step::Invalid("bad chunk size");
                };
                read.advance(nl + 1);
                *decode = if size == 0 {
                    Decode::Trailers
                } else {
                    Decode::ChunkData(size)
                };
            }
            Decode::Trailers => {
                let end = match chunk::trailer_section_end(read) {
                    Err(_) => return Step::Invalid("bad trailers"),
                    Ok(None) if read.len() > MAX_TRAILERS => {
                        return Step::Invalid("trailers too large");
                    }
                    Ok(None) => return Step::More,
                    Ok(Some(end)) => end,
                };
                let section = read.split_to(end);
                *decode = Decode::Done;
                if end == 2 {
                    return Step::End;
                }
                return match trailer_fields(&section) {
                    Some(trailers) => Step::Trailers(trailers),
                    None => Step::Invalid("bad trailers"),
                };
            }
            Decode::Length(_) | Decode::ChunkData(_) | Decode::ChunkEnd | Decode::Close => {
                return Step::More;
            }
        }
    }
}

/// The fields of a trailer section that may pass (no framing, routing or
/// hop-by-hop field); `None` if they do not parse.
fn trailer_fields(section: &[u8]) -> Option<HeaderMap> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(section, &mut fields)
    else {
        return None;
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) && allowed_in_trailers(name.as_str())
        {
            map.append(name, value);
        }
    }
    Some(map)
}

/// A response body read from the endpoint's connection as the client takes
/// it; at its end the connection goes back to its pool.
#[derive(Debug)]
pub struct ResponseBody {
    lease: Option<Lease>,
    raw: Option<RawHead>,
    decode: Decode,
    /// Reported on the next poll, so that what came before it is flushed
    /// to the client first (hyper abandons a response at a body error
    /// without writing what it holds).
    failed: Option<BodyFailure>,
}

/// Why reading a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyFailure {
    #[error("reading the response body failed: {0}")]
    Io(#[source] io::Error),
    #[error("the endpoint closed the connection mid-body")]
    Incomplete,
    #[error("invalid chunked body: {0}")]
    Invalid(&'static str),
    /// The rest of the request could not be sent.
    #[error("sending the rest of the request failed: {0}")]
    Upload(#[source] Failure),
}

impl ResponseBody {
    /// The body after a response head with `framing` on the lease's
    /// connection.
    pub fn new(lease: Lease, framing: Framing, raw: Option<RawHead>) -> Self {
        let decode = match framing {
            Framing::Empty | Framing::Upgrade => Decode::Done,
            Framing::Length(n) => Decode::Length(n),
            Framing::Chunked => Decode::ChunkSize,
            Framing::Close => Decode::Close,
        };
        let mut body = Self {
            lease: Some(lease),
            raw,
            decode,
            failed: None,
        };
        if matches!(decode, Decode::Done) && framing != Framing::Upgrade {
            body.finish();
        }
        body
    }

    /// The response's fields, when they were kept as lines, not in its map.
    pub fn raw_head(&self) -> Option<&RawHead> {
        self.raw.as_ref()
    }

    /// The connection of a 101 response.
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        self.lease
            .take()
            .map(|lease| lease.pooled.conn.into_upgraded())
    }

    /// The body ended: the connection goes back if it may serve again.
    fn finish(&mut self) {
        self.decode = Decode::Done;
        if let Some(lease) = self.lease.take()
            && lease.pooled.conn.reusable()
        {
            lease.release();
        }
    }

    fn fail(
        &mut self,
        failure: BodyFailure,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFailure>>> {
        self.lease = None;
        self.failed = Some(failure);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyFailure;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFailure>>> {
        let this = self.get_mut();
        if let Some(failure) = this.failed.take() {
            this.decode = Decode::Done;
            return Poll::Ready(Some(Err(failure)));
        }
        if let Some(lease) = this.lease.as_mut()
            && let Err(failure) = lease.pooled.conn.poll_upload(cx)
        {
            return this.fail(BodyFailure::Upload(failure), cx);
        }
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            // Done with the lease still held: a 101's, kept for the upgrade.
            if matches!(this.decode, Decode::Done) {
                return Poll::Ready(None);
            }
            let conn = &mut lease.pooled.conn;
            match decode_step(&mut this.decode, &mut conn.read) {
                Step::Data(data) => {
                    if matches!(this.decode, Decode::Done) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::Trailers(trailers) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Step::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Step::Invalid(why) => return this.fail(BodyFailure::Invalid(why), cx),
                Step::More => {}
            }
            // More bytes are needed.
            match poll_read(&mut conn.io, cx, &mut conn.read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.decode, Decode::Close) {
                        // The end of the connection is the end of the body.
                        conn.done = true;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail(BodyFailure::Incomplete, cx);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(BodyFailure::Io(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(names: &mut Names, head: &[&str]) -> Vec<HeaderName> {
        head.iter()
            .enumerate()
            .map(|(i, sent)| names.get(i, sent.as_bytes()).expect("valid name").0)
            .collect()
    }

    #[test]
    fn names_are_the_same_whether_remembered_or_parsed() {
        let mut names = Names::default();
        let first = ["Server", "Date", "Content-Length", "X-Trace"];
        let parsed: Vec<HeaderName> = first
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect();
        assert_eq!(names_of(&mut names, &first), parsed);
        // Again: every name comes from what was noted.
        assert_eq!(names_of(&mut names, &first), parsed);
        assert_eq!(names.parsed.len(), 4);

        // A name sent in another case, one in another place, one more.
        let second = ["Server", "content-length", "Date", "X-Trace", "Vary"];
        let got = names_of(&mut names, &second);
        let want: Vec<HeaderName> = second
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(names.parsed.len(), 5);
        assert_eq!(names.raw, b"Servercontent-lengthDateX-TraceVary");
        // A shorter head after a longer one, then the longer one again.
        assert_eq!(
            names_of(&mut names, &["Server"]),
            vec![HeaderName::from_static("server")]
        );
        assert_eq!(names_of(&mut names, &second), want);
    }

    #[test]
    fn names_remember_what_each_is_to_framing() {
        let mut names = Names::default();
        let head = [
            "Content-Length",
            "Connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "X-Other",
        ];
        let want = [
            Kind::ContentLength,
            Kind::Connection,
            Kind::HopByHop,
            Kind::TransferEncoding,
            Kind::Other,
        ];
        // Parsed the first time, remembered the second.
        for _ in 0..2 {
            for (i, sent) in head.iter().enumerate() {
                assert_eq!(names.get(i, sent.as_bytes()).unwrap().1, want[i], "{sent}");
            }
        }
    }

    /// The response head `head` parsed with its fields as lines if
    /// possible, and into a map.
    fn both_ways(head: &str) -> (Option<RawHead>, Vec<u8>) {
        let parse = |raw: Option<&mut BytesMut>| {
            let mut read = BytesMut::from(head.as_bytes());
            parse_head(&mut read, &mut Names::default(), false, false, raw, None)
                .unwrap()
                .unwrap()
        };
        let mut lines = BytesMut::new();
        let raw = parse(Some(&mut lines)).raw;
        let mut mapped = Vec::new();
        crate::headers::write_lines(&mut mapped, &parse(None).head.headers);
        (raw, mapped)
    }

    #[test]
    fn raw_lines_hold_what_the_map_would() {
        let (raw, mapped) = both_ways(
            "HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\
             Date: x\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
        );
        let raw = raw.expect("plain fields come as lines");
        assert_eq!(
            std::str::from_utf8(&raw.lines).unwrap(),
            "server: t\r\ncontent-length: 2\r\ndate: x\r\nx-a: 1\r\nx-a: 2\r\n"
        );
        assert_eq!(&raw.lines[..], &mapped[..]);
        assert!(raw.date && raw.length);

        let (raw, _) = both_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 1\r\n\r\n");
        let raw = raw.expect("chunked framing comes as lines too");
        assert_eq!(&raw.lines[..], b"x-b: 1\r\n");
        assert!(!raw.date && !raw.length);
    }

    #[test]
    fn raw_lines_hold_no_byte_a_header_value_may_not() {
        // httparse refuses them before either way of keeping the fields.
        for value in ["a\x01b", "a\x7fb", "a\x00b"] {
            let head = format!("HTTP/1.1 200 OK\r\nX-A: {value}\r\nContent-Length: 0\r\n\r\n");
            let mut read = BytesMut::from(head.as_bytes());
            let mut lines = BytesMut::new();
            let parsed = parse_head(
                &mut read,
                &mut Names::default(),
                false,
                false,
                Some(&mut lines),
                None,
            );
            assert!(matches!(parsed, Err(Failure::Invalid(_))), "{value:?}");
        }
    }

    #[test]
    fn fields_that_need_the_map_keep_it() {
        for head in [
            // Connection naming another field, which must go too.
            "HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        ] {
            let (raw, mapped) = both_ways(head);
            assert!(raw.is_none(), "{head:?}");
            assert!(!mapped.starts_with(b"x-a"), "{head:?}");
        }
    }

    #[test]
    fn names_keep_a_bounded_number_and_reject_invalid_ones() {
        let mut names = Names::default();
        let many: Vec<String> = (0..NAMES_KEPT + 8)
            .map(|i| format!("x-field-{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let got = names_of(&mut names, &many);
        assert_eq!(got.len(), many.len());
        assert_eq!(got[NAMES_KEPT + 7].as_str(), "x-field-39");
        assert_eq!(names.parsed.len(), NAMES_KEPT);
        assert!(matches!(
            names.get(0, b"bad name"),
            Err(Failure::Invalid(_))
        ));
        // The invalid name was not noted in place of a valid one.
        assert_eq!(names.get(1, b"x-field-1").unwrap().0.as_str(), "x-field-1");
    }
}
