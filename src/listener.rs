//! Listeners: bind, accept within the connection limit, TLS, HTTP/1.1 and
//! HTTP/2 through hyper-util's auto builder, per-connection timeouts, drain.
//!
//! Each connection has one timer, re-armed lazily, that enforces
//! `header_read_timeout` (from the first byte of a request head until the
//! request is handed to the proxy) and `idle_timeout` (no request in flight).
//! hyper's own header timer is off: it also runs while a keep-alive
//! connection is idle, which would cut idle connections at the header timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ListenerConfig, ServerConfig};
use crate::h2_guard::{Abuse, FrameWatch};
use crate::proxy::{self, Downstream};
use crate::state::Shared;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams the client may reset before fulcrum accepts them; one more and h2
/// sends GOAWAY (rapid reset in one batch).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 128;
/// Streams h2 may reset because of the client's errors; one more and it
/// sends GOAWAY ("MadeYouReset"). A correct client causes none.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// A listener whose socket is bound, ready to serve.
pub struct BoundListener {
    pub name: Arc<str>,
    /// The config it was bound from (a reload compares against it).
    pub config: ListenerConfig,
    pub local_addr: SocketAddr,
    /// Open client connections (the downstream_connections gauge).
    pub open: Arc<AtomicU64>,
    /// Swapped by a reload that changes certificates; new connections use
    /// the new ones.
    pub tls: Arc<ArcSwapOption<TlsAcceptor>>,
    listener: TcpListener,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("listener {listener}: cannot bind {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("listener {listener}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// The TLS acceptor of a listener config, if it has TLS.
pub fn tls_acceptor(config: &ListenerConfig) -> Result<Option<TlsAcceptor>, ListenerError> {
    match &config.tls {
        Some(tls) => Ok(Some(TlsAcceptor::from(
            crate::tls::server_config(tls).map_err(|source| ListenerError::Tls {
                listener: config.name.clone(),
                source,
            })?,
        ))),
        None => Ok(None),
    }
}

/// What every connection task shares.
pub struct Serving {
    pub shared: Arc<Shared>,
    pub connections: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Per-connection activity, read by the connection's timer.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` when the current idle or head-reading
    /// phase began.
    since_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last byte read or written: a
    /// connection with requests in flight but nothing moving for
    /// `idle_timeout` is stalled (a client that never reads its response,
    /// an endpoint that hangs mid-body) and is closed.
    last_io_ms: AtomicU64,
    reading_head: AtomicBool,
    http2: AtomicBool,
    /// Set when a request head starts arriving, so the timer moves its
    /// deadline from idle_timeout to header_read_timeout.
    rearm: AtomicBool,
    /// The HTTP/1 head being read carried both Content-Length and
    /// Transfer-Encoding (hyper drops the former silently; SPEC wants 400).
    conflicting_length: AtomicBool,
    /// Why the HTTP/2 frame watch refused the connection, if it did.
    refused: std::sync::OnceLock<Abuse>,
}

/// Counts a request in flight on its connection until its response body is
/// dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

/// The socket, noting when a new request head begins to arrive, scanning
/// HTTP/1 heads for a Content-Length/Transfer-Encoding conflict, and
/// watching an HTTP/2 client's frames (`h2_guard`).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The head read so far; reused for every request of the connection.
    head: Vec<u8>,
    scanning: bool,
    max_header_bytes: usize,
    /// Present once the client sent the HTTP/2 preface.
    h2: Option<FrameWatch>,
}

enum Step {
    Wait(Instant),
    Close,
    Drain,
}

impl BoundListener {
    /// Binds the listener's address (SO_REUSEADDR) and prepares its TLS.
    pub fn bind(config: &ListenerConfig) -> Result<Self, ListenerError> {
        let bind_error = |source| ListenerError::Bind {
            listener: config.name.clone(),
            addr: config.bind,
            source,
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(config.bind),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        if config.bind.is_ipv6() {
            socket.set_only_v6(true).map_err(bind_error)?;
        }
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&config.bind.into()).map_err(bind_error)?;
        socket.listen(4096).map_err(bind_error)?;
        let listener = TcpListener::from_std(socket.into()).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let tls = tls_acceptor(config)?;
        Ok(Self {
            name: config.name.as_str().into(),
            config: config.clone(),
            local_addr,
            open: Arc::new(AtomicU64::new(0)),
            tls: Arc::new(ArcSwapOption::new(tls.map(Arc::new))),
            listener,
        })
    }

