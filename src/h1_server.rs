//! fulcrum's own HTTP/1.1 server side for plain requests: an HTTP/1.1
//! head with no body, no upgrade, no expectation and no connection option
//! but keep-alive, which is what nearly all traffic is. The head is parsed
//! where it was read, the request built from slices of that buffer, and the
//! response head and body gathered into one buffer, sent with one write.
//!
//! Everything else stays hyper's. At the first request that is not plain,
//! or a head that does not parse or grows past [`MAX_HEAD`], the connection
//! is handed to hyper's HTTP/1 server with the bytes read so far
//! ([`Ended::Hyper`]), so error answers (400, 414, 431), request bodies,
//! `Expect: 100-continue`, upgrades and HTTP/1.0 keep hyper's behaviour. The
//! response is written as hyper writes it (`proto/h1/role.rs` in hyper
//! 1.x): lowercase names in the map's order, framing chosen by the same
//! rules, a `date` when the response has none, `connection: close` added
//! while the listener drains. An HTTP/1.1 endpoint's fields come as
//! ready-written lines (`upstream::RawHead`) and are copied as they are.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::future::OptionFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::Interim;
use crate::http1::chunk::write_size_line;
use crate::http1::fields::{Lengths, has_token, last_token_is};
use crate::proxy::ResponseBody;

/// Header fields a plain request may have; more, and hyper reads it.
const MAX_HEADERS: usize = 64;
/// A head not complete within this many bytes is left to hyper, whose
/// limits then apply as before.
pub const MAX_HEAD: usize = 8192;
/// What a read asks for at least.
const READ_SIZE: usize = 4096;
/// Body bytes gathered before they are written.
const WRITE_HIGH: usize = 64 * 1024;
/// A response buffer larger than this (a large body's) is not kept for the
/// next response.
const KEEP_OUT: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// One HTTP/1.1 connection served without hyper, until it ends or a
    /// request needs hyper. Boxed by its owner: the request's future lives
    /// inside it.
    pub struct Server<T, F> {
        io: Option<T>,
        // Bytes read and not yet parsed; a request's head is split off and
        // shared by its header values and target.
        buf: BytesMut,
        // The response being written, and how much of it is.
        out: Vec<u8>,
        written: usize,
        phase: Phase,
        #[pin]
        handling: OptionFuture<F>,
        body: Option<ResponseBody>,
        framing: Framing,
        head_request: bool,
        // How much of `buf` was searched for the end of a head, in vain.
        searched: usize,
        // The connection closes once this response is written.
        last: bool,
        // The listener is stopping: no request after the one in flight.
        draining: bool,
        // Interim (1xx) heads the request's endpoint sent, to write before
        // the final response.
        interim: Arc<Interim>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Handling,
    Writing,
    Flushing,
    Closing,
}

/// How the response body is framed on the wire.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// Content-Length: the bytes still to send.
    Length(u64),
    Chunked,
    /// A length unknown where chunked framing cannot be used (an HTTP/1.0
    /// response): the body ends with the connection.
    Close,
}

/// Why [`Server::poll_serve`] stopped.
#[derive(Debug)]
pub enum Ended {
    Closed,
    Io(io::Error),
    /// The next request is for hyper: [`Server::take_io`] gives the socket
    /// and the bytes read ahead.
    Hyper,
}

/// The request at the start of the buffer is not a plain one, or not one
/// fulcrum parses itself: it is hyper's.
struct NotPlain;

impl<T, F> Server<T, F>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
{
    /// Serves `io`, whose first bytes (if any were read) are `read_ahead`.
    pub fn new(io: T, read_ahead: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(READ_SIZE.max(read_ahead.len()));
        buf.extend_from_slice(read_ahead);
        Self {
            io: Some(io),
            buf,
            out: Vec::new(),
            written: 0,
            phase: Phase::Reading,
            handling: None.into(),
            body: None,
            framing: Framing::Length(0),
            head_request: false,
            searched: 0,
            last: false,
            draining: false,
            interim: Arc::default(),
        }
    }

