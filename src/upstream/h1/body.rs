//! A response body read from the endpoint's connection as the client takes
//! it (by length, chunked with trailers, or to the close); at its end the
//! connection goes back to its pool.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::pool::Lease;
use super::{
    BODY_READ_CHUNK, Failure, MAX_RESPONSE_FIELDS, MAX_TRAILERS, READ_CHUNK, RawHead,
    ResponseFraming, poll_read,
};
use crate::http1::chunk;
use crate::http1::fields::allowed_in_trailers;

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy)]
pub(super) enum Decode {
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
pub(super) enum Step {
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
pub(super) fn decode_step(decode: &mut Decode, read: &mut BytesMut) -> Step {
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

/// What one read of the body asks of the socket: as much as is left of a
/// known length (within [`READ_CHUNK`] and [`BODY_READ_CHUNK`]), the most
/// for a chunked body's data or one that ends with the connection.
fn read_size(decode: Decode) -> usize {
    match decode {
        Decode::Length(left) | Decode::ChunkData(left) => usize::try_from(left)
            .map_or(BODY_READ_CHUNK, |left| {
                left.clamp(READ_CHUNK, BODY_READ_CHUNK)
            }),
        Decode::Close => BODY_READ_CHUNK,
        _ => READ_CHUNK,
    }
}

/// The fields of a trailer section that may pass (no framing, routing or
/// hop-by-hop field); `None` if they do not parse.
pub(super) fn trailer_fields(section: &[u8]) -> Option<HeaderMap> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
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
pub struct Http1Body {
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

impl Http1Body {
    /// The body after a response head with `framing` on the lease's
    /// connection.
    pub fn new(lease: Lease, framing: ResponseFraming, raw: Option<RawHead>) -> Self {
        let decode = match framing {
            ResponseFraming::Empty | ResponseFraming::Upgrade => Decode::Done,
            ResponseFraming::Length(n) => Decode::Length(n),
            ResponseFraming::Chunked => Decode::ChunkSize,
            ResponseFraming::Close => Decode::Close,
        };
        let mut body = Self {
            lease: Some(lease),
            raw,
            decode,
            failed: None,
        };
        if matches!(decode, Decode::Done) && framing != ResponseFraming::Upgrade {
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

impl Body for Http1Body {
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
            match poll_read(&mut conn.io, cx, &mut conn.read, read_size(this.decode)) {
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