    /// Accepts until `stop` (the listener's own token, a child of the
    /// shutdown token), one task per connection; connections drain on it.
    pub async fn serve(self, cx: Arc<Serving>, stop: CancellationToken) {
        let listener = Arc::new(self);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&cx.connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %listener.name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let task_cx = Arc::clone(&cx);
            let listener = Arc::clone(&listener);
            let stop = stop.clone();
            cx.tracker.spawn(async move {
                serve_connection(stream, peer, &listener, task_cx, stop, permit).await;
            });
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &BoundListener,
    cx: Arc<Serving>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let limits = cx.shared.snapshot.load().server.clone();
    let activity = Arc::new(Activity::new());
    listener.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(Arc::clone(&listener.open));
    match listener.tls.load_full() {
        None => {
            let io = Tracked::new(stream, &activity, limits.max_header_bytes);
            serve_http(io, (peer, false), listener, &cx, &stop, &limits, activity).await;
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let io = Tracked::new(tls, &activity, limits.max_header_bytes);
            serve_http(io, (peer, true), listener, &cx, &stop, &limits, activity).await;
        }
    }
}

async fn serve_http<S>(
    io: Tracked<S>,
    (peer, https): (SocketAddr, bool),
    listener: &BoundListener,
    cx: &Arc<Serving>,
    stop: &CancellationToken,
    limits: &ServerConfig,
    activity: Arc<Activity>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 by itself past this; below it, proxy.rs answers at
    // exactly max_header_bytes with a plain-text reason.
    let hard_limit = limits
        .max_header_bytes
        .saturating_mul(2)
        .saturating_add(8192);
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(hard_limit.max(8192))
        .half_close(false)
        .keep_alive(true);
    // HTTP/2 limits (docs/security.md has each one's reason); what h2 does
    // not bound, the frame watch in `Tracked` does (`h2_guard`).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(hard_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_ACCEPT_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS));

    let shared = Arc::clone(&cx.shared);
    let name = Arc::clone(&listener.name);
    let service_activity = Arc::clone(&activity);
    let client_ip = crate::headers::client_ip_value(peer.ip());
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let http2 = req.version() == http::Version::HTTP_2;
        let conflicting_length = !http2
            && service_activity
                .conflicting_length
                .swap(false, Ordering::AcqRel);
        let guard = RequestGuard::start(&service_activity, http2);
        let snapshot = shared.snapshot.load_full();
        let name = Arc::clone(&name);
        let shared = Arc::clone(&shared);
        let client_ip = client_ip.clone();
        async move {
            let downstream = Downstream {
                listener: snapshot.routes.listener_index(&name).unwrap_or(usize::MAX),
                client: peer,
                client_ip,
                https,
                conflicting_length,
            };
            Ok::<_, Infallible>(proxy::handle(req, &downstream, snapshot, guard, &shared).await)
        }
    });

    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let timer = tokio::time::sleep(limits.idle_timeout.min(limits.header_read_timeout));
    tokio::pin!(timer);
    let draining = AtomicBool::new(false);
    loop {
        // `biased`: the connection is polled first, so a read that starts a
        // request head re-arms the timer in the same pass.
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Some(abuse) = activity.refused.get() {
                    // Counted, and logged at debug only: an attacker must
                    // not be able to flood the log.
                    cx.shared
                        .metrics
                        .counter(
                            crate::metrics::DOWNSTREAM_H2_REFUSED,
                            &[("listener", &listener.name), ("cause", abuse.cause())],
                        )
                        .increment(1);
                    tracing::debug!(%peer, %abuse, "HTTP/2 connection refused");
                } else if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !draining.load(Ordering::Relaxed) => {
                draining.store(true, Ordering::Relaxed);
                connection.as_mut().graceful_shutdown();
            }
            step = std::future::poll_fn(|task| {
                if activity.rearm.swap(false, Ordering::AcqRel)
                    && let Step::Wait(deadline) = activity.step(limits)
                {
                    timer.as_mut().reset(deadline);
                }
                loop {
                    std::task::ready!(timer.as_mut().poll(task));
                    match activity.step(limits) {
                        Step::Wait(deadline) => timer.as_mut().reset(deadline),
                        // A graceful close gets its own idle period, then is cut.
                        Step::Drain if !draining.load(Ordering::Relaxed) => {
                            timer.as_mut().reset(Instant::now() + limits.idle_timeout);
                            return Poll::Ready(Step::Drain);
                        }
                        Step::Drain | Step::Close => return Poll::Ready(Step::Close),
                    }
                }
            }) => match step {
                Step::Drain => {
                    draining.store(true, Ordering::Relaxed);
                    connection.as_mut().graceful_shutdown();
                }
                Step::Close | Step::Wait(_) => {
                    tracing::debug!(%peer, "connection closed: header_read_timeout, stalled, or drain deadline");
                    return;
                }
            },
        }
    }
}

/// Counts an open connection on its listener until dropped.
struct OpenConnection(Arc<AtomicU64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(0),
            reading_head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            conflicting_length: AtomicBool::new(false),
            rearm: AtomicBool::new(false),
            refused: std::sync::OnceLock::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// What the connection timer should do now.
    fn step(&self, limits: &ServerConfig) -> Step {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let last_io =
                self.epoch + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
            let deadline = last_io + limits.idle_timeout;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        if self.reading_head.load(Ordering::Acquire) {
            let deadline = since + limits.header_read_timeout;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let deadline = since + limits.idle_timeout;
        if now >= deadline {
            Step::Drain
        } else {
            Step::Wait(deadline)
        }
    }
}

impl RequestGuard {
    fn start(activity: &Arc<Activity>, http2: bool) -> Self {
        activity
            .last_io_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.reading_head.store(false, Ordering::Release);
        // The timer may be set for the header deadline; with a request in
        // flight the stall rule decides, and idle_timeout may be shorter.
        activity.rearm.store(true, Ordering::Release);
        if http2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        Self(Arc::clone(activity))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .since_ms
                .store(activity.now_ms(), Ordering::Release);
        }
    }
}

