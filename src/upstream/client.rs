//! The connection pool to one endpoint.
//!
//! HTTP/1.1 (the default): fulcrum's own last-in-first-out pool of
//! connections, each driven by the request that holds it (`h1.rs`). A
//! connection is lent to one request as a [`Lease`] and goes back to the
//! pool when the response body has been read to its end (at once for a
//! response without a body); a lease dropped before that (client gone, body
//! error, upgrade) closes its connection, since the connection may hold the
//! rest of a response. Newest first: the connection used last is the one
//! most likely still open and warm.
//!
//! Why not hyper-util's legacy `Client`: in front of one endpoint it has
//! nothing to choose between, yet callgrind counted about 6,400 instructions
//! per proxied request (13% of the proxy's) in it: SipHash of a pool key and
//! authority comparisons on every checkout, and 32 moves of the request and
//! its boxed future (docs/performance.md). Nor hyper's `client::conn::http1`
//! under this pool, which fulcrum used next: a task per connection and
//! channels between it and the request, about 10,000 instructions per
//! request (`h1.rs`).
//!
//! Each HTTP/1.1 connection carries its own `response_timeout` timer (a
//! `tokio::time::timeout` per request cost about 1,500 instructions:
//! registration, removal, and moving the response through). A request does
//! not move it: armed for an earlier request's deadline, it fires early at
//! most once per `response_timeout` and is then moved on to the deadline of
//! the request it finds (`Before`). Moving it per request cost about 100
//! instructions (callgrind, 22,326 -> 22,231).
//!
//! HTTP/2 (`protocol = "http2"`): hyper-util's client, which multiplexes
//! requests over one connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::h1::{self, Conn, Failure};
use crate::body::{BodyError, RequestBody};
use crate::config::{Protocol, UpstreamConfig};
use crate::headers::Forwarding;

/// The keep-alive connections to one endpoint.
#[derive(Debug)]
pub enum UpstreamClient {
    Http1(Arc<Pool>),
    Http2(Box<Client<HttpConnector, RequestBody>>),
}

/// Idle HTTP/1.1 connections to one endpoint, newest last; one list per
/// worker thread (`workers.rs`), so that a request uses a connection served
/// by its own thread.
#[derive(Debug)]
pub struct Pool {
    address: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Per worker: `pool_max_idle` shared out between the workers.
    max_idle: usize,
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Whether a task is closing connections idle past `idle_timeout`.
    sweeping: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    pooled: Box<Pooled>,
    since: Instant,
}

/// A connection and its `response_timeout` timer: one per connection,
/// armed for the deadline of this request or an earlier one. Boxed once
/// per connection, so that a lease moves as two pointers.
#[derive(Debug)]
pub(super) struct Pooled {
    pub(super) conn: Conn,
    timer: Pin<Box<Sleep>>,
}

/// A pooled connection lent to one request.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    pub(super) pooled: Box<Pooled>,
}

/// A request on its way to an endpoint, borrowed from the client's: HTTP/1.1
/// writes it from here, so an attempt copies nothing.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// In origin form.
    pub target: &'a PathAndQuery,
    /// The client's fields, not yet rewritten; an HTTP/2 attempt takes them
    /// if it is the last, or copies them.
    pub headers: &'a mut HeaderMap,
    pub last_attempt: bool,
    pub authority: &'a Authority,
    pub forwarding: &'a Forwarding<'a>,
    /// When the attempt started.
    pub sent: Instant,
    /// An HTTP/1.1 endpoint's response fields may come as lines
    /// (`h1::RawHead`) instead of a map: fulcrum's own server side writes
    /// the response.
    pub raw_head: bool,
    /// Where an HTTP/1.1 endpoint's interim (1xx) heads go, when the
    /// client's server side can write them.
    pub interim: Option<&'a crate::http1::Interim>,
}

/// An endpoint's response body.
#[derive(Debug)]
pub enum UpstreamBody {
    Http1(h1::Http1Body),
    Http2(Incoming),
    /// Nothing (a 101 response, whose connection went to the upgrade).
    Empty,
}

impl UpstreamBody {
    /// The response's fields, when they came as lines, not in its map.
    pub fn raw_head(&self) -> Option<&super::RawHead> {
        match self {
            UpstreamBody::Http1(body) => body.raw_head(),
            UpstreamBody::Http2(_) | UpstreamBody::Empty => None,
        }
    }
}

