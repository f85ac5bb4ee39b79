//! Listeners: bind, accept within the connection limit, TLS, HTTP/1.1
//! (plain requests by fulcrum's own server side, `h1_server`, the rest by
//! hyper) and HTTP/2 through hyper (the protocol told by the client's first
//! bytes), idle HTTP/1 connections parked without buffers, per-connection
//! timeouts, drain.
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
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::error::ProxyError;
use crate::h1_server::{self, Ended};
use crate::h2_guard::{Abuse, FrameWatch};
use crate::http1::stream::{RequestStream, Verdicts};
use crate::http1::{Interim, Refusal};
use crate::proxy::{self, Downstream, MessageVerdict};
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
    /// Its client connections, for the downstream connection metrics.
    pub connections: Arc<Connections>,
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
    /// Where connections are served; `None`: on the accepting runtime.
    pub workers: Option<Arc<crate::workers::Workers>>,
}

/// One connection's identity and activity: shared by its task, its socket
/// wrapper, its service and its requests' guards (one allocation).
#[derive(Debug)]
pub struct Activity {
    shared: Arc<Shared>,
    listener: Arc<str>,
    peer: SocketAddr,
    https: bool,
    /// The client's IP as an X-Forwarded-For element, formatted once.
    client_ip: http::HeaderValue,
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
    /// What the follower of the request stream found of the requests
    /// hyper serves (`http1::stream`), since the last hand-off to hyper.
    verdicts: ArcSwapOption<Verdicts>,
    /// Why the HTTP/2 frame watch refused the connection, if it did.
    refused: std::sync::OnceLock<Abuse>,
    /// The last read found nothing to read.
    read_blocked: AtomicBool,
    /// Bytes were written since the last completed flush.
    unflushed: AtomicBool,
    /// hyper is closing the connection to park it: its shutdown of the
    /// socket is skipped.
    parking: AtomicBool,
    /// Where an upgrade (a request the proxy answers with 101) wants the
    /// client's connection.
    upgrade: std::sync::Mutex<Option<oneshot::Sender<Upgraded>>>,
}

/// Counts a request in flight on its connection until its response body is
/// dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

/// The socket, noting when a new request head begins to arrive, following
/// the HTTP/1 requests hyper reads (`http1::stream`),
/// HTTP/1 heads for a Content-Length/Transfer-Encoding conflict, and
/// watching an HTTP/2 client's frames (`h2_guard`).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Follows the requests while hyper reads HTTP/1 from the socket.
    stream: Option<Box<RequestStream>>,
    max_header_bytes: usize,
    /// Present once the client sent the HTTP/2 preface.
    h2: Option<Box<FrameWatch>>,
    /// Bytes already read (and checked), to be read again first: those that
    /// told the protocol, or those hyper read ahead before the connection
    /// parked.
    replay: Bytes,
    /// Upgraded: the bytes are no longer HTTP.
    passthrough: bool,
    /// fulcrum's own server side reads the connection: requests are not
    /// followed, as it parses each head itself and hands every one with a
    /// body (and the rest of the stream) to hyper, followed from there
    /// (`hand_to_hyper`).
    plain: bool,
}

enum Step {
    Wait(Instant),
    /// Idle for PARK_AFTER: park the connection.
    Park,
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
            connections: Arc::new(Connections::default()),
            tls: Arc::new(ArcSwapOption::new(tls.map(Arc::new))),
            listener,
        })
    }

    /// Accepts until `stop` (the listener's own token, a child of the
    /// shutdown token), one task per connection; connections drain on it.
    pub async fn serve(self, cx: Arc<Serving>, stop: CancellationToken) {
        let listener = Arc::new(self);
        // Failed accepts are counted; the warning is written at most once a
        // minute, with how many came since (a flood must not fill the log).
        let mut warned: Option<Instant> = None;
        let mut unlogged = 0u64;
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
                        cx.shared
                            .metrics
                            .counter(
                                crate::metrics::DOWNSTREAM_ACCEPT_ERRORS,
                                &[("listener", &listener.name)],
                            )
                            .increment(1);
                        unlogged += 1;
                        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(listener = %listener.name, %error, failed = unlogged, "accept failed");
                            warned = Some(Instant::now());
                            unlogged = 0;
                        }
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let server = &cx.shared.snapshot.load().server;
            listener.connections.open.fetch_add(1, Ordering::Relaxed);
            let held = Held {
                deadlines: Deadlines {
                    header_read: server.header_read_timeout,
                    idle: server.idle_timeout,
                },
                max_header_bytes: server.max_header_bytes,
                _permit: permit,
                open: OpenConnection(Arc::clone(&listener.connections)),
            };
            let acceptor = listener.tls.load_full();
            let shared = Arc::clone(&cx.shared);
            let name = Arc::clone(&listener.name);
            let activity = Arc::new(Activity::new(shared, name, peer, acceptor.is_some()));
            if let Some(workers) = &cx.workers {
                // Moved to a worker's runtime: registered with its reactor there.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let task = on_worker(stream, acceptor, activity, stop.clone(), held);
                cx.tracker.spawn_on(task, workers.next());
                continue;
            }
            match acceptor {
                None => {
                    let task = serve_connection(stream, activity, stop.clone(), held);
                    cx.tracker.spawn(task);
                }
                Some(acceptor) => {
                    let task = serve_tls(stream, acceptor, activity, stop.clone(), held);
                    cx.tracker.spawn(Box::pin(task));
                }
            }
        }
    }
}