impl<S> Tracked<S> {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result
            && *n > 0
        {
            let a = &self.activity;
            a.last_io_ms.store(a.now_ms(), Ordering::Relaxed);
        }
    }

    fn new(inner: S, activity: &Arc<Activity>, max_header_bytes: usize) -> Self {
        Self {
            inner,
            activity: Arc::clone(activity),
            head: Vec::new(),
            scanning: false,
            max_header_bytes,
            h2: None,
        }
    }

    /// Checks bytes just read: an HTTP/2 client's frames, or the HTTP/1
    /// request head being read.
    fn check(&mut self, bytes: &[u8]) -> Result<(), Abuse> {
        match &mut self.h2 {
            Some(watch) => watch.feed(bytes),
            None if self.scanning => self.scan_head(bytes),
            None => Ok(()),
        }
    }

    /// Adds bytes of a request head; once the head is complete, records
    /// whether it declared both a Content-Length and a Transfer-Encoding.
    /// A head that is the HTTP/2 preface starts the frame watch instead.
    fn scan_head(&mut self, bytes: &[u8]) -> Result<(), Abuse> {
        const MAX_SCAN: usize = 1 << 20;
        // A head that came in one read (the usual case) is scanned where it
        // lies; one that comes in pieces is gathered, and only the bytes
        // where its end could newly be are searched, so a head trickled byte
        // by byte costs linear time.
        let gathered = !self.head.is_empty();
        let scan = if gathered {
            let from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(bytes);
            inspect_head(&self.head, from)
        } else {
            inspect_head(bytes, 0)
        };
        match scan {
            HeadScan::Http2 => {
                self.scanning = false;
                let mut watch = FrameWatch::new(self.max_header_bytes);
                let fed = watch.feed(if gathered { &self.head } else { bytes });
                self.h2 = Some(watch);
                self.head = Vec::new();
                fed
            }
            HeadScan::Incomplete => {
                if !gathered {
                    self.head.extend_from_slice(bytes);
                }
                if self.head.len() > MAX_SCAN {
                    self.scanning = false;
                }
                Ok(())
            }
            HeadScan::Complete { conflicting_length } => {
                if conflicting_length {
                    self.activity
                        .conflicting_length
                        .store(true, Ordering::Release);
                }
                self.scanning = false;
                Ok(())
            }
        }
    }
}

/// What the bytes of a request head so far show.
enum HeadScan {
    /// The HTTP/2 client preface.
    Http2,
    Incomplete,
    Complete {
        conflicting_length: bool,
    },
}

/// Looks at `head` (the end searched for from byte `from` on).
fn inspect_head(head: &[u8], from: usize) -> HeadScan {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2";
    // The preface may come in pieces; its first "\r\n\r\n" ends at byte
    // 18, so it is recognised before it could pass for an HTTP/1 head.
    if head.starts_with(H2_PREFACE) {
        return HeadScan::Http2;
    }
    let Some(end) = memchr::memmem::find(&head[from..], b"\r\n\r\n") else {
        return HeadScan::Incomplete;
    };
    let named = |line: &[u8], name: &[u8]| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
    };
    let head = &head[..from + end];
    let (mut content_length, mut transfer_encoding) = (false, false);
    // From each line start to the end of the head: `named` reads a prefix.
    for line in memchr::memchr_iter(b'\n', head).map(|nl| &head[nl + 1..]) {
        match line.first().map(u8::to_ascii_lowercase) {
            Some(b'c') => content_length |= named(line, b"content-length"),
            Some(b't') => transfer_encoding |= named(line, b"transfer-encoding"),
            _ => {}
        }
    }
    HeadScan::Complete {
        conflicting_length: content_length && transfer_encoding,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let a = &this.activity;
            let now = a.now_ms();
            a.last_io_ms.store(now, Ordering::Relaxed);
            if a.in_flight.load(Ordering::Acquire) == 0
                && !a.reading_head.load(Ordering::Relaxed)
                && !a.http2.load(Ordering::Relaxed)
            {
                a.since_ms.store(now, Ordering::Release);
                a.reading_head.store(true, Ordering::Release);
                a.rearm.store(true, Ordering::Release);
                this.head.clear();
                this.scanning = true;
            }
            if let Err(abuse) = this.check(&buf.filled()[before..]) {
                // h2 never sees these bytes; the failed read ends the connection.
                let _ = this.activity.refused.set(abuse);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, abuse)));
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
