//! fulcrum's own HTTP/1.1 server side for plain requests: an HTTP/1.1
//! head with no body, no upgrade, no expectation and no connection option
//! but keep-alive or close, which is what nearly all traffic is. The head
//! is parsed where it was read, the request built from slices of that
//! buffer, and the response head and body gathered into one buffer, sent
//! with one write; body frames of 16 KiB or more are queued beside it, not
//! copied, and go out in the same vectored write.
//!
//! Everything else stays hyper's. At the first request that is not plain,
//! or a head that does not parse or grows past [`MAX_PLAIN_HEAD`], the connection
//! is handed to hyper's HTTP/1 server with the bytes read so far
//! ([`Ended::Hyper`]), so error answers (400, 414, 431), request bodies,
//! `Expect: 100-continue`, upgrades and HTTP/1.0 keep hyper's behaviour. The
//! response is written as hyper writes it (`proto/h1/role.rs` in hyper
//! 1.x): lowercase names in the map's order, framing chosen by the same
//! rules, a `date` when the response has none, `connection: close` added
//! while the listener drains. An HTTP/1.1 endpoint's fields come as
//! ready-written lines (`upstream::RawHead`) and are copied as they are.
//!
//! This file serves the connection; `request.rs` parses a plain request's
//! head, `response.rs` writes the response head and frames its body,
//! `output.rs` holds the response on its way out.

