//! The request path, as one linear async fn: route -> pick -> forward/retry
//! -> respond. Failures become responses only in `error.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::access_log::Entry;
use crate::config::Protocol;
use crate::error::{ProxyError, find_source};
use crate::headers;
use crate::http1::Refusal;
use crate::http1::stream::Verdicts;
use crate::listener::RequestGuard;
use crate::state::{Shared, Snapshot};
use crate::upstream::client::{self, BoxError, UpstreamBody};
use crate::upstream::{InFlight, Upstream, health};

/// What the request path needs to know of the downstream connection.
#[derive(Debug)]
pub struct Downstream {
    /// Index of the listener in the snapshot's route table.
    pub listener: usize,
    pub client: SocketAddr,
    /// The client's IP as an X-Forwarded-For element, formatted once per
    /// connection.
    pub client_ip: HeaderValue,
    pub https: bool,
    /// For a request hyper read: the follower's verdicts and this
    /// request's place among them (`http1::stream`).
    pub message: Option<MessageVerdict>,
    /// When the request began to be handled: the start of its duration,
    /// and of its first attempt.
    pub started: std::time::Instant,
    /// Present when fulcrum's own HTTP/1.1 server side answers it
    /// (`h1_server`): where interim (1xx) responses go, written before the
    /// final response; and an HTTP/1.1 endpoint's response fields may come
    /// as lines, not a map.
    pub interim: Option<Arc<crate::http1::Interim>>,
}

/// A request's place in its connection's request stream, as the follower
/// judged it: its head, and its body while it comes.
#[derive(Debug, Clone)]
pub struct MessageVerdict {
    pub verdicts: Arc<Verdicts>,
    pub index: u64,
}

impl MessageVerdict {
    /// Why the request breaks the HTTP/1.1 framing rules, if it does (so
    /// far: its body is judged as it comes).
    pub fn refusal(&self) -> Option<Refusal> {
        self.verdicts.refusal_of(self.index)
    }
}

/// The body sent to an endpoint: the client's body, streamed, under
/// `max_request_body` and `body_read_timeout`.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    read: u64,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Whether a frame was handed on: after that the body cannot be replayed.
    started: bool,
    /// Where an unread body goes back when the attempt that owned it failed,
    /// so a retry can send it (present only when a retry could use it).
    slot: Option<Arc<Mutex<Option<Incoming>>>>,
    /// The follower's verdict on the request, for a body hyper decodes.
    message: Option<MessageVerdict>,
}

/// Why the request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds server.max_request_body")]
    TooLarge,
    #[error("request body stalled past server.body_read_timeout")]
    Timeout,
    #[error("reading the request body failed: {0}")]
    Client(#[source] hyper::Error),
    #[error("request body does not match its Content-Length")]
    Length,
    #[error("request body framing: {0}")]
    Framing(Refusal),
}

/// The body sent to the client: an endpoint's response streamed through, or
/// a response fulcrum wrote itself. Guards are released when it is dropped.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    bytes: u64,
    finish: Option<Finish>,
    _request: Option<RequestGuard>,
}

#[derive(Debug)]
enum Kind {
    /// The endpoint's body; for HTTP/1.1 it holds the connection, which goes
    /// back to the pool once the body has ended and closes if the body ends
    /// any other way.
    Upstream {
        inner: UpstreamBody,
        _in_flight: InFlight,
    },
    Full(Option<Bytes>),
}

/// How one attempt ended when it did not produce a response to return.
enum Failure {
    /// Worth another endpoint if the policy allows.
    Retryable(ProxyError, RetryCause),
    /// Final: answer with this.
    Final(ProxyError),
}

#[derive(Clone, Copy)]
enum RetryCause {
    Connect,
    Reset,
    Timeout,
}

/// What the request path learned, for metrics and the access log.
#[derive(Debug, Default)]
struct Outcome {
    route: Option<usize>,
    upstream: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    attempts: u32,
}

/// Recorded when the response body is dropped (sent, or the client left):
/// the request counter by status, the duration histogram, the access log.
#[derive(Debug)]
struct Finish {
    snapshot: Arc<Snapshot>,
    listener: usize,
    route: Option<usize>,
    status: u16,
    started: std::time::Instant,
    /// Present only when the access log is on.
    log: Option<(Arc<Shared>, Box<Entry>)>,
}