    /// Between requests (bytes of the next one may have been read with
    /// the last: they go with the socket, as hyper's read-ahead does).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Reading
    }

    /// Ends the connection gracefully: at once between requests (a head
    /// begun is dropped, as hyper drops it), after the response otherwise.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        *this.draining = true;
        if *this.phase == Phase::Reading {
            *this.phase = Phase::Closing;
        }
    }

    /// The socket and the bytes read but not served: for hyper after
    /// [`Ended::Hyper`], or to park an idle connection.
    pub fn take_io(self: Pin<&mut Self>) -> Option<(T, Bytes)> {
        let this = self.project();
        let io = this.io.take()?;
        Some((io, std::mem::take(this.buf).freeze()))
    }

    /// Serves requests until the connection ends, needs hyper, or waits.
    pub fn poll_serve<H>(self: Pin<&mut Self>, cx: &mut Context<'_>, handler: &H) -> Poll<Ended>
    where
        H: Fn(http::request::Parts, &Arc<Interim>) -> F,
    {
        let mut this = self.project();
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Ended::Closed);
        };
        loop {
            match *this.phase {
                Phase::Reading => {
                    // Parsed only once the end of a head may be there: a
                    // head trickled in byte by byte costs linear time.
                    if head_may_end(this.buf, *this.searched) {
                        *this.searched = 0;
                        match parse(this.buf) {
                            Ok(Some(parts)) => {
                                *this.head_request = parts.method == Method::HEAD;
                                this.handling.set(Some(handler(parts, this.interim)).into());
                                *this.phase = Phase::Handling;
                                continue;
                            }
                            Ok(None) => {}
                            Err(NotPlain) => return Poll::Ready(Ended::Hyper),
                        }
                    }
                    *this.searched = this.buf.len();
                    if this.buf.len() > MAX_HEAD {
                        return Poll::Ready(Ended::Hyper);
                    }
                    if this.buf.capacity() - this.buf.len() < READ_SIZE / 4 {
                        this.buf.reserve(READ_SIZE);
                    }
                    match ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut *io),
                        cx,
                        this.buf
                    )) {
                        // The client closed: between requests, a plain end;
                        // within a head, hyper answers what came.
                        Ok(0) if this.buf.is_empty() => *this.phase = Phase::Closing,
                        Ok(0) => return Poll::Ready(Ended::Hyper),
                        Ok(_) => {}
                        Err(error) => return Poll::Ready(Ended::Io(error)),
                    }
                }
                Phase::Handling => {
                    if let Poll::Ready(response) = this.handling.as_mut().poll(cx) {
                        this.handling.set(None.into());
                        // Interim heads pushed in this same poll go first.
                        let early = this.interim.take();
                        if !early.is_empty() {
                            this.out.extend_from_slice(&early);
                        }
                        let Some(response) = response else {
                            return Poll::Ready(Ended::Closed);
                        };
                        let head = Head {
                            head_request: *this.head_request,
                            draining: *this.draining,
                        };
                        match head.encode(response, this.out) {
                            Ok((body, framing, last)) => {
                                *this.body = body;
                                *this.framing = framing;
                                *this.last = last;
                            }
                            Err(error) => return Poll::Ready(Ended::Io(error)),
                        }
                        *this.phase = Phase::Writing;
                        continue;
                    }
                    // Interim responses (103 Early Hints) go out as they
                    // come, ahead of the final one.
                    let early = this.interim.take();
                    if !early.is_empty() {
                        this.out.extend_from_slice(&early);
                    }
                    if !this.out.is_empty() {
                        match poll_write_out(io, cx, this.out, this.written) {
                            Poll::Ready(Ok(())) => {
                                if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                                    return Poll::Ready(Ended::Io(error));
                                }
                            }
                            Poll::Ready(Err(error)) => return Poll::Ready(Ended::Io(error)),
                            Poll::Pending => {}
                        }
                    }
                    // A client that leaves ends its request, as with hyper:
                    // the request's future is dropped with this connection.
                    if this.buf.is_empty() {
                        let mut storage = [MaybeUninit::<u8>::uninit(); 512];
                        let mut read = ReadBuf::uninit(&mut storage);
                        match Pin::new(&mut *io).poll_read(cx, &mut read) {
                            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                                return Poll::Ready(Ended::Io(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the client closed the connection with a request in flight",
                                )));
                            }
                            // Pipelined: kept for after this response.
                            Poll::Ready(Ok(())) => this.buf.extend_from_slice(read.filled()),
                            Poll::Ready(Err(error)) => return Poll::Ready(Ended::Io(error)),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                Phase::Writing => {
                    let mut waiting = false;
                    while this.out.len() < WRITE_HIGH {
                        let Some(body) = this.body.as_mut() else {
                            break;
                        };
                        let frame = match Pin::new(&mut *body).poll_frame(cx) {
                            Poll::Pending => {
                                waiting = true;
                                break;
                            }
                            Poll::Ready(frame) => frame,
                        };
                        let data = match frame {
                            Some(Ok(frame)) => frame.into_data().ok(),
                            Some(Err(error)) => {
                                // What was sent stands; the client sees the
                                // response cut short.
                                *this.body = None;
                                return Poll::Ready(Ended::Io(io::Error::other(error)));
                            }
                            None => None,
                        };
                        let ended = match data {
                            Some(data) => {
                                write_data(this.framing, &data, this.out);
                                body.is_end_stream()
                            }
                            // The end, or trailers: those are sent only to a
                            // client that asked for them (TE: trailers),
                            // whose request is hyper's.
                            None => true,
                        };
                        if ended {
                            // Released before the last bytes are written,
                            // as hyper releases it.
                            *this.body = None;
                            *this.last |= finish(this.framing, this.out);
                        }
                    }
                    if let Err(error) = ready!(poll_write_out(io, cx, this.out, this.written)) {
                        return Poll::Ready(Ended::Io(error));
                    }
                    if this.body.is_none() {
                        *this.phase = Phase::Flushing;
                    } else if waiting {
                        // Everything so far is out; the body wakes the task.
                        if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                            return Poll::Ready(Ended::Io(error));
                        }
                        return Poll::Pending;
                    }
                }
                Phase::Flushing => {
                    if let Err(error) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                        return Poll::Ready(Ended::Io(error));
                    }
                    *this.phase = if *this.last || *this.draining {
                        Phase::Closing
                    } else {
                        Phase::Reading
                    };
                }
                Phase::Closing => {
                    let _ = ready!(Pin::new(&mut *io).poll_shutdown(cx));
                    return Poll::Ready(Ended::Closed);
                }
            }
        }
    }
}

