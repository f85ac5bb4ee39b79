//! fulcrum's own last-in-first-out pool of HTTP/1.1 connections to one
//! endpoint, each driven by the request that holds it (`mod.rs`). A
//! connection is lent to one request as a [`Lease`] and goes back to the
//! pool when the response body has been read to its end (at once for a
//! response without a body); a lease dropped before that (client gone, body
//! error, upgrade) closes its connection, since the connection may hold the
//! rest of a response. Newest first: the connection used last is the one
//! most likely still open and warm.
//!
//! Each connection carries its own `response_timeout` timer (a
//! `tokio::time::timeout` per request cost about 1,500 instructions:
//! registration, removal, and moving the response through). A request does
//! not move it: armed for an earlier request's deadline, it fires early at
//! most once per `response_timeout` and is then moved on to the deadline of
//! the request it finds ([`Deadline`]). Moving it per request cost about 100
//! instructions (callgrind, 22,326 -> 22,231).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Response;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{Conn, Http1Body};
use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::upstream::error::Error;
use crate::upstream::outgoing::Outgoing;

/// Idle HTTP/1.1 connections to one endpoint, newest last; one list per
/// worker thread (`workers.rs`), so that a request uses a connection served
/// by its own thread.
#[derive(Debug)]
pub struct Pool {
    address: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Per worker: `pool_max_idle` shared out between the workers; more
    /// are kept while recent demand needed them (`List::missed`).
    max_idle: usize,
    idle: Box<[Mutex<List>]>,
    /// Whether a task is closing connections idle past `idle_timeout`.
    sweeping: AtomicBool,
}

/// One worker's idle connections, newest last, and when a request last
/// found none (and opened a connection).
#[derive(Debug, Default)]
struct List {
    idle: Vec<Idle>,
    missed: Option<Instant>,
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

impl Pool {
    /// The pool of HTTP/1.1 connections to `address`.
    pub fn new(config: &UpstreamConfig, address: &str) -> Self {
        let workers = crate::workers::count();
        Self {
            address: address.to_owned(),
            connect_timeout: config.connect_timeout,
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.pool_max_idle.div_ceil(workers),
            idle: (0..workers).map(|_| Mutex::default()).collect(),
            sweeping: AtomicBool::new(false),
        }
    }
    /// See [`UpstreamClient::request`] for why this is not an `async fn`
    /// (520 bytes against 936).
    #[allow(clippy::manual_async_fn)]
    /// `wrap` makes the response's body what the caller hands on (the
    /// client's `UpstreamBody`), so the response is built once, in place.
    pub fn request<'a, B>(
        self: &'a Arc<Self>,
        outgoing: Outgoing<'a>,
        body: RequestBody,
        timeout: Duration,
        wrap: fn(Http1Body) -> B,
    ) -> impl Future<Output = Result<Response<B>, Error>> + Send + 'a
    where
        B: Send + 'a,
    {
        async move {
            // The attempt's start stands for now: no clock read here.
            let now = outgoing.sent;
            let deadline = tokio::time::Instant::from_std(now) + timeout;
            let mut pooled = match self.check_out(now) {
                Some(mut pooled) => {
                    // A timer still armed for an earlier deadline is left so:
                    // if it fires first, `Deadline` moves it on (one timer
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
                    let io = Deadline::new(timer.as_mut(), deadline, connect).await??;
                    Box::new(Pooled {
                        conn: Conn::new(io),
                        timer,
                    })
                }
            };
            let Pooled { conn, timer } = &mut *pooled;
            let answer = Deadline::new(timer.as_mut(), deadline, conn.exchange(&outgoing, body))
                .await?
                .map_err(Error::Http1)?;
            let lease = Lease {
                pool: Arc::clone(self),
                pooled,
            };
            let body = Http1Body::new(lease, answer.framing, answer.raw);
            Ok(Response::from_parts(answer.head, wrap(body)))
        }
    }

