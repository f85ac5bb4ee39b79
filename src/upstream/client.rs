//! The connection pool to one endpoint.
//!
//! HTTP/1.1 (the default): fulcrum's own last-in-first-out pool of
//! connections, each driven by the request that holds it (`h1/pool.rs`).
//!
//! Why not hyper-util's legacy `Client`: in front of one endpoint it has
//! nothing to choose between, yet callgrind counted about 6,400 instructions
//! per proxied request (13% of the proxy's) in it: SipHash of a pool key and
//! authority comparisons on every checkout, and 32 moves of the request and
//! its boxed future (docs/performance-notebook.md). Nor hyper's `client::conn::http1`
//! under this pool, which fulcrum used next: a task per connection and
//! channels between it and the request, about 10,000 instructions per
//! request (`h1/`).
//!
//! HTTP/2 (`protocol = "http2"`): hyper-util's client, which multiplexes
//! requests over one connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use super::error::{BoxError, Error, find_source};
use super::h1::pool::Pool;
pub use super::outgoing::Outgoing;
pub use super::response::UpstreamBody;
use crate::body::RequestBody;
use crate::config::{Protocol, UpstreamConfig};

/// The keep-alive connections to one endpoint.
#[derive(Debug)]
pub enum UpstreamClient {
    Http1(Arc<Pool>),
    Http2(Box<Client<HttpConnector, RequestBody>>),
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
    UpstreamClient::Http1(Arc::new(Pool::new(config, address)))
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
            UpstreamClient::Http1(pool) => {
                Either::Left(pool.request(outgoing, body, timeout, UpstreamBody::Http1))
            }
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

fn upstream_uri(authority: &Authority, path: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).unwrap_or_default()
}
