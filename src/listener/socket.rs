//! The client's socket as every server side reads it: notes when a request
//! head begins (for the timer), follows the HTTP/1 requests hyper reads
//! (`http1::stream`), watches an HTTP/2 client's frames (`h2_guard`),
//! replays bytes read ahead, and tells HTTP/2 from HTTP/1 by the first
//! bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection_state::ConnectionState;
use super::h2_guard::{Abuse, FrameWatch};
use crate::http1::Refusal;
use crate::http1::stream::{RequestStream, Verdicts};

/// The socket, noting when a new request head begins to arrive, following
/// the HTTP/1 requests hyper reads (`http1::stream`),
/// HTTP/1 heads for a Content-Length/Transfer-Encoding conflict, and
/// watching an HTTP/2 client's frames (`h2_guard`).
pub(super) struct Socket<S> {
    pub(super) inner: S,
    pub(super) state: Arc<ConnectionState>,
    /// Follows the requests while hyper reads HTTP/1 from the socket.
    pub(super) stream: Option<Box<Followed>>,
    pub(super) max_header_bytes: usize,
    /// Present once the client sent the HTTP/2 preface.
    pub(super) h2: Option<Box<FrameWatch>>,
    /// Bytes already read (and checked), to be read again first: those that
    /// told the protocol, or those hyper read ahead before the connection
    /// parked.
    pub(super) replay: BytesMut,
    /// Upgraded: the bytes are no longer HTTP.
    pub(super) passthrough: bool,
    /// fulcrum's own server side reads the connection: requests are not
    /// followed, as it parses each head itself and hands every one with a
    /// body (and the rest of the stream) to hyper, followed from there
    /// (`hand_to_hyper`).
    pub(super) plain: bool,
    /// Where TCP_NODELAY stands (`Nodelay`).
    nodelay: Nodelay,
}

/// What the first read of a connection asks for: 1 KiB, as nginx's
/// `client_header_buffer_size`. fulcrum's server side goes on with this
/// buffer and grows it to 4 KiB and up once a head or pipelined requests
/// need more (on a keep-alive connection, at its second read). Up to 1 KiB
/// is mimalloc's fast path: a new connection took about 300 instructions
/// fewer than with 4 KiB (docs/performance-notebook.md).
const DETECT_READ: usize = 1024;

/// The follower of the requests hyper reads, and where its verdicts go
/// (shared with the requests, through `ConnectionState::handovers`).
pub(super) struct Followed {
    stream: RequestStream,
    verdicts: Arc<Verdicts>,
}

/// TCP_NODELAY on a plain TCP connection is set before its second write,
/// not when it is accepted. Nagle's algorithm holds a small segment back
/// only while data sent before it is unacknowledged, and nothing is before
/// a connection's first write, so that write goes out at once either way;
/// a connection that closes after one write (`Connection: close` with a
/// whole response in it) never makes the call, as with nginx, which sets
/// it on keep-alive connections only. A TLS connection has it set at
/// accept: the handshake writes before this wrapper exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nodelay {
    Set,
    AfterFirstWrite,
    BeforeNextWrite,
}