    /// The newest idle connection still open and within `idle_timeout`.
    /// Notes a miss (the caller opens a connection) when there is none.
    fn check_out(&self, now: Instant) -> Option<Box<Pooled>> {
        let mut list = self.lock();
        while let Some(c) = list.idle.pop() {
            if !c.pooled.conn.is_stale()
                && now.saturating_duration_since(c.since) < self.idle_timeout
            {
                return Some(c.pooled);
            }
        }
        list.missed = Some(now);
        None
    }

    /// Keeps a connection for the next request. Beyond `max_idle` idle
    /// ones, the oldest closes, unless a request found none within the
    /// last `idle_timeout`: then demand above `max_idle` is recent and will
    /// want them again (closing them would open as many at the next burst:
    /// 14,300 connects in 7 s under HTTP/2 with 500 streams in flight and
    /// the default 256). Connections beyond demand still close when idle
    /// past `idle_timeout` (`sweep`), the least used first (the list is
    /// newest first out).
    fn check_in(self: &Arc<Self>, pooled: Box<Pooled>) {
        if self.max_idle == 0 || !pooled.conn.reusable() {
            return;
        }
        let now = crate::clock::now().into_std();
        let mut list = self.lock();
        let recent_demand = |missed: Option<Instant>| {
            missed.is_some_and(|at| now.saturating_duration_since(at) < self.idle_timeout)
        };
        if list.idle.len() >= self.max_idle && !recent_demand(list.missed) {
            // The oldest goes (and closes): it is the least likely reused.
            list.idle.remove(0);
        }
        list.idle.push(Idle { pooled, since: now });
        drop(list);
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
    fn lock(&self) -> MutexGuard<'_, List> {
        Self::lock_list(&self.idle[crate::workers::current() % self.idle.len()])
    }

    fn lock_list(list: &Mutex<List>) -> MutexGuard<'_, List> {
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
    struct Deadline<'t, F> {
        timer: Pin<&'t mut Sleep>,
        deadline: tokio::time::Instant,
        // The timer holds this task's waker: polled once, it need not be
        // polled again until it has fired.
        registered: bool,
        #[pin]
        future: F,
    }
}

impl<'t, F: Future> Deadline<'t, F> {
    fn new(timer: Pin<&'t mut Sleep>, deadline: tokio::time::Instant, future: F) -> Self {
        Self {
            timer,
            deadline,
            registered: false,
            future,
        }
    }
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Result<F::Output, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(task) {
            return Poll::Ready(Ok(output));
        }
        if *this.registered && !this.timer.is_elapsed() {
            return Poll::Pending;
        }
        while this.timer.as_mut().poll(task).is_ready() {
            // The clock itself, not the turn's reading (`clock.rs`): an
            // older reading could loop here on a timer that fires at once.
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
        let now = crate::clock::now().into_std();
        let mut lists: Vec<_> = pool.idle.iter().map(Pool::lock_list).collect();
        let mut left = 0;
        for list in &mut lists {
            list.idle.retain(|c| {
                !c.pooled.conn.is_stale() && now.saturating_duration_since(c.since) < idle_timeout
            });
            left += list.idle.len();
        }
        if left == 0 {
            // Under the locks: a check-in after this sees `false` and starts
            // a new sweep.
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_early_moves_on_to_the_deadline() {
        let start = tokio::time::Instant::now();
        // Armed for an earlier request's deadline, 100 ms from now.
        let mut timer = Box::pin(tokio::time::sleep_until(start + Duration::from_millis(100)));
        let deadline = start + Duration::from_millis(500);

        // An exchange that takes 300 ms: the timer fires at 100 ms, is moved
        // on to the deadline, and the exchange ends first.
        let exchange = tokio::time::sleep(Duration::from_millis(300));
        let ended = Deadline::new(timer.as_mut(), deadline, exchange).await;
        assert!(ended.is_ok());
        assert_eq!(
            tokio::time::Instant::now(),
            start + Duration::from_millis(300)
        );
        assert_eq!(timer.deadline(), deadline);

        // One that never ends times out at the deadline, not before.
        let hung = std::future::pending::<()>();
        let ended = Deadline::new(timer.as_mut(), deadline, hung).await;
        assert!(matches!(ended, Err(Error::Timeout)));
        assert_eq!(tokio::time::Instant::now(), deadline);
    }
}
