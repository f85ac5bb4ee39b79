//! Test support: real backends on 127.0.0.1:0, a real fulcrum, real clients.
#![allow(dead_code)]

mod wait;
pub use wait::eventually;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub mod dns;
pub mod h2raw;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 + HTTP/2 backend on loopback.
///
/// Paths: `/echo` streams the request body back; `/consume` reads it all,
/// then answers with its length; `/delay/MS` answers after
/// MS milliseconds; `/status/CODE`; `/trailers` answers with a trailer;
/// `/ws` is a WebSocket echo; `/big/N` sends N bytes; anything else answers
/// with the backend's name. Responses carry `x-backend: NAME`.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub hits: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When not 0, every request is answered with this status.
    pub status: Arc<std::sync::atomic::AtomicU16>,
    /// The status of `/healthz` (200 unless set).
    pub health: Arc<std::sync::atomic::AtomicU16>,
    kill: tokio_util::sync::CancellationToken,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Backend {
    pub async fn spawn(name: &'static str) -> Self {
        Self::spawn_on(name, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    /// Serves on an already bound listener (e.g. to restart on the same port).
    pub async fn spawn_on(name: &'static str, listener: TcpListener) -> Self {
        let backend = Backend {
            addr: listener.local_addr().unwrap(),
            name,
            hits: Arc::default(),
            connections: Arc::default(),
            seen: Arc::default(),
            status: Arc::default(),
            health: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            kill: tokio_util::sync::CancellationToken::new(),
            stop: Arc::default(),
        };
        let (tx, mut rx) = oneshot::channel();
        *backend.stop.lock().unwrap() = Some(tx);
        let b = backend.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(pair) => pair, Err(_) => continue },
                    _ = &mut rx => return,
                    () = b.kill.cancelled() => return,
                };
                b.connections.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                let kill = b.kill.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let b = b.clone();
                        async move { Ok::<_, Infallible>(b.answer(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let serve =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serve => {}
                        // Dropping the connection closes it: the endpoint is gone.
                        () = kill.cancelled() => {}
                    }
                });
            }
        });
        backend
    }

    /// Stops accepting (open connections are left to end on their own).
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Kills the endpoint: closes the listener and every open connection.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Answers `/healthz` with `code` from now on.
    pub fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }

    /// Answers every request with `code` from now on (0: back to normal).
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Requests seen, health probes excluded.
    pub fn traffic(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri != "/healthz")
            .count()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The targets of the requests this backend saw, in order.
    pub fn uris(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.uri.clone())
            .collect()
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the backend")
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != "/healthz" {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        let path = req.uri().path().to_owned();
        let forced = self.status.load(Ordering::SeqCst);
        let mut response = if path == "/healthz" {
            let mut r = text("health");
            *r.status_mut() = StatusCode::from_u16(self.health.load(Ordering::SeqCst)).unwrap();
            r
        } else if forced != 0 {
            let mut r = text(self.name);
            *r.status_mut() = StatusCode::from_u16(forced).unwrap();
            r
        } else if path == "/consume" {
            match req.into_body().collect().await {
                Ok(body) => text(&body.to_bytes().len().to_string()),
                Err(_) => text("aborted"),
            }
        } else if path == "/echo" {
            Response::new(req.into_body().map_err(BoxError::from).boxed())
        } else if let Some(ms) = path.strip_prefix("/delay/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            text(self.name)
        } else if let Some(code) = path.strip_prefix("/status/") {
            let mut r = text(self.name);
            *r.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            r
        } else if let Some(n) = path.strip_prefix("/big/") {
            let n: usize = n.parse().unwrap();
            Response::new(full(pattern(n)))
        } else if path == "/trailers" {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "abc123".parse().unwrap());
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"with trailers"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
        } else if path == "/ws" {
            let key = req.headers().get("sec-websocket-key").cloned();
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                key.expect("sec-websocket-key").as_bytes(),
            );
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(empty())
                .unwrap()
        } else {
            text(self.name)
        };
        response
            .headers_mut()
            .insert("x-backend", self.name.parse().unwrap());
        response
    }
}

