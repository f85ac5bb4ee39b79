//! A plain request's head, parsed where it was read: its target and values
//! are slices of the read buffer. Anything that is not plain stays in the
//! buffer, for hyper.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use super::MAX_PLAIN_FIELDS;

/// The request at the start of the buffer is not a plain one, or not one
/// fulcrum parses itself: it is hyper's.
pub(super) struct NotPlain;

/// Whether `buf` holds the end of a head (an empty line, CRLF or bare
/// LF, as httparse reads them) that begins after byte `from`, which is
/// as far as the last search went.
pub(super) fn head_may_end(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len()).saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..]).any(|at| {
        let rest = &buf[from + at + 1..];
        rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n")
    })
}

/// A plain request, and whether it asked for the connection to close
/// after its response (`Connection: close`).
pub(super) struct Plain {
    pub(super) parts: http::request::Parts,
    pub(super) close: bool,
}

/// Parses the request head at the start of `buf`. A plain request's head
/// leaves the buffer (its target and values are slices of it); anything
/// else stays, for hyper.
pub(super) fn parse(buf: &mut BytesMut) -> Result<Option<Plain>, NotPlain> {
    let read = buf.split().freeze();
    let parsed = parse_request_head(&read);
    match &parsed {
        // Pipelined: the next request's bytes go back (rare, so copied).
        Ok(Some((_, len))) if *len < read.len() => buf.extend_from_slice(&read[*len..]),
        Ok(Some(_)) => {}
        Ok(None) | Err(NotPlain) => buf.extend_from_slice(&read),
    }
    parsed.map(|head| head.map(|(plain, _)| plain))
}

/// The parts of the plain request `read` begins with, and its head's
/// length; `None` while the head is incomplete.
fn parse_request_head(read: &Bytes) -> Result<Option<(Plain, usize)>, NotPlain> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PLAIN_FIELDS];
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
    let mut close = false;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        match plain_field(name, field.value) {
            Field::Plain => {}
            Field::Close => close = true,
            Field::NotPlain => return Err(NotPlain),
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
    Ok(Some((Plain { parts, close }, len)))
}

/// What a request field makes of the request.
#[derive(Debug, PartialEq, Eq)]
enum Field {
    Plain,
    /// `Connection: close`: plain, and the connection closes after the
    /// response (as hyper's server does it).
    Close,
    NotPlain,
}

/// Whether a request field leaves the request plain: no body framing, no
/// upgrade, no expectation, no trailers asked for, no connection option
/// but keep-alive or close (one token).
fn plain_field(name: &[u8], value: &[u8]) -> Field {
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    let plain = match name.len() {
        2 => !is(b"te"),
        6 => !is(b"expect"),
        7 => !is(b"upgrade"),
        10 if is(b"connection") => {
            if value.eq_ignore_ascii_case(b"close") {
                return Field::Close;
            }
            value.eq_ignore_ascii_case(b"keep-alive")
        }
        14 => !is(b"content-length"),
        17 => !is(b"transfer-encoding"),
        _ => true,
    };
    if plain { Field::Plain } else { Field::NotPlain }
}
