//! One client connection's task: the protocol told by the first bytes,
//! plain HTTP/1.1 requests served by fulcrum's own server side
//! (`h1_server/`), the rest by hyper (HTTP/1 and HTTP/2), idle HTTP/1
//! connections parked without buffers, the timer (`timer.rs`), the drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::futures::OwnedNotified;

use super::Admission;
use super::connection_state::{ConnectionState, End, RequestGuard};
use super::h1_server::{self, Ended};
use super::refusing::{GOAWAY_PROTOCOL_ERROR, Refusing};
use super::socket::{Detected, Socket, Transport, hard_limit};
use super::stop::Stop;
use super::timer::{PARK_AFTER, Step};
use super::upgrade::Upgraded;
use crate::body::MessageVerdict;
use crate::clock;
use crate::http1::Interim;
use crate::proxy::{self, Downstream};

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams the client may reset before fulcrum accepts them; one more and h2
/// sends GOAWAY (rapid reset in one batch).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 128;
/// Streams h2 may reset because of the client's errors; one more and it
/// sends GOAWAY ("MadeYouReset"). A correct client causes none.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// hyper's service on a connection: each request to the proxy.
pub(super) trait ProxyService:
    HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T> ProxyService for T where
    T: HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// What starts a plain request read by fulcrum's own server side
/// (`plain_request`).
pub(super) trait PlainHandler<F>:
    Fn(&Arc<ConnectionState>, http::request::Parts, &Arc<Interim>) -> F
{
}

impl<T, F> PlainHandler<F> for T where
    T: Fn(&Arc<ConnectionState>, http::request::Parts, &Arc<Interim>) -> F
{
}

/// What one part of a connection's turn asks of the loop.
enum Turn {
    /// Something changed: go round again.
    Again,
    /// The connection is over.
    End(End),
    /// Nothing more to do here: on to the drain check and the timer, or
    /// wait.
    Wait,
}

/// hyper's HTTP/1 server connection over a client socket.
type HyperHttp1<S, Svc> = http1::Connection<TokioIo<Socket<S>>, Svc>;
/// hyper's HTTP/2 server connection over a client socket.
type HyperHttp2<S, Svc> = http2::Connection<TokioIo<Socket<S>>, Svc, StreamExecutor>;
/// fulcrum's own HTTP/1.1 server side over a client socket.
type PlainHttp1<S, F> = h1_server::Server<Socket<S>, F>;

/// Spawns an HTTP/2 client's streams as tokio tasks whose polls are turns
/// (`clock.rs`), as the connection's own are.
#[derive(Clone, Copy, Debug)]
pub(super) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(clock::InTurns::new(stream));
    }
}

pin_project_lite::pin_project! {
    #[project = ConnectionProj]
    /// One client connection: the whole state of its task, which is what an
    /// idle connection costs (kept small on purpose; a test pins its size).
    ///
    /// HTTP/2 if the connection opens with the client preface, HTTP/1
    /// otherwise: fulcrum's own server side until a request is not plain,
    /// then hyper's. An HTTP/1 connection idle for PARK_AFTER parks: the
    /// server side (with its buffers: 1 KiB and up for fulcrum's, 16 KiB and
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
        io: Option<Socket<S>>,
        // While fulcrum serves plain HTTP/1.1 requests itself.
        own: Option<Pin<Box<PlainHttp1<S, F>>>>,
        // While hyper serves HTTP/1.
        h1: Option<Pin<Box<HyperHttp1<S, Svc>>>>,
        // While hyper serves HTTP/2 (to the end).
        h2: Option<Pin<Box<HyperHttp2<S, Svc>>>>,
        // While fulcrum answers a request it refused before hyper read
        // it, then closes.
        refusing: Option<Box<Refusing<S>>>,
        service: Svc,
        // Starts a plain request (`plain_request`, a function item: no
        // bytes).
        handler: H,
        state: Arc<ConnectionState>,
        admission: Admission,
        detecting: bool,
        draining: bool,
        // The connection has been idle for PARK_AFTER.
        park: bool,
        stop: Arc<Stop>,
        // Polled once, to hold this task's waker; after that `stop` is
        // only asked (polling it again took a lock of the waiter list on
        // every turn of the connection).
        #[pin]
        cancelled: OwnedNotified,
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
    state: Arc<ConnectionState>,
) -> impl HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: hyper::Request<Incoming>| {
        let http2 = req.version() == http::Version::HTTP_2;
        let (parts, incoming) = req.into_parts();
        // Boxed: the request's future is large (about 1.7 KB), and hyper
        // moves what the service returns several times as it spawns an
        // HTTP/2 stream's task; a box moves as a pointer.
        futures_util::FutureExt::map(
            Box::pin(answer(&state, parts, Some(incoming), http2, None)),
            Ok::<_, Infallible>,
        )
    })
}

