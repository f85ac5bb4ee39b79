//! The response head as hyper's server writes it (`proto/h1/role.rs` in
//! hyper 1.x): lowercase names in the map's order, framing chosen by the
//! same rules, a `date` when the response has none, `connection: close`
//! while the listener drains; and the body framed as the head says.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body;

use super::output::Output;
use crate::http1::chunk::write_size_line;
use crate::http1::fields::{Lengths, has_token, last_token_is};
use crate::proxy::ResponseBody;

/// Room for a head's own lines (status line, framing, date) beyond the
/// endpoint's fields.
const HEAD_ROOM: usize = 256;

/// How the response body is framed on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteFraming {
    /// Content-Length: the bytes still to send.
    Length(u64),
    Chunked,
    /// A length unknown where chunked framing cannot be used (an HTTP/1.0
    /// response): the body ends with the connection.
    Close,
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
pub(super) struct Head {
    pub(super) head_request: bool,
    /// The connection closes after this response (the listener drains,
    /// or the request said `Connection: close`): the head says so.
    pub(super) closing: bool,
}

impl Head {
    /// Writes the response head into `out` as hyper's server would, and
    /// says how the body is framed, whether it is sent at all, and whether
    /// the connection closes after it. A head hyper would refuse (a
    /// malformed Content-Length) is an error: nothing is written and the
    /// connection closes, as with hyper.
    pub(super) fn encode(
        &self,
        response: Response<ResponseBody>,
        out: &mut Vec<u8>,
    ) -> io::Result<(Option<ResponseBody>, WriteFraming, bool)> {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(interim_as_final(out));
        }
        // An HTTP/1.1 endpoint's fields, already as lines (the map is then
        // empty); taken before the drain adds its field to the map.
        let raw = if parts.headers.is_empty() {
            body.raw_head()
        } else {
            None
        };
        // A map with no field but the one said here (the fields are lines,
        // or there are none) would write it first: written so, no map.
        let close_line = self.closing && parts.headers.is_empty();
        if self.closing && !close_line {
            say_close(&mut parts.headers);
        }
        let len = if body.is_end_stream() {
            BodyLen::None
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyLen::Unknown, BodyLen::Known)
        };
        let http10 = parts.version == Version::HTTP_10;
        // Once per new connection: the head's buffer grows once, not by
        // doubling from nothing.
        out.reserve(HEAD_ROOM + raw.map_or(0, |raw| raw.lines.len()));
        let start = out.len();
        write_status_line(out, http10, status);
        let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        let can_have_length = !status.is_informational() && !no_content;
        let mut fields = Fields {
            len,
            http10,
            can_have_body: can_have_length && !self.head_request,
            head_request: self.head_request,
            framing: WriteFraming::Length(0),
            wrote_len: false,
            wrote_date: false,
            last: status == StatusCode::SWITCHING_PROTOCOLS || self.closing,
            open: false,
            must_write_chunked: false,
            prev_len: None,
        };
        if let Some(raw) = raw {
            out.extend_from_slice(&raw.lines);
            fields.wrote_date = raw.date;
            if raw.length {
                // As hyper does with a Content-Length field: the body's
                // own length frames it (204 and 304 never come as lines).
                fields.wrote_len = true;
                fields.framing = match len {
                    BodyLen::Known(known) => WriteFraming::Length(known),
                    BodyLen::None => WriteFraming::Length(0),
                    BodyLen::Unknown => WriteFraming::Close,
                };
            }
        }
        if close_line {
            out.extend_from_slice(b"connection: close\r\n");
        }
        if let Err(why) = fields.write_all(&mut parts.headers, out) {
            out.truncate(start);
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        let mut framing = fields.framing;
        if !fields.wrote_len {
            framing = frame_by_length(len, http10, can_have_length, fields.can_have_body, out);
        }
        if !fields.can_have_body {
            framing = WriteFraming::Length(0);
        }
        end_head(out, fields.wrote_date);
        // A body with nothing to send is released now (hyper does not poll
        // it either).
        let body = match framing {
            WriteFraming::Length(0) => None,
            _ if len == BodyLen::None => None,
            _ => Some(body),
        };
        let mut last = fields.last;
        if body.is_none() {
            last |= finish_into(&mut framing, out);
        }
        Ok((body, framing, last))
    }
}

/// hyper cannot send an interim response as the final one: it answers 500
/// and closes.
fn interim_as_final(out: &mut Vec<u8>) -> (Option<ResponseBody>, WriteFraming, bool) {
    out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
    end_head(out, false);
    (None, WriteFraming::Length(0), true)
}