/// How long an HTTP/1 connection stays idle before it parks. Far longer
/// than the gap between the requests of a busy connection: parking and
/// resuming builds the connection's server state and buffers again. Short,
/// so that a burst of new connections does not leave their buffers behind.
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// The limits a connection's timer enforces, copied from the snapshot the
/// connection began under.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header_read: Duration,
    idle: Duration,
}

/// Opens the TLS session, then serves the connection. Boxed by its caller:
/// a TLS connection's state is several times a plain one's, and a task is
/// as large as its largest state.
async fn serve_tls(
    stream: TcpStream,
    acceptor: Arc<TlsAcceptor>,
    activity: Arc<Activity>,
    stop: CancellationToken,
    held: Held,
) {
    let deadline = held.deadlines.header_read;
    // A client can fail handshakes at will: counted, logged at debug only
    // (and rustls logs nothing: its `logging` feature is off).
    let failed = |cause: &'static str| {
        activity
            .shared
            .metrics
            .counter(
                crate::metrics::DOWNSTREAM_TLS_FAILED,
                &[("listener", &activity.listener), ("cause", cause)],
            )
            .increment(1);
    };
    let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            failed("error");
            tracing::debug!(peer = %activity.peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            failed("timeout");
            tracing::debug!(peer = %activity.peer, "TLS handshake timed out");
            return;
        }
    };
    serve_connection(tls, activity, stop, held).await;
}

/// Serves a connection on the worker runtime this runs on.
async fn on_worker(
    stream: std::net::TcpStream,
    acceptor: Option<Arc<TlsAcceptor>>,
    activity: Arc<Activity>,
    stop: CancellationToken,
    held: Held,
) {
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    match acceptor {
        None => serve_connection(stream, activity, stop, held).await,
        Some(acceptor) => Box::pin(serve_tls(stream, acceptor, activity, stop, held)).await,
    }
}

/// What a connection holds for its whole life besides its socket.
struct Held {
    deadlines: Deadlines,
    max_header_bytes: usize,
    _permit: OwnedSemaphorePermit,
    open: OpenConnection,
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
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, task: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, task)
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

/// The client's side of an upgraded HTTP/1 connection (WebSocket and the
/// like), handed to the proxy once the 101 response is written.
pub struct Upgraded {
    /// The socket wrapper, which first replays what the client sent after
    /// its request (already read by hyper).
    io: Box<dyn UpgradedIo>,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

trait UpgradedIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradedIo for T {}

/// Resolves to the client's connection once it is upgraded; fails if the
/// connection ended instead.
pub type OnUpgrade = oneshot::Receiver<Upgraded>;

/// How a connection ended, for the log.
enum End {
    Closed,
    Upgraded,
    /// header_read_timeout, a stall, or the drain deadline.
    TimedOut,
    Error(hyper::Error),
    Io(io::Error),
}

/// fulcrum's answer to a request refused before any server side read it
/// (or a GOAWAY to a client that negotiated HTTP/2 and sent no preface),
/// written whole, then the connection closes.
struct Refusing<S> {
    io: Tracked<S>,
    out: Vec<u8>,
    written: usize,
}

/// An HTTP/2 GOAWAY frame (RFC 9113 section 6.8): last stream 0,
/// PROTOCOL_ERROR.
const GOAWAY_PROTOCOL_ERROR: &[u8] = &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

impl<S: AsyncRead + AsyncWrite + Unpin> Refusing<S> {
    fn new(io: Tracked<S>, refusal: Refusal) -> Self {
        tracing::debug!(%refusal, client = %io.activity.peer, "request refused");
        Self {
            io,
            out: ProxyError::Framing(refusal).to_http1_closing(),
            written: 0,
        }
    }

    /// Writes `out` and closes.
    fn bytes(io: Tracked<S>, out: &[u8]) -> Self {
        Self {
            io,
            out: out.to_vec(),
            written: 0,
        }
    }