/// Whether `buf` holds the end of a head (an empty line, CRLF or bare
/// LF, as httparse reads them) that begins after byte `from`, which is
/// as far as the last search went.
fn head_may_end(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len()).saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..]).any(|at| {
        let rest = &buf[from + at + 1..];
        rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n")
    })
}

/// Parses the request head at the start of `buf`. A plain request's head
/// leaves the buffer (its target and values are slices of it); anything
/// else stays, for hyper.
fn parse(buf: &mut BytesMut) -> Result<Option<http::request::Parts>, NotPlain> {
    let read = buf.split().freeze();
    let parsed = parse_head(&read);
    match &parsed {
        // Pipelined: the next request's bytes go back (rare, so copied).
        Ok(Some((_, len))) if *len < read.len() => buf.extend_from_slice(&read[*len..]),
        Ok(Some(_)) => {}
        Ok(None) | Err(NotPlain) => buf.extend_from_slice(&read),
    }
    parsed.map(|head| head.map(|(parts, _)| parts))
}

/// The parts of the plain request `read` begins with, and its head's
/// length; `None` while the head is incomplete.
fn parse_head(read: &Bytes) -> Result<Option<(http::request::Parts, usize)>, NotPlain> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(read, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(NotPlain),
    };
    if req.version != Some(1) {
        return Err(NotPlain);
    }
    let method =
        Method::from_bytes(req.method.ok_or(NotPlain)?.as_bytes()).map_err(|_| NotPlain)?;
    if method == Method::CONNECT {
        return Err(NotPlain);
    }
    let target = req.path.ok_or(NotPlain)?;
    let uri = Uri::from_maybe_shared(read.slice_ref(target.as_bytes())).map_err(|_| NotPlain)?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if !plain_field(name, field.value) {
            return Err(NotPlain);
        }
        let name = HeaderName::from_bytes(name).map_err(|_| NotPlain)?;
        let value =
            HeaderValue::from_maybe_shared(read.slice_ref(field.value)).map_err(|_| NotPlain)?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Ok(Some((parts, len)))
}