/// What reading an endpoint's response body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an attempt to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting failed or took longer than `connect_timeout`
    /// (`io::ErrorKind::TimedOut`); nothing was sent.
    #[error("connecting: {0}")]
    Connect(#[source] io::Error),
    /// Sending the request or reading the response head failed.
    #[error(transparent)]
    Http1(Failure),
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
    /// No response head within `response_timeout`.
    #[error("no response within response_timeout")]
    Timeout,
}

/// Builds the pool for an endpoint at `address` of `config`.
pub fn build(config: &UpstreamConfig, address: &str) -> UpstreamClient {
    if config.protocol == Protocol::Http2 {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .http2_only(true);
        return UpstreamClient::Http2(Box::new(builder.build(connector)));
    }
    let workers = crate::workers::count();
    UpstreamClient::Http1(Arc::new(Pool {
        address: address.to_owned(),
        connect_timeout: config.connect_timeout,
        idle_timeout: config.pool_idle_timeout,
        max_idle: config.pool_max_idle.div_ceil(workers),
        idle: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        sweeping: AtomicBool::new(false),
    }))
}

impl UpstreamClient {
    /// Sends the request (`outgoing` and `body`), failing with
    /// [`Error::Timeout`] if no response head arrives within `timeout`. An
    /// HTTP/1.1 response body holds its connection and hands it back to the
    /// pool at its end.
    ///
    /// A plain function returning the future of the protocol in use, so that
    /// the request's future (moved as a whole, and touched by every request
    /// of a connection) holds one copy of its arguments, not two as an
    /// `async fn`'s does; the HTTP/2 future is boxed.
    pub fn request<'a>(
        &'a self,
        outgoing: Outgoing<'a>,
        body: RequestBody,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Error>> + Send + 'a {
        match self {
            UpstreamClient::Http1(pool) => Either::Left(pool.request(outgoing, body, timeout)),
            UpstreamClient::Http2(client) => Either::Right(Box::pin(Self::http2_request(
                client, outgoing, body, timeout,
            ))),
        }
    }

    async fn http2_request(
        client: &Client<HttpConnector, RequestBody>,
        outgoing: Outgoing<'_>,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, Error> {
        // HTTP/2 needs the scheme and authority for its pseudo-headers; the
        // last attempt takes the fields, earlier ones copy them.
        let mut request = Request::new(body);
        *request.method_mut() = outgoing.method.clone();
        *request.uri_mut() = upstream_uri(outgoing.authority, outgoing.target.clone());
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = if outgoing.last_attempt {
            std::mem::take(outgoing.headers)
        } else {
            outgoing.headers.clone()
        };
        outgoing.forwarding.apply(request.headers_mut());
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(response) => Ok(response?.map(UpstreamBody::Http2)),
            Err(_) => Err(Error::Timeout),
        }
    }
}

impl Error {
    /// Nothing reached the endpoint: connecting failed or timed out.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Http2(e) => e.is_connect(),
            Error::Http1(_) | Error::Timeout => false,
        }
    }

    /// The endpoint's response was not valid HTTP.
    pub fn is_invalid_response(&self) -> bool {
        match self {
            Error::Http1(e) => matches!(e, Failure::Invalid(_)),
            Error::Http2(e) => find_source::<hyper::Error>(e)
                .is_some_and(|e| e.is_parse() || e.is_parse_status() || e.is_parse_too_large()),
            Error::Connect(_) | Error::Timeout => false,
        }
    }

    /// The client's request body failed, not the endpoint.
    pub fn body(&self) -> Option<&BodyError> {
        match self {
            Error::Http1(Failure::Body(e)) => Some(e),
            Error::Http2(e) => find_source(e),
            _ => None,
        }
    }
}