/// A plain HTTP/1.1 request read by fulcrum's own server side
/// (`h1_server`): no body.
fn plain_request(
    state: &Arc<ConnectionState>,
    parts: http::request::Parts,
    interim: &Arc<Interim>,
) -> impl Future<Output = hyper::Response<proxy::ResponseBody>> + Send + use<> {
    answer(state, parts, None, false, Some(interim))
}

/// Starts the proxy on one request of the connection; `plain`: fulcrum's
/// own server side writes the response.
fn answer(
    state: &Arc<ConnectionState>,
    parts: http::request::Parts,
    incoming: Option<Incoming>,
    http2: bool,
    plain: Option<&Arc<Interim>>,
) -> impl Future<Output = hyper::Response<proxy::ResponseBody>> + Send + use<> {
    // The follower's verdict on this request, for those hyper read.
    let message = if http2 || plain.is_some() {
        None
    } else {
        let verdicts = (state.handovers.lock().ok()).and_then(|h| h.verdicts.clone());
        verdicts.map(|verdicts| {
            let index = verdicts.next_request();
            MessageVerdict { verdicts, index }
        })
    };
    let guard = RequestGuard::start(state, http2);
    let snapshot = state.shared.snapshot.load_full();
    let downstream = Downstream {
        listener: snapshot
            .routes
            .listener_index(&state.listener)
            .unwrap_or(usize::MAX),
        client: state.client,
        client_ip: state.client_ip,
        https: state.https,
        message,
        started: clock::now().into_std(),
        interim: plain.cloned(),
    };
    let shared = Arc::clone(&state.shared);
    proxy::handle(parts, incoming, downstream, snapshot, guard, shared)
}

/// Serves `stream` until it closes, is cut, or the listener stops.
pub(super) fn serve_connection<S: Transport>(
    stream: S,
    state: Arc<ConnectionState>,
    stop: Arc<Stop>,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let d = admission.deadlines;
    // From the accept: no clock read of its own.
    let timer = tokio::time::sleep_until(state.epoch + d.idle.min(d.header_read));
    Connection {
        io: Some(Socket::new(stream, &state, admission.max_header_bytes)),
        own: None,
        h1: None,
        h2: None,
        refusing: None,
        service: service(Arc::clone(&state)),
        handler: plain_request,
        state,
        admission,
        detecting: true,
        draining: false,
        park: false,
        cancelled: stop.waiter(),
        stop,
        cancel_registered: false,
        timer,
        timer_armed: true,
    }
}

/// The socket of a finished hyper HTTP/1 connection (not shut down: an
/// upgrade, or a park) and the bytes hyper had read ahead.
fn take_socket<S, Svc>(h1: &mut Option<Pin<Box<HyperHttp1<S, Svc>>>>) -> Option<(Socket<S>, Bytes)>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody>,
{
    let parts = Pin::into_inner(h1.take()?).into_parts();
    Some((parts.io.into_inner(), parts.read_buf))
}

/// fulcrum's own HTTP/1.1 server side over `io`, starting with the bytes
/// `io` holds to replay.
fn own_connection<S: Transport, F>(mut io: Socket<S>) -> Pin<Box<PlainHttp1<S, F>>>
where
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    let read_ahead = std::mem::take(&mut io.replay);
    io.plain = true;
    // Allocated first, then written: the server side is built in its box
    // rather than built aside (2 KiB, most of it the empty slot of a
    // request's future) and copied in.
    Box::into_pin(Box::write(
        Box::new_uninit(),
        h1_server::Server::new(io, read_ahead),
    ))
}