/// Whether a request field leaves the request plain: no body framing, no
/// upgrade, no expectation, no trailers asked for, no connection option
/// but keep-alive.
fn plain_field(name: &[u8], value: &[u8]) -> bool {
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    match name.len() {
        2 => !is(b"te"),
        6 => !is(b"expect"),
        7 => !is(b"upgrade"),
        10 => !is(b"connection") || value.eq_ignore_ascii_case(b"keep-alive"),
        14 => !is(b"content-length"),
        17 => !is(b"transfer-encoding"),
        _ => true,
    }
}

/// The length of a response body as its framing sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyLen {
    /// Ended already.
    None,
    Known(u64),
    Unknown,
}

/// What writing a response head needs to know of its exchange.
struct Head {
    head_request: bool,
    draining: bool,
}

impl Head {
    /// Writes the response head into `out` as hyper's server would, and
    /// says how the body is framed, whether it is sent at all, and whether
    /// the connection closes after it. A head hyper would refuse (a
    /// malformed Content-Length) is an error: nothing is written and the
    /// connection closes, as with hyper.
    fn encode(
        &self,
        response: Response<ResponseBody>,
        out: &mut Vec<u8>,
    ) -> io::Result<(Option<ResponseBody>, Framing, bool)> {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            // hyper cannot send an interim response as the final one: it
            // answers 500 and closes.
            out.extend_from_slice(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: ",
            );
            extend_date(out);
            out.extend_from_slice(b"\r\n\r\n");
            return Ok((None, Framing::Length(0), true));
        }
        let mut last = status == StatusCode::SWITCHING_PROTOCOLS || self.draining;
        // An HTTP/1.1 endpoint's fields, already as lines (the map is then
        // empty); taken before the drain adds its field to the map.
        let raw = if parts.headers.is_empty() {
            body.raw_head()
        } else {
            None
        };
        if self.draining {
            // Keep-alive is off: said so, as hyper says it.
            match parts.headers.entry(header::CONNECTION) {
                header::Entry::Occupied(mut entry) => {
                    if !entry.iter().any(|v| has_token(v.as_bytes(), b"close")) {
                        entry.append(HeaderValue::from_static("close"));
                    }
                }
                header::Entry::Vacant(entry) => {
                    entry.insert(HeaderValue::from_static("close"));
                }
            }
        }
        let len = if body.is_end_stream() {
            BodyLen::None
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyLen::Unknown, BodyLen::Known)
        };
        let http10 = parts.version == Version::HTTP_10;
        let start = out.len();
        if !http10 && status == StatusCode::OK {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
            out.extend_from_slice(b"\r\n");
        }

        let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        let can_have_length = !status.is_informational() && !no_content;
        let can_have_body = can_have_length && !self.head_request;
        let bad = |out: &mut Vec<u8>, why: &str| {
            out.truncate(start);
            Err(io::Error::new(io::ErrorKind::InvalidData, why.to_owned()))
        };
        let mut framing = Framing::Length(0);
        let (mut wrote_len, mut wrote_date) = (false, false);
        if let Some(raw) = raw {
            out.extend_from_slice(&raw.lines);
            wrote_date = raw.date;
            if raw.length {
                // As hyper does with a Content-Length field: the body's
                // own length frames it (204 and 304 never come as lines).
                wrote_len = true;
                framing = match len {
                    BodyLen::Known(known) => Framing::Length(known),
                    BodyLen::None => Framing::Length(0),
                    BodyLen::Unknown => Framing::Close,
                };
            }
        }
        // A field's first line is open: its further values join it.
        let mut open = false;
        let mut must_write_chunked = false;
        let mut prev_len = None;
        let mut current: Option<HeaderName> = None;
        for (next, value) in parts.headers.drain() {
            if let Some(name) = next {
                if std::mem::take(&mut open) {
                    close_line(out, std::mem::take(&mut must_write_chunked));
                }
                current = Some(name);
            }
            let Some(name) = current.as_ref() else {
                continue;
            };
            match *name {
                header::CONTENT_LENGTH => {
                    if wrote_len && !open {
                        return bad(out, "content-length with another framing");
                    }
                    match len {
                        BodyLen::Known(known) => {
                            if !open {
                                framing = Framing::Length(known);
                                out.extend_from_slice(b"content-length: ");
                                out.extend_from_slice(value.as_bytes());
                                wrote_len = true;
                                open = true;
                            }
                            continue;
                        }
                        BodyLen::Unknown => {
                            let Some(declared) = parse_length(&value) else {
                                return bad(out, "invalid content-length");
                            };
                            match prev_len {
                                Some(prev) if prev != declared => {
                                    return bad(out, "differing content-length values");
                                }
                                Some(_) => {}
                                None => {
                                    framing = Framing::Length(declared);
                                    out.extend_from_slice(b"content-length: ");
                                    out.extend_from_slice(value.as_bytes());
                                    wrote_len = true;
                                    open = true;
                                    prev_len = Some(declared);
                                }
                            }
                            continue;
                        }
                        // No body: the field stands only in a HEAD answer.
                        BodyLen::None if !self.head_request => continue,
                        BodyLen::None => {}
                    }
                    wrote_len = true;
                }
                header::TRANSFER_ENCODING => {
                    if wrote_len && !open {
                        return bad(out, "transfer-encoding with another framing");
                    }
                    if http10 || !can_have_body {
                        continue;
                    }
                    wrote_len = true;
                    must_write_chunked = !last_token_is(value.as_bytes(), b"chunked");
                    join(out, &mut open, b"transfer-encoding: ", &value);
                    framing = Framing::Chunked;
                    continue;
                }
                header::CONNECTION => {
                    last |= has_token(value.as_bytes(), b"close");
                    join(out, &mut open, b"connection: ", &value);
                    continue;
                }
                header::TRAILER => {
                    if http10 || !can_have_body {
                        continue;
                    }
                    join(out, &mut open, b"trailer: ", &value);
                    continue;
                }
                header::DATE => wrote_date = true,
                _ => {}
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if open {
            close_line(out, must_write_chunked);
        }

        if !wrote_len {
            framing = match len {
                BodyLen::Unknown if http10 || !can_have_body => Framing::Close,
                BodyLen::Unknown => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
                BodyLen::None | BodyLen::Known(0) => {
                    if can_have_body {
                        out.extend_from_slice(b"content-length: 0\r\n");
                    }
                    Framing::Length(0)
                }
                BodyLen::Known(known) if can_have_length => {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(known).as_bytes());
                    out.extend_from_slice(b"\r\n");
                    Framing::Length(known)
                }
                BodyLen::Known(_) => Framing::Length(0),
            };
        }
        if !can_have_body {
            framing = Framing::Length(0);
        }
        if wrote_date {
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"date: ");
            extend_date(out);
            out.extend_from_slice(b"\r\n\r\n");
        }
        // A body with nothing to send is released now (hyper does not poll
        // it either).
        let body = match framing {
            Framing::Length(0) => None,
            _ if len == BodyLen::None => None,
            _ => Some(body),
        };
        if body.is_none() {
            last |= finish(&mut framing, out);
        }
        Ok((body, framing, last))
    }
}