    fn poll(&mut self, task: &mut Context<'_>) -> Poll<End> {
        while self.written < self.out.len() {
            match std::task::ready!(
                Pin::new(&mut self.io).poll_write(task, &self.out[self.written..])
            ) {
                Ok(0) => return Poll::Ready(End::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(error) => return Poll::Ready(End::Io(error)),
            }
        }
        let _ = std::task::ready!(Pin::new(&mut self.io).poll_shutdown(task));
        Poll::Ready(End::Closed)
    }
}

/// What the first bytes of a connection show.
enum Detected {
    Http1,
    Http2,
    /// TLS negotiated HTTP/2 and the client sent something else.
    NotThePreface,
    /// Closed before sending anything.
    Nothing,
}

/// hyper's HTTP/1 server connection over a client socket.
type H1<S, Svc> = http1::Connection<TokioIo<Tracked<S>>, Svc>;
/// hyper's HTTP/2 server connection over a client socket.
type H2<S, Svc> = http2::Connection<TokioIo<Tracked<S>>, Svc, TokioExecutor>;
/// fulcrum's own HTTP/1.1 server side over a client socket.
type Own<S, F> = h1_server::Server<Tracked<S>, F>;

pin_project_lite::pin_project! {
    #[project = ConnectionProj]
    /// One client connection: the whole state of its task, which is what an
    /// idle connection costs (kept small on purpose; a test pins its size).
    ///
    /// HTTP/2 if the connection opens with the client preface, HTTP/1
    /// otherwise: fulcrum's own server side until a request is not plain,
    /// then hyper's. An HTTP/1 connection idle for PARK_AFTER parks: the
    /// server side (with its buffers: 4 KiB and up for fulcrum's, 16 KiB and
    /// up for hyper's) is dropped and the socket is waited on alone; the
    /// next bytes start fulcrum's server side again, after the bytes read
    /// ahead (pipelining), replayed.
    struct Connection<S, Svc, H, F>
    where
        S: Transport,
        Svc: HttpService<Incoming>,
    {
        // Exactly one of these five holds the socket.
        // While the protocol is being detected, and while parked.
        io: Option<Tracked<S>>,
        // While fulcrum serves plain HTTP/1.1 requests itself.
        own: Option<Pin<Box<Own<S, F>>>>,
        // While hyper serves HTTP/1.
        h1: Option<Pin<Box<H1<S, Svc>>>>,
        // While hyper serves HTTP/2 (to the end).
        h2: Option<Pin<Box<H2<S, Svc>>>>,
        // While fulcrum answers a request it refused before hyper read
        // it, then closes.
        refusing: Option<Box<Refusing<S>>>,
        service: Svc,
        // Starts a plain request (`plain_request`, a function item: no
        // bytes).
        handler: H,
        activity: Arc<Activity>,
        held: Held,
        detecting: bool,
        draining: bool,
        // The connection has been idle for PARK_AFTER.
        park: bool,
        stop: CancellationToken,
        // Polled once, to hold this task's waker; after that `stop` is
        // only asked (polling it again took a lock of the token's waiters
        // on every turn of the connection).
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
        cancel_registered: bool,
        #[pin]
        timer: tokio::time::Sleep,
        // The timer was armed since it was last polled: it must be polled
        // to hold this task's waker. Otherwise it is polled only once it
        // has fired (its waker stays registered; a poll per turn of the
        // connection cost about 110 instructions per request in all).
        timer_armed: bool,
    }
}

/// The connection's service for hyper: each request to the proxy.
fn service(
    activity: Arc<Activity>,
) -> impl HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: hyper::Request<Incoming>| {
        let http2 = req.version() == http::Version::HTTP_2;
        let (parts, incoming) = req.into_parts();
        futures_util::FutureExt::map(
            answer(&activity, parts, Some(incoming), http2, None),
            Ok::<_, Infallible>,
        )
    })
}

/// A plain HTTP/1.1 request read by fulcrum's own server side
/// (`h1_server`): no body.
fn plain_request(
    activity: &Arc<Activity>,
    parts: http::request::Parts,
    interim: &Arc<Interim>,
) -> impl Future<Output = hyper::Response<proxy::ResponseBody>> + Send + use<> {
    answer(activity, parts, None, false, Some(interim))
}