pub fn text(s: &str) -> Response<Body> {
    Response::new(full(s.to_owned()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// Deterministic bytes for large bodies.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// The byte at `i` of [`pattern`], for bodies too large to hold.
pub fn pattern_byte(i: usize) -> u8 {
    (i * 31 % 251) as u8
}

/// A fulcrum running in this test's runtime.
pub struct Proxy {
    addrs: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts fulcrum on `toml` (listeners should bind 127.0.0.1:0).
    pub async fn start(toml: &str) -> Self {
        Self::try_start(toml)
            .await
            .unwrap_or_else(|e| panic!("fulcrum did not start: {e}"))
    }

    pub async fn try_start(toml: &str) -> Result<Self, String> {
        let config =
            fulcrum::config::parse(Path::new("test.toml"), toml).map_err(|e| e.to_string())?;
        Self::from_config(config, false).await
    }

    /// Starts fulcrum on a config file, watching it for changes if `watch`.
    pub async fn start_file(path: &Path, watch: bool) -> Self {
        let config = fulcrum::config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let proxy = Self::from_config(config, watch).await.unwrap();
        // `serve` starts the admin API and the file watcher together, before
        // it first waits: once /readyz answers, changes to the file are seen.
        if let Some(admin) = proxy.admin {
            let url = format!("http://{admin}/readyz");
            eventually(Duration::from_secs(5), || async {
                let req = Request::get(&url).body(empty()).unwrap();
                matches!(client().request(req).await, Ok(r) if r.status() == 200)
            })
            .await;
        }
        proxy
    }

    async fn from_config(config: fulcrum::config::Config, watch: bool) -> Result<Self, String> {
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let proxy = fulcrum::Fulcrum::bind(config)
            .map_err(|e| e.to_string())?
            .watch_config(watch)
            .reload_on_sighup(false);
        let admin = proxy.admin_addr();
        let addrs = names
            .into_iter()
            .map(|n| {
                let a = proxy.local_addr(&n).unwrap();
                (n, a)
            })
            .collect();
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(proxy.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addrs,
            admin,
            stop: Some(tx),
            done: Some(done),
        })
    }

    /// The address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.addrs.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Starts a graceful shutdown; the returned handle ends when drained.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.done.take().expect("shut down once")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.abort();
        }
    }
}

/// A config with one listener on 127.0.0.1:0, one catch-all route and one
/// upstream `app` over `backends`; `upstream_extra` is appended to the
/// upstream table.
pub fn simple_config(backends: &[&Backend], upstream_extra: &str) -> String {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    config_for(&addrs, "", upstream_extra)
}

pub type HttpClient = Client<HttpConnector, Body>;

/// An HTTP/1.1 client with keep-alive.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge client.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a GET and returns status, headers and body.
pub async fn get(client: &HttpClient, url: &str) -> (StatusCode, HeaderMap, String) {
    send(client, Request::get(url).body(empty()).unwrap()).await
}

pub async fn send(client: &HttpClient, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response within 20s")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("whole body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Writes raw bytes and reads until the peer closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, wait).await
}

pub async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An address on which nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A raw TCP endpoint that runs `f` on each accepted connection.
pub async fn raw_backend<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(f(stream));
        }
    });
    addr
}

/// Reads from `stream` until a request head has arrived; returns it.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One backend `a` and fulcrum over it with `server` in [server] and the
/// admin API on; returns the admin address too.
pub async fn proxy_with_admin(server: &str) -> (Backend, Proxy, SocketAddr) {
    let b = Backend::spawn("a").await;
    let config =
        config_for(&[b.addr], server, "").replacen("bind = \"\"", "bind = \"127.0.0.1:0\"", 1);
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin.expect("admin enabled");
    (b, proxy, admin)
}

/// The sum of the series of metric `name` whose line contains `labels`
/// (`""`: all of them), scraped from the admin API at `admin`.
pub async fn metric(admin: SocketAddr, name: &str, labels: &str) -> f64 {
    let (_, _, text) = get(&client(), &format!("http://{admin}/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A config over raw endpoint addresses, with `extra` in the upstream table
/// and `server` in the [server] table.
pub fn config_for(addrs: &[SocketAddr], server: &str, upstream_extra: &str) -> String {
    let endpoints: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"
[server]
{server}

[admin]
bind = ""

[[listener]]
name = "http"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"

[upstream.app]
endpoints = [{}]
{upstream_extra}
"#,
        endpoints.join(", ")
    )
}
