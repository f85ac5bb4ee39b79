//! One request forwarded: checked, routed, prepared once, then sent to one
//! endpoint after another until one answers or the retry policy
//! (`retry.rs`) says no more.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;

use super::error::ProxyError;
use super::request::{content_length, head_size, normalize_path, target_and_host};
use super::response_body::{ResponseBody, Source};
use super::retry::{self, AttemptFailure, RetryCause};
use super::{Downstream, Outcome};
use crate::body::{BodySlot, MessageVerdict, RequestBody};
use crate::config::{BalanceKind, Protocol, ServerConfig};
use crate::headers;
use crate::listener::connection_state::RequestGuard;
use crate::listener::upgrade::OnUpgrade;
use crate::route::Route;
use crate::state::{Shared, Snapshot};
use crate::upstream::client::{self, UpstreamBody};
use crate::upstream::endpoint::InFlight;
use crate::upstream::{Upstream, health};

/// At most retries + 1 <= 11 attempts (config caps retries at 10).
const MAX_ATTEMPTS: usize = 11;

/// The request as every attempt sends it, prepared once.
struct Prepared {
    /// The target as forwarded (`strip_prefix` applied).
    path: PathAndQuery,
    /// The request's hash, for balancers that hash.
    key: Option<u64>,
    upgrade: bool,
    /// Where the client's connection comes once a 101 is written.
    downstream_upgrade: Option<OnUpgrade>,
    /// GET, HEAD or OPTIONS: may be repeated after it was sent.
    safe: bool,
    /// No body at all (sent as none, so it can always be sent again).
    empty_body: bool,
    body: Option<Incoming>,
    /// Where a body an attempt did not read goes back, for a retry.
    slot: Option<BodySlot>,
}