/// A transport a parked connection can wait on without holding a buffer.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when bytes, or the end of the stream, can be read.
    fn poll_read_ready(&self, task: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// TLS negotiated HTTP/2 (ALPN `h2`): the connection must begin with
    /// the HTTP/2 client preface, and is not served as HTTP/1.1.
    fn http2_negotiated(&self) -> bool {
        false
    }

    /// Whether ending the connection takes a shutdown of its own before the
    /// stream is dropped: TLS sends its `close_notify` alert then. A TCP
    /// socket's FIN goes out with its `close` (or its RST, when unread
    /// bytes are left, shut down or not): no `shutdown` call needed.
    fn shutdown_before_close(&self) -> bool {
        true
    }

    /// Sets TCP_NODELAY on the socket underneath, if that is left to the
    /// first writes (`Nodelay`).
    fn set_nodelay(&self) {}
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, task: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, task)
    }

    fn shutdown_before_close(&self) -> bool {
        false
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, task: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A connection parks only after a read found nothing, so rustls
        // holds no plaintext: the socket is what to wait on.
        self.get_ref().0.poll_read_ready(task)
    }

    fn http2_negotiated(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// What the first bytes of a connection show.
pub(super) enum Detected {
    Http1,
    Http2,
    /// TLS negotiated HTTP/2 and the client sent something else.
    NotThePreface,
    /// Closed before sending anything.
    Nothing,
}

impl<S> Socket<S> {
    /// Shows the frame watch what h2 wrote, so it knows where a GOAWAY
    /// could go (`h2_guard`).
    #[cold]
    pub(super) fn follow_http2_writes(
        &mut self,
        bufs: &[io::IoSlice<'_>],
        result: &Poll<io::Result<usize>>,
    ) {
        let (Some(watch), Poll::Ready(Ok(n))) = (self.h2.as_mut(), result) else {
            return;
        };
        let mut left = *n;
        for buf in bufs {
            let take = left.min(buf.len());
            watch.wrote(&buf[..take]);
            left -= take;
        }
    }

    pub(super) fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result
            && *n > 0
        {
            let a = &self.state;
            a.last_io_ms.store(a.now_ms(), Ordering::Relaxed);
            a.unflushed.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn new(inner: S, state: &Arc<ConnectionState>, max_header_bytes: usize) -> Self {
        Self {
            inner,
            state: Arc::clone(state),
            stream: None,
            max_header_bytes,
            h2: None,
            replay: BytesMut::new(),
            passthrough: false,
            plain: false,
            nodelay: if state.https {
                Nodelay::Set
            } else {
                Nodelay::AfterFirstWrite
            },
        }
    }

    pub(super) fn has_replay(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Keeps what hyper read ahead (copied: hyper's buffer is freed); the
    /// follower stops with hyper.
    pub(super) fn park(&mut self, read_ahead: &[u8]) {
        self.replay = BytesMut::from(read_ahead);
        self.stream = None;
    }

    /// Leaves the parked state: bytes read ahead begin the next head.
    pub(super) fn unpark(&mut self) {
        if self.has_replay() {
            let a = &self.state;
            a.since_ms.store(a.now_ms(), Ordering::Release);
            a.reading_head.store(true, Ordering::Release);
            a.rearm.store(true, Ordering::Release);
        }
        self.state.read_blocked.store(false, Ordering::Relaxed);
    }

    /// Hands the connection from fulcrum's own server side to hyper:
    /// `read_ahead` (read, not served, beginning with a request head) is
    /// followed as bytes just read would be, and replayed. The refusal of
    /// the first request, if the follower refuses it: nothing is handed
    /// over then, as hyper would answer some of these itself with no cause.
    pub(super) fn hand_to_hyper(&mut self, read_ahead: BytesMut) -> Option<Refusal> {
        self.plain = false;
        let verdicts = Arc::new(Verdicts::default());
        let mut stream = RequestStream::new(hard_limit(self.max_header_bytes));
        if let Some(refused) = stream.feed(&read_ahead) {
            if refused.message == 0 {
                return Some(refused.refusal);
            }
            verdicts.record(refused);
        }
        if let Ok(mut handovers) = self.state.handovers.lock() {
            handovers.verdicts = Some(Arc::clone(&verdicts));
        }
        self.stream = Some(Box::new(Followed { stream, verdicts }));
        self.replay = read_ahead;
        None
    }

    /// Checks bytes just read: an HTTP/2 client's frames, or the HTTP/1
    /// requests hyper reads.
    pub(super) fn check(&mut self, bytes: &[u8]) -> Result<(), Abuse> {
        if let Some(watch) = &mut self.h2 {
            return watch.feed(bytes);
        }
        if let Some(followed) = self.stream.as_mut().filter(|f| !f.stream.stopped())
            && let Some(refused) = followed.stream.feed(bytes)
        {
            followed.verdicts.record(refused);
        }
        Ok(())
    }

    /// Starts the HTTP/2 frame watch on a connection that sent the client
    /// preface, with what was read so far.
    pub(super) fn watch_http2(&mut self) -> Result<(), Abuse> {
        let mut watch = FrameWatch::new(self.max_header_bytes);
        let fed = watch.feed(&self.replay);
        self.h2 = Some(Box::new(watch));
        fed
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Reads from the socket, noting a request head's start and checking
    /// what arrives.
    pub(super) fn poll_read_checked(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_pending() {
            self.state.read_blocked.store(true, Ordering::Relaxed);
        }
        if buf.filled().len() > before {
            let a = &self.state;
            let now = a.now_ms();
            a.last_io_ms.store(now, Ordering::Relaxed);
            a.read_blocked.store(false, Ordering::Relaxed);
            if a.in_flight.load(Ordering::Acquire) == 0
                && !a.reading_head.load(Ordering::Relaxed)
                && !a.http2.load(Ordering::Relaxed)
            {
                a.since_ms.store(now, Ordering::Release);
                a.reading_head.store(true, Ordering::Release);
                a.rearm.store(true, Ordering::Release);
            }
            if let Err(abuse) = self.check(&buf.filled()[before..]) {
                // h2 never sees these bytes; the failed read ends the
                // connection, after a GOAWAY if one can go out whole now.
                let _ = self.state.refused.set(abuse);
                if let Some(goaway) = self.h2.as_ref().and_then(|w| w.goaway()) {
                    let inner = Pin::new(&mut self.inner);
                    if let Poll::Ready(Ok(n)) = inner.poll_write(cx, &goaway)
                        && n == goaway.len()
                    {
                        let _ = Pin::new(&mut self.inner).poll_flush(cx);
                    }
                }
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, abuse)));
            }
        }
        result
    }

    /// Reads until the first bytes tell HTTP/2 (the client preface) from
    /// HTTP/1; what was read is replayed to hyper.
    /// `http2_only`: TLS negotiated HTTP/2 (RFC 9113 section 3.3): anything
    /// but the preface is a connection error, not an HTTP/1.1 request.
    pub(super) fn poll_detect(
        &mut self,
        cx: &mut Context<'_>,
        http2_only: bool,
    ) -> Poll<io::Result<Detected>> {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        loop {
            // Read straight into the buffer the server side goes on with
            // (`h1_server::Server::new`): nothing is copied, and a
            // connection allocates one buffer, not two.
            let mut buf = std::mem::take(&mut self.replay);
            if buf.capacity() == 0 {
                // Not `reserve`: growing an empty buffer costs more.
                buf = BytesMut::with_capacity(DETECT_READ);
            } else if buf.capacity() - buf.len() < PREFACE.len() {
                buf.reserve(DETECT_READ);
            }
            let polled = tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, &mut buf);
            self.replay = buf;
            if std::task::ready!(polled)? == 0 {
                // The end: hyper answers whatever came before it.
                return Poll::Ready(Ok(match (self.has_replay(), http2_only) {
                    (false, _) => Detected::Nothing,
                    (true, false) => Detected::Http1,
                    (true, true) => Detected::NotThePreface,
                }));
            }
            let n = self.replay.len().min(PREFACE.len());
            if self.replay[..n] != PREFACE[..n] {
                return Poll::Ready(Ok(if http2_only {
                    Detected::NotThePreface
                } else {
                    Detected::Http1
                }));
            }
            if n == PREFACE.len() {
                return Poll::Ready(Ok(Detected::Http2));
            }
        }
    }
}

impl<S: Transport> super::h1_server::Stream for Socket<S> {
    fn shutdown_before_close(&self) -> bool {
        self.inner.shutdown_before_close()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = buf.remaining().min(this.replay.len());
            buf.put_slice(&this.replay[..n]);
            if n == this.replay.len() {
                // Freed once replayed: a parked connection holds no buffer.
                this.replay = BytesMut::new();
            } else {
                this.replay.advance(n);
            }
            return Poll::Ready(Ok(()));
        }
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.poll_read_checked(cx, buf)
    }
}

impl<S: Transport> Socket<S> {
    /// Before a write: TCP_NODELAY if this is the second (`Nodelay`).
    fn before_write(&mut self) {
        if self.nodelay == Nodelay::BeforeNextWrite {
            self.inner.set_nodelay();
            self.nodelay = Nodelay::Set;
        }
    }

    /// After a write: the next one sets TCP_NODELAY if this was the first
    /// that wrote anything.
    fn after_write(&mut self, result: &Poll<io::Result<usize>>) {
        if self.nodelay == Nodelay::AfterFirstWrite
            && matches!(result, Poll::Ready(Ok(n)) if *n > 0)
        {
            self.nodelay = Nodelay::BeforeNextWrite;
        }
    }
}

impl<S: Transport> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(&result);
        this.wrote(&result);
        if this.h2.is_some() {
            this.follow_http2_writes(&[io::IoSlice::new(buf)], &result);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(&result);
        this.wrote(&result);
        if this.h2.is_some() {
            this.follow_http2_writes(bufs, &result);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.state.unflushed.store(false, Ordering::Relaxed);
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Beyond this hyper answers 431 by itself; below it, proxy.rs answers at
/// exactly max_header_bytes with a plain-text reason.
pub(super) fn hard_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).saturating_add(8192)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A plain connection's server side wrapped as `serve_connection`
    /// wraps it, and its client.
    async fn plain_pair() -> (Socket<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let state = Arc::new(ConnectionState::for_tests());
        (Socket::new(server, &state, 8192), client)
    }

    #[tokio::test]
    async fn nodelay_is_set_before_the_second_write_only() {
        let (mut socket, _client) = plain_pair().await;
        assert!(!socket.inner.nodelay().unwrap());
        socket.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        // The first write went out with Nagle on and nothing unacknowledged
        // before it; the option is still unset.
        assert!(!socket.inner.nodelay().unwrap());
        socket
            .write_all(b"content-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert!(socket.inner.nodelay().unwrap());
    }

    #[tokio::test]
    async fn an_empty_write_is_not_the_first() {
        let (mut socket, _client) = plain_pair().await;
        assert_eq!(socket.write(b"").await.unwrap(), 0);
        socket.write_all(b"x").await.unwrap();
        assert!(!socket.inner.nodelay().unwrap());
        socket.write_all(b"y").await.unwrap();
        assert!(socket.inner.nodelay().unwrap());
    }

    #[tokio::test]
    async fn the_preface_is_told_however_it_arrives_and_replayed_whole() {
        use tokio::io::AsyncReadExt;
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let (mut socket, mut client) = plain_pair().await;
        // Once the socket is readable, one poll of the detection.
        async fn detect(socket: &mut Socket<TcpStream>) -> Poll<io::Result<Detected>> {
            socket.inner.readable().await.unwrap();
            std::future::poll_fn(|cx| Poll::Ready(socket.poll_detect(cx, false))).await
        }
        // A part of the preface tells nothing yet; it is kept.
        client.write_all(&PREFACE[..9]).await.unwrap();
        assert!(detect(&mut socket).await.is_pending());
        assert_eq!(&socket.replay[..], &PREFACE[..9]);
        client.write_all(&PREFACE[9..]).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let detected = loop {
            if let Poll::Ready(detected) = detect(&mut socket).await {
                break detected.unwrap();
            }
        };
        assert!(matches!(detected, Detected::Http2));
        assert!(socket.replay.starts_with(PREFACE));
        // Replayed first, in as many reads as the reader asks for, then
        // let go of: a parked connection holds no buffer.
        let mut first = vec![0; 10];
        socket.read_exact(&mut first).await.unwrap();
        let mut rest = vec![0; socket.replay.len()];
        socket.read_exact(&mut rest).await.unwrap();
        assert_eq!(socket.replay.capacity(), 0);
        assert!([first, rest].concat().starts_with(PREFACE));
    }
}