/// Starts the proxy on one request of the connection; `plain`: fulcrum's
/// own server side writes the response.
fn answer(
    activity: &Arc<Activity>,
    parts: http::request::Parts,
    incoming: Option<Incoming>,
    http2: bool,
    plain: Option<&Arc<Interim>>,
) -> impl Future<Output = hyper::Response<proxy::ResponseBody>> + Send + use<> {
    // The follower's verdict on this request, for those hyper read.
    let message = if http2 || plain.is_some() {
        None
    } else {
        activity.verdicts.load_full().map(|verdicts| {
            let index = verdicts.next_request();
            MessageVerdict { verdicts, index }
        })
    };
    let guard = RequestGuard::start(activity, http2);
    let snapshot = activity.shared.snapshot.load_full();
    let downstream = Downstream {
        listener: snapshot
            .routes
            .listener_index(&activity.listener)
            .unwrap_or(usize::MAX),
        client: activity.peer,
        client_ip: activity.client_ip.clone(),
        https: activity.https,
        message,
        started: std::time::Instant::now(),
        interim: plain.cloned(),
    };
    let shared = Arc::clone(&activity.shared);
    proxy::handle(parts, incoming, downstream, snapshot, guard, shared)
}

/// Serves `stream` until it closes, is cut, or the listener stops.
fn serve_connection<S: Transport>(
    stream: S,
    activity: Arc<Activity>,
    stop: CancellationToken,
    held: Held,
) -> impl Future<Output = ()> + Send {
    let d = held.deadlines;
    Connection {
        io: Some(Tracked::new(stream, &activity, held.max_header_bytes)),
        own: None,
        h1: None,
        h2: None,
        refusing: None,
        service: service(Arc::clone(&activity)),
        handler: plain_request,
        activity,
        held,
        detecting: true,
        draining: false,
        park: false,
        cancelled: stop.clone().cancelled_owned(),
        stop,
        cancel_registered: false,
        timer: tokio::time::sleep(d.idle.min(d.header_read)),
        timer_armed: true,
    }
}

/// Beyond this hyper answers 431 by itself; below it, proxy.rs answers at
/// exactly max_header_bytes with a plain-text reason.
fn hard_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).saturating_add(8192)
}

/// The socket of a finished hyper HTTP/1 connection (not shut down: an
/// upgrade, or a park) and the bytes hyper had read ahead.
fn take_socket<S, Svc>(h1: &mut Option<Pin<Box<H1<S, Svc>>>>) -> Option<(Tracked<S>, Bytes)>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody>,
{
    let parts = Pin::into_inner(h1.take()?).into_parts();
    Some((parts.io.into_inner(), parts.read_buf))
}

/// fulcrum's own HTTP/1.1 server side over `io`, starting with the bytes
/// `io` holds to replay.
fn own_connection<S: Transport, F>(mut io: Tracked<S>) -> Pin<Box<Own<S, F>>>
where
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    let read_ahead = std::mem::take(&mut io.replay);
    io.plain = true;
    Box::pin(h1_server::Server::new(io, &read_ahead))
}

/// hyper's HTTP/1 connection over `io`.
fn http1_connection<S, Svc>(
    io: Tracked<S>,
    service: &Svc,
    hard_limit: usize,
) -> Pin<Box<H1<S, Svc>>>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody> + Clone,
{
    let mut http1 = http1::Builder::new();
    http1
        .header_read_timeout(None)
        .max_buf_size(hard_limit.max(8192))
        .half_close(false)
        .keep_alive(true)
        .writev(false);
    Box::pin(http1.serve_connection(TokioIo::new(io), service.clone()))
}

/// hyper's HTTP/2 connection over `io`, with fulcrum's limits
/// (docs/security.md has each one's reason); what h2 does not bound, the
/// frame watch in `Tracked` does (`h2_guard`).
fn http2_connection<S, Svc>(
    io: Tracked<S>,
    service: &Svc,
    hard_limit: usize,
) -> Pin<Box<H2<S, Svc>>>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static> + Clone,
{
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(hard_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_ACCEPT_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS));
    Box::pin(http2.serve_connection(TokioIo::new(io), service.clone()))
}

impl<S, Svc, H, F> Future for Connection<S, Svc, H, F>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
        + Clone
        + Send
        + 'static,
    H: Fn(&Arc<Activity>, http::request::Parts, &Arc<Interim>) -> F,
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        match this.poll_turns(task) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(end) => {
                if this.io.is_some() && !*this.detecting {
                    this.held.open.parked(false);
                }
                this.activity.log_end(end);
                Poll::Ready(())
            }
        }
    }
}

