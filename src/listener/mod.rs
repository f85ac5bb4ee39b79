//! Listeners: bind, accept within the connection limit, TLS, and one task
//! per client connection. The folder holds the downstream side whole:
//! - `connection.rs`: a connection's task, which tells HTTP/2 from HTTP/1
//!   by the first bytes, serves plain HTTP/1.1 requests with fulcrum's own
//!   server side (`h1_server/`) and the rest with hyper, parks idle HTTP/1
//!   connections without buffers, and drains;
//! - `connection_state.rs`: what a connection's task, socket, service and
//!   requests share; `timer.rs`: the one timer per connection
//!   (`header_read_timeout`, `idle_timeout`, parking);
//! - `socket.rs`: the socket wrapper, which follows the HTTP/1 requests
//!   hyper reads (`http1::stream`) and an HTTP/2 client's frames
//!   (`h2_guard.rs`);
//! - `refusing.rs`: the answer to a request refused before a server side
//!   read it; `upgrade.rs`: the client's side of an upgraded connection;
//! - `counts.rs`: open and parked connections per listener; `limit.rs`:
//!   the process-wide limit on open connections; `stop.rs`: the
//!   drain signal a listener's accept loop sets as it ends; `set.rs`: the
//!   running set of listeners, which a reload changes;
//! - `accept_failures.rs`: what an accept loop does when an accept fails
//!   (this one's and the admin API's).

pub mod accept_failures;
mod connection;
pub mod connection_state;
pub mod counts;
mod defer_accept;
pub mod h1_server;
pub mod h2_guard;
pub mod limit;
mod refusing;
pub mod set;
mod socket;
mod stop;
mod timer;
pub mod upgrade;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::state::Shared;
use accept_failures::AcceptFailures;
use connection::serve_connection;
pub use connection::{
    H2_MAX_CONCURRENT_STREAMS, H2_MAX_LOCAL_ERROR_RESETS, H2_MAX_PENDING_ACCEPT_RESETS,
};
use connection_state::ConnectionState;
pub use connection_state::RequestGuard;
pub use counts::ConnectionCounts;
use counts::OpenConnection;
use limit::{ConnectionLimit, Place};
pub use socket::Transport;
use timer::Deadlines;
pub use timer::PARK_AFTER;
pub use upgrade::{OnUpgrade, Upgraded};

/// A listener whose socket is bound, ready to serve.
pub struct BoundListener {
    pub name: Arc<str>,
    /// The config it was bound from (a reload compares against it).
    pub config: ListenerConfig,
    pub local_addr: SocketAddr,
    /// Its client connections, for the downstream connection metrics.
    pub connections: Arc<ConnectionCounts>,
    /// Swapped by a reload that changes certificates; new connections use
    /// the new ones.
    pub tls: Arc<ArcSwapOption<TlsAcceptor>>,
    /// `defer_accept` is on: a connection comes with its first bytes.
    deferred: AtomicBool,
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
            crate::tls::server_config(
                tls.certificates
                    .iter()
                    .map(|c| (c.cert.as_path(), c.key.as_path())),
                tls.session_resumption,
            )
            .map_err(|source| ListenerError::Tls {
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
    pub connections: Arc<ConnectionLimit>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Where connections are served; `None`: on the accepting runtime.
    pub workers: Option<Arc<crate::workers::Workers>>,
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
        if config.defer_accept {
            defer_accept::set(&socket, true).map_err(bind_error)?;
        }
        let listener = TcpListener::from_std(socket.into()).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let tls = tls_acceptor(config)?;
        Ok(Self {
            name: config.name.as_str().into(),
            config: config.clone(),
            local_addr,
            connections: Arc::new(ConnectionCounts::default()),
            tls: Arc::new(ArcSwapOption::new(tls.map(Arc::new))),
            deferred: AtomicBool::new(config.defer_accept),
            listener,
        })
    }

    /// Turns `defer_accept` on or off for connections accepted from now.
    pub fn set_defer_accept(&self, on: bool) -> io::Result<()> {
        defer_accept::set(&self.listener, on)?;
        self.deferred.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Accepts until `stop` (the listener's own token, a child of the
    /// shutdown token), one task per connection; connections drain on it.
    pub async fn serve(self: Arc<Self>, cx: Arc<Serving>, stop: CancellationToken) {
        let listener = self;
        // Its connections drain when this loop ends, however it ends.
        let drain = Arc::new(stop::Stop::default());
        let _signal = stop::SignalOnDrop(Arc::clone(&drain));
        let mut failures = AcceptFailures::default();
        // Polled in every wait below, registered with the token once.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        // See `unread`: only where no other thread polls the reactor.
        let single_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let place = match cx.connections.try_take() {
                Some(place) => place,
                None => tokio::select! {
                    place = cx.connections.take() => place,
                    () = &mut stopped => return,
                },
            };
            let (stream, client) = tokio::select! {
                biased;
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
                        failures.back_off(&listener.name, &error).await;
                        continue;
                    }
                },
                () = &mut stopped => return,
            };
            let server = &cx.shared.snapshot.load().server;
            listener.connections.open.fetch_add(1, Ordering::Relaxed);
            let admission = Admission {
                deadlines: Deadlines {
                    header_read: server.header_read_timeout,
                    idle: server.idle_timeout,
                },
                max_header_bytes: server.max_header_bytes,
                _place: place,
                open: OpenConnection(Arc::clone(&listener.connections)),
            };
            let acceptor = listener.tls.load_full();
            if acceptor.is_some() {
                // A plain connection's is set by its second write
                // (`socket::Nodelay`); a TLS handshake writes before that.
                let _ = stream.set_nodelay(true);
            }
            let shared = Arc::clone(&cx.shared);
            let name = Arc::clone(&listener.name);
            let state = Arc::new(ConnectionState::new(
                shared,
                name,
                client,
                acceptor.is_some(),
            ));
            if let Some(workers) = &cx.workers {
                // Moved to a worker's runtime: registered with its reactor there.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let task = on_worker(stream, acceptor, state, Arc::clone(&drain), admission);
                cx.tracker.spawn_on(task, workers.next());
                continue;
            }
            // A deferred connection comes with its first bytes: read at once.
            if single_thread && !listener.deferred.load(Ordering::Relaxed) {
                unread(&stream);
            }
            match acceptor {
                None => {
                    // Boxed too: tokio moves a task's future several times
                    // as it spawns it and as it stores its output, each a
                    // copy of the whole state; a box moves as a pointer.
                    let task = serve_connection(stream, state, Arc::clone(&drain), admission);
                    cx.tracker.spawn(Box::pin(task));
                }
                Some(acceptor) => {
                    let task = serve_tls(stream, acceptor, state, Arc::clone(&drain), admission);
                    cx.tracker.spawn(Box::pin(task));
                }
            }
        }
    }
}

