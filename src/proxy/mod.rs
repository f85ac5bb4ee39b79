//! The request path: [`handle`] answers one request, never failing: every
//! failure becomes a response (`error.rs`). `forward.rs` checks, routes and
//! sends the request through its attempts; `retry.rs` holds the retry
//! policy; `request.rs` the checks of a request before routing;
//! `response_body.rs` the body the client receives, which records the
//! request when it is done; `upgrade.rs` splices an upgraded exchange.

pub mod error;
mod forward;
mod request;
pub mod response_body;
mod retry;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use hyper::body::Incoming;

pub use error::ProxyError;
use response_body::Finish;
pub use response_body::ResponseBody;

use crate::access_log::Entry;
use crate::body::MessageVerdict;
use crate::listener::connection_state::RequestGuard;
use crate::state::{Shared, Snapshot};

/// What the request path needs to know of the downstream connection.
#[derive(Debug)]
pub struct Downstream {
    /// Index of the listener in the snapshot's route table.
    pub listener: usize,
    pub client: SocketAddr,
    /// The client's IP as an X-Forwarded-For element, formatted once per
    /// connection.
    pub client_ip: crate::headers::ClientIp,
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

/// What the request path learned, for metrics and the access log.
#[derive(Debug, Default)]
struct Outcome {
    route: Option<usize>,
    upstream: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    attempts: u32,
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
            // Shared with the request's own buffers: nothing is copied.
            host: parts.headers.get(HOST).cloned().or_else(|| {
                let authority = parts.uri.authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            }),
            target: parts
                .uri
                .path_and_query()
                .cloned()
                .or_else(|| (parts.uri.path() == "/").then(|| PathAndQuery::from_static("/"))),
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
        let forwarded = forward::forward(
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