/// Answers one request: never fails, every failure becomes a response.
///
/// A plain function returning the future, not an `async fn`: the request's
/// future is moved as a whole and touched by every request of a
/// connection, and an `async fn` holds each argument twice (a whole
/// request was once held four times over, through `forward`). The request
/// comes split (head and body, the body absent for a plain request read by
/// `h1_server`), and `forward` borrows the head.
pub fn handle(
    mut parts: http::request::Parts,
    incoming: Option<Incoming>,
    downstream: Downstream,
    snapshot: Arc<Snapshot>,
    guard: RequestGuard,
    shared: Arc<Shared>,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
    let entry = shared.access_log.as_ref().map(|_| {
        Box::new(Entry {
            time: std::time::SystemTime::now(),
            client: downstream.client,
            method: parts.method.clone(),
            host: parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                .map(str::to_owned),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            version: parts.version,
            status: 0,
            bytes: 0,
            duration: Duration::ZERO,
            route: None,
            upstream: None,
            endpoint: None,
            attempts: 0,
        })
    });
    async move {
        let mut outcome = Outcome::default();
        let forwarded = forward(
            &mut parts,
            incoming,
            &downstream,
            &snapshot,
            &shared,
            &guard,
            &mut outcome,
        );
        let mut response = match forwarded.await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(
                    %error,
                    endpoint = error.endpoint(),
                    client = %downstream.client,
                    "request answered by fulcrum"
                );
                error.to_response()
            }
        };
        let status = response.status().as_u16();
        let log = entry.map(|mut e| {
            e.status = status;
            e.route = outcome
                .route
                .map(|r| snapshot.routes.routes()[r].name.clone());
            e.upstream = outcome.upstream;
            e.endpoint = outcome.endpoint;
            e.attempts = outcome.attempts;
            (Arc::clone(&shared), e)
        });
        let body = response.body_mut();
        body._request = Some(guard);
        body.finish = Some(Finish {
            listener: downstream.listener,
            route: outcome.route,
            status,
            started: downstream.started,
            snapshot,
            log,
        });
        response
    }
}