/// hyper's HTTP/1 connection over `io`.
fn http1_connection<S, Svc>(
    io: Socket<S>,
    service: &Svc,
    hard_limit: usize,
) -> Pin<Box<HyperHttp1<S, Svc>>>
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
/// frame watch in `Socket` does (`h2_guard`).
fn http2_connection<S, Svc>(
    io: Socket<S>,
    service: &Svc,
    hard_limit: usize,
) -> Pin<Box<HyperHttp2<S, Svc>>>
where
    S: Transport,
    Svc: HttpService<Incoming, ResBody = proxy::ResponseBody, Future: Send + 'static> + Clone,
{
    let mut http2 = http2::Builder::new(StreamExecutor);
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
    Svc: ProxyService,
    H: PlainHandler<F>,
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<()> {
        // Everything this poll does reads the clock once at most (`clock.rs`).
        let _turn = clock::Turn::begin();
        let mut this = self.project();
        match this.poll_turns(task) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(end) => {
                if this.io.is_some() && !*this.detecting {
                    this.admission.open.parked(false);
                }
                this.state.log_end(end);
                Poll::Ready(())
            }
        }
    }
}

impl<S, Svc, H, F> ConnectionProj<'_, S, Svc, H, F>
where
    S: Transport,
    Svc: ProxyService,
    H: PlainHandler<F>,
    F: Future<Output = hyper::Response<proxy::ResponseBody>>,
{
    /// Polls until the connection ends or nothing can progress.
    fn poll_turns(&mut self, task: &mut Context<'_>) -> Poll<End> {
        let hard_limit = hard_limit(self.admission.max_header_bytes);
        loop {
            // The connection first, so a read that starts a request head
            // re-arms the timer in the same pass.
            let turn = if self.own.is_some() {
                self.poll_plain(task, hard_limit)
            } else if self.h1.is_some() {
                self.poll_hyper_http1(task)
            } else if let Some(conn) = self.h2.as_mut() {
                match conn.as_mut().poll(task) {
                    Poll::Ready(result) => {
                        Turn::End(result.map_or_else(End::Error, |()| End::Closed))
                    }
                    Poll::Pending => Turn::Wait,
                }
            } else if let Some(refusing) = self.refusing.as_mut() {
                match refusing.poll(task) {
                    Poll::Ready(end) => Turn::End(end),
                    Poll::Pending => Turn::Wait,
                }
            } else if self.io.is_some() {
                self.poll_socket(task, hard_limit)
            } else {
                Turn::Wait
            };
            match turn {
                Turn::Again => continue,
                Turn::End(end) => return Poll::Ready(end),
                Turn::Wait => {}
            }
            if !*self.draining && self.stopped(task) {
                *self.draining = true;
                if !self.shut_down_gracefully() {
                    return Poll::Ready(End::Closed);
                }
                continue;
            }
            match self.poll_timer(task) {
                Turn::Again => continue,
                Turn::End(end) => return Poll::Ready(end),
                Turn::Wait => return Poll::Pending,
            }
        }
    }

    /// fulcrum's own server side: serves until a request is hyper's (then
    /// hyper takes the connection, or its first request is refused here),
    /// or the connection parks.
    #[inline]
    fn poll_plain(&mut self, task: &mut Context<'_>, hard_limit: usize) -> Turn {
        let Some(own) = self.own.as_mut() else {
            return Turn::Wait;
        };
        let (handler, state) = (&*self.handler, &*self.state);
        let polled = own
            .as_mut()
            .poll_serve(task, &|parts, interim| handler(state, parts, interim));
        match polled {
            Poll::Ready(Ended::Closed) => Turn::End(End::Closed),
            Poll::Ready(Ended::Io(error)) => Turn::End(End::Io(error)),
            Poll::Ready(Ended::Hyper) => {
                // A request that is not plain: hyper serves the connection
                // from it on, until it parks.
                if let Some((mut socket, read_ahead)) = own.as_mut().take_io() {
                    match socket.hand_to_hyper(read_ahead) {
                        // The first request hyper would read is refused:
                        // answered here, with its cause.
                        Some(refusal) => {
                            *self.refusing = Some(Box::new(Refusing::new(socket, refusal)));
                        }
                        None => {
                            *self.h1 = Some(http1_connection(socket, self.service, hard_limit));
                        }
                    }
                }
                *self.own = None;
                Turn::Again
            }
            Poll::Pending
                if std::mem::take(self.park)
                    && !*self.draining
                    && own.is_idle()
                    && self.state.is_idle() =>
            {
                if let Some((mut socket, read_ahead)) = own.as_mut().take_io() {
                    socket.park(&read_ahead);
                    *self.io = Some(socket);
                    self.admission.open.parked(true);
                }
                *self.own = None;
                Turn::Again
            }
            Poll::Pending => Turn::Wait,
        }
    }

    /// hyper's HTTP/1 server: to its end (or an upgrade's hand-over), or
    /// until the connection parks.
    #[inline]
    fn poll_hyper_http1(&mut self, task: &mut Context<'_>) -> Turn {
        let Some(conn) = self.h1.as_mut() else {
            return Turn::Wait;
        };
        match conn.as_mut().poll(task) {
            Poll::Ready(Err(error)) => Turn::End(End::Error(error)),
            Poll::Ready(Ok(())) => {
                // hyper has shut the socket down, unless the connection was
                // upgraded: then it is handed over.
                let upgrade = (self.state.handovers.lock().ok())
                    .and_then(|mut handovers| handovers.upgrade.take());
                if let Some(to) = upgrade.filter(|to| !to.is_closed())
                    && let Some((mut socket, read_ahead)) = take_socket(self.h1)
                {
                    socket.passthrough = true;
                    socket.stream = None;
                    socket.replay = read_ahead.into();
                    let upgraded = Upgraded {
                        io: Box::new(socket),
                    };
                    let _ = to.send(upgraded);
                    return Turn::End(End::Upgraded);
                }
                Turn::End(End::Closed)
            }
            Poll::Pending
                if std::mem::take(self.park) && !*self.draining && self.state.is_idle() =>
            {
                // hyper closes an idle connection at once, handing back the
                // socket (not shut down, see `parking`) and whatever it
                // read ahead.
                self.state.parking.store(true, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
                let polled = conn.as_mut().poll(task);
                self.state.parking.store(false, Ordering::Relaxed);
                match polled {
                    Poll::Ready(Err(error)) => Turn::End(End::Error(error)),
                    Poll::Ready(Ok(())) => {
                        if let Some((mut socket, read_ahead)) = take_socket(self.h1) {
                            socket.park(&read_ahead);
                            *self.io = Some(socket);
                            self.admission.open.parked(true);
                        }
                        Turn::Again
                    }
                    // Not idle after all (a request body left unread): it
                    // closes after this exchange, as hyper closes such a
                    // connection anyway.
                    Poll::Pending => {
                        *self.draining = true;
                        Turn::Wait
                    }
                }
            }
            Poll::Pending => Turn::Wait,
        }
    }

    /// The socket alone: while the protocol is told by the first bytes,
    /// and while parked (the next bytes start fulcrum's server side).
    #[inline]
    fn poll_socket(&mut self, task: &mut Context<'_>, hard_limit: usize) -> Turn {
        let Some(socket) = self.io.as_mut() else {
            return Turn::Wait;
        };
        if !*self.detecting {
            if socket.has_replay() || socket.inner.poll_read_ready(task).is_ready() {
                // Parked, and the client sent something (or closed).
                socket.unpark();
                self.admission.open.parked(false);
                if let Some(io) = self.io.take() {
                    *self.own = Some(own_connection(io));
                }
                return Turn::Again;
            }
            return Turn::Wait;
        }
        let http2_only = socket.inner.http2_negotiated();
        match socket.poll_detect(task, http2_only) {
            Poll::Ready(Ok(Detected::Http1)) => {
                *self.detecting = false;
                if let Some(io) = self.io.take() {
                    *self.own = Some(own_connection(io));
                }
                Turn::Again
            }
            Poll::Ready(Ok(Detected::Http2)) => {
                *self.detecting = false;
                if let Err(abuse) = socket.watch_http2() {
                    let _ = self.state.refused.set(abuse);
                    let refused = io::Error::new(io::ErrorKind::InvalidData, abuse);
                    return Turn::End(End::Io(refused));
                }
                if let Some(io) = self.io.take() {
                    *self.h2 = Some(http2_connection(io, self.service, hard_limit));
                }
                Turn::Again
            }
            Poll::Ready(Ok(Detected::NotThePreface)) => {
                *self.detecting = false;
                if let Some(io) = self.io.take() {
                    *self.refusing = Some(Box::new(Refusing::bytes(io, GOAWAY_PROTOCOL_ERROR)));
                }
                Turn::Again
            }
            Poll::Ready(Ok(Detected::Nothing)) => Turn::End(End::Closed),
            Poll::Ready(Err(error)) => Turn::End(End::Io(error)),
            Poll::Pending => Turn::Wait,
        }
    }

    /// The connection's one timer: re-armed after a read that began a head
    /// or a request, then polled only once it fires (see `timer_armed`).
    #[inline]
    fn poll_timer(&mut self, task: &mut Context<'_>) -> Turn {
        let deadlines = self.admission.deadlines;
        let parkable = (self.own.is_some() || self.h1.is_some()) && !*self.draining;
        if self.state.rearm.swap(false, Ordering::AcqRel) {
            // Re-armed by a read just made: its time stands for now (no
            // clock read per request; a deadline computed from a moment
            // ago only errs late, and the timer checks again).
            let now = self.state.last_read();
            if let Step::Wait(deadline) = self.state.step_at(now, &deadlines, parkable) {
                // Once a request has ended here, also wakes the connection
                // PARK_AFTER from now, to park it if its request has ended
                // by then. A later deadline than the last only updates the
                // timer entry, so a busy connection pays nothing for this.
                let wake = if self.state.served.load(Ordering::Relaxed) {
                    deadline.min(now + PARK_AFTER)
                } else {
                    deadline
                };
                self.timer.as_mut().reset(wake);
                *self.timer_armed = true;
            }
        }
        if !std::mem::take(self.timer_armed) && !self.timer.is_elapsed() {
            return Turn::Wait;
        }
        while self.timer.as_mut().poll(task).is_ready() {
            match self.state.step(&deadlines, parkable) {
                Step::Wait(deadline) => self.timer.as_mut().reset(deadline),
                Step::Park => {
                    // Tried once hyper has been polled; if the connection
                    // is not idle after all (a response not yet flushed),
                    // tried again later.
                    *self.park = true;
                    self.timer.as_mut().reset(clock::now() + PARK_AFTER);
                    *self.timer_armed = true;
                    return Turn::Again;
                }
                // A graceful close gets its own idle period, then is cut.
                Step::Drain if !*self.draining => {
                    *self.draining = true;
                    self.timer.as_mut().reset(clock::now() + deadlines.idle);
                    if !self.shut_down_gracefully() {
                        return Turn::End(End::Closed);
                    }
                }
                Step::Drain | Step::Close => return Turn::End(End::TimedOut),
            }
        }
        Turn::Wait
    }

    /// Whether the listener is stopping. Polls the waiter the first time
    /// (this task's waker then stays registered, and the signal wakes it);
    /// asks the flag after that, and then too for a signal that came
    /// before the waiter existed.
    fn stopped(&mut self, task: &mut Context<'_>) -> bool {
        if std::mem::replace(self.cancel_registered, true) {
            self.stop.is_stopped()
        } else {
            self.cancelled.as_mut().poll(task).is_ready() || self.stop.is_stopped()
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

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<F, R>(_: &F) -> usize
    where
        F: Fn(TcpStream, Arc<ConnectionState>, Arc<Stop>, Admission) -> R,
    {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_connection_costs_little() {
        // A plain connection's task is this state in a box (424 bytes
        // today; 512 keeps it in mimalloc's 512-byte class) and tokio's
        // cell holding the box. Parked, the connection holds nothing else
        // but its ConnectionState and tokio's registration of the socket.
        let task = returned_size(&serve_connection::<TcpStream>);
        assert!(task <= 512, "connection task state is {task} bytes");
        let state = std::mem::size_of::<ConnectionState>();
        assert!(state <= 208, "ConnectionState is {state} bytes");
    }
}