mod output;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures_util::future::OptionFuture;
use http::{Method, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::Interim;
use crate::proxy::ResponseBody;
use output::Output;
use request::NotPlain;
use response::{Head, WriteFraming};

/// A plain request read the way [`Server`] reads one: its parts and
/// whether it asked to close; `None` when it is not plain or not whole
/// (`fuzzing.rs` holds it against hyper's server).
#[doc(hidden)]
pub fn parse_plain(head: &[u8]) -> Option<(http::request::Parts, bool)> {
    let mut buf = BytesMut::from(head);
    match request::parse(&mut buf) {
        Ok(Some(request::Plain { parts, close })) => Some((parts, close)),
        Ok(None) | Err(request::NotPlain) => None,
    }
}

/// Header fields a plain request may have; more, and hyper reads it.
const MAX_PLAIN_FIELDS: usize = 64;
/// A head not complete within this many bytes is left to hyper, whose
/// limits then apply as before.
pub const MAX_PLAIN_HEAD: usize = 8192;
/// What a read asks for at least.
const READ_SIZE: usize = 4096;
/// Body bytes gathered before they are written, from frames already
/// read: a client that reads slowly holds at most this and one frame.
/// Writes of 256 KiB against 64 KiB: 4 instead of 16 `writev` per 1 MiB
/// response and about a quarter less CPU per request, on both sides of
/// loopback (docs/performance-notebook.md, "Large bodies, written in
/// larger batches").
const WRITE_HIGH: usize = 256 * 1024;

pin_project_lite::pin_project! {
    #[project = ServerProj]
    /// One HTTP/1.1 connection served without hyper, until it ends or a
    /// request needs hyper. Boxed by its owner: the request's future lives
    /// inside it.
    pub struct Server<T, F> {
        io: Option<T>,
        // Bytes read and not yet parsed; a request's head is split off and
        // shared by its header values and target.
        buf: BytesMut,
        // The response being written.
        out: Output,
        phase: Phase,
        #[pin]
        handling: OptionFuture<F>,
        body: Option<ResponseBody>,
        framing: WriteFraming,
        head_request: bool,
        // How much of `buf` was searched for the end of a head, in vain.
        searched: usize,
        // The connection closes once this response is written.
        last: bool,
        // The request in hand asked for the connection to close.
        close_asked: bool,
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

/// The connection under [`Server`].
pub trait Stream: AsyncRead + AsyncWrite + Unpin {
    /// Whether the server side shuts the stream down before it lets go of
    /// it at the end of the connection (TLS: its `close_notify`); when not,
    /// dropping it closes it.
    fn shutdown_before_close(&self) -> bool;
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

impl<T, F> Server<T, F>
where
    T: Stream,
    F: Future<Output = Response<ResponseBody>>,
{
    /// Serves `io`, whose first bytes (if any were read) are in `buf`,
    /// which it goes on reading into (it grows the buffer as it needs).
    pub fn new(io: T, buf: BytesMut) -> Self {
        Self {
            io: Some(io),
            buf,
            out: Output::default(),
            phase: Phase::Reading,
            handling: None.into(),
            body: None,
            framing: WriteFraming::Length(0),
            head_request: false,
            searched: 0,
            last: false,
            close_asked: false,
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
    pub fn take_io(self: Pin<&mut Self>) -> Option<(T, BytesMut)> {
        let this = self.project();
        let io = this.io.take()?;
        Some((io, std::mem::take(this.buf)))
    }

    /// Serves requests until the connection ends, needs hyper, or waits.
    pub fn poll_serve<H>(self: Pin<&mut Self>, cx: &mut Context<'_>, handler: &H) -> Poll<Ended>
    where
        H: Fn(http::request::Parts, &Arc<Interim>) -> F,
    {
        let mut this = self.project();
        if this.io.is_none() {
            return Poll::Ready(Ended::Closed);
        }
        loop {
            let turn = match *this.phase {
                Phase::Reading => this.poll_reading(cx, handler),
                Phase::Handling => this.poll_handling(cx),
                Phase::Writing => this.poll_writing(cx),
                Phase::Flushing => this.poll_flushing(cx),
                Phase::Closing => {
                    let io = this.io.as_mut().expect("checked above");
                    if io.shutdown_before_close() {
                        let _ = ready!(Pin::new(io).poll_shutdown(cx));
                    }
                    return Poll::Ready(Ended::Closed);
                }
            };
            if let Turn::Stop(poll) = turn {
                return poll;
            }
        }
    }
}

/// What one step of a phase asks of the serving loop.
enum Turn {
    /// Go round again (the phase may have changed).
    Again,
    /// Return this.
    Stop(Poll<Ended>),
}

impl<T, F> ServerProj<'_, T, F>
where
    T: Stream,
    F: Future<Output = Response<ResponseBody>>,
{
    /// Reads until a whole head is there, and starts its request.
    #[inline]
    fn poll_reading<H>(&mut self, cx: &mut Context<'_>, handler: &H) -> Turn
    where
        H: Fn(http::request::Parts, &Arc<Interim>) -> F,
    {
        // Parsed only once the end of a head may be there: a head trickled
        // in byte by byte costs linear time.
        if request::head_may_end(self.buf, *self.searched) {
            *self.searched = 0;
            match request::parse(self.buf) {
                Ok(Some(request::Plain { parts, close })) => {
                    *self.head_request = parts.method == Method::HEAD;
                    *self.close_asked = close;
                    self.handling.set(Some(handler(parts, self.interim)).into());
                    *self.phase = Phase::Handling;
                    return Turn::Again;
                }
                Ok(None) => {}
                Err(NotPlain) => return Turn::Stop(Poll::Ready(Ended::Hyper)),
            }
        }
        *self.searched = self.buf.len();
        if self.buf.len() > MAX_PLAIN_HEAD {
            return Turn::Stop(Poll::Ready(Ended::Hyper));
        }
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let io = self.io.as_mut().expect("served");
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, self.buf) {
            Poll::Pending => Turn::Stop(Poll::Pending),
            // The client closed: between requests, a plain end; within a
            // head, hyper answers what came.
            Poll::Ready(Ok(0)) if self.buf.is_empty() => {
                *self.phase = Phase::Closing;
                Turn::Again
            }
            Poll::Ready(Ok(0)) => Turn::Stop(Poll::Ready(Ended::Hyper)),
            Poll::Ready(Ok(_)) => Turn::Again,
            Poll::Ready(Err(error)) => Turn::Stop(Poll::Ready(Ended::Io(error))),
        }
    }

    /// Waits for the response, writing interim heads as they come and
    /// watching the client; then writes the response head.
    #[inline]
    fn poll_handling(&mut self, cx: &mut Context<'_>) -> Turn {
        if let Poll::Ready(response) = self.handling.as_mut().poll(cx) {
            self.handling.set(None.into());
            // Interim heads pushed in this same poll go first.
            let early = self.interim.take();
            if !early.is_empty() {
                self.out.copy_buf().extend_from_slice(&early);
            }
            let Some(response) = response else {
                return Turn::Stop(Poll::Ready(Ended::Closed));
            };
            let head = Head {
                head_request: *self.head_request,
                closing: *self.draining || *self.close_asked,
            };
            match head.encode(response, self.out.copy_buf()) {
                Ok((body, framing, last)) => {
                    *self.body = body;
                    *self.framing = framing;
                    *self.last = last;
                }
                Err(error) => return Turn::Stop(Poll::Ready(Ended::Io(error))),
            }
            *self.phase = Phase::Writing;
            return Turn::Again;
        }
        let io = self.io.as_mut().expect("served");
        // Interim responses (103 Early Hints) go out as they come, ahead of
        // the final one.
        let early = self.interim.take();
        if !early.is_empty() {
            self.out.copy_buf().extend_from_slice(&early);
        }
        if !self.out.is_empty() {
            match self.out.poll_write(io, cx) {
                Poll::Ready(Ok(())) => {
                    if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                        return Turn::Stop(Poll::Ready(Ended::Io(error)));
                    }
                }
                Poll::Ready(Err(error)) => return Turn::Stop(Poll::Ready(Ended::Io(error))),
                Poll::Pending => {}
            }
        }
        // A client that leaves ends its request, as with hyper: the
        // request's future is dropped with this connection.
        if self.buf.is_empty() {
            let mut storage = [MaybeUninit::<u8>::uninit(); 512];
            let mut read = ReadBuf::uninit(&mut storage);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    return Turn::Stop(Poll::Ready(Ended::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection with a request in flight",
                    ))));
                }
                // Pipelined: kept for after this response.
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
                Poll::Ready(Err(error)) => return Turn::Stop(Poll::Ready(Ended::Io(error))),
                Poll::Pending => {}
            }
        }
        Turn::Stop(Poll::Pending)
    }

    /// Gathers body frames (up to [`WRITE_HIGH`] bytes) behind the head
    /// and writes them.
    #[inline]
    fn poll_writing(&mut self, cx: &mut Context<'_>) -> Turn {
        let mut waiting = false;
        while self.out.len() < WRITE_HIGH {
            let Some(body) = self.body.as_mut() else {
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
                    // What was sent stands; the client sees the response
                    // cut short.
                    *self.body = None;
                    return Turn::Stop(Poll::Ready(Ended::Io(io::Error::other(error))));
                }
                None => None,
            };
            let ended = match data {
                Some(data) => {
                    response::write_data(self.framing, data, self.out);
                    body.is_end_stream()
                }
                // The end, or trailers: those are sent only to a client
                // that asked for them (TE: trailers), whose request is
                // hyper's.
                None => true,
            };
            if ended {
                // Released before the last bytes are written, as hyper
                // releases it.
                *self.body = None;
                *self.last |= response::finish(self.framing, self.out);
            }
        }
        let io = self.io.as_mut().expect("served");
        match self.out.poll_write(io, cx) {
            Poll::Pending => return Turn::Stop(Poll::Pending),
            Poll::Ready(Err(error)) => return Turn::Stop(Poll::Ready(Ended::Io(error))),
            Poll::Ready(Ok(())) => {}
        }
        if self.body.is_none() {
            *self.phase = Phase::Flushing;
        } else if waiting {
            // Everything so far is out; the body wakes the task.
            if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                return Turn::Stop(Poll::Ready(Ended::Io(error)));
            }
            return Turn::Stop(Poll::Pending);
        }
        Turn::Again
    }

    /// Flushes the response; then the next request, or the close.
    #[inline]
    fn poll_flushing(&mut self, cx: &mut Context<'_>) -> Turn {
        let io = self.io.as_mut().expect("served");
        match Pin::new(io).poll_flush(cx) {
            Poll::Pending => return Turn::Stop(Poll::Pending),
            Poll::Ready(Err(error)) => return Turn::Stop(Poll::Ready(Ended::Io(error))),
            Poll::Ready(Ok(())) => {}
        }
        *self.phase = if *self.last || *self.draining {
            Phase::Closing
        } else {
            Phase::Reading
        };
        Turn::Again
    }
}