async fn forward(
    parts: &mut http::request::Parts,
    incoming: Option<Incoming>,
    downstream: &Downstream,
    snapshot: &Snapshot,
    shared: &Arc<Shared>,
    guard: &RequestGuard,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, ProxyError> {
    let limits = &snapshot.server;
    if head_size(parts) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    // hyper accepts some framing fulcrum refuses (it drops Content-Length
    // beside Transfer-Encoding, reads codings besides chunked), and the
    // request cannot show it: the follower of the stream judged the head.
    if let Some(refusal) = downstream
        .message
        .as_ref()
        .and_then(MessageVerdict::refusal)
    {
        return Err(ProxyError::Framing(refusal));
    }

    let host_value = target_and_host(parts)?;
    let host = host_value.as_ref().map(|v| v.to_str().unwrap_or_default());
    let route = snapshot
        .routes
        .find(downstream.listener, host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    let upstream = &snapshot.upstreams[route.upstream];
    outcome.route = Some(route.index);
    outcome.upstream = Some(upstream.name.clone());

    if limits.max_request_body > 0
        && content_length(&parts.headers).is_some_and(|n| n > limits.max_request_body)
    {
        return Err(ProxyError::BodyTooLarge);
    }

    let upgrade = headers::is_upgrade_request(&parts.headers)
        && parts.version == Version::HTTP_11
        && upstream.protocol == Protocol::Http1;
    // The connection hands its socket over once the 101 is written.
    let downstream_upgrade = upgrade.then(|| guard.on_upgrade());

    // Hashed once, before headers are rewritten (the key is the client's).
    let key = upstream
        .balancer
        .hash_key()
        .and_then(|k| crate::balance::hash_key::hash(k, parts, downstream.client.ip()));
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = headers::forward_path(&path, &route.path_prefix, route.strip_prefix);
    // Applied as the request is sent: written straight into the head for
    // HTTP/1.1, the map left as the client sent it (`headers.rs`).
    let forwarding = headers::Forwarding {
        client_ip: &downstream.client_ip,
        https: downstream.https,
        host: host_value.as_ref(),
        upgrade,
    };

    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let empty_body = incoming.as_ref().is_none_or(Body::is_end_stream);
    let retries = upstream.retries;
    let may_retry = retries > 0;
    let slot = (may_retry && !empty_body).then(|| Arc::new(Mutex::new(None)));
    // An empty body is sent as none at all, and so can always be sent again.
    let mut body = incoming.filter(|_| !empty_body);

    // At most retries + 1 <= 11 attempts (config caps retries at 10).
    let mut tried = [usize::MAX; 11];
    let mut last_error = None;
    for attempt in 0..=retries {
        let picked = upstream
            .balancer
            .pick(&upstream.endpoints, key, &tried[..attempt as usize]);
        if upstream.fail_open && attempt == 0 {
            upstream.note_failing_open(picked.is_none());
        }
        let picked = match picked {
            None if upstream.fail_open && upstream.failing_open.load(Ordering::Relaxed) => {
                upstream.metrics.fail_open_requests.increment(1);
                upstream.pick_failing_open(&tried[..attempt as usize])
            }
            picked => picked,
        };
        let Some(index) = picked else {
            break;
        };
        tried[attempt as usize] = index;
        let endpoint = &upstream.endpoints[index];
        if attempt > 0 {
            upstream.metrics.retries.increment(1);
        }
        outcome.attempts = attempt + 1;
        outcome.endpoint = Some(endpoint.address.clone());
        let inner = match body.take() {
            Some(incoming) => Some(incoming),
            None if empty_body => None,
            None => break,
        };
        let request_body = RequestBody {
            inner,
            limit: limits.max_request_body,
            read: 0,
            timeout: limits.body_read_timeout,
            sleep: None,
            armed: false,
            started: false,
            slot: slot.clone(),
            message: downstream.message.clone(),
        };
        // The first attempt leaves as the request came (its routing took a
        // microsecond or two): one clock read fewer.
        let sent = if attempt == 0 {
            downstream.started
        } else {
            std::time::Instant::now()
        };
        let outgoing = client::Outgoing {
            method: &parts.method,
            target: &path,
            headers: &mut parts.headers,
            last_attempt: attempt == retries,
            authority: &endpoint.authority,
            forwarding: &forwarding,
            sent,
            raw_head: downstream.interim.is_some(),
            interim: downstream.interim.as_deref(),
        };
        let in_flight = endpoint.state.start();
        let outcome = endpoint
            .client
            .request(outgoing, request_body, upstream.response_timeout)
            .await;
        let failure = match outcome {
            Ok(response) => {
                let answered = std::time::Instant::now();
                let latency = answered - sent;
                endpoint.state.observe_latency(sent, answered);
                let status = response.status();
                let m = &endpoint.state.metrics;
                m.responses.get(status.as_u16()).increment(1);
                m.response_duration.record(latency.as_secs_f64());
                if upstream.outlier.is_some() {
                    let cause = status
                        .is_server_error()
                        .then(|| format!("status {}", status.as_u16()));
                    health::passive_result(shared, upstream, index, cause.as_deref());
                }
                let retry_status = match status {
                    StatusCode::BAD_GATEWAY => upstream.retry_on.status_502,
                    StatusCode::SERVICE_UNAVAILABLE => upstream.retry_on.status_503,
                    StatusCode::GATEWAY_TIMEOUT => upstream.retry_on.status_504,
                    _ => false,
                };
                // A retry needs another endpoint and a body we can still send.
                if retry_status
                    && attempt < retries
                    && (safe || empty_body)
                    && (empty_body || recover_body(&mut body, &slot))
                    && upstream
                        .balancer
                        .pick(&upstream.endpoints, key, &tried[..=attempt as usize])
                        .is_some()
                {
                    tracing::debug!(endpoint = %endpoint.address, %status, "retrying on status");
                    continue;
                }
                if status == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(downstream_upgrade) = downstream_upgrade
                {
                    // The endpoint connection now belongs to the upgrade.
                    let (head, body) = response.into_parts();
                    if let Some(upstream_upgrade) = body.into_upgraded() {
                        tokio::spawn(splice(downstream_upgrade, upstream_upgrade));
                    }
                    let response = Response::from_parts(head, UpstreamBody::Empty);
                    return Ok(respond(response, in_flight, true));
                }
                return Ok(respond(response, in_flight, false));
            }
            Err(client::Error::Timeout) => Failure::Retryable(
                ProxyError::ResponseTimeout {
                    upstream: upstream.name.clone(),
                    endpoint: endpoint.address.clone(),
                },
                RetryCause::Timeout,
            ),
            Err(error) => {
                let failure = classify(error, upstream, &endpoint.address);
                let cause = match &failure {
                    Failure::Retryable(_, RetryCause::Connect) => {
                        endpoint.state.metrics.connect_errors.increment(1);
                        Some("connect error")
                    }
                    Failure::Retryable(_, RetryCause::Reset) => Some("reset or invalid response"),
                    Failure::Retryable(_, RetryCause::Timeout) | Failure::Final(_) => None,
                };
                if cause.is_some() {
                    health::passive_result(shared, upstream, index, cause);
                }
                failure
            }
        };
        drop(in_flight);
        match failure {
            Failure::Final(error) => return Err(error),
            Failure::Retryable(error, cause) => {
                let allowed = match cause {
                    RetryCause::Connect => upstream.retry_on.connect_failure,
                    RetryCause::Reset => upstream.retry_on.reset,
                    RetryCause::Timeout => upstream.retry_on.timeout,
                };
                // A request that never left (connect failure) may always be
                // repeated; otherwise only a safe one, or one whose body was
                // not sent.
                let repeatable = matches!(cause, RetryCause::Connect) || safe || !empty_body;
                tracing::debug!(%error, endpoint = error.endpoint(), "attempt failed");
                if !(allowed && repeatable && attempt < retries)
                    || !(empty_body || recover_body(&mut body, &slot))
                {
                    return Err(error);
                }
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoUsableEndpoint {
        upstream: upstream.name.clone(),
    }))
}

/// Puts a streamed request body back for another attempt: possible only if
/// the failed attempt never read from it.
fn recover_body(body: &mut Option<Incoming>, slot: &Option<Arc<Mutex<Option<Incoming>>>>) -> bool {
    if body.is_none()
        && let Some(slot) = slot
    {
        *body = slot.lock().ok().and_then(|mut s| s.take());
    }
    body.is_some()
}

fn classify(error: client::Error, upstream: &Upstream, endpoint: &Arc<str>) -> Failure {
    let upstream_name = upstream.name.clone();
    let endpoint = endpoint.clone();
    if let Some(body) = error.body() {
        return Failure::Final(match body {
            BodyError::TooLarge => ProxyError::BodyTooLarge,
            BodyError::Timeout => ProxyError::BodyTimeout,
            BodyError::Client(_) | BodyError::Length => ProxyError::ClientBodyAborted,
            BodyError::Framing(refusal) => ProxyError::Framing(*refusal),
        });
    }
    if error.is_connect() {
        let timed_out = find_source::<std::io::Error>(&error)
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let e = if timed_out {
            ProxyError::ConnectTimeout {
                upstream: upstream_name,
                endpoint,
                source: error,
            }
        } else {
            ProxyError::ConnectFailed {
                upstream: upstream_name,
                endpoint,
                source: error,
            }
        };
        return Failure::Retryable(e, RetryCause::Connect);
    }
    if error.is_invalid_response() {
        return Failure::Retryable(
            ProxyError::InvalidResponse {
                upstream: upstream_name,
                endpoint,
                source: error,
            },
            RetryCause::Reset,
        );
    }
    Failure::Retryable(
        ProxyError::Reset {
            upstream: upstream_name,
            endpoint,
            source: error,
        },
        RetryCause::Reset,
    )
}

/// The endpoint's response on its way to the client, hop-by-hop headers gone.
fn respond(
    response: Response<UpstreamBody>,
    in_flight: InFlight,
    upgraded: bool,
) -> Response<ResponseBody> {
    let (mut parts, inner) = response.into_parts();
    // An HTTP/1.1 endpoint's hop-by-hop fields were left out as its head
    // was read (`upstream/h1.rs`), except for an upgrade's.
    if upgraded || !matches!(inner, UpstreamBody::Http1(_)) {
        headers::strip_hop_by_hop(&mut parts.headers, upgraded);
    }
    Response::from_parts(
        parts,
        ResponseBody {
            kind: Kind::Upstream {
                inner,
                _in_flight: in_flight,
            },
            bytes: 0,
            finish: None,
            _request: None,
        },
    )
}

/// Copies bytes both ways between an upgraded client and endpoint
/// connection, starting with what the endpoint sent after its 101.
async fn splice(downstream: crate::listener::OnUpgrade, upstream: (TcpStream, Bytes)) {
    let Ok(mut client) = downstream.await else {
        tracing::debug!("upgrade failed: the client connection ended first");
        return;
    };
    let (mut server, early) = upstream;
    let result = async {
        client.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await
    };
    if let Err(error) = result.await {
        tracing::debug!(%error, "upgraded connection ended");
    }
}

/// The declared Content-Length, if one valid value is present.
/// Checks the request target and Host (RFC 9112 section 3.2, RFC 9110
/// section 7.2); the Host the client sent: the field, or the HTTP/2
/// `:authority` (absent only for HTTP/1.0 without one).
fn target_and_host(parts: &http::request::Parts) -> Result<Option<HeaderValue>, ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    // Origin form or absolute form only: an authority form (`host:port`)
    // or an asterisk form names no path to forward.
    let Some(target) = parts.uri.path_and_query() else {
        return Err(ProxyError::BadRequest("request target has no path"));
    };
    if !target.as_str().starts_with('/') {
        return Err(ProxyError::BadRequest("request target has no path"));
    }
    if !target.as_str().is_ascii() {
        return Err(ProxyError::BadRequest("request target is not ASCII"));
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let host_value: Option<HeaderValue> = match host_header {
        Some(h) => Some(h.clone()),
        None => match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => None,
        },
    };
    // An absolute-form target names its own host; one that disagrees with
    // Host is ambiguous (RFC 9112 says the target wins, caches and endpoints
    // may use Host): refuse it rather than guess.
    if let (Some(authority), Some(host)) = (parts.uri.authority(), host_header)
        && !authority
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(host.as_bytes())
    {
        return Err(ProxyError::BadRequest(
            "Host disagrees with the request target",
        ));
    }
    match &host_value {
        Some(v) if !crate::http1::fields::valid_host(v.as_bytes()) => {
            Err(ProxyError::BadRequest("Host is not a host and port"))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        _ => Ok(host_value),
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The size of the request head as written on the wire by HTTP/1.1.
fn head_size(parts: &http::request::Parts) -> usize {
    let uri = &parts.uri;
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let line = parts.method.as_str().len() + target + 12;
    parts
        .headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

impl ResponseBody {
    /// The endpoint's response fields, when they came as lines and not in
    /// the response's map.
    pub fn raw_head(&self) -> Option<&crate::upstream::RawHead> {
        match &self.kind {
            Kind::Upstream { inner, .. } => inner.raw_head(),
            Kind::Full(_) => None,
        }
    }

    /// A complete body written by fulcrum.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(data)),
            bytes: 0,
            finish: None,
            _request: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Upstream { inner, .. } => ready!(Pin::new(&mut *inner).poll_frame(cx)),
            Kind::Full(data) => data.take().map(|d| Ok(Frame::data(d))),
        };
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            this.bytes += data.len() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
            Kind::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { inner, .. } => inner.size_hint(),
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.started = true;
                this.armed = false;
                // The follower read these bytes first: a chunk line it
                // refuses is known by now.
                if let Some(refusal) = this.message.as_ref().and_then(MessageVerdict::refusal) {
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyError::Framing(refusal))));
                }
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.limit > 0 && this.read > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.started = true;
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // One timer per body, armed only while waiting.
                let deadline = Instant::now() + this.timeout;
                if !this.armed {
                    this.armed = true;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let sleep = this.sleep.as_mut().expect("armed above");
                ready!(sleep.as_mut().poll(cx));
                this.started = true;
                Poll::Ready(Some(Err(BodyError::Timeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let elapsed = finish.started.elapsed();
        if let Some(m) = finish.snapshot.route_metrics(finish.listener, finish.route) {
            m.requests.get(finish.status).increment(1);
            m.duration.record(elapsed.as_secs_f64());
        }
        if let Some((shared, mut entry)) = finish.log
            && let Some(log) = &shared.access_log
        {
            entry.bytes = self.bytes;
            entry.duration = elapsed;
            log.log(*entry);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.started
            && let (Some(inner), Some(slot)) = (self.inner.take(), &self.slot)
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(inner);
        }
    }
}
