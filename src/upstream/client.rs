//! The connection pool to one endpoint.
//!
//! HTTP/1.1 (the default): fulcrum's own last-in-first-out pool of hyper's
//! `client::conn::http1` connections. A connection is lent to one request
//! as a [`Lease`] and goes back to the pool when the response body has been
//! read to its end (at once for a response without a body); a lease dropped
//! before that (client gone, body error, upgrade) closes its connection,
//! since the connection may hold the rest of a response. Newest first: the
//! connection used last is the one most likely still open and warm.
//!
//! Why not hyper-util's legacy `Client`: in front of one endpoint it has
//! nothing to choose between, yet callgrind counted about 6,400 instructions
//! per proxied request (13% of the proxy's) in it: SipHash of a pool key and
//! authority comparisons on every checkout, and 32 moves of the request and
//! its boxed future (docs/performance.md).
//!
//! Each HTTP/1.1 connection carries its own `response_timeout` timer,
//! moved later for each request it carries. A later deadline only updates
//! the timer's entry, so a busy connection's timer is registered once, not
//! once per request (a `tokio::time::timeout` per request cost about 1,500
//! instructions: registration, removal, and moving the response through).
//!
//! HTTP/2 (`protocol = "http2"`): hyper-util's client, which multiplexes
//! requests over one connection.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::config::{Protocol, UpstreamConfig};
use crate::proxy::RequestBody;

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
    conn: Conn,
    since: Instant,
}

/// An HTTP/1.1 connection and its response timer.
#[derive(Debug)]
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    timer: Pin<Box<Sleep>>,
}

/// A pooled connection lent to one request.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    conn: Conn,
}

/// Why an attempt to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting failed or took longer than `connect_timeout`
    /// (`io::ErrorKind::TimedOut`); nothing was sent.
    #[error("connecting: {0}")]
    Connect(#[source] io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
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
    /// Sends `request`, failing with [`Error::Timeout`] if no response
    /// head arrives within `timeout`; the lease (HTTP/1.1) must live as long
    /// as the response body is read, and be released at its end.
    pub async fn request(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Lease>), Error> {
        match self {
            UpstreamClient::Http1(pool) => {
                let (response, lease) = pool.request(request, timeout).await?;
                Ok((response, Some(lease)))
            }
            UpstreamClient::Http2(client) => {
                match tokio::time::timeout(timeout, client.request(request)).await {
                    Ok(response) => Ok((response?, None)),
                    Err(_) => Err(Error::Timeout),
                }
            }
        }
    }
}

impl Error {
    /// Nothing reached the endpoint: connecting failed or timed out.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Http2(e) => e.is_connect(),
            Error::Http(_) | Error::Timeout => false,
        }
    }

    /// hyper's error behind this one, if any.
    pub fn http(&self) -> Option<&hyper::Error> {
        match self {
            Error::Http(e) => Some(e),
            Error::Http2(e) => crate::error::find_source(e),
            Error::Connect(_) | Error::Timeout => None,
        }
    }
}

impl Pool {
    async fn request(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(mut conn) = self.check_out() {
            conn.timer.as_mut().reset(deadline);
            // Waits until the connection has finished its previous exchange;
            // fails if the endpoint closed it meanwhile.
            if before(conn.timer.as_mut(), conn.sender.ready())
                .await?
                .is_err()
            {
                continue;
            }
            match before(conn.timer.as_mut(), conn.sender.try_send_request(request)).await? {
                Ok(response) => return Ok((response, self.lease(conn))),
                Err(mut failed) => match failed.take_message() {
                    // Not sent: the connection closed under it; try the next.
                    Some(unsent) => request = unsent,
                    None => return Err(Error::Http(failed.into_error())),
                },
            }
        }
        let mut timer = Box::pin(tokio::time::sleep_until(deadline));
        let mut sender = before(timer.as_mut(), self.connect()).await??;
        let response = before(timer.as_mut(), sender.send_request(request)).await??;
        Ok((response, self.lease(Conn { sender, timer })))
    }

    fn lease(self: &Arc<Self>, conn: Conn) -> Lease {
        Lease {
            pool: Arc::clone(self),
            conn,
        }
    }

    /// The newest idle connection still open and within `idle_timeout`.
    fn check_out(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if !c.conn.sender.is_closed() && c.since.elapsed() < self.idle_timeout {
                return Some(c.conn);
            }
        }
        None
    }

    fn check_in(self: &Arc<Self>, conn: Conn) {
        if self.max_idle == 0 || conn.sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            // The oldest goes (and closes): it is the least likely reused.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<RequestBody>, Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Error::Connect(io::ErrorKind::TimedOut.into()))?
            .map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "endpoint connection ended with an error");
            }
        });
        Ok(sender)
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
        self.pool.check_in(self.conn);
    }
}

/// The output of `future`, or [`Error::Timeout`] if `timer` fires first.
async fn before<F: Future>(mut timer: Pin<&mut Sleep>, future: F) -> Result<F::Output, Error> {
    let mut future = pin!(future);
    std::future::poll_fn(|task| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(task) {
            return std::task::Poll::Ready(Ok(output));
        }
        timer.as_mut().poll(task).map(|()| Err(Error::Timeout))
    })
    .await
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
            idle.retain(|c| !c.conn.sender.is_closed() && c.since.elapsed() < idle_timeout);
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
