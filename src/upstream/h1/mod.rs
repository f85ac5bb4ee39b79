//! HTTP/1.1 to an endpoint, driven inside the request's own task.
//!
//! hyper's `client::conn::http1` runs each connection as a task of its own
//! and passes every request and response through channels between that task
//! and the request's; callgrind counted about 10,000 instructions per
//! request for it (a minimal hyper proxy: 25,400 per request with it, 15,500
//! with this way; docs/performance-notebook.md). Here the request's task writes the
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
//!
//! The folder: this file holds the connection and one exchange on it;
//! `upload.rs` writes the request (head and body), `response_head.rs`
//! reads the response head, `body.rs` decodes the response body as the
//! client takes it, and `check.rs` holds the fuzz targets' checks.

mod body;
mod check;
pub mod failure;
pub mod pool;
mod response_head;
mod upload;

use std::future::poll_fn;
use std::io::{self};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, response};
use tokio::net::TcpStream;

use super::outgoing::Outgoing;
use crate::body::RequestBody;
use crate::http1::chunk::{self};
pub use failure::Failure;

pub use body::Http1Body;
pub(crate) use check::{check_chunked_decoder, check_response_head};
use response_head::{Names, parse_response_head};
use upload::{Staged, Upload, encode_head};

/// Headers in a response head, as hyper allows by default.
const MAX_RESPONSE_FIELDS: usize = 100;
/// A response head larger than this is refused (hyper's default buffer
/// ceiling).
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;
/// A trailer section longer than this is refused.
const MAX_TRAILERS: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8192;
/// Bytes asked per read of a body with more than this left (or of
/// unknown length): a large body comes in frames of up to this size,
/// which the client's side writes without copying them.
const BODY_READ_CHUNK: usize = 64 * 1024;
/// A data frame up to this size is copied next to its framing so that it
/// goes out in the same write as the head.
const COPY_BELOW: usize = 1024;

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
pub enum ResponseFraming {
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
    pub framing: ResponseFraming,
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
    /// read afterwards through [`Http1Body`]. `response_timeout` is the
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
                let parsed = parse_response_head(
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
                if self.read.len() > MAX_RESPONSE_HEAD {
                    return Poll::Ready(Err(Failure::Invalid("response head too large")));
                }
                match ready!(poll_read(&mut self.io, cx, &mut self.read, READ_CHUNK)) {
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
                if answer.framing == ResponseFraming::Chunked
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

/// Reads what the socket has into `buf`; 0 at its end.
fn poll_read(
    io: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

#[cfg(test)]
mod tests;