/// Writes a field whose values hyper joins on one line.
fn join(out: &mut Vec<u8>, open: &mut bool, first: &[u8], value: &HeaderValue) {
    if *open {
        out.extend_from_slice(b", ");
    } else {
        *open = true;
        out.extend_from_slice(first);
    }
    out.extend_from_slice(value.as_bytes());
}

fn close_line(out: &mut Vec<u8>, must_write_chunked: bool) {
    out.extend_from_slice(if must_write_chunked {
        b", chunked\r\n"
    } else {
        b"\r\n"
    });
}

/// A Content-Length field's value, by the one rule (`http1::fields`).
fn parse_length(value: &HeaderValue) -> Option<u64> {
    let mut lengths = Lengths::default();
    lengths.add(value.as_bytes()).ok()?;
    lengths.get()
}

/// Appends a data frame as its framing wants it.
fn write_data(framing: &mut Framing, data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    match framing {
        Framing::Length(left) => {
            // Beyond the declared length nothing is sent.
            let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            out.extend_from_slice(&data[..n]);
            *left -= n as u64;
        }
        Framing::Chunked => {
            write_size_line(out, data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Close => out.extend_from_slice(data),
    }
}

/// Ends the body on the wire; true if the connection must close after it
/// (a body that ended short of its length, or one delimited by the close).
fn finish(framing: &mut Framing, out: &mut Vec<u8>) -> bool {
    match *framing {
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            false
        }
        Framing::Length(left) => left > 0,
        Framing::Close => true,
    }
}

/// Writes `out` from `written` on; empties it once all is written.
fn poll_write_out<T: AsyncWrite + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
    written: &mut usize,
) -> Poll<io::Result<()>> {
    while *written < out.len() {
        match ready!(Pin::new(&mut *io).poll_write(cx, &out[*written..])) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
    *written = 0;
    if out.capacity() > KEEP_OUT {
        *out = Vec::new();
    } else {
        out.clear();
    }
    Poll::Ready(Ok(()))
}

/// Appends the current time as an HTTP date, formatted once a second.
fn extend_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == cached.1.len() {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
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
        draining: bool,
        response: Response<ResponseBody>,
    ) -> (String, bool, bool) {
        let mut out = Vec::new();
        let (body, _, last) = Head {
            head_request,
            draining,
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
    }

    #[test]
    fn only_plain_requests_are_parsed_here() {
        let parts = |head: &str| {
            let mut buf = BytesMut::from(head.as_bytes());
            parse(&mut buf).map(|p| p.map(|p| (p.method, p.uri, p.headers.len())))
        };
        let (method, uri, fields) =
            parts("GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n")
                .ok()
                .flatten()
                .expect("plain");
        assert_eq!(
            (method, uri.to_string(), fields),
            (Method::GET, "/a?b".into(), 2)
        );
        assert!(matches!(parts("GET / HTTP/1.1\r\nhost: x\r\n"), Ok(None)));
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx",
            "POST / HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
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
        // Chunked: the size in upper-case hex, as hyper writes it.
        let mut out = Vec::new();
        let mut framing = Framing::Chunked;
        write_data(&mut framing, b"abcdefghijklmnopqrstuvwxyz", &mut out);
        write_data(&mut framing, b"", &mut out);
        assert!(!finish(&mut framing, &mut out));
        assert_eq!(out, b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n");

        // A length: nothing beyond it; short of it, the connection closes.
        let mut out = Vec::new();
        let mut framing = Framing::Length(5);
        write_data(&mut framing, b"abc", &mut out);
        assert!(finish(&mut framing, &mut out));
        write_data(&mut framing, b"defgh", &mut out);
        assert!(!finish(&mut framing, &mut out));
        assert_eq!(out, b"abcde");
    }
}