/// Ends the head, with a `date` field first unless the response had one.
fn end_head(out: &mut Vec<u8>, wrote_date: bool) {
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        extend_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Keep-alive is off (draining, or the client asked): said so, as hyper
/// says it.
fn say_close(headers: &mut HeaderMap) {
    match headers.entry(header::CONNECTION) {
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

fn write_status_line(out: &mut Vec<u8>, http10: bool, status: StatusCode) {
    if !http10 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The framing of a response whose fields set none: the body's own length,
/// or chunked, or the close.
fn frame_by_length(
    len: BodyLen,
    http10: bool,
    can_have_length: bool,
    can_have_body: bool,
    out: &mut Vec<u8>,
) -> WriteFraming {
    match len {
        BodyLen::Unknown if http10 || !can_have_body => WriteFraming::Close,
        BodyLen::Unknown => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            WriteFraming::Chunked
        }
        BodyLen::None | BodyLen::Known(0) => {
            if can_have_body {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            WriteFraming::Length(0)
        }
        BodyLen::Known(known) if can_have_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(known).as_bytes());
            out.extend_from_slice(b"\r\n");
            WriteFraming::Length(known)
        }
        BodyLen::Known(_) => WriteFraming::Length(0),
    }
}

/// The response's fields on their way out: what they said of the framing
/// and the connection, and the line being written.
struct Fields {
    len: BodyLen,
    http10: bool,
    can_have_body: bool,
    head_request: bool,
    framing: WriteFraming,
    /// A framing field (Content-Length, Transfer-Encoding) was written.
    wrote_len: bool,
    wrote_date: bool,
    /// The connection closes after the response.
    last: bool,
    /// A field's first line is open: its further values join it.
    open: bool,
    /// The open Transfer-Encoding line must end with `chunked`.
    must_write_chunked: bool,
    /// The Content-Length value written, when the body's length is unknown.
    prev_len: Option<u64>,
}

impl Fields {
    /// Writes (and takes) every field of `headers`, in the map's order; why the head
    /// cannot be written, if it cannot.
    fn write_all(
        &mut self,
        headers: &mut HeaderMap,
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        let mut current: Option<HeaderName> = None;
        for (next, value) in headers.drain() {
            if let Some(name) = next {
                if std::mem::take(&mut self.open) {
                    close_line(out, std::mem::take(&mut self.must_write_chunked));
                }
                current = Some(name);
            }
            let Some(name) = current.as_ref() else {
                continue;
            };
            self.write(name, &value, out)?;
        }
        if self.open {
            close_line(out, self.must_write_chunked);
        }
        Ok(())
    }

    /// Writes one value of field `name`.
    fn write(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        match *name {
            header::CONTENT_LENGTH => {
                if self.wrote_len && !self.open {
                    return Err("content-length with another framing");
                }
                match self.len {
                    BodyLen::Known(known) => {
                        if !self.open {
                            self.open_length(WriteFraming::Length(known), value, out);
                        }
                        return Ok(());
                    }
                    BodyLen::Unknown => {
                        let Some(declared) = parse_length(value) else {
                            return Err("invalid content-length");
                        };
                        match self.prev_len {
                            Some(prev) if prev != declared => {
                                return Err("differing content-length values");
                            }
                            Some(_) => {}
                            None => {
                                self.open_length(WriteFraming::Length(declared), value, out);
                                self.prev_len = Some(declared);
                            }
                        }
                        return Ok(());
                    }
                    // No body: the field stands only in a HEAD answer.
                    BodyLen::None if !self.head_request => return Ok(()),
                    BodyLen::None => {}
                }
                self.wrote_len = true;
            }
            header::TRANSFER_ENCODING => {
                if self.wrote_len && !self.open {
                    return Err("transfer-encoding with another framing");
                }
                if self.http10 || !self.can_have_body {
                    return Ok(());
                }
                self.wrote_len = true;
                self.must_write_chunked = !last_token_is(value.as_bytes(), b"chunked");
                join(out, &mut self.open, b"transfer-encoding: ", value);
                self.framing = WriteFraming::Chunked;
                return Ok(());
            }
            header::CONNECTION => {
                self.last |= has_token(value.as_bytes(), b"close");
                join(out, &mut self.open, b"connection: ", value);
                return Ok(());
            }
            header::TRAILER => {
                if !self.http10 && self.can_have_body {
                    join(out, &mut self.open, b"trailer: ", value);
                }
                return Ok(());
            }
            header::DATE => self.wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Starts the Content-Length line, which frames the body.
    fn open_length(&mut self, framing: WriteFraming, value: &HeaderValue, out: &mut Vec<u8>) {
        self.framing = framing;
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(value.as_bytes());
        self.wrote_len = true;
        self.open = true;
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
pub(super) fn write_data(framing: &mut WriteFraming, mut data: Bytes, out: &mut Output) {
    if data.is_empty() {
        return;
    }
    match framing {
        WriteFraming::Length(left) => {
            // Beyond the declared length nothing is sent.
            data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= data.len() as u64;
            out.push_data(data);
        }
        WriteFraming::Chunked => {
            write_size_line(out.copy_buf(), data.len());
            out.push_data(data);
            out.copy_buf().extend_from_slice(b"\r\n");
        }
        WriteFraming::Close => out.push_data(data),
    }
}

/// Ends the body on the wire; true if the connection must close after it
/// (a body that ended short of its length, or one delimited by the close).
pub(super) fn finish(framing: &mut WriteFraming, out: &mut Output) -> bool {
    finish_into(framing, out.copy_buf())
}

fn finish_into(framing: &mut WriteFraming, out: &mut Vec<u8>) -> bool {
    match *framing {
        WriteFraming::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            false
        }
        WriteFraming::Length(left) => left > 0,
        WriteFraming::Close => true,
    }
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