impl<S, Svc, H, F> ConnectionProj<'_, S, Svc, H, F>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
        + Clone
        + Send
        + 'static,
    H: Fn(&Arc<Activity>, http::request::Parts, &Arc<Interim>) -> F,
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    /// Polls until the connection ends or nothing can progress.
    fn poll_turns(&mut self, task: &mut Context<'_>) -> Poll<End> {
        let hard_limit = hard_limit(self.held.max_header_bytes);
        'poll: loop {
            // The connection first, so a read that starts a request head
            // re-arms the timer in the same pass.
            if let Some(own) = self.own.as_mut() {
                let (handler, activity) = (&*self.handler, &*self.activity);
                let polled = own
                    .as_mut()
                    .poll_serve(task, &|parts, interim| handler(activity, parts, interim));
                match polled {
                    Poll::Ready(Ended::Closed) => return Poll::Ready(End::Closed),
                    Poll::Ready(Ended::Io(error)) => return Poll::Ready(End::Io(error)),
                    Poll::Ready(Ended::Hyper) => {
                        // A request that is not plain: hyper serves the
                        // connection from it on, until it parks.
                        if let Some((mut tracked, read_ahead)) = own.as_mut().take_io() {
                            match tracked.hand_to_hyper(read_ahead) {
                                // The first request hyper would read is
                                // refused: answered here, with its cause.
                                Some(refusal) => {
                                    *self.refusing =
                                        Some(Box::new(Refusing::new(tracked, refusal)));
                                }
                                None => {
                                    *self.h1 =
                                        Some(http1_connection(tracked, self.service, hard_limit));
                                }
                            }
                        }
                        *self.own = None;
                        continue;
                    }
                    Poll::Pending
                        if std::mem::take(self.park)
                            && !*self.draining
                            && own.is_idle()
                            && self.activity.is_idle() =>
                    {
                        if let Some((mut tracked, read_ahead)) = own.as_mut().take_io() {
                            tracked.park(&read_ahead);
                            *self.io = Some(tracked);
                            self.held.open.parked(true);
                        }
                        *self.own = None;
                        continue;
                    }
                    Poll::Pending => {}
                }
            } else if let Some(conn) = self.h1.as_mut() {
                match conn.as_mut().poll(task) {
                    Poll::Ready(Err(error)) => return Poll::Ready(End::Error(error)),
                    Poll::Ready(Ok(())) => {
                        // hyper has shut the socket down, unless the
                        // connection was upgraded: then it is handed over.
                        let upgrade = self.activity.upgrade.lock().ok().and_then(|mut u| u.take());
                        if let Some(to) = upgrade.filter(|to| !to.is_closed())
                            && let Some((mut tracked, read_ahead)) = take_socket(self.h1)
                        {
                            tracked.passthrough = true;
                            tracked.stream = None;
                            tracked.replay = read_ahead;
                            let upgraded = Upgraded {
                                io: Box::new(tracked),
                            };
                            let _ = to.send(upgraded);
                            return Poll::Ready(End::Upgraded);
                        }
                        return Poll::Ready(End::Closed);
                    }
                    Poll::Pending
                        if std::mem::take(self.park)
                            && !*self.draining
                            && self.activity.is_idle() =>
                    {
                        // hyper closes an idle connection at once, handing
                        // back the socket (not shut down, see `parking`) and
                        // whatever it read ahead.
                        self.activity.parking.store(true, Ordering::Relaxed);
                        conn.as_mut().graceful_shutdown();
                        let polled = conn.as_mut().poll(task);
                        self.activity.parking.store(false, Ordering::Relaxed);
                        match polled {
                            Poll::Ready(Err(error)) => return Poll::Ready(End::Error(error)),
                            Poll::Ready(Ok(())) => {
                                if let Some((mut tracked, read_ahead)) = take_socket(self.h1) {
                                    tracked.park(&read_ahead);
                                    *self.io = Some(tracked);
                                    self.held.open.parked(true);
                                }
                                continue;
                            }
                            // Not idle after all (a request body left
                            // unread): it closes after this exchange, as
                            // hyper closes such a connection anyway.
                            Poll::Pending => *self.draining = true,
                        }
                    }
                    Poll::Pending => {}
                }
            } else if let Some(conn) = self.h2.as_mut() {
                if let Poll::Ready(result) = conn.as_mut().poll(task) {
                    return Poll::Ready(result.map_or_else(End::Error, |()| End::Closed));
                }
            } else if let Some(refusing) = self.refusing.as_mut() {
                if let Poll::Ready(end) = refusing.poll(task) {
                    return Poll::Ready(end);
                }
            } else if let Some(tracked) = self.io.as_mut() {
                if *self.detecting {
                    let http2_only = tracked.inner.http2_negotiated();
                    match tracked.poll_detect(task, http2_only) {
                        Poll::Ready(Ok(Detected::Http1)) => {
                            *self.detecting = false;
                            if let Some(io) = self.io.take() {
                                *self.own = Some(own_connection(io));
                            }
                            continue;
                        }
                        Poll::Ready(Ok(Detected::Http2)) => {
                            *self.detecting = false;
                            if let Err(abuse) = tracked.watch_http2() {
                                let _ = self.activity.refused.set(abuse);
                                let refused = io::Error::new(io::ErrorKind::InvalidData, abuse);
                                return Poll::Ready(End::Io(refused));
                            }
                            if let Some(io) = self.io.take() {
                                *self.h2 = Some(http2_connection(io, self.service, hard_limit));
                            }
                            continue;
                        }
                        Poll::Ready(Ok(Detected::NotThePreface)) => {
                            *self.detecting = false;
                            if let Some(io) = self.io.take() {
                                *self.refusing =
                                    Some(Box::new(Refusing::bytes(io, GOAWAY_PROTOCOL_ERROR)));
                            }
                            continue;
                        }
                        Poll::Ready(Ok(Detected::Nothing)) => return Poll::Ready(End::Closed),
                        Poll::Ready(Err(error)) => return Poll::Ready(End::Io(error)),
                        Poll::Pending => {}
                    }
                } else if tracked.has_replay() || tracked.inner.poll_read_ready(task).is_ready() {
                    // Parked, and the client sent something (or closed).
                    tracked.unpark();
                    self.held.open.parked(false);
                    if let Some(io) = self.io.take() {
                        *self.own = Some(own_connection(io));
                    }
                    continue;
                }
            }

            if !*self.draining && self.stopped(task) {
                *self.draining = true;
                if !self.shut_down_gracefully() {
                    return Poll::Ready(End::Closed);
                }
                continue;
            }

            let deadlines = self.held.deadlines;
            let parkable = (self.own.is_some() || self.h1.is_some()) && !*self.draining;
            if self.activity.rearm.swap(false, Ordering::AcqRel) {
                // Re-armed by a read just made: its time stands for now (no
                // clock read per request; a deadline computed from a
                // moment ago only errs late, and the timer checks again).
                let now = self.activity.last_read();
                if let Step::Wait(deadline) = self.activity.step_at(now, &deadlines, parkable) {
                    // Also wakes the connection PARK_AFTER from now, to park
                    // it if its request has ended by then. A later deadline
                    // than the last only updates the timer entry, so a busy
                    // connection pays nothing for this.
                    self.timer.as_mut().reset(deadline.min(now + PARK_AFTER));
                    *self.timer_armed = true;
                }
            }
            if !std::mem::take(self.timer_armed) && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            while self.timer.as_mut().poll(task).is_ready() {
                match self.activity.step(&deadlines, parkable) {
                    Step::Wait(deadline) => self.timer.as_mut().reset(deadline),
                    Step::Park => {
                        // Tried once hyper has been polled; if the
                        // connection is not idle after all (a response not
                        // yet flushed), tried again later.
                        *self.park = true;
                        self.timer.as_mut().reset(Instant::now() + PARK_AFTER);
                        *self.timer_armed = true;
                        continue 'poll;
                    }
                    // A graceful close gets its own idle period, then is cut.
                    Step::Drain if !*self.draining => {
                        *self.draining = true;
                        self.timer.as_mut().reset(Instant::now() + deadlines.idle);
                        if !self.shut_down_gracefully() {
                            return Poll::Ready(End::Closed);
                        }
                    }
                    Step::Drain | Step::Close => return Poll::Ready(End::TimedOut),
                }
            }
            return Poll::Pending;
        }
    }

    /// Whether the listener is stopping. Polls the token's future the first
    /// time (its waker then stays registered, and a cancellation wakes this
    /// task); asks the token after that.
    fn stopped(&mut self, task: &mut Context<'_>) -> bool {
        if std::mem::replace(self.cancel_registered, true) {
            self.stop.is_cancelled()
        } else {
            self.cancelled.as_mut().poll(task).is_ready()
        }
    }

    /// Asks hyper to finish what is in flight and close; false when hyper
    /// does not hold the connection (detecting or parked: nothing is in
    /// flight, it can close now).
    fn shut_down_gracefully(&mut self) -> bool {
        if let Some(own) = self.own.as_mut() {
            own.as_mut().graceful_shutdown();
        } else if let Some(conn) = self.h1.as_mut() {
            conn.as_mut().graceful_shutdown();
        } else if let Some(conn) = self.h2.as_mut() {
            conn.as_mut().graceful_shutdown();
        } else {
            return false;
        }
        true
    }
}