/// Forgets the readiness tokio's `accept` assumes for a new stream: the
/// first read of a connection whose request has not arrived yet would be a
/// `recv` that finds nothing (0.9 per new connection under load, counted
/// with the kernel's tracepoints; docs/performance-notebook.md). The first
/// read waits for the reactor's event instead, as nginx's does; a request
/// already there is reported by the next poll, as epoll reports what is
/// readable when a socket is added. No system call is made. Only on a
/// single-threaded runtime: on another, a thread polling the reactor could
/// have recorded the socket's real readiness since `accept` registered it,
/// and this would forget that too.
fn unread(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Opens the TLS session, then serves the connection. Boxed by its caller:
/// a TLS connection's state is several times a plain one's, and a task is
/// as large as its largest state.
async fn serve_tls(
    stream: TcpStream,
    acceptor: Arc<TlsAcceptor>,
    state: Arc<ConnectionState>,
    stop: Arc<stop::Stop>,
    admission: Admission,
) {
    let deadline = admission.deadlines.header_read;
    // A client can fail handshakes at will: counted, logged at debug only
    // (and rustls logs nothing: its `logging` feature is off).
    let failed = |cause: &'static str| {
        state
            .shared
            .metrics
            .counter(
                crate::metrics::DOWNSTREAM_TLS_FAILED,
                &[("listener", &state.listener), ("cause", cause)],
            )
            .increment(1);
    };
    let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            failed("error");
            tracing::debug!(client = %state.client, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            failed("timeout");
            tracing::debug!(client = %state.client, "TLS handshake timed out");
            return;
        }
    };
    serve_connection(tls, state, stop, admission).await;
}

/// Serves a connection on the worker runtime this runs on.
async fn on_worker(
    stream: std::net::TcpStream,
    acceptor: Option<Arc<TlsAcceptor>>,
    state: Arc<ConnectionState>,
    stop: Arc<stop::Stop>,
    admission: Admission,
) {
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    match acceptor {
        None => serve_connection(stream, state, stop, admission).await,
        Some(acceptor) => Box::pin(serve_tls(stream, acceptor, state, stop, admission)).await,
    }
}

/// What a connection holds for its whole life besides its socket.
struct Admission {
    deadlines: Deadlines,
    max_header_bytes: usize,
    _place: Place,
    open: OpenConnection,
}