impl Pool {
    /// See [`UpstreamClient::request`] for why this is not an `async fn`
    /// (520 bytes against 936).
    #[allow(clippy::manual_async_fn)]
    fn request<'a>(
        self: &'a Arc<Self>,
        outgoing: Outgoing<'a>,
        body: RequestBody,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Error>> + Send + 'a {
        async move {
            // The attempt's start stands for now: no clock read here.
            let now = outgoing.sent;
            let deadline = tokio::time::Instant::from_std(now) + timeout;
            let mut pooled = match self.check_out(now) {
                Some(mut pooled) => {
                    // A timer still armed for an earlier deadline is left so:
                    // if it fires first, `Before` moves it on (one timer
                    // update per response_timeout, not one per request).
                    if pooled.timer.is_elapsed() || pooled.timer.deadline() > deadline {
                        pooled.timer.as_mut().reset(deadline);
                    }
                    pooled
                }
                None => {
                    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
                    // Boxed: rarely needed, and larger than the exchange.
                    let connect = Box::pin(self.connect());
                    let io = Before::new(timer.as_mut(), deadline, connect).await??;
                    Box::new(Pooled {
                        conn: Conn::new(io),
                        timer,
                    })
                }
            };
            let Pooled { conn, timer } = &mut *pooled;
            let answer = Before::new(timer.as_mut(), deadline, conn.exchange(&outgoing, body))
                .await?
                .map_err(Error::Http1)?;
            let lease = Lease {
                pool: Arc::clone(self),
                pooled,
            };
            let body = h1::Http1Body::new(lease, answer.framing, answer.raw);
            Ok(Response::from_parts(answer.head, UpstreamBody::Http1(body)))
        }
    }

    /// The newest idle connection still open and within `idle_timeout`.
    fn check_out(&self, now: Instant) -> Option<Box<Pooled>> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if !c.pooled.conn.is_stale()
                && now.saturating_duration_since(c.since) < self.idle_timeout
            {
                return Some(c.pooled);
            }
        }
        None
    }

    fn check_in(self: &Arc<Self>, pooled: Box<Pooled>) {
        if self.max_idle == 0 || !pooled.conn.reusable() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            // The oldest goes (and closes): it is the least likely reused.
            idle.remove(0);
        }
        idle.push(Idle {
            pooled,
            since: Instant::now(),
        });
        drop(idle);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    async fn connect(&self) -> Result<TcpStream, Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Error::Connect(io::ErrorKind::TimedOut.into()))?
            .map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        Ok(stream)
    }

    /// This worker's idle list.
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        Self::lock_list(&self.idle[crate::workers::current() % self.idle.len()])
    }

    fn lock_list(list: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
        // The list stays valid whatever a panicking holder did.
        list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease {
    /// The response body was read to its end: the connection may serve the
    /// next request.
    pub fn release(self) {
        self.pool.check_in(self.pooled);
    }
}

pin_project_lite::pin_project! {
    /// The output of `future`, or [`Error::Timeout`] if it is not ready by
    /// `deadline`. `timer` may be armed for an earlier moment (never a later
    /// one): when it fires before `deadline`, it is moved on to it. A
    /// struct rather than an `async fn`, which would hold `future` twice.
    struct Before<'t, F> {
        timer: Pin<&'t mut Sleep>,
        deadline: tokio::time::Instant,
        // The timer holds this task's waker: polled once, it need not be
        // polled again until it has fired.
        registered: bool,
        #[pin]
        future: F,
    }
}

impl<'t, F: Future> Before<'t, F> {
    fn new(timer: Pin<&'t mut Sleep>, deadline: tokio::time::Instant, future: F) -> Self {
        Self {
            timer,
            deadline,
            registered: false,
            future,
        }
    }
}

impl<F: Future> Future for Before<'_, F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(task) {
            return Poll::Ready(Ok(output));
        }
        if *this.registered && !this.timer.is_elapsed() {
            return Poll::Pending;
        }
        while this.timer.as_mut().poll(task).is_ready() {
            if tokio::time::Instant::now() >= *this.deadline {
                return Poll::Ready(Err(Error::Timeout));
            }
            this.timer.as_mut().reset(*this.deadline);
        }
        *this.registered = true;
        Poll::Pending
    }
}

/// Closes connections idle past `idle_timeout`; ends when the pool is gone
/// or empty (the next check-in starts it again).
async fn sweep(pool: Weak<Pool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut lists: Vec<_> = pool.idle.iter().map(Pool::lock_list).collect();
        let mut left = 0;
        for idle in &mut lists {
            idle.retain(|c| !c.pooled.conn.is_stale() && c.since.elapsed() < idle_timeout);
            left += idle.len();
        }
        if left == 0 {
            // Under the locks: a check-in after this sees `false` and starts
            // a new sweep.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}

impl UpstreamBody {
    /// The endpoint connection of a 101 response, and the bytes the
    /// endpoint sent after it.
    pub fn into_upgraded(self) -> Option<(TcpStream, Bytes)> {
        match self {
            UpstreamBody::Http1(body) => body.into_upgraded(),
            UpstreamBody::Http2(_) | UpstreamBody::Empty => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

fn upstream_uri(authority: &Authority, path: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).unwrap_or_default()
}

/// The first error of type `T` in `error`'s chain of sources, itself
/// included.
pub fn find_source<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