/// A listener's client connections.
#[derive(Debug, Default)]
pub struct Connections {
    /// Open now (`fulcrum_downstream_connections`).
    pub open: AtomicU64,
    /// Parked now: idle HTTP/1 connections holding no buffers
    /// (`fulcrum_downstream_connections_parked`).
    pub parked: AtomicU64,
    /// Parked so far (`fulcrum_downstream_parks_total`).
    pub parks: AtomicU64,
}

/// Counts an open connection on its listener until dropped.
struct OpenConnection(Arc<Connections>);

impl OpenConnection {
    fn parked(&self, parked: bool) {
        if parked {
            self.0.parked.fetch_add(1, Ordering::Relaxed);
            self.0.parks.fetch_add(1, Ordering::Relaxed);
        } else {
            self.0.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new(shared: Arc<Shared>, listener: Arc<str>, peer: SocketAddr, https: bool) -> Self {
        Self {
            shared,
            listener,
            peer,
            https,
            client_ip: crate::headers::client_ip_value(peer.ip()),
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(0),
            reading_head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            verdicts: ArcSwapOption::empty(),
            rearm: AtomicBool::new(false),
            refused: std::sync::OnceLock::new(),
            read_blocked: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            upgrade: std::sync::Mutex::new(None),
        }
    }

    /// Counts an HTTP/2 refusal, and logs how the connection ended (at
    /// debug only: an attacker must not be able to flood the log).
    fn log_end(&self, end: End) {
        let peer = self.peer;
        if let Some(abuse) = self.refused.get() {
            self.shared
                .metrics
                .counter(
                    crate::metrics::DOWNSTREAM_H2_REFUSED,
                    &[("listener", &self.listener), ("cause", abuse.cause())],
                )
                .increment(1);
            tracing::debug!(%peer, %abuse, "HTTP/2 connection refused");
            return;
        }
        match end {
            End::Closed | End::Upgraded => {}
            End::TimedOut => {
                tracing::debug!(%peer, "connection closed: header_read_timeout, stalled, or drain deadline");
            }
            End::Error(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
            End::Io(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
        }
    }

    /// An HTTP/1 connection between requests: nothing in flight, no head
    /// begun, everything written, and hyper waiting for the client.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.reading_head.load(Ordering::Relaxed)
            && self.read_blocked.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.http2.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// When the last byte was read or written, or an idle or head-reading
    /// phase began, whichever is later.
    fn last_read(&self) -> Instant {
        let last_io = self.last_io_ms.load(Ordering::Relaxed);
        let since = self.since_ms.load(Ordering::Acquire);
        self.epoch + Duration::from_millis(last_io.max(since))
    }

    /// What the connection timer should do now; `parkable`: an HTTP/1
    /// connection served by hyper.
    fn step(&self, limits: &Deadlines, parkable: bool) -> Step {
        self.step_at(Instant::now(), limits, parkable)
    }

    fn step_at(&self, now: Instant, limits: &Deadlines, parkable: bool) -> Step {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let last_io =
                self.epoch + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
            let deadline = last_io + limits.idle;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        if self.reading_head.load(Ordering::Acquire) {
            let deadline = since + limits.header_read;
            return if now >= deadline {
                Step::Close
            } else {
                Step::Wait(deadline)
            };
        }
        let deadline = since + limits.idle;
        if now >= deadline {
            Step::Drain
        } else if parkable && since + PARK_AFTER < deadline {
            if now >= since + PARK_AFTER {
                Step::Park
            } else {
                Step::Wait(since + PARK_AFTER)
            }
        } else {
            Step::Wait(deadline)
        }
    }
}

impl RequestGuard {
    fn start(activity: &Arc<Activity>, http2: bool) -> Self {
        // No clock read: `last_io_ms` was set by the read that brought this
        // head (or, pipelined, the one before it: no byte has come since).
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

impl RequestGuard {
    /// The client's connection, once the response to this request (a 101)
    /// is written.
    pub fn on_upgrade(&self) -> OnUpgrade {
        let (to, from) = oneshot::channel();
        if let Ok(mut slot) = self.0.upgrade.lock() {
            *slot = Some(to);
        }
        from
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle from the last write, which hyper made just before it let
            // go of the body (no clock read per request).
            let last_io = activity.last_io_ms.load(Ordering::Relaxed);
            activity.since_ms.store(last_io, Ordering::Release);
        }
    }
}

impl<S> Tracked<S> {
    /// Shows the frame watch what h2 wrote, so it knows where a GOAWAY
    /// could go (`h2_guard`).
    #[cold]
    fn follow_http2_writes(&mut self, bufs: &[io::IoSlice<'_>], result: &Poll<io::Result<usize>>) {
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

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result
            && *n > 0
        {
            let a = &self.activity;
            a.last_io_ms.store(a.now_ms(), Ordering::Relaxed);
            a.unflushed.store(true, Ordering::Relaxed);
        }
    }

    fn new(inner: S, activity: &Arc<Activity>, max_header_bytes: usize) -> Self {
        Self {
            inner,
            activity: Arc::clone(activity),
            stream: None,
            max_header_bytes,
            h2: None,
            replay: Bytes::new(),
            passthrough: false,
            plain: false,
        }
    }

    fn has_replay(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Keeps what hyper read ahead (copied: hyper's buffer is freed); the
    /// follower stops with hyper.
    fn park(&mut self, read_ahead: &Bytes) {
        self.replay = if read_ahead.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(read_ahead)
        };
        self.stream = None;
    }

    /// Leaves the parked state: bytes read ahead begin the next head.
    fn unpark(&mut self) {
        if self.has_replay() {
            let a = &self.activity;
            a.since_ms.store(a.now_ms(), Ordering::Release);
            a.reading_head.store(true, Ordering::Release);
            a.rearm.store(true, Ordering::Release);
        }
        self.activity.read_blocked.store(false, Ordering::Relaxed);
    }

    /// Hands the connection from fulcrum's own server side to hyper:
    /// `read_ahead` (read, not served, beginning with a request head) is
    /// followed as bytes just read would be, and replayed. The refusal of
    /// the first request, if the follower refuses it: nothing is handed
    /// over then, as hyper would answer some of these itself with no cause.
    fn hand_to_hyper(&mut self, read_ahead: Bytes) -> Option<Refusal> {
        self.plain = false;
        let verdicts = Arc::new(Verdicts::default());
        let mut stream = RequestStream::new(hard_limit(self.max_header_bytes));
        if let Some(refused) = stream.feed(&read_ahead) {
            if refused.message == 0 {
                return Some(refused.refusal);
            }
            verdicts.record(refused);
        }
        self.activity.verdicts.store(Some(verdicts));
        self.stream = Some(Box::new(stream));
        self.replay = read_ahead;
        None
    }

    /// Checks bytes just read: an HTTP/2 client's frames, or the HTTP/1
    /// requests hyper reads.
    fn check(&mut self, bytes: &[u8]) -> Result<(), Abuse> {
        if let Some(watch) = &mut self.h2 {
            return watch.feed(bytes);
        }
        if let Some(stream) = self.stream.as_mut().filter(|s| !s.stopped())
            && let Some(refused) = stream.feed(bytes)
            && let Some(verdicts) = &*self.activity.verdicts.load()
        {
            verdicts.record(refused);
        }
        Ok(())
    }

    /// Starts the HTTP/2 frame watch on a connection that sent the client
    /// preface, with what was read so far.
    fn watch_http2(&mut self) -> Result<(), Abuse> {
        let mut watch = FrameWatch::new(self.max_header_bytes);
        let fed = watch.feed(&self.replay);
        self.h2 = Some(Box::new(watch));
        fed
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Tracked<S> {
    /// Reads from the socket, noting a request head's start and checking
    /// what arrives.
    fn poll_read_checked(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_pending() {
            self.activity.read_blocked.store(true, Ordering::Relaxed);
        }
        if buf.filled().len() > before {
            let a = &self.activity;
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
                let _ = self.activity.refused.set(abuse);
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
    fn poll_detect(
        &mut self,
        cx: &mut Context<'_>,
        http2_only: bool,
    ) -> Poll<io::Result<Detected>> {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        loop {
            let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut buf = ReadBuf::uninit(&mut storage);
            std::task::ready!(self.poll_read_checked(cx, &mut buf))?;
            let read = buf.filled();
            if read.is_empty() {
                // The end: hyper answers whatever came before it.
                return Poll::Ready(Ok(match (self.has_replay(), http2_only) {
                    (false, _) => Detected::Nothing,
                    (true, false) => Detected::Http1,
                    (true, true) => Detected::NotThePreface,
                }));
            }
            self.replay = if self.replay.is_empty() {
                Bytes::copy_from_slice(read)
            } else {
                [&self.replay[..], read].concat().into()
            };
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = buf.remaining().min(this.replay.len());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.poll_read_checked(cx, buf)
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
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
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
            this.activity.unflushed.store(false, Ordering::Relaxed);
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<F, R>(_: &F) -> usize
    where
        F: Fn(TcpStream, Arc<Activity>, CancellationToken, Held) -> R,
    {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_connection_costs_little() {
        // A plain connection's task is this state in a 128-byte aligned
        // cell with about 120 bytes of tokio's own: 512 keeps the cell at
        // 640 bytes. Parked, the connection holds nothing else but its
        // Activity and tokio's registration of the socket.
        let task = returned_size(&serve_connection::<TcpStream>);
        assert!(task <= 512, "connection task state is {task} bytes");
        let activity = std::mem::size_of::<Activity>();
        assert!(activity <= 208, "Activity is {activity} bytes");
    }
}
