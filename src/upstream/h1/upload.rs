//! The request on its way to the endpoint: the head as the encoder writes
//! it (the framing from the body as parsed, never from the client's
//! fields), then the body, chunked or by length.

use std::io;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::{COPY_BELOW, Encoder, Failure};
use crate::body::{BodyError, RequestBody};
use crate::http1::chunk::write_size_line;
use crate::http1::fields::allowed_in_trailers;
use crate::upstream::outgoing::Outgoing;

/// A request on its way to the endpoint: the head, then the body.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) body: RequestBody,
    pub(super) encoder: Option<Encoder>,
    pub(super) out: Staged,
    /// Body bytes staged so far.
    pub(super) sent: u64,
    /// No body, or its end has been staged.
    pub(super) body_done: bool,
}

impl Upload {
    /// Ready when all of the request has been written.
    pub(super) fn poll(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Failure>> {
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
pub(super) struct Staged {
    pub(super) pre: Vec<u8>,
    pub(super) at: usize,
    pub(super) data: Bytes,
    pub(super) post: &'static [u8],
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
                // (about 0.3 us per call on loopback, docs/performance-notebook.md).
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

/// Writes the request line and headers; says how the body will be framed
/// (`None`: no body).
///
/// The framing is written here and only here, from the body as the client's
/// framing was parsed (its exact length, or none known: chunked), never
/// copied from the client's fields, which the field rewrite leaves out
/// (`Forwarding::write`). A request without a body gets `Content-Length: 0`
/// when the client sent a Content-Length.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    request: &Outgoing<'_>,
    body: &RequestBody,
) -> Option<Encoder> {
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