pub(super) async fn forward(
    parts: &mut http::request::Parts,
    incoming: Option<Incoming>,
    downstream: &Downstream,
    snapshot: &Snapshot,
    shared: &Arc<Shared>,
    guard: &RequestGuard,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (route, host) = check_and_route(parts, downstream, snapshot, outcome)?;
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
    let upstream = &snapshot.upstreams[route.upstream];
    let mut request = prepare(parts, incoming, downstream, route, upstream, guard);
    let limits = &snapshot.server;
    let forwarding = headers::Forwarding {
        client_ip: &downstream.client_ip,
        https: downstream.https,
        host: host.as_ref(),
        upgrade: request.upgrade,
    };
    let retries = upstream.retries;
    let mut tried = [usize::MAX; MAX_ATTEMPTS];
    let mut last_error = None;
    for attempt in 0..=retries {
        let Some(index) = pick(upstream, request.key, &tried[..attempt as usize], attempt) else {
            break;
        };
        tried[attempt as usize] = index;
        let endpoint = &upstream.endpoints[index];
        if attempt > 0 {
            upstream.metrics.retries.increment(1);
        }
        outcome.attempts = attempt + 1;
        outcome.endpoint = Some(endpoint.address.clone());
        let Some(request_body) = request.attempt_body(limits, downstream) else {
            break;
        };
        // The first attempt leaves as the request came (its routing took a
        // microsecond or two): one clock read fewer.
        let sent = if attempt == 0 {
            downstream.started
        } else {
            crate::clock::now().into_std()
        };
        let outgoing = client::Outgoing {
            method: &parts.method,
            target: &request.path,
            headers: &mut parts.headers,
            last_attempt: attempt == retries,
            authority: &endpoint.authority,
            forwarding: &forwarding,
            sent,
            raw_head: downstream.interim.is_some(),
            interim: downstream.interim.as_deref(),
        };
        let in_flight = endpoint.state.start();
        let result = endpoint
            .client
            .request(outgoing, request_body, upstream.response_timeout)
            .await;
        let failure = match result {
            Ok(response) => {
                let status = answered(shared, upstream, index, sent, &response);
                // A retry needs another endpoint and a body we can still send.
                let tried = &tried[..=attempt as usize];
                if attempt < retries && request.retry_on_status(upstream, status, tried) {
                    tracing::debug!(endpoint = %endpoint.address, %status, "retrying on status");
                    continue;
                }
                return Ok(deliver(
                    response,
                    in_flight,
                    &mut request.downstream_upgrade,
                ));
            }
            Err(error) => failed(shared, upstream, index, error),
        };
        drop(in_flight);
        match failure {
            AttemptFailure::Final(error) => return Err(error),
            AttemptFailure::Retryable(error, cause) => {
                tracing::debug!(%error, endpoint = error.endpoint(), "attempt failed");
                if !(attempt < retries && request.retry_on_failure(upstream, cause)) {
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

impl Prepared {
    /// The body an attempt sends: the client's, under the server's limits;
    /// `None` when it is gone (an earlier attempt read from it).
    fn attempt_body(
        &mut self,
        limits: &ServerConfig,
        downstream: &Downstream,
    ) -> Option<RequestBody> {
        let inner = match self.body.take() {
            Some(incoming) => Some(incoming),
            None if self.empty_body => None,
            None => return None,
        };
        Some(RequestBody::new(
            inner,
            limits.max_request_body,
            limits.body_read_timeout,
            self.slot.clone(),
            downstream.message.clone(),
        ))
    }

    /// Whether a response with `status` is retried: `retry_on` lists it,
    /// the request may be repeated, its body can still be sent, and an
    /// endpoint not in `tried` is usable.
    fn retry_on_status(
        &mut self,
        upstream: &Upstream,
        status: StatusCode,
        tried: &[usize],
    ) -> bool {
        retry::retries_status(upstream, status)
            && (self.safe || self.empty_body)
            && self.body_again()
            && upstream.pick(self.key, tried).is_some()
    }

    /// Whether a failed attempt is retried: `retry_on` lists its cause, the
    /// request may be repeated after it, and its body can still be sent.
    fn retry_on_failure(&mut self, upstream: &Upstream, cause: RetryCause) -> bool {
        retry::retries_failure(upstream, cause, self.safe, self.empty_body) && self.body_again()
    }

    /// Whether the body can be sent again: none at all, or one the failed
    /// attempt never read from.
    fn body_again(&mut self) -> bool {
        self.empty_body || retry::recover_body(&mut self.body, self.slot.as_ref())
    }
}

/// Checks the request (its head's size, the follower's verdict, target and
/// Host, declared length), puts its path in normal form and finds its
/// route; gives the Host it names.
#[inline]
fn check_and_route<'s>(
    parts: &mut http::request::Parts,
    downstream: &Downstream,
    snapshot: &'s Snapshot,
    outcome: &mut Outcome,
) -> Result<(&'s Route, Option<HeaderValue>), ProxyError> {
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
    normalize_path(parts)?;
    let host = host_value.as_ref().map(|v| v.to_str().unwrap_or_default());
    let route = snapshot
        .routes
        .find(downstream.listener, host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    outcome.route = Some(route.index);
    outcome.upstream = Some(snapshot.upstreams[route.upstream].name.clone());
    if limits.max_request_body > 0
        && content_length(&parts.headers).is_some_and(|n| n > limits.max_request_body)
    {
        return Err(ProxyError::BodyTooLarge);
    }
    Ok((route, host_value))
}

/// What every attempt sends the same way: the hash key (of the request as
/// the client sent it), the forwarded target, whether it upgrades, and the
/// body with the slot that keeps it for a retry.
#[inline]
fn prepare(
    parts: &http::request::Parts,
    incoming: Option<Incoming>,
    downstream: &Downstream,
    route: &Route,
    upstream: &Upstream,
    guard: &RequestGuard,
) -> Prepared {
    let upgrade = headers::is_upgrade_request(&parts.headers)
        && parts.version == Version::HTTP_11
        && upstream.protocol == Protocol::Http1;
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
    let empty_body = incoming.as_ref().is_none_or(Body::is_end_stream);
    let slot = (upstream.retries > 0 && !empty_body).then(|| Arc::new(Mutex::new(None)));
    Prepared {
        path,
        key,
        upgrade,
        // The connection hands its socket over once the 101 is written.
        downstream_upgrade: upgrade.then(|| guard.on_upgrade()),
        safe: matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS),
        empty_body,
        body: incoming.filter(|_| !empty_body),
        slot,
    }
}

/// The endpoint for an attempt: the balancer's pick among the usable ones
/// not tried yet, or, while `fail_open` holds (no endpoint usable), any.
#[inline]
fn pick(upstream: &Upstream, key: Option<u64>, tried: &[usize], attempt: u32) -> Option<usize> {
    let picked = upstream.pick(key, tried);
    if upstream.fail_open && attempt == 0 {
        upstream.note_failing_open(picked.is_none());
    }
    match picked {
        None if upstream.fail_open && upstream.failing_open.load(Ordering::Relaxed) => {
            upstream.metrics.fail_open_requests.increment(1);
            upstream.pick_failing_open(tried)
        }
        picked => picked,
    }
}

/// Records a response: its endpoint's latency and status, and what passive
/// checks make of it.
#[inline]
fn answered(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    index: usize,
    sent: std::time::Instant,
    response: &Response<UpstreamBody>,
) -> StatusCode {
    let endpoint = &upstream.endpoints[index];
    let answered = crate::clock::now().into_std();
    let latency = answered - sent;
    // Only peak EWMA reads the estimate: other algorithms skip its clock
    // arithmetic and exponential (about 200 instructions per request).
    if upstream.balance == BalanceKind::PeakEwma {
        endpoint.state.observe_latency(sent, answered);
    }
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
    status
}

/// What a failed exchange is to the retry policy, with its passive-check
/// and metric bookkeeping.
fn failed(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    index: usize,
    error: client::Error,
) -> AttemptFailure {
    let endpoint = &upstream.endpoints[index];
    if let client::Error::Timeout = error {
        return AttemptFailure::Retryable(
            ProxyError::ResponseTimeout {
                upstream: upstream.name.clone(),
                endpoint: endpoint.address.clone(),
            },
            RetryCause::Timeout,
        );
    }
    let failure = retry::classify(error, upstream, &endpoint.address);
    let cause = match &failure {
        AttemptFailure::Retryable(_, RetryCause::Connect) => {
            endpoint.state.metrics.connect_errors.increment(1);
            Some("connect error")
        }
        AttemptFailure::Retryable(_, RetryCause::Reset) => Some("reset or invalid response"),
        AttemptFailure::Retryable(_, RetryCause::Timeout) | AttemptFailure::Final(_) => None,
    };
    if cause.is_some() {
        health::passive_result(shared, upstream, index, cause);
    }
    failure
}

/// The endpoint's response on its way to the client; a 101 to an upgrade
/// request hands both connections to the splice.
#[inline]
fn deliver(
    response: Response<UpstreamBody>,
    in_flight: InFlight,
    downstream_upgrade: &mut Option<OnUpgrade>,
) -> Response<ResponseBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream_upgrade) = downstream_upgrade.take()
    {
        // The endpoint connection now belongs to the upgrade.
        let (head, body) = response.into_parts();
        if let Some(upstream_upgrade) = body.into_upgraded() {
            tokio::spawn(super::upgrade::splice(downstream_upgrade, upstream_upgrade));
        }
        let response = Response::from_parts(head, UpstreamBody::Empty);
        return respond(response, in_flight, true);
    }
    respond(response, in_flight, false)
}

/// The endpoint's response on its way to the client, hop-by-hop headers gone.
#[inline]
fn respond(
    response: Response<UpstreamBody>,
    in_flight: InFlight,
    upgraded: bool,
) -> Response<ResponseBody> {
    let (mut parts, inner) = response.into_parts();
    // An HTTP/1.1 endpoint's hop-by-hop fields were left out as its head
    // was read (`upstream/h1/response_head.rs`), except for an upgrade's.
    if upgraded || !matches!(inner, UpstreamBody::Http1(_)) {
        headers::strip_hop_by_hop(&mut parts.headers, upgraded);
    }
    Response::from_parts(
        parts,
        ResponseBody {
            source: Source::Upstream {
                inner,
                _in_flight: in_flight,
            },
            bytes: 0,
            finish: None,
            _request: None,
        },
    )
}
